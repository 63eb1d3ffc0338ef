"""The output folder's locks: two runs never write into one folder (the second would remove
the first one's temporaries as stale). :mod:`filelock` holds them, on every platform.

A run renders every unit under ``OUTPUT/.lock``, held for the whole run. A shard of a job
array (``--shard i/n``) holds ``OUTPUT/.lock.shard-i-of-n`` instead, so that the shards of
one run write into one folder at once, each its own units, while a second copy of one shard,
or a run without ``--shard``, is refused: each kind takes its own lock first and then checks
that the other kind's are free, so of two that start together at least one sees the other.
Shards update the manifest under the short lock ``OUTPUT/.lock.manifest`` (:mod:`.shards`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "LOCK_NAME",
    "MANIFEST_LOCK_NAME",
    "FolderBusyError",
    "shard_lock_name",
]
LOCK_NAME = ".lock"
#: Held while a shard reads, merges and writes the manifest (seconds at most).
MANIFEST_LOCK_NAME = ".lock.manifest"
_SHARD_LOCK_PREFIX = ".lock.shard-"
#: Seconds a shard waits for ``.lock``: other shards starting hold it for an instant to check
#: it, a run without shards for its whole run.
_CHECK_WAIT = 5.0


class FolderBusyError(RuntimeError):
    """Another run is writing into the same output folder."""


def shard_lock_name(shard: tuple[int, int]) -> str:
    """The lock file of shard ``(i, n)``: ``.lock.shard-i-of-n``."""
    return f"{_SHARD_LOCK_PREFIX}{shard[0]}-of-{shard[1]}"


def _is_free(path: Path, timeout: float = 0.0) -> bool:
    import filelock

    lock = filelock.FileLock(str(path))
    try:
        lock.acquire(timeout=timeout)
    except filelock.Timeout:
        return False
    lock.release()
    return True


def _held_shard_locks(folder: Path, but_count: int | None = None) -> list[Path]:
    """The shard lock files in ``folder`` that a running shard holds, except those of shards
    of ``but_count`` (``.lock.shard-i-of-<but_count>``)."""
    suffix = None if but_count is None else f"-of-{but_count}"
    return [p for p in sorted(folder.glob(_SHARD_LOCK_PREFIX + "*"))
            if not (suffix and p.name.endswith(suffix)) and not _is_free(p)]


@contextlib.contextmanager
def _folder_lock(folder: Path, shard: tuple[int, int] | None = None) -> Iterator[None]:
    """Hold an exclusive lock on ``folder/.lock`` so that two runs never share a folder
    (the second would remove the first one's temporaries as stale); with ``shard``, on
    that shard's lock file, refused while a run without a shard holds ``.lock`` or shards
    of another count hold theirs.

    Raises
    ------
    FolderBusyError
        Another process (or another run in this one) holds the lock.
    """
    import filelock  # imported here: ``import xyz2image_gpu`` stays light

    folder = Path(folder)
    name = LOCK_NAME if shard is None else shard_lock_name(shard)
    lock = filelock.FileLock(str(folder / name))
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        which = "" if shard is None else f" of shard {shard[0]}/{shard[1]}"
        raise FolderBusyError(
            f"another xyz2image-gpu run{which} is writing into {folder}; wait for it or "
            "choose another --output-folder") from None
    try:
        if shard is None:
            if _held_shard_locks(folder):
                raise FolderBusyError(
                    f"shards of another xyz2image-gpu run (--shard) are writing into {folder}; "
                    "wait for them or choose another --output-folder")
        elif not _is_free(folder / LOCK_NAME, timeout=_CHECK_WAIT):  # other shards check it too
            raise FolderBusyError(
                f"another xyz2image-gpu run (without --shard) is writing into {folder}; "
                "wait for it or choose another --output-folder")
        else:  # shards of another count split the units otherwise: theirs would overlap
            other = _held_shard_locks(folder, but_count=shard[1])
            if other:
                count = other[0].name.rsplit("-of-", 1)[-1]
                raise FolderBusyError(
                    f"shards of another count (--shard i/{count}) are writing into {folder}; "
                    f"the shards of one run must share n (here {shard[1]})")
        yield
    finally:
        lock.release()


@contextlib.contextmanager
def _manifest_lock(folder: Path, timeout: float = 300.0) -> Iterator[None]:
    """Hold ``folder/.lock.manifest`` while a shard reads, merges and writes the manifest."""
    import filelock

    lock = filelock.FileLock(str(Path(folder) / MANIFEST_LOCK_NAME))
    try:
        lock.acquire(timeout=timeout)
    except filelock.Timeout:
        raise FolderBusyError(
            f"{folder}: the manifest stayed locked for {timeout:.0f} s by another shard "
            f"({MANIFEST_LOCK_NAME}); is its file system's locking working?") from None
    try:
        yield
    finally:
        lock.release()
