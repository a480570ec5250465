"""The committed notebooks are fit to read on GitHub: executed, with their figures, and clean.

For every ``notebooks/NN_*.ipynb`` as committed (written by ``wsslib reproduce --in-place``):
every code cell executed; every cell that draws a figure carries it as a PNG, each under
:data:`MAX_PNG_BYTES`; no ``stderr`` outputs (progress bars, warnings); no absolute paths in the
outputs; exactly one cell tagged ``parameters`` and no papermill-injected cell; no code cell over
:data:`MAX_CELL_LINES` non-blank lines (the parameters cell too: it lists the common knobs, the
others are passed the same way) and no ``def`` / ``class`` in cells (the notebook rules of docs/ARCHITECTURE.md). Nothing is executed here: the files are read as they are.

``check_notebook(path)`` returns the list of problems, so the same checks run on a notebook
executed elsewhere (e.g. ``python -c "from test_committed_notebooks import check_notebook; ..."``).
"""

from __future__ import annotations

import ast
import base64
import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
#: the executed runs of the other presets (``wsslib reproduce --preset real --in-place``)
PRESET_RUNS = sorted((ROOT / "notebooks").glob("*/[0-9][0-9]_*.ipynb"))

MAX_PNG_BYTES = 300 * 1024
MAX_CELL_LINES = 25

#: A cell draws a figure when, leaving its import lines out, it calls pyplot, seaborn, a
#: ``wsslib.reporting.plots`` function, or makes a figure.
_DRAWS = re.compile(r"\bplt\.\w+\(|\bsns\.(?!color_palette\b|set_theme\b|set\b)\w+\(|\bplots\.\w+\(|\.subplots\(|\.imshow\(|\.plot\(|\bfigure\(")
_IMPORT = re.compile(r"^\s*(import|from)\s")
#: Absolute paths that point into someone's machine (POSIX home, temporary and work folders,
#: macOS and Windows user folders).
_ABSOLUTE = re.compile(r"(?<![\w.~-])(/(home|Users|root|tmp|work|private|var/folders|mnt|scratch)/|[A-Za-z]:\\\\Users\\\\)")


def _code_lines(source: str) -> list[str]:
    return [ln for ln in source.splitlines() if ln.strip()]


def _python(source: str) -> str:
    """The cell's Python, IPython magics and shell escapes blanked out."""
    return "\n".join("" if ln.lstrip().startswith(("%", "!")) else ln for ln in source.splitlines())


def _defines(source: str) -> list[str]:
    try:
        tree = ast.parse(_python(source))
    except SyntaxError:
        return ["(does not parse)"]
    kinds = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    return [n.name for n in ast.walk(tree) if isinstance(n, kinds)]


def _draws(source: str) -> bool:
    body = "\n".join(ln for ln in source.splitlines() if not _IMPORT.match(ln) and not ln.lstrip().startswith("#"))
    return bool(_DRAWS.search(body))


def _texts(output: dict) -> list[str]:
    """Every text an output shows (stream text, text/* and JSON data, tracebacks); no images."""
    out = []
    if "text" in output:
        out.append("".join(output["text"]) if isinstance(output["text"], list) else output["text"])
    for mime, value in output.get("data", {}).items():
        if not mime.startswith("image/"):
            out.append(value if isinstance(value, str) else "".join(value) if isinstance(value, list) else str(value))
    out += list(output.get("traceback", []))
    return out


def _pngs(output: dict) -> list[bytes]:
    png = output.get("data", {}).get("image/png")
    if not png:
        return []
    return [base64.b64decode(png if isinstance(png, str) else "".join(png))]


def _top_level_stores(source: str) -> set[str]:
    """Names a cell binds at its top level (``x = ...``; loop and comprehension variables left out)."""
    try:
        tree = ast.parse(_python(source))
    except SyntaxError:
        return set()
    out = set()
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
            node, (ast.AnnAssign, ast.AugAssign)) else []
        out |= {n.id for tg in targets for n in ast.walk(tg) if isinstance(n, ast.Name)}
    return out


def _read_before_bound(source: str, names: set[str]) -> set[str]:
    """Of ``names``, those a cell reads before (or without) binding them itself."""
    try:
        tree = ast.parse(_python(source))
    except SyntaxError:
        return set()
    first: dict[str, tuple[int, bool]] = {}  # name -> (line, is_load) of its first appearance
    for n in ast.walk(tree):
        if isinstance(n, ast.Name) and n.id in names:
            key = (n.lineno, isinstance(n.ctx, ast.Store) is False)
            if n.id not in first or key[0] < first[n.id][0]:
                first[n.id] = key
    return {k for k, (_, load) in first.items() if load}


def _plot_cell_leaks(cells: list) -> list[str]:
    """Variables a figure-drawing cell binds that a later cell reads (a figure cell must be
    removable without breaking the notebook)."""
    problems = []
    sources = [c.source for c in cells]
    for i, src in enumerate(sources):
        if not _draws(src):
            continue
        bound = _top_level_stores(src) - {"fig", "ax", "axes", "g"}
        for later in sources[i + 1:]:
            leaked = _read_before_bound(later, bound)
            if leaked:
                problems.append(f"`{_code_lines(src)[0].strip()[:50]}` defines {', '.join(sorted(leaked))}, "
                                "which a later cell uses (define it outside the plotting cell)")
            bound -= _top_level_stores(later)
    return problems


def check_notebook(path: str | Path) -> list[str]:
    """Every way ``path`` breaks the rules of a committed notebook (empty: none)."""
    nb = nbformat.read(Path(path), as_version=4)
    problems = []
    tags = [set(c.get("metadata", {}).get("tags", [])) for c in nb.cells]
    n_params = sum("parameters" in t for t in tags)
    if n_params != 1:
        problems.append(f"{n_params} cells tagged 'parameters' (want exactly 1)")
    if any("injected-parameters" in t for t in tags):
        problems.append("papermill's injected-parameters cell is still there")
    for i, cell in enumerate(nb.cells, start=1):
        if cell.cell_type != "code" or not cell.source.strip():
            continue
        where = f"cell {i} `{_code_lines(cell.source)[0].strip()[:60]}`"
        if cell.get("execution_count") is None:
            problems.append(f"{where}: not executed")
        n_lines = len(_code_lines(cell.source))
        if n_lines > MAX_CELL_LINES:
            problems.append(f"{where}: {n_lines} non-blank lines (at most {MAX_CELL_LINES})")
        names = _defines(cell.source)
        if names:
            problems.append(f"{where}: defines {', '.join(names)} (no def/class in cells)")
        outputs = cell.get("outputs", [])
        pngs = [png for o in outputs for png in _pngs(o)]
        if _draws(cell.source) and not pngs:
            problems.append(f"{where}: draws a figure but has no image/png output")
        for k, png in enumerate(pngs, start=1):
            if len(png) > MAX_PNG_BYTES:
                problems.append(f"{where}: figure {k} is {len(png) // 1024} KB (at most {MAX_PNG_BYTES // 1024} KB)")
        if any(o.get("output_type") == "stream" and o.get("name") == "stderr" for o in outputs):
            problems.append(f"{where}: has stderr output (progress bars or warnings)")
        for o in outputs:
            hit = next((m for t in _texts(o) if (m := _ABSOLUTE.search(t))), None)
            if hit:
                problems.append(f"{where}: absolute path in an output ({hit.group(0)!r}...)")
                break
    problems += _plot_cell_leaks([c for c in nb.cells if c.cell_type == "code" and c.source.strip()])
    return problems


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 6, [p.name for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS + PRESET_RUNS, ids=[f"{p.parent.name}/{p.stem}" for p in NOTEBOOKS + PRESET_RUNS])
def test_committed_notebook_is_clean(path):
    problems = check_notebook(path)
    assert not problems, f"{path.name} (run `wsslib reproduce --in-place --only {path.name[:2]}`):\n  " + "\n  ".join(problems)


@pytest.mark.parametrize("path", NOTEBOOKS + PRESET_RUNS, ids=[f"{p.parent.name}/{p.stem}" for p in NOTEBOOKS + PRESET_RUNS])
def test_committed_notebook_ran_in_full_mode(path):
    """Written by ``wsslib reproduce --in-place`` without ``--smoke`` (its metadata says so)."""
    meta = nbformat.read(path, as_version=4).metadata.get("wsslib", {})
    assert meta.get("executed_by") == "wsslib reproduce --in-place", f"{path.name}: not written by wsslib reproduce --in-place"
    assert meta.get("smoke") is False, f"{path.name}: executed in smoke mode"
    if path.parent.name != "notebooks":  # a preset's folder holds that preset's runs, with their results JSON
        assert meta.get("parameters", {}).get("preset") == path.parent.name, f"{path}: not run with that preset"
        assert path.with_suffix(".json").is_file(), f"{path}: its results JSON is missing"


def test_the_checks_catch_each_problem(tmp_path):
    """A notebook with every fault is flagged for each; a clean one passes."""
    def code(src, count=1, outputs=(), tags=()):
        c = nbformat.v4.new_code_cell(src, execution_count=count, outputs=list(outputs))
        if tags:
            c.metadata["tags"] = list(tags)
        return c

    big_png = base64.b64encode(b"\x89PNG" + bytes(MAX_PNG_BYTES)).decode()
    small_png = base64.b64encode(b"\x89PNG" + bytes(10)).decode()
    fig = lambda data: nbformat.v4.new_output("display_data", data={"image/png": data, "text/plain": "<Figure>"})  # noqa: E731
    knobs = "\n".join(f"knob{i} = None  # knob {i}" for i in range(MAX_CELL_LINES - 2))
    clean = [code("preset = 'cpu'\nsmoke = None\n" + knobs, tags=["parameters"]),
             nbformat.v4.new_markdown_cell("# x"),
             code("import matplotlib.pyplot as plt\nfig, ax = plt.subplots()", 2, [fig(small_png)]),
             code("print('results/00.json')", 3, [nbformat.v4.new_output("stream", name="stdout", text="results/00.json\n")])]
    nb = nbformat.v4.new_notebook(cells=clean)
    nbformat.write(nb, tmp_path / "clean.ipynb")
    assert check_notebook(tmp_path / "clean.ipynb") == []

    bad = [code("smoke = True", tags=["injected-parameters"]),
           code("import matplotlib.pyplot as plt\nplt.plot([1, 2])", 1, []),
           code("x = 1", None),
           code("\n".join(f"a{i} = {i}" for i in range(MAX_CELL_LINES + 1)), 3),
           code("def f():\n    return 1", 4),
           code("plots.mask_grid(x, {})", 5, [fig(big_png)]),
           code("run()", 6, [nbformat.v4.new_output("stream", name="stderr", text="100%|####|\n")]),
           code("print(path)", 7, [nbformat.v4.new_output("stream", name="stdout", text="wrote /home/ann/wsslib/x.json\n")])]
    nbformat.write(nbformat.v4.new_notebook(cells=bad), tmp_path / "bad.ipynb")
    found = "\n".join(check_notebook(tmp_path / "bad.ipynb"))
    for what in ("0 cells tagged 'parameters'", "injected-parameters", "no image/png output", "not executed",
                 f"{MAX_CELL_LINES + 1} non-blank lines", "defines f", "KB (at most 300 KB)", "stderr",
                 "absolute path"):
        assert what in found, (what, found)


def test_a_variable_from_a_plotting_cell_used_later_is_caught():
    cells = [nbformat.v4.new_code_cell(s) for s in (
        "idx = [0, 1]\nfig = plots.mask_grid(x[idx])",   # defines idx while drawing ...
        "print(idx)",                                      # ... and a later cell needs it
        "palette = dict(a=sns.color_palette('tab10')[0])",  # not a drawing cell
        "sns.barplot(x=[1], y=[palette['a']])",
        "idx = 3\nprint(idx)")]                           # bound again before use: fine
    assert [p.split(" defines ")[1].split(",")[0] for p in _plot_cell_leaks(cells)] == ["idx"]
