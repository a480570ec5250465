"""The recorded numbers of one full run of the committed notebooks (``tests/expected/``), asserted
within stated tolerances (:mod:`wsslib.reporting.expected`), for the notebooks the suite runs in
full mode; the others are checked the same way by ``wsslib reproduce`` after each full run.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from wsslib.reporting.expected import compare_results

EXPECTED = Path(__file__).resolve().parent / "expected"


def _full_docs(notebook_results):
    return {nb: d for nb, d in notebook_results.items() if "error" in d or d["params"].get("smoke") is False}


def test_expected_files_exist_for_every_notebook():
    from wsslib.apps.reproduce import find_notebooks

    missing = [p.stem for p in find_notebooks() if not (EXPECTED / f"{p.stem}.json").is_file()]
    assert not missing, f"no expected results for {missing}: run `make reproduce` and copy runs/latest/*.json"


def test_full_runs_reproduce_the_expected_numbers(notebook_results):
    docs = _full_docs(notebook_results)
    if not docs:
        pytest.skip("no notebook ran in full mode ($WSSLIB_TEST_FULL=none)")
    problems = []
    for nb, doc in docs.items():
        assert "error" not in doc, f"{nb} failed in full mode: {doc['error']}"
        expected = json.loads((EXPECTED / f"{nb}.json").read_text())
        assert expected["params"].get("smoke") is False, f"{nb}: tests/expected holds a smoke run"
        problems += [f"{nb}: {d}" for d in compare_results(doc, expected)]
    assert not problems, "numbers moved beyond tolerance:\n" + "\n".join(problems)
