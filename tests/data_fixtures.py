"""Tiny copies of every real data set in its real on-disk layout, made on the fly (no binaries in
the repository): used by test_loaders.py (loaders) and test_download.py (archives for the script).

``CONTENT[(name, file)](folder)`` writes what the archive ``file`` of set ``name`` unpacks to (its
top-level entries) into ``folder``; ``make_archive`` packs that into the archive format of the
source table.
"""

from __future__ import annotations

import csv
import io
import json
import tarfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

KVASIR_IDS = ("cju0aaa", "cju0bbb", "cju0ccc")
NCI_IDS = {"train": ["Prostate3T-01-0001_10", "Prostate3T-01-0001_11", "Prostate3T-01-0002_7",
                     "ProstateDx-01-0003_5", "ProstateDx-01-0003_6", "ProstateDx-01-0004_9"],
           "test": ["Prostate3T-01-0009_12", "ProstateDx-01-0010_4"]}


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def save_image(path: Path, arr: np.ndarray, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, **kw)
    return path


def blob(h: int, w: int, y: int, x: int, r: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return (yy - y) ** 2 + (xx - x) ** 2 < r * r


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        csv.writer(fh).writerows([header, *rows])
    return path


# ----------------------------------------------------------------------------------------------
# per source file: the content its archive unpacks to


def kvasir_zip(folder: Path) -> None:
    """Kvasir-SEG/images/*.jpg, masks/*.jpg, kavsir_bboxes.json."""
    root, rng, boxes = folder / "Kvasir-SEG", _rng(1), {}
    for name in KVASIR_IDS:
        save_image(root / "images" / f"{name}.jpg", rng.integers(0, 255, (30, 40, 3), dtype=np.uint8), quality=95)
        save_image(root / "masks" / f"{name}.jpg", (blob(30, 40, 15, 20, 6) * 255).astype(np.uint8), quality=95)
        boxes[name] = {"height": 30, "width": 40, "bbox": [{"label": "polyp", "xmin": 14, "ymin": 9, "xmax": 26, "ymax": 21}]}
    (root / "kavsir_bboxes.json").write_text(json.dumps(boxes))


def fixation_rows(ids, n: int = 6) -> list[list]:
    return [[f"{i}.jpg", k + 1, 0.5 + 0.01 * k, 0.4, 200 + k, 3000, 7 + 100 * k, 320.0, 320.0] for i in ids for k in range(n)]


GAZE_HEADER = ["IMAGE", "CURRENT_FIX_INDEX", "CURRENT_FIX_X", "CURRENT_FIX_Y", "CURRENT_FIX_DURATION",
               "CURRENT_FIX_PUPIL", "CURRENT_FIX_START", "IMAGE_HEIGHT", "IMAGE_WIDTH"]


def kvasir_gaze(folder: Path) -> None:
    write_csv(folder / "kvasir_fixation.csv", GAZE_HEADER, fixation_rows(KVASIR_IDS))


def nci_gaze(folder: Path) -> None:
    write_csv(folder / "nci-isbi_fixation.csv", GAZE_HEADER, fixation_rows(NCI_IDS["train"] + NCI_IDS["test"]))


POLYPGEN_FRAMES = {  # id -> label, as the official layout below gives them
    **{f"100H000{i}": 1 for i in range(1, 7)}, "C2_200": 0, "C2_201": 1,
    **{f"seq9_neg_{i}": 0 for i in range(4)}, "C3_x": 1, "C4_x": 1,
}


def polypgen_zip(folder: Path) -> None:
    """PolypGen2021_MultiCenterData_v3: data_C1/images_C1/*.jpg with masks_C1/*_mask.jpg (all
    polyps), data_C2 with one empty mask, a negative-only sequence without masks, and the same
    stem "x" in two centres (ids then get the folder tag)."""
    top, rng = folder / "PolypGen2021_MultiCenterData_v3", _rng(2)
    polyp = (blob(24, 32, 12, 16, 5) * 255).astype(np.uint8)

    def frame(img_dir: Path, name: str, mask: np.ndarray | None) -> None:
        save_image(img_dir / f"{name}.jpg", rng.integers(0, 255, (24, 32, 3), dtype=np.uint8))
        if mask is not None:
            save_image(img_dir.with_name(img_dir.name.replace("images_", "masks_")) / f"{name}_mask.jpg", mask)

    for i in range(1, 7):
        frame(top / "data_C1" / "images_C1", f"100H000{i}", polyp)
    frame(top / "data_C2" / "images_C2", "C2_200", np.zeros((24, 32), np.uint8))
    frame(top / "data_C2" / "images_C2", "C2_201", polyp)
    for i in range(4):
        frame(top / "sequenceData" / "negativeOnly" / "seq9_neg" / "images_seq9_neg", f"seq9_neg_{i}", None)
    frame(top / "data_C3" / "images_C3", "x", polyp)
    frame(top / "data_C4" / "images_C4", "x", polyp)


PETS = [("Abyssinian_1", 1, 1, 1), ("Bengal_3", 6, 1, 4), ("Persian_2", 24, 1, 7), ("Siamese_5", 33, 1, 10),
        ("beagle_1", 3, 2, 2), ("pug_4", 26, 2, 17), ("boxer_2", 5, 2, 4), ("havanese_9", 15, 2, 9),
        ("Birman_7", 8, 1, 2), ("chihuahua_3", 11, 2, 6), ("Ragdoll_1", 28, 1, 8), ("samoyed_2", 29, 2, 19)]
PETS_TEST = {"Birman_7", "chihuahua_3", "Ragdoll_1", "samoyed_2"}


def pets_trimap(h: int = 28, w: int = 36) -> np.ndarray:
    """1 = pet (a disc), 3 = its border ring, 2 = background."""
    trimap = np.full((h, w), 2, np.uint8)
    trimap[blob(h, w, 14, 18, 9)] = 3
    trimap[blob(h, w, 14, 18, 7)] = 1
    return trimap


def pets_images(folder: Path) -> None:
    rng = _rng(3)
    for name, *_ in PETS:
        save_image(folder / "images" / f"{name}.jpg", rng.integers(0, 255, (28, 36, 3), dtype=np.uint8))


def pets_annotations(folder: Path) -> None:
    ann = folder / "annotations"
    for name, *_ in PETS:
        save_image(ann / "trimaps" / f"{name}.png", pets_trimap())
    (ann / "trimaps" / "._Abyssinian_1.png").write_bytes(b"\x00\x05\x16\x07 macOS resource fork")
    line = lambda p: f"{p[0]} {p[1]} {p[2]} {p[3]}"  # noqa: E731
    (ann / "trainval.txt").write_text("\n".join(line(p) for p in PETS if p[0] not in PETS_TEST) + "\n")
    (ann / "test.txt").write_text("\n".join(line(p) for p in PETS if p[0] in PETS_TEST) + "\n")
    (ann / "list.txt").write_text("#Image CLASS-ID SPECIES BREED ID\n" + "\n".join(line(p) for p in PETS) + "\n")


TBX = {"train": [*((f"health/h000{k}.png", []) for k in range(1, 7)), ("sick/s0001.png", []),
                 ("tb/tb0001.png", [[4, 6, 10, 8, 1]]), ("tb/tb0002.png", [[2, 2, 6, 6, 1], [20, 18, 8, 10, 2]]),
                 ("tb/tb0003.png", [[0, 0, 4, 4, 1]]), ("tb/tb1199.png", [])],
       "val": [("health/h0010.png", []), ("sick/s0010.png", []), ("tb/tb0010.png", [[10, 10, 12, 12, 3]])]}


def tbx_zip(folder: Path) -> None:
    """TBX11K/imgs/{health,sick,tb}/*.png, annotations/json/TBX11K_{train,val}.json, lists/."""
    root, rng = folder / "TBX11K", _rng(4)
    for part, items in TBX.items():
        images, anns = [], []
        for i, (fname, boxes) in enumerate(items, start=1):
            save_image(root / "imgs" / fname, rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
            images.append({"id": i, "file_name": fname, "width": 32, "height": 32})
            for x, y, w, h, cat in boxes:
                anns.append({"id": len(anns) + 1, "image_id": i, "category_id": cat, "bbox": [x, y, w, h],
                             "area": w * h, "iscrowd": 0})
        doc = {"info": [{"description": "TBX11K Dataset"}], "categories": [{"id": 1, "name": "ActiveTuberculosis"}],
               "images": images, "annotations": anns}
        (root / "annotations" / "json").mkdir(parents=True, exist_ok=True)
        (root / "annotations" / "json" / f"TBX11K_{part}.json").write_text(json.dumps(doc))
        (root / "lists").mkdir(exist_ok=True)
        (root / "lists" / f"TBX11K_{part}.txt").write_text("\n".join(f for f, _ in items) + "\n")
    save_image(root / "imgs" / "test" / "t0001.png", rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))


FIRE_N = (7, 6)  # fire, not fire


def fire_zip(folder: Path) -> None:
    """Image/Fire/*.png, Image/Not_Fire/*.png, Segmentation_Mask/Fire/*.png (0/255)."""
    rng = _rng(5)
    for k in range(FIRE_N[0]):
        save_image(folder / "Image" / "Fire" / f"Img_{k}.png", rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
        if k != 0:  # Img_0 has no mask file
            save_image(folder / "Segmentation_Mask" / "Fire" / f"Img_{k}.png", (blob(32, 32, 16, 16, 3 + k) * 255).astype(np.uint8))
    for k in range(FIRE_N[1]):
        save_image(folder / "Image" / "Not_Fire" / f"Img_{100 + k}.png", rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))


def _nifti(path: Path, arr: np.ndarray) -> None:
    import nibabel

    path.parent.mkdir(parents=True, exist_ok=True)
    nibabel.save(nibabel.Nifti1Image(arr, np.eye(4)), str(path))


def volume_label(shape: tuple[int, int, int], z_with: range, value: int = 1) -> np.ndarray:
    lab = np.zeros(shape, np.uint8)
    for z in z_with:
        lab[3:7, 2:5, z] = value
    return lab


DECATHLON_CASES = 7  # 5 / 1 / 1 volumes with the 70/15/15 split


def decathlon_tar(folder: Path) -> None:
    """Task05_Prostate/{dataset.json, imagesTr (4-D: T2, ADC), labelsTr (0/1/2), imagesTs}."""
    task, rng, shape = folder / "Task05_Prostate", _rng(6), (12, 10, 6)
    training = []
    for c in range(DECATHLON_CASES):
        case = f"prostate_{c:02d}"
        vol = np.zeros((*shape, 2), np.float32)
        vol[..., 1:5, 0] = rng.uniform(100, 900, (*shape[:2], 4))  # T2 only on slices 1..4
        vol[..., 1:5, 1] = rng.uniform(500, 2500, (*shape[:2], 4))  # ADC
        _nifti(task / "imagesTr" / f"{case}.nii.gz", vol)
        lab = volume_label(shape, range(2, 4), 1)
        lab[8:10, 6:8, 3] = 2  # transition zone on slice 3
        _nifti(task / "labelsTr" / f"{case}.nii.gz", lab)
        training.append({"image": f"./imagesTr/{case}.nii.gz", "label": f"./labelsTr/{case}.nii.gz"})
    (task / "imagesTr" / "._prostate_00.nii.gz").write_bytes(b"\x00\x05\x16\x07 macOS")
    _nifti(task / "imagesTs" / "prostate_99.nii.gz", np.zeros((*shape, 2), np.float32))
    (task / "dataset.json").write_text(json.dumps({"name": "PROSTATE", "modality": {"0": "T2", "1": "ADC"},
                                                   "labels": {"0": "background", "1": "PZ", "2": "TZ"},
                                                   "numTraining": DECATHLON_CASES, "training": training}))


BRATS_CASES = 3
BRATS_MODS = {"flair": 1000.0, "t1": 2000.0, "t1ce": 3000.0, "t2": 4000.0}


def brats_zip(folder: Path) -> None:
    """MICCAI_BraTS2020_TrainingData/BraTS20_Training_00X/<case>_{flair,t1,t1ce,t2,seg}.nii.gz;
    each modality a constant (so the channel order is visible) on slices 1..6 of 8."""
    base, shape = folder / "MICCAI_BraTS2020_TrainingData", (12, 10, 8)
    for c in range(1, BRATS_CASES + 1):
        case = f"BraTS20_Training_{c:03d}"
        for mod, value in BRATS_MODS.items():
            vol = np.zeros(shape, np.float32)
            vol[:, :, 1:7] = value
            vol[0, 0, 1:7] = value / 2  # a second level, so the percentile scaling is not degenerate
            _nifti(base / case / f"{case}_{mod}.nii.gz", vol)
        lab = volume_label(shape, range(3, 5), 4)
        lab[5, 5, 4] = 1
        seg_name = "W39_1998.09.19_Segm.nii" if c == BRATS_CASES else f"{case}_seg.nii.gz"
        _nifti(base / case / seg_name, lab)
    _nifti(folder / "MICCAI_BraTS2020_ValidationData" / "BraTS20_Validation_001" / "BraTS20_Validation_001_flair.nii.gz",
           np.zeros(shape, np.float32))


def write_dicom(path: Path, arr: np.ndarray) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = MRImageStorage, meta.MediaStorageSOPInstanceUID, "MR"
    ds.Rows, ds.Columns = arr.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.PixelData = arr.astype("<u2").tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def nci_zip(folder: Path) -> None:
    """NCI-ISBI/{images/*.dcm, masks/*.png, train.txt, test.txt} (one extra folder, as a user's zip may have)."""
    root, rng = folder / "NCI-ISBI", _rng(7)
    for part, ids in NCI_IDS.items():
        for rid in ids:
            write_dicom(root / "images" / f"{rid}.dcm", rng.integers(0, 1500, (20, 24)))
            save_image(root / "masks" / f"{rid}.png", (blob(20, 24, 10, 12, 4) * 255).astype(np.uint8))
        (root / f"{part}.txt").write_text("\n".join(ids) + "\n")


CONTENT = {
    ("kvasir-seg", "kvasir-seg.zip"): kvasir_zip,
    ("gaze", "kvasir_fixation.csv"): kvasir_gaze,
    ("gaze", "nci-isbi_fixation.csv"): nci_gaze,
    ("polypgen", "PolypGen2021_MultiCenterData_v3.zip"): polypgen_zip,
    ("oxford-pets", "images.tar.gz"): pets_images,
    ("oxford-pets", "annotations.tar.gz"): pets_annotations,
    ("tbx11k", "TBX11K.zip"): tbx_zip,
    ("fire", "fire-segmentation-image-dataset.zip"): fire_zip,
    ("decathlon-prostate", "Task05_Prostate.tar"): decathlon_tar,
    ("brats2020", "MICCAI_BraTS2020_TrainingData.zip"): brats_zip,
    ("nci-isbi", "nci-isbi.zip"): nci_zip,
}


def make_archive(content: Path, kind: str, file: str) -> bytes:
    """Pack the folder ``content`` (its entries at the archive's top level) as ``kind``; for
    ``file``, return the single file named ``file``."""
    if kind == "file":
        return (content / file).read_bytes()
    buf = io.BytesIO()
    paths = sorted(p for p in content.rglob("*"))
    if kind == "zip":
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for p in paths:
                zf.write(p, p.relative_to(content).as_posix())
    else:
        with tarfile.open(fileobj=buf, mode="w:gz" if kind == "tar.gz" else "w") as tf:
            for p in paths:
                tf.add(p, p.relative_to(content).as_posix(), recursive=False)
    return buf.getvalue()


def build_set(name: str, folder: Path) -> Path:
    """Write every file of set ``name`` unpacked into ``folder`` (= ``<root>/<name>``), as the
    download script would install it (gaze files go to ``folder/gaze``)."""
    for (set_name, _file), make in CONTENT.items():
        if set_name == name:
            make(folder / "gaze" if name == "gaze" else folder)
    return folder
