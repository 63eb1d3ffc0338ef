"""Cross-sections into an annular detector, against physics and integrations of their own."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate

from xyz2image_gpu.physics.cross_section import (
    BOHR_RADIUS,
    detector_cross_section,
    phase_object_cross_section,
    projected_phase,
    relativistic_factor,
    scattering_factor,
)
from xyz2image_gpu.physics.probe import electron_wavelength


@pytest.mark.parametrize("z", range(1, 104))
def test_every_element_tends_to_rutherford_scattering_by_its_nucleus(z):
    # Mott-Bethe: f_e(g) -> Z / (2π² a0 g²) once the electrons' form factor has died away
    g = 2000.0
    assert scattering_factor(z, g) * g * g == pytest.approx(z / (2 * math.pi**2 * BOHR_RADIUS),
                                                             rel=1e-6)


def test_hydrogen_follows_its_exact_1s_scattering_factor():
    # f_x(q) = 16 / (4 + (q a0)²)² with q = 2π g; f_e = (1 - f_x) / (2π² a0 g²); f_e(0) = a0
    g = np.linspace(0.05, 6.0, 120)
    fx = 16.0 / (4.0 + (2 * math.pi * g * BOHR_RADIUS) ** 2) ** 2
    exact = (1.0 - fx) / (2 * math.pi**2 * BOHR_RADIUS * g * g)
    np.testing.assert_allclose(scattering_factor("H", g), exact, rtol=2e-3)
    assert scattering_factor(1, 0.0) == pytest.approx(BOHR_RADIUS, rel=1e-6)


def test_known_forward_scattering_factors():
    # f_e(0) = Z <r²> / (3 a0); Hartree-Fock values of Doyle & Turner (1968): C 2.51 Å
    assert scattering_factor("C", 0.0) == pytest.approx(2.51, abs=0.01)
    assert scattering_factor(6, [0.0, 1.0, 2.0]).shape == (3,)


def _quad_reference(z, kv, lo, hi, u=0.0, part="total"):
    lam, gamma = electron_wavelength(kv), relativistic_factor(kv)

    def density(theta):
        g = 2 * math.sin(theta / 2) / lam
        f = gamma * float(scattering_factor(z, g))
        w = math.exp(-4 * math.pi**2 * u * u * g * g)
        weight = {"total": 1.0, "elastic": w, "thermal_diffuse": 1.0 - w}[part]
        return 2 * math.pi * f * f * weight * math.sin(theta)

    return integrate.quad(density, lo * 1e-3, hi * 1e-3, epsabs=0, epsrel=1e-11, limit=200)[0]


@pytest.mark.parametrize(("z", "kv", "lo", "hi", "u"), [
    (79, 200, 70, 200, 0.0898), (46, 300, 40, 100, 0.0768), (6, 80, 0, 30, 0.05),
    (92, 300, 100, 400, 0.07),
])
def test_detector_integral_matches_adaptive_quadrature(z, kv, lo, hi, u):
    cs = detector_cross_section(z, kv, lo, hi, u)
    for part in ("total", "elastic", "thermal_diffuse"):
        assert getattr(cs, part) == pytest.approx(_quad_reference(z, kv, lo, hi, u, part),
                                                  rel=1e-8), part


def test_detector_integral_matches_a_flat_detector_in_cartesian_coordinates():
    # The same annulus seen on a flat screen at unit distance: a point (x, y) is the direction
    # at tan θ = ρ, and dΩ = dx dy / (1 + ρ²)^(3/2). An independent route to the same number.
    z, kv, lo, hi = 79, 200, 70.0, 200.0
    lam, gamma = electron_wavelength(kv), relativistic_factor(kv)
    r_lo, r_hi = math.tan(lo * 1e-3), math.tan(hi * 1e-3)

    def density(y, x):
        rho2 = x * x + y * y
        theta = math.atan(math.sqrt(rho2))
        g = 2 * math.sin(theta / 2) / lam
        return (gamma * float(scattering_factor(z, g))) ** 2 / (1 + rho2) ** 1.5

    # one quadrant of the annulus, x from 0 to r_hi, y between the two circles
    quadrant = integrate.dblquad(
        density, 0.0, r_hi,
        lambda x: math.sqrt(max(r_lo * r_lo - x * x, 0.0)), lambda x: math.sqrt(r_hi**2 - x * x),
        epsabs=0, epsrel=1e-7)[0]
    assert detector_cross_section(z, kv, lo, hi).total == pytest.approx(4 * quadrant, rel=1e-5)


def test_high_angles_scatter_as_from_the_bare_nucleus():
    # Rutherford on the exact sphere: with t = sin²(θ/2), σ = 2π γ² (Z / 2π²a0)² λ⁴/8 (1/t1 - 1/t2)
    z, kv, lo, hi = 6, 200, 1000.0, 3000.0
    lam, gamma = electron_wavelength(kv), relativistic_factor(kv)
    t1, t2 = math.sin(lo * 5e-4) ** 2, math.sin(hi * 5e-4) ** 2
    rutherford = 2 * math.pi * gamma**2 * (z / (2 * math.pi**2 * BOHR_RADIUS)) ** 2 \
        * lam**4 / 8 * (1 / t1 - 1 / t2)
    assert detector_cross_section(z, kv, lo, hi).total == pytest.approx(rutherford, rel=1e-3)


def test_annuli_add_up_and_thermal_parts_split_the_total():
    whole = detector_cross_section("Au", 300, 40, 200, 0.09)
    inner = detector_cross_section("Au", 300, 40, 90, 0.09)
    outer = detector_cross_section("Au", 300, 90, 200, 0.09)
    assert inner.total + outer.total == pytest.approx(whole.total, rel=1e-10)
    assert whole.elastic + whole.thermal_diffuse == pytest.approx(whole.total, rel=1e-12)
    # an isolated atom's total does not depend on its vibration; the diffuse part grows with it
    still = detector_cross_section("Au", 300, 40, 200, 0.0)
    assert still.total == pytest.approx(whole.total, rel=1e-12) and still.thermal_diffuse == 0
    warmer = detector_cross_section("Au", 300, 40, 200, 0.12)
    assert warmer.thermal_diffuse > whole.thermal_diffuse > 0


def test_heavier_atoms_and_lower_voltages_scatter_more_into_haadf():
    au = detector_cross_section("Au", 200, 70, 200).total
    assert au > detector_cross_section("Pd", 200, 70, 200).total \
        > detector_cross_section("Si", 200, 70, 200).total
    assert au > detector_cross_section("Au", 300, 70, 200).total
    # order of magnitude of a heavy atom's HAADF cross-section: 10⁻² Å²
    assert 0.005 < au < 0.05


@pytest.mark.parametrize(("args", "message"), [
    ((0, 200, 70, 200), "no scattering factors for 0"),
    ((104, 200, 70, 200), "Z = 104"),
    (("Au", 200, 200, 70), "inner < outer"),
    (("Au", 200, -1, 70), "inner < outer"),
    (("Au", 200, 70, float("nan")), "inner < outer"),
    (("Au", 0, 70, 200), "voltage"),
])
def test_bad_settings_are_refused(args, message):
    with pytest.raises(ValueError, match=message):
        detector_cross_section(*args)
    with pytest.raises(ValueError, match="r.m.s."):
        detector_cross_section("Au", 200, 70, 200, -0.1)


# ------------------------------------------------------------------ beyond the first Born


def test_projected_phase_transforms_back_to_the_scattering_factor():
    # the closed form of φ(r) is the inverse Hankel transform of λγ f_e(g): transform it back
    from scipy.special import j0

    kv = 200
    r = np.concatenate([np.geomspace(1e-10, 0.01, 4000, endpoint=False),
                        np.linspace(0.01, 12.0, 120001)])
    phi = projected_phase("Au", kv, r)
    for g in (0.3, 1.0, 2.5):
        back = 2 * math.pi * integrate.trapezoid(phi * j0(2 * math.pi * g * r) * r, r)
        expected = electron_wavelength(kv) * relativistic_factor(kv) * scattering_factor("Au", g)
        assert back == pytest.approx(float(expected), rel=2e-3), g


def test_a_weak_phase_object_scatters_as_the_first_born_approximation_says():
    # hydrogen's phase shift is small: the phase object reduces to |λγ f_e|² integrated over
    # the annulus in the small-angle approximation (θ = λ g)
    kv, lo, hi = 300, 20.0, 80.0
    lam, gamma = electron_wavelength(kv), relativistic_factor(kv)
    born = integrate.quad(lambda g: 2 * math.pi * g * (lam * gamma * float(
        scattering_factor(1, g))) ** 2, lo * 1e-3 / lam, hi * 1e-3 / lam, epsrel=1e-10)[0]
    assert phase_object_cross_section("H", kv, lo, hi) == pytest.approx(born, rel=0.01)


def test_phase_object_matches_a_fourier_transform_of_the_exit_wave_on_a_grid():
    # an independent route: e^{iφ} - 1 sampled on a 2-D grid, FFT, annulus summed
    kv, lo, hi, n, cell = 200, 70.0, 200.0, 512, 6.0
    dx = cell / n
    x = (np.arange(n) - n // 2) * dx
    r = np.hypot(*np.meshgrid(x, x, indexing="ij"))
    r[n // 2, n // 2] = dx / 4
    wave = np.fft.fft2(np.expm1(1j * projected_phase("Au", kv, r))) * dx * dx
    k = np.fft.fftfreq(n, dx)
    theta = np.hypot(*np.meshgrid(k, k, indexing="ij")) * electron_wavelength(kv) * 1e3
    on = (theta >= lo) & (theta <= hi)
    grid = float(np.sum(np.abs(wave[on]) ** 2)) / cell**2
    assert phase_object_cross_section("Au", kv, lo, hi) == pytest.approx(grid, rel=1e-2)


def test_gold_scatters_less_than_born_says_and_the_probe_widens_the_annulus():
    po = phase_object_cross_section("Au", 200, 70, 200, 20)
    plane = phase_object_cross_section("Au", 200, 70, 200, 0)
    born = detector_cross_section("Au", 200, 70, 200).total
    assert 0.7 * born < plane < 0.8 * born  # strong phase near the nucleus
    assert plane < po  # a convergent probe tilts part of the strong low-angle scattering in


def test_detector_weight_averages_the_annulus_over_the_aperture():
    from xyz2image_gpu.physics.cross_section import _detector_weight

    k_lo, k_hi, k_ap = 2.8, 8.0, 0.8
    q = np.linspace(0.0, 9.0, 200001)
    weight = _detector_weight(q, k_lo, k_hi, k_ap)
    # integrated over all scattering vectors, the average of the shifted annulus is its area
    area = integrate.trapezoid(2 * math.pi * q * weight, q)
    assert area == pytest.approx(math.pi * (k_hi**2 - k_lo**2), rel=1e-6)
    # against Monte Carlo over the aperture at a few q on the edges
    rng = np.random.default_rng(0)
    pts = rng.uniform(-k_ap, k_ap, (400000, 2))
    pts = pts[np.hypot(*pts.T) <= k_ap]
    for qq in (2.3, 2.8, 3.3, 7.6, 8.5):
        hit = np.hypot(pts[:, 0] + qq, pts[:, 1])
        mc = np.mean((hit >= k_lo) & (hit <= k_hi))
        assert float(_detector_weight(np.array([qq]), k_lo, k_hi, k_ap)[0]) == \
            pytest.approx(mc, abs=3e-3), qq


def test_isolated_atoms_match_multislice():
    # abTEM probe scans over single atoms (validation/cross_sections.py --simulate; potential
    # sampled at 0.02 Å): six elements (C, Si, Cu, Pd, Au, U), two voltages,
    # two detectors
    import json
    from pathlib import Path

    stored = Path(__file__).resolve().parents[1] / "validation" / "references" / \
        "single_atoms.json"
    rows = [r for r in json.loads(stored.read_text())["atoms"] if r["sampling_A"] == 0.02]
    assert len(rows) == 24
    for r in rows:
        model = phase_object_cross_section(r["element"], r["kv"], *r["detector_mrad"],
                                           r["convergence_mrad"])
        assert model == pytest.approx(r["cross_section_A2"], rel=0.035), r
