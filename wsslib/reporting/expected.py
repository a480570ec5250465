"""Compare a run's results JSON with the expected results of a recorded run (the recommenders
pattern): every number of every ``"this run"`` row, within stated tolerances.

The expected files are the results JSON of one full run of the committed notebooks on the
embedded default (``tests/expected/NN_name.json``). The test suite executes the cheap notebooks in
full mode and checks them against these; ``wsslib reproduce`` checks every notebook it ran with
the default parameters and says in its summary which numbers moved.

Example:
    >>> run = {"tables": {"t": [{"method": "a", "dice": 0.50, "n_images": 10, "train_seconds": 9.0}]}}
    >>> exp = {"tables": {"t": [{"method": "a", "dice": 0.52, "n_images": 10, "train_seconds": 3.0}]}}
    >>> compare_results(run, exp)
    []
    >>> exp["tables"]["t"][0]["dice"] = 0.60
    >>> [str(d) for d in compare_results(run, exp)]
    ['t / a / dice: 0.5 (expected 0.6, tolerance 0.03)']
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["DEFAULT_TOLERANCE", "EXACT_KEYS", "Deviation", "compare_results", "tolerance_for"]

#: absolute tolerance of a score in [0, 1] (Dice, IoU, accuracy, rates): run-to-run float noise
#: across CPUs and thread counts moves a score by far less; a changed method moves it by more.
DEFAULT_TOLERANCE = 0.03
#: counts that must match exactly (the data and the split are seeded).
EXACT_KEYS = ("n_images", "n_pos", "n_test", "images")
#: keys never compared: wall times, and values chosen by argmax on a grid whose neighbouring
#: cells may tie within float noise (thresholds, epochs).
_SKIP = re.compile(r"second|time|_s$|^seconds|threshold|epoch|^fold$|path|peak")
#: larger tolerances by key: percentages (DSC in the paper's 0..100 convention), spreads, losses.
_WIDER = {r"_pct$|^dsc_paper$|^miou_fg_bg$": 3.0, r"_sd$|_std$|spread": 0.05, r"loss": 0.1, r"^u_|mean_u": 0.02}


def tolerance_for(key: str, value: float) -> float | None:
    """The absolute tolerance of one recorded number, ``0`` for exact keys, None: not compared."""
    if _SKIP.search(key):
        return None
    if key in EXACT_KEYS or key.startswith("n_"):
        return 0.0
    for pattern, tol in _WIDER.items():
        if re.search(pattern, key):
            return tol if abs(value) > 1.5 or tol < 1 else tol / 100  # 0..1 fractions get the scaled tolerance
    return DEFAULT_TOLERANCE if abs(value) <= 1.5 else max(DEFAULT_TOLERANCE, 0.05 * abs(value))


@dataclass(frozen=True)
class Deviation:
    """One number outside its tolerance (or missing)."""

    table: str
    method: str
    key: str
    got: Any
    expected: Any
    tolerance: float | None

    def __str__(self) -> str:
        if self.tolerance is None:
            return f"{self.table} / {self.method} / {self.key}: {self.got} (expected {self.expected})"
        return f"{self.table} / {self.method} / {self.key}: {self.got} (expected {self.expected}, tolerance {self.tolerance:g})"


def _rows(doc: Mapping[str, Any], table: str) -> dict[str, dict]:
    return {str(r.get("method", i)): r for i, r in enumerate(doc["tables"].get(table, []))
            if r.get("source", "this run") == "this run"}


def _num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def compare_results(run: Mapping[str, Any], expected: Mapping[str, Any],
                    tables: list[str] | None = None) -> list[Deviation]:
    """Every number of ``expected``'s "this run" rows that ``run`` misses or moves beyond tolerance.

    Args:
        run, expected: results documents (``{"tables": {name: [records]}}``).
        tables: compare only these tables (default: every table of ``expected``).

    Returns:
        The deviations, empty when the run reproduces the expected numbers. NaN equals NaN;
        booleans (claims' ``holds``) must be equal.
    """
    out: list[Deviation] = []
    for table in tables or list(expected["tables"]):
        got_rows, exp_rows = _rows(run, table), _rows(expected, table)
        for method, exp in exp_rows.items():
            got = got_rows.get(method)
            if got is None:
                out.append(Deviation(table, method, "(row)", None, "present", None))
                continue
            for key, e in exp.items():
                g = got.get(key)
                if isinstance(e, bool):
                    if g != e:
                        out.append(Deviation(table, method, key, g, e, None))
                    continue
                if not _num(e):
                    continue
                tol = tolerance_for(key, float(e))
                if tol is None:
                    continue
                if not _num(g):
                    out.append(Deviation(table, method, key, g, e, tol))
                    continue
                if math.isnan(e) and math.isnan(g):
                    continue
                if not abs(g - e) <= tol + 1e-12:
                    out.append(Deviation(table, method, key, g, e, tol))
    return out
