"""Execute committed notebooks in place (full mode, embedded default) so readers see outputs.

    python tools/execute_in_place.py notebooks/02_cam_methods.ipynb [-p key=value ...]

Results go to a temporary folder (the committed notebooks keep the default ``results_dir``), and
papermill's ``injected-parameters`` cell is removed afterwards so that the committed notebook
holds exactly one parameters cell, with its defaults. Seeds in the notebooks make the outputs
deterministic on a given machine and thread count (``OMP_NUM_THREADS`` is passed on unchanged).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import nbformat
import papermill as pm


def _value(text: str):
    try:
        import ast

        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def execute_in_place(path: Path, params: dict) -> None:
    """Run ``path`` with papermill into itself, then drop the injected parameters cell."""
    with tempfile.TemporaryDirectory(prefix="wsslib-exec-") as tmp:
        pm.execute_notebook(str(path), str(path), parameters={"results_dir": tmp, **params},
                            cwd=str(path.parent), progress_bar=False)
    nb = nbformat.read(path, as_version=4)
    nb.cells = [c for c in nb.cells if "injected-parameters" not in c.get("metadata", {}).get("tags", [])]
    meta = nb.metadata.get("papermill", {})  # the temporary results folder is no parameter of the notebook
    meta["parameters"] = {}
    for key in ("input_path", "output_path"):
        meta.pop(key, None)
    nbformat.write(nb, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("notebooks", nargs="+", type=Path)
    ap.add_argument("-p", action="append", default=[], metavar="KEY=VALUE", help="notebook parameter")
    args = ap.parse_args(argv)
    params = {k: _value(v) for k, v in (p.split("=", 1) for p in args.p)}
    os.environ.pop("WSSLIB_SMOKE", None)
    for nb in args.notebooks:
        print(f"executing {nb} ...", flush=True)
        execute_in_place(nb, params)
    return 0


if __name__ == "__main__":
    sys.exit(main())
