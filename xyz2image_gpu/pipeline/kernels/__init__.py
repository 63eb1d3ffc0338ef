"""Kernels: one function per output type, each rendering a whole batch in one tensor.

The array kernels take ``xp`` (``numpy`` or ``cupy``) and batched pixel coordinates from
:mod:`..framing`, and return arrays on that backend; the compiled wrappers and the legacy
filter matrices work on NumPy arrays. Nothing here moves data between host and device;
which kernel runs is decided by :mod:`..strategies`, once per renderer.

* :mod:`.gaussian`: separable Gaussian images (batched matrix products), the column
  correction's pair sums, and quantisation;
* :mod:`.labels`: coordinates, delta and binary (sphere) labels;
* :mod:`.legacy`: the original script's rounded-voxel images and SciPy-style filter;
* :mod:`.compiled`: wrappers of the optional compiled CPU kernel (``_splat.c``), the
  augmentations' draws included (``philox.h``, shared with the GPU's ``random.cu``).
"""

from __future__ import annotations

from .compiled import (
    NO_EXTENSION_ENV,
    column_values_compiled,
    compiled_kernel_available,
    noise_compiled,
    phonon_compiled,
    quantise_compiled,
    scan_compiled,
    splat_gaussian,
)
from .gaussian import (
    PROFILE_FLOOR,
    axis_profiles,
    column_values,
    gaussian_2d,
    gaussian_2d_scanned,
    gaussian_3d,
    quantise,
)
from .labels import binary_2d, binary_3d, coordinates_3d, delta_2d, delta_3d
from .legacy import legacy_filter_matrices, legacy_gaussian_2d, legacy_gaussian_3d

__all__ = [
    "NO_EXTENSION_ENV",
    "PROFILE_FLOOR",
    "axis_profiles",
    "binary_2d",
    "binary_3d",
    "column_values",
    "column_values_compiled",
    "compiled_kernel_available",
    "coordinates_3d",
    "delta_2d",
    "delta_3d",
    "gaussian_2d",
    "gaussian_2d_scanned",
    "gaussian_3d",
    "legacy_filter_matrices",
    "legacy_gaussian_2d",
    "legacy_gaussian_3d",
    "noise_compiled",
    "phonon_compiled",
    "quantise",
    "quantise_compiled",
    "scan_compiled",
    "splat_gaussian",
]
