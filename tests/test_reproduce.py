"""``wsslib reproduce`` on two tiny notebooks built here: one writes a results JSON and a figure,
one raises in its second cell. Checks the exit code, the failure summary (cell number, first line,
error), peak memory, and the report (tables beside the paper's rows, figure links, provenance)."""

from __future__ import annotations

import json
import re

import nbformat
import pytest

from wsslib.apps.cli import main
from wsslib.apps.reproduce import CellFailure, NotebookRun, PeakMemory, _table_views, find_notebooks, write_report

PARAMS = 'smoke = False\nresults_dir = "results"\nseed = 0\n'

GOOD = [
    ("params", PARAMS),
    ("md", "# 01 fake\n\n## 1 · A figure"),
    ("code", "import matplotlib.pyplot as plt\nfig, ax = plt.subplots(figsize=(2, 2))\nax.plot([0, 1], [0, 1])"),
    ("code", "from wsslib import report\n"
             "rows = [{'method': 'empty', 'dice': 0.0, 'iou': 0.0, 'source': 'this run'},\n"
             "        {'method': 'gradcam', 'dice': 0.5123, 'iou': 0.34, 'precision': 0.6, 'source': 'this run'},\n"
             "        {'method': 'gradcam [paper, Kvasir-SEG]', 'dice': 0.074, 'iou': 0.04, 'source': 'paper',\n"
             "         'dataset': 'Kvasir-SEG'}]\n"
             "report.write_results(results_dir, '01_fake_good', params={'smoke': smoke, 'seed': seed},\n"
             "    tables={'segmentation': rows, 'classification': [{'method': 'smallcnn', 'accuracy': 0.9}]},\n"
             "    seed=seed, device='cpu', seconds=0.1)"),
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
        code = main(["reproduce", "--notebooks", str(nbs), "--out", str(out), "--smoke", "-q", "-p", "seed=3"])
    finally:
        capture.undo()
    return code, buf.getvalue(), out


def test_exit_code_and_failure_summary(run):
    code, stdout, out = run
    assert code == 1, "a failing notebook must give a non-zero exit"
    assert "02_fake_bad.ipynb failed at cell 2 (In [" in stdout, stdout
    assert "x = 1" in stdout and "ValueError: boom in cell two" in stdout
    assert "1 of 2 notebook(s) FAILED" in stdout
    assert "unnumbered" not in stdout
    line = next(ln for ln in stdout.splitlines() if ln.strip().startswith("01_fake_good.ipynb"))
    assert line.rstrip().endswith("ok"), line


def test_results_and_provenance(run):
    _, _, out = run
    latest = out / "latest"
    assert latest.is_symlink()
    doc = json.loads((latest / "01_fake_good.json").read_text())
    assert doc["params"] == {"smoke": True, "seed": 3}  # --smoke and -p reached the notebook
    prov = doc["provenance"]
    assert {"git", "versions", "seed", "device", "seconds", "date", "host", "platform", "cpus"} <= prov.keys()
    assert prov["versions"]["torch"] and prov["seed"] == 3
    assert not (latest / "02_fake_bad.json").exists()


def test_report_markdown(run):
    _, _, out = run
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
    _, _, out = run
    page = (out / "latest" / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "data:image/png;base64," in page  # self-contained
    assert "<tr class=\"paper\">" in page and "boom in cell two" in page
    top = (out / "report.md").read_text()  # the newest run's report, also at --out
    stamp = (out / "latest").resolve().name
    assert f"]({stamp}/figures/01_fake_good_cell03_1.png)" in top
    assert (out / "report.html").is_file()


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


def test_unknown_notebook_prefix_is_a_clear_error(tmp_path, capsys):
    assert main(["reproduce", "--notebooks", str(tmp_path), "--only", "99", "--out", str(tmp_path / "r")]) == 2
    assert "no numbered notebooks" in capsys.readouterr().err
    assert find_notebooks(None)  # the project's own notebooks are found
