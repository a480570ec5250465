"""TBX11K chest X-rays (Liu et al., CVPR 2020): healthy vs tuberculosis, TB boxes turned into masks.

Layout read (the official ``TBX11K.zip``; ``root`` may be the ``TBX11K/`` folder or the one above):

* ``imgs/health/*.png``, ``imgs/sick/*.png``, ``imgs/tb/*.png`` (512 x 512), ``imgs/test/`` (unused:
  the official test part has no labels);
* ``annotations/json/TBX11K_train.json`` and ``TBX11K_val.json``: COCO files whose ``images`` list
  every image of the part (``file_name`` relative to ``imgs/``, e.g. ``tb/tb0003.png``) and whose
  ``annotations`` hold the TB boxes ``bbox = [x, y, w, h]`` in pixels of the 512 x 512 image, with
  categories 1 ActiveTuberculosis, 2 ObsoletePulmonaryTuberculosis (latent), 3 PulmonaryTuberculosis
  (uncertain).

Labels (the AAX paper's task, healthy vs TB): ``imgs/tb/`` images are 1, ``imgs/health/`` images 0;
``imgs/sick/`` (sick but not TB) images are left out, or labelled 0 with ``include_sick=True``.

Masks, the rule: the mask of a TB image is the union of ALL its TB boxes (every category), filled;
pixel (row r, column c) is foreground when its centre ``(c + 0.5, r + 0.5)`` lies inside a box
``x <= c + 0.5 <= x + w``, ``y <= r + 0.5 <= y + h``. A TB image without any box (``tb1199``) has no
mask (``Sample.mask is None``, ``has_mask`` False). Healthy (and sick) images have an all-False mask.

Splits: the official train part (6600 images) gives ``"train"`` and ``"valid"``: stratified by
label, seeded (seed 0), 85 % / 15 % (see :mod:`wsslib.data.splitting`); the official val part
(1800 images, labelled) is ``"test"``. ``"all"`` = train + val parts.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from wsslib.core.errors import DataError, DatasetNotFoundError
from wsslib.data.base import find_root, register_dataset
from wsslib.data.records import Record, RecordDataset, check_split, locate
from wsslib.data.splitting import stratified_split

PARTS = {"train": "TBX11K_train.json", "val": "TBX11K_val.json"}
CATEGORIES = {1: "ActiveTuberculosis", 2: "ObsoletePulmonaryTuberculosis", 3: "PulmonaryTuberculosis"}


@register_dataset("tbx11k")
class TBX11K(RecordDataset):
    """TBX11K healthy (0) vs TB (1) chest X-rays; TB boxes give the masks (rule in the module doc).

    Args:
        root: the data folder (``TBX11K/`` or the folder above it); ``None`` searches the defaults.
        split: ``"train"``, ``"valid"`` (official train part, 85/15, stratified, seed 0),
            ``"test"`` (official val part) or ``"all"``.
        include_sick: also take the sick-but-not-TB images, labelled 0.

    Samples: ``image (512, 512, 3) uint8``, ``boxes (K, 4) float32`` (x_min, y_min, x_max, y_max),
    ``mask (512, 512) bool`` (``None`` for a TB image without boxes), ``gaze`` None.

    Raises:
        DatasetNotFoundError: the folder, ``imgs/`` or an annotation JSON file is missing.
        DataError: a malformed annotation file, or a JSON entry naming a missing image.
    """

    name = "tbx11k"

    def __init__(self, root: str | Path | None = None, split: str = "train", include_sick: bool = False) -> None:
        check_split(self.name, split)
        self.split = split
        base = find_root(self.name, root)
        self.root = locate(self.name, base, "imgs", hint="it has no imgs/ folder (nor TBX11K/imgs/)")
        records = {part: self._part(part, include_sick) for part in PARTS}
        if split == "test":
            chosen = records["val"]
        elif split == "all":
            chosen = records["train"] + records["val"]
        else:
            train = records["train"]
            assign = stratified_split([r.id for r in train], [r.label for r in train],
                                      fractions=(0.85, 0.15), names=("train", "valid"), seed=0)
            chosen = [r for r in train if assign[r.id] == split]
        self._records = sorted(chosen, key=lambda r: r.id)

    def _part(self, part: str, include_sick: bool) -> list[Record]:
        path = self.root / "annotations" / "json" / PARTS[part]
        if not path.is_file():
            raise DatasetNotFoundError(self.name, self.root, hint=f"the annotation file {path} is missing")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            images = {int(im["id"]): str(im["file_name"]) for im in data["images"]}
            boxes: dict[int, list[list[float]]] = {}
            for ann in data.get("annotations", []):
                x, y, w, h = (float(v) for v in ann["bbox"])
                boxes.setdefault(int(ann["image_id"]), []).append([x, y, x + w, y + h])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise DataError(f"cannot read TBX11K annotations {path}: {type(e).__name__}: {e}") from None
        out = []
        for image_id, file_name in images.items():
            folder = Path(file_name).parts[0] if len(Path(file_name).parts) > 1 else ""
            if folder == "tb":
                label, kind = 1, "boxes" if image_id in boxes else "none"
            elif folder == "health" or (folder == "sick" and include_sick):
                label, kind = 0, "empty"
            else:
                continue
            image = self.root / "imgs" / file_name
            if not image.is_file():
                raise DataError(f"{path} lists {file_name}, but {image} does not exist")
            b = np.array(boxes.get(image_id, []), np.float32).reshape(-1, 4)
            out.append(Record(id=Path(file_name).stem, image=image, label=label, mask=kind, boxes=b))
        return out
