"""Rotations: proper, Haar-uniform, the seed's first view, deterministic and order-free.

The statistics are computed on a fixed stream of 20,000 rotations, so each test either always
passes or always fails; thresholds are several standard errors (or p > 1e-4 for KS tests).
"""

from __future__ import annotations

import numpy as np
import pytest
from ase_compat import Atoms, requires_ase
from reference import R0
from scipy import stats

from xyz2image_gpu.pipeline.rotations import rotation_matrices

N_STAT = 20_000


@pytest.fixture(scope="module")
def haar_sample() -> np.ndarray:
    return rotation_matrices(N_STAT, seed=12345, name="haar", frame_index=0, stack=0,
                             all_random=True)


def test_shape_dtype(haar_sample):
    assert haar_sample.shape == (N_STAT, 3, 3)
    assert haar_sample.dtype == np.float64


def test_proper_orthonormal(haar_sample):
    R = haar_sample
    eye = np.einsum("nij,nkj->nik", R, R)
    assert np.abs(eye - np.eye(3)).max() < 1e-12
    assert np.abs(np.linalg.det(R) - 1.0).max() < 1e-12


def test_trace_moments(haar_sample):
    """Haar on SO(3): E[tr R] = 0, E[(tr R)^2] = 1 (the character's moments)."""
    tr = np.trace(haar_sample, axis1=1, axis2=2)
    se1 = tr.std() / np.sqrt(N_STAT)
    assert abs(tr.mean()) < 5 * se1
    tr2 = tr**2
    se2 = tr2.std() / np.sqrt(N_STAT)
    assert abs(tr2.mean() - 1.0) < 5 * se2


def test_mean_matrix_is_zero(haar_sample):
    """Every entry of a Haar rotation has mean 0 and variance 1/3."""
    mean = haar_sample.mean(axis=0)
    se = np.sqrt(1.0 / 3.0 / N_STAT)
    assert np.abs(mean).max() < 5 * se
    assert np.abs((haar_sample**2).mean(axis=0) - 1.0 / 3.0).max() < 0.02


def test_rotation_angle_distribution(haar_sample):
    """The angle θ of a Haar rotation has density (1 - cos θ)/π, CDF (θ - sin θ)/π."""
    tr = np.trace(haar_sample, axis1=1, axis2=2)
    theta = np.arccos(np.clip((tr - 1.0) / 2.0, -1.0, 1.0))
    p = stats.kstest(theta, lambda t: (t - np.sin(t)) / np.pi).pvalue
    assert p > 1e-4


@pytest.mark.parametrize("which", ["column", "row"])
def test_beam_axis_uniform_on_sphere(haar_sample, which):
    """R @ e_z (where the beam axis goes) and R.T @ e_z (which direction faces the beam)."""
    v = haar_sample[:, :, 2] if which == "column" else haar_sample[:, 2, :]
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0)
    assert np.abs(v.mean(axis=0)).max() < 5 * np.sqrt(1.0 / 3.0 / N_STAT)
    for c in range(3):  # Archimedes: each component is uniform on [-1, 1]
        assert stats.kstest(v[:, c], "uniform", args=(-1.0, 2.0)).pvalue > 1e-4
    azimuth = np.arctan2(v[:, 1], v[:, 0])
    assert stats.kstest(azimuth, "uniform", args=(-np.pi, 2 * np.pi)).pvalue > 1e-4


@requires_ase
def test_uniform_euler_angles_would_fail():
    """Sanity check of the test's power: the seed's uniform Euler angles are not Haar."""
    rng = np.random.default_rng(0)
    atoms = Atoms("H", positions=[[0.0, 0.0, 1.0]])
    z = np.empty(4000)
    for k in range(len(z)):
        a = atoms.copy()
        a.euler_rotate(*rng.uniform(0, 360, 3))
        z[k] = a.positions[0, 2]
    assert stats.kstest(z, "uniform", args=(-1.0, 2.0)).pvalue < 1e-6


def test_first_rotation_is_seed_view():
    R = rotation_matrices(5, seed=3, name="x", frame_index=2, stack=1)
    np.testing.assert_array_equal(R[0], R0)
    assert not np.allclose(R[1], R0)


@requires_ase
def test_r0_is_ase_rotate_90_about_z():
    """R0 is the seed's ``atoms.rotate(90, 'z')`` with rotated positions = positions @ R.T."""
    rng = np.random.default_rng(1)
    pos = rng.normal(size=(7, 3))
    atoms = Atoms("H7", positions=pos)
    atoms.rotate(90, "z")
    np.testing.assert_allclose(atoms.positions, pos @ R0.T, atol=1e-12)


def test_all_random_replaces_first():
    fixed = rotation_matrices(4, seed=0, name="x", frame_index=0, stack=0)
    rnd = rotation_matrices(4, seed=0, name="x", frame_index=0, stack=0, all_random=True)
    assert not np.allclose(rnd[0], R0)
    np.testing.assert_array_equal(fixed[1:], rnd[1:])


def test_deterministic():
    a = rotation_matrices(50, seed=7, name="particle", frame_index=1, stack=2)
    b = rotation_matrices(50, seed=7, name="particle", frame_index=1, stack=2)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("all_random", [False, True])
def test_subranges_match_whole(all_random):
    kw = {"seed": 5, "name": "p", "frame_index": 3, "stack": 0, "all_random": all_random}
    whole = rotation_matrices(40, **kw)
    for start, stop in [(0, 1), (0, 7), (1, 8), (7, 14), (13, 40), (39, 40), (5, 5)]:
        part = rotation_matrices(40, start=start, stop=stop, **kw)
        assert part.shape == (stop - start, 3, 3)
        np.testing.assert_array_equal(part, whole[start:stop])
    pieces = [rotation_matrices(40, start=s, stop=min(s + 7, 40), **kw) for s in range(0, 40, 7)]
    np.testing.assert_array_equal(np.concatenate(pieces), whole)


def test_prefix_independent_of_length():
    """Rotation k does not depend on how many rotations the stream has."""
    short = rotation_matrices(10, seed=1, name="p", frame_index=0, stack=0)
    long = rotation_matrices(1000, seed=1, name="p", frame_index=0, stack=0)
    np.testing.assert_array_equal(short, long[:10])


@pytest.mark.parametrize(
    "change",
    [{"seed": 1}, {"name": "other"}, {"frame_index": 1}, {"stack": 1}],
    ids=["seed", "name", "frame", "stack"],
)
def test_streams_differ(change):
    base = {"seed": 0, "name": "particle", "frame_index": 0, "stack": 0}
    a = rotation_matrices(20, **base)
    b = rotation_matrices(20, **{**base, **change})
    np.testing.assert_array_equal(a[0], b[0])  # both R0
    # no random rotation of one stream appears in the other
    diff = np.abs(a[1:, None] - b[None, 1:]).max(axis=(2, 3))
    assert diff.min() > 1e-6


def test_bad_range_rejected():
    with pytest.raises(ValueError):
        rotation_matrices(5, start=3, stop=7)
