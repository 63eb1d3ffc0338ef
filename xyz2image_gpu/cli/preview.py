"""``xyz2image-gpu preview``: a PNG montage of a few orientations."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..backend import BackendError
from .main import cli
from .options import device_option, geometry_options, make_settings

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
@click.option("--seed", type=click.IntRange(min=0), default=0,
              help="Seed of the random rotations (and augmentations).")
@geometry_options(legacy=False)
@click.option("--frame", type=click.IntRange(min=0), default=0, help="Frame of the file shown.")
@device_option
def preview(file: Path, output: Path, n_images: int, seed: int, frame: int, device: str,
            **geometry: Any) -> None:
    """Write a PNG montage of FILE in a few orientations: gaussian_2d, binary_2d, atoms.

    \b
    Example:
      xyz2image-gpu preview structures/au147_icosahedron.xyz -o au147.png --n 4
    """
    from ..output.preview import PreviewError, write_preview
    from ..structures.model import StructureError

    settings = make_settings(**geometry)
    try:
        path = write_preview(file, output, n_images=n_images, seed=seed, settings=settings,
                             frame=frame, device=device)
    except (PreviewError, StructureError, BackendError) as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"cannot write {output}: {exc.strerror or exc}") from None
    click.echo(str(path))
