"""Notebooks 01-04 accept the real data sets of data_download.sh as ``dataset`` (smoke mode, on
tiny fixture copies of each set in its real on-disk layout, see data_fixtures.py).

Only that they run through and say which data they used is asserted here: the fixtures hold a
handful of images, far too few for meaningful scores.
"""

from __future__ import annotations

import json
from pathlib import Path

import data_fixtures as fx
import pytest

ROOT = Path(__file__).resolve().parents[1]

CASES = [
    ("01_gaze_heatmaps", "nci-isbi", {}),
    ("02_cam_methods", "oxford-pets", {}),
    ("03_cam_ensembles", "decathlon-prostate", {"n_folds": 2}),
    ("04_aax_decision", "fire", {}),
]


@pytest.mark.parametrize(("notebook", "name", "extra"), CASES, ids=[f"{n[:2]}-{s}" for n, s, _ in CASES])
def test_notebook_runs_on_a_real_set_layout(notebook, name, extra, tmp_path, monkeypatch):
    papermill = pytest.importorskip("papermill")
    root = tmp_path / "data"
    fx.build_set(name, root / name)
    if name == "nci-isbi":
        fx.nci_gaze(root / "nci-isbi" / "gaze")  # where ./data_download.sh gaze puts it
    monkeypatch.setenv("WSSLIB_DATA", str(root))
    monkeypatch.setenv("WSSLIB_CACHE", str(tmp_path / "cache"))
    results = tmp_path / "results"
    papermill.execute_notebook(
        str(ROOT / "notebooks" / f"{notebook}.ipynb"), str(tmp_path / "out.ipynb"), progress_bar=False,
        cwd=str(ROOT / "notebooks"),
        parameters={"dataset": name, "smoke": True, "results_dir": str(results), **extra},
    )
    doc = json.loads((results / f"{notebook}.json").read_text())
    assert doc["params"]["dataset"] == name
    assert doc["tables"], f"{notebook} on {name} wrote no table"
