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

import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from threadpoolctl import ThreadpoolController

from ..backend import Backend, available_cores, get_backend
from ..physics import augment
from ..physics.column import ColumnCorrection
from ..physics.thermal import smear_components, thermal_widths
from ..structures.convert import as_structure
from ..structures.model import Structure, StructureError
from . import gpu_streams
from . import kernels as renderers
from .framing import frame_pixel_coordinates
from .rotations import rotation_matrices
from .settings import _GAUSSIAN, RenderSettings, _check_output_types

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


#: Prefix of the host keys that carry preallocated output slices into a rendering step.
_DIRECT = "_into:"


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
        Threads the compiled CPU kernel splits a batch over (default: all cores). Use 1 in
        worker processes that already share the cores.
    cpu_kernel : {"auto", "compiled", "numpy"}
        On the CPU, Gaussian images from the compiled kernel (``auto``: when it is built and
        ``XYZ2IMAGE_GPU_NO_EXTENSION`` is not set) or from the NumPy/BLAS path. Both agree
        within one grey level; each is byte-reproducible on its own.
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
        self.output_types = _check_output_types(output_types)
        self.backend = get_backend(device)
        if cpu_kernel not in ("auto", "compiled", "numpy"):
            raise ValueError(f"cpu_kernel must be auto, compiled or numpy, got {cpu_kernel!r}")
        if cpu_kernel == "compiled" and not renderers.compiled_kernel_available():
            raise ValueError("cpu_kernel='compiled' but xyz2image_gpu._splat is not available")
        #: Whether Gaussian outputs use the compiled CPU kernel (NumPy backend, not legacy).
        self.uses_compiled_kernel = (
            not self.backend.is_gpu
            and not self.settings.legacy
            and cpu_kernel != "numpy"
            and renderers.compiled_kernel_available()
        )
        #: Whether binary labels use the compiled kernel (CPU, legacy mode too: same bytes).
        self.uses_compiled_labels = (
            not self.backend.is_gpu
            and cpu_kernel != "numpy"
            and renderers.compiled_kernel_available("binary")
        )
        self.threads = max(1, int(threads or available_cores()))
        self._column = ColumnCorrection.from_settings(self.settings)
        self._executor: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._blas: ThreadpoolController | None = None
        if work_memory is None:
            work_memory = 128 << 20
            free = self.backend.free_memory()
            if free is not None:
                work_memory = max(work_memory, free // 4)
        self.work_memory = int(work_memory)

    # ------------------------------------------------------------------ layout
    def _per_image_bytes(self, n_atoms: int) -> int:
        """Rough scratch bytes one image needs, to size batches."""
        s = self.settings
        e = s.edgesize
        n = max(1, n_atoms) * len(s.components)  # every probe component is a Gaussian
        # the NumPy path's profile matrices (B, N, E); the compiled kernel needs none
        total = (0 if self.uses_compiled_kernel else 3 * 4 * e * n) + 64 * n
        for name in self.output_types:
            if name == "gaussian_2d" and self.uses_compiled_kernel and not s.augmented:
                total += 4 * e * e  # the quantised image, written in place
            elif name in ("gaussian_2d", "delta_2d", "binary_2d"):
                total += 3 * 4 * e * e * (2 if s.augmented else 1)
            elif name in ("gaussian_3d", "delta_3d", "binary_3d"):
                total += 3 * 4 * e**3
        if self.settings.legacy:
            total += 3 * 8 * e * e * (e if "gaussian_3d" in self.output_types else 1)
        return total

    def default_batch_size(self, structure: Structure) -> int:
        """Images per batch: as many as fit the scratch memory, within [1, 4096]."""
        per = self._per_image_bytes(structure.max_atoms)
        # CPU: up to 1024 with the compiled kernel (measured at edgesize 128, 147 atoms, 2
        # cores: 5-8% more images/s than 256, fewer per-batch Python steps; the CLI end to
        # end the same within noise), 256 on the NumPy path
        cap = 4096 if self.backend.is_gpu else 1024 if self.uses_compiled_kernel else 256
        return int(max(1, min(cap, self.work_memory // per)))

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
        zexp = self.settings.z_exponent
        data = []
        for frame in structure.frames:
            pos = np.asarray(frame.positions, dtype=np.float64)
            centred = pos - pos.mean(axis=0)
            radius = float(np.sqrt((centred * centred).sum(axis=1).max()))
            if radius == 0 and self.settings.padxyz == 0 and self.settings.framing != "fixed":
                raise StructureError(
                    "all atoms sit at one point and padxyz is 0: the field of view has no "
                    "size; use padxyz > 0 or framing='fixed'",
                    path=structure.source, frame=frame.index,
                )
            if zexp == 0:
                weights = np.ones(len(pos))
            else:
                weights = np.asarray(frame.numbers, dtype=np.float64) ** zexp
            s = self.settings
            rms = self._thermal_rms(frame.numbers) if s.thermal or s.phonon_jitter else None
            amps, sigmas = self._components(frame.numbers, weights, rms)
            data.append(_FrameData(frame.index, centred, amps, sigmas, radius,
                                   rms if s.phonon_jitter else None))
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

    def _assemble(
        self,
        structure: Structure,
        frames: list[_FrameData],
        n_rotation: int,
        seed: int,
        stack: int,
        start: int,
        stop: int,
    ) -> dict[str, np.ndarray]:
        """Host arrays for images [start, stop): padded positions, weights, rotations."""
        nmax = structure.max_atoms
        b = stop - start
        pos = np.empty((b, nmax, 3), dtype=np.float32)
        n_comp = len(self.settings.components)
        amps = np.zeros((b, nmax, n_comp), dtype=np.float32)
        sigmas = np.ones((b, nmax, n_comp), dtype=np.float32)  # padding: finite, weight 0
        valid = np.zeros((b, nmax), dtype=bool)
        rots = np.empty((b, 3, 3), dtype=np.float64)
        radius = np.empty(b, dtype=np.float32)
        frame_index = np.empty(b, dtype=np.int32)
        n_atoms = np.empty(b, dtype=np.int32)
        s = self.settings
        jitter = s.phonon_jitter
        displacements = np.zeros((b, nmax, 3), dtype=np.float32) if jitter else None
        scan = np.zeros((b, s.edgesize, 2), dtype=np.float32) if s.scan_distorted else None
        keys: list[tuple] = []
        k = start
        while k < stop:
            f, r0 = divmod(k, n_rotation)
            r1 = min(n_rotation, r0 + (stop - k))
            sl = slice(k - start, k - start + (r1 - r0))
            fd = frames[f]
            n = len(fd.centred)
            pos[sl, :n] = fd.centred
            pos[sl, n:] = fd.centred[0]  # padding copies atom 0: extents unchanged
            amps[sl, :n] = fd.amplitudes
            sigmas[sl, :n] = fd.sigmas
            valid[sl, :n] = True
            rots[sl] = rotation_matrices(
                n_rotation,
                seed=seed,
                name=structure.name,
                frame_index=fd.index,
                stack=stack,
                all_random=self.settings.all_random,
                start=r0,
                stop=r1,
            )
            radius[sl] = fd.radius
            frame_index[sl] = fd.index
            n_atoms[sl] = n
            if s.augmented:
                for r in range(r0, r1):
                    key = augment.image_key(seed, structure.name, fd.index, stack, r)
                    keys.append(key)
                    i = k - start + r - r0
                    if jitter:
                        displacements[i, :n] = augment.phonon_displacements(key, fd.rms)
                    if scan is not None:
                        scan[i] = augment.scan_offsets(key, s.edgesize, s.scan_jitter, s.drift)
            k += r1 - r0
        extra = {} if displacements is None else {"displacements": displacements}
        if scan is not None:
            extra["scan_offsets"] = scan
        if keys:
            extra["keys"] = np.array(keys, dtype=np.uint64)
        return {
            **extra,
            "positions": pos,
            "amplitudes": amps,
            "sigmas": sigmas,
            "valid": valid,
            "rotations": rots,
            "radius": radius,
            "frame_index": frame_index,
            "n_atoms": n_atoms,
        }

    def chunk_size(self, structure: Structure) -> int:
        """Images rendered per step inside a batch.

        On the CPU a step's scratch arrays are kept near cache size (measured at edgesize
        128 with 147 atoms: 16 images per step ran 2× faster than 256); on the GPU the whole
        batch is one step.
        """
        if self.backend.is_gpu or self.uses_compiled_kernel:
            return 1 << 30
        per = self._per_image_bytes(structure.max_atoms)
        return int(max(1, min(64, (4 << 20) // per)))

    # ------------------------------------------------------------------ device work
    def _render_chunked(
        self, host: dict[str, np.ndarray], chunk: int, to_host: bool = True
    ) -> dict[str, Any]:
        """Render a batch in steps of ``chunk`` images and join the results."""
        if self.backend.is_gpu:
            return self._render_device(host, to_host)
        n = len(host["rotations"])
        # On the CPU, BLAS runs on one thread and the steps of a batch run on the renderer's
        # threads instead: OpenBLAS's own threads spin-wait on each other whenever another
        # process holds a core (measured at edgesize 128, 147 atoms, on a loaded 2-core
        # machine: 62 images/s with its default threads, 6,200 with one).
        if self._blas is None:  # scanning the loaded libraries costs ~1 ms: do it once
            self._blas = ThreadpoolController()
        pool = self._thread_pool()
        direct: dict[str, np.ndarray] = {}
        if self.uses_compiled_kernel and pool is not None:
            # One step per thread, each running the whole pipeline (rotation, framing, the
            # features' NumPy work, kernel, noise) for its slice, so the NumPy work runs on
            # every core too instead of alone between kernel calls; the kernel writes
            # straight into the batch's arrays (no join). Measured at edgesize 128, 147
            # atoms, 2 cores, against a batch-wide NumPy set-up and a threaded kernel:
            # column correction 1,470 -> 2,820 images/s, phonon jitter 6,880 -> 9,680,
            # noise 2,440 -> 2,920; plain images the same within noise (~55,000).
            chunk = min(chunk, -(-n // self.threads))
            if n > chunk:
                direct = self._direct_outputs(n)
                host = {**host, **{_DIRECT + k: v for k, v in direct.items()}}
        with self._blas.limit(limits=1, user_api="blas"):
            if n <= chunk:
                return self._render_device(host, to_host)
            steps = [{k: v[i : i + chunk] for k, v in host.items()} for i in range(0, n, chunk)]
            parts = list(pool.map(self._render_step, steps)) if pool else [
                self._render_device(step) for step in steps]
        return {k: direct[k] if k in direct else np.concatenate([p[k] for p in parts])
                for k in parts[0]}

    def _direct_outputs(self, n: int) -> dict[str, np.ndarray]:
        """Arrays the compiled kernel fills in place: the un-augmented Gaussian outputs."""
        s = self.settings
        e = s.edgesize
        out = {}
        if "gaussian_2d" in self.output_types and not s.augmented:
            out["gaussian_2d"] = np.empty((n, e, e), dtype=s.image_dtype)
        if "gaussian_3d" in self.output_types:
            out["gaussian_3d"] = np.empty((n, e, e, e), dtype=s.image_dtype)
        return out

    def _render_step(self, host: dict[str, np.ndarray]) -> dict[str, Any]:
        """One step on a pool thread: work inside it stays on this thread (no nested pool)."""
        self._local.in_pool = True
        return self._render_device(host)

    def _render_device(self, host: dict[str, np.ndarray], to_host: bool = True) -> dict[str, Any]:
        """Render one batch on the backend; the requested outputs as host (or device) arrays."""
        s = self.settings
        be = self.backend
        xp = be.xp
        e = s.edgesize
        pos = be.asarray(host["positions"])
        rot = be.asarray(host["rotations"].astype(np.float32))
        amps = be.asarray(host["amplitudes"])
        valid = be.asarray(host["valid"])
        radius = be.asarray(host["radius"])
        rotated = xp.matmul(pos, rot.transpose(0, 2, 1))
        coords, voxel = frame_pixel_coordinates(
            xp,
            rotated,
            framing=s.framing,
            edgesize=e,
            padxyz=s.padxyz,
            pixel_size=s.pixel_size,
            radius=radius,
        )
        wanted = set(self.output_types)
        out: dict[str, Any] = {}
        if s.legacy:
            coords = xp.rint(coords)  # the seed renders from rounded voxel positions
        voxels = coords if s.legacy else None
        if voxels is None and wanted & {"coordinates_3d", "delta_3d", "delta_2d"}:
            voxels = xp.rint(coords)
        if "coordinates_3d" in wanted:
            out["coordinates_3d"] = renderers.coordinates_3d(xp, voxels, valid)
        # every probe component of every atom is one separable Gaussian
        b, nmax, n_comp = amps.shape
        sig_px = be.asarray(host["sigmas"]) / voxel[:, None, None]
        if self._column is not None:
            amps, sig2 = self._column_corrected(coords, amps, sig_px * sig_px, voxel)
            sig_px = xp.sqrt(sig2)
        weights = amps.reshape(b, nmax * n_comp)
        sigma_px = sig_px.reshape(b, nmax * n_comp)

        def components(c: Any) -> Any:
            if n_comp == 1:
                return c
            spread = xp.broadcast_to(c[:, :, None, :], (b, nmax, n_comp, 3))
            return spread.reshape(b, nmax * n_comp, 3)

        gcoords = components(coords)
        for name in ("delta_3d", "delta_2d"):
            if name in wanted:
                out[name] = getattr(renderers, name)(xp, voxels, valid, e)
        mats = None
        if s.legacy and wanted & set(_GAUSSIAN):
            image_sigma = be.to_host(s.gauss_sigma / voxel)
            mats = be.asarray(renderers.legacy_filter_matrices(image_sigma, e))
        for name, ndim in (("gaussian_2d", 2), ("gaussian_3d", 3)):
            if name not in wanted:
                continue
            augmented = ndim == 2 and s.augmented
            images = self._gaussian(ndim, gcoords, weights, sigma_px, voxels, valid, mats,
                                    out.get(f"delta_{ndim}d"), quantised=not augmented,
                                    into=host.get(_DIRECT + name))
            if not augmented:
                out[name] = images
                continue
            # the augmented image; gaussian_2d_clean and every label stay undisturbed
            seen = images
            if s.phonon_jitter or s.scan_distorted:
                moved = coords
                if s.phonon_jitter:  # frozen-phonon snapshot, framed by the undisplaced atoms
                    shift = xp.matmul(be.asarray(host["displacements"]), rot.transpose(0, 2, 1))
                    moved = coords + shift / voxel[:, None, None]
                if s.scan_distorted:
                    offsets = be.asarray(host["scan_offsets"]) / voxel[:, None, None]
                    if self.uses_compiled_kernel:
                        seen = renderers.splat_gaussian(
                            components(moved), weights, sigma_px, e, 2,
                            normalization="float", bitrate=s.bitrate,
                            executor=self._thread_pool(), parts=self.threads,
                            offsets_px=offsets,
                        )
                    else:
                        seen = renderers.gaussian_2d_scanned(
                            xp, components(moved), weights, sigma_px, offsets, e,
                            max_elements=max(1 << 16, self.work_memory // 16),
                        )
                else:
                    seen = self._gaussian(2, components(moved), weights, sigma_px, voxels,
                                          valid, mats, None, quantised=False)
            out.update(self._finish_augmented(be.to_host(seen), be.to_host(images), host,
                                              be.to_host(voxel)))
        scratch = max(1 << 16, self.work_memory // 4)
        radius_px = (s.binary_radius / voxel).astype(coords.dtype)
        for name in ("binary_3d", "binary_2d"):
            if name in wanted:
                out[name] = getattr(renderers, name)(
                    xp, coords, radius_px, valid, e, max_elements=scratch // 32,
                    compiled=self.uses_compiled_labels,
                )
        out["voxel_size"] = voxel.astype(xp.float64)
        if not to_host:
            return {k: be.asarray(v) for k, v in out.items()}
        return {k: be.to_host(v) for k, v in out.items()}

    def _column_corrected(self, coords: Any, amps: Any, sig2: Any, voxel: Any) -> Any:
        """Per-atom column correction: new amplitudes and squared widths (px²), (B, N, G)."""
        xp = self.backend.xp
        if self.uses_compiled_kernel and renderers.compiled_kernel_available("column"):
            x = renderers.column_values_compiled(coords, amps, sig2)
        else:  # every pair, on the device
            x = renderers.column_values(xp, coords, amps, sig2,
                                        max_elements=self.work_memory // 32)
        return self._column.apply(xp, x, amps, sig2, voxel)

    def _finish_augmented(
        self, seen: np.ndarray, clean: np.ndarray, host: dict[str, np.ndarray],
        voxel: np.ndarray,
    ) -> dict[str, np.ndarray]:
        """Add noise to the augmented float images and quantise them beside the clean ones."""
        s = self.settings
        out: dict[str, np.ndarray] = {}
        if s.noisy:
            per_pixel = None if s.dose is None else s.dose * voxel.astype(np.float64) ** 2
            seen = augment.add_noise(
                seen, [tuple(int(v) for v in key) for key in host["keys"]],
                electrons_per_pixel=per_pixel, read_noise=s.read_noise,
                executor=self._thread_pool(),
            )
            if per_pixel is not None:
                out["electrons_per_pixel"] = per_pixel
        if s.scan_distorted:
            out["scan_offsets"] = host["scan_offsets"]
        quant = {"normalization": s.normalization, "bitrate": s.bitrate,
                 "intensity_scale": s.intensity_scale}
        if self.uses_compiled_kernel and renderers.compiled_kernel_available("quantise"):
            # measured, jittered images at 128 px: NumPy's quantise took 45% of the time
            for key, images in (("gaussian_2d", seen), ("gaussian_2d_clean", clean)):
                out[key] = renderers.quantise_compiled(images, **quant)
            return out
        out["gaussian_2d"] = renderers.quantise(np, seen.astype(np.float32, copy=False), **quant)
        out["gaussian_2d_clean"] = renderers.quantise(np, clean.astype(np.float32, copy=False),
                                                      **quant)
        return out

    def _gaussian(
        self, ndim: int, coords: Any, weights: Any, sigma_px: Any, voxels: Any, valid: Any,
        mats: Any, delta: Any, *, quantised: bool = True, into: np.ndarray | None = None,
    ) -> Any:
        """One batch of gaussian_2d (ndim 2) or gaussian_3d (ndim 3), quantised or float.

        ``into``: with the compiled kernel, the array to fill (returned).
        """
        s = self.settings
        xp = self.backend.xp
        e = s.edgesize
        if self.uses_compiled_kernel:
            return renderers.splat_gaussian(
                coords, weights, sigma_px, e, ndim,
                normalization=s.normalization if quantised else "float", bitrate=s.bitrate,
                intensity_scale=s.intensity_scale,
                executor=self._thread_pool(), parts=self.threads, out=into,
            )
        if s.legacy:
            if delta is None:
                delta = getattr(renderers, f"delta_{ndim}d")(xp, voxels, valid, e)
            legacy = renderers.legacy_gaussian_2d if ndim == 2 else renderers.legacy_gaussian_3d
            images = legacy(xp, delta, mats)
        elif ndim == 2:
            images = renderers.gaussian_2d(xp, coords, weights, sigma_px, e)
        else:
            scratch = max(1 << 16, self.work_memory // 4)
            images = renderers.gaussian_3d(
                xp, coords, weights, sigma_px, e, max_elements=scratch // 4
            )
        return self._quantise(images) if quantised else images

    def _thread_pool(self) -> ThreadPoolExecutor | None:
        """The renderer's threads; None with one thread, and on those threads themselves
        (a task waiting on tasks of its own full pool would never finish)."""
        if self.threads < 2 or getattr(self._local, "in_pool", False):
            return None
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.threads, thread_name_prefix="xyz2image")
        return self._executor

    def close(self) -> None:
        """Stop the renderer's threads (safe to call twice)."""
        if self._executor is not None:
            self._executor.shutdown()
            self._executor = None

    def _quantise(self, images: Any) -> Any:
        s = self.settings
        return renderers.quantise(
            self.backend.xp,
            images,
            normalization=s.normalization,
            bitrate=s.bitrate,
            intensity_scale=s.intensity_scale,
            truncate=s.legacy,
        )

    # ------------------------------------------------------------------ public
    def n_images(self, structure: Structure, n_rotation: int) -> int:
        return len(structure.frames) * int(n_rotation)

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
    ) -> Iterator[dict[str, Any]]:
        """Yield consecutive batches of images ``[start, stop)`` of one stack.

        Each batch is a dict of host arrays: the requested outputs plus ``rotations``
        (b, 3, 3), ``voxel_size`` (b,) Å per pixel, ``frame_index`` (b,) and, with
        coordinates_3d, ``n_atoms`` (b,). Every batch is freshly allocated and belongs to
        the caller (a writer may queue it while the next one renders). With
        ``to_host=False`` the arrays stay on the
        backend's device (CuPy arrays on the GPU, e.g. to hand to a training loop through
        DLPack without a host round trip).
        """
        structure = as_structure(structure)
        if int(n_rotation) < 1:
            raise ValueError(f"n_rotation must be >= 1, got {n_rotation}")
        n_rotation = int(n_rotation)
        total = self.n_images(structure, n_rotation)
        stop = total if stop is None else int(stop)
        if not 0 <= start <= stop <= total:
            raise ValueError(f"image range [{start}, {stop}) is outside [0, {total})")
        batch_size = batch_size or self.default_batch_size(structure)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        frames = self._frame_data(structure)
        chunk = self.chunk_size(structure)
        with_counts = "coordinates_3d" in self.output_types
        extra = ["rotations", "frame_index"] + (["n_atoms"] if with_counts else [])
        bounds = [(b0, min(stop, b0 + batch_size)) for b0 in range(start, stop, batch_size)]

        def assemble(b0: int, b1: int) -> dict[str, np.ndarray]:
            return self._assemble(structure, frames, n_rotation, seed, stack, b0, b1)

        if self.backend.is_gpu and to_host:
            yield from gpu_streams.iter_overlapped(
                self.backend, bounds, assemble,
                lambda host: self._render_device(host, to_host=False), extra)
            return
        for b0, b1 in bounds:
            host = assemble(b0, b1)
            batch = self._render_chunked(host, chunk, to_host)
            for key in extra:
                batch[key] = host[key] if to_host else self.backend.asarray(host[key])
            yield batch

    def render(self, structure: Any, n_rotation: int = 1, **kwargs: Any) -> dict[str, np.ndarray]:
        """All images of one stack (or ``start``/``stop`` range) as one dict of host arrays."""
        batches = list(self.iter_batches(structure, n_rotation, **kwargs))
        return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


def render(
    structure: Any,
    n_rotation: int = 1,
    output_types: Sequence[str] = ("gaussian_2d",),
    *,
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
    structure : path, Structure, ase.Atoms, list of Atoms
        What to render (see :func:`xyz2image_gpu.structures.as_structure`).
    n_rotation : int
        Orientations per frame; rotation 0 is the seed's fixed view unless ``all_random``.
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

    Examples
    --------
    >>> from ase.cluster import Icosahedron               # doctest: +SKIP
    >>> out = render(Icosahedron("Au", 4), n_rotation=16, edgesize=64, device="cpu")
    >>> out["gaussian_2d"].shape, out["gaussian_2d"].dtype  # doctest: +SKIP
    ((16, 64, 64), dtype('uint8'))
    """
    renderer = Renderer(RenderSettings(**settings), output_types, device)
    try:
        return renderer.render(
            structure, n_rotation, seed=seed, stack=stack, batch_size=batch_size,
            start=start, stop=stop,
        )
    finally:
        renderer.close()
