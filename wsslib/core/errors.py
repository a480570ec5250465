"""Exceptions that name the file or folder at fault and say what to do about it."""

from __future__ import annotations

from pathlib import Path


class WSSLibError(Exception):
    """Base class of every error wsslib raises on purpose."""


class DataError(WSSLibError, ValueError):
    """A data file exists but is unusable (corrupt image, mask of the wrong size, bad CSV...)."""


class DatasetNotFoundError(WSSLibError, FileNotFoundError):
    """A data set's folder is missing; the message names it and the command that fetches it."""

    def __init__(self, name: str, root: str | Path, hint: str | None = None) -> None:
        self.name = name
        self.root = Path(root)
        cmd = f"wsslib download --root {self.root.parent} {name}"
        msg = (
            f"Data set '{name}' not found: the folder {self.root} does not exist or is incomplete"
            + (f" ({hint})" if hint else "")
            + f".\nFetch it with:  {cmd}\n"
            "(in a notebook: !" + cmd + "; in the repository, ./data_download.sh takes the same arguments)\n"
            "or pass root=... (notebooks: the data_root parameter) pointing at your copy."
        )
        super().__init__(msg)


class ShapeError(WSSLibError, ValueError):
    """A tensor argument has the wrong shape or dtype; the message names the argument."""
