"""Framing: from rotated positions in Å to sub-pixel coordinates, batched on the device.

Three ways to choose the field of view (``framing``):

``image`` (default, the original script's)
    Per image: shift the minimum to 0, centre each axis in a cube of edge ``m + 2*padxyz``
    where ``m`` is the largest extent, pixel size ``edge / (edgesize - 1)``. Every image is
    filled, but the scale changes with the orientation.
``structure``
    Per frame: one cube of edge ``2*rmax + 2*padxyz`` around the frame's centroid, ``rmax``
    the largest distance of an atom from it, so it holds every orientation and all rotations
    of a frame share one scale.
``fixed``
    A fixed ``pixel_size`` in Å, the rotated structure's bounding box centred; every
    structure shares one scale (atoms outside the field of view are simply not drawn).

Pixel index ``i`` sits at coordinate ``i`` (so the original script's voxel ``round(u)`` is nearest).
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "FRAMINGS",
    "frame_pixel_coordinates",
]

FRAMINGS = ("image", "structure", "fixed")


def frame_pixel_coordinates(
    xp: Any,
    positions: Any,
    *,
    framing: str,
    edgesize: int,
    padxyz: float,
    pixel_size: float | None = None,
    radius: Any = None,
) -> tuple[Any, Any]:
    """Turn rotated positions into pixel coordinates.

    Parameters
    ----------
    xp : module
        ``numpy`` or ``cupy``.
    positions : array, (B, N, 3) float32
        Rotated positions in Å, relative to each frame's centroid. Padding atoms must be
        copies of a real atom of the same image so that minima and maxima are unaffected.
    framing : {"image", "structure", "fixed"}
    edgesize : int
        Pixels along each axis.
    padxyz : float
        Margin in Å (``image`` and ``structure``).
    pixel_size : float, optional
        Å per pixel for ``fixed``.
    radius : array, (B,), optional
        For ``structure``: the frame's largest atom distance from its centroid, in Å.

    Returns
    -------
    coords : array, (B, N, 3) float32
        Sub-pixel coordinates.
    voxel_size : array, (B,) float32
        Å per pixel of each image.
    """
    dtype = positions.dtype
    half = (edgesize - 1) / 2.0
    if framing == "image":
        lo, hi = _extents(xp, positions)
        extent = hi - lo
        m = extent.max(axis=1)
        voxel = (m + 2.0 * padxyz) / (edgesize - 1)
        shift = -lo + (m[:, None] - extent) / 2.0 + padxyz
        coords = (positions + shift[:, None, :]) / voxel[:, None, None]
    elif framing == "structure":
        if radius is None:
            raise ValueError("framing='structure' needs each frame's radius")
        voxel = (2.0 * radius + 2.0 * padxyz) / (edgesize - 1)
        coords = positions / voxel[:, None, None] + half
    elif framing == "fixed":
        if pixel_size is None or not pixel_size > 0:
            raise ValueError("framing='fixed' needs a positive pixel_size in Å")
        lo, hi = _extents(xp, positions)
        centre = (lo + hi) / 2.0
        voxel = xp.full(positions.shape[0], pixel_size, dtype=dtype)
        coords = (positions - centre[:, None, :]) / voxel[:, None, None] + half
    else:
        raise ValueError(f"unknown framing {framing!r}; choose one of {', '.join(FRAMINGS)}")
    return coords.astype(dtype, copy=False), voxel.astype(dtype, copy=False)


def _extents(xp: Any, positions: Any) -> tuple[Any, Any]:
    """Per-image minimum and maximum along each axis, (B, 3) each.

    Reduced over a contiguous (B, 3, N) copy: NumPy reduces the middle axis of (B, N, 3) one
    strided element at a time (measured, 1024 x 147 atoms: 2.7 us per image for each of min
    and max, 0.3 us for the copy and both reductions together).
    """
    t = xp.ascontiguousarray(positions.transpose(0, 2, 1))
    return t.min(axis=2), t.max(axis=2)
