"""``xyz2image-gpu info``: the backend render would use, and why, with versions."""

from __future__ import annotations

import os
import platform
import sys
from typing import Any

import click

from ..backend import (
    BackendError,
    available_cores,
    cupy_status,
    get_backend,
)
from ..flags import NO_EXTENSION_ENV, set_flags
from .main import cli
from .options import device_option, package_version

__all__ = [
    "info",
]


# --------------------------------------------------------------------------------- info


@cli.command(short_help="Show the backend render would use, and versions.")
@device_option
def info(device: str) -> None:
    """Print which backend and device render would use, and why, plus versions."""
    import numpy
    import tifffile

    lines = [f"xyz2image-gpu {package_version()}",
             f"python {platform.python_version()} ({sys.executable})",
             f"numpy {numpy.__version__}", f"tifffile {tifffile.__version__}",
             f"click {_dist_version('click')}"]
    cupy, why = cupy_status()
    lines.append(f"cupy {cupy.__version__ if cupy is not None else 'not usable'}: {why}")
    lines.append(f"cpu cores: {available_cores()} usable of {os.cpu_count()}")
    from ..pipeline.kernels.compiled import compiled_kernel_available

    lines.append("compiled CPU kernel: " + (
        "built, used for Gaussian images on the CPU" if compiled_kernel_available()
        else f"not used (not built, or {NO_EXTENSION_ENV} is set): NumPy/BLAS path"))
    lines += [f"{name}={value}" for name, value in set_flags().items()]
    try:
        backend = get_backend(device)
        lines.append(f"device={device} -> backend {backend.name} "
                     f"({'GPU' if backend.is_gpu else 'CPU'}): {backend.reason}")
    except BackendError as exc:
        backend = None
        lines.append(f"device={device} -> unavailable: {exc}")
    lines.append(_zarr_line(backend))
    click.echo("\n".join(lines))


def _zarr_line(backend: Any) -> str:
    """``--format zarr``: whether it works here, and where its chunks would be compressed."""
    from ..backend import zarr_gpu_codec
    from ..output.zarr_store import ZarrUnavailableError, require_zarr

    try:
        zarr = require_zarr()
    except ZarrUnavailableError as exc:
        return f"zarr: not usable: {exc}"
    where = f"; {zarr_gpu_codec(backend, 'zstd')[1]}" if backend is not None else ""
    return f"zarr {zarr.__version__}: --format zarr available{where}"


def _dist_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"
