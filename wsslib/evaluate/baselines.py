"""Trivial baselines every results table carries (``methods.md``, "Trivial baselines").

* "Empty": predict background everywhere (:func:`empty_masks`).
* Centre prior: a centred ellipse covering the data set's mean foreground share
  (:func:`mean_foreground_share` on the training masks, then :func:`centre_prior`).

A method that does not beat these has not localised anything.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from wsslib.evaluate.metrics import as_bool_mask

__all__ = ["centre_prior", "empty_masks", "mean_foreground_share"]


def _check_size(**sizes: int) -> None:
    for name, v in sizes.items():
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise ValueError(f"{name} must be a non-negative int, got {v!r}")


def empty_masks(n: int, h: int, w: int, device: str | torch.device | None = None) -> torch.Tensor:
    """The "Empty" baseline: all-background masks.

    Args:
        n, h, w: number of images and their height and width.
        device: where to put the tensor (default: CPU).

    Returns:
        ``(n, h, w)`` bool, all False.

    Example:
        >>> m = empty_masks(2, 3, 4)
        >>> tuple(m.shape), m.dtype, bool(m.any())
        ((2, 3, 4), torch.bool, False)
    """
    _check_size(n=n, h=h, w=w)
    return torch.zeros((int(n), int(h), int(w)), dtype=torch.bool, device=device)


def centre_prior(h: int, w: int, fg_share: float, device: str | torch.device | None = None) -> torch.Tensor:
    """A centred ellipse with the image's aspect covering ``fg_share`` of the image.

    The ellipse's semi-axes are proportional to ``h / 2`` and ``w / 2``; its size is chosen on the
    pixel grid so that the number of pixels inside is as close as possible to ``fg_share * h * w``
    (the mask stays symmetric about both centre lines, so the count can miss by a few pixels on
    small images). Shares above ``pi / 4`` need an ellipse larger than the image: it is clipped to
    the image (the corners fill last). ``fg_share`` is clamped to ``[0, 1]``.

    Args:
        h, w: image height and width in pixels.
        fg_share: wanted foreground share, e.g. from :func:`mean_foreground_share`.
        device: where to put the mask (default: CPU).

    Returns:
        ``(h, w)`` bool; expand to a batch with ``mask.expand(n, -1, -1)``.

    Raises:
        ValueError: ``fg_share`` is NaN or infinite, or a size is negative.

    Example:
        >>> m = centre_prior(64, 96, 0.25)
        >>> tuple(m.shape), round(m.double().mean().item(), 2), bool(m[32, 48]), bool(m[0, 0])
        ((64, 96), 0.25, True, False)
    """
    _check_size(h=h, w=w)
    share = float(fg_share)
    if not math.isfinite(share):
        raise ValueError(f"fg_share must be a finite number, got {fg_share!r}")
    share = min(max(share, 0.0), 1.0)
    h, w = int(h), int(w)
    if h == 0 or w == 0:
        return torch.zeros((h, w), dtype=torch.bool, device=device)
    # Squared normalised elliptical radius of each pixel centre (1 on the inscribed ellipse).
    ys = (torch.arange(h, dtype=torch.float64) + 0.5 - h / 2) / (h / 2)
    xs = (torch.arange(w, dtype=torch.float64) + 0.5 - w / 2) / (w / 2)
    r2 = ys[:, None] ** 2 + xs[None, :] ** 2
    wanted = share * h * w
    radii, sizes = torch.unique(r2, sorted=True, return_counts=True)
    inside = torch.cat([torch.zeros(1, dtype=torch.int64), sizes.cumsum(0)])  # pixels with r2 <= radii[k-1]
    k = int(torch.argmin((inside.to(torch.float64) - wanted).abs()))
    if k == 0:
        mask = torch.zeros((h, w), dtype=torch.bool)
    else:
        mask = r2 <= radii[k - 1]
    return mask.to(device) if device is not None else mask


def mean_foreground_share(masks: torch.Tensor | np.ndarray, only_positive: bool = True) -> float:
    """Mean per-image foreground share of a set of masks (the centre prior's size).

    Args:
        masks: ``(N, H, W)`` bool (or 0/1 integer) tensor or array.
        only_positive: average only over images that hold an object (default), else over all.

    Returns:
        float in 0..1; 0.0 when no image is averaged (no masks, or none holding an object).

    Example:
        >>> m = torch.zeros(3, 2, 2, dtype=torch.bool)
        >>> m[0, 0, 0] = True; m[1] = True                 # shares 0.25, 1.0, 0.0
        >>> mean_foreground_share(m), mean_foreground_share(m, only_positive=False)
        (0.625, 0.4166666666666667)
    """
    t = as_bool_mask("masks", torch.as_tensor(masks) if isinstance(masks, np.ndarray) else masks)
    hw = t.shape[1] * t.shape[2]
    if hw == 0:
        return 0.0
    shares = t.sum(dim=(1, 2)).to(torch.float64) / hw
    if only_positive:
        shares = shares[shares > 0]
    return float(shares.mean()) if shares.numel() else 0.0
