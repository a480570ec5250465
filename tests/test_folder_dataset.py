"""The ``folder`` data set: your own images, masks, labels and gaze; its errors name the files."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from wsslib.core.errors import DataError
from wsslib.data import get_dataset, load_splits
from wsslib.data.folder import scan_folder
from tests.data_fixtures import GAZE_HEADER, blob, fixation_rows


def _write(root: Path, n_pos: int = 8, n_neg: int = 6, *, sub: bool = True, mask_suffix: str = "",
           neg_masks: bool = True) -> None:
    """``n_pos`` images with a blob mask, ``n_neg`` without; half of them in a sub-folder."""
    rng = np.random.default_rng(0)
    for i in range(n_pos + n_neg):
        rel = f"{'sub/' if sub and i % 2 else ''}img{i:02d}"
        img = rng.integers(0, 256, (24, 30, 3), dtype=np.uint8)
        (root / "images" / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(root / "images" / f"{rel}.jpg", quality=95)
        mask = blob(24, 30, 12, 15, 5) if i < n_pos else np.zeros((24, 30), bool)
        if i < n_pos or neg_masks:
            (root / "masks" / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(mask.astype(np.uint8) * 255).save(root / "masks" / f"{rel}{mask_suffix}.png")


def _labels(root: Path, rows: list[list[str]], header: tuple[str, ...] = ("id", "label")) -> None:
    with open(root / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows([list(header), *rows])


def test_masks_give_labels_subfolders_and_a_stratified_split(tmp_path):
    _write(tmp_path, mask_suffix="_mask")
    ds = get_dataset("folder", root=tmp_path, split="all")
    assert len(ds) == 14 and "sub/img01" in ds.ids() and int(ds.labels().sum()) == 8
    s = ds[ds.ids().index("img00")]
    assert s.image.shape == (24, 30, 3) and s.mask.shape == (24, 30) and s.mask.any() and s.label == 1 and s.gaze is None
    sizes = {sp: len(get_dataset("folder", root=tmp_path, split=sp)) for sp in ("train", "valid", "test")}
    assert sum(sizes.values()) == 14 and all(v > 0 for v in sizes.values())
    data = load_splits("folder", ("train", "valid", "test"), root=tmp_path, size=16)  # what a notebook calls
    assert data["train"].images.shape[1:] == (3, 16, 16) and data["valid"].has_mask.all()
    assert set(data["train"].ids).isdisjoint(data["test"].ids)


def test_labels_csv_split_column_gaze_and_label0_without_mask(tmp_path):
    _write(tmp_path, n_pos=3, n_neg=3, sub=False, neg_masks=False)
    _labels(tmp_path, [[f"img{i:02d}.jpg" if i % 2 else f"img{i:02d}", str(int(i < 3)), s]
                       for i, s in enumerate(["train", "train", "valid", "train", "valid", "test"])],
            ("id", "label", "split"))
    with open(tmp_path / "gaze.csv", "w", newline="") as f:
        csv.writer(f).writerows([GAZE_HEADER, *fixation_rows(["img00"], n=4)])
    assert get_dataset("folder", root=tmp_path, split="test").ids() == ["img05"]
    tr = get_dataset("folder", root=tmp_path, split="train")
    assert tr.ids() == ["img00", "img01", "img03"] and tr.labels().tolist() == [1, 1, 0]
    assert tr[0].gaze.shape == (4, 3) and tr[1].gaze is None
    assert not tr[2].mask.any()  # label 0, no mask file: an empty mask


def test_labels_only_no_masks(tmp_path):
    _write(tmp_path, n_pos=4, n_neg=4, sub=False)
    import shutil

    shutil.rmtree(tmp_path / "masks")
    _labels(tmp_path, [[f"img{i:02d}", str(int(i < 4))] for i in range(8)])
    ds = get_dataset("folder", root=tmp_path, split="all")
    assert ds.labels().tolist() == [1] * 4 + [0] * 4 and ds[0].mask is None


def test_errors_name_the_files(tmp_path):
    with pytest.raises(DataError, match="nowhere: the folder does not exist"):
        get_dataset("folder", root=tmp_path / "nowhere")
    with pytest.raises(DataError, match="no images/ folder"):
        get_dataset("folder", root=tmp_path)
    with pytest.raises(DataError, match="needs its folder"):
        get_dataset("folder")
    a = tmp_path / "a"
    _write(a, n_pos=3, n_neg=0, sub=False)
    (a / "masks" / "img01.png").unlink()
    with pytest.raises(DataError, match=r"masks missing for 1 of 3 images .*img01\.jpg"):
        get_dataset("folder", root=a)
    b = tmp_path / "b"
    _write(b, n_pos=3, n_neg=0, sub=False)
    Image.new("L", (10, 10)).save(b / "masks" / "img02.png")
    with pytest.raises(DataError, match=r"differ in size .*img02\.png is 10x10 but .*img02\.jpg is 30x24"):
        get_dataset("folder", root=b)
    c = tmp_path / "c"
    _write(c, n_pos=3, n_neg=0, sub=False)
    _labels(c, [["img00", "1"], ["img01", "0"], ["img02", "1"]])
    with pytest.raises(DataError, match=r"labelled 0 .*have a non-empty mask: .*img01\.jpg"):
        get_dataset("folder", root=c)
    d = tmp_path / "d"
    _write(d, n_pos=2, n_neg=0, sub=False)
    import shutil

    shutil.rmtree(d / "masks")
    with pytest.raises(DataError, match="neither masks/ nor labels.csv"):
        get_dataset("folder", root=d)


def test_unreadable_files_are_skipped_and_listed(tmp_path):
    _write(tmp_path, n_pos=8, n_neg=6)
    (tmp_path / "images" / "broken.jpg").write_bytes(b"not a jpeg")
    Image.fromarray(blob(24, 30, 5, 5, 3).astype(np.uint8) * 255).save(tmp_path / "masks" / "broken.png")
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable .*broken\.jpg"):
        scan = scan_folder(tmp_path)
    assert [Path(f).name for f, _ in scan.skipped] == ["broken.jpg"] and len(scan.records) == 14
    ds = get_dataset("folder", root=tmp_path, split="all")
    assert "broken" not in ds.ids() and [Path(f).name for f, _ in ds.skipped] == ["broken.jpg"]


def test_export_folder_round_trips_a_registered_set(tmp_path):
    """export_folder writes the layout (with gaze); the folder set gives back the same samples."""
    from wsslib.data.folder import export_folder

    kw = dict(n=60, size=32, seed=0)
    src = {s: get_dataset("synthetic", split=s, **kw) for s in ("train", "valid", "test")}
    export_folder(src, tmp_path / "syn")
    for split, ds in src.items():
        back = get_dataset("folder", root=tmp_path / "syn", split=split)
        assert back.ids() == sorted(ds.ids()) and len(back) == len(ds)
        i = ds.ids().index(back.ids()[0])
        a, b = ds[i], back[0]
        assert (a.image == b.image).all() and (a.mask == b.mask).all() and a.label == b.label
        np.testing.assert_allclose(b.gaze, a.gaze)


@pytest.mark.parametrize("nb", ["01_gaze_heatmaps", "04_aax_decision"])
def test_notebook_runs_on_a_folder(nb, tmp_path):
    """Notebooks take dataset="folder", data_root=...: the gaze notebook and the AAX notebook
    in smoke mode on the synthetic set exported as a folder (all six were run so by hand)."""
    from wsslib.apps.reproduce import find_notebooks, run_notebooks
    from wsslib.data.folder import export_folder

    kw = dict(n=150, size=64, seed=0)
    root = export_folder({s: get_dataset("synthetic", split=s, **kw) for s in ("train", "valid", "test")}, tmp_path / "d")
    (run,) = run_notebooks(tmp_path / "out", notebooks=find_notebooks(only=[nb[:2]]), smoke=True, progress=False,
                           parameters={"dataset": "folder", "data_root": str(root)})
    assert run.error is None, run.error
    import json

    doc = json.loads((tmp_path / "out" / f"{nb}.json").read_text())
    assert doc["params"]["dataset"] == "folder" and doc["tables"]
