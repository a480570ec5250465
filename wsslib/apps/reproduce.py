"""Run the numbered notebooks headless with papermill, measure them, and report what they found.

``wsslib reproduce`` (and ``make reproduce``) call :func:`run_notebooks` and then
:func:`write_report`:

1. every numbered notebook ``NN_*.ipynb`` runs under papermill with the parameters ``smoke`` and
   ``results_dir`` (plus ``-p key=value`` ones), one progress bar per notebook (cells done of all);
   its wall time and the peak memory of the kernel process tree are measured
   (:class:`PeakMemory`); a failing notebook is recorded with the failing cell (its number, first
   line and error) and the next one runs;
2. the report, ``report.md`` and a self-contained ``report.html``: a summary (time, peak memory,
   status per notebook), then per notebook its tables (the rows a notebook quotes from a paper,
   ``"source": "paper"``, side by side with this run's rows), the figures of the executed
   notebook (PNG outputs, extracted to ``figures/``), its parameters and its provenance; each
   executed notebook is also exported to ``NN_name.html`` (nbconvert, :func:`export_html`), which
   the report links (a browser cannot show an ``.ipynb``).

3. with ``--in-place`` (:func:`write_back`), each notebook that ran through is written back
   over its source ``notebooks/NN_*.ipynb``, ready to commit: papermill's injected-parameters
   cell, stderr outputs (progress bars, warnings) and widget outputs removed, absolute paths in
   outputs replaced, execution counts renumbered. With ``--preset real`` (or ``paper``) the
   executed copies and their results JSON go to ``notebooks/<preset>/`` instead
   (:func:`preset_dir`), beside the sources, which stay the ``cpu`` runs.

Figures: the kernels get the inline backend (``MPLBACKEND``) and a matplotlib rc file
(``MATPLOTLIBRC``) with ``figure.dpi`` = :data:`FIGURE_DPI`, so that every PNG embedded in a
notebook stays small (well under 300 KB); both only for the kernels, the caller's environment is
restored afterwards.

Kernels: over IPC sockets where the OS has them (no "Kernel is running over TCP without
encryption" warning in the run's output), with ``WSSLIB_PROGRESS=0`` (no progress bars inside the
notebooks). Notebooks: the repository's ``notebooks/``, or in a wheel install the copies shipped
in ``wsslib/notebooks/`` (:func:`default_notebook_dir`).

Results JSON are those of :func:`wsslib.reporting.results.write_results`
(``<results_dir>/<notebook>.json``).
"""

from __future__ import annotations

import base64
import contextlib
import html
import json
import math
import os
import platform
import re
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from wsslib.papers.settings import PROGRESS_ENV

__all__ = [
    "CellFailure",
    "NotebookRun",
    "PeakMemory",
    "PROJECT_ROOT",
    "clean_executed",
    "extract_figures",
    "defines_preset",
    "default_notebook_dir",
    "export_html",
    "find_notebooks",
    "new_run_dir",
    "print_summary",
    "preset_dir",
    "run_notebooks",
    "shrink_png",
    "write_back",
    "write_report",
]

PROJECT_ROOT = Path(__file__).resolve().parents[2]
#: Where a wheel install keeps the numbered notebooks (setup.py copies ``notebooks/NN_*.ipynb``
#: there at build time); absent in a source checkout, which uses ``PROJECT_ROOT/notebooks``.
PACKAGED_NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"

_MARKER_TAGS = {"injected-parameters", "papermill-error-cell-tag"}  # cells papermill adds
FIGURE_DPI = 80
"""Dots per inch of the figures the executed notebooks embed (matplotlib's default is 100)."""
PNG_BUDGET = 150 * 1024
"""Bytes a PNG written back in place may take; larger ones are re-encoded (:func:`shrink_png`)."""
MAX_TABLE_ROWS = 30
"""Rows of one table printed in the report; the results JSON holds all of them."""


# --------------------------------------------------------------------------------------------
# finding and running notebooks
# --------------------------------------------------------------------------------------------


@dataclass
class CellFailure:
    """Where a notebook failed.

    Attributes:
        cell: 1-based number of the failing cell in the *source* notebook (markdown cells
            counted, the cell papermill injects not counted); None when it is not known.
        exec_count: its execution count (``In [n]`` in Jupyter), or None.
        first_line: the first non-empty line of its source.
        ename, evalue: the exception's name and message.
    """

    cell: int | None
    exec_count: int | None
    first_line: str
    ename: str
    evalue: str

    def __str__(self) -> str:
        where = f"cell {self.cell}" if self.cell is not None else "a cell"
        if self.exec_count is not None:
            where += f" (In [{self.exec_count}])"
        line = f" `{self.first_line}`" if self.first_line else ""
        msg = f"{self.ename}: {self.evalue}" if self.evalue else self.ename
        return f"{where}{line}: {msg}"


@dataclass
class NotebookRun:
    """The outcome of one notebook.

    Attributes:
        notebook: file name (``02_cam_methods.ipynb``).
        output: the executed notebook.
        seconds: wall time of the papermill call (kernel start included).
        error: one line naming the failing cell and its error; None when it ran through.
        failure: the same, structured (:class:`CellFailure`).
        peak_rss_mib: peak memory of the kernel process tree in MiB (see ``memory_method``).
        memory_method: how ``peak_rss_mib`` was measured (:class:`PeakMemory`).
        results: the results JSON it wrote, None when it wrote none.
        source: the notebook that was run.
    """

    notebook: str
    output: Path
    seconds: float
    error: str | None = None
    failure: CellFailure | None = None
    peak_rss_mib: float | None = None
    memory_method: str | None = None
    results: Path | None = None
    source: Path | None = None

    @property
    def stem(self) -> str:
        return self.notebook.removesuffix(".ipynb")


def default_notebook_dir() -> Path:
    """The notebooks that ship with this install: ``wsslib/notebooks/`` in a wheel install, else
    the repository's ``notebooks/`` (a source checkout or an editable install)."""
    if any(PACKAGED_NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")):
        return PACKAGED_NOTEBOOKS
    return PROJECT_ROOT / "notebooks"


def find_notebooks(folder: str | os.PathLike | None = None, only: list[str] | None = None) -> list[Path]:
    """The numbered notebooks ``NN_*.ipynb`` of ``folder`` (default: :func:`default_notebook_dir`).

    ``only`` keeps those whose number or name starts with one of the given prefixes ("00", "03").
    """
    folder = Path(folder) if folder else default_notebook_dir()
    nbs = sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb"))
    if only:
        nbs = [p for p in nbs if any(p.name.startswith(o) for o in only)]
    if not nbs:
        raise FileNotFoundError(f"no numbered notebooks (NN_*.ipynb) found in {folder}" + (f" for {only}" if only else ""))
    return nbs


def preset_dir(preset: str, folder: str | os.PathLike | None = None) -> Path:
    """Where the executed notebooks of a preset other than ``cpu`` live: ``notebooks/<preset>/``
    (their results JSON beside them; ``cpu`` runs are the notebooks themselves and
    ``tests/expected/``)."""
    return (Path(folder) if folder else default_notebook_dir()) / preset


def defines_preset(notebook: str | os.PathLike, preset: str) -> bool:
    """Whether the paper module of ``notebook`` (``NN_name.ipynb``) defines ``preset``; notebooks
    without a paper module (a user's own) are assumed to."""
    from wsslib.papers import notebook_module

    try:
        mod = notebook_module(Path(notebook).stem)
    except (ValueError, ModuleNotFoundError):
        return True
    return preset in mod.PRESETS


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


class PeakMemory:
    """Peak memory of the processes this process starts while the context is open (the kernel).

    With psutil (a dependency of ipykernel, so normally present): a thread polls, every
    ``interval`` seconds, the memory of all descendants of this process (the kernel and any
    workers it starts, e.g. data-loader processes) and keeps the largest **sum**. Where the OS
    reports it (Linux), each process counts its proportional set size (PSS: shared pages split
    between the processes sharing them), so forked workers do not count the kernel's pages
    again; elsewhere the resident set size (RSS), which does. The wait between polls is
    ``interval`` or 10 times what the last poll took, whichever is longer (the monitor's own CPU
    use stays near 10 % of a core); peaks shorter than that can be missed. Without
    psutil: ``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss``, the RSS of the largest single
    finished child so far, which cannot go down between notebooks (an upper bound for later
    ones). ``method`` says which one was used; ``peak_mib`` is None when neither works.

    Example:
        >>> with PeakMemory() as mem:
        ...     pass
        >>> mem.method.split(":")[0] in ("psutil", "getrusage", "unavailable")
        True
    """

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval
        self.peak_mib: float | None = None
        self.method = "unavailable"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._peak_bytes = 0

    @staticmethod
    def _pss_works(psutil) -> bool:
        try:
            return getattr(psutil.Process().memory_full_info(), "pss", None) is not None
        except (psutil.Error, AttributeError, NotImplementedError, OSError):
            return False

    def _poll(self, psutil, pss: bool) -> None:
        me = psutil.Process()
        while True:
            t0 = time.perf_counter()
            total = 0
            try:
                children = me.children(recursive=True)
            except psutil.Error:
                children = []
            for p in children:
                try:
                    total += p.memory_full_info().pss if pss else p.memory_info().rss
                except psutil.Error:  # it ended meanwhile
                    pass
            self._peak_bytes = max(self._peak_bytes, total)
            # reading a big process's PSS (/proc/<pid>/smaps) costs tens of ms: wait at least 10x
            # what the poll took, so that the monitor keeps to ~10 % of one core (measured: a fixed
            # 0.1 s took 38 % of a core beside a 5 GB kernel, slowing the notebook it measures)
            cost = time.perf_counter() - t0
            if self._stop.wait(max(self.interval, 10 * cost)):
                break

    def __enter__(self) -> "PeakMemory":
        try:
            import psutil
        except ImportError:
            psutil = None
        if psutil is not None:
            pss = self._pss_works(psutil)
            self.method = (f"psutil: peak of the summed {'PSS' if pss else 'RSS'} of the kernel process tree, "
                           f"polled every {self.interval:g} s or more (10x the poll's cost)")
            self._thread = threading.Thread(target=self._poll, args=(psutil, pss), daemon=True)
            self._thread.start()
        else:
            try:
                import resource  # noqa: F401 - POSIX only

                self.method = "getrusage: ru_maxrss of the largest finished child process so far (RUSAGE_CHILDREN)"
            except ImportError:
                self.method = "unavailable"
        return self

    def __exit__(self, *exc) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self.peak_mib = self._peak_bytes / 2**20
        elif self.method.startswith("getrusage"):
            import resource

            kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux, bytes on macOS
            self.peak_mib = kib / (2**20 if sys.platform == "darwin" else 2**10)


def _first_line(source: str) -> str:
    for line in source.splitlines():
        if line.strip():
            return line.strip()[:120]
    return ""


def _failed_cell(executed: Path) -> CellFailure | None:
    """The first failing cell of an executed notebook: an error output, or papermill's status
    "failed" / "running" (a timeout or a dead kernel stops a cell without an error output)."""
    import nbformat

    try:
        nb = nbformat.read(executed, as_version=4)
    except Exception:  # noqa: BLE001 - no (readable) output notebook: nothing to point at
        return None
    cells = [c for c in nb.cells if not _MARKER_TAGS & set(c.get("metadata", {}).get("tags", []))]
    for i, cell in enumerate(cells, start=1):
        if cell.cell_type != "code":
            continue
        errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
        status = cell.get("metadata", {}).get("papermill", {}).get("status")
        if errors or status in ("failed", "running"):
            e = errors[0] if errors else {}
            return CellFailure(i, cell.get("execution_count"), _first_line(cell.source),
                               e.get("ename", "did not finish"), e.get("evalue", ""))
    return None


def _describe_error(exc: BaseException, executed: Path | None = None) -> CellFailure:
    """A :class:`CellFailure` from papermill's exception, completed from the executed notebook."""
    found = _failed_cell(executed) if executed is not None else None
    ename = getattr(exc, "ename", None) or type(exc).__name__
    evalue = getattr(exc, "evalue", None)
    if evalue is None:
        evalue = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if found is not None:
        if found.ename == "did not finish":  # no error output in the cell: take the exception's
            found.ename, found.evalue = ename, evalue
        return found
    source = getattr(exc, "source", "") or ""
    return CellFailure(None, getattr(exc, "exec_count", None), _first_line(source), ename, evalue)


def run_notebooks(
    out_dir: str | os.PathLike,
    *,
    notebooks: list[Path] | None = None,
    smoke: bool = False,
    parameters: dict[str, Any] | None = None,
    progress: bool = True,
    timeout: float | None = None,
) -> list[NotebookRun]:
    """Execute each notebook with papermill into ``out_dir``; results JSON go there too.

    Every notebook gets the parameters ``smoke`` and ``results_dir`` (= ``out_dir``) plus
    ``parameters``. A results JSON left in ``out_dir`` by an earlier run is removed first, so a
    notebook that fails before writing its own has none. A failing notebook is recorded (its
    cell and error) and the next one runs.

    Args:
        out_dir: folder of the executed notebooks and their results JSON.
        notebooks: the notebooks to run (default :func:`find_notebooks`).
        smoke: tiny settings (each notebook's ``smoke`` parameter).
        parameters: more notebook parameters.
        progress: a progress bar per notebook (cells), and a line per notebook.
        timeout: seconds one cell may run (None: no limit).

    Returns:
        one :class:`NotebookRun` per notebook, in order.
    """
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    notebooks = notebooks or find_notebooks()
    with _kernel_environment(out_dir):
        return _run_all(notebooks, out_dir, smoke, parameters, progress, timeout)


@contextlib.contextmanager
def _kernel_environment(out_dir: Path):
    """The environment the kernels inherit while the context is open, restored afterwards.

    Figures go into the executed notebooks (and the report) only with the inline backend: a
    non-interactive ``MPLBACKEND`` such as Agg (``make test`` sets it) would reach the kernels.
    ``MATPLOTLIBRC`` names an rc file with ``figure.dpi`` :data:`FIGURE_DPI` (small PNGs).
    :data:`PROGRESS_ENV` ``=0``: no progress bars inside the notebooks (papermill's bar counts the
    cells; a headless run's bars would only fill the executed notebook with stderr).
    """
    rc = out_dir / ".matplotlibrc"
    rc.write_text(f"figure.dpi: {FIGURE_DPI}\nsavefig.dpi: figure\n")
    env = {"MPLBACKEND": "module://matplotlib_inline.backend_inline", "MATPLOTLIBRC": str(rc), PROGRESS_ENV: "0"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        rc.unlink(missing_ok=True)


def _kernel_manager_class():
    """jupyter_client's kernel manager, over IPC (Unix sockets) where the OS has them.

    Over TCP (the default) every kernel logs "Kernel is running over TCP without encryption" to
    the terminal; IPC sockets are files only this user can reach, and the warning is not raised.
    The socket files live in the temporary folder (short paths: a Unix socket path is limited to
    about 100 characters) and are removed when the kernel shuts down. Windows keeps TCP.
    """
    from jupyter_client.manager import AsyncKernelManager

    if os.name != "posix":
        return AsyncKernelManager
    import tempfile
    import uuid

    from traitlets import default

    class IPCKernelManager(AsyncKernelManager):
        @default("transport")
        def _transport_default(self) -> str:
            return "ipc"

        def _ip_default(self) -> str:
            return os.path.join(tempfile.gettempdir(), f"wsslib-kernel-{uuid.uuid4().hex[:12]}")

    return IPCKernelManager


def _run_all(notebooks, out_dir, smoke, parameters, progress, timeout) -> list[NotebookRun]:
    import papermill as pm

    manager = _kernel_manager_class()
    runs: list[NotebookRun] = []
    for k, nb in enumerate(notebooks, start=1):
        params = {"smoke": smoke, "results_dir": str(out_dir), **(parameters or {})}
        output = out_dir / nb.name
        results = out_dir / f"{nb.stem}.json"
        results.unlink(missing_ok=True)
        if progress:
            print(f"==> [{k}/{len(notebooks)}] {nb.name} ({'smoke' if smoke else 'full'} mode)", flush=True)
        failure = None
        t0 = time.perf_counter()
        with PeakMemory() as mem:
            try:
                pm.execute_notebook(
                    str(nb), str(output), parameters=params,
                    cwd=str(out_dir if nb.parent == PACKAGED_NOTEBOOKS else nb.parent),  # site-packages may be read-only
                    progress_bar={"desc": f"[{k}/{len(notebooks)}] {nb.stem}", "leave": True} if progress else False,
                    kernel_name="python3", execution_timeout=timeout, kernel_manager_class=manager,
                )
            except Exception as exc:  # noqa: BLE001 - every failure is reported, the next notebook runs
                failure = _describe_error(exc, output)
        run = NotebookRun(nb.name, output, time.perf_counter() - t0, str(failure) if failure else None, failure,
                          mem.peak_mib, mem.method, results if results.is_file() else None, nb)
        runs.append(run)
        if progress:
            mib = f", peak {run.peak_rss_mib:.0f} MiB" if run.peak_rss_mib is not None else ""
            print(f"    {nb.name}: {run.seconds:.1f} s{mib}, {'FAILED at ' + run.error if run.error else 'ok'}",
                  flush=True)
    return runs


#: The recorded numbers of one full run of the committed notebooks (the recommenders pattern).
EXPECTED_DIR = PROJECT_ROOT / "tests" / "expected"


def check_expected(runs: Sequence[NotebookRun], results_dir: str | os.PathLike,
                   expected_dir: str | os.PathLike = EXPECTED_DIR) -> dict[str, list[str]]:
    """Compare each run's results JSON with ``expected_dir/<notebook>.json`` (tolerances of
    :mod:`wsslib.reporting.expected`).

    Only meaningful for full-mode runs of the project's notebooks with their default parameters:
    the caller decides when to call it. Notebooks without an expected file, or that failed, are
    left out.

    Returns:
        ``{notebook stem: [deviation, ...]}`` (an empty list: the run reproduces the record).
    """
    from wsslib.reporting.expected import compare_results

    out: dict[str, list[str]] = {}
    for r in runs:
        stem = r.notebook.removesuffix(".ipynb")
        exp, got = Path(expected_dir) / f"{stem}.json", Path(results_dir) / f"{stem}.json"
        if r.error or not exp.is_file() or not got.is_file():
            continue
        out[stem] = [str(d) for d in compare_results(json.loads(got.read_text()), json.loads(exp.read_text()))]
    return out


def print_expected(checked: dict[str, list[str]], file=None) -> None:
    """One line per notebook: the recorded numbers reproduced, or which moved beyond tolerance."""
    file = file or sys.stdout
    if not checked:
        return
    print("\nAgainst the recorded numbers (tests/expected):", file=file)
    for stem, devs in checked.items():
        print(f"  {stem:35s} " + ("reproduced" if not devs else f"{len(devs)} number(s) moved"), file=file)
        for d in devs[:10]:
            print(f"      {d}", file=file)
        if len(devs) > 10:
            print(f"      ... and {len(devs) - 10} more", file=file)


def print_summary(runs: Sequence[NotebookRun], file=None) -> None:
    """Print one line per notebook (time, peak memory, status), then every failure in full."""
    file = file or sys.stdout
    print("\nSummary:", file=file)
    for r in runs:
        mem = f"{r.peak_rss_mib:7.0f} MiB" if r.peak_rss_mib is not None else "      ? MiB"
        status = "FAILED" if r.error else ("ok" if r.results else "ok (no results JSON)")
        print(f"  {r.notebook:32s} {r.seconds:7.1f} s {mem}  {status}", file=file)
    if runs and runs[0].memory_method:
        print(f"  (peak memory: {runs[0].memory_method})", file=file)
    failed = [r for r in runs if r.error]
    if failed:
        print(f"\n{len(failed)} of {len(runs)} notebook(s) FAILED:", file=file)
        for r in failed:
            print(f"  {r.notebook} failed at {r.error}", file=file)
            print(f"      executed notebook (with the traceback): {r.output}", file=file)


# --------------------------------------------------------------------------------------------
# writing executed notebooks back, for committing
# --------------------------------------------------------------------------------------------

_WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


def _scrub(obj: Any, subs: Sequence[tuple[str, str]]) -> Any:
    """``obj`` (an output's JSON) with each ``old`` path replaced by ``new`` in its strings
    (images excepted)."""
    if isinstance(obj, str):
        for old, new in subs:
            obj = obj.replace(old, new)
        return obj
    if isinstance(obj, list):
        return [_scrub(v, subs) for v in obj]
    if isinstance(obj, dict):
        return {k: v if k.startswith("image/") else _scrub(v, subs) for k, v in obj.items()}
    return obj


def clean_executed(nb, *, results_dir: str | os.PathLike, project_root: str | os.PathLike = PROJECT_ROOT):
    """Make an executed notebook (``nbformat`` node, changed in place) fit to commit.

    Removes the cells papermill injected (``injected-parameters``), ``stderr`` stream outputs
    (progress bars, warnings), widget outputs (they need a live kernel) and papermill's
    per-cell metadata; re-encodes PNGs over :data:`PNG_BUDGET` (:func:`shrink_png`); replaces absolute paths in the outputs (``results_dir`` by
    ``results``, ``project_root`` by ``.``, the home folder by ``~``); renumbers the execution
    counts 1, 2, ...; drops papermill's input/output paths and parameters from the notebook's
    metadata. Returns ``nb``.
    """
    subs = [(str(Path(results_dir).resolve()), "results"), (str(Path(results_dir)), "results"),
            (str(Path(project_root).resolve()), "."), (str(Path.home()), "~")]
    subs = [(old, new) for old, new in subs if len(old) > 1]
    nb.cells = [c for c in nb.cells if not _MARKER_TAGS & set(c.get("metadata", {}).get("tags", []))]
    count = 0
    for cell in nb.cells:
        cell.get("metadata", {}).pop("papermill", None)
        cell.get("metadata", {}).pop("execution", None)
        if cell.cell_type != "code":
            continue
        count += 1
        cell.execution_count = count
        kept = []
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream" and out.get("name") == "stderr":
                continue
            if _WIDGET_MIME in out.get("data", {}):
                continue
            out = _shrink_output(_scrub(out, subs))
            if "execution_count" in out:
                out["execution_count"] = count
            kept.append(out)
        cell.outputs = [_node(o) for o in kept]
    meta = nb.metadata.get("papermill")
    if meta is not None:
        for key in ("input_path", "output_path", "parameters", "environment_variables"):
            meta.pop(key, None)
    return nb


def shrink_png(png: bytes, budget: int = PNG_BUDGET) -> tuple[bytes, float]:
    """``png`` re-encoded to fit ``budget`` bytes, and the factor its sides were scaled by.

    A PNG within the budget is returned as it is. Otherwise it is quantised to a 256-colour
    palette (plots and heatmaps look the same; noisy synthetic images compress 2-3x better),
    then, while still too large, halved in both sides (Lanczos). Returns ``(png, scale)``.
    """
    if len(png) <= budget:
        return png, 1.0
    import io

    from PIL import Image

    with Image.open(io.BytesIO(png)) as im:
        im = im.convert("RGBA") if im.mode in ("RGBA", "LA", "P") else im.convert("RGB")
    scale = 1.0
    while True:
        q = im.quantize(256, method=Image.Quantize.FASTOCTREE) if im.mode == "RGBA" else im.quantize(256)
        buf = io.BytesIO()
        q.save(buf, format="PNG", optimize=True)
        if buf.tell() <= budget or min(im.size) < 64:
            return buf.getvalue(), scale
        im = im.resize((max(1, im.width // 2), max(1, im.height // 2)), Image.Resampling.LANCZOS)
        scale /= 2


def _shrink_output(out: dict) -> dict:
    """An output whose PNG is over :data:`PNG_BUDGET` re-encoded; a halved one keeps its display size."""
    png = out.get("data", {}).get("image/png")
    if not png:
        return out
    raw = base64.b64decode(png if isinstance(png, str) else "".join(png))
    small, scale = shrink_png(raw)
    if small is raw:
        return out
    out["data"]["image/png"] = base64.b64encode(small).decode("ascii")
    if scale < 1.0:
        import struct

        width, height = struct.unpack(">II", raw[16:24])  # the IHDR chunk of the original
        meta = out.setdefault("metadata", {}).setdefault("image/png", {})
        meta.setdefault("width", width)
        meta.setdefault("height", height)
    return out


def _node(obj: Any):
    """A dict as an ``nbformat`` node (attribute access), as nbformat's readers return them."""
    from nbformat import from_dict

    return from_dict(obj)


def write_back(runs: Sequence[NotebookRun], results_dir: str | os.PathLike, *, smoke: bool = False,
               parameters: dict[str, Any] | None = None, dest_dir: str | os.PathLike | None = None) -> list[Path]:
    """Write each notebook that ran through back over its source, cleaned (:func:`clean_executed`).

    A failed notebook is left as it was. The file is replaced atomically. The notebook's
    metadata ``wsslib`` records how it was executed (``smoke``, the ``parameters`` given).
    With ``dest_dir`` (a preset's folder, :func:`preset_dir`) the notebook is written there
    instead of over its source, with its results JSON (provenance kept) beside it.

    Returns:
        the notebooks written.
    """
    import nbformat

    written = []
    for r in runs:
        if r.error or r.source is None or not Path(r.output).is_file():
            continue
        nb = clean_executed(nbformat.read(r.output, as_version=4), results_dir=results_dir)
        nb.metadata["wsslib"] = {"executed_by": "wsslib reproduce --in-place", "smoke": bool(smoke),
                                 "parameters": dict(parameters or {})}
        target = Path(r.source) if dest_dir is None else Path(dest_dir) / Path(r.source).name
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        nbformat.write(nb, tmp)
        os.replace(tmp, target)
        result = Path(results_dir) / f"{r.stem}.json"
        if dest_dir is not None and result.is_file():
            tmp = target.with_name(f".{result.name}.tmp")
            absdir = Path(results_dir).resolve()
            try:  # a committed JSON names no machine's absolute path
                rel = absdir.relative_to(Path(PROJECT_ROOT).resolve()).as_posix()
            except ValueError:
                rel = "results"
            tmp.write_text(result.read_text().replace(json.dumps(str(absdir))[1:-1], rel))
            os.replace(tmp, target.with_name(result.name))
        written.append(target)
    return written


# --------------------------------------------------------------------------------------------
# the report
# --------------------------------------------------------------------------------------------


def extract_figures(executed: str | os.PathLike, fig_dir: str | os.PathLike, prefix: str) -> list[dict]:
    """Write the PNG outputs of an executed notebook to ``fig_dir/<prefix>_cellNN_K.png``.

    Returns:
        one dict per figure, in notebook order: ``path`` (the PNG), ``cell`` (1-based cell
        number in the source notebook) and ``section`` (the last markdown heading above it).
    """
    import nbformat

    try:
        nb = nbformat.read(Path(executed), as_version=4)
    except Exception:  # noqa: BLE001 - a notebook that never ran has no figures
        return []
    fig_dir = Path(fig_dir)
    figures, section = [], ""
    cells = [c for c in nb.cells if not _MARKER_TAGS & set(c.get("metadata", {}).get("tags", []))]
    for i, cell in enumerate(cells, start=1):
        if cell.cell_type == "markdown":
            heads = [ln.lstrip("#").strip() for ln in cell.source.splitlines() if ln.startswith("#")]
            section = heads[-1] if heads else section
            continue
        k = 0
        for out in cell.get("outputs", []):
            png = out.get("data", {}).get("image/png") if out.get("output_type") in ("display_data", "execute_result") else None
            if not png:
                continue
            k += 1
            fig_dir.mkdir(parents=True, exist_ok=True)
            path = fig_dir / f"{prefix}_cell{i:02d}_{k}.png"
            path.write_bytes(base64.b64decode(png if isinstance(png, str) else "".join(png)))
            figures.append({"path": path, "cell": i, "section": section})
    return figures


def _fmt(v: Any) -> str:
    """A table cell: 3 decimals for fractions, integers as integers, lists compact."""
    if v is None:
        return ""
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return ""
        if v.is_integer() and abs(v) >= 1:
            return str(int(v))
        return f"{v:.3f}" if abs(v) < 1000 else f"{v:.0f}"
    if isinstance(v, (list, tuple, dict)):
        s = json.dumps(v, separators=(",", ":"))
        return s if len(s) <= 40 else s[:37] + "..."
    return str(v)


def _frame(rows: list[dict], columns: list[str] | None = None):
    """Rows -> DataFrame of display strings (``method`` first)."""
    import pandas as pd

    df = pd.DataFrame(rows)
    if columns is not None:
        df = df[[c for c in columns if c in df.columns]]
    cols = list(df.columns)
    lead = [c for c in ("method", "source", "dataset") if c in cols]
    df = df[lead + [c for c in cols if c not in lead]]
    return df.astype(object).map(_fmt) if len(df) else df


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and not (isinstance(v, float) and math.isnan(v))


def _table_views(name: str, rows: list[dict], max_rows: int) -> list[tuple[str, Any, str]]:
    """(title, DataFrame of strings, note) views of one results table.

    A table with rows quoted from a paper gives two views: "vs the papers" (this run's rows, then
    the paper's, on the metric columns the paper rows fill) and this run's rows with all columns.
    """
    rows = [r for r in rows if isinstance(r, dict)]
    if not rows:
        return [(name, None, "empty table")]
    paper = [r for r in rows if r.get("source") == "paper"]
    views = []
    ours = rows
    if paper:
        ours = [r for r in rows if r.get("source") != "paper"]
        keys = [k for k in dict.fromkeys(k for r in rows for k in r) if k not in ("method", "source", "dataset")]
        metrics = [k for k in keys if any(_is_number(r.get(k)) for r in paper)]
        mine = [r for r in ours if any(_is_number(r.get(k)) for k in metrics)]
        df = _frame(mine + paper, ["method", "source", "dataset", *metrics])
        views.append((f"{name}: this run vs the papers", df,
                      "rows with source = paper are quoted from the paper (often other data and models: "
                      "compare rankings, not values)"))
    note = ""
    if len(ours) > max_rows:
        note = f"first {max_rows} of {len(ours)} rows; all of them are in the results JSON"
        ours = ours[:max_rows]
    views.append((name + (" (this run, all columns)" if paper else ""), _frame(ours), note))
    return views


def _md_table(df) -> str:
    def esc(s: str) -> str:
        return str(s).replace("|", "\\|").replace("\n", " ")

    head = "| " + " | ".join(esc(c) for c in df.columns) + " |"
    sep = "| " + " | ".join("---" for _ in df.columns) + " |"
    body = ["| " + " | ".join(esc(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, sep, *body])


def _anchor(stem: str) -> str:
    return re.sub(r"[^a-z0-9_-]+", "-", stem.lower())


@dataclass
class _Section:
    run: NotebookRun
    doc: dict | None
    figures: list[dict] = field(default_factory=list)
    html: Path | None = None  # the executed notebook exported to HTML (a browser cannot show .ipynb)


def _provenance_line(prov: dict) -> list[tuple[str, str]]:
    versions = prov.get("versions") or {}
    items = [("git commit", str(prov.get("git"))), ("device", str(prov.get("device"))),
             ("seed", str(prov.get("seed"))), ("seconds (notebook's own timer)", _fmt(prov.get("seconds")))]
    for key in ("date", "host", "platform", "cpus", "torch_threads", "gpu"):
        if prov.get(key) is not None:
            items.append((key, str(prov[key])))
    if versions:
        items.append(("versions", ", ".join(f"{k} {v}" for k, v in versions.items() if v)))
    return items


def _run_provenance() -> dict:
    from wsslib.reporting.results import provenance

    return provenance(None, "-", None)


def _sections(run_dir: Path, runs: Sequence[NotebookRun]) -> list[_Section]:
    out = []
    for r in runs:
        doc = None
        path = r.results if r.results is not None else run_dir / f"{r.stem}.json"
        if path.is_file():
            try:
                doc = json.loads(path.read_text())
            except (OSError, ValueError):
                doc = None
        figs = extract_figures(r.output, run_dir / "figures", r.stem) if Path(r.output).is_file() else []
        out.append(_Section(r, doc, figs, export_html(r.output)))
    return out


def export_html(executed: str | os.PathLike) -> Path | None:
    """Export an executed notebook to ``<same name>.html`` beside it with nbconvert's HTML
    exporter (outputs and figures embedded: the page needs no other file). A failed notebook is
    exported too (its traceback shows). Returns the page, or ``None`` when ``executed`` does not
    exist or nbconvert could not export it (a warning says why; the report links the .ipynb)."""
    executed = Path(executed)
    if not executed.is_file():
        return None
    try:
        import nbformat
        from nbconvert import HTMLExporter

        body, _ = HTMLExporter(embed_images=True).from_notebook_node(nbformat.read(executed, as_version=4))
    except Exception as exc:  # noqa: BLE001 - the report is still written, without this page
        print(f"wsslib reproduce: could not export {executed} to HTML ({type(exc).__name__}: {exc}); "
              "the report links the .ipynb instead", file=sys.stderr)
        return None
    page = executed.with_suffix(".html")
    page.write_text(body, encoding="utf-8")
    return page


def write_report(
    run_dir: str | os.PathLike,
    runs: Sequence[NotebookRun],
    *,
    smoke: bool = False,
    parameters: dict[str, Any] | None = None,
    command: str | None = None,
    also_to: str | os.PathLike | None = None,
    max_rows: int = MAX_TABLE_ROWS,
) -> tuple[Path, Path]:
    """Write ``run_dir/report.md`` and ``run_dir/report.html`` (self-contained: figures inlined).

    Figures are extracted from the executed notebooks into ``run_dir/figures/``; the markdown
    links to them. With ``also_to`` (a parent folder of ``run_dir``, e.g. ``runs/``), the same two
    files are written there as well, with links that reach into ``run_dir``.

    Returns:
        ``(report.md, report.html)`` in ``run_dir``.
    """
    run_dir = Path(run_dir).resolve()
    sections = _sections(run_dir, runs)
    info = _run_info(runs, smoke, parameters, command)
    md = run_dir / "report.md"
    md.write_text(_markdown(sections, info, run_dir, run_dir, max_rows))
    page = run_dir / "report.html"
    page.write_text(_html(sections, info, run_dir, run_dir, max_rows))
    if also_to is not None:
        top = Path(also_to).resolve()
        (top / "report.md").write_text(_markdown(sections, info, run_dir, top, max_rows))
        (top / "report.html").write_text(_html(sections, info, run_dir, top, max_rows))
    return md, page


def _run_info(runs, smoke, parameters, command) -> dict:
    prov = _run_provenance()
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count()
    return {
        "date": datetime.now(timezone.utc).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z"),
        "mode": "smoke (tiny settings: the numbers only show that everything runs)" if smoke else "full",
        "command": command,
        "parameters": parameters or {},
        "host": f"{platform.node()} ({platform.platform()}, {cpus} CPUs)",
        "git": prov.get("git"),
        "versions": prov.get("versions", {}),
        "memory_method": next((r.memory_method for r in runs if r.memory_method), "unavailable"),
        "total_seconds": sum(r.seconds for r in runs),
        "failed": sum(1 for r in runs if r.error),
    }


def _rel(path: Path, base: Path) -> str:
    return os.path.relpath(path, base).replace(os.sep, "/")


def _status(s: _Section) -> str:
    if s.run.error:
        return "FAILED"
    return "ok" if s.doc is not None else "ok, no results JSON"


def _summary_rows(sections: list[_Section]) -> list[dict]:
    return [{"notebook": s.run.stem, "status": _status(s), "time (s)": f"{s.run.seconds:.1f}",
             "peak memory (MiB)": "?" if s.run.peak_rss_mib is None else f"{s.run.peak_rss_mib:.0f}",
             "tables": len((s.doc or {}).get("tables", {})), "figures": len(s.figures),
             "failure": s.run.error or ""} for s in sections]


def _markdown(sections, info, run_dir: Path, base: Path, max_rows: int) -> str:
    import pandas as pd

    L = ["# wsslib reproduce: report", ""]
    L += [f"- date: {info['date']}", f"- mode: {info['mode']}", f"- host: {info['host']}",
          f"- git commit: {info['git']}",
          "- versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items() if v)]
    if info["command"]:
        L.append(f"- command: `{info['command']}`")
    if info["parameters"]:
        L.append(f"- parameters given to every notebook: `{json.dumps(info['parameters'])}`")
    L += [f"- peak memory: {info['memory_method']}",
          f"- total time: {info['total_seconds']:.0f} s; "
          + (f"**{info['failed']} notebook(s) FAILED**" if info["failed"] else "every notebook ran through"), ""]
    L += ["## Summary", "", _md_table(pd.DataFrame(_summary_rows(sections))), ""]
    for s in sections:
        L += [f"## {s.run.stem}", ""]
        L.append(f"{_status(s)} in {s.run.seconds:.1f} s, peak memory "
                 + ("?" if s.run.peak_rss_mib is None else f"{s.run.peak_rss_mib:.0f} MiB")
                 + "; executed notebook: "
                 + (f"[{s.html.name}]({_rel(s.html, base)}) (HTML), " if s.html else "")
                 + f"[{s.run.notebook}]({_rel(Path(s.run.output), base)})"
                 + (f", results: [{s.run.stem}.json]({_rel(run_dir / (s.run.stem + '.json'), base)})" if s.doc else ""))
        L.append("")
        if s.run.error:
            L += [f"**FAILED at {s.run.error}**", ""]
        if s.doc is not None:
            for name, rows in s.doc.get("tables", {}).items():
                for title, df, note in _table_views(name, rows, max_rows):
                    L += [f"### {title}", ""]
                    if df is None or not len(df):
                        L += ["(empty)", ""]
                        continue
                    L += [_md_table(df), ""]
                    if note:
                        L += [f"*{note}*", ""]
        if s.figures:
            L += ["### Figures", ""]
            for f in s.figures:
                cap = f"cell {f['cell']}" + (f", {f['section']}" if f["section"] else "")
                L += [f"![{cap}]({_rel(f['path'], base)})", "", f"*{cap}*", ""]
        if s.doc is not None:
            L += ["### Parameters and provenance", ""]
            params = s.doc.get("params", {})
            if params:
                L += ["parameters: `" + json.dumps(params, separators=(", ", ": "))[:2000] + "`", ""]
            L += [f"- {k}: {v}" for k, v in _provenance_line(s.doc.get("provenance", {}))] + [""]
    return "\n".join(L) + "\n"


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2em auto;max-width:1200px;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}h3{font-size:1.05em;margin-top:1.4em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0;display:block;overflow-x:auto}
th,td{border:1px solid #ddd;padding:.25em .5em;text-align:right;white-space:nowrap}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
tr.paper td{background:#fff8e6}.failed{color:#b00020;font-weight:bold}.ok{color:#1b7f3b}
figure{display:inline-block;margin:.5em;vertical-align:top}figure img{max-width:560px;border:1px solid #eee}
figcaption{font-size:.8em;color:#555}code{background:#f5f5f5;padding:0 .2em}.note{font-size:.85em;color:#555}
"""


def _html_table(df) -> str:
    e = html.escape
    head = "<tr>" + "".join(f"<th>{e(str(c))}</th>" for c in df.columns) + "</tr>"
    src = list(df.columns).index("source") if "source" in df.columns else None
    body = []
    for row in df.itertuples(index=False):
        cls = ' class="paper"' if src is not None and row[src] == "paper" else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{e(str(v))}</td>" for v in row) + "</tr>")
    return f"<table><thead>{head}</thead><tbody>{''.join(body)}</tbody></table>"


def _html(sections, info, run_dir: Path, base: Path, max_rows: int) -> str:
    import pandas as pd

    e = html.escape
    H = ["<!DOCTYPE html><html><head><meta charset='utf-8'><title>wsslib reproduce report</title>",
         f"<style>{_CSS}</style></head><body>", "<h1>wsslib reproduce: report</h1><ul>"]
    items = [("date", info["date"]), ("mode", info["mode"]), ("host", info["host"]), ("git commit", info["git"]),
             ("versions", ", ".join(f"{k} {v}" for k, v in info["versions"].items() if v))]
    if info["command"]:
        items.append(("command", info["command"]))
    if info["parameters"]:
        items.append(("parameters given to every notebook", json.dumps(info["parameters"])))
    items += [("peak memory", info["memory_method"]), ("total time", f"{info['total_seconds']:.0f} s")]
    H += [f"<li><b>{e(k)}</b>: {e(str(v))}</li>" for k, v in items]
    status = (f"<span class='failed'>{info['failed']} notebook(s) FAILED</span>" if info["failed"]
              else "<span class='ok'>every notebook ran through</span>")
    H += [f"<li>{status}</li></ul>", "<h2>Summary</h2>"]
    summary = pd.DataFrame(_summary_rows(sections))
    summary["notebook"] = [s.run.stem for s in sections]
    table = _html_table(summary)
    for s in sections:  # link each name to its section
        table = table.replace(f"<td>{e(s.run.stem)}</td>", f"<td><a href='#{_anchor(s.run.stem)}'>{e(s.run.stem)}</a></td>", 1)
    H.append(table)
    for s in sections:
        H.append(f"<h2 id='{_anchor(s.run.stem)}'>{e(s.run.stem)}</h2>")
        mem = "?" if s.run.peak_rss_mib is None else f"{s.run.peak_rss_mib:.0f} MiB"
        cls = "failed" if s.run.error else "ok"
        links = f"<a href='{e(_rel(Path(s.run.output), base))}'>{e(s.run.notebook)}</a>"
        if s.html is not None:
            links = f"executed notebook <a href='{e(_rel(s.html, base))}'>{e(s.html.name)}</a> ({links})"
        if s.doc is not None:
            links += f", <a href='{e(_rel(run_dir / (s.run.stem + '.json'), base))}'>{e(s.run.stem)}.json</a>"
        H.append(f"<p><span class='{cls}'>{e(_status(s))}</span> in {s.run.seconds:.1f} s, peak memory {mem}; {links}</p>")
        if s.run.error:
            H.append(f"<p class='failed'>FAILED at {e(s.run.error)}</p>")
        if s.doc is not None:
            for name, rows in s.doc.get("tables", {}).items():
                for title, df, note in _table_views(name, rows, max_rows):
                    H.append(f"<h3>{e(title)}</h3>")
                    H.append(_html_table(df) if df is not None and len(df) else "<p>(empty)</p>")
                    if note:
                        H.append(f"<p class='note'>{e(note)}</p>")
        if s.figures:
            H.append("<h3>Figures</h3><div>")
            for f in s.figures:
                data = base64.b64encode(Path(f["path"]).read_bytes()).decode()
                cap = f"cell {f['cell']}" + (f", {f['section']}" if f["section"] else "")
                H.append(f"<figure><img src='data:image/png;base64,{data}' alt='{e(cap)}'><figcaption>{e(cap)}</figcaption></figure>")
            H.append("</div>")
        if s.doc is not None:
            H.append("<h3>Parameters and provenance</h3>")
            params = s.doc.get("params", {})
            if params:
                H.append(f"<p>parameters: <code>{e(json.dumps(params, separators=(', ', ': '))[:2000])}</code></p>")
            H.append("<ul>" + "".join(f"<li><b>{e(k)}</b>: {e(v)}</li>" for k, v in _provenance_line(s.doc.get("provenance", {}))) + "</ul>")
    H.append("</body></html>")
    return "\n".join(H) + "\n"
