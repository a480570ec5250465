"""Seeded, stratified splits and cross-validation folds for data sets that ship none.

Splits (:func:`stratified_split`, :func:`grouped_split`):

The rule, the same that made ``splits/polypgen.csv``: one ``np.random.default_rng(seed)``; for each
label in ascending order, the sorted ids (or groups) of that label are permuted with it; of each,
the first ``round(f_1 n)`` go to the first split name, the next ``round(f_2 n)`` to the second, ...,
and the rest to the last. The result depends only on the set of ids, their labels and the seed, so
a complete download always gets the same split (with the defaults, 70/15/15 % and seed 0, this
reproduces ``splits/polypgen.csv`` exactly).

>>> stratified_split(["a", "b", "c", "d"], [0, 0, 1, 1], fractions=(0.5, 0.5), names=("x", "y"))
{'a': 'x', 'b': 'y', 'c': 'x', 'd': 'y'}

Folds (:func:`stratified_folds`, :func:`stratified_group_folds`): one fold index per image, every
label spread evenly over the ``k`` folds; the grouped version keeps every group (patient, volume)
in one fold, so that no patient is both trained on and tested on. :func:`patient_groups` reads the
patient of every slice from the slice ids of the volume data sets (``<case>_z<k>``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from wsslib.data.base import TensorBatch

DEFAULT_FRACTIONS = (0.70, 0.15, 0.15)
DEFAULT_NAMES = ("train", "valid", "test")
#: A slice id of the volume data sets (:mod:`wsslib.data.volumes`): ``<case>_z<slice index>``.
SLICE_ID = re.compile(r"^(?P<case>.+)_z\d+$")

__all__ = ["SLICE_ID", "grouped_split", "patient_groups", "pool_splits", "stratified_folds",
           "stratified_group_folds", "stratified_split"]


def stratified_split(
    ids: Sequence[str],
    labels: Sequence[int] | None = None,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    names: Sequence[str] = DEFAULT_NAMES,
    seed: int = 0,
) -> dict[str, str]:
    """Assign every id to a split, stratified by label.

    Args:
        ids: unique ids (any order; they are sorted first).
        labels: one label per id; ``None`` = one stratum.
        fractions: share of each split, one per name (the last one takes the rest).
        names: split names.
        seed: seed of the one generator.

    Returns:
        ``{id: split name}``.

    Raises:
        ValueError: ids not unique, lengths that differ, or fractions that do not match names.
    """
    if len(set(ids)) != len(ids):
        raise ValueError("ids must be unique")
    if labels is None:
        labels = [0] * len(ids)
    if len(labels) != len(ids):
        raise ValueError(f"{len(ids)} ids but {len(labels)} labels")
    if len(fractions) != len(names):
        raise ValueError(f"{len(fractions)} fractions for {len(names)} split names")
    rng = np.random.default_rng(seed)
    out: dict[str, str] = {}
    for label in sorted(set(labels)):
        group = sorted(i for i, lab in zip(ids, labels) if lab == label)
        order = [group[k] for k in rng.permutation(len(group))]
        start = 0
        for name, frac in zip(names[:-1], fractions[:-1]):
            stop = min(len(order), start + int(round(frac * len(group))))
            out.update((i, name) for i in order[start:stop])
            start = stop
        out.update((i, names[-1]) for i in order[start:])
    return out


def grouped_split(
    ids: Sequence[str],
    groups: Sequence[str],
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    names: Sequence[str] = DEFAULT_NAMES,
    seed: int = 0,
) -> dict[str, str]:
    """Split by group (patient, volume): every id goes where its group goes, so no patient is in
    two splits. The groups are split with :func:`stratified_split` (one stratum).

    Returns:
        ``{id: split name}``.
    """
    if len(groups) != len(ids):
        raise ValueError(f"{len(ids)} ids but {len(groups)} groups")
    of_group = stratified_split(sorted(set(groups)), None, fractions, names, seed)
    return {i: of_group[g] for i, g in zip(ids, groups)}


def _check_folds(labels: torch.Tensor, k: int) -> torch.Tensor:
    labels = torch.as_tensor(labels)
    if labels.dim() != 1:
        raise ValueError(f"labels: expected a 1-D tensor of class indices, got shape {tuple(labels.shape)}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise ValueError(f"k: need at least 2 folds, got {k!r}")
    if len(labels) < k:
        raise ValueError(f"k={k} folds need at least {k} images, got {len(labels)}")
    return labels


def stratified_folds(labels: torch.Tensor | Sequence[int], k: int, seed: int = 0) -> torch.Tensor:
    """A fold index per image, every class spread evenly over the ``k`` folds.

    Per class (ascending), the class's images are permuted with one ``torch.Generator`` seeded
    with ``seed`` and dealt round-robin to folds ``0, 1, ..., k-1``; fold sizes per class differ by
    at most one. The global random state is not touched.

    Args:
        labels: ``(N,)`` integer class of each image.
        k: number of folds (at least 2, at most N).
        seed: the generator's seed.

    Returns:
        ``(N,)`` int64 fold indices in ``0..k-1``.

    Raises:
        ValueError: labels not 1-D, ``k < 2`` or more folds than images.

    Example:
        >>> f = stratified_folds(torch.tensor([0, 0, 0, 1, 1, 1]), 3, seed=0)
        >>> sorted(f[:3].tolist()), sorted(f[3:].tolist())
        ([0, 1, 2], [0, 1, 2])
    """
    labels = _check_folds(labels, k)
    g = torch.Generator().manual_seed(seed)
    fold = torch.empty(len(labels), dtype=torch.long)
    for c in labels.unique():
        idx = torch.nonzero(labels == c).flatten()
        fold[idx[torch.randperm(len(idx), generator=g)]] = torch.arange(len(idx)) % k
    return fold


def stratified_group_folds(
    labels: torch.Tensor | Sequence[int], groups: Sequence[str], k: int, seed: int = 0
) -> torch.Tensor:
    """A fold index per image such that every group (patient) lies in ONE fold, labels balanced.

    The groups are permuted with a ``torch.Generator`` seeded with ``seed``, then taken largest
    first (a stable sort, so equal sizes keep the random order) and each is put in the fold that
    so far holds the fewest images of the group's majority label (ties: the fewest images, then
    the lowest fold). Every fold gets at least one group. The global random state is not touched.

    Args:
        labels: ``(N,)`` integer class of each image.
        groups: ``N`` group ids (e.g. :func:`patient_groups`).
        k: number of folds (at least 2, at most the number of groups).
        seed: the generator's seed.

    Returns:
        ``(N,)`` int64 fold indices in ``0..k-1``.

    Raises:
        ValueError: lengths differ, ``k < 2``, or fewer groups than folds.

    Example:
        >>> labels = torch.tensor([0, 1, 0, 1, 0, 1, 0, 1])
        >>> groups = ["p1", "p1", "p2", "p2", "p3", "p3", "p4", "p4"]
        >>> f = stratified_group_folds(labels, groups, 2, seed=0)
        >>> all(len({int(f[i]) for i in range(8) if groups[i] == g}) == 1 for g in set(groups))
        True
        >>> torch.bincount(f).tolist()
        [4, 4]
    """
    labels = _check_folds(labels, k)
    groups = list(groups)
    if len(groups) != len(labels):
        raise ValueError(f"{len(labels)} labels but {len(groups)} groups")
    names = sorted(set(groups))
    if len(names) < k:
        raise ValueError(f"k={k} folds need at least {k} groups (patients), got {len(names)}: {names[:5]}")
    of = {name: i for i, name in enumerate(names)}
    gidx = torch.tensor([of[x] for x in groups], dtype=torch.long)
    n_cls = int(labels.max()) + 1 if len(labels) else 1
    per_group = torch.zeros(len(names), n_cls, dtype=torch.long)
    per_group.index_put_((gidx, labels.long()), torch.ones(len(labels), dtype=torch.long), accumulate=True)
    order = torch.randperm(len(names), generator=torch.Generator().manual_seed(seed))
    order = order[torch.sort(per_group[order].sum(1), descending=True, stable=True).indices]
    load = torch.zeros(k, n_cls, dtype=torch.long)
    fold_of_group = torch.empty(len(names), dtype=torch.long)
    for j, gi in enumerate(order.tolist()):
        if j < k:  # every fold gets a group first
            f = j
        else:
            major = int(per_group[gi].argmax())
            key = [(int(load[f, major]), int(load[f].sum()), f) for f in range(k)]
            f = min(key)[2]
        fold_of_group[gi] = f
        load[f] += per_group[gi]
    return fold_of_group[gidx]


def patient_groups(ids: Sequence[str] | None) -> list[str] | None:
    """The patient (volume case) of every slice id ``<case>_z<k>``; None unless every id is one.

    Args:
        ids: image ids (``TensorBatch.ids``), or None.

    Returns:
        ``N`` case names, or None when ``ids`` is None or some id is not a slice id (then the
        data set has no patients and folds are not grouped).

    Example:
        >>> patient_groups(["prostate_00_z002", "prostate_00_z003", "prostate_01_z002"])
        ['prostate_00', 'prostate_00', 'prostate_01']
        >>> patient_groups(["img_001", "img_002"]) is None
        True
    """
    if not ids:
        return None
    found = [SLICE_ID.match(i) for i in ids]
    if not all(found):
        return None
    return [m.group("case") for m in found]


def pool_splits(splits: Mapping[str, TensorBatch]) -> TensorBatch:
    """Every split's images as one :class:`~wsslib.data.base.TensorBatch`, in the splits' order.

    Cross-validation (EnsembleCAM) folds over every image of a data set: pool the shipped splits.

    Args:
        splits: ``{name: TensorBatch}`` (e.g. :func:`wsslib.data.load_splits`), images of one size.

    Returns:
        The concatenation; ``masks`` / ``has_mask`` / ``ids`` kept when every split has them.

    Raises:
        ValueError: no splits, or splits whose images differ in size.
    """
    parts = list(splits.values())
    if not parts:
        raise ValueError("pool_splits: no splits given")
    shapes = {tuple(b.images.shape[1:]) for b in parts}
    if len(shapes) != 1:
        raise ValueError(f"pool_splits: the splits' images differ in shape: {sorted(shapes)}")

    def cat(attr: str) -> torch.Tensor | None:
        got = [getattr(b, attr) for b in parts]
        return None if any(x is None for x in got) else torch.cat(got)

    ids = None if any(b.ids is None for b in parts) else [i for b in parts for i in b.ids]
    return TensorBatch(cat("images"), cat("labels"), cat("masks"), cat("has_mask"), ids)
