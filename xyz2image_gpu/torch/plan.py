"""Which images a dataset renders where: blocks of a stack, their order in an epoch, and
their share among distributed ranks and DataLoader workers. Pure NumPy, no PyTorch.

The images of an epoch are every frame of every structure in ``n_rotation`` orientations,
image ``k`` of structure ``i`` being frame ``k // n_rotation`` in rotation
``k % n_rotation``, as :meth:`~xyz2image_gpu.pipeline.engine.Renderer.iter_batches` numbers
them. They are cut into blocks of at most ``block_size`` consecutive images of one structure
(one batch each); an epoch puts the blocks in an order (shuffled per epoch, or as given);
rank ``r`` of ``w`` takes blocks ``r, r + w, r + 2w, ...`` of that order and worker ``j`` of
``n`` of that rank every ``n``-th of those from its ``j``-th. Every block, so every image,
goes to exactly one (rank, worker) pair, and a rank's blocks do not depend on its number of
workers: a DataLoader that takes one batch from each worker in turn hands them over in the
rank's order whatever ``num_workers``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

__all__ = [
    "Block",
    "blocks",
    "epoch_order",
    "shard",
]

#: Mixed into the shuffle's seed so that it draws apart from the rotations of the same seed.
_SHUFFLE_STREAM = 0x73687566


class Block(NamedTuple):
    """Images ``[start, stop)`` of structure ``file`` (its position in the dataset)."""

    file: int
    start: int
    stop: int

    @property
    def size(self) -> int:
        return self.stop - self.start


def blocks(counts: Sequence[int], block_size: int) -> list[Block]:
    """Every image of structures with ``counts[i]`` images, in blocks of at most
    ``block_size`` consecutive images of one structure, structure by structure."""
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    return [Block(i, b0, min(n, b0 + block_size))
            for i, n in enumerate(counts) for b0 in range(0, n, block_size)]


def epoch_order(all_blocks: Sequence[Block], *, seed: int, epoch: int,
                shuffle: bool) -> list[Block]:
    """The blocks in the order of ``epoch``: a permutation drawn from ``(seed, epoch)`` (the
    same on every rank and worker), or as given without ``shuffle``."""
    if not shuffle:
        return list(all_blocks)
    rng = np.random.default_rng(np.random.SeedSequence([seed, epoch, _SHUFFLE_STREAM]))
    return [all_blocks[i] for i in rng.permutation(len(all_blocks))]


def shard(ordered: Sequence[Block], *, rank: int, world_size: int, worker: int,
          num_workers: int) -> list[Block]:
    """The blocks of ``rank`` (of ``world_size``) rendered by ``worker`` (of
    ``num_workers`` of that rank), in order."""
    for name, index, count in (("rank", rank, world_size), ("worker", worker, num_workers)):
        if count < 1 or not 0 <= index < count:
            raise ValueError(f"{name} {index} is outside [0, {count})")
    return list(ordered[rank::world_size][worker::num_workers])
