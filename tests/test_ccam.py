"""Tests of :mod:`wsslib.explain.ccam`: shapes, the contrastive loss, training, maps and polarity."""

from __future__ import annotations

import math

import pytest
import torch

from wsslib.explain.ccam import (
    CCAM,
    CCAMTrainConfig,
    CCAMTrainResult,
    ccam_loss,
    ccam_maps,
    choose_polarity,
    cosine_similarity_matrix,
    sim_max_loss,
    sim_min_loss,
    train_ccam,
)
from wsslib.core.errors import ShapeError
from wsslib.models import create_model


def _images(n: int = 6, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------ shapes
@pytest.mark.parametrize(
    ("name", "size", "channels", "grid"),
    [
        ("smallcnn", 64, 64 + 128, 8),  # stage3 + stage4, stride 8 once stage4 has stride 1
        ("resnet18", 64, 256 + 512, 4),  # layer3 + layer4, output stride 16
        ("resnet50", 64, 1024 + 2048, 4),  # their setup: 3072 channels
        ("vit_small", 64, 384, 4),  # other backbones: the final feature map
    ],
)
def test_shapes(name, size, channels, grid):
    kw = {"image_size": size} if name == "vit_small" else {}
    model = CCAM(name, **kw)
    out = model(_images(3, size))
    assert model.num_features == channels
    assert out.fg.shape == out.bg.shape == (3, channels)
    assert out.map.shape == out.logits.shape == (3, 1, grid, grid)
    assert bool((out.map > 0).all() and (out.map < 1).all())
    maps = ccam_maps(model, _images(2, size), batch_size=1)
    assert maps.shape == (2, size, size) and maps.dtype == torch.float32
    assert float(maps.min()) >= 0.0 and float(maps.max()) <= 1.0


def test_output_stride_options():
    assert CCAM("resnet18", last_stride_one=False, multi_level=False)(_images(2, 64)).map.shape[-1] == 2
    with pytest.raises(ValueError, match="last_stride_one"):
        CCAM("resnet18", last_stride_one=False, multi_level=True)


def test_embeddings_are_map_weighted_means():
    model = CCAM("smallcnn").eval()
    x = _images(2, 32)
    with torch.no_grad():
        out = model(x)
        feats = model.features(x)
    m = out.map
    assert torch.allclose(out.fg, (m * feats).mean(dim=(2, 3)), atol=1e-5)
    assert torch.allclose(out.bg, ((1 - m) * feats).mean(dim=(2, 3)), atol=1e-5)
    assert torch.allclose(out.fg + out.bg, feats.mean(dim=(2, 3)), atol=1e-5)


def test_seeded_init_is_deterministic_and_leaves_global_rng():
    state = torch.random.get_rng_state()
    a, b, c = CCAM("smallcnn", seed=1), CCAM("smallcnn", seed=1), CCAM("smallcnn", seed=2)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(a.activation_head.weight, b.activation_head.weight)
    assert not torch.equal(a.activation_head.weight, c.activation_head.weight)


def test_from_classifier_copies_backbone_only():
    torch.manual_seed(0)
    clf = create_model("smallcnn", dropout=0.2)
    model = CCAM.from_classifier(clf)
    for k, v in clf.features.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[k], v)
    # the copy is independent of the classifier
    with torch.no_grad():
        next(model.backbone.parameters()).add_(1.0)
    assert not torch.equal(next(model.backbone.parameters()), next(clf.features.parameters()))
    # stride changed in the CCAM copy, not in the classifier
    assert clf.features.stage4[0].stride == (2, 2) and model.backbone.stage4[0].stride == (1, 1)
    with pytest.raises(ValueError, match="create_model"):
        CCAM.from_classifier(torch.nn.Linear(2, 2))


# -------------------------------------------------------------------------------------- loss
def test_similarity_clamped():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    s = cosine_similarity_matrix(a, a)
    assert s.shape == (3, 3)
    assert float(s.max()) == pytest.approx(0.9995) and float(s.min()) == pytest.approx(0.0005)


def test_sim_min_matches_formula():
    fg, bg = torch.rand(3, 5), torch.rand(3, 5)
    s = torch.nn.functional.cosine_similarity(fg[:, None], bg[None], dim=-1).clamp(0.0005, 0.9995)
    assert float(sim_min_loss(fg, bg)) == pytest.approx(float(-torch.log(1 - s).mean()), rel=1e-5)


def test_sim_max_rank_weights_by_hand():
    # three unit vectors at angles 0, 30, 90 degrees: similarities 1, cos30, 0 (-> clamped)
    ang = torch.tensor([0.0, math.pi / 6, math.pi / 2])
    v = torch.stack([ang.cos(), ang.sin()], dim=1)
    c30 = math.cos(math.pi / 6)
    lo = 0.0005
    # row 0: j=1 (s=c30, rank 0), j=2 (s=lo, rank 1); row 1: j=0 (c30, rank 0), j=2 (cos60, rank 1);
    # row 2: j=1 (cos60, rank 0), j=0 (lo, rank 1)
    w1 = math.exp(-0.25)
    terms = [
        -math.log(c30), -w1 * math.log(lo),
        -math.log(c30), -w1 * math.log(0.5),
        -math.log(0.5), -w1 * math.log(lo),
    ]
    assert float(sim_max_loss(v, alpha=0.25)) == pytest.approx(sum(terms) / 6, rel=1e-4)
    # alpha = 0: plain mean of -log s over the off-diagonal pairs
    assert float(sim_max_loss(v, alpha=0.0)) == pytest.approx(
        (2 * -math.log(c30) + 2 * -math.log(0.5) + 2 * -math.log(lo)) / 6, rel=1e-4)


def test_code_variant_same_gradient_up_to_scale():
    v = torch.rand(5, 7, requires_grad=True)
    (g_paper,) = torch.autograd.grad(sim_max_loss(v, variant="paper"), v)
    (g_code,) = torch.autograd.grad(sim_max_loss(v, variant="code"), v)
    assert torch.allclose(g_code, g_paper * (5 - 1) / 5, atol=1e-6)
    with pytest.raises(ValueError, match="variant"):
        sim_max_loss(v, variant="other")


def test_loss_terms_and_errors():
    fg, bg = torch.rand(4, 6), torch.rand(4, 6)
    loss = ccam_loss(fg, bg)
    assert torch.isclose(loss.total, loss.neg + loss.pos_fg + loss.pos_bg)
    assert all(float(t) >= 0 for t in loss)
    with pytest.raises(ShapeError, match="at least 2"):
        ccam_loss(fg[:1], bg[:1])
    with pytest.raises(ShapeError):
        ccam_loss(fg, bg[:, :3])


def test_loss_prefers_separated_embeddings():
    """fg alike across images, bg alike across images, fg orthogonal to bg: a low loss."""
    g = torch.Generator().manual_seed(0)
    good_fg = torch.tensor([1.0, 0.0]) + 0.05 * torch.randn(6, 2, generator=g)
    good_bg = torch.tensor([0.0, 1.0]) + 0.05 * torch.randn(6, 2, generator=g)
    mixed = torch.tensor([1.0, 1.0]) + 0.05 * torch.randn(6, 2, generator=g)
    assert float(ccam_loss(good_fg, good_bg).total) < float(ccam_loss(mixed, mixed.flip(0)).total)


# ---------------------------------------------------------------------------------- training
def _toy_batch(n: int = 8, size: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy greenish backgrounds with a bright red square at a random place; its masks."""
    g = torch.Generator().manual_seed(seed)
    x = 0.1 * torch.rand(n, 3, size, size, generator=g)
    x[:, 1] += 0.4
    masks = torch.zeros(n, size, size, dtype=torch.bool)
    for i in range(n):
        r, c = torch.randint(0, size // 2, (2,), generator=g).tolist()
        masks[i, r : r + size // 2, c : c + size // 2] = True
    x[:, 0][masks] = 0.9
    x[:, 1][masks] = 0.1
    return x.clamp(0, 1), masks


def test_loss_decreases_on_toy_batch():
    x, _ = _toy_batch()
    model = CCAM("smallcnn", seed=0)
    res = train_ccam(model, x, CCAMTrainConfig(epochs=15, lr=3e-3, batch_size=8, optimizer="adam", seed=0),
                     device="cpu", progress=False)
    losses = [h["loss"] for h in res.history]
    assert len(losses) == 15 and all(math.isfinite(v) for v in losses)
    assert min(losses[-3:]) < losses[0] - 0.05
    assert {"epoch", "loss", "neg", "pos_fg", "pos_bg", "lr"} <= res.history[0].keys()
    assert not model.training
    assert isinstance(res, CCAMTrainResult) and res.model is model
    assert res.best_epoch == 14 and res.seconds > 0 and res.device == "cpu"


def test_training_is_deterministic_and_leaves_global_rng_alone():
    x, _ = _toy_batch(n=6)
    cfg = CCAMTrainConfig(epochs=2, batch_size=3, lr=1e-3, seed=5)
    state = torch.get_rng_state()
    h = [train_ccam(CCAM("smallcnn", seed=3), x, cfg, device="cpu", progress=False).history for _ in range(2)]
    assert h[0] == h[1]
    assert torch.equal(torch.get_rng_state(), state)  # no hidden state: the caller's stream is untouched
    other = train_ccam(CCAM("smallcnn", seed=3), x, CCAMTrainConfig(epochs=2, batch_size=3, lr=1e-3, seed=6),
                       device="cpu", progress=False).history
    assert other != h[0]  # the seed drives shuffling and flips


def test_train_errors():
    with pytest.raises(ShapeError, match="at least 2"):
        train_ccam(CCAM("smallcnn"), _images(1), progress=False, device="cpu")
    with pytest.raises(ValueError, match="optimizer"):
        CCAMTrainConfig(optimizer="rmsprop")
    with pytest.raises(ValueError, match="batch_size"):
        CCAMTrainConfig(batch_size=1)


# ---------------------------------------------------------------------------- maps, polarity
def test_maps_flip_and_normalize():
    model = CCAM("smallcnn")
    x = _images(3, 32)
    m = ccam_maps(model, x)
    assert torch.allclose(ccam_maps(model, x, flip=True), 1 - m)
    assert torch.allclose(m.flatten(1).max(1).values, torch.ones(3), atol=1e-5)
    s = ccam_maps(model, x, normalize="sigmoid")
    assert float(s.min()) > 0 and float(s.max()) < 1
    with pytest.raises(ValueError, match="normalize"):
        ccam_maps(model, x, normalize="softmax")
    assert model.training  # mode restored


def _blob_maps(n: int = 4, size: int = 32) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    maps = torch.zeros(n, size, size)
    for i in range(n):
        cy, cx = 10 + 3 * i, 20 - 3 * i
        maps[i] = torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 30.0)
    return maps


def test_polarity_border_rule():
    maps = _blob_maps()
    keep, flip = choose_polarity(maps), choose_polarity(1 - maps)
    assert not keep.flip and keep.score > 0 and keep.method == "border" and keep.n_images == 4
    assert flip.flip and flip.score == pytest.approx(-keep.score)


def test_polarity_reference_rule():
    maps = _blob_maps()
    noisy_ref = (maps + 0.3 * torch.rand(maps.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    keep = choose_polarity(maps, method="reference", reference=noisy_ref)
    flip = choose_polarity(1 - maps, method="reference", reference=noisy_ref)
    assert not keep.flip and keep.score > 0.5
    assert flip.flip and flip.score == pytest.approx(-keep.score)
    with pytest.raises(ValueError, match="reference"):
        choose_polarity(maps, method="reference")
    with pytest.raises(ShapeError):
        choose_polarity(maps, method="reference", reference=noisy_ref[:2])
    with pytest.raises(ValueError, match="method"):
        choose_polarity(maps, method="centre")  # type: ignore[arg-type]
    with pytest.raises(ShapeError):
        choose_polarity(maps[:0])


class _Redness(torch.nn.Module):
    """A fixed 'classifier': logit of class 1 = 20 * mean(red - green), class 0 = 0."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(20.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.scale * (x[:, 0] - x[:, 1]).mean(dim=(1, 2))
        return torch.stack([torch.zeros_like(z), z], dim=1)


def test_polarity_deletion_rule():
    x, masks = _toy_batch(n=6, seed=2)
    clf = _Redness().train()
    maps = masks.float() * 0.8 + 0.1 * torch.rand(masks.shape, generator=torch.Generator().manual_seed(0))
    keep = choose_polarity(maps, method="deletion", images=x, classifier=clf, fraction=0.2)
    flip = choose_polarity(1 - maps, method="deletion", images=x, classifier=clf, fraction=0.2)
    assert not keep.flip and keep.score > 0.05 and keep.method == "deletion"
    assert flip.flip and flip.score < -0.05
    assert clf.training  # mode restored
    with pytest.raises(ValueError, match="classifier"):
        choose_polarity(maps, method="deletion", images=x)
    with pytest.raises(ValueError, match="fraction"):
        choose_polarity(maps, method="deletion", images=x, classifier=clf, fraction=1.5)
    with pytest.raises(ShapeError):
        choose_polarity(maps, method="deletion", images=x[:2], classifier=clf)


def test_polarity_of_trained_toy_model_points_at_the_squares():
    """End to end: train on toy images, decide polarity on them, the chosen map overlaps the squares."""
    x, masks = _toy_batch(n=16, seed=1)
    cfg = CCAMTrainConfig(epochs=12, lr=3e-3, batch_size=8, optimizer="adam", seed=0)
    model = train_ccam(CCAM("smallcnn", seed=0), x, cfg, device="cpu", progress=False).model
    raw = ccam_maps(model, x)
    pol = choose_polarity(raw, reference=masks.float(), method="reference")
    maps = ccam_maps(model, x, flip=pol.flip)
    inside = float(maps[masks].mean())
    outside = float(maps[~masks].mean())
    assert inside > outside
