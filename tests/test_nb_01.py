"""What notebook 01 (gaze heatmaps and multi-level UNets) must show, asserted on its smoke-mode results.

Smoke runs train tiny UNets for a few iterations, so the assertions are about the protocol's
invariants, the tables' content and the claims' consistency with the tables, not about how well
the UNets learn. The protocol itself is unit-tested in test_gaze.py.
"""

from __future__ import annotations

import math

import pytest
from nbresults import rows

from wsslib.papers import zhong2024

NB = "01_gaze_heatmaps"
MODELS = ["1 UNet, pseudo-mask > 0.5", "2 UNets, no consistency", "2 UNets + consistency",
          "2 UNets + consistency + LPP"]


def test_params_are_the_papers_where_it_matters(doc):
    p = doc["params"]
    assert p["preset"] == "cpu" and p["smoke"] is True and p["given"] == []
    assert p["dataset"] == "synthetic"
    ds = zhong2024.DATASET_SETTINGS["synthetic"]
    assert p["levels"] == list(ds["levels"]) and p["sigma"] == ds["sigma"]  # resolved from the data set
    assert p["lam"] == 3.0 and p["lam_warmup"] == 0.0 and p["crf"] is True and p["use_duration"] is True
    for k, v in zhong2024.SMOKE.items():  # the smoke overlay reached the run
        assert p[k] == v, k
    assert all(n > 0 for n in p["n_images_used"].values())


def test_pseudo_mask_table_sweeps_both_maps_with_baselines_and_paper(doc):
    all_rows = rows(doc, "pseudo_masks")
    ours = rows(doc, "pseudo_masks", "this run")
    sweep = doc["params"]["sweep"]
    for label in ("heatmap", "CRF map"):
        assert [r["threshold"] for r in ours.values() if r["map"] == label] == sweep
    assert {"empty", "centre prior", "full mask"} <= set(ours)
    for r in ours.values():
        assert 0.0 <= r["iou"] <= r["dice"] + 1e-12 <= 1.0 + 1e-12 and r["n_images"] > 0
    assert ours["empty"]["dice"] == 0.0
    assert ours["full mask"]["recall"] == pytest.approx(1.0)
    paper = sorted((r["dataset"], r["dice"]) for r in all_rows.values() if r["source"] == "paper")
    assert paper == sorted((r["dataset"], r["dice"]) for r in zhong2024.PUBLISHED if r["table"] == "pseudo_masks")
    # the gaze localises: the best thresholded map beats the centre prior and the full mask clearly
    best = max(r["dice"] for r in ours.values() if r["map"] in ("heatmap", "CRF map"))
    assert best > ours["centre prior"]["dice"] + 0.2 and best > ours["full mask"]["dice"] + 0.2
    # a threshold sweep is not monotone: too low keeps background, too high loses the object
    heat = [r["dice"] for r in ours.values() if r["map"] == "heatmap"]
    assert max(heat) > heat[0] and max(heat) > heat[-1]


def test_segmentation_table_has_the_four_models_baselines_and_paper(doc):
    all_rows = rows(doc, "segmentation")
    ours = rows(doc, "segmentation", "this run")
    assert [m for m in ours if "UNet" in m and "[paper]" not in m] == MODELS
    assert {"empty", "centre prior"} <= set(ours)
    own = [m for m in ours if m.startswith("CRF pseudo-mask > 0.5 of the test image")]
    assert len(own) == 1
    n_test = doc["params"]["n_images_used"]["test"]
    for r in ours.values():  # every row scored on the same test images, at native resolution
        assert 0.0 <= r["iou"] <= r["dice"] + 1e-12 <= 1.0 + 1e-12 and r["n_images"] == n_test
        assert r["resolution"] == "native"
    evals = doc["history"]
    for m in MODELS:
        r = ours[m]
        assert r["selected_on"] == "valid"  # never the test split (the paper's code selects on test)
        assert r["best_iteration"] in evals[m]["eval_iteration"]
        assert r["valid_dice"] == pytest.approx(max(evals[m]["valid_dice"]))
    assert ours["empty"]["dice"] == 0.0
    paper = sorted((r["dataset"], r["dice"], r["selected_on"]) for r in all_rows.values() if r["source"] == "paper")
    assert paper == sorted((r["dataset"], r["dice"], r["selected_on"]) for r in zhong2024.PUBLISHED
                           if r["table"] == "segmentation")


def test_training_history_recorded(doc):
    hist = doc["history"]
    assert list(hist) == MODELS
    iters, every = doc["params"]["iterations"], doc["params"]["eval_every"]
    for name, h in hist.items():
        assert h["eval_iteration"] == sorted({*range(every, iters + 1, every), iters})
        assert len(h["valid_dice"]) == len(h["eval_iteration"])
        assert h["best_iteration"] in h["eval_iteration"]
        assert math.isfinite(h["final_bce"])
        if "consistency" in name and "no consistency" not in name:
            assert -2.0 - 1e-6 <= h["final_consistency"] <= 0.0  # m = 2: each level's term in [-1, 0]
        else:
            assert h["final_consistency"] == 0.0


def test_claims_are_checked_against_the_tables(doc):
    claims = {r["method"]: r for r in doc["tables"]["claims"]}
    assert all(isinstance(r["holds"], bool) and r["evidence"] for r in claims.values())
    seg = rows(doc, "segmentation", "this run")
    pm = rows(doc, "pseudo_masks", "this run")
    single, ind, lpp = (seg[m]["dice"] for m in (MODELS[0], MODELS[1], MODELS[3]))
    assert claims["two levels beat one"]["holds"] == (ind > single)
    assert claims["consistency + LPP beats no consistency"]["holds"] == (lpp > ind)
    assert claims["the paper's model beats the centre prior"]["holds"] == (lpp > seg["centre prior"]["dice"])
    best = max(r["dice"] for r in pm.values() if r["map"] in ("heatmap", "CRF map"))
    gaze = claims["gaze localises: the best thresholded map beats the centre prior and the full mask"]
    assert gaze["holds"] is True and f"{best:.3f}" in gaze["evidence"]
    unets = [c for c in claims if c.startswith("the UNets beat their pseudo-masks")]
    assert len(unets) == 1
