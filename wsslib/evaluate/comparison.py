"""One scoring of every method on the same test images (notebook 05's summary table).

Each method's masks are scored on the test images that hold a lesion; a method that gives maps
has its threshold chosen on the validation images (never on test), and the validation score it
reached there is recorded, so the best method of a family is picked on validation too.

Example:
    >>> import torch
    >>> truth = torch.zeros(2, 8, 8, dtype=torch.bool); truth[:, 2:6, 2:6] = True
    >>> cmp = MethodComparison(truth, truth, dataset="toy")
    >>> cmp.add_baselines(fg_share=0.25)
    >>> r = cmp.add_maps("single CAM", "perfect", truth.float(), truth.float())
    >>> float(cmp.table().loc["perfect", "dice"]), float(cmp.table().loc["empty", "dice"])
    (1.0, 0.0)
    >>> cmp.best_by_family(["baseline", "single CAM"])["method"].tolist()
    ['centre prior', 'perfect']
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from wsslib.core.utils import check_same_shape
from wsslib.evaluate.baselines import centre_prior, empty_masks
from wsslib.evaluate.metrics import segmentation_scores
from wsslib.evaluate.thresholds import ThresholdResult, binarize, select_threshold

__all__ = ["MethodComparison"]


class MethodComparison:
    """Accumulates one row per method: every :func:`~wsslib.evaluate.metrics.segmentation_scores`
    key on the test images, ``coverage`` (share of them given a non-empty mask), ``threshold`` and
    ``valid_<metric>`` (the validation score at it).

    Args:
        truth: ``(N, H, W)`` bool true masks of the test images scored (those with a lesion).
        valid_truth: ``(V, H, W)`` bool true masks of the validation images thresholds are chosen on.
        dataset: the name written in every row's ``dataset``.
        metric: what thresholds maximise on validation (``"dice"``).
    """

    def __init__(self, truth: torch.Tensor, valid_truth: torch.Tensor, dataset: str, metric: str = "dice") -> None:
        self.truth, self.valid_truth, self.dataset, self.metric = truth, valid_truth, dataset, metric
        self.valid_key = f"valid_{metric}"
        self.rows: list[dict[str, Any]] = []
        self.masks: dict[str, torch.Tensor] = {}

    def add(self, family: str, method: str, pred: torch.Tensor, threshold: Any = None,
            valid_score: float | None = None, **extra: Any) -> None:
        """Score ``pred`` (N, H, W) bool masks of the test images as one row."""
        check_same_shape("pred", pred, "truth", self.truth)
        s = segmentation_scores(pred, self.truth)
        row = {"method": method, "family": family, **s,
               "coverage": float(pred.flatten(1).any(1).float().mean()) if len(pred) else float("nan"),
               "threshold": threshold, self.valid_key: valid_score,
               "source": "this run", "dataset": self.dataset, **extra}
        self.rows.append(row)
        self.masks[method] = pred

    def add_baselines(self, fg_share: float) -> None:
        """The two floors: ``empty`` masks and the ``centre prior`` (a centred ellipse covering
        ``fg_share`` of the image, e.g. the mean lesion share of the training masks)."""
        n, h, w = self.truth.shape
        self.add("baseline", "empty", empty_masks(n, h, w))
        self.add("baseline", "centre prior", centre_prior(h, w, fg_share).expand(n, h, w).clone(),
                 note=f"centred ellipse, {fg_share:.1%} of the image")

    def add_maps(self, family: str, method: str, valid_maps: torch.Tensor, test_maps: torch.Tensor,
                 **extra: Any) -> ThresholdResult:
        """Choose the threshold of ``valid_maps`` (V, H, W) on validation, score ``test_maps`` (N, H, W)."""
        r = select_threshold(valid_maps, self.valid_truth, metric=self.metric)
        self.add(family, method, binarize(test_maps, r.threshold), r.threshold, r.score, **extra)
        return r

    def table(self, paper_rows: Sequence[dict] = ()):
        """The rows (and the papers' reference rows) as a DataFrame indexed by method."""
        import pandas as pd

        return pd.DataFrame(list(self.rows) + list(paper_rows)).set_index("method")

    def best_by_family(self, families: Sequence[str], paper_rows: Sequence[dict] = (),
                       baseline: str = "centre prior"):
        """One row per family: its method with the best validation score (the baseline family
        shows ``baseline``), beside the papers' numbers of that family."""
        import pandas as pd

        ours = self.table()
        best = []
        for fam in families:
            sub = ours[ours["family"] == fam]
            if len(sub) == 0:
                continue
            if fam == "baseline" and baseline in sub.index:
                pick = baseline
            elif sub[self.valid_key].notna().any():
                pick = sub[self.valid_key].astype(float).idxmax()
            else:
                pick = sub["dice"].astype(float).idxmax()
            paper = [p for p in paper_rows if p.get("family") == fam]
            ref = "; ".join(f"{p['dataset']}: " + " / ".join(f"{k.capitalize() if k == 'dice' else k.upper()} {p[k]:.3f}"
                                                            for k in ("dice", "iou") if p.get(k) is not None)
                            for p in paper) or None
            best.append({"family": fam, "method": pick,
                         **ours.loc[pick, ["dice", "iou", "precision", "recall", "coverage"]].to_dict(), "paper": ref})
        return pd.DataFrame(best)
