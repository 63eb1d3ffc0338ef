"""PyTorch integration (the ``torch`` extra): :class:`RenderDataset`, images rendered while
a network trains, sharded over DataLoader workers and distributed ranks.

Importing :mod:`xyz2image_gpu` does not import PyTorch; importing this subpackage does.
Its modules import ``torch`` by its absolute name, PyTorch's own.
"""

from __future__ import annotations

from xyz2image_gpu.torch.dataset import KEY_NAMES, RenderDataset

__all__ = ["KEY_NAMES", "RenderDataset"]
