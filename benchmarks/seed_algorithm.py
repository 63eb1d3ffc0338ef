"""The seed script's per-image algorithm, rewritten from its description (the baseline).

One image at a time, as the original ``xyz2image.py`` did inside each worker process: rotate,
frame in the seed's cube (shift the minimum to 0, centre each axis in a cube of edge
``m + 2*padxyz``), round the atoms to voxels, set a delta array, blur it with SciPy's
``gaussian_filter`` (mode ``reflect``, truncate 4), scale its maximum to ``2**bitrate - 1``
and convert with ``astype`` (truncation). ``binary_3d`` stamps one ball per atom with an
``ogrid`` mask, as the seed did (the radius here is in Å, converted to pixels).

Unlike the seed, rotations are passed in (``positions @ R.T``), so the baseline renders
exactly the views that the engine renders and the comparison is render-only.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

__all__ = [
    "seed_binary_3d",
    "seed_frame",
    "seed_gaussian_2d",
    "seed_gaussian_3d",
    "seed_render_stack",
]


def seed_frame(
    positions: np.ndarray, R: np.ndarray, edgesize: int, padxyz: float
) -> tuple[np.ndarray, float]:
    """Rotate and frame one view the seed's way; return voxel coordinates (N, 3) int and Å/px."""
    atoms = np.asarray(positions, dtype=np.float64) @ np.asarray(R, dtype=np.float64).T
    atoms = atoms - atoms.min(axis=0)
    ext = atoms.max(axis=0)
    maxxyz = ext.max()
    atoms += (maxxyz - ext) / 2 + padxyz
    edgemax = maxxyz + 2 * padxyz
    voxsize = edgemax / (edgesize - 1)
    normatoms = np.round(atoms / edgemax * (edgesize - 1)).astype(int)
    return normatoms, voxsize


def _normalise(g: np.ndarray, bitrate: int) -> np.ndarray:
    g /= np.max(g) / (2**bitrate - 1)
    return g.astype("uint" + str(bitrate))


def seed_gaussian_2d(
    positions: np.ndarray,
    R: np.ndarray,
    *,
    edgesize: int = 128,
    gauss_sigma: float = 0.4,
    padxyz: float = 1.5,
    bitrate: int = 8,
) -> np.ndarray:
    """One gaussian_2d image, the seed's way: (E, E) uint8/uint16."""
    normatoms, voxsize = seed_frame(positions, R, edgesize, padxyz)
    delta_2d = np.zeros((edgesize, edgesize))
    delta_2d[normatoms[:, 0], normatoms[:, 1]] = 1
    return _normalise(gaussian_filter(delta_2d, gauss_sigma / voxsize), bitrate)


def seed_gaussian_3d(
    positions: np.ndarray,
    R: np.ndarray,
    *,
    edgesize: int = 64,
    gauss_sigma: float = 0.4,
    padxyz: float = 1.5,
    bitrate: int = 8,
) -> np.ndarray:
    """One gaussian_3d volume, the seed's way: (E, E, E) uint8/uint16."""
    normatoms, voxsize = seed_frame(positions, R, edgesize, padxyz)
    delta_3d = np.zeros((edgesize, edgesize, edgesize))
    delta_3d[normatoms[:, 0], normatoms[:, 1], normatoms[:, 2]] = 1
    return _normalise(gaussian_filter(delta_3d, gauss_sigma / voxsize), bitrate)


def seed_binary_3d(
    positions: np.ndarray,
    R: np.ndarray,
    *,
    edgesize: int = 64,
    binary_radius: float = 1.0,
    padxyz: float = 1.5,
) -> np.ndarray:
    """One binary_3d volume, the seed's way (a full-volume ogrid mask per atom): (E, E, E) bool."""
    normatoms, voxsize = seed_frame(positions, R, edgesize, padxyz)
    r2 = (binary_radius / voxsize) ** 2
    binary_3d = np.zeros((edgesize, edgesize, edgesize), dtype=bool)
    for atom in normatoms:
        x, y, z = np.ogrid[
            -atom[0] : edgesize - atom[0],
            -atom[1] : edgesize - atom[1],
            -atom[2] : edgesize - atom[2],
        ]
        binary_3d[x * x + y * y + z * z <= r2] = True
    return binary_3d


_RENDERERS = {
    "gaussian_2d": seed_gaussian_2d,
    "gaussian_3d": seed_gaussian_3d,
    "binary_3d": seed_binary_3d,
}


def seed_render_stack(
    positions: np.ndarray, rotations: np.ndarray, output_type: str = "gaussian_2d", **settings
) -> np.ndarray:
    """Render one view per rotation, one image at a time, and stack them."""
    render_one = _RENDERERS[output_type]
    return np.stack([render_one(positions, R, **settings) for R in rotations])
