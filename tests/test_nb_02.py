"""What notebook 02 (CAM methods and CCAM) must show, asserted on its results (full or smoke mode)."""

from __future__ import annotations

import math

import pytest
from nbresults import rows

from wsslib.papers import deshpande

NB = "02_cam_methods"
CCAM_ROWS = ("CCAM (scratch)", "CCAM (classifier)")


def test_table_has_every_method_baselines_and_paper_rows(doc):
    seg = rows(doc, "segmentation")
    ours = {m for m, r in seg.items() if r["source"] == "this run"}
    assert {"empty", "centre prior", *doc["params"]["cam_methods"], *CCAM_ROWS} == ours
    n = seg["empty"]["n_images"]
    for m in ours:
        r = seg[m]
        assert r["dataset"] and r["n_images"] == n > 0
        assert 0.0 <= r["dice"] <= 1.0 and 0.0 <= r["iou"] <= r["dice"] + 1e-12
    assert seg["empty"]["dice"] == 0.0 and seg["empty"]["iou"] == 0.0
    paper = sorted((r["method"], r["dataset"], r["dice"], r["iou"]) for r in seg.values() if r["source"] == "paper")
    assert paper == sorted((f"{p['method']} [paper, {p['dataset']}]", p["dataset"], p["dice"], p["iou"])
                           for p in deshpande.PUBLISHED)


def test_thresholds_chosen_on_validation(doc):
    seg = rows(doc, "segmentation")
    for m in (*doc["params"]["cam_methods"], *CCAM_ROWS):
        assert 0.0 < seg[m]["threshold"] < 1.0
        assert seg[m]["valid_dice"] is not None and 0.0 <= seg[m]["valid_dice"] <= 1.0
    fixed = rows(doc, "fixed_thresholds")
    assert set(fixed) == {m for m, r in seg.items() if r["source"] == "this run"} - {"empty", "centre prior"}
    cpu = deshpande.PRESETS["cpu"]
    for m, r in fixed.items():
        want = cpu["their_ccam_threshold"] if m.startswith("CCAM") else cpu["their_cam_threshold"]
        assert r["threshold"] == want
        assert r["dice (validated t)"] == seg[m]["dice"]


def test_hirescam_equals_gradcam_after_pooling_only(doc):
    recs = list(doc["tables"]["hirescam_vs_gradcam"])
    last, earlier = recs[0], recs[1]
    assert last["max |HiResCAM - Grad-CAM|"] < 1e-4
    assert last["relative spatial std of the gradient"] < 1e-4  # gradient constant over the map
    assert last["Dice Grad-CAM"] == pytest.approx(last["Dice HiResCAM"], abs=1e-9)
    assert earlier["max |HiResCAM - Grad-CAM|"] > 1e-2
    assert earlier["relative spatial std of the gradient"] > 1e-2
    seg = rows(doc, "segmentation")
    assert seg["hirescam"]["dice"] == pytest.approx(seg["gradcam"]["dice"], abs=1e-6)


def test_ccam_polarity_decided_and_trained(doc):
    pol = rows(doc, "ccam_polarity")
    assert set(pol) == set(CCAM_ROWS)
    for r in pol.values():
        assert r["used"] == doc["params"]["polarity_method"]
        assert isinstance(r["flip"], bool)
        assert r["flip"] == r[f"{r['used']} says flip"]
        for rule in ("border", "reference", "deletion"):
            assert r[f"{rule} says flip"] == (r[f"{rule} score"] < 0)
        assert math.isfinite(r["border score"]) and -1.0 <= r["reference score"] <= 1.0
        assert -1.0 <= r["deletion score"] <= 1.0
    assert set(doc["ccam_history"]) == set(CCAM_ROWS)
    for hist in doc["ccam_history"].values():
        assert [h["epoch"] for h in hist] == list(range(doc["params"]["ccam_epochs"]))
        assert all(math.isfinite(h["loss"]) for h in hist)
        assert hist[-1]["loss"] < hist[0]["loss"]  # the contrastive loss goes down


def test_classifier_recorded(doc):
    cls = doc["tables"]["classification"][0]
    assert cls["method"] == doc["params"]["model_name"]
    assert 0.0 <= cls["accuracy"] <= 1.0 and cls["n_images"] > 0
    assert 0 <= cls["best_epoch"] < doc["params"]["epochs"]


def test_claims_match_the_tables(doc):
    claims = rows(doc, "claims")
    assert len(claims) >= 8 and all(isinstance(c["holds"], bool) for c in claims.values())
    assert claims["HiResCAM equals Grad-CAM at the pooled layer"]["holds"] is True
    seg = rows(doc, "segmentation")
    beats = claims["CCAM from the classifier beats CCAM from scratch"]["holds"]
    assert beats == (seg["CCAM (classifier)"]["dice"] > seg["CCAM (scratch)"]["dice"])
    prior = seg["centre prior"]["dice"]
    every = claims["every CAM beats the centre prior"]["holds"]
    assert every == all(seg[m]["dice"] > prior for m in doc["params"]["cam_methods"])
