"""The structure model: :class:`Frame`, :class:`Structure`, :class:`StructureError`, and the
frame selection and element exclusion every reader shares.

The rest of the package works on a :class:`Structure`: a name and a tuple of :class:`Frame`
objects, each holding atomic numbers and Cartesian positions in Å.

Frame selection
---------------
Every reader takes ``frameshift`` and ``maxframes`` and keeps, of the ``n`` frames in the
source, ``frames[min(frameshift, n - 1) : min(frameshift + maxframes, n)]``:
``maxframes`` frames starting at ``frameshift``, and the last frame when ``frameshift`` is
past the end. ``maxframes=None`` keeps every frame from ``frameshift`` on.

Errors
------
Malformed input raises :class:`StructureError`, whose message names the file, the frame and
the 1-based line, e.g. ``"traj.xyz, frame 3, line 412: non-numeric coordinate 'abc'"``.
"""

from __future__ import annotations

import operator
import os
from dataclasses import dataclass
from typing import Any, Union

import numpy as np

from .elements import MAX_Z, SYMBOLS, ElementList, element_numbers

__all__ = [
    "Frame",
    "Structure",
    "StructureError",
]

_StrPath = Union[str, "os.PathLike[str]"]


# --------------------------------------------------------------------------------------
# Exception and data classes
# --------------------------------------------------------------------------------------


class StructureError(ValueError):
    """Malformed structure input.

    Parameters
    ----------
    message : str
        What is wrong.
    path : str or os.PathLike, optional
        The file the input came from.
    frame : int, optional
        0-based index of the offending frame in the source.
    line : int, optional
        1-based line number in the file.

    Attributes
    ----------
    message : str
        The bare message, without the location prefix.
    path : str or None
    frame : int or None
    line : int or None

    Notes
    -----
    ``str(exc)`` reads ``"<path>, frame <frame>, line <line>: <message>"``, leaving out the
    parts that are ``None``.
    """

    def __init__(
        self,
        message: str,
        path: _StrPath | None = None,
        frame: int | None = None,
        line: int | None = None,
    ) -> None:
        self.message = str(message)
        self.path = None if path is None else os.fspath(path)
        self.frame = frame
        self.line = line
        super().__init__(self._formatted())

    def _formatted(self) -> str:
        parts = []
        if self.path is not None:
            parts.append(str(self.path))
        if self.frame is not None:
            parts.append(f"frame {self.frame}")
        if self.line is not None:
            parts.append(f"line {self.line}")
        return f"{', '.join(parts)}: {self.message}" if parts else self.message

    def __str__(self) -> str:
        return self._formatted()

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.message, self.path, self.frame, self.line))


def _frame_arrays(numbers: Any, positions: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert one frame's arrays; raise StructureError (message only)."""
    nums = np.asarray(numbers)
    if nums.ndim != 1:
        raise StructureError(f"atomic numbers must be a 1-D array, got shape {nums.shape}")
    if nums.dtype.kind not in "iu":
        if nums.dtype.kind == "f" and nums.size and np.all(np.mod(nums, 1) == 0):
            nums = nums.astype(np.int64)
        elif nums.size:
            raise StructureError(f"atomic numbers must be integers, got dtype {nums.dtype}")
    if nums.size == 0:
        raise StructureError("a frame needs at least one atom")
    if nums.min() < 1 or nums.max() > MAX_Z:
        bad = nums[(nums < 1) | (nums > MAX_Z)][0]
        raise StructureError(f"atomic number {int(bad)} is outside 1..{MAX_Z}")
    try:
        pos = np.array(positions, dtype=np.float64, order="C")
    except (TypeError, ValueError, OverflowError) as exc:  # overflow: ints beyond float64
        raise StructureError(f"positions are not a numeric array ({exc})") from None
    if pos.shape != (nums.shape[0], 3):
        raise StructureError(
            f"positions must have shape ({nums.shape[0]}, 3) to match the atomic numbers, "
            f"got {pos.shape}"
        )
    finite = np.isfinite(pos)
    if not finite.all():
        atom = int(np.nonzero(~finite.all(axis=1))[0][0])
        raise StructureError(f"non-finite position for atom {atom}: {pos[atom].tolist()}")
    nums16 = np.array(nums, dtype=np.int16)
    nums16.setflags(write=False)
    pos.setflags(write=False)
    return nums16, pos


@dataclass(frozen=True)
class Frame:
    """One snapshot of a structure.

    Parameters
    ----------
    numbers : numpy.ndarray
        ``(N,)`` atomic numbers; stored as a read-only ``int16`` copy.
    positions : numpy.ndarray
        ``(N, 3)`` Cartesian positions in Å; stored as a read-only ``float64`` copy.
    index : int
        0-based index of this frame in its source, counting every frame of the source
        (also those not selected).

    Raises
    ------
    StructureError
        If the arrays have the wrong shape, an atomic number is outside ``1..118``, a
        position is NaN or infinite, or there are no atoms.
    """

    numbers: np.ndarray
    positions: np.ndarray
    index: int

    def __post_init__(self) -> None:
        nums, pos = _frame_arrays(self.numbers, self.positions)
        index = operator.index(self.index)
        if index < 0:
            raise ValueError(f"frame index must be >= 0, got {index}")
        object.__setattr__(self, "numbers", nums)
        object.__setattr__(self, "positions", pos)
        object.__setattr__(self, "index", index)

    @property
    def n_atoms(self) -> int:
        """Number of atoms in the frame."""
        return int(self.numbers.shape[0])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Frame):
            return NotImplemented
        return (
            self.index == other.index
            and np.array_equal(self.numbers, other.numbers)
            and np.array_equal(self.positions, other.positions)
        )

    def __repr__(self) -> str:
        return f"Frame(index={self.index}, n_atoms={self.n_atoms})"


@dataclass(frozen=True)
class Structure:
    """A named sequence of frames, e.g. the selected part of an MD trajectory.

    Parameters
    ----------
    name : str
        Short name: the file stem for files (``"au147"`` for ``dir/au147.xyz``), else the
        name given, else ``"structure"``.
    frames : tuple of Frame
        The frames, at least one; frames may have different atom counts.
    source : str, optional
        The path the structure was read from, if any.
    """

    name: str
    frames: tuple[Frame, ...]
    source: str | None = None

    def __post_init__(self) -> None:
        frames = tuple(self.frames)
        if not frames:
            raise StructureError("a structure needs at least one frame", path=self.source)
        for frame in frames:
            if not isinstance(frame, Frame):
                raise TypeError(f"frames must be Frame objects, got {type(frame).__name__}")
        object.__setattr__(self, "frames", frames)
        object.__setattr__(self, "name", str(self.name))
        if self.source is not None:
            object.__setattr__(self, "source", os.fspath(self.source))

    @property
    def max_atoms(self) -> int:
        """Largest atom count over the frames."""
        return max(frame.n_atoms for frame in self.frames)

    def __repr__(self) -> str:
        return (
            f"Structure(name={self.name!r}, n_frames={len(self.frames)}, "
            f"max_atoms={self.max_atoms}, source={self.source!r})"
        )


# --------------------------------------------------------------------------------------
# Argument helpers
# --------------------------------------------------------------------------------------


def _trusted_frame(numbers: np.ndarray, positions: np.ndarray, index: int) -> Frame:
    """A Frame from arrays already validated (int16 Z in range, finite C-order float64)."""
    frame = object.__new__(Frame)
    numbers.setflags(write=False)
    positions.setflags(write=False)
    object.__setattr__(frame, "numbers", numbers)
    object.__setattr__(frame, "positions", positions)
    object.__setattr__(frame, "index", index)
    return frame


def _selection(frameshift: int, maxframes: int | None) -> tuple[int, int | None]:
    """Validate the frame selection; return ``(start, stop)`` with ``stop=None`` for all."""
    if isinstance(frameshift, bool) or isinstance(maxframes, bool):
        raise TypeError("frameshift and maxframes must be integers, not bool")
    start = operator.index(frameshift)
    if start < 0:
        raise ValueError(f"frameshift must be >= 0, got {start}")
    if maxframes is None:
        return start, None
    count = operator.index(maxframes)
    if count < 1:
        raise ValueError(f"maxframes must be >= 1 or None, got {count}")
    return start, start + count


def _selected(n: int, start: int, stop: int | None) -> range:
    """Indices kept of ``n`` frames: ``range(min(start, n - 1), min(stop, n))``."""
    return range(min(start, n - 1), n if stop is None else min(stop, n))


def _excluded_numbers(exclude_elements: ElementList) -> frozenset[int]:
    """Atomic numbers to drop, from symbols (any case) and/or atomic numbers."""
    return frozenset(element_numbers(exclude_elements, what="exclude_elements"))


def _drop_excluded(
    numbers: np.ndarray, positions: np.ndarray, excluded: frozenset[int]
) -> tuple[np.ndarray, np.ndarray]:
    if not excluded:
        return numbers, positions
    keep = ~np.isin(numbers, np.fromiter(excluded, dtype=np.int64))
    if keep.all():
        return numbers, positions
    return numbers[keep], positions[keep]


def _excluded_names(excluded: frozenset[int]) -> str:
    return ", ".join(SYMBOLS[z] for z in sorted(excluded))


def _make_frame(
    numbers: Any,
    positions: Any,
    index: int,
    excluded: frozenset[int],
    path: str | None,
    line: int | None = None,
) -> Frame:
    """Build a Frame after dropping excluded elements; errors carry path/frame/line."""
    numbers = np.asarray(numbers)
    positions = np.asarray(positions)
    if excluded and numbers.ndim == 1 and positions.ndim == 2:
        n_before = numbers.shape[0]
        if positions.shape[0] == n_before and n_before > 0:
            numbers, positions = _drop_excluded(numbers, positions, excluded)
            if numbers.shape[0] == 0:
                raise StructureError(
                    f"no atoms left after excluding {_excluded_names(excluded)} "
                    f"({n_before} atoms before)",
                    path=path,
                    frame=index,
                    line=line,
                )
    try:
        return Frame(numbers=numbers, positions=positions, index=index)
    except StructureError as exc:
        raise StructureError(exc.message, path=path, frame=index, line=line) from None
