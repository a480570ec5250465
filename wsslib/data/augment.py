"""Batch augmentation shared by every trainer (classifier, multi-level UNet, CCAM).

Written here rather than taken from torchvision.transforms.v2 / MONAI because the trainers need
two things those per-sample transforms do not give together: the draws come from a private,
seeded generator (no global random state), and under torch.distributed they are made for the
global batch so that each process flips exactly the images a one-process run would.
"""

from __future__ import annotations

import torch

__all__ = ["FlipAugment", "flip_batch"]


def flip_batch(x: torch.Tensor, flip_h: torch.Tensor, flip_v: torch.Tensor) -> torch.Tensor:
    """Flip the samples of ``x`` (B, ...) selected by ``flip_h`` / ``flip_v`` (B,) bool.

    The last axis is flipped for ``flip_h`` (left-right), the second to last for ``flip_v``.

    Example:
        >>> x = torch.arange(4.0).view(1, 1, 2, 2)
        >>> flip_batch(x, torch.tensor([True]), torch.tensor([False])).flatten().tolist()
        [1.0, 0.0, 3.0, 2.0]
    """
    shape = (-1,) + (1,) * (x.dim() - 1)
    x = torch.where(flip_h.view(shape).to(x.device), x.flip(-1), x)
    return torch.where(flip_v.view(shape).to(x.device), x.flip(-2), x)


class FlipAugment:
    """Random horizontal and vertical flips (probability 1/2 each) of training batches, seeded.

    ``aug(x)`` flips one batch (B, C, H, W); ``aug(x, y)`` flips images and their masks
    (B, ..., H, W) with the same draws. Under torch.distributed the draws are made for the
    global batch (``B * world_size`` images, the same on every process) and process ``rank``
    uses its slice of them, so the flips equal those of a one-process run.

    Example:
        >>> aug = FlipAugment(seed=0)
        >>> x, y = torch.rand(4, 3, 8, 8), torch.rand(4, 8, 8)
        >>> fx, fy = aug(x, y)
        >>> fx.shape, fy.shape
        (torch.Size([4, 3, 8, 8]), torch.Size([4, 8, 8]))
    """

    def __init__(self, seed: int, rank: int = 0, world_size: int = 1) -> None:
        self.gen = torch.Generator().manual_seed(seed)
        self.rank, self.world_size = rank, world_size

    def draw(self, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The next (flip_h, flip_v), each (b,) bool, for this process's ``b`` images."""
        sl = slice(self.rank * b, (self.rank + 1) * b)
        h = (torch.rand(b * self.world_size, generator=self.gen) < 0.5)[sl]
        v = (torch.rand(b * self.world_size, generator=self.gen) < 0.5)[sl]
        return h, v

    def __call__(self, x: torch.Tensor, *more: torch.Tensor):
        h, v = self.draw(x.shape[0])
        if not more:
            return flip_batch(x, h, v)
        return (flip_batch(x, h, v), *(flip_batch(m, h, v) for m in more))
