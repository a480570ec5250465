"""EnsembleCAM (Ostrowski et al., ``methods.md`` section 4): ensembles of binarised CAMs, and the
paper's k-fold protocol as one function.

Two classifiers' Grad-CAMs are binarised, each at its own threshold, and the masks are combined
(:func:`wsslib.evaluate.thresholds.combine_masks`): ``"or"`` (union), ``"and"`` (intersection),
``"<"`` / ``">"`` (per image the mask with the fewest / most positive pixels). The thresholds are
hyper-parameters, chosen on every pair of a grid (0, 0.1, ..., 1) on the TRAINING part of a fold
by THE threshold search (:func:`wsslib.evaluate.thresholds.search_grid`: exact, vectorised), then
applied unchanged to the held-out fold.

* :func:`ensemble_on_split`: one split, maps already computed: the single models' and every op's
  thresholds searched on the fit part, the test part scored (the summary notebook 05 calls it on
  its one split with its own classifiers' maps);
* :func:`cross_validate_ensembles`: the paper's protocol: folds (grouped by patient where the data
  have patients), train both classifiers per fold, Grad-CAM on every image, then
  :func:`ensemble_on_split` per fold, summarised as mean and sample sd over folds.

Scores (:func:`paper_scores`): the paper's convention ("DSC" ``= 2 mIoU / (1 + mIoU)`` of the
fg/bg mIoU pooled over every held-out image) and per-image Dice / IoU / precision / recall over
the held-out images that hold an object.

This is not AAX's :func:`wsslib.methods.aax.fuse_maps`, which fuses the maps first and
thresholds the fused map once.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from wsslib.data.base import TensorBatch
from wsslib.data.splitting import patient_groups, stratified_folds, stratified_group_folds
from wsslib.evaluate import baselines, metrics
from wsslib.evaluate.thresholds import (
    COMBINE_OPS,
    CombineOp,
    GridSearch,
    ThresholdMetric,
    combine_maps,
    search_grid,
    threshold_grid,
)
from wsslib.explain import cams
from wsslib.models.training import ClassifierSpec, fit_classifier, predict_logits

__all__ = [
    "KEYS",
    "OPS",
    "EnsembleCV",
    "EnsembleConfig",
    "EnsembleSplit",
    "cross_validate_ensembles",
    "ensemble_on_split",
    "method_order",
    "paper_scores",
    "role_names",
]

#: The ops in the order of the paper's table.
OPS: tuple[str, ...] = COMBINE_OPS
#: The score keys of every row (see :func:`paper_scores`).
KEYS: tuple[str, ...] = ("dsc_paper", "miou_fg_bg", "dice", "iou", "precision", "recall")
_BASELINES = ("Empty", "centre prior")


def role_names(n: int) -> list[str]:
    """``["model A", "model B", ...]``: the table names of ``n`` ensemble members."""
    return [f"model {chr(ord('A') + i)}" for i in range(n)]


def method_order(n_models: int = 2, ops: Sequence[str] = OPS) -> list[str]:
    """The rows of the paper's table: baselines, single models, then the ops.

    Example:
        >>> method_order()
        ['Empty', 'centre prior', 'model A', 'model B', 'or', '<', '>', 'and']
    """
    return [*_BASELINES, *role_names(n_models), *ops]


@dataclass(frozen=True)
class EnsembleConfig:
    """EnsembleCAM's protocol settings (the paper's in brackets).

    Attributes:
        models: the ensemble members (paper: ResNet-34 and ResNet-50), each with its training
            settings; two or more (the grid has ``G^M`` cells).
        cam_method: the CAM of each model, for the lesion class 1 (paper: Grad-CAM, last block).
        grid_step: threshold grid ``0, step, ..., 1`` for every model (paper: 0.1).
        select_metric: what the search maximises on the training part (paper: ``"dsc_paper"``).
        n_folds: cross-validation folds (paper: 3).
        ops: the combination ops searched (paper: all four).
        valid_fraction: share of each fold's training part held aside for the classifiers'
            validation loss (the kept epoch); the thresholds are searched on the whole training part.
        group_by_patient: fold by patient when the image ids name patients
            (:func:`wsslib.data.splitting.patient_groups`), so no patient is in two folds.
        cam_batch_size: images per CAM batch.
    """

    models: tuple[ClassifierSpec, ...]
    cam_method: str = "gradcam"
    grid_step: float = 0.1
    select_metric: ThresholdMetric = "dsc_paper"
    n_folds: int = 3
    ops: tuple[str, ...] = OPS
    valid_fraction: float = 0.15
    group_by_patient: bool = True
    cam_batch_size: int = 64

    def __post_init__(self) -> None:
        if len(self.models) < 2:
            raise ValueError(f"EnsembleConfig.models: need two classifiers or more, got {len(self.models)}")
        if not 0.0 < self.valid_fraction < 1.0:
            raise ValueError(f"EnsembleConfig.valid_fraction must lie in (0, 1), got {self.valid_fraction}")
        threshold_grid(self.grid_step)  # raises on a step that does not divide [0, 1]

    @property
    def grid(self) -> torch.Tensor:
        """``(G,)`` float64: the threshold grid."""
        return threshold_grid(self.grid_step)


def paper_scores(pred: torch.Tensor, truth: torch.Tensor) -> dict[str, float]:
    """The paper's pooled convention over every image, and per-image scores over the images with an object.

    Args:
        pred: ``(N, H, W)`` bool predicted masks.
        truth: ``(N, H, W)`` bool true masks (some may be empty).

    Returns:
        ``dsc_paper`` and ``miou_fg_bg`` (pixels pooled over all N images, background included);
        ``dice``, ``iou``, ``precision``, ``recall`` (per-image means over the images whose true
        mask is not empty).

    Example:
        >>> t = torch.zeros(2, 2, 2, dtype=torch.bool); t[0, 0, 0] = True
        >>> s = paper_scores(t.clone(), t)
        >>> s["dice"], s["dsc_paper"]
        (1.0, 1.0)
    """
    obj = truth.flatten(1).any(1)
    allc = metrics.scores_from_counts(metrics.confusion(pred, truth))
    pos = metrics.scores_from_counts(metrics.confusion(pred[obj], truth[obj]))
    return {"dsc_paper": allc["dsc_paper"], "miou_fg_bg": allc["miou_fg_bg"], "dice": pos["dice"],
            "iou": pos["iou"], "precision": pos["precision"], "recall": pos["recall"]}


@dataclass
class EnsembleSplit:
    """What :func:`ensemble_on_split` found and scored.

    Attributes:
        searches: ``{method: GridSearch}`` chosen on the fit part: one per single model (``"model A"``
            ...; thresholds of one map) and one per op (thresholds of every map).
        masks: ``{method: (N_test, H, W) bool}`` test masks, the baselines included.
        rows: one record per method (:func:`method_order`): ``method``, the :data:`KEYS`,
            ``thresholds`` (empty for baselines) and ``train_score`` (the search's score on the fit
            part; None for baselines).
    """

    searches: dict[str, GridSearch]
    masks: dict[str, torch.Tensor]
    rows: list[dict]


def ensemble_on_split(
    maps_fit: torch.Tensor,
    truth_fit: torch.Tensor,
    maps_test: torch.Tensor,
    truth_test: torch.Tensor,
    *,
    ops: Sequence[CombineOp] = OPS,
    grid: torch.Tensor | Sequence[float] | None = None,
    metric: ThresholdMetric = "dsc_paper",
    names: Sequence[str] | None = None,
    with_baselines: bool = True,
) -> EnsembleSplit:
    """Choose every threshold on the fit part, apply it to the test part, score it.

    Each model alone gets its best threshold (:func:`~wsslib.evaluate.thresholds.search_grid` on
    its own map), every op its best threshold tuple, on the same grid with the same metric (ties:
    the lowest thresholds). The baselines are **Empty** (all background) and a **centre prior**
    (a centred ellipse of the fit part's mean object share).

    Args:
        maps_fit: ``(M, N_fit, H, W)`` float maps in [0, 1] of the M models on the fit part.
        truth_fit: ``(N_fit, H, W)`` bool true masks of the fit part.
        maps_test: ``(M, N_test, H, W)``; truth_test: ``(N_test, H, W)``.
        ops: the combination ops.
        grid: thresholds (default ``0, 0.1, ..., 1``).
        metric: what the search maximises.
        names: the table name of each model (default ``model A``, ``model B``, ...).
        with_baselines: add the Empty and centre-prior rows.

    Returns:
        :class:`EnsembleSplit`.

    Raises:
        ShapeError: maps and masks that do not match. ValueError: unknown op or metric; names of
        the wrong length. DataError: the metric is undefined on the fit part.
    """
    if maps_fit.dim() != 4 or maps_test.dim() != 4 or maps_fit.shape[0] != maps_test.shape[0]:
        raise ValueError(f"maps_fit and maps_test must be (M, N, H, W) with the same M, got "
                         f"{tuple(maps_fit.shape)} and {tuple(maps_test.shape)}")
    n_models = maps_fit.shape[0]
    names = list(names) if names is not None else role_names(n_models)
    if len(names) != n_models:
        raise ValueError(f"names: one per model ({n_models}), got {names}")
    grid = threshold_grid() if grid is None else grid
    truth_fit, truth_test = truth_fit.bool(), truth_test.bool()
    searches = {name: search_grid(maps_fit[j : j + 1], truth_fit, "or", grid, metric)["or"]
                for j, name in enumerate(names)}
    searches.update(search_grid(maps_fit, truth_fit, tuple(ops), grid, metric))
    n, h, w = truth_test.shape
    masks: dict[str, torch.Tensor] = {}
    if with_baselines:
        share = baselines.mean_foreground_share(truth_fit)
        masks["Empty"] = baselines.empty_masks(n, h, w)
        masks["centre prior"] = baselines.centre_prior(h, w, share).expand(n, h, w)
    for j, name in enumerate(names):
        masks[name] = combine_maps(maps_test[j : j + 1], searches[name].thresholds, "or")
    for op in ops:
        masks[op] = combine_maps(maps_test, searches[op].thresholds, op)
    rows = []
    for method, pred in masks.items():
        s = searches.get(method)
        rows.append({"method": method, **paper_scores(pred, truth_test),
                     "thresholds": list(s.thresholds) if s else [], "train_score": s.score if s else None})
    return EnsembleSplit(searches=searches, masks=masks, rows=rows)


@dataclass
class EnsembleCV:
    """What :func:`cross_validate_ensembles` measured.

    Attributes:
        folds: one row per (method, fold): :data:`KEYS`, ``thresholds``, ``train_score``, ``fold``.
        summary: one row per method (:func:`method_order`): ``method``, ``source`` (``"this run"``),
            ``backbone``, each key's mean over folds and ``<key>_sd`` (sample sd), and
            ``thresholds_per_fold``.
        classification: one row per (model, fold): ``method``, ``backbone``, ``fold``,
            ``best_epoch``, ``accuracy`` on the held-out fold.
        grid: ``(G,)`` float64 thresholds.
        grid_scores: ``{op: (n_folds, G, ..., G)}`` the training-part score of every cell per fold.
        chosen: ``{op: [cell index per fold]}``.
        fold_of: ``(N,)`` int64 fold of every image.
        grouped: whether the folds were grouped by patient.
        metric: the selection metric (the key of :meth:`grid_records`).
        examples: up to 5 held-out images of fold 0 that hold an object: ``images`` (n, 3, H, W),
            ``truth`` (n, H, W), ``cam_a`` / ``cam_b`` (n, H, W), ``mask_a`` and ``mask_and`` (n, H, W).
        seconds: wall time.
    """

    folds: list[dict]
    summary: list[dict]
    classification: list[dict]
    grid: torch.Tensor
    grid_scores: dict[str, torch.Tensor]
    chosen: dict[str, list[tuple[int, ...]]]
    fold_of: torch.Tensor
    grouped: bool
    metric: str = "dsc_paper"
    examples: dict[str, torch.Tensor] = field(default_factory=dict)
    seconds: float = 0.0

    def grid_records(self) -> list[dict]:
        """The fold-mean grid of two models as records: ``method`` (the op), ``threshold_a``,
        ``threshold_b`` and the selection metric (keyed by its name)."""
        g = self.grid.tolist()
        out = []
        for op, s in self.grid_scores.items():
            mean = s.mean(0)
            if mean.dim() != 2:
                continue
            out += [{"method": op, "threshold_a": ta, "threshold_b": tb, self.metric: float(mean[i, j])}
                    for i, ta in enumerate(g) for j, tb in enumerate(g)]
        return out


def _summarise(fold_rows: list[dict], order: list[str], backbones: dict[str, str]) -> list[dict]:
    out = []
    for method in order:
        rs = [r for r in fold_rows if r["method"] == method]
        row: dict = {"method": method, "source": "this run", "backbone": backbones.get(method)}
        for key in KEYS:
            v = torch.tensor([float(r[key]) for r in rs], dtype=torch.float64)
            row[key] = float(v.nanmean()) if len(v) else float("nan")
            ok = v[~v.isnan()]
            row[key + "_sd"] = float(ok.std()) if len(ok) > 1 else float("nan")
        row["thresholds_per_fold"] = [r["thresholds"] for r in rs]
        out.append(row)
    return out


def cross_validate_ensembles(
    config: EnsembleConfig,
    data: TensorBatch,
    *,
    seed: int = 0,
    device: str | torch.device = "auto",
    progress: bool = True,
) -> EnsembleCV:
    """EnsembleCAM's k-fold protocol: train, explain, search thresholds, score: fold by fold.

    In fold ``k`` the models are trained on the other folds (``valid_fraction`` of them held aside
    for the validation loss that picks the kept epoch; model ``j`` seeded ``seed + 100 k + j``),
    the CAM of class 1 is taken on EVERY image (images without an object get a CAM too, as in the
    paper), and :func:`ensemble_on_split` chooses the thresholds on the training part and scores
    fold ``k``. The folds are stratified by label (``seed``) and grouped by patient where the
    ids name patients.

    Args:
        config: the protocol (:class:`EnsembleConfig`).
        data: every image: ``images`` (N, 3, S, S) in [0, 1], ``labels`` (N,), ``masks`` (N, S, S)
            (all False on images without an object), ``ids`` (used for patient groups).
        seed: folds, model initialisation and training.
        device: where to train and explain.
        progress: a line per fold (fastai's per-epoch bars stay off: 2 k trainings).

    Returns:
        :class:`EnsembleCV`.

    Raises:
        ValueError: data without masks, or too few images / patients for ``n_folds``.
    """
    if data.masks is None:
        raise ValueError("cross_validate_ensembles: data.masks is None; the protocol scores masks")
    t0 = time.perf_counter()
    groups = patient_groups(data.ids) if config.group_by_patient else None
    if groups is not None:
        fold_of = stratified_group_folds(data.labels, groups, config.n_folds, seed)
    else:
        fold_of = stratified_folds(data.labels, config.n_folds, seed)
    grid = config.grid
    roles = role_names(len(config.models))
    backbones = dict(zip(roles, (s.title for s in config.models)))
    truth = data.masks.bool()
    fold_rows: list[dict] = []
    cls_rows: list[dict] = []
    grid_scores: dict[str, list[torch.Tensor]] = {op: [] for op in config.ops}
    chosen: dict[str, list[tuple[int, ...]]] = {op: [] for op in config.ops}
    examples: dict[str, torch.Tensor] = {}
    for k in range(config.n_folds):
        tr, te = torch.nonzero(fold_of != k).flatten(), torch.nonzero(fold_of == k).flatten()
        perm = tr[torch.randperm(len(tr), generator=torch.Generator().manual_seed(seed + k))]
        n_val = max(2, int(config.valid_fraction * len(perm)))
        fit, val = data.subset(perm[n_val:]), data.subset(perm[:n_val])
        maps = []
        for j, (role, spec) in enumerate(zip(roles, config.models)):
            res = fit_classifier(spec, fit, val, seed=seed + 100 * k + j, device=device, progress=False)
            logits = predict_logits(res.model, data.images[te])
            cls_rows.append({"method": role, "backbone": spec.title, "fold": k, "best_epoch": res.best_epoch,
                             "accuracy": metrics.accuracy(logits.argmax(1), data.labels[te])})
            maps.append(cams.compute_cams(res.model, data.images, method=config.cam_method, targets=1,
                                          batch_size=config.cam_batch_size).cpu())
        maps_all = torch.stack(maps)  # (M, N, H, W)
        split = ensemble_on_split(maps_all[:, tr], truth[tr], maps_all[:, te], truth[te], ops=config.ops,
                                  grid=grid, metric=config.select_metric, names=roles)
        fold_rows += [{**r, "fold": k} for r in split.rows]
        for op in config.ops:
            grid_scores[op].append(split.searches[op].scores)
            chosen[op].append(split.searches[op].index)
        if not examples:
            idx = te[truth[te].flatten(1).any(1)][:5]
            pos = torch.searchsorted(te, idx)  # rows of the test part
            examples = {"images": data.images[idx], "truth": truth[idx], "cam_a": maps_all[0, idx],
                        "cam_b": maps_all[1, idx], "mask_a": split.masks[roles[0]][pos]}
            if "and" in split.masks:
                examples["mask_and"] = split.masks["and"][pos]
        if progress:
            accs = ", ".join(f"{r['method']} {r['accuracy']:.3f}" for r in cls_rows[-len(roles):])
            print(f"fold {k}: accuracy {accs} ({time.perf_counter() - t0:.0f} s)")
    return EnsembleCV(
        folds=fold_rows,
        summary=_summarise(fold_rows, method_order(len(roles), config.ops), backbones),
        classification=cls_rows, grid=grid,
        grid_scores={op: torch.stack(v) for op, v in grid_scores.items()},
        chosen=chosen, fold_of=fold_of, grouped=groups is not None, metric=config.select_metric, examples=examples,
        seconds=time.perf_counter() - t0,
    )
