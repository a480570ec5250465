"""Loaders of the real polyp sets: Kvasir-SEG (masks, boxes, gaze) and PolypGen (masks, two classes).

Layouts read (``root`` as resolved by :func:`wsslib.data.find_root`):

* ``kvasir-seg``: ``images/*.jpg``, ``masks/*.png``, ``manifest.csv`` (image, mask, ...),
  ``boxes.csv`` (image, label, xmin, ymin, xmax, ymax) and ``gaze/kvasir_fixation.csv``
  (the downsized copy in ``../shared/data``); or the official zip: ``images/*.jpg``,
  ``masks/*.jpg`` of the same names, ``kavsir_bboxes.json``, no manifest, possibly inside a
  ``Kvasir-SEG/`` folder. The gaze file (``kvasir_fixation.csv``) may sit anywhere under ``root``
  (``./data_download.sh gaze`` puts it in ``<root>/gaze/``); without it ``Sample.gaze`` is ``None``.
  Every Kvasir-SEG image holds a polyp (label 1).
* ``polypgen``: ``manifest.csv`` (image, mask, width, height, source_split, label, fg_fraction)
  or, without it, ``images/*`` and ``masks/*`` of the same stem (``<stem>_mask`` accepted),
  the label then read from the mask (non-empty = 1); or the official
  ``PolypGen2021_MultiCenterData_v3`` layout (what ``./data_download.sh polypgen`` unpacks): every
  ``images_<tag>/`` folder under ``root`` (``data_C1/images_C1``, ``sequenceData/.../images_seq1``,
  ...) with its masks in the sibling ``masks_<tag>/`` (``<stem>_mask.<ext>`` or ``<stem>.<ext>``); a
  folder without masks (negative-only sequences) gives label 0 and an empty mask. Its split is the
  seeded stratified 70/15/15 rule of :mod:`wsslib.data.splitting` over the frames found. No boxes,
  no gaze.

Masks are binarised at > 127. Splits are fixed files shipped in ``splits/`` (columns id, split),
made once and never regenerated:

* ``splits/kvasir-seg.csv``: the 1000 ids of Kvasir-SEG, sorted, permuted by
  ``np.random.default_rng(0).permutation``; the first 800 are "train", the next 100 "valid",
  the last 100 "test".
* ``splits/polypgen.csv``: stratified by label: with one ``np.random.default_rng(0)``, the sorted
  ids of label 0, then those of label 1, are permuted; of each, the first ``round(0.70 n)`` are
  "train", the next ``round(0.15 n)`` "valid", the rest "test".

``split="all"`` takes every image found under ``root``, in id order.
"""

from __future__ import annotations

import json
from abc import abstractmethod
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from wsslib.core.errors import DataError, DatasetNotFoundError
from wsslib.data.base import Sample, find_root, register_dataset
from wsslib.data.gazefile import read_fixations
from wsslib.data.io import IMAGE_SUFFIXES, read_csv, read_image, read_mask
from wsslib.data.records import RecordList
from wsslib.data.splitting import stratified_split

SPLITS = ("train", "valid", "test", "all")
SPLIT_DIR = Path(__file__).resolve().parent / "splits"


@dataclass(frozen=True)
class _Record:
    id: str
    image: Path
    mask: Path | None  # None: a frame known to hold no object (empty mask)
    label: int


class _PolypFolder(RecordList):
    """A folder of images with same-named masks, a manifest or a glob, and a shipped split."""

    name: str

    def __init__(self, root: str | Path | None = None, split: str = "train") -> None:
        if split not in SPLITS:
            raise ValueError(f"{self.name} split must be one of {SPLITS}, got {split!r}")
        self.split = split
        self.root = self._data_root(find_root(self.name, root))
        records = self._manifest_records() if (self.root / "manifest.csv").is_file() else self._globbed_records()
        self._records = self._select(records)

    def _data_root(self, root: Path) -> Path:
        if not (root / "images").is_dir():
            raise DatasetNotFoundError(self.name, root, hint="it has no images/ folder")
        return root

    @abstractmethod
    def _manifest_records(self) -> list[_Record]:
        """Records of the rows of ``manifest.csv``."""

    @abstractmethod
    def _globbed_records(self) -> list[_Record]:
        """Records of the images found by :meth:`_glob_pairs` (no manifest)."""

    def _row_file(self, manifest: Path, row: int, rel: str) -> Path:
        """The file a manifest row names, which must exist."""
        path = self.root / rel
        if not path.is_file():
            raise DataError(f"{manifest}, row {row}: the file {path} it names does not exist")
        return path

    def _glob_pairs(self) -> list[tuple[Path, Path]]:
        """``(image, mask)`` for every image under ``images/``; its mask is ``masks/<stem>.<ext>``
        or ``masks/<stem>_mask.<ext>``, ``.png`` first.

        Raises:
            DataError: an image has no mask.
        """
        images = sorted(p for p in (self.root / "images").iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise DatasetNotFoundError(self.name, self.root, hint="its images/ folder holds no image")
        mask_dir = self.root / "masks"
        names = {p.name for p in mask_dir.iterdir()} if mask_dir.is_dir() else set()
        suffixes = (".png", *(s for s in IMAGE_SUFFIXES if s != ".png"))
        pairs = []
        for image in images:
            found = [f"{image.stem}{tag}{suf}" for tag in ("", "_mask") for suf in suffixes]
            found = [n for n in found if n in names]
            if not found:
                raise DataError(f"no mask for image {image}: expected {mask_dir / image.stem}.png or .jpg")
            pairs.append((image, mask_dir / found[0]))
        return pairs

    def _select(self, records: list[_Record]) -> list[_Record]:
        """The records of ``self.split``, unique by id, in id order."""
        unique = {r.id: r for r in reversed(records)}  # the first row of an id wins
        if self.split == "all":
            return [unique[k] for k in sorted(unique)]
        split_file = SPLIT_DIR / f"{self.name}.csv"
        table = read_csv(split_file, ("id", "split"))
        wanted = sorted(k for k, s in zip(table["id"], table["split"]) if s == self.split)
        missing = [k for k in wanted if k not in unique]
        if missing:
            raise DatasetNotFoundError(
                self.name,
                self.root,
                hint=f"{len(missing)} of the {len(wanted)} images of split '{self.split}' listed in "
                f"{split_file} are missing, e.g. {missing[0]}; split='all' uses what is there",
            )
        return [unique[k] for k in wanted]

    def _boxes(self, rec: _Record, height: int, width: int) -> np.ndarray:
        return np.zeros((0, 4), np.float32)

    def _gaze(self, rec: _Record) -> np.ndarray | None:
        return None

    def __getitem__(self, i: int) -> Sample:
        """Decode image ``i``: ``image (H, W, 3) uint8``, ``mask (H, W) bool``, boxes, gaze.

        Raises:
            DataError: an unreadable image or mask, or a mask whose size differs from its image.
        """
        rec = self._records[i]
        image = read_image(rec.image)
        mask = np.zeros(image.shape[:2], bool) if rec.mask is None else read_mask(rec.mask)
        if mask.shape != image.shape[:2]:
            raise DataError(
                f"mask {rec.mask} is {mask.shape[1]}x{mask.shape[0]} (W x H) but its image {rec.image} "
                f"is {image.shape[1]}x{image.shape[0]}; they must be the same size"
            )
        return Sample(
            image=image,
            label=rec.label,
            mask=mask,
            boxes=self._boxes(rec, *image.shape[:2]),
            gaze=self._gaze(rec),
            id=rec.id,
        )


@register_dataset("kvasir-seg")
class KvasirSEG(_PolypFolder):
    """Kvasir-SEG: 1000 polyp images (all label 1) with masks, boxes and, where present, gaze.

    Args:
        root: the data folder (see :func:`wsslib.data.find_root`); ``None`` searches the defaults.
        split: ``"train"`` (800), ``"valid"`` (100), ``"test"`` (100) or ``"all"``.

    Samples carry ``boxes (K, 4) float32`` in pixels of the image as read, and
    ``gaze (N, 3) float64`` (x, y in [0, 1], duration ms) or ``None`` without a gaze file.

    Raises:
        DatasetNotFoundError: the folder, its ``images/``, or images of the split are missing.
        DataError: a manifest row names a missing file, or a boxes/gaze file is malformed.
    """

    name = "kvasir-seg"

    def _data_root(self, root: Path) -> Path:
        self._given_root = root  # ./data_download.sh gaze puts the gaze file in <root>/gaze beside Kvasir-SEG/
        nested = root / "Kvasir-SEG"  # the official zip unpacks into this folder
        if not (root / "images").is_dir() and (nested / "images").is_dir():
            root = nested
        return super()._data_root(root)

    def _manifest_records(self) -> list[_Record]:
        manifest = self.root / "manifest.csv"
        cols = read_csv(manifest, ("image", "mask"))
        return [
            _Record(Path(img).stem, self._row_file(manifest, n, img), self._row_file(manifest, n, msk), 1)
            for n, (img, msk) in enumerate(zip(cols["image"], cols["mask"]), start=2)
        ]

    def _globbed_records(self) -> list[_Record]:
        return [_Record(image.stem, image, mask, 1) for image, mask in self._glob_pairs()]

    @cached_property
    def _box_table(self) -> dict[str, tuple[np.ndarray, tuple[int, int] | None]]:
        """id -> (boxes ``(K, 4) float32``, size ``(W, H)`` they refer to, or None for the image's own)."""
        table: dict[str, tuple[list[list[float]], tuple[int, int] | None]] = {}
        csv_path, json_path = self.root / "boxes.csv", self.root / "kavsir_bboxes.json"
        if csv_path.is_file():
            xyxy = ("xmin", "ymin", "xmax", "ymax")
            cols = read_csv(csv_path, ("image", *xyxy))
            for n, (name, *box) in enumerate(zip(cols["image"], *(cols[k] for k in xyxy)), start=2):
                try:
                    table.setdefault(Path(name).stem, ([], None))[0].append([float(v) for v in box])
                except ValueError:
                    raise DataError(f"{csv_path}, row {n}: box coordinates must be numbers, got {box}") from None
        elif json_path.is_file():
            try:
                data = json.loads(json_path.read_text(encoding="utf-8"))
                for key, entry in data.items():
                    boxes = [[float(b[k]) for k in ("xmin", "ymin", "xmax", "ymax")] for b in entry["bbox"]]
                    table[Path(key).stem] = (boxes, (int(entry["width"]), int(entry["height"])))
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
                raise DataError(f"cannot read boxes from {json_path}: {type(e).__name__}: {e}") from None
        return {k: (np.array(b, np.float32).reshape(-1, 4), ref) for k, (b, ref) in table.items()}

    @cached_property
    def _gaze_table(self) -> dict[str, np.ndarray] | None:
        """id -> fixations ``(N, 3) float64`` (x, y, duration ms) in fixation order; None without a file."""
        path = self.root / "gaze" / "kvasir_fixation.csv"
        if not path.is_file():
            path = next(iter(sorted(self.root.rglob("kvasir_fixation.csv"))), None)
            if path is None and self._given_root != self.root:
                path = next(iter(sorted(self._given_root.rglob("kvasir_fixation.csv"))), None)
            if path is None:
                return None
        return read_fixations(path)  # the one reader of GazeMedSeg's CSV (float64, fixation order)

    def _boxes(self, rec: _Record, height: int, width: int) -> np.ndarray:
        boxes, ref = self._box_table.get(rec.id, (np.zeros((0, 4), np.float32), None))
        if ref is not None and ref != (width, height):
            boxes = boxes * np.array([width / ref[0], height / ref[1]] * 2, np.float32)
        return boxes.copy()

    def _gaze(self, rec: _Record) -> np.ndarray | None:
        if self._gaze_table is None or rec.id not in self._gaze_table:
            return None
        return self._gaze_table[rec.id].copy()


@register_dataset("polypgen")
class PolypGen(_PolypFolder):
    """PolypGen (EndoCV2021) frames with polyp masks; label 1 where the mask is non-empty.

    Args:
        root: the data folder (see :func:`wsslib.data.find_root`); ``None`` searches the defaults.
        split: ``"train"``, ``"valid"``, ``"test"`` (70/15/15 %, stratified by label) or ``"all"``.

    Samples carry ``mask (H, W) bool``; ``boxes`` is ``(0, 4)`` and ``gaze`` ``None``. The manifest's
    duplicate rows (one frame listed under two source splits) count once.

    Raises:
        DatasetNotFoundError: the folder, its ``images/``, or images of the split are missing.
        DataError: a manifest row names a missing file or has a bad label; a mask is missing.
    """

    name = "polypgen"

    def _data_root(self, root: Path) -> Path:
        self._official = not (root / "images").is_dir() and bool(_official_image_dirs(root))
        return root if self._official else super()._data_root(root)

    def _official_records(self) -> list[_Record]:
        """Frames of the official multi-centre layout (see the module doc)."""
        found: list[tuple[str, Path, Path | None]] = []
        for img_dir in _official_image_dirs(self.root):
            tag = img_dir.name[len("images_"):]
            mask_dir = img_dir.with_name(f"masks_{tag}")
            names = {p.name for p in mask_dir.iterdir()} if mask_dir.is_dir() else set()
            for image in sorted(p for p in img_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
                mask = None
                if mask_dir.is_dir():
                    cands = [f"{image.stem}{t}{x}" for t in ("_mask", "") for x in (".jpg", ".png", ".tif", ".jpeg")]
                    hit = next((n for n in cands if n in names), None)
                    if hit is None:
                        raise DataError(f"no mask for image {image}: expected {mask_dir / image.stem}_mask.jpg")
                    mask = mask_dir / hit
                found.append((tag, image, mask))
        stems = [image.stem for _, image, _ in found]
        clash = {st for st in stems if stems.count(st) > 1}
        return [_Record(f"{tag}_{image.stem}" if image.stem in clash else image.stem, image, mask,
                        0 if mask is None else int(read_mask(mask).any())) for tag, image, mask in found]

    def _select(self, records: list[_Record]) -> list[_Record]:
        if not self._official or self.split == "all":
            return super()._select(records)
        unique = {r.id: r for r in records}
        ids = sorted(unique)
        assign = stratified_split(ids, [unique[i].label for i in ids])
        return [unique[i] for i in ids if assign[i] == self.split]

    def _manifest_records(self) -> list[_Record]:
        manifest = self.root / "manifest.csv"
        cols = read_csv(manifest, ("image", "mask", "label"))
        records = []
        for n, (img, msk, label) in enumerate(zip(cols["image"], cols["mask"], cols["label"]), start=2):
            if label not in ("0", "1"):
                raise DataError(f"{manifest}, row {n}: label must be 0 or 1, got {label!r}")
            image, mask = self._row_file(manifest, n, img), self._row_file(manifest, n, msk)
            records.append(_Record(image.stem, image, mask, int(label)))
        return records

    def _globbed_records(self) -> list[_Record]:
        if self._official:
            return self._official_records()
        return [_Record(image.stem, image, mask, int(read_mask(mask).any())) for image, mask in self._glob_pairs()]


def _official_image_dirs(root: Path) -> list[Path]:
    """The ``images_<tag>/`` folders of PolypGen's official layout under ``root``, sorted."""
    return sorted(p for p in root.rglob("images_*") if p.is_dir() and not p.name.startswith("._"))
