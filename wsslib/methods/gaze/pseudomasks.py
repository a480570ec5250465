"""Hierarchical pseudo-masks (GazeMedSeg step 3): thresholds of the refined maps, for a whole
data set resized to ``S x S`` for training (:func:`wsslib.methods.gaze.train_multilevel`)."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Collection, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from wsslib.core.errors import DataError, ShapeError
from wsslib.core.utils import check_shape
from wsslib.evaluate.metrics import SegmentationAccumulator
from wsslib.methods.densecrf import dense_crf
from wsslib.methods.gaze.crf import SXY_REFERENCE_SIDE, crf_downscale, crf_params_for, crf_upscale
from wsslib.methods.gaze.heatmaps import NCI_ISBI_SIGMA_FRAC, PAPER_SIGMA_FRAC, Canvas, gaze_heatmaps

__all__ = ["DATASET_SETTINGS", "KVASIR_LEVELS", "MIN_POOL_IMAGES", "NCI_ISBI_LEVELS", "PseudoMaskSet",
           "dataset_settings", "default_levels", "default_workers", "hierarchical_masks", "map_scores", "pseudo_masks"]

KVASIR_LEVELS = (0.5, 0.3)
"""The paper's two Kvasir-SEG thresholds."""

NCI_ISBI_LEVELS = (0.2, 0.4)
"""The paper's two NCI-ISBI thresholds (its code's order)."""

DATASET_SETTINGS: dict[str, dict[str, Any]] = {
    "kvasir-seg": {"sigma_frac": PAPER_SIGMA_FRAC, "levels": KVASIR_LEVELS},
    "nci-isbi": {"sigma_frac": NCI_ISBI_SIGMA_FRAC, "levels": NCI_ISBI_LEVELS},
    "synthetic": {"sigma_frac": PAPER_SIGMA_FRAC, "levels": KVASIR_LEVELS},
}
"""The paper code's gaze settings per data set (``methods.md`` section 3): heatmap sigma as a
fraction of each side (70 / 768 for Kvasir-SEG, 50 / 768 for NCI-ISBI) and pseudo-mask levels.
The synthetic set follows Kvasir-SEG (its gaze is simulated on polyp-like lesions)."""

MIN_POOL_IMAGES = 8
""":func:`pseudo_masks` starts CRF worker processes only for a chunk of at least this many images
(a spawned worker takes ~0.5 s to start; the CRF ~0.1-0.4 s an image)."""


def dataset_settings(dataset: str) -> dict[str, Any]:
    """The paper's gaze settings of ``dataset``: ``{"sigma_frac": float, "levels": tuple}``.

    Raises:
        ValueError: a data set the paper did not use (pass ``sigma_frac`` and ``levels`` yourself).

    Example:
        >>> s = dataset_settings("nci-isbi")
        >>> round(s["sigma_frac"] * 768), s["levels"]
        (50, (0.2, 0.4))
    """
    try:
        return dict(DATASET_SETTINGS[dataset])
    except KeyError:
        raise ValueError(f"no gaze settings for data set {dataset!r}; known: {sorted(DATASET_SETTINGS)} "
                         "(pass sigma_frac and levels explicitly)") from None


def default_workers() -> int:
    """The cores this process may run on (``os.sched_getaffinity``, else ``os.cpu_count()``), at least 1."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, int(n or 1))


def default_levels(m: int = 2) -> tuple[float, ...]:
    """Thresholds for ``m`` pseudo-mask levels, highest first: ``m`` evenly spaced values from 0.5
    down to 0.3 (``m = 1``: 0.5).

    These are the paper code's Kvasir-SEG levels (``configs/static.py`` of med-air/GazeMedSeg:
    2 levels ``{0.5, 0.3}``; 3: ``{0.5, 0.3, 0.4}``; 4: ``{0.5, 0.3, 0.367, 0.433}``; 5:
    ``{0.5, 0.3, 0.35, 0.4, 0.45}``), sorted and with the 4-level ones unrounded.

    Example:
        >>> default_levels(2), default_levels(3)
        ((0.5, 0.3), (0.5, 0.4, 0.3))
    """
    if not 1 <= m <= 5:
        raise ValueError(f"default_levels supports 1 to 5 levels, got m={m}; pass thresholds explicitly")
    if m == 1:
        return (0.5,)
    return tuple(round(0.5 - 0.2 * k / (m - 1), 6) for k in range(m))


def hierarchical_masks(maps: torch.Tensor, thresholds: Sequence[float] = KVASIR_LEVELS) -> torch.Tensor:
    """Threshold maps at several levels: ``masks[:, l] = maps > thresholds[l]``.

    Args:
        maps: ``(B, H, W)`` float maps in [0, 1].
        thresholds: ``m`` thresholds in (0, 1), in the order the levels should have.

    Returns:
        ``(B, m, H, W) bool``; a lower threshold's mask contains every higher one's.

    Example:
        >>> hierarchical_masks(torch.tensor([[[0.2, 0.4, 0.9]]]), (0.5, 0.3)).int().tolist()
        [[[[0, 0, 1]], [[0, 1, 1]]]]
    """
    check_shape("maps", maps, (None, None, None))
    thr = [float(t) for t in thresholds]
    if not thr:
        raise ValueError("thresholds is empty: give at least one level")
    t = torch.tensor(thr, dtype=maps.dtype if maps.is_floating_point() else torch.float32, device=maps.device)
    return maps[:, None] > t[None, :, None, None]


@dataclass
class PseudoMaskSet:
    """A data set's gaze supervision at training size ``S x S``.

    Attributes:
        images: ``(N, 3, S, S) float32`` in [0, 1].
        heatmaps: ``(N, S, S) float32`` gaze heatmaps (computed at native size, then resized).
        refined: ``(N, S, S) float32`` CRF maps (the heatmaps when ``crf=False``).
        masks: ``(N, m, S, S) bool`` pseudo-masks ``refined > levels[l]``.
        truth: ``(N, S, S) bool`` true masks (all False where ``has_mask`` is False).
        has_mask: ``(N,) bool``.
        levels: the ``m`` thresholds.
        ids: ``N`` image ids.
        scores: when ``score_thresholds`` was given: ``{"heatmap": {t: scores}, "refined":
            {t: scores}}`` with :func:`wsslib.evaluate.metrics.segmentation_scores` dicts measured at
            each image's NATIVE resolution against its true mask (images with a mask only).
        fixations: ``N`` arrays ``(N_i, 3)`` (x, y in [0, 1], duration), as the samples held them.
        sizes: ``N`` native ``(H, W)`` sizes (to evaluate predictions at native resolution).
        native_truth: the true masks ``(H_i, W_i) bool`` numpy at native size of the images kept
            with ``keep_native_truth`` (``None`` for the others); empty when none was kept.
    """

    images: torch.Tensor
    heatmaps: torch.Tensor
    refined: torch.Tensor
    masks: torch.Tensor
    truth: torch.Tensor
    has_mask: torch.Tensor
    levels: tuple[float, ...]
    ids: list[str]
    scores: dict = field(default_factory=dict)
    fixations: list = field(default_factory=list)
    sizes: list = field(default_factory=list)
    native_truth: list = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    def select(self, index: Sequence[int] | slice | torch.Tensor) -> PseudoMaskSet:
        """The images at ``index`` (positions, a slice or a bool mask) as a new set.

        ``scores`` stay those of the whole set (they are aggregates, not per image).

        Example:
            >>> pm = PseudoMaskSet(torch.zeros(3, 3, 4, 4), torch.zeros(3, 4, 4), torch.zeros(3, 4, 4),
            ...                    torch.zeros(3, 1, 4, 4, dtype=torch.bool), torch.zeros(3, 4, 4, dtype=torch.bool),
            ...                    torch.ones(3, dtype=torch.bool), (0.5,), ["a", "b", "c"])
            >>> pm.select([2, 0]).ids, len(pm.select(slice(1, None)))
            (['c', 'a'], 2)
        """
        n = len(self.ids)
        if isinstance(index, slice):
            pos = list(range(n))[index]
        else:
            t = torch.as_tensor(index)
            if t.dtype == torch.bool:
                if t.shape != (n,):
                    raise ShapeError(f"a bool index must have shape ({n},), got {tuple(t.shape)}")
                t = torch.nonzero(t).flatten()
            pos = [int(i) for i in t.reshape(-1).tolist()]
            bad = [i for i in pos if not -n <= i < n]
            if bad:
                raise IndexError(f"index {bad[0]} is out of range for a set of {n} images")
        idx = torch.tensor(pos, dtype=torch.long)

        def pick(xs: list) -> list:
            return [xs[i] for i in pos]

        return PseudoMaskSet(
            images=self.images[idx], heatmaps=self.heatmaps[idx], refined=self.refined[idx],
            masks=self.masks[idx], truth=self.truth[idx], has_mask=self.has_mask[idx], levels=self.levels,
            ids=pick(self.ids), scores=self.scores,
            fixations=pick(self.fixations) if self.fixations else [],
            sizes=pick(self.sizes) if self.sizes else [],
            native_truth=pick(self.native_truth) if self.native_truth else [],
        )


def _resize(t: torch.Tensor, size: int, antialias: bool) -> torch.Tensor:
    """``(C, H, W)`` float -> ``(C, S, S)`` bilinear."""
    if t.shape[-2:] == (size, size):
        return t
    return F.interpolate(t[None], size=(size, size), mode="bilinear", align_corners=False, antialias=antialias)[0]


def pseudo_masks(
    samples: Iterable,
    size: int,
    levels: Sequence[float] = KVASIR_LEVELS,
    crf: bool = True,
    sigma_frac: float = PAPER_SIGMA_FRAC,
    crf_params: dict | None = None,
    score_thresholds: Sequence[float] | None = None,
    use_duration: bool = True,
    progress: bool = True,
    chunk: int = 32,
    workers: int | None = None,
    sxy_reference_side: float | None = SXY_REFERENCE_SIDE,
    keep_native_truth: bool | Collection[str] = False,
    heatmap_canvas: Canvas = "paper",
    min_pool_images: int = MIN_POOL_IMAGES,
) -> PseudoMaskSet:
    """Heatmaps, CRF maps and hierarchical pseudo-masks of every sample, resized to ``S x S``.

    Heatmaps and CRF run at each image's native size (as in the paper); the maps are then resized
    bilinearly (images with antialiasing, true masks nearest) to ``S x S``, and the pseudo-masks
    are thresholds of the resized refined maps.

    Args:
        samples: a :class:`wsslib.data.WSSDataset` or any iterable of
            :class:`wsslib.data.Sample` with ``gaze``.
        size: side ``S`` of the outputs.
        levels: thresholds of the ``m`` levels (:func:`default_levels`; per data set:
            :func:`dataset_settings`).
        crf: refine with the dense CRF (:func:`~wsslib.methods.gaze.crf_refine`; ``False``:
            pseudo-masks from the heatmaps).
        sigma_frac: heatmap sigma as a fraction of each side (per data set: :func:`dataset_settings`).
        crf_params: keyword arguments for :func:`~wsslib.methods.gaze.crf_refine` (``sxy``, ``srgb``,
            ``compat``, ``iters``, ``eps``, ``max_side``); missing ones are the paper's.
        score_thresholds: if given, also score heatmap and refined maps at these thresholds at
            native resolution (``PseudoMaskSet.scores``).
        use_duration: duration-weighted fixations (see :func:`~wsslib.methods.gaze.gaze_heatmaps_batched`).
        progress: tqdm bar over the images.
        chunk: images decoded and processed together.
        workers: processes running the CRF in parallel (~0.1 s an image at ``max_side=256``, ~0.35 s
            for a 512 x 450 image at native size, on one core). ``None`` (default): every core this
            process may use (:func:`default_workers`); 1: in this process. The maps are the same bits
            either way. The workers (``spawn`` context) import only numpy and pydensecrf
            (:mod:`wsslib.methods.densecrf`); they start with the first chunk of at least
            ``min_pool_images`` images (a smaller input runs in this process), and the next chunk is
            read and its heatmaps computed while they refine the current one; meanwhile torch runs
            on one thread in this process (restored on return).
        sxy_reference_side: ``crf_params["sxy"]`` (default 80) is in pixels of an image whose longer
            side is this long, and each image's CRF gets ``sxy * max(H, W) / sxy_reference_side``
            (:func:`~wsslib.methods.gaze.crf_params_for`; default 512: the paper's 80 px on the
            shared 512 px Kvasir-SEG copy, the same part of the image on any data set); ``None``:
            ``sxy`` in pixels of every image as it is.
        keep_native_truth: keep the native-size true masks (``PseudoMaskSet.native_truth``) of
            every image (``True``) or of the images with these ids (e.g. the test split's only:
            1000 Kvasir-SEG masks at native size take ~300 MB).
        heatmap_canvas: ``"paper"`` (the published heatmap) or ``"infinite"`` (see
            :func:`~wsslib.methods.gaze.gaze_heatmaps_batched`).
        min_pool_images: see ``workers``.

    Returns:
        :class:`PseudoMaskSet`.

    Raises:
        DataError: a sample has no gaze, or the set is empty.
        ValueError: an unknown key in ``crf_params``, or ``workers < 1``.
    """
    levels = tuple(float(t) for t in levels)
    crf_params = dict(crf_params or {})
    crf_params_for((1, 1), crf_params)  # unknown keys fail now, not in the first chunk
    n_workers = default_workers() if workers is None else int(workers)
    if n_workers < 1:
        raise ValueError(f"workers must be >= 1 (or None for every core), got {workers}")
    thr_scores = tuple(float(t) for t in score_thresholds) if score_thresholds else ()
    accs = {kind: {t: SegmentationAccumulator() for t in thr_scores} for kind in ("heatmap", "refined")}
    total = len(samples) if hasattr(samples, "__len__") else None  # type: ignore[arg-type]
    it = iter(samples)
    images, heat, refined, truth, has_mask, ids, fixations, sizes, native = [], [], [], [], [], [], [], [], []
    bar = tqdm(total=total, desc="pseudo-masks" + (" + CRF" if crf else ""), disable=not progress)
    runner = _CRFRunner(n_workers if crf else 1, min_pool_images)
    threads = torch.get_num_threads()
    if runner.workers > 1:  # the workers have the cores: one torch thread here avoids oversubscription
        torch.set_num_threads(1)
    try:
        _pseudo_mask_chunks(it, chunk, crf, crf_params, sigma_frac, use_duration, size, thr_scores, accs, runner, bar,
                            (images, heat, refined, truth, has_mask, ids, fixations, sizes, native),
                            sxy_reference_side, keep_native_truth, heatmap_canvas)
    except BrokenProcessPool as e:
        raise RuntimeError(
            f"pseudo_masks: the {runner.workers} CRF worker processes died. They are started with 'spawn', which "
            "re-imports your main script: in a script, put the calls under `if __name__ == \"__main__\":`; or pass "
            "workers=1 (one process, the same masks); or check memory (each worker holds one image)") from e
    finally:
        bar.close()
        runner.close()
        torch.set_num_threads(threads)
    if not ids:
        raise DataError("pseudo_masks: the data set is empty")
    refined_t = torch.stack(refined)
    scores = {kind: {t: acc.compute() for t, acc in d.items()} for kind, d in accs.items()} if thr_scores else {}
    return PseudoMaskSet(
        images=torch.stack(images),
        heatmaps=torch.stack(heat),
        refined=refined_t,
        masks=hierarchical_masks(refined_t, levels),
        truth=torch.stack(truth),
        has_mask=torch.tensor(has_mask, dtype=torch.bool),
        levels=levels,
        ids=ids,
        scores=scores,
        fixations=fixations,
        sizes=sizes,
        native_truth=native if any(t is not None for t in native) else [],
    )


class _CRFRunner:
    """Runs :func:`~wsslib.methods.densecrf.dense_crf` jobs in this process or in a pool of
    ``workers`` spawned processes, started with the first batch of at least ``min_pool_images``."""

    def __init__(self, workers: int, min_pool_images: int) -> None:
        self.workers = int(workers)
        self.min_pool_images = max(1, int(min_pool_images))
        self.pool: ProcessPoolExecutor | None = None

    def submit(self, jobs: list[tuple]) -> list[Callable[[], np.ndarray]]:
        """Start ``jobs`` (``dense_crf`` argument tuples); return one callable per job giving its map."""
        if self.pool is None and self.workers > 1 and len(jobs) >= self.min_pool_images:
            # spawn, not fork: a process forked from one whose torch/OpenMP threads hold locks can hang
            self.pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"))
        if self.pool is None:
            return [lambda job=job: dense_crf(*job) for job in jobs]  # run when asked, in order
        return [self.pool.submit(dense_crf, *job).result for job in jobs]

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)
            self.pool = None


def _keeps(keep: bool | Collection[str], sample_id: str) -> bool:
    return bool(keep) if isinstance(keep, bool) else sample_id in keep


def _pseudo_mask_chunks(it, chunk, crf, crf_params, sigma_frac, use_duration, size, thr_scores, accs, runner, bar, out,
                        sxy_reference_side=None, keep_native_truth=False, heatmap_canvas="paper"):
    """The body of :func:`pseudo_masks`: fills the lists in ``out`` chunk by chunk.

    Chunk ``k + 1`` is read, its heatmaps computed and its CRF jobs queued before chunk ``k``'s
    results are collected, so worker processes never wait for this one.
    """
    pending = None
    while True:
        batch = [s for _, s in zip(range(chunk), it)]
        current = None
        if batch:
            for s in batch:
                if s.gaze is None:
                    raise DataError(f"sample {s.id!r} has no gaze fixations: pseudo_masks needs a data set with gaze")
            maps = gaze_heatmaps([s.gaze for s in batch], [s.image.shape[:2] for s in batch], sigma_frac, None,
                                 use_duration, canvas=heatmap_canvas)
            results = None
            if crf:
                jobs = []
                for s, hm in zip(batch, maps):
                    p = crf_params_for(s.image.shape, crf_params, sxy_reference_side)
                    img_s, heat_s, sxy_s = crf_downscale(s.image, hm, p["sxy"], p.get("max_side"))
                    jobs.append((img_s, heat_s, sxy_s, p["srgb"], p["compat"], p["iters"], p.get("eps", 1e-5)))
                results = runner.submit(jobs)
            current = (batch, maps, results)
        if pending is not None:
            _collect(*pending, size, thr_scores, accs, bar, out, keep_native_truth)
        if current is None:
            break
        pending = current


def _collect(batch, maps, results, size, thr_scores, accs, bar, out, keep_native_truth) -> None:
    """Resize one chunk's maps to ``S x S``, score them and append everything to ``out``."""
    images, heat, refined, truth, has_mask, ids, fixations, sizes, native = out
    for k, (s, hm) in enumerate(zip(batch, maps)):
        ref = hm if results is None else crf_upscale(results[k](), s.image.shape[:2])
        if s.mask is not None and thr_scores:
            m = torch.from_numpy(np.ascontiguousarray(s.mask))[None]
            for t in thr_scores:
                accs["heatmap"][t].update((hm > t)[None], m)
                accs["refined"][t].update((ref > t)[None], m)
        img = torch.from_numpy(np.ascontiguousarray(s.image)).permute(2, 0, 1).float().div_(255.0)
        images.append(_resize(img, size, antialias=True).clamp_(0.0, 1.0))
        both = _resize(torch.stack([hm, ref]), size, antialias=False).clamp_(0.0, 1.0)
        heat.append(both[0])
        refined.append(both[1])
        if s.mask is not None:
            mk = torch.from_numpy(np.ascontiguousarray(s.mask))[None, None].float()
            truth.append(F.interpolate(mk, size=(size, size), mode="nearest")[0, 0] > 0.5)
        else:
            truth.append(torch.zeros((size, size), dtype=torch.bool))
        has_mask.append(s.mask is not None)
        ids.append(str(s.id))
        fixations.append(np.asarray(s.gaze, dtype=np.float32))
        sizes.append(tuple(int(v) for v in s.image.shape[:2]))
        keep = s.mask is not None and _keeps(keep_native_truth, str(s.id))
        native.append(np.ascontiguousarray(s.mask, dtype=bool) if keep else None)
        bar.update(1)


def map_scores(
    maps: Sequence[torch.Tensor], truths: Sequence, thresholds: Sequence[float] = (0.5,)
) -> dict[float, dict]:
    """Segmentation scores of soft maps thresholded at each of ``thresholds``.

    Args:
        maps: ``B`` maps ``(H_b, W_b)`` float (sizes may differ between images).
        truths: ``B`` true masks ``(H_b, W_b)`` bool (numpy or torch).
        thresholds: thresholds ``t``; the prediction is ``map > t``.

    Returns:
        ``{t: segmentation_scores dict}`` (per-image means; see :mod:`wsslib.evaluate.metrics`).

    Example:
        >>> s = map_scores([torch.tensor([[0.9, 0.2]])], [torch.tensor([[True, False]])], (0.5,))
        >>> s[0.5]["dice"]
        1.0
    """
    if len(maps) != len(truths):
        raise ShapeError(f"got {len(maps)} maps but {len(truths)} true masks")
    accs = {float(t): SegmentationAccumulator() for t in thresholds}
    for i, (m, g) in enumerate(zip(maps, truths)):
        g = torch.as_tensor(np.ascontiguousarray(g) if isinstance(g, np.ndarray) else g)
        if tuple(m.shape) != tuple(g.shape):
            raise ShapeError(f"maps[{i}] has shape {tuple(m.shape)} but truths[{i}] has {tuple(g.shape)}")
        for t, acc in accs.items():
            acc.update((m > t)[None].cpu(), g[None].bool().cpu())
    return {t: acc.compute() for t, acc in accs.items()}

