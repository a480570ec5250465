"""``wsslib bench gate``: issue 17's acceptance run: a folder of another hospital's frames plus
non-endoscopy images, annotated with a trained ensemble; Dice against the centre prior and the
out-of-distribution gate's flag rates, as one JSON line.

    wsslib train polypgen --out models/polypgen             # defaults: real preset, theta 0.1
    wsslib bench gate --models models/polypgen [--data-root ../shared/data] [--non-endoscopy DIR]
                      [--work DIR] [--k 20] [--device auto]

Steps:

1. build ``WORK/mixed/``: every PolypGen **test** frame (``polypgen_<id>.png``), every Kvasir-SEG
   **test** image (``kvasir_<id>.png``) and the non-endoscopy images (``other_<name>.png``), each
   decoded by the data loaders and written as PNG (pixel-identical; none of them was used in
   training: the ensemble saw PolypGen train/valid only);
2. ``wsslib annotate WORK/mixed --models MODELS --out WORK/annotate`` (:func:`~wsslib.apps.annotate.annotate`);
3. score: per-image Dice of the written masks on the frames that hold a polyp (a frame without a
   mask scores 0: ``dice_polyp_frames``; on the frames that got a mask: ``dice_with_mask``),
   the centre prior on the same frames (a centred ellipse covering PolypGen train's mean polyp
   share, :func:`wsslib.evaluate.baselines.centre_prior`), and per source the share flagged
   ``out_of_distribution`` and flagged at all.

Non-endoscopy images: ``--non-endoscopy DIR`` (any folder of images, e.g. the Oxford-IIIT Pet
images: ``./data_download.sh oxford-pets``, then ``data/oxford-pets/images``); without it, the
Oxford-IIIT Pet test images when the data set is found (at most ``--n-other``, default 200, a
seeded subset), else (offline) 24 crops of matplotlib's
two sample photos plus 24 images of the synthetic OOD family (``non_endoscopy_source`` in the
JSON says which).

The JSON line: ``n`` per source, ``dice_polyp_frames``, ``dice_with_mask``, ``centre_prior_dice``,
``dice_minus_prior``, ``ood_flag_rate`` and ``flag_rate`` per source, ``accuracy_polypgen`` (on the
frames not flagged), the acceptance checks (``pass_dice`` >= prior + 0.10, ``pass_gate_other``
>= 0.80, ``pass_gate_polypgen`` <= 0.10) and the time.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

__all__ = ["build_mixed_folder", "main", "run", "score"]


def _save(img: np.ndarray, path: Path) -> None:
    Image.fromarray(img).save(path)


def _other_images(target: Path, non_endoscopy: Path | None, data_root: Path | None, seed: int,
                  n_other: int = 200) -> tuple[list[str], str]:
    """Write (at most ``n_other``, a seeded subset) non-endoscopy images as ``other_*.png``;
    returns their names and the source (:func:`wsslib.data.other.non_endoscopy_images` unless
    ``non_endoscopy`` names a folder)."""
    from wsslib.data.io import read_image
    from wsslib.data.other import non_endoscopy_images

    names: list[str] = []
    if non_endoscopy is not None:
        from wsslib.apps.annotate import list_images

        files = list_images(non_endoscopy)
        keep = sorted(np.random.default_rng(seed).permutation(len(files))[:n_other].tolist())
        for rel in (files[i] for i in keep):
            try:
                img = read_image(non_endoscopy / rel)
            except Exception:  # noqa: BLE001 - an unreadable file is not part of the set
                continue
            name = "other_" + rel.replace("/", "_").rsplit(".", 1)[0] + ".png"
            _save(img, target / name)
            names.append(name)
        return names, str(non_endoscopy)
    images, where = non_endoscopy_images(None if data_root is None else data_root / "oxford-pets", n=n_other, seed=seed)
    for name, img in images:
        _save(img, target / f"other_{name}.png")
        names.append(f"other_{name}.png")
    return names, where


def build_mixed_folder(target: Path, *, data_root: Path | None = None, non_endoscopy: Path | None = None,
                       seed: int = 0, n_other: int = 200) -> dict:
    """Write the mixed folder; returns ``{"sources": {file: source}, "masks": {file: (H, W) bool},
    "labels": {file: 0/1}, "non_endoscopy_source": str}``."""
    from wsslib.data import get_dataset

    target.mkdir(parents=True, exist_ok=True)
    sources, masks, labels = {}, {}, {}
    for ds_name, tag in (("polypgen", "polypgen"), ("kvasir-seg", "kvasir")):
        ds = get_dataset(ds_name, root=None if data_root is None else data_root / ds_name, split="test")
        for i in range(len(ds)):
            s = ds[i]
            name = f"{tag}_{s.id}.png"
            _save(s.image, target / name)
            sources[name], masks[name], labels[name] = tag, s.mask, int(s.label)
    others, where = _other_images(target, non_endoscopy, data_root, seed, n_other)
    sources.update({n: "other" for n in others})
    return {"sources": sources, "masks": masks, "labels": labels, "non_endoscopy_source": where}


def _train_share(data_root: Path | None) -> float:
    """PolypGen train's mean polyp share (the centre prior's size), from its masks."""
    from wsslib.core.errors import DataError
    from wsslib.data import get_dataset

    ds = get_dataset("polypgen", root=None if data_root is None else data_root / "polypgen", split="train")
    shares = [float(m.mean()) for m in (ds[i].mask for i in range(len(ds))) if m is not None and m.any()]
    if not shares:
        raise DataError(f"{ds!r}: no training frame holds a polyp; the centre prior needs one")
    return float(np.mean(shares))


def score(ann_dir: Path, built: dict, prior_share: float) -> dict:
    """Dice vs centre prior on the polyp frames and flag rates per source (see the module doc)."""
    import csv

    from wsslib.evaluate.baselines import centre_prior
    from wsslib.evaluate.metrics import dice

    with open(ann_dir / "decisions.csv", newline="", encoding="utf-8") as f:
        rows = {r["file"]: r for r in csv.DictReader(f)}
    out: dict = {}
    d_all, d_mask, d_prior = [], [], []
    for name, truth in built["masks"].items():
        if truth is None or not truth.any() or name not in rows:
            continue
        r = rows[name]
        pred = np.asarray(Image.open(ann_dir / r["mask"])) > 0 if r["mask"] else np.zeros_like(truth)
        t = torch.from_numpy(truth)[None]
        d = float(dice(torch.from_numpy(pred)[None], t)[0])
        d_all.append(d)
        if r["mask"]:
            d_mask.append(d)
        d_prior.append(float(dice(centre_prior(*truth.shape, prior_share)[None], t)[0]))
    out["n_polyp_frames"] = len(d_all)
    out["dice_polyp_frames"] = float(np.mean(d_all)) if d_all else None
    out["dice_with_mask"] = float(np.mean(d_mask)) if d_mask else None
    out["n_with_mask"] = len(d_mask)
    out["centre_prior_dice"] = float(np.mean(d_prior)) if d_prior else None
    out["dice_minus_prior"] = None if not d_all else out["dice_polyp_frames"] - out["centre_prior_dice"]
    for src in ("polypgen", "kvasir", "other"):
        files = [f for f, s in built["sources"].items() if s == src]
        got = [rows[f] for f in files if f in rows]
        out[f"n_{src}"] = len(files)
        out[f"unreadable_{src}"] = len(files) - len(got)
        out[f"ood_flag_rate_{src}"] = sum(r["flag_reason"] == "out_of_distribution" for r in got) / max(len(got), 1)
        out[f"flag_rate_{src}"] = sum(r["decision"] == "flagged" for r in got) / max(len(got), 1)
    pg = [(rows[f]["decision"], built["labels"][f]) for f, s in built["sources"].items() if s == "polypgen" and f in rows]
    kept = [(d, y) for d, y in pg if d != "flagged"]
    out["accuracy_polypgen"] = sum((d == "diseased") == bool(y) for d, y in kept) / len(kept) if kept else None
    out["pass_dice"] = out["dice_minus_prior"] is not None and out["dice_minus_prior"] >= 0.10
    out["pass_gate_other"] = out["ood_flag_rate_other"] >= 0.80
    out["pass_gate_polypgen"] = out["ood_flag_rate_polypgen"] <= 0.10
    return out


def run(models: Path, *, data_root: Path | None = None, non_endoscopy: Path | None = None, work: Path | None = None,
        k: int = 20, device: str = "auto", batch: int = 16, seed: int = 0, n_other: int = 200,
        progress: bool = True) -> dict:
    """Build the mixed folder, annotate it with ``models``, score; returns the JSON record."""
    from wsslib.apps.annotate import AnnotateSettings, annotate

    t0 = time.perf_counter()
    tmp = None
    if work is None:
        tmp = tempfile.mkdtemp(prefix="wsslib-gate-")
        work = Path(tmp)
    try:
        built = build_mixed_folder(work / "mixed", data_root=data_root, non_endoscopy=non_endoscopy, seed=seed,
                                   n_other=n_other)
        res = annotate(work / "mixed", [models], work / "annotate", AnnotateSettings(k=k, seed=seed),
                       batch_size=batch, device=device, progress=progress)
        rec = {"bench": "gate", "models": str(models), "non_endoscopy_source": built["non_endoscopy_source"],
               **score(work / "annotate", built, _train_share(data_root)), "annotate_images_per_s": res.images_per_s,
               "seconds": time.perf_counter() - t0, "work": None if tmp else str(work)}
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return rec


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``wsslib bench gate``: prints one JSON line; exit 1 on a runtime error."""
    from wsslib.core.errors import DataError

    ap = argparse.ArgumentParser(prog="wsslib bench gate", description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", required=True, type=Path, help="the folder `wsslib train polypgen --out DIR` wrote")
    ap.add_argument("--data-root", type=Path, default=None, help="folder holding polypgen/ and kvasir-seg/")
    ap.add_argument("--non-endoscopy", type=Path, default=None, help="folder of non-endoscopy images")
    ap.add_argument("--work", type=Path, default=None, help="keep the mixed folder and annotate output here")
    ap.add_argument("--n-other", type=int, default=200, help="most non-endoscopy images (seeded subset; default 200)")
    ap.add_argument("--k", type=int, default=20, help="MC dropout passes (default 20)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("-q", "--quiet", action="store_true")
    args = ap.parse_args(argv)
    try:
        rec = run(args.models, data_root=args.data_root, non_endoscopy=args.non_endoscopy, work=args.work, k=args.k,
                  device=args.device, batch=args.batch, seed=args.seed, n_other=args.n_other, progress=not args.quiet)
    except (DataError, OSError) as e:
        print(f"wsslib bench gate: {e}", file=sys.stderr, flush=True)
        return 1
    print(json.dumps(rec), flush=True)
    return 0
