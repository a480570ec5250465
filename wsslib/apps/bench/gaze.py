"""``wsslib bench gaze``: gaze heatmaps the paper's way versus the separable way.

On the 1000 Kvasir-SEG images with their real fixations (``get_dataset("kvasir-seg",
split="all")``; ``n`` synthetic 256 px images with simulated gaze when the folder is absent),
in one process:

- reference: the published function's behaviour, :func:`wsslib.methods.gaze.reference_heatmap`
  with its defaults (each fixation's duration added at canvas pixel ``round(x * 768) - 1`` of a
  768 x 768 canvas, ``scipy.ndimage.gaussian_filter`` with sigma 70 in scipy's default
  ``mode="reflect"``, min-max, bicubic resize, float16). It takes about 0.3-0.7 s an image, so it
  is timed on a seeded random subset of ``reference_subset`` images and scaled to all of them
  (``reference_images_timed`` says how many were timed; pass ``--reference-subset 1000`` to
  compare on every image);
- separable: :func:`wsslib.methods.gaze.gaze_heatmaps` (default ``canvas="paper"``) on all images
  (batched ``(H, N) @ (N, W)`` products, images of one size together);
- the infinite-canvas variant (``canvas="infinite"``), timed the same way, and compared with the
  same reference: how far the earlier default is from the paper's map.

Both ways run on ONE CPU thread by default (``threads=1``; scipy's filter is single-threaded, and
on a shared machine one thread also gives steadier times); the separable way may run on a GPU
with ``device="cuda"``.

Prints one JSON line: ``images``, ``reference_s`` (scaled to all images),
``reference_images_timed``, ``separable_s``, ``speedup`` = reference_s / separable_s,
``max_abs_diff`` (largest over the compared images of the per-image max abs difference between
the separable map and the reference) and ``mean_max_abs_diff`` (its mean over those images),
``infinite_s``, ``infinite_max_abs_diff``, ``infinite_mean_max_abs_diff`` (the same for
``canvas="infinite"``), the goals (``goal_max_abs_diff`` 1e-2, ``goal_speedup`` 100) and whether
they are met (``meets_goals``); plus ``dataset``, ``device``, ``threads``. Decoding the images (to
learn their sizes) is not timed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from wsslib.core.errors import DatasetNotFoundError
from wsslib.core.utils import resolve_device
from wsslib.data import generate_synthetic, get_dataset
from wsslib.methods.gaze import PAPER_SIGMA_FRAC, gaze_heatmaps, reference_heatmap

__all__ = ["GOAL_MAX_ABS_DIFF", "GOAL_SPEEDUP", "main", "run"]

GOAL_MAX_ABS_DIFF = 1e-2
GOAL_SPEEDUP = 100.0


def _load(
    n: int | None, data_root: str | Path | None, seed: int
) -> tuple[str, list[np.ndarray], list[tuple[int, int]]]:
    """(data set name, fixations, image sizes) of Kvasir-SEG, else of ``n`` synthetic images."""
    try:
        ds = get_dataset("kvasir-seg", root=data_root, split="all")
        count = len(ds) if n is None else min(n, len(ds))
        fix, sizes = [], []
        for i in range(count):
            s = ds[i]
            if s.gaze is None:
                raise DatasetNotFoundError("kvasir-seg", ds.root, hint=f"no gaze file (kvasir_fixation.csv) for {s.id}")
            fix.append(s.gaze)
            sizes.append(tuple(s.image.shape[:2]))
        return "kvasir-seg", fix, sizes
    except DatasetNotFoundError:
        if data_root is not None:
            raise
    syn = generate_synthetic(1000 if n is None else n, size=256, seed=seed)
    return "synthetic", list(syn["gaze"]), [syn["images"].shape[1:3]] * len(syn["gaze"])


def run(
    n: int | None = None,
    data_root: str | Path | None = None,
    reference_subset: int = 50,
    seed: int = 0,
    device: str | None = None,
    threads: int | None = 1,
) -> dict:
    """Time both ways; return the JSON record described in the module docstring.

    Args:
        n: number of images (``None``: all 1000 Kvasir-SEG images, or 1000 synthetic ones).
        data_root: the Kvasir-SEG folder (``None``: the defaults of :func:`wsslib.data.find_root`;
            synthetic data when none is found). A given root that is missing raises.
        reference_subset: images timed the reference way (scaled to all) and compared.
        seed: picks the reference subset (and seeds the synthetic data).
        device: where the separable way runs (``None``: CPU, like the reference).
        threads: torch CPU threads while timing (restored afterwards); ``None`` leaves torch's.
    """
    if n is not None and n < 1:
        raise ValueError(f"n must be a positive number of images, got {n}")
    name, fix, sizes = _load(n, data_root, seed)
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(int(threads))
    try:
        rec = _time_both(name, fix, sizes, reference_subset, seed, device)
    finally:
        torch.set_num_threads(old_threads)
    rec["threads"] = torch.get_num_threads() if threads is None else int(threads)
    return rec


def _timed_maps(fix: list, sizes: list, dev: torch.device, canvas: str, sync) -> tuple[list[torch.Tensor], float]:
    gaze_heatmaps(fix[:8], sizes[:8], device=dev, canvas=canvas)  # warm-up (allocator, kernels)
    sync()
    t0 = time.perf_counter()
    maps = gaze_heatmaps(fix, sizes, sigma_frac=PAPER_SIGMA_FRAC, device=dev, canvas=canvas)
    sync()
    return maps, time.perf_counter() - t0


def _time_both(name: str, fix: list, sizes: list, reference_subset: int, seed: int, device: str | None) -> dict:
    count = len(fix)
    dev = torch.device("cpu") if device is None else resolve_device(device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    maps, separable_s = _timed_maps(fix, sizes, dev, "paper", sync)
    inf_maps, infinite_s = _timed_maps(fix, sizes, dev, "infinite", sync)

    subset = np.sort(np.random.default_rng(seed).permutation(count)[: max(1, min(reference_subset, count))])
    diffs, inf_diffs = [], []
    reference_timed = 0.0
    for i in subset.tolist():
        t0 = time.perf_counter()
        ref = reference_heatmap(fix[i], sizes[i], canvas=768, sigma=70.0)
        reference_timed += time.perf_counter() - t0
        diffs.append(float((ref - maps[i].cpu()).abs().max()))
        inf_diffs.append(float((ref - inf_maps[i].cpu()).abs().max()))
    reference_s = reference_timed * count / len(subset)
    speedup = reference_s / separable_s
    return {
        "images": count,
        "reference_s": round(reference_s, 3),
        "reference_images_timed": int(len(subset)),
        "separable_s": round(separable_s, 4),
        "speedup": round(speedup, 1),
        "max_abs_diff": float(f"{max(diffs):.3g}"),
        "mean_max_abs_diff": float(f"{np.mean(diffs):.3g}"),
        "infinite_s": round(infinite_s, 4),
        "infinite_max_abs_diff": float(f"{max(inf_diffs):.3g}"),
        "infinite_mean_max_abs_diff": float(f"{np.mean(inf_diffs):.3g}"),
        "goal_max_abs_diff": GOAL_MAX_ABS_DIFF,
        "goal_speedup": GOAL_SPEEDUP,
        "meets_goals": bool(max(diffs) < GOAL_MAX_ABS_DIFF and speedup >= GOAL_SPEEDUP),
        "dataset": name,
        "device": str(dev),
    }


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: ``python -m wsslib.apps.bench.gaze [--n N] [--data-root DIR] ...``."""
    p = argparse.ArgumentParser(prog="wsslib bench gaze", description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=None,
                   help="images (default: all 1000 Kvasir-SEG, or 1000 synthetic); e.g. 50 for a quick check")
    p.add_argument("--data-root", default=None, help="Kvasir-SEG folder (default: search; synthetic if absent)")
    p.add_argument("--reference-subset", type=int, default=50,
                   help="images run the reference way: timed (scaled to all) and compared (default 50)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="device of the separable way (default cpu)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads while timing (0: leave as is)")
    a = p.parse_args(argv)
    rec = run(n=a.n, data_root=a.data_root, reference_subset=a.reference_subset, seed=a.seed,
              device=a.device, threads=a.threads or None)
    print(json.dumps(rec))
    return 0


if __name__ == "__main__":
    sys.exit(main())
