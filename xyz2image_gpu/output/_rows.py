"""The streaming writers' shared checks of rows against their declared layout: each batch
brings every key with the declared trailing shape and dtype and the same number of rows, no
more rows than declared; a writer closed early says which keys are short.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

__all__ = [
    "check_batch",
    "check_complete",
]


class _Declared(Protocol):
    key: str
    shape: tuple[int, ...]
    dtype: np.dtype
    rows: int


def check_batch(path: Path, declared: Sequence[_Declared], batch: Mapping[str, Any],
                as_array: Callable[[Any], Any] = np.asarray, what: str = "member",
                ) -> list[tuple[Any, Any]]:
    """Pair every declared key with its array of ``batch`` (through ``as_array``).

    Raises
    ------
    KeyError
        A declared key is missing.
    ValueError
        Wrong dtype or trailing shape, keys of different lengths, or more rows than
        declared; every message names ``path`` and the key.
    """
    pairs = []
    n = None
    for item in declared:
        if item.key not in batch:
            raise KeyError(f"{path}: batch lacks {what} {item.key!r}")
        arr = as_array(batch[item.key])
        if arr.dtype != item.dtype or tuple(arr.shape[1:]) != tuple(item.shape[1:]):
            raise ValueError(
                f"{path}: {what} {item.key!r} expects rows of shape {item.shape[1:]} and "
                f"dtype {item.dtype}, got {tuple(arr.shape[1:])} {arr.dtype}")
        if n is None:
            n = arr.shape[0]
        elif arr.shape[0] != n:
            raise ValueError(f"{path}: {what}s of one batch differ in length")
        if item.rows + arr.shape[0] > item.shape[0]:
            raise ValueError(
                f"{path}: {what} {item.key!r} would get {item.rows + arr.shape[0]} rows, more "
                f"than the {item.shape[0]} declared")
        pairs.append((item, arr))
    return pairs


def check_complete(path: Path, declared: Sequence[_Declared], n_rows: int) -> None:
    """ValueError naming the keys that got fewer rows than declared."""
    missing = [item.key for item in declared if item.rows != item.shape[0]]
    if missing:
        raise ValueError(f"{path}: incomplete, {declared[0].rows} of {n_rows} rows appended "
                         f"to {', '.join(missing)}")
