"""``xyz2image-gpu preview``: a PNG montage of a few orientations."""

from __future__ import annotations

from pathlib import Path

import click

from ..backend import (
    DEVICES,
    BackendError,
)
from .main import cli
from .options import HAADF_Z_EXPONENT, _settings

__all__ = [
    "preview",
]


# ------------------------------------------------------------------------------ preview


@cli.command(context_settings={"show_default": True},
             short_help="Write a PNG montage of a few orientations.")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("preview.png"), help="PNG to write.")
@click.option("--n", "n_images", type=click.IntRange(1, 64), default=4,
              help="Orientations shown (rows).")
@click.option("--seed", type=int, default=0, help="Seed of the random rotations.")
@click.option("--edgesize", type=click.IntRange(min=2), default=128, help="Pixels per edge.")
@click.option("--gauss-sigma", type=click.FloatRange(min=0, min_open=True), default=0.4,
              help="Gaussian sigma, Å.")
@click.option("--padxyz", type=click.FloatRange(min=0), default=1.5, help="Margin, Å.")
@click.option("--binary-radius", type=click.FloatRange(min=0, min_open=True), default=1.0,
              help="Atom radius in binary_2d, Å.")
@click.option("--z-exponent", type=float, default=HAADF_Z_EXPONENT,
              help="Weight atoms by Z**z (see render --help).")
@click.option("--frame", type=click.IntRange(min=0), default=0, help="Frame of the file shown.")
@click.option("--device", type=click.Choice(list(DEVICES)), default="auto",
              envvar="XYZ2IMAGE_GPU_DEVICE")
def preview(file: Path, output: Path, n_images: int, seed: int, edgesize: int,
            gauss_sigma: float, padxyz: float, binary_radius: float, z_exponent: float,
            frame: int, device: str) -> None:
    """Write a PNG montage of FILE in a few orientations: gaussian_2d, binary_2d, atoms.

    \b
    Example:
      xyz2image-gpu preview structures/au147_icosahedron.xyz -o au147.png --n 4
    """
    from ..output.preview import PreviewError, write_preview
    from ..structures.model import StructureError

    settings = _settings(edgesize=edgesize, gauss_sigma=gauss_sigma, padxyz=padxyz,
                         binary_radius=binary_radius, z_exponent=z_exponent)
    try:
        path = write_preview(file, output, n_images=n_images, seed=seed, settings=settings,
                             frame=frame, device=device)
    except (PreviewError, StructureError, BackendError) as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"cannot write {output}: {exc.strerror or exc}") from None
    click.echo(str(path))
