"""Renderers: one function per output type, each for a whole batch in one tensor.

All functions take ``xp`` (``numpy`` or ``cupy``) and batched pixel coordinates from
:mod:`xyz2image_gpu.framing`, and return device arrays. Nothing here transfers to the host.

Gaussian images use the separable form of a sum of isotropic Gaussians,
``image = Gx^T diag(w) Gy`` with ``Gx[b, a, i] = exp(-(i - x_ba)^2 / (2 s_b^2))``: one
batched matrix product (BLAS on the CPU, cuBLAS on the GPU), exact at sub-pixel positions,
with no truncation of the kernel. Each atom's peak equals its weight ``w``.

The ``legacy_*`` functions reproduce the original script instead: positions rounded to
voxels, each occupied voxel counted once, SciPy ``gaussian_filter`` semantics (``reflect``
border, kernel truncated at 4 sigma and normalised to sum 1), applied as dense per-image
filter matrices ``M D M^T``.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import Executor
from typing import Any

import numpy as np

try:  # the optional compiled CPU kernel (see _splat.c and setup.py)
    from . import _splat
except ImportError:  # not built: the NumPy path does the same work
    _splat = None

#: Set to 1 to ignore the compiled CPU kernel and use the NumPy (BLAS) path.
NO_EXTENSION_ENV = "XYZ2IMAGE_GPU_NO_EXTENSION"

__all__ = [
    "NO_EXTENSION_ENV",
    "axis_profiles",
    "binary_2d",
    "binary_3d",
    "compiled_kernel_available",
    "coordinates_3d",
    "delta_2d",
    "delta_3d",
    "gaussian_2d",
    "gaussian_2d_scanned",
    "gaussian_3d",
    "legacy_filter_matrices",
    "legacy_gaussian_2d",
    "legacy_gaussian_3d",
    "quantise",
    "splat_gaussian",
]


#: Profiles are cut to exactly 0 below exp(-25) ≈ 1.4e-11 of the peak instead of decaying
#: into float32 subnormals, whose products make BLAS and FMA units fall back to microcode
#: (measured: 561 atoms at edgesize 128 ran ~50× slower). Every non-zero profile value is
#: then >= 1.4e-11, so even products of three stay normal floats.
PROFILE_FLOOR = -25.0


#: The compiled kernel leaves out profile tails below exp(-cut) of an atom's peak. For 8-bit
#: images exp(-16) ≈ 1.1e-7 is far below half a grey level (2e-3 of the brightest pixel) even
#: summed over hundreds of neighbours, and its window is 20% narrower than exp(-25)'s
#: (measured 1.5× faster at edgesize 128); 16-bit and float outputs use exp(-25).
SPLAT_CUT_8BIT = 16.0


def axis_profiles(xp: Any, centres: Any, sigma_px: Any, edgesize: int) -> Any:
    """1-D Gaussian profiles ``exp(-(i - c)^2 / (2 s^2))`` of shape (B, N, E), float32.

    ``centres`` (B, N) pixel coordinates; ``sigma_px`` (B, N) widths in pixels.
    """
    grid = xp.arange(edgesize, dtype=centres.dtype)
    d = grid[None, None, :] - centres[:, :, None]
    d *= d
    d *= (-0.5 / (sigma_px * sigma_px)).astype(centres.dtype)[:, :, None]
    return _clamped_exp(xp, d)


def gaussian_2d(xp: Any, coords: Any, weights: Any, sigma_px: Any, edgesize: int) -> Any:
    """Sum of weighted 2-D Gaussians projected along z: float32 (B, E, E).

    ``coords`` (B, N, 3) pixels, ``weights`` (B, N) peak heights, ``sigma_px`` (B, N).
    """
    gx = axis_profiles(xp, coords[:, :, 0], sigma_px, edgesize)
    gx *= weights[:, :, None]
    gy = axis_profiles(xp, coords[:, :, 1], sigma_px, edgesize)
    return xp.matmul(gx.transpose(0, 2, 1), gy)


def gaussian_2d_scanned(
    xp: Any, coords: Any, weights: Any, sigma_px: Any, offsets_px: Any, edgesize: int, *,
    max_elements: int,
) -> Any:
    """gaussian_2d seen through a distorted scan: row ``i`` shows the atoms shifted by
    ``offsets_px[b, i]`` (x, y) pixels (drift and scan-line jitter). Float32 (B, E, E).

    Rows are the slow scan axis (0), columns the fast axis (1); each row is taken as
    acquired at one instant. No longer separable over the whole image, so each row has its
    own y profiles: ``E*N*E`` exponentials per image, built for at most ``max_elements``
    floats at once.
    """
    b, n, _ = coords.shape
    e = edgesize
    grid = xp.arange(e, dtype=coords.dtype)
    inv = (-0.5 / (sigma_px * sigma_px)).astype(coords.dtype)  # (B, N)
    out = xp.empty((b, e, e), dtype=coords.dtype)
    step = max(1, max_elements // max(1, e * n * e))
    for s in range(0, b, step):
        sl = slice(s, s + step)
        # x profile of atom a in row i: exp(-(i - x_a - ox_i)^2 / 2s^2), (b', E, N)
        dx = (grid[None, :] - offsets_px[sl, :, 0])[:, :, None] - coords[sl, None, :, 0]
        dx *= dx
        dx *= inv[sl, None, :]
        gx = _clamped_exp(xp, dx) * weights[sl, None, :]
        # y profiles of every row: (b', E, N, E)
        centres_y = coords[sl, None, :, 1] + offsets_px[sl, :, 1][:, :, None]
        dy = grid[None, None, None, :] - centres_y[:, :, :, None]
        dy *= dy
        dy *= inv[sl, None, :, None]
        gy = _clamped_exp(xp, dy)
        out[sl] = xp.matmul(gx[:, :, None, :], gy)[:, :, 0, :]
    return out


def _clamped_exp(xp: Any, d: Any) -> Any:
    """``exp(d)`` in place for d <= 0, cut to exactly 0 below exp(PROFILE_FLOOR)."""
    xp.maximum(d, PROFILE_FLOOR, out=d)
    keep = d > PROFILE_FLOOR
    xp.exp(d, out=d)
    d *= keep
    return d


def gaussian_3d(
    xp: Any, coords: Any, weights: Any, sigma_px: Any, edgesize: int, *, max_elements: int
) -> Any:
    """Sum of weighted 3-D Gaussians: float32 (B, E, E, E).

    ``G[i, (j, k)] = sum_a w_a gx_a(i) (gy_a ⊗ gz_a)(j, k)``, one matrix product per image;
    the (N, E*E) outer-product operand is built for at most ``max_elements`` floats at once.
    """
    b, n, _ = coords.shape
    e = edgesize
    out = xp.empty((b, e, e, e), dtype=coords.dtype)
    gx = axis_profiles(xp, coords[:, :, 0], sigma_px, e)
    gx *= weights[:, :, None]
    gy = axis_profiles(xp, coords[:, :, 1], sigma_px, e)
    gz = axis_profiles(xp, coords[:, :, 2], sigma_px, e)
    step = max(1, max_elements // max(1, n * e * e))
    for s in range(0, b, step):
        sl = slice(s, s + step)
        yz = (gy[sl, :, :, None] * gz[sl, :, None, :]).reshape(-1, n, e * e)
        out[sl] = xp.matmul(gx[sl].transpose(0, 2, 1), yz).reshape(-1, e, e, e)
    return out


def compiled_kernel_available(entry: str = "render") -> bool:
    """True when the compiled CPU kernel is built, has ``entry`` (``render``, ``quantise``,
    ``column``, ``binary``: a build older than the package may lack the newer ones) and is
    not disabled by the environment."""
    flag = os.environ.get(NO_EXTENSION_ENV, "").strip().lower()
    return _splat is not None and hasattr(_splat, entry) and flag in ("", "0", "false", "no")


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
        raise RuntimeError("the compiled kernel xyz2image_gpu._splat is not built")
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
        raise RuntimeError("the compiled kernel xyz2image_gpu._splat is not built")
    b, n, g = amps.shape
    out = np.empty((b, n), dtype=np.float32)
    if b and n:
        _splat.column(np.ascontiguousarray(coords, dtype=np.float32),
                      np.ascontiguousarray(amps, dtype=np.float32),
                      np.ascontiguousarray(sig2, dtype=np.float32), out, b, g, float(cut))
    return out


def coordinates_3d(xp: Any, voxels: Any, valid: Any) -> Any:
    """Nearest voxel of each atom as int16 (B, N, 3); padding rows are -1.

    ``voxels`` are the rounded float coordinates (``rint``); values beyond the int16 range
    (atoms far outside a fixed field of view) saturate instead of wrapping around.
    """
    out = xp.clip(voxels, -32768, 32767).astype(xp.int16)
    out[~valid] = -1
    return out


def _in_bounds(xp: Any, voxels: Any, valid: Any, edgesize: int, axes: int) -> Any:
    ok = valid.copy()
    for k in range(axes):
        ok &= (voxels[..., k] >= 0) & (voxels[..., k] <= edgesize - 1)
    return ok


def delta_3d(xp: Any, voxels: Any, valid: Any, edgesize: int) -> Any:
    """Bool (B, E, E, E), True at every atom's voxel (``voxels``: rounded float coords)."""
    b = voxels.shape[0]
    e = edgesize
    out = xp.zeros((b, e, e, e), dtype=bool)
    ok = _in_bounds(xp, voxels, valid, e, 3)
    bi, ai = xp.nonzero(ok)
    v = voxels[bi, ai].astype(xp.int64)
    out[bi, v[:, 0], v[:, 1], v[:, 2]] = True
    return out


def delta_2d(xp: Any, voxels: Any, valid: Any, edgesize: int) -> Any:
    """Bool (B, E, E): delta_3d projected along z (atoms outside the z range are dropped)."""
    b = voxels.shape[0]
    e = edgesize
    out = xp.zeros((b, e, e), dtype=bool)
    ok = _in_bounds(xp, voxels, valid, e, 3)
    bi, ai = xp.nonzero(ok)
    v = voxels[bi, ai].astype(xp.int64)
    out[bi, v[:, 0], v[:, 1]] = True
    return out


def _splat_offsets(xp: Any, reach: int, axes: int) -> Any:
    r = xp.arange(-reach, reach + 1, dtype=xp.int64)
    grids = xp.meshgrid(*([r] * axes), indexing="ij")
    return xp.stack([g.ravel() for g in grids], axis=1)  # (M, axes)


def _splat_spheres(
    xp: Any,
    centres: Any,
    radius_sq: Any,
    valid: Any,
    edgesize: int,
    axes: int,
    *,
    max_elements: int,
) -> Any:
    """Union of balls ``|v - c| <= r`` on the voxel grid, by testing each atom's bounding box.

    centres: (B, N, axes) float coordinates; radius_sq: (B, N) squared radii in pixels²
    (negative means "draws nothing").
    """
    b, n, _ = centres.shape
    e = edgesize
    out = xp.zeros((b,) + (e,) * axes, dtype=bool)
    rmax = float(xp.sqrt(xp.maximum(radius_sq.max(), 0.0))) if n else 0.0
    reach = math.ceil(rmax) + 1
    offsets = _splat_offsets(xp, reach, axes)  # (M, axes)
    m = offsets.shape[0]
    base = xp.floor(centres).astype(xp.int64)  # (B, N, axes)
    flat_out = out.reshape(-1)
    step = max(1, max_elements // max(1, n * m))
    strides = [e ** (axes - 1 - k) for k in range(axes)]
    for s in range(0, b, step):
        sl = slice(s, s + step)
        vox = base[sl, :, None, :] + offsets[None, None, :, :]  # (b', N, M, axes)
        d = vox.astype(centres.dtype) - centres[sl, :, None, :]
        inside = (d * d).sum(axis=-1) <= radius_sq[sl, :, None]
        inside &= valid[sl, :, None]
        for k in range(axes):
            inside &= (vox[..., k] >= 0) & (vox[..., k] < e)
        bi, ai, mi = xp.nonzero(inside)
        v = vox[bi, ai, mi]
        flat = (bi + s) * (e**axes)
        for k in range(axes):
            flat = flat + v[:, k] * strides[k]
        flat_out[flat] = True
    return out


def _splat_spheres_compiled(centres: np.ndarray, radius_sq: np.ndarray, valid: np.ndarray,
                            edgesize: int, axes: int) -> np.ndarray:
    """:func:`_splat_spheres` with the compiled kernel: the same float32 test, same bytes."""
    if not compiled_kernel_available("binary"):
        raise RuntimeError("the compiled kernel xyz2image_gpu._splat is not built")
    b = radius_sq.shape[0]
    out = np.empty((b,) + (edgesize,) * axes, dtype=bool)
    if b == 0:
        return out
    _splat.binary(np.ascontiguousarray(centres, dtype=np.float32),
                  np.ascontiguousarray(radius_sq, dtype=np.float32),
                  np.ascontiguousarray(valid, dtype=bool).view(np.uint8), out.view(np.uint8),
                  b, axes)
    return out


def binary_3d(
    xp: Any, centres: Any, radius_px: Any, valid: Any, edgesize: int, *, max_elements: int,
    compiled: bool = False,
) -> Any:
    """Bool (B, E, E, E): voxels within ``radius_px`` (per image, (B,)) of an atom centre.

    ``compiled``: on NumPy arrays, with the compiled kernel (the same bytes).
    """
    r2 = xp.broadcast_to((radius_px * radius_px)[:, None], valid.shape)
    if compiled:
        return _splat_spheres_compiled(centres, r2, valid, edgesize, 3)
    return _splat_spheres(xp, centres, r2, valid, edgesize, 3, max_elements=max_elements)


def binary_2d(
    xp: Any, centres: Any, radius_px: Any, valid: Any, edgesize: int, *, max_elements: int,
    compiled: bool = False,
) -> Any:
    """Bool (B, E, E): exactly ``binary_3d(...).any(axis=2)``, computed in 2-D.

    A ball of radius r around (x, y, z) reaches the pixel column (i, j) iff
    ``(i-x)^2 + (j-y)^2 <= r^2 - dz^2``, dz the distance from z to the nearest voxel plane
    inside the volume.
    """
    z = centres[:, :, 2]
    nearest = xp.clip(xp.rint(z), 0, edgesize - 1)
    dz = z - nearest
    r2 = (radius_px * radius_px)[:, None] - dz * dz
    if compiled:
        return _splat_spheres_compiled(centres[:, :, :2], r2, valid, edgesize, 2)
    return _splat_spheres(
        xp, centres[:, :, :2], r2, valid, edgesize, 2, max_elements=max_elements
    )


def quantise(xp: Any, images: Any, *, normalization: str, bitrate: int,
             intensity_scale: float | None = None, truncate: bool = False) -> Any:
    """Convert float images (B, ...) to the stored form.

    ``image``: each image scaled so that its maximum is ``2**bitrate - 1``, rounded to
    nearest (``truncate=True``: the seed's ``astype`` truncation); ``float``: float32 as is;
    ``fixed``: ``rint(value * intensity_scale)`` clipped to the integer range.
    """
    if normalization == "float":
        return images.astype(xp.float32, copy=False)
    top = 2**bitrate - 1
    dtype = xp.uint8 if bitrate == 8 else xp.uint16
    b = images.shape[0]
    if normalization == "image":
        peak = images.reshape(b, -1).max(axis=1)
        shape = (b,) + (1,) * (images.ndim - 1)
        if truncate:
            # the seed: image /= max / top; image.astype(uint)
            denom = xp.where(peak > 0, peak / top, 1.0).reshape(shape)
            scaled = images / denom
            return scaled.astype(dtype)
        factor = xp.where(peak > 0, top / xp.where(peak > 0, peak, 1.0), 0.0)
        scaled = images * factor.astype(images.dtype).reshape(shape)
    elif normalization == "fixed":
        if intensity_scale is None:
            raise ValueError("normalization='fixed' needs intensity_scale")
        scaled = images * images.dtype.type(intensity_scale)
    else:
        raise ValueError(f"unknown normalization {normalization!r}")
    xp.rint(scaled, out=scaled)
    xp.clip(scaled, 0, top, out=scaled)
    return scaled.astype(dtype)


def quantise_compiled(images: np.ndarray, *, normalization: str, bitrate: int,
                      intensity_scale: float | None = None) -> np.ndarray:
    """:func:`quantise` of float32 host images with the compiled kernel's store loop
    (one pass for ``fixed``, two for ``image``; NumPy needs five with its temporaries).
    Same rounding (to nearest, ties to even) and clipping; ``float`` passes through."""
    if normalization == "float":
        return images.astype(np.float32, copy=False)
    if not compiled_kernel_available("quantise"):
        raise RuntimeError("the compiled kernel xyz2image_gpu._splat is not built")
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


def legacy_filter_matrices(
    sigma_px: np.ndarray, edgesize: int, truncate: float = 4.0
) -> np.ndarray:
    """Per-image (B, E, E) float64 matrices M with ``gaussian_filter1d(x, s) == M @ x``.

    Follows SciPy's ``reflect`` mode ``(d c b a | a b c d | d c b a)``: radius
    ``int(truncate * s + 0.5)``, weights ``exp(-k²/(2 s²))`` normalised to sum 1. Built on
    the host, one image at a time, so that an image's matrix never depends on the other
    images of its batch (byte-identical output whatever the batch size).
    """
    e = edgesize
    rows = np.arange(e)
    mats = np.zeros((len(sigma_px), e, e))
    for b, sig in enumerate(np.asarray(sigma_px, dtype=np.float64)):
        radius = int(truncate * float(sig) + 0.5)
        k = np.arange(-radius, radius + 1)
        w = np.exp(-0.5 / (sig * sig) * k.astype(np.float64) ** 2)
        w /= w.sum()
        for offset, weight in zip(k, w):
            src = (rows + offset) % (2 * e)
            src = np.where(src >= e, 2 * e - 1 - src, src)
            np.add.at(mats[b], (rows, src), weight)
    return mats


def legacy_gaussian_2d(xp: Any, delta: Any, mats: Any) -> Any:
    """``gaussian_filter(delta_2d, sigma)`` for a batch: ``M D M^T``, float64 (B, E, E)."""
    d = delta.astype(xp.float64)
    return xp.matmul(xp.matmul(mats, d), mats.transpose(0, 2, 1))


def legacy_gaussian_3d(xp: Any, delta: Any, mats: Any) -> Any:
    """``gaussian_filter(delta_3d, sigma)`` for a batch, one filter pass per axis, float64."""
    b, e = delta.shape[0], delta.shape[1]
    v = delta.astype(xp.float64)
    mt = mats.transpose(0, 2, 1)
    # axis 0: (B, E, E) @ (B, E, E*E)
    v = xp.matmul(mats, v.reshape(b, e, e * e)).reshape(b, e, e, e)
    # axis 2: (B, E*E, E) @ M^T
    v = xp.matmul(v.reshape(b, e * e, e), mt).reshape(b, e, e, e)
    # axis 1: move it last, filter, move back
    v = xp.matmul(v.transpose(0, 1, 3, 2).reshape(b, e * e, e), mt)
    return v.reshape(b, e, e, e).transpose(0, 1, 3, 2)
