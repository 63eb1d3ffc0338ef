"""Cheap checks that a stack on disk is whole, for resume: a stack recorded complete whose
file was cut short or damaged (a crash of the file system, a copy stopped half way) is
rendered again instead of being kept.

Each check reads the container's metadata only, never the compressed data:

* ``.npz``: the zip central directory opens, the members are exactly the expected
  ``<key>.npy``, each member's local header and compressed extent lie inside the file
  before the central directory, and each ``.npy`` header (the first bytes of the member)
  gives the expected shape and dtype;
* ``.tif``: tifffile opens it, it has one page per image of the expected shape and dtype,
  and the last page's pixel data and directory lie inside the file;
* zarr group: its ``zarr.json`` and each array's exist and give the expected shape and
  dtype, the arrays are exactly the expected ones, and every chunk (or shard) file of each
  array exists and is not empty.

A member's deflated data (or a chunk's) damaged in the middle is not seen: that needs every
byte decompressed (measured: benchmarks/README.md, "Checking stacks on resume").

Each function returns None for a whole stack, else what is wrong, in words.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import struct
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "npz_problem",
    "tiff_dtype",
    "tiff_problem",
    "zarr_group_problem",
]

Layout = Mapping[str, tuple[tuple[int, ...], Any]]


def tiff_dtype(dtype: Any) -> np.dtype:
    """The dtype a :class:`~.tiff.TiffStackWriter` stores images of ``dtype`` as."""
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return np.dtype(np.uint8)
    if dtype == np.float64:
        return np.dtype(np.float32)
    return dtype


def _describe(shape: Any, dtype: Any) -> str:
    return f"{tuple(shape)} {np.dtype(dtype).name}"


def npz_problem(path: Path | str, layout: Layout) -> str | None:
    """What is wrong with the ``.npz`` at ``path`` against ``layout`` (key: (shape, dtype)),
    or None."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            names = {info.filename for info in infos}
            want = {f"{key}.npy" for key in layout}
            if names != want:
                missing = sorted(want - names)
                extra = sorted(names - want)
                return ("its members differ from the expected ones"
                        + (f" (missing {', '.join(missing)})" if missing else "")
                        + (f" (unexpected {', '.join(extra)})" if extra else ""))
            end = zf.start_dir  # where the central directory begins
            with open(path, "rb") as fh:
                for info in infos:
                    fh.seek(info.header_offset + 26)
                    head = fh.read(4)
                    if len(head) < 4:
                        return f"{info.filename} lies beyond the end of the file"
                    name_len, extra_len = struct.unpack("<HH", head)
                    data_end = (info.header_offset + 30 + name_len + extra_len
                                + info.compress_size)
                    if data_end > min(end, size):
                        return f"{info.filename} runs past the end of its data"
            for key, (shape, dtype) in layout.items():
                with zf.open(f"{key}.npy") as member:
                    version = np.lib.format.read_magic(member)
                    read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                            else np.lib.format.read_array_header_2_0)
                    got_shape, _, got_dtype = read(member)
                if tuple(got_shape) != tuple(shape) or np.dtype(got_dtype) != np.dtype(dtype):
                    return (f"{key} is {_describe(got_shape, got_dtype)}, expected "
                            f"{_describe(shape, dtype)}")
    except (OSError, EOFError, ValueError, zipfile.BadZipFile, zipfile.LargeZipFile,
            struct.error, KeyError) as exc:
        return f"it cannot be read as an .npz archive ({type(exc).__name__}: {exc})"
    return None


@contextlib.contextmanager
def _quiet_tifffile() -> Iterator[None]:
    """tifffile logs what it finds wrong with a damaged file; the caller says it once."""
    logger = logging.getLogger("tifffile")
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        logger.setLevel(level)


def tiff_problem(path: Path | str, shape: tuple[int, ...], dtype: Any) -> str | None:
    """What is wrong with the TIFF stack at ``path`` against ``shape`` ``(n, E, E)`` and the
    images' ``dtype`` (as rendered: see :func:`tiff_dtype`), or None."""
    import tifffile

    path = Path(path)
    want_dtype = tiff_dtype(dtype)
    try:
        size = path.stat().st_size
        with _quiet_tifffile(), tifffile.TiffFile(path) as tif:
            pages = tif.pages
            n = len(pages)
            if n != shape[0]:
                return f"it holds {n} images, expected {shape[0]}"
            first, last = pages[0], pages[-1]
            if tuple(first.shape) != tuple(shape[1:]) or first.dtype != want_dtype:
                return (f"its images are {_describe(first.shape, first.dtype)}, expected "
                        f"{_describe(shape[1:], want_dtype)}")
            ends = [o + c for o, c in zip(last.dataoffsets, last.databytecounts)]
            if not ends or max(ends) > size:
                return "its last image lies beyond the end of the file"
            # the last page's directory (and the values it points to) are written last
            form = tif.tiff
            ends = [last.offset + form.tagnosize + len(last.tags) * form.tagsize
                    + form.offsetsize]
            ends += [t.valueoffset + t.valuebytecount for t in last.tags.values()]
            if max(ends) > size:
                return "its last image's directory runs past the end of the file"
    except (OSError, ValueError, EOFError, struct.error, IndexError,
            tifffile.TiffFileError) as exc:
        return f"it cannot be read as a TIFF stack ({type(exc).__name__}: {exc})"
    return None


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _chunk_files(folder: Path, meta: Mapping[str, Any]) -> Iterator[Path]:
    """Every chunk (or shard) file of the array at ``folder``, as zarr names them."""
    shape = [int(s) for s in meta["shape"]]
    grid = [int(c) for c in meta["chunk_grid"]["configuration"]["chunk_shape"]]
    encoding = meta.get("chunk_key_encoding", {})
    sep = encoding.get("configuration", {}).get("separator", "/")
    default = encoding.get("name", "default") == "default"
    counts = [max(1, math.ceil(s / c)) if s else 0 for s, c in zip(shape, grid)]
    for index in np.ndindex(*counts):
        parts = [str(i) for i in index]
        key = (sep.join(["c", *parts]) if default else sep.join(parts)) if parts else "c"
        yield folder.joinpath(*key.split("/"))


def zarr_group_problem(path: Path | str, layout: Layout) -> str | None:
    """What is wrong with the zarr group of one stack at ``path`` against ``layout``, or
    None."""
    path = Path(path)
    try:
        group = _read_json(path / "zarr.json")
        if group.get("node_type") != "group":
            return "its zarr.json is not a group's"
        arrays = {p.name for p in path.iterdir() if (p / "zarr.json").is_file()}
        if arrays != set(layout):
            missing = sorted(set(layout) - arrays)
            extra = sorted(arrays - set(layout))
            return ("its arrays differ from the expected ones"
                    + (f" (missing {', '.join(missing)})" if missing else "")
                    + (f" (unexpected {', '.join(extra)})" if extra else ""))
        for key, (shape, dtype) in layout.items():
            meta = _read_json(path / key / "zarr.json")
            got_shape = tuple(int(s) for s in meta["shape"])
            got_dtype = np.dtype(meta["data_type"])
            if got_shape != tuple(shape) or got_dtype != np.dtype(dtype):
                return (f"{key} is {_describe(got_shape, got_dtype)}, expected "
                        f"{_describe(shape, dtype)}")
            for chunk in _chunk_files(path / key, meta):
                if not chunk.is_file() or chunk.stat().st_size == 0:
                    return f"{key} lacks its chunk {chunk.relative_to(path / key)}"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"it cannot be read as a zarr group ({type(exc).__name__}: {exc})"
    return None
