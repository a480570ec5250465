"""Turning ``[0, 1]`` maps into masks, and choosing the threshold on validation data.

A threshold is a hyper-parameter: choose it with :func:`select_threshold` on training or
validation data, never on the test set, and apply it with :func:`binarize`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, NamedTuple, get_args

import torch

from wsslib.core.errors import DataError, ShapeError
from wsslib.evaluate.metrics import Counts, as_bool_mask
from wsslib.core.utils import check_same_shape, check_shape

__all__ = ["ThresholdMetric", "ThresholdResult", "binarize", "default_grid", "select_threshold"]

ThresholdMetric = Literal["dice", "iou", "pooled_dice", "pooled_iou", "miou_fg_bg"]


def _check_maps(maps: torch.Tensor) -> None:
    check_shape("maps", maps, (None, None, None))
    if not maps.is_floating_point():
        raise ShapeError(f"maps: expected a float tensor, got dtype {maps.dtype} with shape {tuple(maps.shape)}")


def default_grid() -> torch.Tensor:
    """The default threshold grid ``0.05, 0.10, ..., 0.95``.

    Returns:
        ``(19,)`` float64.

    Example:
        >>> g = default_grid(); len(g), g[0].item(), g[-1].item()
        (19, 0.05, 0.95)
    """
    return torch.tensor([k / 20 for k in range(1, 20)], dtype=torch.float64)


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
    _check_maps(maps)
    if isinstance(threshold, torch.Tensor):
        if threshold.dim() == 0:
            return maps > threshold.to(device=maps.device, dtype=maps.dtype)
        check_shape("threshold", threshold, (maps.shape[0],))
        return maps > threshold.to(device=maps.device, dtype=maps.dtype).view(-1, 1, 1)
    return maps > float(threshold)


class ThresholdResult(NamedTuple):
    """What :func:`select_threshold` found.

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


def _grid_scores(counts: Counts, metric: str) -> torch.Tensor:
    """(G,) scores from (G, N) counts."""
    if metric in ("dice", "iou"):
        per_image = counts.dice() if metric == "dice" else counts.iou()
        return torch.nanmean(per_image, dim=1)
    pooled = counts.total(dim=1)
    if metric == "pooled_dice":
        return pooled.dice()
    if metric == "pooled_iou":
        return pooled.iou()
    return pooled.miou_fg_bg()


def select_threshold(
    maps: torch.Tensor,
    masks: torch.Tensor,
    grid: Sequence[float] | torch.Tensor | None = None,
    metric: ThresholdMetric = "dice",
    *,
    chunk_pixels: int = 2**22,
) -> ThresholdResult:
    """Choose the threshold that maximises a segmentation metric on (validation) data.

    For every grid value ``g`` the masks ``maps > g`` are scored against ``masks``; the best score
    wins, ties going to the lowest threshold. The images are processed in chunks of about
    ``chunk_pixels`` pixels, so the extra memory is bounded (a few bytes per pixel of one chunk
    plus ``2 * G * N`` int64 counts) whatever the number of images.

    Args:
        maps: ``(N, H, W)`` float maps in ``[0, 1]``.
        masks: ``(N, H, W)`` bool (or 0/1 integer) true masks, same device.
        grid: thresholds to try (sorted and de-duplicated here); default :func:`default_grid`.
        metric: ``"dice"`` / ``"iou"`` (per-image means, both-empty images excluded, as in
            :func:`wsslib.metrics.segmentation_scores`), ``"pooled_dice"``, ``"pooled_iou"`` or
            ``"miou_fg_bg"`` (EnsembleCAM's mIoU).
        chunk_pixels: pixels per chunk (at least one image per chunk).

    Returns:
        :class:`ThresholdResult` ``(threshold, score, grid, scores)``.

    Raises:
        ShapeError: bad shapes or dtypes.
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
    if metric not in get_args(ThresholdMetric):
        raise ValueError(f"metric must be one of {get_args(ThresholdMetric)}, got {metric!r}")
    _check_maps(maps)
    check_shape("masks", masks, (None, None, None))
    check_same_shape("maps", maps, "masks", masks)
    if maps.device != masks.device:
        raise ShapeError(f"maps is on {maps.device} but masks is on {masks.device}; put both on one device")
    target = as_bool_mask("masks", masks)

    g = default_grid() if grid is None else torch.as_tensor(grid, dtype=torch.float64).flatten().cpu()
    if g.numel() == 0 or not bool(torch.isfinite(g).all()):
        raise ValueError(f"grid must hold at least one finite threshold, got {g.tolist()}")
    g = torch.unique(g, sorted=True)
    thresholds = g.tolist()

    n, h, w = maps.shape
    hw = h * w
    n_grid = len(thresholds)
    # Counting in float (exact for integers up to 2**24) is ~1.7x faster on CPU than bool sums.
    acc_dtype = torch.float32 if hw <= 2**24 else torch.float64
    tp = torch.zeros((n_grid, n), dtype=acc_dtype, device=maps.device)
    pred_sum = torch.zeros((n_grid, n), dtype=acc_dtype, device=maps.device)
    true_sum = torch.zeros((n,), dtype=acc_dtype, device=maps.device)
    per_chunk = max(1, int(chunk_pixels) // max(hw, 1))
    for start in range(0, n, per_chunk):
        stop = min(start + per_chunk, n)
        m = maps[start:stop].reshape(stop - start, hw)
        t = target[start:stop].reshape(stop - start, hw).to(acc_dtype)
        true_sum[start:stop] = t.sum(dim=1)
        for k, thr in enumerate(thresholds):
            p = (m > thr).to(acc_dtype)
            pred_sum[k, start:stop] = p.sum(dim=1)
            tp[k, start:stop] = (p * t).sum(dim=1)
    tp, pred_sum, true_sum = tp.to(torch.int64), pred_sum.to(torch.int64), true_sum.to(torch.int64)
    fp = pred_sum - tp
    fn = true_sum - tp
    counts = Counts(tp, fp, fn, hw - tp - fp - fn)

    scores = _grid_scores(counts, metric).cpu()
    defined = ~torch.isnan(scores)
    if not bool(defined.any()):
        raise DataError(
            f"select_threshold: metric {metric!r} is undefined (NaN) at every threshold of "
            f"{thresholds}: no image has foreground in its mask or prediction. Use a pooled or "
            "'miou_fg_bg' metric, or validation data that holds objects."
        )
    best = scores[defined].max()
    k = int(torch.nonzero(defined & (scores == best))[0])
    return ThresholdResult(threshold=thresholds[k], score=float(scores[k]), grid=g, scores=scores)
