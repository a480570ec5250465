"""Notebook 05 (every method on the same images): what its table must show, and that it runs the
same protocols with the same configurations as notebooks 01-04.

Smoke runs are tiny (32 px, a few dozen images, one or two epochs), so the assertions are about
the table's shape and fairness (one split, validated thresholds), the family winners being chosen
on validation, the claims agreeing with the table, and the one gap that is large even then: gaze
pseudo-masks against the trivial baselines.
"""

from __future__ import annotations

import math
from dataclasses import fields

import pytest
from nbresults import rows

from wsslib.papers import deshpande, nasir2025, ostrowski, summary, zhong2024

NB = "05_iou_dice_summary"
FAMILIES = set(summary.FAMILIES)


def test_every_family_and_every_backbone(doc):
    ours = rows(doc, "summary", "this run")
    assert {r["family"] for r in ours.values()} == FAMILIES
    p = doc["params"]
    for backbone in p["classifiers"]:
        for method in p["cam_methods"]:
            assert f"{method} · {backbone}" in ours, (method, backbone)
    ops = {m.split(" ·")[0] for m, r in ours.items() if r["family"] == "CAM ensemble"}
    assert ops == {"'or'", "'and'", "'<'", "'>'"}
    assert len(p["ensemble_pair"]) == 2 and set(p["ensemble_pair"]) <= set(p["classifiers"])
    assert sum(r["family"] == "CCAM" for r in ours.values()) == len(p["ccam_inits"])
    assert [m for m, r in ours.items() if r["family"] == "gaze UNet"] == ["gaze UNet (2 UNets + consistency + LPP)"]


def test_same_images_and_validated_thresholds(doc):
    ours = rows(doc, "summary", "this run")
    n = {r["n_images"] for r in ours.values()}
    assert n == {doc["n_test_images"]}, f"every method must be scored on the same test images, got {n}"
    for m, r in ours.items():
        for k in ("dice", "iou", "precision", "recall", "coverage"):
            assert 0.0 <= r[k] <= 1.0, (m, k, r[k])
        if r["family"] != "baseline":
            assert r["threshold"] is not None, m
            # AAX's threshold comes from validation or from the recorded fallback
            assert r["valid_dice"] is not None or r.get("threshold_from", "").startswith(("fallback", "validation")), m
            t = r["threshold"] if isinstance(r["threshold"], list) else [r["threshold"]]
            assert all(0.0 <= x <= 1.0 for x in t), (m, t)


def test_baselines_and_gaze(doc):
    ours = rows(doc, "summary", "this run")
    assert ours["empty"]["dice"] == 0.0 and ours["empty"]["coverage"] == 0.0
    centre = ours["centre prior"]["dice"]
    assert 0.0 < centre < 0.5
    # the reader's own fixations sit on the lesion: far better than any prior, even in smoke mode
    for m in ("gaze heatmap (test image's own gaze)", "gaze heatmap + CRF (test image's own gaze)"):
        assert ours[m]["dice"] > centre + 0.2, (m, ours[m]["dice"], centre)


def test_family_winners_are_chosen_on_validation(doc):
    ours = rows(doc, "summary", "this run")
    fam = {r["family"]: r for r in doc["tables"]["by_family"]}
    assert set(fam) == FAMILIES
    assert fam["baseline"]["method"] == "centre prior"
    for f, r in fam.items():
        assert ours[r["method"]]["family"] == f
        valid = [x["valid_dice"] for x in ours.values() if x["family"] == f and x["valid_dice"] is not None]
        if f != "baseline" and valid:
            assert ours[r["method"]]["valid_dice"] == max(valid), f"{f}: not the best on validation"


def test_paper_rows_come_from_the_papers_modules(doc):
    paper = rows(doc, "summary", "paper")
    assert {m: (r["dice"], r["iou"]) for m, r in paper.items()} == \
        {r["method"]: (r["dice"], r["iou"]) for r in summary.PUBLISHED}
    gaze_unet = next(r for r in zhong2024.PUBLISHED if r["table"] == "segmentation" and r["dataset"] == "Kvasir-SEG")
    assert any(r["family"] == "gaze UNet" and r["dice"] == gaze_unet["dice"] for r in summary.PUBLISHED)


def test_claims_agree_with_the_table(doc):
    ours = rows(doc, "summary", "this run")
    claims = {c["method"]: c["holds"] for c in doc["tables"]["claims"]}
    heat = ours["gaze heatmap (test image's own gaze)"]["dice"]
    crf = ours["gaze heatmap + CRF (test image's own gaze)"]["dice"]
    assert claims["the dense CRF improves the test image's own gaze heatmap"] == (crf > heat)
    unet = max(r["dice"] for r in ours.values() if r["family"] == "gaze UNet")
    fam = {r["family"]: r for r in doc["tables"]["by_family"]}
    assert claims["the gaze UNets beat the pseudo-masks they learned from (the test images' own CRF maps)"] == \
        (fam["gaze UNet"]["dice"] > crf)
    assert unet >= fam["gaze UNet"]["dice"]


def _protocol_fields(cfg, *, skip=()):
    return {f.name: getattr(cfg, f.name) for f in fields(cfg) if f.name not in skip}


@pytest.mark.parametrize("preset", ["cpu"])
def test_05_runs_the_configs_of_01_to_04(preset):
    """Every protocol constant notebook 05 does not expose equals notebooks 01-04's."""
    cfg = summary.configs(summary.PRESETS[preset])
    sizes = {"image_size", "iterations", "batch_size", "eval_every", "widths", "feat_ch", "lam", "workers", "variants"}
    assert _protocol_fields(cfg.gaze, skip=sizes) == \
        _protocol_fields(zhong2024.gaze_config(zhong2024.PRESETS[preset]), skip=sizes)
    exposed = {"k", "cam_method", "theta", "fusion", "threshold_metric"}
    assert _protocol_fields(cfg.aax, skip=exposed) == \
        _protocol_fields(nasir2025.aax_config(nasir2025.PRESETS[preset]), skip=exposed)
    exposed = {"cam_methods", "threshold_metric", "ccam_inits", "ccam"}
    assert _protocol_fields(cfg.cams, skip=exposed) == _protocol_fields(deshpande.config(deshpande.PRESETS[preset]),
                                                                        skip=exposed)
    assert cfg.cams.ccam.optimizer == deshpande.config(deshpande.PRESETS[preset]).ccam.optimizer
    assert cfg.ensembles.ops == ostrowski.ensemble_config(ostrowski.PRESETS[preset]).ops
    assert cfg.gaze.lam_warmup == 0.0 and cfg.gaze.crf_sxy == zhong2024.PRESETS[preset]["crf_sxy"]


@pytest.mark.parametrize("preset", ["cpu", "real"])
def test_paper_context_names_the_rows_on_this_runs_data(preset):
    """The sentence under the table quotes every paper row once, and says which share this run's data."""
    text = summary.paper_context(summary.PRESETS[preset])
    for r in summary.paper_rows():
        assert text.count(r["method"]) == 1
    shared = "The papers' Kvasir-SEG rows are on this run's data set"
    assert (shared in text) == (preset == "real")
    assert f"{summary.PRESETS[preset]['image_size']} px" in text and text.endswith("Compare rankings, not values.")


def test_summary_rejects_mismatched_model_lists():
    with pytest.raises(ValueError, match="one entry per model"):
        summary.configs({**summary.PRESETS["cpu"], "epochs": [1, 1]})
    with pytest.raises(ValueError, match="same name"):
        summary.configs({**summary.PRESETS["cpu"], "cnn_widths": [8, 8, 12]})


def test_nan_free_scores(doc):
    for r in rows(doc, "summary", "this run").values():
        assert not math.isnan(r["dice"]), r["method"]
