"""wsslib annotate: image decoding, outputs (masks, CSV, review list, COCO RLE), bad files, resuming."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from wsslib.apps import cli
from wsslib.apps.annotate import AnnotateSettings, annotate, list_images, load_image
from wsslib.core.errors import DataError
from wsslib.models import create_model, load_checkpoint, save_checkpoint

# pycocotools' decode under numpy 2 ("__array__ ... copy keyword"): not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:.*copy keyword.*:DeprecationWarning")

GOOD = ["dup.jpg", "dup.png", "grey.png", "grey16.png", "grey16.tif", "palette.png", "rgb.jpg",
        "rgb16.png", "rgba.png", "sub/nested.jpg"]
BAD = ["corrupt.jpg", "empty.png", "notimage.tif"]


def _write_folder(root: Path) -> dict[str, np.ndarray]:
    """Images of every kind (and three bad files); returns the expected RGB float arrays."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    (root / "sub").mkdir()
    expect: dict[str, np.ndarray] = {}
    rgb = rng.integers(0, 256, (30, 44, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(root / "rgb.jpg", quality=95)
    Image.fromarray(rgb).save(root / "dup.jpg", quality=95)
    Image.fromarray(rgb[::-1]).save(root / "dup.png")
    Image.fromarray(rgb[:20]).save(root / "sub" / "nested.jpg")
    grey = rng.integers(0, 256, (25, 37), dtype=np.uint8)
    Image.fromarray(grey).save(root / "grey.png")
    expect["grey.png"] = np.repeat(grey[..., None], 3, 2) / 255.0
    rgba = rng.integers(0, 256, (33, 28, 4), dtype=np.uint8)
    rgba[..., 3] = np.linspace(0, 255, 28, dtype=np.uint8)[None]  # varying transparency
    Image.fromarray(rgba).save(root / "rgba.png")
    expect["rgba.png"] = rgba[..., :3] / 255.0  # alpha dropped
    g16 = rng.integers(0, 65536, (27, 31), dtype=np.uint16)
    g16[0, 0], g16[0, 1] = 65535, 0
    Image.fromarray(g16).save(root / "grey16.png")
    Image.fromarray(g16).save(root / "grey16.tif")
    expect["grey16.png"] = expect["grey16.tif"] = np.repeat(g16[..., None], 3, 2) / 65535.0
    rgb16 = rng.integers(0, 65536, (21, 26, 3), dtype=np.uint16)
    import cv2

    cv2.imwrite(str(root / "rgb16.png"), rgb16[..., ::-1])  # OpenCV writes BGR
    expect["rgb16.png"] = rgb16 / 65535.0
    pal = Image.fromarray(rgb[:16, :16]).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    pal.save(root / "palette.png")
    expect["palette.png"] = np.asarray(pal.convert("RGB")) / 255.0
    # bad files, and files that are not images at all
    (root / "corrupt.jpg").write_bytes((root / "rgb.jpg").read_bytes()[:300])
    (root / "empty.png").write_bytes(b"")
    (root / "notimage.tif").write_text("not a tiff")
    (root / "README.txt").write_text("ignored")
    Image.fromarray(grey).save(root / ".hidden.png")
    return expect


def _make_ckpts(folder: Path, bias: float = 1.0, size: int = 32, dropout: float = 0.5) -> list[Path]:
    """Three random smallcnn checkpoints; ``bias`` on the Diseased logit pushes p above 0.5."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(3):
        torch.manual_seed(10 + i)
        m = create_model("smallcnn", dropout=dropout, width=8)
        with torch.no_grad():  # positive Diseased weights: the class-1 CAMs are not all zero
            m.fc.weight[0].zero_()
            m.fc.weight[1].abs_().mul_(0.1)
            m.fc.bias.copy_(torch.tensor([0.0, bias]))
        paths.append(save_checkpoint(m, folder / f"model{i}.pt", image_size=size, map_threshold=0.3))
    return paths


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("ann") / "images"
    return root, _write_folder(root)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    return _make_ckpts(tmp_path_factory.mktemp("ckpt"))


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _check_outputs(out: Path, images: Path, n_models: int = 3) -> dict[str, dict[str, str]]:
    """Everything that must hold whatever the decisions are; returns the CSV rows by file."""
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO

    rows = {r["file"]: r for r in _read_csv(out / "decisions.csv")}
    assert list(next(iter(rows.values())).keys())[:2] == ["file", "decision"]
    assert all(len(r) == 7 + 2 * n_models for r in rows.values())
    for r in rows.values():
        assert r["decision"] in ("healthy", "diseased", "flagged")
        assert all(0.0 <= float(v) <= 1.0 for k, v in r.items() if k[:2] in ("p_", "u_"))
        assert bool(r["mask"]) == (r["decision"] == "diseased")
        assert (r["flag_reason"] in ("uncertain", "out_of_distribution")) == (r["decision"] == "flagged")
    flagged = (out / "review" / "flagged.txt").read_text().splitlines()
    assert flagged == sorted(f for f, r in rows.items() if r["decision"] == "flagged")

    coco = COCO(str(out / "annotations.coco.json"))
    by_name = {im["file_name"]: im for im in coco.dataset["images"]}
    assert set(by_name) == set(rows)
    assert coco.dataset["categories"] == [{"id": 1, "name": "lesion", "supercategory": "lesion"}]
    masks_on_disk = {p.relative_to(out).as_posix() for p in (out / "masks").rglob("*.png")} if (out / "masks").is_dir() else set()
    assert masks_on_disk == {r["mask"] for r in rows.values() if r["mask"]}
    for f, r in rows.items():
        im = by_name[f]
        w, h = Image.open(images / f).size
        assert (im["width"], im["height"]) == (w, h) and im["decision"] == r["decision"]
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[im["id"]]))
        if not r["mask"]:
            assert anns == []
            continue
        png = np.asarray(Image.open(out / r["mask"]))
        assert png.shape == (h, w) and png.dtype == np.uint8 and set(np.unique(png)) <= {0, 255}
        if not png.any():
            assert anns == []
            continue
        (ann,) = anns
        decoded = coco.annToMask(ann).astype(bool)  # pycocotools decodes the RLE back to the PNG
        assert np.array_equal(decoded, png > 0)
        assert ann["area"] == int((png > 0).sum()) and ann["iscrowd"] == 1 and ann["category_id"] == 1
        assert 0.0 < ann["score"] <= 1.0 and f"{ann['score']:.6f}" == f"{float(r['score']):.6f}"
        ys, xs = np.nonzero(png)
        assert ann["bbox"] == [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]
        assert mask_utils.area(ann["segmentation"]) == ann["area"]
    return rows


# --------------------------------------------------------------------------------------------


def test_load_image_normalises_every_kind(folder):
    root, expect = folder
    for name, want in expect.items():
        got = load_image(root / name)
        assert got.dtype == np.float32 and got.shape == want.shape and got.min() >= 0 and got.max() <= 1, name
        np.testing.assert_allclose(got, want, atol=1e-6, err_msg=name)
    g16 = load_image(root / "grey16.png")
    assert g16[0, 0, 0] == 1.0 and g16[0, 1, 0] == 0.0  # 16-bit scaled by 65535, not by its maximum
    for name in BAD:
        with pytest.raises(DataError, match=name):
            load_image(root / name)


def test_list_images_recursive_sorted_skips_hidden_and_out(folder, tmp_path):
    root, _ = folder
    assert list_images(root) == sorted(GOOD + BAD)
    assert "sub/nested.jpg" in list_images(root)
    with pytest.raises(DataError, match="does not exist"):
        list_images(tmp_path / "missing")
    with pytest.raises(DataError, match="not a folder"):
        list_images(root / "rgb.jpg")
    inner = tmp_path / "imgs"
    inner.mkdir()
    Image.new("RGB", (8, 8)).save(inner / "a.png")
    (inner / "out" / "masks").mkdir(parents=True)
    Image.new("L", (8, 8)).save(inner / "out" / "masks" / "a.png")
    assert list_images(inner, exclude=inner / "out") == ["a.png"]


def test_checkpoint_records_what_annotate_needs(tmp_path):
    m = create_model("smallcnn", dropout=0.3, width=8)
    path = save_checkpoint(m, tmp_path / "m.pt", image_size=48, map_threshold=0.35, epoch=2)
    m2 = load_checkpoint(path)
    assert (m2.name, m2.dropout.p, m2.image_size, m2.map_threshold, m2.meta) == ("smallcnn", 0.3, 48, 0.35, {"epoch": 2})
    old_style = save_checkpoint(m, tmp_path / "old.pt")
    assert load_checkpoint(old_style).image_size is None
    with pytest.raises(ValueError):
        save_checkpoint(m, tmp_path / "bad.pt", map_threshold=1.5)


def test_annotate_all_kinds_and_bad_files(folder, ckpts, tmp_path):
    root, _ = folder
    out = tmp_path / "out"
    res = annotate(root, ckpts, out, AnnotateSettings(theta=1.0, k=8), batch_size=4, device="cpu", progress=False)
    assert res.n_images == len(GOOD) + len(BAD) and res.n_new == res.n_images and res.n_resumed == 0
    assert res.counts == {"healthy": 0, "diseased": len(GOOD), "flagged": 0, "errors": len(BAD),
                          "out_of_distribution": 0}
    rows = _check_outputs(out, root)
    assert sorted(rows) == sorted(GOOD)
    assert rows["dup.jpg"]["mask"] == "masks/dup.jpg.png" and rows["dup.png"]["mask"] == "masks/dup.png.png"
    assert rows["rgb.jpg"]["mask"] == "masks/rgb.png" and rows["sub/nested.jpg"]["mask"] == "masks/sub/nested.png"
    assert any(np.asarray(Image.open(out / r["mask"])).any() for r in rows.values())  # some masks are not empty
    errors = _read_csv(out / "errors.csv")
    assert [e["file"] for e in errors] == BAD
    assert all(e["reason"].startswith("cannot decode image " + e["file"]) and str(root) not in e["reason"] for e in errors)
    assert [e[0] for e in res.errors] == BAD
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"]["errors"] == 3 and summary["settings"]["sizes"] == [32, 32, 32]
    # nothing left to do: a second run computes nothing and rewrites the same outputs
    before = _tree(out)
    res2 = annotate(root, ckpts, out, AnnotateSettings(theta=1.0, k=8), batch_size=4, device="cpu", progress=False)
    assert res2.n_new == 0 and res2.n_resumed == res.n_images and _tree(out) == before
    # other settings in the same folder are refused
    with pytest.raises(DataError, match="other settings"):
        annotate(root, ckpts, out, AnnotateSettings(theta=0.2, k=8), batch_size=4, device="cpu", progress=False)


def test_annotate_flagged_and_healthy_branches(folder, ckpts, tmp_path):
    root, _ = folder
    res = annotate(root, ckpts, tmp_path / "flag", AnnotateSettings(theta=0.0, k=8), device="cpu", progress=False)  # every u > 0
    assert res.counts["flagged"] == len(GOOD)
    rows = _check_outputs(tmp_path / "flag", root)
    assert (tmp_path / "flag" / "review" / "flagged.txt").read_text().splitlines() == sorted(rows)
    assert json.loads((tmp_path / "flag" / "annotations.coco.json").read_text())["annotations"] == []
    res = annotate(root, ckpts, tmp_path / "healthy", AnnotateSettings(theta=1.0, p_cut=1.0, k=8), device="cpu",
                   progress=False)
    assert res.counts["healthy"] == len(GOOD)
    _check_outputs(tmp_path / "healthy", root)


def test_annotate_needs_size_and_threshold(folder, tmp_path):
    root, _ = folder
    m = create_model("smallcnn", width=8)
    bare = save_checkpoint(m, tmp_path / "bare.pt")
    with pytest.raises(DataError, match="--size"):
        annotate(root, [bare], tmp_path / "o1", device="cpu", progress=False)
    with pytest.raises(DataError, match="--map-threshold"):
        annotate(root, [bare], tmp_path / "o2", AnnotateSettings(sizes=(32,)), device="cpu", progress=False)
    assert cli.main(["annotate", str(tmp_path / "nowhere"), "--models", str(bare), "--out", str(tmp_path / "o3"),
                     "--size", "32", "--map-threshold", "0.5", "-q"]) == 1  # a runtime error
    assert cli.main(["annotate", str(root), "--models", str(bare), "--out", str(tmp_path / "o4"),
                     "--size", "32", "--k", "0", "-q"]) == 2  # a usage error


#: Runs ``wsslib annotate`` (argv after the first two arguments) in a fresh Python process whose
#: journal writer SIGKILLs the process once it has written N records (argv[1]), i.e. between the
#: next image's mask and its record: the worst moment. The hook lives here, not in wsslib.
KILLER = textwrap.dedent("""
    import os, signal, sys

    from wsslib.apps import annotate, cli

    crash_after = int(sys.argv[1])
    write_record = annotate._Writer.record

    def record_or_die(self, rec):
        if self.written >= crash_after:
            os.kill(os.getpid(), signal.SIGKILL)
        write_record(self, rec)

    annotate._Writer.record = record_or_die
    sys.exit(cli.main(sys.argv[2:]))
""")


def _cli_killed(argv: list[str], crash_after: int) -> int:
    """Run ``wsslib annotate`` in a fresh Python process that SIGKILLs itself after
    ``crash_after`` records (:data:`KILLER`); returns its exit code (a fresh process, not a
    fork: a fork of a process with torch's threads running can hang)."""
    r = subprocess.run([sys.executable, "-c", KILLER, str(crash_after), *argv], capture_output=True, text=True,
                       timeout=300)
    return r.returncode


def test_killed_and_restarted_equals_uninterrupted(folder, ckpts, tmp_path):
    """SIGKILL a CLI run twice (once between a mask and its record), plant stale temporary
    files, resume: every output file equals that of an uninterrupted run, byte for byte."""
    root, _ = folder
    ref, out = tmp_path / "ref", tmp_path / "killed"
    opts = ["--theta", "1.0", "--k", "8", "--batch", "3", "--device", "cpu", "-q"]
    argv = ["annotate", str(root), "--models", *map(str, ckpts), "--out", str(out), *opts]
    assert cli.main(["annotate", str(root), "--models", *map(str, ckpts), "--out", str(ref), *opts]) == 0

    for crash_after in (4, 3):
        assert _cli_killed(argv, crash_after) == -9, "the driver did not kill the run"
        records = list((out / "journal").glob("*.json"))
        assert 0 < len(records) < len(GOOD) + len(BAD)
        assert not (out / "decisions.csv").exists()
    # files in order, batches of 3: run 1 wrote 4 records (corrupt, dup.jpg, dup.png, empty) and
    # grey.png's mask; run 2 redid the whole unfinished batch 2 (empty, grey, grey16.png), then
    # wrote grey16.tif's mask and died before its record: 6 records, an orphan mask
    done = {json.loads(p.read_text())["file"] for p in (out / "journal").glob("*.json")}
    assert done == {"corrupt.jpg", "dup.jpg", "dup.png", "empty.png", "grey.png", "grey16.png"}
    assert (out / "masks" / "grey16.tif.png").is_file()
    (out / "journal" / ".x.json.abc.tmp").write_text("{torn")
    (out / "masks" / ".y.png.abc.tmp").write_bytes(b"\x89PNG")

    assert cli.main(argv) == 0
    got, want = _tree(out), _tree(ref)
    assert sorted(got) == sorted(want)
    assert [k for k in want if got[k] != want[k]] == []
    _check_outputs(out, root)


def test_annotate_real_polyp_images(shared_data, tmp_path):
    """A few Kvasir-SEG and PolypGen frames (all RGB JPEG of various sizes), random smallcnns."""
    images = tmp_path / "frames"
    images.mkdir()
    for ds, n in (("kvasir-seg", 4), ("polypgen", 3)):
        files = sorted((shared_data / ds / "images").iterdir())[:n]
        for f in files:
            (images / f"{ds}_{f.name}").symlink_to(f)
    ckpts = _make_ckpts(tmp_path / "ck", bias=0.5, size=48)
    res = annotate(images, ckpts, tmp_path / "out", AnnotateSettings(k=10), batch_size=4, device="cpu", progress=False)
    assert res.n_images == 7 and res.counts["errors"] == 0
    assert sum(res.counts[d] for d in ("healthy", "diseased", "flagged")) == 7
    _check_outputs(tmp_path / "out", images)


def test_retry_errors_after_a_file_is_fixed(ckpts, tmp_path):
    images = tmp_path / "imgs"
    images.mkdir()
    rng = np.random.default_rng(3)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(images / f"f{i}.png")
    good = (images / "f1.png").read_bytes()
    (images / "f1.png").write_bytes(good[:40])  # truncated
    kw = dict(batch_size=2, device="cpu", progress=False)
    settings = AnnotateSettings(theta=1.0, k=4)
    assert annotate(images, ckpts, tmp_path / "out", settings, **kw).counts["errors"] == 1
    (images / "f1.png").write_bytes(good)
    assert annotate(images, ckpts, tmp_path / "out", settings, **kw).counts["errors"] == 1  # kept: not retried
    res = annotate(images, ckpts, tmp_path / "out", settings, retry_errors=True, **kw)
    assert res.counts["errors"] == 0 and res.n_new == 2  # the fixed file's whole batch (f0, f1)
    annotate(images, ckpts, tmp_path / "fresh", settings, **kw)
    got, want = _tree(tmp_path / "out"), _tree(tmp_path / "fresh")
    assert [k for k in want if got.get(k) != want[k]] == [] and sorted(got) == sorted(want)


def test_settings_validate_and_resolve(ckpts):
    """Bad fields are named; sizes broadcast or per checkpoint; thresholds come from the checkpoints."""
    with pytest.raises(ValueError, match="fusion"):
        AnnotateSettings(fusion="xor")
    with pytest.raises(ValueError, match="method"):
        AnnotateSettings(method="scorecam")
    with pytest.raises(ValueError, match="k "):
        AnnotateSettings(k=0)
    with pytest.raises(DataError, match="map threshold"):
        AnnotateSettings(map_threshold=1.5)
    models = [load_checkpoint(p) for p in ckpts]
    r = AnnotateSettings(theta=0.2).resolve(models, ckpts)
    assert (r.sizes, r.map_threshold, r.theta) == ((32, 32, 32), 0.3, 0.2)
    assert AnnotateSettings(sizes=(48,), map_threshold=0.4).resolve(models, ckpts).sizes == (48, 48, 48)
    assert AnnotateSettings(sizes=(16, 32, 48)).resolve(models, ckpts).sizes == (16, 32, 48)
    with pytest.raises(ValueError, match="one per checkpoint"):
        AnnotateSettings(sizes=(16, 32)).resolve(models, ckpts)
    with pytest.raises(ValueError, match="batch_size"):
        annotate(ckpts[0].parent, ckpts, ckpts[0].parent / "o", batch_size=0, device="cpu", progress=False)
