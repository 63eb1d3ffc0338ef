"""Atomic structures: reading XYZ / extended-XYZ files and normalising other inputs.

The rest of the package works on a :class:`Structure`: a name and a tuple of :class:`Frame`
objects, each holding atomic numbers and Cartesian positions in Å. :func:`read_xyz` reads
plain and extended XYZ files quickly (much faster than ``ase.io.read`` for long
trajectories); :func:`as_structure` turns anything else the package accepts (paths in other
formats via ASE, ASE ``Atoms`` objects, NumPy arrays) into a :class:`Structure`.

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
:func:`read_xyz` parses only as far as it needs: frames before ``frameshift`` are checked
only for their count lines and length, and the file is not read past the last kept frame.
"""

from __future__ import annotations

import math
import operator
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Union

import numpy as np

from .elements import MAX_Z, SYMBOLS, atomic_number

__all__ = [
    "XYZ_SUFFIXES",
    "Frame",
    "Structure",
    "StructureError",
    "as_structure",
    "read_xyz",
]

#: File name suffixes (lower case) read by :func:`read_xyz`; others go through ASE.
XYZ_SUFFIXES: tuple[str, ...] = (".xyz", ".extxyz")

_StrPath = Union[str, "os.PathLike[str]"]

_ASE_HINT = "install the ASE extra: pip install 'xyz2image-gpu[ase]'"
_CHUNK_CHARS = 1 << 22  # characters read per chunk by the XYZ reader
_BATCH_LINES = 1 << 16  # atom lines parsed per np.loadtxt call
_TOKEN_WIDTH = 8  # characters kept of element tokens in batches; longer ones go line by line
_ROW_DTYPE = np.dtype([("s", f"U{_TOKEN_WIDTH}"), ("p", np.float64, (3,))])
# np.loadtxt is implemented in C (fast) from NumPy 1.23 on; before, parse frame by frame.
_BATCHED = np.lib.NumpyVersion(np.__version__) >= "1.23.0"


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
    except (TypeError, ValueError) as exc:
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


def _excluded_numbers(exclude_elements: Any) -> frozenset[int]:
    """Atomic numbers to drop, from symbols (any case) and/or atomic numbers."""
    if exclude_elements is None:
        return frozenset()
    if isinstance(exclude_elements, (str, int, np.integer)):
        exclude_elements = (exclude_elements,)
    out = set()
    for token in exclude_elements:
        try:
            out.add(atomic_number(token))
        except KeyError:
            raise ValueError(f"exclude_elements: unknown element {token!r}") from None
    return frozenset(out)


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


# --------------------------------------------------------------------------------------
# XYZ reader
# --------------------------------------------------------------------------------------


class _Lines:
    """Lines of a text file, read in chunks on demand; ``get(i)`` is 0-based."""

    def __init__(self, handle: Any, chunk_chars: int | None = None) -> None:
        self._handle = handle
        self._chunk = _CHUNK_CHARS if chunk_chars is None else chunk_chars
        self._lines: list[str] = []
        self._base = 0  # file line number (0-based) of self._lines[0]
        self._tail = ""  # incomplete last line of the text read so far
        self._eof = False

    def _read_chunk(self) -> None:
        data = self._handle.read(self._chunk)
        if not data:
            self._eof = True
            if self._tail:
                self._lines.append(self._tail)
                self._tail = ""
            return
        parts = (self._tail + data).split("\n")
        self._tail = parts.pop()
        self._lines.extend(parts)

    def available(self, stop: int) -> bool:
        """Load lines up to ``stop`` (exclusive); return whether they all exist."""
        while self._base + len(self._lines) < stop and not self._eof:
            self._read_chunk()
        return self._base + len(self._lines) >= stop

    def n_lines(self) -> int:
        """Total number of lines (reads the whole file)."""
        while not self._eof:
            self._read_chunk()
        return self._base + len(self._lines)

    def get(self, i: int) -> str:
        return self._lines[i - self._base]

    def block(self, start: int, stop: int) -> list[str]:
        return self._lines[start - self._base : stop - self._base]

    def rest_blank(self, i: int) -> bool:
        """Whether line ``i`` and all lines after it are blank (reads up to a non-blank)."""
        j = i
        while True:
            while j - self._base < len(self._lines):
                if self._lines[j - self._base].strip():
                    return False
                j += 1
            if self._eof:
                return True
            self._read_chunk()

    def last_nonblank(self) -> int:
        """Number of lines up to and including the last non-blank one (reads the file)."""
        n = self.n_lines()
        while n > self._base and not self._lines[n - 1 - self._base].strip():
            n -= 1
        return n

    def release(self, upto: int) -> None:
        """Forget lines before ``upto`` once enough of them have piled up."""
        k = upto - self._base
        if k > 65536 and 2 * k > len(self._lines):
            del self._lines[:k]
            self._base = upto


# key=value (value possibly quoted), or a bare / quoted token, in an extended XYZ comment
_KV_RE = re.compile(
    r"""([^\s="']+)\s*=\s*("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|\{[^}]*\}|[^\s"']*)"""
    r"""|"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|\S+"""
)
_HAS_PROPERTIES_RE = re.compile(r"properties\s*=", re.IGNORECASE)


@dataclass(frozen=True)
class _Layout:
    """Where the element and position columns are in an atom line (0-based)."""

    species: int
    pos: int
    min_cols: int
    description: str


_PLAIN_LAYOUT = _Layout(species=0, pos=1, min_cols=4, description="element x y z")


def _properties_value(comment: str) -> str | None:
    """The value of the ``Properties=`` key of an extended XYZ comment line, if any."""
    if "=" not in comment or not _HAS_PROPERTIES_RE.search(comment):
        return None
    for match in _KV_RE.finditer(comment):
        key, value = match.group(1), match.group(2)
        if key is not None and key.lower() == "properties":
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
                value = value[1:-1]
            return value.strip()
    return None


def _layout_from_properties(value: str) -> _Layout:
    """Parse ``name:type:ncols:...``; raise StructureError (message only) when unusable."""
    parts = value.split(":")
    if len(parts) % 3 != 0 or not value:
        raise StructureError(f"Properties={value!r} is not a list of name:type:ncols entries")
    col = 0
    species = z_col = pos = None
    for k in range(0, len(parts), 3):
        name, typ, ncols = parts[k], parts[k + 1], parts[k + 2]
        try:
            n = int(ncols)
        except ValueError:
            n = 0
        if n < 1:
            raise StructureError(f"Properties=: bad column count {ncols!r} for {name!r}")
        lname = name.lower()
        if lname == "species" and species is None:
            if n != 1:
                raise StructureError(f"Properties=: species must have 1 column, got {n}")
            species = col
        elif lname in ("z", "numbers") and z_col is None and typ.upper() == "I":
            if n != 1:
                raise StructureError(f"Properties=: {name} must have 1 column, got {n}")
            z_col = col
        elif lname in ("pos", "positions") and pos is None:
            if n != 3:
                raise StructureError(f"Properties=: {name} must have 3 columns, got {n}")
            pos = col
        col += n
    element = species if species is not None else z_col
    if element is None:
        raise StructureError(f"Properties={value!r} names no species (or Z) column")
    if pos is None:
        raise StructureError(f"Properties={value!r} names no pos column")
    return _Layout(
        species=element,
        pos=pos,
        min_cols=max(element, pos + 2) + 1,
        description=f"Properties={value}",
    )


class _XYZParser:
    """Per-file parsing state: caches of element tokens and comment-line layouts."""

    def __init__(self, path: str, excluded: frozenset[int]) -> None:
        self.path = path
        self.excluded = excluded
        self._z: dict[str, int] = {}
        self._layouts: dict[str, _Layout] = {}

    def error(self, message: str, frame: int, line: int) -> StructureError:
        return StructureError(message, path=self.path, frame=frame, line=line)

    # -- frame headers ----------------------------------------------------------------

    def count(self, lines: _Lines, i: int, k: int, prev_count: int | None) -> int | None:
        """Atom count on line ``i`` for frame ``k``; ``None`` at the end of the file."""
        if not lines.available(i + 1):
            return None
        text = lines.get(i).strip()
        if not text:
            if lines.rest_blank(i):
                return None
            raise self.error("expected an atom count, found a blank line", k, i + 1)
        if text.isascii() and text.isdigit() and int(text) > 0:
            return int(text)
        shown = text if len(text) <= 40 else text[:37] + "..."
        try:
            value: int | None = int(text)
        except ValueError:
            value = None
        if value is not None or prev_count is None:
            message = f"expected a positive integer atom count, got {shown!r}"
        else:
            message = (
                f"expected the atom count of the next frame, got {shown!r}: does the atom "
                f"count of frame {k - 1} ({prev_count}) match its number of atom lines?"
            )
        raise self.error(message, k, i + 1)

    def check_length(self, lines: _Lines, i: int, count: int, k: int) -> None:
        """Raise if the file ends before the ``count`` atom lines of the frame at line i."""
        if lines.available(i + 2 + count):
            return
        end = lines.last_nonblank()
        if end <= i + 1:
            detail = "before the comment line"
        else:
            have = end - (i + 2)
            detail = f"after {have} atom line{'s' if have != 1 else ''}"
        raise self.error(f"the atom count is {count} but the file ends {detail}", k, i + 1)

    # -- atom blocks ------------------------------------------------------------------

    def layout(self, comment: str, k: int, line: int) -> _Layout:
        value = _properties_value(comment)
        if value is None:
            return _PLAIN_LAYOUT
        layout = self._layouts.get(value)
        if layout is None:
            try:
                layout = _layout_from_properties(value)
            except StructureError as exc:
                raise self.error(exc.message, k, line) from None
            self._layouts[value] = layout
        return layout

    def _numbers_fast(self, tokens: list[str]) -> list[int] | None:
        cache = self._z
        try:
            return [cache[t] for t in tokens]
        except KeyError:
            pass
        for t in set(tokens):
            if t not in cache:
                try:
                    cache[t] = atomic_number(t)
                except KeyError:
                    return None
        return [cache[t] for t in tokens]

    def _fast(self, block: list[str], layout: _Layout) -> tuple[Any, Any] | None:
        """Vectorised parse of a block whose lines all have the same column count."""
        n = len(block)
        ncol = len(block[0].split())
        if ncol < layout.min_cols:
            return None
        stride = ncol + 1
        joined = " \x00 ".join(block)  # NUL tokens mark line ends: checks every line's width
        tokens = joined.split()
        if (
            len(tokens) != n * stride - 1
            or joined.count("\x00") != n - 1
            or tokens[ncol::stride].count("\x00") != n - 1
        ):
            return None
        p = layout.pos
        coords = tokens[p::stride] + tokens[p + 1 :: stride] + tokens[p + 2 :: stride]
        try:
            xyz = np.fromiter(map(float, coords), dtype=np.float64, count=3 * n)
        except ValueError:
            return None
        if not np.isfinite(xyz).all():
            return None
        numbers = self._numbers_fast(tokens[layout.species :: stride])
        if numbers is None:
            return None
        return np.array(numbers, dtype=np.int16), xyz.reshape(3, n).T

    def _slow(
        self, lines: _Lines, block: list[str], layout: _Layout, i: int, k: int
    ) -> tuple[Any, Any]:
        """Line-by-line parse; raises StructureError at the first bad line."""
        count = len(block)
        numbers = np.empty(count, dtype=np.int16)
        xyz = np.empty((count, 3), dtype=np.float64)
        for j, text in enumerate(block):
            lineno = i + 3 + j
            fields = text.split()
            if not fields:
                if lines.rest_blank(i + 2 + j):
                    s = "s" if j != 1 else ""
                    raise self.error(
                        f"the atom count is {count} but the file ends after {j} atom line{s}",
                        k,
                        i + 1,
                    )
                raise self.error(
                    f"blank line where atom {j + 1} of {count} was expected: does the atom "
                    f"count ({count}, line {i + 1}) match the number of atom lines?",
                    k,
                    lineno,
                )
            if len(fields) < layout.min_cols:
                hint = ""
                if len(fields) == 1 and fields[0].isdigit():
                    hint = (
                        f"; this looks like an atom count line: does the atom count "
                        f"({count}, line {i + 1}) match the number of atom lines?"
                    )
                raise self.error(
                    f"expected at least {layout.min_cols} columns ({layout.description}), "
                    f"got {len(fields)}{hint}",
                    k,
                    lineno,
                )
            token = fields[layout.species]
            z = self._z.get(token)
            if z is None:
                try:
                    z = self._z[token] = atomic_number(token)
                except KeyError:
                    raise self.error(f"unknown element {token!r}", k, lineno) from None
            numbers[j] = z
            for c in range(3):
                col = layout.pos + c
                value_text = fields[col]
                try:
                    value = float(value_text)
                except ValueError:
                    raise self.error(
                        f"non-numeric coordinate {value_text!r} in column {col + 1}", k, lineno
                    ) from None
                if not math.isfinite(value):
                    raise self.error(
                        f"non-finite coordinate {value_text!r} in column {col + 1}", k, lineno
                    )
                xyz[j, c] = value
        return numbers, xyz

    def frame(self, lines: _Lines, i: int, count: int, k: int) -> Frame:
        """Parse the frame whose count line is line ``i`` (0-based), on its own."""
        layout = self.layout(lines.get(i + 1), k, i + 2)
        block = lines.block(i + 2, i + 2 + count)
        parsed = self._fast(block, layout)
        if parsed is None:
            parsed = self._slow(lines, block, layout, i, k)
        return _make_frame(parsed[0], parsed[1], k, self.excluded, self.path, line=i + 1)

    # -- batches of frames ------------------------------------------------------------

    def _numbers_vec(self, tokens: np.ndarray) -> np.ndarray | None:
        """Atomic numbers for an array of element tokens; None if any is unknown."""
        numbers = np.empty(tokens.shape[0], dtype=np.int16)
        todo = np.ones(tokens.shape[0], dtype=bool)
        first = 0
        for _ in range(16):  # one vectorised pass per distinct element
            token = str(tokens[first])
            if len(token) >= _TOKEN_WIDTH:  # possibly truncated by the fixed-width dtype
                return None
            z = self._z.get(token)
            if z is None:
                try:
                    z = self._z[token] = atomic_number(token)
                except KeyError:
                    return None
            same = tokens == tokens[first]
            numbers[same] = z
            todo &= ~same
            first = int(todo.argmax())
            if not todo[first]:
                return numbers
        names = tokens.tolist()  # many distinct elements
        if max(map(len, set(names))) >= _TOKEN_WIDTH:
            return None
        listed = self._numbers_fast(names)
        return None if listed is None else np.array(listed, dtype=np.int16)

    def _batch(
        self, lines: _Lines, run: list[tuple[int, int, int]], layout: _Layout
    ) -> list[Frame] | None:
        """Parse frames sharing a layout with one C-level ``np.loadtxt`` call.

        Returns None when anything is unusual; the caller then parses frame by frame, which
        also locates errors.
        """
        block: list[str] = []
        for _, i, count in run:
            block += lines.block(i + 2, i + 2 + count)
        usecols = (layout.species, layout.pos, layout.pos + 1, layout.pos + 2)
        try:
            table = np.loadtxt(block, dtype=_ROW_DTYPE, usecols=usecols, comments=None, ndmin=1)
        except (ValueError, TypeError):
            return None
        if table.shape[0] != len(block):  # loadtxt skips blank lines
            return None
        xyz = np.ascontiguousarray(table["p"])
        if not np.isfinite(xyz).all():
            return None
        numbers = self._numbers_vec(table["s"])
        if numbers is None:
            return None
        frames = []
        a = 0
        for k, i, count in run:
            b = a + count
            if self.excluded:
                frame = _make_frame(numbers[a:b], xyz[a:b], k, self.excluded, self.path, line=i + 1)
            else:  # validated above: skip Frame's checks and copies
                frame = _trusted_frame(numbers[a:b], xyz[a:b], k)
            frames.append(frame)
            a = b
        return frames

    def frames(self, lines: _Lines, pending: list[tuple[int, int, int]]) -> list[Frame]:
        """Parse the frames ``(index, count line, count)`` in ``pending``, in file order."""
        out: list[Frame] = []
        if not pending:
            return out
        if not _BATCHED:
            return [self.frame(lines, i, count, k) for k, i, count in pending]
        runs: list[tuple[_Layout, list[tuple[int, int, int]]]] = []
        for k, i, count in pending:
            layout = self.layout(lines.get(i + 1), k, i + 2)
            if runs and runs[-1][0] is layout:
                runs[-1][1].append((k, i, count))
            else:
                runs.append((layout, [(k, i, count)]))
        for layout, run in runs:
            batch = self._batch(lines, run, layout)
            if batch is None:
                batch = [self.frame(lines, i, count, k) for k, i, count in run]
            out += batch
        return out


def read_xyz(
    path: _StrPath,
    *,
    frameshift: int = 0,
    maxframes: int | None = 50,
    exclude_elements: Iterable[str | int] = (),
) -> Structure:
    """Read frames from a plain or extended XYZ file.

    Each frame is a line with the atom count, a comment line, and one line per atom. In
    extended XYZ the comment line holds ``key=value`` pairs; when it has a ``Properties=``
    key (``name:type:ncols`` entries), the element is taken from its ``species`` column (or
    an integer ``Z`` column) and the position from its ``pos`` columns. Otherwise the first
    field is the element and the next three are x, y, z in Å. Elements may be symbols in
    any case or atomic numbers; extra columns, tabs, CRLF line ends and trailing blank lines
    are fine, and frames may have different atom counts.

    Parameters
    ----------
    path : str or os.PathLike
        The file.
    frameshift : int, default 0
        Index of the first frame to keep; past the end, the last frame is kept.
    maxframes : int or None, default 50
        Keep at most this many frames; ``None`` keeps all from ``frameshift`` on.
    exclude_elements : iterable of str or int, default ()
        Elements (symbols in any case, or atomic numbers) to drop from every frame.

    Returns
    -------
    Structure
        Named after the file stem, with ``source`` set to the path; positions in Å.

    Raises
    ------
    StructureError
        On malformed input, with the file, 0-based frame and 1-based line in the message:
        an empty file, a bad count line, a count that disagrees with the atom lines, too
        few columns, an unknown element, a non-numeric or non-finite coordinate, or a frame
        left without atoms by ``exclude_elements``. Frames after the last kept one are not
        read; frames before ``frameshift`` are only checked for their count lines.
    ValueError
        If ``frameshift < 0`` or ``maxframes < 1``, or an excluded element is unknown.
    OSError
        If the file cannot be opened.
    """
    start, stop = _selection(frameshift, maxframes)
    excluded = _excluded_numbers(exclude_elements)
    path_str = os.fspath(path)
    parser = _XYZParser(path_str, excluded)
    frames: list[Frame] = []
    pending: list[tuple[int, int, int]] = []  # (frame index, count line, count) to parse
    pending_lines = 0
    last: tuple[int, int] | None = None  # (line, count) of the last frame scanned
    with open(path_str, encoding="utf-8-sig", errors="replace", newline=None) as handle:
        lines = _Lines(handle)
        i = 0  # 0-based line of the current frame's count line
        k = 0  # index of the current frame
        prev_count: int | None = None
        while stop is None or k < stop:
            try:
                count = parser.count(lines, i, k, prev_count)
                if count is not None:
                    parser.check_length(lines, i, count, k)
            except StructureError as exc:
                header_error = exc
            else:
                header_error = None
            if header_error is not None:
                parser.frames(lines, pending)  # an error in an earlier frame comes first
                raise header_error
            if count is None:
                break
            if k >= start:
                pending.append((k, i, count))
                pending_lines += count
                if pending_lines >= _BATCH_LINES:
                    frames += parser.frames(lines, pending)
                    pending, pending_lines = [], 0
            last = (i, count)
            lines.release(pending[0][1] if pending else i)
            i += count + 2
            k += 1
            prev_count = count
        frames += parser.frames(lines, pending)
        if last is None:
            raise StructureError("the file is empty: no frames", path=path_str, frame=0, line=1)
        if not frames:  # frameshift past the end: keep the last frame
            frames += parser.frames(lines, [(k - 1, last[0], last[1])])
    return Structure(name=Path(path_str).stem, frames=tuple(frames), source=path_str)


# --------------------------------------------------------------------------------------
# Other inputs
# --------------------------------------------------------------------------------------


def _is_atoms(obj: Any) -> bool:
    """Duck-typed test for an ASE ``Atoms`` object."""
    if isinstance(obj, type):
        return False
    return hasattr(obj, "get_positions") and hasattr(obj, "numbers")


def _from_images(
    images: Sequence[Any],
    name: str,
    source: str | None,
    start: int,
    stop: int | None,
    excluded: frozenset[int],
) -> Structure:
    if len(images) == 0:
        raise StructureError("no frames", path=source)
    frames = []
    for k in _selected(len(images), start, stop):
        atoms = images[k]
        frames.append(
            _make_frame(np.asarray(atoms.numbers), atoms.get_positions(), k, excluded, source)
        )
    return Structure(name=name, frames=tuple(frames), source=source)


def _read_with_ase(path: Path, start: int, stop: int | None, excluded: frozenset[int]) -> Structure:
    source = os.fspath(path)
    if not path.exists():
        raise FileNotFoundError(2, "No such file or directory", source)
    try:
        from ase.io import read as ase_read
    except ImportError:
        raise StructureError(
            f"reading {path.suffix or 'extension-less'} files needs ASE; {_ASE_HINT}",
            path=source,
        ) from None
    try:
        images = ase_read(source, index=":")
    except Exception as exc:  # ASE raises many kinds of errors for bad files
        raise StructureError(
            f"ASE could not read the file ({type(exc).__name__}: {exc})", path=source
        ) from exc
    if _is_atoms(images):
        images = [images]
    return _from_images(list(images), path.stem, source, start, stop, excluded)


def _numbers_array(values: Any, what: str) -> np.ndarray:
    """Atomic numbers from ints (or integral floats) or element tokens."""
    arr = np.asarray(values)
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64)
    if arr.dtype.kind == "f" and np.all(np.mod(arr, 1) == 0):
        return arr.astype(np.int64)
    if arr.dtype.kind in "USO":
        flat = []
        for token in arr.ravel().tolist():
            try:
                flat.append(atomic_number(token))
            except KeyError:
                raise StructureError(f"{what}: unknown element {token!r}") from None
        return np.array(flat, dtype=np.int64).reshape(arr.shape)
    raise StructureError(f"{what} must be integers or element symbols, got dtype {arr.dtype}")


def _from_arrays(
    obj: Any,
    numbers: Any,
    symbols: Any,
    name: str,
    start: int,
    stop: int | None,
    excluded: frozenset[int],
) -> Structure:
    if numbers is None and symbols is None:
        raise ValueError("positions given as an array need numbers= or symbols=")
    if numbers is not None and symbols is not None:
        raise ValueError("give numbers= or symbols=, not both")
    try:
        pos = np.asarray(obj, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise StructureError(f"positions are not a numeric array ({exc})") from None
    if pos.ndim == 2:
        pos = pos[np.newaxis]
    if pos.ndim != 3 or pos.shape[-1] != 3:
        raise StructureError(f"positions must have shape (N, 3) or (F, N, 3), got {pos.shape}")
    n_frames, n_atoms = pos.shape[:2]
    if n_frames == 0:
        raise StructureError("positions hold no frames")
    if n_atoms == 0:
        raise StructureError("positions hold no atoms")
    if symbols is not None:
        nums = _numbers_array(np.asarray(symbols, dtype=object), "symbols")
    else:
        nums = _numbers_array(numbers, "numbers")
    if nums.shape == (n_atoms,):
        nums = np.broadcast_to(nums, (n_frames, n_atoms))
    elif nums.shape != (n_frames, n_atoms):
        raise StructureError(
            f"{'symbols' if symbols is not None else 'numbers'} must have shape ({n_atoms},)"
            f" or ({n_frames}, {n_atoms}) to match positions {pos.shape}, got {nums.shape}"
        )
    frames = tuple(
        _make_frame(nums[k], pos[k], k, excluded, None) for k in _selected(n_frames, start, stop)
    )
    return Structure(name=name, frames=frames, source=None)


def _filter_structure(structure: Structure, excluded: frozenset[int]) -> Structure:
    frames = tuple(
        _make_frame(f.numbers, f.positions, f.index, excluded, structure.source)
        for f in structure.frames
    )
    return replace(structure, frames=frames)


def as_structure(
    obj: Any,
    *,
    numbers: Any = None,
    symbols: Any = None,
    name: str | None = None,
    frameshift: int = 0,
    maxframes: int | None = 50,
    exclude_elements: Iterable[str | int] = (),
) -> Structure:
    """Turn any supported input into a :class:`Structure`.

    Parameters
    ----------
    obj : Structure, str, os.PathLike, ase.Atoms, list of ase.Atoms, or array-like
        * a :class:`Structure`: returned as is (its frames were selected already, so
          ``frameshift``/``maxframes`` do not apply), re-filtered when
          ``exclude_elements`` is given and renamed when ``name`` is given;
        * a path: ``.xyz``/``.extxyz`` files through :func:`read_xyz`, other formats
          through ``ase.io.read(path, index=":")`` (needs the ``ase`` extra);
        * an ASE ``Atoms`` object (one frame) or a list of them (one frame each); positions
          in Å;
        * an ``(N, 3)`` array of positions in Å (one frame) or an ``(F, N, 3)`` array
          (``F`` frames), with ``numbers=`` or ``symbols=``.
    numbers : array-like of int, optional
        Atomic numbers for array input, shape ``(N,)`` or ``(F, N)``.
    symbols : sequence of str, optional
        Element symbols for array input, shape ``(N,)`` or ``(F, N)``.
    name : str, optional
        Name of the result; default the file stem for paths, else ``"structure"``.
    frameshift, maxframes : int
        Frame selection, as in :func:`read_xyz`.
    exclude_elements : iterable of str or int, default ()
        Elements to drop from every frame.

    Returns
    -------
    Structure

    Raises
    ------
    StructureError
        For malformed input: bad shapes, unknown elements, NaN/inf positions, or a frame
        without atoms after excluding elements.
    TypeError
        If ``obj`` is of an unsupported type.
    ValueError
        For bad arguments (selection, missing or doubled ``numbers``/``symbols``).
    """
    start, stop = _selection(frameshift, maxframes)
    excluded = _excluded_numbers(exclude_elements)
    if (numbers is not None or symbols is not None) and (
        isinstance(obj, (Structure, str, os.PathLike)) or _is_atoms(obj)
    ):
        raise ValueError("numbers= and symbols= apply only to array input")

    if isinstance(obj, Structure):
        result = _filter_structure(obj, excluded) if excluded else obj
    elif isinstance(obj, (str, os.PathLike)):
        path = Path(obj)
        if path.suffix.lower() in XYZ_SUFFIXES:
            result = read_xyz(
                path, frameshift=frameshift, maxframes=maxframes, exclude_elements=excluded
            )
        else:
            result = _read_with_ase(path, start, stop, excluded)
    elif _is_atoms(obj):
        result = _from_images([obj], "structure", None, start, stop, excluded)
    elif isinstance(obj, (list, tuple)) and len(obj) > 0 and all(_is_atoms(item) for item in obj):
        if numbers is not None or symbols is not None:
            raise ValueError("numbers= and symbols= apply only to array input")
        result = _from_images(list(obj), "structure", None, start, stop, excluded)
    elif isinstance(obj, (np.ndarray, list, tuple)) or hasattr(obj, "__array__"):
        result = _from_arrays(obj, numbers, symbols, "structure", start, stop, excluded)
    else:
        raise TypeError(f"cannot make a Structure from {type(obj).__name__}")

    if name is not None and result.name != name:
        result = replace(result, name=str(name))
    return result
