"""Presets cpu / real / paper, defined once in ``wsslib.papers``: what each resolves to, that the
builders hand the pretrained path to every classifier, and that the GPU-sized ``paper`` presets
run end to end on the fixture data sets with a step cap (``max_steps=2``), so their code path
cannot rot on machines without a GPU."""

from __future__ import annotations

import json

import pytest

import data_fixtures as fx
from wsslib.apps.cli import main
from wsslib.apps.reproduce import defines_preset, find_notebooks, run_notebooks
from wsslib.papers import deshpande, nasir2025, notebook_settings, ostrowski, quickstart, summary, zhong2024
from wsslib.papers.settings import REAL_CLASSIFIER, REAL_DECISION_CLASSIFIER

WITH_PRESETS = ("00", "02", "03", "04", "05")  # the image-label notebooks; 01 (gaze) is tested below


def _specs(nb: str, s) -> list:
    if nb == "00":
        return [quickstart.classifier_spec(s)]
    if nb == "02":
        return [deshpande.classifier_spec(s)]
    if nb == "03":
        return list(ostrowski.ensemble_config(s).models)
    if nb == "04":
        return nasir2025.member_specs(s)
    return list(summary.configs(s).classifiers)


@pytest.mark.parametrize("nb", WITH_PRESETS)
def test_real_preset_trains_pretrained_lites_with_a_frozen_cached_prefix(nb):
    s = notebook_settings(nb, {"preset": "real", "smoke": False})
    assert s.image_size == REAL_CLASSIFIER["image_size"] and s.dataset in ("polypgen", "kvasir-seg")
    specs = _specs(nb, s)
    ref = REAL_DECISION_CLASSIFIER if nb == "04" else REAL_CLASSIFIER  # 04: the decision's recipe
    assert specs and all(sp.name.startswith("efficientnet_lite") and sp.weights == "imagenet" for sp in specs)
    assert all(sp.train.freeze == ref["freeze"] and sp.train.cache_features for sp in specs)
    assert all(sp.train.lr == ref["lr"] and sp.train.epochs == ref["epochs"] for sp in specs)
    assert all(sp.train.class_weight == ref["class_weight"] for sp in specs)
    assert len({sp.name for sp in specs}) == len(specs)  # different architectures where there are several


@pytest.mark.parametrize("nb", WITH_PRESETS)
def test_paper_preset_is_the_papers_setup_and_user_values_win(nb):
    s = notebook_settings(nb, {"preset": "paper", "smoke": False})
    specs = _specs(nb, s)
    assert s.image_size in (128, 224) and all(sp.weights == "imagenet" and sp.train.freeze is None for sp in specs)
    assert all(sp.train.class_weight is None for sp in specs)  # the papers' plain cross-entropy
    assert all(sp.train.max_steps is None for sp in specs)
    smoke = notebook_settings(nb, {"preset": "paper", "smoke": True, "image_size": 96})
    assert smoke.image_size == 96 and smoke.max_steps == 2 and smoke.given == ["image_size"]
    assert all(sp.train.max_steps == 2 for sp in _specs(nb, smoke))


def test_the_nasir_vit_swap_stays_from_scratch_in_the_real_preset():
    s = notebook_settings("04", {"preset": "real"})
    vit = nasir2025.vit_spec(s)
    assert vit.weights is None and vit.train.freeze is None


def test_a_notebook_without_the_preset_is_refused_or_skipped(capsys, monkeypatch):
    monkeypatch.setattr(zhong2024, "PRESETS", {"cpu": zhong2024.PRESETS["cpu"]})  # as if 01 had no real preset
    assert not defines_preset("01_gaze_heatmaps.ipynb", "real") and defines_preset("04_aax_decision.ipynb", "real")
    assert defines_preset("99_my_own.ipynb", "real")  # a user's notebook: not ours to judge
    with pytest.raises(ValueError, match="defines the presets"):
        notebook_settings("01", {"preset": "real"})
    assert main(["reproduce", "--only", "01", "--preset", "real", "--out", "unused"]) == 2
    assert "defines no 'real' preset" in capsys.readouterr().err


def test_gaze_real_preset_is_a_frozen_pretrained_encoder_on_kvasir_with_two_seeds():
    s = notebook_settings("01", {"preset": "real", "smoke": False})
    cfg = zhong2024.gaze_config(s)
    assert s.dataset == "kvasir-seg" and cfg.image_size == 224 and cfg.encoder == "efficientnet_lite0"
    assert s.n_seeds == 2 and cfg.levels == (0.5, 0.3) and cfg.sigma == 70.0 and cfg.workers is None  # None: every core
    assert cfg.train_config("lpp", 0).encoder == "efficientnet_lite0"
    paper = zhong2024.gaze_config(notebook_settings("01", {"preset": "paper", "smoke": False}))
    assert paper.encoder is None and paper.widths == (64, 128, 256, 512, 1024) and paper.feat_ch == 128
    assert (paper.iterations, paper.batch_size, paper.optimizer, paper.lr) == (15000, 8, "sgd_paper", 1e-2)
    assert paper.crf_max_side is None and paper.image_size == 224
    smoke = notebook_settings("01", {"preset": "paper", "smoke": True, "iterations": 3})
    assert smoke.iterations == 3 and smoke.widths == [64, 128, 256, 512, 1024] and smoke.given == ["iterations"]


#: the paper preset's data set of each notebook, and the extra roots it needs (03: the paper's
#: second data set, Decathlon prostate: the BraTS fixture is too small to have a validation split;
#: 05: the synthetic set with gaze, as the Kvasir-SEG fixture lacks the official split's images)
PAPER_DATA = {"00": ("polypgen",), "01": ("synthetic",), "02": ("oxford-pets",), "03": ("decathlon-prostate",),
              "04": ("tbx11k",), "05": ("synthetic",)}


@pytest.fixture(scope="module")
def paper_runs(tmp_path_factory):
    """Every notebook with a paper preset, executed once with ``preset="paper"`` in smoke mode
    (64 px, two optimiser steps per training) on the fixture data sets."""
    root = tmp_path_factory.mktemp("paper_data")
    for name in {n for names in PAPER_DATA.values() for n in names} - {"synthetic"}:
        fx.build_set(name, root / name)
    out = tmp_path_factory.mktemp("paper_runs")
    docs = {}
    for nb in find_notebooks(only=list(PAPER_DATA)):
        names = PAPER_DATA[nb.name[:2]]
        params = {"preset": "paper", "dataset": names[0], "data_root": str(root / names[0])}
        if names[0] == "synthetic":
            params.update(data_root=None, n_images=120)
        run = run_notebooks(out / nb.stem, notebooks=[nb], smoke=True, parameters=params, progress=False)[0]
        path = out / nb.stem / f"{nb.stem}.json"
        docs[nb.name[:2]] = {"error": run.error} if run.error or not path.is_file() else json.loads(path.read_text())
    return docs


@pytest.mark.parametrize("nb", WITH_PRESETS)
def test_paper_preset_runs_with_a_step_cap(paper_runs, nb):
    doc = paper_runs[nb]
    assert "error" not in doc, f"{nb} with preset='paper' failed: {doc.get('error')}"
    p = doc["params"]
    assert p["preset"] == "paper" and p["smoke"] is True and p["max_steps"] == 2
    assert p["dataset"] == PAPER_DATA[nb][0]
    histories = [r for rows in doc["tables"].values() if isinstance(rows, list) for r in rows if "best_epoch" in r]
    assert all(r["best_epoch"] == 0 for r in histories)  # one capped epoch each


def test_gaze_paper_preset_runs_the_papers_unets_for_two_iterations(paper_runs):
    doc = paper_runs["01"]
    assert "error" not in doc, f"01 with preset='paper' failed: {doc.get('error')}"
    p = doc["params"]
    assert p["preset"] == "paper" and p["optimizer"] == "sgd_paper" and p["widths"] == [64, 128, 256, 512, 1024]
    assert p["iterations"] == 2 and p["encoder"] is None
    assert all(h["eval_iteration"][-1] == 2 for h in doc["history"].values())


def test_progress_is_on_interactively_and_off_in_smoke_and_headless_runs(monkeypatch):
    """``s.progress``: bars for a person running a notebook; none in smoke mode (CI) and none when
    ``wsslib reproduce`` runs it (it sets WSSLIB_PROGRESS=0); a value passed wins."""
    monkeypatch.delenv("WSSLIB_PROGRESS", raising=False)
    assert notebook_settings("00", {"smoke": False}).progress is True
    assert notebook_settings("00", {"smoke": True}).progress is False
    assert notebook_settings("00", {"smoke": True, "progress": True}).progress is True
    monkeypatch.setenv("WSSLIB_PROGRESS", "0")
    assert notebook_settings("00", {"smoke": False}).progress is False
    assert notebook_settings("00", {"smoke": False, "progress": True}).progress is True
