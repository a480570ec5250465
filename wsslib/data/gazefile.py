"""Reading GazeMedSeg fixation files (``kvasir_fixation.csv``, ``nci-isbi_fixation.csv``).

Columns used: ``IMAGE`` (file name; its stem is the image id), ``CURRENT_FIX_X`` and
``CURRENT_FIX_Y`` (normalised 0..1; x = column, y = row), ``CURRENT_FIX_DURATION`` (ms) and, when
present, ``CURRENT_FIX_INDEX`` (the order within an image).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from wsslib.core.errors import DataError
from wsslib.data.io import read_csv

FIELDS = ("CURRENT_FIX_X", "CURRENT_FIX_Y", "CURRENT_FIX_DURATION")


def find_gaze_file(root: Path, filename: str) -> Path | None:
    """``root/gaze/<filename>`` if it exists, else the first ``<filename>`` anywhere under ``root``."""
    path = root / "gaze" / filename
    if path.is_file():
        return path
    return next(iter(sorted(root.rglob(filename))), None)


def read_fixations(path: str | Path) -> dict[str, np.ndarray]:
    """Fixations per image id.

    Returns:
        ``{image stem: (N, 3) float64}`` rows ``x, y, duration ms`` in fixation order.

    Raises:
        DataError: missing columns or non-numeric values (the message names the file).
    """
    path = Path(path)
    cols = read_csv(path, ("IMAGE", *FIELDS))
    try:
        values = np.array([cols[c] for c in FIELDS], dtype=np.float64).T.reshape(-1, 3)
        order = np.array(cols.get("CURRENT_FIX_INDEX") or range(len(values)), dtype=np.float64)
    except ValueError as e:
        raise DataError(f"{path}: fixation values must be numbers ({e})") from None
    rows_of: dict[str, list[int]] = {}
    for n, name in enumerate(cols["IMAGE"]):
        rows_of.setdefault(Path(name).stem, []).append(n)
    table = {}
    for stem, rows in rows_of.items():
        idx = np.array(rows)[np.argsort(order[rows], kind="stable")]
        table[stem] = values[idx]  # float64: the CSV's values, so canvas-pixel rounding matches the published code
    return table
