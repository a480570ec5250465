"""Networks and their training: classifiers with a dropout head (``classifiers``), UNets
(``unet``), the classifier trainer (``training``).

>>> from wsslib.models import create_model
>>> create_model("smallcnn", num_classes=2).num_classes
2
"""

from __future__ import annotations

from wsslib.models.classifiers import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Backbone,
    Classifier,
    WeightsNotFoundWarning,
    create_model,
    list_models,
    load_checkpoint,
    register_model,
    save_checkpoint,
    vit_reshape_transform,
)

__all__ = [
    "IMAGENET_MEAN", "IMAGENET_STD", "Backbone", "Classifier", "WeightsNotFoundWarning", "create_model",
    "list_models", "load_checkpoint", "register_model", "save_checkpoint", "vit_reshape_transform",
]
