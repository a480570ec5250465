"""``wsslib train`` (smoke mode on the embedded synthetic set and on a folder) then ``wsslib
annotate --models DIR`` on the bad inputs of the README's table: each gets what the table says."""

from __future__ import annotations

import csv
import json
import os
import stat
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from wsslib.apps import cli
from wsslib.apps.annotate import load_image
from wsslib.apps.train import edge_warnings, resolve_data
from wsslib.core.errors import DataError
from wsslib.data import get_dataset
from wsslib.data.io import read_image
from wsslib.evaluate.thresholds import default_grid
from wsslib.models import load_checkpoint

pytestmark = pytest.mark.filterwarnings("ignore:.*copy keyword.*:DeprecationWarning")


@pytest.fixture
def umask022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _modes(folder: Path) -> set[int]:
    return {stat.S_IMODE(p.stat().st_mode) for p in folder.rglob("*") if p.is_file()}


def _rows(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return {r["file"]: r for r in csv.DictReader(f)}


def _bad_inputs(root: Path) -> None:
    """The README's table of bad inputs, plus in-distribution and out-of-distribution images."""
    root.mkdir(parents=True)
    for i in range(4):  # synthetic test images: what the smoke ensemble was trained on
        s = get_dataset("synthetic", split="test", n=120, size=64, seed=0)[i]
        Image.fromarray(s.image).save(root / f"in_{i}.png")
    for i in range(3):  # the synthetic OOD family (striped background, star-shaped lesions)
        s = get_dataset("synthetic", split="ood", n=120, size=64, seed=0, n_ood=30)[i]
        Image.fromarray(s.image).save(root / f"ood_{i}.png")
    Image.new("RGB", (1, 1), (200, 50, 50)).save(root / "tiny_1x1.png")
    Image.new("RGB", (15, 300)).save(root / "thin_15x300.png")
    Image.fromarray(np.full((40, 48), 200, np.uint16)).save(root / "deep16_max200.png")
    Image.new("CMYK", (40, 48), (0, 128, 0, 0)).save(root / "cmyk.jpg")
    Image.new("RGB", (40, 48), (90, 30, 20)).convert("P", palette=Image.Palette.ADAPTIVE).save(root / "palette.png")
    pages = [Image.new("L", (40, 48), v) for v in (20, 220, 120)]
    pages[0].save(root / "multipage.tif", save_all=True, append_images=pages[1:])
    Image.new("RGB", (40, 48)).save(root / "truncated.png")
    (root / "truncated.png").write_bytes((root / "truncated.png").read_bytes()[:30])
    (root / "text.jpg").write_text("not an image")
    (root / "empty.png").write_bytes(b"")
    (root / "notes.txt").write_text("ignored: not an image suffix")


def test_reader_is_shared_16bit_by_bit_depth(tmp_path):
    """A 16-bit PNG whose maximum is 200 reads 200/65535 in annotate and in the data loaders."""
    p = tmp_path / "deep.png"
    Image.fromarray(np.full((5, 6), 200, np.uint16)).save(p)
    assert np.allclose(load_image(p), 200 / 65535)
    assert (read_image(p) == round(200 / 65535 * 255)).all()


def test_edge_warnings_and_resolve_data(tmp_path):
    grid = default_grid()
    w = edge_warnings({"a": 0.1, "b": 0.5, "c": 0.95, "AAX": 0.3}, {"AAX": "fallback 0.3: no validation image"}, grid)
    assert len(w) == 3 and "a (0.1) sits at the bottom" in w[0] and "c (0.95) sits at the top" in w[1]
    assert "fallback" in w[2]
    assert resolve_data("polypgen") == ("polypgen", None)
    (tmp_path / "mine").mkdir()
    assert resolve_data(str(tmp_path / "mine")) == ("folder", tmp_path / "mine")
    with pytest.raises(DataError, match="neither a registered data set"):
        resolve_data(str(tmp_path / "nowhere"))


def test_train_smoke_synthetic_then_annotate_bad_inputs(tmp_path, capsys, umask022):
    out = tmp_path / "models"
    t0 = time.perf_counter()
    assert cli.main(["train", "synthetic", "--out", str(out), "--smoke", "--device", "cpu", "-q"]) == 0
    with capsys.disabled():  # the measurement, shown by `pytest -s` (the issue asks for < 60 s; not asserted)
        print(f"\nwsslib train synthetic --smoke: {time.perf_counter() - t0:.1f} s")
    card = json.loads((out / "model_card.json").read_text())
    assert [m["checkpoint"] for m in card["members"]] == [
        "efficientnet_lite0.pt", "efficientnet_lite1.pt", "efficientnet_lite2.pt"]  # the real preset's members
    assert card["data"]["image_size"] == 64 and set(card["data"]["splits"]) == {"train", "valid", "test"}
    assert all(len(x["ids_sha256"]) == 64 for x in card["data"]["splits"].values())
    for key in ("accuracy", "sensitivity", "specificity", "iou", "flag_rate", "ood_flag_rate"):
        assert key in card["validation"] and key in card["test"]
    assert card["ood_gate"]["flag_rate"]["ood"] >= 0.8  # the synthetic OOD family is gated
    assert (out / "model_card.md").read_text().startswith("# Model card: AAX ensemble on synthetic")
    m = load_checkpoint(out / "efficientnet_lite0.pt")
    assert m.image_size == 64 and m.map_threshold == card["thresholds"]["fused_map"]
    assert (m.meta["theta"], m.meta["fusion"]) == (0.1, "intersection") and m.meta["ood"]["cut"] > 0
    assert m.meta["member_threshold"] == card["thresholds"]["members"]["efficientnet_lite0"]
    assert _modes(out) == {0o644}
    assert cli.main(["train", "synthetic", "--out", str(out), "--smoke", "-q"]) == 1
    assert "already holds a trained ensemble" in capsys.readouterr().err

    images, ann = tmp_path / "images", tmp_path / "ann"
    _bad_inputs(images)
    assert cli.main(["annotate", str(images), "--models", str(out), "--out", str(ann), "--k", "4", "-q"]) == 0
    rows, errors = _rows(ann / "decisions.csv"), _rows(ann / "errors.csv")
    assert sorted(errors) == ["empty.png", "text.jpg", "thin_15x300.png", "tiny_1x1.png", "truncated.png"]
    assert "too small: tiny_1x1.png is 1x1 px" in errors["tiny_1x1.png"]["reason"]
    assert "at least 16 px" in errors["thin_15x300.png"]["reason"]
    assert errors["text.jpg"]["reason"].startswith("cannot decode image text.jpg")
    assert rows["multipage.tif"]["note"] == "multi-page file: first of 3 pages used"
    for f, r in rows.items():
        assert (r["decision"] == "flagged") == bool(r["flag_reason"]) and r["ood_score"]
    assert all(rows[f"ood_{i}.png"]["flag_reason"] == "out_of_distribution" for i in range(3))
    summary = json.loads((ann / "summary.json").read_text())
    assert summary["settings"]["theta"] == 0.1 and summary["settings"]["fusion"] == "intersection"  # from the checkpoints
    assert summary["settings"]["map_threshold"] == card["thresholds"]["fused_map"]
    assert _modes(ann) == {0o644}

    capsys.readouterr()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli.main(["annotate", str(empty), "--models", str(out), "--out", str(tmp_path / "a2"), "-q"]) == 1
    assert "no images found" in capsys.readouterr().err
    assert cli.main(["annotate", str(tmp_path / "absent"), "--models", str(out), "--out", str(tmp_path / "a3"), "-q"]) == 1
    assert "absent: the folder does not exist" in capsys.readouterr().err
    jpg = images / "cmyk.jpg"
    assert cli.main(["annotate", str(images), "--models", str(jpg), "--out", str(tmp_path / "a4"), "-q"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cmyk.jpg: not a wsslib checkpoint" in err and "weights_only" not in err
    assert cli.main(["annotate", str(images), "--models", str(tmp_path / "empty"), "--out", str(tmp_path / "a5"),
                     "-q"]) == 1
    assert "without checkpoints" in capsys.readouterr().err


def test_annotate_gate_off_and_on(tmp_path):
    """``--no-ood`` leaves the protocol alone; a gate whose cut is below every score flags all."""
    from wsslib.apps.annotate import AnnotateSettings, annotate
    from wsslib.methods.ood import OODGate
    from wsslib.models import create_model, save_checkpoint

    images = tmp_path / "imgs"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(images / f"f{i}.png")
    paths = []
    for i in range(2):
        torch.manual_seed(i)
        m = create_model("smallcnn", width=8)
        gate = OODGate(torch.nn.functional.normalize(torch.randn(5, m.num_features), dim=1), 1, -1.0, 0.95)
        paths.append(save_checkpoint(m, tmp_path / f"m{i}.pt", image_size=32, map_threshold=0.5, ood=gate.to_dict()))
    kw = dict(device="cpu", progress=False)
    res = annotate(images, paths, tmp_path / "on", AnnotateSettings(theta=1.0, k=4), **kw)
    assert res.counts["flagged"] == res.counts["out_of_distribution"] == 3
    res = annotate(images, paths, tmp_path / "off", AnnotateSettings(theta=1.0, k=4, ood=False), **kw)
    assert res.counts["out_of_distribution"] == 0
    assert {r["flag_reason"] for r in _rows(tmp_path / "off" / "decisions.csv").values()} == {""}


def test_train_on_a_folder_cpu_preset(tmp_path):
    """A folder data set through the same path (cpu preset, smoke: small networks from scratch)."""
    from tests.test_folder_dataset import _write

    data = tmp_path / "mine"
    _write(data, n_pos=14, n_neg=14)
    out = tmp_path / "models"
    assert cli.main(["train", str(data), "--out", str(out), "--preset", "cpu", "--smoke", "--device", "cpu",
                     "-q"]) == 0
    card = json.loads((out / "model_card.json").read_text())
    assert card["data"]["name"] == "folder" and card["data"]["root"] == str(data.resolve())
    assert sum(x["n"] for x in card["data"]["splits"].values()) == 28
    assert len(list(out.glob("*.pt"))) == 3
    assert cli.main(["train", str(tmp_path / "nope"), "--out", str(tmp_path / "o"), "-q"]) == 1


def test_bench_gate_scores_a_fake_run(tmp_path):
    """The acceptance score on a hand-made annotate output: Dice with empty masks for misses,
    the centre prior on the same frames, gate rates per source."""
    from wsslib.apps.bench.gate import score

    ann = tmp_path / "ann"
    (ann / "masks").mkdir(parents=True)
    truth = np.zeros((20, 20), bool)
    truth[5:15, 5:15] = True
    Image.fromarray(truth.astype(np.uint8) * 255).save(ann / "masks" / "polypgen_a.png")
    rows = [["polypgen_a.png", "diseased", "", "masks/polypgen_a.png"],
            ["polypgen_b.png", "flagged", "uncertain", ""],
            ["polypgen_c.png", "healthy", "", ""],
            ["other_x.png", "flagged", "out_of_distribution", ""],
            ["other_y.png", "healthy", "", ""]]
    with open(ann / "decisions.csv", "w", newline="") as f:
        csv.writer(f).writerows([["file", "decision", "flag_reason", "mask"], *rows])
    built = {"sources": {"polypgen_a.png": "polypgen", "polypgen_b.png": "polypgen", "polypgen_c.png": "polypgen",
                         "other_x.png": "other", "other_y.png": "other"},
             "masks": {"polypgen_a.png": truth, "polypgen_b.png": truth, "polypgen_c.png": np.zeros_like(truth)},
             "labels": {"polypgen_a.png": 1, "polypgen_b.png": 1, "polypgen_c.png": 0}}
    s = score(ann, built, prior_share=0.25)
    assert s["n_polyp_frames"] == 2 and s["dice_polyp_frames"] == 0.5 and s["dice_with_mask"] == 1.0
    assert 0.0 < s["centre_prior_dice"] < 1.0 and s["accuracy_polypgen"] == 1.0
    assert (s["ood_flag_rate_other"], s["flag_rate_polypgen"], s["ood_flag_rate_polypgen"]) == (0.5, 1 / 3, 0.0)
    assert not s["pass_gate_other"] and s["pass_gate_polypgen"]


def test_bench_gate_builds_the_mixed_folder(shared_data, tmp_path):
    from wsslib.apps.bench.gate import build_mixed_folder

    other = tmp_path / "pets"
    other.mkdir()
    Image.new("RGB", (50, 40), (120, 80, 40)).save(other / "cat.jpg")
    built = build_mixed_folder(tmp_path / "mixed", data_root=shared_data, non_endoscopy=other)
    srcs = list(built["sources"].values())
    assert (srcs.count("polypgen"), srcs.count("kvasir"), srcs.count("other")) == (60, 100, 1)
    assert (tmp_path / "mixed" / "other_cat.png").is_file() and built["non_endoscopy_source"] == str(other)
    assert all(m.shape == np.asarray(Image.open(tmp_path / "mixed" / f)).shape[:2] for f, m in built["masks"].items())


def test_annotate_warns_when_theta_differs_from_the_checkpoints(tmp_path):
    from wsslib.apps.annotate import AnnotateSettings
    from wsslib.models import create_model, save_checkpoint

    m = create_model("smallcnn", width=8)
    p = save_checkpoint(m, tmp_path / "m.pt", image_size=32, map_threshold=0.4, theta=0.05, fusion="union")
    models = [load_checkpoint(p)]
    r = AnnotateSettings().resolve(models, [p])
    assert (r.theta, r.fusion, r.min_ood) == (0.05, "union", 1)
    with pytest.warns(UserWarning, match="--theta 0.2 differs"):
        assert AnnotateSettings(theta=0.2).resolve(models, [p]).theta == 0.2
