"""Oxford-IIIT Pet (Parkhi et al., CVPR 2012) as the Deshpande et al. paper uses it: the species
(cat / dog) is the image label, the trimap gives the mask.

Layout read (``images.tar.gz`` and ``annotations.tar.gz`` unpacked side by side):

* ``images/<id>.jpg``;
* ``annotations/trimaps/<id>.png``: 1 = pet, 2 = background, 3 = border / not classified;
* ``annotations/trainval.txt`` and ``annotations/test.txt``: lines ``<id> <class 1..37>
  <species 1 = cat, 2 = dog> <breed id>`` (``#`` lines are comments).

Label: 0 = cat, 1 = dog (torchvision's "binary-category" order). Mask: trimap values 1 and 3 are
foreground, 2 background (every image, cats and dogs, has a mask).

Splits: the official ``test.txt`` is ``"test"``; the official ``trainval.txt`` gives ``"train"`` and
``"valid"``: 85 % / 15 %, stratified by species, seed 0 (:mod:`wsslib.data.splitting`).
``"all"`` = trainval + test.
"""

from __future__ import annotations

from pathlib import Path

from wsslib.core.errors import DataError, DatasetNotFoundError
from wsslib.data.base import find_root, register_dataset
from wsslib.data.records import Record, RecordDataset, check_split, locate
from wsslib.data.splitting import stratified_split

SPECIES = {1: "cat", 2: "dog"}


@register_dataset("oxford-pets")
class OxfordPets(RecordDataset):
    """Oxford-IIIT Pet: label 0 = cat, 1 = dog; mask = trimap 1 or 3.

    Args:
        root: the data folder holding ``images/`` and ``annotations/`` (or one folder above).
        split: ``"train"``, ``"valid"`` (official trainval, 85/15, stratified by species, seed 0),
            ``"test"`` (official test) or ``"all"``.

    Samples: ``image (H, W, 3) uint8``, ``mask (H, W) bool``, boxes ``(0, 4)``, gaze ``None``.

    Raises:
        DatasetNotFoundError: the folder, ``images/``, ``annotations/trimaps/`` or a list file is missing.
        DataError: a malformed list line, or a listed image or trimap that does not exist.
    """

    name = "oxford-pets"

    def __init__(self, root: str | Path | None = None, split: str = "train") -> None:
        check_split(self.name, split)
        self.split = split
        base = find_root(self.name, root)
        self.root = locate(self.name, base, "annotations/trimaps",
                           hint="it has no annotations/trimaps/ folder (unpack annotations.tar.gz there)")
        if not (self.root / "images").is_dir():
            raise DatasetNotFoundError(self.name, self.root, hint="it has no images/ folder (unpack images.tar.gz there)")
        trainval, test = self._list("trainval.txt"), self._list("test.txt")
        if split == "test":
            records = test
        elif split == "all":
            records = trainval + test
        else:
            assign = stratified_split([r.id for r in trainval], [r.label for r in trainval],
                                      fractions=(0.85, 0.15), names=("train", "valid"), seed=0)
            records = [r for r in trainval if assign[r.id] == split]
        self._records = sorted(records, key=lambda r: r.id)

    def _list(self, filename: str) -> list[Record]:
        path = self.root / "annotations" / filename
        if not path.is_file():
            raise DatasetNotFoundError(self.name, self.root, hint=f"the split list {path} is missing")
        records = []
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip() or line.startswith("#"):
                continue
            parts = line.split()
            if len(parts) < 3 or parts[2] not in ("1", "2"):
                raise DataError(f"{path}, line {n}: expected '<id> <class> <species 1|2> <breed>', got {line!r}")
            rid = parts[0]
            image = self.root / "images" / f"{rid}.jpg"
            trimap = self.root / "annotations" / "trimaps" / f"{rid}.png"
            for f in (image, trimap):
                if not f.is_file():
                    raise DataError(f"{path}, line {n} lists {rid}, but {f} does not exist")
            records.append(Record(rid, image, int(parts[2]) - 1, "trimap", trimap))
        return records
