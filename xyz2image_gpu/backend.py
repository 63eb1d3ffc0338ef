"""Array backends: the one module that imports CuPy and calls CUDA.

Every other module asks this one for a :class:`Backend` and does its array work through
``backend.xp`` (``numpy`` or ``cupy``): the NumPy path (``cpu_kernel="numpy"``) runs the same
array code the GPU runs, so the NumPy tests exercise it; the compiled CPU kernel is the one
path of its own. What the GPU needs beyond arrays (free device memory, streams, events,
page-locked host buffers, asynchronous copies) is asked of :class:`Backend` too: no other
module calls CUDA. CuPy is imported lazily, once, and only here.

Device selection
----------------
``auto``
    The GPU when CuPy imports, a CUDA device is present *and* a smoke test on it passes
    (:func:`cupy_status`: cuBLAS and NVRTC, which ``import cupy`` does not load), else
    NumPy. The reason for the choice is kept in :attr:`Backend.reason` (``xyz2image-gpu
    info`` prints it).
``cpu``
    NumPy, always.
``gpu``
    CuPy on the current CUDA device; a clear :class:`BackendError` with an install hint when
    that is not possible.

Setting the environment variable ``XYZ2IMAGE_GPU_FORCE_CPU=1`` makes ``auto`` (and ``gpu``)
resolve to the CPU, e.g. to run the NumPy path on a GPU machine.

Before importing CuPy this module sets ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` unless it is set:
the cuBLAS guide's condition for bitwise-reproducible products when several streams share
one cuBLAS handle, as the engine's two streams share CuPy's (see README, Reproducibility).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from .flags import FORCE_CPU_ENV
from .flags import force_cpu as _force_cpu

__all__ = [
    "DEVICES",
    "FORCE_CPU_ENV",
    "Backend",
    "BackendError",
    "RawKernel",
    "available_cores",
    "cupy_status",
    "get_backend",
    "gpu_available",
    "import_cupy",
    "smoke_steps",
    "zarr_gpu_codec",
    "zarr_gpu_config",
]

DEVICES = ("auto", "cpu", "gpu")
INSTALL_HINT = (
    "install CuPy with the CUDA libraries it loads at run time (cuBLAS, NVRTC): "
    "`pip install 'xyz2image-gpu[gpu]'` (cupy-cuda12x[ctk], CUDA 12 drivers) or "
    "`pip install 'xyz2image-gpu[gpu-cuda13]'` (cupy-cuda13x[ctk], CUDA 13 drivers; "
    "`nvidia-smi` shows the driver's CUDA version); with a local CUDA toolkit, plain "
    "cupy-cuda12x / cupy-cuda13x (cupy-cuda11x for CUDA 11) is enough"
)
#: cuBLAS's own setting for bitwise-reproducible results when several streams share one
#: handle (cuBLAS guide, "Results reproducibility"): a fixed workspace per stream, about
#: 24 MiB of device memory. Set before CuPy is imported, unless the user set it.
CUBLAS_WORKSPACE_ENV = "CUBLAS_WORKSPACE_CONFIG"
CUBLAS_WORKSPACE_DEFAULT = ":4096:8"
#: What the smoke test's compiled kernel computes: y = 2 x + 1.
_SMOKE_KERNEL = r"""
extern "C" __global__ void xyz2image_gpu_smoke(const float* x, float* y, const int n) {
    const int i = blockDim.x * blockIdx.x + threadIdx.x;
    if (i < n) y[i] = 2.0f * x[i] + 1.0f;
}
"""


class BackendError(RuntimeError):
    """The requested device cannot be used."""


def import_cupy() -> Any:
    """Import CuPy (ImportError or CUDA errors propagate), first setting
    :data:`CUBLAS_WORKSPACE_ENV` to :data:`CUBLAS_WORKSPACE_DEFAULT` where it is unset, so
    that the cuBLAS handle CuPy creates later gives the same bits whichever of the engine's
    streams runs a product. Has no effect on a handle created before (CuPy used earlier in
    the process with another setting)."""
    os.environ.setdefault(CUBLAS_WORKSPACE_ENV, CUBLAS_WORKSPACE_DEFAULT)
    import cupy

    return cupy


def smoke_steps(cupy: Any) -> tuple[tuple[str, Any], ...]:
    """The device smoke test as ``(step, check)`` pairs; ``check()`` runs one small
    computation on the current device, waits for it and raises when it fails or its result
    is wrong. What a driver-only machine lacks shows here and not at the first render:
    cuBLAS (``libcublas``/``libcublasLt``) for the products, NVRTC for every kernel CuPy
    compiles (elementwise ones included)."""

    def matmul() -> None:
        a = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
        b = np.arange(16, dtype=np.float32).reshape(2, 4, 2)
        got = cupy.asnumpy(cupy.matmul(cupy.asarray(a), cupy.asarray(b)))  # batched GEMM
        if not np.array_equal(got, a @ b):  # small integers: exact in float32
            raise ValueError(f"wrong result {got.ravel().tolist()}")

    def exp() -> None:
        x = np.array([-1.0, 0.0, 0.5, 2.0], dtype=np.float32)
        got = cupy.asnumpy(cupy.exp(cupy.asarray(x)))
        if not np.allclose(got, np.exp(x), rtol=1e-6, atol=0):
            raise ValueError(f"wrong result {got.tolist()}")

    def raw_kernel() -> None:
        nvrtc = getattr(cupy.cuda, "nvrtc", None)
        if nvrtc is not None and hasattr(nvrtc, "getVersion"):
            nvrtc.getVersion()  # loads NVRTC even when the kernel below is in CuPy's cache
        n = 40
        x = np.linspace(-2.0, 2.0, n, dtype=np.float32)
        y = cupy.zeros(n, dtype=cupy.float32)
        kernel = cupy.RawKernel(_SMOKE_KERNEL, "xyz2image_gpu_smoke")
        kernel((2,), (32,), (cupy.asarray(x), y, np.int32(n)))
        got = cupy.asnumpy(y)
        if not np.array_equal(got, 2.0 * x + 1.0):
            raise ValueError(f"wrong result {got.tolist()}")

    return (("cuBLAS matmul", matmul), ("NVRTC elementwise exp", exp),
            ("NVRTC RawKernel compile and launch", raw_kernel))


@lru_cache(maxsize=1)
def cupy_status() -> tuple[Any, str]:
    """Return ``(cupy_module_or_None, reason)``: CuPy when it imports, sees a CUDA device and
    passes the smoke test (:func:`smoke_steps`: a cuBLAS product, an elementwise kernel and
    a compiled ``RawKernel``, each result checked), else None and why, naming the failed
    step, with the install hint. Cached: the test runs once per process."""
    try:
        cupy = import_cupy()
    except Exception as exc:  # noqa: BLE001 - ImportError, or a broken CUDA install raising at import
        return None, f"CuPy is not importable ({type(exc).__name__}: {exc})"
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # noqa: BLE001 - CUDA driver errors have many types
        return None, f"CuPy imports but no CUDA device is usable ({type(exc).__name__}: {exc})"
    if n < 1:
        return None, "CuPy imports but no CUDA device is present"
    try:
        props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
        name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    except Exception as exc:  # noqa: BLE001
        return None, (f"CuPy {cupy.__version__} sees {n} CUDA device(s) but cannot query the "
                      f"current one ({type(exc).__name__}: {exc})")
    for step, check in smoke_steps(cupy):
        try:
            check()
        except Exception as exc:  # noqa: BLE001 - missing libraries raise many types
            return None, (f"CuPy {cupy.__version__} sees {n} CUDA device(s) ({name}) but its "
                          f"smoke test failed at the {step} ({type(exc).__name__}: {exc}); "
                          f"{INSTALL_HINT}")
    return cupy, (f"CuPy {cupy.__version__} with {n} CUDA device(s); using {name} (smoke "
                  f"test passed: cuBLAS matmul, NVRTC exp and RawKernel)")


def available_cores() -> int:
    """CPU cores this process may run on: its affinity where the system reports one (a
    batch scheduler's allocation, ``taskset``), else ``os.cpu_count()``."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # no sched_getaffinity outside Linux
        return max(1, os.cpu_count() or 1)


def gpu_available() -> bool:
    """True when CuPy imports, a CUDA device is present and the CPU is not forced."""
    return not _force_cpu() and cupy_status()[0] is not None


#: zarr's GPU zstd codec (nvCOMP), which ``zarr.config.enable_gpu()`` selects for "zstd" in
#: the zarr versions that have it.
ZARR_GPU_ZSTD = "zarr.codecs.gpu.NvcompZstdCodec"


def zarr_gpu_codec(backend: Backend, codec: str) -> tuple[bool, str]:
    """Whether a zarr store's chunks can be compressed on the GPU, and why (not).

    Yes when the images are rendered by CuPy, the codec is zstd, and this zarr has a GPU
    zstd codec that ``zarr.config.enable_gpu()`` selects (nvCOMP, from the
    ``nvidia-nvcomp`` wheels): then chunks are compressed where they were rendered and only
    compressed bytes cross the bus. The compressed bytes are nvCOMP's, not those of CPU zstd;
    nvCOMP writes standard zstd frames, which CPU readers decode (``gpu_check.py``'s ``zarr``
    stage checks the values on a GPU machine; none has run it yet).

    Parameters
    ----------
    backend : Backend
        The backend that renders.
    codec : str
        The store's codec name (``"zstd"``, ``"lz4"``, ...).

    Returns
    -------
    (bool, str)
        The choice, and its reason in words (the run's manifest records it:
        ``device.store_compression``).
    """
    if not backend.is_gpu:
        return False, "chunks compressed on the CPU: images rendered on the CPU"
    if codec != "zstd":
        return False, (f"chunks compressed on the CPU: zarr's GPU codec is zstd's, the store "
                       f"uses {codec}")
    try:
        import zarr
    except ImportError as exc:
        return False, f"chunks compressed on the CPU: zarr is not importable ({exc})"
    try:
        from zarr.codecs import gpu as zarr_gpu  # noqa: F401 - presence is the question

        with zarr.config.enable_gpu():
            chosen = str(zarr.config.get("codecs.zstd"))
    except Exception as exc:  # noqa: BLE001 - ImportError, or nvCOMP failing to load
        return False, (f"chunks compressed on the CPU: zarr {zarr.__version__} has no GPU "
                       f"zstd codec ({type(exc).__name__}: {exc}); a zarr with "
                       f"{ZARR_GPU_ZSTD} and nvidia-nvcomp-cu12 (or -cu13) adds it")
    if chosen != ZARR_GPU_ZSTD:
        return False, (f"chunks compressed on the CPU: zarr.config.enable_gpu() selects "
                       f"{chosen} for zstd, not {ZARR_GPU_ZSTD}")
    return True, f"chunks compressed on the GPU ({ZARR_GPU_ZSTD}, nvCOMP)"


def zarr_gpu_config() -> Any:
    """Context manager: zarr's GPU buffers and codecs (``zarr.config.enable_gpu()``)."""
    import zarr

    return zarr.config.enable_gpu()


@dataclass(frozen=True)
class Backend:
    """An array module and the facts about it that the engine needs.

    Attributes
    ----------
    name : str
        ``"numpy"`` or ``"cupy"``.
    xp : module
        ``numpy`` or ``cupy``.
    reason : str
        Why this backend was chosen (for humans).
    """

    name: str
    xp: Any
    reason: str

    @property
    def is_gpu(self) -> bool:
        return self.name == "cupy"

    def asarray(self, a: Any, dtype: Any = None) -> Any:
        """Copy a host array to the device (no copy on NumPy when dtype already matches)."""
        return self.xp.asarray(a, dtype=dtype)

    def to_host(self, a: Any) -> np.ndarray:
        """Return ``a`` as a NumPy array (one device-to-host transfer on CuPy)."""
        if self.is_gpu:
            return self.xp.asnumpy(a)
        return np.asarray(a)

    def free_memory(self) -> int | None:
        """Device memory available to a batch, in bytes; None on NumPy (no device).

        The device's free memory plus what CuPy's memory pool holds cached and unused: the
        pool keeps freed blocks for reuse instead of returning them, so after a first render
        ``memGetInfo`` alone would count the renderer's own cache as taken.
        """
        if not self.is_gpu:
            return None
        free, _total = self.xp.cuda.runtime.memGetInfo()
        return int(free) + int(self.xp.get_default_memory_pool().free_bytes())

    def synchronize(self) -> None:
        """Wait for all queued device work (no-op on NumPy); use before reading a timer.

        The whole device, not only the current stream: the engine queues its batches on
        streams of its own (:meth:`new_stream`) that the current stream does not wait for.
        """
        if self.is_gpu:
            self.xp.cuda.Device().synchronize()

    # -- the package's own kernels (CuPy only) --------------------------------------------
    def raw_kernel(self, code: str, name: str, options: tuple[str, ...] = ()) -> RawKernel:
        """The CUDA C kernel ``name`` of ``code``, compiled by NVRTC with ``options`` (once
        per process; CuPy also caches the binary on disk), as a :class:`RawKernel`."""
        if not self.is_gpu:
            raise BackendError("raw_kernel needs the GPU backend")
        return _raw_kernel(self.xp, code, name, tuple(options))

    def shared_memory_per_block(self) -> int:
        """Shared memory one thread block may use, in bytes, opting in beyond the default
        48 KiB where the device allows (227 KiB on an H100/H200); 0 on NumPy."""
        if not self.is_gpu:
            return 0
        try:
            return int(self.xp.cuda.Device().attributes["MaxSharedMemoryPerBlockOptin"])
        except Exception:  # noqa: BLE001 - an older CuPy or driver: the default every device has
            return RawKernel.DEFAULT_SHARED_BYTES

    # -- overlapping transfers with compute (CuPy only) -----------------------------------
    def new_stream(self) -> Any:
        """A CUDA stream that does not synchronise with the legacy default stream.

        Work is queued on it inside :meth:`on_stream`. Device memory freed on a stream goes
        back to CuPy's pool for that stream only: keep streams for reuse (a new stream never
        reuses the blocks cached for another).
        """
        return self.xp.cuda.Stream(non_blocking=True)

    def on_stream(self, stream: Any) -> Any:
        """A context manager: device work and copies inside it are queued on ``stream``."""
        return stream

    def new_event(self) -> Any:
        """A CUDA event for :meth:`record` and :meth:`wait`: blocking (a wait sleeps
        instead of spinning a core at 100%) and without timing (cheaper to record)."""
        return self.xp.cuda.Event(block=True, disable_timing=True)

    def record(self, event: Any, stream: Any) -> Any:
        """Record ``event`` on ``stream``: it completes when the work queued before it has."""
        event.record(stream)
        return event

    def wait(self, event: Any) -> None:
        """Block the host until ``event`` has completed (a host synchronisation)."""
        event.synchronize()

    def stream_wait(self, stream: Any, event: Any) -> None:
        """Make ``stream`` wait for ``event`` on the device; the host does not wait."""
        stream.wait_event(event)

    def synchronize_stream(self, stream: Any) -> None:
        """Block the host until the work queued on ``stream`` is done."""
        stream.synchronize()

    def pinned_empty(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        """A NumPy array in page-locked host memory: device-to-host copies into it can run
        asynchronously (from pageable memory CUDA copies through a staging buffer and the
        host waits)."""
        dtype = np.dtype(dtype)
        count = int(np.prod(shape, dtype=np.int64))
        mem = self.xp.cuda.alloc_pinned_memory(max(1, count * dtype.itemsize))
        return np.ndarray(shape, dtype=dtype, buffer=mem)  # as cupyx.empty_pinned does

    def copy_to_host_async(self, a: Any, out: np.ndarray, stream: Any) -> Any:
        """Queue the copy of device array ``a`` into ``out`` (pinned, same shape and dtype)
        on ``stream``; the host does not wait. Read ``out`` only after the stream (or an
        event recorded after this call) has been synchronised.

        Returns the device array the copy reads (``a``, or a C-ordered copy of it): keep it
        alive until then, as ``a`` itself.
        """
        a = self.xp.ascontiguousarray(a)  # a C-ordered device array copies as one block
        try:
            self.xp.asnumpy(a, stream=stream, out=out, blocking=False)
        except TypeError:  # CuPy < 13 has no ``blocking``: a copy on a given stream is async
            self.xp.asnumpy(a, stream=stream, out=out)
        return a


class RawKernel:
    """A compiled CUDA kernel, called as CuPy's ``RawKernel``: ``kernel(grid, block, args,
    shared_mem=bytes)``. Asks for more than the default 48 KiB of dynamic shared memory
    (``max_dynamic_shared_size_bytes``) before a launch that needs it."""

    DEFAULT_SHARED_BYTES = 48 * 1024

    def __init__(self, kernel: Any) -> None:
        self.kernel = kernel
        self._shared_granted = 0

    def __call__(self, grid: tuple[int, ...], block: tuple[int, ...], args: tuple[Any, ...],
                 shared_mem: int = 0) -> None:
        shared_mem = int(shared_mem)
        if shared_mem > self.DEFAULT_SHARED_BYTES and shared_mem > self._shared_granted:
            self.kernel.max_dynamic_shared_size_bytes = shared_mem
            self._shared_granted = shared_mem
        self.kernel(grid, block, args, shared_mem=shared_mem)


@lru_cache(maxsize=32)
def _raw_kernel(xp: Any, code: str, name: str, options: tuple[str, ...]) -> RawKernel:
    return RawKernel(xp.RawKernel(code, name, options=options))


_NUMPY = Backend("numpy", np, "NumPy on the CPU")


def get_backend(device: str | Backend = "auto") -> Backend:
    """Resolve ``device`` (``auto``, ``cpu``, ``gpu`` or a :class:`Backend`) to a backend.

    Raises
    ------
    BackendError
        ``device="gpu"`` and CuPy or a CUDA device is missing, or ``device`` is unknown.
    """
    if isinstance(device, Backend):
        return device
    device = str(device).lower()
    if device not in DEVICES:
        raise BackendError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    if device == "cpu":
        return Backend("numpy", np, "NumPy on the CPU (requested with device=cpu)")
    if _force_cpu():
        if device == "gpu":
            raise BackendError(
                f"device=gpu was requested but {FORCE_CPU_ENV} is set; unset it to use the GPU"
            )
        return Backend("numpy", np, f"NumPy on the CPU ({FORCE_CPU_ENV} is set)")
    cupy, why = cupy_status()
    if cupy is not None:
        return Backend("cupy", cupy, why)
    if device == "gpu":
        hint = "" if INSTALL_HINT in why else f"; {INSTALL_HINT}"
        raise BackendError(f"device=gpu was requested but {why}{hint}")
    return Backend("numpy", np, f"NumPy on the CPU, because {why}")
