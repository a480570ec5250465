"""Code-shape figures for the redesign's before/after table (issue 14).

Usage: python tools/codestats.py [REPO_DIR]
Prints one JSON object: lines of code in notebooks, functions defined in notebook cells, the longest
code cell, the longest library function and its parameter count, the number of library modules.
"""

from __future__ import annotations

import ast
import json
import re
import sys
from pathlib import Path


def notebook_stats(root: Path) -> dict:
    loc = defs = 0
    longest = (0, "")
    for f in sorted((root / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        cells = json.loads(f.read_text())["cells"]
        for i, c in enumerate(cells):
            if c["cell_type"] != "code":
                continue
            lines = [l for l in "".join(c["source"]).splitlines() if l.strip()]
            loc += len(lines)
            defs += sum(1 for l in lines if re.match(r"\s*(def|class)\s", l))
            if len(lines) > longest[0]:
                longest = (len(lines), f"{f.stem[:2]} cell {i}")
    return {"notebook_loc": loc, "notebook_defs": defs, "longest_cell": longest[0], "longest_cell_at": longest[1]}


def library_stats(root: Path) -> dict:
    best = (0, "", 0)
    modules = 0
    for f in sorted((root / "wsslib").rglob("*.py")):
        modules += 1
        tree = ast.parse(f.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                a = node.args
                params = len(a.posonlyargs) + len(a.args) + len(a.kwonlyargs) + bool(a.vararg) + bool(a.kwarg)
                if n > best[0]:
                    best = (n, f"{f.relative_to(root)}:{node.name}", params)
    return {"longest_function_lines": best[0], "longest_function": best[1], "longest_function_params": best[2],
            "library_modules": modules}


if __name__ == "__main__":
    root = Path(sys.argv[1] if len(sys.argv) > 1 else ".").resolve()
    print(json.dumps({**notebook_stats(root), **library_stats(root)}))
