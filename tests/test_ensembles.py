"""Tests of the threshold search over several maps (wsslib.evaluate.thresholds: combine ops, exact
vectorised grid counts) and of EnsembleCAM's protocol (wsslib.methods.ensembles)."""

from __future__ import annotations

import doctest
import itertools
import json
import math

import pytest
import torch

import wsslib.data.splitting
import wsslib.methods.ensembles
import wsslib.papers.ostrowski
from wsslib.apps.bench import thresholds as bench
from wsslib.data.base import TensorBatch
from wsslib.data.splitting import patient_groups, stratified_folds, stratified_group_folds
from wsslib.evaluate import thresholds as fusion
from wsslib.methods import ensembles
from wsslib.models.training import ClassifierSpec, ClassifierTrainConfig
from wsslib.core.errors import DataError, ShapeError
from wsslib.evaluate.metrics import confusion, scores_from_counts

METRICS = ["dice", "iou", "pooled_dice", "pooled_iou", "miou_fg_bg", "dsc_paper"]
GRID = fusion.threshold_grid()  # EnsembleCAM's 0, 0.1, ..., 1


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


@pytest.mark.parametrize("module", [wsslib.methods.ensembles, wsslib.data.splitting, wsslib.papers.ostrowski])
def test_doctests(module):
    r = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert r.failed == 0 and r.attempted > 0


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
def test_combine_matches_reference(op, m):
    g = torch.Generator().manual_seed(m)
    masks = torch.rand(m, 12, 4, 4, generator=g) < 0.4
    masks[:, 0] = False  # all tie at 0 positives
    masks[:, 1, 0, 0] = True  # all tie at 1 positive, different masks
    masks[0, 1, 0, 0] = False
    masks[0, 1, 3, 3] = True
    assert torch.equal(fusion.combine_masks(masks, op), _ref_fuse(masks, op))
    assert torch.equal(fusion.combine_masks(list(masks), op), _ref_fuse(masks, op))
    if m == 1:
        assert torch.equal(fusion.combine_masks(masks, op), masks[0])


def test_combine_ties_go_to_first_map():
    a = torch.tensor([[[1, 0, 0, 1]]], dtype=torch.bool)
    b = torch.tensor([[[0, 1, 1, 0]]], dtype=torch.bool)
    assert torch.equal(fusion.combine_masks([a, b], "<"), a) and torch.equal(fusion.combine_masks([a, b], ">"), a)
    assert torch.equal(fusion.combine_masks([b, a], "<"), b) and torch.equal(fusion.combine_masks([b, a], ">"), b)


def test_combine_maps_is_strict_in_the_maps_dtype():
    a = torch.tensor([[[0.3, 0.30001, 0.7]]])  # float32: 0.3 is NOT above the threshold 0.3
    b = torch.tensor([[[1.0, 1.0, 1.0]]])
    assert fusion.combine_maps([a, b], (0.3, 0.5), "and").tolist() == [[[False, True, True]]]
    a64 = torch.tensor([[[0.3, 0.30001, 0.7]]], dtype=torch.float64)
    assert fusion.combine_maps(torch.stack([a64, b.double()]), (0.3, 0.5), "and").tolist() == [[[False, True, True]]]
    # a float32 0.3 widened to float64 lies above the double 0.3: the dtype of the maps decides
    assert fusion.combine_maps(torch.stack([a.double(), b.double()]), (0.3, 0.5), "and").tolist() == [[[True, True, True]]]


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
    for op in fusion.COMBINE_OPS:
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
    brute = fusion.grid_counts_brute(maps, target, op, GRID)[op]
    for per_image in (True, False):
        fast = fusion.grid_counts(maps, target, op, GRID, per_image=per_image)[op]
        want = brute if per_image else brute.total(dim=-1)
        got = fast if per_image else fast.total(dim=-1)
        for name, x, y in zip(brute._fields, got, want):
            assert torch.equal(x, y), (op, per_image, name)
    for metric in METRICS:
        f = fusion.search_grid(maps, target, op, GRID, metric=metric)[op]
        b = fusion.search_grid(maps, target, op, GRID, metric=metric, method="brute")[op]
        assert f.index == b.index and torch.equal(f.scores.nan_to_num(-1.0), b.scores.nan_to_num(-1.0))
        assert 0.0 <= f.score <= 1.0


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("seed", range(3))
def test_search_equals_brute_force(metric, seed):
    maps, target = _tied_case(seed, m=2)
    fast = fusion.search_grid(maps, target, grid=GRID, metric=metric)
    brute = fusion.search_grid(maps, target, grid=GRID, metric=metric, method="brute")
    for op in fusion.COMBINE_OPS:
        f, b = fast[op], brute[op]
        assert f.index == b.index and f.thresholds == b.thresholds and f.score == b.score, op
        assert torch.equal(f.scores.isnan(), b.scores.isnan())
        assert torch.equal(f.scores.nan_to_num(-1.0), b.scores.nan_to_num(-1.0))
        # the grid value at the chosen cell is what wsslib.metrics gives for the fused masks
        s = scores_from_counts(confusion(fusion.combine_maps(maps, f.thresholds, op), target))
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
        f = fusion.search_grid(maps, target, metric=metric, grid=grid)
        b = fusion.search_from_counts(brute_counts, grid, metric)
        for op in fusion.COMBINE_OPS:
            assert f[op].index == b[op].index
            assert torch.equal(f[op].scores.nan_to_num(-1.0), b[op].scores.nan_to_num(-1.0))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_search_on_cuda_equals_cpu():
    maps, target = _tied_case(3, m=2)
    for metric in ("dice", "dsc_paper"):
        a = fusion.search_grid(maps.cuda(), target.cuda(), grid=GRID, metric=metric)
        b = fusion.search_grid(maps, target, grid=GRID, metric=metric)
        for op in fusion.COMBINE_OPS:
            assert a[op].index == b[op].index and torch.equal(a[op].scores.nan_to_num(-1), b[op].scores.nan_to_num(-1))


def test_ties_choose_the_lowest_thresholds():
    maps = torch.zeros(2, 3, 4, 4)
    target = torch.zeros(3, 4, 4, dtype=torch.bool)
    target[0, 0, 0] = True  # every cell predicts nothing -> the same score everywhere
    r = fusion.search_grid(maps, target, "and", GRID, metric="miou_fg_bg")["and"]
    assert r.index == (0, 0) and r.thresholds == (0.0, 0.0)
    assert bool((r.scores == r.score).all())


def test_single_map_search_is_the_single_model_search():
    maps, target = _tied_case(1, m=1)
    r = fusion.search_grid(maps, target, "or", GRID, metric="dice")["or"]
    per_threshold = []
    for t in fusion.threshold_grid().tolist():
        d = scores_from_counts(confusion(maps[0] > t, target))["dice"]
        per_threshold.append(-1.0 if math.isnan(d) else d)
    assert r.index == (per_threshold.index(max(per_threshold)),)
    for op in ("and", "<", ">"):
        assert fusion.search_grid(maps, target, op, GRID, metric="dice")[op].index == r.index


def test_undefined_metric_raises_data_error():
    maps = torch.zeros(2, 3, 4, 4)
    target = torch.zeros(3, 4, 4, dtype=torch.bool)
    with pytest.raises(DataError, match="undefined"):
        fusion.search_grid(maps, target, "and", GRID, metric="dice")["and"]
    fusion.search_grid(maps, target, "and", GRID, metric="miou_fg_bg")["and"]  # defined: background IoU


def test_bad_inputs():
    maps, target = _tied_case(0)
    with pytest.raises(ValueError, match="ops"):
        fusion.grid_counts(maps, target, ops="xor")
    with pytest.raises(ValueError, match="metric"):
        fusion.search_grid(maps, target, metric="f2")
    with pytest.raises(ValueError, match="method"):
        fusion.search_grid(maps, target, method="fast")
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
        fusion.combine_maps(maps, (0.5,), "or")
    with pytest.raises(ShapeError):
        fusion.combine_masks([maps[0] > 0.5, (maps[1] > 0.5)[:, :-1]], "or")
    with pytest.raises(ValueError, match="grid"):
        fusion.grid_counts(maps, target, grid=[])


def test_bench_runs_and_agrees(capsys):
    rec = bench.run(models=2, images=6, size=16, repeats=1)
    assert rec["same_optimum"] and rec["same_grid"] and rec["same_counts"]
    assert rec["speedup"] > 0 and set(rec["optimum"]) == set(fusion.COMBINE_OPS)
    assert bench.main(["--images", "4", "--size", "12", "--repeats", "1", "--ops", "and,<"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["ops"] == ["and", "<"]


def test_pseudo_cams():
    maps, masks = bench.pseudo_cams(3, 40, 32, seed=1)
    assert maps.shape == (3, 40, 32, 32) and maps.dtype == torch.float32 and masks.dtype == torch.bool
    assert float(maps.min()) >= 0.0 and float(maps.max()) <= 1.0
    assert bool(masks.any()) and not bool(masks.flatten(1).any(1).all())  # some images without object


# ------------------------------------------------------------------------------------------ folds
def test_stratified_folds_balanced_and_seeded():
    labels = torch.tensor([0] * 10 + [1] * 7)
    f = stratified_folds(labels, 3, seed=4)
    assert f.shape == (17,) and set(f.tolist()) == {0, 1, 2}
    for c in (0, 1):  # per class, fold sizes differ by at most one
        sizes = torch.bincount(f[labels == c], minlength=3)
        assert int(sizes.max() - sizes.min()) <= 1
    assert torch.equal(f, stratified_folds(labels, 3, seed=4))
    assert not torch.equal(f, stratified_folds(labels, 3, seed=5))
    state = torch.random.get_rng_state()
    stratified_folds(labels, 3, seed=1)
    assert torch.equal(state, torch.random.get_rng_state()), "the global RNG must not move"
    with pytest.raises(ValueError, match="k"):
        stratified_folds(labels, 1)
    with pytest.raises(ValueError, match="at least 20 images"):
        stratified_folds(labels, 20)


def test_stratified_group_folds_keep_patients_together():
    g = torch.Generator().manual_seed(0)
    groups = [f"p{i}" for i in range(12) for _ in range(int(torch.randint(2, 7, (1,), generator=g)))]
    labels = torch.randint(0, 2, (len(groups),), generator=g)
    f = stratified_group_folds(labels, groups, 3, seed=0)
    for p in set(groups):
        assert len({int(f[i]) for i, q in enumerate(groups) if q == p}) == 1, p
    sizes = torch.bincount(f, minlength=3)
    assert int(sizes.min()) > 0 and int(sizes.max()) <= 2 * int(sizes.min()) + 6
    pos = torch.bincount(f[labels == 1], minlength=3)
    assert int(pos.min()) > 0
    assert torch.equal(f, stratified_group_folds(labels, groups, 3, seed=0))
    with pytest.raises(ValueError, match="groups"):
        stratified_group_folds(labels[:3], ["a", "a", "b"], 3)
    with pytest.raises(ValueError, match="labels but"):
        stratified_group_folds(labels, groups[:-1], 3)


def test_patient_groups():
    assert patient_groups(["BraTS20_Training_001_z040", "BraTS20_Training_001_z041", "x_z1"]) == [
        "BraTS20_Training_001", "BraTS20_Training_001", "x"]
    assert patient_groups(["syn-s0-a-00001"]) is None and patient_groups(None) is None and patient_groups([]) is None


# ------------------------------------------------------------------------------------- protocol
def test_ensemble_on_split_equals_the_search_and_scores_the_test_part():
    maps, target = bench.pseudo_cams(2, 30, 16, seed=2)
    fit, test = slice(0, 20), slice(20, 30)
    r = ensembles.ensemble_on_split(maps[:, fit], target[fit], maps[:, test], target[test], metric="dice")
    assert [row["method"] for row in r.rows] == ensembles.method_order()
    rows = {row["method"]: row for row in r.rows}
    for op in ensembles.OPS:
        want = fusion.search_grid(maps[:, fit], target[fit], op, GRID, "dice")[op]
        assert r.searches[op].thresholds == want.thresholds and r.searches[op].score == want.score
        assert torch.equal(r.masks[op], fusion.combine_maps(maps[:, test], want.thresholds, op))
        assert rows[op]["train_score"] == want.score and rows[op]["thresholds"] == list(want.thresholds)
        assert rows[op]["dice"] == pytest.approx(ensembles.paper_scores(r.masks[op], target[test])["dice"])
    for j, name in enumerate(("model A", "model B")):
        single = fusion.select_threshold(maps[j, fit], target[fit], grid=GRID, metric="dice")
        assert r.searches[name].thresholds == (single.threshold,) and r.searches[name].score == single.score
    # exhaustive search: 'or' with the other map at 1.0 (empty) is each single model
    assert r.searches["or"].score >= max(r.searches["model A"].score, r.searches["model B"].score)
    assert rows["Empty"]["dice"] == 0.0 and rows["Empty"]["train_score"] is None
    assert 0.25 < rows["Empty"]["miou_fg_bg"] < 0.5
    no_base = ensembles.ensemble_on_split(maps[:, fit], target[fit], maps[:, test], target[test],
                                          ops=("and",), names=["a", "b"], with_baselines=False)
    assert [row["method"] for row in no_base.rows] == ["a", "b", "and"]
    with pytest.raises(ValueError, match="names"):
        ensembles.ensemble_on_split(maps[:, fit], target[fit], maps[:, test], target[test], names=["a"])


def _tiny_config(**kw) -> ensembles.EnsembleConfig:
    train = ClassifierTrainConfig(lr=3e-3, batch_size=16, epochs=1, patience=None, one_cycle=True)
    specs = (ClassifierSpec("smallcnn", train=train, dropout=0.2, options={"width": 4}, label="cnn4"),
             ClassifierSpec("smallcnn", train=train, dropout=0.2, options={"width": 6}, label="cnn6"))
    return ensembles.EnsembleConfig(models=specs, grid_step=0.25, n_folds=2, **kw)


def _check_cv(cv: ensembles.EnsembleCV, data: TensorBatch, n_folds: int) -> None:
    order = ensembles.method_order()
    assert [r["method"] for r in cv.summary] == order
    assert len(cv.folds) == len(order) * n_folds and len(cv.classification) == 2 * n_folds
    assert cv.fold_of.shape == (len(data),) and set(cv.fold_of.tolist()) == set(range(n_folds))
    for r in cv.summary:
        assert len(r["thresholds_per_fold"]) == n_folds
        for key in ("dsc_paper", "miou_fg_bg"):
            assert 0.0 <= r[key] <= 1.0 and r[key + "_sd"] >= 0.0
    for r in cv.folds:  # thresholds from the grid
        assert all(any(math.isclose(t, g) for g in cv.grid.tolist()) for t in r["thresholds"])
    g = len(cv.grid)
    assert all(tuple(s.shape) == (n_folds, g, g) for s in cv.grid_scores.values())
    assert len(cv.grid_records()) == 4 * g * g and all(len(c) == n_folds for c in cv.chosen.values())


def test_cross_validate_ensembles_on_tiny_synthetic_data():
    from wsslib.data import load_splits

    splits = load_splits("synthetic", ("train",), size=24, n=60, seed=0)
    data = splits["train"]
    state = torch.random.get_rng_state()
    cv = ensembles.cross_validate_ensembles(_tiny_config(), data, seed=0, device="cpu", progress=False)
    assert torch.equal(state, torch.random.get_rng_state()), "the protocol must not move the global RNG"
    _check_cv(cv, data, 2)
    assert not cv.grouped and cv.examples["images"].shape[1:] == (3, 24, 24)
    assert cv.examples["mask_and"].shape == cv.examples["truth"].shape
    again = ensembles.cross_validate_ensembles(_tiny_config(), data, seed=0, device="cpu", progress=False)
    assert [r["dsc_paper"] for r in again.folds] == [r["dsc_paper"] for r in cv.folds]  # seeded


def test_cross_validate_ensembles_on_decathlon_prostate_layout_groups_patients(tmp_path, monkeypatch):
    """The real-set case of the old notebook test, at the protocol level: the Decathlon prostate
    layout (data_fixtures.py), pooled, folded by patient, cross-validated."""
    pytest.importorskip("nibabel")
    import data_fixtures as fx

    from wsslib.data import load_splits

    root = tmp_path / "data"
    fx.build_set("decathlon-prostate", root / "decathlon-prostate")
    monkeypatch.setenv("WSSLIB_CACHE", str(tmp_path / "cache"))
    data = load_splits("decathlon-prostate", ("all",), root=root / "decathlon-prostate", size=16)["all"]
    groups = patient_groups(data.ids)
    assert groups is not None and len(set(groups)) == fx.DECATHLON_CASES
    cv = ensembles.cross_validate_ensembles(_tiny_config(), data, seed=0, device="cpu", progress=False)
    assert cv.grouped
    _check_cv(cv, data, 2)
    for p in set(groups):  # no patient in two folds
        assert len({int(cv.fold_of[i]) for i, q in enumerate(groups) if q == p}) == 1


def test_missing_real_set_gives_a_clear_message(tmp_path):
    from wsslib.core.errors import DatasetNotFoundError
    from wsslib.data import load_splits

    missing = tmp_path / "data" / "brats2020"
    with pytest.raises(DatasetNotFoundError) as e:
        load_splits("brats2020", ("all",), root=missing, size=16)
    msg = str(e.value)
    assert str(missing) in msg and "data_download.sh" in msg and "brats2020" in msg


def test_config_checks():
    with pytest.raises(ValueError, match="two classifiers"):
        ensembles.EnsembleConfig(models=(ClassifierSpec("smallcnn"),))
    with pytest.raises(ValueError, match="step"):
        _tiny_config().__class__(models=_tiny_config().models, grid_step=0.3)
    cfg = wsslib.papers.ostrowski.ensemble_config(wsslib.papers.ostrowski.PRESETS["cpu"])
    assert len(cfg.grid) == 11 and cfg.select_metric == "dsc_paper" and cfg.ops == ensembles.OPS
