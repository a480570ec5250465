"""Monte Carlo dropout: K stochastic passes -> mean probability and its spread.

For a :class:`wsslib.models.Classifier` (dropout sits after global pooling, the backbone is
deterministic), pass k is ``softmax(fc(z * m_k))[:, 1]`` with ``z = embed(x)`` and ``m_k`` a
dropout mask. The *fast* path computes ``z`` once and samples the K heads in one batched matmul;
the *naive* path runs K full forward passes. Both give the same numbers when fed the same masks
(``masks=`` argument, drawn by :func:`sample_dropout_masks`).

Example:
    >>> from wsslib.models import create_model
    >>> model = create_model("smallcnn").eval()
    >>> g = torch.Generator().manual_seed(0)
    >>> res = mc_predict(model, torch.rand(2, 3, 64, 64), k=20, generator=g)
    >>> res.p.shape, res.u.shape, res.probs.shape
    (torch.Size([2]), torch.Size([2]), torch.Size([20, 2]))
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from wsslib.core.errors import ShapeError
from wsslib.core.utils import check_shape

__all__ = ["MCResult", "check_dropout_head", "heads_from_embedding", "mc_predict", "sample_dropout_masks"]


class MCResult(NamedTuple):
    """Result of :func:`mc_predict`.

    Attributes:
        p: ``(B,)`` float, mean over the K passes of P(class 1).
        u: ``(B,)`` float, population standard deviation (``unbiased=False``, divisor K) of
            P(class 1) over the K passes; 0 when K = 1 or dropout p = 0.
        probs: ``(K, B)`` float, P(class 1) of every pass.
    """

    p: torch.Tensor
    u: torch.Tensor
    probs: torch.Tensor


def sample_dropout_masks(
    k: int,
    b: int,
    c: int,
    p: float,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Draw K inverted-dropout masks at once.

    Each entry is kept with probability ``1 - p`` and then scaled by ``1 / (1 - p)``, so
    ``z * mask`` is exactly what ``nn.Dropout(p)`` in train mode does to ``z``.

    Args:
        k, b, c: number of passes, batch size, feature channels.
        p: dropout probability, ``0 <= p < 1`` (p = 0 gives all-ones masks).
        generator: torch generator for reproducible masks (its device is used for the draw);
            ``None`` uses the global RNG.
        device: where the returned masks live (default: the generator's device, else CPU).

    Returns:
        ``(K, B, C)`` float32 tensor with values in ``{0, 1/(1-p)}``.
    """
    if not 0.0 <= float(p) < 1.0:
        raise ValueError(f"p must be in [0, 1), got {p}")
    if min(k, b, c) < 1:
        raise ValueError(f"k, b, c must be >= 1, got k={k}, b={b}, c={c}")
    draw_device = generator.device if generator is not None else torch.device(device or "cpu")
    keep = torch.full((k, b, c), 1.0 - float(p), device=draw_device)
    masks = torch.bernoulli(keep, generator=generator).div_(1.0 - float(p))
    return masks.to(device) if device is not None else masks


def check_dropout_head(model: nn.Module) -> tuple[nn.Dropout, nn.Linear]:
    """The ``(dropout, fc)`` head of a :class:`wsslib.models.Classifier` that MC dropout samples.

    Raises:
        TypeError: not a wsslib Classifier (no ``embed``/``head``/``dropout``/``fc``).
        ValueError: fewer than 2 classes (P(class 1) is what MC dropout reports).
    """
    for attr in ("embed", "head", "dropout", "fc"):
        if not hasattr(model, attr):
            raise TypeError(f"mc_predict needs a wsslib Classifier (with embed/head/dropout/fc); {type(model).__name__} has no '{attr}'")
    if not isinstance(model.dropout, nn.Dropout) or not isinstance(model.fc, nn.Linear):
        raise TypeError("mc_predict needs model.dropout to be nn.Dropout and model.fc to be nn.Linear")
    if model.fc.out_features < 2:
        raise ValueError(f"mc_predict reports P(class 1): the model needs >= 2 classes, it has {model.fc.out_features}")
    return model.dropout, model.fc


def _positive_prob(logits: torch.Tensor) -> torch.Tensor:
    """logits ``(..., N)`` -> P(class 1) ``(...)``."""
    return torch.softmax(logits.float(), dim=-1)[..., 1]


def mc_predict(
    model: nn.Module,
    images: torch.Tensor,
    k: int = 20,
    fast: bool = True,
    batch_size: int | None = None,
    generator: torch.Generator | None = None,
    masks: torch.Tensor | None = None,
) -> MCResult:
    """Monte Carlo dropout prediction of P(class 1) with its uncertainty.

    Runs under ``torch.no_grad``. During sampling every module is in eval mode (BatchNorm uses
    its running statistics) except the head dropout; afterwards each module's train/eval flag
    is restored exactly as it was.

    Args:
        model: a :class:`wsslib.models.Classifier` (needs ``embed``, ``dropout``, ``fc``).
        images: ``(B, 3, H, W)`` float in [0, 1], on the model's device.
        k: number of stochastic passes K >= 1 (default 20).
        fast: True: one ``embed`` pass, then the K heads vectorised (exact because dropout
            follows pooling). False: K full forward passes with dropout active.
        batch_size: images per chunk (bounds memory); ``None`` = all at once. With random masks
            the draws depend on the chunking; pass ``masks`` for results independent of it.
        generator: torch generator for the masks. Without ``masks`` and without ``generator``
            the naive path uses ``nn.Dropout`` itself (global RNG).
        masks: ``(K, B, C)`` masks from :func:`sample_dropout_masks` (scaled, ``C =
            model.num_features``); both paths then use exactly these, so fast == naive.

    Returns:
        :class:`MCResult` with ``p (B,)``, ``u (B,)`` (population std, divisor K) and
        ``probs (K, B)``, float32 on the images' device.

    Raises:
        ShapeError: ``images`` not ``(B, 3, H, W)`` or ``masks`` not ``(K, B, C)``.
    """
    check_shape("images", images, (None, 3, None, None))
    dropout, fc = check_dropout_head(model)
    if int(k) < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    k = int(k)
    n_img, c = images.shape[0], fc.in_features
    if masks is not None:
        check_shape("masks", masks, (None, n_img, c))
        if masks.shape[0] != k:
            raise ShapeError(f"masks: has {masks.shape[0]} passes but k={k}")
    step = n_img if batch_size is None else int(batch_size)
    if step < 1:
        raise ValueError(f"batch_size must be >= 1 or None, got {batch_size}")

    flags = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        chunks = []
        with torch.no_grad():
            for s in range(0, n_img, step):
                x = images[s : s + step]
                m = masks[:, s : s + step] if masks is not None else None
                if m is None and (fast or generator is not None):
                    m = sample_dropout_masks(k, x.shape[0], c, dropout.p, generator=generator)
                if m is not None:
                    m = m.to(device=x.device, dtype=torch.float32)
                if fast:
                    chunks.append(_fast(model, fc, x, m))
                else:
                    chunks.append(_naive(model, dropout, x, k, m))
        probs = torch.cat(chunks, dim=1)  # (K, B)
    finally:
        for mod, was_training in flags:
            mod.training = was_training
    return MCResult(p=probs.mean(dim=0), u=probs.std(dim=0, correction=0), probs=probs)


def _fast(model: nn.Module, fc: nn.Linear, x: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """One embed pass, K heads: ``(K, b, C)`` masked features @ fc -> P(class 1) ``(K, b)``."""
    return heads_from_embedding(model.embed(x), fc, masks)


def heads_from_embedding(z: torch.Tensor, fc: nn.Linear, masks: torch.Tensor) -> torch.Tensor:
    """K dropout heads on pooled features: ``z (b, C)``, ``masks (K, b, C)`` -> P(class 1) ``(K, b)``."""
    zk = z.float().unsqueeze(0) * masks  # (K, b, C)
    logits = torch.nn.functional.linear(zk, fc.weight.float(), None if fc.bias is None else fc.bias.float())
    return _positive_prob(logits)


def _naive(model: nn.Module, dropout: nn.Dropout, x: torch.Tensor, k: int, masks: torch.Tensor | None) -> torch.Tensor:
    """K full forward passes; with ``masks`` the dropout output is replaced by ``input * masks[i]``."""
    out = []
    if masks is None:
        dropout.train()
        for _ in range(k):
            out.append(_positive_prob(model(x)))
        return torch.stack(out)
    current: list[torch.Tensor] = []
    # dropout stays in eval (identity); the hook swaps its output for input * mask of this pass
    handle = dropout.register_forward_hook(lambda mod, inp, output: inp[0] * current[0])
    try:
        for i in range(k):
            current[:] = [masks[i]]
            out.append(_positive_prob(model(x)))
    finally:
        handle.remove()
    return torch.stack(out)
