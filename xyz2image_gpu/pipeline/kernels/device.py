"""Host side of the GPU's own kernels (CUDA C sources in this folder, compiled by NVRTC).

``splat.cu`` renders and quantises gaussian_2d or gaussian_3d in one launch per batch: one
thread block per image, each pixel summed by one thread over the atoms in input order, so the
bytes do not depend on the batch size or on scheduling (see the source). The same source is
compiled by the C compiler in the tests (``cuda_emulation.h``), so its indexing is checked
without a GPU. Kernels are compiled and launched through
:meth:`..backend.Backend.raw_kernel`; nothing here imports CuPy.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from .gaussian import PROFILE_FLOOR, SPLAT_CUT_8BIT

__all__ = ["NVRTC_OPTIONS", "SPLAT", "THREADS", "fits", "kernel_source", "row_mask_bytes",
           "splat_device"]

#: The source file and kernel name of the fused Gaussian images.
SPLAT = ("splat.cu", "xyz2image_gaussian")
#: Threads per block (XYZ_THREADS in the source: its __shared__ arrays are this long).
THREADS = 256
#: Bytes of the kernel's static __shared__ arrays: 256 x (5 floats, 1 double, 7 ints) + 16.
STATIC_SHARED_BYTES = THREADS * (5 * 4 + 8 + 7 * 4) + 16
#: No fused multiply-add: products and sums rounded as written, as the C build
#: (-ffp-contract=off) and _splat.c do.
NVRTC_OPTIONS = ("--fmad=false",)
#: Dynamic shared memory every device grants a block without opting in.
DEFAULT_SHARED_BYTES = 48 * 1024


@lru_cache(maxsize=8)
def kernel_source(filename: str) -> str:
    """The text of a kernel source of this folder."""
    return (Path(__file__).with_name(filename)).read_text()


def splat_device(
    backend: Any, coords: Any, weights: Any, sigma_px: Any, edgesize: int, ndim: int = 2, *,
    normalization: str, bitrate: int, intensity_scale: float | None = None,
    shared_limit: int = DEFAULT_SHARED_BYTES,
) -> Any:
    """gaussian_2d (``ndim`` 2) or gaussian_3d (3) with the fused kernel, quantised (or
    float32 for ``normalization`` ``float``): (B, E, E) or (B, E, E, E) on the device, within
    one grey level of ``quantise(gaussian_2d(...))`` (3-D: ``gaussian_3d``), the compiled CPU
    kernel's algorithm and window cut.

    ``coords`` (B, N, 3), ``weights`` and ``sigma_px`` (B, N) on ``backend``'s device;
    ``shared_limit``: the shared memory a block may use (the float image is kept there when
    it fits, else in a scratch array in device memory).
    """
    xp = backend.xp
    b, n = weights.shape
    e = int(edgesize)
    if normalization == "float":
        dtype, mode = np.float32, 0
    else:
        dtype = np.uint8 if bitrate == 8 else np.uint16
        mode = 1 if normalization == "image" else 2
        if normalization == "fixed" and intensity_scale is None:
            raise ValueError("normalization='fixed' needs intensity_scale")
        if normalization not in ("image", "fixed"):
            raise ValueError(f"unknown normalization {normalization!r}")
    if ndim not in (2, 3):
        raise ValueError(f"ndim must be 2 or 3, got {ndim}")
    out = xp.empty((b,) + (e,) * ndim, dtype=dtype)
    if b == 0:
        return out
    if e**ndim >= 2**31:
        raise ValueError(f"edgesize {e}: {e**ndim} pixels per image, more than the kernel indexes")
    image_bytes = 4 * e**ndim
    mask_bytes = row_mask_bytes(e)
    if not fits(e, shared_limit):
        raise ValueError(f"edgesize {e} needs {STATIC_SHARED_BYTES + mask_bytes} bytes of "
                         f"shared memory per block, more than the {shared_limit} available")
    use_shared = STATIC_SHARED_BYTES + mask_bytes + image_bytes <= shared_limit
    # unused with use_shared; a float image is its own scratch (each pixel is read before
    # it is written, by the one thread that owns it)
    scratch = out if use_shared or mode == 0 else xp.empty(out.shape, dtype=np.float32)
    cut = SPLAT_CUT_8BIT if dtype is np.uint8 else -PROFILE_FLOOR
    kernel = backend.raw_kernel(kernel_source(SPLAT[0]), SPLAT[1], NVRTC_OPTIONS)
    kernel((b,), (THREADS,), (
        xp.ascontiguousarray(coords, dtype=np.float32),
        xp.ascontiguousarray(weights, dtype=np.float32),
        xp.ascontiguousarray(sigma_px, dtype=np.float32),
        np.int32(n), np.int32(e), np.int32(ndim), scratch, np.int32(1 if use_shared else 0), out,
        np.int32(np.dtype(dtype).itemsize), np.int32(mode), np.float32(2**bitrate - 1),
        np.float32(intensity_scale or 1.0), np.float64(cut),
    ), shared_mem=mask_bytes + (image_bytes if use_shared else 0))
    return out


def row_mask_bytes(edgesize: int) -> int:
    """Dynamic shared memory of the kernel's per-row masks of a chunk's atoms."""
    return 4 * int(edgesize) * (-(-THREADS // 32))


def fits(edgesize: int, shared_limit: int) -> bool:
    """Whether the kernel can render images of ``edgesize`` with ``shared_limit`` bytes of
    shared memory per block (the row masks must fit; the image may live in device memory):
    up to about 6,800 pixels with an H100/H200's 227 KiB, 1,080 with the default 48 KiB."""
    return STATIC_SHARED_BYTES + row_mask_bytes(edgesize) <= shared_limit
