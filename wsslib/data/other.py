"""Images that are not endoscopy at all: the far end of an out-of-distribution check.

:func:`non_endoscopy_images` gives, in order of preference, the Oxford-IIIT Pet test images (when
``./data_download.sh oxford-pets`` has put them where :func:`wsslib.data.find_root` looks), else
an offline set that needs no download: crops of matplotlib's two sample photographs (Grace
Hopper's portrait, a product photo; shipped with matplotlib, a dependency) and images of the
synthetic OOD family. The notebook 04 gate table and ``wsslib
bench gate`` use it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["non_endoscopy_images", "resize_images"]


def non_endoscopy_images(root: str | Path | None = None, *, n: int = 200, seed: int = 0,
                         allow_offline: bool = True) -> tuple[list[tuple[str, np.ndarray]], str]:
    """Up to ``n`` non-endoscopy images at their own sizes, and where they came from.

    Args:
        root: the Oxford-IIIT Pet folder (None: the default search path).
        n: the most images (a seeded subset of the pets' test split; the offline set has 48).
        seed: seed of that subset and of the offline crops (a local generator).
        allow_offline: without the pets, return the offline set (else raise).

    Returns:
        ``([(name, (H, W, 3) uint8), ...], source description)``.

    Raises:
        DatasetNotFoundError: no pets and ``allow_offline=False``.
    """
    from wsslib.core.errors import DatasetNotFoundError
    from wsslib.data.base import get_dataset

    rng = np.random.default_rng(seed)
    try:
        pets = get_dataset("oxford-pets", root=root, split="test")
        keep = sorted(rng.permutation(len(pets))[:n].tolist())
        out = [(f"pet_{pets.ids()[i]}", pets[i].image) for i in keep]
        return out, f"oxford-pets test ({len(out)} of {len(pets)}, seeded)"
    except DatasetNotFoundError:
        if not allow_offline:
            raise
    from matplotlib.cbook import get_sample_data
    from PIL import Image

    out = []
    for j, name in enumerate(("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png")):  # 512 x 600, 128 x 128
        with Image.open(get_sample_data(name, asfileobj=False)) as im:
            photo = np.asarray(im.convert("RGB"))
        h, w = photo.shape[:2]
        for c in range(12):
            side = int(rng.integers(min(h, w) // 2, min(h, w) + 1))
            y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
            out.append((f"photo{j}_{c:02d}", np.ascontiguousarray(photo[y:y + side, x:x + side])))
    ood = get_dataset("synthetic", split="ood", n=120, size=256, seed=seed, n_ood=24)
    out += [(f"synthetic_ood_{i:02d}", ood[i].image) for i in range(len(ood))]
    return out[:n], "offline: crops of matplotlib's two sample photos + the synthetic OOD family"


def resize_images(images: list[np.ndarray], size: int) -> torch.Tensor:
    """``(H_i, W_i, 3) uint8`` images -> ``(N, 3, size, size)`` float32 in [0, 1] (bilinear,
    antialiased, clamped: the loaders' resize, :func:`wsslib.data.to_tensors`)."""
    out = torch.empty(len(images), 3, size, size)
    for i, img in enumerate(images):
        x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float().div_(255.0)
        out[i] = F.interpolate(x[None], size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0]
    return out.clamp_(0.0, 1.0)
