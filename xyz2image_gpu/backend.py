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
    The GPU when CuPy imports *and* a CUDA device is present, else NumPy. The reason for the
    choice is kept in :attr:`Backend.reason` (``xyz2image-gpu info`` prints it).
``cpu``
    NumPy, always.
``gpu``
    CuPy on the current CUDA device; a clear :class:`BackendError` with an install hint when
    that is not possible.

Setting the environment variable ``XYZ2IMAGE_GPU_FORCE_CPU=1`` makes ``auto`` (and ``gpu``)
resolve to the CPU, e.g. to run the NumPy path on a GPU machine.
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
    "available_cores",
    "cupy_status",
    "get_backend",
    "gpu_available",
]

DEVICES = ("auto", "cpu", "gpu")
INSTALL_HINT = (
    "install the GPU extra matching your CUDA toolkit, e.g. "
    "`pip install 'xyz2image-gpu[gpu]'` (cupy-cuda12x) or `pip install cupy-cuda11x`"
)


class BackendError(RuntimeError):
    """The requested device cannot be used."""


@lru_cache(maxsize=1)
def cupy_status() -> tuple[Any, str]:
    """Return ``(cupy_module_or_None, reason)``: whether CuPy imports and sees a device."""
    try:
        import cupy
    except Exception as exc:  # noqa: BLE001 - ImportError, or a broken CUDA install raising at import
        return None, f"CuPy is not importable ({type(exc).__name__}: {exc})"
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # noqa: BLE001 - CUDA driver errors have many types
        return None, f"CuPy imports but no CUDA device is usable ({type(exc).__name__}: {exc})"
    if n < 1:
        return None, "CuPy imports but no CUDA device is present"
    props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
    name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    return cupy, f"CuPy {cupy.__version__} with {n} CUDA device(s); using {name}"


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
        raise BackendError(f"device=gpu was requested but {why}; {INSTALL_HINT}")
    return Backend("numpy", np, f"NumPy on the CPU, because {why}")
