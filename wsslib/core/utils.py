"""Small shared helpers: seeding, determinism, device resolution, mixed precision, shape checks."""

from __future__ import annotations

import os
import random
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path

import numpy as np
import torch

from wsslib.core.errors import ShapeError


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) globally: for scripts and notebooks.

    No wsslib function calls this: library calls that draw random numbers take a ``seed`` and
    run inside :func:`rng_scope`, which leaves the caller's random state as it found it.

    Args:
        seed: any int; NumPy gets ``seed % 2**32``.
        deterministic: also switch torch to deterministic kernels for the rest of the process
            (:func:`set_deterministic`): cuDNN deterministic, no cuDNN autotuning,
            ``torch.use_deterministic_algorithms(True)``. Slower on a GPU; an operation without a
            deterministic implementation then raises instead of running.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    if deterministic:
        set_deterministic(True)


def set_deterministic(enabled: bool = True, *, warn_only: bool = False) -> dict:
    """Switch torch's deterministic mode globally; returns the previous settings (for
    :func:`deterministic_scope`).

    On: ``torch.backends.cudnn.deterministic = True``, ``cudnn.benchmark = False`` (autotuning
    picks kernels by timing, so runs differ), ``torch.use_deterministic_algorithms(True,
    warn_only=warn_only)`` (an operation without a deterministic implementation raises, or warns
    with ``warn_only``), and ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` unless already set (cuBLAS needs it
    for deterministic matrix products on CUDA >= 10.2). Off: torch's defaults for the three flags.
    On a CPU the flags change nothing measurable (its kernels are deterministic already) but
    are set all the same.
    """
    before = {"cudnn_deterministic": torch.backends.cudnn.deterministic, "cudnn_benchmark": torch.backends.cudnn.benchmark,
              "algorithms": torch.are_deterministic_algorithms_enabled(),
              "warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
              "cublas": os.environ.get("CUBLAS_WORKSPACE_CONFIG")}
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
    return before


@contextmanager
def deterministic_scope(enabled: bool = True, *, warn_only: bool = False) -> Iterator[None]:
    """Run a block in torch's deterministic mode (:func:`set_deterministic`) and restore the
    caller's settings afterwards; ``enabled=False`` leaves everything as it is (a no-op).

    Example:
        >>> import torch
        >>> with deterministic_scope():
        ...     torch.are_deterministic_algorithms_enabled()
        True
        >>> torch.are_deterministic_algorithms_enabled()
        False
    """
    if not enabled:
        yield
        return
    before = set_deterministic(True, warn_only=warn_only)
    try:
        yield
    finally:
        torch.backends.cudnn.deterministic = before["cudnn_deterministic"]
        torch.backends.cudnn.benchmark = before["cudnn_benchmark"]
        torch.use_deterministic_algorithms(before["algorithms"], warn_only=before["warn_only"])
        if before["cublas"] is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)


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


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Turn ``"auto"``, a name or a device into a ``torch.device``.

    ``"auto"`` (or None): CUDA when a GPU is usable, else Apple's MPS (Apple-silicon Macs), else
    the CPU.

    Raises:
        ValueError: ``"cuda"`` or ``"mps"`` asked for on a machine that does not have it.
    """
    if device is None or (isinstance(device, str) and device == "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if _mps_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} asked for, but no CUDA GPU is available here; use 'auto' or 'cpu'.")
    if dev.type == "mps" and not _mps_available():
        raise ValueError(f"device={device!r} asked for, but Apple's MPS is not available here; use 'auto' or 'cpu'.")
    return dev


def amp_enabled(amp: bool, device: str | torch.device) -> bool:
    """Whether mixed precision actually runs: ``amp`` on a CUDA device. Elsewhere (CPU, MPS)
    ``amp=True`` is a documented no-op: those devices compute in float32 as without it (CPU
    autocast would run bfloat16, slower than float32 on most CPUs and not what the papers used)."""
    return bool(amp) and torch.device(device).type == "cuda"


def autocast(device: str | torch.device, amp: bool = True) -> AbstractContextManager:
    """The mixed-precision context of a forward pass: ``torch.autocast("cuda", float16)`` when
    :func:`amp_enabled`, else a no-op context (float32).

    Example:
        >>> import torch
        >>> with autocast("cpu", amp=True):  # a no-op on the CPU
        ...     (torch.ones(2, 2) @ torch.ones(2, 2)).dtype
        torch.float32
    """
    if amp_enabled(amp, device):
        return torch.autocast(device_type="cuda", dtype=torch.float16)
    return nullcontext()


def grad_scaler(device: str | torch.device, amp: bool = True) -> "torch.amp.GradScaler":
    """The loss scaler that goes with :func:`autocast` in a training loop: active (float16
    gradients need scaling) when :func:`amp_enabled`, else disabled (``scale``, ``step`` and
    ``update`` pass through)."""
    return torch.amp.GradScaler("cuda", enabled=amp_enabled(amp, device))


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
