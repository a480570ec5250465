"""The loaders of issue 8 (TBX11K, Fire, Oxford-IIIT Pet, Decathlon prostate, BraTS 2020, NCI-ISBI),
each on a tiny copy in its real on-disk layout (built by tests/data_fixtures.py), and the source table."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

import data_fixtures as fx
from wsslib.data import (
    NCIISBI,
    TBX11K,
    BraTS2020,
    DecathlonProstate,
    FireSegmentation,
    OxfordPets,
    get_dataset,
    list_datasets,
    load_splits,
    to_tensors,
)
from wsslib.data.records import boxes_to_mask, read_binary_mask
from wsslib.data.sources import load_sources, source_names
from wsslib.data.splitting import grouped_split, stratified_split
from wsslib.core.errors import DataError, DatasetNotFoundError

NEW_SETS = ("tbx11k", "fire", "oxford-pets", "decathlon-prostate", "brats2020", "nci-isbi")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """Every set of the table built into one data root, as the download script installs them."""
    root = tmp_path_factory.mktemp("data")
    for name in source_names():
        if name != "gaze":
            fx.build_set(name, root / name)
    fx.nci_gaze(root / "nci-isbi" / "gaze")  # where ./data_download.sh gaze puts it
    return root


@pytest.fixture()
def cache(tmp_path):
    return tmp_path / "cache"


def _splits_partition(make, n_all):
    parts = {s: make(s) for s in ("train", "valid", "test")}
    ids = [set(d.ids()) for d in parts.values()]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert sum(len(d) for d in parts.values()) == n_all
    return parts


# ----------------------------------------------------------------------------------------------
# splitting and mask helpers


def test_stratified_split_rule_and_grouping():
    ids = [f"i{k}" for k in range(20)]
    labels = [k % 2 for k in range(20)]
    a = stratified_split(ids, labels, seed=3)
    assert a == stratified_split(list(reversed(ids)), list(reversed(labels)), seed=3)  # order-free
    for lab in (0, 1):
        got = [a[i] for i, y in zip(ids, labels) if y == lab]
        assert (got.count("train"), got.count("valid"), got.count("test")) == (7, 2, 1)  # round(7), round(1.5)=2
    g = grouped_split(["p1_1", "p1_2", "p2_1", "p3_1"], ["p1", "p1", "p2", "p3"], fractions=(0.5, 0.5), names=("a", "b"))
    assert g["p1_1"] == g["p1_2"]
    with pytest.raises(ValueError, match="unique"):
        stratified_split(["x", "x"])


def test_boxes_to_mask_rule():
    m = boxes_to_mask(np.array([[2, 2, 8, 8]], np.float32), 12, 12)
    assert m.sum() == 36 and m[2, 2] and m[7, 7] and not m[1, 2] and not m[8, 8]
    assert boxes_to_mask(np.zeros((0, 4)), 3, 4).shape == (3, 4)


def test_read_binary_mask_handles_0_1_and_0_255(tmp_path):
    ones = fx.save_image(tmp_path / "a.png", fx.blob(10, 10, 5, 5, 3).astype(np.uint8))
    full = fx.save_image(tmp_path / "b.png", (fx.blob(10, 10, 5, 5, 3) * 255).astype(np.uint8))
    assert np.array_equal(read_binary_mask(ones), fx.blob(10, 10, 5, 5, 3))
    assert np.array_equal(read_binary_mask(full), fx.blob(10, 10, 5, 5, 3))


# ----------------------------------------------------------------------------------------------
# TBX11K


def test_tbx11k_labels_boxes_masks(data_root):
    root = data_root / "tbx11k"  # holds TBX11K/ as the zip unpacks
    ds = TBX11K(root, "all")
    expected = sorted(f.split("/")[1][:-4] for part in fx.TBX.values() for f, _ in part if not f.startswith("sick"))
    assert ds.ids() == expected
    assert ds.labels().tolist() == [int(i.startswith("tb")) for i in expected]
    s = ds[ds.ids().index("tb0002")]
    np.testing.assert_array_equal(s.boxes, [[2, 2, 8, 8], [20, 18, 28, 28]])
    assert s.image.shape == (32, 32, 3) and s.mask.shape == (32, 32)
    assert s.mask.sum() == 6 * 6 + 8 * 10 and s.mask[2, 2] and not s.mask[1, 2]
    assert ds[ds.ids().index("tb1199")].mask is None  # TB without boxes: no mask
    healthy = ds[0]
    assert healthy.label == 0 and healthy.mask is not None and not healthy.mask.any()
    tb = to_tensors(ds, size=16)
    assert tb.has_mask.tolist() == [i != "tb1199" for i in expected]
    sick = TBX11K(root, "all", include_sick=True)
    assert {"s0001", "s0010"} <= set(sick.ids()) and len(sick) == len(expected) + 2
    assert sick.labels()[sick.ids().index("s0001")] == 0


def test_tbx11k_splits(data_root):
    n_all = len(TBX11K(data_root / "tbx11k", "all"))
    parts = _splits_partition(lambda s: TBX11K(data_root / "tbx11k" / "TBX11K", s), n_all)
    assert parts["test"].ids() == ["h0010", "tb0010"]  # the official val part
    assert len(parts["valid"]) == 2 and parts["valid"].labels().tolist() == [0, 1]  # 15 % of 6 and of 4


def test_tbx11k_missing_annotations(tmp_path):
    root = fx.build_set("tbx11k", tmp_path / "tbx11k")
    (root / "TBX11K" / "annotations" / "json" / "TBX11K_val.json").unlink()
    with pytest.raises(DatasetNotFoundError) as err:
        TBX11K(root, "test")
    assert "TBX11K_val.json" in str(err.value) and "./data_download.sh" in str(err.value)


# ----------------------------------------------------------------------------------------------
# Fire


def test_fire_labels_masks_splits(data_root):
    root = data_root / "fire"
    ds = FireSegmentation(root, "all")
    assert len(ds) == sum(fx.FIRE_N) and ds.labels().sum() == fx.FIRE_N[0]
    by_id = dict(zip(ds.ids(), range(len(ds))))
    s = ds[by_id["Img_3"]]
    assert s.label == 1 and np.array_equal(s.mask, fx.blob(32, 32, 16, 16, 6))
    assert ds[by_id["Img_0"]].mask is None  # a fire frame without mask file
    nf = ds[by_id["Img_100"]]
    assert nf.label == 0 and nf.mask is not None and not nf.mask.any()
    parts = _splits_partition(lambda s: FireSegmentation(root, s), len(ds))
    assert [len(parts[s]) for s in ("train", "valid", "test")] == [9, 2, 2]  # fire 5/1/1, not fire 4/1/1
    assert all(set(p.labels().tolist()) == {0, 1} for p in parts.values())


def test_fire_nested_folder_and_missing_parts(tmp_path):
    fx.fire_zip(tmp_path / "fire" / "archive")  # an extra folder level
    assert len(get_dataset("fire", root=tmp_path / "fire", split="all")) == sum(fx.FIRE_N)
    shutil.rmtree(tmp_path / "fire" / "archive" / "Image" / "Not_Fire")
    with pytest.raises(DatasetNotFoundError, match="Not_Fire"):
        FireSegmentation(tmp_path / "fire", "all")


# ----------------------------------------------------------------------------------------------
# Oxford-IIIT Pet


def test_oxford_pets_species_trimap_splits(data_root):
    root = data_root / "oxford-pets"
    ds = OxfordPets(root, "all")
    assert len(ds) == len(fx.PETS)
    species = {name: sp - 1 for name, _, sp, _ in fx.PETS}
    assert ds.labels().tolist() == [species[i] for i in ds.ids()]
    s = ds[ds.ids().index("beagle_1")]
    assert s.label == 1 and s.image.shape == (28, 36, 3)
    np.testing.assert_array_equal(s.mask, fx.blob(28, 36, 14, 18, 9))  # trimap 1 and 3
    assert ds[ds.ids().index("Abyssinian_1")].label == 0
    parts = _splits_partition(lambda s: OxfordPets(root, s), len(fx.PETS))
    assert set(parts["test"].ids()) == fx.PETS_TEST
    assert parts["valid"].labels().tolist() == [0, 1]  # 15 % of 4 cats and of 4 dogs
    assert to_tensors(parts["train"], size=16).has_mask.all()


def test_oxford_pets_missing_trimaps(tmp_path):
    fx.pets_images(tmp_path / "oxford-pets")
    with pytest.raises(DatasetNotFoundError) as err:
        OxfordPets(tmp_path / "oxford-pets")
    assert "annotations/trimaps" in str(err.value) and "oxford-pets" in str(err.value)


# ----------------------------------------------------------------------------------------------
# Decathlon prostate and BraTS 2020 (3-D volumes -> 2-D slices, cached)


def test_decathlon_slices_labels_channels(data_root, cache):
    root = data_root / "decathlon-prostate"
    ds = DecathlonProstate(root, "all", cache_dir=cache)
    assert len(ds) == fx.DECATHLON_CASES * 4  # slices 1..4 have signal; 0 and 5 are dropped
    assert ds.labels().tolist() == [0, 1, 1, 0] * fx.DECATHLON_CASES
    assert ds.ids()[:2] == ["prostate_00_z001", "prostate_00_z002"]
    s = ds[2]  # prostate_00, slice 3: both zones
    assert s.image.shape == (10, 12, 3) and s.image.dtype == np.uint8  # rows = 2nd voxel axis
    assert np.array_equal(s.image[..., 0], s.image[..., 1]) and np.array_equal(s.image[..., 0], s.image[..., 2])
    assert s.mask.shape == (10, 12) and s.mask.sum() == 4 * 3 + 2 * 2  # zones 1 and 2 merged
    two = DecathlonProstate(root, "all", modalities=("t2", "adc"), cache_dir=cache)
    img = two[1].image
    assert np.array_equal(img[..., 0], img[..., 2]) and not np.array_equal(img[..., 0], img[..., 1])
    assert len(DecathlonProstate(root, "all", keep_empty=True, cache_dir=cache)) == fx.DECATHLON_CASES * 6
    with pytest.raises(DataError, match="unknown modality"):
        DecathlonProstate(root, "all", modalities=("flair",), cache_dir=cache)


def test_decathlon_cache_is_reused(data_root, cache, monkeypatch):
    root = data_root / "decathlon-prostate"
    first = DecathlonProstate(root, "test", cache_dir=cache)
    before = [first[i].image.copy() for i in range(len(first))]
    import wsslib.data.volumes as volumes

    def no_decoding(path):
        raise AssertionError(f"decoded {path} although it is cached")

    monkeypatch.setattr(volumes, "load_nifti", no_decoding)
    again = DecathlonProstate(root, "test", cache_dir=cache)
    assert again.ids() == first.ids() and all(np.array_equal(a, again[i].image) for i, a in enumerate(before))
    assert len(list(cache.rglob("*.image.npy"))) == 1  # one test volume


def test_decathlon_splits_by_patient(data_root, cache):
    parts = _splits_partition(lambda s: DecathlonProstate(data_root / "decathlon-prostate", s, cache_dir=cache),
                              fx.DECATHLON_CASES * 4)
    cases = {s: {i.rsplit("_z", 1)[0] for i in d.ids()} for s, d in parts.items()}
    assert [len(cases[s]) for s in ("train", "valid", "test")] == [5, 1, 1]


def test_brats_modalities_as_channels(data_root, cache):
    ds = BraTS2020(data_root / "brats2020", "all", cache_dir=cache)
    cases = sorted({i.rsplit("_z", 1)[0] for i in ds.ids()})
    assert cases == [f"BraTS20_Training_{c:03d}" for c in range(1, fx.BRATS_CASES + 1)]  # validation skipped
    assert len(ds) == fx.BRATS_CASES * 6 and ds.labels().tolist() == [0, 0, 1, 1, 0, 0] * fx.BRATS_CASES
    s = ds[3]  # case 1, slice 4: labels 4 and 1 merged
    assert s.image.shape == (10, 12, 3) and s.mask.sum() == 4 * 3 + 1
    assert np.array_equal(s.image[0, 0], [0, 0, 0]) and (s.image[1:, 1:] == 255).all()  # percentile scaling
    assert ds[len(ds) - 3].label == 1  # case 3 has the W39_1998.09.19_Segm.nii label file


def test_brats_missing_modality(tmp_path, cache):
    root = fx.build_set("brats2020", tmp_path / "brats2020")
    next(root.rglob("BraTS20_Training_001_t1.nii.gz")).unlink()
    assert len(BraTS2020(root, "all", cache_dir=cache)) == fx.BRATS_CASES * 6  # t1 is not a default channel
    with pytest.raises(DataError, match="no t1 volume"):
        BraTS2020(root, "all", modalities=("t1",), cache_dir=cache)


def test_brats_channel_order(tmp_path, cache):
    """Each modality gets its own pattern, so the channel order can be read back."""
    import nibabel

    case = tmp_path / "brats2020" / "MICCAI_BraTS2020_TrainingData" / "BraTS20_Training_001"
    case.mkdir(parents=True)
    for j, mod in enumerate(("flair", "t1", "t1ce", "t2")):
        vol = np.full((8, 6, 3), 100.0, np.float32)
        vol[2 * j:2 * j + 2, 0, :] = 1000.0  # bright at x = 2j, 2j+1 (columns after the transpose)
        nibabel.save(nibabel.Nifti1Image(vol, np.eye(4)), str(case / f"BraTS20_Training_001_{mod}.nii.gz"))
    nibabel.save(nibabel.Nifti1Image(np.zeros((8, 6, 3), np.uint8), np.eye(4)), str(case / "BraTS20_Training_001_seg.nii.gz"))
    img = BraTS2020(tmp_path / "brats2020", "all", cache_dir=cache)[0].image
    bright = [sorted(np.nonzero(img[0, :, c] == 255)[0].tolist()) for c in range(3)]
    assert bright == [[0, 1], [4, 5], [6, 7]]  # flair, t1ce, t2


# ----------------------------------------------------------------------------------------------
# NCI-ISBI with gaze


def test_nci_isbi_dicom_masks_gaze_splits(data_root):
    root = data_root / "nci-isbi"  # the slices sit in NCI-ISBI/, the gaze set in gaze/
    ds = NCIISBI(root, "all")
    assert len(ds) == 8 and (ds.labels() == 1).all()
    s = ds[0]
    assert s.image.shape == (20, 24, 3) and s.image.dtype == np.uint8 and s.image.max() == 255
    np.testing.assert_array_equal(s.mask, fx.blob(20, 24, 10, 12, 4))
    assert s.gaze.shape == (6, 3) and s.gaze.dtype == np.float64
    np.testing.assert_allclose(s.gaze[1], [0.51, 0.4, 201], rtol=1e-6)
    parts = _splits_partition(lambda s: NCIISBI(root, s), 8)
    assert set(parts["test"].ids()) == set(fx.NCI_IDS["test"])
    patients = {s: {i.rsplit("_", 1)[0] for i in d.ids()} for s, d in parts.items()}
    assert not patients["train"] & patients["valid"] and len(patients["valid"]) == 1


def test_nci_isbi_errors(tmp_path):
    root = fx.build_set("nci-isbi", tmp_path / "nci-isbi") / "NCI-ISBI"
    mask = root / "masks" / f"{fx.NCI_IDS['test'][0]}.png"
    kept = mask.read_bytes()
    mask.unlink()
    with pytest.raises(DataError, match="does not exist"):
        NCIISBI(root, "test")
    mask.write_bytes(kept)
    (root / "images" / f"{fx.NCI_IDS['train'][0]}.dcm").write_bytes(b"not a dicom file")
    ds = NCIISBI(root, "train")
    with pytest.raises(DataError, match="cannot decode DICOM"):
        ds[ds.ids().index(fx.NCI_IDS["train"][0])]


# ----------------------------------------------------------------------------------------------
# every set: registry, errors, the generic load_splits path the notebooks use


@pytest.mark.parametrize("name", NEW_SETS)
def test_missing_folder_names_it_and_the_download_command(name, tmp_path):
    missing = tmp_path / "nowhere" / name
    with pytest.raises(DatasetNotFoundError) as err:
        get_dataset(name, root=missing, split="all")
    msg = str(err.value)
    # the command that works in every install (a wheel has no ./data_download.sh)
    assert str(missing) in msg and f"wsslib download --root {missing.parent} {name}" in msg


@pytest.mark.parametrize("name", NEW_SETS)
def test_load_splits_generic_path(name, data_root, tmp_path, monkeypatch):
    """What notebooks 01-04 do: load_splits(dataset, root=...) with their size/n/seed arguments."""
    monkeypatch.setenv("WSSLIB_CACHE", str(tmp_path / "cache"))
    assert name in list_datasets()
    data = load_splits(name, ("all",), root=data_root / name, size=16, n=600, seed=0)
    tb = data["all"]
    assert tb.images.shape[1:] == (3, 16, 16) and tb.images.dtype == torch.float32
    assert tb.masks.shape == (len(tb), 16, 16) and tb.has_mask.any()
    assert 0.0 <= tb.images.min() and tb.images.max() <= 1.0


def test_source_table_matches_registry_and_pins():
    rows = load_sources()
    names = source_names()
    assert set(names) - {"gaze"} <= set(list_datasets())
    assert set(NEW_SETS) | {"kvasir-seg", "polypgen"} <= set(names)
    assert {(r.name, r.file) for r in rows} == set(fx.CONTENT)  # every file has a fixture builder
    pinned = {(r.name, r.file): r.checksum for r in rows if r.algorithm}
    from torchvision.datasets import OxfordIIITPet

    for url, md5 in OxfordIIITPet._RESOURCES:  # the same hashes torchvision pins
        assert pinned[("oxford-pets", url.rsplit("/", 1)[1])] == f"md5:{md5}"
    assert pinned[("decathlon-prostate", "Task05_Prostate.tar")] == "md5:35138f08b1efaef89d7424d2bcc928db"  # MONAI's
    for r in rows:
        assert r.access in ("direct", "manual") and r.url.startswith("https://")
        assert r.access == "direct" or r.steps, f"{r.name}: a manual set needs steps"
        assert all(alt.split("/")[0] in (r.name, "kvasir-seg", "nci-isbi") for g in r.provides for alt in g)


def test_polypgen_official_layout(tmp_path):
    """What ./data_download.sh polypgen unpacks: centre and sequence folders, negatives without masks."""
    from wsslib.data import PolypGen

    root = fx.build_set("polypgen", tmp_path / "polypgen")
    ds = PolypGen(root, "all")
    assert dict(zip(ds.ids(), ds.labels().tolist())) == fx.POLYPGEN_FRAMES
    neg = ds[ds.ids().index("seq9_neg_0")]
    assert neg.label == 0 and neg.mask.shape == (24, 32) and not neg.mask.any()
    pos = ds[ds.ids().index("C3_x")]
    assert pos.label == 1 and pos.mask.any() and pos.image.shape == (24, 32, 3)
    parts = {s: PolypGen(root, s).ids() for s in ("train", "valid", "test")}
    assert sorted(sum(parts.values(), [])) == sorted(fx.POLYPGEN_FRAMES)  # a partition
    assert parts == {s: PolypGen(root, s).ids() for s in parts}  # the same every time
