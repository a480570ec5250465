"""The Fire Segmentation Image Dataset (DiversisAI, Kaggle), used by the AAX paper: fire / not-fire
frames with fire masks.

Layout read (the Kaggle zip; ``root`` may also be one folder above it):

* ``Image/Fire/*`` and ``Image/Not_Fire/*`` (folder names matched without regard to case, ``_``,
  ``-`` or spaces: ``Not_fire``, ``Non-Fire``, ``NoFire`` all work);
* ``Segmentation_Mask/Fire/<same stem>.<png|jpg>``: the fire masks (0/255, or 0/1).

Labels: Fire 1, Not_Fire 0. Masks: fire images read their mask (``None`` when a fire image has no
mask file); not-fire images have an all-False mask unless ``Segmentation_Mask/Not_Fire`` holds one.
Ids are the file stems (prefixed ``fire_`` / ``nofire_`` when a stem occurs in both folders).

Splits: none is published. ``"train"`` / ``"valid"`` / ``"test"`` = 70 / 15 / 15 %, stratified by
label, seed 0 (:func:`wsslib.data.splitting.stratified_split` over all ids); ``"all"`` = every image.
"""

from __future__ import annotations

import re
from pathlib import Path

from wsslib.core.errors import DatasetNotFoundError
from wsslib.data.base import find_root, register_dataset
from wsslib.data.io import IMAGE_SUFFIXES
from wsslib.data.records import Record, RecordDataset, check_split, files_by_stem, locate
from wsslib.data.splitting import stratified_split


def _norm(name: str) -> str:
    return re.sub(r"[\s_\-]", "", name.lower())


def _subfolder(folder: Path, wanted: tuple[str, ...]) -> Path | None:
    if not folder.is_dir():
        return None
    for p in sorted(folder.iterdir()):
        if p.is_dir() and _norm(p.name) in wanted:
            return p
    return None


FIRE = ("fire",)
NOT_FIRE = ("notfire", "nonfire", "nofire")


@register_dataset("fire")
class FireSegmentation(RecordDataset):
    """Fire (1) / not-fire (0) frames with fire masks.

    Args:
        root: the data folder (holding ``Image/`` and ``Segmentation_Mask/``, or one folder above).
        split: ``"train"``, ``"valid"``, ``"test"`` (70/15/15 %, stratified, seed 0) or ``"all"``.

    Samples: ``image (H, W, 3) uint8`` (256 x 256 in the release), ``mask (H, W) bool`` or ``None``,
    boxes ``(0, 4)``, gaze ``None``.

    Raises:
        DatasetNotFoundError: the folder, ``Image/Fire`` or ``Image/Not_Fire`` is missing or empty.
        DataError: an unreadable image or mask (when a sample is read).
    """

    name = "fire"

    def __init__(self, root: str | Path | None = None, split: str = "train") -> None:
        check_split(self.name, split)
        self.split = split
        base = find_root(self.name, root)
        self.root = locate(self.name, base, "Image", hint="it has no Image/ folder (with Fire/ and Not_Fire/)")
        images, masks = self.root / "Image", self.root / "Segmentation_Mask"
        fire_dir, not_dir = _subfolder(images, FIRE), _subfolder(images, NOT_FIRE)
        if fire_dir is None or not_dir is None:
            raise DatasetNotFoundError(self.name, self.root, hint=f"{images} needs the folders Fire/ and Not_Fire/")
        suffixes = (".png", *(s for s in IMAGE_SUFFIXES if s != ".png"))
        fire = files_by_stem(fire_dir, IMAGE_SUFFIXES)
        not_fire = files_by_stem(not_dir, IMAGE_SUFFIXES)
        if not fire or not not_fire:
            raise DatasetNotFoundError(self.name, self.root, hint=f"{fire_dir} or {not_dir} holds no image")
        fire_masks = files_by_stem(_subfolder(masks, FIRE) or masks / "Fire", suffixes)
        not_masks = files_by_stem(_subfolder(masks, NOT_FIRE) or masks / "Not_Fire", suffixes)
        both = set(fire) & set(not_fire)
        records = []
        for stem, path in fire.items():
            m = fire_masks.get(stem)
            rid = f"fire_{stem}" if stem in both else stem
            records.append(Record(rid, path, 1, "file" if m else "none", m))
        for stem, path in not_fire.items():
            m = not_masks.get(stem)
            rid = f"nofire_{stem}" if stem in both else stem
            records.append(Record(rid, path, 0, "file" if m else "empty", m))
        if split != "all":
            assign = stratified_split([r.id for r in records], [r.label for r in records], seed=0)
            records = [r for r in records if assign[r.id] == split]
        self._records = sorted(records, key=lambda r: r.id)
