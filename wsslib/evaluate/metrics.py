"""Segmentation and decision metrics as batched, functional torch ops.

The pattern follows torchmetrics: **validate** the inputs, reduce each image to its confusion
**counts** (:func:`confusion` -> :class:`Counts`), then **compute** scores from the counts. Every
score in this module is a function of counts only, which is what lets
:class:`SegmentationAccumulator` handle data sets in chunks and gives exactly the same numbers as
the one-shot :func:`segmentation_scores`.

Conventions (``methods.md`` section 4):

* Masks are ``(B, H, W)`` bool tensors (0/1 integer tensors are accepted), on any device.
* Per-image scores are ``(B,)`` float64. Where prediction **and** truth are both empty the score
  is NaN and the image is left out of means (``n_excluded`` counts those images). Where a
  denominator is 0 but the masks are not both empty the score is 0: an empty truth with a
  non-empty prediction scores 0, an empty prediction with a non-empty truth scores 0 precision.
  Apart from the both-empty case this is sklearn with ``zero_division=0``.
* "Pooled" scores sum the counts over the batch first (one big image).
* ``miou_fg_bg`` is EnsembleCAM's "mIoU": pixels pooled over the whole set, mean of background IoU
  and foreground IoU; their printed "DSC" is :func:`dsc_from_miou` of it (``dsc_paper``), not a
  Dice score.

All values are fractions in ``0..1``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch

from wsslib.core.errors import ShapeError
from wsslib.core.utils import check_same_shape, check_shape

__all__ = [
    "SCORE_KEYS",
    "Counts",
    "SegmentationAccumulator",
    "accuracy",
    "as_bool_mask",
    "confusion",
    "dice",
    "dsc_from_miou",
    "f1",
    "flag_rate",
    "iou",
    "mean_iou_fg_bg",
    "nanmean_with_count",
    "pooled_dice",
    "pooled_iou",
    "pooled_precision",
    "pooled_recall",
    "precision",
    "recall",
    "scores_from_counts",
    "segmentation_scores",
]

_INT_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)

#: Key order of the dict returned by :func:`segmentation_scores` (without prefix).
SCORE_KEYS = (
    "dice",
    "iou",
    "precision",
    "recall",
    "n_images",
    "n_excluded",
    "pooled_dice",
    "pooled_iou",
    "miou_fg_bg",
    "dsc_paper",
)


# ----------------------------------------------------------------------------------- validation
def _as_bool(name: str, t: torch.Tensor, dims: Sequence[int | None], what: str) -> torch.Tensor:
    check_shape(name, t, dims)
    if t.dtype == torch.bool:
        return t
    if t.dtype in _INT_DTYPES:
        bad = (t != 0) & (t != 1)
        if t.numel() and bool(bad.any()):
            value = t[bad][0].item()
            raise ShapeError(
                f"{name}: integer {what} must hold only 0 and 1, found the value {value} "
                f"(shape {tuple(t.shape)}, dtype {t.dtype}); binarise it first"
            )
        return t != 0
    raise ShapeError(
        f"{name}: expected a bool (or 0/1 integer) {what} tensor, got dtype {t.dtype} "
        f"with shape {tuple(t.shape)}"
    )


def as_bool_mask(name: str, t: torch.Tensor) -> torch.Tensor:
    """Check that ``t`` is a ``(B, H, W)`` mask and return it as bool.

    Args:
        name: the argument's name, used in the error message.
        t: ``(B, H, W)`` bool, or integer holding only 0 and 1.

    Returns:
        ``(B, H, W)`` bool (``t`` itself when it is already bool).

    Raises:
        ShapeError: not a tensor, not 3-D, a float (or other) dtype, or integers other than 0/1.

    Example:
        >>> as_bool_mask("pred", torch.tensor([[[0, 1]]])).tolist()
        [[[False, True]]]
    """
    return _as_bool(name, t, (None, None, None), "mask")


def _check_pair(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    check_shape("pred", pred, (None, None, None))
    check_shape("target", target, (None, None, None))
    check_same_shape("pred", pred, "target", target)
    if pred.device != target.device:
        raise ShapeError(f"pred is on {pred.device} but target is on {target.device}; put both on one device")
    return as_bool_mask("pred", pred), as_bool_mask("target", target)


# ------------------------------------------------------------------------------------- counts
def _ratio(num: torch.Tensor, den: torch.Tensor, undefined: torch.Tensor) -> torch.Tensor:
    """num / den in float64; 0 where den == 0; NaN where ``undefined``."""
    num = num.to(torch.float64)
    den = den.to(torch.float64)
    out = torch.where(den > 0, num / den.clamp_min(1.0), torch.zeros_like(num))
    return out.masked_fill(undefined, math.nan)


class Counts(NamedTuple):
    """Confusion counts, each an int64 tensor of one common shape (``(B,)`` per image).

    The score methods work element-wise on whatever shape the counts have, so ``(B,)`` counts give
    per-image scores and :meth:`total` counts give pooled scores.

    Example:
        >>> c = confusion(torch.tensor([[[1, 1, 0]]]), torch.tensor([[[1, 0, 0]]]))
        >>> c.tp.tolist(), c.fp.tolist(), c.fn.tolist(), c.tn.tolist()
        ([1], [1], [0], [1])
        >>> c.iou().tolist()
        [0.5]
    """

    tp: torch.Tensor
    fp: torch.Tensor
    fn: torch.Tensor
    tn: torch.Tensor

    def both_empty(self) -> torch.Tensor:
        """Bool, same shape as the counts: prediction and truth both empty."""
        return (self.tp + self.fp + self.fn) == 0

    def iou(self) -> torch.Tensor:
        """Foreground IoU ``tp / (tp + fp + fn)``, float64; NaN where both masks are empty."""
        return _ratio(self.tp, self.tp + self.fp + self.fn, self.both_empty())

    def dice(self) -> torch.Tensor:
        """Dice = F1 ``2 tp / (2 tp + fp + fn)``, float64; NaN where both masks are empty."""
        return _ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn, self.both_empty())

    def precision(self) -> torch.Tensor:
        """``tp / (tp + fp)``, float64; 0 for an empty prediction, NaN where both masks are empty."""
        return _ratio(self.tp, self.tp + self.fp, self.both_empty())

    def recall(self) -> torch.Tensor:
        """``tp / (tp + fn)``, float64; 0 for an empty truth, NaN where both masks are empty."""
        return _ratio(self.tp, self.tp + self.fn, self.both_empty())

    def miou_fg_bg(self) -> torch.Tensor:
        """Mean of foreground IoU and background IoU, float64.

        A class whose union is empty (no pixel of it in prediction or truth) is left out of the
        mean; NaN only when there are no pixels at all.
        """
        fg_union = self.tp + self.fp + self.fn
        bg_union = self.tn + self.fp + self.fn
        fg = _ratio(self.tp, fg_union, torch.zeros_like(fg_union, dtype=torch.bool))
        bg = _ratio(self.tn, bg_union, torch.zeros_like(bg_union, dtype=torch.bool))
        n_classes = (fg_union > 0).to(torch.float64) + (bg_union > 0).to(torch.float64)
        total = fg + bg  # an absent class contributes 0
        return torch.where(n_classes > 0, total / n_classes.clamp_min(1.0), torch.full_like(total, math.nan))

    def total(self, dim: int = -1) -> Counts:
        """Counts summed over ``dim`` (default: the image axis) -> pooled counts."""
        return Counts(*(x.sum(dim=dim) for x in self))


def confusion(pred: torch.Tensor, target: torch.Tensor) -> Counts:
    """Per-image confusion counts.

    Args:
        pred: ``(B, H, W)`` bool (or 0/1 integer) predicted masks.
        target: ``(B, H, W)`` bool (or 0/1 integer) true masks, same shape and device.

    Returns:
        :class:`Counts` with ``tp, fp, fn, tn`` each ``(B,)`` int64 on the inputs' device.

    Raises:
        ShapeError: shapes differ, not 3-D, wrong dtype, or different devices.

    Example:
        >>> pred = torch.tensor([[[1, 1], [0, 0]]], dtype=torch.bool)
        >>> target = torch.tensor([[[1, 0], [1, 0]]], dtype=torch.bool)
        >>> [x.tolist() for x in confusion(pred, target)]
        [[1], [1], [1], [1]]
    """
    p, t = _check_pair(pred, target)
    hw = p.shape[1] * p.shape[2]
    tp = (p & t).sum(dim=(1, 2))
    fp = p.sum(dim=(1, 2)) - tp
    fn = t.sum(dim=(1, 2)) - tp
    tn = hw - tp - fp - fn
    return Counts(tp, fp, fn, tn)


# ---------------------------------------------------------------------------- per-image scores
def iou(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image foreground IoU (Jaccard).

    Args:
        pred, target: ``(B, H, W)`` bool (or 0/1 integer) masks.

    Returns:
        ``(B,)`` float64; NaN where both masks are empty, 0 where only one is.

    Example:
        >>> pred = torch.tensor([[[1, 1, 0, 0]], [[0, 0, 0, 0]]])
        >>> target = torch.tensor([[[1, 0, 0, 0]], [[0, 0, 0, 0]]])
        >>> iou(pred, target).tolist()
        [0.5, nan]
    """
    return confusion(pred, target).iou()


def dice(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image Dice coefficient ``2|P & T| / (|P| + |T|)`` (= F1).

    Args:
        pred, target: ``(B, H, W)`` bool (or 0/1 integer) masks.

    Returns:
        ``(B,)`` float64; NaN where both masks are empty, 0 where only one is.

    Example:
        >>> pred = torch.tensor([[[1, 1, 0, 0]], [[1, 0, 0, 0]]])
        >>> target = torch.tensor([[[1, 0, 0, 0]], [[0, 0, 0, 0]]])
        >>> [round(v, 4) for v in dice(pred, target).tolist()]
        [0.6667, 0.0]
    """
    return confusion(pred, target).dice()


def f1(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image F1 score; identical to :func:`dice`.

    Args:
        pred, target: ``(B, H, W)`` bool (or 0/1 integer) masks.

    Returns:
        ``(B,)`` float64.

    Example:
        >>> p = torch.tensor([[[1, 1, 0, 0]]]); t = torch.tensor([[[1, 0, 0, 0]]])
        >>> bool(torch.equal(f1(p, t), dice(p, t)))
        True
    """
    return dice(pred, target)


def precision(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image precision ``|P & T| / |P|``.

    Args:
        pred, target: ``(B, H, W)`` bool (or 0/1 integer) masks.

    Returns:
        ``(B,)`` float64; 0 for an empty prediction with a non-empty truth, NaN where both are empty.

    Example:
        >>> pred = torch.tensor([[[1, 1, 0, 0]], [[0, 0, 0, 0]]])
        >>> target = torch.tensor([[[1, 0, 0, 0]], [[0, 1, 0, 0]]])
        >>> precision(pred, target).tolist()
        [0.5, 0.0]
    """
    return confusion(pred, target).precision()


def recall(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image recall ``|P & T| / |T|``.

    Args:
        pred, target: ``(B, H, W)`` bool (or 0/1 integer) masks.

    Returns:
        ``(B,)`` float64; 0 for an empty truth with a non-empty prediction, NaN where both are empty.

    Example:
        >>> pred = torch.tensor([[[1, 1, 0, 0]], [[1, 0, 0, 0]]])
        >>> target = torch.tensor([[[1, 0, 0, 1]], [[0, 0, 0, 0]]])
        >>> recall(pred, target).tolist()
        [0.5, 0.0]
    """
    return confusion(pred, target).recall()


# ------------------------------------------------------------------------------- pooled scores
def pooled_iou(pred: torch.Tensor, target: torch.Tensor) -> float:
    """IoU of the counts summed over the batch ("global" / micro IoU).

    Args:
        pred, target: ``(B, H, W)`` bool (or 0/1 integer) masks.

    Returns:
        float; NaN when every prediction and every truth is empty.

    Example:
        >>> pred = torch.tensor([[[1, 1, 0, 0]], [[0, 0, 0, 0]]])
        >>> target = torch.tensor([[[1, 0, 0, 0]], [[1, 1, 0, 0]]])
        >>> pooled_iou(pred, target)  # tp 1, fp 1, fn 2
        0.25
    """
    return float(confusion(pred, target).total().iou())


def pooled_dice(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Dice of the counts summed over the batch.

    Args:
        pred, target: ``(B, H, W)`` bool (or 0/1 integer) masks.

    Returns:
        float; NaN when every prediction and every truth is empty.

    Example:
        >>> pred = torch.tensor([[[1, 1, 0, 0]], [[0, 0, 0, 0]]])
        >>> target = torch.tensor([[[1, 0, 0, 0]], [[1, 1, 0, 0]]])
        >>> pooled_dice(pred, target)  # 2*1 / (2*1 + 1 + 2)
        0.4
    """
    return float(confusion(pred, target).total().dice())


def pooled_precision(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Precision of the counts summed over the batch.

    Args:
        pred, target: ``(B, H, W)`` bool (or 0/1 integer) masks.

    Returns:
        float.

    Example:
        >>> pred = torch.tensor([[[1, 1, 0, 0]], [[0, 0, 0, 0]]])
        >>> target = torch.tensor([[[1, 0, 0, 0]], [[1, 1, 0, 0]]])
        >>> pooled_precision(pred, target)
        0.5
    """
    return float(confusion(pred, target).total().precision())


def pooled_recall(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Recall of the counts summed over the batch.

    Args:
        pred, target: ``(B, H, W)`` bool (or 0/1 integer) masks.

    Returns:
        float.

    Example:
        >>> pred = torch.tensor([[[1, 1, 0, 0]], [[0, 0, 0, 0]]])
        >>> target = torch.tensor([[[1, 0, 0, 0]], [[1, 1, 0, 0]]])
        >>> round(pooled_recall(pred, target), 4)
        0.3333
    """
    return float(confusion(pred, target).total().recall())


def mean_iou_fg_bg(pred: torch.Tensor, target: torch.Tensor) -> float:
    """EnsembleCAM's "mIoU": mean of background and foreground IoU, pixels pooled over the batch.

    Images without foreground count fully (their pixels add to the background class). A class
    absent from both prediction and truth over the whole batch is left out of the mean.

    Args:
        pred, target: ``(B, H, W)`` bool (or 0/1 integer) masks.

    Returns:
        float in 0..1.

    Example:
        >>> pred = torch.zeros(2, 1, 4, dtype=torch.bool)          # the "Empty" baseline
        >>> target = torch.tensor([[[1, 0, 0, 0]], [[0, 0, 0, 0]]])
        >>> mean_iou_fg_bg(pred, target)  # fg IoU 0, bg IoU 7/8
        0.4375
    """
    return float(confusion(pred, target).total().miou_fg_bg())


def dsc_from_miou(m: float | torch.Tensor) -> float | torch.Tensor:
    """EnsembleCAM's printed "DSC": ``2 m / (1 + m)`` of their fg/bg mIoU (not a per-image Dice).

    Args:
        m: a float or a tensor of any shape, mIoU values in 0..1.

    Returns:
        The same kind (float or tensor) as ``m``.

    Example:
        >>> round(dsc_from_miou(0.542), 3)  # their BraTS 'and' ensemble: 70.3 / 54.2
        0.703
    """
    return 2 * m / (1 + m)


# ------------------------------------------------------------------------------- decision scores
def accuracy(pred_labels: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of equal labels.

    Args:
        pred_labels: ``(B,)`` bool or integer predicted labels.
        labels: ``(B,)`` bool or integer true labels, same shape.

    Returns:
        float in 0..1; NaN for ``B == 0``.

    Example:
        >>> accuracy(torch.tensor([1, 0, 1, 1]), torch.tensor([1, 0, 0, 1]))
        0.75
    """
    for name, t in (("pred_labels", pred_labels), ("labels", labels)):
        check_shape(name, t, (None,))
        if t.dtype != torch.bool and t.dtype not in _INT_DTYPES:
            raise ShapeError(
                f"{name}: expected bool or integer labels, got dtype {t.dtype} with shape {tuple(t.shape)}"
            )
    check_same_shape("pred_labels", pred_labels, "labels", labels)
    if labels.numel() == 0:
        return math.nan
    return float((pred_labels.to(labels.device) == labels).to(torch.float64).mean())


def flag_rate(flags: torch.Tensor) -> float:
    """Share of flagged images (e.g. sent to expert review).

    Args:
        flags: ``(B,)`` bool (or 0/1 integer).

    Returns:
        float in 0..1; NaN for ``B == 0``.

    Example:
        >>> flag_rate(torch.tensor([True, False, False, False]))
        0.25
    """
    f = _as_bool("flags", flags, (None,), "flag")
    if f.numel() == 0:
        return math.nan
    return float(f.to(torch.float64).mean())


def nanmean_with_count(values: torch.Tensor | np.ndarray | Sequence[float]) -> tuple[float, int, int]:
    """Mean over the non-NaN values, with how many were used and how many were NaN.

    Args:
        values: a tensor, array or sequence of numbers, any shape (flattened).

    Returns:
        ``(mean, n_used, n_excluded)``; ``mean`` is NaN when ``n_used == 0``.

    Example:
        >>> nanmean_with_count(torch.tensor([1.0, float("nan"), 0.0]))
        (0.5, 2, 1)
    """
    v = torch.as_tensor(values, dtype=torch.float64).flatten()
    keep = ~torch.isnan(v)
    n_used = int(keep.sum())
    n_excluded = int(v.numel()) - n_used
    mean = float(v[keep].mean()) if n_used else math.nan
    return mean, n_used, n_excluded


# ------------------------------------------------------------------------------ the score table
def scores_from_counts(counts: Counts, prefix: str = "") -> dict[str, float | int]:
    """The :func:`segmentation_scores` dict from per-image counts.

    Args:
        counts: :class:`Counts` with fields of shape ``(B,)``.
        prefix: prepended to every key (e.g. ``"val_"``).

    Returns:
        dict with keys (in order) ``dice, iou, precision, recall`` (per-image means over the images
        that are not both-empty), ``n_images``, ``n_excluded`` (both-empty images),
        ``pooled_dice, pooled_iou``, ``miou_fg_bg`` and ``dsc_paper`` (= ``dsc_from_miou``).

    Example:
        >>> c = confusion(torch.tensor([[[1, 0]]]), torch.tensor([[[1, 1]]]))
        >>> scores_from_counts(c, prefix="val_")["val_recall"]
        0.5
    """
    for name, x in zip(counts._fields, counts):
        check_shape(f"counts.{name}", x, (None,))
    dice_mean, _, n_excluded = nanmean_with_count(counts.dice())
    pooled = counts.total()
    miou = float(pooled.miou_fg_bg())
    values: dict[str, float | int] = {
        "dice": dice_mean,
        "iou": nanmean_with_count(counts.iou())[0],
        "precision": nanmean_with_count(counts.precision())[0],
        "recall": nanmean_with_count(counts.recall())[0],
        "n_images": int(counts.tp.numel()),
        "n_excluded": n_excluded,
        "pooled_dice": float(pooled.dice()),
        "pooled_iou": float(pooled.iou()),
        "miou_fg_bg": miou,
        "dsc_paper": float(dsc_from_miou(miou)),
    }
    return {prefix + k: v for k, v in values.items()}


def segmentation_scores(pred: torch.Tensor, target: torch.Tensor, prefix: str = "") -> dict[str, float | int]:
    """Every segmentation score a results table needs, in one dict.

    Args:
        pred: ``(B, H, W)`` bool (or 0/1 integer) predicted masks.
        target: ``(B, H, W)`` bool (or 0/1 integer) true masks.
        prefix: prepended to every key.

    Returns:
        dict: ``dice, iou, precision, recall`` (per-image means, both-empty images excluded),
        ``n_images``, ``n_excluded``, ``pooled_dice``, ``pooled_iou``, ``miou_fg_bg``
        (EnsembleCAM's mIoU) and ``dsc_paper`` (their DSC = 2 mIoU / (1 + mIoU)). Scores are
        floats in 0..1 (NaN where undefined), counts are ints.

    Example:
        >>> pred = torch.tensor([[[1, 1, 0, 0]], [[0, 0, 0, 0]]])
        >>> target = torch.tensor([[[1, 0, 0, 0]], [[0, 0, 0, 0]]])
        >>> s = segmentation_scores(pred, target)
        >>> round(s["dice"], 4), s["n_images"], s["n_excluded"]
        (0.6667, 2, 1)
    """
    return scores_from_counts(confusion(pred, target), prefix)


class SegmentationAccumulator:
    """Collects per-image counts batch by batch; :meth:`compute` gives the :func:`segmentation_scores` dict.

    Only four int64 counts per image are kept (32 bytes, on the CPU), so a data set never has to
    be in memory at once; the result equals :func:`segmentation_scores` on the concatenated masks.
    Batches may differ in size and in ``(H, W)``.

    Example:
        >>> acc = SegmentationAccumulator()
        >>> acc.update(torch.tensor([[[1, 1, 0, 0]]]), torch.tensor([[[1, 0, 0, 0]]]))
        >>> acc.update(torch.tensor([[[0, 0]]]), torch.tensor([[[0, 0]]]))
        >>> s = acc.compute()
        >>> round(s["dice"], 4), s["n_images"], s["n_excluded"]
        (0.6667, 2, 1)
    """

    def __init__(self) -> None:
        self._chunks: list[torch.Tensor] = []

    def reset(self) -> None:
        """Forget every batch seen so far."""
        self._chunks = []

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch: ``pred``, ``target`` ``(B, H, W)`` bool (or 0/1 integer) masks."""
        c = confusion(pred, target)
        self._chunks.append(torch.stack(tuple(c), dim=1).cpu())

    @property
    def n_images(self) -> int:
        """Images seen so far."""
        return sum(int(c.shape[0]) for c in self._chunks)

    def counts(self) -> Counts:
        """Per-image :class:`Counts` of every image seen, fields ``(N,)`` int64 on the CPU."""
        if not self._chunks:
            return Counts(*(torch.zeros(0, dtype=torch.int64) for _ in range(4)))
        allc = torch.cat(self._chunks, dim=0)
        return Counts(*allc.unbind(dim=1))

    def compute(self, prefix: str = "") -> dict[str, float | int]:
        """The :func:`segmentation_scores` dict over every image seen."""
        return scores_from_counts(self.counts(), prefix)
