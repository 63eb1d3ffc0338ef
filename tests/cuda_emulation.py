"""The package's CUDA kernel sources, compiled by the C compiler and launched on the CPU.

A ``.cu`` file of ``xyz2image_gpu/pipeline/kernels`` is included after ``cuda_emulation.h``
(same folder), which turns each ``__global__`` function into a C function that runs one
thread block, its phases looped over the block's threads (see the header). :func:`build`
compiles that once per source text into a temporary folder and loads it with ctypes;
:meth:`EmulatedKernel.__call__` takes CuPy's ``RawKernel`` call form (grid, block, args,
shared_mem) and runs every block in turn. So the indexing of the very source NVRTC compiles
on a GPU is exercised here, by the kernel tests and by the CuPy stand-in's ``RawKernel``.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shlex
import shutil
import subprocess
import sysconfig
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["KERNELS", "EmulatedKernel", "build", "c_compiler"]

KERNELS = Path(__file__).resolve().parents[1] / "xyz2image_gpu" / "pipeline" / "kernels"

_LOCK = threading.Lock()
_BUILDS: dict[str, ctypes.CDLL] = {}
_TMP: list[tempfile.TemporaryDirectory] = []


def c_compiler() -> list[str] | None:
    """The C compiler Python was built with (``sysconfig``'s CC), or ``cc``; None if none."""
    cc = shlex.split(sysconfig.get_config_var("CC") or "") or ["cc"]
    if shutil.which(cc[0]) is None:
        cc = ["cc"]
    return cc if shutil.which(cc[0]) else None


def _library(code: str) -> ctypes.CDLL:
    key = hashlib.sha256(code.encode()).hexdigest()[:16]
    with _LOCK:
        lib = _BUILDS.get(key)
        if lib is not None:
            return lib
        cc = c_compiler()
        if cc is None:
            raise RuntimeError("no C compiler (sysconfig CC or cc) to build the kernel with")
        tmp = tempfile.TemporaryDirectory(prefix=f"xyz2image-emu-{key}-")
        _TMP.append(tmp)
        folder = Path(tmp.name)
        (folder / "kernel.cu.h").write_text(code)
        (folder / "kernel.c").write_text(
            f'#include "{KERNELS / "cuda_emulation.h"}"\n#include "kernel.cu.h"\n')
        so = folder / "kernel.so"
        # -ffp-contract=off: NVRTC gets --fmad=false, so neither side fuses multiply-adds
        cmd = [*cc, "-std=c99", "-O2", "-fPIC", "-shared", "-ffp-contract=off", "-Wall",
               "-Werror", "-Wno-unused-function", "-I", str(folder), str(folder / "kernel.c"),
               "-o", str(so), "-lm"]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"building the emulated kernel failed:\n{' '.join(cmd)}\n"
                               f"{done.stdout}{done.stderr}")
        lib = ctypes.CDLL(os.fspath(so))
        _BUILDS[key] = lib
        return lib


def _c_arg(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.ctypes.data_as(ctypes.c_void_p)
    if isinstance(value, (np.int32, np.uint32)):
        return ctypes.c_int(int(value))
    if isinstance(value, np.int64):
        return ctypes.c_longlong(int(value))
    if isinstance(value, np.float32):
        return ctypes.c_float(float(value))
    if isinstance(value, (np.float64, float)):
        return ctypes.c_double(float(value))
    if isinstance(value, int):  # CuPy passes a Python int as a 64-bit integer
        return ctypes.c_longlong(value)
    raise TypeError(f"unsupported kernel argument {type(value).__name__}")


class EmulatedKernel:
    """A kernel of ``code`` called ``name``, built for the CPU (see the module)."""

    def __init__(self, code: str, name: str) -> None:
        self.code = code
        self.name = name
        self._lib = _library(code)
        self._fn = getattr(self._lib, name)
        self._fn.restype = None
        self._block = self._lib.xyz_emu_block
        self._block.restype = None
        self._block.argtypes = [ctypes.c_uint, ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p]
        self._errors = self._lib.xyz_emu_errors
        self._errors.restype = ctypes.c_int
        self.launches = 0

    def __call__(self, grid: tuple[int, ...], block: tuple[int, ...], args: tuple[Any, ...],
                 shared_mem: int = 0) -> None:
        """Run every block of a one-dimensional ``grid`` in turn; ``args`` are NumPy arrays
        (passed as pointers) and NumPy scalars (passed by their type, as CuPy does)."""
        grid = tuple(grid) + (1,) * (3 - len(tuple(grid)))
        block = tuple(block) + (1,) * (3 - len(tuple(block)))
        if grid[1:] != (1, 1) or block[1:] != (1, 1):
            raise ValueError("the emulation runs one-dimensional grids and blocks only")
        shared = np.zeros(max(1, int(shared_mem)), dtype=np.uint8)
        c_args = [_c_arg(a) for a in args]
        with _LOCK:  # the emulation's blockIdx and shared buffers are the library's globals
            for b in range(grid[0]):
                shared[...] = 0xCD  # shared memory is not cleared between blocks on a GPU
                self._block(b, grid[0], block[0], shared.ctypes.data_as(ctypes.c_void_p))
                self._fn(*c_args)
            missing = self._errors()
        if missing:
            raise RuntimeError(f"{self.name}: {missing} phases began without a __syncthreads() "
                               "since the previous one (a race on the device)")
        self.launches += 1


def build(name: str, source: str = "splat.cu") -> EmulatedKernel:
    """The kernel ``name`` of ``source`` (a file of the package's kernels folder), its
    headers inlined as NVRTC gets it (``kernels.device.kernel_source``)."""
    from xyz2image_gpu.pipeline.kernels.device import kernel_source

    return EmulatedKernel(kernel_source(source), name)
