"""The STEM probe: from microscope settings to a small sum of radially symmetric Gaussians.

A probe described the way microscopists describe it (:class:`ProbeOptics`: voltage,
convergence semi-angle, defocus, spherical aberration, effective source size) is turned into
its radial intensity profile (:func:`probe_profile`), and that profile into a few Gaussians
``I(r) ≈ Σ_g a_g exp(-r² / (2 σ_g²))`` (:func:`fit_gaussians`, :func:`fit_probe`) that the
renderer draws for every atom, keeping the image separable and fast.

Physics (lengths in Å, angles in rad unless the name says mrad)
-----------------------------------------------------------------
The probe wave function of an aberrated, round, hard-edged condenser aperture is the Hankel
transform of the aperture function (e.g. Kirkland, *Advanced Computing in Electron
Microscopy*, 2nd ed., Springer 2010, ch. 3)::

    ψ(r) = ∫₀^{k_max} exp(-i χ(k)) J0(2π k r) 2π k dk,      k_max = α / λ
    χ(k) = π λ k² (½ Cs λ² k² - Δf)

**Sign convention: positive defocus Δf is underfocus** (Kirkland's convention; it is
``-C1`` in Krivanek's notation). With Cs > 0 the optimum is therefore a positive defocus:
for Cs = 1.2 mm at 200 kV the Scherzer (phase-contrast) defocus ``+sqrt(4/3 Cs λ)`` is
about +634 Å. For a probe, :func:`optimal_defocus` gives ``Δf = ½ Cs α²``, the defocus that
minimises the variance of χ over the aperture (Maréchal's condition, i.e. the brightest
centre for small aberrations); with α = (4 λ / Cs)^¼ it equals ``sqrt(Cs λ)``.

The coherent intensity ``|ψ|²`` is blurred by the effective source: a normalised 2-D
Gaussian whose **full width at half maximum** is ``source_size`` (σ_s = FWHM / 2.3548). For a
radially symmetric profile the 2-D convolution is done exactly as a 1-D integral with the
kernel ``(r'/σ²) exp(-(r² + r'²)/(2σ²)) I0(r r'/σ²)`` (panel Gauss-Legendre quadrature).

Numerics: J0 is :func:`scipy.special.j0` and the exponentially scaled I0 is
:func:`scipy.special.i0e` (both to double precision); the k integral is Gauss-Legendre
quadrature with enough nodes for the oscillations of J0 and of χ.

Normalisation: :func:`probe_profile` returns ``I(0) = 1`` (``normalize="peak"``) or
``∫ I d²r = 1`` in Å⁻² (``normalize="integral"``, exact through Parseval: the aperture
passes ``π k_max²``). The Gaussian fits are normalised to peak 1 (``Σ a_g = 1``), like the
renderer's single Gaussian (an atom of weight 1 peaks at 1): fitting a pure Gaussian of any
height returns ``((1.0, σ),)``.

SciPy is imported inside the functions that use it: ``scipy.optimize`` alone takes about
0.25 s to import, which every command and ``import xyz2image_gpu`` would pay otherwise.

One module for the whole effect (about 750 lines): the optics, the profile and its Gaussian
fit change together (the fit's radius, nodes and tolerances are set by the profile's shape).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from .constants import (
    ELECTRON_MASS,
    ELEMENTARY_CHARGE,
    FWHM_PER_SIGMA,
    PLANCK,
    SPEED_OF_LIGHT,
)

__all__ = [
    "FWHM_PER_SIGMA",
    "GaussianFit",
    "ProbeOptics",
    "bessel_j0",
    "default_fit_radius",
    "electron_wavelength",
    "fit_gaussians",
    "fit_probe",
    "optimal_defocus",
    "probe_profile",
    "profile_fwhm",
]

# Elements of a J0 matrix computed at once (memory bound: 16 bytes each, a few of them).
_CHUNK = 1 << 20
# Source blur narrower than this (σ, Å) is ignored: its relative effect on any probe with
# k_max < 2 Å⁻¹ is below (2π k_max σ)² / 2 ≈ 1e-4.
_MIN_SOURCE_SIGMA = 1e-3
# Most Gauss-Legendre nodes of the aperture integral (enough for r ≈ 1000 / k_max).
_MAX_NODES = 5000
# Gauss-Legendre nodes per panel of the source-blur integral.
_PANEL_NODES = 12


# --------------------------------------------------------------------------------------------
# Wavelength and optics
# --------------------------------------------------------------------------------------------


def electron_wavelength(kv: float) -> float:
    """Relativistic electron wavelength.

    ``λ = h / sqrt(2 m0 e V (1 + e V / (2 m0 c²)))``.

    Parameters
    ----------
    kv : float
        Accelerating voltage, kV (> 0).

    Returns
    -------
    float
        Wavelength, Å (200 kV: 0.025079 Å; 300 kV: 0.019687 Å).
    """
    kv = float(kv)
    if not (kv > 0 and math.isfinite(kv)):
        raise ValueError(f"voltage must be a positive number of kV, got {kv}")
    ev = ELEMENTARY_CHARGE * kv * 1e3  # kinetic energy, J
    p2 = 2.0 * ELECTRON_MASS * ev * (1.0 + ev / (2.0 * ELECTRON_MASS * SPEED_OF_LIGHT**2))
    return PLANCK / math.sqrt(p2) * 1e10


def optimal_defocus(convergence_mrad: float, cs_mm: float) -> float:
    """Defocus that balances spherical aberration over the aperture.

    ``Δf = ½ Cs α²`` minimises the variance of χ across the (uniformly filled) aperture —
    Maréchal's condition, the brightest probe centre for small residual aberrations. For
    α = (4 λ / Cs)^¼ it equals ``sqrt(Cs λ)``.

    Parameters
    ----------
    convergence_mrad : float
        Convergence semi-angle α, mrad.
    cs_mm : float
        Spherical aberration Cs, mm.

    Returns
    -------
    float
        Defocus, Å, positive = underfocus (the convention of :class:`ProbeOptics`).
    """
    alpha = float(convergence_mrad) * 1e-3
    return 0.5 * float(cs_mm) * 1e7 * alpha * alpha


@dataclass(frozen=True)
class ProbeOptics:
    """The probe-forming optics, as a microscopist states them.

    Attributes
    ----------
    voltage_kv : float
        Accelerating voltage, kV.
    convergence_mrad : float
        Convergence semi-angle α of the probe-forming aperture, mrad.
    defocus : float
        Defocus Δf, Å. **Positive = underfocus** (Kirkland's convention, ``C1 = -Δf``):
        ``χ(k) = π λ k² (½ Cs λ² k² - Δf)``. With Cs > 0 the best focus is positive, e.g.
        the Scherzer defocus ``+sqrt(4/3 Cs λ) ≈ +634 Å`` for Cs = 1.2 mm at 200 kV, or
        :func:`optimal_defocus` (``½ Cs α²``) for a probe.
    cs_mm : float
        Third-order spherical aberration Cs (C3), mm.
    source_size : float
        Effective source size, Å, as a **full width at half maximum**: the coherent
        intensity is convolved with a normalised 2-D Gaussian of this FWHM
        (σ_s = FWHM / 2.3548). 0 = a point source.
    """

    voltage_kv: float = 200.0
    convergence_mrad: float = 20.0
    defocus: float = 0.0
    cs_mm: float = 0.0
    source_size: float = 0.0

    def __post_init__(self) -> None:
        for name in ("voltage_kv", "convergence_mrad", "defocus", "cs_mm", "source_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
                raise TypeError(f"{name} must be a number, got {value!r}")
            if not math.isfinite(float(value)):
                raise ValueError(f"{name} must be finite, got {value!r}")
        if not self.voltage_kv > 0:
            raise ValueError(f"voltage_kv must be > 0, got {self.voltage_kv}")
        if not 0 < self.convergence_mrad < 200:
            raise ValueError(f"convergence_mrad must be in (0, 200), got {self.convergence_mrad}")
        if self.source_size < 0:
            raise ValueError(f"source_size (FWHM, Å) must be >= 0, got {self.source_size}")

    @property
    def wavelength(self) -> float:
        """Electron wavelength λ, Å."""
        return electron_wavelength(self.voltage_kv)

    @property
    def k_max(self) -> float:
        """Aperture cut-off ``α / λ``, Å⁻¹."""
        return self.convergence_mrad * 1e-3 / self.wavelength

    @property
    def source_sigma(self) -> float:
        """Standard deviation of the source Gaussian, Å (``source_size / 2.3548``)."""
        return self.source_size / FWHM_PER_SIGMA

    @property
    def airy_radius(self) -> float:
        """First zero of the aberration-free probe, ``0.6098 λ / α``, Å."""
        return _J1_FIRST_ZERO / (2.0 * math.pi * self.k_max)

    def chi(self, k: Any) -> np.ndarray:
        """Aberration phase ``χ(k) = π λ k² (½ Cs λ² k² - Δf)``, rad, for ``k`` in Å⁻¹."""
        lam = self.wavelength
        k2 = np.square(np.asarray(k, dtype=np.float64))
        return math.pi * lam * k2 * (0.5 * self.cs_mm * 1e7 * lam * lam * k2 - self.defocus)

    def geometric_blur(self) -> float:
        """Largest ray displacement ``max_θ≤α |θ (Cs θ² - Δf)|`` in the focal plane, Å."""
        theta = np.linspace(0.0, self.convergence_mrad * 1e-3, 257)
        return float(np.max(np.abs(theta * (self.cs_mm * 1e7 * theta**2 - self.defocus))))

    def describe(self) -> str:
        """One line for logs and manifests."""
        return (
            f"{self.voltage_kv:g} kV (λ {self.wavelength:.5f} Å), "
            f"α {self.convergence_mrad:g} mrad, "
            f"Δf {self.defocus:+g} Å (+ = underfocus), Cs {self.cs_mm:g} mm, "
            f"source {self.source_size:g} Å FWHM"
        )


# --------------------------------------------------------------------------------------------
# Special functions and quadrature
# --------------------------------------------------------------------------------------------

_J1_FIRST_ZERO = 3.8317059702075125


def bessel_j0(x: Any) -> np.ndarray:
    """Bessel function of the first kind of order 0: :func:`scipy.special.j0` in float64.

    Kept as a public name of this module; it adds nothing to SciPy's function.

    Parameters
    ----------
    x : array_like
        Real arguments (dimensionless).

    Returns
    -------
    ndarray of float64
        ``J0(x)``, same shape as ``x``.
    """
    from scipy import special

    return special.j0(np.asarray(x, dtype=np.float64))


@lru_cache(maxsize=32)
def _gauss_legendre(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre nodes and weights on [-1, 1], ascending.

    Newton's method on P_n from the classical first guess ``cos(π (i - ¼) / (n + ½))``,
    with P_n and P_n' from the three-term recurrence: O(n²) work, unlike the O(n³)
    eigenvalue method of ``numpy.polynomial.legendre.leggauss``.

    Kept hand-written: more accurate than :func:`scipy.special.roots_legendre` at every n
    measured, and faster from ~500 nodes (benchmarks/README.md, "Physics numerics").
    """
    m = (n + 1) // 2  # nodes are symmetric about 0
    i = np.arange(1, m + 1)
    x = np.cos(math.pi * (i - 0.25) / (n + 0.5))
    for _ in range(100):
        p0, p1 = np.ones_like(x), x.copy()
        for j in range(2, n + 1):
            p0, p1 = p1, ((2 * j - 1) * x * p1 - (j - 1) * p0) / j
        dp = n * (x * p1 - p0) / (x * x - 1.0)
        dx = p1 / dp
        x = x - dx
        if np.max(np.abs(dx)) < 1e-15:
            break
    # Weights from the derivative at the converged nodes.
    p0, p1 = np.ones_like(x), x.copy()
    for j in range(2, n + 1):
        p0, p1 = p1, ((2 * j - 1) * x * p1 - (j - 1) * p0) / j
    dp = n * (x * p1 - p0) / (x * x - 1.0)
    w = 2.0 / ((1.0 - x * x) * dp * dp)
    nodes = np.concatenate([-x, x[::-1][n % 2 :]])
    weights = np.concatenate([w, w[::-1][n % 2 :]])
    nodes.flags.writeable = False
    weights.flags.writeable = False
    return nodes, weights


# --------------------------------------------------------------------------------------------
# Probe intensity
# --------------------------------------------------------------------------------------------


def _k_nodes(optics: ProbeOptics, r_max: float) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre nodes (Å⁻¹) and weights × 2πk for the aperture integral up to r_max."""
    k_max = optics.k_max
    # Highest local frequency of the integrand in the Gauss-Legendre variable t ∈ [-1, 1]
    # (k = k_max (t + 1) / 2): J0 oscillates at 2π r, exp(-iχ) at |dχ/dk|.
    k = np.linspace(0.0, k_max, 513)
    lam = optics.wavelength
    dchi = 2.0 * math.pi * lam * k * (optics.cs_mm * 1e7 * lam * lam * k * k - optics.defocus)
    omega = 0.5 * k_max * (2.0 * math.pi * r_max + float(np.max(np.abs(dchi))))
    n = int(32 + 1.5 * omega)
    if n > _MAX_NODES:
        raise ValueError(
            f"the probe integral up to r = {r_max:.4g} Å needs {n} quadrature nodes (more than "
            f"{_MAX_NODES}): r or the aberration phase (Δf, Cs at this aperture) is too large"
        )
    x, w = _gauss_legendre(n)
    k = 0.5 * k_max * (x + 1.0)
    return k, 0.5 * k_max * w * 2.0 * math.pi * k


def _coherent_intensity(optics: ProbeOptics, r: np.ndarray) -> np.ndarray:
    """``|ψ(r)|² / (π k_max²)²`` (1 at the centre of an aberration-free probe), r >= 0 flat."""
    from scipy import special

    if r.size == 0:
        return np.zeros(0)
    k, wk = _k_nodes(optics, float(np.max(r)))
    amp = np.exp(-1j * optics.chi(k)) * wk / (math.pi * optics.k_max**2)
    out = np.empty(r.size)
    step = max(1, _CHUNK // k.size)
    two_pi_k = 2.0 * math.pi * k
    for start in range(0, r.size, step):
        rr = r[start : start + step]
        psi = special.j0(rr[:, None] * two_pi_k[None, :]) @ amp
        out[start : start + step] = psi.real**2 + psi.imag**2
    return out


def _blurred_intensity(optics: ProbeOptics, r: np.ndarray) -> np.ndarray:
    """Coherent intensity convolved in 2-D with the source Gaussian, at radii r (flat, >= 0)."""
    from scipy import special

    sigma = optics.source_sigma
    reach = 10.0 * sigma  # the kernel is below exp(-50) of its peak beyond
    # Gauss-Legendre panels on [0, max(r) + reach], each narrower than the kernel and than
    # the probe's finest fringes (~ 1/(2 k_max)): the integrand is smooth on every panel,
    # including the first, where it behaves like r' (an odd function) and a plain
    # Newton-Cotes rule would lose accuracy.
    width = min(sigma, 1.0 / (4.0 * optics.k_max))
    r_end = float(np.max(r)) + reach
    n_panels = max(1, math.ceil(r_end / width))
    width = r_end / n_panels
    t, wt = _gauss_legendre(_PANEL_NODES)
    grid = ((np.arange(n_panels)[:, None] + 0.5 * (t[None, :] + 1.0)) * width).ravel()
    weights = np.tile(0.5 * width * wt, n_panels) * _coherent_intensity(optics, grid)
    inv_s2 = 1.0 / (sigma * sigma)

    order = np.argsort(r, kind="stable")
    rs = r[order]
    out = np.empty(r.size)
    block = 256
    for start in range(0, rs.size, block):
        rr = rs[start : start + block]
        lo = np.searchsorted(grid, rr[0] - reach, side="left")
        hi = np.searchsorted(grid, rr[-1] + reach, side="right")
        g = grid[lo:hi]
        d = rr[:, None] - g[None, :]
        kern = (g * inv_s2)[None, :] * np.exp(-0.5 * inv_s2 * d * d)
        kern *= special.i0e(rr[:, None] * g[None, :] * inv_s2)
        out[order[start : start + block]] = kern @ weights[lo:hi]
    return out


def probe_profile(optics: ProbeOptics, r: Any, *, normalize: str = "peak") -> np.ndarray:
    """Radial intensity of the probe.

    ``|ψ(r)|²`` of the aberrated aperture (see the module docstring), convolved with the
    source Gaussian.

    Parameters
    ----------
    optics : ProbeOptics
    r : array_like
        Distances from the probe centre, Å (the sign is ignored), any shape.
    normalize : {"peak", "integral"}
        ``"peak"``: the on-axis value I(0) is 1 (the maximum for any probe whose centre is its
        brightest point, i.e. any probe near focus). ``"integral"``: ``∫ I d²r = 1``, I in
        Å⁻² (fixed probe current: defocus or Cs lower the peak).

    Returns
    -------
    ndarray of float64
        Intensity, same shape as ``r``.
    """
    if normalize not in ("peak", "integral"):
        raise ValueError(f"normalize must be 'peak' or 'integral', got {normalize!r}")
    r = np.asarray(r, dtype=np.float64)
    if not np.all(np.isfinite(r)):
        raise ValueError("r must be finite")
    flat = np.abs(r).ravel()
    if flat.size == 0:
        return np.zeros(r.shape)
    if normalize == "peak":
        flat = np.concatenate([flat, [0.0]])
    if optics.source_sigma >= _MIN_SOURCE_SIGMA:
        values = _blurred_intensity(optics, flat)
    else:
        values = _coherent_intensity(optics, flat)
    if normalize == "peak":
        values = values[:-1] / values[-1]
    else:
        values = values * (math.pi * optics.k_max**2)
    return values.reshape(r.shape)


def default_fit_radius(optics: ProbeOptics) -> float:
    """Default outer radius of a probe fit, Å.

    Four Airy radii (``4 × 0.61 λ/α``, which holds ≈ 95 % of an aberration-free probe's
    intensity), plus the geometric blur of defocus and Cs (:meth:`ProbeOptics.geometric_blur`)
    and three source standard deviations.
    """
    return 4.0 * optics.airy_radius + optics.geometric_blur() + 3.0 * optics.source_sigma


def profile_fwhm(r: Any, intensity: Any) -> float:
    """Full width at half maximum of a radial profile sampled on ascending radii.

    The first radius where the intensity falls below half its maximum, linearly
    interpolated, times 2. Measured from the maximum, so a probe with an on-axis dip reports
    the outer half-maximum of its brightest ring.

    Parameters
    ----------
    r : array_like
        Ascending radii, Å, starting at (or near) 0.
    intensity : array_like
        Intensity at ``r``.

    Returns
    -------
    float
        FWHM, Å; ``nan`` if the profile never drops below half its maximum.
    """
    r = np.asarray(r, dtype=np.float64)
    y = np.asarray(intensity, dtype=np.float64)
    if r.shape != y.shape or r.ndim != 1:
        raise ValueError("r and intensity must be 1-D arrays of the same length")
    i_max = int(np.argmax(y))
    half = 0.5 * y[i_max]
    below = np.nonzero(y[i_max:] < half)[0]
    if below.size == 0:
        return float("nan")
    j = i_max + int(below[0])
    r0, r1, y0, y1 = r[j - 1], r[j], y[j - 1], y[j]
    return float(2.0 * (r0 + (half - y0) * (r1 - r0) / (y1 - y0)))


# --------------------------------------------------------------------------------------------
# Gaussian fits
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GaussianFit:
    """A radial profile as a sum of Gaussians, ``Σ_g a_g exp(-r² / (2 σ_g²))``.

    Attributes
    ----------
    components : tuple of (float, float)
        ``(amplitude, sigma_Å)`` pairs sorted by sigma, all amplitudes > 0, normalised so
        the profile peaks at 1 (``Σ a_g = 1``; the peak of a sum of positive Gaussians is at
        r = 0). At most the ``n`` asked for: components the data do not need are dropped.
    residual : float
        Relative r.m.s. residual weighted by 2πr over the fitted range,
        ``sqrt(∫ (I - F)² 2πr dr / ∫ I² 2πr dr)``.
    r_max : float
        Outer radius of the fitted data, Å.
    scale : float
        The fitted profile's peak in the units of the input intensity (multiply the
        amplitudes by it to get the fit of the data as given).
    """

    components: tuple[tuple[float, float], ...]
    residual: float
    r_max: float
    scale: float = 1.0

    def __post_init__(self) -> None:
        comps = tuple((float(a), float(s)) for a, s in self.components)
        if not comps:
            raise ValueError("a GaussianFit needs at least one component")
        for a, s in comps:
            if not (a >= 0 and s > 0 and math.isfinite(a) and math.isfinite(s)):
                raise ValueError(f"components must be (amplitude >= 0, sigma > 0), got {(a, s)}")
        object.__setattr__(self, "components", comps)

    @property
    def amplitudes(self) -> np.ndarray:
        """Amplitudes a_g (peak-normalised), float64."""
        return np.array([a for a, _ in self.components], dtype=np.float64)

    @property
    def sigmas(self) -> np.ndarray:
        """Standard deviations σ_g, Å, float64."""
        return np.array([s for _, s in self.components], dtype=np.float64)

    @property
    def integral(self) -> float:
        """2-D integral of the peak-normalised profile, ``Σ a_g 2π σ_g²``, Å²."""
        return float(sum(2.0 * math.pi * a * s * s for a, s in self.components))

    def evaluate(self, r: Any) -> np.ndarray:
        """The fitted (peak-normalised) profile at radii ``r`` (Å), same shape as ``r``."""
        r2 = np.square(np.asarray(r, dtype=np.float64))
        out = np.zeros_like(r2)
        for a, s in self.components:
            out += a * np.exp(-0.5 * r2 / (s * s))
        return out

    @property
    def fwhm(self) -> float:
        """Full width at half maximum of the fitted profile, Å.

        The profile falls monotonically from r = 0, so its half maximum is the one root of
        ``evaluate(r) - ½`` on ``[0, 10 max σ_g]``, found by :func:`scipy.optimize.brentq`;
        0 when the profile never reaches ½ (amplitudes summing to ½ or less).
        """
        from scipy.optimize import brentq

        half = 0.5
        top = 10.0 * max(s for _, s in self.components)
        if not float(self.evaluate(0.0)) > half:
            return 0.0
        hwhm = brentq(lambda r: float(self.evaluate(r)) - half, 0.0, top, xtol=1e-15)
        return 2.0 * hwhm

    def describe(self) -> str:
        """One line for logs and manifests."""
        parts = ", ".join(f"a={a:.4f} σ={s:.4f} Å" for a, s in self.components)
        return (
            f"{len(self.components)} Gaussian(s) [{parts}]; FWHM {self.fwhm:.4f} Å; "
            f"residual {100.0 * self.residual:.2f}% (2πr-weighted, r ≤ {self.r_max:.3g} Å)"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (components as lists)."""
        return {
            "components": [[a, s] for a, s in self.components],
            "residual": self.residual,
            "r_max": self.r_max,
            "scale": self.scale,
        }


def fit_gaussians(
    r: Any,
    intensity: Any,
    n: int = 3,
    *,
    match_fwhm: bool = False,
    max_sigma: float | None = None,
) -> GaussianFit:
    """Fit a radial profile with at most ``n`` non-negative Gaussians.

    Minimises ``∫ (I(r) - Σ a_g exp(-r²/(2σ_g²)))² 2πr dr`` over ``a_g >= 0`` and σ_g (the
    fit is good where the intensity is, in the 2-D integral sense) by variable projection:
    for given widths the amplitudes are a non-negative least-squares problem
    (Lawson-Hanson, :func:`scipy.optimize.nnls`), and the log-widths are optimised with
    Nelder-Mead (:func:`scipy.optimize.minimize`) from several starts (one seeded by a
    non-negative fit over a dense dictionary of widths).

    Parameters
    ----------
    r : array_like
        Ascending radii, Å, ``r >= 0`` (a uniform grid from 0 is typical; the integral is
        the trapezoid rule on the given points).
    intensity : array_like
        Profile values at ``r`` (any units, not all zero).
    n : int
        Largest number of Gaussians.
    match_fwhm : bool
        Constrain the fit to the data's full width at half maximum (a linear constraint on
        the amplitudes, enforced by a heavily weighted extra equation): the least-squares
        optimum otherwise trades width for shape where the data cannot be matched, e.g. the
        Airy core, which falls faster than any positive sum of Gaussians can (such sums are
        log-convex in r²). Needs the data's maximum at the first sample.
    max_sigma : float, optional
        Largest component width, Å. Default ``r_max / 2``: a wider Gaussian is barely
        constrained inside the data (it is still at e⁻² of its peak at ``r_max``) and would
        stretch the renderer's window far beyond the fitted range.

    Returns
    -------
    GaussianFit
        Peak-normalised components (``Σ a_g = 1``) and the relative residual.
    """
    from scipy.optimize import minimize, nnls

    r = np.asarray(r, dtype=np.float64)
    y = np.asarray(intensity, dtype=np.float64)
    if r.ndim != 1 or r.shape != y.shape:
        raise ValueError("r and intensity must be 1-D arrays of the same length")
    if int(n) != n or n < 1:
        raise ValueError(f"n must be a positive integer, got {n}")
    n = int(n)
    if r.size < 2 * n + 2:
        raise ValueError(f"need at least {2 * n + 2} samples to fit {n} Gaussians")
    if not (np.all(np.isfinite(r)) and np.all(np.isfinite(y))):
        raise ValueError("r and intensity must be finite")
    if r[0] < 0 or np.any(np.diff(r) <= 0):
        raise ValueError("r must be non-negative and strictly ascending")
    if not np.any(y != 0):
        raise ValueError("intensity is all zero")
    if max_sigma is not None and not max_sigma > 0:
        raise ValueError(f"max_sigma must be > 0 Å, got {max_sigma}")

    # Trapezoid quadrature weights of ∫ f 2πr dr on the given points.
    dr = np.diff(r)
    widths = np.zeros_like(r)
    widths[:-1] += 0.5 * dr
    widths[1:] += 0.5 * dr
    w = 2.0 * math.pi * r * widths
    sw = np.sqrt(w)
    target = sw * y
    norm2 = float(target @ target)
    if norm2 == 0.0:
        raise ValueError("intensity is zero wherever the 2πr weight is not")
    r2 = r * r
    r_max = float(r[-1])

    # Width scale and bounds. Below ~2 sample spacings a Gaussian would only touch r = 0,
    # where the 2πr weight vanishes, and could take any amplitude unseen.
    y_peak = float(np.max(y))
    hwhm = 0.5 * profile_fwhm(r, y) if y_peak > 0 else float("nan")
    s_ref = hwhm / math.sqrt(2.0 * math.log(2.0)) if math.isfinite(hwhm) else 0.5 * r_max
    s_lo = max(s_ref / 10.0, 2.0 * float(np.median(dr)), 1e-6)
    s_hi = max(0.5 * r_max if max_sigma is None else float(max_sigma), 2.0 * s_lo)
    log_lo, log_hi = math.log(s_lo), math.log(s_hi)

    if match_fwhm:
        if not (int(np.argmax(y)) == 0 and math.isfinite(hwhm)):
            raise ValueError("match_fwhm needs a profile that peaks at r[0] and falls below half")
        # Row μ Σ_g a_g (exp(-h²/(2σ_g²)) - ½) = 0: the fit's half maximum at the data's.
        mu = 1e4 * math.sqrt(norm2)
        rhs = np.concatenate([target, [0.0]])
    else:
        rhs = target

    def design(sigmas: np.ndarray) -> np.ndarray:
        g = sw[:, None] * np.exp(-0.5 * r2[:, None] / np.square(sigmas)[None, :])
        if match_fwhm:
            row = mu * (np.exp(-0.5 * hwhm * hwhm / np.square(sigmas)) - 0.5)
            g = np.vstack([g, row[None, :]])
        return g

    def cost(logs: np.ndarray) -> float:
        clipped = np.clip(logs, log_lo, log_hi)
        penalty = float(np.sum((logs - clipped) ** 2))
        g = design(np.exp(clipped))
        a, _ = nnls(g, rhs)
        res = g @ a - rhs
        return float(res @ res) / norm2 + penalty

    # Start 1: non-negative fit over a dense dictionary of widths, clustered into <= n.
    dictionary = np.geomspace(s_lo, s_hi, 64)
    coef = nnls(design(dictionary), rhs)[0]
    clusters: list[tuple[float, float]] = []  # (weight, log sigma)
    run: list[int] = []
    for i in list(range(dictionary.size)) + [-1]:
        if i >= 0 and coef[i] > 0:
            run.append(i)
            continue
        if run:
            c = coef[run] * dictionary[run] ** 2  # weight by 2-D integral
            clusters.append((float(c.sum()), float(np.average(np.log(dictionary[run]), weights=c))))
            run = []
    clusters.sort(reverse=True)
    seeds = sorted(ls for _, ls in clusters[:n])
    extra = 0
    while len(seeds) < n:  # spread the missing widths around the strongest one
        extra += 1
        base = seeds[0] if seeds else math.log(s_ref)
        seeds.append(min(max(base + 0.8 * extra * (-1) ** extra, log_lo), log_hi))
    starts = [np.array(sorted(seeds))]
    # Starts 2-3: geometric ladders from the half-width out.
    for top in (4.0, 10.0):
        hi = min(s_ref * top, s_hi)
        starts.append(np.log(np.geomspace(max(0.8 * s_ref, s_lo), max(hi, s_lo), n)))

    def descend(x0: np.ndarray, step: float) -> tuple[np.ndarray, float]:
        # Nelder-Mead from the simplex x0 + step e_i, until its vertices lie within 1e-7 in
        # ln σ (relative 1e-7 in width) of the best; fatol=inf: the size alone ends it.
        simplex = np.vstack([x0, x0 + step * np.eye(x0.size)])
        options = {"initial_simplex": simplex, "xatol": 1e-7, "fatol": math.inf, "maxfev": 2000}
        res = minimize(cost, x0, method="Nelder-Mead", options=options)
        return res.x, float(res.fun)

    best_x, best_f = None, math.inf
    for x0 in starts:
        x, fx = descend(x0, 0.25)
        x, fx = descend(x, 0.05)  # restart: escape a collapsed simplex
        if fx < best_f:
            best_x, best_f = x, fx
    assert best_x is not None

    sigmas = np.exp(np.clip(best_x, log_lo, log_hi))
    amps = nnls(design(sigmas), rhs)[0]
    keep = amps > 1e-12 * amps.sum()
    sigmas, amps = sigmas[keep], amps[keep]
    # Merge components of (numerically) equal width, keeping peak and integral.
    order = np.argsort(sigmas)
    sigmas, amps = sigmas[order], amps[order]
    merged: list[list[float]] = []
    for a, s in zip(amps, sigmas):
        if merged and s <= merged[-1][1] * (1.0 + 1e-3):
            a0, s0 = merged[-1]
            merged[-1] = [a0 + a, math.sqrt((a0 * s0 * s0 + a * s * s) / (a0 + a))]
        else:
            merged.append([float(a), float(s)])
    sigmas = np.array([s for _, s in merged])
    if len(merged) < keep.sum():
        amps = nnls(design(sigmas), rhs)[0]
    else:
        amps = np.array([a for a, _ in merged])
    g = design(sigmas)[: target.size]
    res = g @ amps - target
    residual = math.sqrt(float(res @ res) / norm2)
    scale = float(amps.sum())
    components = tuple(
        (float(a / scale), float(s))
        for a, s in sorted(zip(amps, sigmas), key=lambda t: t[1])
        if a > 0
    )
    return GaussianFit(components=components, residual=residual, r_max=r_max, scale=scale)


def fit_probe(
    optics: ProbeOptics,
    n: int = 3,
    *,
    r_max: float | None = None,
    n_points: int | None = None,
    match_fwhm: bool = False,
) -> GaussianFit:
    """Fit the probe of ``optics`` with at most ``n`` Gaussians.

    Parameters
    ----------
    optics : ProbeOptics
    n : int
        Largest number of Gaussians.
    r_max : float, optional
        Outer radius of the fit, Å. Default :func:`default_fit_radius`.
    n_points : int, optional
        Samples of the profile on ``[0, r_max]``; default 401, or more to keep the spacing
        below ``1 / (16 k_max)``.
    match_fwhm : bool
        Pin the fit's FWHM to the probe's; see :func:`fit_gaussians`.

    Returns
    -------
    GaussianFit
        At most ``n`` peak-normalised components (``Σ a_g = 1``), none wider than
        ``r_max / 2``; see :func:`fit_gaussians`.
    """
    if r_max is None:
        r_max = default_fit_radius(optics)
    if not r_max > 0:
        raise ValueError(f"r_max must be > 0 Å, got {r_max}")
    if n_points is None:
        n_points = max(401, min(20001, math.ceil(16.0 * optics.k_max * r_max) + 1))
    r = np.linspace(0.0, float(r_max), int(n_points))
    return fit_gaussians(r, probe_profile(optics, r), n=n, match_fwhm=match_fwhm)
