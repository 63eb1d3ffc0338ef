"""GPU batches to the host with the copies overlapped: double buffering over two streams.

Batch k is queued on stream k % 2 (upload, kernels, then an asynchronous copy of each output
into that stream's page-locked host buffers) before batch k-1 is waited for and handed
over, so the device renders one batch while the previous one crosses the bus and the host
prepares the next batch's inputs. Streams, events, pinned buffers and the copies come from
:class:`~xyz2image_gpu.backend.Backend`; nothing here calls CUDA itself, and the loop never
waits on the device except for the batch it hands over.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from ..backend import Backend

__all__ = ["iter_overlapped"]


class _PinnedBuffers:
    """Page-locked host buffers of one stream, one per output key, grown on demand and
    reused (the last batch may be shorter: it gets a view of the first rows)."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        self._buffers: dict[str, np.ndarray] = {}

    def view(self, key: str, a: Any) -> np.ndarray:
        """A pinned host array of ``a``'s shape and dtype for output ``key``."""
        buf = self._buffers.get(key)
        if buf is None or buf.shape[1:] != a.shape[1:] or buf.dtype != a.dtype \
                or len(buf) < len(a):
            buf = self._backend.pinned_empty(a.shape, a.dtype)
            self._buffers[key] = buf
        return buf[: len(a)]


def iter_overlapped(
    backend: Backend,
    bounds: Sequence[tuple[int, int]],
    assemble: Callable[[int, int], dict[str, np.ndarray]],
    render: Callable[[dict[str, np.ndarray]], dict[str, Any]],
    extra: Sequence[str],
) -> Iterator[dict[str, np.ndarray]]:
    """Render the batches ``bounds`` on the GPU and yield each one as host arrays.

    Parameters
    ----------
    backend : Backend
        A GPU backend (``backend.is_gpu``).
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
    dict of numpy.ndarray
        Each batch's outputs, copied out of the pinned buffers (they are reused two batches
        later), plus the ``extra`` host inputs. The device arrays of a batch are kept until
        its copies are done.
    """
    streams = [backend.new_stream(), backend.new_stream()]
    pinned = [_PinnedBuffers(backend), _PinnedBuffers(backend)]

    def finish(queued: tuple[Any, dict[str, np.ndarray], dict[str, np.ndarray], Any]) -> dict:
        event, views, host, _device = queued
        event.synchronize()
        batch = {k: np.array(v, copy=True) for k, v in views.items()}
        for key in extra:
            batch[key] = host[key]
        return batch

    queued = None
    for k, (b0, b1) in enumerate(bounds):
        host = assemble(b0, b1)
        slot = k % 2
        stream = streams[slot]
        with stream:
            device = render(host)
            views = {}
            for key, a in device.items():
                views[key] = pinned[slot].view(key, a)
                backend.copy_to_host_async(a, views[key], stream)
            event = stream.record()
        if queued is not None:
            yield finish(queued)
        queued = (event, views, host, device)
    if queued is not None:
        yield finish(queued)
