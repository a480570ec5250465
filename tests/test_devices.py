"""Devices, mixed precision and determinism: ``device="auto"`` = CUDA, then Apple MPS, then CPU;
``amp`` (float16 autocast with a gradient scaler) on CUDA and a no-op on the CPU and MPS, so a CPU
run with ``amp=True`` gives exactly the ``amp=False`` numbers; ``deterministic`` (cuDNN
deterministic, ``torch.use_deterministic_algorithms``) in a scope that restores the caller's
settings. The CUDA-only checks skip without a GPU."""

from __future__ import annotations

import pytest
import torch

from wsslib.core import utils
from wsslib.core.utils import (amp_enabled, autocast, deterministic_scope, grad_scaler, resolve_device, seed_everything,
                               set_deterministic)
from wsslib.explain.inference import predict_explain
from wsslib.explain.uncertainty import sample_dropout_masks
from wsslib.methods.gaze.training import MultiLevelTrainConfig, train_multilevel
from wsslib.models import create_model
from wsslib.models.training import ClassifierTrainConfig, predict_logits, train_classifier

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize(("has_cuda", "has_mps", "want"), [(True, True, "cuda"), (False, True, "mps"), (False, False, "cpu")])
def test_auto_prefers_cuda_then_mps_then_cpu(monkeypatch, has_cuda, has_mps, want):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: has_cuda)
    monkeypatch.setattr(utils, "_mps_available", lambda: has_mps)
    assert resolve_device("auto").type == want and resolve_device(None).type == want


def test_asking_for_a_missing_accelerator_says_so(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(utils, "_mps_available", lambda: False)
    with pytest.raises(ValueError, match="no CUDA GPU"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match="MPS is not available"):
        resolve_device("mps")
    assert resolve_device("cpu") == torch.device("cpu")


def test_amp_is_cuda_only_and_a_no_op_elsewhere():
    assert amp_enabled(True, "cuda") and amp_enabled(True, torch.device("cuda", 1))
    assert not amp_enabled(True, "cpu") and not amp_enabled(True, "mps") and not amp_enabled(False, "cuda")
    with autocast("cpu", amp=True):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    assert not grad_scaler("cpu", amp=True).is_enabled()


def test_deterministic_scope_sets_and_restores(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    assert not torch.are_deterministic_algorithms_enabled()
    with deterministic_scope(True):
        assert torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.deterministic
        assert not torch.backends.cudnn.benchmark
        import os

        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert not torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.deterministic
    with deterministic_scope(False):
        assert not torch.are_deterministic_algorithms_enabled()


def test_seed_everything_can_switch_on_determinism():
    try:
        seed_everything(3, deterministic=True)
        assert torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.deterministic
        a = torch.rand(3)
        seed_everything(3)
        assert torch.equal(a, torch.rand(3))
    finally:
        set_deterministic(False)
    assert not torch.are_deterministic_algorithms_enabled()


def _tiny_gaze(n: int = 6, size: int = 16):
    g = torch.Generator().manual_seed(0)
    images = torch.rand(n, 3, size, size, generator=g)
    masks = torch.rand(n, 2, size, size, generator=g) > 0.5
    return images, masks


def test_multilevel_training_with_amp_on_a_cpu_equals_without():
    images, masks = _tiny_gaze()
    cfg = MultiLevelTrainConfig(iterations=3, batch_size=2, widths=(4, 8, 8, 8), feat_ch=4, eval_every=1)
    truth = masks[:, 0]
    plain = train_multilevel(images, masks, cfg, valid_images=images, valid_truth=truth, device="cpu", progress=False)
    both = MultiLevelTrainConfig(**{**cfg.__dict__, "amp": True, "deterministic": True})
    amp = train_multilevel(images, masks, both, valid_images=images, valid_truth=truth, device="cpu", progress=False)
    assert plain.steps["loss"] == amp.steps["loss"] and plain.history == amp.history
    assert not torch.are_deterministic_algorithms_enabled()  # the scope ended with the training


def test_classifier_training_with_amp_and_determinism_on_a_cpu_equals_without():
    g = torch.Generator().manual_seed(0)
    from wsslib.data import TensorBatch

    tr = TensorBatch(torch.rand(16, 3, 24, 24, generator=g), torch.arange(16) % 2)
    va = TensorBatch(torch.rand(8, 3, 24, 24, generator=g), torch.arange(8) % 2)
    cfg = ClassifierTrainConfig(lr=1e-3, batch_size=8, epochs=1, patience=None)
    runs = [train_classifier(create_model("smallcnn", width=4), tr, va, c, device="cpu", progress=False)
            for c in (cfg, ClassifierTrainConfig(**{**cfg.__dict__, "amp": True, "deterministic": True}))]
    assert runs[0].history == runs[1].history
    assert torch.equal(predict_logits(runs[0].model, va.images), predict_logits(runs[1].model, va.images, amp=True))


def test_predict_explain_with_amp_on_a_cpu_equals_without():
    torch.manual_seed(0)
    model = create_model("smallcnn", dropout=0.5, width=4).eval()
    x = torch.rand(3, 3, 32, 32)
    masks = sample_dropout_masks(4, 3, model.fc.in_features, 0.5, generator=torch.Generator().manual_seed(1))
    a = predict_explain(model, x, k=4, masks=masks)
    b = predict_explain(model, x, k=4, masks=masks, amp=True)
    assert torch.equal(a.probs, b.probs) and torch.equal(a.cams, b.cams)


@cuda
def test_amp_on_cuda_computes_in_float16_and_returns_float32():
    with autocast("cuda", amp=True):
        assert (torch.ones(8, 8, device="cuda") @ torch.ones(8, 8, device="cuda")).dtype == torch.float16
    assert grad_scaler("cuda", amp=True).is_enabled()
    torch.manual_seed(0)
    model = create_model("smallcnn", dropout=0.5, width=8).cuda().eval()
    x = torch.rand(4, 3, 64, 64, device="cuda")
    masks = sample_dropout_masks(4, 4, model.fc.in_features, 0.5, generator=torch.Generator().manual_seed(1))
    ref = predict_explain(model, x, k=4, masks=masks)
    half = predict_explain(model, x, k=4, masks=masks, amp=True)
    assert half.cams.dtype == torch.float32 and half.probs.dtype == torch.float32
    assert torch.allclose(half.probs, ref.probs, atol=1e-2)
    logits = predict_logits(model, x.cpu(), amp=True)
    assert logits.dtype == torch.float32 and torch.isfinite(logits).all()


@cuda
def test_multilevel_training_on_cuda_with_amp_and_determinism():
    images, masks = _tiny_gaze(8, 32)
    cfg = MultiLevelTrainConfig(iterations=6, batch_size=4, widths=(8, 16, 16, 16), feat_ch=8, amp=True,
                                deterministic=True)
    runs = [train_multilevel(images, masks, cfg, device="cuda", progress=False) for _ in range(2)]
    assert all(torch.isfinite(torch.tensor(r.steps["loss"])).all() for r in runs)
    assert runs[0].steps["loss"] == runs[1].steps["loss"]  # deterministic: the same numbers twice
