"""Each element's scattering cross-section into an annular detector, Å², for absolute images.

An ADF image divided by the incident beam intensity is, at each probe position, the fraction
of the beam that reaches the detector; its integral over the probe positions around one
isolated atom is that atom's cross-section for the detector, σ (Å²), because the probe's
intensity integrates to one. This module computes σ for any element (Z 1-103) from first
principles:

* **Scattering factors**: the electron scattering factor f_e(g) (Å) of the neutral atom in
  the first Born approximation, from the parametrisation of Lobato & Van Dyck, Acta Cryst.
  A70 (2014) 636-649 (five terms ``a_i (2 + b_i g²) / (1 + b_i g²)²``, fitted to
  Hartree-Fock densities; parameters in ``data/lobato_2014.json``), with
  ``g = 2 sin(θ/2) / λ`` (1/Å) for the scattering angle θ. Its large-g limit is Rutherford
  scattering from the bare nucleus, ``Z / (2π² a₀ g²)`` (the Mott-Bethe formula), which the
  tests check for every element.
* **Relativity**: the amplitude is scaled by ``γ = 1 + eV / (m₀c²)`` (the electron's
  relativistic mass in the interaction) and λ is the relativistic wavelength
  (:func:`.probe.electron_wavelength`).
* **Detector** (:func:`detector_cross_section`, first Born):
  ``σ = 2π ∫ γ² |f_e(g(θ))|² w(g) sin θ dθ`` over the detector's annulus
  ``θ_inner ≤ θ ≤ θ_outer``, on the exact sphere of directions (no small-angle
  approximation), by Gauss-Legendre quadrature (relative error below 1e-10 for any annulus).
* **Thermal vibration**: each atom vibrates with an isotropic r.m.s. displacement u per axis
  (:mod:`.thermal`'s table). The scattering splits into an elastic part,
  ``w = exp(-4π² u² g²)`` (the Debye-Waller factor ``exp(-2M)``, ``B = 8π² u²``), which is
  coherent between atoms, and the thermal diffuse part, ``w = 1 - exp(-4π² u² g²)``, which is
  incoherent (the Einstein model, as in Hall & Hirsch, Proc. R. Soc. A 286 (1965) 158, and
  the absorptive potentials of incoherent ADF models). For an isolated atom the two add up to
  the kinematic total, ``w = 1``, whatever u.
* **Beyond the first Born approximation** (:func:`phase_object_cross_section`, the one to
  use for images): near a heavy nucleus the projected potential shifts the phase by more
  than a radian, and the first Born approximation then overestimates the scattering to high
  angles (gold at 200 kV into 70-200 mrad: by 31 %). Each atom is treated as a phase object,
  exit wave ``e^{iφ(r)}`` with φ the closed-form projected phase of the same parametrisation,
  and a convergent probe's aperture widens the annulus it sees. Against abTEM multislice of
  isolated atoms (C, Si, Pd, Au, U; 200 and 300 kV; 70-200 and 40-100 mrad;
  ``validation/results/cross_sections.md``) it agrees within 3.2 %; the first Born
  approximation is off by -23 % to +44 %.

Approximations: projection of each atom's potential (no propagation inside one atom); free,
neutral, spherical atoms (no bonding); no absorption or multiple scattering between atoms of
the specimen (the channelling of aligned columns is not in σ); a perfect annulus of uniform
efficiency. Clusters in random orientations add up to the sum of their atoms' phase-object
cross-sections within 3 % (``validation/``); zone-axis columns scatter more.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path

import numpy as np

from ..structures.elements import atomic_number
from .constants import ELECTRON_MASS, ELEMENTARY_CHARGE, SPEED_OF_LIGHT
from .probe import electron_wavelength

__all__ = [
    "BOHR_RADIUS",
    "CrossSection",
    "beam_weights",
    "detector_cross_section",
    "phase_object_cross_section",
    "projected_phase",
    "relativistic_factor",
    "scattering_factor",
]

#: Bohr radius a₀, Å (CODATA 2018).
BOHR_RADIUS = 0.529177210903

_DATA = Path(__file__).with_name("data") / "lobato_2014.json"
#: Gauss-Legendre nodes per piece and pieces of the angular range.
_NODES, _PIECES = 24, 16


@cache
def _parameters() -> tuple[np.ndarray, np.ndarray]:
    """(a, b), each (103, 5): a_i in Å and b_i in Å² of Z = 1-103 (row Z - 1)."""
    with open(_DATA, encoding="utf-8") as fh:
        rows = json.load(fh)["elements"]
    a = np.array([r["a"] for r in rows], dtype=np.float64)
    b = np.array([r["b"] for r in rows], dtype=np.float64)
    a.setflags(write=False)
    b.setflags(write=False)
    return a, b


def _z(element: int | str) -> int:
    try:
        z = atomic_number(element)
    except KeyError as exc:
        raise ValueError(f"no scattering factors for {element!r}: {exc.args[0]}") from None
    n = _parameters()[0].shape[0]
    if not 1 <= z <= n:
        raise ValueError(f"no scattering factors for Z = {z} (1-{n} are parametrised)")
    return z


def scattering_factor(element: int | str, g: np.ndarray | float) -> np.ndarray:
    """Electron scattering factor f_e(g) of a neutral atom, Å (first Born, rest mass).

    Parameters
    ----------
    element : int or str
        Atomic number (1-103) or symbol.
    g : array_like
        Scattering vector length ``2 sin(θ/2) / λ``, 1/Å (≥ 0).

    Returns
    -------
    ndarray of float64, the shape of ``g``.
    """
    a, b = _parameters()
    z = _z(element)
    g2 = np.square(np.asarray(g, dtype=np.float64))[..., None]
    bg = b[z - 1] * g2
    return np.sum(a[z - 1] * (2.0 + bg) / np.square(1.0 + bg), axis=-1)


def relativistic_factor(kv: float) -> float:
    """γ = 1 + eV / (m₀c²) of electrons accelerated through ``kv`` kilovolts."""
    kv = float(kv)
    if not (kv > 0 and math.isfinite(kv)):
        raise ValueError(f"the accelerating voltage must be positive and finite, got {kv} kV")
    return 1.0 + kv * 1e3 * ELEMENTARY_CHARGE / (ELECTRON_MASS * SPEED_OF_LIGHT**2)


@dataclass(frozen=True)
class CrossSection:
    """An element's cross-section into one annular detector, Å².

    Attributes
    ----------
    total : float
        Kinematic total, ``elastic + thermal_diffuse`` (an isolated atom's whole signal).
    elastic : float
        The Debye-Waller-damped elastic part, coherent between atoms.
    thermal_diffuse : float
        The thermal diffuse part, incoherent between atoms.
    """

    total: float
    elastic: float
    thermal_diffuse: float


def _angles(inner_mrad: float, outer_mrad: float) -> tuple[float, float]:
    lo, hi = float(inner_mrad), float(outer_mrad)
    if not (math.isfinite(lo) and math.isfinite(hi) and 0.0 <= lo < hi <= 1000.0 * math.pi):
        raise ValueError(
            "the detector's angles must satisfy 0 <= inner < outer <= π rad, got "
            f"{inner_mrad}, {outer_mrad} mrad")
    return lo * 1e-3, hi * 1e-3


def _quadrature(lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights of the composite Gauss-Legendre rule on [lo, hi]: :data:`_PIECES`
    equal pieces of :data:`_NODES` nodes each."""
    nodes, weights = np.polynomial.legendre.leggauss(_NODES)
    edges = np.linspace(lo, hi, _PIECES + 1)
    half = 0.5 * np.diff(edges)[:, None]
    points = (0.5 * (edges[:-1] + edges[1:]))[:, None] + half * nodes
    return points.ravel(), (half * weights).ravel()


@lru_cache(maxsize=4096)
def _integrals(z: int, kv: float, lo: float, hi: float, u: float) -> tuple[float, float]:
    theta, w = _quadrature(lo, hi)
    g = 2.0 * np.sin(0.5 * theta) / electron_wavelength(kv)
    gamma = relativistic_factor(kv)
    density = 2.0 * math.pi * np.square(gamma * scattering_factor(z, g)) * np.sin(theta) * w
    debye_waller = np.exp(-4.0 * math.pi**2 * u * u * g * g)
    return float(np.sum(density)), float(np.sum(density * debye_waller))


def detector_cross_section(element: int | str, kv: float, inner_mrad: float,
                           outer_mrad: float, rms: float = 0.0) -> CrossSection:
    """An element's cross-section into an annular detector, Å² (cached per setting).

    Parameters
    ----------
    element : int or str
        Atomic number (1-103) or symbol.
    kv : float
        Accelerating voltage, kV.
    inner_mrad, outer_mrad : float
        The detector's inner and outer semi-angles, mrad (e.g. 70, 200 for HAADF).
    rms : float
        The atom's r.m.s. thermal displacement along one axis, Å (``thermal.rms_displacement``);
        0 puts everything in the elastic part.

    Returns
    -------
    CrossSection
    """
    lo, hi = _angles(inner_mrad, outer_mrad)
    u = float(rms)
    if not (u >= 0.0 and math.isfinite(u)):
        raise ValueError(f"the r.m.s. displacement must be finite and >= 0, got {rms} Å")
    total, elastic = _integrals(_z(element), float(kv), lo, hi, u)
    return CrossSection(total=total, elastic=elastic, thermal_diffuse=total - elastic)


def projected_phase(element: int | str, kv: float, r: np.ndarray | float) -> np.ndarray:
    """Phase shift φ(r) = σ V_z(r) of the atom's projected potential at distance r, rad.

    The inverse 2-D Fourier transform of ``λ γ f_e(g)``, in closed form for Lobato's terms:
    ``φ(r) = λγ Σ a_i [2π/b_i K₀(α_i r) + 2π² r / b_i^{3/2} K₁(α_i r)]``, ``α_i = 2π/√b_i``.
    It diverges logarithmically at r = 0, as the nucleus's potential does.

    Parameters
    ----------
    element : int or str
        Atomic number (1-103) or symbol.
    kv : float
        Accelerating voltage, kV.
    r : array_like
        Distances from the atom's axis, Å (> 0).
    """
    from scipy.special import k0, k1

    a, b = _parameters()
    z = _z(element)
    r = np.asarray(r, dtype=np.float64)[..., None]
    ai, bi = a[z - 1], b[z - 1]
    alpha = 2.0 * math.pi / np.sqrt(bi)
    terms = ai * (2.0 * math.pi / bi * k0(alpha * r)
                  + 2.0 * math.pi**2 * r / bi**1.5 * k1(alpha * r))
    return electron_wavelength(kv) * relativistic_factor(kv) * np.sum(terms, axis=-1)


def _lens(radius: float, aperture: float, d: np.ndarray) -> np.ndarray:
    """Area of the intersection of a disc of ``radius`` at the origin and one of radius
    ``aperture`` at distance ``d`` (arrays of d)."""
    d = np.asarray(d, dtype=np.float64)
    small, large = min(radius, aperture), max(radius, aperture)
    out = np.zeros_like(d)
    inside = d <= large - small
    out[inside] = math.pi * small * small
    part = (~inside) & (d < radius + aperture)
    if np.any(part):
        dd = d[part]
        c1 = np.clip((dd * dd + radius**2 - aperture**2) / (2 * dd * radius), -1.0, 1.0)
        c2 = np.clip((dd * dd + aperture**2 - radius**2) / (2 * dd * aperture), -1.0, 1.0)
        k = (-dd + radius + aperture) * (dd + radius - aperture) * (dd - radius + aperture) \
            * (dd + radius + aperture)
        out[part] = radius**2 * np.arccos(c1) + aperture**2 * np.arccos(c2) \
            - 0.5 * np.sqrt(np.maximum(k, 0.0))
    return out


def _detector_weight(q: np.ndarray, k_lo: float, k_hi: float, k_aperture: float) -> np.ndarray:
    """Probability that a wave scattered by q lands on the annulus [k_lo, k_hi] when the
    incident direction is uniform over the probe's aperture of radius k_aperture (1/Å)."""
    if k_aperture <= 0.0:
        return ((q >= k_lo) & (q <= k_hi)).astype(np.float64)
    inner = _lens(k_lo, k_aperture, q) if k_lo > 0 else 0.0
    return (_lens(k_hi, k_aperture, q) - inner) / (math.pi * k_aperture**2)


@lru_cache(maxsize=1024)
def _phase_object(z: int, kv: float, lo: float, hi: float, aperture: float) -> float:
    from scipy.special import j0

    lam = electron_wavelength(kv)
    k_lo, k_hi, k_ap = lo / lam, hi / lam, aperture / lam
    # scattering vectors that can reach the detector through some point of the aperture
    q_lo, q_hi = max(0.0, k_lo - k_ap), k_hi + k_ap
    q, wq = _quadrature(q_lo, q_hi)
    # e^{iφ} - 1 = iφ + R: iφ transforms to i λγ f_e(q) in closed form, R = e^{iφ} - 1 - iφ
    # (which falls off as φ²/2) by a Hankel transform on a grid fine near the nucleus.
    r = np.concatenate([np.geomspace(1e-9, 0.02, 600, endpoint=False),
                        np.arange(0.02, 4.0, 0.002)])
    phi = projected_phase(z, kv, r)
    rest = np.expm1(1j * phi) - 1j * phi
    wr = np.empty_like(r)  # trapezoid weights on the uneven grid, times r dr's r
    dr = np.diff(r)
    wr[0], wr[-1] = dr[0] / 2, dr[-1] / 2
    wr[1:-1] = (dr[:-1] + dr[1:]) / 2
    transform = np.empty(q.shape, dtype=np.complex128)
    for start in range(0, q.size, 64):  # bounded memory: 64 q at a time
        qs = q[start:start + 64, None]
        transform[start:start + 64] = 2.0 * math.pi * (
            (rest * r * wr)[None, :] * j0(2.0 * math.pi * qs * r[None, :])).sum(axis=1)
    amplitude = 1j * lam * relativistic_factor(kv) * scattering_factor(z, q) + transform
    weight = _detector_weight(q, k_lo, k_hi, k_ap)
    return float(np.sum(2.0 * math.pi * q * np.abs(amplitude) ** 2 * weight * wq))


def phase_object_cross_section(element: int | str, kv: float, inner_mrad: float,
                               outer_mrad: float, convergence_mrad: float = 0.0) -> float:
    """An isolated atom's cross-section into an annular detector beyond the first Born
    approximation, Å² (cached per setting).

    The atom is a phase object: the exit wave is ``e^{iφ(r)}`` with φ its projected phase
    (:func:`projected_phase`), so its strong potential near the nucleus scatters less to high
    angles than the first Born approximation says (for gold at 200 kV into 70-200 mrad, about
    a fifth less). The scattered amplitude is the 2-D Fourier transform of ``e^{iφ} - 1``,
    its square is integrated over the annulus in the small-angle approximation (θ = λ g, as
    in multislice), and with a convergent probe over the annulus seen from every direction
    of the probe's aperture (uniform over a disc of ``convergence_mrad``): the probe's
    intensity integrates to one, so this is the integral of the atom's image over the probe
    positions in fractions of the beam.

    Parameters
    ----------
    element : int or str
        Atomic number (1-103) or symbol.
    kv : float
        Accelerating voltage, kV.
    inner_mrad, outer_mrad : float
        The detector's semi-angles, mrad.
    convergence_mrad : float
        The probe's convergence semi-angle, mrad (0: a plane wave).
    """
    lo, hi = _angles(inner_mrad, outer_mrad)
    ap = float(convergence_mrad)
    if not (ap >= 0.0 and math.isfinite(ap)):
        raise ValueError(f"the convergence angle must be finite and >= 0, got {ap} mrad")
    relativistic_factor(kv)  # validates kv
    return _phase_object(_z(element), float(kv), lo, hi, ap * 1e-3)


def beam_weights(numbers: np.ndarray, voltage_kv: float, convergence_mrad: float,
                 detector_mrad: tuple[float, float],
                 components: tuple[tuple[float, float], ...]) -> np.ndarray:
    """Per-atom weights that put images in fractions of the incident beam.

    An atom's image is ``weight * sum_g a_g exp(-r² / (2 s_g²))`` (the probe's components,
    s in Å); with ``weight = σ / sum_g a_g 2π s_g²`` it integrates to the atom's
    cross-section σ (:func:`phase_object_cross_section`, Å²), whatever the probe's shape,
    and thermal smearing (which keeps each component's integral) does not change that.

    Parameters
    ----------
    numbers : (N,) int array
        Atomic numbers.
    voltage_kv, convergence_mrad : float
        The optics.
    detector_mrad : (float, float)
        The annular detector's semi-angles.
    components : sequence of (amplitude, sigma_Å)
        The probe as a sum of Gaussians.

    Returns
    -------
    (N,) float64 array, 1/Å² times Å² of cross-section: dimensionless beam fractions per
    unit amplitude.
    """
    integral = sum(a * 2.0 * math.pi * sig * sig for a, sig in components)
    numbers = np.asarray(numbers, dtype=np.int64)
    unique, index = np.unique(numbers, return_inverse=True)
    sigma = np.array([phase_object_cross_section(int(z), voltage_kv, detector_mrad[0],
                                                 detector_mrad[1], convergence_mrad)
                      for z in unique], dtype=np.float64)
    return sigma[index.reshape(numbers.shape)] / integral
