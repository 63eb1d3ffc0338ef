"""Executing a run: every unit (input file x stack) on threads or worker processes, the
manifest kept up to date, temporaries of a killed run removed, complete stacks skipped.

Every file is written under a temporary name (``.<name>.<host>.<pid>.<random>.tmp``) and
renamed when it is complete; temporaries left by a killed run are removed by the next run,
which skips the stacks that the manifest records as complete and whose files exist and are
whole (resume; a stack cut short or damaged is named in a warning and rendered again).
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import os
import re
import shutil
import sys
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, TextIO

from ..backend import Backend, get_backend
from ..output.atomic import remove_stale_temporaries
from ..output.npz import default_compression_threads
from ..output.zarr_store import store_path, write_store_attributes
from ..pipeline.device_choice import fastest_backend
from ..pipeline.engine import Renderer
from ..pipeline.framing import FieldReport
from ..structures.convert import as_structure
from ..structures.model import StructureError
from .config import (
    RunConfig,
    RunSummary,
    SettingsMismatchError,
    default_workers,
    is_stack_file,
    render_types,
)
from .lock import _manifest_lock
from .manifest import (
    MANIFEST_FORMAT,
    MANIFEST_NAME,
    _atomic_write_json,
    _differences,
    _load_manifest,
    _package_version,
    _sha256,
    same_parameters,
)
from .memory import RequestTooLargeError, _check_memory, _Need
from .progress import Progress
from .shards import merge_manifest, shard_units
from .signals import _sigterm_as_interrupt, start_resource_tracker
from .units import (
    Unit,
    UnitResult,
    _Finishing,
    _render_unit,
    _store_compression,
    _temporary_names,
    _thread_env,
    _worker_init,
    _worker_run,
    unit_problem,
)

__all__ = [
    "run",
]

#: A stack's name: its index, then ``.npz``, ``_<type>.tif``, or nothing (a zarr group).
_STACK_INDEX = re.compile(r"(\d{4,})(?:\.npz|_[a-z0-9_]+\.tif)?")

#: Seconds between two writes of the manifest by a shard (at most; and when it ends).
_SHARD_SAVE_INTERVAL = 10.0


# ----------------------------------------------------------------------------- run


@dataclasses.dataclass
class _Input:
    """One input file as read before anything is written: its hash and frames, or why it
    cannot be used."""

    path: Path
    sha256: str | None = None
    n_frames: int = 0
    error: str | None = None
    #: shape and dtype of every output of one of its stacks (to check stacks on disk)
    layout: dict[str, Any] | None = None


class _Run:
    """State of one ``render`` run (the main process)."""

    def __init__(self, config: RunConfig, report: Callable[[str], None],
                 progress_mode: str, progress_stream: TextIO | None,
                 progress_interval: float) -> None:
        self.config = config
        self.report = report
        self.progress_mode = progress_mode
        self.progress_stream = progress_stream
        self.progress_interval = progress_interval
        self.out = Path(config.output_folder)
        self.manifest_path = self.out / MANIFEST_NAME
        self.summary = RunSummary()
        self.progress: Progress | None = None
        self._last_save = 0.0
        self.shard = config.shard
        # A file fails at its lowest failing stack; as on the serial path, the stacks before
        # it are kept and none after it is rendered or kept, whatever order units finish.
        self.failed_at: dict[str, int] = {}
        self.completed: list[Unit] = []

    # -- manifest
    def _save(self, force: bool = False) -> None:
        now = time.monotonic()
        # shards merge under a lock shared by every shard: less often, so that many shards
        # do not queue on it (a record lost to a kill costs its stack's rendering again)
        interval = 1.0 if self.shard is None else _SHARD_SAVE_INTERVAL
        if force or now - self._last_save >= interval:
            self._last_save = now
            if self.shard is None:
                self._write_manifest(self.manifest)
            else:  # other shards write it too: merge on write, under the manifest's lock
                with _manifest_lock(self.out):
                    self._write_merged()

    def _write_manifest(self, manifest: dict[str, Any]) -> None:
        _atomic_write_json(self.manifest_path, manifest)
        if self.config.format == "zarr":  # the store carries its settings and manifest
            write_store_attributes(self.out, {"manifest": manifest})

    def _write_merged(self) -> None:
        disk = _load_manifest(self.manifest_path)
        merged, dropped = merge_manifest(disk, self.manifest)
        for stem, stack in dropped:  # after the stack at which another shard's file failed
            entry = merged["files"][stem]
            _remove_outputs(Unit(entry["path"], stem, stack, self.shared, self.device, 1))
        self._write_manifest(merged)
        for stem, entry in merged["files"].items():
            failed = entry.get("failed_stack") if isinstance(entry, dict) else None
            if stem in self.manifest["files"] and failed is not None \
                    and self.failed_at.get(stem, failed + 1) > failed:
                self.failed_at[stem] = failed  # this shard's later stacks are dropped too

    def _file_entry(self, stem: str) -> dict[str, Any]:
        return self.manifest["files"][stem]

    def _mark_complete(self, unit: Unit) -> None:
        entry = self._file_entry(unit.stem)
        stacks = set(entry["completed_stacks"]) | {unit.stack}
        entry["completed_stacks"] = sorted(stacks)
        if all(s in stacks for s in range(self.config.n_stacks)):
            entry["status"] = "complete"
        self.summary.stacks_written += 1
        self.summary.images += entry["images_per_stack"]
        self._save()

    def _discard(self, unit: Unit) -> None:
        """Remove a rendered stack of a file that failed at an earlier stack, and its record:
        worker processes may finish stacks that the serial path would never have rendered."""
        _remove_outputs(unit)
        entry = self._file_entry(unit.stem)
        if unit.stack in entry["completed_stacks"]:
            entry["completed_stacks"].remove(unit.stack)
            self.summary.stacks_written -= 1
            self.summary.images -= entry["images_per_stack"]
        entry["outside_field"].pop(str(unit.stack), None)
        self._save(force=True)

    def _record_field(self, unit: Unit, report: FieldReport) -> None:
        """Record a finished stack's atoms outside the field of view; warn when there are, and
        when integer images on a fixed scale clip."""
        self._file_entry(unit.stem)["outside_field"][str(unit.stack)] = report.to_dict()
        if report.atoms_outside:
            self._say(f"warning: {unit.path}, stack {unit.stack}: {report.describe()} "
                      "(--strict fails the file instead)")
        if report.pixels_at_top:
            self._say(f"warning: {unit.path}, stack {unit.stack}: {report.clipping()}")

    def after_failure(self, unit: Unit) -> bool:
        """True for a stack after the stack at which its file failed."""
        return unit.stem in self.failed_at and unit.stack > self.failed_at[unit.stem]

    def fail(self, unit: Unit, message: str) -> bool:
        """Record that ``unit``'s input failed at its stack; discard what was completed of the
        stacks after it. False when the file failed at an earlier stack already."""
        if unit.stem in self.failed_at and unit.stack >= self.failed_at[unit.stem]:
            return False
        first = unit.stem not in self.failed_at
        self.failed_at[unit.stem] = unit.stack
        if self.shard is not None:  # other shards drop their stacks after it (shards.py)
            self._file_entry(unit.stem)["failed_stack"] = unit.stack
        if first:
            self._mark_failed(unit.stem, message)
        for other in [u for u in self.completed if self.after_failure(u)]:
            self.completed.remove(other)
            self._discard(other)
        return True

    def record(self, unit: Unit, result: UnitResult) -> None:
        """Record a rendered unit: complete, failed, or discarded (after its file failed)."""
        if result.error is not None:
            self.fail(unit, result.error)
        elif self.after_failure(unit):
            self._discard(unit)
        else:
            self._record_field(unit, result.field_report)
            self._mark_complete(unit)
            self.completed.append(unit)

    def _mark_failed(self, stem: str, message: str) -> None:
        entry = self._file_entry(stem)
        entry["status"] = "failed"
        entry["error"] = message
        self.summary.failed.append((entry["path"], message))
        self._say(f"error: {message} (file skipped)")
        self._save(force=True)

    def _say(self, message: str) -> None:
        if self.progress is not None:
            self.progress.write(message)
        else:
            self.report(message)

    # -- phases
    def plan(self) -> None:
        """What only reads: the backend, the workers, every input (hash, frames, or why it
        cannot be read) and whether one batch fits memory; raises before anything is
        written (RequestTooLargeError, BackendError)."""
        cfg = self.config
        backend = get_backend(cfg.device)
        if backend.is_gpu and cfg.device == "auto":
            backend = self._fastest(backend)
        if backend.is_gpu:
            workers = 1
        elif cfg.workers is None:
            workers = default_workers(cfg.settings, cfg.output_types)
        else:
            workers = max(1, int(cfg.workers))
        self.device = "gpu" if backend.is_gpu else "cpu"
        self.workers = workers
        self.summary.device = f"{backend.name}: {backend.reason}"
        self.summary.workers = workers
        self.backend_name, self.backend_reason = backend.name, backend.reason
        self.backend = backend
        need = _Need()
        renderer = Renderer(cfg.settings, render_types(cfg.output_types), backend)
        self.inputs: list[_Input] = []
        try:
            for path in cfg.inputs:
                item = _Input(Path(path))
                self.inputs.append(item)
                try:
                    item.sha256 = _sha256(item.path)
                    structure = as_structure(item.path, frameshift=cfg.frameshift,
                                             maxframes=cfg.maxframes,
                                             exclude_elements=cfg.exclude_elements)
                except (StructureError, OSError) as exc:
                    item.error = _describe_input_error(item.path, exc)
                    continue
                item.n_frames = len(structure.frames)
                item.layout = renderer.output_layout(structure,
                                                     item.n_frames * cfg.n_rotation)
                need.add(renderer, structure)
        finally:
            renderer.close()
        n_units = cfg.n_stacks * sum(item.error is None for item in self.inputs)
        _check_memory(cfg, need, min(workers, max(1, n_units)), backend.is_gpu)

    def _fastest(self, gpu: Backend) -> Backend:
        """``--device auto`` on a machine with a GPU: the GPU or the CPU, whichever renders
        the first readable input faster (:func:`~..pipeline.device_choice.fastest_backend`);
        the GPU when none can be read or the measurement fails (the run then says why)."""
        cfg = self.config
        for path in cfg.inputs:
            try:
                structure = as_structure(path, frameshift=cfg.frameshift,
                                         maxframes=cfg.maxframes,
                                         exclude_elements=cfg.exclude_elements)
            except (StructureError, OSError):
                continue
            try:
                return fastest_backend(cfg.settings, render_types(cfg.output_types), structure,
                                       gpu, get_backend("cpu"))
            except Exception as exc:  # noqa: BLE001 - any failure: keep the GPU, say why
                return Backend(gpu.name, gpu.xp, f"{gpu.reason} (device=auto could not "
                               f"compare it with the CPU: {type(exc).__name__}: {exc})")
        return gpu

    def _previous_manifest(self, params: dict[str, Any]) -> dict[str, Any] | None:
        """The folder's manifest; SettingsMismatchError where it records other settings (or
        cannot be read) and ``overwrite`` is off."""
        try:
            old = _load_manifest(self.manifest_path)
        except SettingsMismatchError:
            if not self.config.overwrite:
                raise
            return {"parameters": None, "files": {}}  # unreadable: replaced
        if (old is not None and not same_parameters(old.get("parameters"), params)
                and not self.config.overwrite):
            diff = _differences(old.get("parameters", {}), params)
            raise SettingsMismatchError(
                f"{self.out} holds stacks rendered with other settings ("
                + "; ".join(diff[:6]) + ("; ..." if len(diff) > 6 else "")
                + "); use --overwrite to replace them or choose another --output-folder")
        if old is not None and not isinstance(old.get("files"), dict):
            old["files"] = {}
        return old

    def _remove_other_settings(self, old: dict[str, Any] | None) -> None:
        """``overwrite`` over other (or unknown) settings: remove every stack file in the
        folders of the old manifest's inputs and of this run's, so that the folder never
        mixes settings (this run renders its own stacks again)."""
        ours = {item.path.stem for item in self.inputs}
        stems = ours | {s for s in (old or {}).get("files", {})
                        if isinstance(s, str) and s and Path(s).name == s and s != ".."}
        removed: list[Path] = []
        for stem in sorted(stems):
            folder = self.out / stem
            if not folder.is_dir() or folder.is_symlink():
                continue
            for path in sorted(folder.iterdir()):
                if is_stack_file(path) and path.is_file():
                    path.unlink()
                    removed.append(path)
            if stem not in ours:
                with contextlib.suppress(OSError):  # kept where other files remain
                    folder.rmdir()
        store = store_path(self.out)
        if store.is_dir() and not store.is_symlink():  # all of it rendered with those settings
            shutil.rmtree(store)
            removed.append(store)
        if removed:
            names = [str(p.relative_to(self.out)) for p in removed]
            self._say(f"--overwrite: removed {len(removed)} stack files rendered with other "
                      f"settings ({', '.join(names[:4])}{', ...' if len(names) > 4 else ''})")

    def _unplanned_stacks(self) -> list[Path]:
        """Stacks on disk of this run's inputs beyond its ``n_stacks`` (left by an earlier
        run with more): no unit of this run, and the manifest does not list them."""
        n = self.config.n_stacks
        found: list[Path] = []
        for stem in dict.fromkeys(item.path.stem for item in self.inputs):
            for folder in (self.out / stem, store_path(self.out) / stem):
                if not folder.is_dir() or folder.is_symlink():
                    continue
                for path in sorted(folder.iterdir()):
                    match = _STACK_INDEX.fullmatch(path.name)
                    if (match and int(match.group(1)) >= n
                            and (is_stack_file(path) or (path / "zarr.json").is_file())):
                        found.append(path)
        return found

    def _warn_unplanned(self) -> None:
        """Name the stacks on disk that this run's plan does not include (kept: the folder
        is the user's; the manifest, which does not list them, is what readers follow)."""
        found = self._unplanned_stacks()
        if not found:
            return
        names = [str(p.relative_to(self.out)) for p in found]
        self._say(f"warning: {len(found)} stack{'s' if len(found) != 1 else ''} on disk "
                  f"beyond this run's --n-stacks {self.config.n_stacks} (from an earlier run "
                  f"with more) are not in the manifest and were kept: {', '.join(names[:6])}"
                  f"{', ...' if len(names) > 6 else ''}; remove them, or rerun with the "
                  "larger --n-stacks, or render into another --output-folder")

    def _temporary_folders(self) -> list[Path]:
        """Where this run's writers put temporaries: the output folder, each input's folder,
        and the zarr store's root and file groups."""
        stems = [item.path.stem for item in self.inputs]
        store = store_path(self.out)
        return [self.out, *(self.out / s for s in stems), store, *(store / s for s in stems)]

    def prepare(self) -> tuple[list[Unit], int]:
        """Under the folder's lock: compare with the manifest, remove what ``overwrite``
        replaces, write the new manifest; return the units to render and their images
        (with a shard, its own; the manifest is then read and written under its lock)."""
        self.out.mkdir(parents=True, exist_ok=True)
        if self.shard is None:
            return self._prepare()
        with _manifest_lock(self.out):
            return self._prepare()

    def _prepare(self) -> tuple[list[Unit], int]:
        cfg = self.config
        params = cfg.parameters()
        old = self._previous_manifest(params)
        same = old is not None and same_parameters(old.get("parameters"), params)
        if cfg.overwrite and not same:
            self._remove_other_settings(old)
        self.manifest = {
            "format": MANIFEST_FORMAT,
            "package": "xyz2image-gpu",
            "version": _package_version(),
            "parameters": params,
            "n_stacks": int(cfg.n_stacks),
            "device": {"requested": cfg.device, "backend": self.backend_name,
                       "reason": self.backend_reason},
            "execution": {"workers": self.workers, "batch_size": cfg.batch_size},
            "files": {},
        }
        if cfg.format == "zarr":
            self.manifest["device"]["store_compression"] = _store_compression(self.backend,
                                                                             cfg)[1]
        # keep what other runs into this folder (with these settings) recorded
        old_files = old["files"] if same and old is not None else {}
        self.manifest["files"].update(old_files)
        units: list[Unit] = []
        total = 0
        index = 0  # of every unit of the run, in order (shards: index modulo n)
        ours = set(shard_units(len(self.inputs) * cfg.n_stacks, self.shard))
        threads = default_compression_threads() if self.workers == 1 else 1
        # what every unit shares: the config without the input list, each unit names its
        # own input (the list would travel with every unit pickled for a worker)
        shared = dataclasses.replace(cfg, inputs=(), output_folder=self.out)
        self.shared = shared
        if self.shard is None:
            for folder in self._temporary_folders():
                remove_stale_temporaries(folder)
        else:  # the manifest's (and the store's copy of it) under its lock; units' below
            remove_stale_temporaries(self.out, [MANIFEST_NAME])
            remove_stale_temporaries(store_path(self.out), ["zarr.json"])
        for item in self.inputs:
            stem = item.path.stem
            entry = {"path": str(item.path), "sha256": item.sha256, "status": "pending",
                     "error": None, "n_frames": None, "images_per_stack": None,
                     "completed_stacks": [], "outside_field": {}}
            previous = old_files.get(stem)
            self.manifest["files"][stem] = entry
            if item.error is not None:
                index += cfg.n_stacks
                self._mark_failed(stem, item.error)
                continue
            entry["n_frames"] = item.n_frames
            entry["images_per_stack"] = item.n_frames * cfg.n_rotation
            done: set[int] = set()
            if previous and not cfg.overwrite:
                if previous.get("sha256") == item.sha256:
                    done = set(previous.get("completed_stacks", []))
                elif previous.get("completed_stacks"):
                    self._say(f"warning: {item.path} changed since its stacks were written "
                              "(its sha256 differs from the manifest's): its stacks are "
                              "rendered again")
            for stack in range(cfg.n_stacks):
                unit = Unit(str(item.path), stem, stack, shared, self.device, threads)
                index += 1
                if index - 1 not in ours:  # another shard's: recorded as found, not rendered
                    if stack in done and all(p.exists() for p in unit.outputs()):
                        entry["completed_stacks"].append(stack)
                    continue
                if self.shard is not None:  # only this shard's own temporaries are stale
                    for folder, name in _temporary_names(unit):
                        remove_stale_temporaries(folder, [name])
                kept = previous.get("outside_field", {}).get(str(stack)) if previous else None
                if cfg.strict and kept and kept.get("atoms_outside"):
                    done.discard(stack)  # kept with atoms outside: --strict renders it again
                if stack in done and self._whole(unit, item):
                    entry["completed_stacks"].append(stack)
                    if kept is not None:
                        entry["outside_field"][str(stack)] = kept
                    self.summary.stacks_skipped += 1
                    continue
                units.append(unit)
                total += entry["images_per_stack"]
            if len(entry["completed_stacks"]) == cfg.n_stacks:
                entry["status"] = "complete"
        self._warn_unplanned()
        if self.workers > 1 and len(units) <= 1:
            self.workers = 1  # one unit: render it here, with threaded compression
            self.summary.workers = 1
            self.manifest["execution"]["workers"] = 1
        if self.workers == 1 and threads == 1:
            threads = default_compression_threads()
            units = [dataclasses.replace(u, compression_threads=threads) for u in units]
        if self.shard is None or not same:  # a new manifest, or one replaced (--overwrite)
            self._write_manifest(self.manifest)
        else:
            self._write_merged()  # the caller holds the manifest's lock
        self._last_save = time.monotonic()
        return units, total

    def _whole(self, unit: Unit, item: _Input) -> bool:
        """Whether a stack recorded complete is on disk and whole (:func:`unit_problem`:
        its files' metadata against the shapes this run would write); a damaged one is
        named in a warning, and rendered again."""
        if not all(p.exists() for p in unit.outputs()):
            return False
        found = unit_problem(unit, item.layout or {})
        if found is None:
            return True
        path, problem = found
        self._say(f"warning: {path} is damaged, incomplete or not what this run writes "
                  f"({problem}): stack {unit.stack} of {item.path} is rendered again")
        return False

    def execute(self, units: list[Unit], total: int) -> None:
        self.progress = Progress(total, self.progress_mode, self.progress_stream,
                                 self.progress_interval)
        try:
            if self.config.scheduler is not None or self.config.gpus is not None:
                from .distributed import execute_on_dask

                execute_on_dask(self, units)
            elif self.workers > 1:
                self._execute_pool(units)
            else:
                self._execute_serial(units)
            for stem, entry in self.manifest["files"].items():
                if entry["status"] == "failed":  # leave no empty folder of a failed input
                    with contextlib.suppress(OSError):
                        (self.out / stem).rmdir()
        except BaseException:
            # Every writer has stopped by now (aborted, joined; worker processes shut down).
            # An interrupt that fell between two steps of a unit (a writer made, not yet
            # guarded) may have left a temporary: remove them all, this run holds the lock
            # (a shard: those of its own units).
            self.remove_temporaries(units)
            raise
        finally:
            self.progress.close()
            self.progress = None
            self._save(force=True)

    def remove_temporaries(self, units: list[Unit]) -> None:
        """Remove what writers stopped in their tracks left: every temporary of the folder
        (the run holds its lock), or with a shard those of ``units``."""
        if self.shard is not None:
            for unit in units:
                for folder, name in _temporary_names(unit):
                    remove_stale_temporaries(folder, [name])
            return
        for folder in self._temporary_folders():
            remove_stale_temporaries(folder)

    def _count(self, n: int) -> None:
        """Progress only: the summary counts the images of complete stacks."""
        assert self.progress is not None
        self.progress.update(n)

    def _execute_serial(self, units: list[Unit]) -> None:
        # Each unit returns once its batches are queued; its writer finishes (last chunks,
        # archive assembly, fsync) while the next unit renders, and it is marked complete
        # as soon as its files are (measured gain: benchmarks/README.md).
        finishing: list[_Finishing] = []

        def settle(keep: int) -> None:
            """Mark finished units complete; wait for the oldest while more than keep
            are left."""
            while finishing and (len(finishing) > keep or finishing[0].finished):
                finishing[0].wait()  # aborted by the except below if interrupted
                done = finishing.pop(0)
                n_images = self._file_entry(done.unit.stem)["images_per_stack"]
                self.record(done.unit, UnitResult(done.unit, tuple(done.unit.outputs()),
                                                  n_images, done.field_report))

        def on_batch(n: int) -> None:
            self._count(n)
            settle(keep=len(finishing))  # never waits

        try:
            for unit in units:
                if self.after_failure(unit):
                    continue
                try:
                    result = _render_unit(unit, on_batch, defer=True)
                except StructureError as exc:
                    self.fail(unit, str(exc))
                    continue
                assert isinstance(result, _Finishing)
                finishing.append(result)
                settle(keep=1)  # at most one unit finishes behind the renderer
            settle(keep=0)
        except BaseException:
            for pending in finishing:
                pending.abort()
            raise

    def _execute_pool(self, units: list[Unit]) -> None:
        # one BLAS/OpenMP thread per worker: N workers already fill N cores
        with _thread_env(1):
            self._run_pool(units)

    def _run_pool(self, units: list[Unit]) -> None:
        ctx = multiprocessing.get_context("spawn")
        start_resource_tracker()
        progress_queue = ctx.Queue()
        stop_event = ctx.Event()
        pending = list(reversed(units))
        running: dict[Future[Any], Unit] = {}
        pool = ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=_worker_init,
                                   initargs=(progress_queue, stop_event, os.getpid()))

        def drain_progress() -> None:
            while True:
                try:
                    self._count(progress_queue.get_nowait())
                except Exception:  # noqa: BLE001 - queue.Empty
                    return

        try:
            while pending or running:
                while pending and len(running) < 2 * self.workers:
                    unit = pending.pop()
                    if not self.after_failure(unit):
                        running[pool.submit(_worker_run, unit)] = unit
                if not running:
                    continue
                done, _ = wait(list(running), timeout=0.2, return_when=FIRST_COMPLETED)
                drain_progress()
                for future in done:
                    unit = running.pop(future)
                    if future.cancelled():
                        continue
                    result = future.result()  # OSError etc. re-raised here
                    if result is None:  # cancelled
                        continue
                    self.record(unit, result)
                    if not result.ok:
                        for other_future, other in running.items():
                            if self.after_failure(other):
                                # not started yet; a running one is discarded when done
                                other_future.cancel()
            drain_progress()
        except BaseException:
            stop_event.set()  # running units abort and remove their temporaries
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        finally:
            pool.shutdown(wait=True)
            progress_queue.close()


def _remove_outputs(unit: Unit) -> None:
    for path in unit.outputs():
        if path.is_dir():  # a zarr group
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def _describe_input_error(path: Path, exc: BaseException) -> str:
    if isinstance(exc, StructureError):
        text = str(exc)
        return text if str(path) in text else f"{path}: {text}"
    return f"{path}: cannot read ({exc.strerror or exc})" if isinstance(exc, OSError) else str(exc)


def run(config: RunConfig, *, report: Callable[[str], None] | None = None,
        progress: str = "auto", progress_stream: TextIO | None = None,
        progress_interval: float = 10.0) -> RunSummary:
    """Render every (file, stack) unit of ``config`` into ``config.output_folder``.

    Stacks already complete (manifest and files agree, input unchanged) are skipped unless
    ``config.overwrite``; an input changed since its stacks were written is reported and
    rendered again. With ``config.overwrite`` over a manifest of other settings, the stack
    files of that manifest's inputs and of this run's are removed first, so the folder
    never mixes settings. A malformed input file is reported through ``report`` and
    skipped; it is listed in :attr:`RunSummary.failed`.

    Parameters
    ----------
    config : RunConfig
    report : callable, optional
        Receives messages for the user (default: print to stderr).
    progress : {"auto", "bar", "lines", "none"}
        See :class:`Progress`.
    progress_stream : file, optional
        Where progress goes (default stderr).
    progress_interval : float
        Seconds between plain progress lines.

    Returns
    -------
    RunSummary

    Raises
    ------
    RequestTooLargeError
        One batch of the request cannot fit this machine's memory; raised before anything
        is written (or, where the estimate fell short, when memory ran out).
    SettingsMismatchError
        The output folder's manifest records other settings (and not ``overwrite``).
    OSError
        Writing an output failed (disk full, permission denied); the run stops and no
        partial file is left under a final name. :func:`write_error_message` words it.
    BackendError
        The requested device is not available.
    KeyboardInterrupt
        Interrupted (Ctrl-C, or SIGTERM as :class:`RunInterrupted` where SIGTERM had its
        default action); completed stacks are kept and recorded, so the same command
        resumes.
    """
    if report is None:
        def report(message: str) -> None:
            print(message, file=sys.stderr, flush=True)
    from .plan import _open_plan  # the unit API, built on this module's _Run

    if config.scheduler is not None or config.gpus is not None:
        from .distributed import check_cluster_request

        check_cluster_request(config.scheduler, config.gpus)  # before anything is written
    start = time.perf_counter()
    state = _Run(config, report, progress, progress_stream, progress_interval)
    with _sigterm_as_interrupt(), _open_plan(state) as plan:
        try:
            state.execute(plan.units, plan.total_images)
        except BrokenProcessPool as exc:
            raise RuntimeError(f"a worker process died unexpectedly ({exc}); out of "
                               "memory? try fewer --workers or a smaller --batch-size"
                               ) from None
        except MemoryError as exc:
            raise RequestTooLargeError(
                f"out of memory while rendering ({exc or 'MemoryError'}); try a smaller "
                "--batch-size, fewer --workers or a smaller --edgesize") from None
        finally:
            state.summary.elapsed = time.perf_counter() - start
    return state.summary
