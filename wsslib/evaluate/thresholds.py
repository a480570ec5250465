"""Turning ``[0, 1]`` maps into masks, and THE threshold search (one map or several).

A threshold is a hyper-parameter: choose it on training or validation data, never on the test
set, and apply it with :func:`binarize` (one map) or :func:`combine_maps` (several maps).

**One search for one map and for several.** :func:`search_grid` chooses a threshold per map
(``M`` maps, a grid of ``G`` thresholds) for a rule that combines the binarised maps into one
mask (``combine_masks``):

* ``"or"``: the union; ``"and"``: the intersection;
* ``"<"``: per image, the mask with the FEWEST positive pixels; ``">"``: the one with the MOST.
  Ties go to the first map (the lowest index). With ``M == 1`` every op is the identity.

:func:`select_threshold` is its ``M == 1`` case (one map, the op irrelevant) and returns a
:class:`ThresholdResult`; EnsembleCAM (:mod:`wsslib.methods.ensembles`) uses ``M == 2``.
A pixel is positive when ``map > threshold``, strictly, compared in the maps' dtype.

**Why the search is cheap.** Re-thresholding the data once per grid cell costs ``G^M`` passes
over every pixel. Instead each map is *quantised* once: ``q(v)`` = the number of grid values below
``v``, so that ``v > g_k`` exactly when ``k < q(v)``. One pass builds the joint histogram of
``(q_1, ..., q_M)`` over foreground and background pixels (per image where the metric or the op
needs it). For a cell ``(k_1, ..., k_M)``:

* ``"and"``: positives are the pixels with every ``q_m > k_m``: a suffix sum of the histogram;
* ``"or"``: negatives are the pixels with every ``q_m <= k_m``: a prefix (cumulative) sum;
* ``"<"`` / ``">"``: each map's per-image positive and true-positive counts are suffix sums of
  its per-image marginal histogram; per image and cell the op picks the map by those counts.

Every cell's confusion counts are thus the same integers the brute force
(:func:`grid_counts_brute`) counts, hence the scores and the chosen cell are identical too
(``tests/test_ensembles.py``, ``tests/test_thresholds.py``; ``wsslib bench thresholds`` times both).
MONAI's metrics (``DiceMetric``, ...) score one set of binary masks per call, i.e. the brute force;
the histogram search needs every cell's counts at once, so it is plain torch here.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Literal, NamedTuple, get_args

import torch

from wsslib.core.errors import DataError, ShapeError
from wsslib.core.utils import check_same_shape, check_shape
from wsslib.evaluate.metrics import Counts, as_bool_mask, confusion, dsc_from_miou

__all__ = [
    "COMBINE_OPS",
    "CombineOp",
    "GridSearch",
    "ThresholdMetric",
    "ThresholdResult",
    "binarize",
    "combine_maps",
    "combine_masks",
    "default_grid",
    "grid_counts",
    "grid_counts_brute",
    "grid_scores",
    "quantize",
    "search_from_counts",
    "search_grid",
    "select_threshold",
    "threshold_grid",
]

#: What a search maximises: ``"dice"`` / ``"iou"`` (per-image means over the images that are not
#: both-empty, as :func:`wsslib.evaluate.metrics.segmentation_scores`), ``"pooled_dice"``,
#: ``"pooled_iou"``, ``"miou_fg_bg"`` (EnsembleCAM's mIoU: pixels pooled, mean of foreground and
#: background IoU) and ``"dsc_paper"`` (EnsembleCAM's DSC, ``2 m / (1 + m)`` of that mIoU).
ThresholdMetric = Literal["dice", "iou", "pooled_dice", "pooled_iou", "miou_fg_bg", "dsc_paper"]
#: How several binarised maps become one mask (see the module doc).
CombineOp = Literal["or", "and", "<", ">"]
#: Every op, in the order of EnsembleCAM's table.
COMBINE_OPS: tuple[str, ...] = ("or", "<", ">", "and")
_PER_IMAGE = ("dice", "iou")


# ------------------------------------------------------------------------------------ validation
def _check_metric(metric: str) -> None:
    if metric not in get_args(ThresholdMetric):
        raise ValueError(f"metric must be one of {get_args(ThresholdMetric)}, got {metric!r}")


def _check_ops(ops: str | Sequence[str]) -> tuple[str, ...]:
    ops = (ops,) if isinstance(ops, str) else tuple(ops)
    bad = [o for o in ops if o not in get_args(CombineOp)]
    if bad or not ops:
        raise ValueError(f"ops must be a non-empty selection of {get_args(CombineOp)}, got {ops!r}")
    return ops


def _check_float_maps(maps: torch.Tensor) -> None:
    check_shape("maps", maps, (None, None, None))
    if not maps.is_floating_point():
        raise ShapeError(f"maps: expected a float tensor, got dtype {maps.dtype} with shape {tuple(maps.shape)}")


def _stack(name: str, x: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """(M, B, H, W) from a 4-D tensor or a sequence of M (B, H, W) tensors."""
    if isinstance(x, torch.Tensor):
        check_shape(name, x, (None, None, None, None))
        out = x
    else:
        items = list(x)
        if not items:
            raise ShapeError(f"{name}: expected at least one (B, H, W) tensor, got an empty sequence")
        for i, t in enumerate(items):
            check_shape(f"{name}[{i}]", t, (None, None, None))
            check_same_shape(f"{name}[0]", items[0], f"{name}[{i}]", t)
            if t.device != items[0].device or t.dtype != items[0].dtype:
                raise ShapeError(
                    f"{name}[{i}] is {t.dtype} on {t.device} but {name}[0] is {items[0].dtype} on "
                    f"{items[0].device}; give every map the same dtype and device"
                )
        out = torch.stack(items)
    if out.shape[0] == 0:
        raise ShapeError(f"{name}: expected at least one map, got shape {tuple(out.shape)}")
    return out


def _check_maps(maps: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    m = _stack("maps", maps)
    if not m.is_floating_point():
        raise ShapeError(f"maps: expected float maps, got dtype {m.dtype} with shape {tuple(m.shape)}")
    if m.numel() and bool(torch.isnan(m).any()):
        raise ShapeError(f"maps: {int(torch.isnan(m).sum())} NaN values in maps of shape {tuple(m.shape)}")
    return m


def _check_target(target: torch.Tensor, maps: torch.Tensor, name: str = "target") -> torch.Tensor:
    t = as_bool_mask(name, target)
    if tuple(t.shape) != tuple(maps.shape[1:]):
        raise ShapeError(f"{name} has shape {tuple(t.shape)} but each map has shape {tuple(maps.shape[1:])}")
    if t.device != maps.device:
        raise ShapeError(f"maps are on {maps.device} but {name} is on {target.device}; put both on one device")
    return t


# ------------------------------------------------------------------------------------------ grids
def default_grid() -> torch.Tensor:
    """The default threshold grid of a single map's search: ``0.05, 0.10, ..., 0.95``.

    Returns:
        ``(19,)`` float64.

    Example:
        >>> g = default_grid(); len(g), g[0].item(), g[-1].item()
        (19, 0.05, 0.95)
    """
    return torch.tensor([k / 20 for k in range(1, 20)], dtype=torch.float64)


def threshold_grid(step: float = 0.1, start: float = 0.0, stop: float = 1.0) -> torch.Tensor:
    """The threshold grid ``start, start + step, ..., stop`` (EnsembleCAM: 0 to 1 in steps of 0.1).

    Values are computed as ``start + (stop - start) * k / n`` so that e.g. ``0.3`` is the double
    nearest to 0.3, not ``3 * 0.1``.

    Args:
        step: spacing; ``(stop - start) / step`` must be a whole number (up to 1e-9).
        start, stop: first and last threshold.

    Returns:
        ``(n + 1,)`` float64, ascending.

    Raises:
        ValueError: non-positive step, ``stop < start``, or a step that does not divide the range.

    Example:
        >>> threshold_grid().tolist()[:4], len(threshold_grid()), len(threshold_grid(0.05))
        ([0.0, 0.1, 0.2, 0.3], 11, 21)
    """
    if not (step > 0 and math.isfinite(step) and math.isfinite(start) and math.isfinite(stop) and stop >= start):
        raise ValueError(f"need step > 0 and start <= stop, got step={step}, start={start}, stop={stop}")
    n_float = (stop - start) / step
    n = round(n_float)
    if abs(n - n_float) > 1e-9 * max(1.0, n_float):
        raise ValueError(f"step {step} does not divide [{start}, {stop}] into whole steps")
    if n == 0:
        return torch.tensor([float(start)], dtype=torch.float64)
    return start + (stop - start) * torch.arange(n + 1, dtype=torch.float64) / n


def _check_grid(grid: Sequence[float] | torch.Tensor | None) -> torch.Tensor:
    """(G,) float64 on the CPU, sorted and de-duplicated; None -> :func:`default_grid`."""
    g = default_grid() if grid is None else torch.as_tensor(grid, dtype=torch.float64).flatten().cpu()
    if g.numel() == 0 or not bool(torch.isfinite(g).all()):
        raise ValueError(f"grid must hold at least one finite threshold, got {g.tolist()}")
    return torch.unique(g, sorted=True)


# ---------------------------------------------------------------------------- binarise, combine
def binarize(maps: torch.Tensor, threshold: float | torch.Tensor) -> torch.Tensor:
    """Masks from maps: ``maps > threshold`` (strictly greater).

    The comparison is done in the maps' dtype (a float64 threshold tensor is cast to it), so a
    scalar and a per-image threshold of the same value give the same mask.

    Args:
        maps: ``(B, H, W)`` float maps, normally in ``[0, 1]``.
        threshold: a float, a 0-d tensor, or a ``(B,)`` tensor (one threshold per image).

    Returns:
        ``(B, H, W)`` bool on the maps' device.

    Raises:
        ShapeError: maps not 3-D float, or a threshold tensor that is not 0-d or ``(B,)``.

    Example:
        >>> maps = torch.tensor([[[0.2, 0.5, 0.8]], [[0.2, 0.5, 0.8]]])
        >>> binarize(maps, 0.5).int().tolist()
        [[[0, 0, 1]], [[0, 0, 1]]]
        >>> binarize(maps, torch.tensor([0.1, 0.6])).int().tolist()
        [[[1, 1, 1]], [[0, 0, 1]]]
    """
    _check_float_maps(maps)
    if isinstance(threshold, torch.Tensor):
        if threshold.dim() == 0:
            return maps > threshold.to(device=maps.device, dtype=maps.dtype)
        check_shape("threshold", threshold, (maps.shape[0],))
        return maps > threshold.to(device=maps.device, dtype=maps.dtype).view(-1, 1, 1)
    return maps > float(threshold)


def combine_masks(masks: torch.Tensor | Sequence[torch.Tensor], op: CombineOp) -> torch.Tensor:
    """Combine the binary masks of several maps (models), image by image.

    Not to be confused with :func:`wsslib.methods.aax.fuse_maps`, which fuses the *maps* first
    and thresholds the fused map once.

    Args:
        masks: ``(M, B, H, W)`` bool (or 0/1 integer), or a sequence of ``M`` ``(B, H, W)`` masks.
        op: ``"or"`` (union), ``"and"`` (intersection), ``"<"`` (per image the mask with the fewest
            positive pixels) or ``">"`` (the most); ties go to the lowest index. With ``M == 1``
            every op returns the mask itself.

    Returns:
        ``(B, H, W)`` bool on the masks' device.

    Raises:
        ShapeError: not 4-D / mismatching shapes, non-binary values.
        ValueError: unknown op.

    Example:
        >>> a = torch.tensor([[[1, 1, 0]], [[1, 0, 0]]], dtype=torch.bool)
        >>> b = torch.tensor([[[0, 1, 1]], [[1, 1, 1]]], dtype=torch.bool)
        >>> [combine_masks([a, b], op).int().tolist() for op in ("or", "and")]
        [[[[1, 1, 1]], [[1, 1, 1]]], [[[0, 1, 0]], [[1, 0, 0]]]]
        >>> combine_masks([a, b], "<").int().tolist()  # image 0: a tie (2 vs 2) -> a; image 1: a (1 < 3)
        [[[1, 1, 0]], [[1, 0, 0]]]
        >>> combine_masks([a, b], ">").int().tolist()
        [[[1, 1, 0]], [[1, 1, 1]]]
    """
    (op,) = _check_ops(op)
    m = _stack("masks", masks)
    m = as_bool_mask("masks", m.flatten(0, 1)).view(m.shape)
    if op in ("or", "and"):  # an elementwise chain is ~15x faster than any()/all() over dim 0
        out = m[0].clone()
        for i in range(1, m.shape[0]):
            out = out.logical_or_(m[i]) if op == "or" else out.logical_and_(m[i])
        return out
    pos = m.flatten(2).sum(dim=2)  # (M, B)
    pick = pos.argmin(dim=0) if op == "<" else pos.argmax(dim=0)  # first index on ties
    return m[pick, torch.arange(m.shape[1], device=m.device)]


def combine_maps(
    maps: torch.Tensor | Sequence[torch.Tensor], thresholds: Sequence[float] | torch.Tensor, op: CombineOp
) -> torch.Tensor:
    """Binarise each map at its own threshold, then :func:`combine_masks`.

    Args:
        maps: ``(M, B, H, W)`` float, or a sequence of ``M`` ``(B, H, W)`` float maps.
        thresholds: ``M`` thresholds, one per map (e.g. ``GridSearch.thresholds``); compared in
            the maps' dtype, ``map > threshold``.
        op: see :func:`combine_masks`.

    Returns:
        ``(B, H, W)`` bool.

    Example:
        >>> a = torch.tensor([[[0.2, 0.6, 0.9]]]); b = torch.tensor([[[0.8, 0.7, 0.1]]])
        >>> combine_maps([a, b], (0.5, 0.5), "and").int().tolist()
        [[[0, 1, 0]]]
    """
    m = _check_maps(maps)
    th = torch.as_tensor(thresholds, dtype=torch.float64).flatten()
    if th.numel() != m.shape[0]:
        raise ShapeError(f"thresholds: expected {m.shape[0]} values (one per map), got {th.numel()}")
    return combine_masks(_binarize_each(m, th.tolist()), op)


def _binarize_each(m: torch.Tensor, thresholds: Sequence[float]) -> torch.Tensor:
    """(M, B, H, W) bool: map i > thresholds[i], compared in the maps' dtype."""
    return torch.stack([m[i] > torch.tensor(t, dtype=torch.float64).to(m.dtype).item() for i, t in enumerate(thresholds)])


# ----------------------------------------------------------------------------- quantised counting
def quantize(maps: torch.Tensor, grid: Sequence[float] | torch.Tensor | None = None) -> torch.Tensor:
    """The number of grid values strictly below each map value, so that ``map > grid[k]`` iff ``k < q``.

    The grid is cast to the maps' dtype first, so the equivalence is exact for the comparison
    :func:`combine_maps` and :func:`binarize` make.

    Args:
        maps: float tensor of any shape.
        grid: ascending thresholds (default :func:`default_grid`).

    Returns:
        int64 tensor of ``maps``' shape, values ``0..G``.

    Example:
        >>> quantize(torch.tensor([0.0, 0.05, 0.1, 0.15, 1.0]), threshold_grid()).tolist()
        [0, 1, 1, 2, 10]
    """
    g = _check_grid(grid).to(device=maps.device, dtype=maps.dtype)
    return torch.searchsorted(g, maps.contiguous(), right=False)


def _histograms(
    maps: torch.Tensor, target: torch.Tensor, grid: torch.Tensor, joint_per_image: bool, chunk_pixels: int
) -> torch.Tensor:
    """Joint histogram of the quantised maps over bg (0) / fg (1) pixels.

    Returns ``(N or 1, B, ..., B, 2)`` int64 (``M`` axes of ``B = G + 1`` bins) on the CPU.
    """
    n_maps, n, h, w = maps.shape
    hw = h * w
    bins = grid.numel() + 1
    cells = bins**n_maps
    n_out = n if joint_per_image else 1
    hist = torch.zeros((n_out, cells * 2), dtype=torch.int64)
    per_chunk = max(1, int(chunk_pixels) // max(hw, 1))
    for start in range(0, n, per_chunk):
        stop = min(start + per_chunk, n)
        q = quantize(maps[:, start:stop].reshape(n_maps, -1), grid)  # (M, c*hw)
        idx = q[0]
        for i in range(1, n_maps):
            idx = idx * bins + q[i]
        idx = idx * 2 + target[start:stop].reshape(-1).to(idx.dtype)
        if joint_per_image:
            offsets = torch.arange(stop - start, device=idx.device) * (cells * 2)
            idx = (idx.view(stop - start, hw) + offsets[:, None]).view(-1)
            hist[start:stop] = torch.bincount(idx, minlength=(stop - start) * cells * 2).view(stop - start, -1).cpu()
        else:
            hist[0] += torch.bincount(idx, minlength=cells * 2).cpu()
    return hist.view(n_out, *([bins] * n_maps), 2)


def _suffix(x: torch.Tensor, dim: int) -> torch.Tensor:
    return x.flip(dim).cumsum(dim).flip(dim)


def _counts(tp: torch.Tensor, pred: torch.Tensor, fg: torch.Tensor, hw: int) -> Counts:
    """Counts with the image axis moved last; tp, pred: (N, G..G); fg: (N,)."""
    fg = fg.view(-1, *([1] * (tp.dim() - 1)))
    fp = pred - tp
    fn = fg - tp
    tn = hw * torch.ones_like(tp) - tp - fp - fn
    return Counts(*(x.movedim(0, -1).contiguous() for x in (tp, fp, fn, tn)))


def _op_counts_joint(hist: torch.Tensor, op: str, pixels: int) -> Counts:
    """'or' / 'and' counts from a joint histogram (N, B..B, 2); ``pixels`` per histogram row."""
    n_maps = hist.dim() - 2
    axes = range(1, n_maps + 1)
    fg = hist[..., 1].flatten(1).sum(1)
    if op == "and":
        s = hist
        for a in axes:
            s = _suffix(s, a)
        pos = s[(slice(None), *([slice(1, None)] * n_maps))]  # every q_m > k_m
    else:
        c = hist
        for a in axes:
            c = c.cumsum(a)
        neg = c[(slice(None), *([slice(None, -1)] * n_maps))]  # every q_m <= k_m
        pos = hist.flatten(1, -2).sum(1).view(-1, *([1] * n_maps), 2) - neg
    return _counts(pos[..., 1], pos.sum(-1), fg, pixels)


def _op_counts_pick(marginal: torch.Tensor, op: str, hw: int) -> Counts:
    """'<' / '>' counts from per-image marginal histograms (N, M, B, 2)."""
    n, n_maps, _bins, _ = marginal.shape
    g = _bins - 1
    s = _suffix(marginal, 2)[:, :, 1:]  # (N, M, G, 2): pixels with q > k
    pos, tp = s.sum(-1), s[..., 1]
    grid_shape = [g] * n_maps

    def cells(x: torch.Tensor) -> torch.Tensor:  # (N, M, G) -> (M, N, G..G), map m varying on axis m
        out = []
        for m in range(n_maps):
            shape = [n] + [1] * n_maps
            shape[1 + m] = g
            out.append(x[:, m].reshape(shape).expand(n, *grid_shape))
        return torch.stack(out)

    pos_c, tp_c = cells(pos), cells(tp)
    pick = pos_c.argmin(dim=0, keepdim=True) if op == "<" else pos_c.argmax(dim=0, keepdim=True)
    fg = marginal[:, 0, :, 1].sum(-1)
    return _counts(tp_c.gather(0, pick)[0], pos_c.gather(0, pick)[0], fg, hw)


def _pool(c: Counts) -> Counts:
    return Counts(*(x.sum(-1, keepdim=True) for x in c))


def grid_counts(
    maps: torch.Tensor | Sequence[torch.Tensor],
    target: torch.Tensor,
    ops: CombineOp | Sequence[CombineOp] = COMBINE_OPS,
    grid: Sequence[float] | torch.Tensor | None = None,
    *,
    per_image: bool = True,
    chunk_pixels: int = 2**22,
) -> dict[str, Counts]:
    """Confusion counts of every op at every cell of the threshold grid, from histograms.

    Each map is quantised once and one joint histogram is built (per image when ``per_image`` or
    when '<' / '>' are asked for: they choose per image),
    then every cell's counts are read from cumulative sums (see the module doc). Extra memory:
    ``16 * (G + 1)^M`` bytes per image (per image) or in all (pooled), plus the returned counts,
    plus a few int64 per pixel of one chunk of ``chunk_pixels`` pixels.

    Args:
        maps: ``(M, N, H, W)`` float, or a sequence of ``M`` ``(N, H, W)`` float maps.
        target: ``(N, H, W)`` bool (or 0/1 integer) true masks.
        ops: one op or several (default all four).
        grid: thresholds (sorted, de-duplicated); default :func:`default_grid` (0..1 step 0.1).
        per_image: keep one count per image (needed for per-image metrics); False pools the
            images into one (smaller and faster for pooled metrics with 'or' / 'and').
        chunk_pixels: pixels quantised at once.

    Returns:
        ``{op: Counts}``, each field int64 of shape ``(G,) * M + (N,)`` (``(G,) * M + (1,)`` when
        pooled) on the CPU; axis ``m`` indexes map ``m``'s threshold.

    Example:
        >>> a = torch.tensor([[[0.2, 0.6, 0.9]]]); b = torch.tensor([[[0.8, 0.7, 0.1]]])
        >>> t = torch.tensor([[[False, True, True]]])
        >>> c = grid_counts([a, b], t, "and", grid=[0.5])["and"]
        >>> c.tp.tolist(), c.fp.tolist(), c.fn.tolist(), c.tn.tolist()
        ([[[1]]], [[[0]]], [[[1]]], [[[1]]])
    """
    ops = _check_ops(ops)
    m = _check_maps(maps)
    t = _check_target(target, m)
    g = _check_grid(grid)
    n_maps, n, h, w = m.shape
    hw = h * w
    need_pick = any(o in ("<", ">") for o in ops)
    # '<' and '>' choose per image, so they need per-image histograms whatever the metric.
    joint = _histograms(m, t, g, joint_per_image=per_image or need_pick, chunk_pixels=chunk_pixels)
    marginal = None
    if need_pick:  # each map's per-image histogram (N, M, B, 2), summed out of the joint one
        axes = range(1, n_maps + 1)
        marginal = torch.stack(
            [joint.sum(dim=[a for a in axes if a != 1 + i]) if n_maps > 1 else joint for i in range(n_maps)], dim=1
        )
    out: dict[str, Counts] = {}
    for op in ops:
        if op in ("or", "and"):
            # a pooled histogram (one row) holds all n images' pixels
            c = _op_counts_joint(joint, op, hw if joint.shape[0] == n else n * hw)
            out[op] = c if per_image or c.tp.shape[-1] == 1 else _pool(c)
        else:
            c = _op_counts_pick(marginal, op, hw)
            out[op] = c if per_image else _pool(c)
    return out


def grid_counts_brute(
    maps: torch.Tensor | Sequence[torch.Tensor],
    target: torch.Tensor,
    ops: CombineOp | Sequence[CombineOp] = COMBINE_OPS,
    grid: Sequence[float] | torch.Tensor | None = None,
) -> dict[str, Counts]:
    """The reference for :func:`grid_counts`: re-threshold and fuse the data once per grid cell.

    For every op and every cell: :func:`combine_maps` then :func:`wsslib.evaluate.metrics.confusion`.
    ``G^M`` passes over the data per op: use it to check, not to search.

    Args:
        maps, target, ops, grid: as in :func:`grid_counts`.

    Returns:
        ``{op: Counts}``, fields int64 ``(G,) * M + (N,)`` on the CPU.

    Example:
        >>> a = torch.tensor([[[0.2, 0.6, 0.9]]]); b = torch.tensor([[[0.8, 0.7, 0.1]]])
        >>> t = torch.tensor([[[False, True, True]]])
        >>> grid_counts_brute([a, b], t, "and", grid=[0.5])["and"].tp.tolist()
        [[[1]]]
    """
    ops = _check_ops(ops)
    m = _check_maps(maps)
    t = _check_target(target, m)
    g = _check_grid(grid)
    n_maps, n = m.shape[:2]
    gl = g.tolist()
    out = {}
    for op in ops:
        fields = torch.zeros((4, *([len(gl)] * n_maps), n), dtype=torch.int64)
        for cell in itertools.product(range(len(gl)), repeat=n_maps):
            c = confusion(combine_masks(_binarize_each(m, [gl[k] for k in cell]), op), t)
            fields[(slice(None), *cell)] = torch.stack(tuple(c)).cpu()
        out[op] = Counts(*fields)
    return out


# -------------------------------------------------------------------------------------- the search
def grid_scores(counts: Counts, metric: ThresholdMetric) -> torch.Tensor:
    """A metric at every grid cell, from counts whose LAST axis is the images.

    Args:
        counts: :class:`Counts`, fields of shape ``(..., N)``.
        metric: see :data:`ThresholdMetric`.

    Returns:
        float64 of shape ``(...)``; NaN where undefined.

    Example:
        >>> c = Counts(*(torch.tensor([[v]]) for v in (1, 1, 0, 2)))   # one cell, one image
        >>> grid_scores(c, "dice").tolist(), round(grid_scores(c, "miou_fg_bg").item(), 4)
        ([0.6666666666666666], 0.5833)
    """
    _check_metric(metric)
    if metric in _PER_IMAGE:
        return torch.nanmean(counts.dice() if metric == "dice" else counts.iou(), dim=-1)
    pooled = counts.total(dim=-1)
    if metric == "pooled_dice":
        return pooled.dice()
    if metric == "pooled_iou":
        return pooled.iou()
    miou = pooled.miou_fg_bg()
    return miou if metric == "miou_fg_bg" else dsc_from_miou(miou)


class GridSearch(NamedTuple):
    """What :func:`search_grid` found for one op.

    Attributes:
        op: the combination op.
        metric: the metric maximised.
        thresholds: the chosen threshold of each map (apply with :func:`combine_maps`).
        index: their grid indices.
        score: the metric at the chosen cell (on the data searched).
        grid: ``(G,)`` float64, the thresholds tried.
        scores: ``(G,) * M`` float64, the metric at every cell (axis ``m``: map ``m``'s threshold).
    """

    op: str
    metric: str
    thresholds: tuple[float, ...]
    index: tuple[int, ...]
    score: float
    grid: torch.Tensor
    scores: torch.Tensor


class ThresholdResult(NamedTuple):
    """What :func:`select_threshold` found (one map).

    Attributes:
        threshold: the chosen threshold (the lowest one among equal best scores).
        score: the metric's value at it.
        grid: ``(G,)`` float64, the thresholds tried, ascending.
        scores: ``(G,)`` float64, the metric at each (NaN where undefined).
    """

    threshold: float
    score: float
    grid: torch.Tensor
    scores: torch.Tensor


def _best_cell(scores: torch.Tensor, metric: str, op: str, grid: torch.Tensor) -> tuple[int, ...]:
    """The first cell (row-major: lowest thresholds first) among the best defined scores."""
    defined = ~torch.isnan(scores)
    if not bool(defined.any()):
        raise DataError(
            f"threshold search (op {op!r}): metric {metric!r} is undefined (NaN) at every threshold of "
            f"{grid.tolist()}: no image has foreground in its mask or prediction. Use a pooled metric "
            "('pooled_dice', 'miou_fg_bg', 'dsc_paper') or data that holds objects."
        )
    best = scores[defined].max()
    flat = int(torch.nonzero((defined & (scores == best)).flatten())[0])
    return tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), scores.shape))


def search_from_counts(
    counts: dict[str, Counts], grid: Sequence[float] | torch.Tensor, metric: ThresholdMetric
) -> dict[str, GridSearch]:
    """The best cell of each op from grid counts (:func:`grid_counts` or :func:`grid_counts_brute`).

    Args:
        counts: ``{op: Counts}``, fields ``(G,) * M + (N,)`` (or ``+ (1,)`` pooled).
        grid: the ``G`` thresholds the counts were made with.
        metric: see :data:`ThresholdMetric`.

    Returns:
        ``{op: GridSearch}``; ties go to the first cell in row-major order.

    Example:
        >>> c = Counts(*(torch.tensor([[1], [2]]) for _ in range(4)))   # 2 cells, 1 image
        >>> search_from_counts({"or": c}, [0.3, 0.6], "dice")["or"].thresholds
        (0.3,)
    """
    _check_metric(metric)
    g = _check_grid(grid)
    out = {}
    for op, c in counts.items():
        scores = grid_scores(c, metric).cpu()
        if tuple(scores.shape) != (g.numel(),) * scores.dim():
            raise ShapeError(f"counts[{op!r}] have grid shape {tuple(scores.shape)} but the grid holds {g.numel()} values")
        cell = _best_cell(scores, metric, op, g)
        out[op] = GridSearch(
            op=op, metric=metric, thresholds=tuple(float(g[k]) for k in cell), index=cell,
            score=float(scores[cell]), grid=g, scores=scores,
        )
    return out


def search_grid(
    maps: torch.Tensor | Sequence[torch.Tensor],
    target: torch.Tensor,
    ops: CombineOp | Sequence[CombineOp] = COMBINE_OPS,
    grid: Sequence[float] | torch.Tensor | None = None,
    metric: ThresholdMetric = "dice",
    *,
    method: Literal["hist", "brute"] = "hist",
    chunk_pixels: int = 2**22,
) -> dict[str, GridSearch]:
    """THE threshold search: every map's threshold, for each op, maximising ``metric`` over the grid.

    Run it on training or validation data; apply the result to held-out data with
    ``combine_maps(maps, result.thresholds, result.op)``. Ties go to the first cell in row-major
    order (the lowest threshold of map 0, then of map 1, ...). ``method="brute"`` re-thresholds the
    data once per cell (:func:`grid_counts_brute`) and returns exactly the same result, slowly.
    With ``M == 1`` map every op is the identity: :func:`select_threshold`.

    Args:
        maps: ``(M, N, H, W)`` float maps in ``[0, 1]``, or a sequence of ``M`` ``(N, H, W)``.
        target: ``(N, H, W)`` bool (or 0/1 integer) true masks, on the maps' device.
        ops: one op or several (default all four); the histograms are shared between ops.
        grid: thresholds tried for every map (sorted, de-duplicated); default :func:`default_grid`.
        metric: see :data:`ThresholdMetric`.
        method: ``"hist"`` (vectorised) or ``"brute"`` (reference).
        chunk_pixels: pixels quantised at once (bounds the extra memory).

    Returns:
        ``{op: GridSearch}``.

    Raises:
        ShapeError: bad shapes or dtypes, NaN maps. ValueError: unknown op, metric or method, bad grid.
        DataError: the metric is NaN at every cell.

    Example:
        >>> a = torch.tensor([[[0.2, 0.6, 0.9, 0.4]]]); b = torch.tensor([[[0.8, 0.7, 0.1, 0.6]]])
        >>> t = torch.tensor([[[False, True, False, False]]])
        >>> r = search_grid([a, b], t, ops="and", grid=threshold_grid(0.1))["and"]
        >>> r.thresholds, r.score
        ((0.2, 0.6), 1.0)
    """
    ops = _check_ops(ops)
    _check_metric(metric)
    g = _check_grid(grid)
    if method == "hist":
        counts = grid_counts(maps, target, ops, g, per_image=metric in _PER_IMAGE, chunk_pixels=chunk_pixels)
    elif method == "brute":
        counts = grid_counts_brute(maps, target, ops, g)
    else:
        raise ValueError(f"method must be 'hist' or 'brute', got {method!r}")
    return search_from_counts(counts, g, metric)


def select_threshold(
    maps: torch.Tensor,
    masks: torch.Tensor,
    grid: Sequence[float] | torch.Tensor | None = None,
    metric: ThresholdMetric = "dice",
    *,
    chunk_pixels: int = 2**22,
) -> ThresholdResult:
    """Choose the threshold of ONE map that maximises a segmentation metric on (validation) data.

    The ``M == 1`` case of :func:`search_grid`: for every grid value ``g`` the masks ``maps > g``
    are scored against ``masks``; the best score wins, ties going to the lowest threshold. The
    images are processed in chunks of about ``chunk_pixels`` pixels, so the extra memory is
    bounded (one histogram of ``G + 1`` bins per image plus a few bytes per pixel of one chunk).

    Args:
        maps: ``(N, H, W)`` float maps in ``[0, 1]``.
        masks: ``(N, H, W)`` bool (or 0/1 integer) true masks, same device.
        grid: thresholds to try (sorted and de-duplicated here); default :func:`default_grid`.
        metric: see :data:`ThresholdMetric` (default per-image Dice).
        chunk_pixels: pixels per chunk (at least one image per chunk).

    Returns:
        :class:`ThresholdResult` ``(threshold, score, grid, scores)``.

    Raises:
        ShapeError: bad shapes or dtypes, NaN maps.
        ValueError: unknown metric, or an empty / non-finite grid.
        DataError: the metric is undefined (NaN) at every threshold, e.g. per-image Dice when every
            mask is empty and every prediction is too.

    Example:
        >>> maps = torch.tensor([[[0.1, 0.3, 0.6, 0.9]]])
        >>> masks = torch.tensor([[[False, True, True, True]]])
        >>> r = select_threshold(maps, masks, grid=[0.2, 0.4, 0.5])
        >>> r.threshold, r.score, r.scores.tolist()
        (0.2, 1.0, [1.0, 0.8, 0.8])
    """
    _check_metric(metric)
    _check_float_maps(maps)
    check_shape("masks", masks, (None, None, None))
    check_same_shape("maps", maps, "masks", masks)
    if maps.device != masks.device:
        raise ShapeError(f"maps is on {maps.device} but masks is on {masks.device}; put both on one device")
    as_bool_mask("masks", masks)
    r = search_grid(maps[None], masks, "or", grid, metric, chunk_pixels=chunk_pixels)["or"]
    return ThresholdResult(threshold=r.thresholds[0], score=r.score, grid=r.grid, scores=r.scores)
