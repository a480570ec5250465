"""Per-image map operations shared by CAMs, CCAM and gaze heatmaps."""

from __future__ import annotations

import torch

from wsslib.core.utils import check_shape

__all__ = ["GRAD_CAM_EPS", "minmax_per_image"]

#: pytorch-grad-cam's guard in utils/image.py ``scale_cam_image``: (x - min) / (1e-7 + max(x - min))
GRAD_CAM_EPS = 1e-7


def minmax_per_image(maps: torch.Tensor, eps: float = GRAD_CAM_EPS, inplace: bool = False) -> torch.Tensor:
    """Scale each map to [0, 1]: ``(m - min) / (max(m - min) + eps)``.

    The one min-max of wsslib (CAMs, CCAM maps, gaze heatmaps). With the default ``eps`` it is
    pytorch-grad-cam's formula, so the fast CAM path equals the library's. ``eps=0`` gives the
    exact ``(m - min) / (max - min)`` (the maximum maps to exactly 1), as the gaze heatmap of
    GazeMedSeg's notebook does. A constant map becomes all zeros (never NaN) either way.

    Args:
        maps: ``(B, H, W)`` float.
        eps: guard of the division (>= 0).
        inplace: write into ``maps`` (saves a copy of large heatmap batches).

    Returns:
        ``(B, H, W)``, same dtype and device (``maps`` itself when ``inplace``).

    Example:
        >>> minmax_per_image(torch.tensor([[[1.0, 3.0]], [[2.0, 2.0]]]), eps=0).tolist()
        [[[0.0, 1.0]], [[0.0, 0.0]]]
    """
    check_shape("maps", maps, (None, None, None))
    out = maps if inplace else maps.clone()
    flat = out.view(out.shape[0], -1) if out.is_contiguous() else out.reshape(out.shape[0], -1)
    lo, hi = flat.amin(1), flat.amax(1)  # (faster than torch.aminmax(dim=1) on CPU)
    span = hi - lo
    if eps > 0:
        out.sub_(lo[:, None, None]).div_((span + eps)[:, None, None])
        return out
    const = ~(span > 1e-12 * hi.abs())  # constant maps, incl. all-zero ones
    out.sub_(lo[:, None, None]).div_(torch.where(const, torch.ones_like(span), span)[:, None, None])
    if bool(const.any()):
        out[const] = 0.0
    return out
