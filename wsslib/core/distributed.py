"""torch.distributed helpers: rank and world size, process-group set-up, sync batch norm.

Scripts that train (:func:`wsslib.models.training.train_classifier`) or annotate (:mod:`wsslib.apps.annotate`)
run unchanged under ``torchrun``: torchrun sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT``, and :func:`init_distributed` (called by both) joins the
process group when ``WORLD_SIZE > 1``. Without torchrun everything here is a cheap no-op
(rank 0 of 1)::

    torchrun --nproc_per_node 4 train_my_ensemble.py          # one machine, 4 GPUs
    torchrun --nproc_per_node 2 -m wsslib.apps.cli annotate ...     # or: python -m torch.distributed.run

Backend: ``nccl`` when CUDA is available, else ``gloo`` (CPU); ``$WSSLIB_DIST_BACKEND``
overrides. ``$WSSLIB_DIST_TIMEOUT`` (seconds) sets the collective timeout (torch's default
otherwise).

Batch norm across processes: :func:`convert_sync_batchnorm` turns every ``BatchNorm*d`` into
torch's ``nn.SyncBatchNorm`` on GPUs, and into :class:`CPUSyncBatchNorm` on CPUs (torch's
SyncBatchNorm refuses CPU tensors); :func:`revert_sync_batchnorm` turns them back, sharing the
same parameters and buffers, so a trained model is an ordinary module again.
"""

from __future__ import annotations

import atexit
import datetime
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from wsslib.core.utils import resolve_device

__all__ = [
    "CPUSyncBatchNorm",
    "DistInfo",
    "barrier",
    "broadcast_object",
    "convert_sync_batchnorm",
    "device_for_rank",
    "dist_info",
    "env_world_size",
    "gather_objects",
    "init_distributed",
    "is_distributed",
    "is_main_process",
    "revert_sync_batchnorm",
    "shard",
]

T = TypeVar("T")


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands.

    Attributes:
        rank: global rank (0 .. world_size - 1).
        world_size: number of processes (1 without torchrun).
        local_rank: rank on this machine (picks the GPU).
        backend: ``"gloo"``, ``"nccl"``... or ``None`` when not distributed.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_world_size() -> int:
    """``$WORLD_SIZE`` (set by torchrun), 1 when unset."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def is_distributed() -> bool:
    """True when a process group of more than one process is initialised."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def dist_info() -> DistInfo:
    """Rank, world size, local rank and backend of this process (rank 0 of 1 when not distributed)."""
    if is_distributed():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), dist.get_backend())
    return DistInfo()


def is_main_process() -> bool:
    """True on rank 0 (and always without torch.distributed): write shared files only there."""
    return dist_info().is_main


def _default_backend(device: torch.device | None = None) -> str:
    env = os.environ.get("WSSLIB_DIST_BACKEND")
    if env:
        return env
    gpu = torch.cuda.is_available() and (device is None or device.type == "cuda")
    return "nccl" if gpu else "gloo"


def _destroy() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def init_distributed(backend: str | None = None, device: str | torch.device | None = None) -> DistInfo:
    """Join the process group that torchrun describes in the environment, once.

    Does nothing when ``$WORLD_SIZE`` is unset or 1, or when a group is already initialised (by
    the caller's own code, which then owns it). A group created here is destroyed at exit.

    Args:
        backend: ``"gloo"``, ``"nccl"``...; default ``$WSSLIB_DIST_BACKEND``, else ``nccl`` with
            CUDA, else ``gloo``.
        device: the device the caller will compute on: a CPU device picks ``gloo`` even where
            CUDA exists (``"auto"`` and None count as "CUDA when present").

    Returns:
        :class:`DistInfo` of this process.
    """
    if env_world_size() > 1 and dist.is_available() and not dist.is_initialized():
        dev = None if device is None or (isinstance(device, str) and device == "auto") else torch.device(device)
        be = backend or _default_backend(dev)
        kwargs: dict[str, Any] = {}
        if os.environ.get("WSSLIB_DIST_TIMEOUT"):
            kwargs["timeout"] = datetime.timedelta(seconds=float(os.environ["WSSLIB_DIST_TIMEOUT"]))
        if be == "nccl" and torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend=be, init_method="env://", **kwargs)
        atexit.register(_destroy)
    return dist_info()


def device_for_rank(device: str | torch.device | None = "auto") -> torch.device:
    """:func:`wsslib.core.utils.resolve_device`, but a CUDA device without an index becomes
    ``cuda:LOCAL_RANK`` under torch.distributed (one GPU per process), and is made current."""
    dev = resolve_device(device)
    if dev.type == "cuda":
        if dev.index is None:
            dev = torch.device("cuda", dist_info().local_rank if is_distributed() else torch.cuda.current_device())
        torch.cuda.set_device(dev)
    return dev


def barrier() -> None:
    """``dist.barrier()`` when distributed, else nothing."""
    if is_distributed():
        dist.barrier()


def broadcast_object(obj: T, src: int = 0) -> T:
    """Rank ``src``'s ``obj`` on every rank (picklable objects); the object itself when not distributed."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def gather_objects(obj: T, dst: int = 0) -> list[T] | None:
    """Every rank's ``obj``, as a list ordered by rank, on rank ``dst``; ``None`` on the others.

    Not distributed: ``[obj]``.
    """
    if not is_distributed():
        return [obj]
    out: list[T] | None = [None] * dist.get_world_size() if dist.get_rank() == dst else None  # type: ignore[list-item]
    dist.gather_object(obj, out, dst=dst)
    return out


def shard(items: Sequence[T], rank: int, world_size: int) -> list[T]:
    """The items of ``rank``: ``items[rank::world_size]`` (round robin, so shards differ by at most one).

    Example:
        >>> shard(list(range(7)), 1, 3)
        [1, 4]
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    return list(items[rank::world_size])


# --------------------------------------------------------------------------------------------
# Batch norm across processes
# --------------------------------------------------------------------------------------------


class CPUSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm whose training statistics are those of the global batch, on any device.

    In training mode under torch.distributed, every process all-reduces the per-channel count,
    sum and sum of squares of its local batch (in float64, differentiably through
    ``torch.distributed.nn.functional.all_reduce``), so every process normalises with the mean
    and biased variance of the *global* batch and updates the running statistics with them,
    exactly as one process would on the whole batch (up to float rounding). In eval mode, or
    without a process group, it is ``F.batch_norm``. Works with gloo on CPU, where torch's
    ``nn.SyncBatchNorm`` does not.

    Shapes: ``(B, C, *)`` -> ``(B, C, *)``.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(input)
        if not (self.training and is_distributed()):
            return super().forward(input)
        from torch.distributed.nn.functional import all_reduce

        c = input.shape[1]
        dims = [0, *range(2, input.dim())]
        x64 = input.double()
        count = torch.full((1,), float(input.numel() // c), dtype=torch.float64, device=input.device)
        stats = all_reduce(torch.cat([x64.sum(dims), (x64 * x64).sum(dims), count]))
        n = stats[-1]
        mean = stats[:c] / n
        var = (stats[c : 2 * c] / n - mean * mean).clamp_min(0.0)
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)  # type: ignore[union-attr,operator]
                f = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.mul_(1 - f).add_(mean.to(self.running_mean.dtype), alpha=f)
                unbiased = var * (n / (n - 1).clamp_min(1.0))
                self.running_var.mul_(1 - f).add_(unbiased.to(self.running_var.dtype), alpha=f)
        shape = (1, c) + (1,) * (input.dim() - 2)
        scale = torch.rsqrt(var + self.eps).to(input.dtype).view(shape)
        out = (input - mean.to(input.dtype).view(shape)) * scale
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out


def _swap_bn(module: nn.Module, make) -> nn.Module:
    new = make(module)
    if new is not None:
        return new
    for name, child in module.named_children():
        swapped = _swap_bn(child, make)
        if swapped is not child:
            module.add_module(name, swapped)
    return module


def _copy_bn(src: nn.modules.batchnorm._BatchNorm, cls: type) -> nn.Module:
    """A ``cls`` batch norm that shares ``src``'s parameters and buffers (no copy)."""
    out = cls(src.num_features, src.eps, src.momentum, src.affine, src.track_running_stats)
    if src.affine:
        out.weight, out.bias = src.weight, src.bias
    out.running_mean, out.running_var, out.num_batches_tracked = src.running_mean, src.running_var, src.num_batches_tracked
    out.train(src.training)
    if hasattr(src, "qconfig"):
        out.qconfig = src.qconfig
    return out


_PLAIN_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def convert_sync_batchnorm(module: nn.Module, device: torch.device | str = "cpu") -> nn.Module:
    """Replace every ``BatchNorm1d/2d/3d`` in ``module`` by a sync batch norm (in place; returns the module).

    CUDA: torch's ``nn.SyncBatchNorm``; other devices: :class:`CPUSyncBatchNorm`. Parameters and
    buffers are shared with the replaced layers, so optimisers and outside references to them
    stay valid; container modules (and references to them, such as a CAM target layer) are kept.
    """
    cls = nn.SyncBatchNorm if torch.device(device).type == "cuda" else CPUSyncBatchNorm

    def make(m: nn.Module):
        if type(m) not in _PLAIN_BN:
            return None
        new = _copy_bn(m, cls)
        new._wsslib_bn_cls = type(m)
        return new

    return _swap_bn(module, make)


def revert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """Undo :func:`convert_sync_batchnorm` (in place; returns the module): every sync batch norm
    becomes the plain ``BatchNorm{1,2,3}d`` it replaced (``BatchNorm2d`` when unknown), sharing
    its parameters and buffers."""

    def make(m: nn.Module):
        if isinstance(m, nn.SyncBatchNorm | CPUSyncBatchNorm):
            return _copy_bn(m, getattr(m, "_wsslib_bn_cls", nn.BatchNorm2d))
        return None

    return _swap_bn(module, make)
