"""CCAM: contrastive learning of a class-agnostic activation map (Xie et al., CVPR 2022).

CCAM needs no labels at all. A backbone and a tiny head predict ONE map per image,
``M = sigmoid(BN(conv3x3(F)))`` in ``(0, 1)``, meant to be 1 on the object and 0 on the
background, whatever the object's class. The map splits the features ``F (B, C, h, w)`` into a
foreground and a background embedding by map-weighted pooling::

    v_f[b] = sum_ij M[b, ij] * F[b, :, ij] / (h * w)          (B, C)
    v_b[b] = sum_ij (1 - M[b, ij]) * F[b, :, ij] / (h * w)    (B, C)

and a cross-image contrastive loss shapes the map. With ``s(u, v)`` the cosine similarity clamped
to ``[0.0005, 0.9995]`` (as in the authors' code, so that the logarithms stay finite) and ``n``
images in the batch, the paper's three terms are::

    L_neg   = -1/n^2      sum_i sum_j      log(1 - s(v_f[i], v_b[j]))           ("SimMin": fg vs bg apart)
    L_pos^f = -1/(n(n-1)) sum_i sum_{j!=i} w_ij^f log(s(v_f[i], v_f[j]))        ("SimMax": fg together)
    L_pos^b = -1/(n(n-1)) sum_i sum_{j!=i} w_ij^b log(s(v_b[i], v_b[j]))        ("SimMax": bg together)
    w_ij    = exp(-alpha * rank_i(j)),  alpha = 0.25

where ``rank_i(j)`` is 0 for the image most similar to ``i``, 1 for the next, ... (the rank
weighting damps positive pairs whose semantics differ, e.g. a dog's and a cat's foreground).
The loss is ``L = L_neg + L_pos^f + L_pos^b``. The authors' code (``variant="code"``) differs
only in keeping the ``i = j`` pairs, whose clamped similarity has no gradient, and in dividing by
``n^2`` instead of ``n(n-1)``: the same gradient up to the factor ``(n-1)/n``.

Why it works: backgrounds of different images look alike (mucosa, grass, sofa), foregrounds look
alike too, and an object never looks like its own background. Nothing in the loss says WHICH of
the two regions is the object, though: a trained map may come out inverted. :func:`choose_polarity`
decides it from training data (never by looking at test masks), and :func:`ccam_maps` applies it.

Architecture (their setup): a ResNet whose last stage has stride 1 (strides ``[1, 2, 2, 1]`` for
``layer1..layer4``: output stride 16 instead of 32; no dilation, as in their code), the outputs of
``layer3`` and ``layer4`` (both at stride 16) concatenated (1024 + 2048 = 3072 channels for a
ResNet-50). ``smallcnn`` is treated the same way (``stage3`` + ``stage4`` at stride 8). Other
registered backbones (DenseNet, EfficientNet, ViT) use their final feature map (the CAM target
layer's map) unchanged.

Example:
    >>> import torch
    >>> from wsslib.explain.ccam import CCAM, ccam_loss, ccam_maps
    >>> model = CCAM("smallcnn")
    >>> out = model(torch.rand(4, 3, 64, 64))
    >>> out.fg.shape, out.bg.shape, out.map.shape
    (torch.Size([4, 192]), torch.Size([4, 192]), torch.Size([4, 1, 8, 8]))
    >>> ccam_loss(out.fg, out.bg).total.shape
    torch.Size([])
    >>> ccam_maps(model, torch.rand(2, 3, 64, 64)).shape
    torch.Size([2, 64, 64])
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from wsslib.core.errors import ShapeError
from wsslib.core.maps import minmax_per_image
from wsslib.core.utils import check_shape, eval_mode, resolve_device, rng_scope
from wsslib.data.augment import FlipAugment
from wsslib.models.classifiers import Classifier, create_model
from wsslib.models.training import TrainResult

__all__ = [
    "CCAM",
    "CCAMLoss",
    "CCAMOutput",
    "CCAMTrainConfig",
    "CCAMTrainResult",
    "Polarity",
    "PolarityMethod",
    "SIM_CLAMP",
    "ccam_loss",
    "ccam_maps",
    "choose_polarity",
    "cosine_similarity_matrix",
    "sim_max_loss",
    "sim_min_loss",
    "train_ccam",
]

SIM_CLAMP = (0.0005, 0.9995)
"""Cosine similarities are clamped to this range before the logarithms (authors' code)."""

# Backbones whose last two stages are concatenated, and the names of those stages.
_MULTI_LEVEL: dict[str, tuple[str, str]] = {
    "resnet18": ("layer3", "layer4"),
    "resnet34": ("layer3", "layer4"),
    "resnet50": ("layer3", "layer4"),
    "smallcnn": ("stage3", "stage4"),
}

Variant = Literal["paper", "code"]
PolarityMethod = Literal["border", "reference", "deletion"]


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------


class CCAMOutput(NamedTuple):
    """What :meth:`CCAM.forward` returns.

    Attributes:
        fg: ``(B, C)`` foreground embeddings (map-weighted mean of the features).
        bg: ``(B, C)`` background embeddings (``(1 - map)``-weighted mean).
        map: ``(B, 1, h, w)`` class-agnostic map in ``(0, 1)`` (sigmoid) at feature resolution.
        logits: ``(B, 1, h, w)`` the map before the sigmoid.
    """

    fg: torch.Tensor
    bg: torch.Tensor
    map: torch.Tensor
    logits: torch.Tensor


def _last_stage_stride_one(stage: nn.Module) -> int:
    """Set every stride-2 convolution inside ``stage`` to stride 1 (in place); return how many."""
    changed = 0
    for m in stage.modules():
        if isinstance(m, nn.Conv2d) and tuple(m.stride) != (1, 1):
            m.stride = (1, 1)
            changed += 1
    return changed


class CCAM(nn.Module):
    """Backbone + class-agnostic activation head (3x3 conv -> BN -> sigmoid).

    Args:
        backbone: a registered :mod:`wsslib.models` name (their setup: ``"resnet50"``).
        weights: ``None`` or ``"imagenet"`` (local file only, see :func:`wsslib.models.create_model`).
        weights_dir: extra folder searched for ImageNet weights.
        last_stride_one: for ResNets and ``smallcnn``, run the last stage at stride 1 (their
            strides ``[1, 2, 2, 1]``: output stride 16 for a ResNet, 8 for ``smallcnn``).
        multi_level: for ResNets and ``smallcnn``, concatenate the last two stages' outputs
            (their ``layer3 + layer4``); needs ``last_stride_one`` (same resolution).
        seed: seeds the random initialisation (without touching the global RNG).
        **model_kwargs: passed to :func:`wsslib.models.create_model` (e.g. ``image_size``: used by
            the builders that need it, such as ``vit_small``, ignored by the others).

    Shapes:
        ``forward(x)``: ``x (B, 3, H, W)`` float in [0, 1] -> :class:`CCAMOutput`
        (``fg``, ``bg`` ``(B, C)``; ``map``, ``logits`` ``(B, 1, h, w)``).
        ``features(x)``: ``(B, 3, H, W)`` -> ``(B, C, h, w)``.

    Example:
        >>> m = CCAM("resnet18")
        >>> m.num_features, m(torch.rand(2, 3, 64, 64)).map.shape
        (768, torch.Size([2, 1, 4, 4]))
    """

    def __init__(
        self,
        backbone: str = "resnet50",
        *,
        weights: Literal["imagenet"] | None = None,
        weights_dir: Any = None,
        last_stride_one: bool = True,
        multi_level: bool = True,
        seed: int = 0,
        **model_kwargs: Any,
    ) -> None:
        super().__init__()
        if multi_level and not last_stride_one and backbone in _MULTI_LEVEL:
            raise ValueError("multi_level=True needs last_stride_one=True (the two stages must share a resolution)")
        with rng_scope(seed, devices=[]):  # the head's initialisation; create_model seeds the backbone
            clf = create_model(backbone, num_classes=1, dropout=0.0, weights=weights, weights_dir=weights_dir,
                               seed=seed, **model_kwargs)
            self.normalize = clf.normalize  # the backbone's own input normalisation (Lite: (255x-127)/128)
            self.backbone = clf.features
            self.levels: tuple[str, ...] = ()
            if backbone in _MULTI_LEVEL:
                low, high = _MULTI_LEVEL[backbone]
                if last_stride_one:
                    _last_stage_stride_one(getattr(self.backbone, high))
                if multi_level:
                    self.levels = (low, high)
            with torch.no_grad():
                was = self.backbone.training
                self.backbone.eval()
                num_features = int(self._backbone_features(torch.zeros(1, 3, 64, 64)).shape[1])
                self.backbone.train(was)
            self.activation_head = nn.Conv2d(num_features, 1, kernel_size=3, padding=1, bias=False)
            self.bn_head = nn.BatchNorm2d(1)
        self.num_features = num_features
        self.backbone_name = backbone
        self.config: dict[str, Any] = {
            "backbone": backbone,
            "last_stride_one": bool(last_stride_one),
            "multi_level": bool(multi_level),
            "kwargs": dict(model_kwargs),
        }

    @classmethod
    def from_classifier(cls, classifier: Classifier, *, seed: int = 0, **kwargs: Any) -> CCAM:
        """A CCAM whose backbone starts from a trained classifier's backbone (their "CCAM pretrained").

        The classifier is not modified (its weights are copied). Its registry name and builder
        options (``classifier.config``) pick the backbone; the head is freshly initialised.

        Args:
            classifier: a :class:`wsslib.models.Classifier` built by ``create_model``.
            seed: seeds the head's initialisation.
            **kwargs: ``last_stride_one`` / ``multi_level`` (see :class:`CCAM`).

        Raises:
            ValueError: the classifier was not built by ``create_model``.
        """
        cfg = getattr(classifier, "config", None) or {}
        name = cfg.get("name")
        if not isinstance(classifier, Classifier) or name in (None, "custom"):
            raise ValueError("from_classifier needs a wsslib Classifier built by create_model (config['name'] set)")
        model = cls(name, seed=seed, **kwargs, **cfg.get("kwargs", {}))
        state = copy.deepcopy(classifier.features.state_dict())
        model.backbone.load_state_dict(state)
        model.config["init"] = f"classifier:{name}"
        return model.to(next(classifier.parameters()).device)

    def _backbone_features(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised ``(B, 3, H, W)`` -> ``(B, C, h, w)`` (two stages concatenated when multi-level)."""
        if not self.levels:
            return self.backbone(x)
        outs: dict[str, torch.Tensor] = {}
        for name, module in self.backbone.named_children():
            x = module(x)
            if name in self.levels:
                outs[name] = x
        low, high = self.levels
        return torch.cat([outs[high], outs[low]], dim=1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``x (B, 3, H, W)`` float in [0, 1] -> features ``(B, C, h, w)``."""
        check_shape("x", x, (None, 3, None, None))
        return self._backbone_features(self.normalize(x))

    def forward(self, x: torch.Tensor) -> CCAMOutput:
        """``x (B, 3, H, W)`` float in [0, 1] -> :class:`CCAMOutput`."""
        feats = self.features(x)
        b, c, h, w = feats.shape
        logits = self.bn_head(self.activation_head(feats))
        cam = torch.sigmoid(logits)
        flat_map = cam.reshape(b, 1, h * w)
        flat_feats = feats.reshape(b, c, h * w).transpose(1, 2)  # (B, hw, C)
        fg = torch.bmm(flat_map, flat_feats).reshape(b, c) / (h * w)
        bg = torch.bmm(1.0 - flat_map, flat_feats).reshape(b, c) / (h * w)
        return CCAMOutput(fg=fg, bg=bg, map=cam, logits=logits)

    def extra_repr(self) -> str:
        return f"backbone={self.backbone_name!r}, levels={self.levels}, num_features={self.num_features}"


# --------------------------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------------------------


def cosine_similarity_matrix(a: torch.Tensor, b: torch.Tensor, clamp: tuple[float, float] = SIM_CLAMP) -> torch.Tensor:
    """Pairwise cosine similarities, clamped: ``a (n, C)``, ``b (m, C)`` -> ``(n, m)``."""
    check_shape("a", a, (None, None))
    check_shape("b", b, (None, a.shape[1]))
    sim = F.normalize(a, dim=1) @ F.normalize(b, dim=1).T
    return sim.clamp(min=clamp[0], max=clamp[1])


def _check_pair(name: str, v: torch.Tensor) -> None:
    check_shape(name, v, (None, None))
    if v.shape[0] < 2:
        raise ShapeError(f"{name}: contrastive positives need at least 2 images in the batch, got shape {tuple(v.shape)}")


def sim_max_loss(v: torch.Tensor, alpha: float = 0.25, variant: Variant = "paper") -> torch.Tensor:
    """Positive-pair term ("SimMax"): pull the embeddings of different images together.

    ``-mean_{i != j} exp(-alpha * rank_i(j)) * log(s(v_i, v_j))`` with ``rank_i(j) = 0`` for the
    image most similar to ``i`` (see the module docstring; ``variant="code"``: the authors' mean
    over all ``n^2`` pairs, ``i = j`` included).

    Args:
        v: ``(n, C)`` embeddings, ``n >= 2``.
        alpha: rank-weight decay (paper: 0.25; 0 = unweighted).
        variant: ``"paper"`` or ``"code"``.

    Returns:
        0-d tensor.
    """
    _check_pair("v", v)
    n = v.shape[0]
    sim = cosine_similarity_matrix(v, v)
    loss = -torch.log(sim)
    eye = torch.eye(n, dtype=torch.bool, device=v.device)
    # rank of each pair within its row, most similar first; self-pairs sorted to the front.
    order_key = sim.detach().masked_fill(eye, float("inf"))
    rank = order_key.argsort(dim=1, descending=True, stable=True).argsort(dim=1) - 1
    weights = torch.exp(-float(alpha) * rank.to(v.dtype))
    if variant == "code":
        return (loss * weights).mean()
    if variant != "paper":
        raise ValueError(f"variant must be 'paper' or 'code', got {variant!r}")
    return (loss * weights).masked_fill(eye, 0.0).sum() / (n * (n - 1))


def sim_min_loss(fg: torch.Tensor, bg: torch.Tensor) -> torch.Tensor:
    """Negative-pair term ("SimMin"): ``-mean_{i, j} log(1 - s(fg_i, bg_j))`` over all ``n^2`` pairs.

    Args:
        fg, bg: ``(n, C)`` foreground and background embeddings.

    Returns:
        0-d tensor.
    """
    check_shape("fg", fg, (None, None))
    check_shape("bg", bg, tuple(fg.shape))
    return -torch.log(1.0 - cosine_similarity_matrix(fg, bg)).mean()


class CCAMLoss(NamedTuple):
    """The CCAM loss and its three terms (0-d tensors): ``total = neg + pos_fg + pos_bg``."""

    total: torch.Tensor
    neg: torch.Tensor
    pos_fg: torch.Tensor
    pos_bg: torch.Tensor


def ccam_loss(fg: torch.Tensor, bg: torch.Tensor, alpha: float = 0.25, variant: Variant = "paper") -> CCAMLoss:
    """``L = SimMin(fg, bg) + SimMax(fg) + SimMax(bg)`` (Xie et al. 2022, see module docstring).

    Args:
        fg, bg: ``(n, C)`` foreground / background embeddings of one batch, ``n >= 2``.
        alpha: rank-weight decay of the positive terms (paper: 0.25).
        variant: ``"paper"`` (default) or ``"code"`` (authors' normalisation, same gradient up
            to a factor).

    Returns:
        :class:`CCAMLoss` ``(total, neg, pos_fg, pos_bg)``.

    Example:
        >>> torch.manual_seed(0); fg, bg = torch.rand(4, 8), torch.rand(4, 8)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> l = ccam_loss(fg, bg); bool(l.total > 0), bool(torch.isclose(l.total, l.neg + l.pos_fg + l.pos_bg))
        (True, True)
    """
    _check_pair("fg", fg)
    check_shape("bg", bg, tuple(fg.shape))
    neg = sim_min_loss(fg, bg)
    pos_fg = sim_max_loss(fg, alpha, variant)
    pos_bg = sim_max_loss(bg, alpha, variant)
    return CCAMLoss(total=neg + pos_fg + pos_bg, neg=neg, pos_fg=pos_fg, pos_bg=pos_bg)


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CCAMTrainConfig:
    """How :func:`train_ccam` trains; defaults follow Xie et al.'s setup.

    Attributes:
        epochs: passes over the images (theirs: 10).
        lr: base learning rate of the backbone (theirs: 1e-3); the head gets ``lr * head_lr_mult``.
        batch_size: images per step (theirs: 32), at least 2 (contrastive pairs); the last
            incomplete batch of an epoch is dropped.
        optimizer: ``"sgd"`` (theirs, with ``momentum``) or ``"adam"`` (same poly schedule; trains
            a randomly initialised small backbone much faster on a CPU).
        momentum: SGD momentum (theirs: 0.9).
        weight_decay: theirs: 1e-4.
        head_lr_mult: head learning-rate multiplier (theirs: 10).
        poly_power: the "poly" schedule ``lr * (1 - step / steps) ** poly_power`` (theirs: 0.9).
        alpha: rank-weight decay of the positive terms (theirs: 0.25), see :func:`ccam_loss`.
        variant: ``"paper"`` or ``"code"`` normalisation of the loss, see :func:`ccam_loss`.
        augment: random horizontal and vertical flips of each batch
            (:class:`~wsslib.data.augment.FlipAugment`).
        seed: seeds shuffling and flips.
        max_steps: None (no cap) or the most optimiser steps in all (the poly schedule still
            spans ``epochs``); for tests of GPU-sized presets on a CPU.
    """

    epochs: int = 10
    lr: float = 1e-3
    batch_size: int = 32
    optimizer: Literal["sgd", "adam"] = "sgd"
    momentum: float = 0.9
    weight_decay: float = 1e-4
    head_lr_mult: float = 10.0
    poly_power: float = 0.9
    alpha: float = 0.25
    variant: Variant = "paper"
    augment: bool = True
    seed: int = 0
    max_steps: int | None = None

    def __post_init__(self) -> None:
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"CCAMTrainConfig: max_steps must be >= 1 or None, got {self.max_steps}")
        if self.epochs < 1 or self.batch_size < 2:
            raise ValueError(f"CCAMTrainConfig: epochs must be >= 1 and batch_size >= 2, got epochs={self.epochs}, "
                             f"batch_size={self.batch_size}")
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(f"CCAMTrainConfig: optimizer must be 'sgd' or 'adam', got {self.optimizer!r}")
        if self.variant not in ("paper", "code"):
            raise ValueError(f"CCAMTrainConfig: variant must be 'paper' or 'code', got {self.variant!r}")


@dataclass
class CCAMTrainResult(TrainResult):
    """What :func:`train_ccam` returns: a :class:`~wsslib.models.training.TrainResult` whose
    ``model`` is the trained :class:`CCAM` (eval mode, on ``device``).

    ``history`` holds one dict per epoch: ``epoch``, ``loss``, ``neg``, ``pos_fg``, ``pos_bg``
    (means over the epoch's batches), ``lr`` (backbone learning rate at the epoch's end).
    CCAM has no validation set: ``best_epoch`` is the last epoch (the weights kept).
    """


def _param_groups(model: CCAM, lr: float, head_lr_mult: float, weight_decay: float) -> list[dict]:
    head = [p for m in (model.activation_head, model.bn_head) for p in m.parameters()]
    head_ids = {id(p) for p in head}
    body = [p for p in model.parameters() if id(p) not in head_ids and p.requires_grad]
    return [
        {"params": body, "lr": lr, "base_lr": lr, "weight_decay": weight_decay},
        {"params": head, "lr": lr * head_lr_mult, "base_lr": lr * head_lr_mult, "weight_decay": weight_decay},
    ]


def train_ccam(
    model: CCAM,
    images: torch.Tensor,
    config: CCAMTrainConfig | None = None,
    *,
    device: str | torch.device = "auto",
    progress: bool = True,
) -> CCAMTrainResult:
    """Train CCAM on unlabelled images (a plain loop with a tqdm bar).

    Schedule: ``config.optimizer`` over two parameter groups (backbone at ``lr``, head at
    ``lr * head_lr_mult``) with the "poly" decay ``lr * (1 - step / steps) ** poly_power`` applied
    before every step. Shuffling and flips draw from ONE private generator seeded by
    ``config.seed`` (the flips through :class:`~wsslib.data.augment.FlipAugment`, whose
    generator also shuffles), and the block runs inside :func:`~wsslib.core.utils.rng_scope`,
    so the caller's global random state is untouched.

    Why not fastai's ``Learner`` (as :func:`~wsslib.models.training.train_classifier` uses):
    CCAM has no labels, no validation set and no metric, so none of the Learner's callbacks
    (recorder of validation scores, early stopping, keeping the best epoch) applies; its loss
    takes the model's ``(fg, bg)`` embeddings, not predictions and targets; and the schedule is
    a per-step poly decay with a different rate per parameter group, which fastai's schedulers
    would express only through a custom callback. The loop below is shorter than that.

    Args:
        model: a :class:`CCAM` (trained in place).
        images: ``(N, 3, H, W)`` float in [0, 1], ``N >= 2``; labels are not used (CCAM is
            class-agnostic). Batches are moved to ``device`` one at a time.
        config: a :class:`CCAMTrainConfig` (default: their setup).
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ...
        progress: tqdm progress bar over the steps.

    Returns:
        :class:`CCAMTrainResult` (model in eval mode, per-epoch history, seconds, device).

    Raises:
        ShapeError: ``images`` is not ``(N, 3, H, W)`` float with ``N >= 2``.

    Example:
        >>> res = train_ccam(CCAM("smallcnn"), torch.rand(8, 3, 32, 32), CCAMTrainConfig(epochs=1, batch_size=4),
        ...                  device="cpu", progress=False)
        >>> len(res.history), res.best_epoch
        (1, 0)
    """
    cfg = config or CCAMTrainConfig()
    check_shape("images", images, (None, 3, None, None))
    if not images.dtype.is_floating_point:
        raise ShapeError(f"images: expected a float tensor in [0, 1], got dtype {images.dtype}")
    n = images.shape[0]
    if n < 2:
        raise ShapeError(f"images: CCAM needs at least 2 images (contrastive pairs), got {n}")
    t0 = time.perf_counter()
    dev = resolve_device(device)
    model.to(dev).train()
    groups = _param_groups(model, cfg.lr, cfg.head_lr_mult, cfg.weight_decay)
    opt: torch.optim.Optimizer = (torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum) if cfg.optimizer == "sgd"
                                  else torch.optim.Adam(groups, lr=cfg.lr))
    bs = min(cfg.batch_size, n)
    per_epoch = n // bs  # drop the last incomplete batch (a batch of 1 has no positive pair)
    steps = per_epoch * cfg.epochs
    cap = steps if cfg.max_steps is None else min(steps, cfg.max_steps)
    flip = FlipAugment(cfg.seed)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cap, desc="CCAM")
    history: list[dict] = []
    step = 0
    try:
        with rng_scope(cfg.seed):
            for epoch in range(cfg.epochs):
                if step >= cap:
                    break
                perm = torch.randperm(n, generator=flip.gen)
                sums = dict.fromkeys(("loss", "neg", "pos_fg", "pos_bg"), 0.0)
                done = 0
                for k in range(min(per_epoch, cap - step)):
                    x = images[perm[k * bs : (k + 1) * bs]]
                    x = (flip(x) if cfg.augment else x).to(dev, dtype=torch.float32)
                    for g in opt.param_groups:
                        g["lr"] = g["base_lr"] * (1.0 - step / steps) ** cfg.poly_power
                    out = model(x)
                    terms = ccam_loss(out.fg, out.bg, alpha=cfg.alpha, variant=cfg.variant)
                    opt.zero_grad(set_to_none=True)
                    terms.total.backward()
                    opt.step()
                    step += 1
                    done += 1
                    for key, val in zip(sums, terms):
                        sums[key] += float(val.detach())
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(epoch=epoch, loss=f"{float(terms.total.detach()):.3f}")
                history.append({"epoch": epoch, **{k: v / done for k, v in sums.items()},
                                "lr": opt.param_groups[0]["lr"]})
    finally:
        if bar is not None:
            bar.close()
    model.eval()
    return CCAMTrainResult(model=model, history=history, best_epoch=len(history) - 1,
                           seconds=time.perf_counter() - t0, device=str(dev))


# --------------------------------------------------------------------------------------------
# Maps and polarity
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def ccam_maps(
    model: CCAM,
    images: torch.Tensor,
    *,
    flip: bool = False,
    normalize: Literal["minmax", "sigmoid"] = "minmax",
    batch_size: int = 32,
    progress: bool = False,
) -> torch.Tensor:
    """Class-agnostic maps at image resolution, in [0, 1].

    The map is computed in eval mode (batch norm with running statistics), upsampled bilinearly
    to the image size and then either min-max scaled per image (``"minmax"``: the pre-sigmoid
    map, as the authors' evaluation does) or passed through the sigmoid (``"sigmoid"``: the
    map the loss saw, comparable across images). ``flip=True`` returns ``1 - map`` (the other
    polarity; see :func:`choose_polarity`).

    Args:
        model: a :class:`CCAM`.
        images: ``(B, 3, H, W)`` float in [0, 1]; moved to the model's device chunk by chunk.
        flip: return the complement (the map highlighted the background).
        normalize: ``"minmax"`` or ``"sigmoid"``.
        batch_size: images per forward pass.
        progress: tqdm progress bar.

    Returns:
        ``(B, H, W)`` float32 in [0, 1] on ``images``' device. A constant map gives all zeros
        with ``"minmax"`` (all ones when flipped).
    """
    check_shape("images", images, (None, 3, None, None))
    if normalize not in ("minmax", "sigmoid"):
        raise ValueError(f"normalize must be 'minmax' or 'sigmoid', got {normalize!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n, _, height, width = images.shape
    out = torch.empty((n, height, width), dtype=torch.float32, device=images.device)
    device = next(model.parameters()).device
    starts: Any = range(0, n, batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="CCAM maps")
    with eval_mode(model):
        for s in starts:
            x = images[s : s + batch_size].to(device=device, dtype=torch.float32)
            logits = model(x).logits
            up = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)[:, 0]
            m = minmax_per_image(up, inplace=True) if normalize == "minmax" else torch.sigmoid(up)
            out[s : s + batch_size] = (1.0 - m if flip else m).to(images.device)
    return out


@dataclass(frozen=True)
class Polarity:
    """Which side of a CCAM map is the foreground, as decided by :func:`choose_polarity`.

    Attributes:
        flip: True when the map highlights the background (use ``1 - map``).
        method: ``"border"`` or ``"reference"``.
        score: the evidence for the map as it is: border method: mean map inside minus mean map
            on the border frame; reference method: Pearson correlation with the reference maps.
            Positive -> keep, negative -> flip.
        n_images: images the decision was taken on.
    """

    flip: bool
    method: str
    score: float
    n_images: int


def _border_frame(h: int, w: int, border: float, device: torch.device) -> torch.Tensor:
    bh, bw = max(1, round(border * h)), max(1, round(border * w))
    frame = torch.ones((h, w), dtype=torch.bool, device=device)
    frame[bh : h - bh, bw : w - bw] = False
    return frame


def _delete_top(images: torch.Tensor, maps: torch.Tensor, k: int) -> torch.Tensor:
    """Replace the ``k`` highest pixels of each map by the image's mean colour. (B, 3, H, W) -> same."""
    b, c, h, w = images.shape
    idx = maps.reshape(b, h * w).topk(k, dim=1).indices  # (B, k)
    keep = torch.ones(b, h * w, dtype=torch.bool, device=images.device)
    keep.scatter_(1, idx, False)
    keep = keep.view(b, 1, h, w)
    fill = images.mean(dim=(2, 3), keepdim=True)
    return torch.where(keep, images, fill.expand_as(images))


@torch.no_grad()
def _deletion_score(
    maps: torch.Tensor, images: torch.Tensor, classifier: nn.Module, target: int, fraction: float, batch_size: int
) -> float:
    """Mean over images of P(target | top of 1-map deleted) - P(target | top of map deleted)."""
    n, h, w = maps.shape
    k = max(1, round(fraction * h * w))
    device = next(classifier.parameters()).device
    diffs = []
    with eval_mode(classifier):
        for s in range(0, n, batch_size):
            x = images[s : s + batch_size].to(device=device, dtype=torch.float32)
            m = maps[s : s + batch_size].to(device=device, dtype=torch.float32)
            p_map = classifier(_delete_top(x, m, k)).softmax(dim=1)[:, target]
            p_inv = classifier(_delete_top(x, 1.0 - m, k)).softmax(dim=1)[:, target]
            diffs.append((p_inv - p_map).double().cpu())
    return float(torch.cat(diffs).mean())


def choose_polarity(
    maps: torch.Tensor,
    *,
    method: PolarityMethod = "border",
    reference: torch.Tensor | None = None,
    border: float = 0.125,
    images: torch.Tensor | None = None,
    classifier: nn.Module | None = None,
    target: int = 1,
    fraction: float = 0.2,
    batch_size: int = 64,
) -> Polarity:
    """Decide on TRAINING data whether a CCAM map highlights the foreground or the background.

    CCAM's loss is symmetric in foreground and background, so a trained map may be inverted.
    Three rules, none of which looks at a ground-truth mask:

    * ``"border"`` (class-agnostic, no classifier needed): objects rarely fill the image border,
      backgrounds always reach it. ``score = mean(map inside) - mean(map on the frame of width
      border * size)`` over all images; keep the map when ``score > 0``.
    * ``"reference"``: Pearson correlation, over all pixels of all images, between the maps and
      reference maps that are known to point at the object (e.g. a classifier's Grad-CAM for the
      object class on the training images that hold one); keep when ``score > 0``.
    * ``"deletion"``: ask an image classifier. On images that hold an object, the ``fraction``
      of pixels where the map is highest is replaced by the image's mean colour, and so,
      separately, is the same number of pixels where ``1 - map`` is highest.
      ``score = mean P(target | top of 1 - map deleted) - mean P(target | top of map deleted)``:
      positive when deleting what the map highlights hurts the object class more (keep).

    Args:
        maps: ``(N, H, W)`` float CCAM maps (from :func:`ccam_maps` with ``flip=False``).
        method: ``"border"``, ``"reference"`` or ``"deletion"``.
        reference: ``(N, H, W)`` float reference maps, needed for ``"reference"``.
        border: frame width as a fraction of the side (``"border"``), ``0 < border < 0.5``.
        images: ``(N, 3, H, W)`` float in [0, 1], the images of ``maps`` (``"deletion"``).
        classifier: a model mapping ``(B, 3, H, W)`` to logits ``(B, K)`` (``"deletion"``); used in
            eval mode, its modes restored after.
        target: the object class index (``"deletion"``).
        fraction: share of pixels deleted (``"deletion"``), ``0 < fraction < 1``.
        batch_size: images per classifier pass (``"deletion"``).

    Returns:
        :class:`Polarity`; a tie (score exactly 0) keeps the map.

    Raises:
        ShapeError: bad shapes, or no images.
        ValueError: unknown method, a missing input of the method, bad ``border`` / ``fraction``.

    Example:
        >>> m = torch.zeros(1, 8, 8); m[:, 3:5, 3:5] = 1.0       # a blob in the middle
        >>> choose_polarity(m).flip, choose_polarity(1 - m).flip
        (False, True)
    """
    check_shape("maps", maps, (None, None, None))
    if not maps.is_floating_point():
        raise ShapeError(f"maps: expected a float tensor, got dtype {maps.dtype}")
    n, h, w = maps.shape
    if n == 0:
        raise ShapeError("maps: no images to decide the polarity on (shape (0, H, W))")
    if method == "border":
        if not 0.0 < border < 0.5:
            raise ValueError(f"border must be in (0, 0.5), got {border}")
        frame = _border_frame(h, w, border, maps.device)
        score = float(maps[:, ~frame].double().mean() - maps[:, frame].double().mean())
    elif method == "reference":
        if reference is None:
            raise ValueError("method='reference' needs reference maps (e.g. a classifier's CAMs on the same images)")
        check_shape("reference", reference, tuple(maps.shape))
        a = maps.double().flatten()
        b = reference.to(maps.device).double().flatten()
        a, b = a - a.mean(), b - b.mean()
        den = float(a.norm() * b.norm())
        score = float((a @ b) / den) if den > 0 else 0.0
    elif method == "deletion":
        if images is None or classifier is None:
            raise ValueError("method='deletion' needs images (N, 3, H, W) and a classifier")
        check_shape("images", images, (n, 3, h, w))
        if not 0.0 < fraction < 1.0:
            raise ValueError(f"fraction must be in (0, 1), got {fraction}")
        score = _deletion_score(maps, images, classifier, int(target), float(fraction), int(batch_size))
    else:
        raise ValueError(f"method must be 'border', 'reference' or 'deletion', got {method!r}")
    return Polarity(flip=score < 0, method=method, score=score, n_images=n)
