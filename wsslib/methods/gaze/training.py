"""GazeMedSeg's multi-level training: the loss, the trainer and prediction (Zhong et al., 2024).

The architectures (:class:`~wsslib.models.unet.UNet`, :class:`~wsslib.models.unet.MultiLevelUNet`,
:func:`~wsslib.models.unet.lpp`) live in :mod:`wsslib.models.unet`; this module holds what is
specific to the paper's training: :func:`multilevel_loss` (BCE per level + ``lam`` x cross-level
consistency), :func:`train_multilevel` (config in, :class:`MultiLevelTrainResult` out) and
:func:`predict`.

Tensors: images ``(B, 3, H, W) float32`` in [0, 1] (the networks normalise internally),
pseudo-masks ``(B, m, H, W) bool``, truth ``(B, H, W) bool``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from wsslib.core.errors import ShapeError
from wsslib.core.utils import autocast, check_shape, deterministic_scope, grad_scaler, resolve_device, rng_scope
from wsslib.data.augment import FlipAugment, flip_batch
from wsslib.evaluate.metrics import segmentation_scores
from wsslib.models.training import TrainResult
from wsslib.models.encoder_unet import EncoderMultiLevelUNet
from wsslib.models.finetune import cache_prefix_features
from wsslib.models.unet import MultiLevelUNet, UNet

__all__ = ["Consistency", "EncoderCache", "MultiLevelTrainConfig", "MultiLevelTrainResult", "cache_encoder_features",
           "multilevel_loss", "predict", "train_multilevel"]

Consistency = Literal["lpp", "plain", "none"]


def multilevel_loss(
    logits: torch.Tensor,
    masks: torch.Tensor,
    prop_logits: torch.Tensor | None = None,
    lam: float = 3.0,
    consistency: Consistency = "lpp",
) -> tuple[torch.Tensor, dict[str, float]]:
    """The GazeMedSeg training loss (as in the paper's ``utils/losses.py``).

    With ``p_l = sigmoid(logits[:, l])``, ``q_l`` the same from ``prop_logits`` (``"lpp"``) or
    ``p_l`` itself (``"plain"``), and the two-class vectors ``P = [1 - p, p]``::

        bce  = sum_l  mean_{b,h,w} BCE(logits[:, l], masks[:, l])
        cons = sum_l  -1/(m-1) sum_{k != l}  mean_{b,h,w} <Q_l, stopgrad(P_k)>
        loss = bce + lam * cons

    ``<Q, P> = (1 - q)(1 - p) + q p`` is the probability that the two levels agree, so each
    level's term lies in [-1, 0]; ``cons`` is summed (not averaged) over levels. With one level,
    or ``consistency="none"``, ``cons = 0``.

    Args:
        logits: ``(B, m, H, W)``.
        masks: ``(B, m, H, W)`` bool pseudo-masks (or floats in [0, 1]).
        prop_logits: ``(B, m, H, W)`` LPP-propagated logits; needed for ``"lpp"``.
        lam: weight of the consistency term (the paper: 3).
        consistency: ``"lpp"`` (the paper's), ``"plain"`` (no propagation) or ``"none"``.

    Returns:
        ``(loss, {"bce": float, "consistency": float})``.
    """
    check_shape("logits", logits, (None, None, None, None))
    if masks.shape != logits.shape:
        raise ShapeError(f"masks has shape {tuple(masks.shape)} but logits has {tuple(logits.shape)}; they must match")
    m = logits.shape[1]
    bce = F.binary_cross_entropy_with_logits(logits, masks.to(logits.dtype), reduction="none").mean((0, 2, 3)).sum()
    cons = logits.new_zeros(())
    if m > 1 and consistency != "none" and lam != 0:
        if consistency == "lpp":
            if prop_logits is None or prop_logits.shape != logits.shape:
                raise ShapeError("consistency='lpp' needs prop_logits of the same shape as logits")
            q = torch.sigmoid(prop_logits)
        elif consistency == "plain":
            q = torch.sigmoid(logits)
        else:
            raise ValueError(f"consistency must be 'lpp', 'plain' or 'none', got {consistency!r}")
        p = torch.sigmoid(logits).detach()
        for l in range(m):
            others = [k for k in range(m) if k != l]
            agree = (1 - q[:, l : l + 1]) * (1 - p[:, others]) + q[:, l : l + 1] * p[:, others]  # (B, m-1, H, W)
            cons = cons - agree.mean()
    loss = bce + lam * cons
    return loss, {"bce": float(bce.detach()), "consistency": float(cons.detach())}


@torch.no_grad()
def predict(
    model: MultiLevelUNet | EncoderMultiLevelUNet | UNet,
    images: torch.Tensor,
    batch_size: int = 16,
    device: str | torch.device | None = None,
    sizes: Sequence[tuple[int, int]] | None = None,
) -> torch.Tensor | list[torch.Tensor]:
    """Foreground probabilities ``sigmoid(mean of the levels' logits)``.

    Args:
        model: a :class:`MultiLevelUNet` or
            :class:`~wsslib.models.encoder_unet.EncoderMultiLevelUNet` (or a single :class:`UNet`).
        images: ``(B, 3, H, W) float32`` in [0, 1].
        batch_size: images per forward pass.
        device: where to run (``None``: the model's device); the model is moved there.
        sizes: optional ``B`` native sizes ``(H_b, W_b)``: the logits are resized (bilinear) to
            each before the sigmoid, as the paper evaluates at native resolution.

    Returns:
        ``(B, H, W) float32`` CPU probabilities, or a list of ``(H_b, W_b)`` with ``sizes``.
    """
    check_shape("images", images, (None, None, None, None))
    if sizes is not None and len(sizes) != images.shape[0]:
        raise ShapeError(f"got {images.shape[0]} images but {len(sizes)} sizes")
    dev = next(model.parameters()).device if device is None else resolve_device(device)
    model.to(dev)
    was_training = model.training
    model.eval()
    out: list[torch.Tensor] = []
    try:
        for s in range(0, images.shape[0], batch_size):
            x = images[s : s + batch_size].to(dev, torch.float32)
            lg = model.predict_logits(x) if hasattr(model, "predict_logits") else model(x)[0][:, 0]
            if sizes is None:
                out.append(torch.sigmoid(lg).float().cpu())
            else:
                for k in range(lg.shape[0]):
                    hw = tuple(int(v) for v in sizes[s + k])
                    up = F.interpolate(lg[k][None, None], size=hw, mode="bilinear", align_corners=False)[0, 0]
                    out.append(torch.sigmoid(up).float().cpu())
    finally:
        model.train(was_training)
    return out if sizes is not None else torch.cat(out)


def _valid_dice(model: MultiLevelUNet | EncoderMultiLevelUNet, images: torch.Tensor, truth: torch.Tensor,
                batch_size: int, cached: list[torch.Tensor] | None = None) -> float:
    if cached is None:
        prob = predict(model, images, batch_size=batch_size)
    else:  # decoders on the cached encoder features of the validation images
        dev = next(p for p in model.parameters() if p.requires_grad).device
        was = model.training
        model.eval()
        probs = []
        with torch.no_grad():
            for s in range(0, images.shape[0], batch_size):
                feats = [c[s:s + batch_size].to(dev, torch.float32) for c in cached]
                probs.append(torch.sigmoid(model.decode(feats, images.shape[-2:])[0].mean(1)).float().cpu())
        model.train(was)
        prob = torch.cat(probs)
    return float(segmentation_scores(prob > 0.5, truth.cpu())["dice"])


@dataclass
class EncoderCache:
    """A frozen encoder's features of a training split (four flip variants) and a validation split.

    Attributes:
        encoder: the encoder's name (a cache only fits models with that encoder).
        train: per scale ``(N, 4, C_k, h_k, w_k)`` (flip variant ``h + 2 v``, see
            :func:`wsslib.models.finetune.flip_variants`).
        valid: per scale ``(V, C_k, h_k, w_k)``, or ``None``.
        image_size: ``(H, W)`` of the images they were computed from.
        seconds: time taken to compute them.
    """

    encoder: str
    train: list[torch.Tensor]
    valid: list[torch.Tensor] | None
    image_size: tuple[int, int]
    seconds: float = 0.0

    @property
    def nbytes(self) -> int:
        """Memory held by the cached tensors."""
        ts = self.train + (self.valid or [])
        return sum(t.numel() * t.element_size() for t in ts)


def cache_encoder_features(
    model: EncoderMultiLevelUNet,
    images: torch.Tensor,
    valid_images: torch.Tensor | None = None,
    *,
    flips: bool = True,
    dtype: torch.dtype = torch.float16,
    device: str | torch.device | None = "auto",
    progress: bool = False,
) -> EncoderCache:
    """Run ``model.encoder`` once over the training images (and their flips) and the validation
    images, for :func:`train_multilevel` (``cache=``): computed once, shared by every variant and seed.

    Args:
        model: an :class:`~wsslib.models.encoder_unet.EncoderMultiLevelUNet` (its frozen encoder is used).
        images: ``(N, 3, S, S)`` training images in [0, 1].
        valid_images: ``(V, 3, S, S)`` or ``None``.
        flips: cache the four flip variants of the training images (needed for ``config.flips``).
        dtype: storage type (float16: half the memory).
        device: where the encoder runs.
        progress: tqdm bars.

    Returns:
        :class:`EncoderCache`.
    """
    dev = resolve_device(device)
    t0 = time.perf_counter()
    enc = model.encoder.to(dev)
    tr = cache_prefix_features(enc, images, flips=flips, device=dev, dtype=dtype, progress=progress)
    if not flips:  # (N, C, h, w) -> (N, 1, C, h, w): variant 0 only
        tr = [t[:, None] for t in tr]
    va = None if valid_images is None else cache_prefix_features(enc, valid_images, flips=False, device=dev,
                                                                 dtype=dtype, progress=progress)
    return EncoderCache(encoder=enc.name, train=list(tr), valid=None if va is None else list(va),
                        image_size=tuple(images.shape[-2:]), seconds=time.perf_counter() - t0)



@dataclass(frozen=True)
class MultiLevelTrainConfig:
    """How :func:`train_multilevel` trains (defaults: the CPU sketch; :meth:`paper` the paper's).

    Attributes:
        iterations: optimisation steps (the paper: 15,000).
        batch_size: images per step (the paper: 8).
        lr: learning rate; ``None``: 1e-3 for ``"adam"``, 1e-2 for ``"sgd_paper"``.
        optimizer: ``"adam"`` (Adam, cosine decay to ``lr / 10``) or ``"sgd_paper"`` (SGD,
            momentum 0.99, Nesterov, weight decay 4e-4, cosine decay to 1e-4).
        lam: weight of the consistency term (the paper: 3).
        consistency: ``"lpp"`` (the paper's), ``"plain"`` (no propagation) or ``"none"``.
        lam_warmup: fraction of ``iterations`` over which ``lam`` ramps linearly from 0 (the
            paper's code: 0, constant). The term rewards agreeing with the other levels' current
            predictions, so early on, while every level still predicts background, it holds them
            there: with ``lam=3`` the validation Dice stays at 0 for the first few dozen
            iterations, then catches up. Measured on Kvasir-SEG (64 px, notebook 01), a ramp over
            a third of the iterations did not help (test Dice 0.37 vs 0.42 with constant ``lam``
            after 200 iterations, 0.447 vs 0.445 after 500).
        eval_every: iterations between validations (``None``: ``max(1, iterations // 20)``).
        flips: random horizontal and vertical flips (:class:`~wsslib.data.augment.FlipAugment`).
        widths, feat_ch: :class:`~wsslib.models.unet.UNet` size (the paper's:
            :func:`~wsslib.models.unet.paper_config`); ``feat_ch`` is also the decoders'
            feature width with an ``encoder``.
        encoder: ``None`` (the paper's UNets, from scratch) or a pretrained encoder name
            (``"efficientnet_lite0"``...): an :class:`~wsslib.models.encoder_unet.EncoderMultiLevelUNet`
            whose frozen encoder's features are computed once per image and flip
            (:func:`cache_encoder_features`) and whose decoders train on them.
        encoder_weights: the encoder's weights (``"imagenet"``; ``None`` for tests).
        decoder_width: the decoders' pyramid channels (with ``encoder``).
        seed: seeds the initial weights, the batch order and the flips.
        amp: mixed precision on CUDA (float16 autocast with a gradient scaler; the paper preset's
            15,000 iterations on a GPU); a no-op on the CPU and MPS
            (:func:`~wsslib.core.utils.amp_enabled`).
        deterministic: torch's deterministic kernels while training
            (:func:`~wsslib.core.utils.deterministic_scope`; the caller's settings are restored).
    """

    iterations: int = 1000
    batch_size: int = 8
    lr: float | None = None
    optimizer: Literal["adam", "sgd_paper"] = "adam"
    lam: float = 3.0
    consistency: Consistency = "lpp"
    lam_warmup: float = 0.0
    eval_every: int | None = None
    flips: bool = True
    widths: tuple[int, ...] = (16, 32, 64, 128)
    feat_ch: int = 32
    encoder: str | None = None
    encoder_weights: Literal["imagenet"] | None = "imagenet"
    decoder_width: int = 64
    seed: int = 0
    amp: bool = False
    deterministic: bool = False

    def __post_init__(self) -> None:
        if self.iterations < 1 or self.batch_size < 1:
            raise ValueError(f"iterations and batch_size must be >= 1, got {self.iterations}, {self.batch_size}")
        if self.optimizer not in ("adam", "sgd_paper"):
            raise ValueError(f"optimizer must be 'adam' or 'sgd_paper', got {self.optimizer!r}")
        if self.consistency not in ("lpp", "plain", "none"):
            raise ValueError(f"consistency must be 'lpp', 'plain' or 'none', got {self.consistency!r}")
        if not 0.0 <= self.lam_warmup <= 1.0:
            raise ValueError(f"lam_warmup is a fraction of the iterations in [0, 1], got {self.lam_warmup}")

    @property
    def warmup_iterations(self) -> int:
        """``round(lam_warmup * iterations)``."""
        return int(round(self.lam_warmup * self.iterations))


@dataclass
class MultiLevelTrainResult(TrainResult):
    """:class:`~wsslib.models.training.TrainResult` of :func:`train_multilevel`.

    ``history`` holds one dict per validation (``epoch`` = its index, ``iteration``,
    ``valid_dice``); ``best_epoch`` indexes it (0 without validation).

    Attributes:
        steps: per iteration ``loss``, ``bce``, ``consistency`` (unweighted), ``lam``, ``lr``.
        best_iteration: the iteration of the kept weights (the last one without validation).
        best_valid_dice: their validation Dice (NaN without validation).
    """

    steps: dict[str, list[float]] = field(default_factory=dict)
    best_iteration: int = 0
    best_valid_dice: float = math.nan

    def summary(self) -> dict:
        """What a results JSON records: ``eval_iteration``, ``valid_dice``, ``best_iteration``,
        ``best_valid_dice``, ``final_bce``, ``final_consistency``, ``seconds``."""
        return {"eval_iteration": [h["iteration"] for h in self.history],
                "valid_dice": [h["valid_dice"] for h in self.history], "best_iteration": self.best_iteration,
                "best_valid_dice": self.best_valid_dice, "final_bce": self.steps["bce"][-1],
                "final_consistency": self.steps["consistency"][-1], "seconds": self.seconds}


def _optimizer(model: torch.nn.Module, cfg: MultiLevelTrainConfig):
    params = [p for p in model.parameters() if p.requires_grad]  # a pretrained encoder stays frozen
    if cfg.optimizer == "adam":
        lr = 1e-3 if cfg.lr is None else cfg.lr
        return torch.optim.Adam(params, lr=lr), lr / 10
    lr = 1e-2 if cfg.lr is None else cfg.lr
    opt = torch.optim.SGD(params, lr=lr, momentum=0.99, nesterov=True, weight_decay=4e-4)
    return opt, 1e-4


def train_multilevel(
    images: torch.Tensor,
    masks: torch.Tensor,
    config: MultiLevelTrainConfig | None = None,
    *,
    valid_images: torch.Tensor | None = None,
    valid_truth: torch.Tensor | None = None,
    model: MultiLevelUNet | EncoderMultiLevelUNet | None = None,
    cache: EncoderCache | None = None,
    device: str | torch.device | None = "auto",
    progress: bool = True,
) -> MultiLevelTrainResult:
    """Train a :class:`~wsslib.models.unet.MultiLevelUNet` on hierarchical pseudo-masks; select
    the checkpoint on validation.

    Every iteration draws ``batch_size`` images (a seeded permutation per pass), flips them
    (``config.flips``) and takes one step on :func:`multilevel_loss`. Every ``eval_every``
    iterations (and at the last) the Dice of ``sigmoid(mean logits) > 0.5`` against
    ``valid_truth`` (per-image mean, at the training size) is measured; the returned model holds
    the weights of the best evaluation. Never pass the test split as validation.

    Why a hand loop, not fastai's ``Learner`` (which trains the classifiers): the paper's schedule
    is counted in iterations (15,000 steps, cosine over steps, validation every N steps), not
    epochs, and each step draws its own batch from a seeded permutation; fastai's loop is
    epoch-based (validation and callbacks per epoch), so fitting it would take a custom
    ``DataLoader`` and callbacks that re-implement this loop's 30 lines.

    Args:
        images: ``(N, 3, S, S) float32`` in [0, 1] (training split).
        masks: ``(N, m, S, S) bool`` pseudo-masks (:func:`~wsslib.methods.gaze.pseudo_masks`).
        config: a :class:`MultiLevelTrainConfig` (default: its defaults).
        valid_images: ``(V, 3, S, S)``; ``None`` keeps the last weights (no selection).
        valid_truth: ``(V, S, S) bool`` true masks of the validation images.
        model: continue from this model instead of building one from ``config``.
        cache: the frozen encoder's features of ``images`` (and ``valid_images``) from
            :func:`cache_encoder_features` (with ``config.encoder``; computed here when ``None``).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``...
        progress: tqdm bar.

    Returns:
        :class:`MultiLevelTrainResult` (model in eval mode on ``device``). Random work runs in
        :func:`~wsslib.core.utils.rng_scope` (``config.seed``): the caller's RNG state is kept.

    Raises:
        ShapeError: inconsistent shapes.
    """
    cfg = config or MultiLevelTrainConfig()
    check_shape("images", images, (None, 3, None, None))
    n, _, h, w = images.shape
    check_shape("masks", masks, (n, None, h, w))
    if (valid_images is None) != (valid_truth is None):
        raise ValueError("pass both valid_images and valid_truth, or neither")
    if valid_images is not None:
        check_shape("valid_images", valid_images, (None, 3, None, None))
        check_shape("valid_truth", valid_truth, (valid_images.shape[0], *valid_images.shape[2:]))
    m = masks.shape[1]
    dev = resolve_device(device)
    t0 = time.perf_counter()
    with rng_scope(cfg.seed), deterministic_scope(cfg.deterministic):
        if model is None and cfg.encoder:
            model = EncoderMultiLevelUNet(levels=m, encoder=cfg.encoder, weights=cfg.encoder_weights,
                                          width=cfg.decoder_width, feat_ch=cfg.feat_ch)
        elif model is None:
            model = MultiLevelUNet(levels=m, widths=tuple(cfg.widths), feat_ch=cfg.feat_ch)
        if model.levels != m:
            raise ShapeError(f"model has {model.levels} levels but masks has {m}")
        if isinstance(model, EncoderMultiLevelUNet):
            if cache is None:
                cache = cache_encoder_features(model, images, valid_images, flips=cfg.flips, device=dev,
                                               progress=progress)
            _check_cache(cache, model, images, valid_images, cfg.flips)
        elif cache is not None:
            raise ValueError("cache= needs a model with a pretrained encoder (config.encoder)")
        res = _train(model.to(dev).train(), images, masks, valid_images, valid_truth, cfg, dev, progress, cache)
    res.seconds = time.perf_counter() - t0
    return res


def _check_cache(cache: EncoderCache, model: EncoderMultiLevelUNet, images: torch.Tensor,
                 valid_images: torch.Tensor | None, flips: bool) -> None:
    if cache.encoder != model.encoder.name or cache.train[0].shape[0] != images.shape[0] \
            or tuple(cache.image_size) != tuple(images.shape[-2:]):
        raise ShapeError(f"cache holds {cache.encoder} features of {cache.train[0].shape[0]} images at "
                         f"{cache.image_size}; the model's encoder is {model.encoder.name} and there are "
                         f"{images.shape[0]} images at {tuple(images.shape[-2:])}")
    if flips and cache.train[0].shape[1] != 4:
        raise ShapeError("config.flips needs a cache of the four flip variants (cache_encoder_features(flips=True))")
    if valid_images is not None and (cache.valid is None or cache.valid[0].shape[0] != valid_images.shape[0]):
        raise ShapeError("the cache holds no features of these validation images")


def _float(x):
    """float32 copies of the tensors in ``x`` (a tensor, a list/tuple of them, or None)."""
    if isinstance(x, torch.Tensor):
        return x.float()
    if isinstance(x, (list, tuple)):
        return type(x)(_float(v) for v in x)
    return x


def _train(model, images, masks, valid_images, valid_truth, cfg: MultiLevelTrainConfig, dev, progress,
           cache: EncoderCache | None = None):
    """The loop of :func:`train_multilevel` (inside its ``rng_scope``)."""
    n, m = images.shape[0], masks.shape[1]
    opt, eta_min = _optimizer(model, cfg)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.iterations, eta_min=eta_min)
    eval_every = max(1, cfg.iterations // 20) if cfg.eval_every is None else max(1, int(cfg.eval_every))
    warm = cfg.warmup_iterations
    gen = torch.Generator().manual_seed(cfg.seed)
    flip = FlipAugment(cfg.seed + 1)
    steps: dict[str, list[float]] = {"loss": [], "bce": [], "consistency": [], "lam": [], "lr": []}
    history: list[dict] = []
    best_state, best_dice, best_it, best_k = None, -math.inf, cfg.iterations, 0
    order = torch.empty(0, dtype=torch.long)
    propagate = cfg.consistency == "lpp" and m > 1 and cfg.lam != 0
    scaler = grad_scaler(dev, cfg.amp)  # passes through unless amp on CUDA
    bar = tqdm(range(1, cfg.iterations + 1), desc=f"multi-level UNet (m={m})", disable=not progress)
    for it in bar:
        if order.numel() < cfg.batch_size:
            order = torch.cat([order, torch.randperm(n, generator=gen)])
        idx, order = order[: cfg.batch_size], order[cfg.batch_size :]
        with autocast(dev, cfg.amp):
            if cache is None:
                x, y = images[idx].to(dev, torch.float32), masks[idx].to(dev)
                if cfg.flips:
                    x, y = flip(x, y)
                logits, prop = model.forward_train(x, propagate=propagate)
            else:  # the same flips as the image path, taken from the cached variants
                fh, fv = flip.draw(len(idx)) if cfg.flips else (torch.zeros(len(idx), dtype=torch.bool),) * 2
                var = fh.long() + 2 * fv.long()
                feats = [c[idx, var].to(dev, torch.float32) for c in cache.train]
                y = flip_batch(masks[idx], fh, fv).to(dev)
                logits, prop = model.decode(feats, images.shape[-2:], propagate=propagate)
        lam_it = cfg.lam * min(1.0, it / warm) if warm > 0 else cfg.lam
        # the loss in float32 (BCE on float16 logits loses precision), gradients scaled under amp
        loss, parts = multilevel_loss(_float(logits), y, _float(prop), lam=lam_it, consistency=cfg.consistency)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        steps["lr"].append(opt.param_groups[0]["lr"])
        sched.step()
        steps["loss"].append(float(loss.detach()))
        steps["bce"].append(parts["bce"])
        steps["consistency"].append(parts["consistency"])
        steps["lam"].append(lam_it)
        if valid_images is not None and (it % eval_every == 0 or it == cfg.iterations):
            dice = _valid_dice(model, valid_images, valid_truth, batch_size=max(cfg.batch_size, 16),
                               cached=None if cache is None else cache.valid)
            history.append({"epoch": len(history), "iteration": it, "valid_dice": dice})
            if dice > best_dice:
                best_dice, best_it, best_k = dice, it, len(history) - 1
                best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            bar.set_postfix(loss=f"{steps['loss'][-1]:.3f}", valid_dice=f"{dice:.3f}", best=f"{best_dice:.3f}")
    if best_state is not None:
        model.load_state_dict(best_state)
    return MultiLevelTrainResult(
        model=model.eval(), history=history, best_epoch=best_k, device=str(dev), steps=steps, best_iteration=best_it,
        best_valid_dice=best_dice if best_state is not None else math.nan)
