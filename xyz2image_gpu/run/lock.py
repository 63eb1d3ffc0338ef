"""The output folder's lock: two runs never write into one folder (the second would remove
the first one's temporaries as stale).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "LOCK_NAME",
    "FolderBusyError",
]
LOCK_NAME = ".lock"


class FolderBusyError(RuntimeError):
    """Another run is writing into the same output folder."""


@contextlib.contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``folder/.lock`` so that two runs never share a folder
    (the second would remove the first one's temporaries as stale)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    with open(folder / LOCK_NAME, "a+") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FolderBusyError(
                f"another xyz2image-gpu run is writing into {folder}; wait for it or choose "
                "another --output-folder") from None
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
