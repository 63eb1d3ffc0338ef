"""The ``xyz2image-gpu`` command line, one module per command.

``main`` is the console-script entry point; ``python -m xyz2image_gpu.cli`` runs it too.
:mod:`.options` holds the option groups and parameter types the commands share.
"""

from __future__ import annotations

from . import calibrate, example, info, preview, render  # noqa: F401  (registers commands)
from .main import cli, main

__all__ = ["cli", "main"]
