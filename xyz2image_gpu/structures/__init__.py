"""Structures: what is imaged, read once on the host.

A :class:`Structure` is a name and a tuple of :class:`Frame` objects (atomic numbers and
Cartesian positions in Å). :mod:`.xyz` reads plain and extended XYZ files; :mod:`.convert`
turns everything else the package accepts (other formats through ASE, ASE ``Atoms``, NumPy
arrays) into a :class:`Structure`; :mod:`.elements` maps symbols to atomic numbers;
:mod:`.examples` holds the bundled example clusters.
"""

from __future__ import annotations

from .convert import as_structure
from .model import Frame, Structure, StructureError
from .xyz import XYZ_SUFFIXES, read_xyz

__all__ = ["XYZ_SUFFIXES", "Frame", "Structure", "StructureError", "as_structure", "read_xyz"]
