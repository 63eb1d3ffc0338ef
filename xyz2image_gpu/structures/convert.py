"""Everything else the package accepts, turned into a :class:`~.model.Structure`: paths in
other formats (through ASE), ASE ``Atoms`` objects and lists of them, NumPy arrays with
atomic numbers or symbols, and existing structures (with frame selection and exclusions).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from .elements import atomic_number
from .model import Structure, StructureError, _excluded_numbers, _make_frame, _selected, _selection
from .xyz import XYZ_SUFFIXES, read_xyz

__all__ = [
    "as_structure",
]

_ASE_HINT = "install the ASE extra: pip install 'xyz2image-gpu[ase]'"


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
        raise ValueError(
            "positions given as an array need numbers= or symbols=, the atoms' atomic "
            "numbers or element symbols: xyz2image_gpu.as_structure(positions, "
            "numbers=[...]) makes a Structure for Renderer; render(positions, numbers=[...]) "
            "takes them too")
    if numbers is not None and symbols is not None:
        raise ValueError("give numbers= or symbols=, not both")
    try:
        pos = np.asarray(obj, dtype=np.float64)
    except (TypeError, ValueError, OverflowError) as exc:  # overflow: ints beyond float64
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
