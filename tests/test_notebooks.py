"""Every numbered notebook runs headless under papermill in smoke mode and writes its tables.

(The committed notebooks are also re-executed by ``pytest --nbval-lax``, configured in
pyproject.toml; this file asserts the numbers they record.)
"""

from __future__ import annotations

import pytest

from wsslib.apps.reproduce import find_notebooks

NOTEBOOKS = find_notebooks()


@pytest.mark.parametrize("nb", [p.stem for p in NOTEBOOKS])
def test_results_json_shape(smoke_results, nb):
    doc = smoke_results[nb]
    assert "error" not in doc, f"{nb} failed in smoke mode: {doc.get('error')}"
    assert doc["notebook"] == nb
    assert doc["params"]["smoke"] is True
    assert {"git", "versions", "seed", "device", "seconds"} <= doc["provenance"].keys()
    assert doc["tables"], "no tables written"
    for records in doc["tables"].values():
        for r in records:
            assert "method" in r
            for k in ("dice", "iou", "precision", "recall", "accuracy"):
                if r.get(k) is not None:
                    assert 0.0 <= r[k] <= 1.0, (nb, r["method"], k, r[k])

