"""The table of real data sources, ``wsslib/data/sources.tsv``: the one place that names every
download (URL, size, checksum, licence, layout). ``wsslib download`` (:mod:`wsslib.data.download`,
and ``./data_download.sh``, its wrapper in the repository) reads it, and so do the tests;
:class:`~wsslib.core.errors.DatasetNotFoundError` messages name the command. Also where the data
live by default (:func:`default_data_root`).

>>> from wsslib.data.sources import load_sources
>>> sorted({s.name for s in load_sources()})[:3]
['brats2020', 'decathlon-prostate', 'fire']
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from wsslib.core.errors import DataError

SOURCES_PATH = Path(__file__).resolve().parent / "sources.tsv"
#: The repository root when wsslib runs from a source checkout (an editable install); in a wheel
#: install this is site-packages, which has no pyproject.toml (:func:`in_source_checkout`).
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def in_source_checkout() -> bool:
    """Whether this wsslib is the repository's (a clone, an editable install), not a wheel's."""
    return (PROJECT_ROOT / "pyproject.toml").is_file() and (PROJECT_ROOT / "wsslib").is_dir()


def default_data_root() -> Path:
    """Where data sets live unless a ``root`` is given: ``$WSSLIB_DATA``, else the repository's
    ``data/`` in a source checkout, else the user's data folder (``$XDG_DATA_HOME/wsslib/data``,
    by default ``~/.local/share/wsslib/data``). ``wsslib download`` installs there and the loaders
    look there (:func:`wsslib.data.base.find_root`)."""
    if os.environ.get("WSSLIB_DATA"):
        return Path(os.environ["WSSLIB_DATA"]).expanduser()
    if in_source_checkout():
        return PROJECT_ROOT / "data"
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share").expanduser() / "wsslib" / "data"
COLUMNS = ("name", "file", "url", "size", "checksum", "access", "unpack", "dest", "provides", "licence", "steps")
UNPACK_KINDS = ("zip", "tar", "tar.gz", "file")


@dataclass(frozen=True)
class SourceFile:
    """One row of the table: one file to fetch for data set ``name``.

    Attributes:
        name: data set name (registry name and folder ``<root>/<name>``).
        file: local file name; a mirror serves it as ``$WSSLIB_MIRROR/<name>/<file>``.
        url: official download URL (``access == "direct"``) or the page to get it by hand.
        size: size as published, e.g. ``"46.2 MB"`` or ``"unknown"``.
        checksum: ``"md5:<hex>"``, ``"sha256:<hex>"`` (pinned) or ``"tofu"`` (recorded on first use).
        access: ``"direct"`` or ``"manual"``.
        unpack: one of ``zip``, ``tar``, ``tar.gz``, ``file``.
        dest: folder under the data root that receives the archive's top-level entries.
        provides: groups of alternative paths under the data root; every group must match.
        licence: licence or terms.
        steps: manual steps (empty for direct downloads).
    """

    name: str
    file: str
    url: str
    size: str
    checksum: str
    access: str
    unpack: str
    dest: str
    provides: tuple[tuple[str, ...], ...]
    licence: str
    steps: tuple[str, ...]

    @property
    def algorithm(self) -> str | None:
        """``"md5"`` or ``"sha256"`` for a pinned checksum, ``None`` for trust on first use."""
        return None if self.checksum == "tofu" else self.checksum.split(":", 1)[0]

    @property
    def digest(self) -> str | None:
        """The pinned hex digest, or ``None``."""
        return None if self.checksum == "tofu" else self.checksum.split(":", 1)[1]


def _field(value: str) -> str:
    return "" if value == "-" else value


def load_sources(path: str | Path | None = None) -> list[SourceFile]:
    """Read the source table (default: the one shipped in the package), in file order.

    Raises:
        DataError: a row without 11 tab-separated fields, an unknown checksum kind, access or
            unpack kind (the message names the file and the line).
    """
    path = Path(path) if path is not None else SOURCES_PATH
    rows: list[SourceFile] = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.startswith("#") or line.startswith("name\t"):
            continue
        cells = line.split("\t")
        if len(cells) != len(COLUMNS):
            raise DataError(f"{path}, line {n}: {len(cells)} tab-separated fields, expected {len(COLUMNS)}")
        row = dict(zip(COLUMNS, cells))
        checksum = row["checksum"]
        algo, _, digest = checksum.partition(":")
        if not (checksum == "tofu" or (algo, len(digest)) in (("md5", 32), ("sha256", 64))):
            raise DataError(f"{path}, line {n}: checksum must be md5:<32 hex>, sha256:<64 hex> or tofu, got {checksum!r}")
        if row["access"] not in ("direct", "manual"):
            raise DataError(f"{path}, line {n}: access must be direct or manual, got {row['access']!r}")
        if row["unpack"] not in UNPACK_KINDS:
            raise DataError(f"{path}, line {n}: unpack must be one of {UNPACK_KINDS}, got {row['unpack']!r}")
        rows.append(
            SourceFile(
                name=row["name"],
                file=row["file"],
                url=row["url"],
                size=row["size"],
                checksum=checksum,
                access=row["access"],
                unpack=row["unpack"],
                dest=row["dest"],
                provides=tuple(tuple(g.split("|")) for g in row["provides"].split(",")),
                licence=_field(row["licence"]),
                steps=tuple(s.strip() for s in _field(row["steps"]).split(" ;; ") if s.strip()),
            )
        )
    return rows


def source_names(path: str | Path | None = None) -> list[str]:
    """The data set names of the table, in table order, each once."""
    return list(dict.fromkeys(s.name for s in load_sources(path)))
