"""``xyz2image-gpu calibrate``: fit sigma or probe, Z exponent and scale to a reference image."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import click

from ..pipeline.settings import HAADF_Z_EXPONENT, RenderSettings
from .main import cli
from .options import DetectorType, optics_options, probe_optics

__all__ = [
    "calibrate",
]


# ---------------------------------------------------------------------------- calibrate


#: Below this Pearson r the fit is reported as meaningless (a structure or image mix-up).
POOR_FIT_R = 0.5


@cli.command(context_settings={"show_default": True},
             short_help="Fit sigma or probe, Z exponent and scale to a reference image.")
@click.argument("image", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("structure", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--pixel-size", type=click.FloatRange(min=0, min_open=True), required=True,
              help="Å per pixel of IMAGE.")
@click.option("--frame", type=click.IntRange(min=0), default=0, help="Frame of STRUCTURE.")
@click.option("--sigma", type=click.FloatRange(min=0, min_open=True),
              default=RenderSettings().gauss_sigma, help="Starting Gaussian sigma, Å.")
@click.option("--z-exponent", type=float, default=HAADF_Z_EXPONENT,
              help="Starting (or fixed) Z exponent.")
@click.option("--fix-z", is_flag=True, help="Keep --z-exponent instead of fitting it.")
@click.option("--detector-mrad", type=DetectorType(), default=None, show_default="none",
              help="Fit the sensitivity of this annular detector (INNER,OUTER mrad; needs "
                   "--probe-kv): IMAGE in its units against the absolute model in beam "
                   "fractions.")
@click.option("--channelling/--no-channelling", default=True, show_default=True,
              help="With --detector-mrad: the absolute model with the channelling "
                   "correction that render --normalization beam applies by default.")
@optics_options("Fit the source size of these optics (accelerating voltage, kV) instead of "
                "one Gaussian.")
def calibrate(image: Path, structure: Path, pixel_size: float, frame: int, sigma: float,
              z_exponent: float, fix_z: bool, detector_mrad: tuple[float, float] | None,
              channelling: bool, **optics: Any) -> None:
    """Fit render settings to IMAGE (.npy or .tif, indexed [x, y]) of STRUCTURE (.xyz, atoms
    as imaged: beam along z), whose bounding box is centred in the image.

    Prints the fitted values, the Pearson r before and after, and the render options that
    reproduce the image (``--normalization fixed`` puts new images on its intensity scale).
    With --detector-mrad it fits the detector's sensitivity instead: IMAGE's units per unit
    fraction of the incident beam, and its background, so that (IMAGE - background) /
    sensitivity is in the units of ``render --normalization beam``.
    """
    import numpy as np

    from ..physics.calibrate import calibrate as fit
    from ..structures.model import StructureError
    from ..structures.xyz import read_xyz

    try:
        if image.suffix.lower() == ".npy":
            ref = np.load(image, allow_pickle=False)
        else:
            import tifffile

            ref = tifffile.imread(image)
    except (OSError, ValueError, pickle.UnpicklingError) as exc:  # TiffFileError: ValueError
        kind = ".npy" if image.suffix.lower() == ".npy" else ".tif"
        raise click.ClickException(f"{image}: cannot be read as a {kind} image "
                                   f"({exc})") from None
    ref = np.squeeze(ref)
    if ref.ndim != 2:
        raise click.ClickException(f"{image}: the reference must be one 2-D image, got shape "
                                   f"{ref.shape}")
    try:
        st = read_xyz(structure, frameshift=frame, maxframes=1)
        if st.frames[0].index != frame:  # read_xyz keeps the last frame past the end
            raise click.BadParameter(f"{structure} has no frame {frame} (its last is "
                                     f"{st.frames[0].index})", param_hint="'--frame'")
    except (OSError, ValueError) as exc:  # StructureError is a ValueError
        raise click.ClickException(str(exc)) from None
    if not channelling and detector_mrad is None:
        raise click.UsageError("--no-channelling applies with --detector-mrad only (the "
                               "relative fit uses no column correction)")
    if detector_mrad is not None and optics["probe_kv"] is None:
        raise click.UsageError("--detector-mrad needs the probe's optics: --probe-kv (and "
                               "--probe-mrad, default 20)")
    if detector_mrad is not None and detector_mrad[0] < optics["probe_mrad"]:
        raise click.BadParameter(
            f"an annular dark-field detector: its inner angle ({detector_mrad[0]:g} mrad) must "
            f"be at least the convergence angle (--probe-mrad {optics['probe_mrad']:g})",
            param_hint="'--detector-mrad'")
    try:
        result = fit(ref, st.frames[0].positions, st.frames[0].numbers, pixel_size,
                     sigma=sigma, z_exponent=z_exponent, fit_z=not fix_z,
                     optics=probe_optics(optics), detector_mrad=detector_mrad,
                     channelling=channelling)
    except (StructureError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    if result.optics is not None:
        click.echo(f"source size: {result.source_size:.4f} Å FWHM ({result.optics.describe()})")
    else:
        click.echo(f"gauss sigma: {result.gauss_sigma:.4f} Å")
    shift = f"shift ({result.shift[0]:+.3f}, {result.shift[1]:+.3f}) Å"
    if detector_mrad is not None:
        click.echo(f"detector sensitivity: {result.intensity_scale:.6g} per unit fraction of "
                   f"the beam, background {result.background:.6g}, {shift}")
        click.echo(f"in beam fractions: (image - {result.background:.6g}) / "
                   f"{result.intensity_scale:.6g}")
    else:
        click.echo(f"z exponent: {result.z_exponent:.3f}")
        click.echo(f"intensity scale: {result.intensity_scale:.6g}, background "
                   f"{result.background:.6g}, {shift}")
    click.echo(f"pearson r: {result.r_initial:.4f} -> {result.r_final:.4f}")
    if result.r_final < POOR_FIT_R:
        click.echo(f"warning: the best model correlates with {image.name} at r = "
                   f"{result.r_final:.2f} only (below {POOR_FIT_R}): it does not look like "
                   f"{structure.name} as imaged, and the fitted values mean little", err=True)
    click.echo(f"render options: {result.render_options()}")
