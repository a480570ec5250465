"""``wsslib reproduce`` on two tiny notebooks built here: one writes a results JSON and a figure,
one raises in its second cell. Checks the exit code, the failure summary (cell number, first line,
error), peak memory, and the report (tables beside the paper's rows, figure links, provenance)."""

from __future__ import annotations

import json
import re

import nbformat
import pytest

from test_committed_notebooks import check_notebook
from wsslib.apps.cli import main
from wsslib.apps.reproduce import (FIGURE_DPI, CellFailure, NotebookRun, PeakMemory, _table_views, find_notebooks,
                                   write_report)

PARAMS = 'smoke = False\nresults_dir = "results"\nseed = 0\n'

GOOD = [
    ("params", PARAMS),
    ("md", "# 01 fake\n\n## 1 · A figure"),
    ("code", "import matplotlib.pyplot as plt\nfig, ax = plt.subplots(figsize=(2, 2))\nax.plot([0, 1], [0, 1])"),
    ("code", "import sys\nfrom wsslib.reporting import results as report\n"
             "print('a progress bar', file=sys.stderr)\n"
             "rows = [{'method': 'empty', 'dice': 0.0, 'iou': 0.0, 'source': 'this run'},\n"
             "        {'method': 'gradcam', 'dice': 0.5123, 'iou': 0.34, 'precision': 0.6, 'source': 'this run'},\n"
             "        {'method': 'gradcam [paper, Kvasir-SEG]', 'dice': 0.074, 'iou': 0.04, 'source': 'paper',\n"
             "         'dataset': 'Kvasir-SEG'}]\n"
             "print(report.write_results(results_dir, '01_fake_good', params={'smoke': smoke, 'seed': seed},\n"
             "    tables={'segmentation': rows, 'classification': [{'method': 'smallcnn', 'accuracy': 0.9}]},\n"
             "    seed=seed, device='cpu', seconds=0.1))"),
]
BAD = [
    ("params", PARAMS),
    ("code", "x = 1\nraise ValueError('boom in cell two')"),
    ("code", "print('never runs')"),
]


def _write(path, cells):
    nb = nbformat.v4.new_notebook()
    for kind, src in cells:
        if kind == "md":
            nb.cells.append(nbformat.v4.new_markdown_cell(src))
        else:
            c = nbformat.v4.new_code_cell(src)
            if kind == "params":
                c.metadata["tags"] = ["parameters"]
            nb.cells.append(c)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One ``wsslib reproduce`` over both fake notebooks: (exit code, stdout, out folder)."""
    tmp = tmp_path_factory.mktemp("repro")
    nbs = tmp / "nbs"
    nbs.mkdir()
    _write(nbs / "01_fake_good.ipynb", GOOD)
    _write(nbs / "02_fake_bad.ipynb", BAD)
    _write(nbs / "unnumbered.ipynb", BAD)  # not a numbered notebook: never run
    out = tmp / "runs"
    capture = pytest.MonkeyPatch()
    import io
    import sys

    buf = io.StringIO()
    capture.setattr(sys, "stdout", buf)
    try:
        bad_before = (nbs / "02_fake_bad.ipynb").read_bytes()
        code = main(["reproduce", "--notebooks", str(nbs), "--out", str(out), "--smoke", "-q", "-p", "seed=3",
                     "--in-place"])
        assert (nbs / "02_fake_bad.ipynb").read_bytes() == bad_before, "a failed notebook must not be written back"
    finally:
        capture.undo()
    return code, buf.getvalue(), out, nbs


def test_exit_code_and_failure_summary(run):
    code, stdout, out, _ = run
    assert code == 1, "a failing notebook must give a non-zero exit"
    # cell 2 of the source notebook; In [3] = execution count, papermill's injected cell included
    assert "02_fake_bad.ipynb failed at cell 2 (In [3]) `x = 1`: ValueError: boom in cell two" in stdout, stdout
    assert "1 of 2 notebook(s) FAILED" in stdout
    assert "unnumbered" not in stdout
    line = next(ln for ln in stdout.splitlines() if ln.strip().startswith("01_fake_good.ipynb"))
    assert line.rstrip().endswith("ok"), line


def test_results_and_provenance(run):
    _, _, out, _ = run
    latest = out / "latest"
    assert latest.is_symlink()
    doc = json.loads((latest / "01_fake_good.json").read_text())
    assert doc["params"] == {"smoke": True, "seed": 3}  # --smoke and -p reached the notebook
    prov = doc["provenance"]
    assert {"git", "versions", "seed", "device", "seconds", "date", "host", "platform", "cpus"} <= prov.keys()
    assert prov["versions"]["torch"] and prov["seed"] == 3
    assert not (latest / "02_fake_bad.json").exists()


def test_report_markdown(run):
    _, _, out, _ = run
    md = (out / "latest" / "report.md").read_text()
    assert "mode: smoke" in md and "1 notebook(s) FAILED" in md
    # summary: a time and a peak memory for each notebook
    for nb in ("01_fake_good", "02_fake_bad"):
        assert re.search(rf"\| {nb} \| (ok|FAILED) \| \d+\.\d \| (\d+|\?) \|", md), nb
    assert "**FAILED at cell 2 (In [" in md and "boom in cell two" in md
    # the table beside the paper's rows, and this run's rows with all columns
    assert "### segmentation: this run vs the papers" in md
    assert "| gradcam | this run |  | 0.512 | 0.340 |" in md
    assert "| gradcam [paper, Kvasir-SEG] | paper | Kvasir-SEG | 0.074 | 0.040 |" in md
    assert "### segmentation (this run, all columns)" in md and "### classification" in md
    # the figure, extracted and linked
    links = re.findall(r"!\[[^\]]*\]\((figures/[^)]+\.png)\)", md)
    assert links == ["figures/01_fake_good_cell03_1.png"], links
    png = out / "latest" / links[0]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "1 · A figure" in md  # the section the figure belongs to
    assert "- git commit:" in md and "- device: cpu" in md and "- seed: 3" in md


def test_report_html_and_top_level_copy(run):
    _, _, out, _ = run
    page = (out / "latest" / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "data:image/png;base64," in page  # self-contained
    assert "<tr class=\"paper\">" in page and "boom in cell two" in page
    top = (out / "report.md").read_text()  # the newest run's report, also at --out
    stamp = (out / "latest").resolve().name
    assert f"]({stamp}/figures/01_fake_good_cell03_1.png)" in top
    assert (out / "report.html").is_file()


def test_report_links_an_html_export_of_each_executed_notebook(run):
    """A browser cannot show an .ipynb: each executed notebook is exported with nbconvert, failed
    ones included (their traceback shows), and both reports link the exports."""
    _, _, out, _ = run
    latest = out / "latest"
    for stem in ("01_fake_good", "02_fake_bad"):
        assert (latest / f"{stem}.html").read_text().lstrip().lower().startswith("<!doctype html>")
        assert f"href='{stem}.html'" in (latest / "report.html").read_text()
        assert f"[{stem}.html]({stem}.html)" in (latest / "report.md").read_text()
    assert "boom in cell two" in (latest / "02_fake_bad.html").read_text()
    assert "data:image/png;base64," in (latest / "01_fake_good.html").read_text()  # the figure, embedded
    stamp = latest.resolve().name
    assert f"href='{stamp}/01_fake_good.html'" in (out / "report.html").read_text()


def test_peak_memory_measures_children():
    import subprocess
    import sys

    with PeakMemory(interval=0.02) as mem:
        subprocess.run([sys.executable, "-c", "import time; b = bytearray(80 * 2**20); time.sleep(0.5)"], check=True)
    assert mem.method.split(":")[0] in ("psutil", "getrusage")
    assert mem.peak_mib is not None and mem.peak_mib > 70


def test_table_views_truncate_and_keep_paper_rows():
    rows = [{"method": f"m{i}", "dice": i / 100, "source": "this run"} for i in range(50)]
    rows.append({"method": "X [paper]", "dice": 0.7, "source": "paper", "dataset": "D"})
    views = _table_views("t", rows, max_rows=10)
    (t1, vs, _), (t2, full, note) = views
    assert "vs the papers" in t1 and len(vs) == 51 and list(vs.columns) == ["method", "source", "dataset", "dice"]
    assert len(full) == 10 and "first 10 of 50" in note


def test_report_of_a_notebook_that_never_ran(tmp_path):
    runs = [NotebookRun("03_x.ipynb", tmp_path / "03_x.ipynb", 0.5, "cell 4: DeadKernelError: died",
                        CellFailure(4, None, "", "DeadKernelError", "died"))]
    md, page = write_report(tmp_path, runs)
    text = md.read_text()
    assert "FAILED at cell 4: DeadKernelError: died" in text and page.is_file()


def test_headless_run_has_no_tcp_warning_and_no_progress_bars(tmp_path):
    """``wsslib reproduce`` as a user runs it: the kernels run over IPC (no "Kernel is running over
    TCP without encryption" in the output) and with progress bars off (``s.progress`` False)."""
    import subprocess
    import sys

    nbs = tmp_path / "nbs"
    nbs.mkdir()
    _write(nbs / "00_probe.ipynb", [
        ("params", PARAMS),
        ("code", "import os\nfrom tqdm.auto import tqdm\nfrom wsslib.papers.settings import resolve_progress\n"
                 "print('progress', os.environ.get('WSSLIB_PROGRESS'), resolve_progress(None, smoke=False))\n"
                 "for _ in tqdm(range(3), disable=not resolve_progress(None, smoke=False)): pass"),
    ])
    r = subprocess.run([sys.executable, "-m", "wsslib", "reproduce", "--notebooks", str(nbs), "--out", str(tmp_path / "r"),
                        "-q"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "without encryption" not in r.stdout + r.stderr
    executed = nbformat.read(tmp_path / "r" / "latest" / "00_probe.ipynb", as_version=4)
    outputs = [o for c in executed.cells for o in c.get("outputs", [])]
    assert [o.get("text") for o in outputs] == ["progress 0 False\n"]  # nothing on stderr: no bar, no widget warning
    assert not list(tmp_path.glob("kernel-*")) and not list(nbs.glob("kernel-*")), "IPC socket files left behind"


def test_packaged_notebooks_are_found_outside_the_repository(tmp_path, monkeypatch, capsys):
    """In a wheel install the notebooks live in wsslib/notebooks/ (setup.py copies them there):
    reproduce and ``wsslib notebooks`` use them; --in-place, which writes into the repository, refuses."""
    from wsslib.apps import reproduce

    shipped = tmp_path / "site-packages" / "wsslib" / "notebooks"
    shipped.mkdir(parents=True)
    _write(shipped / "00_shipped.ipynb", GOOD[:1])
    monkeypatch.setattr(reproduce, "PACKAGED_NOTEBOOKS", shipped)
    assert reproduce.default_notebook_dir() == shipped
    assert find_notebooks(None) == [shipped / "00_shipped.ipynb"]
    assert main(["notebooks", str(tmp_path / "mine")]) == 0
    assert (tmp_path / "mine" / "00_shipped.ipynb").is_file()
    assert main(["reproduce", "--in-place", "--out", str(tmp_path / "r")]) == 2
    assert "wsslib notebooks DIR" in capsys.readouterr().err
    monkeypatch.setattr(reproduce, "PACKAGED_NOTEBOOKS", tmp_path / "absent")  # a clone: the repository's
    assert reproduce.default_notebook_dir() == reproduce.PROJECT_ROOT / "notebooks"


def test_unknown_notebook_prefix_is_a_clear_error(tmp_path, capsys):
    assert main(["reproduce", "--notebooks", str(tmp_path), "--only", "99", "--out", str(tmp_path / "r")]) == 2
    assert "no numbered notebooks" in capsys.readouterr().err
    assert find_notebooks(None)  # the project's own notebooks are found


def test_in_place_writes_a_clean_executed_notebook(run):
    """``--in-place``: the good notebook, executed, over its source: one parameters cell (the
    injected one gone), its figure at FIGURE_DPI, no stderr, the results path made relative."""
    import base64
    import struct

    code, stdout, out, nbs = run
    assert "Written back in place (1 of 2): 01_fake_good.ipynb" in stdout
    path = nbs / "01_fake_good.ipynb"
    assert check_notebook(path) == []
    nb = nbformat.read(path, as_version=4)
    assert [c.source for c in nb.cells] == [src for _, src in GOOD]
    assert [c.execution_count for c in nb.cells if c.cell_type == "code"] == [1, 2, 3]
    assert nb.metadata["wsslib"] == {"executed_by": "wsslib reproduce --in-place", "smoke": True,
                                     "parameters": {"seed": 3}}
    assert "input_path" not in nb.metadata.get("papermill", {})
    text = "".join(o.get("text", "") for o in nb.cells[3].outputs)
    assert text.strip() == "results/01_fake_good.json", text
    (png,) = [o["data"]["image/png"] for o in nb.cells[2].outputs if "image/png" in o.get("data", {})]
    width = struct.unpack(">I", base64.b64decode(png)[16:20])[0]
    # a 2-inch axes at FIGURE_DPI, its tick labels added by the tight bbox (matplotlib's 100 dpi: 220 px)
    assert 2 * FIGURE_DPI < width <= 2.3 * FIGURE_DPI, width


def test_clean_executed_on_a_built_notebook(tmp_path):
    """Without a kernel: injected cell, stderr and widget outputs go; paths become relative; counts 1..n."""
    from wsslib.apps.reproduce import PROJECT_ROOT, clean_executed

    results = tmp_path / "runs" / "x"
    v4 = nbformat.v4
    params = v4.new_code_cell("smoke = None", execution_count=1)
    params.metadata["tags"] = ["parameters"]
    injected = v4.new_code_cell("smoke = True", execution_count=2)
    injected.metadata["tags"] = ["injected-parameters"]
    work = v4.new_code_cell("run()", execution_count=3, outputs=[
        v4.new_output("stream", name="stderr", text="100%|#####| 3/3\n"),
        v4.new_output("stream", name="stdout", text=f"wrote {results}/00.json from {PROJECT_ROOT}/data\n"),
        v4.new_output("display_data", data={"application/vnd.jupyter.widget-view+json": {"model_id": "a"},
                                            "text/plain": "HBox()"}),
        v4.new_output("execute_result", data={"text/plain": "1"}, execution_count=3)])
    work.metadata["papermill"] = {"duration": 1.0}
    nb = clean_executed(v4.new_notebook(cells=[params, injected, work]), results_dir=results)
    assert [c.source for c in nb.cells] == ["smoke = None", "run()"]
    assert [c.execution_count for c in nb.cells] == [1, 2] and nb.cells[1].outputs[-1]["execution_count"] == 2
    assert [o["output_type"] for o in nb.cells[1].outputs] == ["stream", "execute_result"]
    assert nb.cells[1].outputs[0]["text"] == "wrote results/00.json from ./data\n"
    assert "papermill" not in nb.cells[1].metadata


def test_shrink_png_fits_the_budget():
    import io

    import numpy as np
    from PIL import Image

    from wsslib.apps.reproduce import shrink_png

    noise = np.random.default_rng(0).integers(0, 256, (400, 500, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, format="PNG")
    png = buf.getvalue()
    assert len(png) > 500 * 1024
    small, scale = shrink_png(png, budget=300 * 1024)
    assert len(small) <= 300 * 1024 and 0 < scale <= 1
    with Image.open(io.BytesIO(small)) as im:
        assert im.size == (round(500 * scale), round(400 * scale))
    tiny, scale = shrink_png(small, budget=len(small))
    assert tiny is small and scale == 1.0
