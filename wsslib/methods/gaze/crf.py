"""Dense-CRF refinement of gaze heatmaps (GazeMedSeg step 2), via pydensecrf.

:func:`crf_refine` refines one heatmap; :func:`crf_params_for` is THE rule for the CRF's position
scale ``sxy`` on an image of a given size (every caller in the library, through
:func:`~wsslib.methods.gaze.pseudo_masks` and :class:`~wsslib.methods.gaze.GazeConfig`, uses it):
the paper's 80 px were set for Kvasir-SEG, whose shared copy is 512 px on its longer side, so an
image whose longer side is ``L`` px gets ``sxy = 80 * L / 512`` (the same part of the image on any
data set and at any resolution).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from wsslib.core.errors import ShapeError
from wsslib.methods.densecrf import dense_crf

__all__ = ["CRF_KEYS", "PAPER_CRF", "SXY_REFERENCE_SIDE", "crf_downscale", "crf_params_for", "crf_refine",
           "crf_sxy_for", "crf_upscale"]

SXY_REFERENCE_SIDE = 512
"""The paper's ``sxy`` (80 px) holds for an image whose longer side is this long (see :func:`crf_sxy_for`)."""

PAPER_CRF: dict[str, float | int] = {"sxy": 80.0, "srgb": 13.0, "compat": 1.0, "iters": 10}
"""The paper's CRF: position scale 80 px, colour scale 13, Potts weight 1, 10 mean-field iterations."""

CRF_KEYS = ("sxy", "srgb", "compat", "iters", "eps", "max_side")
"""The keyword arguments of :func:`crf_refine` (the keys a ``crf_params`` dict may hold)."""


def crf_sxy_for(
    shape: tuple[int, ...], sxy: float = 80.0, reference_side: float | None = SXY_REFERENCE_SIDE
) -> float:
    """The CRF position scale for an image of ``shape``: ``sxy * max(H, W) / reference_side``.

    Args:
        shape: the image's ``(H, W)`` (or ``(H, W, C)``).
        sxy: the scale in px of an image whose longer side is ``reference_side`` (the paper's 80).
        reference_side: 512 by default; ``None`` keeps ``sxy`` in pixels of every image as it is.

    Example:
        >>> crf_sxy_for((435, 512)), crf_sxy_for((128, 96)), crf_sxy_for((128, 96), reference_side=None)
        (80.0, 20.0, 80.0)
    """
    if reference_side is None:
        return float(sxy)
    if not reference_side > 0:
        raise ValueError(f"reference_side must be positive (or None), got {reference_side}")
    h, w = (int(v) for v in tuple(shape)[:2])
    return float(sxy) * max(h, w) / float(reference_side)


def crf_params_for(
    shape: tuple[int, ...],
    params: dict | None = None,
    reference_side: float | None = SXY_REFERENCE_SIDE,
) -> dict:
    """Keyword arguments of :func:`crf_refine` for an image of ``shape``: the paper's CRF
    (:data:`PAPER_CRF`) updated with ``params``, its ``sxy`` scaled by :func:`crf_sxy_for`.

    Args:
        shape: the image's ``(H, W)`` (or ``(H, W, C)``).
        params: overrides, keys among :data:`CRF_KEYS` (``sxy`` in px of a ``reference_side`` image).
        reference_side: see :func:`crf_sxy_for` (``None``: ``sxy`` in px of the image itself).

    Raises:
        ValueError: an unknown key.

    Example:
        >>> crf_params_for((256, 200), {"max_side": 128})
        {'sxy': 40.0, 'srgb': 13.0, 'compat': 1.0, 'iters': 10, 'max_side': 128}
    """
    params = dict(params or {})
    unknown = sorted(set(params) - set(CRF_KEYS))
    if unknown:
        raise ValueError(f"unknown CRF parameter(s) {unknown}; expected among {CRF_KEYS}")
    out = {**PAPER_CRF, **params}
    out["sxy"] = crf_sxy_for(shape, float(out["sxy"]), reference_side)
    return out


def _check(image: np.ndarray, heatmap: np.ndarray | torch.Tensor) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        got = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ShapeError(f"image: expected an (H, W, 3) uint8 numpy array, got {got}")
    h_map = heatmap.detach().cpu().numpy() if isinstance(heatmap, torch.Tensor) else np.asarray(heatmap)
    if h_map.shape != image.shape[:2]:
        raise ShapeError(f"heatmap: expected shape {image.shape[:2]} (the image's H, W), got {h_map.shape}")
    return h_map


def crf_downscale(
    image: np.ndarray, heatmap: np.ndarray | torch.Tensor, sxy: float = 80.0, max_side: int | None = None
) -> tuple[np.ndarray, np.ndarray, float]:
    """Check the CRF's inputs and shrink them to ``max_side`` (the first half of :func:`crf_refine`).

    Args:
        image: ``(H, W, 3) uint8`` RGB.
        heatmap: ``(H, W)`` float in [0, 1] (numpy or torch).
        sxy: position scale in px of ``image``.
        max_side: see :func:`crf_refine` (``None``: leave the size alone).

    Returns:
        ``(image_s (h, w, 3) uint8, heatmap_s (h, w) float32, sxy_s)``: the inputs of
        :func:`wsslib.methods.densecrf.dense_crf` (``sxy`` scaled like the image).

    Raises:
        ShapeError: wrong shapes or dtype.
    """
    h_map = _check(image, heatmap)
    h, w = h_map.shape
    if max_side is None or max(h, w) <= int(max_side):
        return image, h_map.astype(np.float32, copy=False), float(sxy)
    scale = int(max_side) / max(h, w)
    small = (max(1, round(h * scale)), max(1, round(w * scale)))
    img_t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
    img_s = F.interpolate(img_t, size=small, mode="bilinear", align_corners=False, antialias=True)
    img_s = img_s[0].round_().clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    heat_s = F.interpolate(torch.from_numpy(h_map.astype(np.float32))[None, None], size=small, mode="bilinear",
                           align_corners=False, antialias=True)[0, 0].clamp_(0.0, 1.0)
    return img_s, heat_s.numpy(), float(sxy) * scale


def crf_upscale(q: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """The CRF's ``(h, w)`` output at ``size = (H, W)`` (bilinear, clamped; the second half of
    :func:`crf_refine`): ``(H, W) float32`` CPU tensor (``q`` itself when already that size)."""
    t = torch.from_numpy(np.ascontiguousarray(q, dtype=np.float32))
    if tuple(t.shape) == tuple(size):
        return t
    return F.interpolate(t[None, None], size=tuple(size), mode="bilinear", align_corners=False)[0, 0].clamp_(0.0, 1.0)


def crf_refine(
    image: np.ndarray,
    heatmap: np.ndarray | torch.Tensor,
    sxy: float = 80.0,
    srgb: float = 13.0,
    compat: float = 1.0,
    iters: int = 10,
    eps: float = 1e-5,
    max_side: int | None = None,
) -> torch.Tensor:
    """Dense-CRF refinement of a heatmap (the paper's ``crf_inference``), soft output.

    Two labels (background, foreground) with unary ``-log [1 - h, h]`` (``h`` clipped to
    ``[eps, 1 - eps]``), one bilateral pairwise term (Potts ``compat``; position scale ``sxy``
    px, colour scale ``srgb``), ``iters`` mean-field iterations, via ``pydensecrf``
    (:func:`wsslib.methods.densecrf.dense_crf`).

    Args:
        image: ``(H, W, 3) uint8`` RGB.
        heatmap: ``(H, W)`` float in [0, 1] (numpy or torch).
        sxy, srgb, compat, iters: the paper's values by default. ``sxy`` is in pixels of
            ``image`` as given: :func:`crf_params_for` scales the paper's 80 px to the image
            (``crf_refine(image, heatmap, **crf_params_for(image.shape))``), which is what
            :func:`~wsslib.methods.gaze.pseudo_masks` does.
        max_side: if the image's longest side exceeds it, run the CRF on a copy downscaled to
            that longest side (antialiased; ``sxy`` scaled by the same factor, so the pairwise
            term covers the same part of the image) and upsample the soft map bilinearly. The
            CRF's cost is linear in the pixels: ``max_side=256`` on a 512 px image is ~4x faster.
            ``None`` (default): native resolution, as the paper.

    Returns:
        ``(H, W) float32`` CPU tensor: the CRF's marginal probability of the foreground.

    Raises:
        ShapeError: wrong shapes or dtype.
        WSSLibError: pydensecrf is not installed.
    """
    img_s, heat_s, sxy_s = crf_downscale(image, heatmap, sxy, max_side)
    q = dense_crf(img_s, heat_s, sxy_s, srgb=srgb, compat=compat, iters=iters, eps=eps)
    return crf_upscale(q, image.shape[:2])
