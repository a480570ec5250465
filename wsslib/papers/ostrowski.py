"""Ostrowski, Prabakaran & Shafique, "Exploring Weakly Supervised Semantic Segmentation Ensembles
for Medical Imaging Systems" (EnsembleCAM): notebook ``03_cam_ensembles``.

``PUBLISHED``: best average DSC / mIoU of their Tables 1 and 2 (``methods.md`` section 4), as
fractions (the paper prints percent): "DSC" is their ``2 mIoU / (1 + mIoU)`` of the fg/bg mIoU
pooled over a fold, not a per-image Dice. Model A is their ResNet-34, model B their ResNet-50.
``dsc_paper_sd``: the spread of DSC over folds they report for 'and'.

``PRESETS``: ``cpu`` (two small CNNs from scratch on synthetic images); ``real`` (PolypGen's real
frames, ImageNet EfficientNet-Lite0 and Lite1 as models A and B, trained as
:data:`~wsslib.papers.settings.REAL_CLASSIFIER` says, 3 folds: 23 min measured on a shared 2-core CPU);
``paper`` (BraTS 2020 at 128 px, ImageNet ResNet-34 and ResNet-50; the paper gives no optimiser or
epochs: Adam 1e-4, batch 32, 20 epochs with patience 5 here; GPU time not measured here).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from wsslib.methods.ensembles import EnsembleConfig
from wsslib.models.training import ClassifierSpec, ClassifierTrainConfig
from wsslib.papers.settings import PAPER_SMOKE, REAL_CLASSIFIER, REAL_SMOKE

__all__ = ["BACKBONES", "NOTEBOOK", "PAPER_THRESHOLDS", "PRESETS", "PUBLISHED", "SMOKE", "SMOKE_FOR", "ensemble_config"]

NOTEBOOK = "03_cam_ensembles"

#: the paper's backbone of each ensemble member
BACKBONES = {"model A": "resnet34", "model B": "resnet50"}
#: the thresholds of both models the paper's Fig. 4 found best for 'and', on both data sets
PAPER_THRESHOLDS = (0.7, 0.7)

_ROWS = {  # (DSC, mIoU) as fractions
    "BraTS 2020": {"Empty": (0.646, 0.477), "model A": (0.673, 0.507), "model B": (0.685, 0.521),
                   "or": (0.678, 0.513), "<": (0.683, 0.519), ">": (0.686, 0.522), "and": (0.703, 0.542)},
    "Decathlon prostate": {"Empty": (0.655, 0.487), "model A": (0.780, 0.638), "model B": (0.761, 0.614),
                           "or": (0.773, 0.630), "<": (0.777, 0.635), ">": (0.784, 0.644), "and": (0.793, 0.657)},
}
_AND_SD = {"BraTS 2020": 0.015, "Decathlon prostate": 0.031}

#: the paper's rows: method, dataset, backbone, dsc_paper, miou_fg_bg, dsc_paper_sd ('and' only)
PUBLISHED: list[dict] = [
    {"method": method, "dataset": ds, "backbone": BACKBONES.get(method), "dsc_paper": dsc, "miou_fg_bg": miou,
     "dsc_paper_sd": _AND_SD[ds] if method == "and" else None}
    for ds, rows in _ROWS.items() for method, (dsc, miou) in rows.items()
]

PRESETS: dict[str, dict[str, Any]] = {
    "cpu": {
        "dataset": "synthetic",  # or polypgen, decathlon-prostate, brats2020
        "data_root": None,
        "image_size": 80,  # paper: 128
        "n_images": 600,  # synthetic only
        "model_a": "smallcnn",  # paper: resnet34
        "model_b": "smallcnn",  # paper: resnet50
        "width_a": 16,
        "width_b": 8,
        "dropout": 0.2,
        "epochs": 8,
        "lr": 2e-3,
        "batch_size": 32,
        "n_folds": 3,  # paper: 3
        "grid_step": 0.1,  # paper: 0.1
        "select_metric": "dsc_paper",  # paper: their DSC
        "cam_method": "gradcam",  # paper: Grad-CAM on the last block
        "weights": None,
        "freeze": None,
        "class_weight": None,
        "one_cycle": True,
        "patience": None,
        "max_steps": None,
    },
}
PRESETS["real"] = {**PRESETS["cpu"], "dataset": "polypgen", "n_images": None, "model_a": "efficientnet_lite0",
                   "model_b": "efficientnet_lite1", **REAL_CLASSIFIER}
PRESETS["paper"] = {**PRESETS["cpu"], "dataset": "brats2020", "n_images": None, "image_size": 128,
                    "model_a": "resnet34", "model_b": "resnet50", "weights": "imagenet", "dropout": 0.5, "epochs": 20,
                    "lr": 1e-4, "one_cycle": False, "patience": 5}

#: seconds, not minutes: tiny images, few of them, two epochs
SMOKE: dict[str, Any] = {"image_size": 48, "n_images": 150, "epochs": 2, "width_a": 8, "width_b": 8, "batch_size": 16}
#: Smoke overlays of the other presets: the same code path, small images, one epoch / two steps.
SMOKE_FOR: dict[str, dict[str, Any]] = {"real": REAL_SMOKE, "paper": PAPER_SMOKE}


def ensemble_config(s: Mapping[str, Any]) -> EnsembleConfig:
    """The :class:`~wsslib.methods.ensembles.EnsembleConfig` of resolved notebook settings.

    Args:
        s: the notebook's settings (:func:`wsslib.papers.notebook_settings`), or any mapping with
            the knobs of ``PRESETS["cpu"]``.

    Example:
        >>> cfg = ensemble_config(PRESETS["cpu"])
        >>> [m.options for m in cfg.models], cfg.models[0].train.epochs, cfg.n_folds
        ([{'width': 16}, {'width': 8}], 8, 3)
    """
    train = ClassifierTrainConfig(lr=s["lr"], batch_size=s["batch_size"], epochs=s["epochs"], patience=s["patience"],
                                  one_cycle=s["one_cycle"], freeze=s["freeze"], max_steps=s["max_steps"],
                                  class_weight=s["class_weight"])
    specs = tuple(
        ClassifierSpec(name, train=train, dropout=s["dropout"], weights=s["weights"],
                       options={"width": width} if name == "smallcnn" else {},
                       label=f"{name}/{width}" if name == "smallcnn" else name)
        for name, width in ((s["model_a"], s["width_a"]), (s["model_b"], s["width_b"]))
    )
    return EnsembleConfig(models=specs, cam_method=s["cam_method"], grid_step=s["grid_step"],
                          select_metric=s["select_metric"], n_folds=s["n_folds"])
