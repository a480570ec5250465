"""Small shared helpers: seeding, device resolution, shape checks."""

from __future__ import annotations

import os
import random
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from wsslib.core.errors import ShapeError


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) globally: for scripts and notebooks.

    No wsslib function calls this: library calls that draw random numbers take a ``seed`` and
    run inside :func:`rng_scope`, which leaves the caller's random state as it found it.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


@contextmanager
def rng_scope(seed: int, devices: Sequence[torch.device | str | int] | None = None) -> Iterator[None]:
    """Run a block with Python's, NumPy's and torch's global generators seeded by ``seed``, and
    restore all of them afterwards.

    Why not plain ``torch.Generator`` objects: dropout, weight initialisation, fastai's data
    loaders and pytorch's modules draw from the global generators and take no generator
    argument. This scope makes such a block reproducible from ``seed`` alone, while the caller's
    own random streams continue as if the block had not run (``torch.random.fork_rng`` for torch,
    saved state for Python and NumPy).

    Args:
        seed: any int; NumPy gets ``seed % 2**32``.
        devices: CUDA devices whose generators to fork too; default all visible ones.

    Example:
        >>> import torch
        >>> a = torch.rand(1)
        >>> with rng_scope(0):
        ...     x = torch.rand(1)
        >>> with rng_scope(0):
        ...     y = torch.rand(1)
        >>> bool(x == y)
        True
    """
    py_state, np_state = random.getstate(), np.random.get_state()
    if devices is None:
        devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    try:
        with torch.random.fork_rng(devices=devices):
            random.seed(seed)
            np.random.seed(seed % 2**32)
            torch.manual_seed(seed)
            yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Turn ``"auto"`` (CUDA when present, else CPU), a name or a device into a ``torch.device``.

    Raises:
        ValueError: ``"cuda"`` asked for on a machine without a usable GPU.
    """
    if device is None or (isinstance(device, str) and device == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} asked for, but no CUDA GPU is available here; use 'auto' or 'cpu'.")
    return dev


def check_shape(name: str, t: torch.Tensor, dims: Sequence[int | None]) -> None:
    """Raise :class:`ShapeError` unless ``t`` has ``len(dims)`` dimensions matching ``dims``.

    ``None`` in ``dims`` matches any size. Example: ``check_shape("maps", m, (None, None, None))``
    demands a 3-D tensor (B, H, W).
    """
    if not isinstance(t, torch.Tensor):
        raise ShapeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if t.dim() != len(dims) or any(d is not None and d != s for d, s in zip(dims, t.shape)):
        want = "(" + ", ".join("*" if d is None else str(d) for d in dims) + ")"
        raise ShapeError(f"{name}: expected shape {want}, got {tuple(t.shape)}")


def check_same_shape(a_name: str, a: torch.Tensor, b_name: str, b: torch.Tensor) -> None:
    """Raise :class:`ShapeError` unless ``a`` and ``b`` have identical shapes."""
    if a.shape != b.shape:
        raise ShapeError(f"{a_name} has shape {tuple(a.shape)} but {b_name} has shape {tuple(b.shape)}; they must match")


@contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Put ``model`` in eval mode (dropout off, batch norm on running statistics) for the block;
    afterwards restore every submodule's former train/eval flag exactly."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux: /proc), else by
    setting and restoring it."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, data: bytes, fsync: bool = False) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and ``os.replace``.

    Readers (and a resumed run) see the old file or the new one, never a part; an error or an
    interruption removes the temporary file. ``fsync`` also flushes it to disk before the rename.
    Folders are created. The file gets the mode of any newly created file, ``0o666`` less the
    process umask (0644 under umask 022), not ``mkstemp``'s private 0600. Returns the path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path
