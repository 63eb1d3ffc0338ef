"""Physical constants of the physics modules, in SI units, from one place.

CODATA 2018 values (exact where the 2019 SI fixes them). Not :mod:`scipy.constants`: its
CODATA edition follows the SciPy release (SciPy 1.17 has CODATA 2022, whose electron mass and
atomic mass constant differ from 2018's in the 10th digit), and these values fix the fitted
probe, hence image bytes, whatever SciPy is installed.
"""

from __future__ import annotations

import math

__all__ = [
    "ATOMIC_MASS_UNIT",
    "BOLTZMANN",
    "ELECTRON_MASS",
    "ELEMENTARY_CHARGE",
    "FWHM_PER_SIGMA",
    "HBAR",
    "PLANCK",
    "SPEED_OF_LIGHT",
]

#: Planck constant h, J s (exact).
PLANCK = 6.62607015e-34
#: Reduced Planck constant ħ = h / 2π, J s (CODATA 2018 rounded value).
HBAR = 1.054571817e-34
#: Electron rest mass m₀, kg (CODATA 2018).
ELECTRON_MASS = 9.1093837015e-31
#: Elementary charge e, C (exact).
ELEMENTARY_CHARGE = 1.602176634e-19
#: Speed of light in vacuum c, m / s (exact).
SPEED_OF_LIGHT = 299792458.0
#: Boltzmann constant k_B, J / K (exact).
BOLTZMANN = 1.380649e-23
#: Atomic mass constant u, kg (CODATA 2018).
ATOMIC_MASS_UNIT = 1.66053906660e-27

#: FWHM of a Gaussian in units of its standard deviation, 2 sqrt(2 ln 2) ≈ 2.3548.
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
