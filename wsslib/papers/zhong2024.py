"""Zhong et al., *Weakly-supervised Medical Image Segmentation with Gaze Annotations* (GazeMedSeg,
MICCAI 2024; arXiv 2407.07406): its published numbers, per-data-set settings and notebook 01's presets.

``PUBLISHED`` holds the paper's Dice of its model (two UNets + consistency + LPP) on Kvasir-SEG and
NCI-ISBI, and the pseudo-label quality of its released notebook (threshold 0.5): Kvasir-SEG CRF
map 0.751, NCI-ISBI heatmap 0.792 (``methods.md`` section 3). The paper's code selected its
checkpoint on the test set (``selected_on`` ``"test"``).

``DATASET_SETTINGS`` are the paper code's per-data-set heatmap sigma (px on its 768 px canvas) and
pseudo-mask levels, used where the notebook's ``sigma`` / ``levels`` are left at ``None``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from wsslib.methods.gaze import CANVAS, GazeConfig, default_levels
from wsslib.methods.gaze import DATASET_SETTINGS as LIB_SETTINGS

__all__ = ["DATASET_SETTINGS", "NOTEBOOK", "PRESETS", "PUBLISHED", "SMOKE", "SMOKE_FOR", "dataset_settings", "gaze_config",
           "paper_rows"]

NOTEBOOK = "01_gaze_heatmaps"

#: The paper's rows, exactly as published (Dice as a fraction; ``None``: not given).
PUBLISHED: list[dict] = [
    {"method": "2 UNets + consistency + LPP", "table": "segmentation", "dataset": "Kvasir-SEG", "dice": 0.7780,
     "iou": None, "selected_on": "test"},
    {"method": "2 UNets + consistency + LPP", "table": "segmentation", "dataset": "NCI-ISBI", "dice": 0.7764,
     "iou": None, "selected_on": "test"},
    {"method": "CRF map > 0.5", "table": "pseudo_masks", "map": "CRF map", "threshold": 0.5, "dataset": "Kvasir-SEG",
     "dice": 0.751, "iou": None, "n_images": 1000},
    {"method": "heatmap > 0.5", "table": "pseudo_masks", "map": "heatmap", "threshold": 0.5, "dataset": "NCI-ISBI",
     "dice": 0.792, "iou": None},
]

#: The paper code's settings per data set, as notebook knobs: display name, heatmap sigma (px on
#: the 768 px canvas) and pseudo-mask levels; the values are the library's
#: (:data:`wsslib.methods.gaze.DATASET_SETTINGS`, one copy).
DATASET_SETTINGS: dict[str, dict[str, Any]] = {
    key: {"name": name, "sigma": round(float(LIB_SETTINGS[key]["sigma_frac"]) * CANVAS, 6),
          "levels": tuple(LIB_SETTINGS[key]["levels"])}
    for key, name in (("kvasir-seg", "Kvasir-SEG"), ("nci-isbi", "NCI-ISBI"), ("synthetic", "synthetic"))
}

PRESETS: dict[str, dict[str, Any]] = {
    "cpu": {
        "dataset": "synthetic",
        "data_root": None,
        "n_images": 600,
        "image_size": 128,
        "levels": None,  # the data set's (DATASET_SETTINGS); an int m: default_levels(m)
        "sigma": None,  # the data set's
        "use_duration": True,
        "crf": True,
        "crf_sxy": 80.0,
        "crf_max_side": 256,
        "crf_workers": 2,
        "single_threshold": 0.5,
        "iterations": 150,
        "batch_size": 8,
        "optimizer": "adam",
        "lr": None,
        "widths": [8, 16, 32, 64],
        "feat_ch": 16,
        "encoder": None,  # None: the paper's UNets from scratch; "efficientnet_lite0": frozen pretrained encoder
        "decoder_width": 64,
        "n_seeds": 1,  # > 1: also train the single / two-level / paper variants with seeds seed+1... (mean, spread)
        "lam": 3.0,
        "lam_warmup": 0.0,
        "eval_every": None,
        "sweep": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9],
        "n_show": 4,
    },
}

#: ``real``: Kvasir-SEG's 1000 images with the real fixations, 224 px, the frozen ImageNet
#: EfficientNet-Lite0 (offline registry package) under one feature-pyramid decoder per level
#: (:class:`~wsslib.models.encoder_unet.EncoderMultiLevelUNet`), the encoder's features cached once
#: per image and flip; Adam, batch 16, the paper's loss (BCE per level + lambda 3 x consistency,
#: with LPP); two seeds. Chosen on the validation split only (the comment below).
PRESETS["real"] = {
    **PRESETS["cpu"], "dataset": "kvasir-seg", "n_images": None, "image_size": 224, "crf_max_side": 256,
    "crf_workers": None, "iterations": 500, "batch_size": 16, "lr": 1e-3, "encoder": "efficientnet_lite0",
    "decoder_width": 32, "feat_ch": 16, "eval_every": 50, "n_seeds": 2,
}

#: What chose the ``real`` preset's decoder (validation split only, seed 0, 2 idle cores, one
#: cached encoder: 83 s for the 800 training images x 4 flips + 100 validation images, 908 MB):
#: best validation Dice of the single-level model, 400 iterations: width 32 / 16 features 0.701
#: (31 s), width 64 / 32 features 0.705 (67 s); the paper's model (2 levels, consistency, LPP),
#: width 32: 0.747 at iteration 350 of 400 (93 s), still rising, hence 500 iterations.


#: ``paper``: the paper's setup for a GPU (methods.md section 3): its plain UNets (MONAI BasicUNet
#: widths 64..1024, 31 M parameters per level) from scratch at 224 px, SGD 1e-2 Nesterov (momentum
#: 0.99, weight decay 4e-4, cosine to 1e-4), 15,000 iterations of batch 8, flips, levels
#: (0.5, 0.3), lambda 3, the CRF at native resolution. GPU time not measured here.
PRESETS["paper"] = {
    **PRESETS["cpu"], "dataset": "kvasir-seg", "n_images": None, "image_size": 224, "crf_max_side": None,
    "crf_workers": None, "iterations": 15000, "batch_size": 8, "optimizer": "sgd_paper", "lr": 1e-2,
    "widths": [64, 128, 256, 512, 1024], "feat_ch": 128, "eval_every": 500,
}

#: Smoke mode (seconds): tiny images, a few iterations of tiny UNets.
SMOKE: dict[str, Any] = {
    "n_images": 160,
    "image_size": 32,
    "iterations": 6,
    "widths": [8, 16],
    "feat_ch": 8,
    "eval_every": 3,
    "crf_workers": 1,
    "n_show": 2,
}

#: Smoke overlays of the other presets: the real preset's pretrained path at 64 px for a few
#: iterations; the paper's UNets at 32 px for two iterations (a step cap: the code path only).
SMOKE_FOR: dict[str, dict[str, Any]] = {
    "real": {"n_images": 160, "image_size": 64, "iterations": 4, "eval_every": 2, "crf_workers": 1, "n_show": 2,
             "n_seeds": 2, "decoder_width": 16, "feat_ch": 8},
    "paper": {"n_images": 160, "image_size": 32, "iterations": 2, "eval_every": 1, "crf_workers": 1, "n_show": 2},
}


def dataset_settings(dataset: str) -> dict[str, Any]:
    """``DATASET_SETTINGS[dataset]``; unknown sets get Kvasir-SEG's sigma and levels."""
    return DATASET_SETTINGS.get(dataset, {**DATASET_SETTINGS["kvasir-seg"], "name": dataset})


def gaze_config(s: Mapping[str, Any], variants: tuple[str, ...] = ("single", "none", "plain", "lpp")) -> GazeConfig:
    """The :class:`~wsslib.methods.gaze.GazeConfig` of resolved settings ``s`` (notebook 01's knobs).

    ``levels`` / ``sigma`` left at ``None`` take the data set's (:data:`DATASET_SETTINGS`); an int
    ``levels`` means :func:`~wsslib.methods.gaze.default_levels`.
    """
    ds = dataset_settings(s.get("dataset", "synthetic"))
    levels = s.get("levels")
    levels = ds["levels"] if levels is None else default_levels(levels) if isinstance(levels, int) else levels
    sigma = ds["sigma"] if s.get("sigma") is None else s["sigma"]
    return GazeConfig(
        image_size=int(s["image_size"]), levels=tuple(float(t) for t in levels), sigma=float(sigma),
        use_duration=bool(s["use_duration"]), crf=bool(s["crf"]), crf_sxy=float(s["crf_sxy"]),
        crf_max_side=s["crf_max_side"], workers=s["crf_workers"], single_threshold=float(s["single_threshold"]),
        sweep=tuple(float(t) for t in s["sweep"]), variants=variants, iterations=int(s["iterations"]),
        batch_size=int(s["batch_size"]), optimizer=s["optimizer"], lr=s["lr"], lam=float(s["lam"]),
        lam_warmup=float(s["lam_warmup"]), eval_every=s["eval_every"], widths=tuple(int(w) for w in s["widths"]),
        feat_ch=int(s["feat_ch"]), encoder=s.get("encoder"), decoder_width=int(s.get("decoder_width", 64)))


def paper_rows(table: str) -> list[dict]:
    """``PUBLISHED`` rows of one table (``"segmentation"`` or ``"pseudo_masks"``) as table rows:
    ``method`` ``"<method> [paper]"`` (``[paper code]`` for the pseudo-masks), ``source`` ``"paper"``."""
    tag = "[paper code]" if table == "pseudo_masks" else "[paper]"
    rows = []
    for r in PUBLISHED:
        if r["table"] == table:
            row = {k: v for k, v in r.items() if k != "table"}
            name = r["method"] if sum(q["table"] == table and q["method"] == r["method"] for q in PUBLISHED) == 1 \
                else f"{r['method']}, {r['dataset']}"
            rows.append({**row, "method": f"{name} {tag}", "source": "paper"})
    return rows
