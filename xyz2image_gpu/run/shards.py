"""Job-array shards (``render --shard i/n``): many processes, on one host or many sharing a
file system, render one run into one output folder with no scheduler at all.

* **Which units**: shard ``i`` of ``n`` renders the units whose index, counting every unit of
  the run (inputs in the order given, then stacks 0, 1, ...), is ``i`` modulo ``n``: the
  same units whatever has been rendered already, so that a rerun of a shard resumes its own.
* **Locks**: each shard holds its own lock file (:func:`.lock._folder_lock`), so a second
  copy of one shard is refused; it removes only its own units' temporaries (other shards'
  are in use), and temporary names are unique per host, process and attempt.
* **Manifest, merged on write**: every write of the manifest is a read-modify-write under
  the short lock ``.lock.manifest`` (:func:`merge_manifest`): the stacks recorded complete
  are the union of what is on disk and what this shard completed, so no shard loses
  another's record whatever order they write in. A shard writes at most every 10 s (and
  when it ends), so that many shards do not queue on the lock; a stack whose record a kill
  lost is rendered again by the rerun. No ``merge`` command is needed: when the last shard
  ends, the manifest records every stack.

* **A file that fails at stack k** (``--strict``, or a field of view that cannot show it):
  as a single process, its stacks before ``k`` are kept and none after: the entry records
  ``failed_stack`` (shards only), and the shard that merges a later stack, whichever it is,
  drops it from the record and removes its files. A rerun clears the failure when the stack
  that failed completes.
"""

from __future__ import annotations

from typing import Any

from .config import SettingsMismatchError
from .manifest import same_parameters

__all__ = [
    "merge_manifest",
    "shard_units",
]


def shard_units(n_units: int, shard: tuple[int, int] | None) -> list[int]:
    """The indices (of ``range(n_units)``) that shard ``(i, n)`` renders; all for None."""
    if shard is None:
        return list(range(n_units))
    i, n = shard
    if not 0 <= i < n:
        raise ValueError(f"shard {i}/{n}: the index must be 0 to {n - 1}")
    return list(range(i, n_units, n))


def _stale_failure(disk: dict[str, Any], mine: dict[str, Any]) -> bool:
    """Whether the failure recorded on disk is one that this shard has since got past: it
    completed the very stack that failed (or, for a failure at no particular stack, some
    stack of the file) without failing itself. Stacks that failed are never recorded
    complete, so such a completion is newer than the failure: a rerun after a transient
    fault, or without ``--strict``."""
    if disk.get("status") != "failed" or mine.get("status") == "failed":
        return False
    stack = disk.get("failed_stack")
    return stack in mine["completed_stacks"] if stack is not None else \
        bool(mine["completed_stacks"])


def _merge_entry(disk: dict[str, Any], mine: dict[str, Any], n_stacks: int,
                 ) -> tuple[dict[str, Any], list[int]]:
    if _stale_failure(disk, mine):
        disk = {k: v for k, v in disk.items() if k not in ("failed_stack", "error")}
        disk["status"] = "pending"
    entry = dict(mine)
    done = set(disk.get("completed_stacks", [])) | set(mine["completed_stacks"])
    failed = [e["failed_stack"] for e in (disk, mine) if e.get("failed_stack") is not None]
    dropped: list[int] = []
    if failed:
        entry["failed_stack"] = min(failed)
        dropped = sorted(s for s in done if s > min(failed))
        done -= set(dropped)
    entry["completed_stacks"] = sorted(done)
    entry["outside_field"] = {k: v for k, v in {**disk.get("outside_field", {}),
                                                 **mine["outside_field"]}.items()
                              if int(k) in done}
    if mine["status"] == "failed" or disk.get("status") == "failed":
        entry["status"] = "failed"
        entry["error"] = mine["error"] or disk.get("error")
    elif all(s in done for s in range(n_stacks)):
        entry["status"] = "complete"
    else:
        entry["status"] = "pending"
    return entry, dropped


def merge_manifest(disk: dict[str, Any] | None, mine: dict[str, Any],
                   ) -> tuple[dict[str, Any], list[tuple[str, int]]]:
    """The manifest to write: this shard's ``mine`` merged into the one on ``disk``, and the
    (stem, stack) whose files must go: stacks after a file's ``failed_stack``.

    Entries of inputs only on disk are kept; for an input in both (same sha256) the
    complete stacks are the union and a failure on either side is kept, at the lower
    ``failed_stack``; an input whose sha256 differs takes this shard's entry (its stacks on
    disk came from another version).

    Raises
    ------
    SettingsMismatchError
        The manifest on disk records other settings (a run with ``--overwrite`` and other
        settings replaced it while this shard ran).
    """
    if disk is None:
        disk = {"parameters": mine["parameters"], "files": {}}
    if not same_parameters(disk.get("parameters"), mine["parameters"]):
        raise SettingsMismatchError(
            "the manifest was replaced by a run with other settings while this shard ran; "
            "the shards of one run must share their settings")
    merged = dict(mine)
    files = dict(disk.get("files", {}))
    dropped: list[tuple[str, int]] = []
    for stem, entry in mine["files"].items():
        old = files.get(stem)
        if not (isinstance(old, dict) and old.get("sha256") == entry.get("sha256")):
            old = {}  # its stacks on disk, if any, came from another version of the input
        files[stem], gone = _merge_entry(old, entry, int(mine["n_stacks"]))
        dropped += [(stem, s) for s in gone]
    merged["files"] = files
    return merged, dropped
