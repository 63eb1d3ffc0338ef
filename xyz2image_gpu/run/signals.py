"""SIGTERM and SIGHUP end a run as Ctrl-C does: the units stop, their temporaries are
removed, complete stacks stay recorded, worker processes and their semaphores are shut down,
and the command exits with 128 + the signal's number (130 for Ctrl-C, 143 for SIGTERM, 129
for SIGHUP: the signal a closed terminal or a dropped ssh session sends an overnight run).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

from .errors import RESUME_HINT

__all__ = [
    "STOP_SIGNALS",
    "RunInterrupted",
    "interrupted_exit_code",
    "interrupted_message",
    "start_resource_tracker",
]


#: Signals that end a run as Ctrl-C does, where the platform has them.
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP")
                     if hasattr(signal, name))


class RunInterrupted(KeyboardInterrupt):
    """A run stopped by a signal other than Ctrl-C's (SIGTERM, SIGHUP), cleaned up as for
    Ctrl-C.

    Attributes
    ----------
    signum : int
        The signal's number.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)


def interrupted_exit_code(exc: BaseException) -> int:
    """128 + the signal's number: 130 for Ctrl-C (SIGINT), 143 for SIGTERM."""
    return 128 + int(getattr(exc, "signum", signal.SIGINT))


def interrupted_message(exc: BaseException) -> str:
    """What to tell the user when a run was interrupted (rerunning resumes it)."""
    by = f" by {exc}" if isinstance(exc, RunInterrupted) else ""
    return f"interrupted{by}; complete stacks are kept: {RESUME_HINT}"


def _raise_interrupted(signum: int, frame: FrameType | None) -> None:
    signal.signal(signum, signal.SIG_IGN)  # a second signal must not cut the clean-up short
    raise RunInterrupted(signum)


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """While in the block, SIGTERM and SIGHUP raise :class:`RunInterrupted` in the main
    thread.

    Only for signals that have their default action (an application's own handler is left
    alone) and only in the main thread (the one signals reach); the defaults are restored
    after.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    taken = [sig for sig in STOP_SIGNALS if signal.getsignal(sig) is signal.SIG_DFL]
    for sig in taken:
        signal.signal(sig, _raise_interrupted)
    try:
        yield
    finally:
        for sig in taken:
            signal.signal(sig, signal.SIG_DFL)


def start_resource_tracker() -> None:
    """Start multiprocessing's resource tracker (before the worker pool's semaphores) so that
    it survives a SIGHUP to the whole process group, as it survives SIGTERM and Ctrl-C.

    The tracker ignores SIGINT and SIGTERM itself but not SIGHUP: killed by it, it leaves
    the pool's semaphores registered and warns that they leaked. A signal ignored when a
    process starts stays ignored in it, so SIGHUP is ignored while the tracker starts.
    """
    from multiprocessing import resource_tracker

    hup = getattr(signal, "SIGHUP", None)
    if hup is None or threading.current_thread() is not threading.main_thread():
        resource_tracker.ensure_running()
        return
    previous = signal.signal(hup, signal.SIG_IGN)
    try:
        resource_tracker.ensure_running()
    finally:
        signal.signal(hup, previous)
