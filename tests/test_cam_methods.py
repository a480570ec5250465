"""Tests of :mod:`wsslib.methods.cam_methods` (Deshpande et al.'s protocol) on tiny data: seconds."""

from __future__ import annotations

import math

import data_fixtures as fx
import pytest
import torch

from wsslib.core.errors import DataError
from wsslib.data import load_splits
from wsslib.data.base import TensorBatch
from wsslib.explain.ccam import CCAMTrainConfig
from wsslib.methods import cam_methods as cm
from wsslib.models import create_model
from wsslib.models.training import ClassifierSpec, ClassifierTrainConfig, fit_classifier
from wsslib.papers import deshpande

TINY = cm.CAMMethodsConfig(cam_methods=("gradcam", "hirescam"), ccam_inits=("scratch", "classifier"),
                           ccam=CCAMTrainConfig(epochs=1, batch_size=8, optimizer="adam"))


@pytest.fixture(scope="module")
def tiny() -> dict[str, TensorBatch]:
    return load_splits("synthetic", size=32, n=60, seed=0)


def _spec(epochs: int = 1) -> ClassifierSpec:
    return ClassifierSpec("smallcnn", ClassifierTrainConfig(lr=2e-3, batch_size=16, epochs=epochs, one_cycle=True),
                          dropout=0.2)


def test_config_rejects_unknown_names():
    with pytest.raises(ValueError, match="cam_methods"):
        cm.CAMMethodsConfig(cam_methods=("gradcam", "nocam"))
    with pytest.raises(ValueError, match="ccam_inits"):
        cm.CAMMethodsConfig(ccam_inits=("imagenet",))
    with pytest.raises(ValueError, match="polarity_method"):
        cm.CAMMethodsConfig(polarity_method="coin")


def test_positives_keeps_labelled_masked_images():
    b = TensorBatch(torch.rand(4, 3, 8, 8), torch.tensor([1, 0, 1, 1]), torch.zeros(4, 8, 8, dtype=torch.bool),
                    torch.tensor([True, True, False, True]), ["a", "b", "c", "d"])
    assert cm.positives(b).ids == ["a", "d"]
    with pytest.raises(DataError, match="none of the 4"):
        cm.positives(TensorBatch(b.images, torch.zeros(4, dtype=torch.long), b.masks, b.has_mask))
    with pytest.raises(DataError, match="no masks"):
        cm.positives(TensorBatch(b.images, b.labels))


def test_score_maps_chooses_on_validation_and_adds_baselines():
    truth = torch.zeros(3, 8, 8, dtype=torch.bool)
    truth[:, 2:6, 2:6] = True
    perfect = truth.float() * 0.8 + 0.1  # any threshold in (0.1, 0.9) is exact
    noise = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(0))
    s = cm.score_maps({"perfect": perfect, "noise": noise}, truth, {"perfect": perfect, "noise": noise}, truth,
                      fg_share=0.25)
    by = {r["method"]: r for r in s.rows}
    assert list(by) == ["empty", "centre prior", "perfect", "noise"]
    assert by["perfect"]["dice"] == 1.0 and 0.1 <= by["perfect"]["threshold"] < 0.9
    assert by["perfect"]["valid_dice"] == 1.0 and "threshold" not in by["empty"]
    assert by["empty"]["dice"] == 0.0 and by["noise"]["dice"] < 1.0
    assert s.test_masks["perfect"].equal(truth) and s.thresholds["noise"].threshold == by["noise"]["threshold"]
    with pytest.raises(ValueError, match="valid_maps"):
        cm.score_maps({"a": perfect}, truth, {"b": perfect}, truth, fg_share=0.25)


def test_hirescam_equals_gradcam_only_at_the_pooled_layer(tiny):
    model = create_model("smallcnn", dropout=0.0, seed=1).eval()
    test = cm.positives(tiny["test"])
    rows = cm.hirescam_vs_gradcam(model, test.images, test.masks, layer=cm.earlier_layer(model))
    assert [r["method"].split()[0] for r in rows] == ["last", "stage3"]
    assert rows[0]["max |HiResCAM - Grad-CAM|"] < 1e-4 and rows[0]["relative spatial std of the gradient"] < 1e-4
    assert rows[1]["max |HiResCAM - Grad-CAM|"] > 1e-2 and rows[1]["relative spatial std of the gradient"] > 1e-2


def test_protocol_with_a_trained_model_leaves_global_rng_alone(tiny):
    fit = fit_classifier(_spec(2), tiny["train"], tiny["valid"], seed=0, device="cpu", progress=False)
    state = torch.get_rng_state()
    res = cm.run_cam_methods(fit.model, tiny, TINY, seed=0, device="cpu", dataset="tiny")
    assert torch.equal(torch.get_rng_state(), state)
    assert res.classifier is None and res.tables["classification"][0]["best_epoch"] is None
    seg = {r["method"]: r for r in res.tables["segmentation"]}
    assert list(seg) == ["empty", "centre prior", "gradcam", "hirescam", "CCAM (scratch)", "CCAM (classifier)"]
    assert all(r["source"] == "this run" and r["dataset"] == "tiny" for r in seg.values())
    assert seg["gradcam"]["dice"] == pytest.approx(seg["hirescam"]["dice"], abs=1e-6)
    n = len(cm.positives(tiny["test"]))
    assert all(r["n_images"] == n for r in seg.values()) and res.test.images.shape[0] == n
    assert {m: v.shape for m, v in res.test_masks.items()} == {m: (n, 32, 32) for m in seg}
    assert [r["method"] for r in res.tables["ccam_polarity"]] == ["CCAM (scratch)", "CCAM (classifier)"]
    assert all(r["used"] == "deletion" for r in res.tables["ccam_polarity"])
    assert {len(h) for h in res.ccam_history.values()} == {1}
    fixed = {r["method"]: r["threshold"] for r in res.tables["fixed_thresholds"]}
    assert fixed["gradcam"] == TINY.fixed_cam_threshold and fixed["CCAM (scratch)"] == TINY.fixed_ccam_threshold
    again = cm.run_cam_methods(fit.model, tiny, TINY, seed=0, device="cpu", dataset="tiny")
    assert _same_numbers(again.tables, res.tables)  # deterministic from the seed


def _same_numbers(a: dict, b: dict) -> bool:
    """Tables equal up to float rounding (the CAMs run in float32)."""
    for name in a:
        for ra, rb in zip(a[name], b[name]):
            for k, v in ra.items():
                w = rb[k]
                if isinstance(v, float) and not (math.isclose(v, w, abs_tol=1e-6) or (math.isnan(v) and math.isnan(w))):
                    return False
    return True


def test_protocol_trains_from_a_spec_on_the_oxford_pets_layout(tmp_path, monkeypatch):
    """The real Oxford-IIIT Pet layout (a 12-image fixture), the notebook's settings with tiny values."""
    fx.build_set("oxford-pets", tmp_path / "oxford-pets")
    monkeypatch.setenv("WSSLIB_CACHE", str(tmp_path / "cache"))
    s = {**deshpande.PRESETS["cpu"], **deshpande.SMOKE, "dataset": "oxford-pets", "data_root": str(tmp_path / "oxford-pets"),
         "image_size": 32, "epochs": 1, "ccam_epochs": 1, "cam_methods": ["gradcam", "xgradcam"], "seed": 0}
    data, name = deshpande.load_data(s)
    res = cm.run_cam_methods(deshpande.classifier_spec(s), data, deshpande.config(s), seed=0, device="cpu",
                             dataset=name)
    assert name == "oxford-pets (test)" and res.classifier is not None and len(res.classifier.history) == 1
    seg = {r["method"]: r for r in res.tables["segmentation"]}
    assert {"gradcam", "xgradcam", "CCAM (scratch)", "CCAM (classifier)"} <= set(seg)
    assert all(r["n_images"] == int(data["test"].labels.sum()) for r in seg.values())
    assert all(0.0 <= r["dice"] <= 1.0 for r in seg.values())
