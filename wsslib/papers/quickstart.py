"""Notebook 00 (quick start): no paper, so no published numbers; its presets.

``PRESETS["cpu"]``: the small CNN from scratch on 1000 synthetic images at 128 px, 12 epochs,
XGrad-CAM, the threshold chosen on validation. ``PRESETS["real"]``: the ImageNet EfficientNet-Lite0
on PolypGen's real frames (:data:`~wsslib.papers.settings.REAL_CLASSIFIER`: frozen early stages,
cached features; 207 s measured on a shared 2-core CPU). ``PRESETS["paper"]``: no paper defines this
walk-through; it is the AAX paper's single classifier (ResNet50, ImageNet, 224 px, Adam 1e-4,
batch 16, at most 50 epochs, patience 5) on PolypGen, for a GPU (GPU time not measured here).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from wsslib.models.training import ClassifierSpec, ClassifierTrainConfig
from wsslib.papers.settings import PAPER_SMOKE, REAL_CLASSIFIER, REAL_SMOKE

__all__ = ["NOTEBOOK", "PRESETS", "PUBLISHED", "SMOKE", "SMOKE_FOR", "classifier_spec"]

NOTEBOOK = "00_quickstart"

#: No paper: nothing published.
PUBLISHED: list[dict] = []

PRESETS: dict[str, dict[str, Any]] = {
    "cpu": {
        "dataset": "synthetic",
        "data_root": None,
        "image_size": 128,
        "n_images": 1000,
        "model_name": "smallcnn",
        "dropout": 0.2,
        "epochs": 12,
        "lr": 2e-3,
        "batch_size": 32,
        "cam_method": "xgradcam",
        "threshold_metric": "dice",
        "weights": None,
        "freeze": None,
        "class_weight": None,
        "one_cycle": True,
        "patience": None,
        "max_steps": None,
    },
}
PRESETS["real"] = {**PRESETS["cpu"], "dataset": "polypgen", "n_images": None, "model_name": "efficientnet_lite0",
                   **REAL_CLASSIFIER}
PRESETS["paper"] = {**PRESETS["real"], "model_name": "resnet50", "freeze": None, "class_weight": None, "lr": 1e-4, "epochs": 50,
                    "patience": 5}

#: Smoke mode (seconds): a tiny model on a few small images.
SMOKE: dict[str, Any] = {"image_size": 64, "n_images": 400, "model_name": "smallcnn", "epochs": 6, "batch_size": 16}
#: Smoke overlays of the other presets: the same code path, small images, one epoch / two steps.
SMOKE_FOR: dict[str, dict[str, Any]] = {"real": REAL_SMOKE, "paper": PAPER_SMOKE}


def classifier_spec(s: Mapping[str, Any]) -> ClassifierSpec:
    """The classifier of resolved settings ``s``: Adam (one-cycle or constant rate), flips, early
    stopping when ``patience`` is set, a frozen and cached prefix when ``freeze`` is set."""
    train = ClassifierTrainConfig(lr=s["lr"], batch_size=s["batch_size"], epochs=s["epochs"], patience=s["patience"],
                                  one_cycle=s["one_cycle"], freeze=s["freeze"], max_steps=s["max_steps"],
                                  class_weight=s["class_weight"])
    return ClassifierSpec(s["model_name"], train=train, dropout=s["dropout"], weights=s["weights"])
