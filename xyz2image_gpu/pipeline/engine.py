"""The rendering engine: structures in, batches of images and labels out, in memory.

:class:`Renderer` is the library entry point that the CLI, the benchmarks and data consumers
share. It renders any range of a stack's images in batches; each batch is a dict of host
NumPy arrays (or device arrays, with ``to_host=False``) with the same names, shapes and
dtypes that the .npz files hold. :func:`render` is the one-call convenience for notebooks.

Image ``k`` of a stack is frame ``k // n_rotation`` seen in rotation ``k % n_rotation``.
Every image is a pure function of the settings, the seed, the structure name, the frame,
the stack and the rotation index, so the bytes do not depend on the batch size, the range
split or the number of workers.
"""

from __future__ import annotations

import operator
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np
from threadpoolctl import ThreadpoolController

from ..backend import Backend, available_cores, get_backend
from ..physics import augment
from ..physics.column import ColumnCorrection
from ..physics.thermal import smear_components, thermal_widths
from ..structures.convert import as_structure
from ..structures.model import Structure, StructureError
from . import gpu_streams, stages
from .batch import Batch
from .framing import (
    FieldReport,
    narrow_field_problem,
    precision_problem,
    sampling_problem,
    wide_gaussian_problem,
)
from .kernels.labels import splat_reach
from .rotations import keyed_rotation_matrices, rotation_key
from .settings import _GAUSSIAN, RenderSettings, requested_arrays
from .strategies import Threads, choose_kernel

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = [
    "Renderer",
    "render",
]


@dataclass
class _FrameData:
    """Host-side per-frame data, prepared once per structure."""

    index: int
    centred: np.ndarray  # (N, 3) float64, relative to the centroid
    amplitudes: np.ndarray  # (N, G) peak height of each atom's probe component
    sigmas: np.ndarray  # (N, G) width of each atom's probe component, Å
    radius: float  # largest distance from the centroid, Å
    rms: np.ndarray | None  # (N,) thermal displacement for phonon jitter, Å
    blank: str | None = None  # why its Gaussian images would come out blank, if they would


@dataclass
class _FrameTable:
    """Every frame of one render, padded to the structure's largest frame: what a batch's
    images are gathered from by their frame (``positions[image_frame]``). Built on the host
    once per :meth:`Renderer.iter_batches` call; on the GPU the per-atom arrays are uploaded
    once and each batch sends only its rotations and image-to-frame indices.

    Padding atoms copy atom 0 of their frame (extents unchanged), with amplitude 0, width 1
    and ``valid`` False.
    """

    positions: Any  # (F, N, 3) float32, relative to each frame's centroid, Å
    amplitudes: Any  # (F, N, G) float32
    sigmas: Any  # (F, N, G) float32, Å
    valid: Any  # (F, N) bool
    radius: Any  # (F,) float32, Å
    frame_ids: np.ndarray  # (F,) int32 source index of each frame (host)
    n_atoms: np.ndarray  # (F,) int32 (host)
    keys: np.ndarray  # (F,) uint64 each frame's rotation stream (host)
    binary_reach: int | None = None  # static splat reach of binary labels (GPU), see labels

    #: The per-atom arrays that live on the backend's device.
    DEVICE = ("positions", "amplitudes", "sigmas", "valid", "radius")

    def on(self, backend: Backend) -> _FrameTable:
        """This table with its per-atom arrays on ``backend`` (the same table on NumPy)."""
        if not backend.is_gpu:
            return self
        moved = {k: backend.asarray(getattr(self, k)) for k in self.DEVICE}
        return _FrameTable(**moved, frame_ids=self.frame_ids, n_atoms=self.n_atoms,
                           keys=self.keys, binary_reach=self.binary_reach)


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
        if self.settings.framing == "fixed" and self._renders_images:
            problem = narrow_field_problem(self.settings.edgesize, self.settings.pixel_size,
                                           min(sigma for _, sigma in self.settings.components))
            if problem:
                raise ValueError(problem)
        self._blas: ThreadpoolController | None = None
        self._ring: gpu_streams.DeviceRing | None = None

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
        return self.kernel.per_image_bytes(structure.max_atoms, self.output_types)

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
            elif name == "gaussian_3d":
                layout[name] = ((n_images, e, e, e), self.settings.image_dtype)
            elif name == "gaussian_2d":
                layout[name] = ((n_images, e, e), self.settings.image_dtype)
        if "gaussian_2d" in self.output_types and self.settings.augmented:
            layout["gaussian_2d_clean"] = ((n_images, e, e), self.settings.image_dtype)
            if self.settings.dose is not None:
                layout["electrons_per_pixel"] = ((n_images,), np.dtype(np.float64))
            if self.settings.scan_distorted:
                layout["scan_offsets"] = ((n_images, e, 2), np.dtype(np.float32))
        layout["rotations"] = ((n_images, 3, 3), np.dtype(np.float64))
        layout["voxel_size"] = ((n_images,), np.dtype(np.float64))
        layout["frame_index"] = ((n_images,), np.dtype(np.int32))
        if "coordinates_3d" in self.output_types:
            layout["n_atoms"] = ((n_images,), np.dtype(np.int32))
        return layout

    # ------------------------------------------------------------------ host prep
    def _frame_data(self, structure: Structure) -> list[_FrameData]:
        """Per-frame host data; refuses frames whose images could not show the atoms.

        A frame whose field of view is too coarse for any atom to reach a pixel
        (:func:`~.framing.sampling_problem`, Gaussian outputs outside legacy mode) is marked
        in its ``blank``: rendering it is well defined (all zeros), the caller tells.

        Raises
        ------
        StructureError
            Naming the file and frame: the positions are too large to place the atoms
            (:func:`~.framing.precision_problem`), the Gaussians are wider than the field
            (:func:`~.framing.wide_gaussian_problem`), or all atoms sit at one point with no
            margin.
        """
        zexp = self.settings.z_exponent
        sigma_min = min(sigma for _, sigma in self.settings.components)
        data = []
        for frame in structure.frames:
            pos = np.asarray(frame.positions, dtype=np.float64)
            problem = precision_problem(pos, sigma_min)
            if problem:
                raise StructureError(problem, path=structure.source, frame=frame.index)
            centred = pos - pos.mean(axis=0)
            radius = float(np.sqrt((centred * centred).sum(axis=1).max()))
            if radius == 0 and self.settings.padxyz == 0 and self.settings.framing != "fixed":
                raise StructureError(
                    "all atoms sit at one point and padxyz is 0: the field of view has no "
                    "size; use padxyz > 0 or framing='fixed'",
                    path=structure.source, frame=frame.index,
                )
            if self.settings.framing != "fixed" and self._renders_images:
                problem = wide_gaussian_problem(sigma_min, radius, self.settings.padxyz)
                if problem:
                    raise StructureError(problem, path=structure.source, frame=frame.index)
            if zexp == 0:
                weights = np.ones(len(pos))
            else:
                weights = np.asarray(frame.numbers, dtype=np.float64) ** zexp
            s = self.settings
            rms = self._thermal_rms(frame.numbers) if s.thermal or s.phonon_jitter else None
            amps, sigmas = self._components(frame.numbers, weights, rms)
            blank = None
            if not s.legacy and self._renders_images:
                blank = sampling_problem(
                    len(pos), float(sigmas.min()), radius, framing=s.framing,
                    edgesize=s.edgesize, padxyz=s.padxyz, pixel_size=s.pixel_size)
            data.append(_FrameData(frame.index, centred, amps, sigmas, radius,
                                   rms if s.phonon_jitter else None, blank))
        return data

    def _components(
        self, numbers: np.ndarray, weights: np.ndarray, rms: np.ndarray | None
    ) -> tuple[Any, Any]:
        """Per-atom probe components: amplitudes and widths (Å), both (N, G).

        ``rms``: the atoms' thermal displacements, folded in when ``settings.thermal``.
        """
        u = rms if self.settings.thermal else np.zeros(len(numbers))
        amps, sigmas = smear_components(self.settings.components, u)
        return amps * weights[:, None], sigmas

    def _thermal_rms(self, numbers: np.ndarray) -> np.ndarray:
        """Each atom's r.m.s. thermal displacement along one axis, Å."""
        u = thermal_widths(numbers, dict(self.settings.thermal_overrides))
        return np.asarray(u, dtype=np.float64)

    def _frame_table(self, structure: Structure, frames: list[_FrameData], seed: int,
                     stack: int) -> _FrameTable:
        """Every frame's padded host arrays and rotation key, once per render."""
        nmax = structure.max_atoms
        f = len(frames)
        n_comp = len(self.settings.components)
        pos = np.empty((f, nmax, 3), dtype=np.float32)
        amps = np.zeros((f, nmax, n_comp), dtype=np.float32)
        sigmas = np.ones((f, nmax, n_comp), dtype=np.float32)  # padding: finite, weight 0
        valid = np.zeros((f, nmax), dtype=bool)
        n_atoms = np.empty(f, dtype=np.int32)
        for i, fd in enumerate(frames):
            n = len(fd.centred)
            pos[i, :n] = fd.centred
            pos[i, n:] = fd.centred[0]  # padding copies atom 0: extents unchanged
            amps[i, :n] = fd.amplitudes
            sigmas[i, :n] = fd.sigmas
            valid[i, :n] = True
            n_atoms[i] = n
        keys = np.array([rotation_key(seed, structure.name, fd.index, stack) for fd in frames],
                        dtype=np.uint64)
        return _FrameTable(
            pos, amps, sigmas, valid,
            np.array([fd.radius for fd in frames], dtype=np.float32),
            np.array([fd.index for fd in frames], dtype=np.int32), n_atoms, keys,
            self._binary_reach(frames),
        )

    def _binary_reach(self, frames: list[_FrameData]) -> int | None:
        """A splat reach that holds every binary label ball of these frames in any rotation,
        known on the host, where the kernel needs a static one (the GPU); else None.

        The ball's radius is ``binary_radius / voxel`` pixels; the smallest voxel a frame
        can get: ``pixel_size`` (fixed), ``(2 r + 2 padxyz) / (E - 1)`` (structure; ``r``
        its radius), and for ``image`` framing ``(m + 2 padxyz) / (E - 1)`` with ``m``, the
        largest extent along the three axes, at least ``d / sqrt(3)`` for any two atoms
        ``d`` apart (one of the three components of their separation is that long). A 0.1%
        margin covers float32 rounding; a larger reach gives the same bytes.
        """
        s = self.settings
        if not (self.kernel.static_shapes and {"binary_2d", "binary_3d"} & set(self.output_types)):
            return None
        largest = 0.0
        for fd in frames:
            if s.framing == "fixed":
                voxel = float(s.pixel_size or 0.0)
            elif s.framing == "structure":
                voxel = (2.0 * fd.radius + 2.0 * s.padxyz) / (s.edgesize - 1)
            else:
                far = fd.centred[np.argmax((fd.centred * fd.centred).sum(axis=1))]
                span = float(np.sqrt(((fd.centred - far) ** 2).sum(axis=1).max()))
                voxel = (span / np.sqrt(3.0) + 2.0 * s.padxyz) / (s.edgesize - 1)
            if not voxel > 0:
                return None  # no bound: the kernel reads the radii (a synchronisation)
            largest = max(largest, s.binary_radius / voxel)
        return splat_reach(largest * 1.001)

    def _assemble(
        self,
        structure: Structure,
        table: _FrameTable,
        frames: list[_FrameData],
        n_rotation: int,
        seed: int,
        stack: int,
        start: int,
        stop: int,
    ) -> dict[str, np.ndarray]:
        """Host arrays for images [start, stop): each image's frame (its row of ``table``),
        rotation and metadata; with augmentations, their per-image draws.

        Vectorised over the images whatever the frames: the per-atom arrays are gathered
        from ``table`` where the batch renders (:func:`.stages.gather`).
        """
        k = np.arange(start, stop, dtype=np.int64)
        which, r = np.divmod(k, n_rotation)
        batch = {
            "image_frame": which,
            "rotations": keyed_rotation_matrices(table.keys[which], r,
                                                 all_random=self.settings.all_random),
            "frame_index": table.frame_ids[which],
            "n_atoms": table.n_atoms[which],
        }
        s = self.settings
        if s.augmented:
            batch.update(self._augmentation_draws(structure, frames, which, r, seed, stack))
        return batch

    def _augmentation_draws(self, structure: Structure, frames: list[_FrameData],
                            which: np.ndarray, rotation: np.ndarray, seed: int, stack: int,
                            ) -> dict[str, np.ndarray]:
        """Per-image random draws of the augmentations, on the host (one generator per
        image and purpose: :mod:`..physics.augment`)."""
        s = self.settings
        b = len(which)
        nmax = structure.max_atoms
        displacements = np.zeros((b, nmax, 3), dtype=np.float32) if s.phonon_jitter else None
        scan = np.zeros((b, s.edgesize, 2), dtype=np.float32) if s.scan_distorted else None
        keys = []
        for i, (f, r) in enumerate(zip(which.tolist(), rotation.tolist())):
            fd = frames[f]
            key = augment.image_key(seed, structure.name, fd.index, stack, r)
            keys.append(key)
            if displacements is not None:
                displacements[i, : len(fd.centred)] = augment.phonon_displacements(key, fd.rms)
            if scan is not None:
                scan[i] = augment.scan_offsets(key, s.edgesize, s.scan_jitter, s.drift)
        extra = {"keys": np.array(keys, dtype=np.uint64)}
        if displacements is not None:
            extra["displacements"] = displacements
        if scan is not None:
            extra["scan_offsets"] = scan
        return extra

    def chunk_size(self, structure: Structure) -> int:
        """Images rendered per step inside a batch (see the kernel's ``step_images``)."""
        return self.kernel.step_images(self.scratch_bytes_per_image(structure))

    # ------------------------------------------------------------------ device work
    def _render_chunked(
        self, host: dict[str, np.ndarray], table: _FrameTable, chunk: int, to_host: bool = True
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
                                       _FrameTable]) -> dict[str, Any]:
        """One step on a pool thread: work inside it stays on this thread (no nested pool)."""
        self._threads.mark_pool_thread()
        host, out, table = step
        return self._render_device(host, table, out=out)

    def _render_device(self, host: dict[str, np.ndarray], table: _FrameTable, *,
                       out: Mapping[str, np.ndarray] | None = None,
                       to_host: bool = True) -> dict[str, Any]:
        """Render one batch on the backend, stage by stage (:mod:`.stages`).

        Parameters
        ----------
        host : dict of numpy.ndarray
            :meth:`_assemble`'s inputs for the batch.
        table : _FrameTable
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
        result = stages.labels(kernel, geo, self.output_types)
        result[_OUTSIDE] = geo.outside
        if self._renders_images:
            comps = stages.components(kernel, inputs, geo, self._column)
            images = stages.images(kernel, geo, comps, result, self.output_types, out or {})
            if self.settings.augmented and "gaussian_2d" in images:
                images.update(stages.augmentations(
                    kernel, inputs, geo, comps, images.pop("gaussian_2d"),
                    executor=self._threads.executor()))
            result.update(images)
        result["voxel_size"] = geo.voxel.astype(kernel.xp.float64)
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
        plus ``rotations`` (b, 3, 3), ``voxel_size`` (b,) Å per pixel, ``frame_index`` (b,)
        and, with coordinates_3d, ``n_atoms`` (b,). With ``to_host=False`` the arrays stay
        on the backend's device (CuPy arrays on the GPU, e.g. to hand to a training loop
        through DLPack without a host round trip).

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
            A frame cannot be shown (see :meth:`_frame_data`), naming the file and frame.
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
        frames = self._frame_data(structure)
        blank = [(fd.index, fd.blank) for fd in frames if fd.blank]
        if blank and field_report is not None:
            field_report.add_blank([k for k, _ in blank], blank[0][1])
        elif blank:
            for k, why in blank:
                warnings.warn(str(StructureError(why, path=structure.source, frame=k)),
                              stacklevel=2)
        chunk = self.chunk_size(structure)
        with_counts = "coordinates_3d" in self.output_types
        extra = ["rotations", "frame_index"] + (["n_atoms"] if with_counts else [])
        bounds = [(b0, min(stop, b0 + batch_size)) for b0 in range(start, stop, batch_size)]
        host_table = self._frame_table(structure, frames, seed, stack)

        def assemble(b0: int, b1: int) -> dict[str, np.ndarray]:
            return self._assemble(structure, host_table, frames, n_rotation, seed, stack, b0, b1)

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
        ``n_atoms`` with coordinates_3d), image ``k`` being frame ``k // n_rotation``.

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
