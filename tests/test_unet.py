"""Tests of wsslib.models.unet (UNet, local pixel propagation, MultiLevelUNet) and of GazeMedSeg's
training in wsslib.methods.gaze.training (loss, trainer, prediction)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from wsslib.data import get_dataset, to_tensors
from wsslib.core.errors import ShapeError
from wsslib.evaluate.metrics import segmentation_scores
from wsslib.methods.gaze.training import (
    MultiLevelTrainConfig,
    MultiLevelTrainResult,
    multilevel_loss,
    predict,
    train_multilevel,
)
from wsslib.models.training import TrainResult
from wsslib.models.unet import MultiLevelUNet, UNet, lpp, paper_config

SMALL = {"widths": (8, 16), "feat_ch": 8}


def _lpp_unfold(feat: torch.Tensor, kernel: int = 5, dilation: int = 2, cosine: bool = True) -> torch.Tensor:
    """Independent reference: F.unfold as in the paper's code, out-of-image neighbours masked."""
    b, c, h, w = feat.shape
    pad = (kernel // 2) * dilation
    keys = F.normalize(feat, dim=1, eps=1e-8) if cosine else feat
    nb_v = F.unfold(feat, kernel, dilation=dilation, padding=pad).view(b, c, kernel * kernel, h, w)
    nb_k = F.unfold(keys, kernel, dilation=dilation, padding=pad).view(b, c, kernel * kernel, h, w)
    inside = F.unfold(torch.ones(1, 1, h, w), kernel, dilation=dilation, padding=pad).view(1, kernel * kernel, h, w) > 0
    sim = torch.einsum("bchw,bcnhw->bnhw", keys, nb_k).clamp_min(0).masked_fill(~inside, -math.inf)
    return torch.einsum("bnhw,bcnhw->bchw", sim.softmax(1), nb_v)


@pytest.fixture(scope="module")
def toy():
    """Synthetic 32 px images; levels = true mask and a dilated true mask."""
    torch.manual_seed(0)
    tr = to_tensors(get_dataset("synthetic", split="train", n=48, size=32))
    va = to_tensors(get_dataset("synthetic", split="valid", n=48, size=32))
    wide = F.max_pool2d(tr.masks[:, None].float(), 5, stride=1, padding=2)[:, 0] > 0
    masks = torch.stack([tr.masks, wide], 1)
    return tr.images, masks, va.images, va.masks


def test_unet_shapes_and_paper_config():
    net = UNet(widths=(8, 16, 32), feat_ch=12)
    logits, feats = net(torch.rand(2, 3, 30, 17))  # odd sizes: padded and cropped back
    assert logits.shape == (2, 1, 30, 17) and feats.shape == (2, 12, 30, 17)
    assert paper_config() == {"widths": (64, 128, 256, 512, 1024), "feat_ch": 128}
    assert any(isinstance(m, torch.nn.GroupNorm) for m in net.modules())
    with pytest.raises(ShapeError):
        net(torch.rand(2, 1, 16, 16))


def test_lpp_shape_fixed_point_and_reference():
    g = torch.Generator().manual_seed(0)
    f = torch.randn(2, 6, 11, 13, generator=g)
    out = lpp(f)
    assert out.shape == f.shape
    torch.testing.assert_close(out, _lpp_unfold(f), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(lpp(f, similarity="dot"), _lpp_unfold(f, cosine=False), rtol=1e-5, atol=1e-5)
    const = torch.full((1, 4, 9, 9), 0.7) * torch.arange(1.0, 5.0)[None, :, None, None]
    torch.testing.assert_close(lpp(const), const)  # a constant map is a fixed point, borders included
    f.requires_grad_(True)
    lpp(f).sum().backward()
    assert f.grad is not None and torch.isfinite(f.grad).all()


def test_multilevel_forward_and_loss_values():
    net = MultiLevelUNet(3, **SMALL)
    x = torch.rand(2, 3, 16, 16)
    logits, prop = net.forward_train(x)
    assert logits.shape == prop.shape == (2, 3, 16, 16)
    torch.testing.assert_close(net.predict_logits(x), logits.mean(1))
    # same_init: every level starts from the same weights (the paper's deepcopy)
    torch.testing.assert_close(logits[:, 0], logits[:, 1])
    # identical confident levels agree everywhere: each level's consistency term is -1
    big = torch.full((2, 3, 4, 4), 20.0)
    big[..., :2] = -20.0
    masks = big > 0
    for mode in ("plain", "lpp"):
        loss, parts = multilevel_loss(big, masks, big, lam=3.0, consistency=mode)
        assert parts["consistency"] == pytest.approx(-3.0, abs=1e-6)
        assert parts["bce"] == pytest.approx(0.0, abs=1e-6)
        assert float(loss) == pytest.approx(-9.0, abs=1e-5)
    assert multilevel_loss(big[:, :1], masks[:, :1], big[:, :1])[1]["consistency"] == 0.0
    assert multilevel_loss(big, masks, consistency="none")[1]["consistency"] == 0.0


def test_training_loss_finite_and_decreasing(toy):
    images, masks, _, _ = toy
    cfg = MultiLevelTrainConfig(iterations=20, batch_size=4, lr=3e-3, seed=0, **SMALL)
    res = train_multilevel(images[:8], masks[:8], cfg, device="cpu", progress=False)
    assert isinstance(res, MultiLevelTrainResult) and isinstance(res, TrainResult)
    losses = torch.tensor(res.steps["loss"])
    assert len(losses) == 20 and torch.isfinite(losses).all()
    assert losses[-5:].mean() < losses[:5].mean()
    assert math.isnan(res.best_valid_dice) and res.best_iteration == 20 and res.history == []
    assert not res.model.training and res.seconds > 0 and res.device == "cpu"


def test_model_selection_uses_validation(toy):
    images, masks, v_img, v_truth = toy
    cfg = MultiLevelTrainConfig(iterations=12, batch_size=4, eval_every=3, seed=1, **SMALL)
    res = train_multilevel(images, masks, cfg, valid_images=v_img, valid_truth=v_truth, device="cpu", progress=False)
    assert [h["iteration"] for h in res.history] == [3, 6, 9, 12]
    dices = [h["valid_dice"] for h in res.history]
    assert res.best_valid_dice == max(dices) == dices[res.best_epoch]
    assert res.best_iteration == res.history[res.best_epoch]["iteration"]
    prob = predict(res.model, v_img)  # the returned weights are the selected ones
    assert prob.shape == v_truth.shape
    assert segmentation_scores(prob > 0.5, v_truth)["dice"] == pytest.approx(max(dices), abs=1e-6)
    assert res.summary()["eval_iteration"] == [3, 6, 9, 12]


def test_training_is_seeded_leaves_global_rng_and_predict_sizes(toy):
    images, masks, _, _ = toy
    cfg = MultiLevelTrainConfig(iterations=3, batch_size=4, seed=5, consistency="plain", lam_warmup=2 / 3, **SMALL)
    state = torch.random.get_rng_state()
    r1 = train_multilevel(images[:8], masks[:8], cfg, device="cpu", progress=False)
    assert torch.equal(torch.random.get_rng_state(), state)  # no hidden global state
    r2 = train_multilevel(images[:8], masks[:8], cfg, device="cpu", progress=False)
    assert r1.steps["loss"] == r2.steps["loss"]
    assert r1.steps["lam"] == [1.5, 3.0, 3.0]  # linear consistency warm-up over 2 of 3 iterations
    r3 = train_multilevel(images[:8], masks[:8], dataclasses.replace(cfg, seed=6), device="cpu", progress=False)
    assert r3.steps["loss"] != r1.steps["loss"]
    out = predict(r2.model, images[:2], sizes=[(20, 40), (33, 31)])
    assert [tuple(o.shape) for o in out] == [(20, 40), (33, 31)]
    assert all(float(o.min()) >= 0 and float(o.max()) <= 1 for o in out)
    with pytest.raises(ShapeError):
        train_multilevel(images[:8], masks[:4], cfg, device="cpu", progress=False)
    with pytest.raises(ValueError, match="consistency"):
        MultiLevelTrainConfig(consistency="both")
    with pytest.raises(ValueError, match="lam_warmup"):
        MultiLevelTrainConfig(lam_warmup=5)


def test_predict_moves_the_model_to_the_device(monkeypatch):
    """predict(device=...) moves the model too (it used to move only the inputs: RuntimeError)."""
    model = MultiLevelUNet(2, **SMALL)
    moved = []
    orig = model.to
    monkeypatch.setattr(model, "to", lambda *a, **k: (moved.append(torch.device(a[0])), orig(*a, **k))[1])
    out = predict(model, torch.rand(3, 3, 16, 16), device="cpu")
    assert moved == [torch.device("cpu")] and out.shape == (3, 16, 16) and out.device.type == "cpu"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_predict_on_gpu_from_a_cpu_model():
    model = MultiLevelUNet(2, **SMALL)
    out = predict(model, torch.rand(2, 3, 16, 16), device="cuda")
    assert out.device.type == "cpu" and next(model.parameters()).device.type == "cuda"


def test_lpp_backward_matches_autograd():
    g = torch.Generator().manual_seed(1)
    for sim in ("cosine", "dot"):
        f = torch.randn(1, 3, 5, 6, generator=g, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda t: lpp(t, similarity=sim), (f,), fast_mode=True)
        f = torch.randn(2, 3, 7, 6, generator=g, dtype=torch.float64, requires_grad=True)
        f32 = f.detach().float().requires_grad_(True)
        up = torch.randn(2, 3, 7, 6, generator=g)
        (lpp(f32, similarity=sim) * up).sum().backward()
        f_ref = f.detach().float().requires_grad_(True)
        (_lpp_unfold(f_ref, cosine=sim == "cosine") * up).sum().backward()
        torch.testing.assert_close(f32.grad, f_ref.grad, rtol=1e-4, atol=1e-5)


def test_lpp_values_equal_classifier_of_propagated_features():
    """classifier(lpp(f)) == lpp(f, values=classifier(f)): forward, gradients, and in forward_train."""
    g = torch.Generator().manual_seed(2)
    for sim in ("cosine", "dot"):
        f = torch.randn(2, 4, 6, 7, generator=g, dtype=torch.float64, requires_grad=True)
        v = torch.randn(2, 1, 6, 7, generator=g, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda a, b: lpp(a, similarity=sim, values=b), (f, v), fast_mode=True)
    net = UNet(widths=(8, 16), feat_ch=8)
    x = torch.rand(2, 3, 12, 12)
    logits, feats = net(x)
    ref = net.classifier(lpp(feats))
    fast = lpp(feats, values=logits)
    torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-5)
    g_ref = torch.autograd.grad(ref.square().sum(), list(net.parameters()), retain_graph=True)
    g_fast = torch.autograd.grad(fast.square().sum(), list(net.parameters()))
    for a, b in zip(g_ref, g_fast):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    model = MultiLevelUNet(2, **SMALL)
    lg, prop = model.forward_train(x)
    for lvl, sub in enumerate(model.nets):
        _, ft = sub(x)
        torch.testing.assert_close(prop[:, lvl : lvl + 1], sub.classifier(lpp(ft)), rtol=1e-5, atol=1e-5)
    with pytest.raises(ShapeError):
        lpp(feats, values=torch.zeros(2, 1, 5, 12))
