"""The ``wsslib`` command line.

    wsslib reproduce [--smoke] [--only 00,03] [--preset cpu|real|paper] [--dataset NAME] [--out runs]
                     [-p key=value ...] [--in-place]
                     (runs/<timestamp>/: executed notebooks, results JSON, report.md/html; --in-place
                     also writes the executed notebooks over notebooks/NN_*.ipynb, for committing)
    wsslib bench NAME [options]      (NAME: aax, gaze, ...; each prints one JSON line)
    wsslib train DATA --out DIR [--models ...] [--theta 0.1] [--fusion F] [--smoke]
                    (the AAX ensemble's checkpoints + model card; see wsslib.apps.train)
    wsslib annotate IMAGES_DIR --models CKPT... --out OUT_DIR [--theta 0.1] [--k 20] [--batch N]
                    [--device auto] [--size S] [--map-threshold T]   (AAX masks, resumable;
                    runs under torchrun too: torchrun --nproc_per_node 2 -m wsslib.apps.cli annotate ...)
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
    from wsslib.apps.reproduce import (EXPECTED_DIR, check_expected, defines_preset, find_notebooks, new_run_dir,
                                       preset_dir, print_expected, print_summary, run_notebooks, write_back,
                                       write_report)

    only = [o.strip() for o in args.only.split(",")] if args.only else None
    try:
        notebooks = find_notebooks(args.notebooks, only)
    except FileNotFoundError as e:
        print(f"wsslib reproduce: {e}", file=sys.stderr)
        return 2
    params = {}
    for kv in args.param or []:
        if "=" not in kv:
            print(f"wsslib reproduce: -p expects key=value, got {kv!r}", file=sys.stderr)
            return 2
        k, v = kv.split("=", 1)
        params[k] = _parse_value(v)
    if args.dataset:
        params["dataset"] = args.dataset
    if args.preset != "cpu":
        params["preset"] = args.preset
        skipped = [nb for nb in notebooks if not defines_preset(nb, args.preset)]
        for nb in skipped:
            print(f"wsslib reproduce: {nb.name} defines no {args.preset!r} preset yet: skipped", file=sys.stderr)
        notebooks = [nb for nb in notebooks if nb not in skipped]
        if not notebooks:
            print(f"wsslib reproduce: no notebook left to run with preset {args.preset!r}", file=sys.stderr)
            return 2
    out = new_run_dir(args.out)
    print(f"Running {len(notebooks)} notebook(s) into {out}", flush=True)
    runs = run_notebooks(out, notebooks=notebooks, smoke=args.smoke, parameters=params, timeout=args.timeout,
                         progress=not args.quiet)
    md, page = write_report(out, runs, smoke=args.smoke, parameters=params, also_to=args.out,
                            command="wsslib reproduce " + " ".join(args.argv))
    print_summary(runs)
    if not args.smoke and set(params) <= {"preset"} and args.notebooks is None:  # the committed runs as recorded
        print_expected(check_expected(runs, out, EXPECTED_DIR if args.preset == "cpu" else preset_dir(args.preset)))
    print(f"Results: {out}\nReport:  {md} and {page.name} (also {Path(args.out) / 'report.md'})")
    if args.in_place:
        written = write_back(runs, out, smoke=args.smoke, parameters=params,
                             dest_dir=None if args.preset == "cpu" else preset_dir(args.preset, args.notebooks))
        print(f"Written back in place ({len(written)} of {len(runs)}): " + ", ".join(p.name for p in written)
              + (" (smoke mode: do not commit these)" if args.smoke else ""))
    return 1 if any(r.error for r in runs) else 0


def _cmd_annotate(args: argparse.Namespace) -> int:
    from wsslib.apps.annotate import AnnotateSettings, annotate, format_summary
    from wsslib.core.distributed import is_main_process
    from wsslib.core.errors import DataError

    try:
        settings = AnnotateSettings(
            theta=args.theta, k=args.k, method=args.method, map_threshold=args.map_threshold,
            sizes=None if args.size is None else (args.size,), fusion=args.fusion, seed=args.seed,
            category=args.category, min_side=args.min_side, ood=not args.no_ood)
        res = annotate(args.images_dir, args.models, args.out, settings, batch_size=args.batch,
                       device=args.device, workers=args.workers, retry_errors=args.retry_errors,
                       progress=not args.quiet)
    except (DataError, OSError) as e:  # missing or empty folder, bad checkpoint...: a runtime error
        print(f"wsslib annotate: {e}", file=sys.stderr)
        return 1
    except ValueError as e:  # an option out of its range: a usage error
        print(f"wsslib annotate: {e}", file=sys.stderr)
        return 2
    if is_main_process():
        print(format_summary(res), flush=True)
    return 0


def _cmd_weights(args: argparse.Namespace) -> int:
    from wsslib.models.weights import fetch_weights

    try:
        results = fetch_weights(args.names, args.dir, progress=not args.quiet)
    except (ValueError, RuntimeError, OSError) as e:
        print(f"wsslib weights fetch: {e}", file=sys.stderr)
        return 1
    for r in results:
        print(f"{r.name}: {r.status}" + (f" {r.path}" if r.path else "") + (f" ({r.note})" if r.note else ""))
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    import importlib

    try:
        mod = importlib.import_module(f"wsslib.apps.bench.{args.name}")
    except ModuleNotFoundError:
        print(f"wsslib bench: no benchmark named {args.name!r}; available: {', '.join(_benchmarks())}", file=sys.stderr)
        return 2
    return mod.main(args.rest)


def _benchmarks() -> list[str]:
    import pkgutil

    from wsslib.apps import bench

    return sorted(m.name for m in pkgutil.iter_modules(bench.__path__))


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``wsslib`` console script."""
    parser = argparse.ArgumentParser(prog="wsslib", description="Weakly supervised segmentation toolkit.")
    sub = parser.add_subparsers(dest="command", required=True)

    rep = sub.add_parser("reproduce", help="run the numbered notebooks headless with papermill")
    rep.add_argument("--smoke", action="store_true", help="tiny settings, seconds per notebook")
    rep.add_argument("--only", help="comma-separated notebook numbers, e.g. 00,03")
    rep.add_argument("--dataset", help="data set name passed to every notebook")
    rep.add_argument("--preset", choices=("cpu", "real", "paper"), default="cpu",
                     help="cpu (default: synthetic data, minutes), real (the real shared data sets with pretrained "
                          "EfficientNet-Lites on a CPU budget), paper (the papers' own settings, for a GPU); "
                          "notebooks that do not define it are skipped")
    rep.add_argument("--out", default="runs", type=Path, help="base folder (default runs/)")
    rep.add_argument("--notebooks", type=Path, default=None, help="folder of notebooks (default: the project's)")
    rep.add_argument("-p", "--param", action="append", help="extra notebook parameter key=value")
    rep.add_argument("--timeout", type=float, default=None, help="seconds one cell may run (default: no limit)")
    rep.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    rep.add_argument("--in-place", action="store_true",
                     help="write each executed notebook back over its source, ready to commit (injected "
                          "parameters cell, stderr outputs and absolute paths removed); with --preset real or "
                          "paper: to notebooks/<preset>/, with its results JSON")
    rep.set_defaults(func=_cmd_reproduce)

    wts = sub.add_parser("weights", help="ImageNet weights for online users (a run never downloads)")
    wsub = wts.add_subparsers(dest="action", required=True)
    fetch = wsub.add_parser("fetch", help="download torchvision's ImageNet weights (hash-checked) into the torch hub "
                                          "cache, where weights='imagenet' finds them")
    fetch.add_argument("names", nargs="+", help="backbones: resnet18 resnet34 resnet50 densenet121 efficientnet_b0")
    fetch.add_argument("--dir", type=Path, default=None, help="target folder (default: torch.hub.get_dir()/checkpoints)")
    fetch.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    fetch.set_defaults(func=_cmd_weights)

    ann = sub.add_parser("annotate", help="AAX masks, decisions and a review list for a folder of images (resumable)")
    ann.add_argument("images_dir", type=Path, help="folder of jpg/png/tiff/bmp images (searched recursively)")
    ann.add_argument("--models", nargs="+", required=True, type=Path, metavar="CKPT",
                     help="checkpoints (the paper: 3), or the folder `wsslib train --out DIR` wrote")
    ann.add_argument("--out", required=True, type=Path, help="output folder; an existing one is resumed")
    ann.add_argument("--theta", type=float, default=None,
                     help="uncertainty threshold (default: the checkpoints', else 0.1)")
    ann.add_argument("--k", type=int, default=20, help="MC dropout passes per model (default 20)")
    ann.add_argument("--batch", type=int, default=16, help="images per forward pass (default 16)")
    ann.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ... (default auto)")
    ann.add_argument("--size", type=int, default=None, help="model input side S (default: from the checkpoints)")
    ann.add_argument("--map-threshold", type=float, default=None, help="mask threshold (default: from the checkpoints)")
    ann.add_argument("--fusion", default=None, choices=["intersection", "union", "majority", "mean"],
                     help="how the agreeing models' maps combine (default: the checkpoints', else intersection)")
    ann.add_argument("--min-side", type=int, default=16, help="smaller images go to errors.csv (default 16 px)")
    ann.add_argument("--no-ood", action="store_true", help="ignore the checkpoints' out-of-distribution gates")
    ann.add_argument("--method", default="xgradcam", choices=["xgradcam", "gradcam", "hirescam"], help="CAM method")
    ann.add_argument("--seed", type=int, default=0, help="seed of the dropout masks")
    ann.add_argument("--category", default="lesion", help="COCO category name (default lesion)")
    ann.add_argument("--workers", type=int, default=2, help="threads decoding the next batch (default 2)")
    ann.add_argument("--retry-errors", action="store_true", help="try again the files an earlier run could not read")
    ann.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    ann.set_defaults(func=_cmd_annotate)

    from wsslib.apps.train import add_parser as add_train_parser  # wsslib train (its own module)

    add_train_parser(sub)

    ben = sub.add_parser("bench", help="run a benchmark (prints one JSON line)", add_help=False)
    ben.add_argument("name", help="benchmark name: " + ", ".join(_benchmarks()))
    ben.add_argument("rest", nargs=argparse.REMAINDER, help="the benchmark's own options (--help)")
    ben.set_defaults(func=_cmd_bench)

    args = parser.parse_args(argv)
    args.argv = list(sys.argv[2:] if argv is None else argv[1:])  # for the report
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
