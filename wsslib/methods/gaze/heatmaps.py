"""Gaze heatmaps (GazeMedSeg step 1): fixations -> duration-weighted Gaussian maps.

Every fixation is a duration-weighted isotropic Gaussian, ``sigma = sigma_frac`` of each side (the
paper's code: 70 px on a 768 x 768 canvas, so ``sigma_frac = 70 / 768``; NCI-ISBI 50 / 768),
summed and min-max normalised per image (:func:`wsslib.core.maps.minmax_per_image`, ``eps=0``).

The paper's map (GazeMedSeg's released notebooks, ``draw_heatmap``): on a 768 x 768 float32
canvas, each fixation ``(x, y, duration)`` adds its duration at pixel
``(row round(y * 768) - 1, column round(x * 768) - 1)`` (Python's round: half to even; ``-1``
wraps to the last pixel, numpy indexing), the canvas is filtered with
``scipy.ndimage.gaussian_filter(canvas, 70)`` (scipy's defaults: ``mode="reflect"``, i.e. mirrored
about the canvas edge, kernel cut at ``truncate=4`` sigmas), min-max normalised, resized to the
image with ``cv2.resize(..., interpolation=cv2.INTER_CUBIC)`` and cast to float16.
:func:`reference_heatmap` is that function, parameterised (the reference of the tests and of
``wsslib bench gaze``).

The fast path (:func:`gaze_heatmaps`, :func:`gaze_heatmaps_batched`) computes the same map
without a canvas filter: the filtered canvas is a sum of *separable* Gaussians, so per image
``Gy (H, N) @ diag(duration) @ Gx^T (N, W)``, one (batched) matrix product:

- ``canvas="paper"`` (default): each factor is the paper's, exactly: per axis, the fixation's
  canvas pixel ``p`` and its two mirror images ``-p - 1`` and ``2 * 768 - 1 - p`` (scipy's
  ``reflect`` mode; one reflection per side suffices since the kernel radius, 280 px, is shorter
  than the canvas), the kernel cut at ``truncate`` sigmas, evaluated at the 768 canvas pixels
  and resized to the output with the bicubic (``a = -0.75``, half-pixel centres, edge taps
  clamped: ``cv2.INTER_CUBIC``) weights. Only the pixels the fixations occupy are filtered and
  resized, once per batch: no exponentials per image. The map is then exactly the published
  one, in float32, but for one step: the min-max normalisation runs on the resized map (so its
  range is exactly [0, 1]) rather than on the canvas before the resize. On Kvasir-SEG's real
  fixations at the shared images' sizes (~512 px: 1.5 canvas px per output pixel) the max abs
  difference from the published function (:func:`reference_heatmap` with its defaults, float16
  result) is 3.1e-4 (per-image max, mean 2.6e-4; the first 50 images, ``wsslib bench gaze --n
  50``), most of it the float16 rounding (up to 2.4e-4). Small outputs sample the canvas more
  coarsely: a 48 x 64 map (12-16 canvas px per pixel) with its peak between samples differs
  by up to ~1e-2.
- ``canvas="infinite"``: the earlier variant: Gaussians at the exact fixation positions on an
  unbounded canvas, evaluated at the output pixel centres (no snapping to 768 canvas pixels, no
  reflection at the borders, no truncation). Fixations near a border are not mirrored back
  into the image, so it differs from the paper's map where gaze lies near an edge: on
  Kvasir-SEG's real fixations the per-image max abs difference from the published function is
  0.23 on average, up to 0.48 (the first 50 images; issue 16 measured 0.18 and 0.48 on 150).
  It equals :func:`reference_heatmap` with ``mode="constant", snap="floor",
  interpolation="bilinear", float16=False`` within 1e-2.

Coordinate convention: a fixation ``(x, y)`` is normalised to ``[0, 1]``, ``x`` along the columns
(left to right), ``y`` along the rows (top to bottom). Output pixel ``(row i, column j)`` of an
``H x W`` map covers ``[j/W, (j+1)/W) x [i/H, (i+1)/H)`` and is sampled at its centre
``((j + 0.5) / W, (i + 0.5) / H)``; so ``x = 0.5`` is the middle of the image whatever its size.
On the paper's canvas that centre is the canvas coordinate ``(j + 0.5) * 768 / W - 0.5`` (pixel
``c`` of the canvas is centred on ``c``), the fixation sits at canvas pixel
``round(x * 768) - 1``: 0 to 1 canvas pixel (0.5 on average, 0.07 % of the side) up and left of
``x * 768 - 0.5``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from wsslib.core.errors import DataError, ShapeError
from wsslib.core.maps import minmax_per_image
from wsslib.core.utils import resolve_device

__all__ = ["CANVASES", "NCI_ISBI_SIGMA_FRAC", "PAPER_CANVAS", "PAPER_SIGMA_FRAC", "PAPER_TRUNCATE", "Canvas",
           "gaze_heatmaps", "gaze_heatmaps_batched", "reference_heatmap"]

PAPER_CANVAS = 768
"""Side in px of the paper code's square drawing canvas (every image, whatever its size)."""

PAPER_SIGMA_FRAC = 70.0 / PAPER_CANVAS
"""The paper code's Kvasir-SEG sigma: 70 px on its 768 x 768 canvas."""

NCI_ISBI_SIGMA_FRAC = 50.0 / PAPER_CANVAS
"""The paper code's NCI-ISBI sigma: 50 px on its 768 x 768 canvas."""

PAPER_TRUNCATE = 4.0
"""``scipy.ndimage.gaussian_filter``'s default: the kernel is cut at 4 sigmas (radius 280 px for 70)."""

Canvas = Literal["paper", "infinite"]
CANVASES: tuple[str, ...] = ("paper", "infinite")

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


def _check_canvas(canvas: str, canvas_side: int, truncate: float) -> None:
    if canvas not in CANVASES:
        raise ValueError(f"canvas must be one of {CANVASES}, got {canvas!r}")
    if int(canvas_side) < 1:
        raise ValueError(f"canvas_side must be a positive number of pixels, got {canvas_side}")
    if not truncate > 0:
        raise ValueError(f"truncate must be positive, got {truncate}")


def _canvas_pixels(coords: torch.Tensor, side: int, axis: str) -> torch.Tensor:
    """The paper's canvas pixel of normalised coordinates: ``round(c * side) - 1``, numpy-wrapped.

    Args:
        coords: ``(B, N) float64`` normalised coordinates (CPU).
        side: canvas side in px.
        axis: ``"x"`` or ``"y"`` (for the error message).

    Returns:
        ``(B, N) float64`` integer-valued pixel indices in ``[0, side)``: ``round`` is half to even
        (Python's and numpy's), index ``-k`` wraps to ``side - k`` like numpy indexing.

    Raises:
        DataError: a coordinate lands outside ``[-side, side)`` (where the paper's code raises
            an IndexError): ``x`` or ``y`` beyond about ``1 + 0.5 / side``.
    """
    p = torch.round(coords * side) - 1.0  # torch.round: half to even, as Python's round
    bad = (p < -side) | (p >= side)
    if bad.any():
        v = float(coords[bad][0])
        raise DataError(f"a fixation's {axis} = {v:g} falls outside the paper's {side} px canvas (it indexes "
                        f"pixel round({axis} * {side}) - 1); pass canvas='infinite' for coordinates outside [0, 1]")
    return torch.where(p < 0, p + side, p)


@lru_cache(maxsize=8)
def _reflect_filter_matrix(side: int, sigma_px: float, radius: int) -> torch.Tensor:
    """``(side, side) float32`` matrix ``M`` (CPU, cached): ``M[p, c]`` is the response at canvas
    pixel ``c`` of scipy's ``gaussian_filter1d(mode="reflect", truncate)`` to a unit impulse at
    pixel ``p`` (``M`` is symmetric).

    The kernel is ``exp(-t^2 / (2 sigma^2))`` for integer ``|t| <= radius`` (scipy's, without its
    normalisation: a common factor that min-max removes). ``reflect`` mirrors about the canvas
    edges (``d c b a | a b c d | d c b a``): the impulse's images at ``-p - 1`` and
    ``2 side - 1 - p`` reach the canvas within ``radius`` of an edge when ``radius < side`` (the
    paper: 280 < 768); a longer kernel sums every image of the period-``2 side`` extension.
    """
    kern = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=torch.float64) / sigma_px) ** 2)
    c = torch.arange(side, dtype=torch.int64)
    reps = 0 if radius < side else radius // (2 * side) + 1
    m = torch.zeros((side, side), dtype=torch.float64)
    for k in range(-reps - 1, reps + 2):
        for images in (c + 2 * side * k, -c - 1 + 2 * side * k):  # the k-th images of every pixel p
            t = c[None, :] - images[:, None]  # (p, c)
            near = t.abs() <= radius
            if near.any():
                m += torch.where(near, kern[(t + radius).clamp_(0, 2 * radius)], 0.0)
    return m.to(torch.float32)


def _paper_factors(pix: torch.Tensor, n_out: int, side: int, sigma_px: float, radius: int) -> torch.Tensor:
    """The paper's 1-D factors of fixations at canvas pixels ``pix``, resized: ``(B, N) -> (B, N, n_out)``.

    Factor of a fixation at pixel ``p``: row ``p`` of :func:`_reflect_filter_matrix` (the
    reflect-mode filtered impulse) resized from ``side`` to ``n_out`` samples with
    ``F.interpolate(mode="bicubic", align_corners=False)``, i.e. ``cv2.INTER_CUBIC``'s kernel (Keys'
    cubic, ``a = -0.75``, half-pixel centres, edge taps clamped, no antialiasing). Only the rows
    of the pixels present are resized (CPU, float32).
    """
    u, inv = torch.unique(pix, return_inverse=True)
    rows = _reflect_filter_matrix(side, sigma_px, radius)[u]  # (U, side)
    if n_out != side:
        rows = F.interpolate(rows[None, None], size=(rows.shape[0], n_out), mode="bicubic", align_corners=False)[0, 0]
    return rows[inv]  # (B, N, n_out)


def gaze_heatmaps_batched(
    fixations: Sequence,
    size: tuple[int, int],
    sigma_frac: float = PAPER_SIGMA_FRAC,
    device: str | torch.device | None = None,
    use_duration: bool = True,
    *,
    canvas: Canvas = "paper",
    canvas_side: int = PAPER_CANVAS,
    truncate: float = PAPER_TRUNCATE,
) -> torch.Tensor:
    """Heatmaps of ``B`` images of one size ``(H, W)``, as one padded batched matrix product.

    For an image with ``N`` fixations ``(x_k, y_k, d_k)``::

        map[i, j] = sum_k d_k * gy_k(i) * gx_k(j) = (Gy @ diag(d) @ Gx^T)[i, j]

    then min-max normalised per image. With ``canvas="paper"`` (default), ``gx_k`` is the paper's
    factor: the 1-D Gaussian (sigma ``sigma_frac * canvas_side`` canvas px, cut at ``truncate``
    sigmas) around canvas pixel ``round(x_k * canvas_side) - 1`` plus its mirror images about the
    canvas edges, sampled at the canvas pixels and resized bicubically to ``W`` (see the module
    docstring: the published function's map, to 3e-4 on Kvasir-SEG). With ``canvas="infinite"``,
    ``gx_k(j) = exp(-(c_j - x_k)^2 / (2 sigma_frac^2))`` at the pixel centres ``c_j = (j + 0.5) / W``
    (and ``gy_k`` likewise along the rows). Images with fewer fixations are padded with
    zero-duration ones.

    Args:
        fixations: ``B`` arrays (numpy or torch) ``(N_b, 3)``: ``x`` (column), ``y`` (row) in
            [0, 1] and duration in ms (any non-negative weight). ``N_b = 0`` is allowed. The
            paper's snapping ``round(x * 768)`` happens in float64, on the values given (the
            loaders keep the CSV's float64 values: float32 copies would snap ~3 % of Kvasir-SEG's
            coordinates, many of which lie exactly on a half pixel, one canvas pixel away from
            the published code's, moving maps by up to ~3e-3).
        size: ``(H, W)`` of every output map.
        sigma_frac: Gaussian sigma as a fraction of each side (default 70/768, the paper's
            Kvasir-SEG value; :data:`NCI_ISBI_SIGMA_FRAC` for NCI-ISBI).
        device: where to compute (``None``: CPU; ``"auto"``: CUDA when present).
        use_duration: weight fixations by duration (the method, and what the paper's released
            notebooks ran); ``False`` weights each fixation 1.
        canvas: ``"paper"`` (the published function's map) or ``"infinite"`` (unbounded canvas,
            exact positions; the earlier default).
        canvas_side: side of the paper's square canvas in px (``"paper"`` only).
        truncate: kernel cut in sigmas (``"paper"`` only; scipy's default 4).

    Returns:
        ``(B, H, W) float32`` maps in [0, 1] with maximum 1; all zero for an image without
        fixations (or whose durations are all 0).

    Raises:
        ShapeError: a fixation array is not ``(N, 3)``, or ``size`` is not a positive pair.
        DataError: NaN / infinite values, negative durations, or (``"paper"``) a coordinate
            outside the canvas.
        ValueError: a non-positive ``sigma_frac``, ``canvas_side`` or ``truncate``, or an unknown
            ``canvas``.

    Example:
        >>> import numpy as np
        >>> m = gaze_heatmaps_batched([np.array([[0.25, 0.5, 300.0]]), np.zeros((0, 3))], (47, 63))
        >>> tuple(m.shape), float(m[0].max()), float(m[1].max())
        ((2, 47, 63), 1.0, 0.0)
        >>> m = gaze_heatmaps_batched([np.array([[0.25, 0.5, 300.0]])], (47, 63), canvas="infinite")
        >>> divmod(int(m[0].argmax()), 63)  # (row, column): centres (23.5 / 47, 15.5 / 63) nearest (0.5, 0.25)
        (23, 15)
    """
    h, w = _check_size("size", size)
    if not sigma_frac > 0:
        raise ValueError(f"sigma_frac must be positive, got {sigma_frac}")
    _check_canvas(canvas, canvas_side, truncate)
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
    if not use_duration:
        packed[..., 2] = 0.0
        for k, f in enumerate(fix):
            packed[k, : f.shape[0], 2] = 1.0
    d = packed[..., 2].to(dev, torch.float32)  # (B, N)
    if canvas == "paper":
        side = int(canvas_side)
        sigma_px = float(sigma_frac) * side
        radius = int(float(truncate) * sigma_px + 0.5)  # scipy's kernel radius
        px = _canvas_pixels(packed[..., 0], side, "x").to(torch.int64)  # snapped in float64
        py = _canvas_pixels(packed[..., 1], side, "y").to(torch.int64)
        gy = _paper_factors(py, h, side, sigma_px, radius).to(dev).transpose(1, 2)  # (B, H, N)
        gx = _paper_factors(px, w, side, sigma_px, radius).to(dev)  # (B, N, W)
    else:
        x, y = packed[..., 0].to(dev, torch.float32), packed[..., 1].to(dev, torch.float32)  # (B, N) each
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
    *,
    canvas: Canvas = "paper",
    canvas_side: int = PAPER_CANVAS,
    truncate: float = PAPER_TRUNCATE,
) -> list[torch.Tensor]:
    """Heatmaps of images of any sizes: images of equal size go through one batched product.

    Args:
        fixations: ``B`` arrays ``(N_b, 3)`` (x column, y row in [0, 1], duration ms).
        sizes: ``B`` pairs ``(H_b, W_b)``, or one ``(H, W)`` pair for all.
        sigma_frac, device, use_duration, canvas, canvas_side, truncate: as in
            :func:`gaze_heatmaps_batched` (default: the paper's map, ``canvas="paper"``).
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
    _check_canvas(canvas, canvas_side, truncate)
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
            maps = gaze_heatmaps_batched([fixations[i] for i in part], (h, w), sigma_frac, device, use_duration,
                                         canvas=canvas, canvas_side=canvas_side, truncate=truncate)
            for i, m in zip(part, maps):
                out[i] = m
    return out  # type: ignore[return-value]


def reference_heatmap(
    fixations,
    size: tuple[int, int],
    canvas: int = PAPER_CANVAS,
    sigma: float = 70.0,
    mode: str = "reflect",
    truncate: float = PAPER_TRUNCATE,
    use_duration: bool = True,
    *,
    snap: Literal["paper", "floor"] = "paper",
    interpolation: Literal["bicubic", "bilinear"] = "bicubic",
    float16: bool = True,
) -> torch.Tensor:
    """The paper code's heatmap (GazeMedSeg's ``draw_heatmap``), step by step; defaults = the paper's.

    1. A ``canvas x canvas`` float32 canvas; each fixation adds its duration (``use_duration``;
       else 1) at ``canvas[round(y * canvas) - 1, round(x * canvas) - 1]`` (``snap="paper"``:
       Python's round on float64, half to even; index -1 wraps to the last pixel as in numpy),
       one fixation after the other.
    2. ``scipy.ndimage.gaussian_filter(canvas, sigma, mode=mode, truncate=truncate)`` (the paper:
       scipy's defaults, ``mode="reflect"``, ``truncate=4``; sigma 70 for Kvasir-SEG, 50 for
       NCI-ISBI).
    3. Min-max normalisation ``(c - min) / (max - min)`` (float32).
    4. Resize to ``size`` (``interpolation="bicubic"``: ``F.interpolate(mode="bicubic",
       align_corners=False)``, which is ``cv2.resize(..., interpolation=cv2.INTER_CUBIC)`` to
       2e-7 on these maps; the output is not clamped: bicubic may overshoot [0, 1] by ~1e-4).
    5. ``float16=True``: rounded to float16 like the published function's ``astype(np.float16)``.

    The earlier reference of the infinite-canvas fast path is ``mode="constant", snap="floor"``
    (pixel ``floor(c * canvas)``, clipped), ``interpolation="bilinear", float16=False``.

    Differences from the published function: an image without fixations (or with zero durations)
    gives an all-zero map here, NaN there; a coordinate outside the canvas raises DataError here,
    IndexError there.

    Args:
        fixations: ``(N, 3)`` x (column), y (row) in [0, 1], duration.
        size: output ``(H, W)``.
        canvas: side of the square drawing canvas in px.
        sigma: Gaussian sigma in canvas px.
        mode, truncate: of ``scipy.ndimage.gaussian_filter``.
        use_duration: add the duration (the paper) or 1 per fixation.
        snap: ``"paper"`` (``round(c * canvas) - 1``) or ``"floor"`` (``floor(c * canvas)``, clipped).
        interpolation: ``"bicubic"`` (the paper) or ``"bilinear"``.
        float16: round the result to float16 (the paper).

    Returns:
        ``(H, W) float32`` map, about [0, 1] (exactly for bilinear; all zero without fixations).

    Raises:
        ShapeError / DataError: as :func:`gaze_heatmaps_batched`.
        ValueError: unknown ``snap`` or ``interpolation``.
    """
    from scipy.ndimage import gaussian_filter

    if snap not in ("paper", "floor"):
        raise ValueError(f"snap must be 'paper' or 'floor', got {snap!r}")
    if interpolation not in ("bicubic", "bilinear"):
        raise ValueError(f"interpolation must be 'bicubic' or 'bilinear', got {interpolation!r}")
    h, w = _check_size("size", size)
    fix = _as_fixations(0, fixations).numpy()
    img = np.zeros((canvas, canvas), np.float32)
    if snap == "paper" and fix.shape[0]:
        t = torch.from_numpy(fix)
        cols = _canvas_pixels(t[None, :, 0], canvas, "x")[0].to(torch.int64).tolist()
        rows = _canvas_pixels(t[None, :, 1], canvas, "y")[0].to(torch.int64).tolist()
        for r, c, dur in zip(rows, cols, fix[:, 2].tolist()):
            img[r, c] += dur if use_duration else 1.0  # float32 accumulation, in fixation order
    elif fix.shape[0]:
        cx = np.clip(np.floor(fix[:, 0] * canvas), 0, canvas - 1).astype(np.int64)
        cy = np.clip(np.floor(fix[:, 1] * canvas), 0, canvas - 1).astype(np.int64)
        np.add.at(img, (cy, cx), fix[:, 2].astype(np.float32) if use_duration else np.float32(1.0))
    img = gaussian_filter(img, sigma, mode=mode, truncate=truncate)
    lo, hi = img.min(), img.max()
    if not hi > lo:
        return torch.zeros((h, w), dtype=torch.float32)
    img = (img - lo) / ((hi - lo) * 1.0)
    out = F.interpolate(torch.from_numpy(img)[None, None], size=(h, w), mode=interpolation, align_corners=False)[0, 0]
    if float16:
        out = out.half().float()
    return out.contiguous()
