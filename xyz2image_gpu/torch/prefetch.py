"""Rendering ahead of a training loop: batches produced on a background thread, a bounded
number in advance, so that the next ones render while the loop trains on the last (the
engine renders outside the GIL). :class:`~.dataset.RenderDataset` uses it with
``prefetch=k``.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any

__all__ = ["ahead"]


def ahead(items: Iterator[Any], depth: int) -> Iterator[Any]:
    """``items``, produced on a background thread up to ``depth`` ahead of the consumer.

    An exception of the producer is raised in the consumer; a consumer that stops early
    (closes this generator) stops the producer, which is joined before this returns.
    """
    queue_: queue.Queue[tuple[Any, BaseException | None]] = queue.Queue(maxsize=depth)
    stop = threading.Event()
    end = object()

    def put(entry: tuple[Any, BaseException | None]) -> bool:
        while not stop.is_set():
            try:
                queue_.put(entry, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
            put((end, None))
        except BaseException as exc:  # noqa: BLE001 - raised again in the consumer
            put((end, exc))

    thread = threading.Thread(target=produce, name="xyz2image-gpu-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item, error = queue_.get()
            if error is not None:
                raise error
            if item is end:
                return
            yield item
    finally:
        stop.set()
        thread.join()
        close = getattr(items, "close", None)  # a generator: let it clean up
        if close is not None:
            close()
