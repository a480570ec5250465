"""The command line's conventions: ``--version``, ``--help`` on every command (``bench NAME --help``
too), exit status 1 for runtime errors and 2 for usage errors, ``-p key value`` as papermill takes
it (``-p key=value`` kept), ``wsslib notebooks DIR``, ``python -m wsslib``."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import wsslib
from wsslib.apps import cli
from wsslib.apps.cli import main
from wsslib.core.errors import DatasetNotFoundError


def _exit_code(argv: list[str]) -> int:
    """main's return value, or the code argparse exits with (--help, --version, usage errors)."""
    try:
        return main(argv)
    except SystemExit as e:
        return e.code


def test_version(capsys):
    assert _exit_code(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"wsslib {wsslib.__version__}"


def test_python_dash_m_wsslib():
    r = subprocess.run([sys.executable, "-m", "wsslib", "--version"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == f"wsslib {wsslib.__version__}", r.stderr


@pytest.mark.parametrize("argv", [[], ["reproduce"], ["notebooks"], ["download"], ["weights"], ["weights", "fetch"],
                                  ["annotate"], ["bench"]], ids=lambda a: " ".join(a) or "wsslib")
def test_help_on_every_command(argv, capsys):
    assert _exit_code([*argv, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: wsslib" + "".join(" " + a for a in argv))


@pytest.mark.parametrize("name", cli._benchmarks())
def test_bench_name_help_is_the_benchmarks_own(name, capsys):
    assert _exit_code(["bench", name, "--help"]) == 0
    assert capsys.readouterr().out.startswith(f"usage: wsslib bench {name}")


@pytest.mark.parametrize("argv", [["frobnicate"], ["reproduce", "--frobnicate"], ["bench"], ["bench", "no-such-bench"],
                                  ["bench", "thresholds", "--frobnicate"], ["reproduce", "-p", "seed"],
                                  ["reproduce", "-p", "seed", "1", "2"], ["reproduce", "-p", "not a name=1"],
                                  ["weights", "fetch", "not_a_net"], ["download", "no-such-set"], ["download"],
                                  ["notebooks"]], ids=lambda a: " ".join(a))
def test_usage_errors_exit_2(argv, capsys):
    assert _exit_code(argv) == 2
    assert capsys.readouterr().err  # and say why


def test_runtime_errors_exit_1(monkeypatch, tmp_path, capsys):
    """A data error no command catches becomes a message and status 1, not a traceback (status 2
    is argparse's, for usage errors)."""

    def missing(args):
        raise DatasetNotFoundError("kvasir-seg", tmp_path / "kvasir-seg")

    monkeypatch.setattr(cli, "_cmd_notebooks", missing)
    assert main(["notebooks", str(tmp_path / "nb")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("wsslib notebooks: Data set 'kvasir-seg' not found")
    assert f"wsslib download --root {tmp_path} kvasir-seg" in err  # the command that works in any install


def _parsed_params(monkeypatch, argv: list[str]) -> dict:
    seen = {}

    def capture(args):
        seen.update(args.param or {})
        return 0

    monkeypatch.setattr(cli, "_cmd_reproduce", capture)
    assert main(["reproduce", *argv]) == 0
    return seen


def test_p_key_value_as_papermill_and_key_equals_value(monkeypatch):
    papermill_style = _parsed_params(monkeypatch, ["-p", "image_size", "96", "-p", "dataset", "kvasir-seg",
                                                   "-p", "epochs", "[4, 2]", "--smoke"])
    equals_style = _parsed_params(monkeypatch, ["-p", "image_size=96", "-p", "dataset=kvasir-seg", "-p", "epochs=[4, 2]"])
    assert papermill_style == equals_style == {"image_size": 96, "dataset": "kvasir-seg", "epochs": [4, 2]}
    assert _parsed_params(monkeypatch, ["--parameters", "lr", "-0.5", "-p", "x=a=b"]) == {"lr": -0.5, "x": "a=b"}


def test_notebooks_copies_the_shipped_notebooks(tmp_path, capsys):
    dest = tmp_path / "nb"
    assert main(["notebooks", str(dest)]) == 0
    names = sorted(p.name for p in dest.iterdir())
    assert names[0] == "00_quickstart.ipynb" and len(names) == 6
    assert json.loads((dest / names[0]).read_text())["cells"]  # a notebook, not an empty file
    assert main(["notebooks", str(dest)]) == 1  # never overwrites without --force
    assert "--force" in capsys.readouterr().err
    assert main(["notebooks", str(dest), "--force"]) == 0
