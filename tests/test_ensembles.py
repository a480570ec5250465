"""Tests of wsslib.fusion: the ensemble ops and the exact vectorised threshold search."""

from __future__ import annotations

import doctest
import itertools
import json
import math

import pytest
import torch

import wsslib.methods.ensembles
from wsslib.methods import ensembles as fusion
from wsslib.apps.bench import thresholds as bench
from wsslib.core.errors import DataError, ShapeError
from wsslib.evaluate.metrics import confusion, scores_from_counts

METRICS = ["dice", "iou", "pooled_dice", "pooled_iou", "miou_fg_bg", "dsc_paper"]


def _tied_case(seed: int, m: int = 2, n: int = 9, h: int = 5, w: int = 7, levels: int = 11):
    """Maps whose values sit ON the grid (0, 0.1, ..., 1) so that every threshold is a tie somewhere;
    a constant-0 image, a constant-1 image, two images without an object."""
    g = torch.Generator().manual_seed(seed)
    maps = torch.randint(0, levels, (m, n, h, w), generator=g).float() / (levels - 1)
    maps[:, 0] = 0.0
    maps[:, 1] = 1.0
    target = torch.rand(n, h, w, generator=g) < 0.35
    target[2] = False
    target[3] = False
    target[4] = True
    return maps, target


def _ref_fuse(masks: torch.Tensor, op: str) -> torch.Tensor:
    """Plain-Python reference of the ops, image by image (ties -> the first map)."""
    out = []
    for b in range(masks.shape[1]):
        ms = [masks[i, b] for i in range(masks.shape[0])]
        if op == "or":
            r = ms[0].clone()
            for x in ms[1:]:
                r |= x
        elif op == "and":
            r = ms[0].clone()
            for x in ms[1:]:
                r &= x
        else:
            sizes = [int(x.sum()) for x in ms]
            best = min(sizes) if op == "<" else max(sizes)
            r = ms[sizes.index(best)]
        out.append(r)
    return torch.stack(out)


def test_doctests():
    assert doctest.testmod(wsslib.methods.ensembles, optionflags=doctest.ELLIPSIS).failed == 0


def test_threshold_grid():
    g = fusion.threshold_grid()
    assert g.dtype == torch.float64 and len(g) == 11
    assert g[3].item() == 0.3 and g[0].item() == 0.0 and g[-1].item() == 1.0
    assert len(fusion.threshold_grid(0.05)) == 21 and fusion.threshold_grid(0.05)[7].item() == 0.35
    with pytest.raises(ValueError):
        fusion.threshold_grid(0.3)
    with pytest.raises(ValueError):
        fusion.threshold_grid(0.0)


@pytest.mark.parametrize("op", ["or", "and", "<", ">"])
@pytest.mark.parametrize("m", [1, 2, 3])
def test_fuse_matches_reference(op, m):
    g = torch.Generator().manual_seed(m)
    masks = torch.rand(m, 12, 4, 4, generator=g) < 0.4
    masks[:, 0] = False  # all tie at 0 positives
    masks[:, 1, 0, 0] = True  # all tie at 1 positive, different masks
    masks[0, 1, 0, 0] = False
    masks[0, 1, 3, 3] = True
    assert torch.equal(fusion.fuse(masks, op), _ref_fuse(masks, op))
    assert torch.equal(fusion.fuse(list(masks), op), _ref_fuse(masks, op))
    if m == 1:
        assert torch.equal(fusion.fuse(masks, op), masks[0])


def test_fuse_ties_go_to_first_map():
    a = torch.tensor([[[1, 0, 0, 1]]], dtype=torch.bool)
    b = torch.tensor([[[0, 1, 1, 0]]], dtype=torch.bool)
    assert torch.equal(fusion.fuse([a, b], "<"), a) and torch.equal(fusion.fuse([a, b], ">"), a)
    assert torch.equal(fusion.fuse([b, a], "<"), b) and torch.equal(fusion.fuse([b, a], ">"), b)


def test_fuse_maps_is_strict_in_the_maps_dtype():
    a = torch.tensor([[[0.3, 0.30001, 0.7]]])  # float32: 0.3 is NOT above the threshold 0.3
    b = torch.tensor([[[1.0, 1.0, 1.0]]])
    assert fusion.fuse_maps([a, b], (0.3, 0.5), "and").tolist() == [[[False, True, True]]]
    a64 = torch.tensor([[[0.3, 0.30001, 0.7]]], dtype=torch.float64)
    assert fusion.fuse_maps(torch.stack([a64, b.double()]), (0.3, 0.5), "and").tolist() == [[[False, True, True]]]
    # a float32 0.3 widened to float64 lies above the double 0.3: the dtype of the maps decides
    assert fusion.fuse_maps(torch.stack([a.double(), b.double()]), (0.3, 0.5), "and").tolist() == [[[True, True, True]]]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_quantize_is_exact(dtype):
    maps, _ = _tied_case(0)
    maps = maps.to(dtype)
    grid = fusion.threshold_grid()
    q = fusion.quantize(maps, grid)
    for k, t in enumerate(grid.tolist()):
        assert torch.equal(maps > torch.tensor(t, dtype=torch.float64).to(dtype).item(), q > k)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("m", [1, 2, 3])
@pytest.mark.parametrize("per_image", [True, False])
def test_grid_counts_equal_brute_force(seed, m, per_image):
    maps, target = _tied_case(seed, m=m, levels=11 if seed % 2 == 0 else 21)
    if seed < 2 and m < 3:
        grid = fusion.threshold_grid()
    else:  # unsorted, a duplicate, values on and off the maps' levels; small enough for M = 3
        grid = torch.tensor([0.9, 0.05, 0.3, 0.3, 0.55])
    fast = fusion.grid_counts(maps, target, grid=grid, per_image=per_image, chunk_pixels=2 * 35)  # 2 images a chunk
    brute = fusion.grid_counts_brute(maps, target, grid=grid)
    n_grid = len(torch.unique(torch.as_tensor(grid)))
    for op in fusion.OPS:
        b = brute[op] if per_image else brute[op].total(dim=-1)
        f = fast[op] if per_image else fast[op].total(dim=-1)
        assert tuple(fast[op].tp.shape) == (n_grid,) * m + ((maps.shape[1],) if per_image else (1,))
        for name, x, y in zip(b._fields, f, b):
            assert torch.equal(x, y), (op, name)


@pytest.mark.parametrize("m", [1, 2])
@pytest.mark.parametrize("op", ["or", "and", "<", ">"])
def test_one_op_at_a_time_pooled_and_per_image(op, m):
    # asking for one op alone takes other paths (a pooled histogram for 'or'/'and' and pooled metrics)
    maps, target = _tied_case(5, m=m)
    brute = fusion.grid_counts_brute(maps, target, op)[op]
    for per_image in (True, False):
        fast = fusion.grid_counts(maps, target, op, per_image=per_image)[op]
        want = brute if per_image else brute.total(dim=-1)
        got = fast if per_image else fast.total(dim=-1)
        for name, x, y in zip(brute._fields, got, want):
            assert torch.equal(x, y), (op, per_image, name)
    for metric in METRICS:
        f = fusion.search_thresholds(maps, target, op, metric=metric)
        b = fusion.search_thresholds(maps, target, op, metric=metric, method="brute")
        assert f.index == b.index and torch.equal(f.scores.nan_to_num(-1.0), b.scores.nan_to_num(-1.0))
        assert 0.0 <= f.score <= 1.0


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("seed", range(3))
def test_search_equals_brute_force(metric, seed):
    maps, target = _tied_case(seed, m=2)
    fast = fusion.search_ensembles(maps, target, metric=metric)
    brute = fusion.search_ensembles(maps, target, metric=metric, method="brute")
    for op in fusion.OPS:
        f, b = fast[op], brute[op]
        assert f.index == b.index and f.thresholds == b.thresholds and f.score == b.score, op
        assert torch.equal(f.scores.isnan(), b.scores.isnan())
        assert torch.equal(f.scores.nan_to_num(-1.0), b.scores.nan_to_num(-1.0))
        # the grid value at the chosen cell is what wsslib.metrics gives for the fused masks
        s = scores_from_counts(confusion(fusion.fuse_maps(maps, f.thresholds, op), target))
        want = s["dsc_paper"] if metric == "dsc_paper" else s[metric]
        assert f.score == pytest.approx(want, abs=1e-12)
        # and it is the maximum over the grid, the first one in row-major order
        assert f.score == float(f.scores.nan_to_num(-1.0).max())
        for cell in itertools.product(range(11), repeat=2):
            if cell < f.index:
                assert not f.scores[cell] == f.score


def test_search_on_pseudo_cams_fine_grid_all_metrics():
    maps, target = bench.pseudo_cams(2, 10, 16, seed=3)
    grid = fusion.threshold_grid(0.05)
    brute_counts = fusion.grid_counts_brute(maps, target, grid=grid)
    for metric in METRICS:
        f = fusion.search_ensembles(maps, target, metric=metric, grid=grid)
        b = fusion.search_from_counts(brute_counts, grid, metric)
        for op in fusion.OPS:
            assert f[op].index == b[op].index
            assert torch.equal(f[op].scores.nan_to_num(-1.0), b[op].scores.nan_to_num(-1.0))


def test_ties_choose_the_lowest_thresholds():
    maps = torch.zeros(2, 3, 4, 4)
    target = torch.zeros(3, 4, 4, dtype=torch.bool)
    target[0, 0, 0] = True  # every cell predicts nothing -> the same score everywhere
    r = fusion.search_thresholds(maps, target, "and", metric="miou_fg_bg")
    assert r.index == (0, 0) and r.thresholds == (0.0, 0.0)
    assert bool((r.scores == r.score).all())


def test_single_map_search_is_the_single_model_search():
    maps, target = _tied_case(1, m=1)
    r = fusion.search_thresholds(maps, target, "or", metric="dice")
    per_threshold = []
    for t in fusion.threshold_grid().tolist():
        d = scores_from_counts(confusion(maps[0] > t, target))["dice"]
        per_threshold.append(-1.0 if math.isnan(d) else d)
    assert r.index == (per_threshold.index(max(per_threshold)),)
    for op in ("and", "<", ">"):
        assert fusion.search_thresholds(maps, target, op, metric="dice").index == r.index


def test_undefined_metric_raises_data_error():
    maps = torch.zeros(2, 3, 4, 4)
    target = torch.zeros(3, 4, 4, dtype=torch.bool)
    with pytest.raises(DataError, match="undefined"):
        fusion.search_thresholds(maps, target, "and", metric="dice")
    fusion.search_thresholds(maps, target, "and", metric="miou_fg_bg")  # defined: background IoU


def test_bad_inputs():
    maps, target = _tied_case(0)
    with pytest.raises(ValueError, match="ops"):
        fusion.grid_counts(maps, target, ops="xor")
    with pytest.raises(ValueError, match="metric"):
        fusion.search_ensembles(maps, target, metric="f2")
    with pytest.raises(ValueError, match="method"):
        fusion.search_ensembles(maps, target, method="fast")
    with pytest.raises(ShapeError, match="target"):
        fusion.grid_counts(maps, target[:, :-1])
    with pytest.raises(ShapeError, match="float"):
        fusion.grid_counts((maps > 0.5).int(), target)
    bad = maps.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ShapeError, match="NaN"):
        fusion.grid_counts(bad, target)
    with pytest.raises(ShapeError, match="maps"):
        fusion.grid_counts(maps[0], target)  # 3-D: one map must be given as (1, N, H, W)
    with pytest.raises(ShapeError, match="one per map"):
        fusion.fuse_maps(maps, (0.5,), "or")
    with pytest.raises(ShapeError):
        fusion.fuse([maps[0] > 0.5, (maps[1] > 0.5)[:, :-1]], "or")
    with pytest.raises(ValueError, match="grid"):
        fusion.grid_counts(maps, target, grid=[])


def test_bench_runs_and_agrees(capsys):
    rec = bench.run(models=2, images=6, size=16, repeats=1)
    assert rec["same_optimum"] and rec["same_grid"] and rec["same_counts"]
    assert rec["speedup"] > 0 and set(rec["optimum"]) == set(fusion.OPS)
    assert bench.main(["--images", "4", "--size", "12", "--repeats", "1", "--ops", "and,<"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["ops"] == ["and", "<"]


def test_pseudo_cams():
    maps, masks = bench.pseudo_cams(3, 40, 32, seed=1)
    assert maps.shape == (3, 40, 32, 32) and maps.dtype == torch.float32 and masks.dtype == torch.bool
    assert float(maps.min()) >= 0.0 and float(maps.max()) <= 1.0
    assert bool(masks.any()) and not bool(masks.flatten(1).any(1).all())  # some images without object
