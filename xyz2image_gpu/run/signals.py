"""SIGTERM ends a run as Ctrl-C does: the units stop, their temporaries are removed, complete
stacks stay recorded, worker processes and their semaphores are shut down, and the command
exits with 128 + the signal's number (130 for Ctrl-C, 143 for SIGTERM).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

from .errors import RESUME_HINT

__all__ = [
    "RunInterrupted",
    "interrupted_exit_code",
    "interrupted_message",
]


class RunInterrupted(KeyboardInterrupt):
    """A run stopped by a signal other than Ctrl-C's (SIGTERM), cleaned up as for Ctrl-C.

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
    """While in the block, SIGTERM raises :class:`RunInterrupted` in the main thread.

    Only where SIGTERM has its default action (an application's own handler is left alone)
    and only in the main thread (the one signals reach); the default is restored after.
    """
    term = getattr(signal, "SIGTERM", None)
    if (term is None or threading.current_thread() is not threading.main_thread()
            or signal.getsignal(term) is not signal.SIG_DFL):
        yield
        return
    signal.signal(term, _raise_interrupted)
    try:
        yield
    finally:
        signal.signal(term, signal.SIG_DFL)
