"""Figures the notebooks share: mask grids and metric bar charts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

__all__ = ["mask_grid", "metric_bars"]


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def mask_grid(
    images: torch.Tensor,
    columns: Mapping[str, torch.Tensor],
    *,
    truth: torch.Tensor | None = None,
    row_titles: Sequence[str] | None = None,
    cell_size: float = 1.8,
):
    """One row per image: the image, its truth, then one column per named map or mask.

    Args:
        images: (N, 3, H, W) float in [0, 1].
        columns: name -> (N, H, W) tensor; float maps are shown as heatmaps over the image,
            bool masks as a green overlay with the truth outlined in white.
        truth: (N, H, W) bool ground truth masks, shown as its own column and as outlines.
        row_titles: one label per row (e.g. "p=0.93").

    Returns:
        The matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    imgs = _np(images).transpose(0, 2, 3, 1).clip(0, 1)
    n = imgs.shape[0]
    names = (["image"] + (["truth"] if truth is not None else []) + list(columns))
    fig, axes = plt.subplots(n, len(names), figsize=(cell_size * len(names), cell_size * n), squeeze=False)
    t = _np(truth) if truth is not None else None
    for i in range(n):
        for j, name in enumerate(names):
            ax = axes[i, j]
            ax.imshow(imgs[i])
            if name == "truth":
                ax.imshow(np.ma.masked_where(~t[i], t[i]), cmap="autumn", alpha=0.5, vmin=0, vmax=1)
            elif name != "image":
                m = _np(columns[name][i])
                if m.dtype == bool:
                    ax.imshow(np.ma.masked_where(~m, m), cmap="summer", alpha=0.55, vmin=0, vmax=1)
                else:
                    ax.imshow(m, cmap="jet", alpha=0.5, vmin=0, vmax=1)
                if t is not None and t[i].any():
                    ax.contour(t[i].astype(float), levels=[0.5], colors="white", linewidths=0.8)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(name, fontsize=9)
        if row_titles is not None:
            axes[i, 0].set_ylabel(row_titles[i], fontsize=8)
    fig.tight_layout()
    return fig


def metric_bars(table, metrics: Sequence[str] = ("dice", "iou"), title: str | None = None):
    """A seaborn bar chart of ``metrics`` per method from a DataFrame indexed by method."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    df = table.reset_index().melt(id_vars=table.index.name or "method", value_vars=list(metrics),
                                  var_name="metric", value_name="value")
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(table), 3.2))
    sns.barplot(data=df, x=table.index.name or "method", y="value", hue="metric", ax=ax)
    ax.set_ylim(0, 1)
    ax.set_xlabel("")
    ax.tick_params(axis="x", rotation=20)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig
