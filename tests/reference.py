"""Independent float64 reference implementations for tests and benchmarks.

Nothing here imports :mod:`xyz2image_gpu`: every function is written from the conventions
in ``DESIGN.md`` (and the seed script's description) with plain NumPy and SciPy, so that
the engine is never compared with its own output. (:func:`icosahedron` makes test *inputs*:
ASE's cluster, or without ASE the same atoms from :mod:`ase_compat`.)

Conventions (lengths in Å, pixel coordinates in pixels, pixel index ``i`` at coordinate ``i``;
array axis 0 is x, 1 is y, 2 is z; the beam runs along z):

- rotated positions ``P = positions @ R.T``;
- framing ``"image"`` (the seed's), ``"structure"`` and ``"fixed"``, see
  :func:`frame_pixel_coords`;
- ``gaussian_2d[i, j] = sum_a w_a exp(-((i - u_ax)^2 + (j - u_ay)^2) / (2 s^2))`` with
  ``s = gauss_sigma / voxel_size`` and ``w_a = Z_a ** z_exponent``; ``gaussian_3d`` likewise
  over three axes.
"""

from __future__ import annotations

import numpy as np
from ase_compat import icosahedron
from scipy.ndimage import gaussian_filter

__all__ = [
    "R0",
    "analytic_gaussian_2d",
    "analytic_gaussian_3d",
    "binary_reference",
    "delta_reference",
    "frame_pixel_coords",
    "icosahedron",
    "quantise",
    "rounding_ties",
    "seed_gaussian",
]

#: The fixed first view: 90° about z, as the seed's ``atoms.rotate(90, 'z')``.
R0 = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])


def frame_pixel_coords(
    positions: np.ndarray,
    R: np.ndarray,
    framing: str = "image",
    *,
    edgesize: int = 128,
    padxyz: float = 1.5,
    pixel_size: float | None = None,
) -> tuple[np.ndarray, float]:
    """Rotate one frame's positions and map them to pixel coordinates.

    Parameters
    ----------
    positions : (N, 3) array
        Atom positions of one frame, Å.
    R : (3, 3) array
        Rotation matrix; rotated positions are ``positions @ R.T``.
    framing : {"image", "structure", "fixed"}
        ``image``: the seed's per-image cube around the rotated atoms.
        ``structure``: a cube around the frame's bounding sphere (same for every rotation).
        ``fixed``: ``pixel_size`` Å per pixel, centred on the rotated bounding box.
    edgesize : int
        Image edge, pixels.
    padxyz : float
        Padding, Å (``image`` and ``structure``).
    pixel_size : float, optional
        Å per pixel, required for ``fixed``.

    Returns
    -------
    u : (N, 3) float64 array
        Pixel coordinates (x, y, z).
    voxel_size : float
        Å per pixel.
    """
    pos = np.asarray(positions, dtype=np.float64)
    R = np.asarray(R, dtype=np.float64)
    P = pos @ R.T
    half = (edgesize - 1) / 2.0
    if framing == "image":
        P = P - P.min(axis=0)
        ext = P.max(axis=0)
        m = ext.max()
        P = P + (m - ext) / 2.0 + padxyz
        voxel_size = (m + 2.0 * padxyz) / (edgesize - 1)
        return P / voxel_size, float(voxel_size)
    if framing == "structure":
        c = pos.mean(axis=0)
        rmax = np.sqrt(((pos - c) ** 2).sum(axis=1)).max()
        voxel_size = (2.0 * rmax + 2.0 * padxyz) / (edgesize - 1)
        return (P - R @ c) / voxel_size + half, float(voxel_size)
    if framing == "fixed":
        if pixel_size is None:
            raise ValueError("framing='fixed' needs pixel_size")
        centre = (P.min(axis=0) + P.max(axis=0)) / 2.0
        return (P - centre) / pixel_size + half, float(pixel_size)
    raise ValueError(f"unknown framing {framing!r}")


def _gauss_1d(coord: np.ndarray, sigma_px: float, edgesize: int) -> np.ndarray:
    grid = np.arange(edgesize, dtype=np.float64)
    return np.exp(-((grid[None, :] - coord[:, None]) ** 2) / (2.0 * sigma_px**2))


def analytic_gaussian_2d(
    u: np.ndarray, weights: np.ndarray, sigma_px: float, edgesize: int
) -> np.ndarray:
    """Exact sum of weighted 2D Gaussians at sub-pixel centres ``u[:, :2]``, float64 (E, E)."""
    u = np.asarray(u, dtype=np.float64)
    w = np.broadcast_to(np.asarray(weights, dtype=np.float64), (len(u),))
    gx = _gauss_1d(u[:, 0], sigma_px, edgesize)
    gy = _gauss_1d(u[:, 1], sigma_px, edgesize)
    return np.einsum("ai,aj->ij", w[:, None] * gx, gy, optimize=True)


def analytic_gaussian_3d(
    u: np.ndarray, weights: np.ndarray, sigma_px: float, edgesize: int
) -> np.ndarray:
    """Exact sum of weighted 3D Gaussians at sub-pixel centres ``u``, float64 (E, E, E)."""
    u = np.asarray(u, dtype=np.float64)
    w = np.broadcast_to(np.asarray(weights, dtype=np.float64), (len(u),))
    gx = _gauss_1d(u[:, 0], sigma_px, edgesize)
    gy = _gauss_1d(u[:, 1], sigma_px, edgesize)
    gz = _gauss_1d(u[:, 2], sigma_px, edgesize)
    return np.einsum("ai,aj,ak->ijk", w[:, None] * gx, gy, gz, optimize=True)


def quantise(
    image: np.ndarray,
    bitrate: int = 8,
    normalization: str = "image",
    intensity_scale: float | None = None,
) -> np.ndarray:
    """Turn a float64 intensity into the engine's output values.

    ``image``: ``rint(I / max(I) * (2**bitrate - 1))`` as uint8/uint16 (all zero if max is 0);
    ``float``: float32 ``I``; ``fixed``: ``clip(rint(I * intensity_scale), 0, 2**bitrate - 1)``.
    """
    top = 2**bitrate - 1
    dtype = np.uint8 if bitrate == 8 else np.uint16
    image = np.asarray(image, dtype=np.float64)
    if normalization == "float":
        return image.astype(np.float32)
    if normalization == "image":
        peak = image.max()
        if peak <= 0:
            return np.zeros(image.shape, dtype)
        return np.rint(image / peak * top).astype(dtype)
    if normalization == "fixed":
        if intensity_scale is None:
            raise ValueError("normalization='fixed' needs intensity_scale")
        return np.clip(np.rint(image * intensity_scale), 0, top).astype(dtype)
    raise ValueError(f"unknown normalization {normalization!r}")


def seed_gaussian(delta: np.ndarray, sigma_px: float, bitrate: int = 8) -> np.ndarray:
    """The seed's image: SciPy ``gaussian_filter`` of a delta array, scaled, truncated.

    ``gaussian_filter(delta.astype(float64), sigma_px)`` (mode ``reflect``, truncate 4),
    divided by its maximum over ``2**bitrate - 1``, converted with ``astype`` (truncation).
    Works in 2D and 3D.
    """
    g = gaussian_filter(np.asarray(delta, dtype=np.float64), sigma_px)
    g /= g.max() / (2**bitrate - 1)
    return g.astype(np.uint8 if bitrate == 8 else np.uint16)


def delta_reference(coords: np.ndarray, edgesize: int, ndim: int = 3) -> np.ndarray:
    """Bool delta array (``ndim`` = 2 or 3) True at the in-bounds integer ``coords`` (N, 3)."""
    coords = np.asarray(coords, dtype=np.int64)
    inside = np.all((coords >= 0) & (coords < edgesize), axis=1)
    delta = np.zeros((edgesize,) * 3, dtype=bool)
    c = coords[inside]
    delta[c[:, 0], c[:, 1], c[:, 2]] = True
    return delta if ndim == 3 else delta.any(axis=2)


def rounding_ties(u: np.ndarray, tol: float = 1e-4) -> np.ndarray:
    """Bool (N,) True where some coordinate lies within ``tol`` px of a half-integer."""
    frac = np.asarray(u, dtype=np.float64) % 1.0
    return np.any(np.abs(frac - 0.5) < tol, axis=1)


def binary_reference(
    u: np.ndarray, radius_px: float, edgesize: int, tol: float = 1e-4
) -> tuple[np.ndarray, np.ndarray]:
    """Spheres of ``radius_px`` around centres ``u`` on an (E, E, E) grid.

    Returns
    -------
    binary : (E, E, E) bool
        True where ``|v - u_a| <= radius_px`` for some atom.
    ambiguous : (E, E, E) bool
        True where ``| |v - u_a| - radius_px | <= tol`` for some atom: voxels whose value
        depends on rounding in the last bits, which an engine may decide either way.
    """
    u = np.asarray(u, dtype=np.float64)
    E = edgesize
    binary = np.zeros((E, E, E), dtype=bool)
    ambiguous = np.zeros((E, E, E), dtype=bool)
    reach = radius_px + tol
    for centre in u:
        lo = np.maximum(np.floor(centre - reach).astype(int), 0)
        hi = np.minimum(np.ceil(centre + reach).astype(int) + 1, E)
        if np.any(hi <= lo):
            continue
        x, y, z = np.ogrid[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
        d = np.sqrt((x - centre[0]) ** 2 + (y - centre[1]) ** 2 + (z - centre[2]) ** 2)
        sl = (slice(lo[0], hi[0]), slice(lo[1], hi[1]), slice(lo[2], hi[2]))
        binary[sl] |= d <= radius_px
        ambiguous[sl] |= np.abs(d - radius_px) <= tol
    return binary, ambiguous

