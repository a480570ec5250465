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
    from 0..65535 to 0..255 when its maximum exceeds 255 (kept as is otherwise), alpha is dropped.
    For MASKS only (:func:`read_mask`, label maps), where 0/1 and 0/255 16-bit files are common;
    images are read by :func:`read_image_float` (scaled by bit depth, always).
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


def _rawmode(im: Image.Image) -> str:
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


def read_image_float(path: str | Path, notes: list[str] | None = None) -> np.ndarray:
    """Read any supported image as RGB float32 in [0, 1]: THE image reader of wsslib (the data
    loaders through :func:`read_image`, ``wsslib annotate`` directly).

    Values are scaled by the file's bit depth, never by the image's own range: 8-bit data / 255;
    16-bit (grey ``I;16*`` or RGB) / 65535 (a 16-bit PNG whose maximum is 200 reads as 0.003);
    32-bit integer grey / 65535, clipped; float grey clipped to [0, 1]. Grey is repeated to RGB;
    alpha is dropped; palette, CMYK, YCbCr... are converted with Pillow. A multi-page file (TIFF,
    GIF) gives its first page, and a note saying so is appended to ``notes`` when given.

    Returns:
        ``(H, W, 3) float32``.

    Raises:
        DataError: the file is missing or cannot be decoded (the message names it and gives
            Pillow's reason).
    """
    path = Path(path)
    try:
        with Image.open(path) as im:
            n_frames = int(getattr(im, "n_frames", 1) or 1)
            if n_frames > 1 and notes is not None:
                notes.append(f"multi-page file: first of {n_frames} pages used")
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
    except DataError:
        raise
    except Exception as e:  # Pillow raises OSError, SyntaxError, ValueError, zlib/struct errors...
        raise DataError(f"cannot decode image {path}: {type(e).__name__}: {e}") from None


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as RGB ``uint8``: :func:`read_image_float` rounded to 0..255, so the
    data loaders and ``wsslib annotate`` see the same values (8-bit files exactly).

    Returns:
        ``(H, W, 3) uint8``; grey images are repeated over the three channels.

    Raises:
        DataError: the file is missing, corrupt or not an image ("cannot decode image <path>: ...").
    """
    arr = read_image_float(path)
    return np.ascontiguousarray(np.round(arr * np.float32(255.0)).astype(np.uint8))


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
