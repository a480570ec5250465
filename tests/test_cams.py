"""Tests of :mod:`wsslib.cams`: the fast path against pytorch-grad-cam, targets, modes, edge cases.

Every model is random (seeded), 64-px inputs, batch 3. Batch-norm running statistics are set
from one batch of random images first: torchvision's random-init EfficientNet otherwise yields
activations of ~1e-14 in eval mode, where every CAM degenerates to pytorch-grad-cam's 1e-7 guard
and comparisons would prove nothing.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from wsslib.explain.cams import FAST_METHODS, METHODS, compute_cams, minmax_per_image
from wsslib.core.errors import ShapeError
from wsslib.models import Classifier, create_model, list_models

SIZE = 64
NUM_CLASSES = 3
TARGETS = [0, 2, 1]  # differ between images: a one-target-for-the-batch bug shows
ATOL = 1e-5
SLOW_METHODS = sorted(set(METHODS) - set(FAST_METHODS))


def _calibrate_bn(model: nn.Module, seed: int) -> None:
    """Set every BN's running mean/var to the statistics of one random batch (in place)."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average: after one batch = that batch's statistics
    model.train()
    with torch.no_grad():
        model(torch.rand(8, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed)))
    for bn in bns:
        bn.momentum = 0.1
    model.eval()


@functools.cache
def _model(name: str) -> Classifier:
    torch.manual_seed(0)
    kwargs = {"image_size": SIZE} if name == "vit_small" else {}
    model = create_model(name, num_classes=NUM_CLASSES, dropout=0.5, **kwargs)
    _calibrate_bn(model, seed=1)
    return model


def _images(n: int = 3, seed: int = 2) -> torch.Tensor:
    return torch.rand(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def _reference(model: Classifier, method: str, x: torch.Tensor, targets: list[int]) -> torch.Tensor:
    """pytorch-grad-cam called directly, one ClassifierOutputTarget per image."""
    cam = METHODS[method](model=model, target_layers=[model.target_layer], reshape_transform=model.reshape_transform)
    try:
        return torch.from_numpy(cam(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in targets]))
    finally:
        cam.activations_and_grads.release()


def _check_maps(maps: torch.Tensor, n: int = 3) -> None:
    assert maps.shape == (n, SIZE, SIZE)
    assert maps.dtype == torch.float32
    assert not torch.isnan(maps).any()
    assert maps.min() >= 0.0 and maps.max() <= 1.0


@pytest.mark.parametrize("name", list_models())
def test_fast_path_equals_pytorch_grad_cam(name: str) -> None:
    model = _model(name)
    x = _images()
    maps = {}
    for method in sorted(FAST_METHODS):
        ref = _reference(model, method, x, TARGETS)
        fast = compute_cams(model, x, method=method, targets=TARGETS, fast=True)
        slow = compute_cams(model, x, method=method, targets=torch.tensor(TARGETS), fast=False)
        _check_maps(fast)
        _check_maps(slow)
        # the comparison must not be vacuous: most maps are non-trivial
        assert (fast.flatten(1).amax(1) > 0.5).sum() >= 2, f"{name}/{method}: degenerate maps"
        diff = (fast - ref).abs().max().item()
        assert diff < ATOL, f"{name}/{method}: fast path differs from pytorch-grad-cam by {diff:.2e}"
        assert (slow - ref).abs().max().item() < ATOL
        maps[method] = fast
    # Every registered model ends in global average pooling + one linear layer (the ViT pools its
    # patch tokens), so d score / dA = fc.weight[target] / (h*w) is the same at every position:
    # grads * A summed over C (HiResCAM) = mean_hw(grads) * A summed over C (Grad-CAM).
    assert (maps["hirescam"] - maps["gradcam"]).abs().max().item() < ATOL


def test_fast_path_keeps_the_guards_on_tiny_activations() -> None:
    """Random-init EfficientNet in eval mode: activations ~1e-14, so pytorch-grad-cam's 1e-7
    guards (XGrad-CAM's denominator, both min-max scalings) decide the output; the fast path
    must place them exactly where pytorch-grad-cam does."""
    torch.manual_seed(0)
    model = create_model("efficientnet_b0", num_classes=NUM_CLASSES).eval()
    x = _images()
    for method in sorted(FAST_METHODS):
        fast = compute_cams(model, x, method, targets=TARGETS, fast=True)
        ref = _reference(model, method, x, TARGETS)
        _check_maps(fast)
        assert (fast - ref).abs().max().item() < ATOL, method


def test_one_target_per_image() -> None:
    """pytorch-grad-cam scores only as many images as it gets targets: compute_cams gives one each."""
    model = _model("smallcnn")
    x = _images()
    # The hazard, shown on the library itself: one target for a batch of 3 -> images 1, 2 get
    # no gradient and an all-zero map.
    cam = GradCAM(model=model, target_layers=[model.target_layer])
    try:
        short = torch.from_numpy(cam(input_tensor=x, targets=[ClassifierOutputTarget(TARGETS[0])]))
    finally:
        cam.activations_and_grads.release()
    assert short[1:].abs().max() == 0
    for fast in (True, False):
        batch = compute_cams(model, x, "gradcam", targets=TARGETS, fast=fast)
        for i, t in enumerate(TARGETS):
            single = compute_cams(model, x[i : i + 1], "gradcam", targets=t, fast=fast)[0]
            assert single.max() > 0.5
            assert (batch[i] - single).abs().max().item() < ATOL, f"image {i} (fast={fast})"
    # an int applies to every image; it is not "the first image only"
    as_int = compute_cams(model, x, "gradcam", targets=1)
    as_list = compute_cams(model, x, "gradcam", targets=[1, 1, 1])
    torch.testing.assert_close(as_int, as_list, atol=ATOL, rtol=0)
    assert (as_int.flatten(1).amax(1) > 0.5).all()


def test_targets_none_is_predicted_class() -> None:
    model = _model("resnet18")
    x = _images()
    with torch.no_grad():
        pred = model(x).argmax(1)
    for fast in (True, False):
        a = compute_cams(model, x, "xgradcam", targets=None, fast=fast)
        b = compute_cams(model, x, "xgradcam", targets=pred, fast=fast)
        torch.testing.assert_close(a, b, atol=ATOL, rtol=0)


@pytest.mark.parametrize("method", sorted(FAST_METHODS) + ["gradcam++", "layercam"])
def test_zero_gradients_give_zeros(method: str) -> None:
    torch.manual_seed(0)
    model = create_model("smallcnn", num_classes=NUM_CLASSES)
    with torch.no_grad():
        model.fc.weight.zero_()
    for fast in ((True, False) if method in FAST_METHODS else (False,)):
        maps = compute_cams(model, _images(), method, targets=TARGETS, fast=fast)
        _check_maps(maps)
        assert maps.abs().max() == 0


def test_minmax_constant_map_is_zero() -> None:
    maps = torch.stack([torch.zeros(4, 4), torch.full((4, 4), 3.0), torch.arange(16.0).view(4, 4)])
    out = minmax_per_image(maps)
    assert not torch.isnan(out).any()
    assert out[:2].abs().max() == 0
    assert out[2].min() == 0 and out[2].max() == pytest.approx(1.0, abs=1e-6)


def test_mode_and_grads_restored_dropout_off() -> None:
    torch.manual_seed(0)
    model = create_model("smallcnn", num_classes=NUM_CLASSES, dropout=0.9)
    x = _images()
    with torch.no_grad():
        model.eval()
        ref = compute_cams(model, x, "gradcam", targets=TARGETS)
    assert not model.training
    # mixed modes (a frozen-BN style setup) survive: every submodule gets its own mode back
    model.train()
    model.features.stage1.eval()
    before = {n: m.training for n, m in model.named_modules()}
    model.fc.weight.grad = torch.ones_like(model.fc.weight)
    for fast in (True, False):
        for method in ("gradcam", "fullgrad"):
            if fast and method == "fullgrad":
                continue
            maps = compute_cams(model, x, method, targets=TARGETS, fast=fast)
            assert {n: m.training for n, m in model.named_modules()} == before
            assert torch.equal(model.fc.weight.grad, torch.ones_like(model.fc.weight))
            assert model.features.stage4[0].weight.grad is None
            if method == "gradcam":  # dropout p=0.9 in train mode would change the map: it is off
                torch.testing.assert_close(maps, ref, atol=ATOL, rtol=0)


def test_chunking_device_and_frozen_backbone() -> None:
    model = _model("smallcnn")
    x = _images(5, seed=3)
    targets = [0, 1, 2, 1, 0]
    full = compute_cams(model, x, "hirescam", targets=targets, batch_size=16)
    for fast in (True, False):
        chunked = compute_cams(model, x, "hirescam", targets=targets, batch_size=2, fast=fast)
        torch.testing.assert_close(chunked, full, atol=ATOL, rtol=0)
    assert full.device == x.device
    # a frozen backbone (no parameter requires grad) still gets gradients at the target layer
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        for fast in (True, False):
            frozen = compute_cams(model, x, "hirescam", targets=targets, fast=fast)
            torch.testing.assert_close(frozen, full, atol=ATOL, rtol=0)
    finally:
        for p in model.parameters():
            p.requires_grad_(True)


@pytest.mark.parametrize("method", SLOW_METHODS)
def test_slow_methods_smoke(method: str) -> None:
    model = _model("smallcnn")
    model.train()
    maps = compute_cams(model, _images(), method, targets=TARGETS)
    assert model.training
    model.eval()
    _check_maps(maps)
    assert maps.max() > 0.5


def test_bad_arguments() -> None:
    model = _model("smallcnn")
    x = _images()
    with pytest.raises(ValueError, match="unknown"):
        compute_cams(model, x, "scorecam")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no fast path"):
        compute_cams(model, x, "fullgrad", fast=True)
    with pytest.raises(ShapeError, match="targets"):
        compute_cams(model, x, targets=[0, 1])
    with pytest.raises(ValueError, match="out of range"):
        compute_cams(model, x, targets=[0, 1, NUM_CLASSES])
    with pytest.raises(TypeError, match="integer"):
        compute_cams(model, x, targets=[0.0, 1.0, 1.0])
    with pytest.raises(ShapeError, match="images"):
        compute_cams(model, x[:, 0])
    with pytest.raises(ShapeError, match="images"):
        compute_cams(model, (x * 255).to(torch.uint8))
    with pytest.raises(ValueError, match="batch_size"):
        compute_cams(model, x, batch_size=0)


class TestLayerFixedFullGrad:
    """FullGrad's layer list: each module once, batch-norm subclasses included; maths unchanged."""

    def test_equals_pytorch_grad_cam_where_its_layer_list_is_right(self):
        import torchvision
        from pytorch_grad_cam import FullGrad

        from wsslib.explain.cams import LayerFixedFullGrad

        net = torchvision.models.resnet18(num_classes=3).eval()  # no module registered twice
        x = torch.rand(2, 3, 48, 48, generator=torch.Generator().manual_seed(0))
        theirs = FullGrad(model=net, target_layers=[])(input_tensor=x.clone().requires_grad_(True), targets=None)
        ours = LayerFixedFullGrad(net)(input_tensor=x.clone().requires_grad_(True), targets=None)
        assert np.allclose(ours, theirs, atol=1e-6)

    @pytest.mark.parametrize("name", ["efficientnet_lite0", "resnet18"])
    def test_one_resize_per_layer_equals_pytorch_grad_cams_per_channel_loop(self, name):
        from pytorch_grad_cam import FullGrad

        from wsslib.explain.cams import LayerFixedFullGrad

        class PerChannel(LayerFixedFullGrad):  # the same layers, pytorch-grad-cam's own per-channel maths
            compute_cam_per_layer = FullGrad.compute_cam_per_layer

        model = create_model(name).eval()
        x = torch.rand(2, 3, 64, 48, generator=torch.Generator().manual_seed(1))  # not square: (H, W) order
        ours = LayerFixedFullGrad(model)(input_tensor=x.clone().requires_grad_(True), targets=None)
        theirs = PerChannel(model)(input_tensor=x.clone().requires_grad_(True), targets=None)
        assert ours.shape == theirs.shape == (2, 64, 48)
        assert np.abs(ours - theirs).max() < 1e-5
        assert theirs.std() > 0.01  # not two constant maps

    @pytest.mark.parametrize("name", ["resnet50", "smallcnn", "efficientnet_lite0"])
    def test_each_layer_once_and_batchnorm_subclasses_counted(self, name):
        from wsslib.explain.cams import LayerFixedFullGrad

        model = create_model(name).eval()
        fg = LayerFixedFullGrad(model)
        n_bn = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
        n_conv = sum(isinstance(m, torch.nn.Conv2d) and m.bias is not None for m in model.modules())
        assert len(fg.target_layers) == len(fg.bias_data) == n_bn + n_conv > 0
        assert len({id(m) for m in fg.target_layers}) == len(fg.target_layers)
        maps = compute_cams(model, torch.rand(2, 3, 64, 64), "fullgrad", targets=1)
        assert maps.shape == (2, 64, 64) and torch.isfinite(maps).all()
