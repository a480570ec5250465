"""Synthetic endoscopy-like images with exact lesion masks, boxes and reader-like gaze.

The project's embedded default data set: it needs no download and makes classification, CAM and
gaze pipelines meaningful on a CPU in minutes.

Family ``"in"`` (in-distribution):

* background: pink/red mucosa from smooth random fields (band-limited random Fourier series): vignetted
  illumination, folds and vessels drawn along level sets of smooth fields, fine grain, and
  a few specular highlights;
* positives (label 1) hold 1-3 lesions with irregular outlines
  ``r(theta) = r0 * (1 + sum_k a_k cos(k theta + phi_k))``, 3-25 % of the image in all, with
  their own granular (spotted) texture, a reddish tint and a contrast that is sometimes subtle;
* distractors of the same sizes but smooth (yellowish bubbles, or mucosa-coloured lumps with a
  specular highlight) sit in every negative and in half of the positives, so neither "a blob" nor
  "a reddish blob" separates the classes: the granular texture does.

Family ``"ood"``: grey-green striped background, star-shaped "lesions" with a checker texture
and smooth square distractors, for open-set experiments (labels and masks as above).

Every image ``i`` is drawn from its own generator ``np.random.default_rng([seed, family_code, i])``,
so any image is reproducible on its own, whatever else is generated with it.
"""

from __future__ import annotations

import math
from functools import cached_property, lru_cache
from typing import Literal

import numpy as np

from wsslib.data.base import Sample, WSSDataset, register_dataset

Family = Literal["in", "ood"]
FAMILY_CODES: dict[str, int] = {"in": 0, "ood": 1}
SPLITS = ("train", "valid", "test", "ood")
SPLIT_FRACTIONS = (0.70, 0.15, 0.15)

# Smooth fields (shading, colour, folds, vessels), each with spectrum exp(-2 pi^2 (k / c)^2),
# k in cycles per image (correlation length ~ S / c), c listed here. They are drawn directly as
# their few low-frequency Fourier coefficients (so their look does not depend on the image size)
# and expanded to pixels with two small matrix products.
_SMOOTH_SCALES = (5.0, 8.0, 14.0, 28.0)
_CHUNK = 128  # images per batched field synthesis
_GAZE_ON_LESION = 0.87  # share of a positive image's fixations aimed at its lesions


@lru_cache(maxsize=8)
def _field_bases(size: int):
    """Per smooth field: its Fourier amplitudes ``(2K+1, K+1)``, row basis ``(S, 2(2K+1))`` and
    column basis ``(K+1, S)``; then the grain field's band-pass ``(M,)`` on its support
    ``(S, S//2+1) bool`` in the ``rfft2`` layout."""
    pos = (np.arange(size) + 0.5) / size
    bases = []
    for c in _SMOOTH_SCALES:
        k = int(np.ceil(0.6 * c))  # amplitude exp(-2 pi^2 (f / c)^2) < 1e-3 beyond
        ky, kx = np.arange(-k, k + 1)[:, None], np.arange(k + 1)[None, :]
        amp = np.exp(-2.0 * np.pi**2 * (ky**2 + kx**2) / c**2)
        amp[k, 0] = 0.0  # zero mean
        rows = np.exp(2j * np.pi * pos[:, None] * ky.T)  # (S, 2K+1)
        rows = np.concatenate([rows.real, -rows.imag], axis=1)  # Re(R T) = [Re R, -Im R] @ [Re T; Im T]
        cols = np.exp(2j * np.pi * kx.T * pos[None, :])  # (K+1, S)
        bases.append((amp.astype(np.float32), rows.astype(np.float32), cols.astype(np.complex64)))
    # granular texture: band-pass noise, spot period ~6 px at 128 px (at least 3 px)
    f = np.hypot(np.fft.fftfreq(size)[:, None], np.fft.rfftfreq(size)[None, :])
    f0 = 1.0 / max(3.0, 6.0 * size / 128)
    band = np.exp(-0.5 * ((f - f0) / (0.3 * f0)) ** 2).astype(np.float32)
    support = band > 1e-3
    support[0, 0] = False  # zero mean
    return bases, band[support], support


def _draw_fields(rngs: list[np.random.Generator], size: int) -> np.ndarray:
    """Zero-mean, unit-variance random fields ``(B, 5, S, S) float32`` (shade, colour, fold, vessel,
    grain), one image per generator; each generator's draws are the same whatever the batch."""
    bases, band, support = _field_bases(size)
    n_coef = sum(a.size for a, _, _ in bases) + band.size
    coef = np.stack([r.standard_normal((2, n_coef), dtype=np.float32) for r in rngs])
    coef = coef[:, 0] + 1j * coef[:, 1]  # (B, n_coef) complex64
    out = np.empty((len(rngs), len(bases) + 1, size, size), np.float32)
    start = 0
    for j, (amp, rows, cols) in enumerate(bases):
        t = (coef[:, start : start + amp.size].reshape(-1, *amp.shape) * amp) @ cols  # (B, 2K+1, S)
        np.matmul(rows, np.concatenate([t.real, t.imag], axis=1), out=out[:, j])
        start += amp.size
    spec = np.zeros((len(rngs), size, size // 2 + 1), np.complex64)
    spec[:, support] = coef[:, start:] * band
    out[:, -1] = np.fft.irfft2(spec, s=(size, size))
    out /= np.sqrt(np.einsum("bfij,bfij->bf", out, out) / size**2)[..., None, None] + 1e-8
    return out


def _label_of(index: np.ndarray, pos_fraction: float) -> np.ndarray:
    """Labels ``(n,) int64`` fixed by the index alone, so every prefix holds ``pos_fraction`` positives."""
    index = np.asarray(index, dtype=np.float64)
    return (np.floor((index + 1) * pos_fraction) - np.floor(index * pos_fraction)).astype(np.int64)


class _Canvas:
    """One image being painted: float RGB ``(3, S, S)`` in [0, 1] plus its masks."""

    def __init__(self, rng: np.random.Generator, size: int) -> None:
        self.rng, self.size = rng, size
        self.img = np.zeros((3, size, size), np.float32)
        self.placed: list[tuple[float, float, float]] = []  # (cx, cy, radius) of every blob
        self.lesions: list[np.ndarray] = []  # (S, S) bool, one per lesion
        self.distractors: list[np.ndarray] = []

    def place(self, r_max: float) -> tuple[float, float]:
        """A centre keeping the blob mostly inside the image and clear of earlier blobs."""
        lo, hi = 0.55 * r_max, max(0.55 * r_max, self.size - 0.55 * r_max)
        for _ in range(30):
            cx, cy = self.rng.uniform(lo, hi, 2).tolist()
            if all(np.hypot(cx - x, cy - y) > 0.85 * (r_max + r) for x, y, r in self.placed):
                break
        self.placed.append((cx, cy, r_max))
        return cx, cy

    def blob(self, r0: float, harmonics: np.ndarray, amps: np.ndarray, phases: np.ndarray):
        """Rasterise ``r(theta) = r0 (1 + sum a_k cos(k theta + phi_k))`` at a new centre.

        Returns ``(win, alpha, mask, u, dx, dy)``: the window's slices, the antialiased coverage
        ``(h, w) float32``, the exact mask ``(h, w) bool`` (coverage > 0.5), the normalised radius
        ``u = d / r(theta)`` ``(h, w)``, and the offsets from the centre in pixels, ``dx (1, w)`` and
        ``dy (h, 1)``.
        """
        r_max = r0 * (1.0 + amps.sum())
        cx, cy = self.place(r_max)
        y0, y1 = max(0, int(cy - r_max - 2)), min(self.size, int(cy + r_max + 3))
        x0, x1 = max(0, int(cx - r_max - 2)), min(self.size, int(cx + r_max + 3))
        dy = np.arange(y0, y1, dtype=np.float32)[:, None] + (0.5 - cy)
        dx = np.arange(x0, x1, dtype=np.float32)[None, :] + (0.5 - cx)
        d = np.hypot(dx, dy)
        theta = np.arctan2(dy, dx)
        r = r0 * (1.0 + np.tensordot(amps, np.cos(harmonics[:, None, None] * theta + phases[:, None, None]), 1))
        alpha = np.clip(r - d + 0.5, 0.0, 1.0).astype(np.float32)
        return (slice(y0, y1), slice(x0, x1)), alpha, alpha > 0.5, d / r, dx, dy

    def irregular(self, r0: float, irregularity: float):
        """:meth:`blob` with random harmonics 2..6 of amplitude up to ``irregularity / k``."""
        k = np.arange(2, 7, dtype=np.float32)
        amps = (irregularity * self.rng.uniform(0.0, 1.0, k.size) / k).astype(np.float32)
        phases = self.rng.uniform(0.0, 2 * np.pi, k.size).astype(np.float32)
        return self.blob(r0, k, amps, phases)

    def full_mask(self, win: tuple[slice, slice], mask: np.ndarray) -> np.ndarray:
        """A window's mask ``(h, w)`` placed in an empty ``(S, S) bool`` mask."""
        out = np.zeros((self.size, self.size), bool)
        out[win] = mask
        return out

    def paint(self, win: tuple[slice, slice], alpha: np.ndarray, rgb: np.ndarray) -> None:
        """Blend ``rgb`` (``(3, h, w)`` or ``(3, 1, 1)``) over the window with coverage ``alpha (h, w)``."""
        view = self.img[:, win[0], win[1]]
        view += alpha * (rgb - view)

    def specular(self, cx: float, cy: float, radius: float, strength: float) -> None:
        """A small white highlight."""
        y0, y1 = max(0, int(cy - 3 * radius)), min(self.size, int(cy + 3 * radius) + 1)
        x0, x1 = max(0, int(cx - 3 * radius)), min(self.size, int(cx + 3 * radius) + 1)
        gy = np.exp(-np.square(np.arange(y0, y1, dtype=np.float32) + (0.5 - cy)) / (2 * radius**2))
        gx = np.exp(-np.square(np.arange(x0, x1, dtype=np.float32) + (0.5 - cx)) / (2 * radius**2))
        self.paint((slice(y0, y1), slice(x0, x1)), strength * gy[:, None] * gx[None, :], np.ones((3, 1, 1), np.float32))


def _rgb(r: float, g: float, b: float) -> np.ndarray:
    """A colour ``(3, 1, 1) float32`` that broadcasts over ``(3, h, w)``."""
    return np.array([r, g, b], np.float32)[:, None, None]


def _lesion_radii(rng: np.random.Generator, size: int, k: int) -> list[float]:
    """Radii in pixels of ``k`` blobs whose areas add up to 3-25 % of the image (each >= 1.2 %)."""
    total = np.exp(rng.uniform(np.log(0.03), np.log(0.25)))
    shares = np.maximum(total * rng.dirichlet(np.full(k, 2.0)), 0.012)
    return np.sqrt(shares * size * size / np.pi).tolist()


def _ridge(field: np.ndarray, width: float) -> np.ndarray:
    """Thin lines along the zero level set of ``field``: ``(1 - (field / width)^2)^2`` clipped at 0."""
    t = np.maximum(1.0 - np.square(field / width), 0.0)
    return t * t


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates ``(yy, xx)``, each ``(S, S) float32`` in (0, 1)."""
    yy, xx = (np.mgrid[0:size, 0:size].astype(np.float32) + 0.5) / size
    return yy, xx


def _compose_in(cv: _Canvas, fields: np.ndarray, label: int) -> None:
    """Paint an in-distribution image (pink mucosa, granular lesions, smooth distractors)."""
    rng, size = cv.rng, cv.size
    shade, colour, fold, vessel, grain = fields
    yy, xx = _grid(size)
    lx, ly = (0.5 + 0.12 * rng.standard_normal(2)).tolist()
    illum = np.clip(1.08 - rng.uniform(0.8, 1.5) * ((xx - lx) ** 2 + (yy - ly) ** 2) + 0.1 * shade, 0.3, 1.15)
    base = _rgb(rng.uniform(0.74, 0.9), rng.uniform(0.36, 0.5), rng.uniform(0.32, 0.44))
    folds = _ridge(fold, rng.uniform(0.15, 0.3)) * rng.uniform(0.12, 0.3)
    vessels = _ridge(vessel, 0.09) * (colour > rng.uniform(-0.8, 0.4)) * rng.uniform(0.15, 0.45)
    img = base * (1.0 + 0.05 * colour * _rgb(1.0, 1.6, 1.6))
    img += vessels * (_rgb(0.5, 0.12, 0.16) - img)
    cv.img = img * ((1.0 - folds) * illum) + 0.012 * grain
    for _ in range(rng.integers(0, 4)):  # wet-surface highlights, in both classes
        cv.specular(*rng.uniform(0, size, 2).tolist(), rng.uniform(0.6, 1.6) * size / 128, rng.uniform(0.5, 0.95))

    n_distract = int(rng.integers(1, 4) if label == 0 else rng.integers(0, 3) * (rng.random() < 0.5))
    for r0 in _lesion_radii(rng, size, max(n_distract, 1))[:n_distract]:
        win, alpha, mask, u, dx, dy = cv.irregular(r0, rng.uniform(0.1, 0.5))
        dome = 1.0 + rng.uniform(0.05, 0.2) * (1.0 - np.clip(u, 0, 1) ** 2) - 0.08 * (dx + dy) / (2 * r0)
        if rng.random() < 0.5:  # yellowish bubble / debris
            rgb = _rgb(rng.uniform(0.8, 0.95), rng.uniform(0.66, 0.82), rng.uniform(0.3, 0.5))
        else:  # smooth mucosa-coloured lump, tinted like a lesion
            rgb = base * _rgb(1.0, rng.uniform(0.72, 1.0), rng.uniform(0.75, 1.0))
        cv.paint(win, alpha * rng.uniform(0.55, 1.0), rgb * (dome * illum[win]))
        if rng.random() < 0.6:
            cy, cx = (np.argwhere(mask)[rng.integers(mask.sum())] + [win[0].start, win[1].start]).tolist()
            cv.specular(cx + 0.5, cy + 0.5, rng.uniform(0.8, 2.0) * size / 128, rng.uniform(0.6, 0.95))
        cv.distractors.append(cv.full_mask(win, mask))

    if label == 1:
        k = int(rng.choice([1, 2, 3], p=[0.6, 0.3, 0.1]))
        for r0 in _lesion_radii(rng, size, k):
            win, alpha, mask, u, dx, dy = cv.irregular(r0, rng.uniform(0.3, 0.9))
            tint = base * _rgb(rng.uniform(0.92, 1.06), rng.uniform(0.68, 0.94), rng.uniform(0.72, 0.97))
            spots = 1.0 / (1.0 + np.exp(-5.0 * (grain[win] - rng.uniform(0.1, 0.7))))
            texture = 1.0 - rng.uniform(0.3, 0.55) * spots + 0.06 * grain[win]
            dome = 1.0 + rng.uniform(0.0, 0.15) * (1.0 - np.clip(u, 0, 1) ** 2)
            cv.paint(win, alpha * rng.uniform(0.7, 1.0), tint * (texture * dome * illum[win]))
            cv.lesions.append(cv.full_mask(win, mask))


def _compose_ood(cv: _Canvas, fields: np.ndarray, label: int) -> None:
    """Paint an out-of-distribution image (grey-green stripes, checkered stars, smooth squares)."""
    rng, size = cv.rng, cv.size
    shade, colour, fold, vessel, _ = fields
    yy, xx = _grid(size)
    phi = rng.uniform(0, np.pi)
    period = rng.uniform(6, 12) / 128
    stripes = 0.5 + 0.5 * np.sin(2 * np.pi * (xx * math.cos(phi) + yy * math.sin(phi)) / period + 2.5 * fold)
    base = _rgb(rng.uniform(0.42, 0.58), rng.uniform(0.55, 0.7), rng.uniform(0.45, 0.6))
    illum = np.clip(0.95 + 0.12 * shade, 0.5, 1.1)
    rings = 1.0 - 0.25 * _ridge(vessel, 0.15)
    cv.img = base * ((1.0 - rng.uniform(0.15, 0.3) * stripes) * illum * rings) + 0.01 * colour

    n_distract = int(rng.integers(1, 4) if label == 0 else rng.integers(0, 3))
    for r0 in _lesion_radii(rng, size, max(n_distract, 1))[:n_distract]:
        # rounded square: r(theta) with a 4th harmonic
        square = np.array([rng.uniform(0, np.pi)], np.float32)
        win, alpha, mask, *_ = cv.blob(r0, np.array([4.0], np.float32), np.array([0.12], np.float32), square)
        rgb = _rgb(rng.uniform(0.3, 0.5), rng.uniform(0.3, 0.5), rng.uniform(0.55, 0.8))
        cv.paint(win, alpha, rgb * illum[win])
        cv.distractors.append(cv.full_mask(win, mask))

    if label == 1:
        k = int(rng.choice([1, 2, 3], p=[0.6, 0.3, 0.1]))
        for r0 in _lesion_radii(rng, size, k):
            arms = np.array([rng.integers(4, 8)], np.float32)
            phase = rng.uniform(0, np.pi, 1).astype(np.float32)
            win, alpha, mask, u, dx, dy = cv.blob(r0, arms, np.array([0.45], np.float32), phase)
            cell = rng.uniform(3, 6) * size / 128
            checker = (np.floor(dx / cell) + np.floor(dy / cell)) % 2
            rgb = _rgb(rng.uniform(0.75, 0.95), rng.uniform(0.6, 0.8), rng.uniform(0.2, 0.35))
            cv.paint(win, alpha, rgb * (1.0 - 0.35 * checker))
            cv.lesions.append(cv.full_mask(win, mask))


def _boxes(lesions: list[np.ndarray]) -> np.ndarray:
    """Boxes ``(K, 4) float32`` (x_min, y_min, x_max + 1, y_max + 1) of each lesion's mask ``(S, S) bool``."""
    out = np.zeros((len(lesions), 4), np.float32)
    for j, m in enumerate(lesions):
        rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
        out[j] = cols[0], rows[0], cols[-1] + 1, rows[-1] + 1
    return out


def _gaze(rng: np.random.Generator, lesion: np.ndarray, distractors: np.ndarray) -> np.ndarray:
    """Reader-like fixations ``(N, 3) float32``: x, y in [0, 1] and duration in ms.

    ``N`` is lognormal (median 25) in 5..99. On a positive image (``lesion`` non-empty) ~87 % of the
    fixations are points of the lesion mask plus ~1 px jitter; the rest, and all of a negative
    image's, fall on the distractors (``distractors`` mask) or anywhere on the background.
    Durations are gamma-distributed (mean 250 ms) in 80..1000 ms.
    """
    size = lesion.shape[0]
    n = int(np.clip(np.round(np.exp(rng.normal(np.log(25.0), 0.55))), 5, 99))
    target = np.full(n, 2)  # 0: lesion, 1: distractor, 2: background
    if lesion.any():
        target[rng.random(n) < _GAZE_ON_LESION] = 0
    if distractors.any():
        target[(target == 2) & (rng.random(n) < 0.5)] = 1
    pools = [np.flatnonzero(lesion), np.flatnonzero(distractors), np.flatnonzero(~lesion & ~distractors)]
    flat = np.empty(n, np.int64)
    for t, pool in enumerate(pools):
        sel = target == t
        flat[sel] = pool[rng.integers(0, pool.size, sel.sum())] if pool.size else rng.integers(0, size * size, sel.sum())
    xy = np.stack([flat % size, flat // size], 1) + 0.5 + rng.normal(0.0, 0.7, (n, 2))
    xy = np.clip(xy / size, 0.0, 1.0)
    duration = np.clip(rng.gamma(4.0, 62.5, n), 80.0, 1000.0)
    return np.column_stack([xy, duration]).astype(np.float32)


def _generate(indices, size: int, seed: int, family: Family, pos_fraction: float) -> dict:
    """Images number ``indices`` of the (seed, family) stream; see :func:`generate_synthetic`."""
    if family not in FAMILY_CODES:
        raise ValueError(f"family must be one of {sorted(FAMILY_CODES)}, got {family!r}")
    if not 0.0 <= pos_fraction <= 1.0:
        raise ValueError(f"pos_fraction must lie in [0, 1], got {pos_fraction}")
    if size < 16:
        raise ValueError(f"size must be at least 16 px, got {size}")
    indices = np.asarray(indices, dtype=np.int64)
    n = indices.size
    compose = _compose_in if family == "in" else _compose_ood
    labels = _label_of(indices, pos_fraction)
    images = np.empty((n, size, size, 3), np.uint8)
    masks = np.zeros((n, size, size), bool)
    boxes: list[np.ndarray] = []
    gaze: list[np.ndarray] = []
    for start in range(0, n, _CHUNK):
        chunk = range(start, min(n, start + _CHUNK))
        rngs = [np.random.default_rng([seed, FAMILY_CODES[family], int(indices[b])]) for b in chunk]
        fields = _draw_fields(rngs, size)
        for b, rng, f in zip(chunk, rngs, fields):
            cv = _Canvas(rng, size)
            compose(cv, f, int(labels[b]))
            images[b] = np.clip(cv.img.transpose(1, 2, 0) * 255.0 + 0.5, 0, 255).astype(np.uint8)
            lesion = np.logical_or.reduce(cv.lesions) if cv.lesions else np.zeros((size, size), bool)
            distract = np.logical_or.reduce(cv.distractors) if cv.distractors else np.zeros((size, size), bool)
            masks[b] = lesion
            boxes.append(_boxes(cv.lesions))
            gaze.append(_gaze(rng, lesion, distract & ~lesion))
    return {"images": images, "labels": labels, "masks": masks, "boxes": boxes, "gaze": gaze}


def generate_synthetic(
    n: int, size: int = 128, seed: int = 0, family: Family = "in", pos_fraction: float = 0.5
) -> dict:
    """Generate images ``0 .. n-1`` of the synthetic (seed, family) stream.

    Args:
        n: number of images.
        size: side ``S`` of the square images in pixels (>= 16).
        seed: the stream's seed; image ``i`` uses ``np.random.default_rng([seed, family_code, i])``.
        family: ``"in"`` (pink mucosa, granular lesions) or ``"ood"`` (grey-green stripes, stars).
        pos_fraction: share of positives; labels depend on the index only, so every prefix of the
            stream holds ``round(n * pos_fraction)`` positives (up to one).

    Returns:
        dict with ``images (n, S, S, 3) uint8``, ``labels (n,) int64``, ``masks (n, S, S) bool``
        (non-empty exactly for positives), ``boxes``: n arrays ``(K, 4) float32`` (one box per lesion,
        x_min, y_min, x_max, y_max in pixel-edge coordinates: pixel (r, c) spans [c, c+1) x [r, r+1)),
        ``gaze``: n arrays ``(N, 3) float32`` (x, y in [0, 1], duration ms).

    Example:
        >>> d = generate_synthetic(4, size=64)
        >>> d["images"].shape, d["labels"].tolist()
        ((4, 64, 64, 3), [0, 1, 0, 1])
    """
    return _generate(np.arange(n), size, seed, family, pos_fraction)


def split_indices(n: int, seed: int) -> dict[str, np.ndarray]:
    """Train/valid/test indices (70/15/15 %) of ``n`` in-distribution images, a permutation fixed by ``seed``."""
    perm = np.random.default_rng([seed, 0x5EED]).permutation(n)
    n_train, n_valid = round(SPLIT_FRACTIONS[0] * n), round(SPLIT_FRACTIONS[1] * n)
    return {
        "train": np.sort(perm[:n_train]),
        "valid": np.sort(perm[n_train : n_train + n_valid]),
        "test": np.sort(perm[n_train + n_valid :]),
    }


@register_dataset("synthetic")
class SyntheticDataset(WSSDataset):
    """The synthetic set as a :class:`WSSDataset`; images are generated on first access and cached.

    Args:
        split: ``"train"``, ``"valid"``, ``"test"`` (70/15/15 % of the ``n`` in-distribution images,
            fixed by ``seed``) or ``"ood"`` (``n_ood`` images of family ``"ood"``).
        n: number of in-distribution images shared by train/valid/test.
        size: image side in pixels.
        seed: seed of the images and of the split.
        n_ood: number of images of the ``"ood"`` split.

    Samples carry ``image (S, S, 3) uint8``, ``mask (S, S) bool``, per-lesion ``boxes (K, 4)`` and
    ``gaze (N, 3)``; ids are ``"syn-s<seed>-<family>-<index>"``.
    """

    name = "synthetic"

    def __init__(self, split: str = "train", n: int = 1000, size: int = 128, seed: int = 0, n_ood: int = 200) -> None:
        if split not in SPLITS:
            raise ValueError(f"synthetic split must be one of {SPLITS}, got {split!r}")
        self.split, self.n, self.size, self.seed, self.n_ood = split, n, size, seed, n_ood
        self.family: Family = "ood" if split == "ood" else "in"
        self.indices = np.arange(n_ood) if split == "ood" else split_indices(n, seed)[split]
        self._ids = [f"syn-s{seed}-{self.family}-{i:05d}" for i in self.indices]

    def __len__(self) -> int:
        return int(self.indices.size)

    @cached_property
    def arrays(self) -> dict:
        """The split's generated arrays (see :func:`generate_synthetic`), built once."""
        return _generate(self.indices, self.size, self.seed, self.family, 0.5)

    def __getitem__(self, i: int) -> Sample:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {self!r}")
        a = self.arrays
        return Sample(  # copies: callers may edit a sample without touching the cache
            image=a["images"][i].copy(),
            label=int(a["labels"][i]),
            mask=a["masks"][i].copy(),
            boxes=a["boxes"][i].copy(),
            gaze=a["gaze"][i].copy(),
            id=self._ids[i],
        )

    def labels(self) -> np.ndarray:
        return _label_of(self.indices, 0.5)

    def ids(self) -> list[str]:
        return list(self._ids)
