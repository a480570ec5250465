"""The install files agree and the downloader runs (the notebook runner: tests/test_reproduce.py)."""

from __future__ import annotations

import subprocess
import tomllib

import yaml

from conftest import ROOT


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


def test_default_pytest_run_executes_each_notebook_once():
    """No nbval over notebooks/ in the default run: the notebooks run once, in tests/conftest.py."""
    opts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert opts["testpaths"] == ["tests"]
    assert "nbval" not in opts.get("addopts", "")
    assert not (ROOT / "tools" / "execute_in_place.py").exists(), "wsslib reproduce --in-place is the one runner"
