"""Deshpande, Hota, Pillai, Garg, Goyenka, *Weakly Supervised Segmentation using Activation
Methods* (Arizona State): its published numbers and notebook 02's presets.

``PUBLISHED`` holds the figures of the authors' own notebooks (per-image Dice and IoU, fractions):
Oxford-IIIT Pet (label = species, ImageNet ResNet50 at 224 px) and Kvasir-SEG (CCAM from their
polyp classifier; every other method <= 0.074, given as no row). Their CCAM was trained and
scored on the same images.

``PRESETS["cpu"]`` is notebook 02's CPU default: the small CNN from scratch at 96 px on 600
synthetic images, 6 epochs, and 3 Adam epochs of CCAM. ``PRESETS["real"]``: the ImageNet
EfficientNet-Lite0 (:data:`~wsslib.papers.settings.REAL_CLASSIFIER`) trained on PolypGen's labelled
frames, its CAMs scored on the Kvasir-SEG test split (thresholds chosen on PolypGen validation);
CCAM from the classifier's backbone (2 epochs) and from a small CNN from scratch (the scratch Lite0
would cost 19 s per step on 2 cores and has nothing to start from). ``PRESETS["paper"]``: their
setup, Oxford-IIIT Pet with ``model_name="resnet50", weights="imagenet", image_size=224,
epochs=10, lr=1e-4, ccam_epochs=10, ccam_optimizer="sgd"`` (GPU time not measured here).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from wsslib.data import load_splits
from wsslib.data.base import TensorBatch
from wsslib.explain.ccam import CCAMTrainConfig
from wsslib.methods.cam_methods import CAMMethodsConfig
from wsslib.models.training import ClassifierSpec, ClassifierTrainConfig
from wsslib.papers.settings import PAPER_SMOKE, REAL_CLASSIFIER, REAL_SMOKE

__all__ = ["NOTEBOOK", "PRESETS", "PUBLISHED", "SMOKE", "SMOKE_FOR", "classifier_spec", "config", "load_data", "paper_rows"]

NOTEBOOK = "02_cam_methods"

#: The authors' figures (Dice, IoU), exactly as their notebooks print them.
PUBLISHED: list[dict] = [
    {"method": "CCAM", "dataset": "Oxford-IIIT Pet", "dice": 0.619, "iou": 0.463},
    {"method": "FullGrad", "dataset": "Oxford-IIIT Pet", "dice": 0.604, "iou": 0.446},
    {"method": "HiResCAM", "dataset": "Oxford-IIIT Pet", "dice": 0.410, "iou": 0.297},
    {"method": "CCAM", "dataset": "Kvasir-SEG", "dice": 0.230, "iou": 0.145},
]

PRESETS: dict[str, dict[str, Any]] = {
    "cpu": {
        "dataset": "synthetic",
        "test_dataset": None,
        "test_split": "test",
        "data_root": None,
        "test_data_root": None,
        "image_size": 96,
        "n_images": 600,
        "model_name": "smallcnn",
        "weights": None,
        "dropout": 0.2,
        "epochs": 6,
        "lr": 2e-3,
        "batch_size": 32,
        "cam_methods": ["gradcam", "hirescam", "fullgrad", "xgradcam", "gradcam++"],
        "threshold_metric": "dice",
        "ccam_inits": ["scratch", "classifier"],
        "ccam_backbone": None,
        "ccam_epochs": 3,
        "ccam_lr": 1e-3,
        "ccam_optimizer": "adam",
        "ccam_batch_size": 32,
        "ccam_alpha": 0.25,
        "polarity_method": "deletion",
        "their_cam_threshold": 0.58,
        "their_ccam_threshold": 0.59,
        "n_show": 5,
        "freeze": None,
        "class_weight": None,
        "one_cycle": True,
        "patience": None,
        "max_steps": None,
    },
}
PRESETS["real"] = {**PRESETS["cpu"], "dataset": "polypgen", "n_images": None, "test_dataset": "kvasir-seg",
                   "model_name": "efficientnet_lite0", **REAL_CLASSIFIER, "ccam_backbone": "smallcnn",
                   "ccam_epochs": 2}
PRESETS["paper"] = {**PRESETS["cpu"], "dataset": "oxford-pets", "n_images": None, "model_name": "resnet50",
                    "weights": "imagenet", "image_size": 224, "epochs": 10, "lr": 1e-4, "one_cycle": False,
                    "ccam_backbone": "resnet50", "ccam_epochs": 10, "ccam_optimizer": "sgd"}

#: Smoke mode (seconds): small images, fewer of them, fewer epochs.
SMOKE: dict[str, Any] = {"image_size": 64, "n_images": 240, "epochs": 3, "ccam_epochs": 2, "batch_size": 32, "n_show": 3}
#: Smoke overlays of the other presets: the same code path, small images, one epoch / two steps.
SMOKE_FOR: dict[str, dict[str, Any]] = {"real": {**REAL_SMOKE, "ccam_epochs": 1, "n_show": 3},
                                        "paper": {**PAPER_SMOKE, "ccam_epochs": 1, "n_show": 3}}


def paper_rows() -> list[dict]:
    """``PUBLISHED`` as table rows: ``method`` ``"<method> [paper, <dataset>]"``, ``source`` ``"paper"``."""
    return [{**r, "method": f"{r['method']} [paper, {r['dataset']}]", "source": "paper"} for r in PUBLISHED]


def classifier_spec(s: Mapping[str, Any]) -> ClassifierSpec:
    """The classifier of resolved settings ``s``: Adam (one-cycle or constant rate), early stopping
    when ``patience`` is set, a frozen and cached prefix when ``freeze`` is set."""
    train = ClassifierTrainConfig(lr=s["lr"], batch_size=s["batch_size"], epochs=s["epochs"], patience=s["patience"],
                                  one_cycle=s["one_cycle"], freeze=s["freeze"], max_steps=s["max_steps"],
                                  class_weight=s["class_weight"])
    return ClassifierSpec(s["model_name"], train=train, dropout=s["dropout"], weights=s["weights"])


def config(s: Mapping[str, Any]) -> CAMMethodsConfig:
    """The :class:`~wsslib.methods.cam_methods.CAMMethodsConfig` of resolved settings ``s``."""
    ccam = CCAMTrainConfig(epochs=s["ccam_epochs"], lr=s["ccam_lr"], batch_size=s["ccam_batch_size"],
                           optimizer=s["ccam_optimizer"], alpha=s["ccam_alpha"], max_steps=s["max_steps"])
    return CAMMethodsConfig(cam_methods=tuple(s["cam_methods"]), threshold_metric=s["threshold_metric"],
                            ccam_inits=tuple(s["ccam_inits"]), ccam_backbone=s["ccam_backbone"], ccam=ccam,
                            polarity_method=s["polarity_method"], fixed_cam_threshold=s["their_cam_threshold"],
                            fixed_ccam_threshold=s["their_ccam_threshold"])


def load_data(s: Mapping[str, Any]) -> tuple[dict[str, TensorBatch], str]:
    """The splits of ``s`` and the test data's name.

    ``train`` and ``valid`` come from ``s["dataset"]``; ``test`` from its test split, or from
    ``s["test_split"]`` of ``s["test_dataset"]`` when given (e.g. PolypGen -> Kvasir-SEG).
    """
    size, seed = s["image_size"], s.get("seed", 0)
    if s["test_dataset"] is None:
        data = load_splits(s["dataset"], ("train", "valid", "test"), root=s["data_root"], size=size,
                           n=s["n_images"], seed=seed)
        return data, f"{s['dataset']} (test)"
    data = load_splits(s["dataset"], ("train", "valid"), root=s["data_root"], size=size, n=s["n_images"], seed=seed)
    data["test"] = load_splits(s["test_dataset"], (s["test_split"],), root=s["test_data_root"], size=size)[s["test_split"]]
    return data, f"{s['test_dataset']} ({s['test_split']})"
