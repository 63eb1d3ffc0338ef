"""What the user is told when a run stops on an error, and whether running the same command
again can help: only where it can (an interrupt, a transient I/O error, a full disk once
space is freed), never after an error that would repeat.
"""

from __future__ import annotations

import errno

__all__ = [
    "RESUME_HINT",
    "write_error_message",
]

RESUME_HINT = "run the same command again to resume"

#: Write errors that the same command would meet again.
_PERMANENT = frozenset({
    errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR, errno.EEXIST,
    errno.ENAMETOOLONG, errno.EFBIG, errno.EINVAL, errno.ELOOP,
})
#: Write errors that freeing space cures.
_NO_SPACE = frozenset({errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)})


def write_error_message(exc: OSError) -> str:
    """The message for an output that could not be written: the path, the system's reason,
    and what to do (free space first; rerun only where rerunning can help)."""
    where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
    reason = exc.strerror or str(exc)
    if exc.errno in _NO_SPACE:
        return (f"cannot write output{where}: {reason}; the run stopped, complete stacks are "
                f"kept: free space, then {RESUME_HINT}")
    if exc.errno in _PERMANENT:
        return f"cannot write output{where}: {reason}; the run stopped, complete stacks are kept"
    return (f"cannot write output{where}: {reason}; the run stopped, complete stacks are "
            f"kept ({RESUME_HINT})")
