"""Image classifiers with a dropout head: the backbones of the ensembles (AAX and friends).

Every model is a :class:`Classifier`::

    (B, 3, H, W) float in [0, 1]
      -> normalize   (ImageNet mean/std, or the backbone's own; buffers: callers never normalise)
      -> features    (backbone feature map, (B, C, h, w))
      -> pool        (global average pooling, (B, C))            = ``embed(x)``
      -> dropout     (nn.Dropout(p), the only stochastic module)
      -> fc          (nn.Linear(C, num_classes), logits (B, num_classes)) = ``head(z)``

Design rule: dropout sits *after* pooling and the backbone has no stochastic module of its own
(torchvision's internal dropout / stochastic depth in EfficientNet and the ViT is set to p=0), so
``embed`` is deterministic even in train mode and a Monte Carlo dropout pass only re-samples the
head (:mod:`wsslib.explain.uncertainty` uses this to sample K passes for the price of one backbone pass).

Models are built by name through a registry::

    >>> from wsslib.models import create_model, list_models
    >>> list_models()
    ['densenet121', 'efficientnet_b0', 'resnet18', 'resnet34', 'resnet50', 'smallcnn', 'vit_small']
    >>> m = create_model("smallcnn", num_classes=2, dropout=0.5)
    >>> m(torch.rand(2, 3, 64, 64)).shape
    torch.Size([2, 2])

``weights="imagenet"`` loads torchvision's ImageNet weights from a local file only (never from
the network): the file named by torchvision's URL is looked for in ``weights_dir``, then
``$WSSLIB_WEIGHTS_DIR``, then ``torch.hub.get_dir()/checkpoints``; when it is absent a
:class:`WeightsNotFoundWarning` says which file was looked for where, and the model keeps its
random initialisation.
"""

from __future__ import annotations

import inspect
import io
import math
import os
import re
import sys
import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
from torch import nn

from wsslib.core.errors import DataError, ShapeError
from wsslib.core.registry import Registry
from wsslib.core.utils import atomic_write, check_shape, rng_scope

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Backbone",
    "Classifier",
    "WeightsNotFoundWarning",
    "create_model",
    "list_models",
    "load_checkpoint",
    "register_model",
    "save_checkpoint",
    "vit_reshape_transform",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
WEIGHTS_ENV = "WSSLIB_WEIGHTS_DIR"


class WeightsNotFoundWarning(UserWarning):
    """``weights="imagenet"`` was asked for but no local weight file exists: random init is kept."""


def _warn_weights(msg: str) -> None:
    """Warn with the location of the first caller outside this module (the create_model call)."""
    level, frame = 2, sys._getframe(1)
    while frame is not None and frame.f_globals.get("__name__") == __name__:
        frame, level = frame.f_back, level + 1
    warnings.warn(msg, WeightsNotFoundWarning, stacklevel=level)


# --------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel; mean/std are (1, 3, 1, 1) buffers (move with the model)."""

    def __init__(self, mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: (B, 3, H, W)`` in [0, 1] -> ``(B, 3, H, W)`` normalised."""
        return (x - self.mean) / self.std


class GlobalAvgPool(nn.Module):
    """``(B, C, h, w) -> (B, C)``: mean over the spatial positions."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


@dataclass
class Backbone:
    """What a registered builder returns.

    Attributes:
        features: module mapping a normalised ``(B, 3, H, W)`` batch to a ``(B, C, h, w)`` map.
        num_features: ``C``.
        target_layer: the module (inside ``features``) whose output CAM methods use.
        reshape_transform: ``None`` when ``target_layer`` outputs ``(B, C, h, w)``; else a
            function turning its output into ``(B, C, h, w)`` (pytorch-grad-cam convention).
        normalize: the input normalisation the weights were trained with (``[0, 1]`` ->
            ``features``' input); ``None`` = ImageNet mean/std (:class:`Normalize`).
    """

    features: nn.Module
    num_features: int
    target_layer: nn.Module
    reshape_transform: Callable[[torch.Tensor], torch.Tensor] | None = None
    normalize: nn.Module | None = None


class Classifier(nn.Module):
    """Backbone + global average pooling + dropout + linear head.

    Args:
        features: normalised ``(B, 3, H, W)`` -> ``(B, C, h, w)`` feature extractor
            (deterministic: no dropout of its own).
        num_features: ``C``.
        target_layer: module inside ``features`` whose output CAMs use.
        num_classes: number of logits (default 2: Healthy, Diseased; P(Diseased) = softmax[:, 1]).
        dropout: dropout probability ``p`` of the head, ``0 <= p < 1``.
        reshape_transform: see :class:`Backbone`.
        name: registry name (``"custom"`` when built by hand).
        normalize: input normalisation module (``None``: ImageNet mean/std; the EfficientNet-Lite
            backbones pass their own, ``(255 x - 127) / 128``).

    Shapes:
        ``forward(x)``: ``x (B, 3, H, W)`` float in [0, 1] -> logits ``(B, num_classes)``.
        ``embed(x)``: ``(B, 3, H, W)`` -> ``(B, C)``; ``head(z)``: ``(B, C)`` -> ``(B, num_classes)``.

    Example:
        >>> m = create_model("smallcnn")
        >>> z = m.embed(torch.rand(2, 3, 64, 64)); z.shape
        torch.Size([2, 128])
        >>> m.head(z).shape
        torch.Size([2, 2])
    """

    def __init__(
        self,
        features: nn.Module,
        num_features: int,
        target_layer: nn.Module,
        num_classes: int = 2,
        dropout: float = 0.5,
        reshape_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        name: str = "custom",
        normalize: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.normalize = Normalize() if normalize is None else normalize
        self.features = features
        self.pool = GlobalAvgPool()
        self.dropout = nn.Dropout(float(dropout))
        self.fc = nn.Linear(num_features, int(num_classes))
        self.target_layer = target_layer
        self.reshape_transform = reshape_transform
        self.name = name
        self.num_features = int(num_features)
        self.num_classes = int(num_classes)
        # filled in by create_model, read by save_checkpoint
        self.config: dict[str, Any] = {"name": name, "num_classes": int(num_classes), "dropout": float(dropout), "kwargs": {}}

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features: ``x (B, 3, H, W)`` float in [0, 1] -> ``(B, C)``. Deterministic."""
        check_shape("x", x, (None, 3, None, None))
        return self.pool(self.features(self.normalize(x)))

    def head(self, z: torch.Tensor) -> torch.Tensor:
        """Dropout + linear layer: ``z (B, C)`` -> logits ``(B, num_classes)``."""
        check_shape("z", z, (None, self.num_features))
        return self.fc(self.dropout(z))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x (B, 3, H, W)`` float in [0, 1] -> logits ``(B, num_classes)``."""
        return self.head(self.embed(x))

    def extra_repr(self) -> str:
        return f"name={self.name!r}, num_features={self.num_features}, num_classes={self.num_classes}"


def _disable_internal_dropout(module: nn.Module) -> nn.Module:
    """Set every dropout / stochastic-depth probability inside ``module`` to 0 (in place).

    Covers ``nn.Dropout*``, ``torchvision.ops.StochasticDepth`` and the attention dropout of
    ``nn.MultiheadAttention``, so the module is deterministic in train mode too.
    """
    from torchvision.ops import StochasticDepth

    for m in module.modules():
        if isinstance(m, nn.modules.dropout._DropoutNd | StochasticDepth):
            m.p = 0.0
        elif isinstance(m, nn.MultiheadAttention):
            m.dropout = 0.0
    return module


# --------------------------------------------------------------------------------------------
# ImageNet weights, from local files only
# --------------------------------------------------------------------------------------------


def _weight_dirs(weights_dir: str | Path | None) -> list[Path]:
    dirs: list[Path] = []
    if weights_dir is not None:
        dirs.append(Path(weights_dir).expanduser())
    env = os.environ.get(WEIGHTS_ENV)
    if env:
        dirs.append(Path(env).expanduser())
    dirs.append(Path(torch.hub.get_dir()) / "checkpoints")
    return dirs


_DENSENET_OLD_KEY = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")


def _fix_densenet_keys(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision's DenseNet files use old keys (``norm.1.weight``); rename to ``norm1.weight``."""
    out = OrderedDict()
    for key, value in state_dict.items():
        m = _DENSENET_OLD_KEY.match(key)
        out[m.group(1) + m.group(2) if m else key] = value
    return out


def _load_imagenet(
    tv_model: nn.Module,
    weights_enum: Any,
    name: str,
    weights_dir: str | Path | None,
    fix_keys: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None,
) -> bool:
    """Load the first local file of ``weights_enum`` (DEFAULT first) into ``tv_model``.

    Never downloads. Returns True when weights were loaded; warns and returns False otherwise.

    Raises:
        DataError: a weight file exists but cannot be read or does not fit the model.
    """
    members = [weights_enum.DEFAULT] + [w for w in weights_enum if w is not weights_enum.DEFAULT]
    files = [os.path.basename(urlparse(w.url).path) for w in members]
    dirs = _weight_dirs(weights_dir)
    for fname in files:
        for d in dirs:
            path = d / fname
            if not path.is_file():
                continue
            try:
                sd = torch.load(path, weights_only=True, map_location="cpu")
            except Exception as e:  # corrupt / truncated / not a torch file
                raise DataError(f"{path}: cannot read ImageNet weights for {name} ({type(e).__name__}: {e}); delete or replace the file") from e
            if not isinstance(sd, dict):
                raise DataError(f"{path}: expected a state_dict (dict of tensors) for {name}, got {type(sd).__name__}")
            if fix_keys is not None:
                sd = fix_keys(sd)
            try:
                tv_model.load_state_dict(sd)
            except RuntimeError as e:
                raise DataError(f"{path}: weights do not fit torchvision's {name}: {e}") from e
            return True
    where = ", ".join(str(d) for d in dirs)
    _warn_weights(
        f"ImageNet weights for {name} not found: looked for {' or '.join(files)} in {where}. "
        f"No download is attempted. To use them, fetch {members[0].url} on a machine with network "
        f"access and put the file in one of those folders (or pass weights_dir=... / set ${WEIGHTS_ENV}). "
        "Continuing with random initialisation."
    )
    return False


def _no_imagenet(name: str) -> None:
    _warn_weights(f"No ImageNet weights exist for {name}; continuing with random initialisation.")


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------

BuilderFn = Callable[..., Backbone]
_REGISTRY: Registry[BuilderFn] = Registry("model")


def register_model(name: str) -> Callable[[BuilderFn], BuilderFn]:
    """Decorator registering a backbone builder under ``name``.

    The builder is called as ``fn(pretrained: bool, weights_dir: str | Path | None, **kwargs)``
    and returns a :class:`Backbone`; :func:`create_model` adds normalisation, pooling, dropout
    and the linear head. When ``pretrained`` is True it loads local weights or warns
    (:class:`WeightsNotFoundWarning`), never downloads.

    Example:
        >>> @register_model("tiny")  # doctest: +SKIP
        ... def _tiny(pretrained, weights_dir, **kw):
        ...     conv = nn.Conv2d(3, 8, 3, padding=1)
        ...     return Backbone(features=conv, num_features=8, target_layer=conv)
    """

    return _REGISTRY.register(name)


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`, sorted."""
    return _REGISTRY.names()


def create_model(
    name: str,
    num_classes: int = 2,
    dropout: float = 0.5,
    weights: Literal["imagenet"] | None = None,
    weights_dir: str | Path | None = None,
    seed: int = 0,
    image_size: int | None = None,
    **kwargs: Any,
) -> Classifier:
    """Build a registered model as a :class:`Classifier`.

    Args:
        name: one of :func:`list_models`.
        num_classes: logits per image (default 2).
        dropout: head dropout probability, ``0 <= p < 1``.
        weights: ``None`` (random init) or ``"imagenet"`` (local torchvision file, see module doc;
            warns and keeps random init when absent).
        weights_dir: extra folder searched first for the weight file.
        seed: seeds the random initialisation (of the head, and of the backbone without
            weights); the caller's global random state is left untouched (:func:`rng_scope`).
        image_size: the input size, passed on to the builders that need it (``vit_small``'s
            position embedding) and ignored by the others, so callers need no per-model shim.
        **kwargs: builder options (``vit_small``: ``image_size``, default 224).

    Returns:
        The model, in train mode (as torch modules are after construction).

    Raises:
        ValueError: unknown name or weights value.
        DataError: a weight file exists but is unusable.
    """
    builder = _REGISTRY.get(name)
    if weights not in (None, "imagenet"):
        raise ValueError(f"weights must be None or 'imagenet', got {weights!r}")
    if image_size is not None and "image_size" in inspect.signature(builder).parameters:
        kwargs = {**kwargs, "image_size": int(image_size)}
    with rng_scope(seed):
        bb = builder(pretrained=weights == "imagenet", weights_dir=weights_dir, **kwargs)
        model = Classifier(
            bb.features,
            bb.num_features,
            bb.target_layer,
            num_classes=num_classes,
            dropout=dropout,
            reshape_transform=bb.reshape_transform,
            name=name,
            normalize=bb.normalize,
        )
    model.config = {"name": name, "num_classes": int(num_classes), "dropout": float(dropout), "kwargs": dict(kwargs)}
    return model


# --------------------------------------------------------------------------------------------
# Backbones
# --------------------------------------------------------------------------------------------


def _resnet(name: str, pretrained: bool, weights_dir: str | Path | None) -> Backbone:
    import torchvision.models as tvm

    tv = getattr(tvm, name)(weights=None)
    if pretrained:
        enum = {"resnet18": tvm.ResNet18_Weights, "resnet34": tvm.ResNet34_Weights, "resnet50": tvm.ResNet50_Weights}[name]
        _load_imagenet(tv, enum, name, weights_dir)
    parts = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]
    features = nn.Sequential(OrderedDict((p, getattr(tv, p)) for p in parts))
    return Backbone(features, tv.fc.in_features, features.layer4)


@register_model("resnet18")
def _resnet18(pretrained: bool = False, weights_dir: str | Path | None = None) -> Backbone:
    """ResNet-18; target layer ``features.layer4`` (512 channels, stride 32)."""
    return _resnet("resnet18", pretrained, weights_dir)


@register_model("resnet34")
def _resnet34(pretrained: bool = False, weights_dir: str | Path | None = None) -> Backbone:
    """ResNet-34; target layer ``features.layer4`` (512 channels, stride 32)."""
    return _resnet("resnet34", pretrained, weights_dir)


@register_model("resnet50")
def _resnet50(pretrained: bool = False, weights_dir: str | Path | None = None) -> Backbone:
    """ResNet-50 (IMAGENET1K_V2 file preferred, V1 accepted); target ``features.layer4`` (2048 ch)."""
    return _resnet("resnet50", pretrained, weights_dir)


@register_model("densenet121")
def _densenet121(pretrained: bool = False, weights_dir: str | Path | None = None) -> Backbone:
    """DenseNet-121; features = torchvision ``features`` (ending in norm5) + ReLU.

    Target layer: that final ReLU (``features.relu``), i.e. the map the classifier pools
    (1024 channels, stride 32). The ReLU is not in-place, so hooks on it see an unmodified tensor.
    """
    import torchvision.models as tvm

    tv = tvm.densenet121(weights=None)
    if pretrained:
        _load_imagenet(tv, tvm.DenseNet121_Weights, "densenet121", weights_dir, fix_keys=_fix_densenet_keys)
    _disable_internal_dropout(tv.features)  # drop_rate is 0 already; kept for safety
    features = nn.Sequential(OrderedDict(body=tv.features, relu=nn.ReLU(inplace=False)))
    return Backbone(features, tv.classifier.in_features, features.relu)


@register_model("efficientnet_b0")
def _efficientnet_b0(pretrained: bool = False, weights_dir: str | Path | None = None) -> Backbone:
    """EfficientNet-B0; torchvision ``features`` with stochastic depth set to p=0.

    Target layer ``features[-1]`` (the final 1x1 conv + BN + SiLU, 1280 channels, stride 32).
    torchvision's classifier dropout (0.2) is discarded: the Classifier's own head dropout replaces it.
    """
    import torchvision.models as tvm

    tv = tvm.efficientnet_b0(weights=None)
    if pretrained:
        _load_imagenet(tv, tvm.EfficientNet_B0_Weights, "efficientnet_b0", weights_dir)
    features = _disable_internal_dropout(tv.features)
    return Backbone(features, tv.classifier[-1].in_features, features[-1])


class _ViTFeatures(nn.Module):
    """torchvision VisionTransformer body usable at any image size that is a multiple of the patch.

    Reuses torchvision's modules (so its state_dict keys stay torchvision's), but adds the
    position embeddings itself, bicubically interpolating the patch part of them when the token
    grid differs from the one the model was built for (``image_size // patch_size``).

    ``forward``: normalised ``(B, 3, H, W)`` -> ``(B, C, H/16, W/16)`` (the patch tokens of the
    final LayerNorm ``encoder.ln`` as a map; the CLS token is computed but not used by the map).
    """

    def __init__(self, vit: nn.Module) -> None:
        super().__init__()
        self.patch_size = int(vit.patch_size)
        self.native_grid = int(vit.image_size) // self.patch_size
        self.hidden_dim = int(vit.hidden_dim)
        self.conv_proj = vit.conv_proj
        self.class_token = vit.class_token
        self.encoder = vit.encoder
        self._grid: tuple[int, int] | None = None  # token grid of the last forward (for reshape_transform)

    def _pos_embedding(self, h: int, w: int) -> torch.Tensor:
        pe = self.encoder.pos_embedding  # (1, 1 + g*g, C)
        g = self.native_grid
        if (h, w) == (g, g):
            return pe
        cls_pe, patch_pe = pe[:, :1], pe[:, 1:]
        patch_pe = patch_pe.reshape(1, g, g, -1).permute(0, 3, 1, 2)
        patch_pe = F.interpolate(patch_pe, size=(h, w), mode="bicubic", align_corners=False)
        return torch.cat([cls_pe, patch_pe.permute(0, 2, 3, 1).reshape(1, h * w, -1)], dim=1)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised ``(B, 3, H, W)`` -> tokens ``(B, 1 + h*w, C)`` (output of ``encoder.ln``)."""
        _, _, H, W = x.shape
        if H % self.patch_size or W % self.patch_size:
            raise ShapeError(f"x: vit_small needs H and W multiples of {self.patch_size}, got {H}x{W}")
        t = self.conv_proj(x)  # (B, C, h, w)
        b, _, h, w = t.shape
        self._grid = (h, w)
        t = t.flatten(2).transpose(1, 2)
        t = torch.cat([self.class_token.expand(b, -1, -1), t], dim=1)
        t = t + self._pos_embedding(h, w)
        t = self.encoder.dropout(t)
        t = self.encoder.layers(t)
        return self.encoder.ln(t)

    def reshape_transform(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens ``(B, 1 + h*w, C)`` -> ``(B, C, h, w)``; grid = last forward's, else square."""
        n = tokens.shape[1] - 1
        grid = self._grid if self._grid is not None and self._grid[0] * self._grid[1] == n else None
        return vit_reshape_transform(tokens, *(grid or (None, None)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.reshape_transform(self.tokens(x))


def vit_reshape_transform(tokens: torch.Tensor, height: int | None = None, width: int | None = None) -> torch.Tensor:
    """ViT tokens ``(B, 1 + h*w, C)`` -> ``(B, C, h, w)``, dropping the CLS token.

    Same convention as pytorch-grad-cam's ``reshape_transform`` for ViTs. Without ``height`` and
    ``width`` the grid is assumed square.

    Raises:
        ShapeError: not 3-D, or the token count does not fit the grid.
    """
    check_shape("tokens", tokens, (None, None, None))
    n = tokens.shape[1] - 1
    if height is None or width is None:
        height = width = math.isqrt(max(n, 0))
    if height * width != n or n <= 0:
        raise ShapeError(f"tokens: {n} patch tokens do not form a {height}x{width} grid (shape {tuple(tokens.shape)})")
    b, _, c = tokens.shape
    return tokens[:, 1:, :].reshape(b, height, width, c).permute(0, 3, 1, 2)


@register_model("vit_small")
def _vit_small(pretrained: bool = False, weights_dir: str | Path | None = None, image_size: int = 224) -> Backbone:
    """Small ViT: patch 16, 6 layers, hidden 384, 6 heads, MLP 1536 (torchvision VisionTransformer).

    ``image_size`` (multiple of 16, default 224) sets the native position-embedding grid; other
    sizes that are multiples of 16 work too (embeddings interpolated). All dropout is 0.
    Pooling: mean of the patch tokens of the final LayerNorm (CLS token unused by the head).
    Target layer ``features.encoder.ln`` (tokens ``(B, 1 + h*w, 384)``) with
    ``reshape_transform`` giving ``(B, 384, H/16, W/16)``. No ImageNet weights exist (warns).
    """
    from torchvision.models import VisionTransformer

    if image_size % 16:
        raise ValueError(f"image_size must be a multiple of 16, got {image_size}")
    if pretrained:
        _no_imagenet("vit_small")
    vit = VisionTransformer(
        image_size=image_size, patch_size=16, num_layers=6, num_heads=6, hidden_dim=384, mlp_dim=1536,
        dropout=0.0, attention_dropout=0.0,
    )
    features = _disable_internal_dropout(_ViTFeatures(vit))
    return Backbone(features, 384, features.encoder.ln, features.reshape_transform)


def _conv_bn_relu(cin: int, cout: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


@register_model("smallcnn")
def _smallcnn(pretrained: bool = False, weights_dir: str | Path | None = None, width: int = 16) -> Backbone:
    """Tiny CNN for CPU demos: 4 stages of two 3x3 conv-BN-ReLU, the first of stride 2.

    Channels ``width * (1, 2, 4, 8)`` (default 16 -> 128 features, 0.29 M parameters), stride 16.
    Target layer ``features.stage4``. No ImageNet weights exist (warns).
    """
    if pretrained:
        _no_imagenet("smallcnn")
    chans = [3] + [width * m for m in (1, 2, 4, 8)]
    stages = OrderedDict(
        (f"stage{i + 1}", nn.Sequential(*_conv_bn_relu(chans[i], chans[i + 1], 2), *_conv_bn_relu(chans[i + 1], chans[i + 1], 1)))
        for i in range(4)
    )
    features = nn.Sequential(stages)
    for m in features.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return Backbone(features, chans[-1], features.stage4)


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------


def save_checkpoint(
    model: Classifier,
    path: str | Path,
    *,
    image_size: int | None = None,
    map_threshold: float | None = None,
    **meta: Any,
) -> Path:
    """Write ``model`` to ``path`` atomically (temporary file in the same folder + ``os.replace``).

    The file holds ``{"state_dict", "name", "num_classes", "dropout", "kwargs", "image_size",
    "map_threshold", "meta"}``: the backbone's name, its builder options and the head dropout
    rebuild the model; ``image_size`` (the side ``S`` of the ``S x S`` images it was trained on)
    and ``map_threshold`` (the CAM/fused-map threshold chosen on validation data) are what
    ``wsslib annotate`` needs to use it. ``meta`` (e.g. epoch, val_loss, seed) must be made of
    plain Python values / tensors so that :func:`load_checkpoint` can read it with
    ``weights_only=True``.

    Args:
        model: a :class:`Classifier` built by :func:`create_model`.
        path: file to write (folders are created).
        image_size: training image side ``S`` (None: unknown; annotate then needs ``--size``).
        map_threshold: map threshold in [0, 1] (None: unknown).
        **meta: anything else worth keeping.

    Returns:
        The path written.
    """
    cfg = getattr(model, "config", None)
    if not isinstance(model, Classifier) or not cfg or cfg.get("name") not in _REGISTRY:
        raise ValueError("save_checkpoint needs a Classifier built by create_model (its name must be registered)")
    if image_size is not None and (int(image_size) != image_size or int(image_size) < 1):
        raise ValueError(f"image_size must be a positive integer, got {image_size!r}")
    if map_threshold is not None and not 0.0 <= float(map_threshold) <= 1.0:
        raise ValueError(f"map_threshold must be in [0, 1], got {map_threshold!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "name": cfg["name"],
        "num_classes": cfg["num_classes"],
        "dropout": float(model.dropout.p),
        "kwargs": dict(cfg["kwargs"]),
        "image_size": None if image_size is None else int(image_size),
        "map_threshold": None if map_threshold is None else float(map_threshold),
        "meta": dict(meta),
    }
    buf = io.BytesIO()
    torch.save(payload, buf)
    return atomic_write(path, buf.getvalue(), fsync=True)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> Classifier:
    """Rebuild a :class:`Classifier` written by :func:`save_checkpoint`.

    Reads with ``torch.load(..., weights_only=True)``; rebuilds through :func:`create_model`
    (random init, no weight lookup) and loads the state_dict strictly. The returned model is in
    eval mode and carries the saved ``meta`` dict as ``model.meta``, and ``model.image_size`` /
    ``model.map_threshold`` (None when the checkpoint does not record them).

    Raises:
        DataError: the file is missing, unreadable, not a wsslib checkpoint, or does not fit.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: checkpoint file not found")
    try:
        ckpt = torch.load(path, weights_only=True, map_location=map_location)
    except Exception as e:  # never pass on torch's text: it advises weights_only=False, which runs pickled code
        text = str(e).strip()
        if "weights_only" in text or type(e).__name__ == "UnpicklingError":
            why = "not a torch weights file, or one that holds pickled code, which wsslib never loads"
        else:
            why = f"{type(e).__name__}: {text.splitlines()[0][:200] if text else 'unreadable'}"
        raise DataError(f"{path}: not a wsslib checkpoint ({why}); give the .pt files written by `wsslib train` "
                        "or wsslib.models.save_checkpoint") from None
    need = {"state_dict", "name", "num_classes", "dropout", "kwargs"}
    if not isinstance(ckpt, dict) or not need <= set(ckpt):
        have = sorted(ckpt) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise DataError(f"{path}: not a wsslib checkpoint (expected keys {sorted(need)}, got {have})")
    if ckpt["name"] not in _REGISTRY:
        raise DataError(f"{path}: checkpoint of unknown model {ckpt['name']!r}; available: {', '.join(list_models())}")
    model = create_model(ckpt["name"], num_classes=ckpt["num_classes"], dropout=ckpt["dropout"], weights=None, **ckpt["kwargs"])
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:
        raise DataError(f"{path}: state_dict does not fit {ckpt['name']}: {e}") from e
    model.meta = dict(ckpt.get("meta", {}))
    model.image_size = ckpt.get("image_size")
    model.map_threshold = ckpt.get("map_threshold")
    return model.to(map_location).eval()


# Registers efficientnet_lite0/1/2 (imports this module's names, so it comes last).
from wsslib.models import efficientnet_lite as _efficientnet_lite  # noqa: E402,F401
