"""Gaze supervision (GazeMedSeg, Zhong et al., MICCAI 2024): fixations -> heatmaps -> dense-CRF
refined maps -> hierarchical pseudo-masks.

The pipeline, as in ``methods.md`` section 3:

1. :func:`gaze_heatmaps`: every fixation is a duration-weighted isotropic Gaussian on the
   normalised image canvas, ``sigma = sigma_frac`` of each side (the paper's code: 70 px on a
   768 x 768 canvas, resized to the image, so ``sigma_frac = 70 / 768``), summed and min-max
   normalised per image. Computed exactly as a sum of *separable* Gaussians,
   ``Gy (H, N) @ diag(duration) @ Gx^T (N, W)``: one (batched) matrix product per image instead
   of drawing points on a canvas and filtering it (:func:`reference_heatmap`, kept for tests and
   the benchmark ``wsslib bench gaze``).
2. :func:`crf_refine`: dense CRF (pydensecrf), 2 labels, unary ``-log [1 - h, h]``, bilateral
   term only (``sxy=80, srgb=13, compat=1``), 10 mean-field iterations; the soft foreground
   probability is kept.
3. :func:`hierarchical_masks`: thresholds on the refined map give ``m`` nested pseudo-masks
   (Kvasir-SEG ``{0.5, 0.3}``; :func:`default_levels` for 2..5 levels).
4. :func:`pseudo_masks`: all of the above for a whole data set, resized to ``S x S`` for training
   (``wsslib.unet.train_multilevel``).

Coordinate convention: a fixation ``(x, y)`` is normalised to ``[0, 1]``, ``x`` along the columns
(left to right), ``y`` along the rows (top to bottom). Pixel ``(row i, column j)`` of an
``H x W`` image covers ``[j/W, (j+1)/W) x [i/H, (i+1)/H)`` and is sampled at its centre
``((j + 0.5) / W, (i + 0.5) / H)``; so ``x = 0.5`` is the middle of the image whatever its size.
"""

from __future__ import annotations

import math
import multiprocessing
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from wsslib.core.errors import DataError, ShapeError, WSSLibError
from wsslib.evaluate.metrics import SegmentationAccumulator
from wsslib.core.utils import check_shape, resolve_device

__all__ = [
    "KVASIR_LEVELS",
    "PAPER_SIGMA_FRAC",
    "PseudoMaskSet",
    "crf_refine",
    "default_levels",
    "gaze_heatmaps",
    "gaze_heatmaps_batched",
    "hierarchical_masks",
    "map_scores",
    "pseudo_masks",
    "reference_heatmap",
]

PAPER_SIGMA_FRAC = 70.0 / 768.0
"""The paper code's Kvasir-SEG sigma: 70 px on its 768 x 768 canvas (NCI-ISBI: 50 / 768)."""

KVASIR_LEVELS = (0.5, 0.3)
"""The paper's two Kvasir-SEG thresholds (NCI-ISBI used ``(0.2, 0.4)``)."""

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


def _min_max(maps: torch.Tensor) -> torch.Tensor:
    """Min-max normalise ``(B, H, W)`` maps per image, in place; flat maps become all zero.

    ``(x - lo) / (hi - lo)`` lies in [0, 1] exactly (the maximum maps to exactly 1), so no clamp
    (a memory pass) is needed.
    """
    flat_view = maps.flatten(1)
    lo, hi = flat_view.amin(1), flat_view.amax(1)  # (faster than torch.aminmax(dim=1) on CPU)
    span = hi - lo
    flat = ~(span > 1e-12 * hi.abs())  # constant maps, incl. all-zero ones
    maps.sub_(lo[:, None, None]).div_(torch.where(flat, torch.ones_like(span), span)[:, None, None])
    if flat.any():
        maps[flat] = 0.0
    return maps


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
    return _min_max(maps)


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
    t = _min_max(torch.from_numpy(img)[None]).clamp_(0.0, 1.0)
    t = F.interpolate(t[None], size=(h, w), mode="bilinear", align_corners=False)[0, 0]
    return t.to(torch.float32).clamp_(0.0, 1.0)


# --------------------------------------------------------------------------------------------
# dense CRF
# --------------------------------------------------------------------------------------------


def _densecrf():
    try:
        import pydensecrf.densecrf as dcrf
        from pydensecrf.utils import unary_from_softmax
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise WSSLibError(
            "crf_refine needs pydensecrf: install it with  pip install pydensecrf2  "
            "(or pass crf=False to use the raw gaze heatmaps)"
        ) from e
    return dcrf, unary_from_softmax


def crf_refine(
    image: np.ndarray,
    heatmap: np.ndarray | torch.Tensor,
    sxy: float = 80.0,
    srgb: float = 13.0,
    compat: float = 1.0,
    iters: int = 10,
    eps: float = 1e-5,
    max_side: int | None = None,
) -> torch.Tensor:
    """Dense-CRF refinement of a heatmap (the paper's ``crf_inference``), soft output.

    Two labels (background, foreground) with unary ``-log [1 - h, h]`` (``h`` clipped to
    ``[eps, 1 - eps]``), one bilateral pairwise term (Potts ``compat``; position scale ``sxy``
    px, colour scale ``srgb``), ``iters`` mean-field iterations, via ``pydensecrf``.

    Args:
        image: ``(H, W, 3) uint8`` RGB.
        heatmap: ``(H, W)`` float in [0, 1] (numpy or torch).
        sxy, srgb, compat, iters: the paper's values by default. ``sxy`` is in pixels of
            ``image``: the paper ran at the original Kvasir-SEG resolution, the shared copy is
            downsized about 1.2x (scale ``sxy`` by the downsizing factor to match exactly).
        max_side: if the image's longest side exceeds it, run the CRF on a copy downscaled to
            that longest side (antialiased; ``sxy`` scaled by the same factor, so the pairwise
            term covers the same part of the image) and upsample the soft map bilinearly. The
            CRF's cost is linear in the pixels: ``max_side=256`` on a 512 px image is ~4x faster.
            ``None`` (default): native resolution, as the paper.

    Returns:
        ``(H, W) float32`` CPU tensor: the CRF's marginal probability of the foreground.

    Raises:
        ShapeError: wrong shapes or dtype.
        WSSLibError: pydensecrf is not installed.
    """
    dcrf, unary_from_softmax = _densecrf()
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        got = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ShapeError(f"image: expected an (H, W, 3) uint8 numpy array, got {got}")
    h_map = heatmap.detach().cpu().numpy() if isinstance(heatmap, torch.Tensor) else np.asarray(heatmap)
    if h_map.shape != image.shape[:2]:
        raise ShapeError(f"heatmap: expected shape {image.shape[:2]} (the image's H, W), got {h_map.shape}")
    h, w = h_map.shape
    if max_side is not None and max(h, w) > int(max_side):
        scale = int(max_side) / max(h, w)
        small = (max(1, round(h * scale)), max(1, round(w * scale)))
        img_t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
        img_s = F.interpolate(img_t, size=small, mode="bilinear", align_corners=False, antialias=True)
        img_s = img_s[0].round_().clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
        heat_s = F.interpolate(torch.from_numpy(h_map.astype(np.float32))[None, None], size=small, mode="bilinear",
                               align_corners=False, antialias=True)[0, 0].clamp_(0.0, 1.0)
        q_s = crf_refine(img_s, heat_s, sxy=sxy * scale, srgb=srgb, compat=compat, iters=iters, eps=eps)
        return F.interpolate(q_s[None, None], size=(h, w), mode="bilinear", align_corners=False)[0, 0].clamp_(0.0, 1.0)
    p = np.clip(h_map.astype(np.float32), eps, 1.0 - eps)
    probs = np.stack([1.0 - p, p])  # (2, H, W)
    crf = dcrf.DenseCRF2D(w, h, 2)
    crf.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(probs, clip=eps)))
    crf.addPairwiseBilateral(sxy=sxy, srgb=srgb, rgbim=np.ascontiguousarray(image), compat=compat)
    q = np.asarray(crf.inference(int(iters)), dtype=np.float32)
    return torch.from_numpy(q[1].reshape(h, w).copy())


# --------------------------------------------------------------------------------------------
# pseudo-masks
# --------------------------------------------------------------------------------------------


def default_levels(m: int = 2) -> tuple[float, ...]:
    """Thresholds for ``m`` pseudo-mask levels, highest first: ``m`` evenly spaced values from 0.5
    down to 0.3 (``m = 1``: 0.5).

    These are the paper code's Kvasir-SEG levels (``configs/static.py`` of med-air/GazeMedSeg:
    2 levels ``{0.5, 0.3}``; 3: ``{0.5, 0.3, 0.4}``; 4: ``{0.5, 0.3, 0.367, 0.433}``; 5:
    ``{0.5, 0.3, 0.35, 0.4, 0.45}``), sorted and with the 4-level ones unrounded.

    Example:
        >>> default_levels(2), default_levels(3)
        ((0.5, 0.3), (0.5, 0.4, 0.3))
    """
    if not 1 <= m <= 5:
        raise ValueError(f"default_levels supports 1 to 5 levels, got m={m}; pass thresholds explicitly")
    if m == 1:
        return (0.5,)
    return tuple(round(0.5 - 0.2 * k / (m - 1), 6) for k in range(m))


def hierarchical_masks(maps: torch.Tensor, thresholds: Sequence[float] = KVASIR_LEVELS) -> torch.Tensor:
    """Threshold maps at several levels: ``masks[:, l] = maps > thresholds[l]``.

    Args:
        maps: ``(B, H, W)`` float maps in [0, 1].
        thresholds: ``m`` thresholds in (0, 1), in the order the levels should have.

    Returns:
        ``(B, m, H, W) bool``; a lower threshold's mask contains every higher one's.

    Example:
        >>> hierarchical_masks(torch.tensor([[[0.2, 0.4, 0.9]]]), (0.5, 0.3)).int().tolist()
        [[[[0, 0, 1]], [[0, 1, 1]]]]
    """
    check_shape("maps", maps, (None, None, None))
    thr = [float(t) for t in thresholds]
    if not thr:
        raise ValueError("thresholds is empty: give at least one level")
    t = torch.tensor(thr, dtype=maps.dtype if maps.is_floating_point() else torch.float32, device=maps.device)
    return maps[:, None] > t[None, :, None, None]


@dataclass
class PseudoMaskSet:
    """A data set's gaze supervision at training size ``S x S``.

    Attributes:
        images: ``(N, 3, S, S) float32`` in [0, 1].
        heatmaps: ``(N, S, S) float32`` gaze heatmaps (computed at native size, then resized).
        refined: ``(N, S, S) float32`` CRF maps (the heatmaps when ``crf=False``).
        masks: ``(N, m, S, S) bool`` pseudo-masks ``refined > levels[l]``.
        truth: ``(N, S, S) bool`` true masks (all False where ``has_mask`` is False).
        has_mask: ``(N,) bool``.
        levels: the ``m`` thresholds.
        ids: ``N`` image ids.
        scores: when ``score_thresholds`` was given: ``{"heatmap": {t: scores}, "refined":
            {t: scores}}`` with :func:`wsslib.metrics.segmentation_scores` dicts measured at
            each image's NATIVE resolution against its true mask (images with a mask only).
        fixations: ``N`` arrays ``(N_i, 3)`` (x, y in [0, 1], duration), as the samples held them.
        sizes: ``N`` native ``(H, W)`` sizes (to evaluate predictions at native resolution).
    """

    images: torch.Tensor
    heatmaps: torch.Tensor
    refined: torch.Tensor
    masks: torch.Tensor
    truth: torch.Tensor
    has_mask: torch.Tensor
    levels: tuple[float, ...]
    ids: list[str]
    scores: dict = field(default_factory=dict)
    fixations: list = field(default_factory=list)
    sizes: list = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    def select(self, index: Sequence[int] | slice | torch.Tensor) -> PseudoMaskSet:
        """The images at ``index`` (positions, a slice or a bool mask) as a new set.

        ``scores`` stay those of the whole set (they are aggregates, not per image).

        Example:
            >>> pm = PseudoMaskSet(torch.zeros(3, 3, 4, 4), torch.zeros(3, 4, 4), torch.zeros(3, 4, 4),
            ...                    torch.zeros(3, 1, 4, 4, dtype=torch.bool), torch.zeros(3, 4, 4, dtype=torch.bool),
            ...                    torch.ones(3, dtype=torch.bool), (0.5,), ["a", "b", "c"])
            >>> pm.select([2, 0]).ids, len(pm.select(slice(1, None)))
            (['c', 'a'], 2)
        """
        n = len(self.ids)
        if isinstance(index, slice):
            pos = list(range(n))[index]
        else:
            t = torch.as_tensor(index)
            if t.dtype == torch.bool:
                if t.shape != (n,):
                    raise ShapeError(f"a bool index must have shape ({n},), got {tuple(t.shape)}")
                t = torch.nonzero(t).flatten()
            pos = [int(i) for i in t.reshape(-1).tolist()]
            bad = [i for i in pos if not -n <= i < n]
            if bad:
                raise IndexError(f"index {bad[0]} is out of range for a set of {n} images")
        idx = torch.tensor(pos, dtype=torch.long)

        def pick(xs: list) -> list:
            return [xs[i] for i in pos]

        return PseudoMaskSet(
            images=self.images[idx], heatmaps=self.heatmaps[idx], refined=self.refined[idx],
            masks=self.masks[idx], truth=self.truth[idx], has_mask=self.has_mask[idx], levels=self.levels,
            ids=pick(self.ids), scores=self.scores,
            fixations=pick(self.fixations) if self.fixations else [],
            sizes=pick(self.sizes) if self.sizes else [],
        )


def _resize(t: torch.Tensor, size: int, antialias: bool) -> torch.Tensor:
    """``(C, H, W)`` float -> ``(C, S, S)`` bilinear."""
    if t.shape[-2:] == (size, size):
        return t
    return F.interpolate(t[None], size=(size, size), mode="bilinear", align_corners=False, antialias=antialias)[0]


def pseudo_masks(
    samples: Iterable,
    size: int,
    levels: Sequence[float] = KVASIR_LEVELS,
    crf: bool = True,
    sigma_frac: float = PAPER_SIGMA_FRAC,
    crf_params: dict | None = None,
    score_thresholds: Sequence[float] | None = None,
    use_duration: bool = True,
    progress: bool = True,
    chunk: int = 32,
    workers: int = 1,
) -> PseudoMaskSet:
    """Heatmaps, CRF maps and hierarchical pseudo-masks of every sample, resized to ``S x S``.

    Heatmaps and CRF run at each image's native size (as in the paper); the maps are then resized
    bilinearly (images with antialiasing, true masks nearest) to ``S x S``, and the pseudo-masks
    are thresholds of the resized refined maps.

    Args:
        samples: a :class:`wsslib.data.WSSDataset` or any iterable of
            :class:`wsslib.data.Sample` with ``gaze``.
        size: side ``S`` of the outputs.
        levels: thresholds of the ``m`` levels (:func:`default_levels`).
        crf: refine with :func:`crf_refine` (``False``: pseudo-masks from the heatmaps).
        sigma_frac: heatmap sigma as a fraction of each side.
        crf_params: keyword arguments for :func:`crf_refine` (``sxy``, ``srgb``, ``compat``, ``iters``,
            ``max_side``).
        score_thresholds: if given, also score heatmap and refined maps at these thresholds at
            native resolution (``PseudoMaskSet.scores``).
        use_duration: duration-weighted fixations (see :func:`gaze_heatmaps_batched`).
        progress: tqdm bar over the images.
        chunk: images decoded and processed together.
        workers: processes running the CRF in parallel (it takes ~0.3 s for a 512 x 450 image on
            one core); 1 runs it in this process.

    Returns:
        :class:`PseudoMaskSet`.

    Raises:
        DataError: a sample has no gaze, or the set is empty.
    """
    levels = tuple(float(t) for t in levels)
    crf_params = dict(crf_params or {})
    thr_scores = tuple(float(t) for t in score_thresholds) if score_thresholds else ()
    accs = {kind: {t: SegmentationAccumulator() for t in thr_scores} for kind in ("heatmap", "refined")}
    total = len(samples) if hasattr(samples, "__len__") else None  # type: ignore[arg-type]
    it = iter(samples)
    images, heat, refined, truth, has_mask, ids, fixations, sizes = [], [], [], [], [], [], [], []
    bar = tqdm(total=total, desc="pseudo-masks" + (" + CRF" if crf else ""), disable=not progress)
    # spawn, not fork: a process forked from one whose torch/OpenMP threads hold locks can hang
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) \
        if crf and workers > 1 else None
    try:
        _pseudo_mask_chunks(it, chunk, crf, crf_params, sigma_frac, use_duration, size, thr_scores, accs, pool, bar,
                            (images, heat, refined, truth, has_mask, ids, fixations, sizes))
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown()
    if not ids:
        raise DataError("pseudo_masks: the data set is empty")
    refined_t = torch.stack(refined)
    scores = {kind: {t: acc.compute() for t, acc in d.items()} for kind, d in accs.items()} if thr_scores else {}
    return PseudoMaskSet(
        images=torch.stack(images),
        heatmaps=torch.stack(heat),
        refined=refined_t,
        masks=hierarchical_masks(refined_t, levels),
        truth=torch.stack(truth),
        has_mask=torch.tensor(has_mask, dtype=torch.bool),
        levels=levels,
        ids=ids,
        scores=scores,
        fixations=fixations,
        sizes=sizes,
    )


def _crf_numpy(image: np.ndarray, heatmap: np.ndarray, params: dict) -> np.ndarray:
    """:func:`crf_refine` with numpy in and out (for worker processes)."""
    return crf_refine(image, heatmap, **params).numpy()


def _pseudo_mask_chunks(it, chunk, crf, crf_params, sigma_frac, use_duration, size, thr_scores, accs, pool, bar, out):
    """The body of :func:`pseudo_masks`: fills the lists in ``out`` chunk by chunk."""
    images, heat, refined, truth, has_mask, ids, fixations, sizes = out
    while True:
        batch = [s for _, s in zip(range(chunk), it)]
        if not batch:
            break
        for s in batch:
            if s.gaze is None:
                raise DataError(f"sample {s.id!r} has no gaze fixations: pseudo_masks needs a data set with gaze")
        batch_sizes = [s.image.shape[:2] for s in batch]
        maps = gaze_heatmaps([s.gaze for s in batch], batch_sizes, sigma_frac, None, use_duration)
        if not crf:
            refs = maps
        elif pool is not None:
            jobs = pool.map(_crf_numpy, [s.image for s in batch], [m.numpy() for m in maps], [crf_params] * len(batch))
            refs = [torch.from_numpy(r) for r in jobs]
        else:
            refs = [crf_refine(s.image, hm, **crf_params) for s, hm in zip(batch, maps)]
        for s, hm, ref in zip(batch, maps, refs):
            if s.mask is not None and thr_scores:
                m = torch.from_numpy(np.ascontiguousarray(s.mask))[None]
                for t in thr_scores:
                    accs["heatmap"][t].update((hm > t)[None], m)
                    accs["refined"][t].update((ref > t)[None], m)
            img = torch.from_numpy(np.ascontiguousarray(s.image)).permute(2, 0, 1).float().div_(255.0)
            images.append(_resize(img, size, antialias=True).clamp_(0.0, 1.0))
            both = _resize(torch.stack([hm, ref]), size, antialias=False).clamp_(0.0, 1.0)
            heat.append(both[0])
            refined.append(both[1])
            if s.mask is not None:
                mk = torch.from_numpy(np.ascontiguousarray(s.mask))[None, None].float()
                truth.append(F.interpolate(mk, size=(size, size), mode="nearest")[0, 0] > 0.5)
            else:
                truth.append(torch.zeros((size, size), dtype=torch.bool))
            has_mask.append(s.mask is not None)
            ids.append(str(s.id))
            fixations.append(np.asarray(s.gaze, dtype=np.float32))
            sizes.append(tuple(int(v) for v in s.image.shape[:2]))
            bar.update(1)


def map_scores(
    maps: Sequence[torch.Tensor], truths: Sequence, thresholds: Sequence[float] = (0.5,)
) -> dict[float, dict]:
    """Segmentation scores of soft maps thresholded at each of ``thresholds``.

    Args:
        maps: ``B`` maps ``(H_b, W_b)`` float (sizes may differ between images).
        truths: ``B`` true masks ``(H_b, W_b)`` bool (numpy or torch).
        thresholds: thresholds ``t``; the prediction is ``map > t``.

    Returns:
        ``{t: segmentation_scores dict}`` (per-image means; see :mod:`wsslib.metrics`).

    Example:
        >>> s = map_scores([torch.tensor([[0.9, 0.2]])], [torch.tensor([[True, False]])], (0.5,))
        >>> s[0.5]["dice"]
        1.0
    """
    if len(maps) != len(truths):
        raise ShapeError(f"got {len(maps)} maps but {len(truths)} true masks")
    accs = {float(t): SegmentationAccumulator() for t in thresholds}
    for i, (m, g) in enumerate(zip(maps, truths)):
        g = torch.as_tensor(np.ascontiguousarray(g) if isinstance(g, np.ndarray) else g)
        if tuple(m.shape) != tuple(g.shape):
            raise ShapeError(f"maps[{i}] has shape {tuple(m.shape)} but truths[{i}] has {tuple(g.shape)}")
        for t, acc in accs.items():
            acc.update((m > t)[None].cpu(), g[None].bool().cpu())
    return {t: acc.compute() for t, acc in accs.items()}

