"""Notebook 05 (every method on the same images): its presets, and the configurations of the four
papers' protocols built **by the papers' own builders**, so that 05 runs exactly what 01-04 run.

Each family's configuration starts from its notebook's ``cpu`` preset (``zhong2024``,
``deshpande``, ``ostrowski``, ``nasir2025``) and only the knobs notebook 05 exposes replace
values there (image size, models, epochs, ...): every protocol constant it does not name (the
CRF's ``sxy`` rule, ``lam_warmup``, AAX's ``p_cut`` / votes, CCAM's optimiser, ...) is the one
notebooks 01-04 use. ``PUBLISHED`` picks, from those modules, the rows the summary quotes.

``PRESETS``: ``cpu`` (synthetic images, three small CNNs); ``real`` (Kvasir-SEG with its real gaze,
the classifiers trained on PolypGen's labelled frames: the three ImageNet EfficientNet-Lites as
:data:`~wsslib.papers.settings.REAL_CLASSIFIER` says; CCAM from the Lite0 classifier; the gaze
UNet of the ``cpu`` preset at 224 px); ``paper`` (Kvasir-SEG, the AAX paper's ImageNet ResNet50,
EfficientNet-B0 and DenseNet121 at 224 px, for a GPU).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from wsslib.core.errors import DataError
from wsslib.data import list_datasets, load_splits
from wsslib.data.base import TensorBatch
from wsslib.methods.aax import AAXConfig
from wsslib.methods.cam_methods import CAMMethodsConfig
from wsslib.methods.ensembles import EnsembleConfig
from wsslib.methods.gaze import GazeConfig
from wsslib.models.training import ClassifierSpec, ClassifierTrainConfig
from wsslib.papers import deshpande, nasir2025, ostrowski, zhong2024
from wsslib.papers.settings import PAPER_SMOKE, REAL_CLASSIFIER, REAL_SMOKE

__all__ = ["FAMILIES", "NOTEBOOK", "PRESETS", "PUBLISHED", "SMOKE", "SMOKE_FOR", "SummaryConfigs", "SummaryData", "configs",
           "gaze_sets", "load_data", "paper_context", "paper_rows"]

NOTEBOOK = "05_iou_dice_summary"

#: The method families of the summary table, in the order shown.
FAMILIES = ("baseline", "single CAM", "CAM ensemble", "AAX", "CCAM", "gaze pseudo-mask", "gaze UNet")


def _pick(rows: list[dict], family: str, label: str, **match: Any) -> dict:
    row = next(r for r in rows if all(r.get(k) == v for k, v in match.items()))
    return {"family": family, "method": label, "dataset": row["dataset"], "dice": row.get("dice"), "iou": row.get("iou")}


#: The papers' per-image Dice / IoU the summary quotes, taken from each paper's module (the
#: EnsembleCAM numbers use a pooled convention that is not a per-image Dice: left out).
PUBLISHED: list[dict] = [
    _pick(zhong2024.PUBLISHED, "gaze UNet", "GazeMedSeg UNets [paper, Kvasir-SEG]", table="segmentation",
          dataset="Kvasir-SEG"),
    _pick(zhong2024.PUBLISHED, "gaze pseudo-mask", "gaze heatmap + CRF, t 0.5 [paper, Kvasir-SEG]",
          table="pseudo_masks", dataset="Kvasir-SEG"),
    _pick(deshpande.PUBLISHED, "CCAM", "CCAM [paper, Deshpande et al., Kvasir-SEG]", method="CCAM",
          dataset="Kvasir-SEG"),
    _pick(nasir2025.PUBLISHED, "AAX", "AAX [paper, Fire]", method="AAX", dataset="Fire"),
    _pick(nasir2025.PUBLISHED, "AAX", "AAX [paper, TBX11K]", method="AAX", dataset="TBX11K"),
]

PRESETS: dict[str, dict[str, Any]] = {
    "cpu": {
        "dataset": "synthetic",
        "data_root": None,
        "classifier_dataset": None,  # None: dataset itself, but polypgen for kvasir-seg (no negatives)
        "classifier_data_root": None,
        "image_size": 96,
        "n_images": 600,
        "models": ["smallcnn", "smallcnn", "smallcnn"],
        "cnn_widths": [16, 8, 12],
        "epochs": [6, 6, 6],
        "lrs": [2e-3, 3e-3, 2e-3],
        "batch_sizes": [32, 32, 32],
        "dropout": 0.5,
        "cam_methods": ["gradcam", "xgradcam", "gradcam++", "fullgrad"],
        "ensemble_cam": "gradcam",
        "ensemble_pair": None,
        "ensemble_grid_step": 0.05,
        "k": 20,
        "aax_cam": "xgradcam",
        "theta": 0.1,
        "aax_fusion": "intersection",
        "ccam_inits": ["scratch", "classifier"],
        "ccam_epochs": 3,
        "ccam_lr": 1e-3,
        "ccam_batch_size": 32,
        "gaze_levels": None,  # the data set's (zhong2024.DATASET_SETTINGS)
        "gaze_sigma": None,  # the data set's
        "gaze_train_max": None,
        "gaze_workers": 2,
        "unet_iterations": 200,
        "unet_batch_size": 4,
        "unet_eval_every": 25,
        "unet_widths": [8, 16, 32, 64],
        "unet_feat_ch": 16,
        "unet_lam": 3.0,
        "unet_encoder": None,  # None: the paper's UNets from scratch; a Lite name: frozen pretrained encoder
        "unet_decoder_width": 64,
        "n_show": 4,
        "weights": None,
        "freeze": None,
        "class_weight": None,
        "one_cycle": True,
        "patience": None,
        "ccam_backbone": None,
        "max_steps": None,
    },
}
_R = REAL_CLASSIFIER
PRESETS["real"] = {**PRESETS["cpu"], "dataset": "kvasir-seg", "n_images": None, "image_size": _R["image_size"],
                   "models": ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"],
                   "epochs": [_R["epochs"]] * 3, "lrs": [_R["lr"]] * 3, "batch_sizes": [_R["batch_size"]] * 3,
                   "dropout": _R["dropout"], "weights": _R["weights"], "freeze": _R["freeze"],
                   "class_weight": _R["class_weight"],
                   "one_cycle": _R["one_cycle"], "ccam_inits": ["classifier"], "ccam_epochs": 2,
                   "gaze_train_max": None, "gaze_workers": None,
                   # the gaze model of notebook 01's real preset (zhong2024.PRESETS["real"])
                   **{f"unet_{k}": zhong2024.PRESETS["real"][k] for k in
                      ("iterations", "batch_size", "eval_every", "feat_ch", "encoder", "decoder_width")}}
PRESETS["paper"] = {**PRESETS["cpu"], "dataset": "kvasir-seg", "n_images": None, "image_size": 224,
                    "models": ["resnet50", "efficientnet_b0", "densenet121"], "epochs": [50, 50, 50],
                    "lrs": [1e-4, 1e-4, 1e-4], "batch_sizes": [16, 16, 16], "weights": "imagenet", "one_cycle": False,
                    "patience": 5, "ccam_backbone": "resnet50", "ccam_epochs": 10, "unet_iterations": 15000,
                    "unet_batch_size": 8, "unet_eval_every": 500, "unet_widths": [64, 128, 256, 512, 1024],
                    "unet_feat_ch": 64}

SMOKE: dict[str, Any] = {
    "image_size": 32, "n_images": 120, "epochs": [3, 1, 1], "batch_sizes": [32, 32, 32], "k": 5,
    "cam_methods": ["gradcam", "gradcam++"], "ccam_epochs": 1, "unet_iterations": 8, "unet_eval_every": 4,
    "n_show": 3, "gaze_train_max": 40, "gaze_workers": 1,
}
_SMALL = {"k": 5, "cam_methods": ["gradcam", "gradcam++"], "ccam_epochs": 1, "n_show": 3, "gaze_train_max": 40,
          "gaze_workers": 1, "unet_eval_every": 2}
#: Smoke overlays of the other presets: the same code path, small images, one epoch / two steps.
SMOKE_FOR: dict[str, dict[str, Any]] = {
    "real": {**REAL_SMOKE, **_SMALL, "epochs": [1, 1, 1], "unet_iterations": 4, "unet_decoder_width": 16, "unet_feat_ch": 8},
    "paper": {**PAPER_SMOKE, **_SMALL, "epochs": [1, 1, 1], "batch_sizes": [8, 8, 8], "unet_iterations": 2,
              "unet_batch_size": 2},
}


def paper_rows() -> list[dict]:
    """``PUBLISHED`` as table rows (``source`` ``"paper"``)."""
    return [{**r, "source": "paper"} for r in PUBLISHED]


def paper_context(s: Mapping[str, Any]) -> str:
    """The sentence under notebook 05's table that says how far the papers' rows compare with
    this run: which rows share this run's data set (by name) and what differs even then.

    Args:
        s: resolved settings (``dataset``, ``image_size``, ``weights``, ``models``, ``unet_iterations``);
            the papers' side is :data:`PRESETS` ``["paper"]``.
    """
    def quote(rows: list[dict]) -> str:
        return "; ".join(f"{r['method']}: " + " / ".join(f"{k} {r[k]:.3f}" for k in ("dice", "iou") if r.get(k) is not None)
                         for r in rows)

    def setup(who: str, t: Mapping[str, Any]) -> str:
        return (f"{who}: {t['image_size']} px, {'ImageNet-pretrained' if t.get('weights') else 'from-scratch'} "
                f"{', '.join(sorted(set(t['models'])))}, {t['unet_iterations']:,} gaze-UNet iterations")

    rows = paper_rows()
    norm = str(s["dataset"]).replace("-", "").lower()
    same = [r for r in rows if str(r["dataset"]).replace("-", "").lower() == norm]
    other = [r for r in rows if r not in same]
    ours = f"{setup('this run', s)}; {setup('the papers', PRESETS['paper'])}"
    parts = []
    if same:
        parts.append(f"The papers' {same[0]['dataset']} rows are on this run's data set, with their own splits ({ours}): "
                     f"{quote(same)}.")
    if other:
        lead = ("The other rows are for other data sets:" if same
                else f"The papers' numbers are for other data and other networks ({ours}):")
        parts.append(f"{lead} {quote(other)}.")
    return " ".join(parts) + " Compare rankings, not values."


@dataclass(frozen=True)
class SummaryConfigs:
    """One configuration per family, each built by its paper's builder."""

    classifiers: tuple[ClassifierSpec, ...]
    cams: CAMMethodsConfig
    ensembles: EnsembleConfig
    aax: AAXConfig
    gaze: GazeConfig

    @property
    def names(self) -> list[str]:
        """The classifiers' table names (``smallcnn/16``: architecture / first-stage width)."""
        return [s.title for s in self.classifiers]


def configs(s: Mapping[str, Any]) -> SummaryConfigs:
    """The five configurations of resolved settings ``s``.

    Raises:
        ValueError: lists of per-model knobs of different lengths, fewer than two models, or two
            classifiers with the same table name.
    """
    n = len(s["models"])
    if n < 2 or not n == len(s["cnn_widths"]) == len(s["epochs"]) == len(s["lrs"]) == len(s["batch_sizes"]):
        raise ValueError("models, cnn_widths, epochs, lrs and batch_sizes need one entry per model (two at least), got "
                         f"{n}, {len(s['cnn_widths'])}, {len(s['epochs'])}, {len(s['lrs'])}, {len(s['batch_sizes'])}")
    specs = tuple(
        ClassifierSpec(m, ClassifierTrainConfig(lr=lr, batch_size=bs, epochs=ep, patience=s["patience"],
                                                one_cycle=s["one_cycle"], freeze=s["freeze"], max_steps=s["max_steps"],
                                                class_weight=s["class_weight"]),
                       dropout=s["dropout"], weights=s["weights"], options={"width": w} if m == "smallcnn" else {},
                       label=f"{m}/{w}" if m == "smallcnn" else m)
        for m, w, ep, lr, bs in zip(s["models"], s["cnn_widths"], s["epochs"], s["lrs"], s["batch_sizes"]))
    if len({sp.title for sp in specs}) != n:
        raise ValueError(f"two classifiers would have the same name: {[sp.title for sp in specs]}; vary models or cnn_widths")
    cams = deshpande.config({**deshpande.PRESETS["cpu"], "cam_methods": s["cam_methods"], "threshold_metric": "dice",
                             "ccam_inits": s["ccam_inits"], "ccam_epochs": s["ccam_epochs"], "ccam_lr": s["ccam_lr"],
                             "ccam_batch_size": s["ccam_batch_size"], "ccam_backbone": s["ccam_backbone"],
                             "max_steps": s["max_steps"]})
    ens = replace(ostrowski.ensemble_config(ostrowski.PRESETS["cpu"]), cam_method=s["ensemble_cam"],
                  grid_step=s["ensemble_grid_step"], select_metric="dice")
    aax = nasir2025.aax_config({**nasir2025.PRESETS["cpu"], "k": s["k"], "cam_method": s["aax_cam"],
                                "theta": s["theta"], "fusion": s["aax_fusion"], "threshold_metric": "dice"})
    gaze = zhong2024.gaze_config({**zhong2024.PRESETS["cpu"], "dataset": s["dataset"], "image_size": s["image_size"],
                                  "levels": s["gaze_levels"], "sigma": s["gaze_sigma"], "crf_workers": s["gaze_workers"],
                                  "iterations": s["unet_iterations"], "batch_size": s["unet_batch_size"],
                                  "eval_every": s["unet_eval_every"], "widths": s["unet_widths"],
                                  "feat_ch": s["unet_feat_ch"], "lam": s["unet_lam"], "encoder": s["unet_encoder"],
                                  "decoder_width": s["unet_decoder_width"]}, variants=("lpp",))
    return SummaryConfigs(specs, cams, ens, aax, gaze)


@dataclass
class SummaryData:
    """The splits of a summary run.

    Attributes:
        seg: ``train`` / ``valid`` / ``test`` of the data that is segmented and scored.
        cls: ``train`` / ``valid`` the classifiers learn from (``seg`` itself unless
            ``classifier_dataset`` names another set).
        valid, test: the validation and test images that hold a lesion with a mask (thresholds
            are chosen on ``valid``; every method is scored on ``test``).
        test_name: ``"<dataset> (test)"``.
        classifier_dataset: the name of the classifiers' data set.
    """

    seg: dict[str, TensorBatch]
    cls: dict[str, TensorBatch]
    valid: TensorBatch
    test: TensorBatch
    test_name: str
    classifier_dataset: str


def load_data(s: Mapping[str, Any]) -> SummaryData:
    """Load the splits of resolved settings ``s`` (see :class:`SummaryData`).

    Raises:
        ValueError: an unknown data set name. DataError: a classifier data set of one class.
    """
    for name in (s["dataset"], s["classifier_dataset"]):
        if name is not None and name not in list_datasets():
            raise ValueError(f"dataset {name!r} is not known; choose one of {list_datasets()}")
    cds = s["classifier_dataset"] or ("polypgen" if s["dataset"] == "kvasir-seg" else s["dataset"])
    size, seed = s["image_size"], s.get("seed", 0)
    seg = load_splits(s["dataset"], ("train", "valid", "test"), root=s["data_root"], size=size, n=s["n_images"], seed=seed)
    cls = seg
    if cds != s["dataset"]:
        cls = load_splits(cds, ("train", "valid"), root=s["classifier_data_root"], size=size, seed=seed)
        if int(cls["train"].labels.min()) == int(cls["train"].labels.max()):
            raise DataError(f"classifier_dataset={cds!r} has one class only: a classifier needs both")
    pos = {k: seg[k].subset((seg[k].labels == 1) & seg[k].has_mask) for k in ("valid", "test")}
    return SummaryData(seg, cls, pos["valid"], pos["test"], f"{s['dataset']} (test)", cds)


def gaze_sets(s: Mapping[str, Any], data: SummaryData, config: GazeConfig, *, progress: bool = False) -> dict:
    """GazeMedSeg's pseudo-masks (:func:`wsslib.methods.gaze.gaze_supervision`, notebook 01's call)
    of the training images with a lesion (at most ``s["gaze_train_max"]``) and of ``data.valid`` /
    ``data.test``, in their order.

    Returns:
        ``{"train", "valid", "test"}`` -> :class:`~wsslib.methods.gaze.PseudoMaskSet`.

    Raises:
        DataError: the data set has no gaze, or its samples are not in the order of the tensors.
    """
    from itertools import islice

    from wsslib.data import get_dataset
    from wsslib.methods.gaze import gaze_supervision

    kw = {"n": s["n_images"], "size": s["image_size"], "seed": s.get("seed", 0)} if s["dataset"] == "synthetic" else {}
    ds = {k: get_dataset(s["dataset"], root=s["data_root"], split=k, **kw) for k in ("train", "valid", "test")}
    keep = {k: {str(i) for i in (getattr(data, k).ids or [])} for k in ("valid", "test")}
    def listed(split: str):  # the samples of split whose ids the tensors hold, in the data set's order
        return (ds[split][i] for i, name in enumerate(ds[split].ids()) if str(name) in keep[split])

    chosen = {"train": islice((x for x, lab in zip(ds["train"], ds["train"].labels()) if lab == 1), s["gaze_train_max"]),
              "valid": listed("valid"), "test": listed("test")}
    sets = gaze_supervision(chosen, config, native_truth_splits=(), progress=progress)
    for k in ("valid", "test"):
        if [str(i) for i in sets[k].ids] != [str(i) for i in getattr(data, k).ids]:
            raise DataError(f"gaze maps of {k} are not in the order of the split's tensors")
    return sets
