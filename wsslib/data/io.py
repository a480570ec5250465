"""Reading images, masks and small CSV files, with errors that name the file at fault."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

from wsslib.core.errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")


def decode_image(path: Path) -> np.ndarray:
    """Decode ``path`` into ``(H, W) uint8`` (grey) or ``(H, W, 3) uint8`` (RGB).

    Palette, alpha, CMYK, 1-bit and 16/32-bit grey images are converted: 16-bit grey is scaled
    from 0..65535 to 0..255, alpha is dropped.
    """
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("1", "L"):
                return np.array(im.convert("L"))
            if im.mode.startswith("I") or im.mode == "F":  # 16/32-bit integer or float grey
                arr = np.asarray(im, dtype=np.float64)
                scale = 255.0 / 65535.0 if arr.max(initial=0) > 255 else 1.0
                return np.clip(np.round(arr * scale), 0, 255).astype(np.uint8)
            if im.mode == "LA":
                return np.array(im.convert("L"))
            return np.array(im.convert("RGB"))
    except FileNotFoundError:
        raise DataError(f"cannot decode image {path}: the file does not exist") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise DataError(f"cannot decode image {path}: {e}") from None


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as RGB.

    Returns:
        ``(H, W, 3) uint8``; grey images are repeated over the three channels.

    Raises:
        DataError: the file is missing, corrupt or not an image ("cannot decode image <path>: ...").
    """
    arr = decode_image(Path(path))
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    return np.ascontiguousarray(arr)


def read_mask(path: str | Path) -> np.ndarray:
    """Read a mask file and binarise it at > 127 (of the grey level, or of any colour channel).

    Returns:
        ``(H, W) bool``.

    Raises:
        DataError: the file is missing, corrupt or not an image.
    """
    arr = decode_image(Path(path))
    if arr.ndim == 3:
        arr = arr.max(axis=2)
    return arr > 127


def read_csv(path: str | Path, required: tuple[str, ...]) -> dict[str, list[str]]:
    """The columns of a CSV file with a header row, as ``{column name: values}`` (blank lines skipped).

    Raises:
        DataError: the file cannot be read, lacks one of the ``required`` columns, or has a row
            whose number of fields differs from the header's.
    """
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            lines = [row for row in csv.reader(fh) if row]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"cannot read CSV file {path}: {e}") from None
    header = lines[0] if lines else []
    missing = [c for c in required if c not in header]
    if missing:
        raise DataError(f"CSV file {path} lacks the column(s) {', '.join(missing)} (it has: {', '.join(header)})")
    for n, row in enumerate(lines[1:], start=2):
        if len(row) != len(header):
            raise DataError(f"CSV file {path}, row {n}: {len(row)} fields where the header has {len(header)}")
    return {name: [row[i] for row in lines[1:]] for i, name in enumerate(header)}
