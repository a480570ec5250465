"""Run the numbered notebooks headless with papermill and collect their results.

``wsslib reproduce`` (and ``make reproduce``) call :func:`run_notebooks`.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

__all__ = ["NotebookRun", "find_notebooks", "new_run_dir", "run_notebooks", "PROJECT_ROOT"]

PROJECT_ROOT = Path(__file__).resolve().parents[1]


@dataclass
class NotebookRun:
    """The outcome of one notebook: its output path, seconds, and the error if it failed."""

    notebook: str
    output: Path
    seconds: float
    error: str | None = None


def find_notebooks(folder: str | os.PathLike | None = None, only: list[str] | None = None) -> list[Path]:
    """The numbered notebooks ``NN_*.ipynb`` of ``folder`` (default: the project's notebooks/).

    ``only`` keeps those whose number or name starts with one of the given prefixes ("00", "03").
    """
    folder = Path(folder) if folder else PROJECT_ROOT / "notebooks"
    nbs = sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb"))
    if only:
        nbs = [p for p in nbs if any(p.name.startswith(o) for o in only)]
    if not nbs:
        raise FileNotFoundError(f"no numbered notebooks (NN_*.ipynb) found in {folder}" + (f" for {only}" if only else ""))
    return nbs


def new_run_dir(base: str | os.PathLike = "runs") -> Path:
    """Create ``base/<YYYYmmdd-HHMMSS>/`` and point ``base/latest`` at it."""
    base = Path(base)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    out = base / stamp
    n = 1
    while out.exists():
        out = base / f"{stamp}-{n}"
        n += 1
    out.mkdir(parents=True)
    latest = base / "latest"
    if latest.is_symlink() or latest.exists():
        latest.unlink()
    latest.symlink_to(out.name, target_is_directory=True)
    return out


def _describe_error(exc: BaseException) -> str:
    ename = getattr(exc, "ename", type(exc).__name__)
    evalue = getattr(exc, "evalue", str(exc))
    cell = getattr(exc, "exec_count", None)
    where = f"cell [{cell}]" if cell is not None else "a cell"
    return f"{where}: {ename}: {evalue}"


def run_notebooks(
    out_dir: str | os.PathLike,
    *,
    notebooks: list[Path] | None = None,
    smoke: bool = False,
    parameters: dict[str, Any] | None = None,
    progress: bool = True,
) -> list[NotebookRun]:
    """Execute each notebook with papermill into ``out_dir``; results JSON go there too.

    Every notebook gets the parameters ``smoke`` and ``results_dir`` (= ``out_dir``) plus
    ``parameters``. A failing notebook is recorded (its cell and error) and the next one runs.
    """
    import papermill as pm

    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    notebooks = notebooks or find_notebooks()
    runs: list[NotebookRun] = []
    for nb in notebooks:
        params = {"smoke": smoke, "results_dir": str(out_dir), **(parameters or {})}
        output = out_dir / nb.name
        print(f"==> {nb.name} ({'smoke' if smoke else 'full'} mode)", flush=True)
        t0 = time.perf_counter()
        error = None
        try:
            pm.execute_notebook(
                str(nb), str(output), parameters=params, cwd=str(nb.parent), progress_bar=progress,
                kernel_name="python3",
            )
        except Exception as exc:  # noqa: BLE001 - every failure is reported, the next notebook runs
            error = _describe_error(exc)
        runs.append(NotebookRun(nb.name, output, time.perf_counter() - t0, error))
        status = "FAILED " + error if error else "ok"
        print(f"    {nb.name}: {runs[-1].seconds:.1f} s, {status}", flush=True)
    return runs
