"""3-D MR volumes turned into 2-D slices as the EnsembleCAM paper (Ostrowski et al.) uses them:
BraTS 2020 (brain tumour) and Medical Segmentation Decathlon Task05 (prostate).

Each volume becomes its axial slices (the third voxel axis, ``k``); a slice image is
``volume[:, :, k].T`` for each chosen modality, stacked as channels (one or two modalities are
cycled to fill three channels: ``(ADC,)`` -> ``ADC, ADC, ADC``; ``(T2, ADC)`` -> ``T2, ADC, T2``).
Intensities: per volume and modality, clipped to the 0.5 and 99.5 percentiles of the non-zero voxels
and scaled to 0..255. The mask merges every label > 0 (tumour sub-regions, prostate zones); the
slice label is 1 when the slice's mask is non-empty. Slices whose chosen modalities are all zero
(outside the head / field of view) are left out unless ``keep_empty=True``.

Decoding NIfTI (nibabel) is slow, so the slices are cached on disk: per volume, an image array
``(S, H, W, 3) uint8``, a mask array ``(S, H, W) bool`` and a small JSON index, in
``cache_dir`` (default ``$WSSLIB_CACHE``, else ``~/.cache/wsslib``) under ``<name>/<key>/``, where
the key hashes the cache format, the modalities and ``keep_empty``; a volume file's path, size and
modification time are part of each entry's file name, so a changed file is decoded again. Reading a
sample maps the cached arrays (no NIfTI decoding after the first time).

Splits: neither set has a labelled test part, so the volumes (patients) are split 70 / 15 / 15 %,
seed 0 (:func:`wsslib.data.splitting.grouped_split`): no patient has slices in two splits. The paper
cross-validates over all slices (notebook 03 pools the splits for that); ``"all"`` = every volume.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wsslib.core.errors import DataError, DatasetNotFoundError
from wsslib.data.base import Sample, WSSDataset, find_root, register_dataset
from wsslib.data.records import check_split, locate, to_uint8
from wsslib.data.splitting import grouped_split

CACHE_FORMAT = 1


def default_cache_dir() -> Path:
    """``$WSSLIB_CACHE`` if set, else ``~/.cache/wsslib``."""
    return Path(os.environ.get("WSSLIB_CACHE") or Path.home() / ".cache" / "wsslib").expanduser()


def load_nifti(path: Path) -> np.ndarray:
    """The voxel array of a NIfTI file (``.nii`` or ``.nii.gz``) as float32, scaling applied.

    Raises:
        DataError: nibabel is missing, or the file cannot be read.
    """
    try:
        import nibabel
    except ImportError:
        raise DataError(f"reading {path} needs nibabel: pip install nibabel") from None
    try:
        return np.asarray(nibabel.load(str(path)).get_fdata(dtype=np.float32))
    except Exception as e:  # nibabel raises many types for a damaged file
        raise DataError(f"cannot read NIfTI volume {path}: {type(e).__name__}: {e}") from None


@dataclass(frozen=True)
class Volume:
    """One patient: its modality volumes and its label volume."""

    case: str
    channels: tuple[Path, ...]  # one file per modality, or one 4-D file repeated
    channel_index: tuple[int | None, ...]  # index into a 4-D file's last axis, None for 3-D files
    label: Path


def _file_tag(paths: Sequence[Path]) -> str:
    h = hashlib.sha1()
    for p in sorted(set(paths)):
        st = p.stat()
        h.update(f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def _slices_of(vol: Volume, keep_empty: bool) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Decode one volume into ``images (S, H, W, 3) uint8``, ``masks (S, H, W) bool`` and the kept ``k``."""
    loaded: dict[Path, np.ndarray] = {}
    chans = []
    for path, idx in zip(vol.channels, vol.channel_index):
        if path not in loaded:
            loaded[path] = load_nifti(path)
        arr = loaded[path]
        if idx is not None:
            if arr.ndim != 4 or idx >= arr.shape[3]:
                raise DataError(f"{path} has shape {arr.shape}; expected a 4-D volume with modality {idx} on the last axis")
            arr = arr[..., idx]
        if arr.ndim != 3:
            raise DataError(f"{path} has shape {arr.shape}; expected a 3-D volume")
        chans.append(arr)
    label = load_nifti(vol.label)
    shape = chans[0].shape
    for path, arr in [*zip(vol.channels, chans), (vol.label, label)]:
        if arr.shape[:3] != shape:
            raise DataError(f"{path} has shape {arr.shape[:3]} but {vol.channels[0]} has {shape}: they must match")
    raw = np.stack(chans, axis=-1)  # (X, Y, Z, C)
    scaled = np.stack([to_uint8(c, body=c != 0) for c in chans], axis=-1)
    cycle = [scaled[..., k % scaled.shape[-1]] for k in range(3)]
    rgb = np.stack(cycle, axis=-1)  # (X, Y, Z, 3)
    fg = label > 0
    keep = [k for k in range(shape[2]) if keep_empty or raw[:, :, k].any()]
    images = np.ascontiguousarray(rgb[:, :, keep].transpose(2, 1, 0, 3))  # (S, Y, X, 3): row = 2nd axis
    masks = np.ascontiguousarray(fg[:, :, keep].transpose(2, 1, 0))
    return images, masks, keep


class VolumeSlices(WSSDataset):
    """Axial slices of a set of volumes, cached on disk (see the module doc).

    Subclasses set ``name`` and implement :meth:`_volumes`.
    """

    name: str
    default_modalities: tuple[str, ...]
    modalities: tuple[str, ...]  # the chosen ones, lower case

    def __init__(
        self,
        root: str | Path | None = None,
        split: str = "train",
        modalities: Sequence[str] | None = None,
        keep_empty: bool = False,
        cache_dir: str | Path | None = None,
        progress: bool = False,
    ) -> None:
        check_split(self.name, split)
        self.split = split
        self.modalities = tuple(m.lower() for m in (self.default_modalities if modalities is None else modalities))
        if not 1 <= len(self.modalities) <= 3:
            raise ValueError(f"{self.name}: give 1 to 3 modalities, got {modalities!r}")
        self.keep_empty = keep_empty
        base = find_root(self.name, root)
        volumes = self._volumes(base)
        if not volumes:
            raise DatasetNotFoundError(self.name, base, hint="no volume with a label file was found in it")
        if split != "all":
            assign = grouped_split([v.case for v in volumes], [v.case for v in volumes], seed=0)
            volumes = [v for v in volumes if assign[v.case] == split]
        key = hashlib.sha1(json.dumps([CACHE_FORMAT, self.modalities, keep_empty]).encode()).hexdigest()[:12]
        self.cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        self.cache = self.cache / self.name / key
        self._volumes_of_split = volumes
        self._index: list[tuple[int, int, int, int]] = []  # (volume, row in cache, slice k, label)
        self._meta: list[Path] = []
        self._arrays: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        from tqdm.auto import tqdm

        for v_i, vol in enumerate(tqdm(volumes, desc=f"{self.name} slices", disable=not progress)):
            stem = self.cache / f"{vol.case}-{_file_tag([*vol.channels, vol.label])}"
            meta = self._ensure_cached(vol, stem)
            self._meta.append(stem)
            for row, (k, lab) in enumerate(zip(meta["slices"], meta["labels"])):
                self._index.append((v_i, row, k, lab))

    def _volumes(self, base: Path) -> list[Volume]:
        raise NotImplementedError

    def _ensure_cached(self, vol: Volume, stem: Path) -> dict:
        meta_path = stem.parent / f"{stem.name}.json"
        if meta_path.is_file():
            try:
                return json.loads(meta_path.read_text())
            except ValueError:
                pass  # a damaged index: build again
        images, masks, keep = _slices_of(vol, self.keep_empty)
        self.cache.mkdir(parents=True, exist_ok=True)
        for arr, suffix in ((images, ".image.npy"), (masks, ".mask.npy")):
            tmp = stem.parent / f"{stem.name}{suffix}.tmp"
            with open(tmp, "wb") as fh:
                np.save(fh, arr)
            os.replace(tmp, stem.parent / f"{stem.name}{suffix}")
        meta = {"case": vol.case, "slices": keep, "labels": [int(m.any()) for m in masks],
                "shape": list(images.shape), "sources": [str(p) for p in (*vol.channels, vol.label)]}
        tmp = meta_path.parent / f"{meta_path.name}.tmp"
        tmp.write_text(json.dumps(meta))
        os.replace(tmp, meta_path)  # written last: its presence marks a complete entry
        return meta

    def _arrays_of(self, v_i: int) -> tuple[np.ndarray, np.ndarray]:
        if v_i not in self._arrays:
            stem = self._meta[v_i]
            try:
                images = np.load(stem.parent / f"{stem.name}.image.npy", mmap_mode="r")
                masks = np.load(stem.parent / f"{stem.name}.mask.npy", mmap_mode="r")
            except (OSError, ValueError) as e:
                raise DataError(f"the slice cache {stem}.* is damaged ({e}); delete it to rebuild") from None
            if len(self._arrays) >= 8:
                self._arrays.pop(next(iter(self._arrays)))
            self._arrays[v_i] = (images, masks)
        return self._arrays[v_i]

    def __len__(self) -> int:
        return len(self._index)

    def labels(self) -> np.ndarray:
        return np.array([lab for *_, lab in self._index], dtype=np.int64)

    def ids(self) -> list[str]:
        return [f"{self._volumes_of_split[v].case}_z{k:03d}" for v, _, k, _ in self._index]

    def __getitem__(self, i: int) -> Sample:
        """Slice ``i``: ``image (H, W, 3) uint8`` (modalities as channels), ``mask (H, W) bool``."""
        v_i, row, k, lab = self._index[i]
        images, masks = self._arrays_of(v_i)
        return Sample(image=np.array(images[row]), label=lab, mask=np.array(masks[row]),
                      boxes=np.zeros((0, 4), np.float32), gaze=None,
                      id=f"{self._volumes_of_split[v_i].case}_z{k:03d}")


def _stem(path: Path) -> str:
    """The file name without ``.nii`` / ``.nii.gz``, lower case."""
    return re.sub(r"\.nii(\.gz)?$", "", path.name.lower())


def _nifti_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.name.endswith((".nii", ".nii.gz")) and not p.name.startswith("._") and p.is_file())


@register_dataset("brats2020")
class BraTS2020(VolumeSlices):
    """BraTS 2020 training cases as 2-D slices: FLAIR, T1ce, T2 as channels, tumour classes merged.

    Layout read: case folders ``BraTS20_Training_XXX/`` anywhere under ``root`` (the official
    ``MICCAI_BraTS2020_TrainingData/``, or Kaggle's extra ``BraTS2020_TrainingData/`` level), each with
    ``<case>_flair``, ``_t1``, ``_t1ce``, ``_t2`` and ``_seg`` ``.nii`` / ``.nii.gz`` files (case 355's
    label file ``W39_1998.09.19_Segm.nii`` is accepted too). Cases without a label file (the
    validation data) are skipped.

    Args:
        root: the data folder; ``None`` searches the defaults.
        split: ``"train"``, ``"valid"``, ``"test"`` (70/15/15 % of the patients, seed 0) or ``"all"``.
        modalities: channel order, from ``flair``, ``t1``, ``t1ce``, ``t2`` (paper: FLAIR, T1ce, T2).
        keep_empty: keep slices outside the head (all chosen modalities zero).
        cache_dir: slice cache folder (default ``$WSSLIB_CACHE`` or ``~/.cache/wsslib``).
        progress: show a progress bar while volumes are decoded into the cache.

    Samples: ``image (240, 240, 3) uint8``, ``mask (240, 240) bool``, label = mask non-empty.

    Raises:
        DatasetNotFoundError: the folder is missing or holds no case with a label file.
        DataError: a case lacks a modality file, or a volume cannot be read.
    """

    name = "brats2020"
    default_modalities = ("flair", "t1ce", "t2")

    def _volumes(self, base: Path) -> list[Volume]:
        cases = sorted({p.parent for p in base.rglob("*_flair.nii*") if not p.name.startswith("._")})
        volumes = []
        for folder in cases:
            files = _nifti_files(folder)
            label = next((p for p in files if _stem(p).endswith(("_seg", "segm"))), None)
            if label is None:
                continue
            chans = []
            for m in self.modalities:
                found = [p for p in files if _stem(p).endswith(f"_{m}")]
                if not found:
                    raise DataError(f"BraTS case {folder} has no {m} volume (*_{m}.nii.gz); modalities: flair, t1, t1ce, t2")
                chans.append(found[0])
            volumes.append(Volume(folder.name, tuple(chans), (None,) * len(chans), label))
        return volumes


@register_dataset("decathlon-prostate")
class DecathlonProstate(VolumeSlices):
    """Medical Segmentation Decathlon Task05 prostate as 2-D slices (paper: ADC maps, zones merged).

    Layout read: ``Task05_Prostate/`` (or ``root`` itself) with ``dataset.json``,
    ``imagesTr/prostate_XX.nii.gz`` (4-D: modality 0 = T2, 1 = ADC on the last axis, as
    ``dataset.json`` names them) and ``labelsTr/prostate_XX.nii.gz`` (0 background, 1 peripheral zone,
    2 transition zone). macOS ``._*`` files in the archive are ignored. ``imagesTs`` has no labels
    and is not used.

    Args:
        root: the data folder; ``None`` searches the defaults.
        split: ``"train"``, ``"valid"``, ``"test"`` (70/15/15 % of the 32 patients, seed 0) or ``"all"``.
        modalities: from ``t2``, ``adc`` (default the paper's ``("adc",)``, repeated over the channels).
        keep_empty: keep slices whose chosen modalities are all zero.
        cache_dir: slice cache folder (default ``$WSSLIB_CACHE`` or ``~/.cache/wsslib``).
        progress: show a progress bar while volumes are decoded into the cache.

    Samples: ``image (H, W, 3) uint8``, ``mask (H, W) bool`` (both zones), label = mask non-empty.

    Raises:
        DatasetNotFoundError: the folder, ``imagesTr/`` or ``labelsTr/`` is missing.
        DataError: an unknown modality, a malformed ``dataset.json``, or an unreadable volume.
    """

    name = "decathlon-prostate"
    default_modalities = ("adc",)

    def _volumes(self, base: Path) -> list[Volume]:
        task = locate(self.name, base, "imagesTr", hint="it has no imagesTr/ folder (nor Task05_Prostate/imagesTr/)")
        if not (task / "labelsTr").is_dir():
            raise DatasetNotFoundError(self.name, task, hint="it has no labelsTr/ folder")
        names = {"0": "t2", "1": "adc"}
        meta = task / "dataset.json"
        if meta.is_file():
            try:
                names = {str(k): str(v).lower() for k, v in json.loads(meta.read_text(encoding="utf-8"))["modality"].items()}
            except (ValueError, KeyError, AttributeError) as e:
                raise DataError(f"cannot read the modalities of {meta}: {type(e).__name__}: {e}") from None
        index_of = {v: int(k) for k, v in names.items()}
        unknown = [m for m in self.modalities if m not in index_of]
        if unknown:
            raise DataError(f"{self.name}: unknown modality {unknown[0]!r}; {meta.name} names {sorted(index_of)}")
        labels = {p.name: p for p in _nifti_files(task / "labelsTr")}
        volumes = []
        for image in _nifti_files(task / "imagesTr"):
            if image.name not in labels:
                continue
            case = _stem(image)
            idx = tuple(index_of[m] for m in self.modalities)
            volumes.append(Volume(case, (image,) * len(idx), idx, labels[image.name]))
        return volumes
