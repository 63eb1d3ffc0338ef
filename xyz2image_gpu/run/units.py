"""One unit of work: one stack of one input file, every frame in ``n_rotation`` orientations.
A unit renders batch by batch and streams the batches through a bounded queue to a
background writer thread, so its memory is set by the batch size, not by ``n_rotation`` or
the number of files. Worker processes (spawned: CUDA and threads do not survive fork) run
units through :func:`_worker_run`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..output.background import BackgroundWriter
from ..output.npz import NpzStreamWriter
from ..output.tiff import TiffStackWriter
from ..output.verify import npz_problem, tiff_problem, zarr_group_problem
from ..output.zarr_store import ZarrStackWriter, group_staging_path
from ..pipeline.engine import Renderer
from ..pipeline.framing import FieldReport
from ..pipeline.settings import IMAGE_TYPES, OUTPUT_TYPES, RenderSettings
from ..structures.convert import as_structure
from ..structures.model import Structure, StructureError
from .config import (
    RunConfig,
    image_types,
    npz_path,
    render_types,
    tif_path,
    zarr_group_path,
)
from .signals import STOP_SIGNALS

__all__ = [
    "Unit",
    "UnitCancelled",
    "UnitResult",
    "render_unit",
]

#: Per-process caches: the renderer and the structure of the last unit.
_RENDERERS: dict[Any, Renderer] = {}
_STRUCTURE: dict[str, Any] = {}

# -- worker processes (spawned: CUDA and threads do not survive fork) ----------------------

_WORKER: dict[str, Any] = {}


class UnitCancelled(Exception):
    """A unit stopped because the run was interrupted."""


# ----------------------------------------------------------------------------- units


@dataclass(frozen=True)
class Unit:
    """One stack of one file; picklable, sent to worker processes.

    ``config`` is the run's :class:`RunConfig`, shared by every unit of the run, without its
    ``inputs`` (each unit names its own ``path``; the list would be pickled with every unit
    sent to a worker). ``device`` is the backend resolved from ``config.device`` ("cpu" or
    "gpu") and ``compression_threads`` the threads one unit compresses on.
    """

    path: str
    stem: str
    stack: int
    config: RunConfig
    device: str
    compression_threads: int

    def outputs(self) -> list[Path]:
        """The unit's files (and, with the zarr format, its group: a folder)."""
        out = Path(self.config.output_folder)
        arrays = (zarr_group_path(out, self.stem, self.stack) if self.config.format == "zarr"
                  else npz_path(out, self.stem, self.stack))
        return [arrays] + [
            tif_path(out, self.stem, self.stack, n)
            for n in image_types(self.config.output_types)]


Layout = dict[str, tuple[tuple[int, ...], Any]]


def stored_layout(config: RunConfig, layout: Layout) -> Layout:
    """The arrays a unit stores (its .npz or zarr group) out of the renderer's
    :meth:`~..pipeline.engine.Renderer.output_layout`: the requested outputs and the
    per-image records, not the outputs rendered only for a TIFF stack."""
    return {k: v for k, v in layout.items()
            if k not in OUTPUT_TYPES or k in config.output_types}


def unit_problem(unit: Unit, layout: Layout) -> tuple[Path, str] | None:
    """The first of ``unit``'s files that is not whole (cut short, damaged, of another
    shape), and what is wrong with it; None when every file is whole. ``layout``: the
    renderer's :meth:`~..pipeline.engine.Renderer.output_layout` of the unit's stack.
    Reads the files' metadata only (:mod:`..output.verify`)."""
    cfg = unit.config
    arrays, *tifs = unit.outputs()
    stored = stored_layout(cfg, layout)
    problem = (zarr_group_problem(arrays, stored) if cfg.format == "zarr"
               else npz_problem(arrays, stored))
    if problem:
        return arrays, problem
    for path, name in zip(tifs, image_types(cfg.output_types)):
        shape, dtype = layout[IMAGE_TYPES[name]]
        problem = tiff_problem(path, shape, dtype)
        if problem:
            return path, problem
    return None


def _temporary_names(unit: Unit) -> list[tuple[Path, str]]:
    """Where the unit's writers put their temporaries: (folder, final name) pairs, for
    :func:`..output.atomic.remove_stale_temporaries` (a zarr group is written outside the
    store, under :func:`..output.zarr_store.group_staging_path`)."""
    arrays, *tifs = unit.outputs()
    if unit.config.format == "zarr":
        staging = group_staging_path(unit.config.output_folder, unit.stem, unit.stack)
        return [(staging.parent, staging.name), *((p.parent, p.name) for p in tifs)]
    return [(p.parent, p.name) for p in (arrays, *tifs)]


def _renderer(unit: Unit) -> Renderer:
    cfg = unit.config
    key = (cfg.settings, render_types(cfg.output_types), unit.device, unit.compression_threads)
    if key not in _RENDERERS:
        for old in _RENDERERS.values():
            old.close()
        _RENDERERS.clear()
        # one thread per core the unit may use: all of them in the serial path, one in a
        # worker process (the compiled CPU kernel splits a batch over these threads)
        _RENDERERS[key] = Renderer(cfg.settings, render_types(cfg.output_types), unit.device,
                                   threads=unit.compression_threads)
    return _RENDERERS[key]


def _structure(unit: Unit) -> Structure:
    cfg = unit.config
    key = (unit.path, cfg.frameshift, cfg.maxframes, cfg.exclude_elements)
    if _STRUCTURE.get("key") != key:
        _STRUCTURE.clear()
        try:
            _STRUCTURE["value"] = as_structure(
                unit.path, frameshift=cfg.frameshift, maxframes=cfg.maxframes,
                exclude_elements=cfg.exclude_elements)
        except OSError as exc:  # moved or deleted since the run began: this input fails
            raise StructureError(f"cannot read input: {exc.strerror or exc}",
                                 path=unit.path) from None
        _STRUCTURE["key"] = key
    return _STRUCTURE["value"]


def _tif_pixel_size(settings: RenderSettings, structure: Structure,
                    voxel_size: np.ndarray) -> float | None:
    """One pixel size for a whole TIFF stack, or None when it varies from image to image."""
    if settings.framing == "fixed":
        return float(settings.pixel_size) if settings.pixel_size else None
    if settings.framing == "structure" and len(structure.frames) == 1:
        return float(voxel_size[0])
    return None


class _Finishing:
    """A unit whose images are all rendered and queued, its writer thread still at work."""

    def __init__(self, unit: Unit, background: BackgroundWriter, writers: list[Any],
                 field_report: FieldReport) -> None:
        self.unit = unit
        self.background = background
        self.writers = writers
        self.field_report = field_report

    @property
    def finished(self) -> bool:
        return self.background.finished

    def wait(self) -> None:
        """Wait for the files to be complete; on a writing error remove them and raise."""
        try:
            self.background.close()
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        self.background.abort()
        for writer in self.writers:
            writer.abort()


def _check_field(unit: Unit, report: FieldReport) -> None:
    """Raise StructureError when the images so far cannot be kept: frames whose images come
    out blank, images with every atom outside the field of view, or (``config.strict``) any
    atom outside it."""
    if report.frames_blank:
        raise StructureError(report.blank_why(), path=unit.path, frame=report.frames_blank[0])
    if report.images_empty:
        raise StructureError(report.describe(), path=unit.path)
    if unit.config.strict and report.atoms_outside:
        raise StructureError(f"{report.describe()} (--strict)", path=unit.path)


def _store_compression(backend: Any, config: RunConfig) -> tuple[bool, str]:
    """Whether the zarr store's chunks are compressed on the GPU, and why (not): see
    :func:`..backend.zarr_gpu_codec`; TIFF stacks need host images, and then the chunks are
    compressed on the host too."""
    from ..backend import zarr_gpu_codec

    on_gpu, why = zarr_gpu_codec(backend, config.codec)
    if on_gpu and image_types(config.output_types):
        return False, ("chunks compressed on the CPU: the *_image TIFF stacks need the images "
                       "on the host")
    return on_gpu, why


def _array_writer(unit: Unit, renderer: Renderer,
                  layout: dict[str, Any]) -> tuple[NpzStreamWriter | ZarrStackWriter, bool]:
    """The writer of a unit's arrays (its .npz, or its group of the run's zarr store), and
    whether batches come to the host (False: compressed on the GPU, see
    :func:`..backend.zarr_gpu_codec`)."""
    cfg = unit.config
    out = Path(cfg.output_folder)
    if cfg.format != "zarr":
        return NpzStreamWriter(npz_path(out, unit.stem, unit.stack), layout,
                               cfg.compress_level, unit.compression_threads), True
    backend = renderer.backend
    on_gpu = _store_compression(backend, cfg)[0]
    writer = ZarrStackWriter(
        out, unit.stem, unit.stack, layout, codec=cfg.codec, level=cfg.compress_level,
        chunk_images=cfg.chunk_images, shard_images=cfg.shard_images,
        threads=unit.compression_threads,
        attributes={"file": unit.stem, "input": Path(unit.path).name, "stack": unit.stack},
        device_xp=backend.xp if on_gpu else None)
    return writer, not on_gpu


def _render_unit(unit: Unit, on_batch: Callable[[int], None],
                 stop: Callable[[], bool] = lambda: False, *,
                 defer: bool = False, field_report: FieldReport | None = None,
                 ) -> int | _Finishing:
    """Render one stack and write its files; return the number of images.

    ``defer``: return as soon as every batch is queued, with a :class:`_Finishing` whose
    ``wait()`` completes the files, so that the next unit renders while this one's last
    batches are compressed and its archive assembled and synced.

    ``field_report``: filled with the atoms outside the field of view (see
    :func:`_check_field` for when they fail the unit before any file is complete).

    Raises StructureError (bad input, or a field of view that cannot show it), OSError
    (writing failed), UnitCancelled.
    """
    if field_report is None:
        field_report = FieldReport()
    cfg = unit.config
    structure = _structure(unit)
    renderer = _renderer(unit)
    n_images = len(structure.frames) * cfg.n_rotation
    layout = renderer.output_layout(structure, n_images)
    out = Path(cfg.output_folder)
    if cfg.format != "zarr" or image_types(cfg.output_types):  # .npz or .tif files there
        (out / unit.stem).mkdir(parents=True, exist_ok=True)
    npz, to_host = _array_writer(unit, renderer, stored_layout(cfg, layout))
    tifs: dict[str, TiffStackWriter] = {}
    background = BackgroundWriter(maxsize=2)
    try:
        # closed at once however the loop ends, so a GPU render's copies in flight are
        # waited for before the writers are aborted (its batches are views into page-locked
        # buffers, reused once the writer thread has dropped them: never released here)
        batches = renderer.iter_batches(structure, cfg.n_rotation, seed=cfg.seed,
                                        stack=unit.stack, batch_size=cfg.batch_size,
                                        field_report=field_report, to_host=to_host)
        with contextlib.closing(batches):
            fixed_scale = cfg.settings.stored_normalization == "fixed"
            for batch in batches:
                _check_field(unit, field_report)
                if fixed_scale:  # integer images on a fixed scale: count what clips
                    for key in ("gaussian_2d", "gaussian_3d"):
                        if key in batch:
                            field_report.add_top(batch[key])
                if stop():
                    raise UnitCancelled(f"{unit.stem} stack {unit.stack}")
                if not tifs and image_types(cfg.output_types):
                    px = _tif_pixel_size(cfg.settings, structure, batch["voxel_size"])
                    for name in image_types(cfg.output_types):
                        shape, dtype = layout[IMAGE_TYPES[name]]
                        tifs[name] = TiffStackWriter(
                            tif_path(out, unit.stem, unit.stack, name), shape, dtype, px)
                background.put(npz, batch)
                for name, writer in tifs.items():
                    background.put(writer, batch[IMAGE_TYPES[name]])
                on_batch(len(batch["rotations"]))
        background.put(npz.close)
        for writer in tifs.values():
            background.put(writer.close)
        if defer:
            background.finish()
            return _Finishing(unit, background, [npz, *tifs.values()], field_report)
        background.close()
    except BaseException:
        background.abort()
        npz.abort()
        for writer in tifs.values():
            writer.abort()
        raise
    return n_images
_THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
               "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")


@contextlib.contextmanager
def _thread_env(threads: int) -> Iterator[None]:
    """BLAS/OpenMP threads of the processes started inside: spawned children read these
    when they import NumPy, so they stay set while the children start."""
    saved = {k: os.environ.get(k) for k in _THREAD_ENV}
    os.environ.update(dict.fromkeys(_THREAD_ENV, str(threads)))
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _watch_parent(parent: int) -> None:
    # A worker orphaned by `kill -9` of the main process exits instead of rendering on.
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            os._exit(1)


def _worker_sigterm(signum: int, frame: Any) -> None:
    # SIGTERM or SIGHUP to the whole process group (a batch scheduler, `kill -- -PGID`), or from the
    # pool terminating its workers: a unit in progress stops at its next batch and removes
    # its temporaries, then the worker exits (_worker_run); an idle worker exits at once.
    _WORKER["terminated"] = signum
    if not _WORKER.get("busy"):
        os._exit(128 + signum)


def _worker_init(progress_queue: Any, stop_event: Any, parent: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process handles Ctrl-C
    for sig in STOP_SIGNALS:
        signal.signal(sig, _worker_sigterm)
    _WORKER["queue"] = progress_queue
    _WORKER["stop"] = stop_event
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()


def _worker_run(unit: Unit) -> UnitResult | None:
    """Run a unit in a worker: its :class:`UnitResult`, or None when it was cancelled."""
    queue = _WORKER["queue"]
    stop_event = _WORKER["stop"]

    def stop() -> bool:
        return stop_event.is_set() or "terminated" in _WORKER

    _WORKER["busy"] = True
    try:
        return render_unit(unit, queue.put, stop)
    except UnitCancelled:
        return None
    finally:
        _WORKER["busy"] = False
        if "terminated" in _WORKER:  # the unit's files are complete or removed by now
            os._exit(128 + _WORKER["terminated"])


# ----------------------------------------------------------------------------- unit API


@dataclass(frozen=True)
class UnitResult:
    """What :func:`render_unit` did: the unit's files (complete), or why its input failed.

    Attributes
    ----------
    unit : Unit
    files : tuple of Path
        The files its writers completed (none when ``error`` is set).
    n_images : int
    field_report : FieldReport
        Atoms outside the field of view (recorded in the manifest).
    error : str or None
        Why the input cannot be rendered (a malformed file, a field of view that cannot
        show it); no file of the unit is left.
    """

    unit: Unit
    files: tuple[Path, ...]
    n_images: int
    field_report: FieldReport
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def render_unit(unit: Unit, on_batch: Callable[[int], None] | None = None,
                stop: Callable[[], bool] | None = None, *,
                rendering_lock: contextlib.AbstractContextManager[Any] | None = None,
                ) -> UnitResult:
    """Render one unit to its files, in this process: complete, or absent.

    Every file is written under a temporary name unique to this host, process and attempt
    (:func:`~..output.atomic.temporary_path`) and renamed when complete, so a unit may be
    retried, or run on several hosts that share the output folder, without two attempts
    ever writing one file; the last rename wins and every attempt writes the same bytes.

    Parameters
    ----------
    unit : Unit
        From :attr:`Plan.units <.plan.Plan>`.
    on_batch : callable, optional
        Called with the number of images of each batch rendered (progress).
    stop : callable, optional
        Polled between batches: True cancels the unit (:class:`UnitCancelled`).
    rendering_lock : lock, optional
        Held while the unit renders, released while its files are finished (last chunks
        compressed, archive assembled, synced), so that another thread of the process can
        render the next unit meanwhile, as the command-line runner does.

    Returns
    -------
    UnitResult
        With ``error`` set when the input cannot be rendered (nothing of it written).

    Raises
    ------
    UnitCancelled
        ``stop()`` said so; no file of the unit is left.
    OSError
        Writing failed (disk full, permission); no file of the unit is left.
    """
    field_report = FieldReport()
    images = [0]

    def counted(n: int) -> None:
        images[0] += n
        if on_batch is not None:
            on_batch(n)

    with rendering_lock or contextlib.nullcontext():
        try:
            finishing = _render_unit(unit, counted, stop or _never, defer=True,
                                     field_report=field_report)
        except StructureError as exc:
            return UnitResult(unit, (), 0, field_report, str(exc))
    assert isinstance(finishing, _Finishing)
    finishing.wait()  # complete, or removed and raised
    return UnitResult(unit, tuple(unit.outputs()), images[0], field_report)


def _never() -> bool:
    return False
