"""The AAX decision protocol (Nasir et al., arXiv 2502.17824, Algorithm 1) on batches.

An ensemble of ``M`` classifiers looks at ``B`` images. Model ``i`` gives, per image, the mean
probability of "Diseased" ``p_i`` and its spread ``u_i`` over K Monte Carlo dropout passes, and
a saliency map ``S_i`` (XGrad-CAM in the paper). For every image:

1. **Flag** for expert review if ``#{i : u_i > theta} >= min_uncertain`` (paper: 2 of 3).
2. Else **Diseased** if ``#{i : p_i > p_cut and u_i < theta} >= min_votes`` (paper: p_cut 0.5,
   2 of 3); those models are the *agreeing* models, and the image's mask is the intersection of
   their saliency maps, each thresholded: ``mask = AND_i (S_i > t)``.
3. Else **Healthy** (no mask).

The paper's inequalities are kept exactly, strict on both sides of ``theta``:

* ``u_i == theta`` makes model ``i`` neither *uncertain* (it does not count towards a flag) nor
  *confident* (it cannot vote Diseased). Such a model is simply ignored for this image.
* ``p_i == p_cut`` is not a Diseased vote.

``theta`` and ``p_cut`` are compared in the dtype of ``u`` and ``p`` (a float32 ``u`` of 0.1 equals
``theta = 0.1``), the same convention as :func:`wsslib.evaluate.thresholds.binarize`.

Fusion. The paper intersects the agreeing models' binary masks. For the ablation, every fusion
here is written as "a fused map, then one threshold", which is exact for strict thresholds:

* ``"intersection"`` (paper): ``min_i S_i``   (``min > t`` iff every ``S_i > t``);
* ``"union"``: ``max_i S_i``                    (``max > t`` iff some ``S_i > t``);
* ``"majority"``: the ``(n // 2 + 1)``-th largest of the ``n`` agreeing maps (it is ``> t`` iff
  more than half of the binary masks are on; with 2 agreeing models this is the intersection);
* ``"mean"``: the mean of the agreeing maps, then thresholded (soft voting).

Because of that, the one map threshold ``t`` is chosen like any CAM threshold, with
:func:`wsslib.evaluate.thresholds.select_threshold` on the fused maps of **validation** images
(:func:`select_aax_threshold`).

The protocol as an experiment (notebook 04, and the AAX family of the summary notebook 05):
:class:`AAXConfig` holds every setting; :func:`train_members` trains the members
(:class:`~wsslib.models.training.ClassifierSpec` s through ``fit_classifier``, fastai) and
explains them (:func:`explain_ensemble`); :func:`evaluate_aax` takes already explained splits
(it trains nothing) and returns every table (:class:`AAXEvaluation`): per-member and fused
thresholds chosen on validation (with one fallback rule, recorded), the main table, the theta
sweep with its validation cost and suggested theta, the fusion comparison and the OOD table.
:func:`swap_member` replaces one member (the ViT ablation) and the same :func:`evaluate_aax`
scores the new ensemble.

Example:
    >>> p = torch.tensor([[0.9, 0.9, 0.2], [0.8, 0.3, 0.1], [0.7, 0.9, 0.3]])   # (M=3, B=3)
    >>> u = torch.tensor([[0.01, 0.20, 0.0], [0.02, 0.30, 0.0], [0.50, 0.01, 0.0]])
    >>> d = decide(p, u)
    >>> [Decision(c).name for c in d.decision.tolist()]
    ['DISEASED', 'FLAGGED', 'HEALTHY']
    >>> d.agree[:, 0].tolist()     # model 3 is uncertain on image 1, so only models 1 and 2 agree
    [True, True, False]
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Literal, NamedTuple, get_args

import torch
from torch import nn

from wsslib.core.errors import DataError, ShapeError
from wsslib.core.utils import check_shape
from wsslib.data.base import TensorBatch, load_splits
from wsslib.evaluate.baselines import centre_prior, mean_foreground_share
from wsslib.evaluate.metrics import as_bool_mask, segmentation_scores
from wsslib.evaluate.thresholds import ThresholdMetric, ThresholdResult, binarize, select_threshold
from wsslib.explain.inference import predict_explain
from wsslib.models.training import ClassifierSpec, fit_classifier

__all__ = [
    "DECISION_NAMES",
    "FUSIONS",
    "THETA_GRID",
    "AAXConfig",
    "AAXEvaluation",
    "AAXMembers",
    "AAXResult",
    "Decision",
    "Decisions",
    "EnsembleOutputs",
    "Fusion",
    "aax",
    "decide",
    "decision_scores",
    "evaluate_aax",
    "explain_ensemble",
    "explain_splits",
    "fuse_maps",
    "load_aax_splits",
    "select_aax_threshold",
    "single_model_decisions",
    "swap_member",
    "train_members",
]


class Decision(IntEnum):
    """Per-image outcome of the protocol. HEALTHY and DISEASED equal the image labels 0 and 1."""

    HEALTHY = 0
    DISEASED = 1
    FLAGGED = 2


DECISION_NAMES: tuple[str, ...] = tuple(d.name.lower() for d in Decision)
"""``("healthy", "diseased", "flagged")``: ``DECISION_NAMES[code]`` names a decision code."""

Fusion = Literal["intersection", "union", "majority", "mean"]
FUSIONS: tuple[str, ...] = get_args(Fusion)


class Decisions(NamedTuple):
    """What :func:`decide` returns.

    Attributes:
        decision: ``(B,)`` int64 :class:`Decision` codes (0 healthy, 1 diseased, 2 flagged).
        agree: ``(M, B)`` bool, ``p > p_cut and u < theta``: the models voting Diseased. Their
            count decides step 2 even on flagged images (where it is then ignored).
        uncertain: ``(M, B)`` bool, ``u > theta``.
    """

    decision: torch.Tensor
    agree: torch.Tensor
    uncertain: torch.Tensor


class AAXResult(NamedTuple):
    """What :func:`aax` returns.

    Attributes:
        decision: ``(B,)`` int64 :class:`Decision` codes.
        agree: ``(M, B)`` bool, the agreeing (confident Diseased) models.
        uncertain: ``(M, B)`` bool, ``u > theta``.
        fused: ``(B, H, W)`` float, the fused map of the agreeing models on images decided
            Diseased, zeros elsewhere.
        masks: ``(B, H, W)`` bool, ``fused > threshold`` on Diseased images, empty elsewhere.
    """

    decision: torch.Tensor
    agree: torch.Tensor
    uncertain: torch.Tensor
    fused: torch.Tensor
    masks: torch.Tensor


def _check_pu(p: torch.Tensor, u: torch.Tensor) -> None:
    check_shape("p", p, (None, None))
    check_shape("u", u, (p.shape[0], p.shape[1]))
    for name, t in (("p", p), ("u", u)):
        if not t.is_floating_point():
            raise ShapeError(f"{name}: expected a float tensor, got dtype {t.dtype} with shape {tuple(t.shape)}")
        if t.numel() and bool(torch.isnan(t).any()):
            m, b = (int(i) for i in torch.nonzero(torch.isnan(t))[0])
            raise DataError(f"{name}: NaN for model {m}, image {b}; the protocol needs finite values")
    if u.numel() and bool((u < 0).any()):
        m, b = (int(i) for i in torch.nonzero(u < 0)[0])
        raise DataError(f"u: a standard deviation cannot be negative, got {float(u[m, b])} for model {m}, image {b}")


def _check_count(name: str, value: int) -> int:
    if int(value) != value or int(value) < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def decide(
    p: torch.Tensor,
    u: torch.Tensor,
    *,
    theta: float = 0.1,
    p_cut: float = 0.5,
    min_votes: int = 2,
    min_uncertain: int = 2,
) -> Decisions:
    """Steps 1-3 of the protocol (decisions only, no masks).

    Args:
        p: ``(M, B)`` float, mean P(Diseased) of each model over its MC passes.
        u: ``(M, B)`` float >= 0, the standard deviation over the passes.
        theta: uncertainty threshold (paper 0.1). Flagging uses ``u > theta``, voting ``u < theta``.
        p_cut: a model votes Diseased when ``p > p_cut`` (paper 0.5).
        min_votes: agreeing models needed for Diseased (paper 2).
        min_uncertain: uncertain models needed for a flag (paper 2).

    Returns:
        :class:`Decisions` ``(decision (B,), agree (M, B), uncertain (M, B))`` on ``p``'s device.

    Raises:
        ShapeError: ``p``, ``u`` not 2-D float tensors of one shape.
        DataError: NaN, or a negative ``u``.
        ValueError: a count below 1.

    Example:
        >>> d = decide(torch.tensor([[0.9], [0.9], [0.9]]), torch.tensor([[0.1], [0.2], [0.0]]))
        >>> d.decision.tolist(), d.uncertain[:, 0].tolist(), d.agree[:, 0].tolist()
        ([0], [False, True, False], [False, False, True])
    """
    _check_pu(p, u)
    min_votes = _check_count("min_votes", min_votes)
    min_uncertain = _check_count("min_uncertain", min_uncertain)
    th = torch.as_tensor(theta, dtype=u.dtype, device=u.device)
    pc = torch.as_tensor(p_cut, dtype=p.dtype, device=p.device)
    uncertain = u > th
    agree = (p > pc) & (u < th)
    flagged = uncertain.sum(0) >= min_uncertain
    diseased = (agree.sum(0) >= min_votes) & ~flagged
    decision = torch.full((p.shape[1],), int(Decision.HEALTHY), dtype=torch.int64, device=p.device)
    decision[diseased] = int(Decision.DISEASED)
    decision[flagged] = int(Decision.FLAGGED)
    return Decisions(decision, agree, uncertain)


def fuse_maps(maps: torch.Tensor, agree: torch.Tensor, fusion: Fusion = "intersection") -> torch.Tensor:
    """Fuse, per image, the maps of the models selected in ``agree`` into one map.

    Args:
        maps: ``(M, B, H, W)`` float saliency maps (normally in [0, 1]).
        agree: ``(M, B)`` bool, which models take part for each image.
        fusion: ``"intersection"`` (min), ``"union"`` (max), ``"majority"`` (the
            ``n // 2 + 1``-th largest of the ``n`` selected maps) or ``"mean"``; see the module doc
            for why ``fused > t`` is the thresholded-masks rule of each.

    Returns:
        ``(B, H, W)`` in ``maps``' dtype; all zeros for an image with no selected model.

    Raises:
        ShapeError: bad shapes or dtypes. ValueError: unknown fusion.

    Example:
        >>> maps = torch.tensor([0.2, 0.6, 0.9]).view(3, 1, 1, 1)
        >>> agree = torch.tensor([[True], [True], [True]])
        >>> [round(fuse_maps(maps, agree, f).item(), 2) for f in ("intersection", "union", "majority", "mean")]
        [0.2, 0.9, 0.6, 0.57]
    """
    if fusion not in FUSIONS:
        raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
    check_shape("maps", maps, (None, None, None, None))
    check_shape("agree", agree, (maps.shape[0], maps.shape[1]))
    if not maps.is_floating_point():
        raise ShapeError(f"maps: expected a float tensor, got dtype {maps.dtype} with shape {tuple(maps.shape)}")
    if agree.dtype != torch.bool:
        raise ShapeError(f"agree: expected a bool tensor, got dtype {agree.dtype}")
    sel = agree.to(maps.device)[..., None, None]  # (M, B, 1, 1)
    n = sel.sum(0)  # (B, 1, 1)
    if fusion == "intersection":
        fused = torch.where(sel, maps, torch.full_like(maps, math.inf)).amin(0)
    elif fusion == "union":
        fused = torch.where(sel, maps, torch.full_like(maps, -math.inf)).amax(0)
    elif fusion == "mean":
        fused = torch.where(sel, maps, torch.zeros_like(maps)).sum(0) / n.clamp_min(1).to(maps.dtype)
    else:  # majority: the (n // 2 + 1)-th largest selected value
        ranked = torch.where(sel, maps, torch.full_like(maps, -math.inf)).sort(dim=0, descending=True).values
        k = (n // 2).clamp_max(maps.shape[0] - 1)  # 0-based rank, (B, 1, 1)
        fused = ranked.gather(0, k.expand(1, *maps.shape[1:])).squeeze(0)
    return torch.where(n > 0, fused, torch.zeros_like(fused))


def aax(
    p: torch.Tensor,
    u: torch.Tensor,
    maps: torch.Tensor,
    *,
    threshold: float,
    theta: float = 0.1,
    p_cut: float = 0.5,
    min_votes: int = 2,
    min_uncertain: int = 2,
    fusion: Fusion = "intersection",
) -> AAXResult:
    """The whole protocol: decisions, agreeing models, and masks of the Diseased images.

    Args:
        p, u: ``(M, B)`` float, see :func:`decide`.
        maps: ``(M, B, H, W)`` float saliency maps in [0, 1] (model ``i``'s map of image ``b``).
        threshold: map threshold ``t``: mask ``= fused > t`` (choose it with
            :func:`select_aax_threshold` on validation data).
        theta, p_cut, min_votes, min_uncertain: see :func:`decide`.
        fusion: see :func:`fuse_maps` (paper: ``"intersection"``).

    Returns:
        :class:`AAXResult` ``(decision (B,), agree (M, B), uncertain (M, B), fused (B, H, W),
        masks (B, H, W) bool)``. Masks are empty on Healthy and Flagged images.

    Example:
        >>> p = torch.tensor([[0.9], [0.8], [0.1]]); u = torch.zeros(3, 1)
        >>> maps = torch.tensor([[0.9, 0.7], [0.8, 0.2], [0.9, 0.9]]).view(3, 1, 1, 2)
        >>> r = aax(p, u, maps, threshold=0.5)
        >>> r.decision.tolist(), r.masks.int().tolist()
        ([1], [[[1, 0]]])
    """
    d = decide(p, u, theta=theta, p_cut=p_cut, min_votes=min_votes, min_uncertain=min_uncertain)
    check_shape("maps", maps, (p.shape[0], p.shape[1], None, None))
    diseased = (d.decision == int(Decision.DISEASED)).to(maps.device)
    fused = fuse_maps(maps, d.agree & diseased.to(d.agree.device), fusion)
    masks = binarize(fused, threshold) & diseased.view(-1, 1, 1)
    return AAXResult(d.decision, d.agree, d.uncertain, fused, masks)


def select_aax_threshold(
    p: torch.Tensor,
    u: torch.Tensor,
    maps: torch.Tensor,
    truth: torch.Tensor,
    *,
    theta: float = 0.1,
    p_cut: float = 0.5,
    min_votes: int = 2,
    min_uncertain: int = 2,
    fusion: Fusion = "intersection",
    metric: ThresholdMetric = "iou",
    grid: Sequence[float] | torch.Tensor | None = None,
) -> ThresholdResult:
    """Choose the map threshold on **validation** images: the best ``metric`` of the fused maps.

    Scored are the images that the protocol (with these settings) calls Diseased and whose true
    mask is not empty (true positives): the threshold is about localisation, not about which
    images get a mask.

    Args:
        p, u: ``(M, B)``; maps: ``(M, B, H, W)`` float; truth: ``(B, H, W)`` bool true masks.
        theta, p_cut, min_votes, min_uncertain, fusion: as in :func:`aax`.
        metric, grid: passed to :func:`wsslib.evaluate.thresholds.select_threshold`.

    Returns:
        :class:`wsslib.thresholds.ThresholdResult`.

    Raises:
        DataError: no validation image is a true positive of the protocol.
    """
    d = decide(p, u, theta=theta, p_cut=p_cut, min_votes=min_votes, min_uncertain=min_uncertain)
    check_shape("maps", maps, (p.shape[0], p.shape[1], None, None))
    target = as_bool_mask("truth", truth)
    check_shape("truth", target, (maps.shape[1], maps.shape[2], maps.shape[3]))
    keep = (d.decision == int(Decision.DISEASED)).to(target.device) & target.flatten(1).any(1)
    if not bool(keep.any()):
        raise DataError(
            f"select_aax_threshold: none of the {maps.shape[1]} validation images is called Diseased by the "
            f"protocol (theta={theta}, p_cut={p_cut}, min_votes={min_votes}) and holds a lesion, so there "
            "is nothing to choose a threshold on: use more validation images or better-trained models."
        )
    fused = fuse_maps(maps[:, keep.to(maps.device)], d.agree[:, keep.to(d.agree.device)], fusion)
    return select_threshold(fused, target[keep].to(fused.device), grid=grid, metric=metric)


def single_model_decisions(p: torch.Tensor, p_cut: float = 0.5) -> torch.Tensor:
    """One model on its own (no flags): ``p (B,)`` or ``(M, B)`` -> :class:`Decision` codes, ``p > p_cut``.

    Example:
        >>> single_model_decisions(torch.tensor([0.2, 0.5, 0.51])).tolist()
        [0, 0, 1]
    """
    if not p.is_floating_point():
        raise ShapeError(f"p: expected a float tensor, got dtype {p.dtype}")
    return (p > torch.as_tensor(p_cut, dtype=p.dtype, device=p.device)).to(torch.int64)


def decision_scores(
    decision: torch.Tensor,
    labels: torch.Tensor,
    masks: torch.Tensor | None = None,
    truth: torch.Tensor | None = None,
) -> dict[str, float | int]:
    """Accuracy (two ways), flag rate, and the masks' IoU/Dice on the images called Diseased.

    Args:
        decision: ``(B,)`` :class:`Decision` codes (a single model's decisions have no flags).
        labels: ``(B,)`` 0/1 true labels.
        masks: ``(B, H, W)`` bool predicted masks (only those of images called Diseased are used).
        truth: ``(B, H, W)`` bool true masks (empty for healthy images).

    Returns:
        dict with

        * ``accuracy``: on the non-flagged images (NaN if all are flagged);
        * ``accuracy_flagged_as_errors``: correct non-flagged images / all images;
        * ``flag_rate``, ``n_images``, ``n_flagged``, ``n_diseased`` (called Diseased);
        * ``sensitivity``, ``specificity``: on the non-flagged images;
        * with masks: ``iou``, ``dice`` (per-image means over the images called Diseased, as the
          paper scores; a false positive with a mask scores 0), ``n_seg``, and ``iou_tp``,
          ``dice_tp``, ``n_seg_tp`` over the true positives only.

    Example:
        >>> s = decision_scores(torch.tensor([1, 0, 2, 1]), torch.tensor([1, 0, 1, 0]))
        >>> round(s["accuracy"], 3), s["accuracy_flagged_as_errors"], s["flag_rate"]
        (0.667, 0.5, 0.25)
    """
    check_shape("decision", decision, (None,))
    check_shape("labels", labels, (decision.shape[0],))
    labels = labels.to(decision.device).long()
    if labels.numel() and bool(((labels != 0) & (labels != 1)).any()):
        raise DataError(f"labels: expected 0/1 labels, got the values {sorted(set(labels.tolist()))}")
    if decision.numel() and bool(((decision < 0) | (decision > int(Decision.FLAGGED))).any()):
        raise DataError(f"decision: expected codes 0, 1, 2, got {sorted(set(decision.tolist()))}")
    n = int(decision.numel())
    flagged = decision == int(Decision.FLAGGED)
    kept = ~flagged
    diseased = decision == int(Decision.DISEASED)
    correct = kept & (decision == labels)
    n_kept = int(kept.sum())
    pos, neg = kept & (labels == 1), kept & (labels == 0)
    out: dict[str, float | int] = {
        "accuracy": float(correct.sum()) / n_kept if n_kept else math.nan,
        "accuracy_flagged_as_errors": float(correct.sum()) / n if n else math.nan,
        "flag_rate": float(flagged.sum()) / n if n else math.nan,
        "sensitivity": float((pos & diseased).sum()) / int(pos.sum()) if int(pos.sum()) else math.nan,
        "specificity": float((neg & ~diseased).sum()) / int(neg.sum()) if int(neg.sum()) else math.nan,
        "n_images": n,
        "n_flagged": int(flagged.sum()),
        "n_diseased": int(diseased.sum()),
    }
    if masks is not None and truth is not None:
        pred, target = as_bool_mask("masks", masks), as_bool_mask("truth", truth)
        check_shape("masks", pred, (n, None, None))
        sel = diseased.to(pred.device)
        tp = sel & target.flatten(1).any(1)
        for suffix, idx in (("", sel), ("_tp", tp)):
            if bool(idx.any()):
                s = segmentation_scores(pred[idx], target[idx])
                out[f"iou{suffix}"], out[f"dice{suffix}"] = s["iou"], s["dice"]
            else:
                out[f"iou{suffix}"], out[f"dice{suffix}"] = math.nan, math.nan
            out[f"n_seg{suffix}"] = int(idx.sum())
    return out


class EnsembleOutputs(NamedTuple):
    """What :func:`explain_ensemble` returns (stacked over the ``M`` models).

    Attributes:
        p: ``(M, B)`` mean P(Diseased) over the K passes.
        u: ``(M, B)`` its standard deviation (population, divisor K).
        maps: ``(M, B, H, W)`` float32 CAMs in [0, 1] (class Diseased, dropout off).
    """

    p: torch.Tensor
    u: torch.Tensor
    maps: torch.Tensor


def explain_ensemble(
    models: Sequence[nn.Module],
    images: torch.Tensor,
    *,
    k: int = 20,
    method: str = "xgradcam",
    batch_size: int = 32,
    seed: int = 0,
) -> EnsembleOutputs:
    """Every model's MC-dropout ``p``, ``u`` and CAM from one backbone pass per model.

    Model ``i`` samples its dropout masks from ``torch.Generator().manual_seed(seed + i)``, so the
    outputs are reproducible. Uses :func:`wsslib.explain.inference.predict_explain`.

    Args:
        models: ``M`` :class:`wsslib.models.Classifier` (two classes, class 1 = Diseased).
        images: ``(B, 3, H, W)`` float in [0, 1] (on the CPU or the models' device).
        k: Monte Carlo dropout passes (paper: "XX"; default 20).
        method: ``"xgradcam"`` (paper), ``"gradcam"`` or ``"hirescam"``.
        batch_size: images per pass.
        seed: seed of the dropout masks.

    Returns:
        :class:`EnsembleOutputs` ``(p (M, B), u (M, B), maps (M, B, H, W))`` on ``images``' device.
    """
    if len(models) == 0:
        raise ValueError("explain_ensemble needs at least one model")
    outs = [
        predict_explain(m, images, k=k, method=method, targets=1, batch_size=batch_size,
                        generator=torch.Generator().manual_seed(int(seed) + i))
        for i, m in enumerate(models)
    ]
    return EnsembleOutputs(torch.stack([o.p for o in outs]), torch.stack([o.u for o in outs]),
                           torch.stack([o.cams for o in outs]))


# ---------------------------------------------------------------------------------- the protocol
#: The theta grid of the sensitivity sweep (the paper fixes theta = 0.1 without one).
THETA_GRID: tuple[float, ...] = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5)
_FALLBACK_NOTE = "fallback {t:g}: no validation image called Diseased"


@dataclass(frozen=True)
class AAXConfig:
    """Everything that decides how AAX is run and scored; defaults are the paper's where it gives one.

    Attributes:
        k: Monte Carlo dropout passes per image (paper: "XX").
        cam_method: the saliency map, ``"xgradcam"`` (paper), ``"gradcam"`` or ``"hirescam"``.
        theta: uncertainty threshold (paper 0.1); p_cut: a Diseased vote is ``p > p_cut`` (0.5).
        min_votes, min_uncertain: agreeing models for Diseased, uncertain models for a flag (2, 2).
        fusion: how the agreeing maps are fused (paper: ``"intersection"``), see :func:`fuse_maps`.
        threshold_metric: what the map thresholds maximise on the validation images.
        theta_grid: the thetas of the sensitivity sweep.
        review_cost: cost of one flagged image in units of one error (the theta suggestion).
        fallback_threshold: the map threshold used when no validation image can choose one (no
            validation image with a lesion is called Diseased); :class:`AAXEvaluation` records it.
        batch_size: images per explanation pass.
    """

    k: int = 20
    cam_method: str = "xgradcam"
    theta: float = 0.1
    p_cut: float = 0.5
    min_votes: int = 2
    min_uncertain: int = 2
    fusion: Fusion = "intersection"
    threshold_metric: ThresholdMetric = "iou"
    theta_grid: tuple[float, ...] = THETA_GRID
    review_cost: float = 0.5
    fallback_threshold: float = 0.5
    batch_size: int = 32

    def __post_init__(self) -> None:
        if self.fusion not in FUSIONS:
            raise ValueError(f"AAXConfig.fusion must be one of {FUSIONS}, got {self.fusion!r}")
        _check_count("AAXConfig.k", self.k)
        _check_count("AAXConfig.min_votes", self.min_votes)
        _check_count("AAXConfig.min_uncertain", self.min_uncertain)
        if not self.theta_grid or any(not math.isfinite(t) or t < 0 for t in self.theta_grid):
            raise ValueError(f"AAXConfig.theta_grid must be non-empty finite values >= 0, got {self.theta_grid!r}")
        if self.review_cost < 0:
            raise ValueError(f"AAXConfig.review_cost must be >= 0, got {self.review_cost!r}")
        object.__setattr__(self, "theta_grid", tuple(float(t) for t in self.theta_grid))

    @property
    def protocol(self) -> dict[str, float | int]:
        """The keyword arguments of :func:`decide` (``theta``, ``p_cut``, ``min_votes``, ``min_uncertain``)."""
        return {"theta": self.theta, "p_cut": self.p_cut, "min_votes": self.min_votes,
                "min_uncertain": self.min_uncertain}


@dataclass
class AAXMembers:
    """A trained ensemble and its explanations (what :func:`train_members` returns).

    Attributes:
        names: the ``M`` member names (table rows), in model order.
        models: the ``M`` trained classifiers (eval mode).
        outputs: ``{split: EnsembleOutputs}``: ``p``, ``u`` ``(M, B_split)`` and ``maps``
            ``(M, B_split, H, W)`` of every explained split.
        training: one record per trained model (``method``, ``epochs``, ``lr``, ``batch_size``,
            ``best_epoch``, ``valid_loss``, ``train_seconds``).
    """

    names: list[str]
    models: list[nn.Module]
    outputs: dict[str, EnsembleOutputs]
    training: list[dict] = field(default_factory=list)


@dataclass
class AAXEvaluation:
    """What :func:`evaluate_aax` returns: the protocol's decisions and every table of notebook 04.

    Attributes:
        config: the :class:`AAXConfig` used.
        names: the member names (with the evaluation's ``tag`` appended in the tables).
        thresholds: map threshold per member name and ``"AAX"``, chosen on validation.
        threshold_from: per name, ``"validation, N images"`` or the fallback note.
        result: :class:`AAXResult` on the test split (``config.theta``, ``config.fusion``).
        main: rows per member, ``AAX``, the plain vote, the centre prior on AAX's Diseased images,
            and the empty mask (keys of :func:`decision_scores` plus ``threshold``,
            ``threshold_from``, ``iou_on_aax_set``; the AAX row also ``ood_flag_rate`` when an
            ``ood`` split is given).
        theta_sweep: one row per ``config.theta_grid`` value: test scores, ``valid_flag_rate``,
            ``valid_error_rate``, ``valid_cost``, and ``ood_flag_rate`` with an ``ood`` split.
        theta_suggested: the theta of least validation cost (ties: fewer validation flags, then
            the larger theta).
        fusion: one row per fusion (its own validation threshold), same decisions.
        ood: the flag / Diseased / Healthy rates on the test and ``ood`` splits, with each
            member's mean ``u`` and share of ``u > theta`` (empty without an ``ood`` split).
        n_all_agree: test images called Diseased on which every member agrees.
    """

    config: AAXConfig
    names: list[str]
    thresholds: dict[str, float]
    threshold_from: dict[str, str]
    result: AAXResult
    main: list[dict]
    theta_sweep: list[dict]
    theta_suggested: float
    fusion: list[dict]
    ood: list[dict]
    n_all_agree: int

    @property
    def fallbacks(self) -> list[str]:
        """The names whose threshold is the fallback (no validation image could choose it)."""
        return [n for n, src in self.threshold_from.items() if src.startswith("fallback")]

    def row(self, method: str) -> dict:
        """The main-table row of ``method`` (``KeyError`` naming the rows if absent)."""
        for r in self.main:
            if r["method"] == method:
                return r
        raise KeyError(f"no row {method!r}; rows: {[r['method'] for r in self.main]}")

    def tables(self) -> dict[str, list[dict]]:
        """``main``, ``theta_sweep``, ``fusion`` and ``ood`` as lists of records."""
        return {"main": self.main, "theta_sweep": self.theta_sweep, "fusion": self.fusion, "ood": self.ood}


def load_aax_splits(
    dataset: str,
    *,
    root: str | Path | None = None,
    size: int = 64,
    n: int | None = None,
    n_ood: int = 150,
    seed: int = 0,
) -> dict[str, TensorBatch]:
    """``train``, ``valid``, ``test`` of ``dataset`` and an out-of-distribution ``ood`` split.

    The ``ood`` split is the synthetic data set's OOD family (striped background, star-shaped
    lesions), far out of the distribution of every data set here.

    Returns:
        ``{split: TensorBatch}``: images ``(N, 3, size, size)`` in [0, 1], labels ``(N,)``, masks
        ``(N, size, size)``.
    """
    if dataset == "synthetic":
        return load_splits("synthetic", ("train", "valid", "test", "ood"), size=size, n=n, seed=seed, n_ood=n_ood)
    data = load_splits(dataset, ("train", "valid", "test"), root=root, size=size, seed=seed)
    data["ood"] = load_splits("synthetic", ("ood",), size=size, seed=seed, n_ood=n_ood)["ood"]
    return data


def explain_splits(
    models: Sequence[nn.Module],
    data: Mapping[str, TensorBatch],
    config: AAXConfig,
    *,
    splits: Sequence[str] = ("valid", "test", "ood"),
    seed: int = 0,
) -> dict[str, EnsembleOutputs]:
    """:func:`explain_ensemble` of ``models`` on each of ``splits`` present in ``data``.

    Model ``i``'s dropout masks are seeded by ``seed + i`` on every split.

    Returns:
        ``{split: EnsembleOutputs}`` with ``p``, ``u`` ``(M, B)`` and ``maps`` ``(M, B, H, W)``.
    """
    return {s: explain_ensemble(models, data[s].images, k=config.k, method=config.cam_method,
                                batch_size=config.batch_size, seed=seed)
            for s in splits if s in data}


def _training_record(name: str, spec: ClassifierSpec, res) -> dict:
    h = res.history
    return {"method": name, "epochs": spec.train.epochs, "lr": spec.train.lr, "batch_size": spec.train.batch_size,
            "best_epoch": res.best_epoch, "valid_loss": h[res.best_epoch]["valid_loss"] if h else None,
            "train_seconds": res.seconds}


def train_members(
    specs: Sequence[ClassifierSpec],
    data: Mapping[str, TensorBatch],
    config: AAXConfig,
    *,
    seed: int = 0,
    device: str | torch.device = "auto",
    progress: bool = False,
    splits: Sequence[str] = ("valid", "test", "ood"),
) -> AAXMembers:
    """Train the ensemble's members on ``data["train"]`` (early stopping / kept epoch on
    ``data["valid"]``) and explain them on ``splits``.

    Member ``i`` is built and trained with seed ``seed + i``
    (:func:`wsslib.models.training.fit_classifier`), and its dropout masks are seeded by ``seed + i``.

    Args:
        specs: one :class:`~wsslib.models.training.ClassifierSpec` per member (``M >= 1``).
        data: ``{split: TensorBatch}`` with ``train`` and ``valid`` (images ``(N, 3, S, S)``,
            labels ``(N,)``) and the splits to explain.
        config: the :class:`AAXConfig` (its ``k``, ``cam_method`` and ``batch_size``).
        seed, device, progress: see :func:`~wsslib.models.training.fit_classifier`.
        splits: the splits to explain (those absent from ``data`` are skipped).

    Returns:
        :class:`AAXMembers`.
    """
    if not specs:
        raise ValueError("train_members needs at least one ClassifierSpec")
    for s in ("train", "valid"):
        if s not in data:
            raise DataError(f"train_members: data has no {s!r} split (it has {sorted(data)})")
    results = [fit_classifier(sp, data["train"], data["valid"], seed=seed + i, device=device, progress=progress)
               for i, sp in enumerate(specs)]
    names = [sp.title for sp in specs]
    models = [r.model for r in results]
    return AAXMembers(names, models, explain_splits(models, data, config, splits=splits, seed=seed),
                      [_training_record(n, sp, r) for n, sp, r in zip(names, specs, results)])


def swap_member(
    members: AAXMembers,
    replaces: str,
    spec: ClassifierSpec,
    data: Mapping[str, TensorBatch],
    config: AAXConfig,
    *,
    seed: int = 0,
    device: str | torch.device = "auto",
    progress: bool = False,
) -> AAXMembers:
    """The ensemble with member ``replaces`` swapped for a new model built from ``spec``.

    The new model takes the old one's position ``j``: it is trained with seed ``seed + j`` and
    its dropout masks are seeded by ``seed + j``; the other members' outputs are reused.

    Returns:
        :class:`AAXMembers` with the swapped names, models and outputs; ``training`` holds the new
        model's record only, its method ``"<name> (swap)"``.
    """
    if replaces not in members.names:
        raise ValueError(f"replaces={replaces!r} is not a member; members: {members.names}")
    j = members.names.index(replaces)
    res = fit_classifier(spec, data["train"], data["valid"], seed=seed + j, device=device, progress=progress)
    new = explain_splits([res.model], data, config, splits=list(members.outputs), seed=seed + j)

    def take(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.cat([a[:j], b, a[j + 1:]])

    outputs = {s: EnsembleOutputs(take(o.p, new[s].p), take(o.u, new[s].u), take(o.maps, new[s].maps))
               for s, o in members.outputs.items()}
    names = [spec.title if i == j else n for i, n in enumerate(members.names)]
    models = [res.model if i == j else m for i, m in enumerate(members.models)]
    return AAXMembers(names, models, outputs, [_training_record(f"{spec.title} (swap)", spec, res)])


def _threshold(o: EnsembleOutputs, truth: torch.Tensor, config: AAXConfig, **override) -> tuple[float, str]:
    """The map threshold chosen on validation outputs ``o``, or the config's fallback."""
    kw = {**config.protocol, "fusion": config.fusion, **override}
    try:
        r = select_aax_threshold(o.p, o.u, o.maps, truth, metric=config.threshold_metric, **kw)
    except DataError:
        return float(config.fallback_threshold), _FALLBACK_NOTE.format(t=config.fallback_threshold)
    d = decide(o.p, o.u, **{k: kw[k] for k in ("theta", "p_cut", "min_votes", "min_uncertain")})
    n = int(((d.decision == int(Decision.DISEASED)) & truth.flatten(1).any(1).to(d.decision.device)).sum())
    return float(r.threshold), f"validation, {n} images"


def _member_threshold(o: EnsembleOutputs, i: int, truth: torch.Tensor, config: AAXConfig) -> tuple[float, str]:
    """Member ``i`` alone is the protocol with one model, one vote and no uncertainty gate."""
    one = EnsembleOutputs(o.p[i:i + 1], o.u[i:i + 1], o.maps[i:i + 1])
    return _threshold(one, truth, config, theta=math.inf, min_votes=1, min_uncertain=1)


def _truth(data: Mapping[str, TensorBatch], split: str) -> torch.Tensor:
    b = data[split]
    if b.masks is None:
        raise DataError(f"evaluate_aax: the {split!r} split has no masks; AAX's maps are scored against them")
    return as_bool_mask(f"data[{split!r}].masks", b.masks)


def evaluate_aax(
    outputs_by_split: Mapping[str, EnsembleOutputs],
    data: Mapping[str, TensorBatch],
    names: Sequence[str],
    config: AAXConfig,
    *,
    tag: str = "",
    dataset: str = "",
) -> AAXEvaluation:
    """Score AAX and its members on already explained splits (nothing is trained here).

    Every map threshold (each member's own, AAX's at each theta and each fusion) is chosen on
    the ``valid`` split, on the images the protocol calls Diseased that hold a lesion (a member
    alone: its ``p > p_cut``); where there is none, ``config.fallback_threshold`` is used and
    recorded in ``threshold_from``. Everything is then scored on ``test``.

    Args:
        outputs_by_split: ``{split: EnsembleOutputs}`` with ``valid`` and ``test`` (and ``ood``
            for the out-of-distribution table): ``p``, ``u`` ``(M, B)``, ``maps``
            ``(M, B, H, W)`` in [0, 1], the models in the order of ``names``.
        data: ``{split: TensorBatch}`` with the same splits' ``labels`` ``(B,)`` and ``masks``
            ``(B, H, W)`` (empty for healthy images); ``train`` (else ``valid``) gives the
            centre prior's foreground share.
        names: the ``M`` member names.
        config: the :class:`AAXConfig`.
        tag: appended to every row name of the main table (e.g. ``" (ViT swap)"``).
        dataset: written into the main table's rows.

    Returns:
        :class:`AAXEvaluation`.

    Raises:
        DataError: a split missing, or outputs whose sizes do not match the data.

    Example:
        >>> from wsslib.data.base import TensorBatch
        >>> p = torch.tensor([[0.9, 0.2], [0.8, 0.1]]); u = torch.zeros(2, 2)
        >>> maps = torch.zeros(2, 2, 2, 2); maps[:, 0, 0] = 1.0
        >>> masks = torch.zeros(2, 2, 2, dtype=torch.bool); masks[0, 0] = True
        >>> batch = TensorBatch(torch.zeros(2, 3, 2, 2), torch.tensor([1, 0]), masks)
        >>> o = EnsembleOutputs(p, u, maps)
        >>> ev = evaluate_aax({"valid": o, "test": o}, {"valid": batch, "test": batch}, ["a", "b"], AAXConfig())
        >>> ev.row("AAX")["accuracy"], ev.row("AAX")["iou"], ev.threshold_from["AAX"]
        (1.0, 1.0, 'validation, 1 images')
    """
    for s in ("valid", "test"):
        if s not in outputs_by_split or s not in data:
            raise DataError(f"evaluate_aax needs the {s!r} split in outputs_by_split and data; got "
                            f"{sorted(outputs_by_split)} and {sorted(data)}")
    names = list(names)
    for s, o in outputs_by_split.items():
        if s in data and (o.p.shape[0] != len(names) or o.p.shape[1] != len(data[s].labels)):
            raise DataError(f"evaluate_aax: outputs of {s!r} are for {o.p.shape[0]} models x {o.p.shape[1]} images; "
                            f"expected {len(names)} models ({names}) x {len(data[s].labels)} images")
    ov, ot = outputs_by_split["valid"], outputs_by_split["test"]
    oo = outputs_by_split.get("ood") if "ood" in data else None
    v_truth, truth = _truth(data, "valid"), _truth(data, "test")
    labels = data["test"].labels
    proto, cfg = config.protocol, config

    # each member on its own, then AAX (thresholds on validation)
    ts, src = {}, {}
    for i, name in enumerate(names):
        ts[name], src[name] = _member_threshold(ov, i, v_truth, cfg)
    ts["AAX"], src["AAX"] = _threshold(ov, v_truth, cfg)
    res = aax(ot.p, ot.u, ot.maps, threshold=ts["AAX"], fusion=cfg.fusion, **proto)
    on_aax = res.decision == int(Decision.DISEASED)
    base = {"source": "this run", "dataset": dataset}
    main = []
    for i, name in enumerate(names):
        masks_i = binarize(ot.maps[i], ts[name])
        s = decision_scores(single_model_decisions(ot.p[i], cfg.p_cut), labels, masks_i, truth)
        same = decision_scores(on_aax.long(), labels, masks_i, truth)  # its masks on AAX's Diseased images
        main.append({"method": name + tag, **base, "threshold": ts[name], "threshold_from": src[name], **s,
                     "iou_on_aax_set": same["iou"]})
    s = decision_scores(res.decision, labels, res.masks, truth)
    aax_row = {"method": "AAX" + tag, **base, "threshold": ts["AAX"], "threshold_from": src["AAX"], **s,
               "iou_on_aax_set": s["iou"]}
    if oo is not None:
        aax_row["ood_flag_rate"] = _flag_rate(oo, data["ood"].labels, proto)
    main.append(aax_row)
    vote = decide(ot.p, ot.u, **{**proto, "theta": math.inf})
    main.append({"method": f"{cfg.min_votes}-of-{len(names)} vote, no uncertainty" + tag, **base,
                 **decision_scores(vote.decision, labels)})
    h, w = truth.shape[-2:]
    train_masks = _truth(data, "train" if "train" in data else "valid")
    n_on = int(on_aax.sum())
    prior = centre_prior(h, w, mean_foreground_share(train_masks)).expand(n_on, h, w)
    c = decision_scores(torch.ones(n_on, dtype=torch.long), labels[on_aax], prior, truth[on_aax])
    main.append({"method": "centre prior (on AAX's Diseased images)" + tag, **base, "iou": c["iou"], "dice": c["dice"],
                 "iou_on_aax_set": c["iou"], "n_seg": c["n_seg"]})
    main.append({"method": "empty mask" + tag, **base, "iou": 0.0, "dice": 0.0, "iou_on_aax_set": 0.0})

    sweep, theta_suggested = _theta_sweep(ov, ot, oo, data, v_truth, truth, cfg)
    fusion_rows = []
    for f in FUSIONS:
        t_f, src_f = _threshold(ov, v_truth, cfg, fusion=f)
        r_f = aax(ot.p, ot.u, ot.maps, threshold=t_f, fusion=f, **proto)
        s = decision_scores(r_f.decision, labels, r_f.masks, truth)
        area = float(r_f.masks[on_aax].float().mean()) if n_on else math.nan
        fusion_rows.append({"method": f, "threshold": t_f, "threshold_from": src_f, "iou": s["iou"], "dice": s["dice"],
                            "iou_tp": s["iou_tp"], "dice_tp": s["dice_tp"], "mask_share": area, "n_seg": s["n_seg"]})
    ood = [] if oo is None else [_ood_row("in-distribution (test)", ot, labels, names, cfg),
                                 _ood_row("out-of-distribution (synthetic ood)", oo, data["ood"].labels, names, cfg)]
    n_all_agree = int((res.agree.sum(0)[on_aax] == len(names)).sum())
    return AAXEvaluation(cfg, names, ts, src, res, main, sweep, theta_suggested, fusion_rows, ood, n_all_agree)


def _theta_sweep(ov, ot, oo, data, v_truth, truth, cfg: AAXConfig) -> tuple[list[dict], float]:
    """The test scores and validation cost at each theta of ``cfg.theta_grid``, and the suggested theta."""
    sweep = []
    for th in cfg.theta_grid:
        proto = {**cfg.protocol, "theta": th}
        t_th, _ = _threshold(ov, v_truth, cfg, theta=th)
        r = aax(ot.p, ot.u, ot.maps, threshold=t_th, fusion=cfg.fusion, **proto)
        s = decision_scores(r.decision, data["test"].labels, r.masks, truth)
        sv = decision_scores(decide(ov.p, ov.u, **proto).decision, data["valid"].labels)
        errors_v = 1.0 - sv["accuracy_flagged_as_errors"] - sv["flag_rate"]
        row = {"method": f"theta={th:g}", "theta": th, "threshold": t_th, **s, "valid_flag_rate": sv["flag_rate"],
               "valid_error_rate": errors_v, "valid_cost": errors_v + cfg.review_cost * sv["flag_rate"]}
        if oo is not None:
            row["ood_flag_rate"] = _flag_rate(oo, data["ood"].labels, proto)
        sweep.append(row)
    best = min(sweep, key=lambda r: (r["valid_cost"], r["valid_flag_rate"], -r["theta"]))
    return sweep, float(best["theta"])


def _flag_rate(o: EnsembleOutputs, labels: torch.Tensor, proto: Mapping[str, float | int]) -> float:
    """Share of the images of ``o`` (``p``, ``u`` ``(M, B)``) that the protocol ``proto`` flags."""
    return float(decision_scores(decide(o.p, o.u, **proto).decision, labels)["flag_rate"])


def _ood_row(name: str, o: EnsembleOutputs, labels: torch.Tensor, names: Sequence[str], cfg: AAXConfig) -> dict:
    """Decision rates of one split at ``cfg.theta``, with each member's mean ``u`` and share above theta."""
    d = decide(o.p, o.u, **cfg.protocol).decision
    s = decision_scores(d, labels)
    n = max(s["n_images"], 1)
    row = {"method": name, "n_images": s["n_images"], "flag_rate": s["flag_rate"],
           "diseased_rate": s["n_diseased"] / n,
           "healthy_rate": int((d == int(Decision.HEALTHY)).sum()) / n, "accuracy": s["accuracy"]}
    for i, member in enumerate(names):
        row[f"mean_u_{member}"] = float(o.u[i].mean())
        row[f"share_u_above_theta_{member}"] = float((o.u[i] > cfg.theta).float().mean())
    return row
