"""wsslib: weakly supervised segmentation from cheap supervision (image labels, gaze).

The sub-packages follow the data's way through the pipeline; imports only point down this list:

=================  ==================================================================
``core``           errors, seeds and devices, shape checks, registries, torchrun helpers
``data``           data sets (synthetic and real), image reading, splits, augmentation
``evaluate``       metrics, map -> mask thresholds and the threshold search, baselines
``models``         classifiers with dropout heads, UNets, their training
``explain``        CAMs, Monte Carlo dropout, ``predict_explain``, CCAM
``methods``        the papers' methods: AAX, CAM ensembles, gaze pseudo-masks
``papers``         each paper's published numbers, configurations and the presets
``reporting``      results JSON with provenance, figures
``apps``           the command line: ``reproduce``, ``annotate``, ``bench``
=================  ==================================================================

The flat module names of wsslib 0.1 (``wsslib.cams``, ``wsslib.aax``, ...) still import, with a
``DeprecationWarning`` naming the new place.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

__version__ = "0.2.0"

__all__ = ["__version__"]

#: wsslib 0.1's flat modules and where they live now.
_MOVED = {
    "errors": "core.errors", "utils": "core.utils", "registry": "core.registry",
    "distributed": "core.distributed", "metrics": "evaluate.metrics",
    "thresholds": "evaluate.thresholds", "baselines": "evaluate.baselines",
    "train": "models.training", "uncertainty": "explain.uncertainty",
    "cams": "explain.cams", "inference": "explain.inference", "ccam": "explain.ccam",
    "aax": "methods.aax", "gaze": "methods.gaze",
    "report": "reporting.results", "plots": "reporting.plots", "annotate": "apps.annotate",
    "reproduce": "apps.reproduce", "cli": "apps.cli", "bench": "apps.bench",
}

#: wsslib 0.1's modules that were split in two: no alias could hold the old names, so importing
#: them says where each part went.
_SPLIT = {
    "unet": "the networks (UNet, MultiLevelUNet, lpp) are in wsslib.models.unet; train_multilevel, "
            "multilevel_loss and predict in wsslib.methods.gaze",
    "fusion": "the threshold search (search_grid, threshold_grid) and combine_masks / combine_maps (were fuse / "
              "fuse_maps) are in wsslib.evaluate.thresholds; the EnsembleCAM protocol in wsslib.methods.ensembles",
}


class _MovedFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Import hook: ``import wsslib.cams`` returns ``wsslib.explain.cams`` with a warning."""

    def find_spec(self, fullname, path=None, target=None):  # noqa: D102
        head, _, rest = fullname.partition(".")
        if head != "wsslib" or not rest:
            return None
        first, _, tail = rest.partition(".")
        if first in _SPLIT:
            raise ModuleNotFoundError(f"wsslib.{first} was split in wsslib 0.2: {_SPLIT[first]}", name=fullname)
        if first not in _MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):  # noqa: D102
        first, _, tail = spec.name.partition(".")[2].partition(".")
        new = "wsslib." + _MOVED[first] + ("." + tail if tail else "")
        warnings.warn(f"{spec.name} moved to {new}; the old name will be removed in wsslib 0.3",
                      DeprecationWarning, stacklevel=3)
        module = importlib.import_module(new)
        sys.modules[spec.name] = module
        return module

    def exec_module(self, module):  # noqa: D102
        return None


if not any(isinstance(f, _MovedFinder) for f in sys.meta_path):
    sys.meta_path.append(_MovedFinder())
