"""``xyz2image-gpu example``: copy the bundled example structures."""

from __future__ import annotations

from pathlib import Path

import click

from .main import cli

__all__ = [
    "example",
]


# ------------------------------------------------------------------------------ example


@cli.command(short_help="Copy the bundled example structures into OUTDIR.")
@click.argument("outdir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--overwrite", is_flag=True, help="Replace files of the same name.")
def example(outdir: Path, overwrite: bool) -> None:
    """Copy the bundled example structures (Au147, Pt309, Pd55@Au92) into OUTDIR.

    \b
    Example:
      xyz2image-gpu example structures && xyz2image-gpu render structures --n-rotation 64
    """
    from ..structures.examples import copy_examples

    try:
        copied = copy_examples(outdir, overwrite=overwrite)
    except FileExistsError as exc:
        raise click.ClickException(f"{exc}; use --overwrite to replace it") from None
    except OSError as exc:
        raise click.ClickException(f"cannot write to {outdir}: {exc.strerror or exc}") from None
    for path in copied:
        click.echo(str(path))
    click.echo(f"next: xyz2image-gpu render {outdir} --n-rotation 64", err=True)
