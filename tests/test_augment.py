"""Augmentations: noise statistics, paired clean images and labels, determinism."""

from __future__ import annotations

import numpy as np
import pytest
from reference import analytic_gaussian_2d, frame_pixel_coords, icosahedron, quantise

from xyz2image_gpu import Renderer, RenderSettings, as_structure
from xyz2image_gpu.physics.augment import add_noise, image_key, phonon_displacements


def test_shot_noise_is_poisson_at_the_dose():
    """A flat image of value v with lambda expected electrons per pixel: the noisy image is
    Poisson(lambda) * v / lambda, so mean v and variance v²/lambda."""
    v, lam = 3.0, 40.0
    images = np.full((4, 128, 128), v)
    noisy = add_noise(images, [image_key(0, "flat", 0, 0, r) for r in range(4)],
                      electrons_per_pixel=np.full(4, lam), read_noise=0.0)
    counts = noisy * lam / v
    n = counts.size
    assert abs(counts.mean() - lam) < 4 * np.sqrt(lam / n)
    assert abs(counts.var() - lam) < 4 * lam * np.sqrt(2 / n)
    np.testing.assert_allclose(counts, np.rint(counts), atol=1e-3)  # whole electrons


def test_read_noise_is_gaussian_with_the_stated_width():
    images = np.zeros((2, 128, 128))
    images[:, 0, 0] = 10.0  # the maximum sets the scale
    noisy = add_noise(images, [image_key(1, "x", 0, 0, r) for r in range(2)],
                      electrons_per_pixel=None, read_noise=0.05)
    residual = (noisy - images)[:, 1:, 1:]
    assert abs(residual.mean()) < 4 * 0.5 / np.sqrt(residual.size)
    assert abs(residual.std() / 0.5 - 1) < 0.02


def test_noise_streams_are_per_image():
    images = np.full((3, 16, 16), 1.0)
    keys = [image_key(0, "a", 0, 0, r) for r in range(3)]
    a = add_noise(images, keys, electrons_per_pixel=np.full(3, 5.0), read_noise=0.1)
    b = add_noise(images[1:], keys[1:], electrons_per_pixel=np.full(2, 5.0), read_noise=0.1)
    np.testing.assert_array_equal(a[1:], b)
    assert not np.array_equal(a[0], a[1])


def test_engine_noise_keeps_clean_image_and_labels(device):
    st = as_structure(icosahedron("Au", 3))
    base = {"edgesize": 48}
    outputs = ["gaussian_2d", "coordinates_3d", "delta_2d"]
    clean = Renderer(RenderSettings(**base), outputs, device).render(st, 5, seed=4)
    noisy_r = Renderer(RenderSettings(**base, dose=2000.0, read_noise=0.01), outputs, device)
    noisy = noisy_r.render(st, 5, seed=4)
    np.testing.assert_array_equal(noisy["gaussian_2d_clean"], clean["gaussian_2d"])
    for key in ("coordinates_3d", "delta_2d", "rotations", "voxel_size"):
        np.testing.assert_array_equal(noisy[key], clean[key])
    np.testing.assert_allclose(noisy["electrons_per_pixel"], 2000.0 * clean["voxel_size"] ** 2)
    assert not np.array_equal(noisy["gaussian_2d"], clean["gaussian_2d"])
    layout = noisy_r.output_layout(st, 5)
    for key, (shape, dtype) in layout.items():
        assert noisy[key].shape == shape and noisy[key].dtype == dtype, key
    # same bytes whatever the batch size
    again = noisy_r.render(st, 5, seed=4, batch_size=2)
    for key in noisy:
        np.testing.assert_array_equal(again[key], noisy[key], err_msg=key)


def test_phonon_jitter_displaces_image_not_labels(device):
    atoms = icosahedron("Au", 3)
    st = as_structure(atoms)
    u = 0.15
    settings = RenderSettings(edgesize=64, phonon_jitter=True, normalization="float",
                              thermal_overrides=(("Au", u),), z_exponent=0)
    outputs = ["gaussian_2d", "coordinates_3d"]
    out = Renderer(settings, outputs, device).render(st, 3, seed=9, stack=2)
    plain = Renderer(RenderSettings(edgesize=64, normalization="float"), outputs,
                     device).render(st, 3, seed=9, stack=2)
    np.testing.assert_array_equal(out["coordinates_3d"], plain["coordinates_3d"])
    for r in range(3):
        R = out["rotations"][r]
        key = image_key(9, st.name, 0, 2, r)
        d = phonon_displacements(key, np.full(len(atoms), u))
        assert 0.5 * u < d.std() < 1.5 * u
        coords, voxel = frame_pixel_coords(atoms.positions, R, edgesize=64)
        moved = coords + (d @ R.T) / voxel  # framed by the undisplaced atoms
        want = analytic_gaussian_2d(moved, 1.0, 0.4 / voxel, 64)
        np.testing.assert_allclose(out["gaussian_2d"][r], want, atol=1e-4 * want.max())
        assert np.abs(quantise(want) .astype(int) - quantise(
            analytic_gaussian_2d(coords, 1.0, 0.4 / voxel, 64)).astype(int)).max() > 0


@pytest.mark.parametrize("bad", [{"dose": 0.0}, {"read_noise": -0.1},
                                 {"legacy": True, "dose": 10.0},
                                 {"legacy": True, "phonon_jitter": True}])
def test_invalid_augmentation_settings(bad):
    with pytest.raises(ValueError):
        RenderSettings(**bad)


@pytest.mark.parametrize("kernel", ["numpy", "auto"])
def test_scan_distortions_match_per_row_analytic_sum(device, kernel):
    """Drift and scan-line jitter: row i shows the atoms shifted by the saved
    scan_offsets[i] (Å); the reference sums each row's Gaussians exactly."""
    if device != "cpu" and kernel == "numpy":
        pytest.skip("cpu_kernel only matters on the CPU")
    atoms = icosahedron("Au", 3)
    st = as_structure(atoms)
    settings = RenderSettings(edgesize=48, scan_jitter=0.3, drift=2.0, normalization="float",
                              z_exponent=0)
    out = Renderer(settings, ["gaussian_2d", "delta_2d"], device, cpu_kernel=kernel).render(
        st, 3, seed=1)
    clean = Renderer(RenderSettings(edgesize=48, normalization="float", z_exponent=0),
                     ["gaussian_2d"],
                     device, cpu_kernel=kernel).render(st, 3, seed=1)
    np.testing.assert_array_equal(out["gaussian_2d_clean"], clean["gaussian_2d"])
    assert out["scan_offsets"].shape == (3, 48, 2)
    grid = np.arange(48.0)
    for k in range(3):
        coords, voxel = frame_pixel_coords(atoms.positions, out["rotations"][k], edgesize=48)
        offsets = out["scan_offsets"][k].astype(np.float64) / voxel
        s2 = 2 * (0.4 / voxel) ** 2
        want = np.empty((48, 48))
        for i in range(48):
            gx = np.exp(-((i - coords[:, 0] - offsets[i, 0]) ** 2) / s2)
            gy = np.exp(-((grid[None, :] - coords[:, 1:2] - offsets[i, 1]) ** 2) / s2)
            want[i] = gx @ gy
        np.testing.assert_allclose(out["gaussian_2d"][k], want, atol=1e-4 * want.max())
        # drift is linear across rows: the jitter-free part of x moves by a constant per row
        dx = np.diff(out["scan_offsets"][k][:, 0])
        np.testing.assert_allclose(dx, dx[0], atol=1e-6)
        span = out["scan_offsets"][k][-1, 0] - out["scan_offsets"][k][0, 0]
        assert abs(span) <= 2.0 + 1e-6  # the x part of a 2 Å drift over the frame


def test_scan_jitter_statistics():
    from xyz2image_gpu.physics.augment import scan_offsets

    rows = np.array([scan_offsets(image_key(0, "s", 0, 0, r), 256, 0.5, 0.0) for r in range(40)])
    assert np.all(rows[:, :, 0] == 0)  # jitter is along the fast axis only
    assert abs(rows[:, :, 1].std() / 0.5 - 1) < 0.05
    drift = np.array([scan_offsets(image_key(0, "s", 0, 0, r), 64, 0.0, 3.0) for r in range(40)])
    span = drift[:, -1] - drift[:, 0]
    np.testing.assert_allclose(np.hypot(span[:, 0], span[:, 1]), 3.0)  # Å over the frame
