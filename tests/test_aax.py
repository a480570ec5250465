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
    Decision,
    aax,
    decide,
    decision_scores,
    explain_ensemble,
    fuse_maps,
    select_aax_threshold,
    single_model_decisions,
)
from wsslib.core.errors import DataError, ShapeError
from wsslib.evaluate.metrics import iou
from wsslib.models import create_model

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
