"""Monte Carlo dropout and CAMs from ONE backbone pass: the fast exact inference path.

A :class:`~wsslib.models.Classifier` is ``fc(dropout(pool(features(x))))``. Because dropout sits
after global pooling, the backbone is deterministic and everything the AAX protocol needs per
model comes from a single forward pass:

- the pooled embedding ``z`` -> K dropout heads sampled at once -> ``p`` and ``u``;
- the target-layer activations ``A`` and ``d score / d A`` (a backward through the head and the
  pooling only) -> a gradient-weighted CAM (Grad-CAM, XGrad-CAM, HiResCAM), with the expected
  head (dropout off), exactly as :func:`wsslib.explain.cams.compute_cams` computes it.

The naive equivalent runs K full stochastic passes plus pytorch-grad-cam's forward and full
backward; ``wsslib bench aax`` times both.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from wsslib.explain.cams import FAST_METHODS, fast_cams, keep_param_grads, model_num_classes, resolve_targets
from wsslib.explain.uncertainty import check_dropout_head, heads_from_embedding, sample_dropout_masks
from wsslib.core.utils import autocast, check_shape, eval_mode

__all__ = ["Explained", "predict_explain"]


class Explained(NamedTuple):
    """Per-image outputs of :func:`predict_explain`.

    Attributes:
        p: (B,) mean P(class 1) over the K dropout passes.
        u: (B,) population standard deviation of P(class 1) over the K passes.
        probs: (K, B) the passes themselves.
        cams: (B, H, W) float32 in [0, 1], the CAM of the expected (dropout-off) model.
        embedding: (B, C) float32, the pooled backbone features ``model.embed(x)`` of the same
            pass (what the out-of-distribution gate of :mod:`wsslib.methods.ood` scores).
    """

    p: torch.Tensor
    u: torch.Tensor
    probs: torch.Tensor
    cams: torch.Tensor
    embedding: torch.Tensor | None = None


def predict_explain(
    model: nn.Module,
    images: torch.Tensor,
    k: int = 20,
    method: str = "xgradcam",
    targets: int | torch.Tensor | None = 1,
    batch_size: int = 16,
    generator: torch.Generator | None = None,
    masks: torch.Tensor | None = None,
    amp: bool = False,
) -> Explained:
    """MC-dropout prediction and CAM of every image with one backbone pass per chunk.

    Equal to ``mc_predict(model, images, k, masks=masks)`` and ``compute_cams(model, images,
    method, targets)`` (tested), at about the cost of one forward pass.

    Args:
        model: a :class:`wsslib.models.Classifier`.
        images: (B, 3, H, W) float in [0, 1]; moved chunk by chunk to the model's device.
        k: dropout passes K >= 1.
        method: "gradcam", "xgradcam" or "hirescam" (the methods with a fast path).
        targets: the CAM's class: an int for every image (default 1, the lesion class), a (B,)
            tensor, or None for each image's predicted class.
        batch_size: images per pass.
        generator: seeds the dropout masks; ``masks`` (K, B, C) fixes them instead.
        amp: the backbone pass and its CAM gradients in float16 autocast on CUDA (faster, about
            half the activation memory; maps and probabilities come back float32); a no-op on
            the CPU and MPS (:func:`~wsslib.core.utils.amp_enabled`).

    Returns:
        :class:`Explained` with p, u (B,), probs (K, B), cams (B, H, W) and embedding (B, C) on
        ``images``' device.
    """
    if method not in FAST_METHODS:
        raise ValueError(f"method={method!r} has no fast path; choose one of {sorted(FAST_METHODS)}")
    check_shape("images", images, (None, 3, None, None))
    dropout, fc = check_dropout_head(model)
    if int(k) < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    n, _, h, w = images.shape
    if masks is not None:
        check_shape("masks", masks, (int(k), n, fc.in_features))
    num_classes = model_num_classes(model)
    tgt = resolve_targets(targets, n, num_classes)
    device = next(model.parameters()).device
    probs = torch.empty((int(k), n), dtype=torch.float32, device=images.device)
    cams = torch.empty((n, h, w), dtype=torch.float32, device=images.device)
    emb = torch.empty((n, fc.in_features), dtype=torch.float32, device=images.device)
    with eval_mode(model), keep_param_grads(model):
        for s in range(0, n, batch_size):
            x = images[s : s + batch_size].to(device=device, dtype=torch.float32)
            t = None if tgt is None else tgt[s : s + batch_size]
            with autocast(device, amp):
                maps, z = fast_cams(model, x, t, FAST_METHODS[method], num_classes, with_embedding=True)
            maps, z = maps.float(), z.float()
            m = masks[:, s : s + batch_size] if masks is not None else sample_dropout_masks(
                int(k), x.shape[0], fc.in_features, dropout.p, generator=generator)
            with torch.no_grad():
                probs[:, s : s + batch_size] = heads_from_embedding(z, fc, m.to(device=z.device, dtype=torch.float32)).to(images.device)
            cams[s : s + batch_size] = maps.to(images.device)
            emb[s : s + batch_size] = z.detach().to(images.device, torch.float32)
    return Explained(p=probs.mean(0), u=probs.std(0, correction=0), probs=probs, cams=cams, embedding=emb)
