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
    "ColumnCorrection",
    "reference_peak",
]


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
    isolated_unit : bool
        Absolute units (``normalization="beam"``): each atom's factor is divided by its value
        for that atom alone, ``1 + sum_k c_k x0^k`` with ``x0`` the atom's own peak over
        the reference peak, and the widths grow with ``x - x0``, so that an isolated atom of
        any element keeps its cross-section and only atoms in columns change. Otherwise
        (the relative normalizations absorb the constant) the factor is as given.
    """

    coefficients: tuple[float, ...]
    broadening: float
    reference_peak: float
    isolated_unit: bool = False

    @classmethod
    def from_settings(cls, settings: RenderSettings) -> ColumnCorrection | None:
        """The settings' correction, or None when they ask for none."""
        if not (settings.column_correction or settings.column_broadening):
            return None
        beam = settings.normalization == "beam"
        peak = reference_peak(
            settings.column_reference, z_exponent=0.0 if beam else settings.z_exponent,
            components=settings.components, thermal=settings.thermal,
            thermal_overrides=settings.thermal_overrides,
        )
        if beam:  # the reference atom weighted as the atoms are: in beam fractions
            from .cross_section import beam_weights

            peak *= float(beam_weights(
                np.array([atomic_number(settings.column_reference)]), settings.voltage_kv,
                settings.convergence_mrad, settings.detector, settings.components)[0])
        return cls(tuple(settings.column_correction), float(settings.column_broadening), peak,
                   beam)

    def _factor(self, xp: Any, x: Any, dtype: Any) -> Any:
        """``1 + sum_k c_k x^k``."""
        factor = xp.ones_like(x)
        power = xp.ones_like(x)
        for c in self.coefficients:
            power = power * x
            factor += dtype.type(c) * power
        return factor

    def apply(self, xp: Any, x: Any, amps: Any, sig2: Any, voxel: Any) -> tuple[Any, Any]:
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

        Returns
        -------
        amps, sig2 : arrays, (B, N, G)
            New amplitudes and squared widths (px²).
        """
        unit = amps.dtype.type(self.reference_peak)
        x /= unit
        factor = self._factor(xp, x, amps.dtype)
        alone = 1.0
        if self.isolated_unit:  # the atom's own peak: x of the same atom with no neighbours
            alone = amps.sum(axis=2) / unit
            factor /= self._factor(xp, alone, amps.dtype)
        if self.broadening > 0:
            extra = (self.broadening / (voxel * voxel))[:, None] * xp.maximum(x - alone, 0)
            grown = sig2 + extra[:, :, None].astype(sig2.dtype)
            return amps * factor[:, :, None] * (sig2 / grown), grown
        return amps * factor[:, :, None], sig2
