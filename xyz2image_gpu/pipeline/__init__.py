"""The rendering pipeline: settings, rotations, framing, kernels and the engine that runs them.

Data flows through it in one direction (see README's "How it works")::

    structures -> rotations (rotations.py) -> framing (framing.py, Å -> pixels)
               -> kernels (kernels/, one module per kind of output) -> quantise

:mod:`.stages` holds one batch's way through them (geometry, labels, images,
augmentations); :mod:`.strategies` the way images are computed (NumPy/CuPy arrays, the
compiled CPU kernel or the original script's), chosen once per renderer.
:class:`~.engine.Renderer` drives the stages for whole batches on one backend; it renders
in memory and knows nothing of files; it hands each batch over as a :class:`~.batch.Batch`.
:mod:`.frames` prepares its host data: per-frame data and the frame table, once per call,
and each batch's host inputs.
On the GPU, :mod:`.gpu_streams` overlaps each batch's copy to the host with the next batch's
rendering, into a ring of page-locked buffers that the batches are views of.
"""

from __future__ import annotations

from .batch import Batch
from .engine import Renderer, render
from .settings import (
    ALL_OUTPUT_TYPES,
    IMAGE_TYPES,
    METADATA_KEYS,
    NORMALIZATIONS,
    OUTPUT_TYPES,
    RenderSettings,
    normalize_output_types,
)

__all__ = [
    "ALL_OUTPUT_TYPES",
    "IMAGE_TYPES",
    "METADATA_KEYS",
    "NORMALIZATIONS",
    "OUTPUT_TYPES",
    "Batch",
    "RenderSettings",
    "Renderer",
    "normalize_output_types",
    "render",
]
