"""How a DataLoader worker's batch reaches the main process: through shared memory that the
worker reuses, copied out once on arrival.

PyTorch sends a tensor between processes by moving its storage into new shared memory (a
copy into fresh pages, which the kernel must zero and map) and passing a file descriptor,
once per tensor: a batch of ten tensors, 4 MiB of images, costs a worker about as long as
rendering them on a loaded machine (``benchmarks/README.md``, "The PyTorch dataset").
Here each worker keeps a few shared buffers (:class:`SlotPool`); a batch is packed into a
free one (a copy into warm pages), crosses as that one storage, and the main process copies
it out into ordinary memory and marks the buffer free again (:func:`receive`): the caller
owns what it gets, and the worker reuses the buffer for a later batch.

Each buffer starts with a header whose first byte says whether the main process still has
to copy it out; only the worker sets it, only the main process clears it. A worker whose
buffers are all waiting (more batches in flight than :attr:`SlotPool.MAX_SLOTS`) sends the
batch as PyTorch would, and so does one whose packing fails (with a warning: an error while
a queue's feeder thread pickles would lose the batch and leave the loader waiting).
"""

from __future__ import annotations

import warnings
from collections import deque
from collections.abc import Iterator, Mapping
from typing import Any

import torch

__all__ = ["SharedBatch", "SlotPool", "receive"]

#: Bytes before a buffer's data (its first byte: 1 while the main process has not copied it)
#: and the alignment of each tensor's bytes in it.
ALIGN = 64

Layout = list[tuple[str, torch.dtype, tuple[int, ...], int, int]]


class SlotPool:
    """One process's reusable shared buffers (see the module)."""

    #: Buffers a worker keeps at most; a DataLoader holds ``prefetch_factor`` (default 2)
    #: batches of a worker in flight, so a few are reused over and over.
    MAX_SLOTS = 16

    def __init__(self) -> None:
        self.buffers: list[torch.Tensor] = []

    def _slot(self, nbytes: int) -> torch.Tensor | None:
        """A buffer of at least ``nbytes`` that the main process has copied out, or None."""
        free = [b for b in self.buffers if int(b[0]) == 0]
        fits = [b for b in free if b.numel() >= nbytes]
        if fits:
            return fits[0]
        if free:  # too small: replace it
            self.buffers = [b for b in self.buffers if b is not free[0]]
        elif len(self.buffers) >= self.MAX_SLOTS:
            return None
        buffer = torch.zeros(nbytes, dtype=torch.uint8).share_memory_()
        self.buffers.append(buffer)
        return buffer

    def pack(self, tensors: Mapping[str, torch.Tensor]) -> tuple[Any, ...]:
        """``(receive, args)`` that rebuild ``tensors`` in the process that unpickles them,
        or ``(dict, (tensors,))`` when no buffer is free or a tensor is not on the CPU."""
        if not all(t.device.type == "cpu" for t in tensors.values()):
            return (dict, (dict(tensors),))
        layout: Layout = []
        offset = ALIGN
        for name, t in tensors.items():
            n = t.numel() * t.element_size()
            layout.append((name, t.dtype, tuple(t.shape), offset, n))
            offset += -(-n // ALIGN) * ALIGN
        buffer = self._slot(offset)
        if buffer is None:
            return (dict, (dict(tensors),))
        for (_, _, _, start, n), t in zip(layout, tensors.values()):
            buffer[start : start + n].copy_(t.contiguous().reshape(-1).view(torch.uint8))
        buffer[0] = 1  # to be copied out
        return (receive, (buffer, layout, offset))


#: The worker's pool (made on first use, in the worker).
_POOL: list[SlotPool] = []
#: Buffers received lately, kept mapped in the main process: PyTorch finds a storage it
#: still maps by its file descriptor's identity and does not map it again.
_RECEIVED: deque[torch.Tensor] = deque(maxlen=2 * SlotPool.MAX_SLOTS)


def receive(buffer: torch.Tensor, layout: Layout, used: int) -> dict[str, torch.Tensor]:
    """Rebuild a packed batch: its bytes copied out of ``buffer`` into ordinary memory (the
    caller's), then the buffer marked free for its worker."""
    own = buffer[:used].clone()
    buffer[0] = 0
    _RECEIVED.append(buffer)
    return {name: own[start : start + n].view(dtype).view(shape)
            for name, dtype, shape, start, n in layout}


class SharedBatch(Mapping):
    """A batch of tensors that crosses to another process through its worker's
    :class:`SlotPool` and arrives there as a plain dict (read-only here: a Mapping, so
    that DataLoader's conversions rebuild it by its type)."""

    __slots__ = ("_tensors",)

    def __init__(self, tensors: Mapping[str, torch.Tensor]) -> None:
        self._tensors = dict(tensors)

    def __getitem__(self, key: str) -> torch.Tensor:
        return self._tensors[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)

    def __reduce__(self) -> tuple[Any, ...]:
        if not _POOL:
            _POOL.append(SlotPool())
        try:
            return _POOL[0].pack(self._tensors)
        except Exception as exc:  # noqa: BLE001 - pickled on a queue's feeder thread, where
            # an error would drop the batch without a word and leave the loader waiting
            warnings.warn(f"a batch crosses as PyTorch sends tensors, not through the "
                          f"worker's shared buffers ({type(exc).__name__}: {exc})",
                          RuntimeWarning, stacklevel=2)
            return (dict, (dict(self._tensors),))
