"""Label maps in the image's pixel grid: atom-position heatmaps (each atom a unit Gaussian,
rendered by the image kernels with unit weights) and the column map, the atoms counted in a
square window around each pixel.

The column map factorises per axis as the Gaussian images do: with the box profile
``bx[a, i] = 1 if -h < i - x_a <= h else 0`` (the pixel ``i`` holds the atom's ``x`` within
its half-width ``h``), ``counts[i, j] = sum_a bx[a, i] by[a, j]`` is one batched matrix
product of 0/1 floats, exact for counts below 2**24; on the GPU a cuBLAS call, no atomics
and the same result whatever the summation order. With ``h`` half a pixel each atom falls in
exactly one pixel (``x`` in ``[i - 1/2, i + 1/2)``), its nearest.

On the CPU the same counts come from each atom's rectangle of pixels instead
(:func:`column_map_2d_rectangles`): four signed corners per atom added up by ``bincount``,
then summed along both axes (a 2-D prefix sum), O(N + E²) per image instead of the
product's O(N E²); with one-pixel windows (the default) a plain count per pixel. Measured
on the kernels alone (edgesize 128, 147 atoms, 64 images, one thread, same run): one-pixel
windows 3,590 images/s by the product, 87,800 by counting; windows of half-width 3.6 px
3,330 and 8,120 (the two prefix sums over E² dominate). Its window ends are decided by the
same float32 tests as the box profiles, so both give the same counts (tested, ties
included).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .gaussian import scanned_sum

__all__ = [
    "COUNT_MAX",
    "FLOAT16_TINY",
    "box_profiles",
    "column_map_2d",
    "column_map_2d_rectangles",
    "column_map_2d_scanned",
    "float16_heatmap",
]

#: Largest count column_map_2d stores (uint16); larger counts saturate.
COUNT_MAX = 65535
#: float16's smallest normal number, 2**-14: float16 heatmaps store smaller values as 0.
FLOAT16_TINY = 2.0**-14


def float16_heatmap(xp: Any, heatmap: Any, *, step: int | None = None) -> Any:
    """A float32 heatmap as float16, rounded to nearest, with the values below
    :data:`FLOAT16_TINY` (the Gaussians' far tails, 6.1e-5 of a peak) set to 0 first:
    float16 would keep them as subnormal numbers, which NumPy converts several times slower.
    ``step``: images converted at a time (cache-sized on the CPU), None: all at once.
    Measured at 128 px, one thread, 1024 images: 275 us per image for a plain ``astype``,
    215 flushed at once, 51 flushed 16 images at a time."""
    out = xp.empty(heatmap.shape, dtype=xp.float16)
    step = step or max(1, len(heatmap))
    for s in range(0, len(heatmap), step):
        part = heatmap[s:s + step]
        out[s:s + step] = part * (part >= FLOAT16_TINY)
    return out


def _box(d: Any, half: Any) -> Any:
    """1 where ``-half < d <= half`` (``d``: pixel minus centre), else 0, float32."""
    return ((d > -half) & (d <= half)).astype(d.dtype)


def box_profiles(xp: Any, centres: Any, half_px: Any, edgesize: int) -> Any:
    """Box profiles (B, N, E), float32: 1 at the pixels ``i`` with ``-h < i - c <= h``.

    ``centres`` (B, N) pixel coordinates; ``half_px`` (B, N) half-widths in pixels.
    """
    grid = xp.arange(edgesize, dtype=centres.dtype)
    d = grid[None, None, :] - centres[:, :, None]
    return _box(d, half_px[:, :, None])


def _counts(xp: Any, summed: Any) -> Any:
    """Float32 sums of 0/1 products (exact integers) as uint16, saturating."""
    return xp.minimum(summed, COUNT_MAX).astype(xp.uint16)


def column_map_2d(xp: Any, coords: Any, weights: Any, half_px: Any, edgesize: int) -> Any:
    """Atoms per pixel window, uint16 (B, E, E): pixel (i, j) counts the atoms ``a`` with
    ``-h < i - x_a <= h`` and ``-h < j - y_a <= h`` (``h = half_px[b]``), each counted
    ``weights[b, a]`` times (1, or 0 for padding atoms).

    ``coords`` (B, N, >= 2) pixel coordinates; ``weights`` (B, N) float32; ``half_px``
    (B,) pixels.
    """
    half = xp.broadcast_to(half_px[:, None], weights.shape)
    bx = box_profiles(xp, coords[:, :, 0], half, edgesize)
    bx *= weights[:, :, None]
    by = box_profiles(xp, coords[:, :, 1], half, edgesize)
    return _counts(xp, xp.matmul(bx.transpose(0, 2, 1), by))


def _window_ends(centres: np.ndarray, half: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First and last pixel ``i`` with ``-half < i - c <= half``, by the box profiles' own
    float32 tests (``floor`` of float32 sums may be one off at the window's edges)."""
    dtype = centres.dtype
    lo = np.floor(centres - half) + dtype.type(1)
    lo += (lo - centres <= -half)  # not inside yet: one further
    lo -= (lo - dtype.type(1) - centres > -half)  # the one before is inside too
    hi = np.floor(centres + half)
    hi += (hi + dtype.type(1) - centres <= half)
    hi -= (hi - centres > half)
    return lo, hi


def column_map_2d_rectangles(coords: np.ndarray, weights: np.ndarray, half_px: np.ndarray,
                             edgesize: int) -> np.ndarray:
    """:func:`column_map_2d` on NumPy arrays by rectangles: each atom adds ``weights`` (0 or
    1) to the pixels of its window, through four signed corners and a prefix sum over both
    axes, or, where every window is one pixel (half-width 1/2, the default), by counting
    the atoms per pixel directly. The same counts, uint16 (B, E, E)."""
    b = coords.shape[0]
    e = edgesize
    half = np.broadcast_to(half_px[:, None], weights.shape).astype(coords.dtype)
    rows = _window_ends(coords[:, :, 0], half)
    cols = _window_ends(coords[:, :, 1], half)
    # clipped to the image: [lo, hi) within [0, e], an empty window where lo >= hi
    r0, r1 = (np.clip(v, 0, e).astype(np.int64) for v in (rows[0], rows[1] + 1))
    c0, c1 = (np.clip(v, 0, e).astype(np.int64) for v in (cols[0], cols[1] + 1))
    counted = (r0 < r1) & (c0 < c1) & (weights > 0)
    single = bool(((r1 - r0 <= 1) & (c1 - c0 <= 1)).all())
    if single and weights.shape[1] <= COUNT_MAX:  # no pixel can pass COUNT_MAX
        out = np.zeros((b, e, e), dtype=np.uint16)
        flat = np.arange(b, dtype=np.int64)[:, None] * (e * e) + r0 * e + c0
        np.add.at(out.reshape(-1), flat[counted], 1)
        return out
    out = np.empty((b, e, e), dtype=np.uint16)
    side = e + 1
    step = max(1, (1 << 18) // (side * side))  # a few images at a time, in cache
    for s in range(0, b, step):
        sl = slice(s, s + step)
        m = len(out[sl])
        grid = np.zeros((m, side, side), dtype=np.int32)  # |sums| <= atoms
        base = np.arange(m, dtype=np.int64)[:, None] * side * side
        ok = counted[sl]
        for r, c, sign in ((r0, c0, 1), (r1, c1, 1), (r0, c1, -1), (r1, c0, -1)):
            np.add.at(grid.reshape(-1), (base + r[sl] * side + c[sl])[ok], sign)
        np.cumsum(grid, axis=1, out=grid)
        np.cumsum(grid, axis=2, out=grid)
        np.minimum(grid[:, :e, :e], COUNT_MAX, out=out[sl], casting="unsafe")
    return out


def column_map_2d_scanned(xp: Any, coords: Any, weights: Any, half_px: Any, offsets_px: Any,
                          edgesize: int, *, max_elements: int) -> Any:
    """:func:`column_map_2d` seen through a distorted scan: row ``i`` counts the atoms
    shifted by ``offsets_px[b, i]`` (x, y) pixels, as ``gaussian_2d_scanned`` draws them
    (with jitter an atom may so be counted in two rows, or in none)."""
    half = xp.broadcast_to(half_px[:, None], weights.shape)
    summed = scanned_sum(xp, coords, weights, half, offsets_px, edgesize, _box,
                         max_elements=max_elements)
    return _counts(xp, summed)
