"""The ``xyz2image-gpu`` command group and its console-script entry point."""

from __future__ import annotations

from typing import Any

import click

from ..flags import ENV_PREFIX
from .options import package_version

__all__ = [
    "cli",
    "main",
]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100,
                                "auto_envvar_prefix": ENV_PREFIX})
@click.version_option(package_version(), "--version", prog_name="xyz2image-gpu")
def cli() -> None:
    """Simulated ADF-STEM images (Gaussian approximation) and 3D labels from .xyz structures,
    batched on the GPU (CuPy) or the CPU (NumPy).

    \b
    Quick start:
      xyz2image-gpu example structures
      xyz2image-gpu render structures --n-rotation 64
      xyz2image-gpu preview structures/au147_icosahedron.xyz -o au147.png
    """


def main(argv: list[str] | None = None) -> Any:
    """Console-script entry point (``xyz2image-gpu``)."""
    return cli.main(args=argv, prog_name="xyz2image-gpu")


if __name__ == "__main__":
    main()
