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
``theta = 0.1``), the same convention as :func:`wsslib.thresholds.binarize`.

Fusion. The paper intersects the agreeing models' binary masks. For the ablation, every fusion
here is written as "a fused map, then one threshold", which is exact for strict thresholds:

* ``"intersection"`` (paper): ``min_i S_i``   (``min > t`` iff every ``S_i > t``);
* ``"union"``: ``max_i S_i``                    (``max > t`` iff some ``S_i > t``);
* ``"majority"``: the ``(n // 2 + 1)``-th largest of the ``n`` agreeing maps (it is ``> t`` iff
  more than half of the binary masks are on; with 2 agreeing models this is the intersection);
* ``"mean"``: the mean of the agreeing maps, then thresholded (soft voting).

Because of that, the one map threshold ``t`` is chosen like any CAM threshold, with
:func:`wsslib.thresholds.select_threshold` on the fused maps of **validation** images
(:func:`select_aax_threshold`).

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
from collections.abc import Sequence
from enum import IntEnum
from typing import Literal, NamedTuple, get_args

import torch
from torch import nn

from wsslib.core.errors import DataError, ShapeError
from wsslib.explain.inference import predict_explain
from wsslib.evaluate.metrics import as_bool_mask, segmentation_scores
from wsslib.evaluate.thresholds import ThresholdMetric, ThresholdResult, binarize, select_threshold
from wsslib.core.utils import check_shape

__all__ = [
    "DECISION_NAMES",
    "FUSIONS",
    "AAXResult",
    "Decision",
    "Decisions",
    "EnsembleOutputs",
    "Fusion",
    "aax",
    "decide",
    "decision_scores",
    "explain_ensemble",
    "fuse_maps",
    "select_aax_threshold",
    "single_model_decisions",
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
        metric, grid: passed to :func:`wsslib.thresholds.select_threshold`.

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
    outputs are reproducible. Uses :func:`wsslib.inference.predict_explain`.

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
