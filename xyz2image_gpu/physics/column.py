"""Column (channelling) correction: each atom's weight and widths from the column it sits in.

The convolution model images a column of n atoms as n single atoms; in a multislice
simulation the probe channels along the column, so a column's peak does not grow in
proportion to n and the column looks wider. The correction measures each atom's column by
``x_i``: the convolution image (every probe component of every atom) at atom i's own
position, in units of the peak of one isolated ``column_reference`` atom, about the number
of atoms in its column. Then

* atom i's weight is multiplied by ``1 + sum_k c_k x_i^k`` (``column_correction``);
* each of its probe components' squared widths grows by
  ``column_broadening * max(x_i - 1, 0)`` Å², keeping the component's integral.

In beam units (``normalization="beam"``) the atoms are counted, weighed only in part:
``x_i`` sums every atom's unweighted probe components (thermally smeared) times
``(w_j / w_ref)**column_weighting`` (``w`` the atoms' cross-sections), in units of the
reference atom's peak, so that a column of n Au atoms has ``x ≈ n`` and one of n Cu atoms
(``column_weighting`` 0.5) ``x ≈ 0.45 n``: the multislice references show channelling in
Cu, Pd and Au columns alike, far more than their cross-sections alone would give. Each
factor is divided by the atom's value alone, so an isolated atom keeps its cross-section.
:data:`CHANNELLING_FITS` holds the coefficients fitted for the optics of the references, which
``normalization="beam"`` applies by default (:func:`fitted_channelling`).

The pair sums that give ``x`` are kernels (:func:`..pipeline.kernels.column_values` on any
backend, :func:`..pipeline.kernels.column_values_compiled` on the CPU); this module holds the
rest: the reference peak and what ``x`` does to an atom.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..structures.elements import atomic_number
from .thermal import smear_components, thermal_widths

if TYPE_CHECKING:
    from ..pipeline.settings import RenderSettings

__all__ = [
    "ChannellingFit",
    "ColumnCorrection",
    "channelling_gap",
    "fitted_channelling",
    "fitted_optics",
    "reference_peak",
]


@dataclass(frozen=True)
class ChannellingFit:
    """A column correction fitted to multislice in beam units for one optics setting.

    Attributes
    ----------
    voltage_kv, convergence_mrad : float
        The optics of the references it was fitted on.
    detector_mrad : (float, float)
        Their detector's inner and outer angles.
    coefficients : tuple of float
        ``column_correction``.
    broadening : float
        ``column_broadening``, Å².
    weighting : float
        ``column_weighting``: how ``x`` counted the atoms.
    width : float
        ``column_width``, Å: the Gaussian ``x`` counted them with.
    """

    voltage_kv: float
    convergence_mrad: float
    detector_mrad: tuple[float, float]
    coefficients: tuple[float, ...]
    broadening: float
    weighting: float = 0.5
    width: float = 0.2


#: The fits (validation/cross_sections.py, results in validation/results/cross_sections.md):
#: Au, Pd and Cu columns of up to 8 atoms, aberration-free 20 mrad probes.
CHANNELLING_FITS: tuple[ChannellingFit, ...] = (
    ChannellingFit(200.0, 20.0, (70.0, 200.0), (0.3407, -0.0184), 0.004),
    ChannellingFit(300.0, 20.0, (70.0, 200.0), (0.3341, -0.018), 0.004),
    ChannellingFit(200.0, 20.0, (40.0, 100.0), (0.1652, -0.0089), 0.004),
    ChannellingFit(300.0, 20.0, (40.0, 100.0), (0.1668, -0.009), 0.004),
)
#: How far from a fit's optics it is used: kV between the fitted voltages (linear in the
#: coefficients) or within this of one; convergence within this; detector angles within
#: these fractions of the fitted ones.
VOLTAGE_REACH_KV = 20.0
CONVERGENCE_REACH_MRAD = 5.0
INNER_REACH = 0.25
OUTER_REACH = 0.35


def fitted_optics() -> str:
    """The optics of :data:`CHANNELLING_FITS`, in words (for messages)."""
    return "; ".join(sorted({f"{f.voltage_kv:g} kV, {f.convergence_mrad:g} mrad, "
                             f"{f.detector_mrad[0]:g}-{f.detector_mrad[1]:g} mrad"
                             for f in CHANNELLING_FITS}))


def channelling_gap(voltage_kv: float, convergence_mrad: float,
                    detector_mrad: Sequence[float]) -> str:
    """That no fit covers these optics, in words, naming the fitted ones (for messages)."""
    lo, hi = detector_mrad
    return (f"no channelling fit covers {voltage_kv:g} kV, {convergence_mrad:g} mrad, a "
            f"{lo:g}-{hi:g} mrad detector (fitted: {fitted_optics()}")


def fitted_channelling(voltage_kv: float, convergence_mrad: float,
                       detector_mrad: Sequence[float]) -> ChannellingFit | None:
    """The channelling correction for these optics, or None where no fit covers them.

    A fit covers a detector whose inner and outer angles are within :data:`INNER_REACH`
    and :data:`OUTER_REACH` (fractions) of its own, a convergence angle within
    :data:`CONVERGENCE_REACH_MRAD`, and a voltage within :data:`VOLTAGE_REACH_KV` of its
    own; between two fitted voltages for the same detector the coefficients are
    interpolated linearly in kV.
    """
    lo, hi = (float(a) for a in detector_mrad)
    near = [f for f in CHANNELLING_FITS
            if abs(f.convergence_mrad - convergence_mrad) <= CONVERGENCE_REACH_MRAD
            and abs(lo / f.detector_mrad[0] - 1) <= INNER_REACH
            and abs(hi / f.detector_mrad[1] - 1) <= OUTER_REACH]
    if not near:
        return None
    # the detector whose angles are closest (log ratios), then its voltages
    def distance(f: ChannellingFit) -> float:
        return abs(np.log(lo / f.detector_mrad[0])) + abs(np.log(hi / f.detector_mrad[1]))

    best = min(distance(f) for f in near)
    same = sorted((f for f in near if distance(f) == best), key=lambda f: f.voltage_kv)
    for f, g in zip(same, same[1:]):
        if f.voltage_kv < voltage_kv < g.voltage_kv:  # between two fits: interpolate
            t = (voltage_kv - f.voltage_kv) / (g.voltage_kv - f.voltage_kv)
            n = max(len(f.coefficients), len(g.coefficients))
            cf = f.coefficients + (0.0,) * (n - len(f.coefficients))
            cg = g.coefficients + (0.0,) * (n - len(g.coefficients))
            return ChannellingFit(
                float(voltage_kv), f.convergence_mrad, f.detector_mrad,
                tuple(round((1 - t) * x + t * y, 6) for x, y in zip(cf, cg)),
                round((1 - t) * f.broadening + t * g.broadening, 6), f.weighting, f.width)
    nearest = min(same, key=lambda f: abs(f.voltage_kv - voltage_kv))
    if abs(nearest.voltage_kv - voltage_kv) <= VOLTAGE_REACH_KV:
        return nearest
    return None


def reference_peak(
    element: str,
    *,
    z_exponent: float,
    components: Sequence[tuple[float, float]],
    thermal: bool = False,
    thermal_overrides: Sequence[tuple[str, float]] = (),
) -> float:
    """Peak height of one isolated atom of ``element``: the unit of ``x``.

    Parameters
    ----------
    element : str
        Element symbol of the reference atom.
    z_exponent : float
        Atoms are weighted by ``Z**z_exponent``.
    components : sequence of (amplitude, sigma_Å)
        The probe as a sum of Gaussians.
    thermal : bool
        Whether each component is smeared by the element's r.m.s. thermal displacement.
    thermal_overrides : sequence of (element, u_Å)
        Displacements that replace the built-in ones.

    Returns
    -------
    float
        The sum of the atom's component amplitudes, in the images' float units.
    """
    z = np.array([atomic_number(element)])
    weight = z.astype(np.float64) ** z_exponent
    if thermal:
        u = np.asarray(thermal_widths(z, dict(thermal_overrides)), dtype=np.float64)
    else:
        u = np.zeros(1)
    amps, _ = smear_components(components, u)
    return float((amps * weight[:, None]).sum())


@dataclass(frozen=True)
class ColumnCorrection:
    """The column correction of one set of render settings.

    Attributes
    ----------
    coefficients : tuple of float
        ``c_1, c_2, ...`` of the weight factor ``1 + sum_k c_k x^k``.
    broadening : float
        Growth of each component's squared width per atom beyond the first, Å².
    reference_peak : float
        Peak of one isolated reference atom (:func:`reference_peak`), float image units.
    width : float
        Beam units: ``x`` sums one Gaussian of this width (Å, ``column_width``) per atom
        instead of its probe components; 0: the probe's.
    isolated_unit : bool
        Absolute units (``normalization="beam"``): ``x`` counts atoms by their unweighted
        components (see the module), each atom's factor is divided by its value for that
        atom alone, ``1 + sum_k c_k x0^k`` with ``x0`` the atom's own unweighted peak over
        the reference peak, and the widths grow with ``x - x0``, so that an isolated atom of
        any element keeps its cross-section and only atoms in columns change. Otherwise
        (the relative normalizations absorb the constant) the factor is as given.
    """

    coefficients: tuple[float, ...]
    broadening: float
    reference_peak: float
    isolated_unit: bool = False
    width: float = 0.0

    @classmethod
    def from_settings(cls, settings: RenderSettings) -> ColumnCorrection | None:
        """The settings' correction, or None when they ask for none."""
        if not (settings.column_correction or settings.column_broadening):
            return None
        beam = settings.normalization == "beam"
        # beam units count atoms by their unweighted probe components (weight 1 each)
        peak = reference_peak(
            settings.column_reference, z_exponent=0.0 if beam else settings.z_exponent,
            components=settings.components, thermal=settings.thermal,
            thermal_overrides=settings.thermal_overrides,
        )
        return cls(tuple(settings.column_correction), float(settings.column_broadening), peak,
                   beam, float(settings.column_width) if beam else 0.0)

    def x_inputs(self, xp: Any, counted: Any, sig2: Any, voxel: Any) -> tuple[Any, Any]:
        """The (amplitudes, squared widths px²) whose pair sums at the atoms are ``x``:
        ``counted`` with the probe's widths, or with :attr:`width` each atom's peak (the
        sum of its components) as one Gaussian of that width."""
        if not self.width > 0:
            return counted, sig2
        peaks = counted.sum(axis=2, keepdims=True)
        s2 = ((self.width / voxel) ** 2).astype(sig2.dtype)[:, None, None]
        return peaks, xp.broadcast_to(s2, peaks.shape)

    @property
    def held_beyond(self) -> float | None:
        """Beam units: ``x`` past which the factor is held at its value there, the vertex
        ``-c1 / (2 c2)`` of a rising quadratic (``c1 > 0 > c2``): the fits saw columns of
        up to 8 atoms, and a longer column keeps its per-atom gain rather than losing it
        down the parabola. None: no hold (other normalizations, other polynomials)."""
        c = self.coefficients
        if self.isolated_unit and len(c) == 2 and c[0] > 0 > c[1]:
            return -c[0] / (2.0 * c[1])
        return None

    def _factor(self, xp: Any, x: Any, dtype: Any) -> Any:
        """``1 + sum_k c_k x^k``."""
        factor = xp.ones_like(x)
        power = xp.ones_like(x)
        for c in self.coefficients:
            power = power * x
            factor += dtype.type(c) * power
        return factor

    def apply(self, xp: Any, x: Any, amps: Any, sig2: Any, voxel: Any,
              counted: Any = None) -> tuple[Any, Any]:
        """Corrected amplitudes and squared widths of a batch's atoms.

        Parameters
        ----------
        xp : module
            ``numpy`` or ``cupy``.
        x : array, (B, N)
            The image at each atom's position, in the amplitudes' units (a kernel's
            ``column_values``); divided by the reference peak here, in place.
        amps : array, (B, N, G)
            Peak height of each atom's probe components.
        sig2 : array, (B, N, G)
            Squared widths of the components, px².
        voxel : array, (B,)
            Å per pixel of each image.
        counted : array, (B, N, G), optional
            The components ``x`` was summed from, where they are not ``amps`` (beam units:
            unweighted), for each atom's value alone.

        Returns
        -------
        amps, sig2 : arrays, (B, N, G)
            New amplitudes and squared widths (px²).
        """
        unit = amps.dtype.type(self.reference_peak)
        x /= unit
        held = self.held_beyond
        factor = self._factor(xp, x if held is None else xp.minimum(x, held), amps.dtype)
        alone = 1.0
        if self.isolated_unit:  # the atom's own peak: x of the same atom with no neighbours
            alone = (amps if counted is None else counted).sum(axis=2) / unit
            factor /= self._factor(xp, alone, amps.dtype)
        if self.broadening > 0:
            extra = (self.broadening / (voxel * voxel))[:, None] * xp.maximum(x - alone, 0)
            grown = sig2 + extra[:, :, None].astype(sig2.dtype)
            return amps * factor[:, :, None] * (sig2 / grown), grown
        return amps * factor[:, :, None], sig2
