"""What the image-folder loaders (TBX11K, Fire, Oxford-IIIT Pet, NCI-ISBI) share: a record per
image, a :class:`RecordDataset` that decodes them, mask readers, and the search for a set's folder
inside a download (archives often unpack into one extra folder)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from wsslib.core.errors import DataError, DatasetNotFoundError
from wsslib.data.base import Sample, WSSDataset
from wsslib.data.io import decode_image, read_image

SPLITS = ("train", "valid", "test", "all")


def read_binary_mask(path: str | Path) -> np.ndarray:
    """Read a mask stored as 0/255 (PNG or JPEG) or as 0/1 (PNG).

    Returns:
        ``(H, W) bool``: ``> 0`` when the largest value is 1, else ``> 127`` (of the grey level or of
        any colour channel; JPEG noise near 0 and 255 is ignored).

    Raises:
        DataError: the file is missing or not an image.
    """
    arr = decode_image(Path(path))
    if arr.ndim == 3:
        arr = arr.max(axis=2)
    return arr > 0 if arr.max(initial=0) <= 1 else arr > 127


def read_label_map(path: str | Path) -> np.ndarray:
    """Read an image of small integer labels (a trimap) without any colour conversion.

    Returns:
        ``(H, W) int64`` of the stored values (palette images: the palette indices).

    Raises:
        DataError: the file is missing or not a one-channel image.
    """
    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode not in ("L", "P", "I", "I;16", "1"):
                raise DataError(f"label map {path} has mode {im.mode}; expected a one-channel image of labels")
            return np.asarray(im, dtype=np.int64)
    except FileNotFoundError:
        raise DataError(f"cannot decode label map {path}: the file does not exist") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise DataError(f"cannot decode label map {path}: {e}") from None


def to_uint8(image: np.ndarray, body: np.ndarray | None = None, percentiles: tuple[float, float] = (0.5, 99.5)) -> np.ndarray:
    """Scale intensities (MR, CT) to ``uint8``: clip to the given percentiles of the ``body`` voxels
    (all when ``None`` or empty), then map that range linearly to 0..255.

    Args:
        image: any shape, any real dtype.
        body: bool mask of the same shape selecting the voxels the percentiles are taken over.

    Returns:
        ``uint8`` array of ``image``'s shape; constant images map to 0.
    """
    values = image[body] if body is not None and body.any() else image.ravel()
    if values.size == 0:
        return np.zeros(image.shape, np.uint8)
    lo, hi = np.percentile(values.astype(np.float64), percentiles)
    if hi <= lo:
        return np.zeros(image.shape, np.uint8)
    scaled = (image.astype(np.float64) - lo) / (hi - lo)
    return np.round(np.clip(scaled, 0.0, 1.0) * 255.0).astype(np.uint8)


def locate(name: str, root: Path, marker: str, hint: str) -> Path:
    """The folder under ``root`` (itself, or one or two levels down) that holds ``marker``.

    Archives unpack into an extra folder (``TBX11K/``, ``archive/``...): the loaders accept the data
    set's folder or a folder above it.

    Raises:
        DatasetNotFoundError: no such folder; the message names ``root`` and ``hint``.
    """
    if (root / marker).exists():
        return root
    for pattern in (f"*/{marker}", f"*/*/{marker}"):
        found = sorted(p for p in root.glob(pattern) if not p.name.startswith("._"))
        if found:
            return found[0].parents[len(Path(marker).parts) - 1]
    raise DatasetNotFoundError(name, root, hint=hint)


@dataclass(frozen=True)
class Record:
    """One image of an image-folder data set.

    Attributes:
        id: stable image id.
        image: image file.
        label: image label (1 = object/lesion present).
        mask: how the mask is obtained: ``"file"`` (binary mask file ``mask_path``), ``"trimap"``
            (Oxford trimap ``mask_path``: values 1 and 3 are foreground), ``"boxes"`` (filled
            ``boxes``), ``"empty"`` (known to hold no object: all False) or ``"none"`` (no annotation:
            ``Sample.mask`` is ``None``).
        mask_path: the mask file for ``"file"`` and ``"trimap"``.
        boxes: ``(K, 4) float32`` boxes ``x_min, y_min, x_max, y_max`` in pixels.
    """

    id: str
    image: Path
    label: int
    mask: str = "none"
    mask_path: Path | None = None
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32), compare=False)


def boxes_to_mask(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """Fill boxes into a mask: pixel (row r, column c) is set when its centre ``(c + 0.5, r + 0.5)``
    lies inside a box ``x_min <= c + 0.5 <= x_max``, ``y_min <= r + 0.5 <= y_max``.

    Args:
        boxes: ``(K, 4)`` ``x_min, y_min, x_max, y_max`` in pixels.

    Returns:
        ``(height, width) bool``, the union of the filled boxes.
    """
    mask = np.zeros((height, width), bool)
    cols, rows = np.arange(width) + 0.5, np.arange(height) + 0.5
    for x0, y0, x1, y1 in np.asarray(boxes, np.float64).reshape(-1, 4):
        mask |= ((rows >= y0) & (rows <= y1))[:, None] & ((cols >= x0) & (cols <= x1))[None, :]
    return mask


class RecordList(WSSDataset):
    """A data set held as ``self._records``: any records with an ``id`` and a ``label``."""

    _records: list

    def __len__(self) -> int:
        return len(self._records)

    def labels(self) -> np.ndarray:
        return np.array([r.label for r in self._records], dtype=np.int64)

    def ids(self) -> list[str]:
        return [r.id for r in self._records]


class RecordDataset(RecordList):
    """A list of :class:`Record` of one split; subclasses build ``self._records`` and may add gaze."""

    name: str
    split: str
    root: Path
    _records: list[Record]

    def _read_image(self, rec: Record) -> np.ndarray:
        return read_image(rec.image)

    def _gaze(self, rec: Record) -> np.ndarray | None:
        return None

    def _mask(self, rec: Record, height: int, width: int) -> np.ndarray | None:
        if rec.mask == "none":
            return None
        if rec.mask == "empty":
            return np.zeros((height, width), bool)
        if rec.mask == "boxes":
            return boxes_to_mask(rec.boxes, height, width)
        if rec.mask == "trimap":
            trimap = read_label_map(rec.mask_path)
            return (trimap == 1) | (trimap == 3)
        return read_binary_mask(rec.mask_path)

    def __getitem__(self, i: int) -> Sample:
        """Decode image ``i``: ``image (H, W, 3) uint8``, ``mask (H, W) bool`` or ``None``, boxes, gaze.

        Raises:
            DataError: an unreadable image or mask, or a mask whose size differs from its image.
        """
        rec = self._records[i]
        image = self._read_image(rec)
        h, w = image.shape[:2]
        mask = self._mask(rec, h, w)
        if mask is not None and mask.shape != (h, w):
            raise DataError(
                f"mask {rec.mask_path} is {mask.shape[1]}x{mask.shape[0]} (W x H) but its image {rec.image} "
                f"is {w}x{h}; they must be the same size"
            )
        return Sample(image=image, label=rec.label, mask=mask, boxes=rec.boxes.copy(), gaze=self._gaze(rec), id=rec.id)


def check_split(name: str, split: str, allowed: tuple[str, ...] = SPLITS) -> None:
    if split not in allowed:
        raise ValueError(f"{name} split must be one of {allowed}, got {split!r}")


def files_by_stem(folder: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    """``{stem: path}`` of the files in ``folder`` with one of ``suffixes`` (case-insensitive),
    macOS ``._*`` companions skipped; the first suffix in ``suffixes`` order wins a tie."""
    out: dict[str, Path] = {}
    if not folder.is_dir():
        return out
    rank = {s: k for k, s in enumerate(suffixes)}
    for p in sorted(folder.iterdir()):
        suf = p.suffix.lower()
        if p.name.startswith("._") or suf not in rank or not p.is_file():
            continue
        old = out.get(p.stem)
        if old is None or rank[suf] < rank[old.suffix.lower()]:
            out[p.stem] = p
    return out
