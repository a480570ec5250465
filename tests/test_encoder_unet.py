"""Multi-level decoders on a frozen pretrained encoder (the gaze ``real`` preset): the encoder stays
frozen, the cached path sees what the image path would, and training only moves the decoders."""

from __future__ import annotations

import pytest
import torch

from wsslib.core.errors import ShapeError
from wsslib.methods import gaze
from wsslib.methods.gaze.training import MultiLevelTrainConfig, cache_encoder_features, predict, train_multilevel
from wsslib.models.encoder_unet import EncoderMultiLevelUNet, FPNDecoder, PretrainedEncoder


def _data(n: int = 8, s: int = 64, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(s), torch.arange(s), indexing="ij")
    centre = torch.randint(16, s - 16, (n, 2), generator=g)
    truth = torch.stack([((yy - cy) ** 2 + (xx - cx) ** 2) < 100 for cy, cx in centre.tolist()])
    images = torch.rand(n, 3, s, s, generator=g) * 0.3
    images[:, 0] += truth * 0.6
    masks = torch.stack([truth, torch.nn.functional.max_pool2d(truth[:, None].float(), 5, 1, 2)[:, 0] > 0], 1)
    return images.clamp(0, 1), masks, truth


def test_the_pretrained_encoder_is_frozen_and_returns_four_strides():
    enc = PretrainedEncoder("efficientnet_lite0")
    assert enc.strides == (4, 8, 16, 32) and enc.channels == (24, 40, 112, 320)
    assert not any(p.requires_grad for p in enc.parameters())
    enc.train()
    assert not enc.training and not any(m.training for m in enc.modules())
    feats = enc(torch.rand(2, 3, 64, 96))
    assert [tuple(f.shape[-2:]) for f in feats] == [(16, 24), (8, 12), (4, 6), (2, 3)]


def test_decoder_and_model_shapes():
    dec = FPNDecoder((24, 40, 112, 320), width=16, feat_ch=8)
    lg, f = dec([torch.rand(2, c, 16 // 2**k, 16 // 2**k) for k, c in enumerate((24, 40, 112, 320))])
    assert lg.shape == (2, 1, 16, 16) and f.shape == (2, 8, 16, 16)
    net = EncoderMultiLevelUNet(levels=2, width=16, feat_ch=8)
    x = torch.rand(3, 3, 64, 64)
    assert net(x).shape == (3, 2, 64, 64) and net.predict_logits(x).shape == (3, 64, 64)
    logits, prop = net.forward_train(x, propagate=True)
    assert logits.shape == prop.shape == (3, 2, 64, 64)
    with pytest.raises(ValueError, match="feature maps"):
        dec([torch.rand(1, 24, 8, 8)])


def test_cached_features_equal_the_encoder_on_flipped_images():
    images, _, _ = _data(4)
    net = EncoderMultiLevelUNet(levels=1, width=16, feat_ch=8).eval()
    cache = cache_encoder_features(net, images, images[:2], device="cpu")
    assert [tuple(t.shape[:2]) for t in cache.train] == [(4, 4)] * 4 and cache.valid[0].shape[0] == 2
    for variant, flip in ((0, lambda t: t), (1, lambda t: t.flip(-1)), (2, lambda t: t.flip(-2)),
                          (3, lambda t: t.flip(-1).flip(-2))):
        direct = net.encoder(flip(images))
        for c, d in zip(cache.train, direct):
            torch.testing.assert_close(c[:, variant].float(), d, atol=2e-2, rtol=2e-3)  # float16 storage
    assert cache.nbytes == sum(t.numel() * 2 for t in cache.train + cache.valid)


def test_training_moves_only_the_decoders_and_learns():
    images, masks, truth = _data(12)
    cfg = MultiLevelTrainConfig(iterations=30, batch_size=4, encoder="efficientnet_lite0", decoder_width=16,
                                feat_ch=8, eval_every=10, lr=3e-3)
    ref = PretrainedEncoder("efficientnet_lite0").state_dict()
    state = torch.random.get_rng_state()
    res = train_multilevel(images[:8], masks[:8], cfg, valid_images=images[8:], valid_truth=truth[8:], device="cpu",
                           progress=False)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's RNG is left alone
    assert isinstance(res.model, EncoderMultiLevelUNet) and len(res.history) == 3
    for k, v in res.model.encoder.state_dict().items():
        assert torch.equal(v, ref[k]), k
    assert res.steps["bce"][-1] < res.steps["bce"][0]
    assert predict(res.model, images[8:]).shape == (4, 64, 64)
    again = train_multilevel(images[:8], masks[:8], cfg, valid_images=images[8:], valid_truth=truth[8:],
                             device="cpu", progress=False)
    assert again.steps["loss"] == res.steps["loss"]  # seeded


def test_a_cache_that_does_not_fit_is_refused():
    images, masks, truth = _data(6)
    cfg = MultiLevelTrainConfig(iterations=2, batch_size=2, encoder="efficientnet_lite0", decoder_width=8, feat_ch=8)
    net = EncoderMultiLevelUNet(levels=2, width=8, feat_ch=8)
    cache = cache_encoder_features(net, images[:4], images[4:], device="cpu")
    with pytest.raises(ShapeError, match="cache holds"):
        train_multilevel(images, masks, cfg, valid_images=images[4:], valid_truth=truth[4:], cache=cache,
                         device="cpu", progress=False)
    with pytest.raises(ValueError, match="pretrained encoder"):
        train_multilevel(images[:4], masks[:4], MultiLevelTrainConfig(iterations=1, widths=(8, 16), feat_ch=8),
                         cache=cache, device="cpu", progress=False)


def test_gaze_protocol_shares_one_cache_and_reports_the_seed_spread():
    images, masks, truth = _data(12)
    maps = truth.float() * 0.8 + 0.1
    sets = {}
    for name, sl in (("train", slice(0, 6)), ("valid", slice(6, 9)), ("test", slice(9, 12))):
        n = sl.stop - sl.start
        sets[name] = gaze.PseudoMaskSet(
            images=images[sl], truth=truth[sl], has_mask=torch.ones(n, dtype=torch.bool), heatmaps=maps[sl],
            refined=maps[sl], masks=gaze.hierarchical_masks(maps[sl], (0.5, 0.3)), levels=(0.5, 0.3),
            ids=[str(i) for i in range(n)])
    cfg = gaze.GazeConfig(image_size=64, crf=False, iterations=4, batch_size=2, eval_every=2,
                          encoder="efficientnet_lite0", decoder_width=8, feat_ch=8, variants=("single", "lpp"))
    exp = gaze.run_gaze_experiment(cfg, sets, seed=3, device="cpu")
    assert exp.cache is not None and exp.seed == 3
    spread = exp.seed_spread([3, 4], device="cpu")
    assert [r["method"] for r in spread] == [exp.name("single"), exp.name("lpp")]
    for r in spread:
        assert r["seeds"] == [3, 4] and len(r["dice"]) == 2 and r["dice_min"] <= r["dice_mean"] <= r["dice_max"]
        assert r["dice"][0] == round(exp.score(r["method"]), 4)  # seed 3 reused, not retrained
