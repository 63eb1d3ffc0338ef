"""The unit API: plan a run, render its units wherever they can run, record them complete.

A unit is one stack of one input file (:class:`~.units.Unit`). The command-line runner, Dask
tasks (:mod:`.distributed`) and job-array shards (:mod:`.shards`) all do the same three
things, so every executor writes the same bytes and keeps the same manifest::

    from xyz2image_gpu.run import RunConfig, plan_run, record_complete, render_unit

    with plan_run(config) as plan:       # reads inputs, locks the folder, writes the manifest
        for unit in plan.units:          # the units left to render (resume skips the rest)
            result = render_unit(unit)   # on any process or host that sees the folder
            record_complete(plan, result)

:func:`render_unit` leaves a unit's files complete or absent, written under temporary names
unique to a host, process and attempt; only the planning process records results in the
manifest, and the plan holds the folder's lock until it is closed.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from .config import RunConfig, RunSummary
from .execute import _Run
from .lock import _folder_lock
from .units import Unit, UnitResult, render_unit

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = [
    "Plan",
    "UnitResult",
    "plan_run",
    "record_complete",
    "render_unit",
]


class Plan:
    """A planned run: its units to render, its manifest, the folder's lock held.

    Made by :func:`plan_run`; close it (or use it as a context manager) to write the
    manifest a last time and release the lock.

    Attributes
    ----------
    config : RunConfig
    units : list of Unit
        The units left to render, in order (with ``config.shard``, the shard's own).
    total_images : int
        Images of those units.
    summary : RunSummary
        What was recorded so far (images and stacks of the units recorded complete).
    """

    def __init__(self, state: _Run, units: list[Unit], total_images: int,
                 lock: contextlib.ExitStack) -> None:
        self._state = state
        self.config: RunConfig = state.config
        self.units = units
        self.total_images = total_images
        self._lock = lock
        self._closed = False

    @property
    def output_folder(self) -> Path:
        return self._state.out

    @property
    def manifest(self) -> dict[str, Any]:
        """The manifest as this process last wrote it (a shard: before merging)."""
        return self._state.manifest

    @property
    def summary(self) -> RunSummary:
        return self._state.summary

    @property
    def workers(self) -> int:
        """The processes the run renders on (1 on the GPU)."""
        return self._state.workers

    def close(self) -> None:
        """Write the manifest and release the folder's lock; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:
            self._state._save(force=True)
        finally:
            self._lock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _open_plan(state: _Run) -> Plan:
    """Plan ``state``'s run (nothing written when that fails), take the folder's lock,
    prepare the folder and manifest."""
    state.plan()
    Path(state.config.output_folder).mkdir(parents=True, exist_ok=True)
    lock = contextlib.ExitStack()
    lock.enter_context(_folder_lock(Path(state.config.output_folder), state.shard))
    try:
        units, total = state.prepare()
    except BaseException:
        lock.close()
        raise
    return Plan(state, units, total, lock)


def plan_run(config: RunConfig, *, report: Callable[[str], None] | None = None,
             progress_stream: TextIO | None = None) -> Plan:
    """Plan the run of ``config``: read every input, compare with the folder's manifest,
    write the new one; return the units left to render.

    ``report`` receives messages for the user (default: printed to ``progress_stream``,
    else stderr).

    Raises what :func:`~.execute.run` raises before rendering (``RequestTooLargeError``,
    ``SettingsMismatchError``, ``FolderBusyError``, ``BackendError``); nothing is written
    when it does. Inputs that cannot be read are recorded failed and have no units.
    """
    if report is None:
        def report(message: str) -> None:
            print(message, file=progress_stream or sys.stderr, flush=True)
    return _open_plan(_Run(config, report, "none", progress_stream, 10.0))


def record_complete(plan: Plan, result: UnitResult) -> None:
    """Record a unit's result in the plan's manifest (in the planning process only).

    A unit whose input failed marks the file failed (its stacks after the failing one are
    then removed as they complete, as a single process would never render them); a complete
    one is added to the file's ``completed_stacks`` and counted in :attr:`Plan.summary`.
    """
    plan._state.record(result.unit, result)
