"""``wsslib annotate``: pixel masks for a folder of images with the AAX protocol, resumably.

For annotation teams: an ensemble of classifiers (checkpoints written by
:func:`wsslib.models.save_checkpoint`) looks at every image of a folder; the AAX protocol
(:mod:`wsslib.aax`: Monte Carlo dropout ``p``, ``u`` and a CAM per model, from
:func:`wsslib.inference.predict_explain`) calls each image Healthy, Diseased (with a mask) or
Flagged for the expert::

    wsslib annotate IMAGES_DIR --models a.pt b.pt c.pt --out OUT_DIR [--theta 0.1] [--k 20]
                    [--batch 16] [--device auto] [--size S] [--map-threshold T]

What ``OUT_DIR`` holds:

* ``masks/<name>.png``: one 8-bit PNG (0 background, 255 lesion) per Diseased image, at the
  image's own size (``<name>`` is the image's path inside ``IMAGES_DIR`` with ``.png`` for its
  suffix; ``<name>.<suffix>.png`` when two images differ only by their suffix).
* ``decisions.csv``: ``file, decision, p_<model>, u_<model>... , mask`` per image.
* ``review/flagged.txt``: the Flagged images (paths inside ``IMAGES_DIR``, one a line): the
  expert's work list.
* ``annotations.coco.json``: COCO instances for annotation tools (CVAT, Label Studio, FiftyOne
  ...): every decoded image under ``images`` (with an extra ``decision`` field), one annotation
  per non-empty mask with a compressed-RLE ``segmentation`` (pycocotools), ``area``, ``bbox``
  (``[x, y, w, h]``) and ``iscrowd: 1`` (COCO's convention for RLE masks; detectors trained on
  the file may skip crowd annotations: set it to 0 for that).
* ``errors.csv``: ``file, reason`` of every file that could not be read (skipped, never fatal).
* ``summary.json``: counts and settings; ``run.json``: the settings and checkpoint hashes a
  resumed run must match.
* ``journal/``: one JSON record per image, the source of truth. Every file is written
  atomically (temporary file + ``os.replace``) and every image's record is written after its
  mask, so a run killed at any point is resumed by running the same command again: images
  with a record are skipped, the rest are computed, and ``decisions.csv``, ``errors.csv``,
  ``review/``, the COCO file and ``summary.json`` are rebuilt from the journal at the end. The
  outputs are byte-identical to those of an uninterrupted run (tested).

Determinism. Images are taken in sorted order and cut into fixed batches of ``--batch`` files;
an interrupted batch is recomputed whole, so every image is always computed in the same batch.
The dropout masks of image ``f`` and model ``i`` come from a generator seeded with
``hash(seed, i, f)``, so ``p`` and ``u`` do not depend on the batch or on the process. Images
added to the folder between runs are simply computed (batches are cut from the current listing,
so numbers of images already done may then differ from a fresh run's in the last float digits);
records of images no longer in the folder are left out of the outputs.

Images. jpg, png, tif/tiff and bmp, in ``IMAGES_DIR`` and its sub-folders (hidden files and
``OUT_DIR`` skipped), are read as RGB float in [0, 1]: 8-bit data divided by 255, 16-bit data
(grey or RGB) by 65535, 32-bit integer grey by 65535 (clipped), float grey clipped to [0, 1];
grey is repeated over three channels, alpha is dropped, palette/CMYK/YCbCr are converted; a
multi-frame file gives its first frame. EXIF orientation is not applied (as in the training
loaders). Each model sees the image resized to its ``S x S`` (bilinear, antialiased: the
training loaders' resize); each model's CAM is resized back to the image's size (bilinear)
before the agreeing models' maps are fused and thresholded.

Scale-out. Under ``torchrun`` (see :mod:`wsslib.distributed`) the batches are shared round
robin between the processes; every process writes its own journal records and masks; rank 0
then collects whatever records it lacks (so ``OUT_DIR`` need not be on a shared file system)
and writes the outputs, which are identical to those of one process.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from wsslib import __version__
from wsslib.core import distributed as _dist
from wsslib.methods.aax import DECISION_NAMES, FUSIONS, Decision, Fusion, decide, fuse_maps
from wsslib.explain.cams import FAST_METHODS
from wsslib.core.errors import DataError
from wsslib.explain.inference import predict_explain
from wsslib.models.classifiers import Classifier, load_checkpoint
from wsslib.evaluate.thresholds import binarize
from wsslib.explain.uncertainty import sample_dropout_masks
from wsslib.core.utils import atomic_write

__all__ = [
    "ANNOTATE_SUFFIXES",
    "AnnotateResult",
    "AnnotateSettings",
    "annotate",
    "list_images",
    "load_image",
]

ANNOTATE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
CRASH_ENV = "WSSLIB_ANNOTATE_CRASH_AFTER"
"""Test hook: kill the process (SIGKILL) after this many journal records, between the next
image's mask and its record (the worst moment)."""

JOURNAL, MASKS, REVIEW = "journal", "masks", "review"
DECISIONS_CSV, ERRORS_CSV, COCO_JSON = "decisions.csv", "errors.csv", "annotations.coco.json"
SUMMARY_JSON, RUN_JSON = "summary.json", "run.json"


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def _remove_stale_temps(folder: Path) -> int:
    """Delete the temporary files an interrupted run left behind (``.<name>.<random>.tmp``)."""
    n = 0
    if folder.is_dir():
        for p in folder.rglob(".*.tmp"):
            if p.is_file():
                p.unlink(missing_ok=True)
                n += 1
    return n


def list_images(images_dir: str | Path, exclude: str | Path | None = None) -> list[str]:
    """Image files under ``images_dir`` (recursively) as sorted POSIX paths relative to it.

    Suffixes :data:`ANNOTATE_SUFFIXES` (any case); hidden files and folders and everything
    under ``exclude`` (the output folder, when it lies inside) are skipped.

    Raises:
        DataError: ``images_dir`` is not a folder.
    """
    root = Path(images_dir)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder of images")
    skip = Path(exclude).resolve() if exclude is not None else None
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        d = Path(dirpath)
        if skip is not None and (d.resolve() == skip or skip in d.resolve().parents):
            dirnames[:] = []
            continue
        dirnames[:] = [n for n in dirnames if not n.startswith(".")]
        for n in filenames:
            if not n.startswith(".") and n.lower().endswith(ANNOTATE_SUFFIXES):
                out.append((d / n).relative_to(root).as_posix())
    return sorted(out)


def _mask_names(files: Sequence[str]) -> dict[str, str]:
    """``masks/<path with .png for its suffix>``; ``<path>.png`` for images that would collide."""
    plain = {f: str(Path(f).with_suffix(".png").as_posix()) for f in files}
    count: dict[str, int] = {}
    for m in plain.values():
        count[m] = count.get(m, 0) + 1
    return {f: f"{MASKS}/" + (m if count[m] == 1 else f + ".png") for f, m in plain.items()}


def _journal_key(rel: str) -> str:
    return hashlib.sha1(rel.encode("utf-8")).hexdigest() + ".json"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------------------------
# Reading images
# --------------------------------------------------------------------------------------------


def _rawmode(im) -> str:
    try:
        args = im.tile[0][3] if im.tile else ""
    except (IndexError, TypeError):
        return ""
    return str(args[0] if isinstance(args, tuple) and args else args)


def _read_16bit_colour(path: Path) -> np.ndarray | None:
    """16-bit RGB(A) through OpenCV (Pillow keeps only the high byte); None when unavailable."""
    try:
        import cv2
    except ImportError:  # pragma: no cover - grad-cam brings OpenCV
        return None
    arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if arr is None or arr.dtype != np.uint16 or arr.ndim != 3 or arr.shape[2] not in (3, 4):
        return None
    return arr[..., 2::-1].astype(np.float32) / np.float32(65535.0)  # BGR(A) -> RGB


def load_image(path: str | Path) -> np.ndarray:
    """Read any supported image as RGB float32 in [0, 1].

    8-bit data / 255; 16-bit (grey ``I;16*`` or RGB) / 65535; 32-bit integer grey / 65535,
    clipped; float grey clipped to [0, 1]; grey repeated to RGB; alpha dropped; palette, CMYK,
    YCbCr... converted with Pillow; first frame of multi-frame files.

    Returns:
        ``(H, W, 3) float32``.

    Raises:
        DataError: the file cannot be decoded (the message names it and gives Pillow's reason).
    """
    from PIL import Image

    path = Path(path)
    try:
        with Image.open(path) as im:
            mode, raw = im.mode, _rawmode(im)
            if mode in ("RGB", "RGBA") and ";16" in raw:
                arr16 = _read_16bit_colour(path)
                if arr16 is not None:
                    im.load()  # still check that Pillow can decode the file
                    return np.ascontiguousarray(arr16)
            im.load()
            if mode.startswith("I;16"):
                grey = np.asarray(im).astype(np.float32) / np.float32(65535.0)
            elif mode == "I":
                grey = np.clip(np.asarray(im, dtype=np.float64) / 65535.0, 0.0, 1.0).astype(np.float32)
            elif mode == "F":
                grey = np.clip(np.asarray(im, dtype=np.float32), 0.0, 1.0)
            elif mode in ("1", "L", "LA"):
                grey = np.asarray(im.convert("L")).astype(np.float32) / np.float32(255.0)
            else:
                rgb = im.convert("RGBA").convert("RGB") if mode in ("P", "PA") else im.convert("RGB")
                return np.ascontiguousarray(np.asarray(rgb).astype(np.float32) / np.float32(255.0))
            if grey.ndim != 2:
                raise ValueError(f"unexpected array shape {grey.shape} for mode {mode}")
            return np.ascontiguousarray(np.repeat(grey[..., None], 3, axis=2))
    except FileNotFoundError:
        raise DataError(f"cannot decode image {path}: the file does not exist") from None
    except Exception as e:  # Pillow raises OSError, SyntaxError, ValueError, zlib/struct errors...
        raise DataError(f"cannot decode image {path}: {type(e).__name__}: {e}") from None


def _to_model_input(img: np.ndarray, size: int) -> torch.Tensor:
    """``(H, W, 3)`` float in [0, 1] -> ``(3, S, S)`` (bilinear, antialiased, clamped: the loaders' resize)."""
    x = torch.from_numpy(img).permute(2, 0, 1)
    if x.shape[1:] != (size, size):
        x = F.interpolate(x[None], size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0].clamp_(0.0, 1.0)
    return x.contiguous()


@dataclass
class _Loaded:
    file: str
    height: int = 0
    width: int = 0
    inputs: dict[int, torch.Tensor] = field(default_factory=dict)  # size -> (3, S, S)
    error: str | None = None


def _load_one(root: Path, rel: str, sizes: Sequence[int]) -> _Loaded:
    try:
        img = load_image(root / rel)
    except DataError as e:
        # name the file by its path inside IMAGES_DIR (outputs do not depend on where it lies)
        return _Loaded(rel, error=str(e).replace(str(root / rel), rel))
    h, w = img.shape[:2]
    return _Loaded(rel, h, w, {s: _to_model_input(img, s) for s in sizes})


# --------------------------------------------------------------------------------------------
# Settings and results
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AnnotateSettings:
    """What decides the outputs (a resumed run must use the same).

    Attributes:
        theta, p_cut, min_votes, min_uncertain, fusion: the protocol (:func:`wsslib.aax.decide`).
        k: Monte Carlo dropout passes per model.
        method: CAM method (``"xgradcam"``, the paper's; ``"gradcam"``, ``"hirescam"``).
        map_threshold: mask = fused map > this.
        sizes: each model's input side ``S``.
        seed: seed of the dropout masks.
        category: COCO category name.
    """

    theta: float
    k: int
    method: str
    map_threshold: float
    sizes: tuple[int, ...]
    fusion: str = "intersection"
    p_cut: float = 0.5
    min_votes: int = 2
    min_uncertain: int = 2
    seed: int = 0
    category: str = "lesion"


@dataclass
class AnnotateResult:
    """What :func:`annotate` returns (on every process; counts are complete on rank 0).

    Attributes:
        out_dir: the output folder.
        n_images: image files found.
        counts: ``{"healthy", "diseased", "flagged", "errors"}`` over all images.
        n_new: images computed by this run (all processes), ``n_resumed``: found done.
        errors: ``[(file, reason)]`` of unreadable files.
        seconds: wall time of the computation; ``images_per_s``: ``n_new / seconds``.
    """

    out_dir: Path
    n_images: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    n_new: int = 0
    n_resumed: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    images_per_s: float = 0.0


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


def _model_names(paths: Sequence[Path]) -> list[str]:
    names: list[str] = []
    for p in paths:
        base, n = Path(p).stem, 2
        name = base
        while name in names:
            name, n = f"{base}_{n}", n + 1
        names.append(name)
    return names


def _resolve_settings(
    models: Sequence[Classifier], paths: Sequence[Path], size: int | None, map_threshold: float | None
) -> tuple[tuple[int, ...], float]:
    sizes = []
    for m, p in zip(models, paths):
        s = size if size is not None else getattr(m, "image_size", None)
        if s is None and m.name == "vit_small":
            s = m.config.get("kwargs", {}).get("image_size")
        if s is None:
            raise DataError(f"{p}: the checkpoint does not record the image size it was trained at; pass --size S")
        s = int(s)
        if s < 1 or (m.name == "vit_small" and s % 16):
            raise DataError(f"{p}: image size {s} does not suit {m.name}" + (" (needs a multiple of 16)" if m.name == "vit_small" else ""))
        sizes.append(s)
    if map_threshold is None:
        found = {float(t) for t in (getattr(m, "map_threshold", None) for m in models) if t is not None}
        if len(found) > 1:
            raise DataError(f"the checkpoints record different map thresholds {sorted(found)}; pass --map-threshold T")
        if not found:
            raise DataError(
                "no map threshold: the checkpoints do not record one; pass --map-threshold T "
                "(choose it on validation images, e.g. with wsslib.aax.select_aax_threshold)")
        map_threshold = found.pop()
    if not 0.0 <= float(map_threshold) <= 1.0:
        raise DataError(f"map threshold must be in [0, 1], got {map_threshold}")
    return tuple(sizes), float(map_threshold)


def _image_generator(seed: int, model_index: int, rel: str) -> torch.Generator:
    digest = hashlib.sha256(f"{seed}\0{model_index}\0{rel}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


def _encode_png(mask: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8) * np.uint8(255)).save(buf, format="PNG")
    return buf.getvalue()


def _rle(mask: np.ndarray) -> tuple[dict[str, Any], int, list[float]]:
    from pycocotools import mask as mask_utils

    enc = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    area = int(mask_utils.area(enc))
    bbox = [float(v) for v in mask_utils.toBbox(enc).tolist()]
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": enc["counts"].decode("ascii")}, area, bbox


def _rle_to_mask(rle: dict[str, Any]) -> np.ndarray:
    import warnings

    from pycocotools import mask as mask_utils

    with warnings.catch_warnings():  # pycocotools' numpy-2 "copy keyword" DeprecationWarning
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode("ascii")}).astype(bool)


class _Writer:
    """Writes masks and journal records atomically; holds the crash test hook."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.journal = out / JOURNAL
        self.written = 0
        crash = os.environ.get(CRASH_ENV)
        self.crash_after = int(crash) if crash else None

    def mask(self, rel_mask: str, mask: np.ndarray) -> None:
        atomic_write(self.out / rel_mask, _encode_png(mask))

    def record(self, rec: dict[str, Any]) -> None:
        if self.crash_after is not None and self.written >= self.crash_after:
            os.kill(os.getpid(), signal.SIGKILL)  # test hook: die between a mask and its record
        atomic_write(self.journal / _journal_key(rec["file"]), _dumps(rec))
        self.written += 1


def _dumps(obj: Any, indent: int | None = None) -> bytes:
    return (json.dumps(obj, indent=indent, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")


def _read_journal(journal: Path) -> dict[str, dict[str, Any]]:
    """``{file: record}`` of every readable record (a torn or foreign file counts as absent)."""
    out: dict[str, dict[str, Any]] = {}
    if not journal.is_dir():
        return out
    for p in journal.glob("*.json"):
        try:
            rec = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(rec, dict) and isinstance(rec.get("file"), str) and p.name == _journal_key(rec["file"]) \
                and rec.get("status") in ("ok", "error"):
            out[rec["file"]] = rec
    return out


def _is_done(rec: dict[str, Any] | None, retry_errors: bool) -> bool:
    return rec is not None and (rec["status"] == "ok" or not retry_errors)


def _compute_batch(
    loaded: list[_Loaded],
    models: Sequence[Classifier],
    settings: AnnotateSettings,
    mask_names: dict[str, str],
    writer: _Writer,
) -> None:
    """Run the protocol on one batch and write its masks and records."""
    good = [item for item in loaded if item.error is None]
    if good:
        m_count, b = len(models), len(good)
        p = torch.empty(m_count, b)
        u = torch.empty(m_count, b)
        cams: list[torch.Tensor] = []
        for i, (model, s) in enumerate(zip(models, settings.sizes)):
            x = torch.stack([item.inputs[s] for item in good])
            c = model.fc.in_features
            masks = torch.cat([
                sample_dropout_masks(settings.k, 1, c, model.dropout.p, generator=_image_generator(settings.seed, i, item.file))
                for item in good], dim=1)
            out = predict_explain(model, x, k=settings.k, method=settings.method, targets=1, batch_size=b, masks=masks)
            p[i], u[i] = out.p.float().cpu(), out.u.float().cpu()
            cams.append(out.cams.float().cpu())
        d = decide(p, u, theta=settings.theta, p_cut=settings.p_cut,
                   min_votes=settings.min_votes, min_uncertain=settings.min_uncertain)
    by_file = {item.file: j for j, item in enumerate(good)}
    for item in loaded:
        if item.error is not None:
            writer.record({"file": item.file, "status": "error", "reason": item.error})
            continue
        j = by_file[item.file]
        code = int(d.decision[j])
        rec: dict[str, Any] = {
            "file": item.file, "status": "ok", "width": item.width, "height": item.height,
            "decision": DECISION_NAMES[code], "p": p[:, j].tolist(), "u": u[:, j].tolist(),
            "agree": d.agree[:, j].tolist(), "mask": None, "rle": None, "area": 0, "bbox": None,
        }
        if code == int(Decision.DISEASED):
            up = torch.stack([
                F.interpolate(cam[j][None, None], size=(item.height, item.width), mode="bilinear", align_corners=False)[0]
                for cam in cams])  # (M, 1, H, W)
            fused = fuse_maps(up, d.agree[:, j : j + 1], settings.fusion)  # type: ignore[arg-type]
            mask = binarize(fused, settings.map_threshold)[0].numpy()
            rec["rle"], rec["area"], bbox = _rle(mask)
            rec["bbox"] = bbox if rec["area"] else None
            rec["mask"] = mask_names[item.file]
            writer.mask(rec["mask"], mask)
        writer.record(rec)


def _batches(files: Sequence[str], batch_size: int) -> list[list[str]]:
    return [list(files[i : i + batch_size]) for i in range(0, len(files), batch_size)]


def _write_outputs(out: Path, files: Sequence[str], records: dict[str, dict[str, Any]],
                   model_names: Sequence[str], settings: AnnotateSettings) -> dict[str, int]:
    """Rebuild decisions.csv, errors.csv, review/, the COCO file and summary.json from the records."""
    recs = [records[f] for f in files if f in records]
    ok = [r for r in recs if r["status"] == "ok"]
    bad = [r for r in recs if r["status"] == "error"]

    for r in ok:  # a mask lost after its record was written (or never fetched from another node)
        if r["mask"] and not (out / r["mask"]).is_file():
            atomic_write(out / r["mask"], _encode_png(_rle_to_mask(r["rle"])))

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["file", "decision", *[f"{k}_{n}" for n in model_names for k in ("p", "u")], "mask"])
    for r in ok:
        pu = [f"{v:.6f}" for pair in zip(r["p"], r["u"]) for v in pair]
        w.writerow([r["file"], r["decision"], *pu, r["mask"] or ""])
    atomic_write(out / DECISIONS_CSV, buf.getvalue().encode("utf-8"), fsync=True)

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["file", "reason"])
    for r in bad:
        w.writerow([r["file"], r["reason"]])
    atomic_write(out / ERRORS_CSV, buf.getvalue().encode("utf-8"), fsync=True)

    flagged = [r["file"] for r in ok if r["decision"] == "flagged"]
    atomic_write(out / REVIEW / "flagged.txt", "".join(f + "\n" for f in flagged).encode("utf-8"), fsync=True)

    images, annotations = [], []
    for image_id, r in enumerate(ok, start=1):
        images.append({"id": image_id, "file_name": r["file"], "width": r["width"], "height": r["height"],
                       "decision": r["decision"]})
        if r["decision"] == "diseased" and r["area"] > 0:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": 1,
                                "segmentation": r["rle"], "area": r["area"], "bbox": r["bbox"], "iscrowd": 1})
    coco = {
        "info": {"description": "AAX pseudo-masks written by wsslib annotate", "version": __version__},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [{"id": 1, "name": settings.category, "supercategory": settings.category}],
    }
    atomic_write(out / COCO_JSON, _dumps(coco), fsync=True)

    counts = {name: sum(r["decision"] == name for r in ok) for name in DECISION_NAMES}
    counts["errors"] = len(bad)
    summary = {
        "n_images": len(files),
        "counts": counts,
        "empty_masks": sum(r["decision"] == "diseased" and r["area"] == 0 for r in ok),
        "pending": len(files) - len(recs),
        "models": list(model_names),
        "settings": asdict(settings),
        "outputs": {"masks": MASKS + "/", "decisions": DECISIONS_CSV, "errors": ERRORS_CSV,
                    "review": f"{REVIEW}/flagged.txt", "coco": COCO_JSON, "journal": JOURNAL + "/"},
    }
    atomic_write(out / SUMMARY_JSON, _dumps(summary, indent=1), fsync=True)
    return counts


def _prepare_run(out: Path, run: dict[str, Any]) -> str | None:
    """Rank 0: create OUT_DIR, check or write run.json, delete stale temporary files.

    Returns an error message (a resumed run with other settings), or None.
    """
    out.mkdir(parents=True, exist_ok=True)
    path = out / RUN_JSON
    if path.is_file():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            old = None
        if isinstance(old, dict):
            before, now = old.get("settings") or {}, run["settings"]
            diffs = [f"{key} {before.get(key)!r} then, {now[key]!r} now" for key in now if before.get(key) != now[key]]
            if old.get("checkpoints") != run["checkpoints"]:
                names = lambda r: [f"{c['name']} (sha256 {c['sha256'][:12]})" for c in r or []]  # noqa: E731
                diffs.append(f"checkpoints {names(old.get('checkpoints'))} then, {names(run['checkpoints'])} now")
            if diffs:
                return (f"{out} holds a run made with other settings or checkpoints ({'; '.join(diffs)}); "
                        "resume with the same ones, or choose another --out")
            if old.get("batch_size") != run["batch_size"]:
                print(f"wsslib annotate: resuming with --batch {run['batch_size']} (was {old.get('batch_size')}): "
                      "results may differ from an uninterrupted run in the last float digits", file=sys.stderr)
            _remove_stale_temps(out)
            return None
    _remove_stale_temps(out)
    atomic_write(path, _dumps(run, indent=1), fsync=True)
    return None


def annotate(
    images_dir: str | Path,
    checkpoints: Sequence[str | Path],
    out_dir: str | Path,
    *,
    theta: float = 0.1,
    k: int = 20,
    batch_size: int = 16,
    device: str | torch.device = "auto",
    size: int | None = None,
    map_threshold: float | None = None,
    fusion: Fusion = "intersection",
    method: str = "xgradcam",
    p_cut: float = 0.5,
    min_votes: int = 2,
    min_uncertain: int = 2,
    seed: int = 0,
    category: str = "lesion",
    workers: int = 2,
    retry_errors: bool = False,
    progress: bool = True,
) -> AnnotateResult:
    """Run the AAX protocol on every image of ``images_dir``; write masks, CSV, review list, COCO.

    See the module docstring for the outputs, resuming and determinism. Runs unchanged under
    ``torchrun`` (batches shared between the processes, outputs written by rank 0).

    Args:
        images_dir: folder of images (searched recursively).
        checkpoints: ``M >= 1`` files written by :func:`wsslib.models.save_checkpoint` (two-class
            models, class 1 = Diseased; the paper uses 3).
        out_dir: output folder (created; an existing one is resumed).
        theta: uncertainty threshold of the protocol (paper 0.1).
        k: MC dropout passes per model (default 20).
        batch_size: images per forward pass.
        device: "auto", "cpu", "cuda", ... (``cuda:LOCAL_RANK`` under torchrun).
        size: input side ``S`` for every model (default: each checkpoint's ``image_size``).
        map_threshold: mask threshold of the fused map (default: the checkpoints' ``map_threshold``).
        fusion: how the agreeing models' maps combine (paper: ``"intersection"``).
        method: CAM method with a fast path: ``"xgradcam"`` (paper), ``"gradcam"``, ``"hirescam"``.
        p_cut, min_votes, min_uncertain: see :func:`wsslib.aax.decide`.
        seed: seed of the dropout masks.
        category: COCO category name of the masks.
        workers: threads decoding the next batch while the models run (0: none).
        retry_errors: compute again the files an earlier run could not read.
        progress: progress bar (rank 0) with images/s.

    Returns:
        :class:`AnnotateResult`.

    Raises:
        DataError: missing folder, unusable checkpoint, missing image size or map threshold, or
            an ``out_dir`` made with other settings. Unreadable images are not errors: they are
            listed in ``errors.csv`` and skipped.
    """
    if fusion not in FUSIONS:
        raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
    if method not in FAST_METHODS:
        raise ValueError(f"method must be one of {sorted(FAST_METHODS)}, got {method!r}")
    if int(batch_size) < 1 or int(k) < 1:
        raise ValueError(f"batch_size and k must be >= 1, got {batch_size} and {k}")
    if not checkpoints:
        raise ValueError("annotate needs at least one checkpoint (the AAX paper uses 3)")
    info = _dist.init_distributed(device=device)
    dev = _dist.device_for_rank(device)
    root, out = Path(images_dir), Path(out_dir)
    paths = [Path(c) for c in checkpoints]

    models = [load_checkpoint(pth, map_location=dev) for pth in paths]
    for m, pth in zip(models, paths):
        if m.num_classes < 2:
            raise DataError(f"{pth}: a {m.num_classes}-class model; annotate needs class 1 = Diseased")
    sizes, thr = _resolve_settings(models, paths, size, map_threshold)
    settings = AnnotateSettings(theta=float(theta), k=int(k), method=method, map_threshold=thr, sizes=sizes,
                                fusion=fusion, p_cut=float(p_cut), min_votes=int(min_votes),
                                min_uncertain=int(min_uncertain), seed=int(seed), category=category)
    names = _model_names(paths)
    files = list_images(root, exclude=out)
    mask_names = _mask_names(files)
    batches = _batches(files, int(batch_size))

    # rank 0 checks the folder and decides what is left to do; everyone follows that plan
    plan: dict[str, Any] = {"error": None, "pending": [], "n_done": 0}
    if info.is_main:
        run = {
            "wsslib": __version__,
            "images_dir": str(root.resolve()),
            "settings": asdict(settings) | {"sizes": list(sizes)},
            "checkpoints": [{"name": n, "sha256": _sha256(pth)} for n, pth in zip(names, paths)],
            "batch_size": int(batch_size),
        }
        try:
            plan["error"] = _prepare_run(out, run)
        except OSError as e:
            plan["error"] = f"cannot write to {out}: {e}"
        if plan["error"] is None:
            done = _read_journal(out / JOURNAL)
            plan["pending"] = [g for g, files_g in enumerate(batches)
                               if not all(_is_done(done.get(f), retry_errors) for f in files_g)]
            plan["n_done"] = sum(_is_done(done.get(f), retry_errors) for f in files)
    plan = _dist.broadcast_object(plan)
    if plan["error"]:
        raise DataError(plan["error"])
    mine = _dist.shard(plan["pending"], info.rank, info.world_size)
    n_todo = sum(len(batches[g]) for g in mine)

    writer = _Writer(out)
    t0 = time.perf_counter()
    from tqdm import tqdm

    bar = tqdm(total=n_todo, unit="img", desc="annotate" + (f" [rank 0 of {info.world_size}]" if info.distributed else ""),
               disable=not progress or not info.is_main, dynamic_ncols=True)
    n_new = 0
    pool = ThreadPoolExecutor(max_workers=workers) if workers > 0 else None

    def submit(g: int) -> list[Future[_Loaded]] | list[_Loaded]:
        if pool is None:
            return [_load_one(root, f, sorted(set(sizes))) for f in batches[g]]
        return [pool.submit(_load_one, root, f, sorted(set(sizes))) for f in batches[g]]

    try:
        ahead = submit(mine[0]) if mine else []
        for idx, g in enumerate(mine):
            current = ahead
            if idx + 1 < len(mine):
                ahead = submit(mine[idx + 1])
            loaded = [x.result() if isinstance(x, Future) else x for x in current]
            _compute_batch(loaded, models, settings, mask_names, writer)
            n_new += len(loaded)
            bar.update(len(loaded))
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    _dist.barrier()  # the time of the slowest process counts
    seconds = time.perf_counter() - t0

    # merge: rank 0 fetches the records it lacks (OUT_DIR need not be shared between machines)
    if info.distributed:
        have = set(_read_journal(out / JOURNAL)) if info.is_main else None
        have = _dist.broadcast_object(have)
        local = _read_journal(out / JOURNAL) if not info.is_main else {}
        missing = [rec for f, rec in local.items() if f not in have]
        gathered = _dist.gather_objects((n_new, missing))
        if info.is_main and gathered:
            n_new = sum(n for n, _ in gathered)
            for _, recs in gathered[1:]:
                for rec in recs:
                    if rec["status"] == "ok" and rec["mask"]:
                        atomic_write(out / rec["mask"], _encode_png(_rle_to_mask(rec["rle"])))
                    atomic_write(out / JOURNAL / _journal_key(rec["file"]), _dumps(rec))

    result = AnnotateResult(out_dir=out, n_images=len(files), n_new=n_new, n_resumed=plan["n_done"],
                            seconds=seconds, images_per_s=n_new / seconds if seconds > 0 else 0.0)
    if info.is_main:
        records = _read_journal(out / JOURNAL)
        result.counts = _write_outputs(out, files, records, names, settings)
        result.errors = [(f, records[f]["reason"]) for f in files if f in records and records[f]["status"] == "error"]
    _dist.barrier()
    return result


def format_summary(res: AnnotateResult, max_errors: int = 20) -> str:
    """A few lines for the terminal: counts, speed, bad files, where the outputs are."""
    c = res.counts
    lines = [
        f"annotated {res.n_images} image(s) into {res.out_dir}: {c.get('healthy', 0)} healthy, "
        f"{c.get('diseased', 0)} diseased (masks), {c.get('flagged', 0)} flagged for review, "
        f"{c.get('errors', 0)} unreadable",
        f"this run: {res.n_new} image(s) in {res.seconds:.1f} s ({res.images_per_s:.2f} images/s); "
        f"{res.n_resumed} already done by an earlier run",
    ]
    if res.errors:
        lines.append(f"skipped {len(res.errors)} unreadable file(s) (listed in {ERRORS_CSV}):")
        lines += [f"  {f}: {reason}" for f, reason in res.errors[:max_errors]]
        if len(res.errors) > max_errors:
            lines.append(f"  ... and {len(res.errors) - max_errors} more")
    return "\n".join(lines)

