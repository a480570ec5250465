"""Tests of wsslib.models: shapes, determinism, offline weights, checkpoints."""

from __future__ import annotations

import os
import warnings
from urllib.parse import urlparse

import pytest
import torch
import torchvision.models as tvm
from torch import nn

from wsslib.core.errors import DataError, ShapeError
from wsslib.models import (
    Classifier,
    WeightsNotFoundWarning,
    create_model,
    list_models,
    load_checkpoint,
    save_checkpoint,
    vit_reshape_transform,
)

TORCHVISION = ["densenet121", "efficientnet_b0", "resnet18", "resnet34", "resnet50", "smallcnn", "vit_small"]
LITE = ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]  # tests/test_efficientnet_lite.py
ALL = TORCHVISION + LITE
SIZE = 64
KWARGS = {"vit_small": {"image_size": SIZE}}


@pytest.fixture(scope="module")
def models() -> dict[str, Classifier]:
    torch.manual_seed(0)
    return {n: create_model(n, **KWARGS.get(n, {})) for n in ALL}


@pytest.fixture
def x() -> torch.Tensor:
    return torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """Empty torch home, no weights dir, and every download entry point raising."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv("WSSLIB_WEIGHTS_DIR", raising=False)

    def no_network(*a, **k):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    monkeypatch.setattr("urllib.request.urlopen", no_network)
    monkeypatch.setattr("socket.create_connection", no_network)
    return tmp_path


def test_registry_names():
    assert list_models() == sorted(ALL)
    with pytest.raises(ValueError, match="unknown model"):
        create_model("resnet1000")
    with pytest.raises(ValueError, match="weights"):
        create_model("smallcnn", weights="imagenet21k")
    with pytest.raises(ValueError, match="dropout"):
        create_model("smallcnn", dropout=1.0)


@pytest.mark.parametrize("name", ALL)
def test_forward_shapes_and_target_layer(models, x, name):
    m = models[name].eval()
    acts = []
    h = m.target_layer.register_forward_hook(lambda mod, inp, out: acts.append(out))
    try:
        logits = m(x)
    finally:
        h.remove()
    assert logits.shape == (2, 2) and logits.dtype == torch.float32
    assert m.embed(x).shape == (2, m.num_features)
    assert m.head(m.embed(x)).shape == (2, 2)
    (a,) = acts
    if m.reshape_transform is not None:
        assert a.dim() == 3  # tokens
        a = m.reshape_transform(a)
    assert a.dim() == 4 and a.shape[:2] == (2, m.num_features)
    assert m.name == name
    assert isinstance(m.dropout, nn.Dropout) and m.dropout.p == 0.5
    assert isinstance(m.fc, nn.Linear) and m.fc.in_features == m.num_features
    # the target layer lives inside features (so CAM hooks see the classifier's own map)
    assert any(mod is m.target_layer for mod in m.features.modules())


@pytest.mark.parametrize("name", ALL)
def test_embed_deterministic_in_train_mode(models, x, name):
    m = models[name].train()
    try:
        with torch.no_grad():
            assert torch.equal(m.embed(x), m.embed(x))
        for mod in m.features.modules():
            assert getattr(mod, "p", 0.0) == 0.0, f"stochastic module left in features: {mod}"
    finally:
        m.eval()


def test_bad_input_shape_raises(models):
    with pytest.raises(ShapeError, match="x"):
        models["smallcnn"](torch.rand(2, 1, SIZE, SIZE))
    with pytest.raises(ShapeError, match="multiples of 16"):
        models["vit_small"](torch.rand(2, 3, 72, 72))


def test_vit_other_sizes_and_reshape():
    m = create_model("vit_small").eval()  # native grid 14x14, used at other sizes
    acts = []
    h = m.target_layer.register_forward_hook(lambda mod, inp, out: acts.append(out))
    with torch.no_grad():
        assert m(torch.rand(2, 3, 96, 64)).shape == (2, 2)
        assert m(torch.rand(1, 3, 224, 224)).shape == (1, 2)
    h.remove()
    assert acts[0].shape == (2, 1 + 6 * 4, 384)
    # the last forward was 224x224: the bound transform uses its 14x14 grid
    assert m.reshape_transform(acts[1]).shape == (1, 384, 14, 14)
    # pytorch-grad-cam convention: drop CLS, (B, h, w, C) -> (B, C, h, w)
    t = torch.randn(2, 1 + 12, 5)
    ref = t[:, 1:, :].reshape(2, 3, 4, 5).transpose(2, 3).transpose(1, 2)
    assert torch.equal(vit_reshape_transform(t, 3, 4), ref)
    assert vit_reshape_transform(torch.randn(2, 17, 5)).shape == (2, 5, 4, 4)
    with pytest.raises(ShapeError):
        vit_reshape_transform(torch.randn(2, 13, 5))


@pytest.mark.parametrize("name", TORCHVISION)
def test_imagenet_offline_warns_and_works(offline, x, name):
    with pytest.warns(WeightsNotFoundWarning, match=name):
        m = create_model(name, weights="imagenet", **KWARGS.get(name, {}))
    with torch.no_grad():
        assert m.eval()(x).shape == (2, 2)


def test_offline_warning_says_where(offline):
    with pytest.warns(WeightsNotFoundWarning) as rec:
        create_model("resnet18", weights="imagenet")
    msg = str(rec[0].message)
    fname = os.path.basename(urlparse(tvm.ResNet18_Weights.DEFAULT.url).path)
    assert fname in msg and str(offline / "torch_home") in msg and "WSSLIB_WEIGHTS_DIR" in msg


def _fname(enum) -> str:
    return os.path.basename(urlparse(enum.DEFAULT.url).path)


def _old_densenet_keys(sd):
    """Inverse of torchvision's DenseNet key fix: norm1.weight -> norm.1.weight (as in its files)."""
    import re

    pat = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))([12])\.(weight|bias|running_mean|running_var)$")
    return {(f"{m.group(1)}.{m.group(2)}.{m.group(3)}" if (m := pat.match(k)) else k): v for k, v in sd.items()}


@pytest.mark.parametrize(
    "name, source",
    [("resnet18", "arg"), ("resnet18", "env"), ("resnet18", "hub"), ("densenet121", "arg"), ("efficientnet_b0", "arg")],
)
def test_imagenet_loaded_from_local_file(offline, monkeypatch, name, source):
    enum = {"resnet18": tvm.ResNet18_Weights, "densenet121": tvm.DenseNet121_Weights, "efficientnet_b0": tvm.EfficientNet_B0_Weights}[name]
    torch.manual_seed(123)
    sd = getattr(tvm, name)(weights=None).state_dict()
    folder = {"arg": offline / "w", "env": offline / "envw", "hub": offline / "torch_home" / "hub" / "checkpoints"}[source]
    folder.mkdir(parents=True)
    torch.save(_old_densenet_keys(sd) if name == "densenet121" else sd, folder / _fname(enum))
    if source == "env":
        monkeypatch.setenv("WSSLIB_WEIGHTS_DIR", str(folder))
    torch.manual_seed(7)  # a different random init, so equality proves loading
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = create_model(name, weights="imagenet", weights_dir=folder if source == "arg" else None)
    got = m.features.state_dict()
    prefix = {"resnet18": "", "densenet121": "features.", "efficientnet_b0": "features."}[name]
    strip = {"resnet18": "", "densenet121": "body.", "efficientnet_b0": ""}[name]
    n = 0
    for k, v in got.items():
        key = prefix + k[len(strip) :]
        assert key in sd, key
        assert torch.equal(v, sd[key]), key
        n += 1
    assert n > 10


def test_corrupt_weight_file_raises(offline):
    folder = offline / "w"
    folder.mkdir()
    (folder / _fname(tvm.ResNet18_Weights)).write_bytes(b"not a torch file")
    with pytest.raises(DataError, match=_fname(tvm.ResNet18_Weights)):
        create_model("resnet18", weights="imagenet", weights_dir=folder)


@pytest.mark.parametrize("name", ALL)
def test_checkpoint_round_trip(tmp_path, x, name):
    torch.manual_seed(3)
    m = create_model(name, num_classes=3, dropout=0.25, **KWARGS.get(name, {})).eval()
    path = save_checkpoint(m, tmp_path / "sub" / "model.pt", epoch=4, val_loss=0.5)
    assert path.is_file() and [p.name for p in path.parent.iterdir()] == ["model.pt"]  # no tmp left
    m2 = load_checkpoint(path)
    assert not m2.training and m2.name == name and m2.num_classes == 3 and m2.dropout.p == 0.25
    assert m2.meta == {"epoch": 4, "val_loss": 0.5}
    assert m2.config == m.config
    with torch.no_grad():
        assert torch.equal(m(x), m2(x))


def test_checkpoint_bad_files(tmp_path):
    with pytest.raises(DataError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(DataError, match="corrupt.pt"):
        load_checkpoint(bad)
    # a truncated real checkpoint
    good = save_checkpoint(create_model("smallcnn"), tmp_path / "good.pt")
    trunc = tmp_path / "trunc.pt"
    trunc.write_bytes(good.read_bytes()[:500])
    with pytest.raises(DataError, match="trunc.pt"):
        load_checkpoint(trunc)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(DataError, match="not a wsslib checkpoint"):
        load_checkpoint(other)
    with pytest.raises(ValueError):
        save_checkpoint(nn.Linear(2, 2), tmp_path / "x.pt")
