"""Calibrate render settings against a reference image (multislice or experiment).

Given an image, the structure it shows (positions as imaged: beam along z, image axis 0 = x,
axis 1 = y, like this project's outputs) and its pixel size, fit by least squares

    image ≈ scale * sum_a Z_a^n * probe(r - r_a - shift) + background

over the probe width (one Gaussian of ``sigma`` Å, or an optics probe with a fitted source
size: the coherent probe's Gaussians convolved with the source Gaussian), the Z exponent
``n`` and a sub-pixel ``shift`` (Nelder-Mead, :func:`scipy.optimize.minimize`); ``scale``
and ``background`` are solved linearly at every step. The field of view is the one of
``framing="fixed"``: the structure's bounding box centred in the image. The result prints as
``render`` options.

**Detector sensitivity** (``detector_mrad`` given, with the optics): the model is the
absolute one of ``normalization="beam"``, each atom weighted by its cross-section for that
detector (:mod:`.cross_section`) instead of ``Z^n``, so ``scale`` is the detector's
sensitivity (image units per unit fraction of the incident beam) and ``background`` its
offset: ``(image - background) / scale`` puts an experimental image in beam fractions, to
compare with the absolute model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import minimize

from ..pipeline.kernels.gaussian import axis_profiles, column_values
from .column import ColumnCorrection
from .constants import FWHM_PER_SIGMA
from .probe import ProbeOptics, fit_probe
from .thermal import smear_components

__all__ = [
    "CalibrationResult",
    "calibrate",
    "model_image",
    "pearson_r",
]


def pearson_r(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two images."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    a = a - a.mean()
    b = b - b.mean()
    denom = math.sqrt(float(a @ a) * float(b @ b))
    return float(a @ b) / denom if denom > 0 else 0.0


def model_image(
    positions: np.ndarray,
    numbers: np.ndarray,
    shape: tuple[int, int],
    pixel_size: float,
    components: tuple[tuple[float, float], ...],
    z_exponent: float,
    shift: tuple[float, float] = (0.0, 0.0),
    weights: np.ndarray | None = None,
    column: ColumnCorrection | None = None,
    count_scale: np.ndarray | None = None,
) -> np.ndarray:
    """Unscaled model image (float64, ``shape``): the atoms' probe sums, weights Z^n (or
    ``weights``, one per atom, when given).

    The rotated bounding box's centre sits at pixel ((H-1)/2, (W-1)/2), as with
    ``framing="fixed"``; ``shift`` (Å) moves the atoms. ``column``: each atom's weight and
    widths corrected for its column, as the renderer does, counting the atoms by their
    amplitudes times ``count_scale`` (N,) where given (beam units; see
    :attr:`..pipeline.frames.FrameTable.count_scale`).
    """
    pos = np.asarray(positions, dtype=np.float64)
    centre = (pos.min(axis=0) + pos.max(axis=0)) / 2.0
    h, w = shape
    cx = (pos[:, 0] - centre[0] + shift[0]) / pixel_size + (h - 1) / 2.0
    cy = (pos[:, 1] - centre[1] + shift[1]) / pixel_size + (w - 1) / 2.0
    if weights is None:
        weights = np.asarray(numbers, dtype=np.float64) ** z_exponent
    weights = np.asarray(weights, dtype=np.float64)
    comps = np.asarray(components, dtype=np.float64).reshape(-1, 2)
    amps = comps[None, None, :, 0] * weights[None, :, None]  # (1, N, G)
    sig2 = np.broadcast_to((comps[:, 1] / pixel_size) ** 2, amps.shape).copy()  # px²
    if column is not None:  # as the renderer: beam units count atoms unweighted
        coords = np.stack([cx, cy], axis=-1)[None]
        counted = amps if count_scale is None else amps * count_scale[None, :, None]
        x = column_values(np, coords, *column.x_inputs(np, counted, sig2,
                                                       np.array([pixel_size])),
                          max_elements=1 << 24)
        amps, sig2 = column.apply(np, x, amps, sig2, np.array([pixel_size]), counted)
    image = np.zeros(shape)
    for g in range(comps.shape[0]):
        s = np.sqrt(sig2[:, :, g])  # (1, N) px
        gx = axis_profiles(np, cx[None, :], s, h)[0]  # (N, H)
        gy = axis_profiles(np, cy[None, :], s, w)[0]  # (N, W)
        image += (gx * amps[0, :, g][:, None]).T @ gy
    return image


@dataclass
class CalibrationResult:
    """Fitted settings and how well they match.

    Attributes
    ----------
    gauss_sigma : float or None
        Fitted Gaussian width, Å (sigma mode).
    source_size : float or None
        Fitted source size FWHM, Å (optics mode).
    optics : ProbeOptics or None
        The optics with the fitted source size (optics mode).
    components : tuple of (amplitude, sigma Å)
        The fitted probe as Gaussians.
    z_exponent : float
    intensity_scale : float
        Reference units per unit of summed intensity (an atom of weight 1 peaks at 1):
        ``--normalization fixed --intensity-scale`` for images on the reference's scale.
        With ``detector_mrad``: the detector's sensitivity, reference units per unit
        fraction of the incident beam.
    background : float
        Constant offset of the reference, its units.
    shift : (float, float)
        Fitted displacement of the atoms, Å.
    r_initial, r_final : float
        Pearson r of the starting and the fitted model against the reference.
    detector_mrad : (float, float) or None
        The detector of a sensitivity fit.
    channelling : bool
        Whether a sensitivity fit's model had the default channelling correction.
    """

    gauss_sigma: float | None
    source_size: float | None
    optics: ProbeOptics | None
    components: tuple[tuple[float, float], ...]
    z_exponent: float
    intensity_scale: float
    background: float
    shift: tuple[float, float]
    r_initial: float
    r_final: float
    detector_mrad: tuple[float, float] | None = None
    channelling: bool = True

    def render_options(self) -> str:
        """The ``xyz2image-gpu render`` options that reproduce the fit."""
        if self.optics is not None:
            o = self.optics
            probe = (f"--probe-kv {o.voltage_kv:g} --probe-mrad {o.convergence_mrad:g} "
                     f"--probe-defocus {o.defocus:g} --probe-cs {o.cs_mm:g} "
                     f"--probe-source-size {o.source_size:.4g}")
        else:
            probe = f"--gauss-sigma {self.gauss_sigma:.4g}"
        if self.detector_mrad is not None:  # absolute: beam fractions, or the detector's units
            lo, hi = self.detector_mrad
            off = "" if self.channelling else " --no-channelling"
            return f"{probe} --normalization beam --detector-mrad {lo:g},{hi:g}{off}"
        return (f"{probe} --z-exponent {self.z_exponent:.3f} "
                f"--normalization fixed --intensity-scale {self.intensity_scale:.6g}")


def _linear_fit(model: np.ndarray, image: np.ndarray) -> tuple[float, float, float]:
    """Least-squares scale and background of ``image ≈ scale * model + bg``; and the SSE."""
    a = np.stack([model.ravel(), np.ones(model.size)], axis=1)
    coef, *_ = np.linalg.lstsq(a, image.ravel(), rcond=None)
    resid = a @ coef - image.ravel()
    return float(coef[0]), float(coef[1]), float(resid @ resid)


def calibrate(
    image: Any,
    positions: Any,
    numbers: Any,
    pixel_size: float,
    *,
    sigma: float = 0.4,
    z_exponent: float = 1.7,
    fit_z: bool = True,
    optics: ProbeOptics | None = None,
    probe_gaussians: int = 3,
    detector_mrad: tuple[float, float] | None = None,
    channelling: bool = True,
) -> CalibrationResult:
    """Fit probe width, Z exponent, intensity scale, background and shift to ``image``.

    Parameters
    ----------
    image : (H, W) array
        The reference, indexed [x, y].
    positions : (N, 3) array
        Atom positions as imaged, Å (beam along z).
    numbers : (N,) array
        Atomic numbers.
    pixel_size : float
        Å per pixel of the reference.
    sigma, z_exponent : float
        Starting values (Å; exponent).
    fit_z : bool
        Fit the Z exponent (else keep ``z_exponent``). With a single element the exponent
        only scales the image, so it is never fitted.
    optics : ProbeOptics, optional
        Fit the source size of these optics instead of a single Gaussian's sigma.
    probe_gaussians : int
        Gaussians in the optics probe fit.
    detector_mrad : (float, float), optional
        Fit the detector's sensitivity instead: atoms weighted by their cross-sections for
        this annular detector (mrad) and ``optics`` (required), in beam fractions; the Z
        exponent is not used.
    channelling : bool
        With ``detector_mrad``: apply the column correction that ``render --normalization
        beam`` applies by default for these optics (where a fit covers them;
        :func:`.column.fitted_channelling`), so that the sensitivity maps the image onto
        the same absolute model.
    """
    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 2:
        raise ValueError(f"the reference must be one 2-D image, got shape {img.shape}")
    if not np.isfinite(img).all():
        raise ValueError(f"the reference has {int((~np.isfinite(img)).sum())} NaN or "
                         "infinite pixels: nothing can be fitted to them")
    if not img.max() > img.min():
        raise ValueError("the reference is blank (every pixel equal): nothing can be fitted")
    if not pixel_size > 0:
        raise ValueError("pixel_size must be > 0 Å")
    pos = np.asarray(positions, dtype=np.float64)
    num = np.asarray(numbers)
    if pos.ndim != 2 or pos.shape[1] != 3 or len(pos) != len(num):
        raise ValueError("positions must be (N, 3) with one atomic number per atom")
    if len(np.unique(num)) < 2:
        fit_z = False  # one element: Z^n is a constant factor, absorbed by the scale
    if detector_mrad is not None:
        if optics is None:
            raise ValueError("a detector's sensitivity needs the probe's optics (the "
                             "cross-sections depend on the voltage and the convergence angle)")
        lo, hi = (float(a) for a in detector_mrad)
        if not 0 <= lo < hi:
            raise ValueError(f"detector_mrad must be (inner, outer) with 0 <= inner < outer, "
                             f"got {detector_mrad}")
        detector_mrad = (lo, hi)
        fit_z = False  # the cross-sections weigh the atoms

    coherent = None
    if optics is not None:  # the source blur is a Gaussian convolution of the coherent probe
        coherent = fit_probe(ProbeOptics(optics.voltage_kv, optics.convergence_mrad,
                                         optics.defocus, optics.cs_mm, 0.0), probe_gaussians)

    def components_of(width: float) -> tuple[tuple[float, float], ...]:
        if coherent is None:
            return ((1.0, width),)
        amps, sigmas = smear_components(coherent.components, width / FWHM_PER_SIGMA)
        return tuple(zip(amps.tolist(), sigmas.tolist()))

    start_width = sigma if optics is None else max(optics.source_size, 0.3)

    def unpack(x: np.ndarray) -> tuple[float, float, tuple[float, float]]:
        width = math.exp(float(x[0]))
        n = float(x[1]) if fit_z else z_exponent
        return width, n, (float(x[-2]), float(x[-1]))

    def weights_of(components: tuple[tuple[float, float], ...]) -> np.ndarray | None:
        if detector_mrad is None:
            return None
        from .cross_section import beam_weights

        return beam_weights(num, optics.voltage_kv, optics.convergence_mrad, detector_mrad,
                            components)

    def column_of(components: tuple[tuple[float, float], ...],
                  weights: np.ndarray | None) -> dict[str, Any]:
        """The renderer's column correction for these components (``weights``: the atoms'
        beam weights of :func:`weights_of`), as model_image takes."""
        if detector_mrad is None or not channelling:
            return {}
        from ..pipeline.frames import column_count_scale
        from ..pipeline.settings import RenderSettings

        settings = RenderSettings(
            normalization="beam", voltage_kv=optics.voltage_kv,
            convergence_mrad=optics.convergence_mrad, detector_mrad=detector_mrad,
            probe=components)
        column = ColumnCorrection.from_settings(settings)
        if column is None:
            return {}
        return {"column": column, "count_scale": column_count_scale(settings, num, weights)}

    def model(x: np.ndarray) -> np.ndarray:
        width, n, shift = unpack(x)
        components = components_of(width)
        weights = weights_of(components)
        return model_image(pos, num, img.shape, pixel_size, components, n, shift, weights,
                           **column_of(components, weights))

    def cost(x: np.ndarray) -> float:
        return _linear_fit(model(x), img)[2]

    def descend(x0: np.ndarray, step: float) -> np.ndarray:
        # Nelder-Mead from the simplex x0 + step e_i, until its vertices lie within 1e-7 of
        # the best (fatol=inf: the size alone ends it) or after 600 images.
        simplex = np.vstack([x0, x0 + step * np.eye(x0.size)])
        options = {"initial_simplex": simplex, "xatol": 1e-7, "fatol": math.inf, "maxfev": 600}
        return minimize(cost, x0, method="Nelder-Mead", options=options).x

    x0 = np.array([math.log(start_width)] + ([z_exponent] if fit_z else []) + [0.0, 0.0])
    r_initial = pearson_r(model(x0), img)
    x = descend(x0, 0.2)
    x = descend(x, 0.02)  # restart from a fresh simplex
    width, n, shift = unpack(x)
    fitted_optics = None
    components = components_of(width)
    if optics is not None:  # report the probe that render will use for these optics
        fitted_optics = ProbeOptics(optics.voltage_kv, optics.convergence_mrad,
                                    optics.defocus, optics.cs_mm, width)
        components = fit_probe(fitted_optics, probe_gaussians).components
    weights = weights_of(components)
    best = model_image(pos, num, img.shape, pixel_size, components, n, shift, weights,
                       **column_of(components, weights))
    scale, background, _ = _linear_fit(best, img)
    if not scale > 0:
        raise ValueError(
            f"the best fit needs a negative intensity scale ({scale:.4g}): the image's "
            "contrast is inverted against the model (atoms dark, e.g. bright field), or it "
            "does not show this structure")
    return CalibrationResult(
        gauss_sigma=None if optics is not None else width,
        source_size=width if optics is not None else None,
        optics=fitted_optics,
        components=components,
        z_exponent=n,
        intensity_scale=scale,
        background=background,
        shift=shift,
        r_initial=r_initial,
        r_final=pearson_r(best, img),
        detector_mrad=detector_mrad,
        channelling=channelling,
    )
