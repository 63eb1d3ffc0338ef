"""Counter-based random numbers that are the same on NumPy and CuPy: Philox4x32-10.

Every augmentation draw is a pure function of the image it belongs to and of where it sits
in that image's streams, so any image's draws are the same whatever the batch size, the
worker count, the order of work or the device. The code below is plain integer and
floating-point array code, run unchanged with ``xp = numpy`` and ``xp = cupy``.

The generator
-------------
Philox4x32-10 (Salmon, Moraes, Dror and Shaw, "Parallel random numbers: as easy as 1, 2,
3", SC11, 2011, doi:10.1145/2063384.2063405): a keyed bijection of a 128-bit counter
``(c0, c1, c2, c3)`` (four 32-bit words) under a 64-bit key ``(k0, k1)``. Ten rounds; each
round multiplies two words by the constants ``M0 = 0xD2511F53`` and ``M1 = 0xCD9E8D57``,
splits each 64-bit product into its high and low halves and mixes them with the other words
and the key::

    hi0, lo0 = M0 * c0        (32 x 32 -> 64 bits)
    hi1, lo1 = M1 * c2
    c0, c1, c2, c3 = hi1 ^ c1 ^ k0,  lo1,  hi0 ^ c3 ^ k1,  lo0

and between rounds the key is bumped by the Weyl constants ``W0 = 0x9E3779B9`` and
``W1 = 0xBB67AE85`` (mod 2^32). The four output words are the counter after ten rounds.
Here the words are ``uint32`` arrays; each 32 x 32 -> 64-bit product is one ``uint64``
multiplication (exact: it cannot overflow), whose halves are read back as two ``uint32``
words; sums and XORs are exact integer operations. So NumPy and CuPy give the same bits.
Checked against the Random123 known-answer vectors (``tests/test_random.py``).

Key and counter layout
----------------------
key     ``(k0, k1)``: the low and high 32 bits of the image's frame stream key,
        :func:`..pipeline.rotations.rotation_key` (a SeedSequence hash of the seed, the
        structure name's SHA-256, the frame index and the stack index);
counter ``c0``: the block within the stream (each block gives four 32-bit words);
        ``c1``: the image's rotation index; ``c2``: the sub-stream (e.g. a rejection
        round); ``c3``: the purpose (phonon jitter, noise, scan; :mod:`.augment`).

So one image's draws for one purpose are the blocks ``0, 1, 2, ...`` of its sub-streams, a
function of (seed, structure name, frame, stack, rotation, purpose, sub-stream, block) only.

Uniforms and normals
--------------------
A 32-bit word ``w`` gives the uniform ``(w + 0.5) / 2^32`` in (0, 1), never 0 or 1; two
words give a 53-bit one, ``(w0 * 2^21 + (w1 >> 11) + 0.5) / 2^53``. A normal is the
inverse normal distribution function of one word's uniform (Wichura's algorithm AS 241,
:func:`normal32`), four per block, one per word, computed in float64: in the central region
(85% of draws) only sums, products and one quotient, correctly rounded everywhere (no fused
multiply-add on any device), in the tails also ``log`` and ``sqrt``; a ``log`` may differ
in the last bit between the C library, NumPy and CUDA, 1e-16 relative, which disappears when
the draws are stored in float32 or quantised, but for a draw within 1e-16 of a rounding
boundary. The largest normal is the quantile of ``2^-33``, 6.3: the tails beyond are cut, at
a probability of 3e-10.

Poisson
-------
:func:`poisson`: exact in distribution up to documented cut-offs (below 1e-15 per pixel);
see its docstring.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "PHILOX_M",
    "PHILOX_W",
    "Streams",
    "log_factorial",
    "normal32",
    "philox4x32",
    "poisson",
    "uniform32",
    "uniform53",
]

PHILOX_M = (0xD2511F53, 0xCD9E8D57)
PHILOX_W = (0x9E3779B9, 0xBB67AE85)
_MASK32 = np.uint64(0xFFFFFFFF)
_SHIFT32 = np.uint64(32)


def philox4x32(xp: Any, counter: tuple, key: tuple, rounds: int = 10) -> tuple:
    """Philox4x32-``rounds`` of ``counter`` (four arrays or ints) under ``key`` (two).

    The words broadcast against each other; each holds values below 2^32 (any integer
    dtype). Returns the four output words as ``uint32`` arrays of the broadcast shape.

    Each 32 x 32 -> 64-bit product is one ``uint64`` multiplication (exact: both factors
    are below 2^32); its low and high halves are read as the two ``uint32`` words of the
    product (a little-endian view, on the host and on NVIDIA GPUs alike), which halves the
    work of shifting and masking (measured on NumPy: ~48 -> ~26 ns per block).
    """
    words = [xp.asarray(c).astype(xp.uint32) for c in counter]
    shape = np.broadcast_shapes(*(w.shape for w in words))
    c0, c1, c2, c3 = words
    c0, c2 = xp.broadcast_to(c0, shape), xp.broadcast_to(c2, shape)
    k0, k1 = (xp.asarray(k).astype(xp.uint32) for k in key)
    m0, m1 = np.uint64(PHILOX_M[0]), np.uint64(PHILOX_M[1])
    w0, w1 = np.uint32(PHILOX_W[0]), np.uint32(PHILOX_W[1])
    for r in range(rounds):
        if r:  # uint32 arithmetic wraps modulo 2^32 (NumPy warns for 0-d keys only)
            with np.errstate(over="ignore"):
                k0 = k0 + w0
                k1 = k1 + w1
        # the words widened first, so that no promotion rule (value-based or NEP 50) can
        # keep the product in 32 bits; (lo, hi) of M0 * c0, read as two uint32 words
        p0 = (c0.astype(xp.uint64) * m0).reshape(-1).view(xp.uint32).reshape(shape + (2,))
        p1 = (c2.astype(xp.uint64) * m1).reshape(-1).view(xp.uint32).reshape(shape + (2,))
        c0, c1, c2, c3 = p1[..., 1] ^ c1 ^ k0, p1[..., 0], p0[..., 1] ^ c3 ^ k1, p0[..., 0]
    return c0, c1, c2, c3


def uniform32(xp: Any, word: Any) -> Any:
    """One 32-bit word to a float64 uniform in (0, 1): ``(w + 0.5) / 2^32``."""
    return (word.astype(xp.float64) + 0.5) * (1.0 / 4294967296.0)


def uniform53(xp: Any, hi: Any, lo: Any) -> Any:
    """Two words to a float64 uniform in (0, 1) with 53 bits."""
    bits = (hi.astype(xp.uint64) << np.uint64(21)) | (lo.astype(xp.uint64) >> np.uint64(11))
    return (bits.astype(xp.float64) + 0.5) * (1.0 / 9007199254740992.0)


#: AS 241's coefficients (numerator from the constant term up; denominators' constant 1):
#: the central region |q| <= 0.425, and the tails with r = sqrt(-ln min(p, 1 - p)) - 1.6.
_AS241_A = (3.387132872796366608, 133.14166789178437745, 1971.5909503065514427,
            13731.693765509461125, 45921.953931549871457, 67265.770927008700853,
            33430.575583588128105, 2509.0809287301226727)
_AS241_B = (1.0, 42.313330701600911252, 687.1870074920579083, 5394.1960214247511077,
            21213.794301586595867, 39307.89580009271061, 28729.085735721942674,
            5226.495278852854561)
_AS241_C = (1.42343711074968357734, 4.6303378461565452959, 5.7694972214606914055,
            3.64784832476320460504, 1.27045825245236838258, 0.24178072517745061177,
            0.0227238449892691845833, 7.7454501427834140764e-4)
_AS241_D = (1.0, 2.05319162663775882187, 1.6763848301838038494, 0.68976733498510000455,
            0.14810397642748007459, 0.0151986665636164571966, 5.475938084995344946e-4,
            1.05075007164441684324e-9)


def _horner(coefficients: tuple, r: Any) -> Any:
    """``c0 + r (c1 + r (c2 + ...))``, evaluated from the highest term down as in C."""
    acc = coefficients[-1] * r + coefficients[-2]
    for c in coefficients[-3::-1]:
        acc = acc * r + c
    return acc


def normal32(xp: Any, word: Any) -> Any:
    """A standard normal (float64) from each 32-bit word: the inverse of the normal
    distribution function at :func:`uniform32`, by Wichura's algorithm AS 241 (PPND16,
    Applied Statistics 37, 477-484, 1988; relative error ~1e-16). A 32-bit uniform keeps
    ``sqrt(-ln r)`` below 4.8, so AS 241's region above 5 is never needed."""
    p = uniform32(xp, word)
    q = p - 0.5
    r = 0.180625 - q * q
    central = q * _horner(_AS241_A, r) / _horner(_AS241_B, r)
    t = xp.sqrt(-xp.log(xp.where(q < 0.0, p, 1.0 - p))) - 1.6
    tail = _horner(_AS241_C, t) / _horner(_AS241_D, t)
    return xp.where(xp.abs(q) <= 0.425, central, xp.where(q < 0.0, -tail, tail))


class Streams:
    """The random streams of a batch of images (B images) for one purpose.

    Parameters
    ----------
    xp : module
        numpy or cupy.
    keys : (B,) uint64 array
        Each image's frame stream key (:func:`..pipeline.rotations.rotation_key`).
    rotations : (B,) integer array
        Each image's rotation index (< 2^32).
    purpose : int
        The purpose word ``c3``.
    """

    def __init__(self, xp: Any, keys: Any, rotations: Any, purpose: int):
        self.xp = xp
        keys = xp.asarray(keys).astype(xp.uint64)
        self.k0 = (keys & _MASK32)[:, None]
        self.k1 = (keys >> _SHIFT32)[:, None]
        self.rotation = xp.asarray(rotations).astype(xp.uint64)[:, None]
        self.purpose = int(purpose)

    def __len__(self) -> int:
        return int(self.k0.shape[0])

    def take(self, images: Any) -> Streams:
        """The streams of a subset of the images (an index array)."""
        out = Streams.__new__(Streams)
        out.xp, out.purpose = self.xp, self.purpose
        out.k0, out.k1, out.rotation = self.k0[images], self.k1[images], self.rotation[images]
        return out

    def blocks(self, block: Any, substream: int = 0) -> tuple:
        """Words of blocks ``block`` ((M,) or (B, M) uint64) of one sub-stream, (B, M) each."""
        xp = self.xp
        return philox4x32(xp, (block, self.rotation, xp.uint64(substream),
                               xp.uint64(self.purpose)), (self.k0, self.k1))

    def words_at(self, image: Any, block: Any, substream: Any) -> tuple:
        """Words of scattered blocks: element ``i`` is block ``block[i]`` of sub-stream
        ``substream[i]`` of image ``image[i]`` (all (M,) arrays)."""
        xp = self.xp
        return philox4x32(xp, (block, self.rotation[image, 0], substream,
                               xp.uint64(self.purpose)),
                          (self.k0[image, 0], self.k1[image, 0]))

    def normals(self, n: int, substream: int = 0) -> Any:
        """``n`` standard normals per image, (B, n) float64: four per block, block ``j``
        giving normals ``4j .. 4j + 3`` (one per word, :func:`normal32`)."""
        xp = self.xp
        w = self.blocks(xp.arange((n + 3) // 4, dtype=xp.uint64)[None, :], substream)
        return xp.stack([normal32(xp, v) for v in w], axis=-1).reshape(len(self), -1)[:, :n]

    def uniforms(self, n: int, substream: int = 0) -> Any:
        """``n`` 32-bit uniforms per image, (B, n) float64, four per block in word order."""
        xp = self.xp
        w = self.blocks(xp.arange((n + 3) // 4, dtype=xp.uint64)[None, :], substream)
        return xp.stack([uniform32(xp, v) for v in w], axis=-1).reshape(len(self), -1)[:, :n]


# ---------------------------------------------------------------------------- Poisson

#: Means below this use inversion, at and above it PTRS.
INVERSION_BELOW = 10.0
#: Search steps of the inversion: P(X >= 48) < 1e-15 for a mean below 10.
INVERSION_STEPS = 48
#: Attempts of PTRS: attempt 0, then 12 pairs. Each attempt rejects with probability 0.25
#: at a mean of 10, 0.20 at 20, 0.15 at 100, 0.11 at 1e4 (measured), so a pixel is still
#: rejected after 25 attempts with probability < 1e-15; it then keeps its last candidate.
PTRS_PAIRS = 12
PTRS_ROUNDS = 1 + 2 * PTRS_PAIRS

#: ln k! for k = 0 .. 9.
_LOG_FACTORIAL_TABLE = (0.0, 0.0, 0.6931471805599453, 1.791759469228055, 3.1780538303479458,
                        4.787491742782046, 6.579251212010101, 8.525161361065415,
                        10.60460290274525, 12.801827480081469)


def log_factorial(xp: Any, k: Any) -> Any:
    """``ln k!`` of whole numbers ``k >= 0`` (float64 array): exact values below 10, above
    Stirling's series to the ``z^-9`` term (``z = k + 1``; error < 3e-14 at ``z = 11``)."""
    z = xp.maximum(k, 10.0) + 1.0
    iz = 1.0 / z
    iz2 = iz * iz
    series = iz * (1.0 / 12 - iz2 * (1.0 / 360 - iz2 * (1.0 / 1260 - iz2 * (
        1.0 / 1680 - iz2 * (1.0 / 1188)))))
    out = (z - 0.5) * xp.log(z) - z + 0.9189385332046728 + series
    for j, value in enumerate(_LOG_FACTORIAL_TABLE):  # no table to upload to the device
        out = xp.where(k == j, value, out)
    return out


def _pair_words(xp: Any, w: tuple, n_pixels: int) -> tuple:
    """Blocks' words (B, Q) to each pixel's pair (B, P): pixel ``2q`` takes words 0 and 1 of
    block ``q``, pixel ``2q + 1`` words 2 and 3."""
    b = w[0].shape[0]
    first = xp.stack([w[0], w[2]], axis=-1).reshape(b, -1)[:, :n_pixels]
    second = xp.stack([w[1], w[3]], axis=-1).reshape(b, -1)[:, :n_pixels]
    return first, second


def _pixel_words(streams: Streams, n_pixels: int, attempt: int) -> tuple:
    """Every pixel's two words (B, P) of its attempt ``attempt`` (sub-stream ``attempt``)."""
    xp = streams.xp
    block = xp.arange((n_pixels + 1) // 2, dtype=xp.uint64)[None, :]
    return _pair_words(xp, streams.blocks(block, attempt), n_pixels)


def _retry_words_at(streams: Streams, image: Any, pixel: Any, pair: int) -> tuple:
    """Attempts ``2 pair + 1`` and ``2 pair + 2`` of scattered pixels ``pixel`` of ``image``
    ((M,) arrays): block ``pixel`` of sub-stream ``pair + 1``, words 0-1 then 2-3; returns
    their ``(U words, V words)``, each (M, 2)."""
    xp = streams.xp
    w = streams.words_at(image, pixel, xp.uint64(pair + 1))
    return xp.stack([w[0], w[2]], axis=-1), xp.stack([w[1], w[3]], axis=-1)


def _retry_words(streams: Streams, n_pixels: int, pair: int) -> tuple:
    """The same for every pixel: ``((U, V) of attempt 2 pair + 1, (U, V) of 2 pair + 2)``,
    each word (B, P)."""
    xp = streams.xp
    w = streams.blocks(xp.arange(n_pixels, dtype=xp.uint64)[None, :], pair + 1)
    return (w[0], w[1]), (w[2], w[3])


def _ptrs_step(xp: Any, lam: Any, a: Any, b: Any) -> tuple:
    """One PTRS attempt from its two words: (candidate k, accepted)."""
    slam = xp.sqrt(lam)
    bb = 0.931 + 2.53 * slam
    aa = -0.059 + 0.02483 * bb
    vr = 0.9277 - 3.6224 / (bb - 2.0)
    u = uniform32(xp, a) - 0.5
    v = uniform32(xp, b)
    us = 0.5 - xp.abs(u)
    k = xp.floor((2.0 * aa / us + bb) * u + lam + 0.43)
    quick = (us >= 0.07) & (v <= vr)
    maybe = ~quick & (k >= 0) & ~((us < 0.013) & (v > us))
    if xp is np:  # the same test, on the few pixels it decides (~10%)
        idx = np.flatnonzero(maybe)
        maybe[idx] = _ptrs_test(xp, lam[idx], bb[idx], aa[idx], us[idx], v[idx], k[idx])
        return k, quick | maybe
    return k, quick | (maybe & _ptrs_test(xp, lam, bb, aa, us, v, xp.maximum(k, 0.0)))


def _ptrs_test(xp: Any, lam: Any, bb: Any, aa: Any, us: Any, v: Any, k: Any) -> Any:
    """PTRS's acceptance test of candidates ``k >= 0`` that the squeeze left open."""
    inv_alpha = 1.1239 + 1.1328 / (bb - 3.4)
    return (xp.log(v) + xp.log(inv_alpha) - xp.log(aa / (us * us) + bb)
            <= -lam + k * xp.log(lam) - log_factorial(xp, k))


def poisson(xp: Any, lam: Any, streams: Streams, *, compact: bool | None = None) -> Any:
    """Poisson counts (float64, shape of ``lam``) of means ``lam`` (B, P) >= 0, pixel ``p``
    of image ``i`` from the streams of image ``i``.

    Pixel ``p``'s attempt 0 uses words 0-1 (even ``p``) or 2-3 (odd ``p``) of block ``p // 2``
    of sub-stream 0; its attempts ``2j + 1`` and ``2j + 2`` words 0-1 and 2-3 of block ``p``
    of sub-stream ``j + 1``.

    * Mean below 10: inversion by sequential search, ``k`` the first with ``u <= F(k)``,
      from one 53-bit uniform ``u`` (the two words of attempt 0) and the cumulative
      probabilities ``F`` built term by term (``p_k = p_{k-1} (lam / k)``), at most 48 steps
      (a mean below 10 exceeds 47 with probability < 1e-15; such a draw gives 48).
    * Mean 10 and above: PTRS, the transformed rejection with squeeze of Hörmann ("The
      transformed rejection method for generating Poisson random variables", Insurance:
      Mathematics and Economics 12, 39-45, 1993), written from the paper; each attempt
      draws its ``U`` and ``V`` from its two words; at most 25 attempts (see
      :data:`PTRS_ROUNDS`). Its ``ln k!`` is :func:`log_factorial`.

    Each pixel's result depends only on its own draws, so the two drivers give the same
    numbers: ``compact`` (the NumPy default) carries on only with the pixels still
    searching or rejected and stops when none is left; otherwise (CuPy) every round runs
    over every pixel, masked, with no host synchronisation.
    """
    if compact is None:
        compact = xp is np
    lam = xp.asarray(lam, dtype=xp.float64)
    b, p = lam.shape
    a0, b0 = (w.reshape(-1) for w in _pixel_words(streams, p, 0))
    flat = lam.reshape(-1)
    small = flat < INVERSION_BELOW
    if compact:
        out = np.zeros(b * p)
        idx = np.flatnonzero(small & (flat > 0))
        if idx.size:
            out[idx] = _inversion(xp, flat[idx], a0[idx], b0[idx], compact=True)
        idx = np.flatnonzero(~small)
        if idx.size:
            def more(pair: int, sub: np.ndarray) -> tuple:
                return _retry_words_at(streams, sub // p, (sub % p).astype(np.uint64), pair)
            out[idx] = _ptrs(xp, flat[idx], a0[idx], b0[idx], idx, more, compact=True)
        return out.reshape(b, p)

    def every(pair: int, _: Any) -> tuple:
        return tuple(tuple(w.reshape(-1) for w in ab) for ab in _retry_words(streams, p, pair))
    inv = _inversion(xp, xp.where(small, flat, 0.0), a0, b0, compact=False)
    rej = _ptrs(xp, xp.where(small, INVERSION_BELOW, flat), a0, b0, None, every, compact=False)
    return xp.where(small, inv, rej).reshape(b, p)


def _inversion(xp: Any, lam: Any, hi: Any, lo: Any, *, compact: bool) -> Any:
    u = uniform53(xp, hi, lo)
    term = xp.exp(-lam)
    cdf = term.copy()
    k = xp.zeros_like(lam)
    active = u > cdf
    if compact:
        idx = np.flatnonzero(active)
        for step in range(1, INVERSION_STEPS + 1):
            if not idx.size:
                break
            k[idx] = step
            term_i = term[idx] * (lam[idx] / step)
            cdf_i = cdf[idx] + term_i
            term[idx], cdf[idx] = term_i, cdf_i
            idx = idx[u[idx] > cdf_i]
        return k
    for step in range(1, INVERSION_STEPS + 1):
        k = xp.where(active, float(step), k)
        term = xp.where(active, term * (lam / step), term)
        cdf = xp.where(active, cdf + term, cdf)
        active = active & (u > cdf)
    return k


def _ptrs(xp: Any, lam: Any, a: Any, b: Any, where: Any, more: Any, *, compact: bool) -> Any:
    """PTRS for means >= 10: attempt 0 from ``(a, b)``, attempts ``2j + 1, 2j + 2`` from
    ``more(j, ...)`` (the words of the pixels ``where[i]`` still rejected, or of every
    pixel)."""
    k, ok = _ptrs_step(xp, lam, a, b)
    if compact:
        # the pixels still rejected try a pair of attempts at once, keeping the first
        # accepted (or, after the last attempt, the last candidate): what the attempts one
        # by one give, with a few large array operations instead of many
        idx = np.flatnonzero(~ok)
        for pair in range(PTRS_PAIRS):
            if not idx.size:
                break
            wa, wb = more(pair, where[idx])
            cand, ok_i = _ptrs_step(xp, np.repeat(lam[idx], 2), wa.reshape(-1), wb.reshape(-1))
            cand, ok_i = cand.reshape(-1, 2), ok_i.reshape(-1, 2)
            accepted = ok_i.any(axis=1)
            pick = np.where(accepted, ok_i.argmax(axis=1), 1)
            k[idx] = cand[np.arange(idx.size), pick]
            idx = idx[~accepted]
        return np.maximum(k, 0.0)
    active = ~ok
    for pair in range(PTRS_PAIRS):
        for wa, wb in more(pair, None):
            cand, ok = _ptrs_step(xp, lam, wa, wb)
            k = xp.where(active, cand, k)
            active = active & ~ok
    return xp.maximum(k, 0.0)
