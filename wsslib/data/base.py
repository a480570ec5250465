"""The data contract every data set follows: :class:`Sample`, :class:`WSSDataset`, the registry,
data-root resolution and :func:`to_tensors` (a whole split as one batch of tensors)."""

from __future__ import annotations

import inspect
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from wsslib.core.errors import DataError, DatasetNotFoundError
from wsslib.core.registry import Registry
from wsslib.data.sources import default_data_root, in_source_checkout

PROJECT_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Sample:
    """One image with all the supervision a data set offers for it.

    Attributes:
        image: ``(H, W, 3) uint8`` RGB.
        label: 1 = lesion/polyp present, 0 = absent.
        mask: ``(H, W) bool`` lesion mask, ``None`` when the set has no masks.
        boxes: ``(K, 4) float32`` boxes ``x_min, y_min, x_max, y_max`` in pixels of ``image``;
            ``(0, 4)`` when there are none.
        gaze: ``(N, 3)`` float fixations (float64 from the real sets' CSVs) ``x`` (column), ``y`` (row), normalised to
            [0, 1], and duration in ms; ``None`` when the set has no gaze.
        id: stable image id (the file stem for real sets).
    """

    image: np.ndarray
    label: int
    mask: np.ndarray | None
    boxes: np.ndarray
    gaze: np.ndarray | None
    id: str


class WSSDataset(torch.utils.data.Dataset, ABC):
    """Abstract base of every data set: indexable, yields :class:`Sample`.

    Subclasses set ``name`` and ``split`` and implement ``__len__``, ``__getitem__``,
    ``labels`` and ``ids``.
    """

    name: str
    split: str

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def __getitem__(self, i: int) -> Sample: ...

    @abstractmethod
    def labels(self) -> np.ndarray:
        """Image labels ``(N,) int64``, read without decoding any image."""

    @abstractmethod
    def ids(self) -> list[str]:
        """Image ids, in the data set's order (``N`` strings)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, split={self.split!r}, n={len(self)})"


@dataclass
class TensorBatch:
    """A whole split as tensors, every image resized to the same ``S x S`` (or native) size.

    Attributes:
        images: ``(N, 3, S, S) float32`` in [0, 1].
        labels: ``(N,) int64``.
        masks: ``(N, S, S) bool``; all False where the image has no mask (None: no masks).
        has_mask: ``(N,) bool``, True where ``masks[i]`` is a real annotation (None: no masks).
        ids: ``N`` image ids (None: unnamed).

    A trainer of classifiers needs only ``images`` and ``labels``:
    ``TensorBatch(images, labels)`` is enough.
    """

    images: torch.Tensor
    labels: torch.Tensor
    masks: torch.Tensor | None = None
    has_mask: torch.Tensor | None = None
    ids: list[str] | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: torch.Tensor | Sequence[int]) -> TensorBatch:
        """The images at ``index`` (int indices or an (N,) bool mask), as a new TensorBatch."""
        idx = torch.as_tensor(index)
        if idx.dtype == torch.bool:
            idx = torch.nonzero(idx).flatten()
        ids = None if self.ids is None else [self.ids[int(i)] for i in idx]
        return TensorBatch(
            self.images[idx], self.labels[idx],
            None if self.masks is None else self.masks[idx],
            None if self.has_mask is None else self.has_mask[idx], ids)


def to_tensors(ds: WSSDataset, size: int | None = None, progress: bool = False) -> TensorBatch:
    """Decode every sample of ``ds`` into one :class:`TensorBatch`.

    Args:
        ds: the data set (all its samples are decoded, in order).
        size: side ``S`` of the square output; images are resized bilinearly with antialiasing,
            masks with nearest neighbour. ``None`` keeps the native size, which then must be the
            same for every image.
        progress: show a tqdm progress bar.

    Returns:
        ``images (N, 3, S, S) float32`` in [0, 1], ``labels (N,) int64``, ``masks (N, S, S) bool``,
        ``has_mask (N,) bool`` and ``ids``.

    Raises:
        DataError: ``size=None`` but the images differ in size; or ``ds`` is empty.

    Example:
        >>> from wsslib.data import SyntheticDataset, to_tensors
        >>> tb = to_tensors(SyntheticDataset("test", n=20, size=32))
        >>> tuple(tb.images.shape), tb.images.dtype
        ((3, 3, 32, 32), torch.float32)
    """
    n = len(ds)
    if n == 0:
        raise DataError(f"{ds!r} is empty: nothing to convert to tensors")
    images = masks = None
    labels = torch.empty(n, dtype=torch.int64)
    has_mask = torch.zeros(n, dtype=torch.bool)
    ids: list[str] = []
    first_hw: tuple[int, int] | None = None
    for i in tqdm(range(n), desc=f"{ds.name}/{ds.split}", disable=not progress):
        s = ds[i]
        img = torch.from_numpy(np.ascontiguousarray(s.image)).permute(2, 0, 1).float().div_(255.0)
        mask = None if s.mask is None else torch.from_numpy(np.ascontiguousarray(s.mask))
        hw = (img.shape[1], img.shape[2])
        if size is None:
            if first_hw is None:
                first_hw = hw
            elif hw != first_hw:
                raise DataError(
                    f"{ds.name}/{ds.split}: images differ in size ({ids[0]} is {first_hw[0]}x{first_hw[1]}, "
                    f"{s.id} is {hw[0]}x{hw[1]}, H x W); pass size=... to resize them"
                )
        elif hw != (size, size):
            img = F.interpolate(img[None], size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0]
            img.clamp_(0.0, 1.0)
            if mask is not None:
                mask = F.interpolate(mask[None, None].float(), size=(size, size), mode="nearest")[0, 0] > 0.5
        if images is None:
            out_h, out_w = img.shape[1:]
            images = torch.empty((n, 3, out_h, out_w), dtype=torch.float32)
            masks = torch.zeros((n, out_h, out_w), dtype=torch.bool)
        images[i] = img
        if mask is not None:
            masks[i] = mask
            has_mask[i] = True
        labels[i] = int(s.label)
        ids.append(s.id)
    return TensorBatch(images=images, labels=labels, masks=masks, has_mask=has_mask, ids=ids)


_REGISTRY: Registry[Callable[..., WSSDataset]] = Registry("data set")
_T = TypeVar("_T", bound=Callable[..., WSSDataset])


def register_dataset(name: str) -> Callable[[_T], _T]:
    """Decorator registering a :class:`WSSDataset` subclass (or factory) under ``name``.

    The factory is called as ``factory(split=..., **kwargs)``, plus ``root=...`` when its
    signature has a ``root`` parameter.
    """
    return _REGISTRY.register(name)


def list_datasets() -> list[str]:
    """Names accepted by :func:`get_dataset`, sorted."""
    return _REGISTRY.names()


def get_dataset(name: str, root: str | Path | None = None, split: str = "train", **kwargs) -> WSSDataset:
    """Build the registered data set ``name`` for ``split``.

    Args:
        name: one of :func:`list_datasets` (``"synthetic"``, ``"kvasir-seg"``, ``"polypgen"``).
        root: data folder for sets read from disk (see :func:`find_root`); ignored by sets that
            take no ``root`` (the synthetic set is generated in memory).
        split: e.g. ``"train"``, ``"valid"``, ``"test"``; each set documents its own.
        **kwargs: passed on to the data set's constructor.

    Raises:
        ValueError: unknown ``name``.
        DatasetNotFoundError: the set's folder is missing.
    """
    factory = _REGISTRY.get(name)
    if "root" in inspect.signature(factory).parameters:
        kwargs["root"] = root
    return factory(split=split, **kwargs)


def find_root(name: str, root: str | Path | None = None) -> Path:
    """The folder holding data set ``name``.

    Tried in order: ``root`` when given (then only it), ``$WSSLIB_DATA/<name>``, then in a source
    checkout ``<project>/data/<name>`` and ``<project>/../shared/data/<name>``, in a wheel install
    ``<user data folder>/<name>`` (:func:`~wsslib.data.sources.default_data_root`, where
    ``wsslib download`` puts it).

    Raises:
        DatasetNotFoundError: none of the candidates is a folder; names the first candidate.
    """
    if root is not None:
        candidates = [Path(root).expanduser()]
    else:
        candidates = []
        if os.environ.get("WSSLIB_DATA"):
            candidates.append(Path(os.environ["WSSLIB_DATA"]).expanduser() / name)
        if in_source_checkout():
            candidates += [PROJECT_ROOT / "data" / name, PROJECT_ROOT.parent / "shared" / "data" / name]
        else:
            candidates.append(default_data_root() / name)
    for c in candidates:
        if c.is_dir():
            return c
    raise DatasetNotFoundError(name, candidates[0])


def load_splits(
    dataset: str,
    splits: tuple[str, ...] = ("train", "valid", "test"),
    *,
    root: str | Path | None = None,
    size: int = 128,
    n: int | None = None,
    seed: int = 0,
    progress: bool = False,
    **kwargs,
) -> dict[str, TensorBatch]:
    """The named splits of a data set as tensors at ``size x size``: what every notebook starts with.

    Args:
        dataset: a registered name ("synthetic", "kvasir-seg", "polypgen", ...).
        splits: split names to load.
        root: folder of a real data set (None: the default search path of :func:`find_root`).
        size: side of the square tensors.
        n, seed: synthetic only: images in train + valid + test, and the generator's seed
            (the image size is ``size``).
        kwargs: passed on to the data set's constructor.

    Returns:
        ``{split: TensorBatch}`` with images (N, 3, size, size) in [0, 1], labels (N,),
        masks (N, size, size).
    """
    if dataset == "synthetic":
        kwargs = {"size": size, "seed": seed, **({"n": n} if n is not None else {}), **kwargs}
    return {s: to_tensors(get_dataset(dataset, root=root, split=s, **kwargs), size=size, progress=progress)
            for s in splits}
