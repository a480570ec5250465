"""``folder``: your own images (and masks, labels, gaze) as a data set, without writing a loader.

Layout of ``root`` (``get_dataset("folder", root=...)``, ``load_splits("folder", root=...)``, a
notebook's ``dataset="folder", data_root=...``, ``wsslib train FOLDER``)::

    root/
      images/            any supported format (jpg, png, tif/tiff, bmp), sub-folders allowed
      masks/             optional: masks/<id>.<ext> or masks/<id>_mask.<ext> (png first), same
                         sub-folder; white (> 127) = lesion
      labels.csv         optional: columns id,label (0/1) and optionally split (train/valid/test)
      gaze.csv           optional: fixations in the GazeMedSeg column layout (IMAGE,
                         CURRENT_FIX_X, CURRENT_FIX_Y, CURRENT_FIX_DURATION[, CURRENT_FIX_INDEX]);
                         also found as any ``*fixation*.csv`` under root

An image's ``id`` is its path inside ``images/`` without the suffix (``sub/a`` for
``images/sub/a.jpg``); ``labels.csv`` may name it with or without the suffix. The label is the
``labels.csv`` value, else "mask non-empty". Without a ``split`` column the split is the seeded,
label-stratified 70/15/15 rule of :func:`wsslib.data.splitting.stratified_split` (``seed``).

Checks (every problem of one kind listed in one error, naming the files):

* unreadable images or masks: **skipped**, listed in ``dataset.skipped`` and in one warning,
  never fatal;
* an image without a mask when ``masks/`` exists (allowed only with label 0 in ``labels.csv``:
  a frame without a lesion needs no mask file): DataError;
* a mask whose size differs from its image's: DataError;
* ``label 0`` in ``labels.csv`` for an image whose mask is not empty: DataError;
* no ``labels.csv`` and no ``masks/``: DataError (nothing says which images hold a lesion).

The folder is scanned once (every image and mask decoded, so that the checks above hold for
every split) and the scan is cached for the process while the files are unchanged.
"""

from __future__ import annotations

import csv
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wsslib.core.errors import DataError
from wsslib.data.base import Sample, WSSDataset, register_dataset
from wsslib.data.gazefile import read_fixations
from wsslib.data.io import IMAGE_SUFFIXES, read_csv, read_image, read_mask
from wsslib.data.records import RecordList
from wsslib.data.splitting import stratified_split

__all__ = ["FolderDataset", "export_folder", "scan_folder"]

SPLITS = ("train", "valid", "test", "all")
_SHOWN = 10


@dataclass(frozen=True)
class _Rec:
    id: str
    image: Path
    mask: Path | None  # None: no mask file (empty mask if the folder has masks/, else no mask at all)
    label: int
    split: str


@dataclass(frozen=True)
class FolderScan:
    """What :func:`scan_folder` found: the usable images, the skipped files, the gaze file."""

    records: tuple[_Rec, ...]
    skipped: tuple[tuple[str, str], ...]
    has_masks: bool
    gaze_file: Path | None


def _listing(folder: Path) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(n for n in dirnames if not n.startswith("."))
        out += [Path(dirpath) / n for n in filenames if not n.startswith(".") and n.lower().endswith(IMAGE_SUFFIXES)]
    return sorted(out)


def _strip(name: str) -> str:
    p = Path(name.replace("\\", "/"))
    return p.with_suffix("").as_posix() if p.suffix.lower() in IMAGE_SUFFIXES else p.as_posix()


def _listed(items: list[str]) -> str:
    more = f" ... and {len(items) - _SHOWN} more" if len(items) > _SHOWN else ""
    return "; ".join(items[:_SHOWN]) + more


def _signature(root: Path) -> tuple:
    files = [*_listing(root / "images"), *(_listing(root / "masks") if (root / "masks").is_dir() else []),
             *[p for p in (root / "labels.csv", root / "gaze.csv") if p.is_file()]]
    return tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in files)


_CACHE: dict[tuple, FolderScan] = {}


def _gaze_file(root: Path) -> Path | None:
    if (root / "gaze.csv").is_file():
        return root / "gaze.csv"
    return next((p for p in sorted(root.rglob("*fixation*.csv")) if "images" not in p.relative_to(root).parts), None)


def scan_folder(root: str | Path, seed: int = 0) -> FolderScan:
    """Scan, check and split a ``folder`` data set (see the module doc); cached while unchanged.

    Raises:
        DataError: ``root/images`` missing or without images, missing masks, size mismatches, contradicting labels, a bad ``labels.csv``.
    """
    root = Path(root)
    if not (root / "images").is_dir():
        raise DataError(f"{root}: no images/ folder in it (the folder data set's layout: see wsslib.data.folder)")
    key = (str(root.resolve()), int(seed), _signature(root))
    if key not in _CACHE:
        _CACHE.clear()  # one folder at a time is plenty
        _CACHE[key] = _scan(root, int(seed))
    return _CACHE[key]


def _read_labels(root: Path, ids: set[str]) -> tuple[dict[str, int], dict[str, str]]:
    path = root / "labels.csv"
    if not path.is_file():
        return {}, {}
    cols = read_csv(path, ("id", "label"))
    labels, splits, unknown = {}, {}, []
    for n, (raw, lab) in enumerate(zip(cols["id"], cols["label"]), start=2):
        key = _strip(raw.strip())
        if lab.strip() not in ("0", "1"):
            raise DataError(f"{path}, row {n}: label must be 0 or 1, got {lab!r}")
        if key not in ids:
            unknown.append(raw)
            continue
        labels[key] = int(lab)
        if "split" in cols:
            sp = cols["split"][n - 2].strip()
            if sp not in ("train", "valid", "test"):
                raise DataError(f"{path}, row {n}: split must be train, valid or test, got {sp!r}")
            splits[key] = sp
    if unknown:
        warnings.warn(f"{path}: {len(unknown)} id(s) with no image under images/ ignored: {_listed(unknown)}",
                      stacklevel=3)
    return labels, splits


def _scan(root: Path, seed: int) -> FolderScan:
    images = _listing(root / "images")
    if not images:
        raise DataError(f"{root / 'images'}: holds no jpg/png/tif/bmp image")
    by_id: dict[str, Path] = {}
    for p in images:
        i = p.relative_to(root / "images").with_suffix("").as_posix()
        if i in by_id:
            raise DataError(f"two images share the id {i!r}: {by_id[i]} and {p}; rename one")
        by_id[i] = p
    mask_dir = root / "masks"
    has_masks = mask_dir.is_dir()
    masks: dict[str, Path] = {}
    if has_masks:
        found = {p.relative_to(mask_dir).as_posix(): p for p in _listing(mask_dir)}
        suffixes = (".png", *(s for s in IMAGE_SUFFIXES if s != ".png"))
        for i in by_id:
            hit = next((found[f"{i}{tag}{s}"] for tag in ("", "_mask") for s in suffixes if f"{i}{tag}{s}" in found), None)
            if hit is not None:
                masks[i] = hit
    labels, splits = _read_labels(root, set(by_id))
    if not has_masks and not (root / "labels.csv").is_file():
        raise DataError(f"{root}: neither masks/ nor labels.csv; one of them must say which images hold a lesion")
    missing_mask = [str(by_id[i]) for i in by_id if has_masks and i not in masks and labels.get(i) != 0]
    if missing_mask:
        raise DataError(f"masks missing for {len(missing_mask)} of {len(by_id)} images (expected masks/<id>.png or "
                        f"masks/<id>_mask.png; give label 0 in labels.csv to an image without a lesion): "
                        f"{_listed(missing_mask)}")
    missing_label = [str(by_id[i]) for i in by_id if i not in labels and i not in masks]
    if missing_label:
        raise DataError(f"no label for {len(missing_label)} image(s) without a mask (add them to "
                        f"{root / 'labels.csv'}): {_listed(missing_label)}")

    skipped: list[tuple[str, str]] = []
    wrong_size, contradicts, kept = [], [], {}
    for i, img_path in by_id.items():
        try:
            h, w = read_image(img_path).shape[:2]
        except DataError as e:
            skipped.append((str(img_path), str(e)))
            continue
        label = labels.get(i)
        if i in masks:
            try:
                m = read_mask(masks[i])
            except DataError as e:
                skipped.append((str(masks[i]), str(e)))
                continue
            if m.shape != (h, w):
                wrong_size.append(f"{masks[i]} is {m.shape[1]}x{m.shape[0]} but {img_path} is {w}x{h} (W x H)")
                continue
            if label == 0 and m.any():
                contradicts.append(f"{img_path} (mask {masks[i]} has {int(m.sum())} lesion pixels)")
                continue
            label = int(m.any()) if label is None else label
        kept[i] = (img_path, masks.get(i), int(label))
    if wrong_size:
        raise DataError(f"{len(wrong_size)} mask(s) differ in size from their image: {_listed(wrong_size)}")
    if contradicts:
        raise DataError(f"{len(contradicts)} image(s) labelled 0 in {root / 'labels.csv'} have a non-empty mask: "
                        f"{_listed(contradicts)}")
    if skipped:
        warnings.warn(f"{root}: skipped {len(skipped)} unreadable file(s): "
                      f"{_listed([f'{f} ({r})' for f, r in skipped])}", stacklevel=3)
    if not kept:
        raise DataError(f"{root}: no readable image left ({len(skipped)} skipped)")
    ids = sorted(kept)
    if splits:
        without = [str(kept[i][0]) for i in ids if i not in splits]
        if without:
            raise DataError(f"{root / 'labels.csv'} has a split column but no split for: {_listed(without)}")
        assign = {i: splits[i] for i in ids}
    else:
        assign = stratified_split(ids, [kept[i][2] for i in ids], seed=seed)
    records = tuple(_Rec(i, kept[i][0], kept[i][1], kept[i][2], assign[i]) for i in ids)
    return FolderScan(records, tuple(skipped), has_masks, _gaze_file(root))


@register_dataset("folder")
class FolderDataset(RecordList):
    """Your own folder of images as a data set (layout and checks: see :mod:`wsslib.data.folder`).

    Args:
        root: the folder holding ``images/`` (required).
        split: ``"train"``, ``"valid"``, ``"test"`` or ``"all"``.
        seed: seed of the stratified split (when ``labels.csv`` has no ``split`` column).

    Attributes:
        skipped: ``[(file, reason)]`` of the unreadable files left out.

    Samples: ``image (H, W, 3) uint8``, ``label``, ``mask (H, W) bool`` (empty for a label-0
    image without a mask file; ``None`` when the folder has no ``masks/``), no boxes, ``gaze``
    ``(N, 3) float64`` when a gaze file names the image.
    """

    name = "folder"

    def __init__(self, root: str | Path | None = None, split: str = "train", seed: int = 0) -> None:
        if split not in SPLITS:
            raise ValueError(f"folder split must be one of {SPLITS}, got {split!r}")
        self.split = split
        if root is None:
            raise DataError("dataset 'folder' needs its folder: root=... (notebooks: data_root=...; the folder holds "
                            "images/ and masks/ or labels.csv, see wsslib.data.folder)")
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"{self.root}: the folder does not exist")
        scan = scan_folder(self.root, seed)
        self.skipped = list(scan.skipped)
        self._has_masks = scan.has_masks
        self._records = [r for r in scan.records if split == "all" or r.split == split]
        self._gaze = read_fixations(scan.gaze_file) if scan.gaze_file is not None else None

    def __getitem__(self, i: int) -> Sample:
        rec = self._records[i]
        image = read_image(rec.image)
        mask = None
        if self._has_masks:
            mask = read_mask(rec.mask) if rec.mask is not None else np.zeros(image.shape[:2], bool)
        gaze = None
        if self._gaze is not None:
            g = self._gaze.get(Path(rec.id).name)
            gaze = None if g is None else g.copy()
        return Sample(image=image, label=rec.label, mask=mask, boxes=np.zeros((0, 4), np.float32), gaze=gaze, id=rec.id)


def export_folder(datasets: dict[str, WSSDataset], root: str | Path) -> Path:
    """Write data sets (one per split) in the ``folder`` layout: ``images/<id>.png``,
    ``masks/<id>.png`` (when the samples have masks), ``labels.csv`` (``id,label,split``) and
    ``gaze.csv`` (GazeMedSeg's columns, when the samples have gaze). For trying the ``folder``
    path on any registered set, and for tests.

    Args:
        datasets: ``{split: dataset}`` (``train``, ``valid``, ``test``); ids must be unique.
        root: the folder to write (created).

    Returns:
        ``root``.
    """
    from PIL import Image

    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    labels, gaze = [["id", "label", "split"]], []
    for split, ds in datasets.items():
        for i in range(len(ds)):
            s = ds[i]
            Image.fromarray(s.image).save(root / "images" / f"{s.id}.png")
            if s.mask is not None:
                (root / "masks").mkdir(exist_ok=True)
                Image.fromarray(s.mask.astype(np.uint8) * np.uint8(255)).save(root / "masks" / f"{s.id}.png")
            labels.append([s.id, str(int(s.label)), split])
            if s.gaze is not None:
                gaze += [[f"{s.id}.png", k + 1, f"{x!r}", f"{y!r}", f"{d!r}"] for k, (x, y, d) in enumerate(s.gaze.tolist())]
    with open(root / "labels.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(labels)
    if gaze:
        with open(root / "gaze.csv", "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows([["IMAGE", "CURRENT_FIX_INDEX", "CURRENT_FIX_X", "CURRENT_FIX_Y",
                                      "CURRENT_FIX_DURATION"], *gaze])
    return root
