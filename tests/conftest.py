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


#: Notebooks the suite executes in full mode (the cpu preset, a minute or so each) and checks
#: against tests/expected/; the others run in smoke mode (seconds). Each notebook runs once.
FULL_IN_TESTS = ("00_quickstart", "02_cam_methods", "03_cam_ensembles")


def _selected(env: str, default: tuple[str, ...] | None) -> list[str] | None:
    raw = os.environ.get(env)
    if raw is None:
        return list(default) if default is not None else None
    return [s.strip() for s in raw.split(",") if s.strip() and s.strip() != "none"]


@pytest.fixture(scope="session")
def notebook_results(tmp_path_factory):
    """Run every notebook once with papermill; return ``{notebook stem: results JSON}``.

    The notebooks of ``FULL_IN_TESTS`` run in full mode (``$WSSLIB_TEST_FULL=00,02`` chooses
    others, ``none`` none), every other one in smoke mode. A notebook that failed maps to
    ``{"error": "<cell>: <exception>"}`` so that only its own tests fail.
    ``WSSLIB_TEST_NOTEBOOKS=01,03`` runs only those notebooks (the others' tests then fail with a
    KeyError naming them): handy while working on one notebook.
    """
    out = tmp_path_factory.mktemp("notebooks")
    only = _selected("WSSLIB_TEST_NOTEBOOKS", None) or None
    full = _selected("WSSLIB_TEST_FULL", FULL_IN_TESTS) or []
    chosen = find_notebooks(only=only)
    runs = []
    for smoke in (True, False):
        nbs = [p for p in chosen if (p.stem in full or p.stem[:2] in full) != smoke]
        if nbs:
            runs += run_notebooks(out / ("smoke" if smoke else "full"), notebooks=nbs, smoke=smoke, progress=False)
    docs = {}
    for r in runs:
        stem = r.notebook.removesuffix(".ipynb")
        path = next(iter(out.glob(f"*/{stem}.json")), None)
        docs[stem] = {"error": r.error} if r.error or path is None else json.loads(path.read_text())
    return docs


@pytest.fixture(scope="session")
def smoke_results(notebook_results):
    """Alias of :func:`notebook_results` (some notebooks there ran in full mode: see ``params.smoke``)."""
    return notebook_results


@pytest.fixture(scope="module")
def doc(request, smoke_results) -> dict:
    """The results JSON of the notebook named by the test module's ``NB`` (smoke or full mode)."""
    nb = request.module.NB
    d = smoke_results[nb]
    assert "error" not in d, f"{nb} failed: {d.get('error')}"
    return d
