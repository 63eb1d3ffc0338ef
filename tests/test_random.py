"""The counter-based generator of the augmentations (physics/random.py): Philox4x32-10
against its published known answers, the distributions it feeds, and the same numbers on
NumPy and on the CuPy stand-in. Every seed is fixed: the tests are deterministic."""

from __future__ import annotations

import numpy as np
import pytest
from fake_cupy import FakeCupy
from scipy import stats

from xyz2image_gpu.physics.random import (
    Streams,
    log_factorial,
    normal32,
    philox4x32,
    poisson,
    uniform32,
)

#: Random123's known-answer vectors for Philox4x32-10: the three "philox4x32 10" lines of
#: Random123's ``tests/kat_vectors`` (D. E. Shaw Research, github.com/DEShawResearch/random123,
#: at commit 9545ff64; columns: counter (4 words), key (2 words), expected output (4 words)).
KAT = [
    ((0x00000000, 0x00000000, 0x00000000, 0x00000000), (0x00000000, 0x00000000),
     (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF), (0xFFFFFFFF, 0xFFFFFFFF),
     (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]

#: The same vectors after 7 rounds (the "philox4x32 7" lines): the round count matters.
KAT7 = [(0x5F6FB709, 0x0D893F64, 0x4F121F81, 0x4F730A48),
        (0x5207DDC2, 0x45165E59, 0x4D8EE751, 0x8C52F662),
        (0x4DFCCABA, 0x190A87F0, 0xC47362BA, 0xB6B5242A)]


@pytest.mark.parametrize("case", range(3))
def test_philox4x32_10_known_answers(case):
    counter, key, want = KAT[case]
    got = philox4x32(np, counter, key)
    assert [int(w) for w in got] == list(want)
    assert [int(w) for w in philox4x32(np, counter, key, rounds=7)] == list(KAT7[case])
    # vectorised: the vector in the middle of an array of other counters
    c0 = np.array([1, counter[0], 2], dtype=np.uint64)
    out = philox4x32(np, (c0, counter[1], counter[2], counter[3]), key)
    assert [int(w[1]) for w in out] == list(want)


def test_philox_on_the_stand_in_gives_the_same_bits():
    fake = FakeCupy()
    rng = np.random.default_rng(0)
    c = rng.integers(0, 2**32, size=(4, 1000), dtype=np.uint64)
    k = rng.integers(0, 2**32, size=(2, 1000), dtype=np.uint64)
    host = philox4x32(np, tuple(c), tuple(k))
    dev = philox4x32(fake, tuple(fake.asarray(v) for v in c), tuple(fake.asarray(v) for v in k))
    for h, d in zip(host, dev):
        assert d.dtype == np.uint32
        np.testing.assert_array_equal(fake.asnumpy(d), h)


def _streams(xp=np, n=4, purpose=2):
    keys = np.array([0x0123456789ABCDEF + 7919 * i for i in range(n)], dtype=np.uint64)
    return Streams(xp, xp.asarray(keys), xp.asarray(np.arange(n, dtype=np.uint32)), purpose)


def test_uniforms_and_normals():
    s = _streams(n=8)
    u = s.uniforms(50_000).ravel()
    assert 0 < u.min() and u.max() < 1
    assert stats.kstest(u, "uniform").pvalue > 1e-3
    z = s.normals(50_000, substream=3).ravel()
    assert abs(z.mean()) < 4 / np.sqrt(z.size)
    assert abs(z.std() - 1) < 4 / np.sqrt(2 * z.size)
    assert stats.kstest(z, "norm").pvalue > 1e-3
    # independent of the batch: image 5 alone draws what it draws among eight
    alone = _streams(n=8).take(np.array([5])).normals(1000, substream=3)
    np.testing.assert_array_equal(alone[0], s.normals(1000, substream=3)[5])
    # and of how many are drawn: the first n of more are the same
    np.testing.assert_array_equal(s.normals(7)[:, :7], s.normals(1000)[:, :7])


def test_normals_are_the_inverse_normal_distribution_function():
    """AS 241 against SciPy's ndtri at the uniforms of 200,000 words spread over the range,
    the extremes included: relative error ~1e-16 (1.1e-15 where the normal is near 0)."""
    from scipy.special import ndtri

    w = np.concatenate([np.linspace(0, 2**32 - 1, 200_000).astype(np.uint64),
                        np.array([0, 1, 2**31 - 1, 2**31, 2**32 - 1], dtype=np.uint64)])
    z = normal32(np, w.astype(np.uint32))
    want = ndtri(uniform32(np, w))
    np.testing.assert_allclose(z, want, rtol=2e-15, atol=1e-16)
    assert z.max() == -z.min() and 6.3 < z.max() < 6.4  # the 32-bit uniform's reach


def test_log_factorial():
    from scipy.special import gammaln

    k = np.arange(0, 3000, dtype=np.float64)
    np.testing.assert_allclose(log_factorial(np, k), gammaln(k + 1), rtol=1e-14, atol=3e-14)


@pytest.mark.parametrize("lam", [0.0, 0.3, 5.0, 9.99, 10.0, 30.0, 1e4, 1e6])
def test_poisson_distribution(lam):
    """Mean and variance within 4 sigma, and a chi-square test of the histogram over bins
    of expected count >= 20, at means across both methods (inversion below 10, PTRS)."""
    s = _streams(n=16)
    x = poisson(np, np.full((16, 8192), lam), s).ravel()
    n = x.size
    assert np.all(x == np.rint(x)) and x.min() >= 0
    if lam == 0:
        assert not x.any()
        return
    assert abs(x.mean() - lam) < 4 * np.sqrt(lam / n)
    assert abs(x.var() / lam - 1) < 4 * np.sqrt((2 + 1 / lam) / n)
    lo, hi = stats.poisson.ppf([1e-6, 1 - 1e-6], lam)
    edges = np.arange(lo, hi + 2)
    observed = np.histogram(x, np.concatenate([[-0.5], edges[1:] - 0.5, [np.inf]]))[0]
    cdf = stats.poisson.cdf(edges[1:] - 1, lam)
    expected = n * np.diff(np.concatenate([[0.0], cdf, [1.0]]))
    # merge bins from both ends until each expects at least 20
    obs, exp, o, e = [], [], 0, 0.0
    for oi, ei in zip(observed, expected):
        o, e = o + oi, e + ei
        if e >= 20:
            obs.append(o)
            exp.append(e)
            o, e = 0, 0.0
    obs[-1] += o
    exp[-1] += e
    chi2 = stats.chisquare(obs, np.array(exp) * (n / sum(exp)))
    assert chi2.pvalue > 1e-3, (lam, chi2)


def test_poisson_drivers_and_stand_in_agree():
    """Compacting (NumPy) and masked (device) rounds draw the same numbers, and the stand-in
    for CuPy runs the masked rounds to the same bits, over means spanning both methods."""
    lam = np.geomspace(1e-4, 1e6, 4 * 3000).reshape(4, 3000)
    lam[:, ::7] = 0.0
    lam[:, 1::7] = 10.0
    s = _streams()
    compact = poisson(np, lam, s)
    np.testing.assert_array_equal(compact, poisson(np, lam, s, compact=False))
    fake = FakeCupy()
    dev = poisson(fake, fake.asarray(lam), _streams(fake))
    assert fake.syncs == 0  # no host wait in the masked rounds
    np.testing.assert_array_equal(fake.asnumpy(dev), compact)


def test_draws_do_not_depend_on_the_batch():
    lam = np.full((6, 500), 20.0)
    lam[:, :250] = 2.0
    all6 = poisson(np, lam, _streams(n=6))
    some = poisson(np, lam[2:4], _streams(n=6).take(np.array([2, 3])))
    np.testing.assert_array_equal(all6[2:4], some)
