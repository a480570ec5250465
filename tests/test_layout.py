"""The package layout (docs/ARCHITECTURE.md): sub-packages by pipeline stage whose imports only
point down, and the wsslib 0.1 module names that still import."""

from __future__ import annotations

import ast
import importlib
import sys
from pathlib import Path

import pytest

import wsslib

PKG = Path(wsslib.__file__).resolve().parent
#: the stages, lowest first: a module may import its own stage and the ones before it
STAGES = ["core", "data", "evaluate", "models", "explain", "methods", "papers", "reporting", "apps"]


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("wsslib."):
            out.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            out |= {a.name.split(".")[1] for a in node.names if a.name.startswith("wsslib.")}
    return out


def test_imports_only_point_down():
    wrong = []
    for stage in STAGES:
        for path in sorted((PKG / stage).rglob("*.py")):
            above = {s for s in _imports(path) if s in STAGES and STAGES.index(s) > STAGES.index(stage)}
            if above:
                wrong.append(f"{path.relative_to(PKG)} imports {sorted(above)} (above {stage})")
    assert not wrong, "\n".join(wrong)


def test_every_module_belongs_to_a_stage():
    loose = [p.name for p in PKG.glob("*.py") if p.name not in ("__init__.py", "__main__.py")]  # python -m wsslib
    assert not loose, f"modules outside the stage packages: {loose}"


@pytest.mark.parametrize(("old", "new"), [("wsslib.cams", "wsslib.explain.cams"), ("wsslib.metrics", "wsslib.evaluate.metrics"),
                                          ("wsslib.train", "wsslib.models.training")])
def test_old_names_import_with_a_warning(old, new):
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=new):
        mod = importlib.import_module(old)
    assert mod is importlib.import_module(new)


@pytest.mark.parametrize(("old", "where"), [("wsslib.fusion", "wsslib.evaluate.thresholds"), ("wsslib.unet", "wsslib.methods.gaze")])
def test_split_modules_say_where_their_parts_went(old, where):
    sys.modules.pop(old, None)
    with pytest.raises(ModuleNotFoundError, match=where):
        importlib.import_module(old)
