"""An out-of-distribution gate on the ensemble's pooled features (beyond the AAX paper).

The AAX protocol flags an image when its members are *uncertain* (MC dropout spread ``u``), but
a classifier can be confidently wrong far from its training data: a frame of another hospital,
a photo of a cat. The gate asks a second question, "does this image look like the training
images at all?", on each member's pooled backbone features ``z = model.embed(x)`` ``(B, C)``:

* **fit** (:func:`fit_gate`): the training images' features, L2-normalised, are the reference
  set; the score of an image is the Euclidean distance of its normalised features to the
  ``k``-th nearest reference (Sun et al., ICML 2022, "Out-of-distribution detection with deep
  nearest neighbors"). Chosen over a Mahalanobis distance because the reference sets here are
  small (hundreds of images) against 1280-dimensional features: a covariance would need heavy
  shrinkage, the k-NN distance needs none and makes no Gaussian assumption.
* **cut**: the ``quantile`` of the *validation* images' scores (default 0.95: about 5 % of
  in-distribution images are beyond it); training images are never used to set it (their own
  feature is in the reference set).
* **score / flag** (:meth:`OODGate.score`, :meth:`OODGate.flags`): ``score > cut``.

An ensemble has one gate per member (each stored in its member's checkpoint by ``wsslib
train``, :meth:`OODGate.to_dict`); an image is out of distribution when at least ``min_votes``
members' gates flag it (:func:`ensemble_flags`; default 1: any member). :func:`fit_member_gates`
sets the members' cuts *together*: at one quantile level of each member's validation scores,
the lowest level at which the ensemble rule flags at most ``1 - quantile`` of the validation
images, so the ensemble's in-distribution flag rate is the one asked for. Why "any member" and
not the paper's "2 of 3": members trained differently see different things; on notebook 04's
``cpu`` smoke ensemble, both rules calibrated so (none of the 18 validation images flagged), the
synthetic OOD family was flagged 100 % by "any" and 7 % by "2 of 3".

Example:
    >>> g = torch.Generator().manual_seed(0)
    >>> mu, shift = torch.zeros(8), torch.zeros(8)
    >>> mu[0], shift[1] = 4.0, 4.0     # in distribution around 4 e_0; out of it around 4 e_1
    >>> train, valid = torch.randn(200, 8, generator=g) + mu, torch.randn(50, 8, generator=g) + mu
    >>> gate = fit_gate(train, valid, k=5, quantile=0.95)
    >>> far = torch.randn(20, 8, generator=g) + shift
    >>> bool(gate.flags(far).all()), float(gate.flags(valid).float().mean()) <= 0.1
    (True, True)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from wsslib.core.errors import DataError, ShapeError
from wsslib.core.utils import check_shape

__all__ = ["OODGate", "ensemble_flags", "fit_gate", "fit_member_gates", "gate_flags", "gate_table", "pooled_features"]


def _normalise(features: torch.Tensor, name: str) -> torch.Tensor:
    check_shape(name, features, (None, None))
    if not features.is_floating_point():
        raise ShapeError(f"{name}: expected a float tensor, got dtype {features.dtype}")
    f = features.detach().float().cpu()
    if f.numel() and not bool(torch.isfinite(f).all()):
        raise DataError(f"{name}: features must be finite (got NaN or inf)")
    return nn.functional.normalize(f, dim=1)


@dataclass
class OODGate:
    """A fitted k-nearest-neighbour gate.

    Attributes:
        reference: ``(N, D)`` float32, the L2-normalised training features.
        k: the neighbour whose distance is the score (1 = nearest).
        cut: scores above it are out of distribution.
        quantile: the validation quantile ``cut`` was set at.
        valid_flag_rate: share of the validation images above ``cut``.
        min_votes: the ensemble rule the cut was set for (:func:`fit_member_gates`).
    """

    reference: torch.Tensor
    k: int
    cut: float
    quantile: float
    valid_flag_rate: float = math.nan
    min_votes: int = 1

    @property
    def dim(self) -> int:
        """``D``, the feature size the gate expects."""
        return int(self.reference.shape[1])

    def score(self, features: torch.Tensor, *, batch_size: int = 1024) -> torch.Tensor:
        """Distance of each image's normalised features to its ``k``-th nearest reference.

        Args:
            features: ``(B, D)`` float pooled features (not normalised: done here).
            batch_size: rows per distance block (memory ``batch_size x N``).

        Returns:
            ``(B,)`` float32 in [0, 2] on the CPU; larger = farther from the training images.

        Raises:
            ShapeError: ``features`` not ``(B, D)`` with the gate's ``D``.
        """
        f = _normalise(features, "features")
        if f.shape[1] != self.dim:
            raise ShapeError(f"features: expected {self.dim} features per image (the gate's), got {f.shape[1]}")
        if not len(f):
            return torch.empty(0)
        k = min(self.k, len(self.reference))
        out = [torch.cdist(block, self.reference).topk(k, dim=1, largest=False).values[:, -1]
               for block in f.split(batch_size)]
        return torch.cat(out)

    def flags(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, D)`` features -> ``(B,)`` bool, ``score > cut``."""
        return self.score(features) > self.cut

    def to_dict(self) -> dict[str, Any]:
        """Plain values and one float16 tensor: loadable with ``torch.load(weights_only=True)``
        (what ``wsslib train`` stores in each checkpoint's ``meta["ood"]``)."""
        return {"method": "knn", "k": int(self.k), "cut": float(self.cut), "quantile": float(self.quantile),
                "valid_flag_rate": float(self.valid_flag_rate), "min_votes": int(self.min_votes),
                "reference": self.reference.to(torch.float16)}

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "checkpoint") -> OODGate:
        """Inverse of :meth:`to_dict`.

        Raises:
            DataError: ``d`` lacks a field or holds another method (the message names ``where``).
        """
        try:
            if d["method"] != "knn":
                raise DataError(f"{where}: unknown out-of-distribution gate {d['method']!r} (this wsslib knows 'knn')")
            ref = torch.as_tensor(d["reference"]).float()
            check_shape(f"{where}: OOD reference", ref, (None, None))
            return cls(ref, int(d["k"]), float(d["cut"]), float(d["quantile"]),
                       float(d.get("valid_flag_rate", math.nan)), int(d.get("min_votes", 1)))
        except (KeyError, TypeError, ShapeError) as e:
            raise DataError(f"{where}: malformed out-of-distribution gate ({type(e).__name__}: {e})") from None


def fit_gate(
    train_features: torch.Tensor,
    valid_features: torch.Tensor,
    *,
    k: int = 5,
    quantile: float = 0.95,
    max_reference: int = 4096,
    seed: int = 0,
) -> OODGate:
    """Fit the gate on the training images' features; set its cut on the validation images'.

    Args:
        train_features: ``(N, D)`` float pooled features of the training images.
        valid_features: ``(V, D)`` float pooled features of the validation images (``V >= 1``).
        k: the neighbour whose distance is the score (``1 <= k``; capped at ``N``).
        quantile: the cut is this quantile of the validation scores, in (0, 1].
        max_reference: at most this many training features are kept (a seeded random subset
            above it, so checkpoints stay small).
        seed: seed of that subset (a local ``torch.Generator``; global state untouched).

    Returns:
        :class:`OODGate`.

    Raises:
        ShapeError: bad shapes; DataError: no training or validation features;
        ValueError: ``k`` or ``quantile`` out of range.
    """
    if int(k) < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if not 0.0 < float(quantile) <= 1.0:
        raise ValueError(f"quantile must be in (0, 1], got {quantile}")
    ref = _normalise(train_features, "train_features")
    if not len(ref):
        raise DataError("fit_gate: no training features")
    if len(valid_features) == 0:
        raise DataError("fit_gate: no validation features to set the cut on")
    if len(ref) > max_reference:
        idx = torch.randperm(len(ref), generator=torch.Generator().manual_seed(int(seed)))[:max_reference]
        ref = ref[idx.sort().values]
    gate = OODGate(ref, int(k), math.inf, float(quantile))
    scores = gate.score(valid_features)
    gate.cut = float(torch.quantile(scores.double(), float(quantile)))
    gate.valid_flag_rate = float((scores > gate.cut).float().mean())
    return gate


@torch.no_grad()
def pooled_features(model: nn.Module, images: torch.Tensor, *, batch_size: int = 32) -> torch.Tensor:
    """A classifier's pooled backbone features (``model.embed``, dropout off).

    Args:
        model: a :class:`wsslib.models.Classifier`.
        images: ``(B, 3, S, S)`` float in [0, 1] (moved to the model's device in batches).

    Returns:
        ``(B, C)`` float32 on the CPU.
    """
    check_shape("images", images, (None, 3, None, None))
    dev = next(model.parameters()).device
    was = model.training
    model.eval()
    try:
        if not len(images):
            return torch.empty(0, int(getattr(model, "num_features", 0)))
        return torch.cat([model.embed(x.to(dev)).float().cpu() for x in images.split(batch_size)])
    finally:
        model.train(was)


def ensemble_flags(flags: torch.Tensor | Sequence[torch.Tensor], min_votes: int = 1) -> torch.Tensor:
    """Out of distribution for the ensemble: at least ``min(min_votes, M)`` members' gates flag.

    Args:
        flags: ``(M, B)`` bool, or ``M`` tensors ``(B,)``.
        min_votes: members needed (default 1: any; capped at ``M``).

    Returns:
        ``(B,)`` bool.

    Example:
        >>> ensemble_flags(torch.tensor([[True, True], [True, False], [False, False]])).tolist()
        [True, False]
    """
    f = torch.stack(list(flags)) if not isinstance(flags, torch.Tensor) else flags
    check_shape("flags", f, (None, None))
    if int(min_votes) < 1:
        raise ValueError(f"min_votes must be >= 1, got {min_votes}")
    return f.bool().sum(0) >= min(int(min_votes), f.shape[0])


def fit_member_gates(
    models: Sequence[nn.Module],
    train_images: torch.Tensor,
    valid_images: torch.Tensor,
    *,
    k: int = 5,
    quantile: float = 0.95,
    seed: int = 0,
    min_votes: int = 1,
    batch_size: int = 32,
) -> list[OODGate]:
    """One gate per ensemble member (:func:`fit_gate` on its :func:`pooled_features`), the cuts
    set together for the ensemble rule (see the module doc).

    Args:
        models: the ``M`` members.
        train_images: ``(N, 3, S, S)`` in [0, 1], the images the members were trained on.
        valid_images: ``(V, 3, S, S)`` in [0, 1], where the cuts are set.
        k, seed: see :func:`fit_gate`.
        quantile: the ensemble flags at most ``1 - quantile`` of the validation images.
        min_votes: the ensemble rule (members that must flag; 1: any), recorded in each gate.

    Returns:
        ``M`` :class:`OODGate` s, in model order; each ``quantile`` is the common level found.
    """
    gates, scores = [], []
    for m in models:
        valid = pooled_features(m, valid_images, batch_size=batch_size)
        gate = fit_gate(pooled_features(m, train_images, batch_size=batch_size), valid, k=k, quantile=quantile,
                        seed=seed)
        gates.append(gate)
        scores.append(gate.score(valid).double())
    sv = torch.stack(scores)  # (M, V)
    votes = min(int(min_votes), len(gates))
    level = 1.0
    for q in torch.linspace(float(quantile), 1.0, 201).tolist():  # the lowest level that keeps the rate
        cuts = torch.quantile(sv, q, dim=1, keepdim=True)
        if float(((sv > cuts).sum(0) >= votes).double().mean()) <= 1.0 - float(quantile) + 1e-12:
            level = q
            break
    for gate, sc in zip(gates, sv):
        gate.cut, gate.quantile, gate.min_votes = float(torch.quantile(sc, level)), float(level), int(min_votes)
        gate.valid_flag_rate = float((sc > gate.cut).double().mean())
    return gates


def gate_flags(models: Sequence[nn.Module], gates: Sequence[OODGate], images: torch.Tensor, *,
               min_votes: int | None = None, batch_size: int = 32) -> torch.Tensor:
    """The ensemble's out-of-distribution flags: ``(B, 3, S, S)`` images -> ``(B,)`` bool
    (:func:`ensemble_flags` of every member's gate on its own features; ``min_votes`` None: the
    rule the gates were fitted for)."""
    if len(models) != len(gates) or not gates:
        raise ValueError(f"{len(models)} models but {len(gates)} gates")
    if min_votes is None:
        min_votes = gates[0].min_votes
    return ensemble_flags([g.flags(pooled_features(m, images, batch_size=batch_size)) for m, g in zip(models, gates)],
                          min_votes)


def gate_table(models: Sequence[nn.Module], gates: Sequence[OODGate], sets: Mapping[str, torch.Tensor], *,
               min_votes: int | None = None, batch_size: int = 32) -> list[dict]:
    """The gate's flag rate on each named set of images (notebook 04's table, the model card's).

    Args:
        sets: ``{name: (B, 3, S, S) images}``, e.g. the in-distribution test split, the synthetic
            OOD family, another hospital's frames, non-endoscopy photos.

    Returns:
        one row per set: ``{"set", "n_images", "ood_flag_rate"}`` (NaN for an empty set).
    """
    rows = []
    for name, images in sets.items():
        f = gate_flags(models, gates, images, min_votes=min_votes, batch_size=batch_size)
        rows.append({"set": name, "n_images": int(len(f)), "ood_flag_rate": float(f.float().mean()) if len(f) else math.nan})
    return rows
