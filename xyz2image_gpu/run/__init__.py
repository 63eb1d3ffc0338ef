"""Runs: inputs x stacks as units of work, executed, recorded in a manifest, resumable.

* :mod:`.config`: what a run is asked to do (:class:`RunConfig`) and what it did;
* :mod:`.manifest`: the manifest and the rules of resume;
* :mod:`.units`: rendering one unit (one input file x one stack) to its files;
* :mod:`.plan`: the unit API (:func:`plan_run`, :func:`render_unit`, :func:`record_complete`)
  that every executor uses;
* :mod:`.execute`: running every unit on threads or worker processes;
* :mod:`.shards`: job-array shards (``--shard i/n``) writing one folder at once;
* :mod:`.distributed`: the units as tasks of a Dask cluster (``--scheduler``, ``--gpus``);
* :mod:`.lock`: the output folder's locks;
* :mod:`.memory`: whether a request fits memory, checked before anything is written;
* :mod:`.signals`: SIGTERM ending a run as Ctrl-C does;
* :mod:`.errors`: what the user is told when a run stops, and whether rerunning helps;
* :mod:`.progress`: the progress display.
"""

from __future__ import annotations

from .config import (
    FORMATS,
    RUN_PARAMETERS,
    InputError,
    RunConfig,
    RunSummary,
    SettingsMismatchError,
    array_types,
    default_workers,
    find_inputs,
    image_types,
    normalize_elements,
    normalize_output_types,
    npz_path,
    render_types,
    settings_from_parameters,
    tif_path,
    zarr_group_path,
)
from .errors import write_error_message
from .execute import run
from .lock import FolderBusyError
from .manifest import MANIFEST_NAME
from .memory import RequestTooLargeError, available_memory
from .plan import Plan, plan_run, record_complete
from .progress import Progress
from .signals import RunInterrupted, interrupted_exit_code, interrupted_message
from .units import Unit, UnitCancelled, UnitResult, render_unit

__all__ = [
    "FORMATS",
    "MANIFEST_NAME",
    "RUN_PARAMETERS",
    "FolderBusyError",
    "InputError",
    "Plan",
    "Progress",
    "RequestTooLargeError",
    "RunConfig",
    "RunInterrupted",
    "RunSummary",
    "SettingsMismatchError",
    "Unit",
    "UnitCancelled",
    "UnitResult",
    "array_types",
    "available_memory",
    "default_workers",
    "find_inputs",
    "image_types",
    "interrupted_exit_code",
    "interrupted_message",
    "normalize_elements",
    "normalize_output_types",
    "npz_path",
    "plan_run",
    "record_complete",
    "render_types",
    "render_unit",
    "run",
    "settings_from_parameters",
    "tif_path",
    "write_error_message",
    "zarr_group_path",
]
