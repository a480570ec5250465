"""predict_explain (one backbone pass) equals mc_predict + compute_cams; the aax benchmark runs."""

from __future__ import annotations

import pytest
import torch

from wsslib.apps.bench import aax as bench_aax
from wsslib.explain.cams import compute_cams
from wsslib.explain.inference import predict_explain
from wsslib.models import create_model
from wsslib.explain.uncertainty import mc_predict, sample_dropout_masks


@pytest.mark.parametrize("name", ["smallcnn", "resnet18", "vit_small"])
@pytest.mark.parametrize("method", ["xgradcam", "gradcam", "hirescam"])
def test_predict_explain_equals_separate_paths(name, method):
    torch.manual_seed(0)
    kw = {"image_size": 64} if name == "vit_small" else {}
    model = create_model(name, dropout=0.5, **kw).eval()
    x = torch.rand(3, 3, 64, 64)
    masks = sample_dropout_masks(5, 3, model.fc.in_features, 0.5, generator=torch.Generator().manual_seed(1))
    out = predict_explain(model, x, k=5, method=method, targets=torch.tensor([1, 0, 1]), batch_size=2, masks=masks)
    ref_mc = mc_predict(model, x, k=5, fast=False, masks=masks)
    ref_cam = compute_cams(model, x, method=method, targets=torch.tensor([1, 0, 1]), fast=False)
    assert torch.allclose(out.p, ref_mc.p, atol=1e-6) and torch.allclose(out.u, ref_mc.u, atol=1e-6)
    assert (out.cams - ref_cam).abs().max() < 1e-5
    assert out.cams.shape == (3, 64, 64) and out.probs.shape == (5, 3)


def test_predict_explain_rejects_slow_method():
    model = create_model("smallcnn").eval()
    with pytest.raises(ValueError, match="fast path"):
        predict_explain(model, torch.rand(1, 3, 32, 32), method="fullgrad")


def test_bench_aax_small_runs_and_agrees():
    rec = bench_aax.run(models=("smallcnn", "resnet18"), k=4, batch=2, size=64, repeats=1)
    for key in ("naive_s", "fast_s", "floor_s", "speedup", "over_floor"):
        assert rec[key] > 0
    assert rec["max_abs_diff_p"] < 1e-6 and rec["max_abs_diff_cam"] < 1e-5
