"""Gaussian images as separable sums, the column correction's pair sums, and quantisation.

A sum of isotropic Gaussians factorises per axis, ``image = Gx^T diag(w) Gy`` with
``Gx[b, a, i] = exp(-(i - x_ba)^2 / (2 s_b^2))``: one batched matrix product (BLAS on the
CPU, cuBLAS on the GPU), exact at sub-pixel positions. Each atom's peak equals its weight
``w``. Profile values below exp(-25) of the peak are cut to 0 (:data:`PROFILE_FLOOR`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = [
    "PROFILE_FLOOR",
    "SPLAT_CUT_8BIT",
    "axis_profiles",
    "column_values",
    "gaussian_2d",
    "gaussian_2d_scanned",
    "gaussian_3d",
    "quantise",
    "scanned_sum",
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
    floats at once (:func:`scanned_sum`).
    """
    inv = (-0.5 / (sigma_px * sigma_px)).astype(coords.dtype)  # (B, N)

    def gaussian(d: Any, inv_b: Any) -> Any:
        d *= d
        d *= inv_b
        return _clamped_exp(xp, d)

    return scanned_sum(xp, coords, weights, inv, offsets_px, edgesize, gaussian,
                       max_elements=max_elements)


def scanned_sum(
    xp: Any, coords: Any, weights: Any, params: Any, offsets_px: Any, edgesize: int,
    profile: Callable[[Any, Any], Any], *, max_elements: int,
) -> Any:
    """``sum_a w_a f(i - x_a - ox_i) f(j - y_a - oy_i)`` for every pixel (i, j): a separable
    per-atom profile ``f`` seen through a distorted scan (row ``i`` shows the atoms shifted
    by ``offsets_px[b, i]``, pixels). Float32 (B, E, E).

    ``profile(d, p)`` maps the distances ``d`` from pixel to centre (float32, (b', E, N) for
    rows, (b', E, N, E) for columns; it may work in place) to profile values, ``p`` being
    ``params`` (B, N), one value per atom, broadcast against ``d``. Built for at most
    ``max_elements`` floats at once.
    """
    b, n, _ = coords.shape
    e = edgesize
    grid = xp.arange(e, dtype=coords.dtype)
    out = xp.empty((b, e, e), dtype=coords.dtype)
    step = max(1, max_elements // max(1, e * n * e))
    for s in range(0, b, step):
        sl = slice(s, s + step)
        # x profile of atom a in row i: f(i - x_a - ox_i), (b', E, N)
        dx = (grid[None, :] - offsets_px[sl, :, 0])[:, :, None] - coords[sl, None, :, 0]
        gx = profile(dx, params[sl, None, :]) * weights[sl, None, :]
        # y profiles of every row: (b', E, N, E)
        centres_y = coords[sl, None, :, 1] + offsets_px[sl, :, 1][:, :, None]
        dy = grid[None, None, None, :] - centres_y[:, :, :, None]
        gy = profile(dy, params[sl, None, :, None])
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


def column_values(xp: Any, coords: Any, amps: Any, sig2: Any, *, max_elements: int) -> Any:
    """Each atom's projected image value at its own position, summed over every pair.

    ``x_i = sum_j sum_g amps[j, g] exp(-d_ij^2 / (2 sig2[j, g]))`` over the image plane
    (pixel coordinates ``coords[..., :2]``), (B, N) of ``amps``' dtype. ``amps`` and
    ``sig2`` (px²) are (B, N, G); the (B', N, N) pair arrays are built for at most
    ``max_elements`` floats at once. The compiled twin is ``column_values_compiled``.
    """
    b, n, n_comp = amps.shape
    xy = coords[:, :, :2]
    x = xp.empty((b, n), dtype=amps.dtype)
    step = max(1, max_elements // max(1, n * n))
    for i in range(0, b, step):
        sl = slice(i, i + step)
        diff = xy[sl, :, None, :] - xy[sl, None, :, :]
        d2 = (diff * diff).sum(axis=-1)  # (b', N, N) px²
        acc = xp.zeros(d2.shape[:2], dtype=amps.dtype)
        for g in range(n_comp):
            kernel = xp.exp(d2 * (-0.5 / sig2[sl, None, :, g]))
            acc += (kernel * amps[sl, None, :, g]).sum(axis=-1)
        x[sl] = acc
    return x


def quantise(xp: Any, images: Any, *, normalization: str, bitrate: int,
             intensity_scale: float | None = None, truncate: bool = False) -> Any:
    """Convert float images (B, ...) to the stored form.

    ``image``: each image scaled so that its maximum is ``2**bitrate - 1``, rounded to
    nearest (``truncate=True``: the original script's ``astype`` truncation); ``float``:
    float32 as is; ``fixed``: ``rint(value * intensity_scale)`` clipped to the integer range.
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
            # the original script: image /= max / top; image.astype(uint)
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
