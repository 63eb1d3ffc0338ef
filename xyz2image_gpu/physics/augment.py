"""Augmentations that make clean simulations look more like experiment, keeping labels paired.

* **Frozen-phonon jitter** (``phonon_jitter``): each image's atoms are displaced by
  independent normal offsets of each element's r.m.s. thermal displacement (Å, per axis);
  the image is rendered from the displaced atoms, every label from the undisplaced ones.
* **Shot noise** (``dose``, electrons per Å²): each pixel of the clean image is scaled to an
  expected count and replaced by a Poisson draw, the count scaled back to the image's units.
  Relative units (``normalization`` image, float, fixed): the image's brightest pixel
  expects ``dose * voxel_size²`` electrons (all electrons that hit it), the others in
  proportion to their intensity. Absolute units (``normalization="beam"``, ``absolute``):
  each probe position (pixel) receives ``N = dose * voxel_size²`` electrons and the
  detector sees the fraction ``f`` of them (the pixel's value), so the count is
  ``Poisson(N f)`` and the value ``count / N``: mean ``f``, variance ``f / N``, whatever the
  image's brightest pixel.
* **Read noise** (``read_noise``): additive Gaussian noise whose standard deviation is that
  fraction of the clean image's maximum, in every normalization (beam units included: the
  one noise setting not tied to electrons, it stays a level relative to each image).
* **Scan distortions** (``scan_jitter``, ``drift``): rows are the slow scan axis; row ``i``
  of ``E`` sees the specimen shifted by ``drift * (i/(E-1) - 1/2)`` along a random direction
  (Å over the frame; the middle row undisplaced) plus a random ``N(0, scan_jitter)`` shift
  along the fast axis (1).

Every random draw is Philox4x32-10 keyed by (seed, structure name, frame, stack, rotation,
purpose): a pure function of the image and of where the draw sits in its streams, so augmented
bytes are the same whatever the batch size, the worker count or the device (within one grey
level where the devices' float sums of the clean image differ). One C source draws them on
every device (``pipeline/kernels/philox.h``: the GPU's ``random.cu`` and the compiled CPU
kernel run it); :mod:`.random` computes the same numbers in array code, the fallback where
nothing compiled it, and the reference of the tests. Which block each draw takes is written
in ``philox.h``: phonon jitter is normal ``3 n + a`` of the image's purpose-1 stream (atom
``n``, axis ``a``), read noise normal ``p`` (pixel ``p``, row-major) of sub-stream 65536 of
purpose 2, shot noise pixel ``p``'s Poisson attempts from sub-streams 0, 1, 2, ... of purpose
2, the drift direction and row jitter from purpose 3.
"""

from __future__ import annotations

from concurrent.futures import Executor
from typing import Any

import numpy as np

from ..pipeline.kernels.compiled import compiled_kernel_available, noise_compiled
from ..pipeline.rotations import rotation_key
from .random import Streams, poisson

__all__ = [
    "NOISE",
    "PHONON",
    "SCAN",
    "add_noise",
    "image_key",
    "noise_batch",
    "phonon_batch",
    "phonon_displacements",
    "scan_batch",
    "scan_offsets",
]

#: Purposes: independent streams for each kind of draw.
PHONON = 1
NOISE = 2
SCAN = 3

#: Sub-stream of the read noise (the shot noise's attempts use 0, 1, 2, ...).
READ_SUBSTREAM = 1 << 16

#: Pixels per step of the noise on the host: a step's arrays stay in the cache.
_HOST_STEP_PIXELS = 1 << 16


def image_key(seed: int, name: str, frame_index: int, stack: int, rotation: int) -> tuple:
    """The identity of one image's random streams: (frame stream key, rotation index)."""
    return (rotation_key(seed, name, frame_index, stack), int(rotation))


def _key_arrays(keys: Any) -> tuple[np.ndarray, np.ndarray]:
    arr = np.array([[int(k), int(r)] for k, r in keys], dtype=np.uint64).reshape(-1, 2)
    return arr[:, 0], arr[:, 1]


def phonon_batch(xp: Any, stream_keys: Any, rotations: Any, rms: Any) -> Any:
    """Normal displacements (B, N, 3) float32, Å, with per-atom r.m.s. ``rms`` (B, N)."""
    rms = xp.asarray(rms)
    b, n = rms.shape
    z = Streams(xp, stream_keys, rotations, PHONON).normals(3 * n).reshape(b, n, 3)
    return (z * rms.astype(xp.float64)[:, :, None]).astype(xp.float32)


def phonon_displacements(key: tuple, rms: np.ndarray) -> np.ndarray:
    """One image's displacements (N, 3), Å, with per-atom r.m.s. ``rms`` (N,)."""
    k, r = _key_arrays([key])
    return phonon_batch(np, k, r, np.asarray(rms, dtype=np.float64)[None, :])[0].astype(
        np.float64)


def scan_batch(xp: Any, stream_keys: Any, rotations: Any, edgesize: int, jitter: float,
               drift: float) -> Any:
    """Per-row specimen shifts (B, E, 2) float32, Å along (x, y), of a distorted scan."""
    streams = Streams(xp, stream_keys, rotations, SCAN)
    angle = (2.0 * np.pi) * streams.uniforms(1, 0)  # (B, 1)
    rows = streams.normals(edgesize, 1) * jitter
    t = (xp.arange(edgesize, dtype=xp.float64) / max(1, edgesize - 1) - 0.5)[None, :]
    x = drift * xp.cos(angle) * t
    y = drift * xp.sin(angle) * t + rows
    return xp.stack([x, y], axis=-1).astype(xp.float32)


def scan_offsets(key: tuple, edgesize: int, jitter: float, drift: float) -> np.ndarray:
    """One image's per-row specimen shifts (E, 2), Å along (x, y)."""
    k, r = _key_arrays([key])
    return scan_batch(np, k, r, edgesize, jitter, drift)[0].astype(np.float64)


def noise_batch(xp: Any, images: Any, stream_keys: Any, rotations: Any, *,
                electrons_per_pixel: Any | None, read_noise: float,
                executor: Executor | None = None, absolute: bool = False) -> Any:
    """Shot and read noise for a batch of float images (B, E, E), on ``xp``'s device.

    On the host (``xp`` NumPy) the images go in steps of a few (their arrays stay in the
    cache), spread over ``executor``'s threads when given; on a GPU the whole batch is one
    step, with no host synchronisation. Each image has its own streams, so the numbers are
    the same either way. Returns (B, E, E) float32 in the images' units; see
    :func:`add_noise`.
    """
    if xp is not np:
        return _noise(xp, images, stream_keys, rotations, electrons_per_pixel, read_noise,
                      absolute)
    images = np.asarray(images)
    b = len(images)
    out = np.empty(images.shape, dtype=np.float32)
    per = max(1, _HOST_STEP_PIXELS // max(1, images[0].size if b else 1))
    keys, rotations = np.asarray(stream_keys, dtype=np.uint64), np.asarray(rotations)
    epp = None if electrons_per_pixel is None else np.asarray(electrons_per_pixel)

    def one(i: int) -> None:
        part = slice(i, min(b, i + per))
        out[part] = _noise(np, images[part], keys[part], rotations[part],
                           None if epp is None else epp[part], read_noise, absolute)

    steps = range(0, b, per)
    if executor is None:
        for i in steps:
            one(i)
    else:
        list(executor.map(one, steps))
    return out


def _noise(xp: Any, images: Any, stream_keys: Any, rotations: Any,
           electrons_per_pixel: Any | None, read_noise: float, absolute: bool) -> Any:
    b = images.shape[0]
    flat = xp.asarray(images).reshape(b, -1).astype(xp.float64)
    streams = Streams(xp, stream_keys, rotations, NOISE)
    peak = flat.max(axis=1, keepdims=True)
    noisy = flat
    if electrons_per_pixel is not None:
        epp = xp.asarray(electrons_per_pixel).astype(xp.float64).reshape(b, 1)
        lit = peak > 0
        # counts per unit of the image: per image's peak, or absolute (beam units)
        scale = xp.where(lit, epp if absolute else epp / xp.where(lit, peak, 1.0), 1.0)
        counts = poisson(xp, xp.maximum(flat, 0.0) * xp.where(lit, scale, 0.0), streams)
        noisy = xp.where(lit, counts / scale, flat)
    if read_noise > 0:
        noisy = noisy + streams.normals(flat.shape[1], READ_SUBSTREAM) * (read_noise * peak)
    return noisy.astype(xp.float32).reshape(images.shape)


def add_noise(
    images: np.ndarray,
    keys: Any,
    *,
    electrons_per_pixel: np.ndarray | None,
    read_noise: float,
    executor: Executor | None = None,
    rotations: Any = None,
    absolute: bool = False,
) -> np.ndarray:
    """Shot and read noise for a batch of float images (B, E, E) on the host.

    Parameters
    ----------
    images : (B, E, E) float array
        Clean images, any non-negative units (rounded to float32 first, as the engine's are).
    keys : list of tuple, or (B,) uint64 array with ``rotations``
        :func:`image_key` of each image, or each image's frame stream key.
    electrons_per_pixel : (B,) array or None
        Expected count of each image's brightest pixel; with ``absolute``, the electrons
        each pixel (probe position) receives. None: no shot noise.
    read_noise : float
        Standard deviation of additive Gaussian noise, as a fraction of each clean image's
        maximum.
    executor : Executor, optional
        Threads to spread steps of a few images over; each image has its own streams, so
        the result is the same.
    rotations : (B,) int array, optional
        Each image's rotation index, with ``keys`` an array of stream keys.
    absolute : bool
        The images are in absolute units (beam fractions, ``normalization="beam"``): pixel
        value ``f`` becomes ``Poisson(N f) / N``, ``N`` its image's ``electrons_per_pixel``,
        whatever the image's maximum.

    Returns
    -------
    (B, E, E) float32 array in the images' units (negative values possible with read noise).
    """
    if rotations is None:
        stream_keys, rotations = _key_arrays(keys)
    else:
        stream_keys = np.asarray(keys, dtype=np.uint64)
    images = np.asarray(images, dtype=np.float32)  # as the engine's: the same numbers either way
    # philox.h: ~4x the array code (bench_draws.py)
    if compiled_kernel_available("noise_absolute" if absolute else "noise"):
        return noise_compiled(images, np.arange(len(stream_keys)), rotations, stream_keys,
                              electrons_per_pixel=electrons_per_pixel, read_noise=read_noise,
                              absolute=absolute)
    return noise_batch(np, images, stream_keys, rotations,
                       electrons_per_pixel=electrons_per_pixel, read_noise=read_noise,
                       executor=executor, absolute=absolute)
