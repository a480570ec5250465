"""Results files and provenance: every notebook writes the same JSON shape.

``<results_dir>/<notebook>.json``::

    {"notebook": "00_quickstart",
     "params": {...},
     "tables": {"<table name>": [{"method": ..., "dice": 0.61, "iou": 0.47, ...}, ...]},
     "provenance": {"git": ..., "versions": {...}, "seed": 0, "device": "cpu", "seconds": 12.3}}

Metric values are fractions in 0..1. Reference rows taken from a paper carry
``"source": "paper"``; rows computed by this run carry ``"source": "this run"``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["Timer", "provenance", "write_results", "read_results", "records_table"]

_PACKAGES = ("wsslib", "torch", "torchvision", "fastai", "grad-cam", "numpy", "scipy", "scikit-learn",
             "pandas", "pydensecrf2", "papermill")


class Timer:
    """Wall-clock seconds since creation: ``t = Timer(); ...; t.seconds``."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start


def _git_commit() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=here, capture_output=True,
            text=True, timeout=5,
        ).stdout.strip()
        return out + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def provenance(seed: int | None, device: Any, seconds: float | None) -> dict[str, Any]:
    """Where a result came from: git commit, package versions, seed, device, run time, and the
    machine (host, date in UTC, platform, CPUs available, torch's thread count, the GPU's name)."""
    versions = {"python": platform.python_version()}
    for pkg in _PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count()
    out = {
        "git": _git_commit(),
        "versions": versions,
        "seed": seed,
        "device": str(device),
        "seconds": None if seconds is None else round(float(seconds), 2),
        "host": platform.node(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "cpus": cpus,
    }
    torch = sys.modules.get("torch")  # only when the caller uses torch: no import for this
    if torch is not None:
        out["torch_threads"] = torch.get_num_threads()
        if str(device).startswith("cuda") and torch.cuda.is_available():
            out["gpu"] = torch.cuda.get_device_name(torch.device(str(device)))
    return out


def _clean(x: Any) -> Any:
    """JSON-safe copy: tensors/arrays to lists, NaN/inf to None, numpy scalars to Python,
    dataclasses (configs) to dicts, paths and anything else JSON cannot hold (a ``torch.device``)
    to their ``str``."""
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        x = {f.name: getattr(x, f.name) for f in dataclasses.fields(x)}
    if hasattr(x, "tolist") and not isinstance(x, (str, bytes)):
        x = x.tolist()
    if isinstance(x, float):
        return None if math.isnan(x) or math.isinf(x) else x
    if isinstance(x, Mapping):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if x is None or isinstance(x, (str, bool, int)):
        return x
    return str(x)


def records_table(records: Sequence[Mapping[str, Any]]):
    """A pandas DataFrame of table records, ``method`` as the index when present."""
    import pandas as pd

    df = pd.DataFrame(list(records))
    return df.set_index("method") if "method" in df.columns else df


def write_results(
    results_dir: str | os.PathLike,
    notebook: str,
    params: Mapping[str, Any],
    tables: Mapping[str, Any],
    *,
    seed: int | None,
    device: Any,
    seconds: float | None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``<results_dir>/<notebook>.json`` atomically and return its path.

    ``tables`` maps a table name to a list of records (dicts) or a pandas DataFrame (its index,
    if named ``method``, becomes the ``method`` key).
    """
    out_tables: dict[str, Any] = {}
    for name, t in tables.items():
        if hasattr(t, "reset_index") and hasattr(t, "to_dict"):
            t = t.reset_index().to_dict(orient="records") if t.index.name else t.to_dict(orient="records")
        out_tables[name] = _clean(list(t))
    doc = {
        "notebook": notebook,
        "params": _clean(dict(params)),
        "tables": out_tables,
        "provenance": provenance(seed, device, seconds),
    }
    if extra:
        doc.update(_clean(dict(extra)))
    path = Path(results_dir) / f"{notebook}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n")
    os.replace(tmp, path)
    return path


def read_results(path: str | os.PathLike) -> dict[str, Any]:
    """Read a results JSON written by :func:`write_results`."""
    return json.loads(Path(path).read_text())
