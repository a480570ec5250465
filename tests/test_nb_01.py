"""What notebook 01 (gaze heatmaps and multi-level UNets) must show, asserted on its smoke-mode results."""

from __future__ import annotations

import math

import pytest
from nbresults import rows

NB = "01_gaze_heatmaps"
SWEEP = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]


def test_params_are_the_papers_where_it_matters(doc):
    p = doc["params"]
    assert p["dataset"] == "synthetic"
    assert p["levels"] == [0.5, 0.3]  # the paper's Kvasir-SEG thresholds
    assert p["sigma"] == 70.0 and p["lam"] == 3.0 and p["crf"] is True and p["use_duration"] is True
    assert all(n > 0 for n in p["n_images_used"].values())


def test_pseudo_mask_table_sweeps_both_maps_with_baselines_and_paper(doc):
    all_rows = rows(doc, "pseudo_masks")
    ours = rows(doc, "pseudo_masks", "this run")
    for label in ("heatmap", "CRF map"):
        assert [r["threshold"] for r in ours.values() if r["map"] == label] == SWEEP
    assert {"empty", "centre prior", "full mask"} <= set(ours)
    for r in ours.values():
        assert 0.0 <= r["iou"] <= r["dice"] + 1e-12 <= 1.0 + 1e-12 and r["n_images"] > 0
    assert ours["empty"]["dice"] == 0.0
    assert ours["full mask"]["recall"] == pytest.approx(1.0)
    paper = [r for r in all_rows.values() if r["source"] == "paper"]
    assert len(paper) == 1 and paper[0]["dice"] == 0.751 and paper[0]["threshold"] == 0.5
    assert paper[0]["dataset"] == "Kvasir-SEG"
    # the gaze localises: the best thresholded map beats the centre prior and the full mask clearly
    best = max(r["dice"] for r in ours.values() if r["map"] in ("heatmap", "CRF map"))
    assert best > ours["centre prior"]["dice"] + 0.2 and best > ours["full mask"]["dice"] + 0.2
    # a threshold sweep is not monotone: too low keeps background, too high loses the object
    heat = [r["dice"] for r in ours.values() if r["map"] == "heatmap"]
    assert max(heat) > heat[0] and max(heat) > heat[-1]


def test_segmentation_table_has_the_four_models_baselines_and_paper(doc):
    all_rows = rows(doc, "segmentation")
    ours = rows(doc, "segmentation", "this run")
    models = [m for m in ours if "UNet" in m]
    assert len(models) == 4
    assert any(m.startswith("1 UNet") for m in models)
    assert {m.split(" ", 1)[1] for m in models if not m.startswith("1 UNet")} == {
        "UNets, no consistency", "UNets + consistency", "UNets + consistency + LPP"}
    assert {"empty", "centre prior"} <= set(ours)
    for r in ours.values():
        assert 0.0 <= r["iou"] <= r["dice"] + 1e-12 <= 1.0 + 1e-12 and r["n_images"] > 0
    iters = doc["params"]["iterations"]
    for m in models:
        r = ours[m]
        assert r["selected_on"] == "valid"  # never the test split (the paper's code selects on test)
        assert 1 <= r["best_iteration"] <= iters and 0.0 <= r["valid_dice"] <= 1.0
    paper = [r for r in all_rows.values() if r["source"] == "paper"]
    assert len(paper) == 1 and paper[0]["dice"] == pytest.approx(0.778)
    assert "LPP" in paper[0]["method"] and paper[0]["selected_on"] == "test"


def test_training_history_recorded(doc):
    hist = doc["history"]
    assert len(hist) == 4
    for name, h in hist.items():
        assert len(h["eval_iteration"]) == len(h["valid_dice"]) > 0
        assert h["best_iteration"] in h["eval_iteration"]
        assert math.isfinite(h["final_bce"])
        if "consistency" in name and "no consistency" not in name:
            assert -2.0 - 1e-6 <= h["final_consistency"] <= 0.0  # m = 2: each level's term in [-1, 0]
        else:
            assert h["final_consistency"] == 0.0
