"""methods.ood: the k-NN out-of-distribution gate on synthetic features (Gaussian vs shifted)."""

from __future__ import annotations

import io

import pytest
import torch

from wsslib.core.errors import DataError, ShapeError
from wsslib.methods.ood import OODGate, ensemble_flags, fit_gate, pooled_features
from wsslib.models import create_model


def _gaussian(n: int, d: int, centre: int, g: torch.Generator, scale: float = 4.0) -> torch.Tensor:
    mu = torch.zeros(d)
    mu[centre] = scale
    return torch.randn(n, d, generator=g) + mu


def test_gate_flags_shifted_not_in_distribution():
    g = torch.Generator().manual_seed(1)
    train, valid, test = (_gaussian(n, 16, 0, g) for n in (300, 100, 200))
    shifted = _gaussian(200, 16, 3, g)
    gate = fit_gate(train, valid, k=5, quantile=0.95)
    assert gate.reference.shape == (300, 16) and gate.dim == 16
    assert abs(gate.valid_flag_rate - 0.05) <= 0.011  # the quantile holds on validation
    assert float(gate.flags(test).float().mean()) <= 0.12  # unseen in-distribution images
    assert float(gate.flags(shifted).float().mean()) == 1.0
    s = gate.score(torch.cat([test, shifted]))
    assert s.shape == (400,) and float(s[:200].mean()) < float(s[200:].mean())


def test_gate_round_trips_through_a_weights_only_checkpoint():
    g = torch.Generator().manual_seed(2)
    gate = fit_gate(_gaussian(50, 8, 0, g), _gaussian(20, 8, 0, g), k=3, quantile=0.9)
    buf = io.BytesIO()
    torch.save({"ood": gate.to_dict()}, buf)
    buf.seek(0)
    back = OODGate.from_dict(torch.load(buf, weights_only=True)["ood"], "x.pt")
    x = _gaussian(10, 8, 1, g)
    assert back.cut == gate.cut and back.k == 3 and back.quantile == 0.9
    torch.testing.assert_close(back.score(x), gate.score(x), atol=2e-3, rtol=0)  # float16 reference
    with pytest.raises(DataError, match="x.pt"):
        OODGate.from_dict({"method": "knn", "k": 3}, "x.pt")
    with pytest.raises(DataError, match="unknown"):
        OODGate.from_dict({**gate.to_dict(), "method": "mahalanobis"}, "x.pt")


def test_gate_checks_its_inputs():
    g = torch.Generator().manual_seed(3)
    tr, va = _gaussian(20, 4, 0, g), _gaussian(5, 4, 0, g)
    with pytest.raises(ValueError, match="quantile"):
        fit_gate(tr, va, quantile=0.0)
    with pytest.raises(ValueError, match="k must"):
        fit_gate(tr, va, k=0)
    with pytest.raises(DataError, match="validation"):
        fit_gate(tr, va[:0])
    gate = fit_gate(tr, va, max_reference=8, seed=0)
    assert gate.reference.shape == (8, 4)
    assert torch.equal(gate.reference, fit_gate(tr, va, max_reference=8, seed=0).reference)  # seeded subset
    with pytest.raises(ShapeError, match="expected 4 features"):
        gate.score(torch.zeros(2, 5))
    with pytest.raises(DataError, match="finite"):
        gate.score(torch.full((1, 4), float("nan")))


def test_ensemble_flags_and_pooled_features():
    f = torch.tensor([[True, True, False], [True, False, False], [False, True, False]])
    assert ensemble_flags(f, 2).tolist() == [True, True, False]
    assert ensemble_flags(f[:1], 2).tolist() == [True, True, False]  # capped at M = 1
    assert ensemble_flags(list(f), 3).tolist() == [False, False, False]
    m = create_model("smallcnn", width=8)
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    m.train()
    z = pooled_features(m, x, batch_size=2)
    assert z.shape == (3, m.num_features) and z.dtype == torch.float32 and m.training  # mode restored
    with torch.no_grad():
        torch.testing.assert_close(z, m.eval().embed(x))


def test_member_gates_and_table_on_synthetic_images():
    """Notebook 04's calls: gates of (untrained) members on synthetic in-distribution images;
    the table's rows; the synthetic OOD family scores farther than the test split."""
    from wsslib.data import load_splits
    from wsslib.methods.ood import fit_member_gates, gate_table

    data = load_splits("synthetic", ("train", "valid", "test", "ood"), size=32, n=120, seed=0, n_ood=20)
    models = []
    for i in range(2):
        torch.manual_seed(i)
        models.append(create_model("smallcnn", width=8))
    gates = fit_member_gates(models, data["train"].images, data["valid"].images, quantile=0.9)
    assert len(gates) == 2 and all(g.reference.shape[0] == len(data["train"]) for g in gates)
    # the cuts are set together: one level for both, the ensemble ("any") flags <= 10 % of valid
    assert gates[0].quantile == gates[1].quantile >= 0.9 and {g.min_votes for g in gates} == {1}
    (valid,) = gate_table(models, gates, {"valid": data["valid"].images})
    assert valid["ood_flag_rate"] <= 0.1 + 1e-9
    two = fit_member_gates(models, data["train"].images, data["valid"].images, quantile=0.9, min_votes=2)
    assert two[0].min_votes == 2 and two[0].quantile <= gates[0].quantile  # a laxer rule needs no higher level
    rows = gate_table(models, gates, {"test": data["test"].images, "ood": data["ood"].images,
                                      "none": data["ood"].images[:0]})
    assert [r["set"] for r in rows] == ["test", "ood", "none"] and rows[1]["n_images"] == 20
    assert 0.0 <= rows[0]["ood_flag_rate"] <= 1.0 and rows[2]["ood_flag_rate"] != rows[2]["ood_flag_rate"]  # NaN
    far = gates[0].score(pooled_features(models[0], data["ood"].images)).mean()
    near = gates[0].score(pooled_features(models[0], data["test"].images)).mean()
    assert float(far) > float(near)


def test_gate_sets_of_notebook_04(tmp_path, monkeypatch):
    """The sets notebook 04 scores: synthetic test + OOD family; a real set adds the other real set
    (skipped when absent) and non-endoscopy images (the Oxford-IIIT Pet fixture when present)."""
    from tests import data_fixtures as fx
    from wsslib.data import load_splits
    from wsslib.papers.nasir2025 import gate_sets

    data = load_splits("synthetic", ("test", "ood"), size=32, n=60, seed=0, n_ood=10)
    sets = gate_sets({"dataset": "synthetic", "image_size": 32, "seed": 0}, data)
    assert list(sets) == ["in-distribution (test)", "synthetic OOD family"]
    for f in ("images.tar.gz", "annotations.tar.gz"):
        fx.CONTENT[("oxford-pets", f)](tmp_path / "oxford-pets")
    monkeypatch.setenv("WSSLIB_DATA", str(tmp_path))  # the pets fixture
    sets = gate_sets({"dataset": "polypgen", "image_size": 32, "seed": 0}, data, n_other=3)
    (name,) = [k for k in sets if k.startswith("non-endoscopy")]
    assert "oxford-pets test (3 of" in name and sets[name].shape == (3, 3, 32, 32)
    assert all(v.shape[1:] == (3, 32, 32) for v in sets.values())  # Kvasir-SEG too where ../shared/data has it
