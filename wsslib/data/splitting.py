"""Seeded, stratified splits for data sets that ship none (or no labelled test part).

The rule, the same that made ``splits/polypgen.csv``: one ``np.random.default_rng(seed)``; for each
label in ascending order, the sorted ids (or groups) of that label are permuted with it; of each,
the first ``round(f_1 n)`` go to the first split name, the next ``round(f_2 n)`` to the second, ...,
and the rest to the last. The result depends only on the set of ids, their labels and the seed, so
a complete download always gets the same split (with the defaults, 70/15/15 % and seed 0, this
reproduces ``splits/polypgen.csv`` exactly).

>>> stratified_split(["a", "b", "c", "d"], [0, 0, 1, 1], fractions=(0.5, 0.5), names=("x", "y"))
{'a': 'x', 'b': 'y', 'c': 'x', 'd': 'y'}
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

DEFAULT_FRACTIONS = (0.70, 0.15, 0.15)
DEFAULT_NAMES = ("train", "valid", "test")


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
