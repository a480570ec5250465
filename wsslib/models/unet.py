"""Multi-level UNets with cross-level consistency (GazeMedSeg, Zhong et al., MICCAI 2024).

- :class:`UNet`: a small UNet (GroupNorm, LeakyReLU) returning ``(logits, features)``: the last
  decoder block, a 1x1 projection to ``feat_ch`` feature channels, then a 1x1 classifier, as in the
  paper's MONAI ``BasicUNet`` wrapper. :func:`paper_config` gives the paper's widths for GPU users.
- :func:`lpp`: local pixel propagation, each pixel's features replaced by a softmax-weighted mean
  of its ``5 x 5`` neighbours at dilation 2, weights from cosine similarities clamped at >= 0.
- :class:`MultiLevelUNet`: one UNet per pseudo-mask level; the prediction is the mean of the
  levels' logits.

The paper's training (loss, trainer, prediction) is part of the method:
:mod:`wsslib.methods.gaze.training`.

Tensors: images ``(B, 3, H, W) float32`` in [0, 1] (the networks normalise internally),
logits ``(B, m, H, W)``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from wsslib.core.utils import check_shape

__all__ = ["MultiLevelUNet", "UNet", "lpp", "paper_config"]

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def paper_config() -> dict:
    """The paper's network size (MONAI ``BasicUNet`` features ``(64, 128, 256, 512, 1024, 128)``).

    Returns:
        ``{"widths": (64, 128, 256, 512, 1024), "feat_ch": 128}``: keyword arguments of
        :class:`UNet` / :class:`MultiLevelUNet`. About 31 M parameters per level here (the CPU default:
        0.5 M); meant for a GPU at 224 px (``MultiLevelTrainConfig(optimizer="sgd_paper", iterations=15000, batch_size=8)``).
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
