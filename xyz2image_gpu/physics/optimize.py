"""Small derivative-free optimiser shared by the probe fit and calibration (NumPy only).

SciPy is not a core dependency; the fits here have two to five parameters, where a plain
Nelder–Mead simplex converges in a few hundred evaluations.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = [
    "nelder_mead",
]


def nelder_mead(
    f: Callable[[np.ndarray], float],
    x0: np.ndarray,
    step: float = 0.25,
    xtol: float = 1e-7,
    ftol: float = 1e-13,
    max_eval: int = 2000,
) -> tuple[np.ndarray, float]:
    """Minimise f from x0 with the Nelder-Mead simplex (standard coefficients 1, 2, ½, ½)."""
    n = x0.size
    simplex = np.vstack([x0] + [x0 + step * np.eye(n)[i] for i in range(n)])
    values = np.array([f(p) for p in simplex])
    evals = n + 1
    while evals < max_eval:
        order = np.argsort(values)
        simplex, values = simplex[order], values[order]
        spread = np.max(np.abs(simplex[1:] - simplex[0]))
        if spread <= xtol or values[-1] - values[0] <= ftol * (abs(values[0]) + 1e-300):
            break
        centroid = simplex[:-1].mean(axis=0)
        xr = centroid + (centroid - simplex[-1])
        fr = f(xr)
        evals += 1
        if fr < values[0]:
            xe = centroid + 2.0 * (centroid - simplex[-1])
            fe = f(xe)
            evals += 1
            simplex[-1], values[-1] = (xe, fe) if fe < fr else (xr, fr)
        elif fr < values[-2]:
            simplex[-1], values[-1] = xr, fr
        else:
            if fr < values[-1]:
                xc = centroid + 0.5 * (xr - centroid)
            else:
                xc = centroid + 0.5 * (simplex[-1] - centroid)
            fc = f(xc)
            evals += 1
            if fc < min(fr, values[-1]):
                simplex[-1], values[-1] = xc, fc
            else:
                simplex[1:] = simplex[0] + 0.5 * (simplex[1:] - simplex[0])
                values[1:] = [f(p) for p in simplex[1:]]
                evals += n
    best = int(np.argmin(values))
    return simplex[best], float(values[best])
