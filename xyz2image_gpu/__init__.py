"""xyz2image-gpu: batched Gaussian-approximation ADF-STEM images and 3D labels.

Turn atomic coordinates (.xyz) into normalised simulated ADF-STEM images and their 3D labels
for many random orientations, on the GPU (CuPy) or the CPU (NumPy)::

    from . import render
    out = render("au147.xyz", n_rotation=64, output_types=["gaussian_2d", "coordinates_3d"])
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from .backend import Backend, BackendError, get_backend
from .pipeline import IMAGE_TYPES, OUTPUT_TYPES, Renderer, RenderSettings, render
from .structures import Frame, Structure, StructureError, as_structure, read_xyz

try:
    __version__ = version("xyz2image-gpu")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

__all__ = [
    "IMAGE_TYPES",
    "OUTPUT_TYPES",
    "Backend",
    "BackendError",
    "Frame",
    "RenderSettings",
    "Renderer",
    "Structure",
    "StructureError",
    "__version__",
    "as_structure",
    "get_backend",
    "read_xyz",
    "render",
]
