"""Tests of wsslib.uncertainty: MC dropout, fast path == naive path."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from wsslib.core.errors import ShapeError
from wsslib.models import Classifier, create_model, list_models
from wsslib.explain.uncertainty import MCResult, mc_predict, sample_dropout_masks

SIZE = 64


@pytest.fixture(scope="module")
def models() -> dict[str, Classifier]:
    torch.manual_seed(0)
    return {n: create_model(n, **({"image_size": SIZE} if n == "vit_small" else {})) for n in list_models()}


@pytest.fixture
def x() -> torch.Tensor:
    return torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_sample_dropout_masks():
    m = sample_dropout_masks(50, 4, 64, 0.5, generator=_gen())
    assert m.shape == (50, 4, 64) and m.dtype == torch.float32
    assert set(m.unique().tolist()) == {0.0, 2.0}
    assert abs(m.mean().item() - 1.0) < 0.05  # inverted dropout keeps the expectation
    assert torch.equal(m, sample_dropout_masks(50, 4, 64, 0.5, generator=_gen()))
    assert torch.equal(sample_dropout_masks(3, 2, 5, 0.0), torch.ones(3, 2, 5))
    with pytest.raises(ValueError):
        sample_dropout_masks(3, 2, 5, 1.0)


@pytest.mark.parametrize("name", sorted(list_models()))
def test_fast_equals_naive_with_same_masks(models, x, name):
    m = models[name].eval()
    masks = sample_dropout_masks(5, 2, m.num_features, m.dropout.p, generator=_gen(2))
    fast = mc_predict(m, x, k=5, fast=True, masks=masks)
    naive = mc_predict(m, x, k=5, fast=False, masks=masks)
    assert isinstance(fast, MCResult)
    assert fast.probs.shape == (5, 2) and fast.p.shape == (2,) and fast.u.shape == (2,)
    assert torch.allclose(fast.probs, naive.probs, atol=1e-6)
    assert torch.allclose(fast.p, naive.p, atol=1e-6)
    assert torch.allclose(fast.u, naive.u, atol=1e-6)
    # and the naive path with masks is what an explicit per-pass computation gives
    with torch.no_grad():
        z = m.embed(x)
        ref = torch.stack([torch.softmax(m.fc(z * masks[i]), -1)[:, 1] for i in range(5)])
    assert torch.allclose(naive.probs, ref, atol=1e-6)


def test_same_generator_same_result_and_fast_matches_naive(models, x):
    m = models["smallcnn"]
    a = mc_predict(m, x, k=8, generator=_gen(5))
    b = mc_predict(m, x, k=8, generator=_gen(5))
    c = mc_predict(m, x, k=8, fast=False, generator=_gen(5))  # draws the same masks
    assert torch.equal(a.probs, b.probs)
    assert torch.allclose(a.probs, c.probs, atol=1e-6)


def test_random_masks_give_spread_and_dropout0_none(x):
    torch.manual_seed(0)
    m = create_model("smallcnn", dropout=0.5)
    m.fc.weight.data.mul_(50)  # make the head sensitive enough for a clear spread
    for fast in (True, False):
        res = mc_predict(m, x, k=10, fast=fast, generator=_gen(1))
        assert (res.u > 0).all()
        assert torch.allclose(res.u, res.probs.std(0, unbiased=False))  # population std
    # naive path with nn.Dropout itself (global RNG)
    torch.manual_seed(1)
    assert (mc_predict(m, x, k=10, fast=False).u > 0).all()

    m0 = create_model("smallcnn", dropout=0.0).eval()
    with torch.no_grad():
        det = torch.softmax(m0(x), -1)[:, 1]
    for fast in (True, False):
        res = mc_predict(m0, x, k=6, fast=fast, generator=_gen(1))
        assert torch.equal(res.u, torch.zeros(2))
        assert torch.allclose(res.p, det, atol=1e-6)


def test_k1_has_zero_uncertainty(models, x):
    for fast in (True, False):
        res = mc_predict(models["smallcnn"], x, k=1, fast=fast, generator=_gen(3))
        assert res.probs.shape == (1, 2)
        assert torch.equal(res.u, torch.zeros(2))
        assert torch.equal(res.p, res.probs[0])


def test_modes_restored_and_batchnorm_in_eval(x):
    torch.manual_seed(0)
    m = create_model("smallcnn")
    m.train()
    m.features.stage1[1].eval()  # a mixed state must come back exactly
    before = {n: mod.training for n, mod in m.named_modules()}
    stats = {k: v.clone() for k, v in m.state_dict().items()}
    for fast in (True, False):
        mc_predict(m, x, k=3, fast=fast, generator=_gen())
        assert {n: mod.training for n, mod in m.named_modules()} == before
    # BatchNorm ran in eval mode: running statistics untouched
    for k, v in m.state_dict().items():
        assert torch.equal(v, stats[k]), k
    assert torch.is_grad_enabled()  # no_grad did not leak out


def test_batch_size_chunks_match(models):
    m = models["smallcnn"]
    xs = torch.rand(5, 3, SIZE, SIZE, generator=_gen(9))
    masks = sample_dropout_masks(4, 5, m.num_features, 0.5, generator=_gen(4))
    full = mc_predict(m, xs, k=4, masks=masks)
    for fast in (True, False):
        chunked = mc_predict(m, xs, k=4, fast=fast, batch_size=2, masks=masks)
        assert torch.allclose(full.probs, chunked.probs, atol=1e-6)


def test_bad_arguments(models, x):
    m = models["smallcnn"]
    with pytest.raises(ShapeError, match="images"):
        mc_predict(m, x[0])
    with pytest.raises(ShapeError, match="masks"):
        mc_predict(m, x, k=3, masks=torch.ones(3, 2, m.num_features + 1))
    with pytest.raises(ShapeError, match="masks"):
        mc_predict(m, x, k=3, masks=torch.ones(4, 2, m.num_features))
    with pytest.raises(ValueError):
        mc_predict(m, x, k=0)
    with pytest.raises(TypeError):
        mc_predict(nn.Linear(3, 2), x)
