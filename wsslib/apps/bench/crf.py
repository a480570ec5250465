"""``wsslib bench crf``: the pseudo-masks' dense CRF in one process versus on every core.

On the 1000 Kvasir-SEG images with their real fixations (``get_dataset("kvasir-seg",
split="all")``; ``n`` synthetic 256 px images with simulated gaze when the folder is absent), the
same call twice: :func:`wsslib.methods.gaze.pseudo_masks` (heatmaps, dense CRF, pseudo-masks at
``size`` px, the CRF maps scored at 0.5 at native resolution, as the notebooks call it through
:func:`~wsslib.methods.gaze.gaze_supervision`), first with ``workers=1`` (one process), then with
``workers`` processes (default: every core this process may use). The CRF runs on copies at most
``max_side`` px long (notebook 01's cpu preset: 256; ``--max-side 0``: native resolution, as the
paper). The images are decoded once beforehand (not timed).

Prints one JSON line: ``images``, ``workers``, ``one_process_s``, ``all_cores_s``, ``speedup`` =
one_process_s / all_cores_s, ``identical`` (the CRF maps, pseudo-masks and native-resolution
scores of both runs are equal, bit for bit), ``crf_dice`` (CRF map > 0.5, native resolution),
``goal_speedup`` (1.8 on 2 cores: 0.9 x the workers) and ``meets_goal``; plus ``dataset``,
``max_side``, ``size``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from wsslib.core.errors import DatasetNotFoundError
from wsslib.data import Sample, generate_synthetic, get_dataset
from wsslib.methods.gaze import default_workers, pseudo_masks

__all__ = ["GOAL_EFFICIENCY", "main", "run"]

GOAL_EFFICIENCY = 0.9
"""The goal: speedup >= 0.9 x the workers (1.8x on 2 cores)."""


def _load(n: int | None, data_root: str | Path | None, seed: int) -> tuple[str, list[Sample]]:
    """(data set name, decoded samples) of Kvasir-SEG, else of ``n`` synthetic 256 px images."""
    try:
        ds = get_dataset("kvasir-seg", root=data_root, split="all")
        count = len(ds) if n is None else min(n, len(ds))
        samples = [ds[i] for i in range(count)]
        missing = [s.id for s in samples if s.gaze is None]
        if missing:
            raise DatasetNotFoundError("kvasir-seg", ds.root,
                                       hint=f"no gaze file (kvasir_fixation.csv) for {missing[0]}")
        return "kvasir-seg", samples
    except DatasetNotFoundError:
        if data_root is not None:
            raise
    syn = generate_synthetic(1000 if n is None else n, size=256, seed=seed)
    samples = [Sample(image=img, label=int(lab), mask=mask.astype(bool), boxes=boxes, gaze=gaze, id=f"synthetic-{i}")
               for i, (img, lab, mask, boxes, gaze) in enumerate(zip(syn["images"], syn["labels"], syn["masks"],
                                                                      syn["boxes"], syn["gaze"]))]
    return "synthetic", samples


def run(
    n: int | None = None,
    data_root: str | Path | None = None,
    workers: int | None = None,
    max_side: int | None = 256,
    size: int = 128,
    seed: int = 0,
    chunk: int = 32,
) -> dict:
    """Time :func:`~wsslib.methods.gaze.pseudo_masks` with one process and with ``workers``.

    Args:
        n: number of images (``None``: all 1000 Kvasir-SEG images, or 1000 synthetic ones).
        data_root: the Kvasir-SEG folder (``None``: the defaults of :func:`wsslib.data.find_root`;
            synthetic data when none is found). A given root that is missing raises.
        workers: CRF processes of the parallel run (``None``: every core, the library default).
        max_side: the CRF's ``max_side`` (``None``: native resolution).
        size: side of the pseudo-masks.
        seed: seeds the synthetic data.
        chunk: images per chunk of :func:`~wsslib.methods.gaze.pseudo_masks`.

    Returns:
        The JSON record described in the module docstring.
    """
    if n is not None and n < 1:
        raise ValueError(f"n must be a positive number of images, got {n}")
    n_workers = default_workers() if workers is None else int(workers)
    name, samples = _load(n, data_root, seed)
    common = {"size": size, "crf": True, "crf_params": {"max_side": max_side}, "score_thresholds": (0.5,),
              "progress": False, "chunk": chunk}
    t0 = time.perf_counter()
    one = pseudo_masks(samples, workers=1, **common)
    one_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    many = pseudo_masks(samples, workers=n_workers, **common)
    many_s = time.perf_counter() - t0
    identical = (torch.equal(one.refined, many.refined) and torch.equal(one.masks, many.masks)
                 and torch.equal(one.heatmaps, many.heatmaps) and one.scores == many.scores)
    speedup = one_s / many_s
    goal = round(GOAL_EFFICIENCY * n_workers, 2)
    return {
        "images": len(samples),
        "workers": n_workers,
        "one_process_s": round(one_s, 2),
        "all_cores_s": round(many_s, 2),
        "speedup": round(speedup, 2),
        "identical": bool(identical),
        "crf_dice": round(float(one.scores["refined"][0.5]["dice"]), 4),
        "goal_speedup": goal,
        "meets_goal": bool(identical and speedup >= goal),
        "dataset": name,
        "max_side": max_side,
        "size": size,
    }


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: ``wsslib bench crf [--n N] [--workers W] [--max-side PX] ...``."""
    p = argparse.ArgumentParser(prog="wsslib bench crf", description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=None,
                   help="images (default: all 1000 Kvasir-SEG, or 1000 synthetic); e.g. 50 for a quick check")
    p.add_argument("--data-root", default=None, help="Kvasir-SEG folder (default: search; synthetic if absent)")
    p.add_argument("--workers", type=int, default=None, help="CRF processes of the parallel run (default: every core)")
    p.add_argument("--max-side", type=int, default=256, help="CRF on copies at most this long (0: native; default 256)")
    p.add_argument("--size", type=int, default=128, help="side of the pseudo-masks (default 128)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--chunk", type=int, default=32, help="images per chunk of pseudo_masks (default 32)")
    a = p.parse_args(argv)
    rec = run(n=a.n, data_root=a.data_root, workers=a.workers, max_side=a.max_side or None, size=a.size, seed=a.seed,
              chunk=a.chunk)
    print(json.dumps(rec))
    return 0


if __name__ == "__main__":
    sys.exit(main())
