"""Wrappers of the optional compiled CPU kernel (``_splat.c``, built at install when a C
compiler is present): Gaussian splats quantised in the same pass, column-correction pair
sums, binary spheres, quantisation, and the augmentations' random draws (``philox.h``, the
same source as the GPU's). Each agrees with its NumPy twin (within one grey level
for Gaussian images, to the byte for labels) and is used only where it measurably wins.
"""

from __future__ import annotations

from concurrent.futures import Executor

import numpy as np

from ...flags import NO_EXTENSION_ENV, no_extension
from .gaussian import PROFILE_FLOOR, SPLAT_CUT_8BIT

__all__ = [
    "NO_EXTENSION_ENV",
    "column_values_compiled",
    "compiled_kernel_available",
    "noise_compiled",
    "phonon_compiled",
    "quantise_compiled",
    "scan_compiled",
    "splat_gaussian",
]

try:  # the optional compiled CPU kernel (see _splat.c and setup.py)
    from . import _splat
except ImportError:  # not built: the NumPy path does the same work
    _splat = None

def compiled_kernel_available(entry: str = "render") -> bool:
    """True when the compiled CPU kernel is built, has ``entry`` (``render``, ``quantise``,
    ``column``, ``binary``, ``noise``, ``noise_absolute`` (noise's ``absolute`` flag),
    ``phonon``, ``scan``: a build older than the package may lack the newer ones) and is not
    disabled by the environment."""
    return _splat is not None and hasattr(_splat, entry) and not no_extension()


def splat_gaussian(
    coords: np.ndarray,
    weights: np.ndarray,
    sigma_px: np.ndarray,
    edgesize: int,
    ndim: int,
    *,
    normalization: str,
    bitrate: int,
    intensity_scale: float | None = None,
    executor: Executor | None = None,
    parts: int = 1,
    offsets_px: np.ndarray | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Gaussian images with the compiled CPU kernel, already quantised.

    Same result as ``quantise(gaussian_2d(...))`` (or 3-D) within float rounding: each atom
    is summed over the window where its profile exceeds exp(-cut) of the peak (cut 16 for
    8-bit images, 25 otherwise). ``parts``
    contiguous slices of the batch run on ``executor`` threads (the kernel releases the GIL).
    ``offsets_px`` (B, E, 2), 2-D only: per-row scan shifts as in :func:`gaussian_2d_scanned`.
    ``out``: a C-contiguous array of the result's shape and dtype to fill (and return).
    """
    if _splat is None:
        raise RuntimeError("the compiled kernel xyz2image_gpu.pipeline.kernels._splat is not built")
    b = coords.shape[0]
    if normalization == "float":
        dtype, mode = np.float32, 0
    else:
        dtype = np.uint8 if bitrate == 8 else np.uint16
        mode = 1 if normalization == "image" else 2
    shape = (b,) + (edgesize,) * ndim
    if out is None:
        out = np.empty(shape, dtype=dtype)
    elif out.shape != shape or out.dtype != dtype or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous {np.dtype(dtype)} array of shape {shape}")
    c = np.ascontiguousarray(coords, dtype=np.float32)
    w = np.ascontiguousarray(weights, dtype=np.float32)
    s = np.ascontiguousarray(sigma_px, dtype=np.float32)
    top = float(2**bitrate - 1)
    scale = float(intensity_scale or 1.0)
    itemsize = out.dtype.itemsize

    cut = SPLAT_CUT_8BIT if dtype is np.uint8 else -PROFILE_FLOOR

    o = np.empty(0, dtype=np.float32)
    if offsets_px is not None:
        o = np.ascontiguousarray(offsets_px, dtype=np.float32)

    def run(lo: int, hi: int) -> None:
        _splat.render(
            c[lo:hi], w[lo:hi], s[lo:hi], out[lo:hi], hi - lo, itemsize, ndim, mode, top,
            scale, cut, o[lo:hi] if o.size else o,
        )

    parts = max(1, min(parts, b))
    if b == 0:
        return out
    if executor is None or parts == 1:
        run(0, b)
    else:
        bounds = [round(i * b / parts) for i in range(parts + 1)]
        for f in [executor.submit(run, lo, hi) for lo, hi in zip(bounds, bounds[1:])]:
            f.result()
    return out


def column_values_compiled(coords: np.ndarray, amps: np.ndarray, sig2: np.ndarray,
                           cut: float = -PROFILE_FLOOR) -> np.ndarray:
    """Each atom's projected image value at its own position, with the compiled kernel.

    ``x_i = sum_j sum_g amps[j, g] exp(-d_ij^2 / (2 sig2[j, g]))`` over the image plane
    (pixel coordinates ``coords[..., :2]``), (B, N) float32; terms below ``exp(-cut)`` of
    their peak are left out.
    """
    if not compiled_kernel_available("column"):
        raise RuntimeError("the compiled kernel xyz2image_gpu.pipeline.kernels._splat is not built")
    b, n, g = amps.shape
    out = np.empty((b, n), dtype=np.float32)
    if b and n:
        _splat.column(np.ascontiguousarray(coords, dtype=np.float32),
                      np.ascontiguousarray(amps, dtype=np.float32),
                      np.ascontiguousarray(sig2, dtype=np.float32), out, b, g, float(cut))
    return out


def _splat_spheres_compiled(centres: np.ndarray, radius_sq: np.ndarray, valid: np.ndarray,
                            edgesize: int, axes: int) -> np.ndarray:
    """:func:`_splat_spheres` with the compiled kernel: the same float32 test, same bytes."""
    if not compiled_kernel_available("binary"):
        raise RuntimeError("the compiled kernel xyz2image_gpu.pipeline.kernels._splat is not built")
    b = radius_sq.shape[0]
    out = np.empty((b,) + (edgesize,) * axes, dtype=bool)
    if b == 0:
        return out
    _splat.binary(np.ascontiguousarray(centres, dtype=np.float32),
                  np.ascontiguousarray(radius_sq, dtype=np.float32),
                  np.ascontiguousarray(valid, dtype=bool).view(np.uint8), out.view(np.uint8),
                  b, axes)
    return out


def quantise_compiled(images: np.ndarray, *, normalization: str, bitrate: int,
                      intensity_scale: float | None = None) -> np.ndarray:
    """:func:`quantise` of float32 host images with the compiled kernel's store loop
    (one pass for ``fixed``, two for ``image``; NumPy needs five with its temporaries).
    Same rounding (to nearest, ties to even) and clipping; ``float`` passes through."""
    if normalization == "float":
        return images.astype(np.float32, copy=False)
    if not compiled_kernel_available("quantise"):
        raise RuntimeError("the compiled kernel xyz2image_gpu.pipeline.kernels._splat is not built")
    if normalization not in ("image", "fixed"):
        raise ValueError(f"unknown normalization {normalization!r}")
    if normalization == "fixed" and intensity_scale is None:
        raise ValueError("normalization='fixed' needs intensity_scale")
    src = np.ascontiguousarray(images, dtype=np.float32)
    out = np.empty(src.shape, dtype=np.uint8 if bitrate == 8 else np.uint16)
    if src.shape[0] and src.size:
        _splat.quantise(src, out, src.shape[0], out.dtype.itemsize,
                        1 if normalization == "image" else 2, float(2**bitrate - 1),
                        float(intensity_scale or 1.0))
    return out


def _stream_arrays(frame: np.ndarray, rotation: np.ndarray, keys: np.ndarray) -> tuple:
    """The draws' per-image frame and rotation (int64) and per-frame keys (uint64), as the
    compiled kernel reads them."""
    return (np.ascontiguousarray(frame, dtype=np.int64),
            np.ascontiguousarray(rotation, dtype=np.int64),
            np.ascontiguousarray(keys, dtype=np.uint64))


def noise_compiled(images: np.ndarray, frame: np.ndarray, rotation: np.ndarray,
                   keys: np.ndarray, *, electrons_per_pixel: np.ndarray | None,
                   read_noise: float, out: np.ndarray | None = None,
                   absolute: bool = False) -> np.ndarray:
    """Shot and read noise of float32 host images (B, ...) with the compiled kernel
    (``philox.h``'s draws, the GPU's own code): image ``i``'s streams are those of
    ``keys[frame[i]]`` and rotation ``rotation[i]``. ``electrons_per_pixel`` (B,): the
    expected count of each image's brightest pixel (None: no shot noise), or with
    ``absolute`` (beam units) the electrons every pixel receives; ``read_noise``: the
    read noise's standard deviation as a fraction of each image's maximum. Returns float32
    (B, ...) (``out``, which may be ``images``, when given)."""
    if not compiled_kernel_available("noise_absolute" if absolute else "noise"):
        raise RuntimeError("the compiled kernel xyz2image_gpu.pipeline.kernels._splat is not built"
                           + (" (or is too old for absolute shot noise)" if absolute else ""))
    src = np.ascontiguousarray(images, dtype=np.float32)
    if out is None:
        out = np.empty(src.shape, dtype=np.float32)
    elif out.shape != src.shape or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous float32 array of shape {src.shape}")
    b = src.shape[0]
    if b == 0 or src.size == 0:
        return out
    electrons = (np.empty(0) if electrons_per_pixel is None
                 else np.ascontiguousarray(electrons_per_pixel, dtype=np.float64))
    # absolute passed only when set: a build older than the flag still serves the rest
    _splat.noise(src, out, *_stream_arrays(frame, rotation, keys), electrons,
                 float(read_noise), b, *((1,) if absolute else ()))
    return out


def phonon_compiled(frame: np.ndarray, rotation: np.ndarray, keys: np.ndarray,
                    rms: np.ndarray) -> np.ndarray:
    """Phonon jitter displacements (B, N, 3) float32, Å, with the compiled kernel: image
    ``i``'s atom ``n`` moves by normals times ``rms[frame[i], n]`` ((F, N) Å)."""
    if not compiled_kernel_available("phonon"):
        raise RuntimeError("the compiled kernel xyz2image_gpu.pipeline.kernels._splat is not built")
    rms = np.ascontiguousarray(rms, dtype=np.float64)
    b, n = len(frame), rms.shape[1]
    out = np.empty((b, n, 3), dtype=np.float32)
    if b and n:
        _splat.phonon(*_stream_arrays(frame, rotation, keys), rms, out, b)
    return out


def scan_compiled(frame: np.ndarray, rotation: np.ndarray, keys: np.ndarray, edgesize: int,
                  jitter: float, drift: float) -> np.ndarray:
    """Per-row scan shifts (B, E, 2) float32, Å along (x, y), with the compiled kernel."""
    if not compiled_kernel_available("scan"):
        raise RuntimeError("the compiled kernel xyz2image_gpu.pipeline.kernels._splat is not built")
    b = len(frame)
    out = np.empty((b, int(edgesize), 2), dtype=np.float32)
    if b:
        _splat.scan(*_stream_arrays(frame, rotation, keys), out, b, float(jitter), float(drift))
    return out
