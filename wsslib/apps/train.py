"""``wsslib train DATA --out DIR``: the AAX ensemble's checkpoints and model card, ready for
``wsslib annotate IMAGES --models DIR``.

A thin layer over the notebook 04 protocol (:mod:`wsslib.methods.aax`) and its presets
(:mod:`wsslib.papers.nasir2025`), nothing re-implemented:

1. the data: a registered data set name (``polypgen``, ``synthetic``, ...) or a folder in the
   ``folder`` layout (:mod:`wsslib.data.folder`), loaded once at the preset's image size with
   :func:`wsslib.methods.aax.load_aax_splits` (train, valid, test and the synthetic OOD family);
2. the members: the preset's (``real`` by default: ImageNet EfficientNet-Lite0/1/2 at 224 px,
   frozen cached prefix, :data:`wsslib.papers.settings.REAL_CLASSIFIER`) or ``--models``, trained
   by :func:`wsslib.methods.aax.train_members` with early stopping on the validation loss
   (``--patience``, the epoch of lowest validation loss kept);
3. the thresholds: every member's and the fused map's, chosen on **validation** for the given
   ``--theta`` / ``--fusion`` (:func:`wsslib.methods.aax.evaluate_aax`); a threshold within one
   grid step of either end of its grid (0.05 ... 0.95), or a fallback, is warned about and
   recorded;
4. the out-of-distribution gate: per member, a k-NN gate on its pooled features of the training
   images; the cuts set together so that the ensemble ("any member") flags at most
   ``1 - --ood-quantile`` of the validation images (:func:`wsslib.methods.ood.fit_member_gates`);
5. the outputs, in ``--out DIR``: one checkpoint per member (``<name>.pt``, recording image size,
   the fused map threshold, the member's own threshold, theta, fusion, preprocessing and the
   gate), ``model_card.json`` and ``model_card.md`` (data, split sizes and hashes, validation
   and test accuracy, sensitivity, specificity, IoU, Dice, flag rates, thresholds, gate, times,
   warnings).

Errors exit 1 with one line naming what is wrong (a missing data folder, an image folder the
``folder`` checks reject, an ``--out`` that already holds an ensemble); bad options exit 2.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from wsslib import __version__
from wsslib.core.errors import DataError
from wsslib.core.utils import atomic_write
from wsslib.papers.nasir2025 import PRESETS as _NASIR

_GATE = _NASIR["cpu"]  # the feature gate's defaults, as notebook 04 uses them (ood_k, ood_quantile)

__all__ = ["TrainSettings", "TrainedEnsemble", "add_parser", "edge_warnings", "resolve_data", "train_ensemble"]

MODEL_CARD = "model_card"


@dataclass(frozen=True)
class TrainSettings:
    """What ``wsslib train`` does; ``None`` = the preset's value.

    Attributes:
        data: a registered data set name or a folder (the ``folder`` layout).
        out: output folder.
        preset: ``"real"`` (default: pretrained EfficientNet-Lites at 224 px), ``"cpu"`` (small
            networks from scratch, 64 px) or ``"paper"`` (the paper's backbones; a GPU).
        models: member backbones (None: the preset's); epochs, learning rate and batch size of
            the preset's first member are used for every member when the count differs.
        image_size, epochs, k: the preset's values unless given.
        patience: early stopping on the validation loss (None: off; the best epoch is kept anyway).
        theta, fusion: the protocol the thresholds are chosen for (recorded in the checkpoints).
        ood_quantile, ood_k: the gate flags at most ``1 - ood_quantile`` of the validation images
            (default 0.975: a 2.5 % target, leaving room under a 10 % budget of in-distribution
            flags for the noise of a small validation set: PolypGen has 60 images); its neighbour.
        data_root: the data set's folder when ``data`` is a name (None: the default search).
        smoke: the preset's smoke overlay (seconds; for tests and trying the path).
        seed, device: as everywhere.
        overwrite: replace an ensemble already in ``out``.
    """

    data: str
    out: Path
    preset: str = "real"
    models: tuple[str, ...] | None = None
    image_size: int | None = None
    epochs: int | None = None
    patience: int | None = 3
    k: int | None = None
    theta: float = 0.1
    fusion: str = "intersection"
    ood_quantile: float = _GATE["ood_quantile"]
    ood_k: int = _GATE["ood_k"]
    data_root: Path | None = None
    smoke: bool = False
    seed: int = 0
    device: str = "auto"
    overwrite: bool = False


@dataclass
class TrainedEnsemble:
    """What :func:`train_ensemble` returns: the card (as written) and the checkpoint paths."""

    out: Path
    checkpoints: list[Path]
    card: dict[str, Any]
    warnings: list[str] = field(default_factory=list)


def resolve_data(data: str, data_root: str | Path | None = None) -> tuple[str, Path | None]:
    """``(data set name, root)`` of ``wsslib train``'s DATA argument.

    A registered name is taken as such (with ``data_root``); else an existing folder is a
    ``folder`` data set.

    Raises:
        DataError: neither a registered name nor an existing folder.
    """
    from wsslib.data import list_datasets

    if data in list_datasets() and data != "folder" and not Path(data).is_dir():
        return data, None if data_root is None else Path(data_root)
    p = Path(data)
    if p.is_dir():
        return "folder", p
    if data == "folder" and data_root is not None:
        return "folder", Path(data_root)
    raise DataError(f"{data}: neither a registered data set ({', '.join(n for n in list_datasets() if n != 'folder')}) "
                    "nor an existing folder (a folder needs images/ and masks/ or labels.csv: see wsslib.data.folder)")


def _knobs(ts: TrainSettings, dataset: str) -> dict[str, Any]:
    """notebook 04's resolved settings for this run (preset, smoke overlay, then what was given)."""
    from wsslib.papers import nasir2025

    if ts.preset not in nasir2025.PRESETS:
        raise ValueError(f"preset must be one of {', '.join(nasir2025.PRESETS)}, got {ts.preset!r}")
    s = dict(nasir2025.PRESETS[ts.preset])
    if ts.smoke:
        s.update(nasir2025.SMOKE_FOR.get(ts.preset, nasir2025.SMOKE))
        if dataset == "synthetic":
            s["n_images"] = nasir2025.SMOKE["n_images"]
    if dataset != "synthetic":
        s["n_images"] = None
    s.update(theta=float(ts.theta), fusion=ts.fusion, patience=ts.patience)
    if ts.image_size is not None:
        s["image_size"] = int(ts.image_size)
    if ts.k is not None:
        s["k"] = int(ts.k)
    if ts.models:
        n_old = len(s["models"])
        s["models"] = list(ts.models)
        for key in ("epochs", "lrs", "batch_sizes"):
            if len(ts.models) != n_old:
                s[key] = [list(s[key])[0]] * len(ts.models)
        if not all(m.startswith("efficientnet_lite") for m in ts.models):
            s["freeze"] = None  # the preset's frozen prefix names EfficientNet-Lite blocks
    if ts.epochs is not None:
        s["epochs"] = [int(ts.epochs)] * len(s["models"])
    return s


def _split_hash(ids: list[str] | None) -> str:
    return hashlib.sha256("\n".join(sorted(ids or [])).encode("utf-8")).hexdigest()


def edge_warnings(thresholds: dict[str, float], sources: dict[str, str], grid: torch.Tensor) -> list[str]:
    """One warning per threshold chosen within one grid step of either end of ``grid`` ``(G,)``
    ascending, or taken from the fallback (no validation image could choose it)."""
    lo, hi = float(grid[min(1, len(grid) - 1)]), float(grid[max(len(grid) - 2, 0)])
    out = []
    for name, t in thresholds.items():
        if sources.get(name, "").startswith("fallback"):
            out.append(f"the map threshold of {name} is the fallback {t:g}: {sources[name]}")
        elif t <= lo + 1e-9 or t >= hi - 1e-9:
            side = "bottom" if t <= lo + 1e-9 else "top"
            out.append(f"the map threshold of {name} ({t:g}) sits at the {side} of its grid "
                       f"({float(grid[0]):g} ... {float(grid[-1]):g}): its maps may be too "
                       f"{'weak or diffuse' if side == 'bottom' else 'saturated'} to localise; check a few masks")
    return out


def _scores(res, labels: torch.Tensor, truth: torch.Tensor) -> dict[str, float]:
    from wsslib.methods.aax import decision_scores

    s = decision_scores(res.decision, labels, res.masks, truth)
    return {k: s[k] for k in ("accuracy", "sensitivity", "specificity", "iou", "dice", "flag_rate", "n_images")}


def _clean(x: Any) -> Any:
    """JSON-safe: NaN -> None, tuples -> lists."""
    if isinstance(x, float):
        return None if math.isnan(x) or math.isinf(x) else x
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    return x


def _log(msg: str, progress: bool) -> None:
    if progress:
        print(f"wsslib train: {msg}", file=sys.stderr, flush=True)


def train_ensemble(ts: TrainSettings, *, progress: bool = True) -> TrainedEnsemble:
    """Train the AAX ensemble on ``ts.data`` and write checkpoints and model card to ``ts.out``.

    Returns:
        :class:`TrainedEnsemble`.

    Raises:
        DataError: unusable data or ``out`` (see the module doc); ValueError: bad settings.
    """
    from wsslib.evaluate.metrics import as_bool_mask
    from wsslib.evaluate.thresholds import default_grid
    from wsslib.methods import aax
    from wsslib.methods.ood import fit_member_gates, gate_table
    from wsslib.models import save_checkpoint
    from wsslib.papers import nasir2025

    t_start = time.perf_counter()
    out = Path(ts.out)
    if (out / f"{MODEL_CARD}.json").exists() and not ts.overwrite:
        raise DataError(f"{out} already holds a trained ensemble ({MODEL_CARD}.json); choose another --out "
                        "or pass --overwrite")
    if not 0.0 < ts.ood_quantile <= 1.0:
        raise ValueError(f"--ood-quantile must be in (0, 1], got {ts.ood_quantile}")
    dataset, root = resolve_data(ts.data, ts.data_root)
    s = _knobs(ts, dataset)
    cfg = nasir2025.aax_config(s)
    specs = nasir2025.member_specs(s)
    size = int(s["image_size"])

    _log(f"loading {dataset}{'' if root is None else f' from {root}'} at {size} px", progress)
    t0 = time.perf_counter()
    data = aax.load_aax_splits(dataset, root=root, size=size, n=s["n_images"], n_ood=s["n_ood"], seed=ts.seed)
    for split in ("valid", "test"):
        if data[split].has_mask is None or not bool(data[split].has_mask.any()):
            raise DataError(f"{ts.data}: the {split} images have no masks; the map thresholds are chosen on "
                            "validation masks (a folder data set needs masks/)")
    load_s = time.perf_counter() - t0

    _log(f"training {len(specs)} member(s): {', '.join(sp.title for sp in specs)}", progress)
    members = aax.train_members(specs, data, cfg, seed=ts.seed, device=ts.device, progress=progress)
    _log("choosing thresholds on validation", progress)
    ev = aax.evaluate_aax(members.outputs, data, members.names, cfg, dataset=dataset)
    warns = edge_warnings(ev.thresholds, ev.threshold_from, default_grid())

    ov = members.outputs["valid"]
    v_truth = as_bool_mask("valid masks", data["valid"].masks)
    v_res = aax.aax(ov.p, ov.u, ov.maps, threshold=ev.thresholds["AAX"], fusion=cfg.fusion, **cfg.protocol)
    valid_scores = _scores(v_res, data["valid"].labels, v_truth)

    _log("fitting the out-of-distribution gates", progress)
    t0 = time.perf_counter()
    gates = fit_member_gates(members.models, data["train"].images, data["valid"].images, k=ts.ood_k,
                             quantile=ts.ood_quantile, seed=ts.seed)
    rows = gate_table(members.models, gates, {sp: data[sp].images for sp in ("valid", "test", "ood") if sp in data})
    ood_rates = {r["set"]: r["ood_flag_rate"] for r in rows}
    gate_s = time.perf_counter() - t0

    test_row = ev.row("AAX")
    card: dict[str, Any] = {
        "wsslib": __version__,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": "wsslib train " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["train"] else None,
        "data": {"name": dataset, "given": ts.data, "root": None if root is None else str(Path(root).resolve()),
                 "image_size": size,
                 "splits": {sp: {"n": len(b), "n_positive": int(b.labels.sum()), "ids_sha256": _split_hash(b.ids)}
                            for sp, b in data.items() if sp != "ood"},
                 "ood_check": f"synthetic OOD family, {len(data['ood'])} images"},
        "preset": ts.preset, "smoke": ts.smoke, "seed": ts.seed,
        "protocol": {**cfg.protocol, "fusion": cfg.fusion, "k": cfg.k, "cam_method": cfg.cam_method,
                     "threshold_metric": cfg.threshold_metric},
        "preprocessing": {"resize": f"bilinear, antialiased, to {size}x{size}", "range": "RGB float in [0, 1]",
                          "reader": "wsslib.data.io.read_image_float (scaled by bit depth)",
                          "normalisation": "inside each model (ImageNet mean/std or EfficientNet-Lite's)"},
        "thresholds": {"fused_map": ev.thresholds["AAX"],
                       "members": {n: ev.thresholds[n] for n in members.names},
                       "from": dict(ev.threshold_from), "grid": "0.05 ... 0.95 step 0.05"},
        "validation": {**valid_scores, "ood_flag_rate": ood_rates.get("valid"),
                       "note": "the thresholds were chosen on these images: optimistic"},
        "test": {**{k: test_row.get(k) for k in ("accuracy", "sensitivity", "specificity", "iou", "dice",
                                                  "flag_rate", "n_images")},
                 "ood_flag_rate": ood_rates.get("test"),
                 "members": {r["method"]: {"accuracy": r.get("accuracy"), "iou": r.get("iou"), "dice": r.get("dice")}
                             for r in ev.main if r["method"] in members.names},
                 "centre_prior": {k: ev.row("centre prior (on AAX's Diseased images)").get(k) for k in ("iou", "dice")}},
        "ood_gate": {"method": "k-nearest-neighbour distance on L2-normalised pooled features",
                     "k": ts.ood_k, "quantile": ts.ood_quantile, "member_level": gates[0].quantile,
                     "min_votes": gates[0].min_votes,
                     "cuts": {n: g.cut for n, g in zip(members.names, gates)},
                     "flag_rate": ood_rates},
        "members": [{"name": n, "checkpoint": f"{n}.pt", "threshold": ev.thresholds[n],
                     **{k: r.get(k) for k in ("epochs", "lr", "batch_size", "best_epoch", "valid_loss", "train_seconds")}}
                    for n, r in zip(members.names, members.training)],
        "times_s": {"load": load_s, "train": sum(r["train_seconds"] or 0 for r in members.training),
                    "gate": gate_s, "total": 0.0},
        "warnings": warns,
    }
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for n, model, gate in zip(members.names, members.models, gates):
        paths.append(save_checkpoint(
            model, out / f"{n}.pt", image_size=size, map_threshold=ev.thresholds["AAX"], theta=float(cfg.theta),
            fusion=cfg.fusion, member_threshold=float(ev.thresholds[n]), preprocessing=card["preprocessing"],
            ood=gate.to_dict(), dataset=dataset, wsslib=__version__))
    card["times_s"]["total"] = time.perf_counter() - t_start
    card = _clean(card)
    atomic_write(out / f"{MODEL_CARD}.json", (json.dumps(card, indent=1) + "\n").encode("utf-8"), fsync=True)
    atomic_write(out / f"{MODEL_CARD}.md", render_card(card).encode("utf-8"), fsync=True)
    for w in warns:
        print(f"wsslib train: warning: {w}", file=sys.stderr, flush=True)
    return TrainedEnsemble(out, paths, card, warns)


def _f(v: Any) -> str:
    return "–" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))


def render_card(card: dict[str, Any]) -> str:
    """``model_card.md``: the card as a page."""
    d, v, t, g = card["data"], card["validation"], card["test"], card["ood_gate"]
    keys = ("accuracy", "sensitivity", "specificity", "iou", "dice", "flag_rate", "ood_flag_rate", "n_images")
    lines = [
        f"# Model card: AAX ensemble on {d['name']}" + (f" ({d['root']})" if d["root"] else ""),
        "",
        f"Written by wsslib {card['wsslib']} on {card['created_utc']}; preset `{card['preset']}`"
        + (" (smoke mode: not a real model)" if card["smoke"] else "") + f", seed {card['seed']}.",
        "",
        "## Data",
        "",
        "| split | images | with lesion | ids sha256 |",
        "| --- | --- | --- | --- |",
        *[f"| {sp} | {x['n']} | {x['n_positive']} | `{x['ids_sha256'][:16]}` |" for sp, x in d["splits"].items()],
        "",
        f"Images resized to {d['image_size']} x {d['image_size']} ({card['preprocessing']['resize']}).",
        "",
        "## Scores",
        "",
        "| split | " + " | ".join(keys) + " |",
        "| --- |" + " --- |" * len(keys),
        "| validation (thresholds chosen here) | " + " | ".join(_f(v.get(k)) for k in keys) + " |",
        "| test | " + " | ".join(_f(t.get(k)) for k in keys) + " |",
        "",
        f"Centre prior on the test images AAX calls Diseased: IoU {_f(t['centre_prior'].get('iou'))}, "
        f"Dice {_f(t['centre_prior'].get('dice'))}.",
        "",
        "## Protocol and thresholds",
        "",
        f"theta {card['protocol']['theta']}, fusion {card['protocol']['fusion']}, K {card['protocol']['k']} MC "
        f"dropout passes, {card['protocol']['cam_method']}; fused map threshold "
        f"{_f(card['thresholds']['fused_map'])} ({card['thresholds']['from'].get('AAX')}).",
        "",
        "| member | checkpoint | own threshold | best epoch | train s |",
        "| --- | --- | --- | --- | --- |",
        *[f"| {m['name']} | `{m['checkpoint']}` | {_f(m['threshold'])} | {_f(m['best_epoch'])} | "
          f"{_f(m['train_seconds'])} |" for m in card["members"]],
        "",
        "## Out-of-distribution gate",
        "",
        f"{g['method']}, k = {g['k']}; an image is flagged when at least {g['min_votes']} member gate(s) put it "
        f"beyond their cut; the cuts are each member's {g['member_level']:.4f} quantile of its validation scores, "
        f"the lowest level at which the ensemble flags at most {1 - g['quantile']:.0%} of the validation images. "
        "Flag rates: "
        + ", ".join(f"{sp} {_f(r)}" for sp, r in g["flag_rate"].items()) + f" ({d['ood_check']} for `ood`).",
        "",
        "## Warnings",
        "",
        *([f"- {w}" for w in card["warnings"]] or ["none"]),
        "",
        f"Times (s): " + ", ".join(f"{k} {_f(x)}" for k, x in card["times_s"].items()) + ".",
        "",
    ]
    return "\n".join(lines)


def _cmd_train(args: argparse.Namespace) -> int:
    ts = TrainSettings(
        data=args.data, out=args.out, preset=args.preset, models=tuple(args.models) if args.models else None,
        image_size=args.image_size, epochs=args.epochs, patience=None if args.patience < 0 else args.patience,
        k=args.k, theta=args.theta, fusion=args.fusion, ood_quantile=args.ood_quantile, ood_k=args.ood_k,
        data_root=args.data_root, smoke=args.smoke, seed=args.seed, device=args.device, overwrite=args.overwrite)
    t0 = time.perf_counter()
    try:
        res = train_ensemble(ts, progress=not args.quiet)
    except (DataError, OSError, MemoryError) as e:
        print(f"wsslib train: {e}", file=sys.stderr)
        return 1
    except ValueError as e:
        print(f"wsslib train: {e}", file=sys.stderr)
        return 2
    c = res.card
    print(f"trained {len(res.checkpoints)} member(s) on {c['data']['name']} in {time.perf_counter() - t0:.1f} s; "
          f"validation accuracy {_f(c['validation']['accuracy'])}, IoU {_f(c['validation']['iou'])}, "
          f"test accuracy {_f(c['test']['accuracy'])}, IoU {_f(c['test']['iou'])}; "
          f"fused map threshold {_f(c['thresholds']['fused_map'])}; {len(res.warnings)} warning(s)")
    print(f"wrote {res.out}/ ({', '.join(p.name for p in res.checkpoints)}, {MODEL_CARD}.md, {MODEL_CARD}.json)")
    print(f"next: wsslib annotate IMAGES_DIR --models {res.out} --out OUT_DIR")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``wsslib train`` on the ``wsslib`` command's sub-parsers."""
    from wsslib.methods.aax import FUSIONS

    p = sub.add_parser("train", help="train the AAX ensemble (checkpoints + model card) for wsslib annotate")
    p.add_argument("data", help="a registered data set (polypgen, kvasir-seg, synthetic, ...) or a folder "
                                "(images/, masks/, labels.csv: see wsslib.data.folder)")
    p.add_argument("--out", required=True, type=Path, help="output folder for the checkpoints and model card")
    p.add_argument("--preset", default="real", choices=("cpu", "real", "paper"),
                   help="real (default: ImageNet EfficientNet-Lite0/1/2, 224 px), cpu (small nets, 64 px), paper (GPU)")
    p.add_argument("--models", nargs="+", default=None, help="member backbones (default: the preset's)")
    p.add_argument("--image-size", type=int, default=None, help="image side (default: the preset's)")
    p.add_argument("--epochs", type=int, default=None, help="most epochs per member (default: the preset's)")
    p.add_argument("--patience", type=int, default=3, help="early stopping on validation loss (default 3; -1: off)")
    p.add_argument("--k", type=int, default=None, help="MC dropout passes (default: the preset's, 20)")
    p.add_argument("--theta", type=float, default=0.1, help="uncertainty threshold (default 0.1, the paper's)")
    p.add_argument("--fusion", default="intersection", choices=FUSIONS, help="map fusion (default intersection)")
    p.add_argument("--ood-quantile", type=float, default=_GATE["ood_quantile"],
                   help="the gate's cuts: the ensemble flags at most 1 - this of the validation images (default "
                        f"{_GATE['ood_quantile']}, as notebook 04)")
    p.add_argument("--ood-k", type=int, default=_GATE["ood_k"], help=f"the gate's neighbour (default {_GATE['ood_k']})")
    p.add_argument("--data-root", type=Path, default=None, help="folder of a registered data set (default: search)")
    p.add_argument("--smoke", action="store_true", help="tiny settings: seconds, to try the path")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda ... (default auto)")
    p.add_argument("--overwrite", action="store_true", help="replace an ensemble already in --out")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=_cmd_train)
    return p
