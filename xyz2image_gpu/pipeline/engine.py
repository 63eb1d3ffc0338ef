"""The rendering engine: structures in, batches of images and labels out, in memory.

:class:`Renderer` is the library entry point that the CLI, the benchmarks and data consumers
share. It renders any range of a stack's images in batches; each batch is a dict of host
NumPy arrays (or device arrays, with ``to_host=False``) with the same names, shapes and
dtypes that the .npz files hold. :func:`render` is the one-call convenience for notebooks.

Image ``k`` of a stack is frame ``k // n_rotation`` seen in rotation ``k % n_rotation``.
Every image is a pure function of the settings, the seed, the structure name, the frame,
the stack and the rotation index, so on the CPU the bytes do not depend on the batch size,
the range split or the number of workers; on the GPU a run repeats its bytes for the same
settings and batch size on the same GPU model and CUDA libraries (README, "Reproducibility").

The host-side preparation (per-frame data, the frame table, each batch's host inputs) is in
:mod:`.frames`.
"""

from __future__ import annotations

import operator
import warnings
from collections.abc import Iterator, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np
from threadpoolctl import ThreadpoolController

from ..backend import Backend, available_cores, get_backend
from ..physics.column import ColumnCorrection
from ..structures.convert import as_structure
from ..structures.model import Structure, StructureError
from . import gpu_streams, stages
from .batch import Batch
from .frames import (
    FrameData,
    FrameTable,
    batch_inputs,
    channel_numbers,
    frame_data,
    frame_table,
)
from .framing import FieldReport, heatmap_problem, narrow_field_problem
from .settings import _GAUSSIAN, LABEL_MAPS, SCANNED_LABELS, RenderSettings, requested_arrays
from .strategies import Threads, choose_kernel

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = [
    "Renderer",
    "render",
]


#: Outputs stored with each image's atom count, ``n_atoms``.
_COUNTED = frozenset({"coordinates_3d", "numbers"})

#: Key of a rendered batch's per-image count of atoms outside the field of view (B,) int32;
#: taken out of the batch by :meth:`Renderer.iter_batches` (never in a stored output).
_OUTSIDE = "_outside"


class Renderer:
    """Renders a structure's images in batches on one backend.

    Parameters
    ----------
    settings : RenderSettings
    output_types : sequence of str
        Names from :data:`OUTPUT_TYPES` (``*_image`` names map to the array they show).
    device : {"auto", "cpu", "gpu"} or Backend
    work_memory : int, optional
        Bytes of scratch memory one rendering step may use; sets the internal chunking and
        the default batch size. Default: 128 MiB on the CPU, a quarter of free device memory
        on the GPU.
    threads : int, optional
        Threads a batch is split over on the CPU, into steps that each run every stage
        (default: all cores). Use 1 in worker processes that already share the cores.
    cpu_kernel : {"auto", "compiled", "numpy"}
        On the CPU, Gaussian images from the compiled kernel (``auto``: when it is built and
        ``XYZ2IMAGE_GPU_NO_EXTENSION`` is not set) or from the NumPy/BLAS path. Both agree
        within one grey level; each is byte-reproducible on its own.

    Use it as a context manager (``with Renderer(...) as renderer:``) or call :meth:`close`
    to stop its threads.

    Raises
    ------
    ValueError
        Unknown output types or ``cpu_kernel``; or, with ``framing="fixed"`` and Gaussian
        outputs, a field of view narrower than the narrowest Gaussian
        (:func:`~.framing.narrow_field_problem`).
    """

    #: Structures whose prepared frames :meth:`iter_batches` keeps (:meth:`_prepared`).
    PREPARED = 4

    def __init__(
        self,
        settings: RenderSettings | None = None,
        output_types: Sequence[str] = ("gaussian_2d",),
        device: str | Backend = "auto",
        *,
        work_memory: int | None = None,
        threads: int | None = None,
        cpu_kernel: str = "auto",
    ) -> None:
        self.settings = settings or RenderSettings()
        self.output_types = requested_arrays(output_types)
        self.backend = get_backend(device)
        self.threads = max(1, int(threads or available_cores()))
        self._threads = Threads(self.threads)
        if work_memory is None:
            work_memory = 128 << 20
            free = self.backend.free_memory()
            if free is not None:
                work_memory = max(work_memory, free // 4)
        self.work_memory = int(work_memory)
        #: How images are computed (:mod:`.strategies`), chosen once here.
        self.kernel = choose_kernel(self.backend, self.settings, cpu_kernel=cpu_kernel,
                                    work_memory=self.work_memory, threads=self._threads)
        #: Whether Gaussian outputs use the compiled CPU kernel (NumPy backend, not legacy).
        self.uses_compiled_kernel = self.kernel.compiled_images
        #: Whether binary labels use the compiled kernel (CPU, legacy mode too: same bytes).
        self.uses_compiled_labels = self.kernel.compiled_labels
        self._column = ColumnCorrection.from_settings(self.settings)
        self._renders_images = bool(set(_GAUSSIAN) & set(self.output_types))
        #: Whether the batch carries the scan offsets for its labels: labels seen through a
        #: distorted scan without the augmented gaussian_2d, whose stage hands them over
        #: otherwise.
        self._offsets_extra = bool(self.settings.scan_distorted
                                   and set(SCANNED_LABELS) & set(self.output_types)
                                   and "gaussian_2d" not in self.output_types)
        self._renders_heatmaps = bool({"heatmap_2d", "element_heatmap_2d"}
                                      & set(self.output_types))
        #: Beam units stored as integers: each image's grey levels per unit fraction of the
        #: beam, saved beside it as ``intensity_scale`` so that the file tells its units.
        self._beam_scale = (float(self.settings.intensity_scale)
                            if self.settings.normalization == "beam"
                            and self.settings.intensity_scale is not None
                            and self._renders_images else None)
        if self.settings.framing == "fixed" and self._renders_heatmaps:
            problem = heatmap_problem(self.settings.heatmap_sigma,
                                      float(self.settings.pixel_size or 0.0), fixed=True)
            if problem:
                raise ValueError(problem)
        if self.settings.framing == "fixed" and self._renders_images:
            problem = narrow_field_problem(self.settings.edgesize, self.settings.pixel_size,
                                           min(sigma for _, sigma in self.settings.components))
            if problem:
                raise ValueError(problem)
        self._blas: ThreadpoolController | None = None
        self._ring: gpu_streams.DeviceRing | None = None
        #: ``(structure, (seed, stack), frame data, frame table)`` of the last calls.
        self._prepared_cache: list[tuple[Structure, tuple[int, int], list[FrameData],
                                         FrameTable]] = []

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Stop the renderer's threads and, on the GPU, wait for its streams and let its
        streams and page-locked buffers go (batches still held stay valid). Safe to call
        twice; the renderer stays usable."""
        self._threads.close()
        if self._ring is not None:
            self._ring.close()
            self._ring = None

    def _device_ring(self) -> gpu_streams.DeviceRing:
        """The renderer's streams, events and pinned buffers, made on first use and kept."""
        if self._ring is None:
            self._ring = gpu_streams.DeviceRing(self.backend)
        return self._ring

    # ------------------------------------------------------------------ layout
    def scratch_bytes_per_image(self, structure: Structure) -> int:
        """Rough scratch bytes one image of ``structure`` needs while it renders."""
        return self.kernel.per_image_bytes(structure.max_atoms, self.output_types,
                                           self._channel_count(structure))

    def channel_numbers(self, structure: Any) -> np.ndarray:
        """Atomic numbers (C,) of ``element_heatmap_2d``'s channels for ``structure``: the
        settings' ``channel_elements``, or every element of the structure, ascending."""
        return channel_numbers(self.settings, as_structure(structure))

    def _channel_count(self, structure: Structure) -> int:
        if "element_heatmap_2d" not in self.output_types:
            return 0
        return len(channel_numbers(self.settings, structure))

    def default_batch_size(self, structure: Structure) -> int:
        """Images per batch: as many as fit the scratch memory, within [1, kernel's cap]."""
        per = self.scratch_bytes_per_image(structure)
        return int(max(1, min(self.kernel.max_batch, self.work_memory // per)))

    def output_layout(
        self, structure: Structure, n_images: int
    ) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        """Shape and dtype of every key of a stack of ``n_images`` images."""
        e = self.settings.edgesize
        layout: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
        for name in self.output_types:
            if name == "coordinates_3d":
                layout[name] = ((n_images, structure.max_atoms, 3), np.dtype(np.int16))
            elif name in ("delta_3d", "binary_3d"):
                layout[name] = ((n_images, e, e, e), np.dtype(bool))
            elif name in ("delta_2d", "binary_2d"):
                layout[name] = ((n_images, e, e), np.dtype(bool))
                if self.settings.scan_distorted:
                    layout[name + "_clean"] = ((n_images, e, e), np.dtype(bool))
            elif name == "gaussian_3d":
                layout[name] = ((n_images, e, e, e), self.settings.image_dtype)
            elif name == "gaussian_2d":
                layout[name] = ((n_images, e, e), self.settings.image_dtype)
            elif name == "numbers":
                layout[name] = ((n_images, structure.max_atoms), np.dtype(np.int16))
            elif name in LABEL_MAPS:
                layout.update(self._map_layout(name, structure, n_images))
        if "gaussian_2d" in self.output_types and self.settings.augmented:
            layout["gaussian_2d_clean"] = ((n_images, e, e), self.settings.image_dtype)
            if self.settings.dose is not None:
                layout["electrons_per_pixel"] = ((n_images,), np.dtype(np.float64))
            if self.settings.scan_distorted:
                layout["scan_offsets"] = ((n_images, e, 2), np.dtype(np.float32))
        if self._offsets_extra:
            layout["scan_offsets"] = ((n_images, e, 2), np.dtype(np.float32))
        if self._beam_scale is not None:
            layout["intensity_scale"] = ((n_images,), np.dtype(np.float64))
        layout["rotations"] = ((n_images, 3, 3), np.dtype(np.float64))
        layout["voxel_size"] = ((n_images,), np.dtype(np.float64))
        layout["frame_index"] = ((n_images,), np.dtype(np.int32))
        if _COUNTED & set(self.output_types):
            layout["n_atoms"] = ((n_images,), np.dtype(np.int32))
        return layout

    def _map_layout(self, name: str, structure: Structure, n_images: int,
                    ) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        """A label map's keys: the map, ``<name>_clean`` with a distorted scan, and the
        channels' ``elements`` beside element_heatmap_2d."""
        e = self.settings.edgesize
        if name == "element_heatmap_2d":
            c = self._channel_count(structure)
            shape: tuple[int, ...] = (n_images, c, e, e)
        else:
            shape = (n_images, e, e)
        dtype = np.dtype(np.uint16 if name == "column_map_2d" else self.settings.heatmap_dtype)
        out = {name: (shape, dtype)}
        if self.settings.scan_distorted:
            out[name + "_clean"] = (shape, dtype)
        if name == "element_heatmap_2d":
            out["elements"] = ((n_images, c), np.dtype(np.int16))
        return out

    # ------------------------------------------------------------------ host prep
    def _frame_data(self, structure: Structure) -> list[FrameData]:
        """Per-frame host data (:func:`.frames.frame_data`, which says what it refuses)."""
        return frame_data(self.settings, structure, renders_images=self._renders_images,
                          renders_heatmaps=self._renders_heatmaps)

    def _prepared(self, structure: Structure, seed: int, stack: int,
                  ) -> tuple[list[FrameData], FrameTable]:
        """The structure's frame data and its frame table for ``(seed, stack)``, kept for
        the last :attr:`PREPARED` structures: a consumer that renders a stack in many small
        ranges (the PyTorch dataset calls :meth:`iter_batches` once per batch) prepares
        them once, not per call. Keyed by the structure object itself (a Structure is not
        changed in place) with the seed and stack."""
        for held, key, frames, table in self._prepared_cache:
            if held is structure and key == (seed, stack):
                return frames, table
        frames = self._frame_data(structure)
        table = frame_table(self.settings, structure, frames, seed, stack,
                            output_types=self.output_types,
                            static_shapes=self.kernel.static_shapes)
        self._prepared_cache = [*self._prepared_cache[1 - self.PREPARED:],
                                (structure, (seed, stack), frames, table)]
        return frames, table

    def chunk_size(self, structure: Structure) -> int:
        """Images rendered per step inside a batch (see the kernel's ``step_images``)."""
        return self.kernel.step_images(self.scratch_bytes_per_image(structure))

    # ------------------------------------------------------------------ device work
    def _render_chunked(
        self, host: dict[str, np.ndarray], table: FrameTable, chunk: int, to_host: bool = True
    ) -> dict[str, Any]:
        """Render a batch in steps of ``chunk`` images and join the results."""
        if self.backend.is_gpu:
            return self._render_device(host, table, to_host=to_host)
        n = len(host["rotations"])
        # On the CPU, BLAS runs on one thread and the steps of a batch run on the renderer's
        # threads instead: OpenBLAS's own threads spin-wait on each other whenever another
        # process holds a core (measured at edgesize 128, 147 atoms, on a loaded 2-core
        # machine: 62 images/s with its default threads, 6,200 with one).
        if self._blas is None:  # scanning the loaded libraries costs ~1 ms: do it once
            self._blas = ThreadpoolController()
        pool = self._threads.executor()
        if pool is not None:
            chunk = self.kernel.thread_step(n, chunk)
        out = self.kernel.output_buffers(n, self.output_types) if n > chunk else {}
        with self._blas.limit(limits=1, user_api="blas"):
            if n <= chunk:
                return self._render_device(host, table, to_host=to_host)
            steps = [({k: v[i : i + chunk] for k, v in host.items()},
                      {k: v[i : i + chunk] for k, v in out.items()}, table)
                     for i in range(0, n, chunk)]
            parts = list(pool.map(self._render_step, steps)) if pool else [
                self._render_device(step, step_table, out=step_out)
                for step, step_out, step_table in steps]
        return {k: out[k] if k in out else np.concatenate([p[k] for p in parts])
                for k in parts[0]}

    def _render_step(self, step: tuple[dict[str, np.ndarray], dict[str, np.ndarray],
                                       FrameTable]) -> dict[str, Any]:
        """One step on a pool thread: work inside it stays on this thread (no nested pool)."""
        self._threads.mark_pool_thread()
        host, out, table = step
        return self._render_device(host, table, out=out)

    def _render_device(self, host: dict[str, np.ndarray], table: FrameTable, *,
                       out: Mapping[str, np.ndarray] | None = None,
                       to_host: bool = True) -> dict[str, Any]:
        """Render one batch on the backend, stage by stage (:mod:`.stages`).

        Parameters
        ----------
        host : dict of numpy.ndarray
            :func:`.frames.batch_inputs`'s inputs for the batch.
        table : FrameTable
            The frames, on the backend, that the batch's per-atom inputs are gathered from.
        out : mapping of str to numpy.ndarray, optional
            Arrays of the kernel's ``output_buffers`` for this batch, filled in place and
            returned under their names.
        to_host : bool
            Return host arrays (else arrays on the backend's device).
        """
        kernel = self.kernel
        inputs = stages.gather(kernel, table, host)
        geo = stages.geometry(kernel, inputs, self.output_types,
                              binary_reach=table.binary_reach)
        result = stages.labels(kernel, inputs, table, geo, self.output_types)
        result.update(stages.maps(kernel, inputs, table, geo, self.output_types))
        if self._offsets_extra:  # else the augmented image's stage hands them over
            result["scan_offsets"] = stages.scan_offsets(kernel, inputs, table, geo)
        result[_OUTSIDE] = geo.outside
        if self._renders_images:
            comps = stages.components(kernel, inputs, geo, self._column)
            images = stages.images(kernel, geo, comps, result, self.output_types, out or {})
            if self.settings.augmented and "gaussian_2d" in images:
                images.update(stages.augmentations(
                    kernel, inputs, table, geo, comps, images.pop("gaussian_2d")))
            result.update(images)
        result["voxel_size"] = geo.voxel.astype(kernel.xp.float64)
        if self._beam_scale is not None:  # grey levels per unit beam fraction, in the file
            result["intensity_scale"] = kernel.xp.full(geo.voxel.shape, self._beam_scale,
                                                       dtype=kernel.xp.float64)
        move = self.backend.to_host if to_host else self.backend.asarray
        return {k: move(v) for k, v in result.items()}

    # ------------------------------------------------------------------ public
    def n_images(self, structure: Structure, n_rotation: int) -> int:
        """Images of one stack: every frame in ``n_rotation`` orientations."""
        return len(structure.frames) * _integer("n_rotation", n_rotation, 1)

    def iter_batches(
        self,
        structure: Any,
        n_rotation: int,
        *,
        seed: int = 0,
        stack: int = 0,
        batch_size: int | None = None,
        start: int = 0,
        stop: int | None = None,
        to_host: bool = True,
        field_report: FieldReport | None = None,
    ) -> Iterator[Batch]:
        """Yield consecutive batches of images ``[start, stop)`` of one stack.

        Each batch is a :class:`~.batch.Batch`, a dict of host arrays: the requested outputs
        plus ``rotations`` (b, 3, 3), ``voxel_size`` (b,) Å per pixel, ``frame_index`` (b,),
        with coordinates_3d or numbers ``n_atoms`` (b,), with element_heatmap_2d
        ``elements`` (b, C) (:meth:`channel_numbers`), and with a distorted scan the 2-D
        labels' ``<name>_clean`` and ``scan_offsets`` (b, E, 2) Å. With ``to_host=False``
        the arrays stay on the backend's device (CuPy arrays on the GPU, e.g. to hand to a
        training loop through DLPack without a host round trip).

        Who owns a batch's memory:

        * On the CPU, and with ``to_host=False``, every batch is freshly allocated and
          belongs to the caller; ``release()`` does nothing.
        * On the GPU with ``to_host=True``, the outputs are views into page-locked buffers
          that the renderer reuses (no copy out of them): a batch stays valid until the
          caller calls ``batch.release()`` (or leaves ``with batch:``), promising that
          nothing reads its arrays any more, or, without that, for as long as any of its
          arrays or any view of one is alive. So a consumer may keep batches, queue them to
          a writer thread that reads them after the next batch is rendered (as the run's
          writer does: it never calls ``release``, its last reference going is enough), or
          slice them; it must not call ``release`` while something may still read them. A
          consumer that holds many batches makes the renderer allocate more buffers, then
          (beyond :attr:`.gpu_streams.DeviceRing.MAX_SLOTS` sets or
          :attr:`~.gpu_streams.DeviceRing.PINNED_BUDGET` bytes) receive ordinary copies;
          ``batch.detach()`` gives a plain dict of copies that are the caller's for good.
          Releasing each batch as soon as it is used keeps the ring at three buffer sets.

        ``field_report``: a :class:`~.framing.FieldReport` to which every batch adds its
        atoms outside the field of view (counted on the device; with ``to_host=False`` the
        counts are read back once, when the iteration ends), and which lists, before the
        first batch, the frames whose Gaussian images come out blank because no atom can
        reach a pixel. Complete when the iteration ends. Without one, blank frames are
        told by a warning.

        Raises
        ------
        ValueError
            ``n_rotation`` or ``batch_size`` is not an integer >= 1, ``seed`` or ``stack``
            not one >= 0 (a float, a bool or a string included), or the image range is not
            within the stack.
        StructureError
            A frame cannot be shown (see :func:`.frames.frame_data`), naming the file and
            frame.
        """
        structure = as_structure(structure)
        n_rotation = _integer("n_rotation", n_rotation, 1)
        seed = _integer("seed", seed, 0)
        stack = _integer("stack", stack, 0)
        total = self.n_images(structure, n_rotation)
        start = _integer("start", start, 0)
        stop = total if stop is None else _integer("stop", stop, 0)
        if not 0 <= start <= stop <= total:
            raise ValueError(f"image range [{start}, {stop}) is outside [0, {total})")
        if batch_size is None:
            batch_size = self.default_batch_size(structure)
        batch_size = _integer("batch_size", batch_size, 1)
        frames, host_table = self._prepared(structure, seed, stack)
        blank = [(fd.index, fd.blank) for fd in frames if fd.blank]
        if blank and field_report is not None:
            field_report.add_blank([k for k, _ in blank], blank[0][1])
        elif blank:
            for k, why in blank:
                warnings.warn(str(StructureError(why, path=structure.source, frame=k)),
                              stacklevel=2)
        chunk = self.chunk_size(structure)
        with_counts = bool(_COUNTED & set(self.output_types))
        extra = ["rotations", "frame_index"] + (["n_atoms"] if with_counts else [])
        if "element_heatmap_2d" in self.output_types:
            extra.append("elements")
        bounds = [(b0, min(stop, b0 + batch_size)) for b0 in range(start, stop, batch_size)]

        def assemble(b0: int, b1: int) -> dict[str, np.ndarray]:
            return batch_inputs(self.settings, host_table, n_rotation, b0, b1)

        deferred: list[Any] = []  # device counts (to_host=False), read once at the end

        def report(b0: int, b1: int, outside: np.ndarray) -> None:
            if field_report is not None:
                which = np.arange(b0, b1) // n_rotation
                field_report.add(outside, host_table.n_atoms[which],
                                 host_table.frame_ids[which])

        def report_deferred() -> None:
            if deferred:
                xp = self.backend.xp
                report(start, start + sum(len(d) for d in deferred),
                       self.backend.to_host(xp.concatenate(deferred)))
                deferred.clear()

        try:
            if self.backend.is_gpu and to_host:
                ring = self._device_ring()
                table = ring.upload(lambda: host_table.on(self.backend))
                batches = gpu_streams.iter_overlapped(
                    ring, bounds, assemble,
                    lambda host: self._render_device(host, table, to_host=False), extra)
                try:
                    for (b0, b1), batch in zip(bounds, batches):
                        report(b0, b1, batch.pop(_OUTSIDE))
                        yield batch
                finally:
                    batches.close()  # its streams synchronised before anything is let go
            else:
                table = host_table.on(self.backend)
                for b0, b1 in bounds:
                    host = assemble(b0, b1)
                    batch = Batch(self._render_chunked(host, table, chunk, to_host))
                    outside = batch.pop(_OUTSIDE)
                    if to_host:
                        report(b0, b1, outside)
                    elif field_report is not None:
                        deferred.append(outside)
                    for key in extra:
                        batch[key] = host[key] if to_host else self.backend.asarray(host[key])
                    yield batch
        except GeneratorExit:  # the caller stopped early: report what was rendered
            if field_report is not None:
                report_deferred()
            raise
        if field_report is not None:
            report_deferred()

    def render(self, structure: Any, n_rotation: int = 1, **kwargs: Any) -> dict[str, np.ndarray]:
        """All images of one stack (or ``start``/``stop`` range) as one dict of host arrays
        (of device arrays with ``to_host=False``).

        Each batch is copied into the result as it arrives and released at once, so the
        GPU's page-locked buffers are reused, not accumulated.
        """
        structure = as_structure(structure)
        out: dict[str, Any] = {}
        parts: list[dict[str, Any]] = []
        filled = total = 0
        for batch in self.iter_batches(structure, n_rotation, **kwargs):
            with batch:
                if not all(isinstance(v, np.ndarray) for v in batch.values()):
                    parts.append(dict(batch))  # device arrays: joined on the device below
                    continue
                if not out:  # the first batch: the range is valid, its length known
                    stop = kwargs.get("stop")
                    total = (self.n_images(structure, n_rotation)
                             if stop is None else stop) - kwargs.get("start", 0)
                    out = {k: np.empty((total,) + v.shape[1:], dtype=v.dtype)
                           for k, v in batch.items()}
                n = len(batch["rotations"])
                for k, v in batch.items():
                    out[k][filled : filled + n] = v
                filled += n
        if parts:
            xp = self.backend.xp
            return {k: xp.concatenate([p[k] for p in parts]) for k in parts[0]}
        if not out:  # an empty range: every key, with no images
            return {k: np.empty(shape, dtype)
                    for k, (shape, dtype) in self.output_layout(structure, 0).items()}
        return out


def _integer(name: str, value: Any, minimum: int) -> int:
    """``value`` as an int >= ``minimum``; a ValueError for floats, bools, strings and less.

    ``int()`` would truncate 2.5 to 2 and take True for 1 without a word.
    """
    number = None
    if not isinstance(value, (bool, np.bool_)):
        try:
            number = operator.index(value)
        except TypeError:
            pass
    if number is None or number < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return number


def render(
    structure: Any,
    n_rotation: int = 1,
    output_types: Sequence[str] = ("gaussian_2d",),
    *,
    numbers: Any = None,
    symbols: Any = None,
    seed: int = 0,
    stack: int = 0,
    device: str | Backend = "auto",
    batch_size: int | None = None,
    start: int = 0,
    stop: int | None = None,
    **settings: Any,
) -> dict[str, np.ndarray]:
    """Render every frame of ``structure`` in ``n_rotation`` orientations.

    Parameters
    ----------
    structure : path, Structure, ase.Atoms, list of Atoms, or array of positions
        What to render (see :func:`xyz2image_gpu.structures.as_structure`): an ``(N, 3)``
        or ``(F, N, 3)`` array of positions in Å needs ``numbers`` or ``symbols``.
    numbers, symbols : array-like, optional
        The atoms' atomic numbers or element symbols, for an array of positions (as
        :func:`~xyz2image_gpu.structures.as_structure` takes them).
    n_rotation : int
        Orientations per frame; rotation 0 is the original script's fixed view unless
        ``all_random``.
    output_types : sequence of str
        Any of :data:`OUTPUT_TYPES`.
    seed, stack : int
        Select the random rotations (deterministic).
    device : {"auto", "cpu", "gpu"}
    batch_size : int, optional
        Images rendered at once (memory vs speed); does not change the result.
    **settings
        Fields of :class:`RenderSettings` (``edgesize``, ``gauss_sigma`` in Å, ...).

    Returns
    -------
    dict of numpy.ndarray
        The requested outputs plus ``rotations``, ``voxel_size``, ``frame_index`` (and
        ``n_atoms`` with coordinates_3d or numbers, ``elements`` with element_heatmap_2d),
        image ``k`` being frame ``k // n_rotation``.

    Warns
    -----
    UserWarning
        When atoms fall outside the field of view (``framing="fixed"`` with a field smaller
        than the structure), with their count and frames; or when the pixels are so coarse
        against the Gaussians that no atom reaches one and images come out blank.

    Examples
    --------
    >>> from ase.cluster import Icosahedron               # doctest: +SKIP
    >>> out = render(Icosahedron("Au", 4), n_rotation=16, edgesize=64, device="cpu")
    >>> out["gaussian_2d"].shape, out["gaussian_2d"].dtype  # doctest: +SKIP
    ((16, 64, 64), dtype('uint8'))
    >>> out = render(np.zeros((1, 3)), numbers=[79], edgesize=32)  # doctest: +SKIP
    """
    field = FieldReport()
    structure = as_structure(structure, numbers=numbers, symbols=symbols)
    with Renderer(RenderSettings(**settings), output_types, device) as renderer:
        out = renderer.render(
            structure, n_rotation, seed=seed, stack=stack, batch_size=batch_size,
            start=start, stop=stop, field_report=field,
        )
    if field.describe():
        where = f"{structure.source}, " if structure.source else ""
        warnings.warn(where + field.describe(), stacklevel=2)
    return out
