"""Nothing half-written: every output is written under a temporary name in its destination
folder and renamed to its final name only when complete; :func:`remove_stale_temporaries`
cleans up what a killed run left behind. :class:`_CompleteOrAbort` is the writers' shared
protocol (``complete()`` renames, ``abort()`` removes, a ``with`` block picks one), and
:func:`_names_path` makes their write errors name the file.
"""

from __future__ import annotations

import errno
import functools
import os
import re
import secrets
import shutil
import socket
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = [
    "TEMP_SUFFIX",
    "is_temporary",
    "remove_stale_temporaries",
    "temporary_path",
]

_F = TypeVar("_F", bound=Callable[..., Any])

#: Temporary outputs are named ``.<final name>.<host>.<pid>.<random>.tmp`` (files or
#: folders).
TEMP_SUFFIX = ".tmp"


def _host() -> str:
    """This machine's name, reduced to letters, digits and ``-`` (a part of file names)."""
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname().split(".")[0])[:32] or "host"


def temporary_path(final: Path | str) -> Path:
    """Return a new temporary name under which ``final`` is written:
    ``.<name>.<host>.<pid>.<random>.tmp``.

    It lies in the same folder as ``final``, so :func:`os.replace` onto ``final`` is atomic.
    Host, process and 32 random bits make it unique to one attempt: processes on hosts that
    share a file system, and a unit retried in the same process, never write one file.
    """
    final = Path(final)
    tag = f"{_host()}.{os.getpid()}.{secrets.token_hex(4)}"
    return final.with_name(f".{final.name}.{tag}{TEMP_SUFFIX}")


def is_temporary(path: Path | str) -> bool:
    """True when ``path`` is named like a :func:`temporary_path`."""
    name = Path(path).name
    return name.startswith(".") and name.endswith(TEMP_SUFFIX)


def remove_stale_temporaries(folder: Path | str,
                             finals: Iterable[str] | None = None) -> list[Path]:
    """Remove temporaries (files or folders) left in ``folder`` by a killed run.

    Only names matching :func:`is_temporary` are removed; with ``finals`` (final file
    names), only the temporaries of those names. Call it only when no other run writes
    into ``folder`` (or, with ``finals``, those files).

    Returns
    -------
    list of Path
        What was removed.
    """
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    prefixes = None if finals is None else tuple(f".{name}." for name in finals)
    for entry in sorted(folder.iterdir()):
        if not is_temporary(entry):
            continue
        if prefixes is not None and not entry.name.startswith(prefixes):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            try:
                entry.unlink()
            except FileNotFoundError:
                pass
        removed.append(entry)
    return removed


class _CompleteOrAbort:
    """Context manager of a writer: ``close()`` on success, ``abort()`` on an error."""

    def close(self) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _names_path(method: _F) -> _F:
    """Decorate a writer's method so that an OSError raised without a file name (a write
    to an open file: a full disk, an I/O error) names the writer's final ``path``, and a
    short write reported without an errno counts as a full disk."""

    @functools.wraps(method)
    def named(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except OSError as exc:
            if exc.filename is not None:
                raise
            code, reason = exc.errno, exc.strerror or str(exc)
            if code is None and "requested and" in reason and "written" in reason:
                # numpy's tofile (tifffile's page writes) reports a short write without an
                # errno: on a regular file that is a full disk or quota
                code = errno.ENOSPC
                reason = f"{os.strerror(errno.ENOSPC)} (short write: {reason})"
            raise OSError(code, reason, str(self.path)) from exc

    return named  # type: ignore[return-value]
