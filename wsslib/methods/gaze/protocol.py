"""GazeMedSeg's protocol as one call: pseudo-masks from gaze, the model variants, test scores.

:func:`gaze_supervision` turns every split's samples into :class:`PseudoMaskSet` s (heatmaps,
CRF maps, hierarchical pseudo-masks at ``S x S``, with the threshold sweep scored at native
resolution over all splits); :func:`run_gaze_experiment` trains the model variants on the
training split (checkpoints chosen on the validation split's true masks) and scores them on the
test split. Notebook 01 calls both; the summary notebook 05 calls them with the same
:class:`GazeConfig` on its shared split (``variants=("lpp",)`` trains the paper's model only), and
can score already-trained models with :func:`score_gaze_models`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from wsslib.core.errors import DataError
from wsslib.evaluate import baselines
from wsslib.evaluate.metrics import segmentation_scores
from wsslib.methods.gaze.crf import SXY_REFERENCE_SIDE
from wsslib.methods.gaze.heatmaps import PAPER_CANVAS, Canvas
from wsslib.methods.gaze.pseudomasks import (
    PseudoMaskSet,
    dataset_settings,
    hierarchical_masks,
    map_scores,
    pseudo_masks,
)
from wsslib.methods.gaze.training import (
    EncoderCache,
    MultiLevelTrainConfig,
    MultiLevelTrainResult,
    cache_encoder_features,
    predict,
    train_multilevel,
)
from wsslib.models.encoder_unet import EncoderMultiLevelUNet

__all__ = ["CANVAS", "SXY_REFERENCE_SIDE", "VARIANTS", "GazeConfig", "GazeExperiment", "encoder_cache", "figure_columns",
           "gaze_supervision", "pseudo_mask_rows", "run_gaze_experiment", "score_gaze_models", "spread_comparisons",
           "train_gaze_variants"]

CANVAS = PAPER_CANVAS
"""Side in px of the paper code's heatmap canvas (768): ``sigma`` is given in its pixels.
(``SXY_REFERENCE_SIDE``, 512, is :mod:`wsslib.methods.gaze.crf`'s: ``crf_sxy`` is in px of an
image whose longer side is this long.)"""

#: variant key -> consistency of :func:`~wsslib.methods.gaze.training.multilevel_loss`
VARIANTS: dict[str, str] = {"single": "none", "none": "none", "plain": "plain", "lpp": "lpp"}


@dataclass(frozen=True)
class GazeConfig:
    """Everything :func:`gaze_supervision` and :func:`run_gaze_experiment` need (one value each).

    Attributes:
        image_size: training side ``S`` (the paper: 224).
        levels: pseudo-mask thresholds on the refined map (the paper: Kvasir-SEG ``(0.5, 0.3)``,
            NCI-ISBI ``(0.2, 0.4)``; :meth:`for_dataset` sets both ``levels`` and ``sigma``).
        sigma: fixation Gaussian in px of the paper's 768 px canvas (Kvasir-SEG 70, NCI-ISBI 50).
        heatmap_canvas: ``"paper"`` (the published heatmap: canvas pixels, reflection at the
            borders) or ``"infinite"`` (the earlier fast path; see
            :func:`~wsslib.methods.gaze.gaze_heatmaps_batched`).
        use_duration: weight fixations by duration (the paper), ``False`` counts them.
        crf: refine the heatmaps with the dense CRF (``False``: pseudo-masks from the heatmaps).
        crf_sxy: the CRF's position scale, in px of an image whose LONGER side is 512 px; each image
            gets ``crf_sxy * max(H, W) / 512``. The paper's 80 px were set for Kvasir-SEG at its
            native resolution (the shared copy is 512 px wide: exactly 80 px there); scaling with the
            image keeps the pairwise term covering the same part of the image on any data set,
            where 80 absolute px would span a whole 128 px synthetic image and make the CRF a
            colour segmentation. (Notebook 01 used 80 px absolute and notebook 05 80 * S / 512
            before: this is 05's rule, per image, for both.)
        crf_srgb, crf_compat, crf_iters: the paper's colour scale 13, Potts weight 1, 10 iterations.
        crf_max_side: run the CRF on copies at most this long (sxy scaled; ``None``: native).
        workers: processes running the CRF (``None``: every core; the maps are the same bits).
        single_threshold: the pseudo-mask of the single-level baseline, and the threshold of the
            "CRF pseudo-mask of the test image" row.
        sweep: thresholds of the pseudo-mask table.
        pseudo: the maps the UNets learn from: ``"refined"`` (the CRF maps, the paper) or
            ``"heatmap"``.
        variants: which models to train: ``"single"`` (1 UNet on ``single_threshold``),
            ``"none"`` (one UNet per level, no consistency), ``"plain"`` (+ consistency),
            ``"lpp"`` (+ consistency + LPP: the paper's model).
        iterations, batch_size, optimizer, lr, lam, widths, feat_ch: see
            :class:`~wsslib.methods.gaze.training.MultiLevelTrainConfig`.
        lam_warmup: fraction of the iterations over which ``lam`` ramps up; 0 (the paper's code,
            and what notebook 01 measured to be no worse than a ramp over a third).
        eval_every: iterations between validations (``None``: ``max(1, iterations // 12)``).
        encoder: ``None`` (the paper's UNets from scratch, ``widths``) or a pretrained encoder
            (``"efficientnet_lite0"``: frozen, features cached once for every variant, one
            :class:`~wsslib.models.encoder_unet.FPNDecoder` per level; the ``real`` preset).
        decoder_width: the decoders' channels (with ``encoder``); ``feat_ch`` their feature width.
        amp, deterministic: mixed precision on CUDA (a no-op elsewhere) and torch's deterministic
            kernels, for every UNet's training (see
            :class:`~wsslib.methods.gaze.training.MultiLevelTrainConfig`).
    """

    image_size: int = 128
    levels: tuple[float, ...] = (0.5, 0.3)
    sigma: float = 70.0
    heatmap_canvas: Canvas = "paper"
    use_duration: bool = True
    crf: bool = True
    crf_sxy: float = 80.0
    crf_srgb: float = 13.0
    crf_compat: float = 1.0
    crf_iters: int = 10
    crf_max_side: int | None = 256
    workers: int | None = None
    single_threshold: float = 0.5
    sweep: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
    pseudo: Literal["refined", "heatmap"] = "refined"
    variants: tuple[str, ...] = ("single", "none", "plain", "lpp")
    iterations: int = 150
    batch_size: int = 8
    optimizer: Literal["adam", "sgd_paper"] = "adam"
    lr: float | None = None
    lam: float = 3.0
    lam_warmup: float = 0.0
    eval_every: int | None = None
    widths: tuple[int, ...] = (8, 16, 32, 64)
    feat_ch: int = 16
    encoder: str | None = None
    decoder_width: int = 64
    amp: bool = False
    deterministic: bool = False

    def __post_init__(self) -> None:
        bad = [v for v in self.variants if v not in VARIANTS]
        if bad or not self.variants:
            raise ValueError(f"variants must be a non-empty subset of {tuple(VARIANTS)}, got {self.variants}")
        if not self.levels or not all(0.0 < float(t) < 1.0 for t in self.levels):
            raise ValueError(f"levels must be thresholds in (0, 1), got {self.levels}")
        if self.pseudo not in ("refined", "heatmap"):
            raise ValueError(f"pseudo must be 'refined' or 'heatmap', got {self.pseudo!r}")
        if self.sigma <= 0 or self.image_size < 8:
            raise ValueError(f"sigma must be > 0 and image_size >= 8, got {self.sigma}, {self.image_size}")
        if self.heatmap_canvas not in ("paper", "infinite"):
            raise ValueError(f"heatmap_canvas must be 'paper' or 'infinite', got {self.heatmap_canvas!r}")
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"workers must be >= 1 or None (every core), got {self.workers}")

    @classmethod
    def for_dataset(cls, dataset: str, **overrides) -> GazeConfig:
        """The config with the paper's ``sigma`` and ``levels`` for ``dataset``
        (:func:`~wsslib.methods.gaze.dataset_settings`: Kvasir-SEG 70 px and ``(0.5, 0.3)``,
        NCI-ISBI 50 px and ``(0.2, 0.4)``), then ``overrides``.

        Example:
            >>> c = GazeConfig.for_dataset("nci-isbi", image_size=64)
            >>> c.sigma, c.levels, c.image_size
            (50.0, (0.2, 0.4), 64)
        """
        s = dataset_settings(dataset)
        return cls(**{"sigma": float(s["sigma_frac"]) * CANVAS, "levels": tuple(s["levels"]), **overrides})

    @property
    def sigma_frac(self) -> float:
        """``sigma / 768``: the Gaussian's sigma as a fraction of each image side."""
        return float(self.sigma) / CANVAS

    @property
    def crf_params(self) -> dict:
        """Keyword arguments of :func:`~wsslib.methods.gaze.crf_refine` (``sxy`` at 512 px)."""
        return {"sxy": self.crf_sxy, "srgb": self.crf_srgb, "compat": self.crf_compat, "iters": self.crf_iters,
                "max_side": self.crf_max_side}

    def train_config(self, variant: str, seed: int) -> MultiLevelTrainConfig:
        """The :class:`MultiLevelTrainConfig` of one variant (same seed and schedule for all)."""
        return MultiLevelTrainConfig(
            iterations=self.iterations, batch_size=self.batch_size, lr=self.lr, optimizer=self.optimizer, lam=self.lam,
            consistency=VARIANTS[variant], lam_warmup=self.lam_warmup,
            eval_every=self.eval_every or max(1, self.iterations // 12), widths=tuple(self.widths),
            feat_ch=self.feat_ch, encoder=self.encoder, decoder_width=self.decoder_width, seed=seed, amp=self.amp,
            deterministic=self.deterministic)

    def variant_name(self, variant: str) -> str:
        """The table row of a variant, e.g. ``"2 UNets + consistency + LPP"``."""
        m = len(self.levels)
        return {"single": f"1 UNet, pseudo-mask > {self.single_threshold:g}", "none": f"{m} UNets, no consistency",
                "plain": f"{m} UNets + consistency", "lpp": f"{m} UNets + consistency + LPP"}[variant]


def spread_comparisons(spread: Sequence[Mapping]) -> list[str]:
    """One sentence per pair of :meth:`GazeExperiment.seed_spread` rows: both means ± spreads,
    their gap, and whether the gap exceeds the larger of the two spreads (the rule notebook 01
    reads its seed table with). Empty for fewer than two rows."""
    out = []
    for a, b in [(r, q) for r in spread for q in spread if r["method"] < q["method"]]:
        gap = abs(a["dice_mean"] - b["dice_mean"])
        out.append(f"Over seeds {a['seeds']}: {a['method']} {a['dice_mean']:.3f} ± {a['dice_std']:.3f} vs {b['method']} "
                   f"{b['dice_mean']:.3f} ± {b['dice_std']:.3f}: the gap {gap:.3f} "
                   + ("exceeds" if gap > max(a["dice_std"], b["dice_std"]) else "does not exceed") + " the spread.")
    return out


def gaze_supervision(
    splits: Mapping[str, Iterable],
    config: GazeConfig,
    *,
    native_truth_splits: Sequence[str] = ("test",),
    progress: bool = False,
) -> dict[str, PseudoMaskSet]:
    """Heatmaps, CRF maps and pseudo-masks of every split (one pass, one CRF worker pool).

    Args:
        splits: split name -> samples with gaze (:class:`~wsslib.data.Sample`; e.g. the images of a
            :class:`~wsslib.data.WSSDataset` split that hold a lesion).
        config: the :class:`GazeConfig`.
        native_truth_splits: splits whose native-size true masks are kept (to score at native
            resolution, as the paper).
        progress: tqdm bar.

    Returns:
        ``{split: PseudoMaskSet}`` at ``config.image_size``; each set's ``scores`` are those of the
        threshold sweep over ALL splits' images (native resolution).

    Raises:
        DataError: a split is empty or a sample has no gaze.
    """
    order: list[str] = []
    keep: set[str] = set()  # filled while pseudo_masks iterates (it asks after each sample is drawn)

    def tagged():
        for name, samples in splits.items():
            for s in samples:
                order.append(name)
                if name in native_truth_splits:
                    keep.add(str(s.id))
                yield s

    pm = pseudo_masks(tagged(), size=config.image_size, levels=config.levels, crf=config.crf,
                      sigma_frac=config.sigma_frac, crf_params=config.crf_params, score_thresholds=config.sweep,
                      use_duration=config.use_duration, progress=progress, workers=config.workers,
                      sxy_reference_side=SXY_REFERENCE_SIDE, keep_native_truth=keep,
                      heatmap_canvas=config.heatmap_canvas)
    out = {}
    for name in splits:
        idx = [i for i, s in enumerate(order) if s == name]
        if not idx:
            raise DataError(f"gaze_supervision: split {name!r} has no samples")
        out[name] = pm.select(idx)
    return out


def pseudo_mask_rows(data: Mapping[str, PseudoMaskSet], config: GazeConfig) -> list[dict]:
    """The pseudo-mask table: the sweep of heatmap and CRF map (native resolution, every image of
    every split) and three trivial rows at ``S x S``: empty, centre prior (the training masks'
    mean foreground share), full mask. Each row: ``method``, ``map``, ``threshold`` and the
    :func:`~wsslib.evaluate.metrics.segmentation_scores` keys."""
    any_set = next(iter(data.values()))
    rows = []
    for kind, label in [("heatmap", "heatmap")] + ([("refined", "CRF map")] if config.crf else []):
        for t, sc in any_set.scores.get(kind, {}).items():
            rows.append({"method": f"{label} > {t:g}", "map": label, "threshold": t, **sc, "resolution": "native"})
    truth = torch.cat([d.truth[d.has_mask] for d in data.values()])
    n, s = truth.shape[0], config.image_size
    share = baselines.mean_foreground_share(data["train"].truth[data["train"].has_mask])
    trivial = (("empty", baselines.empty_masks(n, s, s)),
               ("centre prior", baselines.centre_prior(s, s, share).expand(n, -1, -1)),
               ("full mask", torch.ones(n, s, s, dtype=torch.bool)))
    for name, pred in trivial:
        rows.append({"method": name, "map": name, "threshold": None, **segmentation_scores(pred, truth),
                     "resolution": f"{s} px"})
    return rows


def train_gaze_variants(
    config: GazeConfig,
    train: PseudoMaskSet,
    valid: PseudoMaskSet,
    *,
    seed: int = 0,
    device: str | torch.device = "auto",
    progress: bool = False,
    cache: EncoderCache | None = None,
) -> dict[str, MultiLevelTrainResult]:
    """Train ``config.variants`` on ``train``'s pseudo-masks, each selected on ``valid``'s true masks.

    With ``config.encoder`` the frozen encoder's features of ``train`` (four flips) and ``valid``
    are computed once (or taken from ``cache``, :func:`encoder_cache`) and shared by every variant.

    Returns:
        ``{row name: MultiLevelTrainResult}`` in the order of ``config.variants``; every variant
        starts from the same seed.
    """
    maps = train.refined if config.pseudo == "refined" else train.heatmaps
    levels = hierarchical_masks(maps, config.levels)
    v = valid.has_mask
    if config.encoder and cache is None:
        cache = encoder_cache(config, train, valid, device=device, progress=progress)
    out = {}
    for key in config.variants:
        masks = hierarchical_masks(maps, (config.single_threshold,)) if key == "single" else levels
        out[config.variant_name(key)] = train_multilevel(
            train.images, masks, config.train_config(key, seed), valid_images=valid.images[v],
            valid_truth=valid.truth[v], device=device, progress=progress, cache=cache)
    return out


def encoder_cache(config: GazeConfig, train: PseudoMaskSet, valid: PseudoMaskSet, *,
                  device: str | torch.device = "auto", progress: bool = False) -> EncoderCache:
    """The frozen ``config.encoder``'s features of ``train``'s images (four flips) and of
    ``valid``'s images with a mask (:func:`~wsslib.methods.gaze.cache_encoder_features`), to share
    between variants and seeds (:func:`train_gaze_variants` ``cache=``)."""
    if not config.encoder:
        raise ValueError("encoder_cache needs config.encoder (a pretrained encoder name)")
    probe = EncoderMultiLevelUNet(levels=1, encoder=config.encoder, width=8, feat_ch=8)
    return cache_encoder_features(probe, train.images, valid.images[valid.has_mask], device=device,
                                  progress=progress)


def _native(maps: torch.Tensor, sizes: Sequence[tuple[int, int]]) -> list[torch.Tensor]:
    """``(N, S, S)`` maps -> ``N`` maps at the native ``sizes`` (bilinear)."""
    return [F.interpolate(m[None, None].float(), size=hw, mode="bilinear", align_corners=False)[0, 0]
            for m, hw in zip(maps, sizes)]


def score_gaze_models(
    models: Mapping[str, nn.Module | MultiLevelTrainResult],
    test: PseudoMaskSet,
    config: GazeConfig,
    *,
    share: float,
    device: str | torch.device | None = None,
) -> tuple[list[dict], dict[str, torch.Tensor]]:
    """Score trained models on ``test`` beside the trivial rows and the test images' own CRF
    pseudo-mask (which needs gaze AT TEST TIME; the networks do not).

    Dice and IoU per image, ``probability > 0.5``, averaged; at native resolution (logits resized
    before the sigmoid, as the paper) when ``test.native_truth`` holds every image's mask, else at
    ``S x S``.

    Args:
        models: row name -> a model or a :class:`MultiLevelTrainResult` (its ``best_iteration``,
            ``best_valid_dice`` and ``seconds`` are added to the row).
        test: the test split (images with a mask are scored).
        config: the :class:`GazeConfig` (``single_threshold``).
        share: foreground share of the centre prior (the training masks').
        device: where to predict (``None``: each model's device).

    Returns:
        ``(rows, probs)``: the table rows (``method``, score keys, ...) and each model's test
        probabilities ``(N, S, S)`` at the training size (for figures).
    """
    sel = torch.nonzero(test.has_mask).flatten().tolist()
    test = test.select(sel)
    native = len(test.native_truth) == len(test) and all(t is not None for t in test.native_truth)
    truths = [torch.from_numpy(t) for t in test.native_truth] if native else list(test.truth)
    sizes = [tuple(t.shape) for t in truths]

    def scores(maps: Sequence[torch.Tensor]) -> dict:
        return map_scores(maps, truths, (0.5,))[0.5]

    rows = [{"method": "empty", **scores([torch.zeros(hw) for hw in sizes])},
            {"method": "centre prior", **scores([baselines.centre_prior(*hw, share).float() for hw in sizes])}]
    probs = {}
    for name, m in models.items():
        model = m.model if isinstance(m, MultiLevelTrainResult) else m
        probs[name] = predict(model, test.images, device=device)
        row = {"method": name, **scores(predict(model, test.images, device=device, sizes=sizes))}
        if isinstance(m, MultiLevelTrainResult):
            row.update(best_iteration=m.best_iteration, valid_dice=m.best_valid_dice, selected_on="valid",
                       seconds=round(m.seconds, 1))
        rows.append(row)
    t = config.single_threshold
    rows.append({"method": f"CRF pseudo-mask > {t:g} of the test image (gaze at test time)",
                 **scores([(mp > t).float() for mp in _native(test.refined, sizes)])})
    for r in rows:
        r["resolution"] = "native" if native else f"{config.image_size} px"
    return rows, probs


@dataclass
class GazeExperiment:
    """What :func:`run_gaze_experiment` found.

    Attributes:
        config: the :class:`GazeConfig`.
        data: ``{split: PseudoMaskSet}`` it ran on.
        pseudo_mask_rows: :func:`pseudo_mask_rows`.
        segmentation_rows: :func:`score_gaze_models`'s rows (test split).
        results: row name -> :class:`MultiLevelTrainResult` (model, validation history, steps).
        test_probs: row name -> ``(N, S, S)`` test probabilities (test images with a mask).
        share: the centre prior's foreground share.
        seed: the seed every variant was trained with.
        cache: the frozen encoder's cached features (``config.encoder``), reused by :meth:`seed_spread`.
    """

    config: GazeConfig
    data: dict[str, PseudoMaskSet]
    pseudo_mask_rows: list[dict]
    segmentation_rows: list[dict]
    results: dict[str, MultiLevelTrainResult]
    test_probs: dict[str, torch.Tensor] = field(default_factory=dict)
    share: float = 0.0
    seed: int = 0
    cache: EncoderCache | None = None

    def seed_spread(self, seeds: Sequence[int], variants: Sequence[str] = ("single", "none", "lpp"), *,
                    device: str | torch.device = "auto", progress: bool = False) -> list[dict]:
        """Test Dice of ``variants`` over ``seeds`` (this experiment's own seed is reused, the
        others are trained the same way: weights, batch order and flips change with the seed).

        Returns:
            one row per variant: ``method``, ``seeds``, ``dice`` (per seed, in ``seeds`` order),
            ``dice_mean``, ``dice_std`` (population standard deviation over the seeds),
            ``dice_min``, ``dice_max``; the checkpoints chosen on validation as always.
        """
        variants = [v for v in variants if v in self.config.variants] or list(variants)
        per_seed: dict[int, dict[str, float]] = {}
        for sd in seeds:
            if sd == self.seed and all(self.name(v) in self.results for v in variants):
                per_seed[sd] = {self.name(v): self.score(self.name(v)) for v in variants}
                continue
            cfg = replace(self.config, variants=tuple(variants))
            res = train_gaze_variants(cfg, self.data["train"], self.data["valid"], seed=sd, device=device,
                                      progress=progress, cache=self.cache)
            rows, _ = score_gaze_models(res, self.data["test"], cfg, share=self.share)
            per_seed[sd] = {r["method"]: float(r["dice"]) for r in rows if r["method"] in res}
        out = []
        for v in variants:
            d = torch.tensor([per_seed[sd][self.name(v)] for sd in seeds], dtype=torch.float64)
            out.append({"method": self.name(v), "seeds": list(seeds), "dice": [round(float(x), 4) for x in d],
                        "dice_mean": float(d.mean()), "dice_std": float(d.std(unbiased=False)),
                        "dice_min": float(d.min()), "dice_max": float(d.max())})
        return out

    def name(self, variant: str) -> str:
        """The row name of a variant key (``"single"``, ``"none"``, ``"plain"``, ``"lpp"``)."""
        return self.config.variant_name(variant)

    def score(self, method: str, metric: str = "dice", table: str = "segmentation") -> float:
        """One number of a table by row name (``table``: ``"segmentation"`` or ``"pseudo_masks"``)."""
        rows = self.segmentation_rows if table == "segmentation" else self.pseudo_mask_rows
        for r in rows:
            if r["method"] == method:
                return float(r[metric])
        raise KeyError(f"no row {method!r} in the {table} table; rows: {[r['method'] for r in rows]}")

    def histories(self) -> dict[str, dict]:
        """Per model :meth:`MultiLevelTrainResult.summary` (for the results JSON)."""
        return {n: r.summary() for n, r in self.results.items()}

    def columns(self, index: Sequence[int], predictions: Sequence[str] = ("single", "lpp")) -> dict[str, torch.Tensor]:
        """:func:`figure_columns` of test images ``index`` with the ``pred. <variant>`` masks."""
        probs = {f"pred. {v}": self.test_probs[self.name(v)] for v in predictions if self.name(v) in self.test_probs}
        return figure_columns(self.data["test"], index, probs)


def figure_columns(
    pm: PseudoMaskSet, index: Sequence[int], probs: Mapping[str, torch.Tensor] | None = None
) -> dict[str, torch.Tensor]:
    """Columns for :func:`wsslib.reporting.plots.mask_grid` of the images ``index`` of ``pm``'s
    images with a mask: heatmap and CRF map ``(n, S, S)`` float, each pseudo-mask ``(n, S, S)``
    bool, and ``probs[name] > 0.5`` for each entry of ``probs`` (``(N, S, S)`` over the same images)."""
    pm = pm.select(torch.nonzero(pm.has_mask).flatten().tolist())
    idx = torch.as_tensor(list(index), dtype=torch.long)
    cols = {"heatmap": pm.heatmaps[idx], "CRF map": pm.refined[idx]}
    cols.update({f"pseudo-mask > {t:g}": pm.masks[idx, l] for l, t in enumerate(pm.levels)})
    cols.update({name: p[idx] > 0.5 for name, p in (probs or {}).items()})
    return cols


def run_gaze_experiment(
    config: GazeConfig,
    data: Mapping[str, PseudoMaskSet],
    *,
    seed: int = 0,
    device: str | torch.device = "auto",
    progress: bool = False,
) -> GazeExperiment:
    """GazeMedSeg's protocol on prepared splits: pseudo-mask table, the model variants (trained on
    ``data["train"]``, checkpoints chosen on ``data["valid"]``'s true masks, never the test
    split's), and their test scores.

    Args:
        config: the :class:`GazeConfig`.
        data: ``{"train", "valid", "test"}`` -> :class:`PseudoMaskSet` (:func:`gaze_supervision`),
            made with ``config.levels`` at ``config.image_size``.
        seed: seeds every variant's weights, batches and flips (the global RNG is left alone).
        device: where to train.
        progress: tqdm bars.

    Returns:
        :class:`GazeExperiment`.

    Raises:
        ValueError: a split is missing, or the sets were made with other levels or size.
    """
    missing = {"train", "valid", "test"} - set(data)
    if missing:
        raise ValueError(f"data needs the splits train, valid and test; missing {sorted(missing)}")
    for name, d in data.items():
        if tuple(d.levels) != tuple(float(t) for t in config.levels) or d.images.shape[-1] != config.image_size:
            raise ValueError(f"data[{name!r}] has levels {d.levels} at {d.images.shape[-1]} px but config asks "
                             f"for {config.levels} at {config.image_size} px: make it with gaze_supervision(config)")
    data = dict(data)
    train = data["train"]
    share = baselines.mean_foreground_share(train.truth[train.has_mask])
    cache = encoder_cache(config, train, data["valid"], device=device, progress=progress) if config.encoder else None
    results = train_gaze_variants(config, train, data["valid"], seed=seed, device=device, progress=progress,
                                  cache=cache)
    seg_rows, probs = score_gaze_models(results, data["test"], config, share=share)
    return GazeExperiment(config=config, data=data, pseudo_mask_rows=pseudo_mask_rows(data, config),
                          segmentation_rows=seg_rows, results=results, test_probs=probs, share=share, seed=seed,
                          cache=cache)
