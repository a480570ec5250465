"""Notebook 05 (every method on the same images) in smoke mode: what its table must show.

Smoke runs are tiny (32 px, a few dozen images, one or two epochs), so the assertions are about
the table's shape and fairness (one split, validated thresholds) and about the one gap that is
large even then: gaze pseudo-masks against the trivial baselines.
"""

from __future__ import annotations

import math

from nbresults import rows

NB = "05_iou_dice_summary"
FAMILIES = {"baseline", "single CAM", "CAM ensemble", "AAX", "CCAM", "gaze pseudo-mask", "gaze UNet"}


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
    assert sum(r["family"] == "gaze UNet" for r in ours.values()) == len(p["unet_pseudo"])


def test_same_images_and_validated_thresholds(doc):
    ours = rows(doc, "summary", "this run")
    n = {r["n_images"] for r in ours.values()}
    assert n == {doc["n_test_images"]}, f"every method must be scored on the same test images, got {n}"
    for m, r in ours.items():
        for k in ("dice", "iou", "precision", "recall", "coverage"):
            assert 0.0 <= r[k] <= 1.0, (m, k, r[k])
        if r["family"] != "baseline":
            assert r["threshold"] is not None, m
            # AAX falls back to 0.5 (and says so) when no validation image is called Diseased
            assert r["valid_dice"] is not None or r.get("threshold_from", "").startswith("fallback"), m
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


def test_paper_rows_and_family_summary(doc):
    paper = rows(doc, "summary", "paper")
    assert paper and all(r["dataset"] for r in paper.values())
    assert any(r["dice"] == 0.778 for r in paper.values())  # GazeMedSeg, Kvasir-SEG
    fam = {r["family"]: r for r in doc["tables"]["by_family"]}
    assert set(fam) == FAMILIES
    ours = rows(doc, "summary", "this run")
    for f, r in fam.items():
        assert ours[r["method"]]["family"] == f
        assert math.isclose(r["dice"], ours[r["method"]]["dice"])
    assert fam["baseline"]["method"] == "centre prior"
