"""Fast CPU fine-tuning: a frozen backbone prefix whose features are computed once (issue 15).

On 2 CPU cores a full training step of an EfficientNet at 224 px costs tens of seconds, most of
it in the early, high-resolution depthwise convolutions and their weight gradients. Pretrained
early stages barely need to move for a new image domain, so :func:`~wsslib.models.training.train_classifier`
with ``ClassifierTrainConfig(freeze=...)``:

1. splits the :class:`~wsslib.models.Classifier` into a frozen **prefix** (input normalisation,
   stem, the first blocks) and a trainable **suffix** (the remaining blocks, head conv/BN) with
   :func:`split_classifier` (one splitter per backbone family, below);
2. puts the prefix in eval mode with ``requires_grad=False`` (batch-norm statistics frozen too);
3. with ``cache_features=True`` computes the prefix's output once per training image and per
   flip variant (:func:`cache_prefix_features`) and once per validation image, then trains
   ``suffix -> pool -> dropout -> fc`` (:class:`SuffixHead`) with fastai on those tensors;
   with ``cache_features=False`` it trains the whole model with the prefix frozen
   (:class:`FrozenPrefix`), recomputing the prefix every batch (same result, slower);
4. returns the full Classifier (its modules were trained in place).

Flips: the uncached path flips training images with :class:`wsslib.data.augment.FlipAugment`
(horizontal with p 1/2, vertical with p 1/2, independently). The cache holds the prefix output of
all four variants of each image (index ``h + 2 v``: 0 original, 1 left-right, 2 up-down, 3 both)
and the cached path draws the same ``(h, v)`` from the same seeded FlipAugment per batch, so both
paths see the same flips of the same images in the same order. Without ``augment`` only variant 0
is cached.

Memory: the cache holds ``N_train x F x C x h x w`` values (``F`` = 4 flip variants, or 1 without
augmentation) plus ``N_valid x C x h x w``, where ``(C, h, w)`` is the prefix's output shape,
stored as ``cache_dtype`` (float16 by default: 2 bytes a value). EfficientNet-Lite0 at 224 px
frozen up to its 9th block: ``(112, 14, 14)``, i.e. 21,952 values, 43 KB in float16 per image
and variant: 280 PolypGen training images x 4 flips + 60 validation images = 51 MB. The size is
computed before anything is cached and a :class:`MemoryError` is raised above
``cache_max_gb``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["BackboneSplit", "FrozenPrefix", "SuffixHead", "cache_prefix_features", "flip_variants",
           "split_classifier"]


@dataclass
class BackboneSplit:
    """A Classifier cut into a frozen prefix and a trainable suffix (modules shared with the model).

    Attributes:
        prefix: ``(B, 3, H, W)`` in [0, 1] -> ``(B, C, h, w)``: the model's ``normalize`` and the
            frozen modules, in order.
        suffix: ``(B, C, h, w)`` -> the backbone's feature map ``(B, C', h', w')`` (the remaining
            modules of ``model.features``); ``model.pool`` / ``model.head`` follow it.
        description: human-readable boundary, e.g. ``"stem + first 9 of 16 blocks"``.
    """

    prefix: nn.Sequential
    suffix: nn.Sequential
    description: str


# --------------------------------------------------------------------------------------------
# Splitters, one per backbone family
# --------------------------------------------------------------------------------------------


def _split_lite(model: nn.Module, freeze: str | int) -> BackboneSplit:
    """EfficientNet-Lite (timm layout: conv_stem, bn1, blocks[stage][block], conv_head, bn2).

    ``freeze``: an int ``n`` = the stem and the first ``n`` blocks (counted flat over the stages;
    Lite0 has 16, Lite1/2 have 23); ``"stem"`` = ``0``; ``"blocks.S"`` = up to the end of stage
    ``S``; ``"blocks.S.J"`` = up to and including block ``J`` of stage ``S``. At least the head
    conv stays trainable.
    """
    f = model.features
    flat = [(f"blocks.{s}.{j}", blk) for s, stage in enumerate(f.blocks) for j, blk in enumerate(stage)]
    names = [n for n, _ in flat]
    if isinstance(freeze, bool):
        raise TypeError("freeze must be an int or a str, not a bool")
    if isinstance(freeze, int):
        n = freeze
    elif freeze == "stem":
        n = 0
    elif re.fullmatch(r"blocks\.\d+", freeze):
        n = max((i + 1 for i, nm in enumerate(names) if nm.startswith(freeze + ".")), default=-1)
    elif freeze in names:
        n = names.index(freeze) + 1
    else:
        n = -1
    if not 0 <= n <= len(flat):
        raise ValueError(
            f"freeze={freeze!r} is not a boundary of {model.name}: use an int 0..{len(flat)} (stem + first n "
            f"blocks), 'stem', 'blocks.S' (S < {len(f.blocks)}) or one of {names[0]!r}..{names[-1]!r}")
    prefix = nn.Sequential(model.normalize, f.conv_stem, f.bn1, *(b for _, b in flat[:n]))
    suffix = nn.Sequential(*(b for _, b in flat[n:]), f.conv_head, f.bn2)
    return BackboneSplit(prefix, suffix, f"stem + first {n} of {len(flat)} blocks")


def _split_sequential(model: nn.Module, freeze: str | int, stem: int) -> BackboneSplit:
    """A backbone whose ``features`` is an ``nn.Sequential`` (ResNets, torchvision EfficientNet-B0).

    ``freeze``: an int ``n`` = its first ``n`` top-level modules; a child's name = up to and
    including it; ``"stem"`` = the first ``stem`` modules. The last module stays trainable.
    """
    children = list(model.features.named_children())
    names = [n for n, _ in children]
    if isinstance(freeze, bool):
        raise TypeError("freeze must be an int or a str, not a bool")
    if isinstance(freeze, int):
        n = freeze
    elif freeze == "stem":
        n = stem
    elif freeze in names:
        n = names.index(freeze) + 1
    else:
        n = -1
    if not 0 <= n < len(children):
        raise ValueError(f"freeze={freeze!r} is not a boundary of {model.name}: use an int 0..{len(children) - 1}, "
                         f"'stem' or one of {names[:-1]}")
    prefix = nn.Sequential(model.normalize, *(m for _, m in children[:n]))
    suffix = nn.Sequential(*(m for _, m in children[n:]))
    return BackboneSplit(prefix, suffix, f"first {n} of {len(children)} modules ({', '.join(names[:n]) or 'none'})")


_SPLITTERS: list[tuple[str, Callable[[nn.Module, str | int], BackboneSplit]]] = [
    (r"efficientnet_lite\d", _split_lite),
    (r"resnet\d+", lambda m, fr: _split_sequential(m, fr, stem=4)),  # conv1, bn1, relu, maxpool
    (r"efficientnet_b0", lambda m, fr: _split_sequential(m, fr, stem=1)),
]


def split_classifier(model: nn.Module, freeze: str | int) -> BackboneSplit:
    """Cut a registered :class:`~wsslib.models.Classifier` into a frozen prefix and a trainable suffix.

    ``model.head(model.pool(suffix(prefix(x))))`` equals ``model(x)``: the parts are the model's
    own modules (shared, not copied), so training the suffix trains the model.

    Args:
        model: a Classifier built by :func:`~wsslib.models.create_model` (``model.name`` picks the
            splitter).
        freeze: where the frozen part ends; per family:
            EfficientNet-Lite0/1/2: int ``n`` = stem + first ``n`` blocks, ``"stem"``,
            ``"blocks.S"``, ``"blocks.S.J"`` (see :func:`_split_lite`);
            ResNet-18/34/50, EfficientNet-B0: int ``n`` = first ``n`` modules of ``features``,
            ``"stem"``, or a module name such as ``"layer2"`` (inclusive).

    Raises:
        NotImplementedError: the backbone family has no split (densenet121, vit_small, smallcnn,
            hand-built models).
        ValueError: ``freeze`` is not a boundary of this backbone.
    """
    name = getattr(model, "name", type(model).__name__)
    for pattern, fn in _SPLITTERS:
        if re.fullmatch(pattern, name):
            return fn(model, freeze)
    raise NotImplementedError(
        f"freeze={freeze!r}: no prefix/suffix split is defined for backbone {name!r}; splits exist for "
        "efficientnet_lite0/1/2, resnet18/34/50 and efficientnet_b0 (wsslib.models.finetune._SPLITTERS)")


# --------------------------------------------------------------------------------------------
# Training modules
# --------------------------------------------------------------------------------------------


class SuffixHead(nn.Module):
    """Cached prefix features -> logits: ``suffix -> pool -> dropout -> fc`` (the model's modules).

    Shapes: ``forward(f)``: ``(B, C, h, w)`` -> ``(B, num_classes)``; ``embed(f)`` -> ``(B, C')``;
    ``head(z)`` = the model's dropout + linear layer.
    """

    def __init__(self, model: nn.Module, split: BackboneSplit) -> None:
        super().__init__()
        self.suffix, self.pool, self.dropout, self.fc = split.suffix, model.pool, model.dropout, model.fc

    def embed(self, f: torch.Tensor) -> torch.Tensor:
        return self.pool(self.suffix(f))

    def head(self, z: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(z))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(f))


class FrozenPrefix(nn.Module):
    """The whole Classifier with its prefix frozen: the prefix runs without gradients and stays in
    eval mode whatever ``train()`` is called (fastai calls it every epoch). The uncached path.

    Shapes: ``forward(x)``: ``(B, 3, H, W)`` in [0, 1] -> ``(B, num_classes)``.
    """

    def __init__(self, model: nn.Module, split: BackboneSplit) -> None:
        super().__init__()
        self.model, self.split = model, split
        self.trainable = SuffixHead(model, split)

    def train(self, mode: bool = True) -> FrozenPrefix:
        super().train(mode)
        self.split.prefix.eval()
        return self

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            f = self.split.prefix(x)
        return self.trainable.embed(f)

    def head(self, z: torch.Tensor) -> torch.Tensor:
        return self.trainable.head(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))


def flip_variants(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` -> ``(B, 4, C, H, W)``: original, left-right, up-down, both (index ``h + 2 v``,
    the flips of :func:`wsslib.data.augment.flip_batch`)."""
    return torch.stack([x, x.flip(-1), x.flip(-2), x.flip(-1).flip(-2)], dim=1)


@torch.no_grad()
def cache_prefix_features(
    prefix: nn.Module,
    images: torch.Tensor,
    *,
    flips: bool,
    device: torch.device,
    dtype: torch.dtype = torch.float16,
    batch_size: int = 16,
    max_bytes: float | None = None,
    progress: bool = False,
) -> torch.Tensor | list[torch.Tensor]:
    """The prefix's output for every image (and its flip variants), stored on the CPU.

    Args:
        prefix: the frozen prefix (run in eval mode; its mode is restored). It returns one
            tensor ``(B, C, h, w)`` or a list of them (a multi-scale encoder, e.g.
            :class:`wsslib.models.encoder_unet.PretrainedEncoder`).
        images: ``(N, 3, H, W)`` in [0, 1].
        flips: cache the four flip variants (:func:`flip_variants`) instead of the image only.
        device: where the prefix runs.
        dtype: storage type (float16 halves the memory; values beyond its range raise).
        batch_size: images per forward pass (flip variants included; small batches run faster on CPU).
        max_bytes: raise :class:`MemoryError` before computing when the cache would be larger.
        progress: tqdm bar over the batches.

    Returns:
        ``(N, 4, C, h, w)`` with ``flips``, else ``(N, C, h, w)``, of ``dtype``; a list of such
        tensors (one per output) when the prefix returns a list.
    """
    from tqdm.auto import tqdm

    was = prefix.training
    prefix.eval()
    try:
        n = len(images)
        probe = prefix(images[:1].to(device))
        multi = not isinstance(probe, torch.Tensor)
        probes = list(probe) if multi else [probe]
        shapes = [(n, 4, *p.shape[1:]) if flips else (n, *p.shape[1:]) for p in probes]
        nbytes = sum(torch.Size(s).numel() for s in shapes) * torch.empty(0, dtype=dtype).element_size()
        if max_bytes is not None and nbytes > max_bytes:
            raise MemoryError(
                f"the feature cache {[tuple(s) for s in shapes]} {dtype} would take {nbytes / 2**30:.2f} GB > the "
                f"limit {max_bytes / 2**30:.2f} GB: freeze fewer blocks, use fewer or smaller images, raise "
                "cache_max_gb, or set cache_features=False")
        outs = [torch.empty(s, dtype=dtype) for s in shapes]
        step = max(1, batch_size // 4) if flips else batch_size
        cl = torch.channels_last  # 1.5-2x faster convolutions on CPU (measured, Lite0 prefix); same values up to rounding
        for i in tqdm(range(0, n, step), desc="caching frozen features", disable=not progress, leave=False):
            x = images[i:i + step].to(device)
            fs = prefix(flip_variants(x).flatten(0, 1).contiguous(memory_format=cl) if flips
                        else x.contiguous(memory_format=cl))
            for out, f in zip(outs, list(fs) if multi else [fs]):
                if flips:
                    f = f.reshape(len(x), 4, *f.shape[1:])
                g = f.to("cpu", dtype)
                if not torch.isfinite(g).all():
                    raise OverflowError(f"prefix features do not fit {dtype} (max |value| "
                                        f"{f.float().abs().max().item():.3g}); use cache_dtype='float32'")
                f = g
                out[i:i + len(x)] = f
        return outs if multi else outs[0]
    finally:
        prefix.train(was)
