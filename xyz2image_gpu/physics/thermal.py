"""Thermal (Debye-Waller) smearing: per-element r.m.s. displacements and smeared Gaussians.

In the incoherent picture a vibrating atom images as its static image convolved with the
distribution of its displacements. For isotropic harmonic vibrations that is a Gaussian of
standard deviation ``u`` along every axis, where ``u² = <u_x²>`` is the mean-square
displacement along one axis and ``B = 8π² u²`` the Debye-Waller factor. Projected along the
beam it is a 2-D Gaussian of the same ``u``, so every probe component of width ``σ_g``
widens to ``σ_eff² = σ_g² + u²`` (:func:`smear_components`; the convolution keeps each
component's integral, so its amplitude falls as ``σ_g² / σ_eff²``).

Data
----
:data:`RMS_DISPLACEMENT` holds ``u`` at 300 K, Å, one value per element:

* Most elements: the parameterisation of Cao & Peng, Acta Cryst. A55 (1999) 926-932, of the
  Debye-Waller factors of elemental crystals computed from phonon densities of states by
  Peng, Ren, Dudarev & Whelan, Acta Cryst. A52 (1996) 456-470, evaluated at 300 K for the
  stable room-temperature structure (Fe bcc, Ca fcc, Ta bcc; Sn is the diamond-structure
  grey tin, the only tin in those tables). They agree with the room-temperature values of
  Sears & Shelley, Acta Cryst. A47 (1991) 441-446, to a few per cent (Au B = 0.64 vs
  0.62 Å², Pt 0.38 vs 0.37, Cu 0.57 vs 0.56, W 0.168 vs 0.161). hcp and other
  non-cubic crystals are anisotropic; the isotropic mean is given.
* Si: ``u² = 0.00585 Å²`` (B = 0.46 Å²), the mean of the reciprocal- and direct-space
  refinements of synchrotron data at 300 K (U = 0.00577 and 0.00595 Å², PMC8086158,
  table 2); the Cao & Peng fit gives 0.526 Å², 13 % higher.
* O, S, P, Se, which are not elemental solids of interest, from their compounds in Cao &
  Peng (1999): O in ZnO, S in ZnS, P in GaP, Se in ZnSe (zinc-blende / wurtzite).
* N: N in wurtzite GaN from the first-principles values of Schowalter, Rosenauer, Titantah
  & Lamoen, Acta Cryst. A65 (2009) 227-231 (``<u²> = (2 × 0.0039 + 0.0034) / 3 Å²``).
* C: diamond. Graphite and graphene vibrate more out of plane, which the projection along a
  normal beam does not see; their in-plane ``u`` is close to diamond's.

Sanity: Au 0.090 Å, Pt 0.070 Å, Si 0.076 Å at 300 K.

Temperature: a tabulated element at another temperature follows the Debye model
(:func:`debye_rms_displacement`) with the effective Debye temperature that reproduces its
300 K value (:func:`effective_debye_temperature`): ``u² ∝ T`` well above θ_D, the zero-point
motion below. Elements missing from the table get :data:`DEFAULT_RMS_DISPLACEMENT` scaled as
``sqrt(T / 300 K)`` (the high-temperature limit) and a :class:`ThermalDataWarning`.
User overrides are used as given, at any temperature.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from types import MappingProxyType
from typing import Any, Union

import numpy as np

from ..structures.elements import atomic_number, element_values, symbol
from .constants import ATOMIC_MASS_UNIT, BOLTZMANN, HBAR

__all__ = [
    "DEFAULT_RMS_DISPLACEMENT",
    "REFERENCE_TEMPERATURE",
    "RMS_DISPLACEMENT",
    "ElementKey",
    "Overrides",
    "ThermalDataWarning",
    "debye_rms_displacement",
    "displacement_source",
    "effective_debye_temperature",
    "rms_displacement",
    "smear_components",
    "thermal_widths",
]

#: Temperature of :data:`RMS_DISPLACEMENT`, K.
REFERENCE_TEMPERATURE = 300.0

#: r.m.s. displacement at 300 K (Å) for elements missing from the table: about the median
#: of the table's metals. Scaled as sqrt(T / 300 K); using it raises a ThermalDataWarning.
DEFAULT_RMS_DISPLACEMENT = 0.08

# One element a row; B = 8π²u² as the sources tabulate it (not read); CP99 = Cao & Peng 1999
# at 300 K, the other sources in the module docstring. Rows of data, so a text table.
_TABLE_TEXT = """
#   u/Å     weight/u B/Å²   source
Li  0.2523  6.940    5.03   CP99 bcc
Be  0.0820  9.012    0.531  CP99 hcp
C   0.0419  12.011   0.139  CP99 diamond
N   0.0611  14.007   0.295  N in GaN, Schowalter et al. 2009
O   0.0767  15.999   0.465  O in ZnO, CP99
Na  0.2934  22.990   6.80   CP99 bcc
Mg  0.1545  24.305   1.88   CP99 hcp
Al  0.1027  26.982   0.833  CP99 fcc
Si  0.0765  28.085   0.462  synchrotron 300 K (PMC8086158)
P   0.0902  30.974   0.642  P in GaP, CP99
S   0.0972  32.060   0.746  S in ZnS, CP99
K   0.3739  39.098   11.0   CP99 bcc
Ca  0.1615  40.078   2.06   CP99 fcc
Sc  0.0956  44.956   0.721  CP99 hcp
Ti  0.0830  47.867   0.544  CP99 hcp
V   0.0869  50.942   0.596  CP99 bcc
Cr  0.0589  51.996   0.273  CP99 bcc
Mn  0.0704  54.938   0.391  CP99
Fe  0.0664  55.845   0.348  CP99 bcc
Co  0.0629  58.933   0.312  CP99
Ni  0.0692  58.693   0.378  CP99 fcc
Cu  0.0853  63.546   0.575  CP99 fcc
Zn  0.1222  65.380   1.18   CP99 hcp
Ga  0.0794  69.723   0.498  CP99
Ge  0.0890  72.630   0.626  CP99 diamond
As  0.0865  74.922   0.590  CP99
Se  0.0925  78.971   0.676  Se in ZnSe, CP99
Y   0.1057  88.906   0.883  CP99 hcp
Zr  0.0864  91.224   0.589  CP99 hcp
Nb  0.0771  92.906   0.470  CP99 bcc
Mo  0.0541  95.950   0.231  CP99 bcc
Ru  0.0364  101.070  0.105  CP99
Rh  0.0443  102.906  0.155  CP99
Pd  0.0768  106.420  0.466  CP99 fcc
Ag  0.0982  107.868  0.761  CP99 fcc
Cd  0.0949  112.414  0.712  CP99
In  0.1808  114.818  2.58   CP99
Sn  0.1218  118.710  1.17   CP99 (diamond-structure grey tin)
Sb  0.0904  121.760  0.646  CP99
Te  0.1213  127.600  1.16   CP99
Ba  0.1993  137.327  3.14   CP99 bcc
La  0.1551  138.905  1.90   CP99 fcc
Gd  0.0839  157.250  0.556  CP99
Tb  0.1144  158.925  1.03   CP99 hcp
Dy  0.0785  162.500  0.487  CP99
Ho  0.1044  164.930  0.860  CP99 hcp
Hf  0.0626  178.490  0.310  CP99
Ta  0.0649  180.948  0.332  CP99 bcc
W   0.0461  183.840  0.168  CP99 bcc
Re  0.0366  186.207  0.106  CP99
Os  0.0314  190.230  0.078  CP99
Ir  0.0368  192.217  0.107  CP99
Pt  0.0697  195.084  0.384  CP99 fcc
Au  0.0898  196.967  0.637  CP99 fcc
Tl  0.1864  204.380  2.74   CP99
Pb  0.1665  207.200  2.19   CP99 fcc
Bi  0.1217  208.980  1.17   CP99
Th  0.0975  232.038  0.750  CP99 fcc
U   0.0658  238.029  0.342  CP99
"""


def _parse_table(text: str) -> dict[str, tuple[float, float]]:
    """``{symbol: (u_Å, atomic_weight_u)}`` from the rows of :data:`_TABLE_TEXT`."""
    table: dict[str, tuple[float, float]] = {}
    for row in text.strip().splitlines():
        if row.startswith("#"):
            continue
        sym, u, mass, _b, _source = row.split(maxsplit=4)
        table[sym] = (float(u), float(mass))
    return table


_TABLE = _parse_table(_TABLE_TEXT)

#: Isotropic r.m.s. displacement along one axis at 300 K, Å, by element symbol
#: (``B = 8π² u²``). Read-only; see the module docstring for the sources.
RMS_DISPLACEMENT: Mapping[str, float] = MappingProxyType({k: v[0] for k, v in _TABLE.items()})

ElementKey = Union[str, int]
#: Per-element displacement overrides: ``{element: u_Å}`` or ``((element, u_Å), ...)``.
Overrides = Union[Mapping[ElementKey, float], Iterable[tuple[ElementKey, float]], None]


class ThermalDataWarning(UserWarning):
    """An element had no tabulated displacement and got :data:`DEFAULT_RMS_DISPLACEMENT`."""


# --------------------------------------------------------------------------------------------
# Debye model
# --------------------------------------------------------------------------------------------

_DEBYE_NODES = np.polynomial.legendre.leggauss(64)


def _debye_phi_over_x(x: float) -> float:
    """``φ(x) / x = x⁻² ∫₀ˣ t / (eᵗ - 1) dt`` (Gauss-Legendre; the integral is π²/6 at ∞)."""
    if x <= 0:
        raise ValueError("x must be > 0")
    top = min(x, 60.0)  # beyond, the integrand is below 4e-25
    t = 0.5 * top * (_DEBYE_NODES[0] + 1.0)
    integral = 0.5 * top * float(np.sum(_DEBYE_NODES[1] * t / np.expm1(t)))
    return integral / (x * x)


def debye_rms_displacement(mass_amu: float, debye_temperature: float, temperature: float) -> float:
    """r.m.s. displacement along one axis of a monatomic Debye solid.

    ``u² = 3ħ² / (m k_B θ) · (φ(x)/x + 1/4)``, ``x = θ / T``,
    ``φ(x) = (1/x) ∫₀ˣ t / (eᵗ - 1) dt``; above θ it tends to
    ``3ħ² T / (m k_B θ²) · (1 + θ² / (36 T²))``, at T = 0 to the zero-point
    ``3ħ² / (4 m k_B θ)`` (e.g. Willis & Pryor, *Thermal Vibrations in Crystallography*, 1975).

    Parameters
    ----------
    mass_amu : float
        Atomic mass, u.
    debye_temperature : float
        θ, K.
    temperature : float
        T, K (>= 0).

    Returns
    -------
    float
        u, Å.
    """
    if not (mass_amu > 0 and debye_temperature > 0 and temperature >= 0):
        raise ValueError("need mass > 0, Debye temperature > 0 and temperature >= 0")
    bracket = 0.25
    if temperature > 0:
        bracket += _debye_phi_over_x(debye_temperature / temperature)
    u2 = 3.0 * HBAR**2 / (mass_amu * ATOMIC_MASS_UNIT * BOLTZMANN * debye_temperature) * bracket
    return math.sqrt(u2) * 1e10


@cache
def _effective_theta(sym: str) -> float:
    """θ (K) whose Debye displacement at 300 K is the table's: :func:`scipy.optimize.brentq`
    on ln θ in [0, ln 1e5], where u falls monotonically with θ."""
    from scipy.optimize import brentq  # here, not at the top: ~0.25 s to import

    u_ref, mass = _TABLE[sym]

    def excess(log_theta: float) -> float:
        return debye_rms_displacement(mass, math.exp(log_theta), REFERENCE_TEMPERATURE) - u_ref

    return math.exp(brentq(excess, 0.0, math.log(1e5), xtol=1e-13))


def effective_debye_temperature(element: ElementKey) -> float:
    """Debye temperature that reproduces an element's tabulated 300 K displacement, K.

    The X-ray (Debye-Waller) Debye temperature θ_M of the table entry; it sets the
    temperature dependence used by :func:`rms_displacement`.

    Raises
    ------
    KeyError
        If the element is not in :data:`RMS_DISPLACEMENT`.
    """
    sym = symbol(atomic_number(element))
    if sym not in _TABLE:
        raise KeyError(f"no tabulated displacement for {sym}")
    return _effective_theta(sym)


# --------------------------------------------------------------------------------------------
# Look-ups
# --------------------------------------------------------------------------------------------


def _normalise_overrides(overrides: Overrides) -> dict[int, float]:
    out: dict[int, float] = {}
    for sym, u in element_values(overrides):
        if not (u >= 0 and math.isfinite(u)):
            raise ValueError(f"override for {sym} must be a finite u >= 0 Å, got {u!r}")
        out[atomic_number(sym)] = u
    return out


def _check_temperature(temperature: float) -> float:
    t = float(temperature)
    if not (t >= 0 and math.isfinite(t)):
        raise ValueError(f"temperature must be a finite number of K >= 0, got {temperature!r}")
    return t


def _lookup(z: int, ov: dict[int, float], temperature: float) -> tuple[float, str]:
    if z in ov:
        return ov[z], "override"
    sym = symbol(z)
    if sym in _TABLE:
        if temperature == REFERENCE_TEMPERATURE:
            return _TABLE[sym][0], "table"
        return debye_rms_displacement(_TABLE[sym][1], _effective_theta(sym), temperature), "table"
    return DEFAULT_RMS_DISPLACEMENT * math.sqrt(temperature / REFERENCE_TEMPERATURE), "default"


def displacement_source(element: ElementKey, overrides: Overrides = None) -> str:
    """Where an element's displacement comes from: ``"override"``, ``"table"`` or ``"default"``."""
    return _lookup(atomic_number(element), _normalise_overrides(overrides), REFERENCE_TEMPERATURE)[
        1
    ]


def _warn_default(symbols: Iterable[str]) -> None:
    names = ", ".join(sorted(set(symbols)))
    warnings.warn(
        f"no tabulated thermal displacement for {names}; using {DEFAULT_RMS_DISPLACEMENT} Å "
        "at 300 K (pass overrides to set it)",
        ThermalDataWarning,
        stacklevel=3,
    )


def rms_displacement(
    z_or_symbol: ElementKey,
    overrides: Overrides = None,
    temperature: float = REFERENCE_TEMPERATURE,
) -> float:
    """Isotropic r.m.s. displacement of an element along one axis.

    Parameters
    ----------
    z_or_symbol : int or str
        Atomic number or element symbol (any case).
    overrides : mapping or iterable of (element, u) pairs, optional
        ``{element: u_Å}``, keys as ``z_or_symbol`` (e.g. ``{"Au": 0.1}`` or
        ``(("Au", 0.1),)``); used as given, at any temperature.
    temperature : float
        K. Tabulated elements follow the Debye model with their effective Debye temperature
        (:func:`effective_debye_temperature`); the default for missing elements scales as
        ``sqrt(T / 300 K)``.

    Returns
    -------
    float
        u, Å (``B = 8π² u²``).

    Warns
    -----
    ThermalDataWarning
        If the element is neither overridden nor tabulated.
    """
    t = _check_temperature(temperature)
    z = atomic_number(z_or_symbol)
    u, source = _lookup(z, _normalise_overrides(overrides), t)
    if source == "default":
        _warn_default([symbol(z)])
    return u


def thermal_widths(
    numbers: Any,
    overrides: Overrides = None,
    temperature: float = REFERENCE_TEMPERATURE,
) -> np.ndarray:
    """Per-atom r.m.s. displacements for an array of atomic numbers.

    Parameters
    ----------
    numbers : array_like of int (or of element symbols)
        Atomic numbers, any shape.
    overrides : mapping or iterable of (element, u) pairs, optional
        ``{element: u_Å}``; see :func:`rms_displacement`.
    temperature : float
        K; see :func:`rms_displacement`.

    Returns
    -------
    ndarray of float64
        u in Å, same shape as ``numbers``.

    Warns
    -----
    ThermalDataWarning
        Once, naming every element that got the default.
    """
    t = _check_temperature(temperature)
    arr = np.asarray(numbers)
    ov = _normalise_overrides(overrides)
    uniq, inverse = np.unique(arr.ravel(), return_inverse=True)
    values = np.empty(uniq.size, dtype=np.float64)
    defaulted: list[str] = []
    for i, key in enumerate(uniq.tolist()):
        z = atomic_number(key)
        values[i], source = _lookup(z, ov, t)
        if source == "default":
            defaulted.append(symbol(z))
    if defaulted:
        _warn_default(defaulted)
    return values[inverse].reshape(arr.shape)


def smear_components(
    components: Sequence[tuple[float, float]], u: Any, *, conserve: str = "integral"
) -> tuple[np.ndarray, np.ndarray]:
    """Fold thermal displacements into a sum of Gaussians.

    Each component ``a exp(-r² / (2σ²))`` convolved with the normalised 2-D Gaussian of
    standard deviation ``u`` becomes ``a σ²/σ_eff² exp(-r² / (2σ_eff²))``,
    ``σ_eff² = σ² + u²``.

    Parameters
    ----------
    components : sequence of (amplitude, sigma_Å)
        E.g. :attr:`xyz2image_gpu.physics.probe.GaussianFit.components`.
    u : array_like
        r.m.s. displacement(s), Å, any shape (e.g. from :func:`thermal_widths`).
    conserve : {"integral", "peak"}
        ``"integral"`` (the convolution; the physical choice: an atom scatters the same
        total intensity however it vibrates) scales every amplitude by ``σ²/σ_eff²``;
        ``"peak"`` keeps the amplitudes (widths only).

    Returns
    -------
    amplitudes, sigmas : ndarray of float64, shape ``u.shape + (len(components),)``
    """
    if conserve not in ("integral", "peak"):
        raise ValueError(f"conserve must be 'integral' or 'peak', got {conserve!r}")
    comps = np.asarray(components, dtype=np.float64).reshape(-1, 2)
    if comps.shape[0] == 0 or np.any(comps[:, 1] <= 0) or np.any(comps[:, 0] < 0):
        raise ValueError("components must be (amplitude >= 0, sigma > 0) pairs")
    u = np.asarray(u, dtype=np.float64)
    if np.any(u < 0) or not np.all(np.isfinite(u)):
        raise ValueError("u must be finite and >= 0")
    s2 = comps[:, 1] ** 2
    eff2 = s2 + u[..., None] ** 2
    sigmas = np.sqrt(eff2)
    amps = np.broadcast_to(comps[:, 0], eff2.shape).copy()
    if conserve == "integral":
        amps *= s2 / eff2
    return amps, sigmas
