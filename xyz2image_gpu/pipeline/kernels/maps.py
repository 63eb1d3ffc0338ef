"""Label maps in the image's pixel grid: atom-position heatmaps (each atom a unit Gaussian,
rendered by the image kernels with unit weights) and the column map, the atoms counted in a
square window around each pixel.

The column map factorises per axis as the Gaussian images do: with the box profile
``bx[a, i] = 1 if -h < i - x_a <= h else 0`` (the pixel ``i`` holds the atom's ``x`` within
its half-width ``h``), ``counts[i, j] = sum_a bx[a, i] by[a, j]`` is one batched matrix
product of 0/1 floats, exact for counts below 2**24; on the GPU a cuBLAS call, no atomics
and the same result whatever the summation order. With ``h`` half a pixel each atom falls in
exactly one pixel (``x`` in ``[i - 1/2, i + 1/2)``), its nearest.
"""

from __future__ import annotations

from typing import Any

from .gaussian import scanned_sum

__all__ = [
    "COUNT_MAX",
    "box_profiles",
    "column_map_2d",
    "column_map_2d_scanned",
]

#: Largest count column_map_2d stores (uint16); larger counts saturate.
COUNT_MAX = 65535


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


def column_map_2d_scanned(xp: Any, coords: Any, weights: Any, half_px: Any, offsets_px: Any,
                          edgesize: int, *, max_elements: int) -> Any:
    """:func:`column_map_2d` seen through a distorted scan: row ``i`` counts the atoms
    shifted by ``offsets_px[b, i]`` (x, y) pixels, as ``gaussian_2d_scanned`` draws them
    (with jitter an atom may so be counted in two rows, or in none)."""
    half = xp.broadcast_to(half_px[:, None], weights.shape)
    summed = scanned_sum(xp, coords, weights, half, offsets_px, edgesize, _box,
                         max_elements=max_elements)
    return _counts(xp, summed)
