"""``wsslib annotate``: pixel masks for a folder of images with the AAX protocol, resumably.

For annotation teams: an ensemble of classifiers (checkpoints written by
:func:`wsslib.models.save_checkpoint`) looks at every image of a folder; the AAX protocol
(:mod:`wsslib.methods.aax`: Monte Carlo dropout ``p``, ``u`` and a CAM per model, from
:func:`wsslib.explain.inference.predict_explain`) calls each image Healthy, Diseased (with a mask) or
Flagged for the expert::

    wsslib annotate IMAGES_DIR --models MODELS_DIR --out OUT_DIR [--theta T] [--k 20]
                    [--batch 16] [--device auto] [--size S] [--map-threshold T] [--min-side 16]
    wsslib annotate IMAGES_DIR --models a.pt b.pt c.pt --out OUT_DIR ...

``--models`` takes checkpoint files or a folder of them (what ``wsslib train --out DIR`` writes:
its ``*.pt``, in the order of its ``model_card.json``). Theta, fusion, image sizes and the map
threshold come from the checkpoints (``wsslib train`` records them) unless given.

From Python: ``annotate(images_dir, checkpoints, out_dir, AnnotateSettings(k=20))``.

What ``OUT_DIR`` holds:

* ``masks/<name>.png``: one 8-bit PNG (0 background, 255 lesion) per Diseased image, at the
  image's own size (``<name>`` is the image's path inside ``IMAGES_DIR`` with ``.png`` for its
  suffix; ``<name>.<suffix>.png`` when two images differ only by their suffix).
* ``decisions.csv``: ``file, decision, flag_reason, p_<model>, u_<model>..., ood_score, score,
  mask, note`` per image. ``flag_reason`` of a Flagged image: ``uncertain`` (the paper's rule:
  ``min_uncertain`` models with ``u > theta``) or ``out_of_distribution`` (the gate below; it wins
  when both hold); empty otherwise. ``ood_score``: the mean over the gated members of
  ``gate score / gate cut`` (above 1: beyond a member's cut; empty without gates). ``score``: the
  mask's confidence, the mean of the fused map inside the mask (empty without a mask). ``note``:
  e.g. "multi-page file: first of 3 pages used".
* ``review/flagged.txt``: the Flagged images (paths inside ``IMAGES_DIR``, one a line): the
  expert's work list.
* ``annotations.coco.json``: COCO instances for annotation tools (CVAT, Label Studio, FiftyOne
  ...): every decoded image under ``images`` (with an extra ``decision`` field), one annotation
  per non-empty mask with a compressed-RLE ``segmentation`` (pycocotools), ``area``, ``bbox``
  (``[x, y, w, h]``), ``score`` (the mask's mean fused-map value, in [0, 1]: rank masks by it)
  and ``iscrowd: 1`` (COCO's convention for RLE masks; detectors trained on
  the file may skip crowd annotations: set it to 0 for that).
* ``errors.csv``: ``file, reason`` of every file that could not be read, and of every image whose
  shorter side is below ``--min-side`` (default 16 px: a 1x1 image would otherwise be resized to
  the model's input and get a "mask"); skipped, never fatal.
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

Out-of-distribution gate. Checkpoints written by ``wsslib train`` carry a k-nearest-neighbour
gate on their model's pooled features (:mod:`wsslib.methods.ood`, cut at a validation quantile);
an image that at least ``min_ood`` gates put beyond their cut (default: the rule the gates were
fitted for, ``wsslib train``'s "any member"; capped at the number of gated members) is Flagged with ``flag_reason`` ``out_of_distribution``, whatever the
models say. ``--no-ood`` turns it off; checkpoints without a gate are not gated.

Images. jpg, png, tif/tiff and bmp, in ``IMAGES_DIR`` and its sub-folders (hidden files and
``OUT_DIR`` skipped), are read by the data loaders' own reader,
:func:`wsslib.data.io.read_image_float`: RGB float in [0, 1], 8-bit data divided by 255, 16-bit
data (grey or RGB) by 65535 (the file's bit depth, not its maximum), 32-bit integer grey by 65535
(clipped), float grey clipped to [0, 1]; grey is repeated over three channels, alpha is dropped,
palette/CMYK/YCbCr are converted; a multi-page file gives its first page (noted in
``decisions.csv``). EXIF orientation is not applied (as in the training
loaders). Each model sees the image resized to its ``S x S`` (bilinear, antialiased: the
training loaders' resize); each model's CAM is resized back to the image's size (bilinear)
before the agreeing models' maps are fused and thresholded.

Scale-out. Under ``torchrun`` (see :mod:`wsslib.core.distributed`) the batches are shared round
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
import sys
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from wsslib import __version__
from wsslib.core import distributed as _dist
from wsslib.methods.aax import DECISION_NAMES, FUSIONS, Decision, Fusion, decide, fuse_maps
from wsslib.methods.ood import OODGate, ensemble_flags
from wsslib.explain.cams import FAST_METHODS
from wsslib.core.errors import DataError
from wsslib.explain.inference import predict_explain
from wsslib.models.classifiers import Classifier, load_checkpoint
from wsslib.evaluate.thresholds import binarize
from wsslib.explain.uncertainty import sample_dropout_masks
from wsslib.core.utils import atomic_write
from wsslib.data.io import read_image_float

__all__ = [
    "ANNOTATE_SUFFIXES",
    "AnnotateResult",
    "AnnotateSettings",
    "annotate",
    "expand_checkpoints",
    "list_images",
    "load_image",
]

ANNOTATE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")

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
        DataError: ``images_dir`` does not exist or is not a folder.
    """
    root = Path(images_dir)
    if not root.exists():
        raise DataError(f"{root}: the folder does not exist")
    if not root.is_dir():
        raise DataError(f"{root}: not a folder (give the folder that holds the images)")
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


def load_image(path: str | Path, notes: list[str] | None = None) -> np.ndarray:
    """Read any supported image as RGB float32 ``(H, W, 3)`` in [0, 1]: the data loaders' reader,
    :func:`wsslib.data.io.read_image_float` (see there for bit depths, modes and multi-page files).

    Raises:
        DataError: the file cannot be decoded (the message names it and gives Pillow's reason).
    """
    return read_image_float(path, notes)


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
    note: str = ""


def _load_one(root: Path, rel: str, sizes: Sequence[int], min_side: int = 1) -> _Loaded:
    notes: list[str] = []
    try:
        img = load_image(root / rel, notes)
    except DataError as e:
        # name the file by its path inside IMAGES_DIR (outputs do not depend on where it lies)
        return _Loaded(rel, error=str(e).replace(str(root / rel), rel))
    h, w = img.shape[:2]
    if min(h, w) < min_side:
        return _Loaded(rel, h, w, error=f"image too small: {rel} is {w}x{h} px (W x H); the shorter side must be "
                                         f"at least {min_side} px (--min-side)")
    return _Loaded(rel, h, w, {s: _to_model_input(img, s) for s in sizes}, note="; ".join(notes))


# --------------------------------------------------------------------------------------------
# Settings and results
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AnnotateSettings:
    """The protocol: everything that decides the outputs (a resumed run must use the same).

    ``sizes`` and ``map_threshold`` may be left None: :meth:`resolve` then takes them from the
    checkpoints; ``run.json`` and ``summary.json`` record the resolved values.

    Attributes:
        theta, p_cut, min_votes, min_uncertain, fusion: the protocol
            (:func:`wsslib.methods.aax.decide`, :func:`wsslib.methods.aax.fuse_maps`); theta and
            fusion None: the checkpoints' (``wsslib train`` records them), else the paper's 0.1
            and ``"intersection"``.
        k: Monte Carlo dropout passes per model.
        method: CAM method with a fast path (``"xgradcam"``, the paper's; ``"gradcam"``, ``"hirescam"``).
        map_threshold: mask = fused map > this, in [0, 1] (None: the checkpoints' ``map_threshold``).
        sizes: each model's input side ``S``: one value for every model, or one per checkpoint
            (None: each checkpoint's ``image_size``).
        seed: seed of the dropout masks (per image and model: see the module docstring).
        category: COCO category name of the masks.
        min_side: images whose shorter side is below this (px) go to ``errors.csv``.
        ood: use the checkpoints' out-of-distribution gates (:mod:`wsslib.methods.ood`).
        min_ood: gates that must flag an image (None: the rule recorded with the gates, else 1;
            capped at the number of gated members).

    Raises:
        ValueError: a field out of its range (named in the message).
    """

    theta: float | None = None
    k: int = 20
    method: str = "xgradcam"
    map_threshold: float | None = None
    sizes: tuple[int, ...] | None = None
    fusion: Fusion | None = None
    p_cut: float = 0.5
    min_votes: int = 2
    min_uncertain: int = 2
    seed: int = 0
    category: str = "lesion"
    min_side: int = 16
    ood: bool = True
    min_ood: int | None = None

    def __post_init__(self) -> None:
        if self.fusion is not None and self.fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {self.fusion!r}")
        if self.method not in FAST_METHODS:
            raise ValueError(f"method must be one of {sorted(FAST_METHODS)}, got {self.method!r}")
        if int(self.k) < 1:
            raise ValueError(f"k (MC dropout passes) must be >= 1, got {self.k}")
        if int(self.min_side) < 1:
            raise ValueError(f"min_side must be >= 1 px, got {self.min_side}")
        if self.min_ood is not None and int(self.min_ood) < 1:
            raise ValueError(f"min_ood must be >= 1, got {self.min_ood}")
        if self.theta is not None and not float(self.theta) >= 0.0:
            raise ValueError(f"theta must be >= 0, got {self.theta}")
        if self.map_threshold is not None and not 0.0 <= float(self.map_threshold) <= 1.0:
            raise DataError(f"map threshold must be in [0, 1], got {self.map_threshold}")
        if self.sizes is not None:
            object.__setattr__(self, "sizes", tuple(int(s) for s in self.sizes))

    def resolve(self, models: Sequence[Classifier], paths: Sequence[Path]) -> AnnotateSettings:
        """These settings with ``sizes`` (one per model) and ``map_threshold`` filled in.

        Raises:
            DataError: a checkpoint records no image size (and none was given), a size does not
                suit its model, the checkpoints disagree on or lack a map threshold.
        """
        return replace(self, theta=float(self._recorded("theta", models, 0.1)), k=int(self.k), p_cut=float(self.p_cut),
                       min_votes=int(self.min_votes), min_uncertain=int(self.min_uncertain), seed=int(self.seed),
                       fusion=self._recorded("fusion", models, "intersection"), min_side=int(self.min_side),
                       min_ood=int(self._min_ood(models)), ood=bool(self.ood),
                       sizes=self._model_sizes(models, paths), map_threshold=self._map_threshold(models))

    def _min_ood(self, models: Sequence[Classifier]) -> int:
        if self.min_ood is not None:
            return int(self.min_ood)
        found = {int(g.get("min_votes", 1)) for g in ((getattr(m, "meta", None) or {}).get("ood") for m in models)
                 if isinstance(g, dict)}
        return max(found) if found else 1

    def _recorded(self, key: str, models: Sequence[Classifier], default: Any) -> Any:
        """``key`` (theta, fusion) as given, else as the checkpoints record it, else ``default``."""
        found = {(getattr(m, "meta", None) or {}).get(key) for m in models} - {None}
        if getattr(self, key) is not None:
            if found and found != {getattr(self, key)}:
                import warnings

                warnings.warn(f"--{key} {getattr(self, key)!r} differs from the checkpoints' {sorted(map(str, found))}: "
                              "their map threshold was chosen on validation for the latter", stacklevel=3)
            return getattr(self, key)
        if len(found) > 1:
            raise DataError(f"the checkpoints record different {key} values {sorted(map(str, found))}; pass --{key}")
        value = found.pop() if found else default
        if key == "fusion" and value not in FUSIONS:
            raise DataError(f"the checkpoints record an unknown fusion {value!r}; pass --fusion")
        return value

    def _model_sizes(self, models: Sequence[Classifier], paths: Sequence[Path]) -> tuple[int, ...]:
        given: Sequence[int | None] = [None] * len(models)
        if self.sizes is not None:
            if len(self.sizes) not in (1, len(models)):
                raise ValueError(f"sizes: give one size or one per checkpoint ({len(models)}), got {self.sizes}")
            given = list(self.sizes) * (len(models) if len(self.sizes) == 1 else 1)
        sizes = []
        for m, p, s in zip(models, paths, given):
            s = s if s is not None else getattr(m, "image_size", None)
            if s is None and m.name == "vit_small":
                s = m.config.get("kwargs", {}).get("image_size")
            if s is None:
                raise DataError(f"{p}: the checkpoint does not record the image size it was trained at; pass --size S")
            s = int(s)
            if s < 1 or (m.name == "vit_small" and s % 16):
                vit = " (needs a multiple of 16)" if m.name == "vit_small" else ""
                raise DataError(f"{p}: image size {s} does not suit {m.name}{vit}")
            sizes.append(s)
        return tuple(sizes)

    def _map_threshold(self, models: Sequence[Classifier]) -> float:
        if self.map_threshold is not None:
            return float(self.map_threshold)
        found = {float(t) for t in (getattr(m, "map_threshold", None) for m in models) if t is not None}
        if len(found) > 1:
            raise DataError(f"the checkpoints record different map thresholds {sorted(found)}; pass --map-threshold T")
        if not found:
            raise DataError(
                "no map threshold: the checkpoints do not record one; pass --map-threshold T "
                "(choose it on validation images, e.g. with wsslib.methods.aax.select_aax_threshold)")
        thr = found.pop()
        if not 0.0 <= thr <= 1.0:
            raise DataError(f"map threshold must be in [0, 1], got {thr}")
        return thr


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
    """Writes masks and journal records atomically (a record after its image's mask)."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.journal = out / JOURNAL
        self.written = 0  # records written by this process

    def mask(self, rel_mask: str, mask: np.ndarray) -> None:
        atomic_write(self.out / rel_mask, _encode_png(mask))

    def record(self, rec: dict[str, Any]) -> None:
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


def _explain_batch(good: list[_Loaded], models: Sequence[Classifier], settings: AnnotateSettings,
                   gates: Sequence[OODGate | None] = ()) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor], Any,
                                                                torch.Tensor, torch.Tensor]:
    """Every model's MC dropout ``p``, ``u`` ``(M, B)`` and class-1 CAMs ``M x (B, S_i, S_i)``
    on the decoded images of a batch, the protocol's decision (:func:`decide`), the gated
    members' ``score / cut`` ``(G, B)`` and the out-of-distribution flags ``(B,)`` bool."""
    m_count, b = len(models), len(good)
    p, u = torch.empty(m_count, b), torch.empty(m_count, b)
    cams: list[torch.Tensor] = []
    ratios: list[torch.Tensor] = []
    for i, (model, s) in enumerate(zip(models, settings.sizes or ())):
        x = torch.stack([item.inputs[s] for item in good])
        c = model.fc.in_features
        masks = torch.cat([
            sample_dropout_masks(settings.k, 1, c, model.dropout.p, generator=_image_generator(settings.seed, i, item.file))
            for item in good], dim=1)
        out = predict_explain(model, x, k=settings.k, method=settings.method, targets=1, batch_size=b, masks=masks)
        p[i], u[i] = out.p.float().cpu(), out.u.float().cpu()
        cams.append(out.cams.float().cpu())
        gate = gates[i] if i < len(gates) else None
        if gate is not None:
            ratios.append(gate.score(out.embedding) / max(gate.cut, 1e-12))
    d = decide(p, u, theta=settings.theta, p_cut=settings.p_cut,
               min_votes=settings.min_votes, min_uncertain=settings.min_uncertain)
    ratio = torch.stack(ratios) if ratios else torch.empty(0, b)
    ood = ensemble_flags(ratio > 1.0, settings.min_ood) if ratios else torch.zeros(b, dtype=torch.bool)
    return p, u, cams, d, ratio, ood


def _fused_mask(cams: Sequence[torch.Tensor], j: int, agree: torch.Tensor, item: _Loaded,
                settings: AnnotateSettings) -> tuple[np.ndarray, float]:
    """Image ``j``'s mask ``(H, W)`` bool: each CAM resized to the image (bilinear), the agreeing
    models' maps fused (:func:`fuse_maps`), then thresholded at ``settings.map_threshold``; and
    the mask's score, the mean fused value inside it (0 for an empty mask)."""
    up = torch.stack([
        F.interpolate(cam[j][None, None], size=(item.height, item.width), mode="bilinear", align_corners=False)[0]
        for cam in cams])  # (M, 1, H, W)
    fused = fuse_maps(up, agree[:, j : j + 1], settings.fusion)  # (1, H, W)
    mask = binarize(fused, settings.map_threshold)[0]
    fused = fused[0]
    score = float(fused[mask].double().mean()) if bool(mask.any()) else 0.0
    return mask.numpy(), score


def _compute_batch(
    loaded: list[_Loaded],
    models: Sequence[Classifier],
    settings: AnnotateSettings,
    mask_names: dict[str, str],
    writer: _Writer,
    gates: Sequence[OODGate | None] = (),
) -> None:
    """Run the protocol (and the out-of-distribution gate) on one batch and write its masks and
    records (each record after its mask)."""
    good = [item for item in loaded if item.error is None]
    if good:
        p, u, cams, d, ratio, ood = _explain_batch(good, models, settings, gates)
    by_file = {item.file: j for j, item in enumerate(good)}
    for item in loaded:
        if item.error is not None:
            writer.record({"file": item.file, "status": "error", "reason": item.error})
            continue
        j = by_file[item.file]
        code, reason = int(d.decision[j]), None
        if bool(ood[j]):
            code, reason = int(Decision.FLAGGED), "out_of_distribution"
        elif code == int(Decision.FLAGGED):
            reason = "uncertain"
        rec: dict[str, Any] = {
            "file": item.file, "status": "ok", "width": item.width, "height": item.height,
            "decision": DECISION_NAMES[code], "flag_reason": reason, "p": p[:, j].tolist(), "u": u[:, j].tolist(),
            "agree": d.agree[:, j].tolist(), "ood": ratio[:, j].tolist(), "mask": None, "rle": None, "area": 0,
            "bbox": None, "score": None, "note": item.note,
        }
        if code == int(Decision.DISEASED):
            mask, rec["score"] = _fused_mask(cams, j, d.agree, item, settings)
            rec["rle"], rec["area"], bbox = _rle(mask)
            rec["bbox"] = bbox if rec["area"] else None
            rec["mask"] = mask_names[item.file]
            writer.mask(rec["mask"], mask)
        writer.record(rec)


def _batches(files: Sequence[str], batch_size: int) -> list[list[str]]:
    return [list(files[i : i + batch_size]) for i in range(0, len(files), batch_size)]


def _csv(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue().encode("utf-8")


def _coco(ok: Sequence[dict[str, Any]], category: str) -> dict[str, Any]:
    """COCO instances: every decoded image, one compressed-RLE annotation per non-empty mask."""
    images, annotations = [], []
    for image_id, r in enumerate(ok, start=1):
        images.append({"id": image_id, "file_name": r["file"], "width": r["width"], "height": r["height"],
                       "decision": r["decision"], "flag_reason": r.get("flag_reason")})
        if r["decision"] == "diseased" and r["area"] > 0:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": 1,
                                "segmentation": r["rle"], "area": r["area"], "bbox": r["bbox"],
                                "score": round(float(r.get("score") or 0.0), 6), "iscrowd": 1})
    return {
        "info": {"description": "AAX pseudo-masks written by wsslib annotate", "version": __version__},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [{"id": 1, "name": category, "supercategory": category}],
    }


def _write_outputs(out: Path, files: Sequence[str], records: dict[str, dict[str, Any]],
                   model_names: Sequence[str], settings: AnnotateSettings) -> dict[str, int]:
    """Step 5 (rank 0): rebuild decisions.csv, errors.csv, review/, the COCO file and
    summary.json from the journal records; returns the counts."""
    recs = [records[f] for f in files if f in records]
    ok = [r for r in recs if r["status"] == "ok"]
    bad = [r for r in recs if r["status"] == "error"]
    for r in ok:  # a mask lost after its record was written (or never fetched from another node)
        if r["mask"] and not (out / r["mask"]).is_file():
            atomic_write(out / r["mask"], _encode_png(_rle_to_mask(r["rle"])))

    header = ["file", "decision", "flag_reason", *[f"{k}_{n}" for n in model_names for k in ("p", "u")],
              "ood_score", "score", "mask", "note"]

    def num(v: float | None) -> str:
        return "" if v is None else f"{v:.6f}"

    rows = [[r["file"], r["decision"], r.get("flag_reason") or "",
             *[f"{v:.6f}" for pair in zip(r["p"], r["u"]) for v in pair],
             num(sum(r["ood"]) / len(r["ood"]) if r.get("ood") else None), num(r.get("score")), r["mask"] or "",
             r.get("note") or ""]
            for r in ok]
    atomic_write(out / DECISIONS_CSV, _csv(header, rows), fsync=True)
    atomic_write(out / ERRORS_CSV, _csv(["file", "reason"], [[r["file"], r["reason"]] for r in bad]), fsync=True)
    flagged = [r["file"] for r in ok if r["decision"] == "flagged"]
    atomic_write(out / REVIEW / "flagged.txt", "".join(f + "\n" for f in flagged).encode("utf-8"), fsync=True)
    atomic_write(out / COCO_JSON, _dumps(_coco(ok, settings.category)), fsync=True)

    counts = {name: sum(r["decision"] == name for r in ok) for name in DECISION_NAMES}
    counts["errors"] = len(bad)
    counts["out_of_distribution"] = sum(r.get("flag_reason") == "out_of_distribution" for r in ok)
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


@dataclass
class _Plan:
    """What rank 0 decided: the batches left to do (indices into the batch list), or an error."""

    error: str | None = None
    pending: list[int] = field(default_factory=list)
    n_done: int = 0


@dataclass
class _Job:
    """One run's inputs, loaded and resolved (the same on every process)."""

    root: Path
    out: Path
    paths: list[Path]
    models: list[Classifier]
    settings: AnnotateSettings  # resolved: sizes and map_threshold filled in
    names: list[str]
    files: list[str]
    batches: list[list[str]]
    batch_size: int
    gates: list[OODGate | None] = field(default_factory=list)  # one per model (None: not gated)


def expand_checkpoints(checkpoints: Sequence[str | Path]) -> list[Path]:
    """Checkpoint files, with every folder replaced by its ``*.pt`` files: in the order of its
    ``model_card.json`` (``members``, written by ``wsslib train``) when there is one, else sorted.

    Raises:
        DataError: a path that does not exist, or a folder without checkpoints.
    """
    out: list[Path] = []
    for c in checkpoints:
        c = Path(c)
        if not c.exists():
            raise DataError(f"{c}: checkpoint file or folder does not exist")
        if not c.is_dir():
            out.append(c)
            continue
        found = sorted(c.glob("*.pt"))
        card = c / "model_card.json"
        if card.is_file():
            try:
                members = [m["checkpoint"] for m in json.loads(card.read_text(encoding="utf-8"))["members"]]
                found = [c / m for m in members]
            except (OSError, ValueError, KeyError, TypeError) as e:
                raise DataError(f"{card}: unreadable model card ({type(e).__name__}: {e})") from None
        if not found:
            raise DataError(f"{c}: a folder without checkpoints (*.pt); train some with `wsslib train DATA --out {c}`")
        out += found
    return out


def _gate_of(model: Classifier, path: Path, use: bool) -> OODGate | None:
    meta = getattr(model, "meta", None) or {}
    if not use or not isinstance(meta.get("ood"), dict):
        return None
    gate = OODGate.from_dict(meta["ood"], str(path))
    if gate.dim != model.fc.in_features:
        raise DataError(f"{path}: its out-of-distribution gate expects {gate.dim} features, the model gives "
                        f"{model.fc.in_features}")
    return gate


def _load_job(images_dir: str | Path, checkpoints: Sequence[str | Path], out_dir: str | Path,
              settings: AnnotateSettings, batch_size: int, dev: torch.device) -> _Job:
    """Step 1: load the checkpoints, resolve the settings, list the images and cut the batches."""
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not checkpoints:
        raise ValueError("annotate needs at least one checkpoint (the AAX paper uses 3)")
    root, out = Path(images_dir), Path(out_dir)
    files = list_images(root, exclude=out)
    if not files:
        raise DataError(f"{root}: no images found (looked for {', '.join(ANNOTATE_SUFFIXES)} in it and its "
                        "sub-folders, hidden files skipped)")
    paths = expand_checkpoints(checkpoints)
    models = [load_checkpoint(pth, map_location=dev) for pth in paths]
    for m, pth in zip(models, paths):
        if m.num_classes < 2:
            raise DataError(f"{pth}: a {m.num_classes}-class model; annotate needs class 1 = Diseased")
    gates = [_gate_of(m, pth, settings.ood) for m, pth in zip(models, paths)]
    return _Job(root, out, paths, models, settings.resolve(models, paths), _model_names(paths), files,
                _batches(files, int(batch_size)), int(batch_size), gates)


def _plan(job: _Job, retry_errors: bool, is_main: bool) -> _Plan:
    """Step 2 (rank 0): check or create ``OUT_DIR`` and find the batches left to do; broadcast."""
    plan = _Plan()
    if is_main:
        run = {
            "wsslib": __version__,
            "images_dir": str(job.root.resolve()),
            "settings": asdict(job.settings) | {"sizes": list(job.settings.sizes or ())},
            "checkpoints": [{"name": n, "sha256": _sha256(p)} for n, p in zip(job.names, job.paths)],
            "ood_gates": [g is not None for g in job.gates],
            "batch_size": job.batch_size,
        }
        try:
            plan.error = _prepare_run(job.out, run)
        except OSError as e:
            plan.error = f"cannot write to {job.out}: {e}"
        if plan.error is None:
            done = _read_journal(job.out / JOURNAL)
            plan.pending = [g for g, files_g in enumerate(job.batches)
                            if not all(_is_done(done.get(f), retry_errors) for f in files_g)]
            plan.n_done = sum(_is_done(done.get(f), retry_errors) for f in job.files)
    plan = _dist.broadcast_object(plan)
    if plan.error:
        raise DataError(plan.error)
    return plan


def _compute(job: _Job, mine: Sequence[int], *, workers: int, progress: bool, info: _dist.DistInfo) -> int:
    """Step 3: run the protocol on this process's batches (the next one decoded meanwhile);
    returns the number of images computed."""
    from tqdm import tqdm

    writer, mask_names = _Writer(job.out), _mask_names(job.files)
    sizes = sorted(set(job.settings.sizes or ()))
    desc = "annotate" + (f" [rank 0 of {info.world_size}]" if info.distributed else "")
    bar = tqdm(total=sum(len(job.batches[g]) for g in mine), unit="img", desc=desc,
               disable=not progress or not info.is_main, dynamic_ncols=True)
    pool = ThreadPoolExecutor(max_workers=workers) if workers > 0 else None

    def submit(g: int) -> list[Future[_Loaded]] | list[_Loaded]:
        ms = job.settings.min_side
        if pool is None:
            return [_load_one(job.root, f, sizes, ms) for f in job.batches[g]]
        return [pool.submit(_load_one, job.root, f, sizes, ms) for f in job.batches[g]]

    n_new = 0
    try:
        ahead = submit(mine[0]) if mine else []
        for idx in range(len(mine)):
            current, ahead = ahead, (submit(mine[idx + 1]) if idx + 1 < len(mine) else [])
            loaded = [x.result() if isinstance(x, Future) else x for x in current]
            _compute_batch(loaded, job.models, job.settings, mask_names, writer, job.gates)
            n_new += len(loaded)
            bar.update(len(loaded))
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    return n_new


def _merge(out: Path, n_new: int, info: _dist.DistInfo) -> int:
    """Step 4 (under torchrun): rank 0 fetches the records (and masks) it lacks, so ``OUT_DIR``
    need not be shared between machines; returns the images computed by all processes."""
    if not info.distributed:
        return n_new
    have = set(_read_journal(out / JOURNAL)) if info.is_main else None
    have = _dist.broadcast_object(have)
    local = _read_journal(out / JOURNAL) if not info.is_main else {}
    missing = [rec for f, rec in local.items() if f not in have]
    gathered = _dist.gather_objects((n_new, missing))
    if not (info.is_main and gathered):
        return n_new
    for _, recs in gathered[1:]:
        for rec in recs:
            if rec["status"] == "ok" and rec["mask"]:
                atomic_write(out / rec["mask"], _encode_png(_rle_to_mask(rec["rle"])))
            atomic_write(out / JOURNAL / _journal_key(rec["file"]), _dumps(rec))
    return sum(n for n, _ in gathered)


def annotate(
    images_dir: str | Path,
    checkpoints: Sequence[str | Path],
    out_dir: str | Path,
    settings: AnnotateSettings = AnnotateSettings(),
    *,
    batch_size: int = 16,
    device: str | torch.device = "auto",
    workers: int = 2,
    retry_errors: bool = False,
    progress: bool = True,
) -> AnnotateResult:
    """Run the AAX protocol on every image of ``images_dir``; write masks, CSV, review list, COCO.

    The steps: load the checkpoints and list the images (:func:`_load_job`), decide what is
    left to do (:func:`_plan`, rank 0), compute this process's batches (:func:`_compute`),
    collect the other processes' records (:func:`_merge`), rebuild the outputs from the journal
    (:func:`_write_outputs`, rank 0). See the module docstring for the outputs, resuming and
    determinism. Runs unchanged under ``torchrun``.

    Args:
        images_dir: folder of images (searched recursively).
        checkpoints: ``M >= 1`` files written by :func:`wsslib.models.save_checkpoint` (two-class
            models, class 1 = Diseased; the paper uses 3), or folders of them (``wsslib train
            --out DIR``; see :func:`expand_checkpoints`).
        out_dir: output folder (created; an existing one is resumed).
        settings: the protocol (:class:`AnnotateSettings`; paper: theta 0.1, intersection).
        batch_size: images per forward pass (recorded: a resumed run should keep it).
        device: "auto", "cpu", "cuda", ... (``cuda:LOCAL_RANK`` under torchrun).
        workers: threads decoding the next batch while the models run (0: none).
        retry_errors: compute again the files an earlier run could not read.
        progress: progress bar (rank 0) with images/s.

    Returns:
        :class:`AnnotateResult`.

    Raises:
        DataError: missing or empty folder, unusable checkpoint, missing image size or map
            threshold, or an ``out_dir`` made with other settings. Unreadable images are not errors: they are
            listed in ``errors.csv`` and skipped.
        ValueError: ``batch_size < 1`` or no checkpoint.
    """
    info = _dist.init_distributed(device=device)
    job = _load_job(images_dir, checkpoints, out_dir, settings, batch_size, _dist.device_for_rank(device))
    plan = _plan(job, retry_errors, info.is_main)
    t0 = time.perf_counter()
    n_new = _compute(job, _dist.shard(plan.pending, info.rank, info.world_size), workers=workers,
                     progress=progress, info=info)
    _dist.barrier()  # the time of the slowest process counts
    seconds = time.perf_counter() - t0
    n_new = _merge(job.out, n_new, info)
    result = AnnotateResult(out_dir=job.out, n_images=len(job.files), n_new=n_new, n_resumed=plan.n_done,
                            seconds=seconds, images_per_s=n_new / seconds if seconds > 0 else 0.0)
    if info.is_main:
        records = _read_journal(job.out / JOURNAL)
        result.counts = _write_outputs(job.out, job.files, records, job.names, job.settings)
        result.errors = [(f, records[f]["reason"]) for f in job.files
                         if f in records and records[f]["status"] == "error"]
    _dist.barrier()
    return result


def format_summary(res: AnnotateResult, max_errors: int = 20) -> str:
    """A few lines for the terminal: counts, speed, bad files, where the outputs are."""
    c = res.counts
    lines = [
        f"annotated {res.n_images} image(s) into {res.out_dir}: {c.get('healthy', 0)} healthy, "
        f"{c.get('diseased', 0)} diseased (masks), {c.get('flagged', 0)} flagged for review "
        f"({c.get('out_of_distribution', 0)} of them out of distribution), {c.get('errors', 0)} unreadable or too small",
        f"this run: {res.n_new} image(s) in {res.seconds:.1f} s ({res.images_per_s:.2f} images/s); "
        f"{res.n_resumed} already done by an earlier run",
    ]
    if res.errors:
        lines.append(f"skipped {len(res.errors)} unreadable or too small file(s) (listed in {ERRORS_CSV}):")
        lines += [f"  {f}: {reason}" for f, reason in res.errors[:max_errors]]
        if len(res.errors) > max_errors:
            lines.append(f"  ... and {len(res.errors) - max_errors} more")
    return "\n".join(lines)

