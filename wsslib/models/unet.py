"""Multi-level UNets with cross-level consistency (GazeMedSeg, Zhong et al., MICCAI 2024).

- :class:`UNet`: a small UNet (GroupNorm, LeakyReLU) returning ``(logits, features)``: the last
  decoder block, a 1x1 projection to ``feat_ch`` feature channels, then a 1x1 classifier, as in the
  paper's MONAI ``BasicUNet`` wrapper. :func:`paper_config` gives the paper's widths for GPU users.
- :func:`lpp`: local pixel propagation, each pixel's features replaced by a softmax-weighted mean
  of its ``5 x 5`` neighbours at dilation 2, weights from cosine similarities clamped at >= 0.
- :class:`MultiLevelUNet`: one UNet per pseudo-mask level; the prediction is the mean of the
  levels' logits.
- :func:`multilevel_loss`: BCE of each level against its pseudo-mask plus ``lam`` times the
  cross-level consistency term (see its docstring for the exact normalisation).
- :func:`train_multilevel`: a plain training loop with flips, selecting the checkpoint on a
  VALIDATION split (the paper's code selected on the test set); :func:`predict`.

Tensors: images ``(B, 3, H, W) float32`` in [0, 1] (the networks normalise internally),
pseudo-masks ``(B, m, H, W) bool``, truth ``(B, H, W) bool``.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from wsslib.core.errors import ShapeError
from wsslib.evaluate.metrics import segmentation_scores
from wsslib.core.utils import check_shape, resolve_device

__all__ = [
    "MultiLevelUNet",
    "UNet",
    "lpp",
    "multilevel_loss",
    "paper_config",
    "predict",
    "train_multilevel",
]

Consistency = Literal["lpp", "plain", "none"]

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def paper_config() -> dict:
    """The paper's network size (MONAI ``BasicUNet`` features ``(64, 128, 256, 512, 1024, 128)``).

    Returns:
        ``{"widths": (64, 128, 256, 512, 1024), "feat_ch": 128}``: keyword arguments of
        :class:`UNet` / :class:`MultiLevelUNet`. About 31 M parameters per level here (the CPU default:
        0.5 M); meant for a GPU at 224 px (with ``optimizer="sgd_paper"``, 15,000 iterations, batch 8).
    """
    return {"widths": (64, 128, 256, 512, 1024), "feat_ch": 128}


def _norm(kind: str, ch: int, groups: int) -> nn.Module:
    if kind == "group":
        return nn.GroupNorm(groups if ch % groups == 0 else 1, ch)
    if kind == "batch":
        return nn.BatchNorm2d(ch)
    if kind == "instance":
        return nn.InstanceNorm2d(ch, affine=True)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm must be 'group', 'batch', 'instance' or 'none', got {kind!r}")


class _TwoConv(nn.Sequential):
    """(3x3 conv -> norm -> LeakyReLU(0.1)) twice, like MONAI's ``TwoConv``."""

    def __init__(self, cin: int, cout: int, norm: str, groups: int) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=1),
            _norm(norm, cout, groups),
            nn.LeakyReLU(0.1, inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1),
            _norm(norm, cout, groups),
            nn.LeakyReLU(0.1, inplace=True),
        )


class UNet(nn.Module):
    """A UNet returning logits and the per-pixel features they are classified from.

    ``len(widths) - 1`` max-pool downsamplings; each decoder step upsamples with a 2x2 transposed
    convolution to half the channels, concatenates the skip connection and applies two 3x3
    convolutions; the last decoder block has ``feat_ch`` channels, followed by a 1x1 convolution
    (the features, linear as in BasicUNet's ``final_conv``) and a 1x1 classifier.

    Args:
        in_ch: input channels.
        widths: channels per resolution, finest first (CPU default ``(16, 32, 64, 128)``;
            the paper's in :func:`paper_config`).
        feat_ch: feature channels fed to the classifier (and to :func:`lpp`).
        norm: ``"group"`` (the paper's, ``groups`` groups), ``"batch"``, ``"instance"`` or ``"none"``.
        groups: GroupNorm groups (1 where the channels are not a multiple).

    Inputs of any ``H, W`` are padded to a multiple of ``2 ** (len(widths) - 1)`` and the outputs
    cropped back.

    Forward:
        ``x (B, in_ch, H, W)`` float in [0, 1] -> ``(logits (B, 1, H, W), features (B, feat_ch, H, W))``.

    Example:
        >>> net = UNet(widths=(8, 16), feat_ch=8)
        >>> logits, feats = net(torch.rand(2, 3, 20, 30))
        >>> tuple(logits.shape), tuple(feats.shape)
        ((2, 1, 20, 30), (2, 8, 20, 30))
    """

    def __init__(
        self,
        in_ch: int = 3,
        widths: Sequence[int] = (16, 32, 64, 128),
        feat_ch: int = 32,
        norm: str = "group",
        groups: int = 4,
    ) -> None:
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if len(widths) < 2:
            raise ValueError(f"widths needs at least 2 entries (one downsampling), got {widths}")
        self.in_ch, self.widths, self.feat_ch = in_ch, widths, feat_ch
        mean, std = (_IMAGENET_MEAN, _IMAGENET_STD) if in_ch == 3 else ((0.5,) * in_ch, (0.25,) * in_ch)
        self.register_buffer("mean", torch.tensor(mean).view(1, in_ch, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, in_ch, 1, 1), persistent=False)
        self.down = nn.ModuleList([_TwoConv(in_ch, widths[0], norm, groups)])
        self.down.extend(_TwoConv(widths[k - 1], widths[k], norm, groups) for k in range(1, len(widths)))
        self.up = nn.ModuleList()
        self.dec = nn.ModuleList()
        for k in range(len(widths) - 1, 0, -1):
            up_ch = max(widths[k] // 2, 1)
            out_ch = feat_ch if k == 1 else widths[k - 1]
            self.up.append(nn.ConvTranspose2d(widths[k], up_ch, 2, stride=2))
            self.dec.append(_TwoConv(widths[k - 1] + up_ch, out_ch, norm, groups))
        self.features = nn.Conv2d(feat_ch, feat_ch, 1)
        self.classifier = nn.Conv2d(feat_ch, 1, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_shape("x", x, (None, self.in_ch, None, None))
        h, w = x.shape[-2:]
        mult = 2 ** (len(self.widths) - 1)
        ph, pw = (-h) % mult, (-w) % mult
        x = (x - self.mean) / self.std
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        skips = []
        for k, block in enumerate(self.down):
            x = block(x if k == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        x = skips.pop()
        for up, dec in zip(self.up, self.dec):
            x = dec(torch.cat([skips.pop(), up(x)], dim=1))
        feats = self.features(x)[..., :h, :w]
        return self.classifier(feats), feats


def lpp(
    features: torch.Tensor,
    kernel: int = 5,
    dilation: int = 2,
    similarity: Literal["cosine", "dot"] = "cosine",
    values: torch.Tensor | None = None,
) -> torch.Tensor:
    """Local pixel propagation: each pixel's features become a similarity-weighted neighbour mean.

    For pixel ``p`` and its ``kernel x kernel`` neighbours ``q`` at the given dilation (``p``
    itself included)::

        s_pq = max(0, cos(f_p, f_q)),   a_pq = softmax_q(s_pq),   out_p = sum_q a_pq v_q

    with ``v = f`` (the features themselves) unless ``values`` is given. Neighbours outside the
    image are left out of the softmax (the paper's code zero-pads them, which pulls border features
    towards 0); so a constant feature map is a fixed point and the weights ``a_pq`` sum to 1.
    ``similarity="dot"`` uses the raw dot product ``f_p . f_q`` (what the paper's released code
    computes; the paper and methods.md say cosine).

    Because the weights sum to 1, a linear classifier commutes with the propagation:
    ``classifier(lpp(f)) == lpp(f, values=classifier(f))`` for a 1x1 convolution with bias. Passing
    the logits as ``values`` gives the paper's propagated logits while aggregating 1 channel
    instead of ``C`` (what :meth:`MultiLevelUNet.forward_train` does).

    Computed as ``kernel ** 2`` shifted views instead of ``F.unfold`` (the same result without the
    ``kernel ** 2``-times larger unfolded tensor), with a hand-written backward that accumulates
    gradients in place.

    Args:
        features: ``(B, C, H, W)`` float: the similarities are computed from these.
        values: ``(B, Cv, H, W)`` float aggregated with the weights (default: ``features``).

    Returns:
        ``(B, Cv, H, W)`` (``Cv = C`` without ``values``), differentiable with respect to
        ``features`` and ``values``.

    Example:
        >>> f = torch.ones(1, 4, 6, 6)
        >>> torch.allclose(lpp(f), f)
        True
        >>> f, conv = torch.randn(2, 8, 9, 9), torch.nn.Conv2d(8, 1, 1)
        >>> torch.allclose(conv(lpp(f)), lpp(f, values=conv(f)), atol=1e-5)
        True
    """
    check_shape("features", features, (None, None, None, None))
    if values is not None:
        check_shape("values", values, (features.shape[0], None, *features.shape[2:]))
    if kernel < 1 or kernel % 2 == 0:
        raise ValueError(f"kernel must be odd and positive, got {kernel}")
    if similarity not in ("cosine", "dot"):
        raise ValueError(f"similarity must be 'cosine' or 'dot', got {similarity!r}")
    return _LPP.apply(features, features if values is None else values, int(kernel), int(dilation),
                      similarity == "cosine", values is None)


_NORM_EPS = 1e-8


class _LPP(torch.autograd.Function):
    """:func:`lpp` with a hand-written backward.

    Autograd through ``kernel ** 2`` slices of padded tensors allocates and zero-fills a full
    padded gradient for every slice; here every gradient is accumulated in place into one padded
    buffer (``addcmul_`` on shifted views), which makes forward + backward about 2-3x faster on a
    CPU. Verified against plain autograd (``torch.autograd.gradcheck`` in the tests).
    """

    @staticmethod
    def _geometry(h: int, w: int, kernel: int, dilation: int):
        r = (kernel // 2) * dilation
        offs = [(dy * dilation, dx * dilation) for dy in range(-(kernel // 2), kernel // 2 + 1)
                for dx in range(-(kernel // 2), kernel // 2 + 1)]
        return r, [(slice(r + oy, r + oy + h), slice(r + ox, r + ox + w)) for oy, ox in offs]

    @staticmethod
    def _keys(f: torch.Tensor, cosine: bool):
        if not cosine:
            return f, None
        norm = f.norm(dim=1, keepdim=True).clamp_min(_NORM_EPS)
        return f / norm, norm

    @staticmethod
    def forward(ctx, f: torch.Tensor, v: torch.Tensor, kernel: int, dilation: int, cosine: bool, same: bool):
        b, c, h, w = f.shape
        r, win = _LPP._geometry(h, w, kernel, dilation)
        keys, _ = _LPP._keys(f, cosine)
        pad_k = F.pad(keys, (r, r, r, r))
        pad_v = pad_k if (same and not cosine) else F.pad(v, (r, r, r, r))
        sims = torch.stack([(keys * pad_k[..., ys, xs]).sum(1) for ys, xs in win], dim=1)  # (B, K, H, W)
        inside = F.pad(torch.ones((1, 1, h, w), dtype=torch.bool, device=f.device), (r, r, r, r))
        valid = torch.cat([inside[..., ys, xs] for ys, xs in win], dim=1)  # (1, K, H, W)
        positive = sims > 0
        weights = torch.softmax(sims.clamp_min(0.0).masked_fill(~valid, -math.inf), dim=1)
        out = torch.zeros_like(v)
        for k, (ys, xs) in enumerate(win):
            out.addcmul_(weights[:, k : k + 1], pad_v[..., ys, xs])
        ctx.save_for_backward(f, v, weights, positive)
        ctx.geom = (kernel, dilation, cosine, same)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        f, v, weights, positive = ctx.saved_tensors
        kernel, dilation, cosine, same = ctx.geom
        b, c, h, w = f.shape
        r, win = _LPP._geometry(h, w, kernel, dilation)
        grad = grad.contiguous()
        pad_v = F.pad(v, (r, r, r, r))
        # out(p) = sum_k w_k(p) v(p + o_k): gradients of the weights and of the values
        d_w = torch.stack([(grad * pad_v[..., ys, xs]).sum(1) for ys, xs in win], dim=1)  # (B, K, H, W)
        g_v = torch.zeros_like(pad_v)
        for k, (ys, xs) in enumerate(win):
            g_v[..., ys, xs].addcmul_(weights[:, k : k + 1], grad)
        # softmax, clamp (out-of-image neighbours have weight 0, hence gradient 0)
        d_s = weights * (d_w - (weights * d_w).sum(1, keepdim=True))
        d_s.mul_(positive)
        # s_k(p) = <key(p), key(p + o_k)>
        keys, norm = _LPP._keys(f, cosine)
        pad_k = F.pad(keys, (r, r, r, r))
        g_k = torch.zeros_like(pad_k)
        centre = g_k[..., r : r + h, r : r + w]
        for k, (ys, xs) in enumerate(win):
            d_sk = d_s[:, k : k + 1]
            centre.addcmul_(d_sk, pad_k[..., ys, xs])
            g_k[..., ys, xs].addcmul_(d_sk, keys)
        d_key = g_k[..., r : r + h, r : r + w]
        if cosine:  # key = f / max(|f|, eps)
            radial = (keys * d_key).sum(1, keepdim=True) * (norm > _NORM_EPS)
            d_f = (d_key - keys * radial) / norm
        else:
            d_f = d_key.clone()
        d_v = g_v[..., r : r + h, r : r + w]
        if same:
            return d_f.add_(d_v), None, None, None, None, None
        return d_f, d_v.clone(), None, None, None, None


class MultiLevelUNet(nn.Module):
    """``m`` UNets, one per pseudo-mask level (the paper's design: no shared weights).

    Args:
        levels: number of levels ``m`` (>= 1).
        same_init: start every level from the same weights (the paper's code deep-copies the
            first network); ``False`` initialises each independently.
        lpp_kernel, lpp_dilation, similarity: :func:`lpp` settings.
        **unet_kwargs: :class:`UNet` arguments (``widths``, ``feat_ch``, ``norm``, ...).

    Forward:
        ``x (B, 3, H, W)`` -> logits ``(B, m, H, W)``; the prediction is
        ``logits.mean(1)`` (:meth:`predict_logits`). :meth:`forward_train` also returns the
        LPP-propagated logits ``(B, m, H, W)`` (each level's classifier on ``lpp(features)``).

    Example:
        >>> net = MultiLevelUNet(2, widths=(8, 16), feat_ch=8)
        >>> tuple(net(torch.rand(1, 3, 16, 16)).shape)
        (1, 2, 16, 16)
    """

    def __init__(
        self,
        levels: int = 2,
        same_init: bool = True,
        lpp_kernel: int = 5,
        lpp_dilation: int = 2,
        similarity: Literal["cosine", "dot"] = "cosine",
        **unet_kwargs,
    ) -> None:
        super().__init__()
        if levels < 1:
            raise ValueError(f"levels must be >= 1, got {levels}")
        first = UNet(**unet_kwargs)
        nets = [first] + [copy.deepcopy(first) if same_init else UNet(**unet_kwargs) for _ in range(levels - 1)]
        self.nets = nn.ModuleList(nets)
        self.levels = levels
        self.lpp_kernel, self.lpp_dilation, self.similarity = lpp_kernel, lpp_dilation, similarity

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([net(x)[0] for net in self.nets], dim=1)

    def forward_train(self, x: torch.Tensor, propagate: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(logits (B, m, H, W), propagated logits (B, m, H, W) or None when not propagate)``."""
        logits, prop = [], []
        for net in self.nets:
            lg, feats = net(x)
            logits.append(lg)
            if propagate:
                # classifier(lpp(feats)) computed as lpp(feats, values=logits): equal, C times cheaper
                prop.append(lpp(feats, self.lpp_kernel, self.lpp_dilation, self.similarity, values=lg))
        return torch.cat(logits, 1), (torch.cat(prop, 1) if propagate else None)

    def predict_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The ensemble's logits ``(B, H, W)``: the mean of the levels' logits."""
        return self(x).mean(1)


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


def _flip(x: torch.Tensor, flip_h: torch.Tensor, flip_v: torch.Tensor) -> torch.Tensor:
    """Flip the samples of ``x (B, C, H, W)`` selected by ``flip_h``/``flip_v (B,) bool``."""
    x = torch.where(flip_h[:, None, None, None], x.flip(-1), x)
    return torch.where(flip_v[:, None, None, None], x.flip(-2), x)


@torch.no_grad()
def predict(
    model: MultiLevelUNet | UNet,
    images: torch.Tensor,
    batch_size: int = 16,
    device: str | torch.device | None = None,
    sizes: Sequence[tuple[int, int]] | None = None,
) -> torch.Tensor | list[torch.Tensor]:
    """Foreground probabilities ``sigmoid(mean of the levels' logits)``.

    Args:
        model: a :class:`MultiLevelUNet` (or a single :class:`UNet`).
        images: ``(B, 3, H, W) float32`` in [0, 1].
        batch_size: images per forward pass.
        device: where to run (``None``: the model's device).
        sizes: optional ``B`` native sizes ``(H_b, W_b)``: the logits are resized (bilinear) to
            each before the sigmoid, as the paper evaluates at native resolution.

    Returns:
        ``(B, H, W) float32`` CPU probabilities, or a list of ``(H_b, W_b)`` with ``sizes``.
    """
    check_shape("images", images, (None, None, None, None))
    if sizes is not None and len(sizes) != images.shape[0]:
        raise ShapeError(f"got {images.shape[0]} images but {len(sizes)} sizes")
    dev = next(model.parameters()).device if device is None else resolve_device(device)
    was_training = model.training
    model.eval()
    out: list[torch.Tensor] = []
    try:
        for s in range(0, images.shape[0], batch_size):
            x = images[s : s + batch_size].to(dev, torch.float32)
            lg = model.predict_logits(x) if isinstance(model, MultiLevelUNet) else model(x)[0][:, 0]
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


def _valid_dice(model: MultiLevelUNet, images: torch.Tensor, truth: torch.Tensor, batch_size: int) -> float:
    prob = predict(model, images, batch_size=batch_size)
    return float(segmentation_scores(prob > 0.5, truth.cpu())["dice"])


def train_multilevel(
    images: torch.Tensor,
    masks: torch.Tensor,
    valid_images: torch.Tensor | None = None,
    valid_truth: torch.Tensor | None = None,
    iterations: int = 1000,
    batch_size: int = 8,
    lr: float | None = None,
    optimizer: Literal["adam", "sgd_paper"] = "adam",
    lam: float = 3.0,
    consistency: Consistency = "lpp",
    lam_warmup: int = 0,
    seed: int = 0,
    device: str | torch.device | None = "auto",
    progress: bool = True,
    eval_every: int | None = None,
    flips: bool = True,
    model: MultiLevelUNet | None = None,
    **model_kwargs,
) -> tuple[MultiLevelUNet, dict]:
    """Train a :class:`MultiLevelUNet` on hierarchical pseudo-masks; select on validation.

    Every iteration draws ``batch_size`` images (a seeded permutation per epoch), flips each
    horizontally and vertically with probability 1/2 (``flips``), and takes one step on
    :func:`multilevel_loss`. Every ``eval_every`` iterations (and at the last) the Dice of
    ``sigmoid(mean logits) > 0.5`` against ``valid_truth`` (per-image mean, at the training size)
    is measured; the returned model holds the weights of the best evaluation. Never pass the test
    split as validation.

    Optimisers: ``"adam"`` (the CPU default: Adam, ``lr`` 1e-3, cosine decay to ``lr / 10``);
    ``"sgd_paper"`` (the paper's: SGD ``lr`` 1e-2, momentum 0.99, Nesterov, weight decay 4e-4,
    cosine decay to 1e-4 over ``iterations``).

    Args:
        images: ``(N, 3, S, S) float32`` in [0, 1] (training split).
        masks: ``(N, m, S, S) bool`` pseudo-masks (:func:`wsslib.gaze.pseudo_masks`).
        valid_images: ``(V, 3, S, S)``; ``None`` keeps the last weights (no selection).
        valid_truth: ``(V, S, S) bool`` true masks of the validation images.
        iterations, batch_size, lr: the schedule (``lr=None``: the optimiser's default).
        lam: consistency weight (the paper: 3). ``consistency``: ``"lpp"`` (the paper's),
            ``"plain"``, ``"none"`` (independent levels).
        lam_warmup: ramp the consistency weight linearly from 0 to ``lam`` over this many
            iterations (0, the paper's: constant). The term rewards agreeing with the other
            levels' current predictions, so early on, while every level still predicts
            background, it holds them there: with ``lam=3`` the validation Dice stays at 0 for
            the first few dozen iterations, then catches up. Measured on Kvasir-SEG (64 px, notebook
            01), a ramp over a third of the iterations did not help (test Dice 0.37 vs 0.42 with
            constant ``lam`` after 200 iterations, 0.447 vs 0.445 after 500).
        seed: seeds the initial weights, batch order and flips (the global RNG is left as it was).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``...
        progress: tqdm bar.
        eval_every: iterations between validations (default ``max(1, iterations // 20)``).
        model: continue from this model instead of building one from ``model_kwargs``.
        **model_kwargs: :class:`MultiLevelUNet` arguments (``widths``, ``feat_ch``, ...;
            :func:`paper_config` for the paper's size).

    Returns:
        ``(model, history)``; the model is in eval mode on ``device``. ``history`` holds per
        iteration ``loss``, ``bce``, ``consistency`` (unweighted), ``lam`` and ``lr``; per evaluation ``eval_iteration``
        and ``valid_dice``; and ``best_iteration``, ``best_valid_dice``, ``seconds``.

    Raises:
        ShapeError: inconsistent shapes.
    """
    check_shape("images", images, (None, 3, None, None))
    n, _, h, w = images.shape
    check_shape("masks", masks, (n, None, h, w))
    if (valid_images is None) != (valid_truth is None):
        raise ValueError("pass both valid_images and valid_truth, or neither")
    if valid_images is not None:
        check_shape("valid_images", valid_images, (None, 3, None, None))
        check_shape("valid_truth", valid_truth, (valid_images.shape[0], *valid_images.shape[2:]))
    if iterations < 1 or batch_size < 1:
        raise ValueError(f"iterations and batch_size must be >= 1, got {iterations}, {batch_size}")
    m = masks.shape[1]
    dev = resolve_device(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if model is None:
            model = MultiLevelUNet(levels=m, **model_kwargs)
    if model.levels != m:
        raise ShapeError(f"model has {model.levels} levels but masks has {m}")
    model.to(dev).train()
    if optimizer == "adam":
        lr = 1e-3 if lr is None else lr
        opt: torch.optim.Optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        eta_min = lr / 10
    elif optimizer == "sgd_paper":
        lr = 1e-2 if lr is None else lr
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.99, nesterov=True, weight_decay=4e-4)
        eta_min = 1e-4
    else:
        raise ValueError(f"optimizer must be 'adam' or 'sgd_paper', got {optimizer!r}")
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=iterations, eta_min=eta_min)
    eval_every = max(1, iterations // 20) if eval_every is None else max(1, int(eval_every))
    gen = torch.Generator().manual_seed(seed)
    hist: dict = {"loss": [], "bce": [], "consistency": [], "lam": [], "lr": [], "eval_iteration": [], "valid_dice": []}
    best_state, best_dice, best_it = None, -math.inf, 0
    order = torch.empty(0, dtype=torch.long)
    t0 = time.perf_counter()
    bar = tqdm(range(1, iterations + 1), desc=f"multi-level UNet (m={m})", disable=not progress)
    for it in bar:
        if order.numel() < batch_size:
            order = torch.cat([order, torch.randperm(n, generator=gen)])
        idx, order = order[:batch_size], order[batch_size:]
        x = images[idx].to(dev, torch.float32)
        y = masks[idx].to(dev)
        if flips:
            fh, fv = (torch.rand(2, idx.numel(), generator=gen) < 0.5).to(dev)
            x, y = _flip(x, fh, fv), _flip(y, fh, fv)
        logits, prop = model.forward_train(x, propagate=consistency == "lpp" and m > 1 and lam != 0)
        lam_it = lam * min(1.0, it / lam_warmup) if lam_warmup > 0 else lam
        loss, parts = multilevel_loss(logits, y, prop, lam=lam_it, consistency=consistency)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        hist["lr"].append(opt.param_groups[0]["lr"])
        sched.step()
        hist["loss"].append(float(loss.detach()))
        hist["bce"].append(parts["bce"])
        hist["consistency"].append(parts["consistency"])
        hist["lam"].append(lam_it)
        if valid_images is not None and (it % eval_every == 0 or it == iterations):
            dice = _valid_dice(model, valid_images, valid_truth, batch_size=max(batch_size, 16))
            hist["eval_iteration"].append(it)
            hist["valid_dice"].append(dice)
            if dice > best_dice:
                best_dice, best_it = dice, it
                best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            bar.set_postfix(loss=f"{hist['loss'][-1]:.3f}", valid_dice=f"{dice:.3f}", best=f"{best_dice:.3f}")
    if best_state is not None:
        model.load_state_dict(best_state)
    else:
        best_it = iterations
    hist["best_iteration"] = best_it
    hist["best_valid_dice"] = best_dice if best_state is not None else math.nan
    hist["seconds"] = time.perf_counter() - t0
    return model.eval(), hist
