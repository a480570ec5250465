"""``wsslib bench aax``: the AAX engine, naive versus fast, against the physical floor.

For an ensemble of classifiers (default resnet50 + efficientnet_b0 + densenet121, random
weights), on one batch, in one process:

- naive: per model, K full stochastic forward passes (:func:`wsslib.explain.uncertainty.mc_predict`
  with ``fast=False``) plus pytorch-grad-cam's XGrad-CAM (forward + full backward);
- fast: per model, :func:`wsslib.explain.inference.predict_explain`: one backbone pass, K dropout heads
  sampled at once, the CAM from ``d score / d A`` through the head only;
- floor: per model, one forward plus one full backward (the cost of any method that needs a
  gradient through the network).

Prints one JSON line: the three times (best of ``repeats``), ``speedup`` = naive / fast,
``over_floor`` = fast / floor, and the largest differences between the two paths' outputs.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from wsslib.explain.cams import compute_cams
from wsslib.explain.inference import predict_explain
from wsslib.models.classifiers import create_model
from wsslib.explain.uncertainty import mc_predict, sample_dropout_masks
from wsslib.core.utils import resolve_device

__all__ = ["run", "main"]


def _best_time(fn, repeats: int, sync) -> float:
    best = float("inf")
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t0)
    return best


def run(
    models: tuple[str, ...] = ("resnet50", "efficientnet_b0", "densenet121"),
    k: int = 20,
    batch: int = 8,
    size: int = 224,
    repeats: int = 2,
    device: str = "auto",
    seed: int = 0,
) -> dict:
    """Time naive, fast and floor on one random batch; return the JSON record (see module doc)."""
    dev = resolve_device(device)
    torch.manual_seed(seed)
    nets = [create_model(name, dropout=0.5).to(dev).eval() for name in models]
    x = torch.rand(batch, 3, size, size, device=dev)
    masks = [sample_dropout_masks(k, batch, m.fc.in_features, m.dropout.p,
                                  generator=torch.Generator().manual_seed(seed + i)).to(dev)
             for i, m in enumerate(nets)]
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    out: dict = {}

    def naive():
        out["naive"] = [(mc_predict(m, x, k=k, fast=False, masks=mk),
                         compute_cams(m, x, method="xgradcam", targets=1, batch_size=batch, fast=False))
                        for m, mk in zip(nets, masks)]

    def fast():
        out["fast"] = [predict_explain(m, x, k=k, method="xgradcam", targets=1, batch_size=batch, masks=mk)
                       for m, mk in zip(nets, masks)]

    def floor():
        for m in nets:
            m.zero_grad(set_to_none=True)
            m(x)[:, 1].sum().backward()
        for m in nets:
            m.zero_grad(set_to_none=True)

    fast()  # warm-up (allocator, kernels)
    t_naive = _best_time(naive, repeats, sync)
    t_fast = _best_time(fast, repeats, sync)
    t_floor = _best_time(floor, repeats, sync)
    dp = max(float((a.p - b.p).abs().max()) for (a, _), b in zip(out["naive"], out["fast"]))
    du = max(float((a.u - b.u).abs().max()) for (a, _), b in zip(out["naive"], out["fast"]))
    dc = max(float((c - b.cams).abs().max()) for (_, c), b in zip(out["naive"], out["fast"]))
    return {
        "bench": "aax", "models": list(models), "k": k, "batch": batch, "size": size,
        "device": str(dev), "threads": torch.get_num_threads(), "repeats": repeats,
        "naive_s": round(t_naive, 3), "fast_s": round(t_fast, 3), "floor_s": round(t_floor, 3),
        "speedup": round(t_naive / t_fast, 2), "over_floor": round(t_fast / t_floor, 3),
        "max_abs_diff_p": dp, "max_abs_diff_u": du, "max_abs_diff_cam": dc,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="wsslib bench aax", description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="resnet50,efficientnet_b0,densenet121")
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--device", default="auto")
    a = ap.parse_args(argv)
    rec = run(tuple(a.models.split(",")), a.k, a.batch, a.size, a.repeats, a.device)
    print(json.dumps(rec), flush=True)
    return 0
