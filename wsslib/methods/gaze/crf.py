"""Dense-CRF refinement of gaze heatmaps (GazeMedSeg step 2), via pydensecrf."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from wsslib.core.errors import ShapeError, WSSLibError

__all__ = ["crf_refine"]



def _densecrf():
    try:
        import pydensecrf.densecrf as dcrf
        from pydensecrf.utils import unary_from_softmax
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise WSSLibError(
            "crf_refine needs pydensecrf: install it with  pip install pydensecrf2  "
            "(or pass crf=False to use the raw gaze heatmaps)"
        ) from e
    return dcrf, unary_from_softmax


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
    px, colour scale ``srgb``), ``iters`` mean-field iterations, via ``pydensecrf``.

    Args:
        image: ``(H, W, 3) uint8`` RGB.
        heatmap: ``(H, W)`` float in [0, 1] (numpy or torch).
        sxy, srgb, compat, iters: the paper's values by default. ``sxy`` is in pixels of
            ``image``: the paper ran at the original Kvasir-SEG resolution, the shared copy is
            downsized about 1.2x (scale ``sxy`` by the downsizing factor to match exactly).
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
    dcrf, unary_from_softmax = _densecrf()
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        got = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ShapeError(f"image: expected an (H, W, 3) uint8 numpy array, got {got}")
    h_map = heatmap.detach().cpu().numpy() if isinstance(heatmap, torch.Tensor) else np.asarray(heatmap)
    if h_map.shape != image.shape[:2]:
        raise ShapeError(f"heatmap: expected shape {image.shape[:2]} (the image's H, W), got {h_map.shape}")
    h, w = h_map.shape
    if max_side is not None and max(h, w) > int(max_side):
        scale = int(max_side) / max(h, w)
        small = (max(1, round(h * scale)), max(1, round(w * scale)))
        img_t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
        img_s = F.interpolate(img_t, size=small, mode="bilinear", align_corners=False, antialias=True)
        img_s = img_s[0].round_().clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
        heat_s = F.interpolate(torch.from_numpy(h_map.astype(np.float32))[None, None], size=small, mode="bilinear",
                               align_corners=False, antialias=True)[0, 0].clamp_(0.0, 1.0)
        q_s = crf_refine(img_s, heat_s, sxy=sxy * scale, srgb=srgb, compat=compat, iters=iters, eps=eps)
        return F.interpolate(q_s[None, None], size=(h, w), mode="bilinear", align_corners=False)[0, 0].clamp_(0.0, 1.0)
    p = np.clip(h_map.astype(np.float32), eps, 1.0 - eps)
    probs = np.stack([1.0 - p, p])  # (2, H, W)
    crf = dcrf.DenseCRF2D(w, h, 2)
    crf.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(probs, clip=eps)))
    crf.addPairwiseBilateral(sxy=sxy, srgb=srgb, rgbim=np.ascontiguousarray(image), compat=compat)
    q = np.asarray(crf.inference(int(iters)), dtype=np.float32)
    return torch.from_numpy(q[1].reshape(h, w).copy())


