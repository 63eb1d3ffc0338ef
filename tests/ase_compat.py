"""ASE where it is installed, else a small stand-in for what the tests build with it.

The package does not need ASE, and a machine that runs the tests may lack it (the GPU
machine this project is lent has none): the test modules must import without it, and the
tests that only use ASE to *build* structures (``Atoms``, icosahedral clusters) run on the
stand-in. Tests that compare with ASE itself (its readers, its tables, its rotation
conventions) take :data:`requires_ase` and skip without it, saying why.

The stand-in's icosahedra are ASE's: the same Mackay geometry, orientation and lattice
constants (``ase.data.reference_states``), in another atom order; ``test_cli`` checks the
geometry against ASE where ASE is present.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

try:
    import ase  # noqa: F401

    HAVE_ASE = True
except ImportError:
    HAVE_ASE = False

__all__ = ["HAVE_ASE", "Atoms", "StandInAtoms", "icosahedron", "requires_ase"]

#: Marks a test that compares with ASE itself.
requires_ase = pytest.mark.skipif(
    not HAVE_ASE, reason="compares with ASE itself, which is not installed (pip install ase)")

#: fcc lattice constants, Å, of ASE's reference states for the elements the tests cluster.
_FCC_A = {"Al": 4.05, "Ni": 3.52, "Cu": 3.61, "Pd": 3.89, "Ag": 4.09, "Pt": 3.92, "Au": 4.08}


def _numbers(symbols: str | Sequence[Any]) -> np.ndarray:
    from xyz2image_gpu.structures.elements import atomic_number

    if isinstance(symbols, str):  # a formula such as "Au", "H7" or "Au4Pd2"
        tokens = re.findall(r"([A-Z][a-z]?)(\d*)", symbols)
        if "".join(s + n for s, n in tokens) != symbols:
            raise ValueError(f"formula {symbols!r} is not understood by the ASE stand-in")
        return np.array([atomic_number(s) for s, n in tokens for _ in range(int(n or 1))],
                        dtype=int)
    return np.array([atomic_number(s) for s in symbols], dtype=int)


class StandInAtoms:
    """The part of ``ase.Atoms`` the tests use: ``positions`` and ``numbers`` arrays
    (writable in place), copies, slices, ``+``, symbols and ``rotate`` about an axis."""

    def __init__(self, symbols: Any = None, positions: Any = None, numbers: Any = None) -> None:
        self.numbers = (np.array(numbers, dtype=int) if numbers is not None
                        else _numbers(symbols if symbols is not None else []))
        n = len(self.numbers)
        self.positions = (np.zeros((n, 3)) if positions is None
                          else np.array(positions, dtype=np.float64).reshape(n, 3))

    def __len__(self) -> int:
        return len(self.numbers)

    def __getitem__(self, index: Any) -> StandInAtoms:
        return StandInAtoms(numbers=np.atleast_1d(self.numbers[index]),
                            positions=np.atleast_2d(self.positions[index]))

    def __add__(self, other: Any) -> StandInAtoms:
        return StandInAtoms(numbers=np.concatenate([self.numbers, other.numbers]),
                            positions=np.concatenate([self.positions, other.positions]))

    def copy(self) -> StandInAtoms:
        return StandInAtoms(numbers=self.numbers.copy(), positions=self.positions.copy())

    def get_positions(self) -> np.ndarray:
        return self.positions.copy()

    def get_atomic_numbers(self) -> np.ndarray:
        return self.numbers.copy()

    def set_chemical_symbols(self, symbols: Sequence[str]) -> None:
        self.numbers = _numbers(list(symbols))

    def rotate(self, angle: float, axis: str | Sequence[float]) -> None:
        """Rotate by ``angle`` degrees about ``axis`` ("x", "y", "z" or a vector) through
        the origin, counter-clockwise looking down the axis, as ASE does."""
        if isinstance(axis, str):
            axis = {"x": (1.0, 0.0, 0.0), "y": (0.0, 1.0, 0.0), "z": (0.0, 0.0, 1.0)}[axis]
        u = np.asarray(axis, dtype=np.float64)
        u = u / np.linalg.norm(u)
        c, s = np.cos(np.radians(angle)), np.sin(np.radians(angle))
        cross = np.array([[0.0, -u[2], u[1]], [u[2], 0.0, -u[0]], [-u[1], u[0], 0.0]])
        rotation = c * np.eye(3) + s * cross + (1.0 - c) * np.outer(u, u)  # Rodrigues
        self.positions = self.positions @ rotation.T


if HAVE_ASE:
    from ase import Atoms
else:
    Atoms = StandInAtoms


def icosahedron(symbol: str = "Au", shells: int = 4, *, use_ase: bool = HAVE_ASE) -> Any:
    """A Mackay icosahedron of ``symbol`` (shells 4: 147 atoms, 6: 561, 12: 5083): ASE's
    ``Icosahedron(symbol, noshells=shells)``, or (``use_ase=False``) the same atoms as a
    :class:`StandInAtoms`."""
    if use_ase:
        from ase.cluster import Icosahedron

        return Icosahedron(symbol, noshells=shells)
    from xyz2image_gpu.structures.examples import icosahedron_positions

    positions, _ = icosahedron_positions(shells, _FCC_A[symbol] / np.sqrt(2.0))
    return StandInAtoms(f"{symbol}{len(positions)}", positions=positions)
