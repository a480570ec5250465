"""The install files agree, the downloader runs, the notebook runner reports failures."""

from __future__ import annotations

import subprocess
import tomllib

import nbformat
import yaml

from conftest import ROOT
from wsslib.apps.cli import main


def _pyproject_pins() -> set[str]:
    d = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return set(d["project"]["dependencies"]) | set(d["project"]["optional-dependencies"]["dev"])


def test_environment_yml_parses_and_matches_pyproject():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert "python=3.11" in env["dependencies"]
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert set(pip) == _pyproject_pins()
    assert all("==" in p for p in pip), "every pin must be exact"


def test_torch_pins():
    pins = _pyproject_pins()
    assert {"torch==2.14.1", "torchvision==0.29.1", "fastai==2.8.12", "grad-cam==1.5.7"} <= pins


def test_data_download_lists_its_sets():
    """The downloader runs (its behaviour is tested in tests/test_download.py)."""
    r = subprocess.run(["bash", str(ROOT / "data_download.sh"), "--list"], capture_output=True, text=True)
    assert r.returncode == 0 and "kvasir-seg" in r.stdout and "brats2020" in r.stdout


def _notebook(path, code_cells):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in code_cells]
    nb.cells[0].metadata["tags"] = ["parameters"]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


def test_reproduce_reports_failing_cell(tmp_path, capsys):
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    _notebook(nbs / "01_ok.ipynb", ["smoke = False\nresults_dir = '.'", "x = 1"])
    _notebook(nbs / "02_bad.ipynb", ["smoke = False\nresults_dir = '.'", "y = 2", "raise RuntimeError('boom here')"])
    rc = main(["reproduce", "--smoke", "--notebooks", str(nbs), "--out", str(tmp_path / "runs")])
    out = capsys.readouterr().out
    assert rc == 1
    # cell 3 of the notebook; In [4] = execution count, the injected parameters cell included
    assert "02_bad.ipynb failed at cell 3 (In [4]) `raise RuntimeError('boom here')`: RuntimeError: boom here" in out
    assert "01_ok.ipynb" in out and " ok" in out
    assert (tmp_path / "runs" / "latest" / "01_ok.ipynb").is_file()
