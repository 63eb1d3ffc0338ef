"""The output folder's lock: two runs never write into one folder (the second would remove
the first one's temporaries as stale). :mod:`filelock` holds it, on every platform.
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
    (the second would remove the first one's temporaries as stale).

    Raises
    ------
    FolderBusyError
        Another process (or another run in this one) holds the lock.
    """
    import filelock  # imported here: ``import xyz2image_gpu`` stays light

    lock = filelock.FileLock(str(Path(folder) / LOCK_NAME))
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        raise FolderBusyError(
            f"another xyz2image-gpu run is writing into {folder}; wait for it or choose "
            "another --output-folder") from None
    try:
        yield
    finally:
        lock.release()
