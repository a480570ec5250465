"""Notebook 04 (AAX decision protocol): what its smoke-mode results must show, and its settings.

Smoke runs train tiny models for an epoch or two, so the assertions are about the protocol's
invariants and the tables' consistency with each other, not about how well the models learn.
"""

from __future__ import annotations

import math

import pytest
from nbresults import rows

from wsslib import papers
from wsslib.methods.aax import AAXConfig
from wsslib.papers import nasir2025

NB = "04_aax_decision"


def _ok(x):
    return x is not None and not (isinstance(x, float) and math.isnan(x))


# ------------------------------------------------------------------------------ settings (no run)
def test_smoke_overlays_only_known_knobs_and_user_values_win():
    assert set(nasir2025.SMOKE) <= set(nasir2025.PRESETS["cpu"])
    s = papers.notebook_settings("04", {"preset": "cpu", "smoke": True, "image_size": 48, "k": None})
    assert s.image_size == 48 and s.k == nasir2025.SMOKE["k"] and s.epochs == nasir2025.SMOKE["epochs"]
    full = papers.notebook_settings("04", {"preset": "cpu", "smoke": False})
    assert full.epochs == nasir2025.PRESETS["cpu"]["epochs"]


def test_settings_build_the_config_and_specs():
    s = papers.notebook_settings("04", {"preset": "cpu", "smoke": False})
    cfg = nasir2025.aax_config(s)
    assert isinstance(cfg, AAXConfig) and cfg.theta == s.theta and cfg.theta_grid == tuple(s.theta_grid)
    specs = nasir2025.member_specs(s)
    assert [sp.name for sp in specs] == s.models
    assert [sp.train.epochs for sp in specs] == s.epochs and [sp.train.lr for sp in specs] == s.lrs
    vit = nasir2025.vit_spec(s)
    j = s.models.index(s.vit_replaces)
    assert vit.name == "vit_small" and vit.train.batch_size == s.batch_sizes[j] and vit.train.epochs == s.vit_epochs
    with pytest.raises(ValueError, match="one entry per model"):
        nasir2025.member_specs({**s, "epochs": [1, 2]})
    with pytest.raises(ValueError, match="different architectures"):
        nasir2025.member_specs({**s, "models": ["smallcnn"] * 3})
    with pytest.raises(ValueError, match="vit_replaces"):
        nasir2025.vit_spec({**s, "vit_replaces": "densenet121"})


# ----------------------------------------------------------------------------- the smoke run's JSON
def test_tables_present(doc):
    assert {"main", "theta_sweep", "fusion", "vit_swap", "ood", "training", "claims"} <= doc["tables"].keys()
    assert doc["params"]["smoke"] is True and doc["params"]["preset"] == "cpu"
    assert doc["params"]["image_size"] == nasir2025.SMOKE["image_size"]


def test_main_table_rows(doc):
    main = rows(doc, "main", source="this run")
    models = doc["params"]["models"]
    for name in [*models, "AAX"]:
        r = main[name]
        assert 0.0 <= r["flag_rate"] <= 1.0
        assert r["threshold"] == pytest.approx(doc["params"]["thresholds"][name])
        assert r["threshold_from"].startswith(("validation", "fallback"))
    for name in models:  # a single model flags nothing
        assert main[name]["flag_rate"] == 0.0
        assert main[name]["accuracy"] == pytest.approx(main[name]["accuracy_flagged_as_errors"])
    a = main["AAX"]
    assert a["n_flagged"] == round(a["flag_rate"] * a["n_images"])
    assert a["accuracy_flagged_as_errors"] <= (a["accuracy"] if _ok(a["accuracy"]) else 0.0) + 1e-12
    if _ok(a["iou"]):  # AAX's own masks on its own Diseased images
        assert a["iou_on_aax_set"] == pytest.approx(a["iou"])
    assert main["empty mask"]["iou"] == 0.0
    centre = main["centre prior (on AAX's Diseased images)"]
    assert centre["n_seg"] == a["n_diseased"]


def test_paper_rows_come_from_the_papers_module(doc):
    paper = rows(doc, "main", source="paper")
    assert len(paper) == len(nasir2025.PUBLISHED)
    for r in nasir2025.PUBLISHED:
        got = paper[f"{r['method']} [paper, {r['dataset']}]"]
        for key in ("accuracy", "iou", "flag_rate"):
            assert got[key] == r[key]


def test_theta_sweep(doc):
    sweep = sorted(doc["tables"]["theta_sweep"], key=lambda r: r["theta"])
    assert [r["theta"] for r in sweep] == sorted(doc["params"]["theta_grid"])
    for key in ("flag_rate", "ood_flag_rate", "valid_flag_rate"):
        values = [r[key] for r in sweep]
        assert all(b <= a + 1e-12 for a, b in zip(values, values[1:])), (key, values)
    best = min(r["valid_cost"] for r in sweep)
    suggested = next(r for r in sweep if r["theta"] == doc["params"]["theta_suggested"])
    assert suggested["valid_cost"] == pytest.approx(best)
    for r in sweep:
        cost = r["valid_error_rate"] + doc["params"]["review_cost"] * r["valid_flag_rate"]
        assert r["valid_cost"] == pytest.approx(cost)
    at_setting = next(r for r in sweep if r["theta"] == doc["params"]["theta"])
    main = rows(doc, "main")["AAX"]
    assert at_setting["flag_rate"] == pytest.approx(main["flag_rate"])
    assert at_setting["ood_flag_rate"] == pytest.approx(main["ood_flag_rate"])


def test_fusion_ablation(doc):
    fusion = rows(doc, "fusion")
    assert set(fusion) == {"intersection", "union", "majority", "mean"}
    assert len({r["n_seg"] for r in fusion.values()}) == 1, "all fusions score the same images"
    assert fusion[doc["params"]["fusion"]]["threshold"] == pytest.approx(doc["params"]["thresholds"]["AAX"])


def test_vit_swap_and_ood(doc):
    swap = rows(doc, "vit_swap")
    assert {"AAX", "AAX (ViT swap)", "vit_small (ViT swap)"} <= set(swap)
    assert doc["params"]["vit_replaces"] + " (ViT swap)" not in swap
    training = rows(doc, "training")
    assert set(training) == {*doc["params"]["models"], "vit_small (swap)"}
    ood = rows(doc, "ood")
    assert set(ood) == {"in-distribution (test)", "out-of-distribution (synthetic ood)"}
    aax_row = rows(doc, "main")["AAX"]
    assert ood["out-of-distribution (synthetic ood)"]["flag_rate"] == pytest.approx(aax_row["ood_flag_rate"])
    assert ood["in-distribution (test)"]["flag_rate"] == pytest.approx(aax_row["flag_rate"])


def test_claims_are_checked_in_the_run(doc):
    claims = rows(doc, "claims")
    assert len(claims) >= 8
    assert all(isinstance(c["holds"], bool) and c["evidence"] for c in claims.values())
    flag = next(c for t, c in claims.items() if t.startswith("the flag rate never rises"))
    assert flag["holds"] is True  # an invariant of the protocol
    ood = rows(doc, "ood")
    by_text = next(c for t, c in claims.items() if t.startswith("the OOD flag rate exceeds"))
    assert by_text["holds"] == (ood["out-of-distribution (synthetic ood)"]["flag_rate"]
                                > ood["in-distribution (test)"]["flag_rate"])
    paper_theta = next(c for t, c in claims.items() if t.startswith("the validation cost picks"))
    assert paper_theta["holds"] == (doc["params"]["theta_suggested"] == doc["params"]["theta"])
