"""Each paper's published numbers and configurations, and the notebooks' presets: one place,
read by the notebooks, the report and the tests.

One module per notebook (``quickstart``, ``zhong2024`` for gaze, ``deshpande`` for CAM methods,
``ostrowski`` for CAM ensembles, ``nasir2025`` for AAX, ``summary``), each defining:

* ``NOTEBOOK``: the notebook's stem;
* ``PUBLISHED``: the paper's table rows as records (``method``, ``dataset``, metrics, ``source``
  ``"paper"``), exactly as printed in the paper;
* ``PRESETS``: ``{"cpu": {...}, ...}`` knob values per preset (see :mod:`.settings`);
* ``SMOKE``: the knob values that shrink the ``cpu`` preset to seconds.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from wsslib.papers.settings import PRESETS, Settings, notebook_settings, resolve_smoke

__all__ = ["NOTEBOOKS", "PRESETS", "Settings", "notebook_module", "notebook_settings", "published", "resolve_smoke"]

#: notebook stem -> module of this package holding its paper's numbers and presets
NOTEBOOKS = {
    "00_quickstart": "quickstart",
    "01_gaze_heatmaps": "zhong2024",
    "02_cam_methods": "deshpande",
    "03_cam_ensembles": "ostrowski",
    "04_aax_decision": "nasir2025",
    "05_iou_dice_summary": "summary",
}


def notebook_module(notebook: str) -> ModuleType:
    """The module of a notebook, by stem (``"04_aax_decision"``) or number (``"04"``)."""
    for stem, mod in NOTEBOOKS.items():
        if notebook in (stem, stem[:2]):
            return importlib.import_module(f"wsslib.papers.{mod}")
    raise ValueError(f"unknown notebook {notebook!r}; known: {', '.join(NOTEBOOKS)}")


def published(notebook: str) -> list[dict]:
    """The paper's rows for a notebook's main table (records with ``source == "paper"``)."""
    return [dict(r, source="paper") for r in notebook_module(notebook).PUBLISHED]
