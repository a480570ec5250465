"""What notebook 00 (quick start) must show, asserted on its results (full or smoke mode)."""

from __future__ import annotations

import math

from nbresults import rows

NB = "00_quickstart"


def test_quickstart_learns_and_localises(doc):
    cls = doc["tables"]["classification"][0]
    assert cls["method"] == doc["params"]["model_name"]
    assert cls["accuracy"] > 0.6, "the classifier should beat chance (0.5) even in smoke mode"
    seg = rows(doc, "segmentation")
    assert list(seg)[:2] == ["empty", "centre prior"]
    cam = seg[doc["params"]["cam_method"]]
    assert seg["empty"]["dice"] == 0.0 and seg["empty"]["iou"] == 0.0
    assert cam["dice"] > seg["empty"]["dice"] + 0.1
    assert not math.isnan(cam["iou"]) and cam["iou"] <= cam["dice"]
    assert cam["n_images"] == seg["centre prior"]["n_images"] > 0


def test_threshold_chosen_on_validation_is_recorded(doc):
    cam = rows(doc, "segmentation")[doc["params"]["cam_method"]]
    assert 0.0 < cam["threshold"] < 1.0
    assert cam["threshold"] == doc["params"]["threshold"]
    metric = doc["params"]["threshold_metric"]
    assert 0.0 <= cam[f"valid_{metric}"] <= 1.0


def test_claims_are_checked_in_the_run(doc):
    claims = rows(doc, "claims")
    assert len(claims) == 3 and all(isinstance(c["holds"], bool) and c["evidence"] for c in claims.values())
    seg = rows(doc, "segmentation")
    cam = seg[doc["params"]["cam_method"]]
    beats = next(c for m, c in claims.items() if m.startswith("the CAM masks beat the centre prior"))
    assert beats["holds"] == (cam["dice"] > seg["centre prior"]["dice"])
    larger = next(c for m, c in claims.items() if m.startswith("the masks are too large"))
    assert larger["holds"] == (cam["recall"] > cam["precision"])
