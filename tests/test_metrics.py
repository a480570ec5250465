"""Tests of wsslib.metrics (against sklearn and hand counts) and wsslib.baselines."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
import torch

import wsslib.evaluate.baselines
import wsslib.evaluate.metrics
from wsslib.evaluate.baselines import centre_prior, empty_masks, mean_foreground_share
from wsslib.core.errors import ShapeError
from wsslib.evaluate.metrics import (
    SCORE_KEYS,
    SegmentationAccumulator,
    accuracy,
    confusion,
    dice,
    dsc_from_miou,
    f1,
    flag_rate,
    iou,
    mean_iou_fg_bg,
    nanmean_with_count,
    pooled_dice,
    pooled_iou,
    pooled_precision,
    pooled_recall,
    precision,
    recall,
    segmentation_scores,
)

skm = pytest.importorskip("sklearn.metrics")


def _random_batch(seed: int = 0, b: int = 16, h: int = 9, w: int = 11) -> tuple[torch.Tensor, torch.Tensor]:
    """Random masks plus the edge cases: empty truth, empty pred, both empty, all ones."""
    g = torch.Generator().manual_seed(seed)
    share = torch.rand(b, 1, 1, generator=g)
    pred = torch.rand(b, h, w, generator=g) < share
    target = torch.rand(b, h, w, generator=g) < torch.rand(b, 1, 1, generator=g)
    target[0] = False  # empty truth, non-empty prediction
    pred[0, 0, 0] = True
    pred[1] = False  # empty prediction, non-empty truth
    target[1, 2, 3] = True
    pred[2] = False  # both empty
    target[2] = False
    pred[3] = True  # all ones, both
    target[3] = True
    pred[4] = True  # all-ones prediction, partial truth
    target[4] = False
    target[4, :3] = True
    return pred, target


def _sklearn_per_image(fn, pred: torch.Tensor, target: torch.Tensor) -> np.ndarray:
    return np.array(
        [fn(t.flatten().numpy(), p.flatten().numpy(), zero_division=0) for p, t in zip(pred, target)]
    )


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (iou, skm.jaccard_score),
        (dice, skm.f1_score),
        (f1, skm.f1_score),
        (precision, skm.precision_score),
        (recall, skm.recall_score),
    ],
)
@pytest.mark.parametrize("seed", [0, 1])
def test_per_image_matches_sklearn(ours, theirs, seed):
    pred, target = _random_batch(seed)
    got = ours(pred, target)
    assert got.dtype == torch.float64 and got.shape == (pred.shape[0],)
    want = _sklearn_per_image(theirs, pred, target)
    both_empty = ~(pred.flatten(1).any(1) | target.flatten(1).any(1))
    assert both_empty.tolist()[:3] == [False, False, True]
    assert torch.isnan(got[both_empty]).all()
    np.testing.assert_allclose(got[~both_empty].numpy(), want[~both_empty.numpy()], rtol=0, atol=1e-12)


def test_edge_case_values():
    pred, target = _random_batch(0)
    assert iou(pred, target)[0] == 0 and recall(pred, target)[0] == 0  # empty truth
    assert precision(pred, target)[1] == 0 and dice(pred, target)[1] == 0  # empty prediction
    for fn in (iou, dice, precision, recall):
        assert fn(pred, target)[3] == 1.0  # all ones
    assert precision(pred, target)[4] == pytest.approx(3 / 9) and recall(pred, target)[4] == 1.0


def test_integer_masks_equal_bool():
    pred, target = _random_batch(3)
    for dtype in (torch.uint8, torch.int64, torch.int32):
        c_int = confusion(pred.to(dtype), target.to(dtype))
        c_bool = confusion(pred, target)
        assert all(torch.equal(a, b) and a.dtype == torch.int64 for a, b in zip(c_int, c_bool))


def test_confusion_counts_add_up():
    pred, target = _random_batch(4, b=5, h=6, w=7)
    c = confusion(pred, target)
    assert all(x.shape == (5,) and x.dtype == torch.int64 for x in c)
    assert torch.equal(c.tp + c.fp + c.fn + c.tn, torch.full((5,), 42))
    assert torch.equal(c.tp + c.fp, pred.sum((1, 2)))
    assert torch.equal(c.tp + c.fn, target.sum((1, 2)))


def _hand_batch() -> tuple[torch.Tensor, torch.Tensor]:
    # image 0: tp 1, fp 1, fn 0, tn 2 | image 1: tp 0, fp 0, fn 3, tn 1 | image 2: both empty, tn 4
    pred = torch.tensor([[[1, 1], [0, 0]], [[0, 0], [0, 0]], [[0, 0], [0, 0]]], dtype=torch.bool)
    target = torch.tensor([[[1, 0], [0, 0]], [[1, 1], [1, 0]], [[0, 0], [0, 0]]], dtype=torch.bool)
    return pred, target


def test_pooled_and_miou_hand_counted():
    pred, target = _hand_batch()
    # pooled: TP 1, FP 1, FN 3, TN 7
    assert pooled_iou(pred, target) == pytest.approx(1 / 5)
    assert pooled_dice(pred, target) == pytest.approx(2 / 6)
    assert pooled_precision(pred, target) == pytest.approx(1 / 2)
    assert pooled_recall(pred, target) == pytest.approx(1 / 4)
    miou = (1 / 5 + 7 / 11) / 2  # fg IoU 1/5, bg IoU 7/(7+1+3)
    assert mean_iou_fg_bg(pred, target) == pytest.approx(miou)
    assert isinstance(pooled_iou(pred, target), float)


def test_segmentation_scores_hand_counted():
    pred, target = _hand_batch()
    s = segmentation_scores(pred, target)
    assert tuple(s) == SCORE_KEYS
    miou = (1 / 5 + 7 / 11) / 2
    want = {
        "dice": (2 / 3 + 0) / 2,
        "iou": (1 / 2 + 0) / 2,
        "precision": (1 / 2 + 0) / 2,
        "recall": (1 + 0) / 2,
        "n_images": 3,
        "n_excluded": 1,
        "pooled_dice": 1 / 3,
        "pooled_iou": 1 / 5,
        "miou_fg_bg": miou,
        "dsc_paper": 2 * miou / (1 + miou),
    }
    assert s == pytest.approx(want)
    assert isinstance(s["n_images"], int) and isinstance(s["n_excluded"], int)
    prefixed = segmentation_scores(pred, target, prefix="val_")
    assert list(prefixed) == ["val_" + k for k in SCORE_KEYS]


def test_miou_empty_baseline_and_absent_class():
    target = torch.zeros(4, 5, 5, dtype=torch.bool)
    target[0, :2] = True  # 10 of 100 pixels
    pred = empty_masks(4, 5, 5)
    assert mean_iou_fg_bg(pred, target) == pytest.approx((0 + 90 / 100) / 2)
    # no foreground anywhere: only the background class counts
    assert mean_iou_fg_bg(pred, torch.zeros_like(target)) == 1.0
    assert math.isnan(pooled_iou(pred, torch.zeros_like(target)))


def test_dsc_from_miou_matches_paper_pairs():
    # EnsembleCAM's printed (DSC, mIoU) pairs, methods.md section 4
    for dsc, miou in [(70.3, 54.2), (68.5, 52.1), (64.6, 47.7), (79.3, 65.7), (86.8, 76.7)]:
        assert dsc_from_miou(miou / 100) == pytest.approx(dsc / 100, abs=1e-3)
    assert torch.allclose(dsc_from_miou(torch.tensor([0.0, 1.0])), torch.tensor([0.0, 1.0]))


def test_accuracy_flag_rate_nanmean():
    assert accuracy(torch.tensor([1, 0, 1, 1]), torch.tensor([True, False, False, True])) == 0.75
    assert math.isnan(accuracy(torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)))
    assert flag_rate(torch.tensor([True, False, True, True])) == 0.75
    assert flag_rate(torch.tensor([1, 0, 0, 0])) == 0.25
    assert nanmean_with_count(torch.tensor([1.0, math.nan, 0.0, math.nan])) == (0.5, 2, 2)
    mean, used, excluded = nanmean_with_count([math.nan])
    assert math.isnan(mean) and (used, excluded) == (0, 1)
    with pytest.raises(ShapeError, match="labels"):
        accuracy(torch.tensor([1, 0]), torch.tensor([1, 0, 1]))
    with pytest.raises(ShapeError, match="pred_labels"):
        accuracy(torch.tensor([0.9, 0.1]), torch.tensor([1, 0]))
    with pytest.raises(ShapeError, match="flags"):
        flag_rate(torch.tensor([[True]]))


def test_shape_and_dtype_errors():
    good = torch.zeros(2, 4, 4, dtype=torch.bool)
    with pytest.raises(ShapeError, match=r"pred has shape \(2, 4, 4\) but target has shape \(2, 4, 5\)"):
        iou(good, torch.zeros(2, 4, 5, dtype=torch.bool))
    with pytest.raises(ShapeError, match=r"target: expected shape \(\*, \*, \*\), got \(4, 4\)"):
        dice(good, good[0])
    with pytest.raises(ShapeError, match=r"pred: .*float32.*\(2, 4, 4\)"):
        confusion(good.float(), good)
    with pytest.raises(ShapeError, match="target: integer mask must hold only 0 and 1, found the value 2"):
        segmentation_scores(good, torch.full((2, 4, 4), 2))
    with pytest.raises(ShapeError, match="pred: expected a torch.Tensor"):
        iou(good.numpy(), good)
    with pytest.raises(ValueError):  # ShapeError is a ValueError
        pooled_dice(good, good[:1])


def test_accumulator_equals_one_shot():
    pred, target = _random_batch(5, b=23)
    acc = SegmentationAccumulator()
    for lo, hi in [(0, 1), (1, 9), (9, 9), (9, 23)]:
        acc.update(pred[lo:hi], target[lo:hi])
    assert acc.n_images == 23
    got, want = acc.compute(prefix="t_"), segmentation_scores(pred, target, prefix="t_")
    assert got.keys() == want.keys()
    for k in want:
        assert got[k] == pytest.approx(want[k], rel=1e-12, abs=1e-12, nan_ok=True), k
    acc.reset()
    empty = acc.compute()
    assert empty["n_images"] == 0 and math.isnan(empty["dice"]) and math.isnan(empty["miou_fg_bg"])


def test_accumulator_mixed_sizes():
    a = _random_batch(6, b=6, h=5, w=6)
    b = _random_batch(7, b=5, h=8, w=4)
    acc = SegmentationAccumulator()
    acc.update(*a)
    acc.update(b[0].to(torch.uint8), b[1])
    c = acc.counts()
    ca, cb = confusion(*a), confusion(*b)
    assert torch.equal(c.tp, torch.cat([ca.tp, cb.tp])) and torch.equal(c.tn, torch.cat([ca.tn, cb.tn]))


def test_empty_batch():
    z = torch.zeros(0, 3, 3, dtype=torch.bool)
    assert iou(z, z).shape == (0,)
    s = segmentation_scores(z, z)
    assert s["n_images"] == 0 and s["n_excluded"] == 0 and math.isnan(s["dice"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu():
    pred, target = _random_batch(8)
    c = confusion(pred.cuda(), target.cuda())
    assert c.tp.device.type == "cuda"
    got = segmentation_scores(pred.cuda(), target.cuda())
    assert got == pytest.approx(segmentation_scores(pred, target), nan_ok=True)
    with pytest.raises(ShapeError, match="device"):
        iou(pred.cuda(), target)


# ---------------------------------------------------------------------------------- baselines
def test_empty_masks():
    m = empty_masks(3, 4, 5)
    assert m.shape == (3, 4, 5) and m.dtype == torch.bool and not m.any()
    with pytest.raises(ValueError):
        empty_masks(-1, 4, 5)


@pytest.mark.parametrize(("h", "w"), [(128, 128), (96, 160), (255, 101)])
@pytest.mark.parametrize("share", [0.02, 0.1, 0.3, 0.6, 0.9])
def test_centre_prior_area_and_centre(h, w, share):
    m = centre_prior(h, w, share)
    assert m.shape == (h, w) and m.dtype == torch.bool
    assert abs(m.double().mean().item() - share) <= 0.02 * share
    ys, xs = torch.nonzero(m, as_tuple=True)
    assert ys.double().mean().item() == pytest.approx((h - 1) / 2, abs=1e-9)
    assert xs.double().mean().item() == pytest.approx((w - 1) / 2, abs=1e-9)
    assert torch.equal(m, m.flip(0)) and torch.equal(m, m.flip(1))
    if share <= 0.6:  # a whole ellipse (not clipped): its extent follows the image's aspect
        height = int(m.any(1).sum())
        width = int(m.any(0).sum())
        assert height / width == pytest.approx(h / w, rel=0.1)


def test_centre_prior_clamps_and_rejects_nan():
    assert not centre_prior(10, 12, 0.0).any() and not centre_prior(10, 12, -0.5).any()
    assert centre_prior(10, 12, 1.0).all() and centre_prior(10, 12, 3.0).all()
    with pytest.raises(ValueError, match="fg_share"):
        centre_prior(10, 12, float("nan"))


def test_mean_foreground_share():
    m = torch.zeros(4, 10, 10, dtype=torch.bool)
    m[0, :1] = True  # 0.1
    m[1, :3] = True  # 0.3
    assert mean_foreground_share(m) == pytest.approx(0.2)
    assert mean_foreground_share(m, only_positive=False) == pytest.approx(0.1)
    assert mean_foreground_share(m.numpy().astype(np.uint8)) == pytest.approx(0.2)
    assert mean_foreground_share(torch.zeros(2, 3, 3, dtype=torch.bool)) == 0.0
    with pytest.raises(ShapeError, match="masks"):
        mean_foreground_share(m.float())


@pytest.mark.parametrize("module", [wsslib.evaluate.metrics, wsslib.evaluate.baselines])
def test_docstring_examples_run(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0
