"""The environment variables the package reads, named and read here and nowhere else.

``XYZ2IMAGE_GPU_FORCE_CPU``
    Set (to anything but ``""``, ``0``, ``false``, ``no``): ``device="auto"`` resolves to
    the CPU and ``device="gpu"`` is refused, e.g. to run the NumPy path on a GPU machine.
``XYZ2IMAGE_GPU_NO_EXTENSION``
    Set: the compiled CPU kernel is ignored and the NumPy (BLAS) path renders.
``XYZ2IMAGE_GPU_NO_FUSED_KERNEL``
    Set: the GPU renders Gaussian images as batched matrix products on CuPy (the NumPy path's
    array code) instead of its own CUDA kernel (``pipeline/kernels/splat.cu``), to
    compare the two or to get round a kernel that does not compile on a device.
``XYZ2IMAGE_GPU_DEVICE``
    The command line's ``--device`` when the option is not given.

Every other option of the command line can be set as ``XYZ2IMAGE_GPU_<COMMAND>_<OPTION>``
(click's ``auto_envvar_prefix``, :data:`ENV_PREFIX`), e.g. ``XYZ2IMAGE_GPU_RENDER_EDGESIZE``.

The flags are read at each call, not once at import, so a test or a caller may set them
while the process runs.
"""

from __future__ import annotations

import os

__all__ = [
    "DEVICE_ENV",
    "ENV_PREFIX",
    "FORCE_CPU_ENV",
    "NO_EXTENSION_ENV",
    "NO_FUSED_KERNEL_ENV",
    "flag_set",
    "force_cpu",
    "no_extension",
    "no_fused_kernel",
    "set_flags",
]

#: Prefix of every environment variable of the package.
ENV_PREFIX = "XYZ2IMAGE_GPU"
FORCE_CPU_ENV = f"{ENV_PREFIX}_FORCE_CPU"
NO_EXTENSION_ENV = f"{ENV_PREFIX}_NO_EXTENSION"
NO_FUSED_KERNEL_ENV = f"{ENV_PREFIX}_NO_FUSED_KERNEL"
DEVICE_ENV = f"{ENV_PREFIX}_DEVICE"

_OFF = ("", "0", "false", "no")


def flag_set(name: str) -> bool:
    """Whether the environment variable ``name`` is set to a true value.

    Parameters
    ----------
    name : str
        The variable, e.g. :data:`FORCE_CPU_ENV`.

    Returns
    -------
    bool
        False when it is unset, empty, ``0``, ``false`` or ``no`` (any case, surrounding
        blanks ignored), else True.
    """
    return os.environ.get(name, "").strip().lower() not in _OFF


def force_cpu() -> bool:
    """Whether ``XYZ2IMAGE_GPU_FORCE_CPU`` keeps the package off the GPU."""
    return flag_set(FORCE_CPU_ENV)


def no_extension() -> bool:
    """Whether ``XYZ2IMAGE_GPU_NO_EXTENSION`` turns the compiled CPU kernel off."""
    return flag_set(NO_EXTENSION_ENV)


def no_fused_kernel() -> bool:
    """Whether ``XYZ2IMAGE_GPU_NO_FUSED_KERNEL`` turns the GPU's gaussian_2d kernel off."""
    return flag_set(NO_FUSED_KERNEL_ENV)


def set_flags() -> dict[str, str]:
    """The package's environment variables that are set (non-empty), by name."""
    return {name: value for name, value in sorted(os.environ.items())
            if name.startswith(ENV_PREFIX + "_") and value}
