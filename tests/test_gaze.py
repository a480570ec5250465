"""Tests of wsslib.methods.gaze: heatmaps (separable vs the paper's canvas way), CRF, pseudo-masks,
and the protocol (gaze_supervision, run_gaze_experiment) on tiny data."""

from __future__ import annotations

import dataclasses
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from wsslib.data import generate_synthetic, get_dataset
from wsslib.core.errors import DataError, ShapeError
from wsslib.methods.gaze import (
    KVASIR_LEVELS,
    NCI_ISBI_LEVELS,
    NCI_ISBI_SIGMA_FRAC,
    PAPER_SIGMA_FRAC,
    GazeConfig,
    PseudoMaskSet,
    crf_params_for,
    crf_refine,
    crf_sxy_for,
    dataset_settings,
    default_levels,
    default_workers,
    gaze_heatmaps,
    gaze_heatmaps_batched,
    hierarchical_masks,
    map_scores,
    pseudo_masks,
    reference_heatmap,
    run_gaze_experiment,
    score_gaze_models,
)
from wsslib.methods.gaze import gaze_supervision

#: reference_heatmap's settings that the infinite-canvas fast path approximates (its earlier reference)
INFINITE_REF = {"mode": "constant", "snap": "floor", "interpolation": "bilinear", "float16": False}


@pytest.fixture(scope="module")
def synthetic_gaze():
    data = generate_synthetic(4, size=64, seed=3)
    return data


# ---------------------------------------------------------------------------- heatmaps


def test_separable_matches_reference_on_synthetic(synthetic_gaze):
    """The fast path (paper canvas, default) is the published function (reference defaults);
    the infinite-canvas variant equals its own reference."""
    sizes = [(64, 64), (48, 80), (90, 60)]  # square and both aspect ratios
    for fix, size in zip(synthetic_gaze["gaze"][1:4], sizes):
        sep = gaze_heatmaps([fix], [size])[0]
        ref = reference_heatmap(fix, size)
        assert sep.shape == ref.shape == size
        assert float((sep - ref).abs().max()) < 1e-3
        inf = gaze_heatmaps([fix], [size], canvas="infinite")[0]
        assert float((inf - reference_heatmap(fix, size, **INFINITE_REF)).abs().max()) < 1e-2


def test_separable_matches_reference_on_real_kvasir(shared_data):
    ds = get_dataset("kvasir-seg", root=shared_data / "kvasir-seg", split="test")
    for i in (0, 1):
        s = ds[i]
        assert s.gaze is not None and s.gaze.shape[1] == 3
        sep = gaze_heatmaps([s.gaze], [s.image.shape[:2]])[0]
        ref = reference_heatmap(s.gaze, s.image.shape[:2])
        assert float((sep - ref).abs().max()) < 1e-3  # measured: ~3e-4 (float16 rounding included)
        inf = gaze_heatmaps([s.gaze], [s.image.shape[:2]], canvas="infinite")[0]
        assert float((inf - reference_heatmap(s.gaze, s.image.shape[:2], **INFINITE_REF)).abs().max()) < 1e-2


def test_min_max_range_and_batched_equals_list(synthetic_gaze):
    fix = synthetic_gaze["gaze"]
    batched = gaze_heatmaps_batched(fix, (40, 56))
    assert batched.shape == (4, 40, 56) and batched.dtype == torch.float32
    flat = batched.flatten(1)
    assert torch.all(flat.amin(1) == 0.0) and torch.all(flat.amax(1) == 1.0)
    listed = gaze_heatmaps(fix, (40, 56))
    for a, b in zip(batched, listed):
        torch.testing.assert_close(a, b)


def test_zero_fixations_give_zero_map_without_nan():
    maps = gaze_heatmaps([np.zeros((0, 3)), np.array([[0.5, 0.5, 100.0]]), np.array([[0.2, 0.2, 0.0]])], (16, 24))
    assert torch.all(maps[0] == 0) and torch.all(maps[2] == 0)  # no fixations / zero duration
    assert float(maps[1].max()) == 1.0
    assert not any(torch.isnan(m).any() for m in maps)
    assert torch.all(gaze_heatmaps_batched([np.zeros((0, 3))], (5, 7)) == 0)
    assert torch.all(reference_heatmap(np.zeros((0, 3)), (5, 7)) == 0)


@pytest.mark.parametrize("canvas", ["infinite", "paper"])
def test_peak_at_the_fixation_x_is_column_y_is_row(canvas):
    h, w = 40, 80
    row, col = 30, 20
    fix = np.array([[(col + 0.5) / w, (row + 0.5) / h, 250.0]])  # at a pixel centre
    m = gaze_heatmaps([fix], (h, w), canvas=canvas)[0]
    assert divmod(int(m.argmax()), w) == (row, col)
    # sigma is a fraction of each side: same relative fall-off along rows and columns (the paper's
    # canvas snaps the fixation to one of its 768 pixels: a little asymmetry)
    m = gaze_heatmaps([np.array([[50.5 / 100, 25.5 / 50, 1.0]])], (50, 100), sigma_frac=0.1, canvas=canvas)[0]
    assert abs(float(m[25, 50 + 10]) - float(m[25 + 5, 50])) < (1e-3 if canvas == "infinite" else 5e-3)


@pytest.mark.parametrize("canvas", ["infinite", "paper"])
def test_duration_weighting(canvas):
    """Each fixation weighs its duration (the paper's notebook adds the duration, not 1)."""
    fix = np.array([[0.1, 0.1, 100.0], [0.9, 0.9, 300.0]])  # far apart: Gaussians barely overlap
    h = w = 100
    m = gaze_heatmaps([fix], (h, w), sigma_frac=0.05, canvas=canvas)[0]
    near_a, near_b = float(m[5:16, 5:16].max()), float(m[85:96, 85:96].max())  # the paper's canvas snaps
    assert near_b == pytest.approx(1.0, abs=1e-3)
    assert near_a == pytest.approx(1.0 / 3.0, abs=1e-2)
    m = gaze_heatmaps([fix], (h, w), sigma_frac=0.05, use_duration=False, canvas=canvas)[0]
    assert float(m[5:16, 5:16].max()) == pytest.approx(float(m[85:96, 85:96].max()), abs=1e-3)


def test_bad_fixations_raise():
    with pytest.raises(ShapeError):
        gaze_heatmaps([np.zeros((3, 2))], (8, 8))
    with pytest.raises(ShapeError):
        gaze_heatmaps([None], (8, 8))
    with pytest.raises(DataError):
        gaze_heatmaps([np.array([[0.5, 0.5, -1.0]])], (8, 8))
    with pytest.raises(DataError):
        gaze_heatmaps([np.array([[np.nan, 0.5, 1.0]])], (8, 8))
    with pytest.raises(ShapeError):
        gaze_heatmaps([np.zeros((1, 3))], [(8, 8), (4, 4)])


def _renormalised(m: torch.Tensor) -> torch.Tensor:
    """Min-max of a map over its own pixels (the fast path normalises the output, the published
    function its canvas before the resize)."""
    return (m - m.min()) / (m.max() - m.min())


def _published_draw_heatmap(fix: np.ndarray, size: tuple[int, int], sigma: float = 70.0) -> np.ndarray:
    """GazeMedSeg's released ``draw_heatmap`` (float32 canvas, duration at round(c * 768) - 1,
    scipy's gaussian_filter with its defaults, min-max, cv2 bicubic), before its float16 cast."""
    cv2 = pytest.importorskip("cv2")
    from scipy import ndimage

    canvas = np.zeros((768, 768), dtype=np.float32)
    for p in np.asarray(fix, dtype=np.float64):
        canvas[round(p[1] * 768) - 1, round(p[0] * 768) - 1] += p[2]
    canvas = ndimage.gaussian_filter(canvas, sigma)
    canvas = (canvas - np.min(canvas)) / ((np.max(canvas) - np.min(canvas)) * 1.0)
    return cv2.resize(canvas, dsize=(size[1], size[0]), interpolation=cv2.INTER_CUBIC)


def test_reference_heatmap_is_the_published_function(synthetic_gaze):
    """reference_heatmap's defaults reproduce draw_heatmap (cv2's bicubic = torch's to ~1e-6),
    including a fixation at x = 0 (pixel -1: numpy wraps it to the last column)."""
    fix = np.asarray(synthetic_gaze["gaze"][0], dtype=np.float64).copy()
    fix[0, 0] = 0.0
    for size in [(90, 120), (500, 333)]:
        want = _published_draw_heatmap(fix, size)
        got = reference_heatmap(fix, size, float16=False)
        assert float((got - torch.from_numpy(want)).abs().max()) < 1e-5
        half = reference_heatmap(fix, size)  # the published function's float16 result
        assert torch.equal(half, half.half().float())
        assert float((half - got).abs().max()) <= 2.5e-4
    nci = _published_draw_heatmap(fix, (60, 80), sigma=50.0)
    got = reference_heatmap(fix, (60, 80), sigma=50.0, float16=False)
    assert float((got - torch.from_numpy(nci)).abs().max()) < 1e-5


@pytest.mark.parametrize(("side", "sigma_px", "size"), [(64, 6.0, (40, 50)), (64, 20.0, (64, 64)), (32, 9.0, (50, 70))])
def test_paper_fast_path_is_scipy_reflect_exactly(side, sigma_px, size):
    """On small canvases (fast): the fast path's map is scipy's reflect-mode filter resized
    bicubically, to float32 precision, up to the min-max (canvas there, output here); kernels
    shorter and longer (radius 80 > 64) than the canvas, fixations on every border."""
    rng = np.random.default_rng(side + int(sigma_px))
    fix = np.column_stack([rng.random(9), rng.random(9), rng.integers(50, 500, 9)]).astype(np.float64)
    fix[:4, :2] = [[0.0, 1.0], [1.0, 0.0], [0.5 / side, 0.5], [0.5, (side - 0.5) / side]]
    ref = _renormalised(reference_heatmap(fix, size, canvas=side, sigma=sigma_px, float16=False))
    fast = gaze_heatmaps_batched([fix], size, sigma_frac=sigma_px / side, canvas_side=side)[0]
    assert float((fast - ref).abs().max()) < 1e-5


def test_reflect_at_a_border_fixation():
    """scipy's reflect mirrors a fixation at the border back into the image: on the paper's canvas
    a fixation at the left edge weighs about twice one in the middle (same duration); the
    infinite canvas gives both the same peak. x = 0 lands on pixel -1, i.e. the RIGHT edge."""
    h, w = 48, 64
    fix = np.array([[1.0 / 768, 0.5, 100.0], [0.5, 0.5, 100.0]])  # canvas pixel 0 and the middle
    paper = gaze_heatmaps([fix], (h, w))[0]
    inf = gaze_heatmaps([fix], (h, w), canvas="infinite")[0]
    assert float((paper - _renormalised(reference_heatmap(fix, (h, w), float16=False))).abs().max()) < 1e-5
    # min-max on the 48 x 64 output rather than the 768 px canvas: the peak's samples lie up to 8
    # canvas px from it (12-16 canvas px per output px); ~3e-4 at Kvasir-SEG's ~1.5
    assert float((paper - reference_heatmap(fix, (h, w))).abs().max()) < 1e-2
    row = h // 2
    assert float(paper[row, 0]) > 0.99 and float(paper[row, w // 2]) < 0.6
    assert float(inf[row, :3].max()) > 0.95 and float(inf[row, w // 2 - 2: w // 2 + 2].max()) > 0.95
    # round(0 * 768) - 1 = -1: numpy's last pixel, as the published code
    wrapped = gaze_heatmaps([np.array([[0.0, 0.5, 100.0]])], (h, w))[0]
    assert int(wrapped[row].argmax()) == w - 1
    ref = reference_heatmap(np.array([[0.0, 0.5, 100.0]]), (h, w), float16=False)
    assert float((wrapped - _renormalised(ref)).abs().max()) < 1e-5
    assert int(gaze_heatmaps([np.array([[0.0, 0.5, 100.0]])], (h, w), canvas="infinite")[0][row].argmax()) == 0


def test_paper_canvas_rejects_fixations_outside_it():
    far = np.array([[1.01, 0.5, 100.0]])  # round(1.01 * 768) - 1 = 775: the published code raises IndexError
    with pytest.raises(DataError, match="canvas"):
        gaze_heatmaps([far], (16, 16))
    with pytest.raises(DataError, match="canvas"):
        reference_heatmap(far, (16, 16))
    assert float(gaze_heatmaps([far], (16, 16), canvas="infinite")[0].max()) == 1.0
    with pytest.raises(ValueError, match="canvas"):
        gaze_heatmaps([far], (16, 16), canvas="square")


def test_heatmap_doctests():
    import doctest

    from wsslib.methods.gaze import crf, heatmaps, pseudomasks

    for mod in (heatmaps, crf, pseudomasks):
        r = doctest.testmod(mod)
        assert r.failed == 0 and r.attempted > 0, mod.__name__


# ---------------------------------------------------------------------------- CRF


def test_crf_shape_range_and_colour_pull():
    img = np.zeros((32, 32, 3), np.uint8)
    img[:, :16] = (200, 40, 40)  # red region: columns 0..15
    img[:, 16:] = (40, 160, 60)
    heat = np.full((32, 32), 0.3, np.float32)
    heat[:, :12] = 0.7  # the gaze covers most, not all, of the red region
    out = crf_refine(img, heat)
    assert out.shape == (32, 32) and out.dtype == torch.float32
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert float(out[:, 12:16].mean()) > 0.3 + 0.03  # red pixels the gaze missed gain probability
    assert float(out[:, 16:].mean()) < 0.3 - 0.05  # green pixels lose it
    assert float(out[:, :12].mean()) > 0.7


def test_crf_rejects_bad_input():
    with pytest.raises(ShapeError):
        crf_refine(np.zeros((8, 8, 3), np.float32), np.zeros((8, 8)))
    with pytest.raises(ShapeError):
        crf_refine(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 9)))


# ---------------------------------------------------------------------------- pseudo-masks


def test_hierarchical_masks_are_nested():
    maps = torch.rand(3, 10, 12, generator=torch.Generator().manual_seed(0))
    for m in (2, 3, 4, 5):
        levels = default_levels(m)
        assert len(levels) == m and list(levels) == sorted(levels, reverse=True)
        masks = hierarchical_masks(maps, levels)
        assert masks.shape == (3, m, 10, 12) and masks.dtype == torch.bool
        for lo in range(1, m):  # lower threshold contains every higher one's mask
            assert torch.all(masks[:, lo] | ~masks[:, lo - 1])
    assert default_levels(2) == (0.5, 0.3)
    with pytest.raises(ShapeError):
        hierarchical_masks(torch.rand(10, 12))


def test_pseudo_masks_on_synthetic():
    ds = get_dataset("synthetic", split="valid", n=40, size=48)
    pm = pseudo_masks(ds, size=32, levels=(0.5, 0.3), crf=True, score_thresholds=(0.3, 0.5), progress=False)
    assert isinstance(pm, PseudoMaskSet)
    n = len(ds)
    assert len(pm) == n and pm.images.shape == (n, 3, 32, 32)
    assert pm.heatmaps.shape == pm.refined.shape == (n, 32, 32)
    assert pm.masks.shape == (n, 2, 32, 32) and pm.masks.dtype == torch.bool
    assert torch.all(pm.masks[:, 1] | ~pm.masks[:, 0])
    assert torch.equal(pm.masks, hierarchical_masks(pm.refined, (0.5, 0.3)))
    assert float(pm.refined.min()) >= 0 and float(pm.refined.max()) <= 1
    assert set(pm.scores) == {"heatmap", "refined"} and set(pm.scores["refined"]) == {0.3, 0.5}
    assert 0.0 <= pm.scores["heatmap"][0.5]["dice"] <= 1.0
    # CRF in worker processes: the same maps
    pm3 = pseudo_masks(list(ds)[:4], size=32, crf=True, workers=2, progress=False)
    torch.testing.assert_close(pm3.refined, pm.refined[:4])
    # no CRF: refined maps are the heatmaps
    pm2 = pseudo_masks(list(ds)[:3], size=32, crf=False, progress=False)
    torch.testing.assert_close(pm2.refined, pm2.heatmaps)


def test_crf_max_side_matches_native(shared_data):
    """The CRF on a copy downscaled to 256 px (sxy scaled) gives the native-resolution masks."""
    ds = get_dataset("kvasir-seg", root=shared_data / "kvasir-seg", split="valid")
    samples = [ds[i] for i in range(8)]
    maps = gaze_heatmaps([s.gaze for s in samples], [s.image.shape[:2] for s in samples])
    native = [crf_refine(s.image, hm) for s, hm in zip(samples, maps)]
    small = [crf_refine(s.image, hm, max_side=256) for s, hm in zip(samples, maps)]
    assert all(a.shape == b.shape == s.mask.shape for a, b, s in zip(native, small, samples))
    truth = [s.mask for s in samples]
    d_native, d_small = map_scores(native, truth, (0.5,))[0.5]["dice"], map_scores(small, truth, (0.5,))[0.5]["dice"]
    assert abs(d_native - d_small) < 0.01
    agree = np.mean([float(((a > 0.5) == (b > 0.5)).float().mean()) for a, b in zip(native, small)])
    assert agree > 0.98


def test_crf_max_side_leaves_small_images_alone():
    img = np.random.default_rng(0).integers(0, 255, (40, 30, 3), dtype=np.uint8)
    heat = np.random.default_rng(1).random((40, 30)).astype(np.float32)
    torch.testing.assert_close(crf_refine(img, heat, max_side=64), crf_refine(img, heat))
    assert crf_refine(img, heat, max_side=20).shape == (40, 30)


def test_pseudo_mask_set_select():
    ds = get_dataset("synthetic", split="valid", n=40, size=32)
    pm = pseudo_masks(ds, size=24, crf=False, progress=False)
    assert len(pm.fixations) == len(pm) and pm.sizes == [(32, 32)] * len(pm)
    sub = pm.select([3, 1])
    assert sub.ids == [pm.ids[3], pm.ids[1]] and sub.levels == pm.levels
    torch.testing.assert_close(sub.refined, pm.refined[[3, 1]])
    assert torch.equal(sub.masks, pm.masks[[3, 1]]) and np.array_equal(sub.fixations[0], pm.fixations[3])
    mask = torch.zeros(len(pm), dtype=torch.bool)
    mask[2] = True
    assert pm.select(mask).ids == [pm.ids[2]] and len(pm.select(slice(0, 5))) == 5
    with pytest.raises(IndexError):
        pm.select([len(pm)])


def test_map_scores_perfect_and_empty():
    maps = [torch.tensor([[0.9, 0.1], [0.8, 0.2]]), torch.zeros(3, 3)]
    truth = [np.array([[True, False], [True, False]]), np.zeros((3, 3), bool)]
    s = map_scores(maps, truth, (0.5,))
    assert s[0.5]["dice"] == 1.0 and s[0.5]["n_excluded"] == 1


def test_real_kvasir_heatmap_pseudo_mask_quality(shared_data):
    """Heatmaps at 0.5 on the first 40 test images (the full 1000 with CRF: see the notebook)."""
    ds = get_dataset("kvasir-seg", root=shared_data / "kvasir-seg", split="test")
    samples = [ds[i] for i in range(40)]
    maps = gaze_heatmaps([s.gaze for s in samples], [s.image.shape[:2] for s in samples])
    dice = map_scores(maps, [s.mask for s in samples], (0.5,))[0.5]["dice"]
    assert dice > 0.6


def test_real_kvasir_crf_pseudo_masks_all_1000_images(shared_data):
    """Acceptance (issue 4): heatmap + CRF pseudo-masks at 0.5 reach Dice >= 0.74 over all 1000
    Kvasir-SEG images (per-image Dice at native resolution, averaged).

    The CRF runs on copies whose longest side is 256 px (``max_side``; sxy scaled), which
    ``test_crf_max_side_matches_native`` shows changes nothing: at native resolution the same
    number is 0.762 (measured once, ~7 CPU minutes); this takes ~1.5 min with 2 workers. The paper's code: 0.751.
    """
    ds = get_dataset("kvasir-seg", root=shared_data / "kvasir-seg", split="all")
    assert len(ds) == 1000
    pm = pseudo_masks(ds, size=32, levels=(0.5, 0.3), crf=True, crf_params={"max_side": 256},
                      score_thresholds=(0.5,), progress=False, workers=2)
    crf_dice = pm.scores["refined"][0.5]
    assert crf_dice["n_images"] == 1000 and crf_dice["n_excluded"] == 0
    assert crf_dice["dice"] >= 0.74
    assert pm.scores["heatmap"][0.5]["dice"] >= 0.7


def test_bench_gaze_record(capsys):
    from wsslib.apps.bench.gaze import main, run

    rec = run(n=3, reference_subset=2)
    assert set(rec) >= {"images", "reference_s", "reference_images_timed", "separable_s", "speedup", "max_abs_diff",
                        "mean_max_abs_diff", "infinite_s", "infinite_max_abs_diff", "infinite_mean_max_abs_diff",
                        "goal_max_abs_diff", "goal_speedup", "meets_goals", "dataset"}
    assert rec["images"] == 3 and rec["reference_images_timed"] == 2
    assert rec["max_abs_diff"] < 1e-2 and rec["speedup"] > 0 and rec["mean_max_abs_diff"] <= rec["max_abs_diff"]
    assert torch.get_num_threads() >= 1
    main(["--n", "2", "--reference-subset", "1"])
    line = capsys.readouterr().out.strip().splitlines()
    assert len(line) == 1 and line[0].startswith("{")


def test_bench_crf_record(capsys):
    """``wsslib bench crf`` on a few small images: one process vs 2 workers, identical masks."""
    import json

    from wsslib.apps.bench.crf import main, run

    rec = run(n=8, workers=2, max_side=48, size=16)
    assert set(rec) >= {"images", "workers", "one_process_s", "all_cores_s", "speedup", "identical", "crf_dice",
                        "goal_speedup", "meets_goal", "dataset", "max_side"}
    assert rec["images"] == 8 and rec["workers"] == 2 and rec["identical"] is True
    assert rec["goal_speedup"] == 1.8 and rec["speedup"] > 0 and 0.0 <= rec["crf_dice"] <= 1.0
    assert main(["--n", "2", "--max-side", "32", "--size", "8", "--workers", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["identical"] is True


# ---------------------------------------------------------------------------- min-max, sxy scaling


def test_heatmap_min_max_is_the_exact_formula(synthetic_gaze):
    """gaze heatmaps use core.maps.minmax_per_image(eps=0): exactly (m - min) / (max - min)."""
    fix = torch.as_tensor(np.asarray(synthetic_gaze["gaze"][0]), dtype=torch.float64)
    h, w, sig = 24, 30, 70 / 768
    rows, cols = (torch.arange(h, dtype=torch.float64) + 0.5) / h, (torch.arange(w, dtype=torch.float64) + 0.5) / w
    gy = torch.exp(-((rows[:, None] - fix[None, :, 1]) ** 2) / (2 * sig**2))
    gx = torch.exp(-((cols[:, None] - fix[None, :, 0]) ** 2) / (2 * sig**2))
    raw = (gy * fix[None, :, 2]) @ gx.T
    want = (raw - raw.min()) / (raw.max() - raw.min())
    got = gaze_heatmaps_batched([fix], (h, w), canvas="infinite")[0]
    torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=0)
    assert float(got.max()) == 1.0 and float(got.min()) == 0.0


def test_crf_sxy_scales_with_the_image_side():
    """The default (sxy_reference_side=512): each image's CRF gets sxy * max(H, W) / 512
    (crf_params_for, GazeConfig's rule); None keeps sxy in px of each image."""
    ds = list(get_dataset("synthetic", split="valid", n=24, size=48))[:3]
    scaled = pseudo_masks(ds, size=32, crf=True, crf_params={"sxy": 80.0}, progress=False)
    explicit = pseudo_masks(ds, size=32, crf=True, crf_params={"sxy": 80.0}, sxy_reference_side=512, progress=False)
    direct = pseudo_masks(ds, size=32, crf=True, crf_params={"sxy": 80.0 * 48 / 512}, sxy_reference_side=None,
                          progress=False)
    assert torch.equal(scaled.refined, explicit.refined) and torch.equal(scaled.refined, direct.refined)
    by_hand = crf_refine(ds[0].image, gaze_heatmaps([ds[0].gaze], (48, 48))[0], **crf_params_for((48, 48)))
    torch.testing.assert_close(F.interpolate(by_hand[None, None], size=(32, 32), mode="bilinear",
                                             align_corners=False)[0, 0].clamp(0, 1), scaled.refined[0])
    kept = pseudo_masks(ds, size=32, crf=False, keep_native_truth={str(ds[1].id)}, progress=False)
    assert kept.native_truth[0] is None and kept.native_truth[1].shape == (48, 48)
    assert np.array_equal(kept.native_truth[1], ds[1].mask)


def test_crf_params_for():
    """One rule for the CRF's position scale: 80 px per 512 px of the image's longer side."""
    assert crf_sxy_for((435, 512)) == 80.0 and crf_sxy_for((512, 300, 3)) == 80.0
    assert crf_sxy_for((128, 96)) == 20.0 and crf_sxy_for((128, 96), reference_side=None) == 80.0
    assert crf_sxy_for((100, 50), sxy=40.0, reference_side=200) == 20.0
    p = crf_params_for((256, 256), {"max_side": 128, "iters": 5})
    assert p == {"sxy": 40.0, "srgb": 13.0, "compat": 1.0, "iters": 5, "max_side": 128}
    assert crf_params_for((1024, 768))["sxy"] == 160.0
    with pytest.raises(ValueError, match="unknown CRF"):
        crf_params_for((8, 8), {"sxyz": 3})
    with pytest.raises(ValueError, match="unknown CRF"):
        pseudo_masks([], size=8, crf_params={"bogus": 1}, progress=False)


class _CountingPool(ProcessPoolExecutor):
    started = 0

    def __init__(self, *args, **kwargs):
        type(self).started += 1
        super().__init__(*args, **kwargs)


def test_pseudo_masks_workers_give_identical_masks(monkeypatch):
    """CRF in worker processes (spawned, pipelined chunks): the same bits as one process; no pool
    for inputs below min_pool_images; torch's thread count restored."""
    from wsslib.methods.gaze import pseudomasks

    monkeypatch.setattr(pseudomasks, "ProcessPoolExecutor", _CountingPool)
    ds = list(get_dataset("synthetic", split="valid", n=80, size=40, seed=2))[:11]
    kw = {"size": 24, "crf": True, "score_thresholds": (0.3, 0.5), "progress": False}
    threads = torch.get_num_threads()
    one = pseudo_masks(ds, workers=1, **kw)
    assert _CountingPool.started == 0
    many = pseudo_masks(ds, workers=2, chunk=4, min_pool_images=2, **kw)  # 3 chunks, the last of 3 images
    assert _CountingPool.started == 1 and torch.get_num_threads() == threads
    assert torch.equal(one.refined, many.refined) and torch.equal(one.masks, many.masks)
    assert torch.equal(one.heatmaps, many.heatmaps) and one.scores == many.scores and one.ids == many.ids
    small = pseudo_masks(ds[:3], workers=None, **kw)  # every core, but 3 < MIN_POOL_IMAGES: no pool
    assert _CountingPool.started == 1 and torch.equal(small.refined, one.refined[:3])
    assert default_workers() >= 1
    with pytest.raises(ValueError, match="workers"):
        pseudo_masks(ds[:2], workers=0, **kw)


def test_dataset_settings_nci_isbi():
    """The paper's per-data-set settings: NCI-ISBI sigma 50 / 768 and levels (0.2, 0.4)."""
    s = dataset_settings("nci-isbi")
    assert s["sigma_frac"] == pytest.approx(50 / 768) and s["levels"] == (0.2, 0.4) == NCI_ISBI_LEVELS
    assert dataset_settings("kvasir-seg") == {"sigma_frac": PAPER_SIGMA_FRAC, "levels": KVASIR_LEVELS}
    with pytest.raises(ValueError, match="no gaze settings"):
        dataset_settings("imagenet")
    cfg = GazeConfig.for_dataset("nci-isbi", image_size=32)
    assert cfg.sigma == pytest.approx(50.0) and cfg.levels == (0.2, 0.4) and cfg.image_size == 32
    assert cfg.sigma_frac == pytest.approx(NCI_ISBI_SIGMA_FRAC)
    assert GazeConfig.for_dataset("kvasir-seg").sigma == pytest.approx(70.0)
    assert GazeConfig().workers is None and GazeConfig().heatmap_canvas == "paper"
    with pytest.raises(ValueError, match="heatmap_canvas"):
        GazeConfig(heatmap_canvas="round")
    fix = np.array([[0.3, 0.6, 200.0], [0.7, 0.2, 100.0]])
    m = gaze_heatmaps([fix], (300, 400), sigma_frac=s["sigma_frac"])[0]  # ~2 canvas px per pixel
    assert float((m - reference_heatmap(fix, (300, 400), sigma=50.0)).abs().max()) < 1e-3


# ---------------------------------------------------------------------------- the protocol


def _with_lesion(ds):
    return (s for s, lab in zip(ds, ds.labels()) if lab == 1)


TINY = GazeConfig(image_size=24, iterations=2, batch_size=4, widths=(8, 16), feat_ch=8, eval_every=1,
                  sweep=(0.3, 0.5), crf_max_side=None)


@pytest.fixture(scope="module")
def tiny_experiment():
    splits = {s: get_dataset("synthetic", split=s, n=48, size=24, seed=1) for s in ("train", "valid", "test")}
    data = gaze_supervision({s: _with_lesion(ds) for s, ds in splits.items()}, TINY)
    return data, run_gaze_experiment(TINY, data, seed=0, device="cpu")


def test_gaze_supervision_splits_and_native_truth(tiny_experiment):
    data, _ = tiny_experiment
    assert set(data) == {"train", "valid", "test"} and all(len(d) > 0 for d in data.values())
    assert len(set(sum((d.ids for d in data.values()), []))) == sum(len(d) for d in data.values())
    assert data["train"].levels == TINY.levels and data["train"].images.shape[-1] == 24
    assert all(t is not None for t in data["test"].native_truth)  # the test split only
    assert all(t is None for t in data["train"].native_truth)
    assert set(data["train"].scores["refined"]) == {0.3, 0.5}


def test_run_gaze_experiment_tables(tiny_experiment):
    data, exp = tiny_experiment
    seg = {r["method"]: r for r in exp.segmentation_rows}
    names = [TINY.variant_name(v) for v in TINY.variants]
    assert list(exp.results) == names
    assert names == ["1 UNet, pseudo-mask > 0.5", "2 UNets, no consistency", "2 UNets + consistency",
                     "2 UNets + consistency + LPP"]
    assert {"empty", "centre prior", *names} <= set(seg)
    assert any(m.startswith("CRF pseudo-mask > 0.5 of the test image") for m in seg)
    n_test = int(data["test"].has_mask.sum())
    for r in exp.segmentation_rows:
        assert 0.0 <= r["iou"] <= r["dice"] + 1e-12 <= 1.0 + 1e-12 and r["n_images"] == n_test
        assert r["resolution"] == "native"
    for n in names:
        assert seg[n]["selected_on"] == "valid" and 1 <= seg[n]["best_iteration"] <= TINY.iterations
        assert exp.test_probs[n].shape == (n_test, 24, 24)
    assert seg["empty"]["dice"] == 0.0
    h = exp.histories()
    assert h[names[0]]["final_consistency"] == 0.0 and h[names[1]]["final_consistency"] == 0.0
    assert -2.0 <= h[names[3]]["final_consistency"] < 0.0  # m = 2: each level's term in [-1, 0]
    pm = {r["method"]: r for r in exp.pseudo_mask_rows}
    assert {"heatmap > 0.3", "CRF map > 0.5", "empty", "centre prior", "full mask"} <= set(pm)
    assert pm["full mask"]["recall"] == pytest.approx(1.0)
    cols = exp.columns([0, 1])
    assert list(cols)[:4] == ["heatmap", "CRF map", "pseudo-mask > 0.5", "pseudo-mask > 0.3"]
    assert cols["pred. lpp"].dtype == torch.bool and cols["pred. lpp"].shape == (2, 24, 24)


def test_score_gaze_models_reuses_trained_models(tiny_experiment):
    """Notebook 05 scores models trained once: the same rows from the bare models."""
    data, exp = tiny_experiment
    models = {n: r.model for n, r in exp.results.items()}
    rows, probs = score_gaze_models(models, data["test"], TINY, share=exp.share)
    again = {r["method"]: r["dice"] for r in rows}
    assert again == {r["method"]: r["dice"] for r in exp.segmentation_rows}
    assert "best_iteration" not in rows[2]


def test_gaze_config_checks_and_mismatched_data(tiny_experiment):
    data, _ = tiny_experiment
    with pytest.raises(ValueError, match="variants"):
        GazeConfig(variants=("lpp", "bogus"))
    with pytest.raises(ValueError, match="levels"):
        GazeConfig(levels=(0.5, 1.5))
    with pytest.raises(ValueError, match="levels"):
        run_gaze_experiment(dataclasses.replace(TINY, levels=(0.2, 0.4)), data, device="cpu")
    with pytest.raises(ValueError, match="missing"):
        run_gaze_experiment(TINY, {"train": data["train"]}, device="cpu")
    assert TINY.train_config("plain", 3).consistency == "plain" and TINY.train_config("single", 3).seed == 3
    assert TINY.sigma_frac == pytest.approx(70 / 768)


def test_protocol_on_the_nci_isbi_layout(tmp_path, monkeypatch):
    """The protocol on a tiny copy of NCI-ISBI in its real layout (was a notebook run in
    test_nb_real_sets.py): the paper's NCI-ISBI settings (sigma 50, levels 0.2 and 0.4) apply."""
    import data_fixtures as fx

    from wsslib.papers import zhong2024

    root = tmp_path / "data"
    fx.build_set("nci-isbi", root / "nci-isbi")
    fx.nci_gaze(root / "nci-isbi" / "gaze")  # where ./data_download.sh gaze puts it
    monkeypatch.setenv("WSSLIB_DATA", str(root))
    monkeypatch.setenv("WSSLIB_CACHE", str(tmp_path / "cache"))
    s = {**zhong2024.PRESETS["cpu"], **zhong2024.SMOKE, "dataset": "nci-isbi", "iterations": 2, "image_size": 16}
    cfg = zhong2024.gaze_config(s, variants=("single", "lpp"))
    assert cfg.sigma == 50.0 and cfg.levels == (0.2, 0.4)
    splits = {sp: get_dataset("nci-isbi", split=sp) for sp in ("train", "valid", "test")}
    data = gaze_supervision({sp: _with_lesion(ds) for sp, ds in splits.items()}, cfg)
    exp = run_gaze_experiment(cfg, data, seed=0, device="cpu")
    seg = {r["method"]: r for r in exp.segmentation_rows}
    assert {"1 UNet, pseudo-mask > 0.5", "2 UNets + consistency + LPP"} <= set(seg)
    assert seg["empty"]["n_images"] == len(data["test"]) and seg["empty"]["resolution"] == "native"
    assert all(0.0 <= r["dice"] <= 1.0 for r in exp.pseudo_mask_rows)
