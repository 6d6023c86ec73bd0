"""The epoch sampler: data order as a pure function of ``(seed, epoch)``, sharded across DDP ranks.

One sampler serves a single process and ``torchrun`` alike, so a run stopped in the middle of an epoch
resumes on the exact next batch either way: the permutation depends on ``(seed, epoch)`` only, rank
``r`` of ``w`` takes every ``w``-th position of it, and ``start`` skips what this rank already saw.
(``DistributedSampler`` cannot start mid-epoch, and a DataLoader's own shuffling depends on its
generator's history, not on the epoch.)
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler

from shared import distributed

# Spreads (seed, epoch) over the generator's seed space; every package used this mixing before it moved
# here, so the orders of existing runs are unchanged.
_EPOCH_MIX = 100_003


def epoch_permutation(length: int, seed: int, epoch: int) -> list[int]:
    """The shuffled order of ``range(length)`` for ``(seed, epoch)``; the same on every machine."""
    generator = torch.Generator().manual_seed(seed * _EPOCH_MIX + epoch)
    return torch.randperm(length, generator=generator).tolist()


class EpochSampler(Sampler[int]):
    """Yields this rank's share of one epoch's order, from position ``start`` on.

    Args:
        indices: the dataset length, or the dataset indices to draw from (a split's subset).
        shuffle: permute by ``(seed, epoch)``; ``False`` keeps the given order (validation).
        seed: the run's seed.
        rank, world_size: this process's place; default: read from ``shared.distributed``.

    Every rank gets ``ceil(n / world_size)`` samples (the order is padded by wrapping around), so all
    ranks run the same number of steps and none waits for ever in a gradient all-reduce.
    """

    def __init__(self, indices: int | Sequence[int], *, shuffle: bool = True, seed: int = 0,
                 rank: int | None = None, world_size: int | None = None) -> None:
        self.items = list(range(indices)) if isinstance(indices, int) else list(indices)
        self.shuffle, self.seed = shuffle, seed
        self.rank = distributed.get_rank() if rank is None else rank
        self.world_size = distributed.get_world_size() if world_size is None else world_size
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} is outside a world of {self.world_size}")
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Select ``epoch``'s order and skip the first ``start`` samples of this rank's share."""
        if start < 0:
            raise ValueError(f"start must be >= 0, got {start}")
        self.epoch, self.start = epoch, start

    @property
    def per_rank(self) -> int:
        """Samples in one rank's share of a whole epoch."""
        return math.ceil(len(self.items) / self.world_size)

    def indices(self) -> list[int]:
        """This rank's share of the whole epoch (``start`` not applied)."""
        n = len(self.items)
        if n == 0:
            return []
        order = epoch_permutation(n, self.seed, self.epoch) if self.shuffle else list(range(n))
        total = self.per_rank * self.world_size
        order = (order * math.ceil(total / n))[:total]
        return [self.items[i] for i in order[self.rank :: self.world_size]]

    def batches_per_epoch(self, batch_size: int, drop_last: bool = False) -> int:
        """Steps in one whole epoch on each rank at ``batch_size``."""
        return self.per_rank // batch_size if drop_last else math.ceil(self.per_rank / batch_size)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices()[self.start :])

    def __len__(self) -> int:
        return max(0, self.per_rank - self.start)
