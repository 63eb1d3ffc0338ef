"""How a renderer computes images: one strategy object, chosen once when it is built.

Each class below answers the same questions for the engine and its stages (:mod:`.stages`),
so neither ever asks which way images are computed:

* :class:`ArrayKernel`: the NumPy/BLAS path on the CPU, and the GPU's for what it has no
  kernel of its own for, the same array code on CuPy (each batch in one step);
* :class:`FusedKernel`: the GPU's Gaussian images from its own CUDA kernel (``splat.cu``),
  rendered and quantised in one launch per batch;
* :class:`CompiledKernel`: the compiled CPU kernel (``_splat.c``) for Gaussian images,
  column sums and the quantisation of augmented images, filling a batch's arrays in place
  on the renderer's threads;
* :class:`LegacyKernel`: the original script's images (rounded voxels, SciPy filter
  semantics, truncating conversion), on either backend.

:func:`choose_kernel` picks one from the backend, the settings and ``cpu_kernel``. A new
backend or a new way to compute images is a new class here; an option that changes how
images are computed is a method here. The kernels themselves (functions of ``xp`` and
arrays) are in :mod:`.kernels`.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np

from ..backend import Backend
from ..flags import no_fused_kernel
from ..physics import augment
from . import kernels
from .kernels import device

if TYPE_CHECKING:
    from .settings import RenderSettings
    from .stages import Components, Geometry

__all__ = [
    "ArrayKernel",
    "CompiledKernel",
    "FusedKernel",
    "LegacyKernel",
    "Threads",
    "choose_kernel",
]

CPU_KERNELS = ("auto", "compiled", "numpy")


class Threads:
    """A renderer's worker threads, started on first use.

    Parameters
    ----------
    count : int
        Threads a batch is split over; 1: none are started.
    """

    def __init__(self, count: int) -> None:
        self.count = max(1, int(count))
        self._executor: ThreadPoolExecutor | None = None
        self._local = threading.local()

    def executor(self) -> ThreadPoolExecutor | None:
        """The thread pool; None with one thread, and on the pool's own threads (a task
        waiting on tasks of its own full pool would never finish)."""
        if self.count < 2 or getattr(self._local, "in_pool", False):
            return None
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.count, thread_name_prefix="xyz2image")
        return self._executor

    def mark_pool_thread(self) -> None:
        """Record that the calling thread is one of the pool's: work it starts stays on it."""
        self._local.in_pool = True

    def close(self) -> None:
        """Stop the threads (safe to call twice)."""
        if self._executor is not None:
            self._executor.shutdown()
            self._executor = None


class ArrayKernel:
    """Images as array operations on ``backend.xp``: NumPy/BLAS on the CPU, CuPy on the GPU.

    Parameters
    ----------
    backend : Backend
    settings : RenderSettings
    work_memory : int
        Bytes of scratch memory one rendering step may use.
    threads : Threads
        The renderer's threads (the compiled kernel splits a batch over them).
    compiled_labels : bool
        Binary labels from the compiled CPU kernel (the same bytes as the array path).
    """

    #: Whether Gaussian images come from the compiled CPU kernel.
    compiled_images = False
    #: Whether quantisation truncates (the original script) instead of rounding.
    truncate = False

    def __init__(self, backend: Backend, settings: RenderSettings, *, work_memory: int,
                 threads: Threads, compiled_labels: bool = False) -> None:
        self.backend = backend
        self.xp = backend.xp
        self.settings = settings
        self.work_memory = int(work_memory)
        self.threads = threads
        #: Whether binary labels come from the compiled CPU kernel.
        self.compiled_labels = bool(compiled_labels)
        self._scratch = max(1 << 16, self.work_memory // 4)

    # ------------------------------------------------------------------ sizes
    @property
    def static_shapes(self) -> bool:
        """Whether every array's shape must be known on the host before the batch runs (the
        GPU: reading a size back from the device is a host synchronisation)."""
        return self.backend.is_gpu

    @property
    def max_batch(self) -> int:
        """Largest default batch (images)."""
        return 4096 if self.backend.is_gpu else 256

    def per_image_bytes(self, n_atoms: int, output_types: Sequence[str],
                        channels: int = 1) -> int:
        """Rough scratch bytes one image of ``n_atoms`` atoms needs, to size batches
        (``channels``: element_heatmap_2d's)."""
        n = max(1, n_atoms) * len(self.settings.components)  # each component is a Gaussian
        return (self._profile_bytes(n) + 64 * n
                + sum(self._output_bytes(t) for t in output_types)
                + self._map_bytes(max(1, n_atoms), output_types, channels))

    def _map_bytes(self, n_atoms: int, output_types: Sequence[str], channels: int) -> int:
        """Scratch bytes of one image's label maps: per map, its two profile matrices and
        its float32 sums (twice with a distorted scan: the clean map beside it)."""
        e = self.settings.edgesize
        maps = (("heatmap_2d" in output_types) + ("column_map_2d" in output_types)
                + channels * ("element_heatmap_2d" in output_types))
        per_map = 2 * 4 * e * n_atoms + 4 * e * e
        return maps * per_map * (2 if self.settings.scan_distorted else 1)

    def _profile_bytes(self, n: int) -> int:
        """The profile matrices (B, N, E) of ``n`` Gaussians, per image."""
        return 3 * 4 * self.settings.edgesize * n

    def _output_bytes(self, name: str) -> int:
        """Scratch bytes of one image of output ``name``."""
        e = self.settings.edgesize
        if name in ("gaussian_2d", "delta_2d", "binary_2d"):
            return 3 * 4 * e * e * (2 if self.settings.augmented else 1)
        if name in ("gaussian_3d", "delta_3d", "binary_3d"):
            return 3 * 4 * e**3
        return 0

    def step_images(self, per_image: int) -> int:
        """Images rendered per step inside a batch, given :meth:`per_image_bytes`.

        On the CPU a step's scratch arrays are kept near cache size (measured at edgesize
        128 with 147 atoms: 16 images per step ran 2× faster than 256); on the GPU the whole
        batch is one step.
        """
        if self.backend.is_gpu:
            return 1 << 30
        return int(max(1, min(64, (4 << 20) // per_image)))

    def thread_step(self, n: int, step: int) -> int:
        """Images per step when a batch of ``n`` is spread over the renderer's threads."""
        return step

    def output_buffers(self, n: int, output_types: Sequence[str]) -> dict[str, np.ndarray]:
        """Host arrays for a batch of ``n`` images that the kernel fills in place, step by
        step (no join afterwards); none here."""
        return {}

    # ------------------------------------------------------------------ images
    def gaussian(self, ndim: int, geo: Geometry, comps: Components, *, quantised: bool = True,
                 out: np.ndarray | None = None, delta: Any = None) -> Any:
        """One batch of gaussian_2d (``ndim`` 2) or gaussian_3d (3).

        Parameters
        ----------
        ndim : {2, 3}
        geo : Geometry
            The batch's pixel coordinates (legacy images are built from its voxels).
        comps : Components
            Every probe component of every atom as one Gaussian, in pixels.
        quantised : bool
            Stored form (``settings.stored_normalization``) or float32 sums.
        out : numpy.ndarray, optional
            An array of :meth:`output_buffers` to fill and return.
        delta : array, optional
            The batch's delta label of the same ``ndim``, when already computed.
        """
        if ndim == 2:
            images = kernels.gaussian_2d(self.xp, comps.coords, comps.weights, comps.sigma_px,
                                         self.settings.edgesize)
        else:
            images = kernels.gaussian_3d(self.xp, comps.coords, comps.weights, comps.sigma_px,
                                         self.settings.edgesize, max_elements=self._scratch // 4)
        return self.quantise(images) if quantised else images

    def scanned(self, comps: Components, offsets_px: Any) -> Any:
        """Float32 gaussian_2d seen through a distorted scan: row ``i`` shifted by
        ``offsets_px[b, i]`` (x, y) pixels, (B, E, E)."""
        return kernels.gaussian_2d_scanned(
            self.xp, comps.coords, comps.weights, comps.sigma_px, offsets_px,
            self.settings.edgesize, max_elements=max(1 << 16, self.work_memory // 16),
        )

    def quantise(self, images: Any) -> Any:
        """Float images on the backend to the stored form."""
        s = self.settings
        return kernels.quantise(self.xp, images, normalization=s.stored_normalization,
                                bitrate=s.bitrate, intensity_scale=s.intensity_scale,
                                truncate=self.truncate)

    def quantise_augmented(self, images: Any) -> Any:
        """Float32 gaussian_2d of the augmentations (the clean one, or the one as seen
        without noise) to the stored form."""
        return self.quantise(images)

    # ------------------------------------------------------------------ augmentations
    # Each image's draws come from the streams of keys[frame[i]] (the render's frame keys,
    # (F,) uint64) and its rotation index rotation[i] (:mod:`..physics.augment`); here in
    # the array code of :mod:`..physics.random` on ``xp``, the same numbers as philox.h.
    def phonon(self, frame: Any, rotation: Any, keys: Any, rms: Any) -> Any:
        """Phonon jitter displacements (B, N, 3) float32, Å, of atoms of r.m.s. ``rms``
        ((F, N) Å, by frame)."""
        xp = self.xp
        return augment.phonon_batch(xp, xp.take(keys, frame), rotation,
                                    xp.take(rms, frame, axis=0))

    def scan_offsets(self, frame: Any, rotation: Any, keys: Any) -> Any:
        """Per-row scan shifts (B, E, 2) float32, Å along (x, y)."""
        s = self.settings
        return augment.scan_batch(self.xp, self.xp.take(keys, frame), rotation, s.edgesize,
                                  s.scan_jitter, s.drift)

    def noise(self, images: Any, frame: Any, rotation: Any, keys: Any,
              electrons_per_pixel: Any | None, *, overwrite: bool = False) -> Any:
        """Shot noise (``electrons_per_pixel`` (B,): each image's brightest pixel's expected
        count, or in beam units the electrons each pixel receives (``absolute_noise``); None:
        none) and the settings' read noise of float32 images (B, E, E), in the stored form.
        ``overwrite``: ``images`` may be overwritten (it is nothing else's)."""
        noisy = augment.noise_batch(
            self.xp, images, self.xp.take(keys, frame), rotation,
            electrons_per_pixel=electrons_per_pixel, read_noise=self.settings.read_noise,
            executor=self.threads.executor() if not self.backend.is_gpu else None,
            absolute=self.settings.absolute_noise)
        return self.quantise_augmented(noisy)

    def column_values(self, coords: Any, amps: Any, sig2: Any) -> Any:
        """Each atom's image value at its own position (B, N), for the column correction:
        every pair, on the backend. ``sig2``: squared widths, px²."""
        return kernels.column_values(self.xp, coords, amps, sig2,
                                     max_elements=self.work_memory // 32)

    # ------------------------------------------------------------------ labels
    def heatmap(self, comps: Components, offsets_px: Any = None) -> Any:
        """Float32 (B, E, E) sums of the Gaussians ``comps`` (each peaking at its weight),
        seen through a distorted scan when ``offsets_px`` (B, E, 2) pixels is given: the
        label heatmaps, drawn as the images are (legacy mode included)."""
        if offsets_px is not None:
            return self.scanned(comps, offsets_px)
        return kernels.gaussian_2d(self.xp, comps.coords, comps.weights, comps.sigma_px,
                                   self.settings.edgesize)

    def stored_heatmap(self, heatmap: Any) -> Any:
        """A float32 heatmap in ``settings.heatmap_dtype`` (float16: converted a few images
        at a time on the CPU, at once on the GPU; :func:`.kernels.float16_heatmap`)."""
        if self.settings.heatmap_dtype == "float32":
            return heatmap
        return kernels.float16_heatmap(self.xp, heatmap,
                                       step=None if self.backend.is_gpu else 16)

    def column_map(self, coords: Any, weights: Any, half_px: Any,
                   offsets_px: Any = None) -> Any:
        """Uint16 column_map_2d (B, E, E): atoms within ``half_px`` (B,) pixels of each pixel
        along both axes (:mod:`.kernels.maps`), through a distorted scan when
        ``offsets_px`` is given. ``weights`` (B, N): 1, or 0 for padding atoms. On the CPU
        by rectangles and prefix sums, on the GPU by a batched product (no atomics)."""
        e = self.settings.edgesize
        if offsets_px is None and not self.backend.is_gpu:  # rectangles: no product
            return kernels.column_map_2d_rectangles(coords, weights, half_px, e)
        if offsets_px is None:
            return kernels.column_map_2d(self.xp, coords, weights, half_px, e)
        return kernels.column_map_2d_scanned(
            self.xp, coords, weights, half_px, offsets_px, e,
            max_elements=max(1 << 16, self.work_memory // 16))

    def binary(self, ndim: int, centres: Any, radius_px: Any, valid: Any, *,
               reach: int | None = None) -> Any:
        """Bool binary_2d (``ndim`` 2) or binary_3d (3): pixels within ``radius_px`` (B,)
        of an atom centre. ``reach``: a static splat reach (see ``labels._splat_spheres``)."""
        label = kernels.binary_2d if ndim == 2 else kernels.binary_3d
        return label(self.xp, centres, radius_px, valid, self.settings.edgesize,
                     max_elements=self._scratch // 32, compiled=self.compiled_labels,
                     reach=reach)


class CompiledKernel(ArrayKernel):
    """Gaussian images, column sums and augmented quantisation from the compiled CPU kernel,
    quantised in the same pass and split over the renderer's threads (NumPy backend)."""

    compiled_images = True

    def __init__(self, backend: Backend, settings: RenderSettings, *, work_memory: int,
                 threads: Threads, compiled_labels: bool = False) -> None:
        super().__init__(backend, settings, work_memory=work_memory, threads=threads,
                         compiled_labels=compiled_labels)
        # a build older than the package may lack the newer entries: the array path then
        self._compiled_column = kernels.compiled_kernel_available("column")
        self._compiled_quantise = kernels.compiled_kernel_available("quantise")
        self._compiled_draws = all(kernels.compiled_kernel_available(entry)
                                   for entry in ("noise", "phonon", "scan"))
        self._compiled_absolute = kernels.compiled_kernel_available("noise_absolute")

    @property
    def max_batch(self) -> int:
        # measured at edgesize 128, 147 atoms, 2 cores: 5-8% more images/s than 256, fewer
        # per-batch Python steps; the CLI end to end the same within noise
        return 1024

    def _profile_bytes(self, n: int) -> int:
        return 0  # no profile matrices: each atom's profiles are built as it is added

    def _output_bytes(self, name: str) -> int:
        if name == "gaussian_2d" and not self.settings.augmented:
            return 4 * self.settings.edgesize ** 2  # the quantised image, written in place
        return super()._output_bytes(name)

    def step_images(self, per_image: int) -> int:
        return 1 << 30

    def thread_step(self, n: int, step: int) -> int:
        """One step per thread, each running the whole pipeline (rotation, framing, the
        features' NumPy work, kernel, noise) for its slice, so the NumPy work runs on every
        core too instead of alone between kernel calls; the kernel writes straight into the
        batch's arrays (:meth:`output_buffers`, no join). Measured at edgesize 128, 147
        atoms, 2 cores, against a batch-wide NumPy set-up and a threaded kernel: column
        correction 1,470 -> 2,820 images/s, phonon jitter 6,880 -> 9,680, noise 2,440 ->
        2,920; plain images the same within noise (~55,000)."""
        return min(step, -(-n // self.threads.count))

    def output_buffers(self, n: int, output_types: Sequence[str]) -> dict[str, np.ndarray]:
        """The un-augmented Gaussian outputs, which the kernel writes quantised in place."""
        s = self.settings
        e = s.edgesize
        out = {}
        if "gaussian_2d" in output_types and not s.augmented:
            out["gaussian_2d"] = np.empty((n, e, e), dtype=s.image_dtype)
        if "gaussian_3d" in output_types:
            out["gaussian_3d"] = np.empty((n, e, e, e), dtype=s.image_dtype)
        return out

    def _splat(self, ndim: int, comps: Components, normalization: str, *,
               offsets_px: Any = None, out: np.ndarray | None = None) -> np.ndarray:
        s = self.settings
        return kernels.splat_gaussian(
            comps.coords, comps.weights, comps.sigma_px, s.edgesize, ndim,
            normalization=normalization, bitrate=s.bitrate, intensity_scale=s.intensity_scale,
            executor=self.threads.executor(), parts=self.threads.count,
            offsets_px=offsets_px, out=out,
        )

    def gaussian(self, ndim: int, geo: Geometry, comps: Components, *, quantised: bool = True,
                 out: np.ndarray | None = None, delta: Any = None) -> Any:
        stored = self.settings.stored_normalization
        return self._splat(ndim, comps, stored if quantised else "float",
                           out=out)

    def scanned(self, comps: Components, offsets_px: Any) -> Any:
        return self._splat(2, comps, "float", offsets_px=offsets_px)

    def heatmap(self, comps: Components, offsets_px: Any = None) -> Any:
        return self._splat(2, comps, "float", offsets_px=offsets_px)

    def quantise_augmented(self, images: Any) -> Any:
        if not self._compiled_quantise:
            return super().quantise_augmented(images)
        # measured, jittered images at 128 px: NumPy's quantise took 45% of the time
        s = self.settings
        return kernels.quantise_compiled(images, normalization=s.stored_normalization,
                                         bitrate=s.bitrate, intensity_scale=s.intensity_scale)

    def phonon(self, frame: Any, rotation: Any, keys: Any, rms: Any) -> Any:
        if not self._compiled_draws:
            return super().phonon(frame, rotation, keys, rms)
        return kernels.phonon_compiled(frame, rotation, keys, rms)

    def scan_offsets(self, frame: Any, rotation: Any, keys: Any) -> Any:
        if not self._compiled_draws:
            return super().scan_offsets(frame, rotation, keys)
        s = self.settings
        return kernels.scan_compiled(frame, rotation, keys, s.edgesize, s.scan_jitter, s.drift)

    def noise(self, images: Any, frame: Any, rotation: Any, keys: Any,
              electrons_per_pixel: Any | None, *, overwrite: bool = False) -> Any:
        absolute = self.settings.absolute_noise
        if not self._compiled_draws or (absolute and not self._compiled_absolute):
            return super().noise(images, frame, rotation, keys, electrons_per_pixel)
        noisy = kernels.noise_compiled(images, frame, rotation, keys,
                                       electrons_per_pixel=electrons_per_pixel,
                                       read_noise=self.settings.read_noise,
                                       out=images if overwrite else None, absolute=absolute)
        return self.quantise_augmented(noisy)

    def column_values(self, coords: Any, amps: Any, sig2: Any) -> Any:
        if not self._compiled_column:
            return super().column_values(coords, amps, sig2)
        return kernels.column_values_compiled(coords, amps, sig2)


class FusedKernel(ArrayKernel):
    """The GPU: gaussian_2d and gaussian_3d rendered and quantised by one CUDA kernel per
    batch (:func:`.kernels.device.splat_device`: the compiled CPU kernel's algorithm, one
    thread block per image, each pixel summed in a fixed order, so the bytes do not depend on
    the batch size); the augmentations' draws by ``random.cu`` (``philox.h``, the compiled
    CPU kernel's own code), the noise applied and the images quantised in the same launch;
    scanned images and everything else as :class:`ArrayKernel`."""

    def __init__(self, backend: Backend, settings: RenderSettings, *, work_memory: int,
                 threads: Threads, compiled_labels: bool = False) -> None:
        super().__init__(backend, settings, work_memory=work_memory, threads=threads,
                         compiled_labels=compiled_labels)
        self._shared_limit = backend.shared_memory_per_block()
        self._no_streams: tuple[Any, Any] | None = None

    def _output_bytes(self, name: str) -> int:
        if name == "gaussian_2d":  # the float image (in shared memory when it fits) and the result
            return 2 * 4 * self.settings.edgesize ** 2 * (2 if self.settings.augmented else 1)
        return super()._output_bytes(name)

    def gaussian(self, ndim: int, geo: Geometry, comps: Components, *, quantised: bool = True,
                 out: np.ndarray | None = None, delta: Any = None) -> Any:
        if not device.fits(self.settings.edgesize, self._shared_limit):
            return super().gaussian(ndim, geo, comps, quantised=quantised, out=out, delta=delta)
        s = self.settings
        return device.splat_device(
            self.backend, comps.coords, comps.weights, comps.sigma_px, s.edgesize, ndim,
            normalization=s.stored_normalization if quantised else "float", bitrate=s.bitrate,
            intensity_scale=s.intensity_scale, shared_limit=self._shared_limit,
        )

    def heatmap(self, comps: Components, offsets_px: Any = None) -> Any:
        if not device.fits(self.settings.edgesize, self._shared_limit):
            return super().heatmap(comps, offsets_px)
        return device.splat_device(
            self.backend, comps.coords, comps.weights, comps.sigma_px, self.settings.edgesize,
            2, normalization="float", bitrate=8, shared_limit=self._shared_limit,
            offsets_px=offsets_px)

    def scanned(self, comps: Components, offsets_px: Any) -> Any:
        """The fused kernel with per-row shifts (``_splat.c``'s ``splat_scanned``)."""
        if not device.fits(self.settings.edgesize, self._shared_limit):
            return super().scanned(comps, offsets_px)
        s = self.settings
        return device.splat_device(
            self.backend, comps.coords, comps.weights, comps.sigma_px, s.edgesize, 2,
            normalization="float", bitrate=s.bitrate, shared_limit=self._shared_limit,
            offsets_px=offsets_px)

    def quantise_augmented(self, images: Any) -> Any:
        if self._no_streams is None:  # not read when nothing is drawn
            xp = self.xp
            self._no_streams = (xp.zeros(1, dtype=xp.int64), xp.zeros(1, dtype=xp.uint64))
        index, keys = self._no_streams
        return self._store(images, index, index, keys, None, 0.0)

    def phonon(self, frame: Any, rotation: Any, keys: Any, rms: Any) -> Any:
        return device.phonon_device(self.backend, frame, rotation, keys, rms)

    def scan_offsets(self, frame: Any, rotation: Any, keys: Any) -> Any:
        s = self.settings
        return device.scan_device(self.backend, frame, rotation, keys, s.edgesize,
                                  s.scan_jitter, s.drift)

    def noise(self, images: Any, frame: Any, rotation: Any, keys: Any,
              electrons_per_pixel: Any | None, *, overwrite: bool = False) -> Any:
        """Noise drawn and the image quantised in one launch (``random.cu``)."""
        return self._store(images, frame, rotation, keys, electrons_per_pixel,
                           self.settings.read_noise, overwrite)

    def _store(self, images: Any, frame: Any, rotation: Any, keys: Any,
               electrons_per_pixel: Any | None, read_noise: float,
               overwrite: bool = False) -> Any:
        s = self.settings
        return device.noise_device(
            self.backend, images, frame, rotation, keys, electrons_per_pixel=electrons_per_pixel,
            read_noise=read_noise, normalization=s.stored_normalization, bitrate=s.bitrate,
            intensity_scale=s.intensity_scale, overwrite=overwrite, absolute=s.absolute_noise)


class LegacyKernel(ArrayKernel):
    """The original script's images: each occupied voxel counted once, filtered with SciPy
    ``gaussian_filter`` semantics, quantised by truncation; on either backend (the filter
    matrices built on the host on the CPU, by ``legacy.cu`` on the GPU)."""

    truncate = True

    def per_image_bytes(self, n_atoms: int, output_types: Sequence[str],
                        channels: int = 1) -> int:
        e = self.settings.edgesize
        filtered = 3 * 8 * e * e * (e if "gaussian_3d" in output_types else 1)
        return super().per_image_bytes(n_atoms, output_types, channels) + filtered

    def gaussian(self, ndim: int, geo: Geometry, comps: Components, *, quantised: bool = True,
                 out: np.ndarray | None = None, delta: Any = None) -> Any:
        xp = self.xp
        e = self.settings.edgesize
        if delta is None:
            label = kernels.delta_2d if ndim == 2 else kernels.delta_3d
            delta = label(xp, geo.voxels, geo.valid, e)
        mats = geo.memo.get("legacy_filter")
        if mats is None:  # one set per batch, shared by gaussian_2d and gaussian_3d
            sigma_px = self.settings.gauss_sigma / geo.voxel
            if self.backend.is_gpu:  # built where the pixel sizes are: no read-back
                mats = device.legacy_filter_device(self.backend, sigma_px, e)
            else:
                mats = kernels.legacy_filter_matrices(sigma_px, e)
            geo.memo["legacy_filter"] = mats
        legacy = kernels.legacy_gaussian_2d if ndim == 2 else kernels.legacy_gaussian_3d
        images = legacy(xp, delta, mats)
        return self.quantise(images) if quantised else images


def choose_kernel(backend: Backend, settings: RenderSettings, *, cpu_kernel: str = "auto",
                  work_memory: int, threads: Threads) -> ArrayKernel:
    """The strategy for ``settings`` on ``backend``: legacy mode's on either backend, else
    the compiled CPU kernel or the NumPy path on the CPU, :class:`FusedKernel` on the GPU
    (the NumPy path's array code on CuPy with ``XYZ2IMAGE_GPU_NO_FUSED_KERNEL`` set).

    Parameters
    ----------
    backend : Backend
    settings : RenderSettings
    cpu_kernel : {"auto", "compiled", "numpy"}
        On the CPU, Gaussian images from the compiled kernel (``auto``: when it is built and
        not disabled by the environment) or from the NumPy/BLAS path.
    work_memory : int
        Bytes of scratch memory one rendering step may use.
    threads : Threads
        The renderer's threads.

    Raises
    ------
    ValueError
        ``cpu_kernel`` is unknown, or ``compiled`` while the compiled kernel is not built.
    """
    if cpu_kernel not in CPU_KERNELS:
        raise ValueError(f"cpu_kernel must be auto, compiled or numpy, got {cpu_kernel!r}")
    if cpu_kernel == "compiled" and not kernels.compiled_kernel_available():
        raise ValueError("cpu_kernel='compiled' but the compiled kernel "
                         "(xyz2image_gpu.pipeline.kernels._splat) is not available")
    compiled_ok = not backend.is_gpu and cpu_kernel != "numpy"
    options: dict[str, Any] = {
        "work_memory": work_memory,
        "threads": threads,
        # binary labels: the same bytes either way, so legacy mode uses the kernel too
        "compiled_labels": compiled_ok and kernels.compiled_kernel_available("binary"),
    }
    if settings.legacy:
        return LegacyKernel(backend, settings, **options)
    if compiled_ok and kernels.compiled_kernel_available():
        return CompiledKernel(backend, settings, **options)
    if backend.is_gpu and not no_fused_kernel():
        return FusedKernel(backend, settings, **options)
    return ArrayKernel(backend, settings, **options)
