"""Training image-level classifiers with fastai.

Defaults follow the AAX paper (Nasir et al.): Adam, learning rate 1e-4, batch 16, at most 50
epochs, early stopping with patience 5 on the validation loss, best model kept. The optional
variance term of the AAX loss adds ``lambda * Var_k[P_k(class 1)]`` over ``k`` stochastic
dropout passes of the head (cheap: the backbone runs once, see :mod:`wsslib.uncertainty`).
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .utils import resolve_device, seed_everything

__all__ = ["AAXLoss", "TrainResult", "train_classifier"]


class _StochasticHeads(nn.Module):
    """Wraps a :class:`~wsslib.models.Classifier`: (B, 3, H, W) -> logits (B, K, C).

    The backbone runs once; the dropout head is sampled ``k`` times (dropout sits after global
    pooling, so this equals ``k`` full stochastic passes).
    """

    def __init__(self, model: nn.Module, k: int) -> None:
        super().__init__()
        self.model, self.k = model, k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.model.embed(x)
        if not self.training:  # validation: the expected head (dropout off), one sample
            return self.model.head(z).unsqueeze(1)
        return torch.stack([self.model.head(z) for _ in range(self.k)], dim=1)


class AAXLoss(nn.Module):
    """Cross-entropy plus ``lam`` times the variance of P(class 1) over stochastic passes.

    Args:
        lam: weight of the variance term (0 = plain cross-entropy, the default).

    Shapes:
        preds: (B, C) logits, or (B, K, C) logits of K stochastic passes; target: (B,) int64.
        The cross-entropy is averaged over the K passes; the variance is the population
        variance over K of softmax(preds)[..., 1], averaged over the batch.
    """

    def __init__(self, lam: float = 0.0) -> None:
        super().__init__()
        self.lam = float(lam)

    def forward(self, preds: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if preds.dim() == 2:
            preds = preds.unsqueeze(1)
        b, k, c = preds.shape
        ce = F.cross_entropy(preds.reshape(b * k, c), target.repeat_interleave(k))
        if self.lam == 0 or k == 1:
            return ce
        p1 = preds.softmax(-1)[..., 1]
        return ce + self.lam * p1.var(dim=1, unbiased=False).mean()

    def activation(self, preds: torch.Tensor) -> torch.Tensor:  # used by fastai's get_preds
        return preds.softmax(-1).mean(1) if preds.dim() == 3 else preds.softmax(-1)

    def decodes(self, preds: torch.Tensor) -> torch.Tensor:
        return preds.argmax(-1)


def _accuracy(preds: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Accuracy of (B, C) or (B, K, C) logits (K averaged in probability) against (B,) labels."""
    if preds.dim() == 3:
        preds = preds.softmax(-1).mean(1)
    return (preds.argmax(-1) == target).float().mean()


_accuracy.__name__ = "accuracy"


@dataclass
class TrainResult:
    """What :func:`train_classifier` returns.

    Attributes:
        model: the trained classifier (the best epoch's weights, in eval mode, on ``device``).
        history: one dict per epoch: ``epoch``, ``train_loss``, ``valid_loss``, ``accuracy``.
        best_epoch: the epoch whose weights were kept (0-based).
        device: where the model lives.
    """

    model: nn.Module
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    device: str = "cpu"


class _FlipAugment:
    """Random horizontal and vertical flips of a training batch (B, 3, H, W), seeded."""

    def __init__(self, seed: int) -> None:
        self.gen = torch.Generator().manual_seed(seed)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        h = torch.rand(b, generator=self.gen) < 0.5
        v = torch.rand(b, generator=self.gen) < 0.5
        x = torch.where(h.view(b, 1, 1, 1).to(x.device), x.flip(-1), x)
        return torch.where(v.view(b, 1, 1, 1).to(x.device), x.flip(-2), x)


def train_classifier(
    model: nn.Module,
    train_images: torch.Tensor,
    train_labels: torch.Tensor,
    valid_images: torch.Tensor,
    valid_labels: torch.Tensor,
    *,
    lr: float = 1e-4,
    batch_size: int = 16,
    epochs: int = 50,
    patience: int | None = 5,
    variance_lambda: float = 0.0,
    variance_k: int = 4,
    weight_decay: float = 0.0,
    augment: bool = True,
    one_cycle: bool = False,
    device: str | torch.device = "auto",
    seed: int = 0,
    progress: bool = True,
) -> TrainResult:
    """Train a classifier on image-level labels with a fastai ``Learner``.

    Args:
        model: a :class:`wsslib.models.Classifier` (logits (B, C) from (B, 3, H, W) in [0, 1]).
        train_images: (N, 3, H, W) float32 in [0, 1]; train_labels: (N,) int64.
        valid_images: (M, 3, H, W) float32 in [0, 1]; valid_labels: (M,) int64.
        lr: Adam learning rate (AAX paper: 1e-4). ``one_cycle`` uses fastai's one-cycle schedule
            with ``lr`` as its peak instead of a constant rate.
        batch_size: AAX paper: 16.
        epochs: maximum number of epochs (AAX paper: 50).
        patience: early stopping on the validation loss (AAX paper: 5); None disables it.
            The weights of the epoch with the lowest validation loss are kept either way.
        variance_lambda: weight of the AAX variance term (0 = plain cross-entropy).
        variance_k: stochastic head samples per image for the variance term.
        augment: random flips of training batches.
        device: "auto" (CUDA when present), "cpu", "cuda", ...
        seed: seeds shuffling, flips, dropout and any fresh initialisation.
        progress: fastai progress bars and the per-epoch table.

    Returns:
        A :class:`TrainResult` with the best model (eval mode) and the per-epoch history.
    """
    import fastai.callback.schedule  # noqa: F401 - patches Learner.fit_one_cycle
    from fastai.callback.tracker import EarlyStoppingCallback, SaveModelCallback
    from fastai.data.core import DataLoaders
    from fastai.data.load import DataLoader
    from fastai.learner import Learner
    from fastai.optimizer import Adam

    dev = resolve_device(device)
    seed_everything(seed)
    train_ds = list(zip(train_images, train_labels))
    valid_ds = list(zip(valid_images, valid_labels))
    train_dl = DataLoader(train_ds, bs=batch_size, shuffle=True, drop_last=len(train_ds) > batch_size)
    valid_dl = DataLoader(valid_ds, bs=max(batch_size, 64), shuffle=False)
    dls = DataLoaders(train_dl, valid_dl, device=dev)
    if augment:
        flip = _FlipAugment(seed)
        train_dl.after_batch = lambda b: (flip(b[0]), *b[1:])

    net = _StochasticHeads(model, variance_k) if variance_lambda > 0 else model
    with tempfile.TemporaryDirectory(prefix="wsslib-train-") as tmp:
        cbs = [SaveModelCallback(monitor="valid_loss", fname="best", with_opt=False)]
        if patience is not None:
            cbs.append(EarlyStoppingCallback(monitor="valid_loss", patience=patience))
        learn = Learner(
            dls, net, loss_func=AAXLoss(variance_lambda), opt_func=Adam, lr=lr, wd=weight_decay,
            metrics=[_accuracy], cbs=cbs, path=Path(tmp), model_dir=".",
        )
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*load_model.*")
            warnings.filterwarnings("ignore", category=FutureWarning)
            if not progress:  # also silences SaveModelCallback's "Better model found" prints
                with learn.no_bar(), learn.no_logging(), contextlib.redirect_stdout(io.StringIO()):
                    _fit(learn, epochs, lr, one_cycle)
            else:
                _fit(learn, epochs, lr, one_cycle)
        names = learn.recorder.metric_names[1:-1]  # drop "epoch" and "time"
        history = [
            {"epoch": i, **{n: float(v) for n, v in zip(names, vals)}}
            for i, vals in enumerate(learn.recorder.values)
        ]
    best = min(range(len(history)), key=lambda i: history[i]["valid_loss"]) if history else 0
    model.eval().to(dev)
    return TrainResult(model=model, history=history, best_epoch=best, device=str(dev))


def _fit(learn, epochs: int, lr: float, one_cycle: bool) -> None:
    if one_cycle:
        learn.fit_one_cycle(epochs, lr_max=lr)
    else:
        learn.fit(epochs, lr=lr)
