"""``wsslib bench thresholds``: THE threshold search, brute force versus histograms.

On the same CAM-like maps of ``models`` models (default 2 models, 500 images at 128 px, with the
EnsembleCAM grid 0..1 step 0.1 = 11 x 11 cells and all four ops):

- brute: :func:`wsslib.evaluate.thresholds.search_grid` with ``method="brute"``
  (:func:`~wsslib.evaluate.thresholds.grid_counts_brute` then
  :func:`~wsslib.evaluate.thresholds.search_from_counts`): every cell re-thresholds and combines
  the maps and counts the confusion (``G^M`` passes over the data per op);
- fast: the same call with ``method="hist"``: each map quantised once, one joint histogram,
  every cell's counts read from cumulative sums.

The maps are generated, not computed by networks (the benchmark is about the search): per image
0-3 elliptical objects (30 % of images without one), and per model a coarse 8 x 8 map of the
object's coverage plus smooth noise, upsampled bilinearly and min-max normalised like a Grad-CAM.

Prints one JSON line: both times, ``speedup`` = brute / fast, and whether the optimum of every op
(``same_optimum``), every grid value (``same_grid``) and every count (``same_counts``) agree.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import get_args

import torch
import torch.nn.functional as F

from wsslib.evaluate import thresholds as th
from wsslib.core.maps import minmax_per_image

__all__ = ["main", "pseudo_cams", "run"]


def pseudo_cams(n_models: int, n: int, size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """CAM-like maps and true masks for benchmarks and tests.

    Args:
        n_models: maps per image (one per "model").
        n: images.
        size: side of the square images.
        seed: generator seed.

    Returns:
        ``(maps, masks)``: ``(n_models, n, size, size)`` float32 in [0, 1] and ``(n, size, size)`` bool.
    """
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    masks = torch.zeros(n, size, size, dtype=torch.bool)
    n_obj = torch.randint(1, 4, (n,), generator=g) * (torch.rand(n, generator=g) >= 0.3)
    for k in range(3):
        cy, cx = (torch.rand(2, n, 1, 1, generator=g) * 0.6 + 0.2) * size
        ry, rx = (torch.rand(2, n, 1, 1, generator=g) * 0.12 + 0.05) * size
        blob = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        masks |= blob & (n_obj > k).view(n, 1, 1)
    cover = F.adaptive_avg_pool2d(masks[:, None].float(), 8)  # (n, 1, 8, 8)
    maps = []
    for _ in range(n_models):
        coarse = cover * (0.5 + torch.rand(n, 1, 1, 1, generator=g)) + 0.35 * torch.rand(n, 1, 8, 8, generator=g)
        up = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)[:, 0]
        maps.append(minmax_per_image(up))
    return torch.stack(maps), masks


def run(
    models: int = 2,
    images: int = 500,
    size: int = 128,
    step: float = 0.1,
    ops: tuple[str, ...] = th.COMBINE_OPS,
    metric: str = "dice",
    repeats: int = 3,
    seed: int = 0,
) -> dict:
    """Time brute force (once) and the histogram search (best of ``repeats``); return the JSON record."""
    maps, masks = pseudo_cams(models, images, size, seed)
    grid = th.threshold_grid(step)
    t0 = time.perf_counter()  # = search_grid(..., method="brute"), keeping the counts
    c_brute = th.grid_counts_brute(maps, masks, ops, grid)
    brute = th.search_from_counts(c_brute, grid, metric)
    t_brute = time.perf_counter() - t0
    t_fast = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fast = th.search_grid(maps, masks, ops, grid, metric, method="hist")
        t_fast = min(t_fast, time.perf_counter() - t0)
    # counts, untimed: the histogram path (per image) against the brute force, every op and cell
    c_fast = th.grid_counts(maps, masks, ops, grid, per_image=True)
    same_counts = all(torch.equal(a, b) for op in ops for a, b in zip(c_fast[op], c_brute[op]))
    same_grid = all(torch.equal(fast[op].scores.nan_to_num(-1.0), brute[op].scores.nan_to_num(-1.0)) for op in ops)
    same_opt = all(fast[op].index == brute[op].index and fast[op].score == brute[op].score for op in ops)
    return {
        "bench": "thresholds", "models": models, "images": images, "size": size,
        "grid": f"{len(grid)}^{models}", "ops": list(ops), "metric": metric,
        "threads": torch.get_num_threads(), "repeats": repeats,
        "brute_s": round(t_brute, 3), "fast_s": round(t_fast, 4), "speedup": round(t_brute / t_fast, 1),
        "same_optimum": same_opt, "same_grid": same_grid, "same_counts": same_counts,
        "optimum": {op: [list(fast[op].thresholds), round(fast[op].score, 4)] for op in ops},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="wsslib bench thresholds", description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", type=int, default=2, help="maps per image (default 2)")
    ap.add_argument("--images", type=int, default=500)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--step", type=float, default=0.1, help="grid step over 0..1 (default 0.1: 11 values)")
    ap.add_argument("--ops", default=",".join(th.COMBINE_OPS))
    ap.add_argument("--metric", default="dice", choices=list(get_args(th.ThresholdMetric)))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    rec = run(a.models, a.images, a.size, a.step, tuple(a.ops.split(",")), a.metric, a.repeats, a.seed)
    print(json.dumps(rec), flush=True)
    return 0
