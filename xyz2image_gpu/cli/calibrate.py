"""``xyz2image-gpu calibrate``: fit sigma or probe, Z exponent and scale to a reference image."""

from __future__ import annotations

from pathlib import Path

import click

from .main import cli
from .options import HAADF_Z_EXPONENT

__all__ = [
    "calibrate",
]


# ---------------------------------------------------------------------------- calibrate


@cli.command(context_settings={"show_default": True},
             short_help="Fit sigma or probe, Z exponent and scale to a reference image.")
@click.argument("image", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("structure", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--pixel-size", type=click.FloatRange(min=0, min_open=True), required=True,
              help="Å per pixel of IMAGE.")
@click.option("--frame", type=click.IntRange(min=0), default=0, help="Frame of STRUCTURE.")
@click.option("--sigma", type=click.FloatRange(min=0, min_open=True), default=0.4,
              help="Starting Gaussian sigma, Å.")
@click.option("--z-exponent", type=float, default=HAADF_Z_EXPONENT,
              help="Starting (or fixed) Z exponent.")
@click.option("--fix-z", is_flag=True, help="Keep --z-exponent instead of fitting it.")
@click.option("--probe-kv", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Fit the source size of these optics instead of one Gaussian.")
@click.option("--probe-mrad", type=click.FloatRange(0, 200, min_open=True), default=20.0,
              help="Convergence semi-angle, mrad.")
@click.option("--probe-defocus", type=float, default=0.0, help="Defocus, Å (+ underfocus).")
@click.option("--probe-cs", type=float, default=0.0, help="Cs, mm.")
def calibrate(image: Path, structure: Path, pixel_size: float, frame: int, sigma: float,
              z_exponent: float, fix_z: bool, probe_kv: float | None, probe_mrad: float,
              probe_defocus: float, probe_cs: float) -> None:
    """Fit render settings to IMAGE (.npy or .tif, indexed [x, y]) of STRUCTURE (.xyz, atoms
    as imaged: beam along z), whose bounding box is centred in the image.

    Prints the fitted values, the Pearson r before and after, and the render options that
    reproduce the image (``--normalization fixed`` puts new images on its intensity scale).
    """
    import numpy as np

    from ..physics.calibrate import calibrate as fit
    from ..physics.probe import ProbeOptics
    from ..structures.model import StructureError
    from ..structures.xyz import read_xyz

    try:
        if image.suffix.lower() == ".npy":
            ref = np.load(image, allow_pickle=False)
        else:
            import tifffile

            ref = tifffile.imread(image)
        st = read_xyz(structure, frameshift=frame, maxframes=1)
    except (OSError, ValueError) as exc:  # StructureError is a ValueError
        raise click.ClickException(str(exc)) from None
    ref = np.squeeze(ref)
    optics = None
    if probe_kv is not None:
        optics = ProbeOptics(probe_kv, probe_mrad, probe_defocus, probe_cs, 0.0)
    try:
        result = fit(ref, st.frames[0].positions, st.frames[0].numbers, pixel_size,
                     sigma=sigma, z_exponent=z_exponent, fit_z=not fix_z, optics=optics)
    except (StructureError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    if result.optics is not None:
        click.echo(f"source size: {result.source_size:.4f} Å FWHM ({result.optics.describe()})")
    else:
        click.echo(f"gauss sigma: {result.gauss_sigma:.4f} Å")
    click.echo(f"z exponent: {result.z_exponent:.3f}")
    click.echo(f"intensity scale: {result.intensity_scale:.6g}, background "
               f"{result.background:.6g}, shift ({result.shift[0]:+.3f}, "
               f"{result.shift[1]:+.3f}) Å")
    click.echo(f"pearson r: {result.r_initial:.4f} -> {result.r_final:.4f}")
    click.echo(f"render options: {result.render_options()}")
