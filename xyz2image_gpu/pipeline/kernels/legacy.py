"""The original script's images: positions rounded to voxels, each occupied voxel counted
once, SciPy ``gaussian_filter`` semantics (``reflect`` border, kernel truncated at 4 sigma
and normalised to sum 1), applied as dense per-image filter matrices ``M D M^T``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "legacy_filter_matrices",
    "legacy_gaussian_2d",
    "legacy_gaussian_3d",
]


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
