"""Shared pytest fixtures."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from wsslib.apps.reproduce import find_notebooks, run_notebooks

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("WSSLIB_SHARED_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real polyp data beside the project (``../shared/data``); skips when absent."""
    if not (SHARED_DATA / "kvasir-seg" / "manifest.csv").is_file():
        pytest.skip(f"real data not found at {SHARED_DATA} (set WSSLIB_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def smoke_results(tmp_path_factory):
    """Run every notebook once in smoke mode (papermill); return ``{notebook stem: results JSON}``.

    A notebook that failed maps to ``{"error": "<cell>: <exception>"}`` so that only its own
    tests fail. ``WSSLIB_TEST_NOTEBOOKS=01,03`` runs only those notebooks (the others' tests
    then fail with a KeyError naming them): handy while working on one notebook.
    """
    out = tmp_path_factory.mktemp("smoke")
    only = [s.strip() for s in os.environ.get("WSSLIB_TEST_NOTEBOOKS", "").split(",") if s.strip()] or None
    runs = run_notebooks(out, notebooks=find_notebooks(only=only), smoke=True, progress=False)
    docs = {}
    for r in runs:
        stem = r.notebook.removesuffix(".ipynb")
        path = out / f"{stem}.json"
        docs[stem] = {"error": r.error} if r.error or not path.is_file() else json.loads(path.read_text())
    return docs


@pytest.fixture(scope="module")
def doc(request, smoke_results) -> dict:
    """The smoke-mode results JSON of the notebook named by the test module's ``NB``."""
    nb = request.module.NB
    d = smoke_results[nb]
    assert "error" not in d, f"{nb} failed in smoke mode: {d.get('error')}"
    return d
