"""Every numbered notebook runs headless under papermill (once, in tests/conftest.py: the
notebooks of ``FULL_IN_TESTS`` in full mode, the others in smoke mode) and writes its tables.
"""

from __future__ import annotations

import os

import pytest

from conftest import FULL_IN_TESTS

from wsslib.apps.reproduce import find_notebooks

NOTEBOOKS = find_notebooks()


@pytest.mark.parametrize("nb", [p.stem for p in NOTEBOOKS])
def test_results_json_shape(smoke_results, nb):
    doc = smoke_results[nb]
    assert "error" not in doc, f"{nb} failed in smoke mode: {doc.get('error')}"
    assert doc["notebook"] == nb
    assert doc["params"]["smoke"] is (nb not in FULL_IN_TESTS) or "WSSLIB_TEST_FULL" in os.environ
    assert {"git", "versions", "seed", "device", "seconds"} <= doc["provenance"].keys()
    assert doc["tables"], "no tables written"
    for records in doc["tables"].values():
        for r in records:
            assert "method" in r
            for k in ("dice", "iou", "precision", "recall", "accuracy"):
                if r.get(k) is not None:
                    assert 0.0 <= r[k] <= 1.0, (nb, r["method"], k, r[k])

