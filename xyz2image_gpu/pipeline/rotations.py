"""Deterministic, Haar-uniform orientations.

Every rotation is a pure function of ``(seed, structure name, frame index, stack index,
rotation index)``: a counter-based generator (the SplitMix64 finaliser applied to a key and
the rotation's counter) gives three uniform numbers per rotation, which Shoemake's
construction turns into a uniformly distributed unit quaternion, hence a Haar-uniform
rotation matrix. Because nothing depends on how many rotations were drawn before, any
sub-range ``[start, stop)`` is the same whatever the batch size, worker count, device or
order of work.

The first rotation of every frame is the original script's fixed view, a 90° turn about z
(``R0``), so that image 0 is the one the original script made; ``all_random=True`` draws it too.
The original script's cumulative uniform Euler angles are deliberately *not* reproduced: they
are not uniform over orientations.
"""

from __future__ import annotations

import hashlib

import numpy as np

__all__ = [
    "R0",
    "keyed_rotation_matrices",
    "quaternions_to_matrices",
    "rotation_key",
    "rotation_matrices",
]

#: The original script's first view: ``ase.Atoms.rotate(90, 'z')``; rotated positions =
#: positions @ R0.T.
R0 = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])

_MASK64 = (1 << 64) - 1
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _name_hash(name: str) -> int:
    """A stable 64-bit hash of a structure name (Python's ``hash`` is salted per process)."""
    return int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "little")


def rotation_key(seed: int, name: str, frame_index: int, stack: int) -> int:
    """The 64-bit key of one (seed, structure, frame, stack) rotation stream."""
    if int(seed) < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    ss = np.random.SeedSequence([int(seed), _name_hash(name), int(frame_index), int(stack)])
    return int(ss.generate_state(1, np.uint64)[0])


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser on a uint64 array (wrapping arithmetic)."""
    x = x.copy()
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


def _uniforms(key: int | np.ndarray, counters: np.ndarray) -> np.ndarray:
    """Uniform doubles in [0, 1), one per counter, from a counter-based generator.

    ``key``: one stream's key, or an array of keys broadcast against ``counters``.
    """
    with np.errstate(over="ignore"):
        x = np.asarray(key, dtype=np.uint64) + (counters.astype(np.uint64) + np.uint64(1)) * _GOLDEN
        bits = _splitmix64(x)
    return (bits >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def quaternions_to_matrices(q: np.ndarray) -> np.ndarray:
    """Unit quaternions ``(n, 4)`` as ``(w, x, y, z)`` to rotation matrices ``(n, 3, 3)``."""
    w, x, y, z = np.moveaxis(np.asarray(q, dtype=np.float64), -1, 0)
    m = np.empty(q.shape[:-1] + (3, 3))
    m[..., 0, 0] = 1 - 2 * (y * y + z * z)
    m[..., 0, 1] = 2 * (x * y - z * w)
    m[..., 0, 2] = 2 * (x * z + y * w)
    m[..., 1, 0] = 2 * (x * y + z * w)
    m[..., 1, 1] = 1 - 2 * (x * x + z * z)
    m[..., 1, 2] = 2 * (y * z - x * w)
    m[..., 2, 0] = 2 * (x * z - y * w)
    m[..., 2, 1] = 2 * (y * z + x * w)
    m[..., 2, 2] = 1 - 2 * (x * x + y * y)
    return m


def rotation_matrices(
    n_rotation: int,
    *,
    seed: int = 0,
    name: str = "structure",
    frame_index: int = 0,
    stack: int = 0,
    all_random: bool = False,
    start: int = 0,
    stop: int | None = None,
) -> np.ndarray:
    """Rotation matrices ``[start, stop)`` of one frame's ``n_rotation`` orientations.

    Parameters
    ----------
    n_rotation : int
        Orientations per frame (the stream's length).
    seed, name, frame_index, stack : int, str, int, int
        Identify the stream; any change gives independent rotations.
    all_random : bool
        If False (default) rotation 0 is :data:`R0`, the original script's view.
    start, stop : int
        Sub-range of rotation indices (default: all).

    Returns
    -------
    numpy.ndarray
        ``(stop - start, 3, 3)`` float64 proper rotations; rotated positions are
        ``positions @ R.T``.
    """
    stop = n_rotation if stop is None else stop
    if not 0 <= start <= stop <= n_rotation:
        raise ValueError(f"rotation range [{start}, {stop}) is outside [0, {n_rotation})")
    key = rotation_key(seed, name, frame_index, stack)
    idx = np.arange(start, stop, dtype=np.int64)
    return keyed_rotation_matrices(np.full(len(idx), key, dtype=np.uint64), idx,
                                   all_random=all_random)


def keyed_rotation_matrices(keys: np.ndarray, index: np.ndarray, *,
                            all_random: bool = False) -> np.ndarray:
    """Rotation ``index[i]`` of the stream ``keys[i]`` for every ``i``, vectorised.

    One batch of images may span many frames (a trajectory in one rotation each): their
    streams' keys (:func:`rotation_key`, computed once per frame) and rotation indices
    arrive as arrays, and the matrices are the same as :func:`rotation_matrices` gives
    stream by stream, to the bit.

    Parameters
    ----------
    keys : numpy.ndarray, (n,) uint64
        Each rotation's stream key.
    index : numpy.ndarray, (n,) int
        Each rotation's index in its stream (>= 0).
    all_random : bool
        If False, rotation index 0 is :data:`R0`.

    Returns
    -------
    numpy.ndarray
        ``(n, 3, 3)`` float64 proper rotations.
    """
    idx = np.asarray(index).astype(np.uint64)
    counters = idx[:, None] * np.uint64(3) + np.arange(3, dtype=np.uint64)
    u = _uniforms(np.asarray(keys, dtype=np.uint64)[:, None], counters).ravel()
    u1, u2, u3 = u.reshape(-1, 3).T
    # Shoemake (1992): uniform unit quaternion from three uniforms.
    a, b = np.sqrt(1.0 - u1), np.sqrt(u1)
    q = np.stack(
        [a * np.sin(2 * np.pi * u2), a * np.cos(2 * np.pi * u2),
         b * np.sin(2 * np.pi * u3), b * np.cos(2 * np.pi * u3)],
        axis=-1,
    )
    mats = quaternions_to_matrices(q)
    if not all_random:
        mats[idx == 0] = R0
    return mats
