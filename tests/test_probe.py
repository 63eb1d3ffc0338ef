"""The probe: wavelength, Airy limit, aberrations, source blur, Gaussian fits."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from xyz2image_gpu.physics.probe import (
    GaussianFit,
    ProbeOptics,
    bessel_j0,
    default_fit_radius,
    electron_wavelength,
    fit_gaussians,
    fit_probe,
    optimal_defocus,
    probe_profile,
    profile_fwhm,
)

special = pytest.importorskip("scipy.special")
ndimage = pytest.importorskip("scipy.ndimage")

J1_FIRST_ZERO = 3.8317059702075125  # first zero of J1


def _airy(optics: ProbeOptics, r: np.ndarray) -> np.ndarray:
    v = 2.0 * math.pi * optics.k_max * np.asarray(r, dtype=np.float64)
    out = np.ones_like(v)
    nz = v > 0
    out[nz] = (2.0 * special.j1(v[nz]) / v[nz]) ** 2
    return out


def _fwhm(optics: ProbeOptics, r_max: float = 6.0) -> float:
    r = np.linspace(0.0, r_max, 6001)
    return profile_fwhm(r, probe_profile(optics, r))


# --- wavelength and optics ------------------------------------------------------------------


def test_wavelength_values():
    assert electron_wavelength(200) == pytest.approx(0.025079, abs=2e-6)
    assert electron_wavelength(300) == pytest.approx(0.019687, abs=2e-6)
    assert electron_wavelength(80) == pytest.approx(0.041757, abs=2e-6)
    with pytest.raises(ValueError):
        electron_wavelength(0)


def test_optics_validation_and_description():
    with pytest.raises(ValueError):
        ProbeOptics(source_size=-0.1)
    with pytest.raises(ValueError):
        ProbeOptics(convergence_mrad=0)
    with pytest.raises(ValueError):
        ProbeOptics(defocus=float("nan"))
    with pytest.raises(TypeError):
        ProbeOptics(cs_mm="1")
    text = ProbeOptics(300, 25, 3.1, 0.001, 0.7).describe()
    assert "300 kV" in text and "underfocus" in text and "FWHM" in text


def test_bessel_j0_matches_scipy():
    x = np.linspace(-5.0, 300.0, 100001)
    assert np.max(np.abs(bessel_j0(x) - special.j0(x))) < 1e-7


# --- the aberration-free probe is the Airy pattern -----------------------------------------


def test_airy_first_zero():
    optics = ProbeOptics(200, 20)
    expected = 0.61 * optics.wavelength / (optics.convergence_mrad * 1e-3)
    r = np.linspace(0.5 * expected, 1.5 * expected, 20001)
    intensity = probe_profile(optics, r)
    r_zero = r[np.argmin(intensity)]
    assert r_zero == pytest.approx(expected, rel=0.01)
    assert r_zero == pytest.approx(optics.airy_radius, rel=1e-4)
    assert intensity.min() < 1e-8


@pytest.mark.parametrize("kv, mrad", [(200, 20), (300, 30), (80, 15)])
def test_airy_intensity_matches_j1(kv, mrad):
    optics = ProbeOptics(kv, mrad)
    r = np.linspace(0.0, 8.0, 4001)
    assert np.max(np.abs(probe_profile(optics, r) - _airy(optics, r))) < 1e-6


def test_integral_normalisation_is_encircled_intensity():
    # Airy encircled intensity within v = 2π k_max R: 1 - J0(v)² - J1(v)².
    optics = ProbeOptics(200, 20)
    big_r = 6.0
    r = np.linspace(0.0, big_r, 30001)
    intensity = probe_profile(optics, r, normalize="integral")
    encircled = np.trapezoid(intensity * 2.0 * math.pi * r, r)
    v = 2.0 * math.pi * optics.k_max * big_r
    assert encircled == pytest.approx(1.0 - special.j0(v) ** 2 - special.j1(v) ** 2, abs=1e-6)
    assert intensity[0] == pytest.approx(math.pi * optics.k_max**2, rel=1e-7)


def test_profile_shapes_and_sign():
    optics = ProbeOptics(300, 25, 10.0, 0.001)
    r = np.linspace(-2.0, 2.0, 21).reshape(3, 7)
    out = probe_profile(optics, r)
    assert out.shape == (3, 7)
    np.testing.assert_allclose(out, probe_profile(optics, np.abs(r)), rtol=0, atol=0)
    assert probe_profile(optics, [0.0])[0] == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(ValueError):
        probe_profile(optics, r, normalize="max")
    assert probe_profile(ProbeOptics(source_size=0.5), np.zeros((0, 3))).shape == (0, 3)


def test_quadrature_converged_with_aberrations():
    # Brute force with SciPy's J0 and many more nodes.
    r = np.linspace(0.0, 6.0, 601)
    for optics in (ProbeOptics(200, 20, 150.0), ProbeOptics(200, 12, 550.0, 1.2)):
        nodes, weights = special.roots_legendre(1000)
        k = 0.5 * optics.k_max * (nodes + 1.0)
        amp = np.exp(-1j * optics.chi(k)) * 0.5 * optics.k_max * weights * 2.0 * math.pi * k
        psi = special.j0(2.0 * math.pi * r[:, None] * k[None, :]) @ amp
        reference = np.abs(psi) ** 2 / (math.pi * optics.k_max**2)
        got = probe_profile(optics, r, normalize="integral")
        assert np.max(np.abs(got - reference)) < 1e-6 * reference.max()


# --- aberrations -----------------------------------------------------------------------------


def test_defocus_broadens_symmetrically_without_cs():
    widths = [_fwhm(ProbeOptics(200, 20, df)) for df in (0.0, 20.0, 40.0, 60.0)]
    assert all(b > a for a, b in zip(widths, widths[1:]))
    for df in (20.0, 60.0):
        plus = probe_profile(ProbeOptics(200, 20, df), np.linspace(0, 4, 401))
        minus = probe_profile(ProbeOptics(200, 20, -df), np.linspace(0, 4, 401))
        np.testing.assert_allclose(plus, minus, rtol=1e-9, atol=1e-12)


def test_defocus_about_the_optimum_with_cs():
    cs, mrad = 0.001, 25.0
    best = optimal_defocus(mrad, cs)
    assert best == pytest.approx(0.5 * cs * 1e7 * (mrad * 1e-3) ** 2)
    focus = _fwhm(ProbeOptics(300, mrad, best, cs))
    over = _fwhm(ProbeOptics(300, mrad, best - 15.0, cs))
    under = _fwhm(ProbeOptics(300, mrad, best + 15.0, cs))
    assert over > focus and under > focus
    assert over == pytest.approx(under, rel=0.05)
    # The optimum is (close to) the brightest centre at fixed current.
    scan = np.arange(-10.0, 15.01, 0.5)
    peaks = [
        probe_profile(ProbeOptics(300, mrad, df, cs), [0.0], normalize="integral")[0] for df in scan
    ]
    assert abs(scan[int(np.argmax(peaks))] - best) <= 1.0


def test_positive_defocus_is_underfocus():
    # With Cs > 0 the balancing focus is positive: +Δf brightens the centre, -Δf dims it.
    def centre(df: float) -> float:
        return probe_profile(ProbeOptics(200, 10, df, 1.2), [0.0], normalize="integral")[0]

    best = optimal_defocus(10, 1.2)
    assert best == pytest.approx(600.0)
    assert centre(best) > centre(0.0) > centre(-best)


# --- source size -----------------------------------------------------------------------------


@pytest.mark.parametrize("fwhm", [0.1, 0.7])
def test_source_blur_matches_2d_convolution(fwhm):
    pixel, n = 0.025, 481  # 12 Å field
    c = n // 2
    y, x = np.mgrid[:n, :n]
    radius = np.hypot(x - c, y - c) * pixel
    unique, inverse = np.unique(radius, return_inverse=True)
    point = probe_profile(ProbeOptics(200, 20), unique, normalize="integral")
    image = point[inverse].reshape(radius.shape)
    optics = ProbeOptics(200, 20, source_size=fwhm)
    assert optics.source_sigma == pytest.approx(fwhm / (2.0 * math.sqrt(2.0 * math.log(2.0))))
    blurred = ndimage.gaussian_filter(
        image, optics.source_sigma / pixel, mode="constant", truncate=8
    )
    r = np.arange(0, 121) * pixel  # 3 Å, far from the field's edge
    got = probe_profile(optics, r, normalize="integral")
    assert np.max(np.abs(got - blurred[c, c : c + 121])) < 1e-6 * got[0]
    # The blur keeps the integral and lowers the peak.
    assert got[0] < point[0]


def test_source_blur_peak_normalisation():
    optics = ProbeOptics(200, 20, source_size=0.6)
    r = np.linspace(0.0, 3.0, 61)
    peak = probe_profile(optics, r)
    integral = probe_profile(optics, r, normalize="integral")
    assert peak[0] == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(peak, integral / integral[0], rtol=1e-10)
    assert _fwhm(optics) > _fwhm(ProbeOptics(200, 20))


# --- Gaussian fits ---------------------------------------------------------------------------


@pytest.mark.parametrize("sigma", [0.3, 0.8])
def test_fit_returns_a_pure_gaussian(sigma):
    r = np.linspace(0.0, 4.0, 401)
    fit = fit_gaussians(r, 2.5 * np.exp(-(r**2) / (2 * sigma**2)), n=3)
    amplitude, width = max(fit.components)
    assert amplitude > 0.99
    assert width == pytest.approx(sigma, rel=0.005)
    assert fit.scale == pytest.approx(2.5, rel=1e-3)
    assert fit.residual < 1e-4
    assert sum(a for a, _ in fit.components) == pytest.approx(1.0)


def test_fit_recovers_two_gaussians():
    r = np.linspace(0.0, 5.0, 501)
    data = 0.7 * np.exp(-(r**2) / (2 * 0.3**2)) + 0.3 * np.exp(-(r**2) / (2 * 1.1**2))
    fit = fit_gaussians(r, data, n=3)
    assert fit.residual < 1e-4
    big = [c for c in fit.components if c[0] > 0.01]
    assert len(big) == 2
    np.testing.assert_allclose(big, [(0.7, 0.3), (0.3, 1.1)], rtol=2e-3)


def test_fit_airy_probe():
    optics = ProbeOptics(200, 20)
    true_fwhm = _fwhm(optics)
    assert true_fwhm == pytest.approx(0.5145 * optics.wavelength / 0.02, rel=2e-3)
    # Least squares (2πr-weighted): a positive sum of Gaussians is log-convex in r² and
    # cannot follow the Airy core down to its zero, so it trades some width for shape.
    fit = fit_probe(optics, n=3)
    assert fit.residual < 0.07  # 6.5 %
    assert abs(fit.fwhm / true_fwhm - 1.0) < 0.07  # -6.1 %
    # Pinning the FWHM costs a little residual.
    pinned = fit_probe(optics, n=3, match_fwhm=True)
    assert pinned.fwhm == pytest.approx(true_fwhm, rel=0.005)
    assert pinned.residual < 0.10  # 9.15 %
    # A realistic source size smooths the rings: the fit becomes close.
    real = ProbeOptics(200, 20, source_size=0.6)
    fit = fit_probe(real, n=3)
    assert fit.residual < 0.01  # 0.76 %
    assert fit.fwhm == pytest.approx(_fwhm(real), rel=0.03)  # -1.1 %


def test_fit_aberration_corrected_probe():
    optics = ProbeOptics(300, 25, optimal_defocus(25, 0.001), 0.001, source_size=0.7)
    fit = fit_probe(optics, n=3)
    assert fit.residual < 0.005
    assert fit.fwhm == pytest.approx(_fwhm(optics), rel=0.01)
    assert len(fit.components) <= 3
    sigmas = [s for _, s in fit.components]
    assert sigmas == sorted(sigmas)
    assert fit.r_max == pytest.approx(default_fit_radius(optics))
    assert sigmas[-1] <= 0.5 * fit.r_max + 1e-12  # no pedestal beyond the fitted range
    # The fit carries the probe's current within r_max (2-D integral of the peak-1 profile).
    r = np.linspace(0.0, fit.r_max, 2001)
    inside = np.trapezoid(probe_profile(optics, r) * 2.0 * math.pi * r, r)
    assert fit.integral == pytest.approx(inside, rel=0.02)


def test_gaussian_fit_helpers():
    fit = GaussianFit(components=((0.75, 0.3), (0.25, 1.0)), residual=0.01, r_max=3.0)
    r = np.array([0.0, 0.5, 1.0])
    expected = 0.75 * np.exp(-(r**2) / 0.18) + 0.25 * np.exp(-(r**2) / 2.0)
    np.testing.assert_allclose(fit.evaluate(r), expected)
    assert fit.evaluate(fit.fwhm / 2) == pytest.approx(0.5, abs=1e-12)
    assert fit.integral == pytest.approx(2 * math.pi * (0.75 * 0.09 + 0.25 * 1.0))
    np.testing.assert_allclose(fit.sigmas, [0.3, 1.0])
    np.testing.assert_allclose(fit.amplitudes, [0.75, 0.25])
    assert "2 Gaussian" in fit.describe() and "residual 1.00%" in fit.describe()
    assert json.loads(json.dumps(fit.to_dict()))["components"] == [[0.75, 0.3], [0.25, 1.0]]


def test_fit_input_validation():
    r = np.linspace(0.0, 3.0, 50)
    with pytest.raises(ValueError):
        fit_gaussians(r, np.zeros_like(r))
    with pytest.raises(ValueError):
        fit_gaussians(r[::-1], np.exp(-r))
    with pytest.raises(ValueError):
        fit_gaussians(r, np.exp(-r), n=0)
    with pytest.raises(ValueError):
        fit_gaussians(r, np.exp(-r)[:-1])
    with pytest.raises(ValueError):
        fit_gaussians(r, np.exp(-r), max_sigma=0.0)
    with pytest.raises(ValueError):
        fit_gaussians(r, np.exp(-((r - 1.0) ** 2)), match_fwhm=True)  # peak not at r = 0
    with pytest.raises(ValueError):
        GaussianFit(components=((1.0, 0.0),), residual=0.0, r_max=1.0)
