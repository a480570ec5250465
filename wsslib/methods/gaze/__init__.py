"""Gaze supervision (GazeMedSeg, Zhong et al., MICCAI 2024): fixations -> heatmaps -> dense-CRF
refined maps -> hierarchical pseudo-masks -> multi-level UNets with cross-level consistency.

The pipeline, as in ``methods.md`` section 3, one module per step:

1. :mod:`.heatmaps`: :func:`gaze_heatmaps` (duration-weighted Gaussians, one matrix product per image);
2. :mod:`.crf`: :func:`crf_refine` (dense CRF, 2 labels, bilateral term only, soft output);
3. :mod:`.pseudomasks`: :func:`hierarchical_masks`, :func:`pseudo_masks` (a whole data set at ``S x S``);
4. :mod:`.training`: :func:`multilevel_loss`, :func:`train_multilevel` (config in,
   :class:`MultiLevelTrainResult` out), :func:`predict`; the networks are in :mod:`wsslib.models.unet`;
5. :mod:`.protocol`: :class:`GazeConfig`, :func:`gaze_supervision`, :func:`run_gaze_experiment`
   (notebooks 01 and 05).
"""

from wsslib.methods.gaze.crf import PAPER_CRF, crf_params_for, crf_refine, crf_sxy_for
from wsslib.methods.gaze.heatmaps import (
    NCI_ISBI_SIGMA_FRAC,
    PAPER_CANVAS,
    PAPER_SIGMA_FRAC,
    gaze_heatmaps,
    gaze_heatmaps_batched,
    reference_heatmap,
)
from wsslib.methods.gaze.protocol import (
    CANVAS,
    SXY_REFERENCE_SIDE,
    VARIANTS,
    GazeConfig,
    GazeExperiment,
    encoder_cache,
    figure_columns,
    gaze_supervision,
    pseudo_mask_rows,
    run_gaze_experiment,
    score_gaze_models,
    spread_comparisons,
    train_gaze_variants,
)
from wsslib.methods.gaze.pseudomasks import (
    DATASET_SETTINGS,
    KVASIR_LEVELS,
    NCI_ISBI_LEVELS,
    PseudoMaskSet,
    dataset_settings,
    default_levels,
    default_workers,
    hierarchical_masks,
    map_scores,
    pseudo_masks,
)
from wsslib.methods.gaze.training import (
    EncoderCache,
    MultiLevelTrainConfig,
    MultiLevelTrainResult,
    cache_encoder_features,
    multilevel_loss,
    predict,
    train_multilevel,
)

__all__ = [
    "DATASET_SETTINGS", "NCI_ISBI_LEVELS", "NCI_ISBI_SIGMA_FRAC", "PAPER_CANVAS", "PAPER_CRF", "crf_params_for",
    "crf_sxy_for", "dataset_settings", "default_workers",
    "CANVAS", "EncoderCache", "KVASIR_LEVELS", "PAPER_SIGMA_FRAC", "SXY_REFERENCE_SIDE", "VARIANTS", "GazeConfig", "GazeExperiment",
    "MultiLevelTrainConfig", "MultiLevelTrainResult", "PseudoMaskSet", "cache_encoder_features", "crf_refine", "default_levels",
    "encoder_cache", "figure_columns",
    "gaze_heatmaps", "gaze_heatmaps_batched", "gaze_supervision", "hierarchical_masks", "map_scores",
    "multilevel_loss", "predict", "pseudo_mask_rows", "pseudo_masks", "reference_heatmap", "run_gaze_experiment",
    "score_gaze_models", "spread_comparisons", "train_gaze_variants", "train_multilevel",
]
