"""Notebook 03 (CAM ensembles, EnsembleCAM): what its smoke-mode results must show.

Smoke runs train tiny models for two epochs, so the assertions are about the protocol's
invariants (cross-validation, thresholds from the grid, the search's guarantees) and the tables'
content, not about how well the models learn.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from nbresults import rows

from wsslib.evaluate.metrics import dsc_from_miou

NB = "03_cam_ensembles"
ORDER = ["Empty", "centre prior", "model A", "model B", "or", "<", ">", "and"]
NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / f"{NB}.ipynb"


def test_tables_present(doc):
    assert {"ensembles", "folds", "classification", "grid"} <= doc["tables"].keys()
    assert doc["params"]["smoke"] is True and doc["params"]["n_folds"] == 3


def test_table_has_the_papers_eight_rows_and_reference_rows(doc):
    ours = rows(doc, "ensembles", source="this run")
    assert list(ours) == ORDER
    paper = [r for r in doc["tables"]["ensembles"] if r["source"] == "paper"]
    assert {r["dataset"] for r in paper} == {"BraTS 2020", "Decathlon prostate"}
    brats = {r["method"]: r for r in paper if r["dataset"] == "BraTS 2020"}
    assert brats["and"]["dsc_paper"] == pytest.approx(0.703) and brats["and"]["miou_fg_bg"] == pytest.approx(0.542)
    assert brats["model B"]["backbone"] == "resnet50"
    for r in paper:  # the paper's DSC is 2 mIoU / (1 + mIoU), to the printed precision
        assert r["dsc_paper"] == pytest.approx(dsc_from_miou(r["miou_fg_bg"]), abs=0.0015)


def test_scores_are_fractions_with_spread(doc):
    for method, r in rows(doc, "ensembles", source="this run").items():
        for key in ("dsc_paper", "miou_fg_bg", "dice", "iou"):
            assert 0.0 <= r[key] <= 1.0, (method, key)
            assert r[key + "_sd"] is not None and r[key + "_sd"] >= 0.0, (method, key)
        assert r["dsc_paper"] == pytest.approx(dsc_from_miou(r["miou_fg_bg"]), abs=0.02)  # mean of a ratio


def test_baselines(doc):
    ours = rows(doc, "ensembles", source="this run")
    assert ours["Empty"]["dice"] == 0.0 and ours["Empty"]["iou"] == 0.0
    assert ours["centre prior"]["dice"] > 0.0
    # Empty's pooled mIoU is half the background share: strictly between 0.25 and 0.5
    assert 0.25 < ours["Empty"]["miou_fg_bg"] < 0.5


def test_thresholds_come_from_the_grid_each_fold(doc):
    grid = doc["grid"]
    assert len(grid) == 11 and grid[0] == 0.0 and grid[-1] == 1.0
    ours = rows(doc, "ensembles", source="this run")
    for method in ORDER[2:]:
        per_fold = ours[method]["thresholds_per_fold"]
        assert len(per_fold) == 3
        for ts in per_fold:
            assert len(ts) == (1 if method.startswith("model") else 2)
            assert all(any(math.isclose(t, g) for g in grid) for t in ts)


def test_or_search_covers_each_single_model(doc):
    # 'or' with the other model at threshold 1.0 (an empty mask) IS the single model, so its
    # best training score can never be below the single models' (the search is exhaustive).
    folds = doc["tables"]["folds"]
    for k in range(3):
        fold = {r["method"]: r for r in folds if r["fold"] == k}
        single = max(fold["model A"]["train_score"], fold["model B"]["train_score"])
        assert fold["or"]["train_score"] >= single - 1e-12
        assert fold[">"]["train_score"] >= single - 1e-12
        for method in ORDER[2:]:
            assert 0.0 <= fold[method]["train_score"] <= 1.0


def test_grid_table_for_fig4(doc):
    grid = doc["tables"]["grid"]
    metric = doc["params"]["select_metric"]
    assert len(grid) == 4 * 11 * 11
    assert {r["method"] for r in grid} == {"or", "<", ">", "and"}
    assert all(0.0 <= r[metric] <= 1.0 for r in grid)
    assert len(doc["and_chosen_per_fold"]) == 3


def test_classification_rows(doc):
    cls = doc["tables"]["classification"]
    assert len(cls) == 6 and {r["method"] for r in cls} == {"model A", "model B"}
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in cls)


def test_brats_without_data_gives_a_clear_message(tmp_path):
    papermill = pytest.importorskip("papermill")
    missing = tmp_path / "data" / "brats2020"
    with pytest.raises(papermill.PapermillExecutionError) as e:
        papermill.execute_notebook(str(NOTEBOOK), str(tmp_path / "out.ipynb"), progress_bar=False,
                                   parameters={"dataset": "brats2020", "data_root": str(missing), "smoke": True,
                                               "results_dir": str(tmp_path)})
    msg = str(e.value)
    assert "DatasetNotFoundError" in msg and str(missing) in msg and "data_download.sh" in msg and "brats2020" in msg
