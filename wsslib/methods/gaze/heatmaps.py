"""Gaze heatmaps (GazeMedSeg step 1): fixations -> duration-weighted Gaussian maps.

Every fixation is a duration-weighted isotropic Gaussian on the normalised image canvas,
``sigma = sigma_frac`` of each side (the paper's code: 70 px on a 768 x 768 canvas, resized to the
image, so ``sigma_frac = 70 / 768``; NCI-ISBI 50 / 768), summed and min-max normalised per image
(:func:`wsslib.core.maps.minmax_per_image` with ``eps=0``). Computed exactly as a sum of
*separable* Gaussians, ``Gy (H, N) @ diag(duration) @ Gx^T (N, W)``: one (batched) matrix product
per image instead of drawing points on a canvas and filtering it (:func:`reference_heatmap`, kept
for tests and the benchmark ``wsslib bench gaze``).

Coordinate convention: a fixation ``(x, y)`` is normalised to ``[0, 1]``, ``x`` along the columns
(left to right), ``y`` along the rows (top to bottom). Pixel ``(row i, column j)`` of an
``H x W`` image covers ``[j/W, (j+1)/W) x [i/H, (i+1)/H)`` and is sampled at its centre
``((j + 0.5) / W, (i + 0.5) / H)``; so ``x = 0.5`` is the middle of the image whatever its size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from wsslib.core.errors import DataError, ShapeError
from wsslib.core.maps import minmax_per_image
from wsslib.core.utils import resolve_device

__all__ = ["PAPER_SIGMA_FRAC", "gaze_heatmaps", "gaze_heatmaps_batched", "reference_heatmap"]

PAPER_SIGMA_FRAC = 70.0 / 768.0
"""The paper code's Kvasir-SEG sigma: 70 px on its 768 x 768 canvas (NCI-ISBI: 50 / 768)."""

_MAX_CHUNK_ELEMENTS = 1 << 22  # output elements (B * H * W) per batched product: 16 MiB float32
_LOG_TINY = math.log(1e-15)


# --------------------------------------------------------------------------------------------
# heatmaps
# --------------------------------------------------------------------------------------------


def _as_fixations(i: int, fix) -> torch.Tensor:
    """Validate fixations number ``i``: ``(N, 3)`` array-like -> ``(N, 3) float64`` CPU tensor."""
    if fix is None:
        raise ShapeError(
            f"fixations[{i}] is None: this image has no gaze (pass an empty (0, 3) array for 'no fixations')"
        )
    t = torch.as_tensor(np.asarray(fix, dtype=np.float64) if not isinstance(fix, torch.Tensor) else fix)
    t = t.detach().to("cpu", torch.float64)
    if t.numel() == 0:
        return t.reshape(0, 3)
    if t.dim() != 2 or t.shape[1] != 3:
        raise ShapeError(f"fixations[{i}]: expected shape (N, 3) (x, y, duration), got {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise DataError(f"fixations[{i}] holds NaN or infinite values")
    if (t[:, 2] < 0).any():
        raise DataError(f"fixations[{i}] holds negative durations (min {float(t[:, 2].min())})")
    return t


def _check_size(name: str, size) -> tuple[int, int]:
    try:
        h, w = (int(s) for s in size)
    except (TypeError, ValueError):
        raise ShapeError(f"{name}: expected an (H, W) pair of ints, got {size!r}") from None
    if h < 1 or w < 1:
        raise ShapeError(f"{name}: expected a positive (H, W), got {(h, w)}")
    return h, w


def gaze_heatmaps_batched(
    fixations: Sequence,
    size: tuple[int, int],
    sigma_frac: float = PAPER_SIGMA_FRAC,
    device: str | torch.device | None = None,
    use_duration: bool = True,
) -> torch.Tensor:
    """Heatmaps of ``B`` images of one size ``(H, W)``, as one padded batched matrix product.

    For an image with ``N`` fixations ``(x_k, y_k, d_k)``::

        map[i, j] = sum_k d_k * exp(-(r_i - y_k)^2 / (2 sy^2)) * exp(-(c_j - x_k)^2 / (2 sx^2))
                  = (Gy @ diag(d) @ Gx^T)[i, j]

    with pixel centres ``r_i = (i + 0.5) / H``, ``c_j = (j + 0.5) / W`` and ``sx = sy = sigma_frac``
    on the normalised canvas (``sigma_frac * W`` and ``sigma_frac * H`` pixels), then min-max
    normalised per image. Images with fewer fixations are padded with zero-duration ones.

    Args:
        fixations: ``B`` arrays (numpy or torch) ``(N_b, 3)``: ``x`` (column), ``y`` (row) in
            [0, 1] and duration in ms (any non-negative weight). ``N_b = 0`` is allowed.
        size: ``(H, W)`` of every output map.
        sigma_frac: Gaussian sigma as a fraction of each side (default 70/768, the paper's).
        device: where to compute (``None``: CPU; ``"auto"``: CUDA when present).
        use_duration: weight fixations by duration (the method); ``False`` weights each
            fixation 1, which is what the paper's released notebook actually ran.

    Returns:
        ``(B, H, W) float32`` maps in [0, 1] with maximum 1; all zero for an image without
        fixations (or whose durations are all 0).

    Raises:
        ShapeError: a fixation array is not ``(N, 3)``, or ``size`` is not a positive pair.
        DataError: NaN / infinite values or negative durations.

    Example:
        >>> import numpy as np
        >>> m = gaze_heatmaps_batched([np.array([[0.25, 0.5, 300.0]]), np.zeros((0, 3))], (47, 63))
        >>> tuple(m.shape), float(m[0].max()), float(m[1].max())
        ((2, 47, 63), 1.0, 0.0)
        >>> divmod(int(m[0].argmax()), 63)  # (row, column): centres (23.5 / 47, 15.5 / 63) nearest (0.5, 0.25)
        (23, 15)
    """
    h, w = _check_size("size", size)
    if not sigma_frac > 0:
        raise ValueError(f"sigma_frac must be positive, got {sigma_frac}")
    dev = torch.device("cpu") if device is None else resolve_device(device)
    fix = [_as_fixations(i, f) for i, f in enumerate(fixations)]
    b = len(fix)
    n_max = max((f.shape[0] for f in fix), default=0)
    if b == 0:
        return torch.zeros((0, h, w), dtype=torch.float32, device=dev)
    if n_max == 0:
        return torch.zeros((b, h, w), dtype=torch.float32, device=dev)
    packed = torch.zeros((b, n_max, 3), dtype=torch.float64)  # zero duration = padding
    for k, f in enumerate(fix):
        packed[k, : f.shape[0]] = f
    packed = packed.to(dev, torch.float32)
    x, y, d = packed.unbind(-1)  # (B, N) each
    if not use_duration:
        d = torch.zeros_like(d)
        for k, f in enumerate(fix):
            d[k, : f.shape[0]] = 1.0
    rows = (torch.arange(h, device=dev, dtype=torch.float32) + 0.5) / h  # (H,)
    cols = (torch.arange(w, device=dev, dtype=torch.float32) + 0.5) / w  # (W,)
    gy = _gauss(rows[None, :, None] - y[:, None, :], sigma_frac)  # (B, H, N)
    gx = _gauss(x[:, :, None] - cols[None, None, :], sigma_frac)  # (B, N, W)
    maps = torch.bmm(gy.mul_(d[:, None, :]), gx)  # (B, H, W)
    return minmax_per_image(maps, eps=0.0, inplace=True)


def _gauss(delta: torch.Tensor, sigma: float) -> torch.Tensor:
    """``exp(-delta^2 / (2 sigma^2))`` in place, values below 1e-15 set to 0.

    Dropping the far tails (relative 1e-15: invisible after min-max) keeps the products in the
    matrix product out of float32's subnormal range, whose arithmetic is many times slower on CPUs.
    """
    g = delta.square_().mul_(-0.5 / sigma**2)
    return g.masked_fill_(g < _LOG_TINY, -math.inf).exp_()


def gaze_heatmaps(
    fixations: Sequence,
    sizes: Sequence[tuple[int, int]] | tuple[int, int],
    sigma_frac: float = PAPER_SIGMA_FRAC,
    device: str | torch.device | None = None,
    use_duration: bool = True,
    progress: bool = False,
) -> list[torch.Tensor]:
    """Heatmaps of images of any sizes: images of equal size go through one batched product.

    Args:
        fixations: ``B`` arrays ``(N_b, 3)`` (x column, y row in [0, 1], duration ms).
        sizes: ``B`` pairs ``(H_b, W_b)``, or one ``(H, W)`` pair for all.
        sigma_frac, device, use_duration: as in :func:`gaze_heatmaps_batched`.
        progress: tqdm bar over the size groups.

    Returns:
        ``B`` maps ``(H_b, W_b) float32`` in [0, 1], in input order (on ``device``).

    Example:
        >>> import numpy as np
        >>> f = [np.array([[0.5, 0.5, 200.0]])] * 3
        >>> [tuple(m.shape) for m in gaze_heatmaps(f, [(32, 40), (20, 20), (32, 40)])]
        [(32, 40), (20, 20), (32, 40)]
    """
    fixations = list(fixations)
    if len(sizes) == 2 and all(isinstance(s, (int, np.integer)) for s in sizes):
        sizes = [tuple(sizes)] * len(fixations)  # type: ignore[list-item]
    sizes = [_check_size(f"sizes[{i}]", s) for i, s in enumerate(sizes)]  # type: ignore[union-attr]
    if len(sizes) != len(fixations):
        raise ShapeError(f"got {len(fixations)} fixation arrays but {len(sizes)} sizes")
    groups: dict[tuple[int, int], list[int]] = {}
    for i, s in enumerate(sizes):
        groups.setdefault(s, []).append(i)
    out: list[torch.Tensor | None] = [None] * len(fixations)
    n_fix = [0 if f is None else len(f) for f in fixations]
    for (h, w), idx in tqdm(groups.items(), desc="heatmaps", disable=not progress):
        idx.sort(key=n_fix.__getitem__)  # similar fixation counts share a chunk: little padding
        step = max(1, _MAX_CHUNK_ELEMENTS // (h * w))
        for s in range(0, len(idx), step):
            part = idx[s : s + step]
            maps = gaze_heatmaps_batched([fixations[i] for i in part], (h, w), sigma_frac, device, use_duration)
            for i, m in zip(part, maps):
                out[i] = m
    return out  # type: ignore[return-value]


def reference_heatmap(
    fixations,
    size: tuple[int, int],
    canvas: int = 768,
    sigma: float = 70.0,
    mode: str = "constant",
    truncate: float = 4.0,
    use_duration: bool = True,
) -> torch.Tensor:
    """The paper code's heatmap: points on a square canvas, Gaussian filter, min-max, resize.

    Each fixation adds its duration to the canvas pixel holding it
    (``floor(x * canvas)``, ``floor(y * canvas)``, clipped), the canvas is filtered with
    ``scipy.ndimage.gaussian_filter(sigma, mode, truncate)``, min-max normalised and resized to
    ``size`` bilinearly (half-pixel centres, like ``cv2.resize``; the paper used bicubic).

    Differences from :func:`gaze_heatmaps` (all well under 1e-2 after normalisation): points snap
    to canvas pixels (<= 0.5 canvas px), the kernel is cut at ``truncate`` sigmas, bilinear
    resampling. ``mode="constant"`` (zeros outside the canvas) matches the infinite-canvas sum of
    :func:`gaze_heatmaps`; the paper's code used scipy's default ``"reflect"``, which mirrors
    fixations near a border back into the image (pass ``mode="reflect"`` to get it). The
    paper's notebook also added 1 per fixation, not its duration (``use_duration=False``).

    Args:
        fixations: ``(N, 3)`` x (column), y (row) in [0, 1], duration.
        size: output ``(H, W)``.
        canvas: side of the square drawing canvas in px.
        sigma: Gaussian sigma in canvas px.

    Returns:
        ``(H, W) float32`` map in [0, 1] (all zero without fixations).
    """
    from scipy.ndimage import gaussian_filter

    h, w = _check_size("size", size)
    fix = _as_fixations(0, fixations).numpy()
    img = np.zeros((canvas, canvas), np.float64)
    if fix.shape[0]:
        cx = np.clip(np.floor(fix[:, 0] * canvas), 0, canvas - 1).astype(np.int64)
        cy = np.clip(np.floor(fix[:, 1] * canvas), 0, canvas - 1).astype(np.int64)
        np.add.at(img, (cy, cx), fix[:, 2] if use_duration else 1.0)
    img = gaussian_filter(img, sigma, mode=mode, truncate=truncate)
    t = minmax_per_image(torch.from_numpy(img)[None], eps=0.0, inplace=True).clamp_(0.0, 1.0)
    t = F.interpolate(t[None], size=(h, w), mode="bilinear", align_corners=False)[0, 0]
    return t.to(torch.float32).clamp_(0.0, 1.0)


