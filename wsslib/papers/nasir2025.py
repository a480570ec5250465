"""Nasir, Zia, Nawaz, Moreira, *Weakly Supervised Pixel-Level Annotation with Visual
Interpretability* (arXiv 2502.17824, "AAX"): its published numbers and notebook 04's presets.

``PUBLISHED`` holds the paper's Fire and TBX11K rows (accuracy, IoU and, for AAX, the flag
rate) exactly as printed; ``None`` where the paper gives no number. The TBX11K single models use
MC dropout; ``ResNet50 (no MC)`` is the paper's model without it; MDVA-GAN and VA-GAN are the
paper's comparison methods. The paper does not say whether its AAX accuracy counts flagged images.

``PRESETS["cpu"]`` is the CPU default of notebook 04 (three small, different architectures from
scratch at 64 px; the paper's are ResNet50, EfficientNet-B0, DenseNet121 at 224 px, Adam 1e-4,
batch 16, at most 50 epochs with patience 5). ``PRESETS["real"]``: PolypGen's real frames with
the three ImageNet EfficientNet-Lites (Lite0, Lite1, Lite2), each trained as
:data:`~wsslib.papers.settings.REAL_DECISION_CLASSIFIER` says (a deeper frozen prefix and a
class-balanced loss, chosen on validation for the decision) (measured on a shared 2-core CPU: 23 min
for the notebook). ``PRESETS["paper"]``: the paper's TBX11K setup for a GPU (GPU time not measured here).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from wsslib.methods.aax import THETA_GRID, AAXConfig
from wsslib.models.training import ClassifierSpec, ClassifierTrainConfig
from wsslib.papers.settings import PAPER_SMOKE, REAL_DECISION_CLASSIFIER, REAL_SMOKE

__all__ = ["NOTEBOOK", "PRESETS", "PUBLISHED", "SMOKE", "SMOKE_FOR", "aax_config", "gate_sets", "member_specs",
           "paper_rows", "vit_spec"]

NOTEBOOK = "04_aax_decision"


def _row(dataset: str, method: str, accuracy: float | None, iou: float | None, flag_rate: float | None) -> dict:
    return {"method": method, "dataset": dataset, "accuracy": accuracy, "iou": iou, "flag_rate": flag_rate}


#: The paper's table rows (fractions), exactly as published.
PUBLISHED: list[dict] = [
    _row("Fire", "ResNet50", 0.937, 0.512, None),
    _row("Fire", "EfficientNet", 0.951, 0.551, None),
    _row("Fire", "DenseNet", 0.926, 0.496, None),
    _row("Fire", "AAX", 0.964, 0.647, 0.065),
    _row("TBX11K", "ResNet50 + MC", 0.891, 0.161, None),
    _row("TBX11K", "EfficientNet + MC", 0.903, 0.233, None),
    _row("TBX11K", "DenseNet + MC", 0.887, 0.150, None),
    _row("TBX11K", "ResNet50 (no MC)", 0.9261, None, None),
    _row("TBX11K", "MDVA-GAN", None, 0.2540, None),
    _row("TBX11K", "VA-GAN", None, 0.2915, None),
    _row("TBX11K", "AAX", 0.9304, 0.3607, 0.082),
]

PRESETS: dict[str, dict[str, Any]] = {
    "cpu": {
        "dataset": "synthetic",
        "data_root": None,
        "image_size": 64,
        "n_images": 600,
        "n_ood": 150,
        "models": ["smallcnn", "resnet18", "efficientnet_b0"],
        "epochs": [12, 6, 6],
        "lrs": [3e-3, 2e-3, 4e-3],
        "one_cycle": True,
        "batch_sizes": [32, 16, 16],
        "patience": None,
        "dropout": 0.5,
        "variance_lambda": 0.0,
        "k": 20,
        "cam_method": "xgradcam",
        "theta": 0.1,
        "p_cut": 0.5,
        "min_votes": 2,
        "min_uncertain": 2,
        "fusion": "intersection",
        "threshold_metric": "iou",
        "theta_grid": list(THETA_GRID),
        "review_cost": 0.5,
        "vit_replaces": "efficientnet_b0",
        "vit_epochs": 4,
        "vit_lr": 1e-3,
        "ood_k": 5,  # the feature gate (beyond the paper, wsslib.methods.ood): k-th nearest training image
        "ood_quantile": 0.975,  # ... its cut: the ensemble flags at most 2.5 % of the validation images
        "weights": None,
        "freeze": None,
        "class_weight": None,
        "max_steps": None,
    },
}
_R = REAL_DECISION_CLASSIFIER
PRESETS["real"] = {**PRESETS["cpu"], "dataset": "polypgen", "n_images": None, "n_ood": 100, "image_size": _R["image_size"],
                   "models": ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"],
                   "epochs": [_R["epochs"]] * 3, "lrs": [_R["lr"]] * 3, "batch_sizes": [_R["batch_size"]] * 3,
                   "one_cycle": _R["one_cycle"], "dropout": _R["dropout"], "weights": _R["weights"],
                   "freeze": _R["freeze"], "class_weight": _R["class_weight"], "vit_replaces": "efficientnet_lite2",
                   "vit_epochs": 3}
PRESETS["paper"] = {**PRESETS["cpu"], "dataset": "tbx11k", "n_images": None, "image_size": 224,
                    "models": ["resnet50", "efficientnet_b0", "densenet121"], "epochs": [50, 50, 50],
                    "lrs": [1e-4, 1e-4, 1e-4], "batch_sizes": [16, 16, 16], "one_cycle": False, "patience": 5,
                    "weights": "imagenet", "vit_epochs": 50, "vit_lr": 1e-4}

#: Smoke mode (seconds): tiny images, few of them, one or two epochs, fewer MC passes.
SMOKE: dict[str, Any] = {
    "image_size": 32,
    "n_images": 120,
    "n_ood": 30,
    "epochs": [2, 1, 1],
    "vit_epochs": 1,
    "batch_sizes": [32, 32, 32],
    "k": 8,
}
#: Smoke overlays of the other presets: the same code path, small images, one epoch / two steps.
SMOKE_FOR: dict[str, dict[str, Any]] = {
    "real": {**REAL_SMOKE, "epochs": [1, 1, 1], "vit_epochs": 1, "n_ood": 30, "k": 8},
    "paper": {**PAPER_SMOKE, "epochs": [1, 1, 1], "vit_epochs": 1, "n_ood": 30, "k": 8, "batch_sizes": [8, 8, 8]},
}


def paper_rows() -> list[dict]:
    """``PUBLISHED`` as main-table rows: ``method`` ``"<method> [paper, <dataset>]"``, ``source`` ``"paper"``."""
    return [{**r, "method": f"{r['method']} [paper, {r['dataset']}]", "source": "paper"} for r in PUBLISHED]


def aax_config(s: Mapping[str, Any]) -> AAXConfig:
    """The :class:`~wsslib.methods.aax.AAXConfig` of resolved settings ``s`` (notebook 04's knobs)."""
    return AAXConfig(k=s["k"], cam_method=s["cam_method"], theta=s["theta"], p_cut=s["p_cut"],
                     min_votes=s["min_votes"], min_uncertain=s["min_uncertain"], fusion=s["fusion"],
                     threshold_metric=s["threshold_metric"], theta_grid=tuple(s["theta_grid"]),
                     review_cost=s["review_cost"])


def _spec(s: Mapping[str, Any], name: str, epochs: int, lr: float, batch_size: int, pretrained: bool = True) -> ClassifierSpec:
    train = ClassifierTrainConfig(lr=lr, batch_size=batch_size, epochs=epochs, patience=s["patience"],
                                  variance_lambda=s["variance_lambda"], one_cycle=s["one_cycle"],
                                  freeze=s["freeze"] if pretrained else None, max_steps=s["max_steps"],
                                  class_weight=s["class_weight"])
    return ClassifierSpec(name, train=train, dropout=s["dropout"], weights=s["weights"] if pretrained else None)


def member_specs(s: Mapping[str, Any]) -> list[ClassifierSpec]:
    """One :class:`~wsslib.models.training.ClassifierSpec` per entry of ``s["models"]``.

    Raises:
        ValueError: ``models``, ``epochs``, ``lrs``, ``batch_sizes`` of different lengths, or a
            model named twice (the tables name rows by model).
    """
    lists = {k: list(s[k]) for k in ("models", "epochs", "lrs", "batch_sizes")}
    if len({len(v) for v in lists.values()}) != 1:
        raise ValueError("models, epochs, lrs and batch_sizes need one entry per model, got "
                         + ", ".join(f"{k}={v}" for k, v in lists.items()))
    if len(set(lists["models"])) != len(lists["models"]):
        raise ValueError(f"models must be different architectures (rows are named by model), got {lists['models']}")
    return [_spec(s, *a) for a in zip(*lists.values())]


def vit_spec(s: Mapping[str, Any]) -> ClassifierSpec:
    """The ViT-S of the swap ablation, from scratch (no frozen prefix), with the batch size of the
    member it replaces."""
    models = list(s["models"])
    if s["vit_replaces"] not in models:
        raise ValueError(f"vit_replaces={s['vit_replaces']!r} is not one of models={models}")
    return _spec(s, "vit_small", s["vit_epochs"], s["vit_lr"], list(s["batch_sizes"])[models.index(s["vit_replaces"])],
                 pretrained=False)


#: The other real polyp set of each real one: a new hospital for the out-of-distribution gate.
OTHER_REAL_SET = {"polypgen": "kvasir-seg", "kvasir-seg": "polypgen"}


def gate_sets(s: Mapping[str, Any], data: Mapping[str, Any], *, n_other: int = 200) -> dict[str, torch.Tensor]:
    """The image sets notebook 04's out-of-distribution gate table scores
    (:func:`wsslib.methods.ood.gate_table`), each ``(N, 3, S, S)`` at ``s["image_size"]``:

    * ``"in-distribution (test)"``: ``data["test"]`` (the gate should flag about 5 %);
    * ``"synthetic OOD family"``: ``data["ood"]``;
    * for a real data set: the other real polyp set's test images (``OTHER_REAL_SET``; skipped
      when not found) and non-endoscopy images (:func:`wsslib.data.other.non_endoscopy_images`:
      the Oxford-IIIT Pet test images when downloaded, else an offline set; the row names which).

    Args:
        s: resolved settings (``dataset``, ``image_size``, ``seed``).
        data: ``{split: TensorBatch}`` of :func:`wsslib.methods.aax.load_aax_splits`.
        n_other: the most non-endoscopy images.
    """
    from wsslib.core.errors import DatasetNotFoundError
    from wsslib.data import load_splits
    from wsslib.data.other import non_endoscopy_images, resize_images

    size = int(s["image_size"])
    sets = {"in-distribution (test)": data["test"].images}
    if "ood" in data:
        sets["synthetic OOD family"] = data["ood"].images
    other = OTHER_REAL_SET.get(s["dataset"])
    if other is not None:
        try:
            sets[f"{other} test (other hospital)"] = load_splits(other, ("test",), size=size)["test"].images
        except DatasetNotFoundError:
            pass
    if s["dataset"] != "synthetic":
        images, where = non_endoscopy_images(n=n_other, seed=int(s.get("seed") or 0))
        sets[f"non-endoscopy: {where}"] = resize_images([img for _, img in images], size)
    return sets
