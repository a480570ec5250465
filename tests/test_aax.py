"""wsslib.aax against a direct, loop-based transcription of the paper's Algorithm 1."""

from __future__ import annotations

import doctest
import math

import pytest
import torch

import wsslib.methods.aax
from wsslib.methods.aax import (
    DECISION_NAMES,
    FUSIONS,
    AAXConfig,
    Decision,
    EnsembleOutputs,
    aax,
    decide,
    decision_scores,
    evaluate_aax,
    explain_ensemble,
    fuse_maps,
    load_aax_splits,
    select_aax_threshold,
    single_model_decisions,
    swap_member,
    train_members,
)
from wsslib.data.base import TensorBatch
from wsslib.models.training import ClassifierSpec, ClassifierTrainConfig
from wsslib.core.errors import DataError, ShapeError
from wsslib.evaluate.metrics import iou
from wsslib.models import create_model

import data_fixtures as fx

THETA, P_CUT = 0.1, 0.5


# ------------------------------------------------------------------------------ the reference
def algorithm1(p, u, maps, t, *, theta=THETA, p_cut=P_CUT, min_votes=2, min_uncertain=2, fusion="intersection"):
    """Nasir et al., Algorithm 1, image by image and pixel by pixel, in plain Python.

    p, u: M x B nested lists of floats; maps: M x B x H x W nested lists. Returns
    (decisions, agreeing model lists, masks as H x W lists of bools).
    """
    m_models, n_images = len(p), len(p[0])
    h, w = len(maps[0][0]), len(maps[0][0][0])
    decisions, agreeing, masks = [], [], []
    for b in range(n_images):
        n_uncertain = 0
        for i in range(m_models):
            if u[i][b] > theta:
                n_uncertain += 1
        agree = [i for i in range(m_models) if p[i][b] > p_cut and u[i][b] < theta]
        mask = [[False] * w for _ in range(h)]
        if n_uncertain >= min_uncertain:
            decision = "flagged"
        elif len(agree) >= min_votes:
            decision = "diseased"
            for y in range(h):
                for x in range(w):
                    on = [maps[i][b][y][x] > t for i in agree]
                    if fusion == "intersection":
                        mask[y][x] = all(on)
                    elif fusion == "union":
                        mask[y][x] = any(on)
                    elif fusion == "majority":
                        mask[y][x] = sum(on) > len(agree) / 2
                    else:  # mean, then threshold
                        mask[y][x] = sum(maps[i][b][y][x] for i in agree) / len(agree) > t
        else:
            decision = "healthy"
        decisions.append(decision)
        agreeing.append(agree)
        masks.append(mask)
    return decisions, agreeing, masks


def _random_case(seed: int, m: int, b: int, h: int = 3, w: int = 3, dtype=torch.float64):
    """Random p, u, maps with many values exactly at p_cut, at theta, and at the map threshold 0.5."""
    g = torch.Generator().manual_seed(seed)

    def mix(shape, exact: list[float], lo: float, hi: float) -> torch.Tensor:
        cont = lo + (hi - lo) * torch.rand(shape, generator=g, dtype=torch.float64)
        pick = torch.tensor(exact, dtype=torch.float64)[torch.randint(len(exact), shape, generator=g)]
        use_exact = torch.rand(shape, generator=g) < 0.5
        return torch.where(use_exact, pick, cont).to(dtype)

    p = mix((m, b), [0.0, 0.2, P_CUT, 0.7, 1.0], 0.0, 1.0)
    u = mix((m, b), [0.0, 0.05, THETA, 0.2], 0.0, 0.25)
    maps = mix((m, b, h, w), [0.0, 0.2, 0.5, 0.8, 1.0], 0.0, 1.0)
    return p, u, maps


# --------------------------------------------------------------------- random cases vs Algorithm 1
@pytest.mark.parametrize("fusion", FUSIONS)
@pytest.mark.parametrize(("m", "min_votes", "min_uncertain"), [(3, 2, 2), (2, 2, 2), (4, 2, 2), (5, 3, 2), (3, 1, 3)])
def test_matches_algorithm1_on_random_cases(fusion, m, min_votes, min_uncertain):
    n = 1500
    p, u, maps = _random_case(seed=m * 10 + min_votes + FUSIONS.index(fusion), m=m, b=n)
    res = aax(p, u, maps, threshold=0.5, min_votes=min_votes, min_uncertain=min_uncertain, fusion=fusion)
    dec, agree, masks = algorithm1(p.tolist(), u.tolist(), maps.tolist(), 0.5, min_votes=min_votes,
                                   min_uncertain=min_uncertain, fusion=fusion)
    assert [DECISION_NAMES[c] for c in res.decision.tolist()] == dec
    assert [torch.nonzero(res.agree[:, b]).flatten().tolist() for b in range(n)] == agree
    ref = torch.tensor(masks)
    if fusion == "mean":  # the mean may round differently in its last bit: skip exact ties only
        mean = torch.where(res.agree[..., None, None], maps, 0).sum(0) / res.agree.sum(0).clamp_min(1)[:, None, None]
        near_tie = (mean - 0.5).abs() < 1e-12
        assert torch.equal(res.masks[~near_tie], ref[~near_tie])
    else:
        assert torch.equal(res.masks, ref)
    # every decision kind and every edge value actually occurs in these cases
    assert set(dec) == {"flagged", "diseased", "healthy"}
    assert bool((u == THETA).any()) and bool((p == P_CUT).any()) and bool((maps == 0.5).any())


def test_float32_inputs_compare_in_their_own_dtype():
    """A float32 u of 0.1 equals theta = 0.1 (it is neither uncertain nor confident)."""
    p32, u32, maps32 = _random_case(seed=7, m=3, b=2000, dtype=torch.float32)
    res = aax(p32, u32, maps32, threshold=0.5)
    theta32 = torch.tensor(THETA, dtype=torch.float32).item()  # 0.10000000149...
    dec, agree, masks = algorithm1(p32.tolist(), u32.tolist(), maps32.tolist(), 0.5, theta=theta32)
    assert [DECISION_NAMES[c] for c in res.decision.tolist()] == dec
    assert torch.equal(res.masks, torch.tensor(masks))
    at_theta = u32 == torch.tensor(THETA, dtype=torch.float32)
    assert bool(at_theta.any())
    assert not bool(res.uncertain[at_theta].any()) and not bool(res.agree[at_theta].any())


# ------------------------------------------------------------------------------------ edge cases
def _maps(*rows):
    """One 1 x W map per model for a single image: (M, 1, 1, W)."""
    return torch.tensor(rows, dtype=torch.float32).view(len(rows), 1, 1, -1)


def test_ties_at_theta_and_at_p_cut_count_for_nothing():
    p = torch.tensor([[0.9, 0.5, 0.9], [0.9, 0.5, 0.9], [0.9, 0.5, 0.9]])
    u = torch.tensor([[0.1, 0.0, 0.1], [0.1, 0.0, 0.1], [0.1, 0.0, 0.0]])
    d = decide(p, u)
    # image 0: every u == theta -> not flagged, no votes -> healthy
    # image 1: every p == 0.5 -> no votes -> healthy
    # image 2: two u == theta, one confident vote -> healthy (one vote is not enough)
    assert d.decision.tolist() == [Decision.HEALTHY] * 3
    assert not bool(d.uncertain.any())
    assert d.agree[:, 2].tolist() == [False, False, True]


def test_all_uncertain_is_flagged_without_mask():
    p = torch.tensor([[0.9], [0.95], [0.99]])
    u = torch.tensor([[0.2], [0.3], [0.11]])
    res = aax(p, u, _maps([0.9, 0.9], [0.9, 0.9], [0.9, 0.9]), threshold=0.5)
    assert res.decision.tolist() == [Decision.FLAGGED]
    assert not bool(res.masks.any()) and not bool(res.agree.any())


def test_exactly_two_agreeing_mask_is_their_intersection():
    p = torch.tensor([[0.9], [0.8], [0.2]])  # model 3 says healthy: its map is not used
    u = torch.tensor([[0.01], [0.02], [0.0]])
    maps = _maps([0.9, 0.9, 0.1, 0.6], [0.9, 0.2, 0.9, 0.7], [0.0, 0.9, 0.9, 0.0])
    res = aax(p, u, maps, threshold=0.5)
    assert res.decision.tolist() == [Decision.DISEASED]
    assert res.agree[:, 0].tolist() == [True, True, False]
    assert res.masks.int().flatten().tolist() == [1, 0, 0, 1]
    assert res.fused.flatten().tolist() == pytest.approx([0.9, 0.2, 0.1, 0.6])
    # union and majority of the two agreeing models
    assert aax(p, u, maps, threshold=0.5, fusion="union").masks.int().flatten().tolist() == [1, 1, 1, 1]
    assert aax(p, u, maps, threshold=0.5, fusion="majority").masks.int().flatten().tolist() == [1, 0, 0, 1]
    assert aax(p, u, maps, threshold=0.5, fusion="mean").masks.int().flatten().tolist() == [1, 1, 0, 1]


def test_one_model_uncertain():
    maps = _maps([0.9, 0.1], [0.8, 0.9], [0.9, 0.9])
    # the uncertain model votes diseased but is excluded; the other two agree -> diseased, its map unused
    p = torch.tensor([[0.9], [0.9], [0.9]])
    u = torch.tensor([[0.0], [0.05], [0.4]])
    res = aax(p, u, maps, threshold=0.5)
    assert res.decision.tolist() == [Decision.DISEASED]
    assert res.agree[:, 0].tolist() == [True, True, False]
    assert res.masks.int().flatten().tolist() == [1, 0]
    # one uncertain, the other two disagree -> healthy (one flag-vote is not enough to flag)
    res = aax(torch.tensor([[0.9], [0.1], [0.9]]), u, maps, threshold=0.5)
    assert res.decision.tolist() == [Decision.HEALTHY] and not bool(res.masks.any())


def test_flag_takes_precedence_over_agreement():
    p = torch.full((4, 1), 0.9)
    u = torch.tensor([[0.0], [0.0], [0.3], [0.3]])  # two agree, two uncertain
    assert decide(p, u).decision.tolist() == [Decision.FLAGGED]
    assert decide(p, u, min_uncertain=3).decision.tolist() == [Decision.DISEASED]


def test_all_three_agree_majority_is_the_median():
    p, u = torch.full((3, 1), 0.9), torch.zeros(3, 1)
    maps = _maps([0.9, 0.2, 0.6], [0.4, 0.7, 0.1], [0.6, 0.8, 0.3])
    f = {name: fuse_maps(maps, torch.ones(3, 1, dtype=torch.bool), name).flatten() for name in FUSIONS}
    assert f["intersection"].tolist() == pytest.approx([0.4, 0.2, 0.1])
    assert f["union"].tolist() == pytest.approx([0.9, 0.8, 0.6])
    assert f["majority"].tolist() == pytest.approx([0.6, 0.7, 0.3])
    assert f["mean"].tolist() == pytest.approx([19 / 30, 17 / 30, 1 / 3])
    assert aax(p, u, maps, threshold=0.5, fusion="majority").masks.int().flatten().tolist() == [1, 1, 0]


def test_no_agreeing_model_fuses_to_zeros():
    maps = torch.rand(3, 2, 4, 4)
    agree = torch.tensor([[True, False], [False, False], [True, False]])
    for f in FUSIONS:
        fused = fuse_maps(maps, agree, f)
        assert fused.shape == (2, 4, 4) and torch.equal(fused[1], torch.zeros(4, 4))
        assert torch.isfinite(fused).all()


def test_masks_empty_unless_diseased():
    p, u, maps = _random_case(seed=3, m=3, b=500, dtype=torch.float32)
    res = aax(p, u, maps, threshold=0.0)
    not_diseased = res.decision != Decision.DISEASED
    assert not bool(res.masks[not_diseased].any()) and not bool(res.fused[not_diseased].any())


# ------------------------------------------------------------------------------- validation
def test_bad_inputs_raise_clear_errors():
    p, u, maps = torch.rand(3, 4), torch.rand(3, 4) * 0.2, torch.rand(3, 4, 5, 5)
    with pytest.raises(ShapeError, match="u"):
        decide(p, u[:2])
    with pytest.raises(ShapeError, match="maps"):
        aax(p, u, maps[:, :3], threshold=0.5)
    with pytest.raises(ShapeError, match="p"):
        decide(p.long(), u)
    with pytest.raises(DataError, match="NaN"):
        decide(torch.where(torch.eye(3, 4, dtype=torch.bool), math.nan, p), u)
    with pytest.raises(DataError, match="negative"):
        decide(p, -u)
    with pytest.raises(ValueError, match="min_votes"):
        decide(p, u, min_votes=0)
    with pytest.raises(ValueError, match="fusion"):
        fuse_maps(maps, torch.ones(3, 4, dtype=torch.bool), "vote")


# ------------------------------------------------------------------------- threshold and scores
def test_select_aax_threshold_uses_true_positives_only():
    torch.manual_seed(0)
    truth = torch.zeros(4, 8, 8, dtype=torch.bool)
    truth[:2, 2:6, 2:6] = True
    maps = torch.full((3, 4, 8, 8), 0.1)
    maps[:, :, 2:6, 2:6] = 0.7  # the lesion glows at 0.7 in every model, background 0.1
    p = torch.tensor([[0.9, 0.9, 0.9, 0.1]] * 3)
    u = torch.zeros(3, 4)
    r = select_aax_threshold(p, u, maps, truth, grid=[0.05, 0.3, 0.8])
    assert r.threshold == 0.3 and r.score == 1.0
    with pytest.raises(DataError, match="validation"):
        select_aax_threshold(torch.full((3, 4), 0.1), u, maps, truth)


def test_decision_scores_by_hand():
    decision = torch.tensor([1, 1, 0, 2, 0, 1])
    labels = torch.tensor([1, 0, 0, 1, 1, 1])
    truth = torch.zeros(6, 2, 2, dtype=torch.bool)
    truth[[0, 3, 4, 5], 0, 0] = True
    masks = torch.zeros(6, 2, 2, dtype=torch.bool)
    masks[0, 0, :] = True  # IoU 1/2
    masks[1, 0, 0] = True  # false positive: IoU 0
    masks[5, 0, 0] = True  # IoU 1
    s = decision_scores(decision, labels, masks, truth)
    assert s["accuracy"] == pytest.approx(3 / 5)
    assert s["accuracy_flagged_as_errors"] == pytest.approx(3 / 6)
    assert s["flag_rate"] == pytest.approx(1 / 6)
    assert (s["n_flagged"], s["n_diseased"], s["n_seg"], s["n_seg_tp"]) == (1, 3, 3, 2)
    assert s["iou"] == pytest.approx((0.5 + 0 + 1) / 3)
    assert s["iou_tp"] == pytest.approx((0.5 + 1) / 2)
    assert s["sensitivity"] == pytest.approx(2 / 3) and s["specificity"] == pytest.approx(1 / 2)
    assert s["iou"] == pytest.approx(float(iou(masks[decision == 1], truth[decision == 1]).mean()))
    all_flagged = decision_scores(torch.full((3,), 2), torch.tensor([0, 1, 1]))
    assert math.isnan(all_flagged["accuracy"]) and all_flagged["accuracy_flagged_as_errors"] == 0.0
    assert single_model_decisions(torch.tensor([[0.5, 0.6]])).tolist() == [[0, 1]]


def test_explain_ensemble_shapes_and_seed():
    torch.manual_seed(0)
    models = [create_model("smallcnn", dropout=0.5).eval() for _ in range(2)]
    x = torch.rand(5, 3, 32, 32)
    a = explain_ensemble(models, x, k=6, batch_size=2, seed=3)
    b = explain_ensemble(models, x, k=6, batch_size=2, seed=3)
    assert a.p.shape == (2, 5) and a.u.shape == (2, 5) and a.maps.shape == (2, 5, 32, 32)
    assert torch.equal(a.p, b.p) and torch.equal(a.u, b.u) and torch.equal(a.maps, b.maps)
    assert float(a.maps.min()) >= 0.0 and float(a.maps.max()) <= 1.0 and bool((a.u >= 0).all())
    res = aax(a.p, a.u, a.maps, threshold=0.5)
    assert res.masks.shape == (5, 32, 32)


def test_doctests():
    assert doctest.testmod(wsslib.methods.aax, optionflags=doctest.ELLIPSIS).failed == 0


# ----------------------------------------------------------------------- the protocol: evaluate_aax
def _split(p, u, maps, labels, masks):
    """EnsembleOutputs and a TensorBatch of one split from plain lists / tensors."""
    p, u, labels = torch.tensor(p), torch.tensor(u), torch.tensor(labels)
    images = torch.zeros(len(labels), 3, *masks.shape[-2:])
    return EnsembleOutputs(p, u, maps), TensorBatch(images, labels, masks)


def _tiny():
    """Three models, four images of 4 x 4 pixels; images 0 and 1 hold a lesion in the top-left 2 x 2.

    Every model's map glows 0.8 on the lesion and 0.2 elsewhere; model 3's map also glows on the
    top-right corner, which the intersection removes. At theta 0.1: image 0 all three agree,
    image 1 models 1 and 3 agree, image 2 (healthy) models 2 and 3 are uncertain: flagged; image 3:
    healthy, all say p = 0.1.
    """
    masks = torch.zeros(4, 4, 4, dtype=torch.bool)
    masks[:2, :2, :2] = True
    maps = torch.full((3, 4, 4, 4), 0.2)
    maps[:, :, :2, :2] = 0.8
    maps[2, :, :2, 2:] = 0.8
    p = [[0.9, 0.9, 0.9, 0.1], [0.8, 0.2, 0.7, 0.1], [0.9, 0.9, 0.6, 0.1]]
    u = [[0.02, 0.01, 0.02, 0.0], [0.02, 0.01, 0.3, 0.0], [0.01, 0.01, 0.2, 0.0]]
    return _split(p, u, maps, [1, 1, 0, 0], masks)


def _ood():
    maps = torch.full((3, 2, 4, 4), 0.5)
    return _split([[0.6, 0.4]] * 3, [[0.05, 0.3], [0.3, 0.3], [0.01, 0.01]], maps, [1, 0],
                  torch.zeros(2, 4, 4, dtype=torch.bool))


def _evaluate(config=None, with_ood=True, **kw):
    o, b = _tiny()
    outs, data = {"valid": o, "test": o}, {"valid": b, "test": b}
    if with_ood:
        outs["ood"], data["ood"] = _ood()
    return evaluate_aax(outs, data, ["m1", "m2", "m3"], config or AAXConfig(theta_grid=(0.01, 0.1, 0.5)), **kw)


def test_evaluate_aax_main_rows_by_hand():
    ev = _evaluate(dataset="toy")
    rows = {r["method"]: r for r in ev.main}
    assert list(rows) == ["m1", "m2", "m3", "AAX", "2-of-3 vote, no uncertainty",
                          "centre prior (on AAX's Diseased images)", "empty mask"]
    # AAX: image 0 Diseased (all agree), image 1 Diseased (m1, m3), image 2 flagged, image 3 healthy
    assert ev.result.decision.tolist() == [1, 1, 2, 0]
    a = rows["AAX"]
    assert (a["accuracy"], a["flag_rate"], a["accuracy_flagged_as_errors"]) == (1.0, 0.25, 0.75)
    assert a["iou"] == 1.0 and a["n_seg"] == 2 and a["threshold_from"] == "validation, 2 images"
    assert 0.2 <= ev.thresholds["AAX"] < 0.8 and a["dataset"] == "toy"
    # m3 alone: threshold chosen on its own Diseased images with a lesion; its map's false corner stays
    m3 = rows["m3"]
    assert m3["flag_rate"] == 0.0 and m3["accuracy"] == 0.75  # calls image 2 Diseased
    assert m3["iou_on_aax_set"] == pytest.approx(0.5)  # 4 true pixels of 8 on
    assert rows["m2"]["accuracy"] == 0.5  # calls image 1 Healthy and image 2 Diseased
    assert rows["2-of-3 vote, no uncertainty"]["accuracy"] == 0.75  # image 2: m1 + m3 vote Diseased
    assert rows["empty mask"]["iou"] == 0.0
    assert 0.0 < rows["centre prior (on AAX's Diseased images)"]["iou"] < 1.0
    assert a["ood_flag_rate"] == 0.5 and ev.n_all_agree == 1
    assert ev.fallbacks == []


def test_evaluate_aax_falls_back_once_and_records_it():
    o, b = _tiny()
    healthy = EnsembleOutputs(torch.full_like(o.p, 0.1), o.u, o.maps)  # validation: nobody says Diseased
    ev = evaluate_aax({"valid": healthy, "test": o}, {"valid": b, "test": b}, ["m1", "m2", "m3"],
                      AAXConfig(fallback_threshold=0.3, theta_grid=(0.1,)))
    assert set(ev.fallbacks) == {"m1", "m2", "m3", "AAX"}
    assert all(t == 0.3 for t in ev.thresholds.values())
    assert ev.row("AAX")["threshold_from"].startswith("fallback 0.3")
    assert all(r["threshold_from"].startswith("fallback") for r in ev.fusion)
    assert ev.ood == [] and "ood_flag_rate" not in ev.theta_sweep[0]


def test_evaluate_aax_theta_sweep_and_suggestion():
    # theta 0.01 flags images 0 and 2 (u > 0.01 twice) and image 1 has no confident vote (u == 0.01):
    # Healthy, wrong; theta 0.1 flags image 2 only; 0.5 flags nothing and calls image 2 Diseased, wrong
    ev = _evaluate(AAXConfig(theta_grid=(0.5, 0.01, 0.1), review_cost=0.5))
    sweep = {r["theta"]: r for r in ev.theta_sweep}
    assert [sweep[t]["flag_rate"] for t in (0.01, 0.1, 0.5)] == [0.5, 0.25, 0.0]
    assert sweep[0.1]["flag_rate"] == ev.row("AAX")["flag_rate"]
    # validation = test here: cost = errors / N + 0.5 * flags / N
    assert [sweep[t]["valid_cost"] for t in (0.01, 0.1, 0.5)] == pytest.approx([0.5, 0.125, 0.25])
    assert ev.theta_suggested == 0.1
    cheap = _evaluate(AAXConfig(theta_grid=(0.01, 0.1, 0.5), review_cost=2.0))
    assert cheap.theta_suggested == 0.5  # flags cost more than the error they avoid
    assert [sweep[t]["ood_flag_rate"] for t in (0.01, 0.1, 0.5)] == [1.0, 0.5, 0.0]


def test_evaluate_aax_fusion_and_ood_tables():
    ev = _evaluate()
    fusion = {r["method"]: r for r in ev.fusion}
    assert set(fusion) == set(FUSIONS) and len({r["n_seg"] for r in fusion.values()}) == 1
    assert fusion["intersection"]["iou"] == 1.0
    assert fusion["union"]["iou"] == pytest.approx(0.5)  # m3's false corner is in the union on image 0
    ood = {r["method"]: r for r in ev.ood}
    assert ood["in-distribution (test)"]["flag_rate"] == 0.25
    assert ood["in-distribution (test)"]["healthy_rate"] == 0.25
    assert ood["out-of-distribution (synthetic ood)"]["flag_rate"] == 0.5
    assert ood["out-of-distribution (synthetic ood)"]["share_u_above_theta_m2"] == 1.0


def test_evaluate_aax_tag_and_bad_inputs():
    ev = _evaluate(tag=" (swap)", with_ood=False)
    assert {r["method"] for r in ev.main} >= {"m1 (swap)", "AAX (swap)", "empty mask (swap)"}
    o, b = _tiny()
    with pytest.raises(DataError, match="'valid'"):
        evaluate_aax({"test": o}, {"test": b}, ["m1", "m2", "m3"], AAXConfig())
    with pytest.raises(DataError, match="expected 2 models"):
        evaluate_aax({"valid": o, "test": o}, {"valid": b, "test": b}, ["m1", "m2"], AAXConfig())
    with pytest.raises(ValueError, match="fusion"):
        AAXConfig(fusion="vote")
    with pytest.raises(ValueError, match="theta_grid"):
        AAXConfig(theta_grid=())


def test_protocol_on_the_fire_layout(tmp_path, monkeypatch):
    """The old real-set notebook test, at the protocol level: train, explain, swap and evaluate on
    a tiny copy of the Fire data set in its real on-disk layout (a handful of 32 px images)."""
    fx.build_set("fire", tmp_path / "data" / "fire")
    monkeypatch.setenv("WSSLIB_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("WSSLIB_CACHE", str(tmp_path / "cache"))
    data = load_aax_splits("fire", size=32, n_ood=6)
    assert {"train", "valid", "test", "ood"} <= set(data) and data["test"].masks.shape[-1] == 32
    cfg = AAXConfig(k=3, theta_grid=(0.05, 0.1))
    train = ClassifierTrainConfig(lr=1e-3, batch_size=4, epochs=1, patience=None)
    specs = [ClassifierSpec("smallcnn", train=train, options={"width": w}, label=f"cnn{w}") for w in (4, 6, 8)]
    members = train_members(specs, data, cfg, seed=0, device="cpu")
    assert members.names == ["cnn4", "cnn6", "cnn8"] and len(members.training) == 3
    assert members.outputs["test"].p.shape == (3, len(data["test"]))
    ev = evaluate_aax(members.outputs, data, members.names, cfg, dataset="fire")
    assert ev.row("AAX")["n_images"] == len(data["test"]) and ev.row("AAX")["dataset"] == "fire"
    assert len(ev.ood) == 2 and ev.theta_suggested in (0.05, 0.1)
    swapped = swap_member(members, "cnn6", ClassifierSpec("smallcnn", train=train, options={"width": 5}, label="cnn5"),
                          data, cfg, seed=0, device="cpu")
    assert swapped.names == ["cnn4", "cnn5", "cnn8"]
    assert torch.equal(swapped.outputs["test"].p[0], members.outputs["test"].p[0])
    assert swapped.training[0]["method"] == "cnn5 (swap)"
    assert evaluate_aax(swapped.outputs, data, swapped.names, cfg).row("AAX")["n_images"] == len(data["test"])
