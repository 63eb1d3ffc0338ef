"""Host side of the GPU's own kernels (CUDA C sources in this folder, compiled by NVRTC).

``splat.cu`` renders and quantises gaussian_2d or gaussian_3d in one launch per batch: one
thread block per image, each pixel summed by one thread over the atoms in input order, so the
bytes do not depend on the batch size or on scheduling (see the source). ``random.cu`` draws
the augmentations (phonon jitter, scan shifts; shot and read noise applied and quantised in
one launch) with ``philox.h``, the code the compiled CPU kernel runs too. ``legacy.cu``
builds legacy mode's filter matrices from the pixel sizes where they are, on the device.
The same sources are compiled by the C compiler in the tests (``cuda_emulation.h``), so
their indexing is checked without a GPU. Kernels are compiled and launched through
:meth:`..backend.Backend.raw_kernel`; nothing here imports CuPy.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from .gaussian import PROFILE_FLOOR, SPLAT_CUT_8BIT

__all__ = ["LEGACY", "NOISE", "NVRTC_OPTIONS", "PHONON", "SCAN", "SPLAT", "THREADS", "fits",
           "kernel_source", "legacy_filter_device", "noise_device", "phonon_device",
           "row_mask_bytes", "scan_device", "splat_device"]

#: The source file and kernel name of the fused Gaussian images.
SPLAT = ("splat.cu", "xyz2image_gaussian")
#: The source file and kernel name of legacy mode's filter matrices.
LEGACY = ("legacy.cu", "xyz2image_legacy_filter")
#: The source file and kernel names of the augmentations' draws.
NOISE = ("random.cu", "xyz2image_noise")
PHONON = ("random.cu", "xyz2image_phonon")
SCAN = ("random.cu", "xyz2image_scan")
#: Threads per block (XYZ_THREADS in the source: its __shared__ arrays are this long).
THREADS = 256
#: Bytes of the kernel's static __shared__ arrays: 256 x (5 floats, 2 doubles, 7 ints) + 16.
STATIC_SHARED_BYTES = THREADS * (5 * 4 + 2 * 8 + 7 * 4) + 16
#: No fused multiply-add: products and sums rounded as written, as the C build
#: (-ffp-contract=off) and _splat.c do.
NVRTC_OPTIONS = ("--fmad=false",)
#: Dynamic shared memory every device grants a block without opting in.
DEFAULT_SHARED_BYTES = 48 * 1024


_INCLUDE = re.compile(r'^#include "([A-Za-z0-9_]+\.h)"$', re.MULTILINE)


@lru_cache(maxsize=8)
def kernel_source(filename: str) -> str:
    """The text of a kernel source of this folder, its ``#include "x.h"`` lines of this
    folder's headers replaced by their text (NVRTC gets one self-contained source, and
    CuPy's cache, keyed by the text, sees a change to a header)."""
    text = (Path(__file__).with_name(filename)).read_text()
    return _INCLUDE.sub(lambda m: kernel_source(m.group(1)), text)


def splat_device(
    backend: Any, coords: Any, weights: Any, sigma_px: Any, edgesize: int, ndim: int = 2, *,
    normalization: str, bitrate: int, intensity_scale: float | None = None,
    shared_limit: int = DEFAULT_SHARED_BYTES, offsets_px: Any = None,
) -> Any:
    """gaussian_2d (``ndim`` 2) or gaussian_3d (3) with the fused kernel, quantised (or
    float32 for ``normalization`` ``float``): (B, E, E) or (B, E, E, E) on the device, within
    one grey level of ``quantise(gaussian_2d(...))`` (3-D: ``gaussian_3d``), the compiled CPU
    kernel's algorithm and window cut.

    ``coords`` (B, N, 3), ``weights`` and ``sigma_px`` (B, N) on ``backend``'s device;
    ``shared_limit``: the shared memory a block may use (the float image is kept there when
    it fits, else in a scratch array in device memory). ``offsets_px`` (B, E, 2), 2-D only:
    per-row scan shifts in pixels, as :func:`.gaussian.gaussian_2d_scanned` and the compiled
    kernel's ``offsets``.
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
    if offsets_px is not None and ndim != 2:
        raise ValueError("scan offsets apply to 2-D images only")
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
        weights if offsets_px is None else xp.ascontiguousarray(offsets_px, dtype=np.float32),
        np.int32(0 if offsets_px is None else 1),
    ), shared_mem=mask_bytes + (image_bytes if use_shared else 0))
    return out


def row_mask_bytes(edgesize: int) -> int:
    """Dynamic shared memory of the kernel's per-row masks of a chunk's atoms."""
    return 4 * int(edgesize) * (-(-THREADS // 32))


def fits(edgesize: int, shared_limit: int) -> bool:
    """Whether the kernel can render images of ``edgesize`` with ``shared_limit`` bytes of
    shared memory per block (the row masks must fit; the image may live in device memory):
    up to about 6,750 pixels with an H100/H200's 227 KiB, 1,020 with the default 48 KiB."""
    return STATIC_SHARED_BYTES + row_mask_bytes(edgesize) <= shared_limit


def _stored_form(normalization: str, bitrate: int,
                 intensity_scale: float | None) -> tuple[np.dtype, int]:
    """The output dtype and the kernels' store mode (0 float, 1 image, 2 fixed)."""
    if normalization == "float":
        return np.dtype(np.float32), 0
    if normalization not in ("image", "fixed"):
        raise ValueError(f"unknown normalization {normalization!r}")
    if normalization == "fixed" and intensity_scale is None:
        raise ValueError("normalization='fixed' needs intensity_scale")
    return np.dtype(np.uint8 if bitrate == 8 else np.uint16), 1 if normalization == "image" else 2


def _streams(xp: Any, frame: Any, rotation: Any, keys: Any) -> tuple:
    return (xp.ascontiguousarray(frame, dtype=np.int64),
            xp.ascontiguousarray(rotation, dtype=np.int64),
            xp.ascontiguousarray(keys, dtype=np.uint64))


def noise_device(
    backend: Any, images: Any, frame: Any, rotation: Any, keys: Any, *,
    electrons_per_pixel: Any | None, read_noise: float, normalization: str, bitrate: int,
    intensity_scale: float | None = None, overwrite: bool = False, absolute: bool = False,
) -> Any:
    """Shot and read noise of float32 images (B, E, E) on the device, quantised in the same
    launch (``random.cu``): the stored form, (B, E, E). Image ``i`` draws from the streams of
    ``keys[frame[i]]`` and rotation ``rotation[i]`` (all device arrays); the same numbers as
    :func:`.compiled.noise_compiled` followed by the compiled quantisation. With neither
    ``electrons_per_pixel`` nor ``read_noise`` it only quantises. ``electrons_per_pixel``:
    each image's brightest pixel's expected count, or with ``absolute`` (beam units) the
    electrons every pixel receives (see :func:`xyz2image_gpu.physics.augment.add_noise`).
    With ``overwrite`` the noisy float image is kept in ``images`` (else in a new array): the
    float32 result is then ``images`` itself."""
    xp = backend.xp
    dtype, mode = _stored_form(normalization, bitrate, intensity_scale)
    images = xp.ascontiguousarray(images, dtype=np.float32)
    b = images.shape[0]
    noise = electrons_per_pixel is not None or read_noise > 0
    noisy = images if overwrite or not noise else xp.empty(images.shape, dtype=np.float32)
    out = noisy if mode == 0 else xp.empty(images.shape, dtype=dtype)
    if b == 0 or images.size == 0:
        return out
    pixels = int(np.prod(images.shape[1:]))
    if pixels >= 2**31:
        raise ValueError(f"{pixels} pixels per image, more than the kernel indexes")
    shot = electrons_per_pixel is not None
    electrons = (xp.ascontiguousarray(electrons_per_pixel, dtype=np.float64) if shot
                 else xp.zeros(1, dtype=np.float64))
    kernel = backend.raw_kernel(kernel_source(NOISE[0]), NOISE[1], NVRTC_OPTIONS)
    kernel((b,), (THREADS,), (
        images, noisy, *_streams(xp, frame, rotation, keys), electrons,
        np.int32(1 if shot else 0), np.int32(1 if absolute else 0), np.float64(read_noise),
        np.int32(pixels), out,
        np.int32(dtype.itemsize), np.int32(mode), np.float32(2**bitrate - 1),
        np.float32(intensity_scale or 1.0),
    ))
    return out


def phonon_device(backend: Any, frame: Any, rotation: Any, keys: Any, rms: Any) -> Any:
    """Phonon jitter displacements (B, N, 3) float32, Å, on the device (``random.cu``):
    image ``i``'s atom ``n`` moves by normals times ``rms[frame[i], n]`` ((F, N) float64, Å)."""
    xp = backend.xp
    b, n = frame.shape[0], rms.shape[1]
    out = xp.empty((b, n, 3), dtype=np.float32)
    if b and n:
        kernel = backend.raw_kernel(kernel_source(PHONON[0]), PHONON[1], NVRTC_OPTIONS)
        kernel((b,), (THREADS,), (*_streams(xp, frame, rotation, keys),
                                  xp.ascontiguousarray(rms, dtype=np.float64), np.int32(n), out))
    return out


def scan_device(backend: Any, frame: Any, rotation: Any, keys: Any, edgesize: int,
                jitter: float, drift: float) -> Any:
    """Per-row scan shifts (B, E, 2) float32, Å along (x, y), on the device (``random.cu``)."""
    xp = backend.xp
    b = frame.shape[0]
    out = xp.empty((b, int(edgesize), 2), dtype=np.float32)
    if b:
        kernel = backend.raw_kernel(kernel_source(SCAN[0]), SCAN[1], NVRTC_OPTIONS)
        kernel((b,), (THREADS,), (*_streams(xp, frame, rotation, keys), np.int32(edgesize),
                                  np.float64(jitter), np.float64(drift), out))
    return out


def legacy_filter_device(backend: Any, sigma_px: Any, edgesize: int,
                         truncate: float = 4.0) -> Any:
    """Legacy mode's filter matrices (B, E, E) float64 on the device (``legacy.cu``), from
    the widths ``sigma_px`` (B,) (pixels, on the device): :func:`.legacy.legacy_filter_matrices`
    without reading the widths back (within a few double ulps of it: the normalising sum runs
    in another order)."""
    xp = backend.xp
    b, e = sigma_px.shape[0], int(edgesize)
    out = xp.empty((b, e, e), dtype=np.float64)
    if b:
        kernel = backend.raw_kernel(kernel_source(LEGACY[0]), LEGACY[1], NVRTC_OPTIONS)
        kernel((b,), (THREADS,), (xp.ascontiguousarray(sigma_px, dtype=np.float32),
                                  np.int32(e), np.float64(truncate), out))
    return out
