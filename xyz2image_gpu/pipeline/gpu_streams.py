"""GPU batches to the host with the copies overlapped: two streams and a ring of pinned buffers.

Batch k is queued on stream k % 2 (its few host inputs uploaded, the kernels, then an
asynchronous copy of each output into a free set of page-locked host buffers, and an event)
before batch k-1 is waited for and handed over, so the device renders one batch while the
previous one crosses the bus and the host prepares the next batch's inputs. The loop waits
on the device once per batch, for the batch it hands over, and nowhere else.

:class:`DeviceRing` holds the streams, the events and the buffer sets. A renderer keeps one
for its lifetime: CuPy's memory pool caches freed device blocks per stream, so batches on
the same two streams reuse the same device memory call after call, and page-locked memory
(slow to allocate) is allocated once.

The batches handed over are views into the buffer sets, not copies (:class:`.Batch`). A set
is reused only when its batch has been released (:meth:`.Batch.release`), or when no array
of it (nor any view of one) is alive any more; a consumer that keeps batches makes the ring
grow (up to :attr:`DeviceRing.MAX_SLOTS` sets and :attr:`DeviceRing.PINNED_BUDGET` bytes),
after which further batches are copied to ordinary host memory, synchronously: never is a
batch overwritten while the consumer can still read it.

Streams, events, buffers and copies all come from :class:`~xyz2image_gpu.backend.Backend`;
nothing here calls CUDA itself.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np

from ..backend import Backend
from .batch import Batch

__all__ = ["DeviceRing", "iter_overlapped"]

T = TypeVar("T")


class _Slot:
    """One set of page-locked buffers (one per output key) with its event.

    ``busy``: copies are queued into it and its batch has not been handed over. Once
    handed over, the set is free again when the batch is released or when every array
    handed out of it has died (a weak reference to each array's own buffer object, which
    every view of the array keeps alive).
    """

    def __init__(self, backend: Backend) -> None:
        self.event = backend.new_event()
        self.buffers: dict[str, np.ndarray] = {}
        self.busy = False
        self.released = True
        self.handouts: list[weakref.ref] = []
        self.generation = 0

    @property
    def nbytes(self) -> int:
        return sum(b.nbytes for b in self.buffers.values())

    def free(self) -> bool:
        if self.busy:
            return False
        return self.released or all(ref() is None for ref in self.handouts)

    def targets(self, backend: Backend, arrays: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Pinned host arrays of the shapes and dtypes of ``arrays``, one per key; the set
        becomes busy. Each is a fresh view whose life is tracked."""
        views = {}
        self.handouts = []
        for key, a in arrays.items():
            dtype = np.dtype(a.dtype)
            need = int(np.prod(a.shape, dtype=np.int64)) * dtype.itemsize
            buf = self.buffers.get(key)
            if buf is None or buf.nbytes < need:  # grown for a larger batch, never shrunk
                buf = backend.pinned_empty((max(1, need),), np.uint8)
                self.buffers[key] = buf
            # a memoryview of its own per view: np.frombuffer keeps it as the array's base,
            # and every view of the array, however derived, keeps it alive
            flat = np.frombuffer(memoryview(buf)[:need], dtype=dtype)
            self.handouts.append(weakref.ref(flat.base))
            views[key] = flat.reshape(a.shape)
        self.busy = True
        self.released = False
        self.generation += 1
        return views

    def release_callback(self) -> Callable[[], None]:
        """The batch's ``release``: frees the set only while it still holds that batch."""
        generation = self.generation

        def release() -> None:
            if self.generation == generation and not self.busy:
                self.released = True
        return release

    def abandon(self) -> None:
        """Its copies landed but its batch was never handed over: free at once."""
        self.busy = False
        self.released = True
        self.handouts = []


class DeviceRing:
    """A renderer's two CUDA streams and its ring of page-locked buffer sets, kept and reused.

    Parameters
    ----------
    backend : Backend
        A GPU backend.
    """

    #: Buffer sets allocated at first (two batches in flight, one with the consumer).
    MIN_SLOTS = 3
    #: Most buffer sets, when the consumer holds batches without releasing them.
    MAX_SLOTS = 8
    #: Most page-locked bytes the ring grows to beyond its first MIN_SLOTS sets.
    PINNED_BUDGET = 4 << 30

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.streams = [backend.new_stream(), backend.new_stream()]
        self.slots: list[_Slot] = []
        self._shared = backend.new_event()
        self._next = 0

    @property
    def pinned_bytes(self) -> int:
        return sum(slot.nbytes for slot in self.slots)

    def upload(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` (uploads of data both streams read, e.g. a unit's frames) on the first
        stream and make the second stream wait for it on the device."""
        be = self.backend
        with be.on_stream(self.streams[0]):
            out = fn()
        be.record(self._shared, self.streams[0])
        be.stream_wait(self.streams[1], self._shared)
        return out

    def acquire(self, nbytes: int) -> _Slot | None:
        """A free buffer set for a batch of ``nbytes``, or None when the ring may not grow.

        The sets are used in turn, the first :attr:`MIN_SLOTS` made before any is reused:
        the batch in flight, the one handed over and the one the consumer's loop variable
        still holds while it asks for the next.
        """
        n = len(self.slots)
        if n >= self.MIN_SLOTS:
            for i in range(n):
                slot = self.slots[(self._next + i) % n]
                if slot.free():
                    self._next = (self._next + i + 1) % n
                    return slot
        limit = max(self.MIN_SLOTS * nbytes, self.PINNED_BUDGET)
        if n < self.MIN_SLOTS or (n < self.MAX_SLOTS and self.pinned_bytes + nbytes <= limit):
            slot = _Slot(self.backend)
            self.slots.append(slot)
            return slot
        return None

    def synchronize(self) -> None:
        """Block the host until the work queued on both streams is done."""
        for stream in self.streams:
            self.backend.synchronize_stream(stream)

    def close(self) -> None:
        """Wait for the streams; the buffers stay valid for batches still held."""
        self.synchronize()
        self.slots = []


def iter_overlapped(
    ring: DeviceRing,
    bounds: Sequence[tuple[int, int]],
    assemble: Callable[[int, int], dict[str, np.ndarray]],
    render: Callable[[dict[str, np.ndarray]], dict[str, Any]],
    extra: Sequence[str],
) -> Iterator[Batch]:
    """Render the batches ``bounds`` on the GPU and yield each one as host arrays.

    Parameters
    ----------
    ring : DeviceRing
        The renderer's streams and buffers.
    bounds : sequence of (int, int)
        Image ranges ``[start, stop)`` of the batches, in order.
    assemble : callable
        ``assemble(start, stop)``: the batch's host inputs.
    render : callable
        ``render(host)``: the batch's outputs as device arrays, queued on the current stream.
    extra : sequence of str
        Keys of the host inputs handed over with each batch as they are (metadata).

    Yields
    ------
    Batch
        Each batch's outputs as views into a pinned buffer set (see the module), plus the
        ``extra`` host inputs. The batch's device arrays are kept until its copies are done.

    Whatever ends the iteration (its end, the consumer closing the generator or an
    exception), the streams are synchronised before it returns, so no copy is still writing
    into a buffer set, or reading device memory, that the ring or CuPy's pools hand out again.
    """
    be = ring.backend
    queued: tuple | None = None
    inflight: list[_Slot] = []  # this iteration's buffer sets not handed over yet

    def finish(item: tuple) -> Batch:
        slot, views, host, device, stream = item
        if slot is None:  # the ring is full of batches the consumer holds: plain copies
            with be.on_stream(stream):
                batch = Batch({k: be.to_host(a) for k, a in device.items()})
        else:
            be.wait(slot.event)
            slot.busy = False
            inflight.remove(slot)
            batch = Batch(views, release=slot.release_callback())
        for key in extra:
            batch[key] = host[key]
        return batch

    try:
        for k, (b0, b1) in enumerate(bounds):
            host = assemble(b0, b1)
            stream = ring.streams[k % 2]
            with be.on_stream(stream):
                device = render(host)
                slot = ring.acquire(sum(int(a.nbytes) for a in device.values()))
                views = None
                if slot is not None:
                    views = slot.targets(be, device)
                    inflight.append(slot)
                    # keep what each copy reads (a C-ordered copy, for a strided output)
                    device = {key: be.copy_to_host_async(a, views[key], stream)
                              for key, a in device.items()}
                    be.record(slot.event, stream)
            previous, queued = queued, (slot, views, host, device, stream)
            if previous is not None:
                yield finish(previous)
        if queued is not None:
            last, queued = queued, None
            yield finish(last)
    finally:
        # a batch abandoned part-way (the consumer closed the generator, an exception, a
        # writer error): its copies may still be in flight into a buffer set and reading
        # device arrays that are about to be freed; wait for them before anything is let go
        ring.synchronize()
        for slot in inflight:
            slot.abandon()
