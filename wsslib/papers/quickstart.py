"""Notebook 00 (quick start): no paper, so no published numbers; its presets.

``PRESETS["cpu"]``: the small CNN from scratch on 1000 synthetic images at 128 px, 12 epochs,
XGrad-CAM, the threshold chosen on validation.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from wsslib.models.training import ClassifierSpec, ClassifierTrainConfig

__all__ = ["NOTEBOOK", "PRESETS", "PUBLISHED", "SMOKE", "classifier_spec"]

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
    },
}

#: Smoke mode (seconds): a tiny model on a few small images.
SMOKE: dict[str, Any] = {"image_size": 64, "n_images": 400, "model_name": "smallcnn", "epochs": 6, "batch_size": 16}


def classifier_spec(s: Mapping[str, Any]) -> ClassifierSpec:
    """The classifier of resolved settings ``s``: Adam with a one-cycle schedule, flips, no early stopping."""
    train = ClassifierTrainConfig(lr=s["lr"], batch_size=s["batch_size"], epochs=s["epochs"], patience=None,
                                  one_cycle=True)
    return ClassifierSpec(s["model_name"], train=train, dropout=s["dropout"])
