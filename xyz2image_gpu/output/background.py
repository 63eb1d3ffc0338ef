"""A writer thread fed by a bounded queue: the producer slows when the disk falls behind, and an
error of the thread (disk full, permission denied) is re-raised in the producer.
"""

from __future__ import annotations

import queue
import threading
from typing import Any

from .atomic import _CompleteOrAbort

__all__ = [
    "BackgroundWriter",
]


_STOP = object()


class BackgroundWriter(_CompleteOrAbort):
    """Run writes on one background thread fed by a bounded queue.

    The producer (the rendering loop) puts ``(writer, batch)`` pairs, meaning
    ``writer.append(batch)``, or zero-argument callables (e.g. ``writer.close``); the thread
    runs them in order. When the thread falls behind, :meth:`put` blocks, so at most
    ``maxsize`` batches wait in memory. Copy device arrays to the host before putting them.

    An exception raised on the thread (a full disk, a permission error) stops the writes;
    the producer gets it re-raised at its next :meth:`put` or at :meth:`close`, never lost.

    Parameters
    ----------
    maxsize : int, optional
        Batches (or callables) that may wait in the queue (default 2).
    name : str, optional
        Thread name.
    """

    def __init__(self, maxsize: int = 2, name: str = "xyz2image-writer") -> None:
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max(1, int(maxsize)))
        self._error: BaseException | None = None
        self._raised = False
        self._cancel = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            if self._error is not None or self._cancel.is_set():
                continue  # keep draining so that the producer never blocks forever
            try:
                if callable(item):
                    item()
                else:
                    writer, batch = item
                    writer.append(batch)
            except BaseException as exc:  # noqa: BLE001 - handed to the producer
                self._error = exc

    @property
    def error(self) -> BaseException | None:
        """The exception raised on the thread, if any."""
        return self._error

    def _raise_pending(self) -> None:
        if self._error is not None and not self._raised:
            self._raised = True
            raise self._error

    def put(self, item: Any, batch: Any = None) -> None:
        """Queue ``writer.append(batch)`` (``put(writer, batch)``) or a callable (``put(fn)``).

        Raises
        ------
        Exception
            The exception that an earlier item raised on the writer thread.
        """
        if self._closed:
            raise ValueError("BackgroundWriter is closed")
        self._raise_pending()
        if batch is None and not callable(item):
            raise TypeError("put() needs a callable, or a writer and a batch")
        self._queue.put(item if batch is None else (item, batch))

    def finish(self) -> None:
        """Let the thread stop once the queued writes are done, without waiting for them
        (:meth:`close` waits; :attr:`finished` tells). Nothing more can be put."""
        if not self._closed:
            self._queue.put(_STOP)  # before marking closed: abort() then still stops it
            self._closed = True

    @property
    def finished(self) -> bool:
        """True once :meth:`finish` (or :meth:`close`) was called and the thread has ended."""
        return self._closed and not self._thread.is_alive()

    def close(self) -> None:
        """Wait for the queued writes and stop the thread; safe to call twice.

        Raises
        ------
        Exception
            An exception raised on the writer thread and not yet re-raised.
        """
        self.finish()
        self._thread.join()
        self._raise_pending()

    def abort(self) -> None:
        """Skip the queued writes, stop the thread, and swallow its error (for clean-up)."""
        self._cancel.set()
        self._closed = True
        # Always queue a stop of our own: an interrupt (Ctrl-C, SIGTERM) may have cut
        # finish() short before its stop was queued; a second stop is never read. The
        # thread skips cancelled items, so a full queue drains while we retry.
        while self._thread.is_alive():
            try:
                self._queue.put(_STOP, timeout=0.05)
                break
            except queue.Full:
                continue
        self._thread.join()  # also after finish(): a file may still be assembling
        self._raised = True
