"""The dense CRF of GazeMedSeg's refinement step on numpy arrays, without torch.

:func:`dense_crf` is the mean-field inference itself (pydensecrf). It lives outside
:mod:`wsslib.methods.gaze` so that the worker processes of
:func:`wsslib.methods.gaze.pseudo_masks` import only numpy and pydensecrf: a spawned process that
imports ``wsslib.methods.gaze`` (and with it torch) spends about 3 s of CPU before its first image,
this module well under a second. Call :func:`wsslib.methods.gaze.crf_refine` (input checks, the
optional downscaling) rather than this function.
"""

from __future__ import annotations

import numpy as np

from wsslib.core.errors import WSSLibError

__all__ = ["dense_crf"]


def _densecrf():
    try:
        import pydensecrf.densecrf as dcrf
        from pydensecrf.utils import unary_from_softmax
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise WSSLibError(
            "the dense CRF needs pydensecrf: install it with  pip install pydensecrf2  "
            "(or pass crf=False to use the raw gaze heatmaps)"
        ) from e
    return dcrf, unary_from_softmax


def dense_crf(
    image: np.ndarray,
    heatmap: np.ndarray,
    sxy: float,
    srgb: float = 13.0,
    compat: float = 1.0,
    iters: int = 10,
    eps: float = 1e-5,
) -> np.ndarray:
    """Two-label dense CRF on a heatmap: the foreground marginal after ``iters`` mean-field steps.

    Unary ``-log [1 - h, h]`` (``h`` clipped to ``[eps, 1 - eps]``), one bilateral Potts term
    (weight ``compat``, position scale ``sxy`` px, colour scale ``srgb``). Deterministic: the same
    inputs give the same bits in any process.

    Args:
        image: ``(H, W, 3) uint8`` RGB (not checked here).
        heatmap: ``(H, W)`` float in [0, 1].
        sxy, srgb, compat, iters, eps: see :func:`wsslib.methods.gaze.crf_refine`.

    Returns:
        ``(H, W) float32`` foreground probability.

    Raises:
        WSSLibError: pydensecrf is not installed.
    """
    dcrf, unary_from_softmax = _densecrf()
    h, w = heatmap.shape
    p = np.clip(np.asarray(heatmap).astype(np.float32), eps, 1.0 - eps)
    probs = np.stack([1.0 - p, p])  # (2, H, W)
    crf = dcrf.DenseCRF2D(w, h, 2)
    crf.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(probs, clip=eps)))
    crf.addPairwiseBilateral(sxy=float(sxy), srgb=float(srgb), rgbim=np.ascontiguousarray(image), compat=float(compat))
    q = np.asarray(crf.inference(int(iters)), dtype=np.float32)
    return q[1].reshape(h, w).copy()
