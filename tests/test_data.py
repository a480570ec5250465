"""Tests of wsslib.data: synthetic generator, registry, to_tensors, real loaders and their errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from wsslib.data import (
    KvasirSEG,
    PolypGen,
    Sample,
    SyntheticDataset,
    find_root,
    generate_synthetic,
    get_dataset,
    list_datasets,
    read_image,
    read_mask,
    to_tensors,
)
from wsslib.core.errors import DataError, DatasetNotFoundError

# ----------------------------------------------------------------------------------------------
# synthetic data


@pytest.fixture(scope="module")
def syn() -> dict:
    """200 in-distribution images at 64 px."""
    return generate_synthetic(200, size=64, seed=0)


def _assert_same(a: dict, b: dict) -> None:
    for key in ("images", "labels", "masks"):
        np.testing.assert_array_equal(a[key], b[key])
    for key in ("boxes", "gaze"):
        assert len(a[key]) == len(b[key])
        for x, y in zip(a[key], b[key]):
            np.testing.assert_array_equal(x, y)


def test_synthetic_is_deterministic_per_seed():
    a, b = generate_synthetic(6, size=48, seed=3), generate_synthetic(6, size=48, seed=3)
    _assert_same(a, b)
    c = generate_synthetic(6, size=48, seed=4)
    assert not np.array_equal(a["images"], c["images"])
    assert not np.array_equal(a["masks"], c["masks"])


def test_synthetic_images_are_reproducible_one_by_one():
    """Image i depends on (seed, family, i) only, not on how many are generated with it."""
    small, large = generate_synthetic(3, size=48, seed=5), generate_synthetic(9, size=48, seed=5)
    _assert_same(small, {k: v[:3] for k, v in large.items()})


def test_synthetic_shapes_and_dtypes(syn):
    n, s = 200, 64
    assert syn["images"].shape == (n, s, s, 3) and syn["images"].dtype == np.uint8
    assert syn["labels"].shape == (n,) and syn["labels"].dtype == np.int64
    assert syn["masks"].shape == (n, s, s) and syn["masks"].dtype == np.bool_
    assert len(syn["boxes"]) == len(syn["gaze"]) == n
    for b, g in zip(syn["boxes"], syn["gaze"]):
        assert b.dtype == np.float32 and b.ndim == 2 and b.shape[1] == 4
        assert g.dtype == np.float32 and g.ndim == 2 and g.shape[1] == 3


def test_synthetic_labels_balanced_and_masks_match_labels(syn):
    assert syn["labels"].sum() == 100
    assert np.array_equal(syn["masks"].any(axis=(1, 2)), syn["labels"] == 1)
    assert generate_synthetic(10, size=32, pos_fraction=0.3)["labels"].sum() == 3
    area = syn["masks"][syn["labels"] == 1].mean(axis=(1, 2))
    assert 0.03 < area.mean() < 0.2
    assert area.min() > 0.004 and area.max() < 0.4


def test_synthetic_boxes_enclose_the_lesions(syn):
    for mask, boxes, label in zip(syn["masks"], syn["boxes"], syn["labels"]):
        if label == 0:
            assert boxes.shape == (0, 4)
            continue
        assert 1 <= len(boxes) <= 3
        covered = np.zeros_like(mask)
        for x0, y0, x1, y1 in boxes.astype(int):
            assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64
            inner = mask[y0:y1, x0:x1]
            # tight: every edge of the box touches the mask
            assert inner[0].any() and inner[-1].any() and inner[:, 0].any() and inner[:, -1].any()
            covered[y0:y1, x0:x1] = True
        assert not (mask & ~covered).any(), "a lesion pixel lies outside every box"


def test_synthetic_gaze_ranges_and_share_on_lesions(syn):
    shares = []
    for g, mask, label in zip(syn["gaze"], syn["masks"], syn["labels"]):
        assert 5 <= len(g) <= 99
        assert (g[:, :2] >= 0).all() and (g[:, :2] <= 1).all()
        assert (g[:, 2] >= 80).all() and (g[:, 2] <= 1000).all()
        if label == 1:
            col = np.minimum((g[:, 0] * 64).astype(int), 63)
            row = np.minimum((g[:, 1] * 64).astype(int), 63)
            shares.append(mask[row, col].mean())
    counts = [len(g) for g in syn["gaze"]]
    assert 15 <= np.median(counts) <= 35
    assert 0.75 <= np.mean(shares) <= 0.95
    durations = np.concatenate(syn["gaze"])[:, 2]
    assert 200 <= durations.mean() <= 300


def test_synthetic_lesions_not_found_by_a_colour_threshold(syn):
    """No global threshold on a channel or a channel ratio recovers the lesion masks."""
    pos = syn["labels"] == 1
    img, mask = syn["images"][pos].astype(np.float32), syn["masks"][pos]
    features = [img[..., 0], img[..., 1], img[..., 2], (img[..., 0] + 1) / (img[..., 1] + 1)]
    best = 0.0
    for f in features:
        for t in np.quantile(f, np.linspace(0.02, 0.98, 25)):
            for pred in (f > t, f < t):
                best = max(best, (pred & mask).sum() / (pred | mask).sum())
    assert best < 0.4


def test_synthetic_ood_differs_in_colour(syn):
    ood = generate_synthetic(40, size=64, family="ood")
    assert set(np.unique(ood["labels"])) == {0, 1}
    assert np.array_equal(ood["masks"].any(axis=(1, 2)), ood["labels"] == 1)
    rgb_in = syn["images"].reshape(-1, 3).mean(0)
    rgb_ood = ood["images"].reshape(-1, 3).mean(0)
    assert rgb_in[0] - rgb_in[1] > 40  # reddish
    assert rgb_ood[1] - rgb_ood[0] > 10  # greenish
    with pytest.raises(ValueError, match="family"):
        generate_synthetic(2, family="other")


def test_synthetic_dataset_splits():
    splits = {s: SyntheticDataset(s, n=1000, size=32) for s in ("train", "valid", "test")}
    assert {s: len(d) for s, d in splits.items()} == {"train": 700, "valid": 150, "test": 150}
    ids = [set(d.ids()) for d in splits.values()]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert sorted(np.concatenate([d.indices for d in splits.values()])) == list(range(1000))
    for d in splits.values():  # labels() is cheap and roughly balanced
        assert d.labels().dtype == np.int64 and 0.35 < d.labels().mean() < 0.65
    assert len(SyntheticDataset("ood", n_ood=30, size=32)) == 30
    other = SyntheticDataset("test", n=1000, size=32, seed=1)
    assert not np.array_equal(other.indices, splits["test"].indices)
    with pytest.raises(ValueError, match="split"):
        SyntheticDataset("training")


def test_synthetic_dataset_samples():
    ds = get_dataset("synthetic", root="ignored", split="valid", n=40, size=32)
    assert isinstance(ds, SyntheticDataset) and len(ds) == 6
    s = ds[0]
    assert isinstance(s, Sample)
    assert s.image.shape == (32, 32, 3) and s.image.dtype == np.uint8
    assert s.mask.shape == (32, 32) and s.mask.dtype == np.bool_
    assert s.label in (0, 1) and s.gaze.shape[1] == 3 and s.boxes.shape[1] == 4
    assert [ds[i].label for i in range(len(ds))] == ds.labels().tolist()
    assert [ds[i].id for i in range(len(ds))] == ds.ids()
    again = SyntheticDataset("valid", n=40, size=32)
    np.testing.assert_array_equal(again[3].image, ds[3].image)
    ood = SyntheticDataset("ood", n_ood=4, size=32)
    assert ood[0].id.startswith("syn-s0-ood-") and ood.labels().tolist() == [0, 1, 0, 1]


def test_registry():
    assert {"synthetic", "kvasir-seg", "polypgen"} <= set(list_datasets())
    with pytest.raises(ValueError, match="unknown data set"):
        get_dataset("no-such-set")


def test_to_tensors_shapes_and_ranges():
    ds = SyntheticDataset("test", n=60, size=48)
    tb = to_tensors(ds)
    n = len(ds)
    assert tb.images.shape == (n, 3, 48, 48) and tb.images.dtype == torch.float32
    assert 0.0 <= tb.images.min() and tb.images.max() <= 1.0
    assert tb.labels.dtype == torch.int64 and tb.labels.tolist() == ds.labels().tolist()
    assert tb.masks.shape == (n, 48, 48) and tb.masks.dtype == torch.bool
    assert tb.has_mask.all() and tb.ids == ds.ids()
    np.testing.assert_allclose(tb.images[0].permute(1, 2, 0).numpy() * 255, ds[0].image, atol=1e-3)
    small = to_tensors(ds, size=24, progress=False)
    assert small.images.shape == (n, 3, 24, 24) and small.masks.shape == (n, 24, 24)
    assert 0.0 <= small.images.min() and small.images.max() <= 1.0
    assert torch.equal(small.masks.flatten(1).any(1), tb.labels.bool())


# ----------------------------------------------------------------------------------------------
# real data beside the project (skipped when absent)


def test_kvasir_real(shared_data):
    root = shared_data / "kvasir-seg"
    splits = {s: KvasirSEG(root, s) for s in ("train", "valid", "test", "all")}
    assert {s: len(d) for s, d in splits.items()} == {"train": 800, "valid": 100, "test": 100, "all": 1000}
    ids = [set(splits[s].ids()) for s in ("train", "valid", "test")]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert ids[0] | ids[1] | ids[2] == set(splits["all"].ids())
    assert (splits["all"].labels() == 1).all()
    test = get_dataset("kvasir-seg", root=root, split="test")
    inside = []
    for i in range(0, 100, 4):
        s = test[i]
        h, w = s.image.shape[:2]
        assert s.image.dtype == np.uint8 and s.image.shape[2] == 3 and max(h, w) <= 512
        assert s.mask.shape == (h, w) and s.mask.dtype == np.bool_ and s.mask.any()
        assert s.boxes.shape[0] >= 1 and s.label == 1
        assert s.gaze is not None and len(s.gaze) >= 5
        assert (s.gaze[:, :2] >= 0).all() and (s.gaze[:, :2] <= 1).all()
        col = np.minimum((s.gaze[:, 0] * w).astype(int), w - 1)
        row = np.minimum((s.gaze[:, 1] * h).astype(int), h - 1)
        inside.append(s.mask[row, col].mean())
    assert np.mean(inside) > 0.6  # the README says 85 %: x is the column, y the row


def test_polypgen_real(shared_data):
    root = shared_data / "polypgen"
    with open(root / "manifest.csv", newline="") as fh:
        manifest = {Path(r["image"]).stem: int(r["label"]) for r in csv.DictReader(fh)}
    full = get_dataset("polypgen", root=root, split="all")
    assert len(full) == len(manifest) == 400
    assert full.labels().tolist() == [manifest[k] for k in full.ids()]
    parts = {s: PolypGen(root, s) for s in ("train", "valid", "test")}
    assert sum(len(d) for d in parts.values()) == 400
    assert len(set().union(*(d.ids() for d in parts.values()))) == 400
    for d in parts.values():  # stratified
        assert abs(d.labels().mean() - full.labels().mean()) < 0.03
    test = parts["test"]
    for i in range(0, len(test), 6):
        s = test[i]
        assert s.mask.shape == s.image.shape[:2] and bool(s.mask.any()) == bool(s.label)
        assert s.boxes.shape == (0, 4) and s.gaze is None
    tb = to_tensors(test, size=32)
    assert tb.images.shape == (60, 3, 32, 32) and tb.has_mask.all()


# ----------------------------------------------------------------------------------------------
# small fake data sets and errors


def _jpg(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, quality=95)
    return path


def _png(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def _blob_mask(h: int, w: int, y: int, x: int, r: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return ((yy - y) ** 2 + (xx - x) ** 2 < r * r).astype(np.uint8) * 255


def _fake_kvasir(root: Path, n: int = 3) -> Path:
    """The shared-data layout: images/*.jpg, masks/*.png, manifest.csv, boxes.csv, gaze csv."""
    rng = np.random.default_rng(0)
    rows, boxes, gaze = [], [], []
    for i in range(n):
        name = f"img{i}"
        _jpg(root / "images" / f"{name}.jpg", rng.integers(0, 255, (40, 50, 3), dtype=np.uint8))
        _png(root / "masks" / f"{name}.png", _blob_mask(40, 50, 20, 25, 8))
        rows.append([f"images/{name}.jpg", f"masks/{name}.png", 50, 40])
        boxes.append([f"images/{name}.jpg", "polyp", 17, 12, 33, 28])
        gaze += [[f"{name}.jpg", k + 1, 0.5, 0.5, 200] for k in range(6)]
    for fname, header, body in (
        ("manifest.csv", ["image", "mask", "width", "height"], rows),
        ("boxes.csv", ["image", "label", "xmin", "ymin", "xmax", "ymax"], boxes),
        ("gaze/kvasir_fixation.csv", ["IMAGE", "CURRENT_FIX_INDEX", "CURRENT_FIX_X", "CURRENT_FIX_Y", "CURRENT_FIX_DURATION"], gaze),
    ):
        (root / fname).parent.mkdir(parents=True, exist_ok=True)
        with open(root / fname, "w", newline="") as fh:
            csv.writer(fh).writerows([header, *body])
    return root


def test_fake_kvasir_manifest_layout(tmp_path):
    ds = KvasirSEG(_fake_kvasir(tmp_path / "kv"), split="all")
    assert ds.ids() == ["img0", "img1", "img2"]
    s = ds[1]
    assert s.image.shape == (40, 50, 3) and s.mask.shape == (40, 50) and s.mask.sum() > 100
    np.testing.assert_array_equal(s.boxes, [[17, 12, 33, 28]])
    assert s.gaze.shape == (6, 3) and s.gaze.dtype == np.float64
    np.testing.assert_allclose(s.gaze[0], [0.5, 0.5, 200])


def test_official_kvasir_layout(tmp_path):
    """The official zip: Kvasir-SEG/images/*.jpg, masks/*.jpg, kavsir_bboxes.json, no manifest."""
    root = tmp_path / "Kvasir-SEG"
    rng = np.random.default_rng(1)
    bboxes = {}
    for name in ("cju0aaa", "cju0bbb"):
        _jpg(root / "images" / f"{name}.jpg", rng.integers(0, 255, (30, 40, 3), dtype=np.uint8))
        mask = np.repeat(_blob_mask(30, 40, 15, 20, 6)[..., None], 3, axis=2)
        _jpg(root / "masks" / f"{name}.jpg", mask)  # JPEG: values near, not at, 0 and 255
        # boxes refer to the original size, twice the size of this copy
        bboxes[name] = {"height": 60, "width": 80, "bbox": [{"label": "polyp", "xmin": 28, "ymin": 18, "xmax": 52, "ymax": 42}]}
    (root / "kavsir_bboxes.json").write_text(json.dumps(bboxes))
    ds = get_dataset("kvasir-seg", root=tmp_path, split="all")  # finds the nested Kvasir-SEG/
    assert len(ds) == 2 and ds.labels().tolist() == [1, 1]
    s = ds[0]
    assert s.id == "cju0aaa" and s.image.shape == (30, 40, 3) and s.gaze is None
    assert abs(int(s.mask.sum()) - int((_blob_mask(30, 40, 15, 20, 6) > 127).sum())) <= 4
    np.testing.assert_allclose(s.boxes, [[14, 9, 26, 21]])
    # a gaze file anywhere under the root is found
    gaze = root / "eye" / "kvasir_fixation.csv"
    gaze.parent.mkdir()
    gaze.write_text("IMAGE,CURRENT_FIX_X,CURRENT_FIX_Y,CURRENT_FIX_DURATION\ncju0bbb.jpg,0.1,0.2,300\ncju0bbb.jpg,0.3,0.4,150\n")
    ds = KvasirSEG(root, "all")
    assert ds[0].gaze is None
    np.testing.assert_allclose(ds[1].gaze, [[0.1, 0.2, 300], [0.3, 0.4, 150]], rtol=1e-6)
    # the shipped split names ids this copy lacks
    with pytest.raises(DatasetNotFoundError, match="split 'train'"):
        KvasirSEG(root, "train")


def test_polypgen_glob_layout_and_labels_from_masks(tmp_path):
    root = tmp_path / "pg"
    _jpg(root / "images" / "a.jpg", np.full((20, 30, 3), 120, np.uint8))
    _jpg(root / "images" / "b.jpg", np.full((20, 30, 3), 90, np.uint8))
    _jpg(root / "masks" / "a_mask.jpg", _blob_mask(20, 30, 10, 15, 5))
    _png(root / "masks" / "b.png", np.zeros((20, 30), np.uint8))
    ds = PolypGen(root, "all")
    assert ds.ids() == ["a", "b"] and ds.labels().tolist() == [1, 0]
    assert not ds[1].mask.any()


def test_missing_root_names_folder_and_download_command(tmp_path):
    missing = tmp_path / "nowhere" / "kvasir-seg"
    with pytest.raises(DatasetNotFoundError) as err:
        get_dataset("kvasir-seg", root=missing)
    assert str(missing) in str(err.value) and "./data_download.sh" in str(err.value)
    with pytest.raises(DatasetNotFoundError, match="images/"):
        PolypGen(tmp_path)  # exists, but holds no images/


def test_find_root(tmp_path, monkeypatch):
    (tmp_path / "kvasir-seg").mkdir()
    assert find_root("kvasir-seg", tmp_path / "kvasir-seg") == tmp_path / "kvasir-seg"
    monkeypatch.setenv("WSSLIB_DATA", str(tmp_path))
    assert find_root("kvasir-seg") == tmp_path / "kvasir-seg"
    with pytest.raises(DatasetNotFoundError) as err:
        find_root("no-such-set")
    assert str(tmp_path / "no-such-set") in str(err.value)


def test_corrupt_image_raises_data_error_naming_it(tmp_path):
    root = _fake_kvasir(tmp_path / "kv")
    bad = root / "images" / "img1.jpg"
    bad.write_bytes(b"this is not a jpeg")
    ds = KvasirSEG(root, "all")
    with pytest.raises(DataError, match="cannot decode image") as err:
        ds[1]
    assert str(bad) in str(err.value)
    good = (root / "images" / "img2.jpg").read_bytes()
    (root / "images" / "img2.jpg").write_bytes(good[: len(good) // 2])  # truncated
    with pytest.raises(DataError, match="img2.jpg"):
        ds[2]


def test_mask_of_wrong_size_raises_data_error_naming_it(tmp_path):
    root = _fake_kvasir(tmp_path / "kv")
    _png(root / "masks" / "img0.png", np.zeros((20, 25), np.uint8))
    with pytest.raises(DataError) as err:
        KvasirSEG(root, "all")[0]
    msg = str(err.value)
    assert str(root / "masks" / "img0.png") in msg and str(root / "images" / "img0.jpg") in msg
    assert "25x20" in msg and "50x40" in msg


def test_manifest_row_naming_missing_file(tmp_path):
    root = _fake_kvasir(tmp_path / "kv")
    (root / "masks" / "img2.png").unlink()
    with pytest.raises(DataError, match="img2.png"):
        KvasirSEG(root, "all")


def test_to_tensors_needs_size_for_mixed_sizes(tmp_path):
    root = tmp_path / "pg"
    for name, (h, w) in {"a": (20, 30), "b": (24, 30)}.items():
        _jpg(root / "images" / f"{name}.jpg", np.full((h, w, 3), 100, np.uint8))
        _png(root / "masks" / f"{name}.png", _blob_mask(h, w, 10, 10, 4))
    ds = PolypGen(root, "all")
    with pytest.raises(DataError, match="size"):
        to_tensors(ds)
    tb = to_tensors(ds, size=16)
    assert tb.images.shape == (2, 3, 16, 16) and tb.masks.any() and tb.labels.tolist() == [1, 1]


def test_read_image_converts_modes(tmp_path):
    grey = _png(tmp_path / "grey.png", np.full((5, 6), 77, np.uint8))
    rgba = tmp_path / "rgba.png"
    Image.fromarray(np.full((5, 6, 4), 200, np.uint8), "RGBA").save(rgba)
    deep = tmp_path / "deep.png"
    Image.fromarray(np.full((5, 6), 65535, np.uint16)).save(deep)
    for path, value in ((grey, 77), (rgba, 200), (deep, 255)):
        img = read_image(path)
        assert img.shape == (5, 6, 3) and img.dtype == np.uint8 and (img == value).all(), path
    assert read_mask(deep).all() and not read_mask(grey).any()
    with pytest.raises(DataError, match="does not exist"):
        read_image(tmp_path / "absent.jpg")
