"""Multi-Gaussian probes and thermal smearing in the engine, against analytic sums.

A probe ``sum_g a_g exp(-r²/(2 s_g²))`` makes every atom a sum of separable Gaussians; with
thermal smearing each width becomes ``sqrt(s_g² + u²)`` and the amplitude shrinks by
``s_g² / (s_g² + u²)`` (a 2-D convolution keeps the integral). The references below sum
those Gaussians in float64 with the helpers of ``reference.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
from reference import analytic_gaussian_2d, frame_pixel_coords, icosahedron, quantise

from xyz2image_gpu import Renderer, RenderSettings, as_structure

PROBE = ((1.0, 0.35), (0.12, 0.9), (0.02, 2.5))


def _reference(pos, numbers, rotation, components, edgesize, *, z_exponent=0.0, u=None):
    coords, voxel = frame_pixel_coords(pos, rotation, edgesize=edgesize)
    weights = np.asarray(numbers, dtype=np.float64) ** z_exponent
    image = np.zeros((edgesize, edgesize))
    for amplitude, sigma in components:
        sig2 = np.full(len(pos), sigma**2)
        amp = weights * amplitude
        if u is not None:
            amp = amp * sig2 / (sig2 + u**2)
            sig2 = sig2 + u**2
        for s2 in np.unique(sig2):  # group atoms of one width (one element)
            sel = sig2 == s2
            image += analytic_gaussian_2d(coords[sel], amp[sel], np.sqrt(s2) / voxel, edgesize)
    return image


@pytest.mark.parametrize("kernel", ["numpy", "auto"])
def test_multi_gaussian_probe_matches_analytic_sum(device, kernel):
    if device != "cpu" and kernel == "numpy":
        pytest.skip("cpu_kernel only matters on the CPU")
    atoms = icosahedron("Pd", 3)
    atoms.numbers[::3] = 79
    st = as_structure(atoms)
    settings = RenderSettings(edgesize=64, probe=PROBE, z_exponent=1.7, normalization="float")
    r = Renderer(settings, ["gaussian_2d"], device, cpu_kernel=kernel)
    out = r.render(st, 3, seed=5)
    r.close()
    for k in range(3):
        want = _reference(atoms.positions, atoms.numbers, out["rotations"][k], PROBE, 64,
                          z_exponent=1.7)
        np.testing.assert_allclose(out["gaussian_2d"][k], want, atol=1e-4 * want.max(),
                                   rtol=1e-4)


def test_probe_quantised_within_one_grey_level(device):
    atoms = icosahedron("Au", 4)
    st = as_structure(atoms)
    out = Renderer(RenderSettings(edgesize=96, probe=PROBE), ["gaussian_2d"], device).render(
        st, 2, seed=1)
    for k in range(2):
        want = quantise(_reference(atoms.positions, atoms.numbers, out["rotations"][k], PROBE,
                                   96), 8)
        assert np.abs(out["gaussian_2d"][k].astype(int) - want.astype(int)).max() <= 1


def test_thermal_smearing_with_overrides(device):
    """Two elements with overridden r.m.s. displacements: each element's Gaussians widen
    by its own u, integrals kept."""
    atoms = icosahedron("Au", 3)
    atoms.numbers[1::2] = 46  # Pd
    st = as_structure(atoms)
    u_by_z = {79: 0.09, 46: 0.2}
    settings = RenderSettings(edgesize=64, gauss_sigma=0.3, thermal=True, normalization="float",
                              thermal_overrides=(("Au", 0.09), ("pd", 0.2)), z_exponent=0)
    out = Renderer(settings, ["gaussian_2d"], device).render(st, 2, seed=2)
    u = np.array([u_by_z[z] for z in atoms.numbers])
    for k in range(2):
        coords, voxel = frame_pixel_coords(atoms.positions, out["rotations"][k], edgesize=64)
        want = np.zeros((64, 64))
        for z in (79, 46):
            sel = atoms.numbers == z
            s2 = 0.3**2 + u_by_z[z] ** 2
            want += analytic_gaussian_2d(coords[sel], 0.3**2 / s2, np.sqrt(s2) / voxel, 64)
        np.testing.assert_allclose(out["gaussian_2d"][k], want, atol=1e-4 * want.max(),
                                   rtol=1e-4)
    assert u.max() == 0.2  # both overrides were exercised


def test_thermal_uses_builtin_table(device):
    """Without overrides the built-in room-temperature table widens the image."""
    st = as_structure(np.zeros((1, 3)), symbols=["Au"])
    plain = Renderer(RenderSettings(edgesize=32, normalization="float"), ["gaussian_2d"],
                     device).render(st, 1)["gaussian_2d"][0]
    smeared = Renderer(RenderSettings(edgesize=32, normalization="float", thermal=True),
                       ["gaussian_2d"], device).render(st, 1)["gaussian_2d"][0]
    assert smeared.max() < plain.max()
    np.testing.assert_allclose(smeared.sum(), plain.sum(), rtol=1e-3)  # integral kept


@pytest.mark.parametrize(
    "bad",
    [
        {"probe": ((1.0, 0.0),)},
        {"probe": ((-1.0, 0.4),)},
        {"probe": ((0.0, 0.4),)},
        {"thermal_overrides": (("Au", -0.1),)},
        {"legacy": True, "probe": ((1.0, 0.4),)},
        {"legacy": True, "thermal": True},
    ],
)
def test_invalid_probe_settings(bad):
    with pytest.raises(ValueError):
        RenderSettings(**bad)


def test_probe_settings_accept_lists_and_stay_hashable():
    s = RenderSettings(probe=[[1, 0.4], [0.1, 1.0]], thermal_overrides=[["Au", 0.08]])
    assert s.probe == ((1.0, 0.4), (0.1, 1.0))
    assert s.thermal_overrides == (("Au", 0.08),)
    hash(s)
    assert RenderSettings().components == ((1.0, 0.4),)


def test_per_atom_column_correction_matches_brute_force(device):
    """Each atom's weight times 1 + c1 x + c2 x², widths grown by beta * max(x - 1, 0) Å²
    (integral kept), x = the convolution image at the atom / one Au atom's peak: checked
    against a float64 brute-force sum, on every kernel."""
    atoms = icosahedron("Au", 3)
    atoms.numbers[::4] = 46
    st = as_structure(atoms)
    c, beta, sigma, zexp = (0.2, -0.01), 0.004, 0.3, 1.7
    settings = RenderSettings(edgesize=48, gauss_sigma=sigma, z_exponent=zexp,
                              normalization="float", column_correction=c,
                              column_broadening=beta)
    kernels = ["numpy", "auto"] if device == "cpu" else ["auto"]
    for kernel in kernels:
        out = Renderer(settings, ["gaussian_2d"], device, cpu_kernel=kernel).render(st, 2)
        for k in range(2):
            coords, voxel = frame_pixel_coords(atoms.positions, out["rotations"][k],
                                               edgesize=48)
            w = atoms.numbers.astype(np.float64) ** zexp
            d2 = ((coords[:, None, :2] - coords[None, :, :2]) ** 2).sum(-1)
            s_px = sigma / voxel
            x = (w[None, :] * np.exp(-d2 / (2 * s_px**2))).sum(1) / 79.0**zexp
            grown = s_px**2 + beta / voxel**2 * np.maximum(x - 1, 0)
            amp = w * (1 + c[0] * x + c[1] * x**2) * s_px**2 / grown
            want = np.zeros((48, 48))
            for i in range(len(atoms)):
                want += analytic_gaussian_2d(coords[i:i + 1], amp[i], np.sqrt(grown[i]), 48)
            np.testing.assert_allclose(out["gaussian_2d"][k], want, atol=1e-4 * want.max(),
                                       rtol=1e-4)
            assert x.max() > 1.5  # columns of several atoms were exercised
