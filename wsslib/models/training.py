"""Training image-level classifiers with fastai.

Defaults follow the AAX paper (Nasir et al.): Adam, learning rate 1e-4, batch 16, at most 50
epochs, early stopping with patience 5 on the validation loss, best model kept. The optional
variance term of the AAX loss adds ``lambda * Var_k[P_k(class 1)]`` over ``k`` stochastic
dropout passes of the head (cheap: the backbone runs once, see :mod:`wsslib.explain.uncertainty`).

Several GPUs or machines: the same call runs unchanged under ``torchrun`` (torch.distributed,
see :mod:`wsslib.core.distributed`). Each of the ``W`` processes then trains a DistributedDataParallel
copy of the model on its ``batch_size / W`` share of every global batch of ``batch_size`` images
(same shuffled order on every process, so the global batches are those of a one-process run),
batch norm uses the statistics of the global batch (sync batch norm), random flips are drawn
for the global batch, and every process evaluates the whole validation set, so early stopping
and the kept epoch are the same everywhere. With head dropout 0 the trained weights equal a
one-process run up to float rounding (tested with 2 CPU processes, gloo); dropout masks are
drawn per process. fastai's own ``DistributedTrainer`` is not used: it needs ``accelerate``,
broadcasts through CUDA tensors (no CPU/gloo) and splits the epoch into contiguous chunks
rather than global batches.
"""

from __future__ import annotations

import contextlib
import functools
import io
import tempfile
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

from wsslib.core import distributed as _dist
from wsslib.core.errors import DataError
from wsslib.core.utils import amp_enabled, autocast, deterministic_scope, resolve_device, rng_scope
from wsslib.data.augment import FlipAugment
from wsslib.data.base import TensorBatch
from wsslib.models.classifiers import create_model

__all__ = ["AAXLoss", "ClassifierSpec", "class_weights", "ClassifierTrainConfig", "FinetuneResult", "TrainResult", "fit_classifier",
           "predict_logits", "train_classifier"]


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
        weight: None, or (C,) per-class weights of the cross-entropy (``F.cross_entropy``'s
            ``weight``: the batch mean is weighted, so a balanced weighting makes each class count
            the same whatever its frequency; see :func:`class_weights`).

    Shapes:
        preds: (B, C) logits, or (B, K, C) logits of K stochastic passes; target: (B,) int64.
        The cross-entropy is averaged over the K passes; the variance is the population
        variance over K of softmax(preds)[..., 1], averaged over the batch.
    """

    def __init__(self, lam: float = 0.0, weight: torch.Tensor | None = None) -> None:
        super().__init__()
        self.lam = float(lam)
        self.register_buffer("weight", None if weight is None else torch.as_tensor(weight, dtype=torch.float32))

    def forward(self, preds: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if preds.dim() == 2:
            preds = preds.unsqueeze(1)
        b, k, c = preds.shape
        w = None if self.weight is None else self.weight.to(preds.device, preds.dtype)
        ce = F.cross_entropy(preds.reshape(b * k, c), target.repeat_interleave(k), weight=w)
        if self.lam == 0 or k == 1:
            return ce
        p1 = preds.softmax(-1)[..., 1]
        return ce + self.lam * p1.var(dim=1, unbiased=False).mean()

    def activation(self, preds: torch.Tensor) -> torch.Tensor:  # used by fastai's get_preds
        return preds.softmax(-1).mean(1) if preds.dim() == 3 else preds.softmax(-1)

    def decodes(self, preds: torch.Tensor) -> torch.Tensor:
        return preds.argmax(-1)


def class_weights(labels: torch.Tensor, mode: str | None, num_classes: int | None = None) -> torch.Tensor | None:
    """Per-class loss weights from training labels ``(N,)`` int64 -> ``(num_classes,)`` float32 or None.

    ``num_classes`` defaults to ``max(2, labels.max() + 1)``. ``mode`` None: no weighting.
    ``"balanced"``: ``N / (num_classes * count_c)``, scikit-learn's
    ``class_weight="balanced"`` rule, so that the weighted loss counts each class as much as the
    others (a two-class set of 70 % diseased frames otherwise learns to say "diseased").

    Raises:
        ValueError: an unknown mode, or a class with no training label under ``"balanced"``.

    Example:
        >>> class_weights(torch.tensor([1, 1, 1, 0]), "balanced")
        tensor([2.0000, 0.6667])
    """
    if mode is None:
        return None
    if mode != "balanced":
        raise ValueError(f"class_weight must be None or 'balanced', got {mode!r}")
    labels = labels.long().flatten()
    num_classes = num_classes or max(2, int(labels.max()) + 1)
    counts = torch.bincount(labels, minlength=num_classes).float()
    if (counts == 0).any():
        raise ValueError(f"class_weight='balanced' needs every class in the training labels; counts {counts.tolist()}")
    return counts.sum() / (num_classes * counts)


def _accuracy(preds: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Accuracy of (B, C) or (B, K, C) logits (K averaged in probability) against (B,) labels."""
    if preds.dim() == 3:
        preds = preds.softmax(-1).mean(1)
    return (preds.argmax(-1) == target).float().mean()


_accuracy.__name__ = "accuracy"


@dataclass
class TrainResult:
    """What every wsslib trainer returns (classifier, multi-level UNet, CCAM).

    Attributes:
        model: the trained network (the kept epoch's weights, in eval mode, on ``device``).
        history: one dict per epoch (or per evaluation), with at least ``epoch`` and the losses
            and validation scores the trainer records.
        best_epoch: index into ``history`` of the kept weights.
        seconds: wall time of the training.
        device: where the model lives.
    """

    model: nn.Module
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    seconds: float = 0.0
    device: str = "cpu"


@dataclass(frozen=True)
class ClassifierTrainConfig:
    """How :func:`train_classifier` trains; defaults are the AAX paper's (Nasir et al.).

    Attributes:
        lr: Adam learning rate (paper: 1e-4); the peak rate when ``one_cycle``.
        batch_size: paper: 16. Under torchrun the global batch, split evenly over processes.
        epochs: maximum number of epochs (paper: 50).
        patience: early stopping on the validation loss (paper: 5); None disables it. The
            weights of the epoch with the lowest validation loss are kept either way.
        variance_lambda: weight of the AAX variance term (0 = plain cross-entropy).
        variance_k: stochastic head samples per image for the variance term.
        weight_decay: Adam weight decay.
        augment: random horizontal and vertical flips of training batches.
        one_cycle: fastai's one-cycle schedule instead of a constant rate.
        seed: seeds shuffling, flips and dropout (inside :func:`~wsslib.core.utils.rng_scope`).
        freeze: None (train everything, the default) or the end of a frozen backbone prefix:
            for EfficientNet-Lite an int ``n`` = stem + first ``n`` blocks (Lite0 has 16),
            ``"stem"``, ``"blocks.S"`` or ``"blocks.S.J"``; for ResNets / EfficientNet-B0 an int
            or a module name such as ``"layer2"`` (:func:`wsslib.models.finetune.split_classifier`).
            The prefix is put in eval mode with ``requires_grad=False`` (batch-norm statistics
            frozen too) and does not change; the rest trains as usual.
        cache_features: with ``freeze``: compute the prefix's output once per training image
            and flip variant (4 with ``augment``) and once per validation image, and train the
            rest on those tensors (same flips, order and dropout draws as the uncached path;
            equal up to float rounding with ``cache_dtype="float32"``). Memory: ``N_train x 4 x
            C x h x w + N_valid x C x h x w`` values (see :mod:`wsslib.models.finetune`).
        cache_dtype: ``"float16"`` (default, half the memory) or ``"float32"`` (exact).
        cache_max_gb: refuse (MemoryError, before computing) a cache larger than this.
        class_weight: None (plain cross-entropy, the paper's) or ``"balanced"``: each class's
            loss weighted by ``N / (2 * count)`` of the training labels (:func:`class_weights`),
            so that ``p > 0.5`` is no longer pulled toward the majority class. The validation
            loss (early stopping, the kept epoch) is weighted the same way.
        max_steps: None (no cap) or the most optimiser steps of the whole training: the epoch
            in which the cap is reached stops its training batches there, is validated, and is
            the last. For tests of GPU-sized presets on a CPU (``max_steps=2``).
        amp: mixed precision on CUDA (fastai's ``to_fp16``: float16 autocast and a gradient
            scaler); a no-op on the CPU and MPS (:func:`~wsslib.core.utils.amp_enabled`).
        deterministic: torch's deterministic kernels while training (cuDNN deterministic,
            ``torch.use_deterministic_algorithms``; :func:`~wsslib.core.utils.deterministic_scope`
            restores the caller's settings afterwards).
    """

    lr: float = 1e-4
    batch_size: int = 16
    epochs: int = 50
    patience: int | None = 5
    variance_lambda: float = 0.0
    variance_k: int = 4
    weight_decay: float = 0.0
    augment: bool = True
    one_cycle: bool = False
    seed: int = 0
    freeze: str | int | None = None
    cache_features: bool = True
    cache_dtype: str = "float16"
    cache_max_gb: float = 8.0
    class_weight: str | None = None
    max_steps: int | None = None
    amp: bool = False
    deterministic: bool = False


def train_classifier(
    model: nn.Module,
    train: TensorBatch,
    valid: TensorBatch,
    config: ClassifierTrainConfig | None = None,
    *,
    device: str | torch.device = "auto",
    progress: bool = True,
) -> TrainResult:
    """Train a classifier on image-level labels with a fastai ``Learner``.

    Args:
        model: a :class:`wsslib.models.Classifier` (logits (B, C) from (B, 3, H, W) in [0, 1]).
        train: ``.images`` (N, 3, H, W) float32 in [0, 1] and ``.labels`` (N,) int64
            (a :class:`~wsslib.data.TensorBatch`).
        valid: the same for the validation images (M, 3, H, W), (M,); early stopping and the
            kept epoch use its loss.
        config: a :class:`ClassifierTrainConfig` (default: the AAX paper's settings).
        device: "auto" (CUDA when present), "cpu", "cuda", ... Under torchrun, "auto"/"cuda"
            mean the GPU ``cuda:LOCAL_RANK``.
        progress: fastai progress bars and the per-epoch table.

    Returns:
        A :class:`TrainResult` with the best model (eval mode) and the per-epoch history
        (``epoch``, ``train_loss``, ``valid_loss``, ``accuracy``). With ``config.freeze`` a
        :class:`FinetuneResult`: the full model (prefix + trained suffix, its parameters'
        ``requires_grad`` restored) plus the split and cache details; ``seconds`` includes
        computing the cache. Not supported under torchrun yet (NotImplementedError).

    Example:
        >>> from wsslib.data import get_dataset, to_tensors
        >>> from wsslib.models import create_model
        >>> tr = to_tensors(get_dataset("synthetic", split="train", n=40, size=32))
        >>> va = to_tensors(get_dataset("synthetic", split="valid", n=40, size=32))
        >>> cfg = ClassifierTrainConfig(lr=1e-3, batch_size=8, epochs=1)
        >>> res = train_classifier(create_model("smallcnn"), tr, va, cfg, device="cpu", progress=False)
        >>> len(res.history), res.best_epoch
        (1, 0)
    """
    cfg = config or ClassifierTrainConfig()
    t0 = time.perf_counter()
    # fastai's first import draws from torch's global generator: import it before the seeded scope,
    # or the first training of a process would differ from every later one with the same seed.
    _fastai_parts()
    with rng_scope(cfg.seed), deterministic_scope(cfg.deterministic):
        if cfg.freeze is not None:
            res = _train_frozen(model, train, valid, cfg, device, progress)
        else:
            res = _train_classifier(model, train.images, train.labels, valid.images, valid.labels, cfg, device, progress)
    res.seconds = time.perf_counter() - t0
    return res


def _train_classifier(
    model: nn.Module,
    train_images: torch.Tensor,
    train_labels: torch.Tensor,
    valid_images: torch.Tensor,
    valid_labels: torch.Tensor,
    cfg: ClassifierTrainConfig,
    device: str | torch.device,
    progress: bool,
) -> TrainResult:
    lr, batch_size, epochs, patience, seed = cfg.lr, cfg.batch_size, cfg.epochs, cfg.patience, cfg.seed
    variance_lambda, variance_k, weight_decay = cfg.variance_lambda, cfg.variance_k, cfg.weight_decay
    augment, one_cycle = cfg.augment, cfg.one_cycle
    import_fastai()
    import fastai.callback.schedule  # noqa: F401 - patches Learner.fit_one_cycle
    from fastai.callback.tracker import EarlyStoppingCallback
    from fastai.data.core import DataLoaders
    from fastai.data.load import DataLoader
    from fastai.learner import Learner
    from fastai.optimizer import Adam

    parts = _fastai_parts()
    info = _dist.init_distributed(device=device)  # no-op unless launched by torchrun with WORLD_SIZE > 1
    dev = _dist.device_for_rank(device) if info.distributed else resolve_device(device)
    train_ds = list(zip(train_images, train_labels))
    valid_ds = list(zip(valid_images, valid_labels))
    if info.distributed:
        if batch_size % info.world_size:
            raise ValueError(
                f"batch_size={batch_size} is the global batch and must be divisible by the "
                f"{info.world_size} processes of this torchrun job")
        if len(train_ds) < batch_size:
            raise DataError(
                f"distributed training needs at least one full global batch: {len(train_ds)} training "
                f"images < batch_size={batch_size}")
        train_dl = parts.GlobalBatchShardDL(train_ds, bs=batch_size // info.world_size, shuffle=True, drop_last=True)
        train_dl.global_bs, train_dl.rank = batch_size, info.rank
    else:
        train_dl = DataLoader(train_ds, bs=batch_size, shuffle=True, drop_last=len(train_ds) > batch_size)
    valid_dl = DataLoader(valid_ds, bs=max(batch_size, 64), shuffle=False)
    dls = DataLoaders(train_dl, valid_dl, device=dev)
    if augment:
        flip = FlipAugment(seed, info.rank, info.world_size)
        train_dl.after_batch = lambda b: (flip(b[0]), *b[1:])
    if info.rank > 0:  # distinct dropout draws per process (rank 0 keeps the one-process stream)
        torch.manual_seed(seed + info.rank)

    net = _StochasticHeads(model, variance_k) if variance_lambda > 0 else model
    if info.distributed:
        _dist.convert_sync_batchnorm(net, dev)
    try:
        with tempfile.TemporaryDirectory(prefix="wsslib-train-") as tmp:
            cbs = [parts.KeepBestWeights(), *parts.step_cap(cfg.max_steps)]
            if patience is not None:
                cbs.append(EarlyStoppingCallback(monitor="valid_loss", patience=patience))
            if info.distributed:
                cbs.append(parts.DDPCallback(dev))
            learn = Learner(
                dls, net, loss_func=AAXLoss(variance_lambda, class_weights(train_labels, cfg.class_weight)),
                opt_func=Adam, lr=lr, wd=weight_decay,
                metrics=[_accuracy], cbs=cbs, path=Path(tmp), model_dir=".",
            )
            _mixed_precision(learn, cfg, dev)
            _fit(learn, epochs, lr, one_cycle, quiet=not progress or info.rank > 0)
    finally:
        if info.distributed:
            _dist.revert_sync_batchnorm(net)
    history, best = _recorded_history(learn)
    model.eval().to(dev)
    return TrainResult(model=model, history=history, best_epoch=best, device=str(dev))


@dataclass
class FinetuneResult(TrainResult):
    """:class:`TrainResult` of a training with a frozen prefix (``ClassifierTrainConfig.freeze``).

    Attributes (besides TrainResult's):
        frozen: the boundary, e.g. ``"stem + first 9 of 16 blocks"``.
        cached: whether the prefix features were cached.
        cache_seconds: time spent computing the cache (included in ``seconds``).
        cache_bytes: memory of the cache (training + validation features).
    """

    frozen: str = ""
    cached: bool = False
    cache_seconds: float = 0.0
    cache_bytes: int = 0


_CACHE_DTYPES = {"float16": torch.float16, "float32": torch.float32}


def _train_frozen(
    model: nn.Module,
    train: TensorBatch,
    valid: TensorBatch,
    cfg: ClassifierTrainConfig,
    device: str | torch.device,
    progress: bool,
) -> FinetuneResult:
    """:func:`train_classifier` with ``cfg.freeze``: frozen prefix, cached or not (see
    :mod:`wsslib.models.finetune`). Same loaders, flips, callbacks and history as the full path."""
    from wsslib.models.finetune import FrozenPrefix, SuffixHead, cache_prefix_features, split_classifier

    if _dist.env_world_size() > 1 or _dist.is_distributed():
        raise NotImplementedError("train_classifier with freeze=... does not support torchrun yet; "
                                  "run it in one process (or use freeze=None)")
    if cfg.cache_dtype not in _CACHE_DTYPES:
        raise ValueError(f"cache_dtype must be one of {sorted(_CACHE_DTYPES)}, got {cfg.cache_dtype!r}")
    batch_size, seed = cfg.batch_size, cfg.seed
    import_fastai()
    from fastai.callback.tracker import EarlyStoppingCallback
    from fastai.data.core import DataLoaders
    from fastai.data.load import DataLoader
    from fastai.learner import Learner
    from fastai.optimizer import Adam

    parts = _fastai_parts()
    dev = resolve_device(device)
    split = split_classifier(model, cfg.freeze)
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.to(dev)
    for p in split.prefix.parameters():
        p.requires_grad_(False)
    split.prefix.eval()
    cache_s, cache_bytes = 0.0, 0
    try:
        if cfg.cache_features:
            dtype, limit = _CACHE_DTYPES[cfg.cache_dtype], cfg.cache_max_gb * 2**30
            t0 = time.perf_counter()
            tr_feats = cache_prefix_features(split.prefix, train.images, flips=cfg.augment, device=dev, dtype=dtype,
                                             max_bytes=limit)
            va_feats = cache_prefix_features(split.prefix, valid.images, flips=False, device=dev, dtype=dtype,
                                             max_bytes=limit - tr_feats.nbytes)
            cache_s, cache_bytes = time.perf_counter() - t0, tr_feats.nbytes + va_feats.nbytes
            train_ds = list(zip(torch.arange(len(tr_feats)), train.labels))
            valid_ds = list(zip(va_feats, valid.labels))
            net: nn.Module = SuffixHead(model, split)
        else:
            train_ds = list(zip(train.images, train.labels))
            valid_ds = list(zip(valid.images, valid.labels))
            net = FrozenPrefix(model, split)
        train_dl = DataLoader(train_ds, bs=batch_size, shuffle=True, drop_last=len(train_ds) > batch_size)
        valid_dl = DataLoader(valid_ds, bs=max(batch_size, 64), shuffle=False)
        dls = DataLoaders(train_dl, valid_dl, device=dev)
        flip = FlipAugment(seed) if cfg.augment else None
        if cfg.cache_features:
            def pick(b):  # indices -> cached features of the drawn flip variant (h + 2 v), as float32
                idx = b[0].cpu()
                if flip is None:
                    f = tr_feats[idx]
                else:
                    h, v = flip.draw(len(idx))
                    f = tr_feats[idx, h.long() + 2 * v.long()]
                return (f.to(dev, torch.float32).contiguous(memory_format=torch.channels_last), *b[1:])

            train_dl.after_batch = pick  # channels_last: faster CPU convolutions in the suffix (measured)
            valid_dl.after_batch = lambda b: (b[0].float().contiguous(memory_format=torch.channels_last), *b[1:])
        elif flip is not None:
            train_dl.after_batch = lambda b: (flip(b[0]), *b[1:])
        if cfg.variance_lambda > 0:
            net = _StochasticHeads(net, cfg.variance_k)
        with tempfile.TemporaryDirectory(prefix="wsslib-train-") as tmp:
            cbs = [parts.KeepBestWeights(), *parts.step_cap(cfg.max_steps)]
            if cfg.patience is not None:
                cbs.append(EarlyStoppingCallback(monitor="valid_loss", patience=cfg.patience))
            learn = Learner(
                dls, net, loss_func=AAXLoss(cfg.variance_lambda, class_weights(train.labels, cfg.class_weight)),
                opt_func=Adam, lr=cfg.lr, wd=cfg.weight_decay,
                metrics=[_accuracy], cbs=cbs, path=Path(tmp), model_dir=".",
            )
            _mixed_precision(learn, cfg, dev)
            _fit(learn, cfg.epochs, cfg.lr, cfg.one_cycle, quiet=not progress)
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
    history, best = _recorded_history(learn)
    model.eval().to(dev)
    return FinetuneResult(model=model, history=history, best_epoch=best, device=str(dev), frozen=split.description,
                          cached=cfg.cache_features, cache_seconds=cache_s, cache_bytes=cache_bytes)


@functools.cache
def import_fastai() -> None:
    """Import fastai once, without the import-time warnings it triggers in this pinned stack and
    that users cannot act on: torch 2.14's FutureWarning for fastai's ``torch.jit.script`` layers and
    pandas' warning for fastai.tabular's ``mode.chained_assignment``. Other warnings pass."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.* is deprecated", category=FutureWarning)
        warnings.filterwarnings("ignore", message=r".*mode\.chained_assignment.*")
        import fastai.callback.schedule  # noqa: F401
        import fastai.learner  # noqa: F401


@functools.cache
def _fastai_parts() -> SimpleNamespace:
    """The fastai callbacks and loader of :func:`train_classifier` (built lazily: fastai imports slowly)."""
    import_fastai()
    from fastai.callback.core import Callback, CancelFitException, CancelTrainException
    from fastai.callback.tracker import TrackerCallback
    from fastai.data.load import DataLoader
    from fastai.torch_core import get_model
    from torch.nn.parallel import DistributedDataParallel

    class KeepBestWeights(TrackerCallback):
        """Keep in memory the weights of the epoch with the lowest validation loss and load them
        at the end: SaveModelCallback without its file, so that every process of a distributed
        run (fastai saves files on rank 0 only) can do it."""

        order = TrackerCallback.order + 1

        def __init__(self) -> None:
            super().__init__(monitor="valid_loss")
            self.best_state: dict[str, torch.Tensor] | None = None

        def before_fit(self) -> None:
            super().before_fit()
            self.best_state = None

        def after_epoch(self) -> None:
            super().after_epoch()
            if self.new_best:
                self.best_state = {k: v.detach().clone() for k, v in get_model(self.learn.model).state_dict().items()}

        def after_fit(self) -> None:
            super().after_fit()
            if self.best_state is not None:
                get_model(self.learn.model).load_state_dict(self.best_state)

    class DDPCallback(Callback):
        """Wrap the model in DistributedDataParallel for the fit (after fastai moved it to the device)."""

        order = 11

        def __init__(self, device: torch.device) -> None:
            self.device = device

        def before_fit(self) -> None:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.learn.model = DistributedDataParallel(self.learn.model, device_ids=ids)

        def after_fit(self) -> None:
            if isinstance(self.learn.model, DistributedDataParallel):
                self.learn.model = self.learn.model.module

    class GlobalBatchShardDL(DataLoader):
        """This process's slice of every global batch.

        The epoch's shuffled order is the same on every process (same seed); it is cut into
        global batches of ``global_bs`` images (an incomplete last one is dropped) and process
        ``rank`` takes positions ``[rank * bs, (rank + 1) * bs)`` of each. ``global_bs`` and
        ``rank`` are set as attributes after construction.
        """

        def get_idxs(self):
            idxs = super().get_idxs()
            gb, b, r = self.global_bs, self.bs, self.rank
            return [i for g in range(len(idxs) // gb) for i in idxs[g * gb + r * b : g * gb + (r + 1) * b]]

        def __len__(self) -> int:
            return self.n // self.global_bs

    class StepCap(Callback):
        """Stop training after ``n`` optimiser steps: the rest of that epoch's training batches
        are skipped (its validation still runs, so the history is never empty), then the fit ends."""

        def __init__(self, n: int) -> None:
            self.n, self.steps = int(n), 0

        def before_fit(self) -> None:
            self.steps = 0

        def before_epoch(self) -> None:
            if self.steps >= self.n:
                raise CancelFitException()

        def after_step(self) -> None:
            self.steps += 1
            if self.steps >= self.n:
                raise CancelTrainException()

    def step_cap(n: int | None) -> list:
        if n is not None and n < 1:
            raise ValueError(f"max_steps must be >= 1 or None, got {n}")
        return [] if n is None else [StepCap(n)]

    return SimpleNamespace(KeepBestWeights=KeepBestWeights, DDPCallback=DDPCallback, GlobalBatchShardDL=GlobalBatchShardDL,
                           step_cap=step_cap)


def _mixed_precision(learn, cfg: ClassifierTrainConfig, dev: torch.device) -> None:
    """fastai's mixed precision (float16 autocast and a gradient scaler) when ``cfg.amp`` on CUDA."""
    if amp_enabled(cfg.amp, dev):
        import fastai.callback.fp16  # noqa: F401 - patches Learner.to_fp16

        learn.to_fp16()


def _fit(learn, epochs: int, lr: float, one_cycle: bool, quiet: bool = False) -> None:
    """Fit with fastai, its FutureWarnings silenced; ``quiet`` also silences bars, the epoch table
    and early stopping's print."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)
        with contextlib.ExitStack() as stack:
            if quiet:
                stack.enter_context(learn.no_bar())
                stack.enter_context(learn.no_logging())
                stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
            if one_cycle:
                learn.fit_one_cycle(epochs, lr_max=lr)
            else:
                learn.fit(epochs, lr=lr)


def _recorded_history(learn) -> tuple[list[dict], int]:
    """fastai's recorder as one dict per epoch (``epoch``, losses, metrics) and the epoch of
    lowest validation loss (the one :class:`KeepBestWeights` restored)."""
    names = learn.recorder.metric_names[1:-1]  # drop "epoch" and "time"
    history = [{"epoch": i, **{n: float(v) for n, v in zip(names, vals)}} for i, vals in enumerate(learn.recorder.values)]
    best = min(range(len(history)), key=lambda i: history[i]["valid_loss"]) if history else 0
    return history, best


@dataclass(frozen=True)
class ClassifierSpec:
    """One classifier of an experiment: what to build and how to train it.

    Attributes:
        name: a registered backbone (:func:`wsslib.models.list_models`).
        train: its :class:`ClassifierTrainConfig` (the ``seed`` in it is replaced by the seed
            :func:`fit_classifier` is given).
        dropout: head dropout probability.
        weights: ``None`` or ``"imagenet"``.
        options: builder options (``{"width": 8}`` for ``smallcnn``).
        label: the name shown in tables (default ``name``).
    """

    name: str
    train: ClassifierTrainConfig = field(default_factory=ClassifierTrainConfig)
    dropout: float = 0.5
    weights: str | None = None
    options: dict = field(default_factory=dict)
    label: str | None = None

    @property
    def title(self) -> str:
        """``label`` or ``name``."""
        return self.label or self.name


def fit_classifier(
    spec: ClassifierSpec,
    train: TensorBatch,
    valid: TensorBatch,
    *,
    seed: int = 0,
    device: str | torch.device = "auto",
    progress: bool = True,
) -> TrainResult:
    """Build ``spec``'s classifier (2 classes, initialised from ``seed``) and train it.

    The one "train a classifier" step of every notebook: ``create_model`` then
    :func:`train_classifier`, with ``seed`` seeding both the initialisation and the training.

    Args:
        spec: what to build and how to train it.
        train, valid: images (N, 3, S, S) in [0, 1] and labels (N,); the image size ``S`` is
            passed to builders that need it (ViT).
        seed: initialisation, shuffling, flips and dropout.
        device: "auto", "cpu", "cuda", ...
        progress: fastai's bars.

    Returns:
        The :class:`TrainResult` (model in eval mode, history, best epoch, seconds).
    """
    model = create_model(spec.name, num_classes=2, dropout=spec.dropout, weights=spec.weights, seed=seed,
                         image_size=int(train.images.shape[-1]), **spec.options)
    return train_classifier(model, train, valid, replace(spec.train, seed=seed), device=device, progress=progress)


@torch.no_grad()
def predict_logits(model: nn.Module, images: torch.Tensor, *, batch_size: int = 64,
                   device: str | torch.device | None = None, amp: bool = False) -> torch.Tensor:
    """Logits of ``images`` (N, 3, H, W) as (N, C) float32 on the CPU, in batches, dropout off.

    ``device``: where to run (default: where the model's parameters are). ``amp``: float16
    autocast on CUDA (a no-op elsewhere: :func:`~wsslib.core.utils.amp_enabled`).
    """
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    was = model.training
    model.eval()
    try:
        with autocast(dev, amp):
            return torch.cat([model(x.to(dev)).float().cpu() for x in images.split(batch_size)]) if len(images) else \
                torch.empty(0, getattr(model, "num_classes", 2))
    finally:
        model.train(was)
