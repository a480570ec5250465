"""Class activation maps (CAMs) of a :class:`~wsslib.models.Classifier`, one map per image.

:func:`compute_cams` turns images ``(B, 3, H, W)`` in [0, 1] into saliency maps ``(B, H, W)``
float32 in [0, 1] on the images' device. Every method of :data:`METHODS` runs through
pytorch-grad-cam; the gradient-weighted methods of :data:`FAST_METHODS` (Grad-CAM, XGrad-CAM,
HiResCAM) also have a batched, on-device implementation that reproduces pytorch-grad-cam's numbers
(max abs difference below 1e-5, tested for every backbone of :func:`wsslib.models.list_models`)
without its numpy round trip and per-image ``cv2.resize`` loop.

The target layer and the token reshaping are taken from the model (``model.target_layer``,
``model.reshape_transform``): callers never name layers.

What pytorch-grad-cam computes, and the fast path replicates, for one target layer with
activations ``A (B, C, h, w)`` and gradients ``G = d score / d A`` where
``score = sum_b logits[b, target_b]``:

1. ``cam = sum_c w[b, c] * A[b, c]`` (Grad-CAM: ``w = mean_hw G``; XGrad-CAM:
   ``w = sum_hw(G * A) / (sum_hw A + 1e-7)``) or, for HiResCAM, ``cam = sum_c G * A``;
2. ``cam = relu(cam)``;
3. per image, at the feature resolution: ``cam = (cam - min) / (max(cam - min) + 1e-7)``;
4. bilinear resize to ``(H, W)`` (``cv2.resize`` with ``INTER_LINEAR``, i.e. half-pixel centres
   and edge clamping, which is what ``F.interpolate(mode="bilinear", align_corners=False)``
   does);
5. per image, the same min-max scaling once more (pytorch-grad-cam's ``aggregate_multi_layers``).

Steps 3 and 5 are both needed for exact equality: resizing is linear, so they differ from a
single scaling only through the ``1e-7`` guard, which matters for nearly constant maps. A map
that is constant (all zero, e.g. when every gradient is zero) comes out as all zeros, never NaN.

Example:
    >>> import torch
    >>> from wsslib.models import create_model
    >>> from wsslib.explain.cams import compute_cams
    >>> model = create_model("smallcnn", num_classes=2)
    >>> maps = compute_cams(model, torch.rand(2, 3, 64, 64), method="xgradcam", targets=[0, 1])
    >>> maps.shape, maps.dtype
    (torch.Size([2, 64, 64]), torch.float32)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pytorch_grad_cam import (
    EigenCAM,
    FullGrad,
    GradCAM,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    XGradCAM,
)
from pytorch_grad_cam.base_cam import BaseCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from wsslib.core.errors import ShapeError
from wsslib.core.maps import minmax_per_image
from wsslib.core.utils import check_shape, eval_mode

__all__ = [
    "FAST_METHODS",
    "METHODS",
    "CamMethod",
    "TargetsLike",
    "compute_cams",
    "fast_cams",
    "keep_param_grads",
    "minmax_per_image",
    "model_num_classes",
    "resolve_targets",
]

CamMethod = Literal["gradcam", "xgradcam", "gradcam++", "hirescam", "fullgrad", "eigencam", "layercam"]
"""Names accepted by :func:`compute_cams` (the keys of :data:`METHODS`)."""

TargetsLike = int | Sequence[int] | torch.Tensor | np.ndarray | None
"""``None`` (each image's predicted class), one class for all images, or one class per image."""

class LayerFixedFullGrad(FullGrad):
    """pytorch-grad-cam's FullGrad with the layer list it gets wrong fixed (its maths unchanged).

    pytorch-grad-cam collects FullGrad's layers by walking ``_modules`` recursively with an exact
    type test, which (1) counts a module twice when a model also registers it under a second
    name (every wsslib classifier registers its CAM ``target_layer`` beside ``features``: the
    last stage's biases were counted twice, and ResNet50's raised a shape error) and (2) skips
    subclasses such as timm's ``BatchNormAct2d`` (so EfficientNet-Lite got the input-gradient
    term alone). Here each module counts once (``model.modules()``, registration order = forward
    order for these backbones), every ``Conv2d`` with a bias and every ``BatchNorm2d`` subclass
    count, and for a batch norm fused with its activation (``BatchNormAct2d``) the hooked tensor
    is the batch-norm output *before* the activation (its ``drop`` module's output), whose
    gradient is the gradient of the implicit bias, as FullGrad defines it.
    """

    def __init__(self, model: nn.Module, target_layers=None, reshape_transform=None) -> None:
        hooked: list[nn.Module] = []
        biases: list[np.ndarray] = []
        for layer in model.modules():
            if isinstance(layer, nn.BatchNorm2d) and layer.running_mean is not None:
                drop = getattr(layer, "drop", None)
                hooked.append(drop if isinstance(drop, nn.Module) and hasattr(layer, "act") else layer)
            elif isinstance(layer, nn.Conv2d) and layer.bias is not None:
                hooked.append(layer)
            else:
                continue
            biases.append(self.get_bias_data(layer).cpu().numpy())
        BaseCAM.__init__(self, model, hooked, reshape_transform, compute_input_gradient=True)
        self.bias_data = biases

    def compute_cam_per_layer(self, input_tensor: torch.Tensor, target_category, eigen_smooth: bool) -> np.ndarray:
        """FullGrad's sum over layers, with one resize per layer instead of one per channel.

        pytorch-grad-cam min-max scales each channel ``|bias_c * G_c|`` (``G (B, C, h, w)``, a
        layer's output gradient) and resizes it to ``(H, W)`` with ``cv2.resize`` one channel at a
        time in a Python loop, then sums the channels: for an EfficientNet-Lite at 224 px that
        is thousands of full-size resizes per image, and took more than 18 min for three Lites on
        200 images here (2026-12-04). Resizing is linear, so the sum of the resized channels is the
        resized sum of the channels: this sums first and resizes once per layer with
        ``F.interpolate(mode="bilinear", align_corners=False)`` (= ``cv2.INTER_LINEAR``), in torch.
        Same numbers up to float32 rounding (tested against pytorch-grad-cam). ``eigen_smooth``
        keeps pytorch-grad-cam's own path (it needs every layer's map).

        Args:
            input_tensor: ``(B, 3, H, W)``, its ``.grad`` filled by the backward pass.

        Returns:
            ``(B, 1, H, W)`` float32: the input-gradient term plus every layer's term.
        """
        if eigen_smooth:
            return super().compute_cam_per_layer(input_tensor, target_category, eigen_smooth)
        width, height = self.get_target_width_height(input_tensor)
        size = (int(height), int(width))
        total = _scaled_channel_sum((input_tensor.grad * input_tensor.detach()).abs(), size)
        for bias, grads in zip(self.bias_data, self.activations_and_grads.gradients, strict=True):
            b = torch.as_tensor(bias, dtype=grads.dtype, device=grads.device)[None, :, None, None]
            total += _scaled_channel_sum((b * grads).abs(), size).to(total.device)
        return total[:, None].float().cpu().numpy()


def _scaled_channel_sum(t: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Min-max scale each channel of ``t (B, C, h, w)`` (pytorch-grad-cam's ``scale_cam_image``:
    ``(x - min) / (1e-7 + max(x - min))``), sum the channels, resize to ``size = (H, W)``.

    Returns:
        ``(B, H, W)`` float32.
    """
    flat = t.float().flatten(2)
    flat = flat - flat.amin(-1, keepdim=True)
    flat = flat / (1e-7 + flat.amax(-1, keepdim=True))
    summed = flat.sum(1).view(t.shape[0], 1, *t.shape[2:])
    if tuple(summed.shape[-2:]) != tuple(size):
        summed = F.interpolate(summed, size=size, mode="bilinear", align_corners=False)
    return summed[:, 0]


METHODS: dict[str, type[BaseCAM]] = {
    "gradcam": GradCAM,
    "xgradcam": XGradCAM,
    "gradcam++": GradCAMPlusPlus,
    "hirescam": HiResCAM,
    "fullgrad": LayerFixedFullGrad,
    "eigencam": EigenCAM,
    "layercam": LayerCAM,
}
"""CAM method name -> pytorch-grad-cam class. Adding a method is adding one line here.

``fullgrad`` ignores the model's target layer: FullGrad (:class:`LayerFixedFullGrad`, pytorch-grad-cam's
with its layer list fixed and its per-channel resize loop replaced by one resize per layer) hooks
every ``Conv2d`` with a bias and every batch norm (plus the input gradient), min-max scales every
channel of every such layer, and sums them at the image size. It is the slowest method (one
backward pass plus a resize per layer) and uses no token reshaping, so on a ViT only the
patch-embedding convolution contributes. ``eigencam`` ignores the targets (first principal
component of the activations, sign chosen by the SVD).
"""

# Epsilons and guards exactly as pytorch-grad-cam 1.5.x uses them.
_XGRAD_EPS = 1e-7  # xgrad_cam.py: sum(G * A) / (sum(A) + 1e-7)

_CamFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _gradcam(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """Grad-CAM: channel weights = spatial mean of the gradients. (B, C, h, w) x2 -> (B, h, w)."""
    weights = grads.mean(dim=(2, 3), keepdim=True)
    return (weights * acts).sum(dim=1)


def _xgradcam(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """XGrad-CAM: weights = sum_hw(G * A) / (sum_hw A + 1e-7). (B, C, h, w) x2 -> (B, h, w)."""
    sum_acts = acts.sum(dim=(2, 3), keepdim=True)
    weights = (grads * acts / (sum_acts + _XGRAD_EPS)).sum(dim=(2, 3), keepdim=True)
    return (weights * acts).sum(dim=1)


def _hirescam(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """HiResCAM: element-wise G * A summed over channels. (B, C, h, w) x2 -> (B, h, w).

    For a network ending in global average pooling and one linear layer,
    ``G[b, c, i, j] = fc.weight[target_b, c] / (h * w)`` does not depend on ``(i, j)``, so
    ``G`` equals its own spatial mean and HiResCAM equals Grad-CAM exactly.
    """
    return (grads * acts).sum(dim=1)


FAST_METHODS: dict[str, _CamFn] = {
    "gradcam": _gradcam,
    "xgradcam": _xgradcam,
    "hirescam": _hirescam,
}
"""Methods with the batched on-device path: name -> ``(A, G) -> cam (B, h, w)`` before ReLU."""


def model_num_classes(model: nn.Module) -> int | None:
    fc = getattr(model, "fc", None)
    return int(fc.out_features) if isinstance(fc, nn.Linear) else None


def resolve_targets(targets: TargetsLike, n: int, num_classes: int | None) -> torch.Tensor | None:
    """Turn ``targets`` into a ``(n,)`` int64 CPU tensor (``None`` stays ``None``); validate it."""
    if targets is None:
        return None
    if isinstance(targets, (bool, np.bool_)):
        raise TypeError("targets: expected None, an int class index or one index per image, got a bool")
    if isinstance(targets, (int, np.integer)):
        out = torch.full((n,), int(targets), dtype=torch.long)
    else:
        t = torch.as_tensor(np.asarray(targets.cpu() if isinstance(targets, torch.Tensor) else targets))
        if t.dtype.is_floating_point or t.dtype == torch.bool or t.is_complex():
            raise TypeError(f"targets: expected integer class indices, got dtype {t.dtype}")
        if t.dim() == 0:
            out = torch.full((n,), int(t), dtype=torch.long)
        else:
            if t.dim() != 1 or t.shape[0] != n:
                raise ShapeError(f"targets: expected an int or shape ({n},) (one class per image), got {tuple(t.shape)}")
            out = t.to(torch.long)
    if out.numel() and (int(out.min()) < 0 or (num_classes is not None and int(out.max()) >= num_classes)):
        bad = out[(out < 0) | (out >= (num_classes if num_classes is not None else 2**62))].tolist()
        raise ValueError(f"targets: class indices {bad} out of range for a model with {num_classes} classes")
    return out


@contextmanager
def keep_param_grads(model: nn.Module) -> Iterator[None]:
    """Restore every parameter's ``.grad`` after pytorch-grad-cam's ``zero_grad()`` + ``backward()``."""
    params = list(model.parameters())
    saved = [p.grad for p in params]
    try:
        yield
    finally:
        for p, g in zip(params, saved):
            p.grad = g


def fast_cams(
    model: nn.Module,
    x: torch.Tensor,
    targets: torch.Tensor | None,
    cam_fn: _CamFn,
    num_classes: int | None,
    with_embedding: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """One forward + one ``autograd.grad`` for a chunk ``x (b, 3, H, W)`` -> maps ``(b, H, W)``.

    ``with_embedding=True`` (a :class:`wsslib.models.Classifier` in eval mode) also returns the
    pooled embedding ``z (b, C)`` of that same forward pass, detached, so that Monte Carlo
    dropout heads can be sampled from it without a second backbone pass.
    """
    layer: nn.Module = model.target_layer
    reshape = getattr(model, "reshape_transform", None)
    captured: list[torch.Tensor] = []

    def hook(_module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
        captured.append(output)

    handle = layer.register_forward_hook(hook)
    try:
        with torch.enable_grad():
            x = x.detach()
            x.requires_grad_(True)  # so a frozen backbone still yields d score / d A
            if with_embedding:
                z = model.embed(x)
                logits = model.head(z)
            else:
                logits = model(x)
            if len(captured) != 1:
                raise RuntimeError(
                    f"model.target_layer ran {len(captured)} times in one forward pass; expected exactly once"
                )
            if targets is None:
                idx = logits.argmax(dim=1)
            else:
                idx = targets.to(logits.device)
                if num_classes is None and int(idx.max()) >= logits.shape[1]:
                    raise ValueError(f"targets: class index {int(idx.max())} >= number of classes {logits.shape[1]}")
            score = logits.gather(1, idx[:, None]).sum()
            (grads,) = torch.autograd.grad(score, captured[0])
        acts = captured[0].detach()
    finally:
        handle.remove()
        captured.clear()
    if reshape is not None:
        acts, grads = reshape(acts), reshape(grads)
    if acts.dim() != 4:
        raise ShapeError(
            f"target layer activations: expected (B, C, h, w) after reshape_transform, got {tuple(acts.shape)}"
        )
    cam = torch.relu(cam_fn(acts.float(), grads.float()))
    cam = minmax_per_image(cam)
    cam = F.interpolate(cam[:, None], size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False)[:, 0]
    cam = minmax_per_image(cam)
    return (cam, z.detach()) if with_embedding else cam


def _grad_cam_lib(
    model: nn.Module,
    x: torch.Tensor,
    targets: torch.Tensor | None,
    method: str,
) -> torch.Tensor:
    """pytorch-grad-cam for a chunk ``x (b, 3, H, W)`` -> maps ``(b, H, W)`` on ``x``'s device."""
    cls = METHODS[method]
    if issubclass(cls, FullGrad):
        # FullGrad picks its own layers (every conv / BN with a bias) and must not get the ViT's
        # token reshaping, which would be applied to every one of those conv outputs.
        cam = cls(model=model, target_layers=[], reshape_transform=None)
    else:
        cam = cls(model=model, target_layers=[model.target_layer], reshape_transform=getattr(model, "reshape_transform", None))
    # One target PER IMAGE: pytorch-grad-cam zips targets with outputs, so a shorter list silently
    # drops the other images' scores. None lets it pick each image's argmax (one per image too).
    cam_targets = None if targets is None else [ClassifierOutputTarget(int(t)) for t in targets]
    # A fresh leaf that requires grad: the target layer's output then carries gradients even when
    # the backbone is frozen (pytorch-grad-cam would otherwise silently record no gradient).
    inp = x.detach().clone().requires_grad_(True)
    try:
        with torch.enable_grad():
            maps = cam(input_tensor=inp, targets=cam_targets)
    finally:
        cam.activations_and_grads.release()
    return torch.from_numpy(np.ascontiguousarray(maps, dtype=np.float32)).to(x.device)


def compute_cams(
    model: nn.Module,
    images: torch.Tensor,
    method: CamMethod = "xgradcam",
    targets: TargetsLike = None,
    batch_size: int = 16,
    fast: bool | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Class activation maps of ``model`` for ``images``, one map per image, scaled to [0, 1].

    The CAM is taken with dropout OFF: the model is put in ``eval()`` mode, so a dropout head
    acts as its expected value (the deterministic head), and batch norm uses its running
    statistics. Every submodule's former train/eval mode is restored afterwards, and so are the
    parameters' ``.grad`` (pytorch-grad-cam zeroes and refills them).

    The layer is ``model.target_layer`` and token outputs (ViT) are reshaped to ``(B, C, h, w)``
    with ``model.reshape_transform``.

    Args:
        model: a :class:`wsslib.models.Classifier` (any ``nn.Module`` with ``target_layer`` and
            ``reshape_transform`` attributes that maps ``(B, 3, H, W)`` to logits ``(B, K)``).
        images: ``(B, 3, H, W)`` float in [0, 1]; moved chunk by chunk to the model's device.
        method: a key of :data:`METHODS`. ``"fullgrad"`` ignores the target layer and is slow
            (every biased conv / BN layer is hooked and resized on the CPU).
        targets: ``None`` = each image's predicted class; an ``int`` = that class for every
            image; a ``(B,)`` tensor / list / array = one class per image. Ignored by
            ``"eigencam"``.
        batch_size: images per forward/backward pass.
        fast: ``None`` = the on-device path when the method has one (:data:`FAST_METHODS`),
            ``True`` = demand it, ``False`` = always pytorch-grad-cam. Both give the same maps
            (max abs difference < 1e-5).
        progress: show a tqdm progress bar over the chunks.

    Returns:
        ``(B, H, W)`` float32 in [0, 1] on ``images``' device; an all-constant CAM (e.g. all
        gradients zero) gives all zeros.

    Raises:
        ShapeError: ``images`` is not ``(B, 3, H, W)`` float, or ``targets`` has the wrong length.
        ValueError: unknown method, ``fast=True`` for a method without a fast path, class index
            out of range, or ``batch_size < 1``.
        TypeError: ``targets`` not integer class indices, or ``model`` without ``target_layer``.

    Example:
        >>> maps = compute_cams(model, images, method="gradcam", targets=1)  # doctest: +SKIP
    """
    if method not in METHODS:
        raise ValueError(f"method={method!r} unknown; choose one of {sorted(METHODS)}")
    if fast and method not in FAST_METHODS:
        raise ValueError(f"fast=True but {method!r} has no fast path; fast methods: {sorted(FAST_METHODS)}")
    use_fast = method in FAST_METHODS if fast is None else bool(fast)
    check_shape("images", images, (None, 3, None, None))
    if not images.dtype.is_floating_point:
        raise ShapeError(f"images: expected a float tensor in [0, 1], got dtype {images.dtype}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not isinstance(getattr(model, "target_layer", None), nn.Module):
        raise TypeError("model has no nn.Module attribute 'target_layer'; expected a wsslib.models.Classifier")

    n, _, height, width = images.shape
    num_classes = model_num_classes(model)
    tgt = resolve_targets(targets, n, num_classes)
    if n == 0:
        return images.new_zeros((0, height, width), dtype=torch.float32)
    device = next(model.parameters()).device

    starts: Iterator[int] | range = range(0, n, batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, total=(n + batch_size - 1) // batch_size, desc=f"CAM {method}")

    out = torch.empty((n, height, width), dtype=torch.float32, device=images.device)
    with eval_mode(model), keep_param_grads(model):
        for s in starts:
            chunk = images[s : s + batch_size].to(device=device, dtype=torch.float32)
            chunk_t = None if tgt is None else tgt[s : s + batch_size]
            if use_fast:
                maps = fast_cams(model, chunk, chunk_t, FAST_METHODS[method], num_classes)
            else:
                maps = _grad_cam_lib(model, chunk, chunk_t, method)
            out[s : s + batch_size] = maps.to(images.device)
    return out
