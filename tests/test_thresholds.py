"""Tests of wsslib.evaluate.thresholds: binarize and the single-map search (the M = 1 case of the
one vectorised search; the several-map cases are in test_ensembles.py)."""

from __future__ import annotations

import doctest

import pytest
import torch

import wsslib.evaluate.thresholds
from wsslib.core.errors import DataError, ShapeError
from wsslib.evaluate.metrics import segmentation_scores
from wsslib.evaluate.metrics import Counts
from wsslib.evaluate.thresholds import ThresholdResult, binarize, default_grid, grid_scores, search_grid, select_threshold

METRICS = ["dice", "iou", "pooled_dice", "pooled_iou", "miou_fg_bg", "dsc_paper"]


def _noisy_case(seed: int = 0, n: int = 40, h: int = 16, w: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    """Blobs of varying size with noisy maps; a few images without an object."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    cy = torch.randint(3, h - 3, (n, 1, 1), generator=g)
    cx = torch.randint(3, w - 3, (n, 1, 1), generator=g)
    r = torch.randint(2, 6, (n, 1, 1), generator=g)
    masks = (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2
    masks[:5] = False
    blur = torch.exp(-(((yy - cy) ** 2 + (xx - cx) ** 2).float()) / (2 * (r.float() + 1.5) ** 2))
    maps = (0.7 * blur + 0.3 * torch.rand(n, h, w, generator=g)).clamp(0, 1)
    return maps, masks


def test_default_grid():
    g = default_grid()
    assert g.dtype == torch.float64 and len(g) == 19
    assert torch.allclose(g, torch.arange(1, 20, dtype=torch.float64) * 0.05)
    assert g[2].item() == 0.15 and g[-1].item() == 0.95


def test_binarize_strict_and_per_image():
    maps = torch.tensor([[[0.3, 0.5, 0.7]], [[0.3, 0.5, 0.7]]])
    assert binarize(maps, 0.5).tolist() == [[[False, False, True]]] * 2
    per = binarize(maps, torch.tensor([0.3, 0.5], dtype=torch.float64))
    assert per.tolist() == [[[False, True, True]], [[False, False, True]]]
    assert torch.equal(binarize(maps, torch.tensor(0.5)), binarize(maps, 0.5))
    # float32 maps vs float64 per-image thresholds: same result as the scalar comparison
    m = torch.full((2, 1, 1), 0.3)
    assert torch.equal(binarize(m, torch.tensor([0.3, 0.3], dtype=torch.float64)), binarize(m, 0.3))


def test_binarize_errors():
    with pytest.raises(ShapeError, match="maps: expected a float tensor"):
        binarize(torch.ones(1, 2, 2, dtype=torch.uint8), 0.5)
    with pytest.raises(ShapeError, match="maps"):
        binarize(torch.ones(2, 2), 0.5)
    with pytest.raises(ShapeError, match=r"threshold: expected shape \(3\), got \(2,\)"):
        binarize(torch.ones(3, 2, 2), torch.tensor([0.1, 0.2]))


def test_select_threshold_known_best_and_ties_go_low():
    g = torch.Generator().manual_seed(1)
    masks = torch.rand(30, 12, 12, generator=g) < 0.3
    masks[0] = False  # an image without object
    fg = 0.62 + 0.28 * torch.rand(30, 12, 12, generator=g)  # (0.62, 0.9)
    bg = 0.33 * torch.rand(30, 12, 12, generator=g)  # [0, 0.33)
    maps = torch.where(masks, fg, bg)
    for metric in METRICS:
        r = select_threshold(maps, masks, metric=metric)
        assert isinstance(r, ThresholdResult)
        # every threshold in 0.35..0.60 separates perfectly; the lowest wins
        assert r.threshold == 0.35 and r.score == 1.0, metric
        perfect = r.grid[r.scores == 1.0]
        assert torch.allclose(perfect, torch.arange(7, 13, dtype=torch.float64) * 0.05)


def test_select_threshold_unique_optimum():
    # Foreground at 0.8, one ring of false positives at 0.45: the best Dice needs t in [0.45, 0.8)
    maps = torch.zeros(4, 10, 10)
    masks = torch.zeros(4, 10, 10, dtype=torch.bool)
    masks[:, 3:7, 3:7] = True
    maps[:, 2:8, 2:8] = 0.45
    maps[:, 3:7, 3:7] = 0.8
    r = select_threshold(maps, masks, grid=[0.9, 0.1, 0.5, 0.3, 0.5])
    assert r.grid.tolist() == [0.1, 0.3, 0.5, 0.9]  # sorted, de-duplicated
    assert r.threshold == 0.5 and r.score == 1.0
    assert r.scores.tolist() == pytest.approx([2 * 16 / (16 + 36)] * 2 + [1.0, 0.0])  # 0.9: empty prediction scores 0


@pytest.mark.parametrize("metric", METRICS)
def test_select_threshold_equals_brute_force(metric):
    maps, masks = _noisy_case(2)
    r = select_threshold(maps, masks, metric=metric, chunk_pixels=7 * 16 * 20)  # uneven chunks
    key = {"miou_fg_bg": "miou_fg_bg"}.get(metric, metric)
    brute = torch.tensor(
        [segmentation_scores(binarize(maps, t), masks)[key] for t in r.grid.tolist()], dtype=torch.float64
    )
    assert torch.allclose(r.scores, brute, rtol=1e-12, atol=1e-12, equal_nan=True)
    best = brute.nan_to_num(-1.0).max()
    first = int(torch.nonzero(brute.nan_to_num(-1.0) >= best - 1e-12)[0])
    assert r.threshold == r.grid[first].item() and r.score == pytest.approx(best.item())
    assert 0.05 < r.threshold < 0.95  # an interior optimum on this case


def test_select_threshold_chunking_does_not_matter():
    maps, masks = _noisy_case(3)
    a = select_threshold(maps, masks, metric="iou", chunk_pixels=1)  # one image per chunk
    b = select_threshold(maps, masks, metric="iou")
    assert a.threshold == b.threshold and torch.equal(a.scores, b.scores)


def test_select_threshold_accepts_integer_masks():
    maps, masks = _noisy_case(4)
    a = select_threshold(maps, masks.to(torch.uint8), metric="pooled_dice")
    b = select_threshold(maps, masks, metric="pooled_dice")
    assert a.threshold == b.threshold and torch.equal(a.scores, b.scores)


def test_select_threshold_errors():
    maps, masks = _noisy_case(5, n=3)
    with pytest.raises(ValueError, match="metric"):
        select_threshold(maps, masks, metric="accuracy")
    with pytest.raises(ShapeError, match="masks"):
        select_threshold(maps, masks[:2])
    with pytest.raises(ShapeError, match="masks"):
        select_threshold(maps, masks.float())
    with pytest.raises(ValueError, match="grid"):
        select_threshold(maps, masks, grid=[])
    with pytest.raises(ValueError, match="grid"):
        select_threshold(maps, masks, grid=[0.5, float("nan")])
    empty = torch.zeros_like(masks)
    with pytest.raises(DataError, match="undefined"):
        select_threshold(torch.zeros_like(maps), empty, metric="dice")
    # the fg/bg mIoU is defined (background only): every threshold scores 1, the lowest wins
    r = select_threshold(torch.zeros_like(maps), empty, metric="miou_fg_bg")
    assert r.threshold == 0.05 and r.score == 1.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_select_threshold_cuda_matches_cpu():
    maps, masks = _noisy_case(6)
    a = select_threshold(maps.cuda(), masks.cuda(), metric="dice")
    b = select_threshold(maps, masks, metric="dice")
    assert a.threshold == b.threshold and torch.allclose(a.scores, b.scores, equal_nan=True)
    assert binarize(maps.cuda(), torch.full((maps.shape[0],), 0.5)).device.type == "cuda"


def test_docstring_examples_run():
    result = doctest.testmod(wsslib.evaluate.thresholds)
    assert result.failed == 0 and result.attempted > 0


def _per_threshold_reference(maps: torch.Tensor, masks: torch.Tensor, grid: list[float], metric: str) -> torch.Tensor:
    """The search as it was before it became the M = 1 case of the histogram search: one
    ``maps > t`` pass per threshold, counts in float, then the same metric."""
    n, hw = maps.shape[0], maps.shape[1] * maps.shape[2]
    m, t = maps.reshape(n, hw), masks.reshape(n, hw).float()
    tp = torch.stack([((m > thr).float() * t).sum(1) for thr in grid]).long()
    pred = torch.stack([(m > thr).float().sum(1) for thr in grid]).long()
    fg = t.sum(1).long()
    fp, fn = pred - tp, fg - tp
    return grid_scores(Counts(tp, fp, fn, hw - tp - fp - fn), metric)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_select_threshold_equals_the_per_threshold_search_exactly(metric, dtype):
    maps, masks = _noisy_case(7)
    maps = maps.to(dtype)
    maps[3] = torch.round(maps[3] * 20) / 20  # values ON the grid: strictness matters
    r = select_threshold(maps, masks, metric=metric)
    want = _per_threshold_reference(maps, masks, default_grid().tolist(), metric)
    assert torch.equal(r.scores.isnan(), want.isnan())
    assert torch.equal(r.scores.nan_to_num(-1.0), want.nan_to_num(-1.0))  # bit for bit
    m1 = search_grid(maps[None], masks, "and", None, metric)["and"]  # any op: the identity for one map
    assert (r.threshold,) == m1.thresholds and r.score == m1.score and torch.equal(r.grid, m1.grid)


def test_select_threshold_rejects_nan_maps():
    maps, masks = _noisy_case(8, n=3)
    maps[0, 0, 0] = float("nan")
    with pytest.raises(ShapeError, match="NaN"):
        select_threshold(maps, masks)
