"""The ``wsslib`` command line (``wsslib --help``, ``wsslib COMMAND --help``, ``wsslib --version``).

    wsslib reproduce [--smoke] [--only 00,03] [--preset cpu|real|paper] [--dataset NAME] [--out runs]
                     [-p key value ...] [--in-place]
                     (runs/<timestamp>/: executed notebooks, results JSON, report.md/html; --in-place
                     also writes the executed notebooks over notebooks/NN_*.ipynb, for committing)
    wsslib notebooks DIR [--force]   (copies the numbered notebooks that ship with wsslib into DIR)
    wsslib download NAME... | all [--root DIR] [--list] [--dry-run] [--keep-archives]
                     (fetch, verify, unpack the real data sets; ./data_download.sh is a wrapper)
    wsslib weights fetch NAME...     (torchvision ImageNet weights into the torch hub cache)
    wsslib bench NAME [options]      (NAME: aax, gaze, ...; each prints one JSON line; NAME --help)
    wsslib train DATA --out DIR [--models ...] [--theta 0.1] [--fusion F] [--smoke]
                    (the AAX ensemble's checkpoints + model card; see wsslib.apps.train)
    wsslib annotate IMAGES_DIR --models CKPT... --out OUT_DIR [--theta 0.1] [--k 20] [--batch N]
                    [--device auto] [--size S] [--map-threshold T]   (AAX masks, resumable;
                    runs under torchrun too: torchrun --nproc_per_node 2 -m wsslib.apps.cli annotate ...)

Exit status, everywhere: 0 success, 1 a runtime error (missing or bad data, a failed download or
notebook), 2 a usage error (argparse's code: an unknown option, name or value), 130 interrupted;
``wsslib download`` also 3 (some set needs manual steps). Notebook parameters are given as
papermill does (``-p key value``) or as ``-p key=value``.
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


class _ParamAction(argparse.Action):
    """``-p key value`` (papermill's form) or ``-p key=value``; repeatable. Values are Python
    literals when they parse as one (``-p epochs [4,2,2]``), else strings."""

    def __call__(self, parser, namespace, values, option_string=None):
        if len(values) == 2 and "=" not in values[0]:
            key, value = values
        elif len(values) == 1 and "=" in values[0]:
            key, value = values[0].split("=", 1)
        else:
            parser.error(f"{option_string} takes KEY VALUE (as papermill) or KEY=VALUE, got {' '.join(values)!r}")
        if not key.isidentifier():
            parser.error(f"{option_string}: {key!r} is not a parameter name")
        params = dict(getattr(namespace, self.dest, None) or {})
        params[key] = _parse_value(value)
        setattr(namespace, self.dest, params)


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from wsslib.apps.reproduce import (EXPECTED_DIR, check_expected, defines_preset, find_notebooks, new_run_dir,
                                       preset_dir, print_expected, print_summary, run_notebooks, write_back,
                                       write_report)

    from wsslib.apps.reproduce import PACKAGED_NOTEBOOKS, default_notebook_dir

    only = [o.strip() for o in args.only.split(",")] if args.only else None
    try:
        notebooks = find_notebooks(args.notebooks, only)
    except FileNotFoundError as e:
        print(f"wsslib reproduce: {e}", file=sys.stderr)
        return 2
    if args.in_place and args.notebooks is None and default_notebook_dir() == PACKAGED_NOTEBOOKS:
        print("wsslib reproduce: --in-place writes over the repository's notebooks; this wsslib is a wheel install "
              "without them (copy the notebooks with `wsslib notebooks DIR`, then pass --notebooks DIR)", file=sys.stderr)
        return 2
    params = dict(args.param or {})
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
    except ValueError as e:  # an unknown backbone name: a usage error
        print(f"wsslib weights fetch: {e}", file=sys.stderr)
        return 2
    except (RuntimeError, OSError) as e:
        print(f"wsslib weights fetch: {e}", file=sys.stderr)
        return 1
    for r in results:
        print(f"{r.name}: {r.status}" + (f" {r.path}" if r.path else "") + (f" ({r.note})" if r.note else ""))
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    import importlib

    if args.name not in _benchmarks():
        print(f"wsslib bench: no benchmark named {args.name!r}; available: {', '.join(_benchmarks())}", file=sys.stderr)
        return 2
    mod = importlib.import_module(f"wsslib.apps.bench.{args.name}")
    try:
        return mod.main(args.rest)
    except SystemExit as e:  # the benchmark's own argparse: --help (0) or a usage error (2)
        return e.code if isinstance(e.code, int) else 1


def _cmd_notebooks(args: argparse.Namespace) -> int:
    import shutil

    from wsslib.apps.reproduce import default_notebook_dir, find_notebooks

    notebooks = find_notebooks(default_notebook_dir())
    dest = Path(args.dir)
    clash = [dest / nb.name for nb in notebooks if (dest / nb.name).exists()]
    if clash and not args.force:
        print(f"wsslib notebooks: {', '.join(map(str, clash))} already exist(s); nothing copied "
              "(--force overwrites them)", file=sys.stderr)
        return 1
    dest.mkdir(parents=True, exist_ok=True)
    for nb in notebooks:
        shutil.copyfile(nb, dest / nb.name)
    print(f"Copied {len(notebooks)} notebooks to {dest}: {', '.join(nb.name for nb in notebooks)}")
    print(f"Run them: jupyter lab {dest}   or headless: wsslib reproduce --notebooks {dest}")
    return 0


def _cmd_download(args: argparse.Namespace) -> int:
    from wsslib.data.download import download_sets, format_list
    from wsslib.data.sources import SOURCES_PATH, load_sources

    if args.list:
        import os

        table = Path(os.environ.get("WSSLIB_SOURCES") or SOURCES_PATH)
        print(format_list(load_sources(table), table))
        return 0
    if not args.names:
        args.parser.print_usage(sys.stderr)
        print(f"{args.prog}: error: name at least one data set, or all (--list shows them)", file=sys.stderr)
        return 2
    return download_sets(args.names, args.root, dry_run=args.dry_run, keep_archives=args.keep_archives,
                         prog=args.prog)


def _benchmarks() -> list[str]:
    import pkgutil

    from wsslib.apps import bench

    return sorted(m.name for m in pkgutil.iter_modules(bench.__path__))


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``wsslib`` console script."""
    from wsslib import __version__

    parser = argparse.ArgumentParser(prog="wsslib", description="Weakly supervised segmentation toolkit.",
                                     epilog="wsslib COMMAND --help shows each command's options. Exit status: 0 ok, "
                                            "1 runtime error, 2 usage error.")
    parser.add_argument("--version", action="version", version=f"wsslib {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

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
    rep.add_argument("-p", "--param", "--parameters", nargs="+", action=_ParamAction, metavar=("KEY", "VALUE"),
                     help="a notebook parameter, as papermill takes it (-p image_size 96) or as key=value; "
                          "repeatable; values are Python literals when they parse as one")
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

    ben = sub.add_parser("bench", help="run a benchmark (prints one JSON line)",
                         description="Run a benchmark; each prints one JSON line. wsslib bench NAME --help shows "
                                     "the benchmark's own options.")
    ben.add_argument("name", metavar="NAME", help="benchmark: " + ", ".join(_benchmarks()))
    ben.add_argument("rest", nargs=argparse.REMAINDER, help="the benchmark's own options (NAME --help lists them)")
    ben.set_defaults(func=_cmd_bench)

    nbs = sub.add_parser("notebooks", help="copy the numbered notebooks that ship with wsslib into a folder",
                         description="Copy the numbered notebooks (00_quickstart ... 05_iou_dice_summary) that ship "
                                     "with this install into DIR, to open in Jupyter or run with "
                                     "wsslib reproduce --notebooks DIR.")
    nbs.add_argument("dir", metavar="DIR", type=Path, help="target folder (created if missing)")
    nbs.add_argument("--force", action="store_true", help="overwrite notebooks of the same name in DIR")
    nbs.set_defaults(func=_cmd_notebooks)

    dl = sub.add_parser("download", help="fetch, verify and unpack the real data sets",
                        description="Fetch, verify (pinned md5/sha256, else trust on first use) and unpack data sets "
                                    "into ROOT/<name>; downloads resume, unpacking is atomic, installed sets are left "
                                    "alone. Exit status 3: some set needs manual steps (printed). Environment: "
                                    "WSSLIB_DATA (default root), WSSLIB_MIRROR (base URL replacing the official "
                                    "hosts: <mirror>/<name>/<file>).")
    dl.add_argument("names", nargs="*", metavar="NAME", help="data set names (--list shows them), or all")
    dl.add_argument("--root", type=Path, default=None,
                    help="data folder (default: $WSSLIB_DATA, else the repository's data/ in a clone, else "
                         "~/.local/share/wsslib/data), where the loaders look")
    dl.add_argument("--list", action="store_true", help="list every data set with size, access, checksum, source")
    dl.add_argument("--dry-run", action="store_true", help="say what would be done; download and write nothing")
    dl.add_argument("--keep-archives", action="store_true", help="keep downloaded archives after unpacking")
    dl.add_argument("--prog", default="wsslib download", help=argparse.SUPPRESS)  # ./data_download.sh's name
    dl.set_defaults(func=_cmd_download, parser=dl)

    args = parser.parse_args(argv)
    args.argv = list(sys.argv[2:] if argv is None else argv[1:])  # for the report
    from wsslib.core.errors import WSSLibError

    try:
        return args.func(args)
    except (WSSLibError, OSError) as e:  # a runtime error no command handled: a message, not a traceback
        print(f"wsslib {args.command}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"wsslib {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
