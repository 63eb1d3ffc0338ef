"""The ``xyz2image-gpu`` command group and its console-script entry point."""

from __future__ import annotations

from types import MethodType
from typing import Any

import click
from click.core import ParameterSource

from ..flags import ENV_PREFIX
from .options import package_version

__all__ = [
    "cli",
    "main",
]


class _Group(click.Group):
    """The command group: an error in a value read from the environment names the variable.

    click reads ``XYZ2IMAGE_GPU_<COMMAND>_<OPTION>`` for every option (``auto_envvar_prefix``)
    but names only explicitly declared variables in its error messages, so a bad value in the
    environment would be reported as if it had been typed. Each option's error hint gains the
    variable's name when its value came from there. click also names the variable after the
    option's parameter (``--format`` stores ``output_format``): where the two differ, the
    variable named after the option as typed is read first, then that one.
    """

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            prefix = f"{ENV_PREFIX}_{cmd_name.replace('-', '_').upper()}"
            for param in command.params:
                if isinstance(param, click.Option) and param.name and \
                        not getattr(param, "_names_envvar", False):
                    if param.envvar is None:
                        typed = max(param.opts, key=len).lstrip("-").replace("-", "_").upper()
                        names = dict.fromkeys([f"{prefix}_{typed}",
                                               f"{prefix}_{param.name.upper()}"])
                        param.envvar = list(names) if len(names) > 1 else None
                    variable = param.envvar or f"{prefix}_{param.name.upper()}"
                    param.get_error_hint = MethodType(_env_hint(variable), param)
                    param._names_envvar = True
        return command


def _env_hint(variable: Any) -> Any:
    def get_error_hint(self: click.Option, ctx: click.Context | None) -> str:
        hint = click.Option.get_error_hint(self, ctx)
        if ctx is not None and "env var" not in hint and \
                ctx.get_parameter_source(self.name) is ParameterSource.ENVIRONMENT:
            names = [variable] if isinstance(variable, str) else list(variable)
            hint += " (env var: " + ", ".join(f"'{v}'" for v in names) + ")"
        return hint
    return get_error_hint


@click.group(cls=_Group,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100,
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
