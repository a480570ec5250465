"""fastai training: every backbone trains a smoke epoch; the AAX loss; determinism; best epoch kept."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wsslib.data import get_dataset, to_tensors
from wsslib.models import create_model, list_models
from wsslib.data.base import TensorBatch
from wsslib.models.training import AAXLoss, ClassifierTrainConfig, train_classifier


@pytest.fixture(scope="module")
def tiny():
    """16 train and 8 valid synthetic images at 32 px."""
    tr = to_tensors(get_dataset("synthetic", split="train", n=40, size=32, seed=3))
    va = to_tensors(get_dataset("synthetic", split="valid", n=40, size=32, seed=3))
    return TensorBatch(tr.images[:16], tr.labels[:16]), TensorBatch(va.images[:8], va.labels[:8])


@pytest.mark.parametrize("name", list_models())
def test_every_backbone_trains_one_epoch(name, tiny):
    kw = {"image_size": 32} if name == "vit_small" else {}
    model = create_model(name, **kw)
    before = [p.detach().clone() for p in model.parameters()]
    res = train_classifier(model, *tiny, ClassifierTrainConfig(epochs=1, batch_size=8, lr=1e-3), progress=False, device="cpu")
    assert len(res.history) == 1
    h = res.history[0]
    assert {"train_loss", "valid_loss", "accuracy"} <= h.keys()
    assert all(torch.isfinite(torch.tensor(v)) for v in h.values())
    assert any(not torch.equal(a, b) for a, b in zip(before, res.model.parameters())), "no weight changed"
    assert not res.model.training


def test_training_is_deterministic_for_a_seed(tiny):
    runs = []
    for _ in range(2):
        m = create_model("smallcnn", seed=123)
        runs.append(train_classifier(m, *tiny, ClassifierTrainConfig(epochs=2, batch_size=8, lr=1e-3, seed=7), progress=False).history)
    assert runs[0] == runs[1]


def test_library_calls_leave_global_random_state_alone(tiny):
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    m = create_model("smallcnn", seed=1)
    train_classifier(m, *tiny, ClassifierTrainConfig(epochs=1, batch_size=8, seed=2), progress=False)
    assert torch.equal(torch.rand(3), expected)


def test_best_epoch_weights_are_kept(tiny):
    torch.manual_seed(0)
    m = create_model("smallcnn")
    res = train_classifier(m, *tiny, ClassifierTrainConfig(epochs=4, batch_size=8, lr=3e-2, patience=None), progress=False)
    best = res.best_epoch
    assert res.history[best]["valid_loss"] == min(h["valid_loss"] for h in res.history)
    with torch.no_grad():
        loss = torch.nn.functional.cross_entropy(res.model(tiny[1].images), tiny[1].labels).item()
    assert loss == pytest.approx(res.history[best]["valid_loss"], rel=1e-4)


def test_early_stopping_stops(tiny):
    torch.manual_seed(0)
    m = create_model("smallcnn")
    res = train_classifier(m, *tiny, ClassifierTrainConfig(epochs=30, batch_size=8, lr=0.5, patience=1), progress=False)
    assert len(res.history) < 30


def test_aax_variance_loss():
    logits = torch.tensor([[[2.0, 0.0], [0.0, 2.0]], [[1.0, 1.0], [1.0, 1.0]]])  # (B=2, K=2, C=2)
    y = torch.tensor([0, 1])
    ce = AAXLoss(0.0)(logits, y)
    with_var = AAXLoss(3.0)(logits, y)
    p1 = logits.softmax(-1)[..., 1]
    expected_var = p1.var(dim=1, unbiased=False).mean()
    assert with_var.item() == pytest.approx(ce.item() + 3.0 * expected_var.item(), rel=1e-6)
    assert AAXLoss(0.0)(logits[:, 0], y).item() == pytest.approx(
        torch.nn.functional.cross_entropy(logits[:, 0], y).item())


def test_training_with_variance_term(tiny):
    torch.manual_seed(0)
    m = create_model("smallcnn", dropout=0.5)
    res = train_classifier(m, *tiny, ClassifierTrainConfig(epochs=1, batch_size=8, variance_lambda=1.0, variance_k=3), progress=False)
    assert res.history and torch.isfinite(torch.tensor(res.history[0]["valid_loss"]))
    assert m(tiny[0].images[:2]).shape == (2, 2)  # the plain classifier comes back, not the K-head wrapper


def test_balanced_class_weights_follow_sklearn():
    from sklearn.utils.class_weight import compute_class_weight

    from wsslib.models.training import class_weights

    y = torch.tensor([1, 1, 1, 1, 1, 0, 0, 1, 1, 1])
    ours = class_weights(y, "balanced")
    ref = compute_class_weight("balanced", classes=np.array([0, 1]), y=y.numpy())
    assert torch.allclose(ours, torch.tensor(ref, dtype=torch.float32))
    assert class_weights(y, None) is None
    with pytest.raises(ValueError, match="every class"):
        class_weights(torch.ones(4, dtype=torch.long), "balanced")
    with pytest.raises(ValueError, match="None or 'balanced'"):
        class_weights(y, "inverse")


def test_weighted_aax_loss_is_weighted_cross_entropy():
    logits = torch.randn(6, 3, 2, generator=torch.Generator().manual_seed(0))  # (B, K, C)
    y = torch.tensor([0, 1, 1, 1, 0, 1])
    w = torch.tensor([2.0, 0.5])
    ref = torch.nn.functional.cross_entropy(logits.reshape(18, 2), y.repeat_interleave(3), weight=w)
    assert AAXLoss(0.0, w)(logits, y).item() == pytest.approx(ref.item(), rel=1e-6)
    assert AAXLoss(0.0, w)(logits, y).item() != pytest.approx(AAXLoss(0.0)(logits, y).item(), rel=1e-3)


@pytest.mark.parametrize("freeze", [None, 2])
def test_balanced_training_moves_the_decision_toward_the_minority_class(freeze, tiny):
    """Same seed, same data made imbalanced (one class kept thrice): the balanced loss gives the
    minority class a higher mean probability than the plain loss does."""
    tr, va = tiny
    rare = int(tr.labels.float().mean() > 0.5) ^ 1
    keep = torch.cat([torch.nonzero(tr.labels != rare).flatten().repeat(3), torch.nonzero(tr.labels == rare).flatten()])
    imb = TensorBatch(tr.images[keep], tr.labels[keep])
    p_rare = []
    for cw in (None, "balanced"):
        name = "efficientnet_lite0" if freeze is not None else "smallcnn"
        m = create_model(name, seed=1, **({"image_size": 32} if freeze is not None else {}))
        cfg = ClassifierTrainConfig(epochs=2, batch_size=8, lr=3e-3, seed=0, freeze=freeze, class_weight=cw)
        res = train_classifier(m, imb, va, cfg, progress=False, device="cpu")
        with torch.no_grad():
            p_rare.append(float(res.model(va.images).softmax(1)[:, rare].mean()))
    assert p_rare[1] > p_rare[0]
