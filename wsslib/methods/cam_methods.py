"""Deshpande et al.'s method table: CAMs of one image classifier and CCAM, turned into masks.

Deshpande, Hota, Pillai, Garg, Goyenka, *Weakly Supervised Segmentation using Activation
Methods*: train one image-level classifier, turn its class activation maps (Grad-CAM, HiResCAM,
FullGrad, ...) into masks by a threshold, and compare with CCAM (Xie et al. 2022), a
class-agnostic foreground map learnt without labels. Unlike their code, every threshold here is
chosen on the validation masks and the test split is touched once, to score; CCAM never sees
the test images.

The protocol is :func:`run_cam_methods` with a :class:`CAMMethodsConfig`; its steps are public
so that other notebooks reuse them instead of copying them:

* :func:`positives`: the images that hold an object and have a mask (the scored images);
* :func:`cam_maps`: one classifier's maps for several CAM methods;
* :func:`score_maps`: per method a threshold chosen on validation, test scores, beside the
  empty and centre-prior baselines (the quick start 00 is this step with one CAM);
* :func:`fit_ccam`: one CCAM (from scratch or from the classifier) with its polarity decided
  on training data;
* :func:`hirescam_vs_gradcam`: HiResCAM equals Grad-CAM at the pooled layer, not before it.

Example:
    >>> from wsslib.data import load_splits
    >>> from wsslib.models.training import ClassifierSpec, ClassifierTrainConfig
    >>> data = load_splits("synthetic", size=32, n=60)
    >>> spec = ClassifierSpec("smallcnn", ClassifierTrainConfig(lr=2e-3, batch_size=16, epochs=1), dropout=0.2)
    >>> cfg = CAMMethodsConfig(cam_methods=("gradcam",), ccam_inits=())
    >>> res = run_cam_methods(spec, data, cfg, device="cpu")
    >>> [r["method"] for r in res.tables["segmentation"]]
    ['empty', 'centre prior', 'gradcam']
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import torch
from torch import nn

from wsslib.core.errors import DataError
from wsslib.data.base import TensorBatch
from wsslib.evaluate.comparison import MethodComparison
from wsslib.evaluate import baselines, metrics, thresholds
from wsslib.evaluate.thresholds import ThresholdResult
from wsslib.explain import cams, ccam
from wsslib.models.training import ClassifierSpec, TrainResult, fit_classifier, predict_logits

__all__ = ["CAMMethodsConfig", "CAMMethodsResult", "CCAMRun", "MapScores", "cam_maps", "earlier_layer",
           "fit_ccam", "hirescam_vs_gradcam", "positives", "run_cam_methods", "score_maps"]

#: The CCAM initialisations: random weights, or the classifier's backbone (their "CCAM pretrained").
CCAM_INITS = ("scratch", "classifier")
#: Polarity rules of :func:`wsslib.explain.ccam.choose_polarity`.
POLARITY_METHODS = ("deletion", "border", "reference")
#: The stage before the pooled one, per backbone (where HiResCAM and Grad-CAM part ways).
EARLIER_LAYER = {"smallcnn": "stage3", "resnet18": "layer3", "resnet34": "layer3", "resnet50": "layer3"}


@dataclass(frozen=True)
class CAMMethodsConfig:
    """Deshpande et al.'s protocol (their values in brackets).

    Attributes:
        cam_methods: keys of :data:`wsslib.explain.cams.METHODS` (theirs: Grad-CAM, HiResCAM,
            FullGrad).
        threshold_metric: what the validation threshold maximises (per-image ``"dice"``).
        ccam_inits: CCAMs to train, each ``"scratch"`` or ``"classifier"``; ``()`` for none.
        ccam_backbone: the scratch CCAM's backbone (None: the classifier's).
        ccam: CCAM training (their SGD, poly decay, 10 epochs, batch 32); its ``seed`` is
            replaced by the seed of :func:`run_cam_methods`.
        polarity_method: the rule that decides which side of a CCAM map is the object
            (``"deletion"``, ``"border"``, ``"reference"``); all three are reported.
        deletion_fraction: share of pixels the deletion rule blanks out.
        fixed_cam_threshold, fixed_ccam_threshold: their code's fixed thresholds (0.58, 0.59),
            scored for comparison; None skips that table.
        compare_layers: also compare HiResCAM with Grad-CAM one stage before the pooling.
        compare_threshold: the fixed threshold of that comparison's Dice.
    """

    cam_methods: tuple[str, ...] = ("gradcam", "hirescam", "fullgrad", "xgradcam", "gradcam++")
    threshold_metric: thresholds.ThresholdMetric = "dice"
    ccam_inits: tuple[str, ...] = CCAM_INITS
    ccam_backbone: str | None = None
    ccam: ccam.CCAMTrainConfig = field(default_factory=lambda: ccam.CCAMTrainConfig(epochs=3, optimizer="adam"))
    polarity_method: str = "deletion"
    deletion_fraction: float = 0.2
    fixed_cam_threshold: float | None = 0.58
    fixed_ccam_threshold: float | None = 0.59
    compare_layers: bool = True
    compare_threshold: float = 0.5

    def __post_init__(self) -> None:
        unknown = [m for m in self.cam_methods if m not in cams.METHODS]
        if unknown:
            raise ValueError(f"CAMMethodsConfig.cam_methods: unknown {unknown}; known: {sorted(cams.METHODS)}")
        bad = [i for i in self.ccam_inits if i not in CCAM_INITS]
        if bad:
            raise ValueError(f"CAMMethodsConfig.ccam_inits: each one of {CCAM_INITS}, got {bad}")
        if self.polarity_method not in POLARITY_METHODS:
            raise ValueError(f"CAMMethodsConfig.polarity_method: one of {POLARITY_METHODS}, got {self.polarity_method!r}")


def positives(batch: TensorBatch) -> TensorBatch:
    """The images of ``batch`` that hold an object (label 1) and have a mask: the scored ones.

    Raises:
        DataError: ``batch`` has no masks, or no image qualifies.
    """
    if batch.masks is None:
        raise DataError("positives: the split has no masks to score against")
    keep = batch.labels == 1
    if batch.has_mask is not None:
        keep = keep & batch.has_mask
    if not bool(keep.any()):
        raise DataError(f"positives: none of the {len(batch)} images holds an object with a mask")
    return batch.subset(keep)


def cam_maps(model: nn.Module, images: torch.Tensor, methods: Sequence[str], *, target: int = 1,
             batch_size: int = 16) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """One classifier's maps for several CAM methods (model in eval mode, un-augmented images).

    Args:
        model: a :class:`wsslib.models.Classifier` (on any device).
        images: ``(N, 3, H, W)`` float in [0, 1] (moved chunk by chunk to the model's device).
        methods: keys of :data:`wsslib.explain.cams.METHODS`.
        target: the class explained, for every image (the object class).

    Returns:
        ``({method: (N, H, W) float maps in [0, 1] on the CPU}, {method: seconds})``.
    """
    maps, seconds = {}, {}
    for m in methods:
        t0 = time.perf_counter()
        maps[m] = cams.compute_cams(model, images, method=m, targets=target, batch_size=batch_size).cpu()
        seconds[m] = time.perf_counter() - t0
    return maps, seconds


@dataclass
class MapScores:
    """What :func:`score_maps` returns.

    Attributes:
        rows: one record per method (``empty`` and ``centre prior`` first): ``method``,
            ``dice``, ``iou``, ``precision``, ``recall``, ``n_images`` and, for the maps,
            ``threshold`` and ``valid_<metric>``.
        thresholds: ``{method: ThresholdResult}`` (the validation search, for plots).
        test_masks: ``{method: (N, H, W) bool}`` test masks, baselines included.
    """

    rows: list[dict]
    thresholds: dict[str, ThresholdResult]
    test_masks: dict[str, torch.Tensor]


def score_maps(valid_maps: Mapping[str, torch.Tensor], valid_truth: torch.Tensor,
               test_maps: Mapping[str, torch.Tensor], test_truth: torch.Tensor, *, fg_share: float,
               metric: thresholds.ThresholdMetric = "dice") -> MapScores:
    """Threshold each method's maps on validation, score on test, beside two baselines.

    Mask ``= map > t`` with ``t`` the grid value of the best validation ``metric``
    (:func:`wsslib.evaluate.thresholds.select_threshold`); the test masks are scored once with
    :func:`wsslib.evaluate.metrics.segmentation_scores`. Baselines: ``empty`` (background
    everywhere) and ``centre prior`` (a centred ellipse covering ``fg_share`` of the image).

    Args:
        valid_maps, test_maps: ``{method: (N, H, W) float in [0, 1]}``, the same methods.
        valid_truth, test_truth: ``(N, H, W)`` bool masks of those images.
        fg_share: mean object share of the training masks
            (:func:`wsslib.evaluate.baselines.mean_foreground_share`).
        metric: see :data:`wsslib.evaluate.thresholds.ThresholdMetric`.

    Raises:
        ValueError: the two dicts name different methods.
    """
    if set(valid_maps) != set(test_maps):
        raise ValueError(f"score_maps: valid_maps has {sorted(valid_maps)}, test_maps {sorted(test_maps)}")
    cmp = MethodComparison(test_truth, valid_truth, dataset="", metric=metric)
    cmp.add_baselines(fg_share)
    chosen = {m: cmp.add_maps("map", m, valid_maps[m], test_maps[m]) for m in valid_maps}
    drop = {"family", "source", "dataset", "coverage", "note"}
    rows = [{k: v for k, v in r.items() if k not in drop and not (r["method"] not in chosen and k in ("threshold", cmp.valid_key))}
            for r in cmp.rows]
    return MapScores(rows=rows, thresholds=chosen, test_masks=dict(cmp.masks))


def _gradient_spread(model: nn.Module, images: torch.Tensor, target: int) -> float:
    """Spatial std of ``d y_target / d A`` at ``model.target_layer``, relative to its mean size."""
    acts: list[torch.Tensor] = []
    hook = model.target_layer.register_forward_hook(lambda _m, _i, o: acts.append(o))
    dev = next(model.parameters()).device
    try:
        score = model(images.to(dev))[:, target].sum()
        (g,) = torch.autograd.grad(score, acts[0])
    finally:
        hook.remove()
    if getattr(model, "reshape_transform", None) is not None:
        g = model.reshape_transform(g)
    return float(g.std(dim=(2, 3)).mean() / g.abs().mean().clamp_min(1e-12))


def earlier_layer(model: nn.Module) -> str | None:
    """The stage before the pooled one for known backbones (``EARLIER_LAYER``), else None."""
    return EARLIER_LAYER.get((getattr(model, "config", None) or {}).get("name"))


def hirescam_vs_gradcam(model: nn.Module, images: torch.Tensor, truth: torch.Tensor, *, threshold: float = 0.5,
                        layer: str | None = None, target: int = 1, n_gradient: int = 16) -> list[dict]:
    """HiResCAM against Grad-CAM at the pooled layer and (``layer``) one stage before it.

    With global average pooling and one linear layer, ``dy/dA`` is constant over the map, so
    HiResCAM's ``G * A`` equals Grad-CAM's ``mean(G) A``. One stage earlier the gradient varies.

    Args:
        model: a trained :class:`wsslib.models.Classifier` (not modified: a copy gets the other layer).
        images: ``(N, 3, H, W)`` float in [0, 1] holding the object; truth ``(N, H, W)`` bool.
        threshold: the fixed threshold of the Dice comparison.
        layer: name of the earlier stage in ``model.features`` (None: only the pooled layer).
        n_gradient: images used for the gradient's spread.

    Returns:
        One record per layer: ``method`` (the layer), ``relative spatial std of the gradient``,
        ``max |HiResCAM - Grad-CAM|``, ``mean |HiResCAM - Grad-CAM|``, ``Dice Grad-CAM``,
        ``Dice HiResCAM``.
    """
    nets = [("last stage (pooled by the head)", model)]
    if layer is not None:
        early = copy.deepcopy(model)
        early.target_layer = getattr(early.features, layer)
        nets.append((f"{layer} (one stage before the pooling)", early))
    rows = []
    for label, net in nets:
        maps, _ = cam_maps(net, images, ("gradcam", "hirescam"), target=target)
        g, hr = maps["gradcam"], maps["hirescam"]
        dice = {m: metrics.segmentation_scores(thresholds.binarize(x, threshold), truth)["dice"] for m, x in maps.items()}
        rows.append({"method": label, "relative spatial std of the gradient": _gradient_spread(net, images[:n_gradient], target),
                     "max |HiResCAM - Grad-CAM|": float((g - hr).abs().max()),
                     "mean |HiResCAM - Grad-CAM|": float((g - hr).abs().mean()),
                     "Dice Grad-CAM": dice["gradcam"], "Dice HiResCAM": dice["hirescam"]})
    return rows


@dataclass
class CCAMRun:
    """One trained CCAM and its polarity.

    Attributes:
        name: ``"CCAM (scratch)"`` or ``"CCAM (classifier)"``.
        result: the :class:`~wsslib.explain.ccam.CCAMTrainResult`.
        polarities: ``{rule: Polarity}`` for the three rules.
        polarity: the one used (``config.polarity_method``).
    """

    name: str
    result: ccam.CCAMTrainResult
    polarities: dict[str, ccam.Polarity]
    polarity: ccam.Polarity

    def maps(self, images: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` -> ``(N, H, W)`` maps in [0, 1] on the CPU, the object side up."""
        return ccam.ccam_maps(self.result.model, images, flip=self.polarity.flip).cpu()

    def record(self) -> dict:
        """The polarity table's row: every rule's score and verdict, the rule used, ``flip``."""
        return {"method": self.name, **{f"{k} score": p.score for k, p in self.polarities.items()},
                **{f"{k} says flip": p.flip for k, p in self.polarities.items()},
                "used": self.polarity.method, "flip": self.polarity.flip}


def fit_ccam(init: str, classifier: nn.Module, train: TensorBatch, config: CAMMethodsConfig, *, seed: int = 0,
             device: str | torch.device = "auto", progress: bool = False,
             reference: torch.Tensor | None = None) -> CCAMRun:
    """Train one CCAM on the training images (labels unused) and decide its polarity on them.

    Args:
        init: ``"scratch"`` (random weights; ``config.ccam_backbone``, or the classifier's
            architecture with its builder options such as ``smallcnn``'s width) or
            ``"classifier"`` (the classifier's backbone, weights copied).
        classifier: the trained :class:`wsslib.models.Classifier` (the deletion rule asks it).
        train: the training split (``images`` (N, 3, S, S), ``labels`` (N,)).
        reference: ``(P, S, S)`` Grad-CAMs of the training images with label 1 (the reference
            rule; computed here when None).

    Returns:
        :class:`CCAMRun`.
    """
    if init not in CCAM_INITS:
        raise ValueError(f"init must be one of {CCAM_INITS}, got {init!r}")
    if init == "scratch":  # the classifier's architecture and builder options, unless ccam_backbone names another
        clf = getattr(classifier, "config", None) or {}
        backbone = config.ccam_backbone or clf.get("name")
        if backbone in (None, "custom"):
            raise ValueError("fit_ccam: set config.ccam_backbone (the classifier was not built by create_model)")
        options = dict(clf.get("kwargs", {})) if config.ccam_backbone is None else {}
        options.setdefault("image_size", int(train.images.shape[-1]))
        net = ccam.CCAM(backbone, seed=seed, **options)
    else:
        net = ccam.CCAM.from_classifier(classifier, seed=seed)
    res = ccam.train_ccam(net, train.images, replace(config.ccam, seed=seed), device=device, progress=progress)
    pos = train.labels == 1
    x_pos = train.images[pos]
    if reference is None:
        reference = cams.compute_cams(classifier, x_pos, method="gradcam", targets=1).cpu()
    raw = ccam.ccam_maps(res.model, train.images).cpu()
    by = {"deletion": ccam.choose_polarity(raw[pos], method="deletion", images=x_pos, classifier=classifier,
                                           target=1, fraction=config.deletion_fraction),
          "border": ccam.choose_polarity(raw, method="border"),
          "reference": ccam.choose_polarity(raw[pos], method="reference", reference=reference)}
    return CCAMRun(f"CCAM ({init})", res, by, by[config.polarity_method])


@dataclass
class CAMMethodsResult:
    """What :func:`run_cam_methods` returns.

    Attributes:
        tables: records per table: ``segmentation`` (baselines, every CAM method, every CCAM;
            ``source`` "this run"), ``classification`` (one row), ``hirescam_vs_gradcam``,
            ``ccam_polarity``, ``fixed_thresholds`` (their fixed thresholds on the same maps).
        test: the scored test images (:func:`positives` of the test split).
        test_maps, test_masks: ``{method: (N, H, W)}`` maps in [0, 1] and masks at the chosen thresholds.
        thresholds: ``{method: ThresholdResult}`` of the validation search.
        ccam_history: ``{CCAM name: per-epoch history}``.
        cam_seconds: ``{method: seconds}`` of the validation and test maps.
        seconds: wall time per step (``classifier``, ``ccam``, ``total``).
        classifier: the classifier's :class:`TrainResult` (None when a trained model was given).
    """

    tables: dict[str, list[dict]]
    test: TensorBatch
    test_maps: dict[str, torch.Tensor]
    test_masks: dict[str, torch.Tensor]
    thresholds: dict[str, ThresholdResult]
    ccam_history: dict[str, list[dict]]
    cam_seconds: dict[str, float]
    seconds: dict[str, float]
    classifier: TrainResult | None = None


def run_cam_methods(classifier: nn.Module | TrainResult | ClassifierSpec, splits: Mapping[str, TensorBatch],
                    config: CAMMethodsConfig | None = None, *, seed: int = 0, device: str | torch.device = "auto",
                    progress: bool = False, dataset: str = "") -> CAMMethodsResult:
    """Deshpande et al.'s table on one split: CAM methods and CCAMs, thresholds chosen on validation.

    Steps: train the classifier when given a spec (:func:`~wsslib.models.training.fit_classifier`);
    its test accuracy; the maps of ``config.cam_methods`` on the validation and test images that
    hold an object; the HiResCAM / Grad-CAM comparison; each CCAM of ``config.ccam_inits``
    trained on the training images (polarity decided there); :func:`score_maps`; their fixed
    thresholds on the same maps.

    Args:
        classifier: a trained :class:`wsslib.models.Classifier` (or its ``TrainResult``), as
            the summary notebook passes, or a :class:`ClassifierSpec` to train here.
        splits: ``{"train", "valid", "test": TensorBatch}`` with masks on ``valid`` and ``test``
            (train masks give the centre prior's share; without them it uses the validation masks).
        config: the protocol (default :class:`CAMMethodsConfig`).
        seed: the classifier's and the CCAMs' seed.
        device: where to train and explain ("auto": CUDA when present).
        progress: progress bars of the training loops.
        dataset: the test data's name, written in every row.

    Returns:
        :class:`CAMMethodsResult`.

    Raises:
        KeyError: a split is missing. DataError: no test or validation image with an object and a mask.
    """
    cfg = config or CAMMethodsConfig()
    missing = [s for s in ("train", "valid", "test") if s not in splits]
    if missing:
        raise KeyError(f"run_cam_methods: splits needs train, valid and test; missing {missing}")
    t_all = time.perf_counter()
    seconds: dict[str, float] = {}
    fit = None
    if isinstance(classifier, ClassifierSpec):
        fit = fit_classifier(classifier, splits["train"], splits["valid"], seed=seed, device=device, progress=progress)
        seconds["classifier"] = fit.seconds
    elif isinstance(classifier, TrainResult):
        fit = classifier
    model = (fit.model if fit is not None else classifier).eval()
    test_all = splits["test"]
    pred = predict_logits(model, test_all.images).argmax(1)
    name = classifier.title if isinstance(classifier, ClassifierSpec) else (getattr(model, "config", None) or {}).get("name", "classifier")
    cls_row = {"method": name, "accuracy": metrics.accuracy(pred, test_all.labels),
               "best_epoch": fit.best_epoch if fit is not None else None, "n_images": len(test_all)}

    valid, test = positives(splits["valid"]), positives(splits["test"])
    valid_maps, cam_s = cam_maps(model, valid.images, cfg.cam_methods)
    test_maps, cam_t = cam_maps(model, test.images, cfg.cam_methods)
    cam_seconds = {m: cam_s[m] + cam_t[m] for m in cfg.cam_methods}

    layer = earlier_layer(model) if cfg.compare_layers else None
    hires = hirescam_vs_gradcam(model, test.images, test.masks, threshold=cfg.compare_threshold, layer=layer)

    train = splits["train"]
    runs: list[CCAMRun] = []
    if cfg.ccam_inits:
        t0 = time.perf_counter()
        reference = cams.compute_cams(model, train.images[train.labels == 1], method="gradcam", targets=1).cpu()
        for init in cfg.ccam_inits:
            run = fit_ccam(init, model, train, cfg, seed=seed, device=device, progress=progress, reference=reference)
            valid_maps[run.name], test_maps[run.name] = run.maps(valid.images), run.maps(test.images)
            runs.append(run)
        seconds["ccam"] = time.perf_counter() - t0

    share_from = train if train.masks is not None and bool((train.labels == 1).any()) else splits["valid"]
    share = baselines.mean_foreground_share(positives(share_from).masks)
    scored = score_maps(valid_maps, valid.masks, test_maps, test.masks, fg_share=share, metric=cfg.threshold_metric)
    tag = {"source": "this run", "dataset": dataset}
    fixed = []
    if cfg.fixed_cam_threshold is not None and cfg.fixed_ccam_threshold is not None:
        for m, maps in test_maps.items():
            t = cfg.fixed_ccam_threshold if m.startswith("CCAM") else cfg.fixed_cam_threshold
            s = metrics.segmentation_scores(thresholds.binarize(maps, t), test.masks)
            validated = next(r for r in scored.rows if r["method"] == m)
            fixed.append({"method": m, "threshold": t, "dice": s["dice"], "iou": s["iou"],
                          "dice (validated t)": validated["dice"], **tag})
    seconds["total"] = time.perf_counter() - t_all
    tables = {"segmentation": [{**r, **tag} for r in scored.rows], "classification": [{**cls_row, **tag}],
              "hirescam_vs_gradcam": hires, "ccam_polarity": [r.record() for r in runs], "fixed_thresholds": fixed}
    return CAMMethodsResult(tables=tables, test=test, test_maps=test_maps, test_masks=scored.test_masks,
                            thresholds=scored.thresholds, ccam_history={r.name: r.result.history for r in runs},
                            cam_seconds=cam_seconds, seconds=seconds, classifier=fit)
