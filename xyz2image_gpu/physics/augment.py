"""Augmentations that make clean simulations look more like experiment, keeping labels paired.

* **Frozen-phonon jitter** (``phonon_jitter``): each image's atoms are displaced by
  independent normal offsets of each element's r.m.s. thermal displacement (Å, per axis);
  the image is rendered from the displaced atoms, every label from the undisplaced ones.
* **Shot noise** (``dose``, electrons per Å²): each pixel of the clean image is scaled to an
  expected count and replaced by a Poisson draw. Convention: the image's brightest pixel
  expects ``dose * voxel_size²`` electrons (all electrons that hit it), the others in
  proportion to their intensity; the count is scaled back to the image's units.
* **Read noise** (``read_noise``): additive Gaussian noise whose standard deviation is that
  fraction of the clean image's maximum.
* **Scan distortions** (``scan_jitter``, ``drift``): rows are the slow scan axis; row ``i``
  of ``E`` sees the specimen shifted by ``drift * (i/(E-1) - 1/2)`` along a random direction
  (Å over the frame; the middle row undisplaced) plus a random ``N(0, scan_jitter)`` shift
  along the fast axis (1).

Every random draw comes from a generator keyed by (seed, structure name, frame, stack,
rotation, purpose), on the host, so augmented bytes are the same whatever the batch size,
the worker count or the device.
"""

from __future__ import annotations

from concurrent.futures import Executor

import numpy as np

from ..pipeline.rotations import _name_hash

__all__ = [
    "NOISE",
    "PHONON",
    "SCAN",
    "add_noise",
    "image_key",
    "image_rng",
    "phonon_displacements",
    "scan_offsets",
]

#: Purposes: independent streams for each kind of draw.
PHONON = 1
NOISE = 2
SCAN = 3


def image_key(seed: int, name: str, frame_index: int, stack: int, rotation: int) -> tuple:
    """The identity of one image's random streams."""
    return (int(seed), _name_hash(name), int(frame_index), int(stack), int(rotation))


def image_rng(key: tuple, purpose: int) -> np.random.Generator:
    """A generator for one image and one purpose (``PHONON`` or ``NOISE``)."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([*key, purpose])))


def phonon_displacements(key: tuple, rms: np.ndarray) -> np.ndarray:
    """Normal displacements (N, 3), Å, with per-atom r.m.s. ``rms`` (N,) along each axis."""
    rng = image_rng(key, PHONON)
    return rng.standard_normal((len(rms), 3)) * np.asarray(rms, dtype=np.float64)[:, None]


def scan_offsets(key: tuple, edgesize: int, jitter: float, drift: float) -> np.ndarray:
    """Per-row specimen shifts (E, 2), Å along (x, y), of one image's distorted scan."""
    rng = image_rng(key, SCAN)
    angle = rng.uniform(0.0, 2.0 * np.pi)
    jitter_rows = rng.standard_normal(edgesize) * jitter
    t = np.arange(edgesize) / max(1, edgesize - 1) - 0.5
    out = np.empty((edgesize, 2))
    out[:, 0] = drift * np.cos(angle) * t
    out[:, 1] = drift * np.sin(angle) * t + jitter_rows
    return out


def add_noise(
    images: np.ndarray,
    keys: list[tuple],
    *,
    electrons_per_pixel: np.ndarray | None,
    read_noise: float,
    executor: Executor | None = None,
) -> np.ndarray:
    """Shot and read noise for a batch of float images (B, E, E) on the host.

    Parameters
    ----------
    images : (B, E, E) float array
        Clean images, any non-negative units.
    keys : list of tuple
        :func:`image_key` of each image.
    electrons_per_pixel : (B,) array or None
        Expected count of each image's brightest pixel; None: no shot noise.
    read_noise : float
        Standard deviation of additive Gaussian noise, as a fraction of each clean image's
        maximum.

    executor : Executor, optional
        Threads to spread the images over (NumPy's generators release the GIL while they
        fill arrays); each image has its own generator, so the result is the same.

    Returns
    -------
    (B, E, E) float32 array in the images' units (negative values possible with read noise).
    """
    out = np.empty(images.shape, dtype=np.float32)

    def one(i: int) -> None:
        image = images[i]
        rng = image_rng(keys[i], NOISE)
        peak = float(image.max())
        noisy = image.astype(np.float64)
        if electrons_per_pixel is not None and peak > 0:
            scale = float(electrons_per_pixel[i]) / peak
            noisy = rng.poisson(np.maximum(noisy, 0.0) * scale) / scale
        if read_noise > 0:
            noisy = noisy + rng.normal(0.0, read_noise * peak, size=image.shape)
        out[i] = noisy

    if executor is None:
        for i in range(len(images)):
            one(i)
    else:
        list(executor.map(one, range(len(images))))
    return out
