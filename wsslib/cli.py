"""The ``wsslib`` command line.

    wsslib reproduce [--smoke] [--only 00,03] [--out runs] [-p key=value ...]
    wsslib bench NAME [options]      (NAME: aax, gaze, ...; each prints one JSON line)
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

__all__ = ["main"]


def _parse_value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from .reproduce import find_notebooks, new_run_dir, run_notebooks

    only = [o.strip() for o in args.only.split(",")] if args.only else None
    notebooks = find_notebooks(args.notebooks, only)
    params = {}
    for kv in args.param or []:
        if "=" not in kv:
            print(f"wsslib reproduce: -p expects key=value, got {kv!r}", file=sys.stderr)
            return 2
        k, v = kv.split("=", 1)
        params[k] = _parse_value(v)
    if args.dataset:
        params["dataset"] = args.dataset
    out = new_run_dir(args.out)
    print(f"Running {len(notebooks)} notebook(s) into {out}", flush=True)
    runs = run_notebooks(out, notebooks=notebooks, smoke=args.smoke, parameters=params)
    failed = [r for r in runs if r.error]
    print("\nSummary:")
    for r in runs:
        print(f"  {r.notebook:32s} {r.seconds:7.1f} s  {'FAILED: ' + r.error if r.error else 'ok'}")
    print(f"Results: {out}")
    return 1 if failed else 0


def _cmd_bench(args: argparse.Namespace) -> int:
    import importlib

    try:
        mod = importlib.import_module(f"wsslib.bench.{args.name}")
    except ModuleNotFoundError:
        print(f"wsslib bench: no benchmark named {args.name!r}; available: {', '.join(_benchmarks())}", file=sys.stderr)
        return 2
    return mod.main(args.rest)


def _benchmarks() -> list[str]:
    import pkgutil

    from . import bench

    return sorted(m.name for m in pkgutil.iter_modules(bench.__path__))


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``wsslib`` console script."""
    parser = argparse.ArgumentParser(prog="wsslib", description="Weakly supervised segmentation toolkit.")
    sub = parser.add_subparsers(dest="command", required=True)

    rep = sub.add_parser("reproduce", help="run the numbered notebooks headless with papermill")
    rep.add_argument("--smoke", action="store_true", help="tiny settings, seconds per notebook")
    rep.add_argument("--only", help="comma-separated notebook numbers, e.g. 00,03")
    rep.add_argument("--dataset", help="data set name passed to every notebook")
    rep.add_argument("--out", default="runs", type=Path, help="base folder (default runs/)")
    rep.add_argument("--notebooks", type=Path, default=None, help="folder of notebooks (default: the project's)")
    rep.add_argument("-p", "--param", action="append", help="extra notebook parameter key=value")
    rep.set_defaults(func=_cmd_reproduce)

    ben = sub.add_parser("bench", help="run a benchmark (prints one JSON line)", add_help=False)
    ben.add_argument("name", help="benchmark name: " + ", ".join(_benchmarks()))
    ben.add_argument("rest", nargs=argparse.REMAINDER, help="the benchmark's own options (--help)")
    ben.set_defaults(func=_cmd_bench)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
