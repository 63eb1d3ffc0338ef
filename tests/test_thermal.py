"""Thermal smearing: displacement table, temperature model, overrides, fallback, smearing."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from xyz2image_gpu.physics import thermal
from xyz2image_gpu.physics.thermal import (
    DEFAULT_RMS_DISPLACEMENT,
    RMS_DISPLACEMENT,
    ThermalDataWarning,
    debye_rms_displacement,
    displacement_source,
    effective_debye_temperature,
    rms_displacement,
    smear_components,
    thermal_widths,
)

REQUIRED = [
    "C",
    "N",
    "O",
    "Mg",
    "Al",
    "Si",
    "S",
    "Ti",
    "Fe",
    "Co",
    "Ni",
    "Cu",
    "Zn",
    "Ga",
    "Ge",
    "Mo",
    "Ru",
    "Rh",
    "Pd",
    "Ag",
    "Sn",
    "W",
    "Re",
    "Os",
    "Ir",
    "Pt",
    "Au",
    "Pb",
]


def test_table_covers_required_elements_in_range():
    for sym in REQUIRED:
        assert sym in RMS_DISPLACEMENT, sym
    for sym, u in RMS_DISPLACEMENT.items():
        assert 0.025 < u < 0.4, sym
    assert 0.085 <= RMS_DISPLACEMENT["Au"] <= 0.09
    assert 0.072 <= RMS_DISPLACEMENT["Si"] <= 0.078
    assert 0.065 <= RMS_DISPLACEMENT["Pt"] <= 0.08
    # B = 8π²u² against room-temperature values (Sears & Shelley 1991), Å².
    for sym, b in {"Au": 0.62, "Pt": 0.37, "Cu": 0.56, "Ag": 0.73, "W": 0.161, "Al": 0.81}.items():
        assert 8 * math.pi**2 * RMS_DISPLACEMENT[sym] ** 2 == pytest.approx(b, rel=0.06), sym
    with pytest.raises(TypeError):
        RMS_DISPLACEMENT["Au"] = 0.1  # read-only


def test_table_masses_match_ase():
    data = pytest.importorskip("ase.data")
    for sym, (_, mass) in thermal._TABLE.items():
        assert mass == pytest.approx(data.atomic_masses[data.atomic_numbers[sym]], abs=0.01), sym


def test_debye_model():
    quad = pytest.importorskip("scipy.integrate").quad
    for x in (0.05, 1.0, 7.0, 80.0):
        ref = quad(lambda t: t / math.expm1(t) if t > 0 else 1.0, 0, x, limit=200)[0] / x**2
        assert thermal._debye_phi_over_x(x) == pytest.approx(ref, rel=1e-10)
    # High-temperature expansion u² = 3ħ²T/(m k θ²) (1 + θ²/(36 T²)).
    mass, theta, t = 196.967, 165.0, 600.0
    hbar, kb, amu = 1.054571817e-34, 1.380649e-23, 1.66053906660e-27
    u2 = 3 * hbar**2 * t / (mass * amu * kb * theta**2) * (1 + theta**2 / (36 * t**2)) * 1e20
    assert debye_rms_displacement(mass, theta, t) == pytest.approx(math.sqrt(u2), rel=1e-4)
    # Zero point.
    u0 = math.sqrt(3 * hbar**2 / (4 * mass * amu * kb * theta)) * 1e10
    assert debye_rms_displacement(mass, theta, 0.0) == pytest.approx(u0, rel=1e-12)
    # Au with Kittel's θ_D = 165 K is close to the table.
    assert debye_rms_displacement(mass, theta, 300.0) == pytest.approx(
        RMS_DISPLACEMENT["Au"], rel=0.03
    )


def test_effective_debye_temperatures_are_physical():
    assert effective_debye_temperature("Au") == pytest.approx(165, rel=0.1)
    assert effective_debye_temperature(29) == pytest.approx(315, rel=0.1)
    assert effective_debye_temperature("si") == pytest.approx(540, rel=0.1)
    assert effective_debye_temperature("C") > 1500
    with pytest.raises(KeyError):
        effective_debye_temperature("H")


def test_rms_displacement_lookup_and_temperature():
    assert rms_displacement("Au") == RMS_DISPLACEMENT["Au"]
    assert rms_displacement(79) == rms_displacement("au") == rms_displacement("79")
    assert rms_displacement("Au", temperature=300.0) == RMS_DISPLACEMENT["Au"]
    # Heavy, soft Au: u ∝ sqrt(T) above θ_D.
    ratio = rms_displacement("Au", temperature=600.0) / rms_displacement("Au")
    assert ratio == pytest.approx(math.sqrt(2.0), rel=0.02)
    # Stiff, light C: mostly zero-point motion, little temperature dependence.
    assert rms_displacement("C", temperature=600.0) / rms_displacement("C") < 1.2
    temps = [0.0, 50.0, 100.0, 300.0, 900.0]
    us = [rms_displacement("Pt", temperature=t) for t in temps]
    assert all(b > a for a, b in zip(us, us[1:]))
    assert us[0] > 0  # zero-point motion
    with pytest.raises(ValueError):
        rms_displacement("Au", temperature=-1.0)
    with pytest.raises(KeyError):
        rms_displacement("Xx")


def test_overrides():
    assert rms_displacement("Au", overrides={"Au": 0.12}) == 0.12
    assert rms_displacement("Au", overrides={79: 0.12}, temperature=100.0) == 0.12
    assert rms_displacement("Pt", overrides={"Au": 0.12}) == RMS_DISPLACEMENT["Pt"]
    assert rms_displacement("Pd", overrides=(("Au", 0.12), ("pd", 0.2))) == 0.2
    assert displacement_source("Au", {"au": 0.1}) == "override"
    assert displacement_source("Au") == "table"
    with pytest.raises(ValueError):
        rms_displacement("Au", overrides={"Au": -0.1})
    with pytest.raises(KeyError):
        rms_displacement("Au", overrides={"Qq": 0.1})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert rms_displacement("H", overrides={"H": 0.15}) == 0.15  # no warning


def test_fallback_warns_and_scales():
    assert "H" not in RMS_DISPLACEMENT
    assert displacement_source(1) == "default"
    with pytest.warns(ThermalDataWarning, match="H"):
        assert rms_displacement("H") == DEFAULT_RMS_DISPLACEMENT
    with pytest.warns(ThermalDataWarning):
        assert rms_displacement("H", temperature=75.0) == pytest.approx(
            0.5 * DEFAULT_RMS_DISPLACEMENT
        )


def test_thermal_widths_vectorised():
    numbers = np.array([[79, 46, 79], [6, 8, 78]])
    u = thermal_widths(numbers)
    assert u.shape == numbers.shape and u.dtype == np.float64
    expected = [[rms_displacement(int(z)) for z in row] for row in numbers]
    np.testing.assert_array_equal(u, expected)
    np.testing.assert_array_equal(
        thermal_widths(["Au", "Pd"]), [RMS_DISPLACEMENT["Au"], RMS_DISPLACEMENT["Pd"]]
    )
    assert thermal_widths(np.array([], dtype=int)).shape == (0,)
    hot = thermal_widths(numbers, overrides={"Pd": 0.2}, temperature=500.0)
    assert hot[0, 1] == 0.2 and hot[0, 0] > u[0, 0]
    with pytest.warns(ThermalDataWarning) as record:
        thermal_widths([1, 79, 1, 2, 79])
    assert len(record) == 1 and "H, He" in str(record[0].message)


def test_smear_components():
    comps = ((0.8, 0.3), (0.2, 1.0))
    u = np.array([0.0, 0.09, 0.2])
    amps, sigmas = smear_components(comps, u)
    assert amps.shape == sigmas.shape == (3, 2)
    np.testing.assert_allclose(sigmas**2, np.array([0.09, 1.0]) + u[:, None] ** 2)
    np.testing.assert_allclose(amps * sigmas**2, np.broadcast_to([0.8 * 0.09, 0.2 * 1.0], (3, 2)))
    np.testing.assert_allclose(amps[0], [0.8, 0.2])
    kept, _ = smear_components(comps, u, conserve="peak")
    np.testing.assert_allclose(kept, np.broadcast_to([0.8, 0.2], (3, 2)))
    with pytest.raises(ValueError):
        smear_components(comps, [-0.1])
    with pytest.raises(ValueError):
        smear_components(((1.0, 0.0),), [0.1])
    with pytest.raises(ValueError):
        smear_components(comps, [0.1], conserve="both")


def test_smearing_is_the_2d_convolution():
    ndimage = pytest.importorskip("scipy.ndimage")
    pixel, n, u = 0.02, 401, 0.09
    c = n // 2
    y, x = np.mgrid[:n, :n]
    r2 = ((x - c) ** 2 + (y - c) ** 2) * pixel**2
    comps = ((0.8, 0.3), (0.2, 0.7))
    image = sum(a * np.exp(-r2 / (2 * s * s)) for a, s in comps)
    blurred = ndimage.gaussian_filter(image, u / pixel, mode="constant", truncate=8)
    amps, sigmas = smear_components(comps, u)
    expected = sum(a * np.exp(-r2 / (2 * s * s)) for a, s in zip(amps, sigmas))
    assert np.max(np.abs(blurred - expected)) < 1e-4
