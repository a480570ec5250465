"""Notebook 03 (CAM ensembles, EnsembleCAM): what its results JSON must show.

The suite runs 03 in full mode (the ``cpu`` preset) unless ``$WSSLIB_TEST_FULL`` says otherwise,
and ``WSSLIB_SMOKE=1`` runs give tiny models trained for two epochs, so the assertions are about
the protocol's invariants (cross-validation, thresholds from the grid, the search's guarantees)
and the tables' content, not about how well the models learn. The protocol itself is tested on
tiny data in ``test_ensembles.py``; the recorded full-run numbers in ``test_expected_results.py``.
"""

from __future__ import annotations

import math

import pytest
from nbresults import rows

from wsslib.evaluate.metrics import dsc_from_miou
from wsslib.methods.ensembles import KEYS, method_order
from wsslib.papers import ostrowski

NB = "03_cam_ensembles"
ORDER = method_order()


def test_tables_present(doc):
    assert {"ensembles", "folds", "classification", "grid", "claims"} <= doc["tables"].keys()
    assert doc["params"]["preset"] == "cpu" and doc["params"]["n_folds"] >= 2


def test_paper_rows_are_the_papers_module(doc):
    paper = [{k: v for k, v in r.items() if k != "source"} for r in doc["tables"]["ensembles"] if r["source"] == "paper"]
    want = [{k: v for k, v in r.items()} for r in ostrowski.PUBLISHED]
    assert len(paper) == len(want)
    for got, exp in zip(paper, want):
        assert {k: got.get(k) for k in exp} == exp
    for r in paper:  # the paper's DSC is 2 mIoU / (1 + mIoU), to the printed precision
        assert r["dsc_paper"] == pytest.approx(dsc_from_miou(r["miou_fg_bg"]), abs=0.0015)


def test_this_run_rows_in_the_papers_order_with_spread(doc):
    ours = rows(doc, "ensembles", source="this run")
    assert list(ours) == ORDER
    for method, r in ours.items():
        for key in ("dsc_paper", "miou_fg_bg", "dice", "iou"):
            assert 0.0 <= r[key] <= 1.0, (method, key)
            assert r[key + "_sd"] is not None and r[key + "_sd"] >= 0.0, (method, key)
        assert r["dsc_paper"] == pytest.approx(dsc_from_miou(r["miou_fg_bg"]), abs=0.02)  # mean of a ratio
        assert r["dataset"] == doc["params"]["dataset"]


def test_summary_is_the_mean_of_the_folds(doc):
    ours = rows(doc, "ensembles", source="this run")
    n_folds = doc["params"]["n_folds"]
    for method in ORDER:
        per_fold = [r for r in doc["tables"]["folds"] if r["method"] == method]
        assert sorted(r["fold"] for r in per_fold) == list(range(n_folds))
        for key in KEYS:
            vals = [r[key] for r in per_fold if r[key] is not None and not math.isnan(r[key])]
            if vals:
                assert ours[method][key] == pytest.approx(sum(vals) / len(vals), abs=1e-9), (method, key)


def test_baselines(doc):
    ours = rows(doc, "ensembles", source="this run")
    assert ours["Empty"]["dice"] == 0.0 and ours["Empty"]["iou"] == 0.0
    assert ours["centre prior"]["dice"] > 0.0
    # Empty's pooled mIoU is half the background share: strictly between 0.25 and 0.5
    assert 0.25 < ours["Empty"]["miou_fg_bg"] < 0.5


def test_thresholds_come_from_the_grid_each_fold(doc):
    grid, step = doc["grid"], doc["params"]["grid_step"]
    assert len(grid) == round(1 / step) + 1 and grid[0] == 0.0 and grid[-1] == 1.0
    ours = rows(doc, "ensembles", source="this run")
    n_folds = doc["params"]["n_folds"]
    for method in ORDER[2:]:
        per_fold = ours[method]["thresholds_per_fold"]
        assert len(per_fold) == n_folds
        for ts in per_fold:
            assert len(ts) == (1 if method.startswith("model") else 2)
            assert all(any(math.isclose(t, g) for g in grid) for t in ts)
    # the chosen 'and' cells are the grid indices of its thresholds
    for cell, ts in zip(doc["and_chosen_per_fold"], ours["and"]["thresholds_per_fold"]):
        assert [grid[i] for i in cell] == pytest.approx(ts)


def test_or_search_covers_each_single_model(doc):
    # 'or' with the other model at threshold 1.0 (an empty mask) IS the single model, so its
    # best training score can never be below the single models' (the search is exhaustive).
    folds = doc["tables"]["folds"]
    for k in range(doc["params"]["n_folds"]):
        fold = {r["method"]: r for r in folds if r["fold"] == k}
        single = max(fold["model A"]["train_score"], fold["model B"]["train_score"])
        assert fold["or"]["train_score"] >= single - 1e-12
        assert fold[">"]["train_score"] >= single - 1e-12
        for method in ORDER[2:]:
            assert 0.0 <= fold[method]["train_score"] <= 1.0
        assert fold["Empty"]["train_score"] is None


def test_grid_table_for_fig4(doc):
    grid = doc["tables"]["grid"]
    metric = doc["params"]["select_metric"]
    g = len(doc["grid"])
    assert len(grid) == 4 * g * g
    assert {r["method"] for r in grid} == {"or", "<", ">", "and"}
    assert all(0.0 <= r[metric] <= 1.0 for r in grid)
    # the grid holds fold means: its best cell can not beat the mean of each fold's own best
    # (max_c mean_k s_k(c) <= mean_k max_c s_k(c)), which is each fold's 'and' training score
    assert len(doc["and_chosen_per_fold"]) == doc["params"]["n_folds"]
    for op in ("or", "<", ">", "and"):
        best_of_mean = max(r[metric] for r in grid if r["method"] == op)
        fold_best = [r["train_score"] for r in doc["tables"]["folds"] if r["method"] == op]
        assert best_of_mean <= sum(fold_best) / len(fold_best) + 1e-9, op


def test_classification_rows(doc):
    cls = doc["tables"]["classification"]
    assert len(cls) == 2 * doc["params"]["n_folds"] and {r["method"] for r in cls} == {"model A", "model B"}
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in cls)


def test_data_pooled_and_folds_not_grouped_on_synthetic(doc):
    if doc["params"]["dataset"] == "synthetic":
        assert doc["n_images_pooled"] == doc["params"]["n_images"]
        assert doc["folds_by_patient"] is False


def test_claims_are_checked_in_the_run(doc):
    claims = doc["tables"]["claims"]
    assert len(claims) >= 6
    assert all(isinstance(c["holds"], bool) and c["evidence"] for c in claims)
    by = {c["method"]: c for c in claims}
    ours = rows(doc, "ensembles", source="this run")
    best = doc["best_single"]
    text = next(t for t in by if t.startswith("'and' beats the best single model"))
    assert by[text]["holds"] == (ours["and"]["dsc_paper"] > ours[best]["dsc_paper"])
    assert doc["and_minus_best_single"]["dsc_paper"] == pytest.approx(ours["and"]["dsc_paper"] - ours[best]["dsc_paper"])
    assert ours[best]["dsc_paper"] == max(ours["model A"]["dsc_paper"], ours["model B"]["dsc_paper"])
