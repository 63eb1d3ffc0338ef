"""Kernels: one function per output type, each rendering a whole batch in one tensor.

The array kernels take ``xp`` (``numpy`` or ``cupy``) and batched pixel coordinates from
:mod:`..framing`, and return arrays on that backend; the compiled wrappers and the legacy
filter matrices work on NumPy arrays. Nothing here moves data between host and device;
which kernel runs is decided by :mod:`..strategies`, once per renderer.

* :mod:`.gaussian`: separable Gaussian images (batched matrix products), the column
  correction's pair sums, and quantisation;
* :mod:`.labels`: coordinates, delta and binary (sphere) labels;
* :mod:`.maps`: the column map (atoms per pixel window); heatmaps are Gaussian images;
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
from .labels import (
    binary_2d,
    binary_2d_scanned,
    binary_3d,
    coordinates_3d,
    delta_2d,
    delta_2d_scanned,
    delta_3d,
)
from .legacy import legacy_filter_matrices, legacy_gaussian_2d, legacy_gaussian_3d
from .maps import (
    column_map_2d,
    column_map_2d_rectangles,
    column_map_2d_scanned,
    float16_heatmap,
)

__all__ = [
    "NO_EXTENSION_ENV",
    "PROFILE_FLOOR",
    "axis_profiles",
    "binary_2d",
    "binary_2d_scanned",
    "binary_3d",
    "column_map_2d",
    "column_map_2d_rectangles",
    "column_map_2d_scanned",
    "column_values",
    "column_values_compiled",
    "compiled_kernel_available",
    "coordinates_3d",
    "delta_2d",
    "delta_2d_scanned",
    "delta_3d",
    "float16_heatmap",
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
