"""NCI-ISBI 2013 prostate MR slices with GazeMedSeg gaze (Zhong et al., MICCAI 2024).

Layout read: the axial slices that hold prostate, as GazeMedSeg's
``notebooks/preprocess/process_nci-isbi.ipynb`` writes them (``root`` may be one folder above):

* ``images/<case>_<slice>.dcm`` (DICOM, one MR slice; ``.png`` / ``.jpg`` also read);
* ``masks/<case>_<slice>.png``: prostate (central gland and peripheral zone merged), 0/255;
* ``train.txt``, ``test.txt``: one id per line (the first space-separated field);
* gaze: ``nci-isbi_fixation.csv`` in ``gaze/`` or anywhere under the slices' folder or the folder
  given as ``root`` (``./data_download.sh gaze`` puts it in ``<data root>/nci-isbi/gaze/``, beside a
  nested copy of the slices); without it ``Sample.gaze`` is ``None``.

Every slice holds prostate (label 1), like Kvasir-SEG. DICOM intensities are scaled to ``uint8``
per slice (0.5 and 99.5 percentiles -> 0 and 255) and repeated over the three channels.

Splits: ``"test"`` = ``test.txt``; ``"train"`` / ``"valid"`` = ``train.txt`` split by patient (the
``<case>`` part of the id), 85 % / 15 % of the patients, seed 0 (:func:`grouped_split`), so no
patient is in both; ``"all"`` = both lists.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import numpy as np

from wsslib.core.errors import DataError, DatasetNotFoundError
from wsslib.data.base import find_root, register_dataset
from wsslib.data.gazefile import find_gaze_file, read_fixations
from wsslib.data.io import read_image
from wsslib.data.records import Record, RecordDataset, check_split, locate, to_uint8
from wsslib.data.splitting import grouped_split

GAZE_FILE = "nci-isbi_fixation.csv"
IMAGE_SUFFIXES = (".dcm", ".png", ".jpg", ".jpeg")


def read_dicom_slice(path: Path) -> np.ndarray:
    """One DICOM MR slice as ``(H, W, 3) uint8`` (percentile scaling, grey repeated).

    Raises:
        DataError: pydicom is missing, or the file is not a readable single-frame DICOM image.
    """
    try:
        import pydicom
    except ImportError:
        raise DataError(f"reading {path} needs pydicom: pip install pydicom") from None
    try:
        ds = pydicom.dcmread(path)
        pixels = np.asarray(ds.pixel_array, dtype=np.float64)
    except Exception as e:  # pydicom raises many types for a damaged file
        raise DataError(f"cannot decode DICOM image {path}: {type(e).__name__}: {e}") from None
    if pixels.ndim != 2:
        raise DataError(f"DICOM image {path} has shape {pixels.shape}; expected one 2-D slice")
    slope, intercept = float(getattr(ds, "RescaleSlope", 1) or 1), float(getattr(ds, "RescaleIntercept", 0) or 0)
    grey = to_uint8(pixels * slope + intercept)
    return np.repeat(grey[..., None], 3, axis=2)


@register_dataset("nci-isbi")
class NCIISBI(RecordDataset):
    """NCI-ISBI 2013 prostate slices (all label 1) with masks and GazeMedSeg gaze.

    Args:
        root: the data folder (holding ``images/``, ``masks/``, ``train.txt``, ``test.txt``).
        split: ``"train"``, ``"valid"`` (``train.txt`` split by patient 85/15, seed 0), ``"test"``
            (``test.txt``) or ``"all"``.

    Samples: ``image (H, W, 3) uint8``, ``mask (H, W) bool``, boxes ``(0, 4)``,
    ``gaze (N, 3) float64`` (x, y in [0, 1], duration ms) or ``None``.

    Raises:
        DatasetNotFoundError: the folder, ``images/``, ``masks/`` or a list file is missing.
        DataError: a listed id without image or mask; an unreadable file (when read).
    """

    name = "nci-isbi"

    def __init__(self, root: str | Path | None = None, split: str = "train") -> None:
        check_split(self.name, split)
        self.split = split
        base = find_root(self.name, root)
        self._base = base
        self.root = locate(self.name, base, "train.txt", hint="it has no train.txt (nor images/ and masks/)")
        for sub in ("images", "masks"):
            if not (self.root / sub).is_dir():
                raise DatasetNotFoundError(self.name, self.root, hint=f"it has no {sub}/ folder")
        train, test = self._list("train.txt"), self._list("test.txt")
        if split == "test":
            records = test
        elif split == "all":
            records = train + test
        else:
            assign = grouped_split([r.id for r in train], [r.id.rsplit("_", 1)[0] for r in train],
                                   fractions=(0.85, 0.15), names=("train", "valid"), seed=0)
            records = [r for r in train if assign[r.id] == split]
        self._records = sorted(records, key=lambda r: r.id)

    def _list(self, filename: str) -> list[Record]:
        path = self.root / filename
        if not path.is_file():
            raise DatasetNotFoundError(self.name, self.root, hint=f"the split list {path} is missing")
        records = []
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            rid = Path(line.split()[0]).stem
            image = next((self.root / "images" / f"{rid}{s}" for s in IMAGE_SUFFIXES
                          if (self.root / "images" / f"{rid}{s}").is_file()), None)
            mask = self.root / "masks" / f"{rid}.png"
            if image is None:
                raise DataError(f"{path}, line {n} lists {rid}, but {self.root / 'images'} has no {rid}.dcm (or .png/.jpg)")
            if not mask.is_file():
                raise DataError(f"{path}, line {n} lists {rid}, but {mask} does not exist")
            records.append(Record(rid, image, 1, "file", mask))
        return records

    def _read_image(self, rec: Record) -> np.ndarray:
        return read_dicom_slice(rec.image) if rec.image.suffix.lower() == ".dcm" else read_image(rec.image)

    @cached_property
    def _gaze_table(self) -> dict[str, np.ndarray] | None:
        path = find_gaze_file(self.root, GAZE_FILE)
        if path is None and self._base != self.root:  # the gaze set may sit beside a nested copy
            path = find_gaze_file(self._base, GAZE_FILE)
        return None if path is None else read_fixations(path)

    def _gaze(self, rec: Record) -> np.ndarray | None:
        table = self._gaze_table
        if table is None or rec.id not in table:
            return None
        return table[rec.id].copy()
