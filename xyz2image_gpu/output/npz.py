"""Streaming ``.npz`` stacks: :class:`NpzStreamWriter` writes an archive (what ``np.load``
reads) member by member, every member deflate-compressed in parallel chunks while the batches
arrive, so memory is bounded by the batch, not by the stack (8000 rotations of a 128³
``delta_3d`` volume are 16 GB raw).

Outputs are byte-for-byte reproducible: zip dates are fixed at 1980-01-01, and compressed
bytes do not depend on the batch size or on the number of compression threads.
"""

from __future__ import annotations

import collections
import os
import shutil
import struct
import zlib
from collections.abc import Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ..backend import available_cores
from . import _zip
from ._rows import check_batch, check_complete
from ._zip import (
    _DOS_DATE,
    _DOS_TIME,
    _EXTERNAL_ATTR,
    _MADE_BY_UNIX,
    _VERSION_DEFLATE,
    _VERSION_ZIP64,
    _ZIP_MAX_ENTRIES,
    _copy_stream,
    _npy_header,
    crc32_combine,
)
from .atomic import _CompleteOrAbort, _names_path, temporary_path

__all__ = [
    "NpzStreamWriter",
    "default_compression_threads",
]

# Deflate input is cut into chunks of this many bytes of the member's stream (npy header +
# data), at fixed offsets. Each chunk is compressed on its own (primed with the previous
# 32 KiB as dictionary, ended with a sync flush, as pigz does), so chunks compress in
# parallel and the bytes do not depend on how the data was split into batches.
_CHUNK_BYTES = 1 << 20
_DICT_BYTES = 1 << 15
_MEM_LEVEL = 8  # zlib's default, as zipfile and np.savez_compressed use


def default_compression_threads() -> int:
    """Threads used to compress one archive's batch by default: every core this process
    may run on (its CPU affinity, e.g. under a batch scheduler), at most 64.

    With a GPU rendering, deflate is the whole host-side cost, so every core compresses.
    """
    return min(64, available_cores())


def _deflate_chunk(data: Any, zdict: bytes, level: int, strategy: int,
                   final: bool) -> tuple[bytes, int, int]:
    """Raw-deflate one chunk, primed with ``zdict``; a sync flush unless it is the last.

    Returns the compressed bytes, the chunk's CRC-32 and its length.
    """
    crc = zlib.crc32(data)
    if zdict:
        comp = zlib.compressobj(level, zlib.DEFLATED, -15, _MEM_LEVEL, strategy, zdict)
    else:
        comp = zlib.compressobj(level, zlib.DEFLATED, -15, _MEM_LEVEL, strategy)
    out = comp.compress(data)
    return (out + comp.flush(zlib.Z_FINISH if final else zlib.Z_SYNC_FLUSH), crc,
            memoryview(data).nbytes)


class _Member:
    """One ``<key>.npy`` member: its compressed stream in a temporary file, CRC and sizes."""

    def __init__(self, key: str, shape: tuple[int, ...], dtype: np.dtype, folder: Path,
                 index: int, strategy: int) -> None:
        self.key = key
        self.strategy = strategy
        self.name = f"{key}.npy"
        self.shape = shape
        self.dtype = dtype
        self.rows = 0
        self.crc = 0
        self.raw_size = 0
        self.compressed_size = 0
        self.path = folder / f"member{index:03d}.deflate"
        self.fh = open(self.path, "wb")  # noqa: SIM115 - closed in close()
        self.pending = bytearray()  # start of the next chunk (less than _CHUNK_BYTES)
        self.tail = b""  # last 32 KiB of the previous chunk: the next chunk's dictionary

    def chunks(self, data: memoryview) -> list[Any]:
        """Split ``data`` (appended to the stream) into whole chunks; keep the remainder."""
        out: list[Any] = []
        pos = 0
        if self.pending:
            need = _CHUNK_BYTES - len(self.pending)
            self.pending += data[:need]
            pos = need
            if len(self.pending) < _CHUNK_BYTES:
                return out
            out.append(bytes(self.pending))
            self.pending = bytearray()
        while data.nbytes - pos >= _CHUNK_BYTES:
            out.append(data[pos:pos + _CHUNK_BYTES])
            pos += _CHUNK_BYTES
        self.pending += data[pos:]
        return out

    def close(self) -> None:
        if not self.fh.closed:
            self.fh.close()


class NpzStreamWriter(_CompleteOrAbort):
    """Write an ``.npz`` archive incrementally, one batch of images at a time.

    Each member (``<key>.npy``) is deflate-compressed as its batches arrive into its own
    temporary stream; :meth:`close` assembles the archive and renames it into place. The
    result loads with ``np.load(path, allow_pickle=False)`` like the output of
    ``np.savez_compressed`` with the same arrays.

    Parameters
    ----------
    path : path-like
        Final ``.npz`` path. Nothing exists under it until :meth:`close` succeeds.
    layout : mapping of str to (shape, dtype)
        Every member's full shape and dtype; axis 0 counts images (all members the same
        length). Each :meth:`append` must bring every key with the same number of rows.
    compress_level : int, optional
        zlib level 0-9 (default 6, as ``np.savez_compressed``).
    threads : int, optional
        Threads compressing a batch's chunks in parallel (zlib releases the GIL);
        default :func:`default_compression_threads`. 1 compresses on the calling thread.
        The bytes written do not depend on it.
    rle_for_bool : bool, optional
        Compress ``bool`` members (delta/binary labels: long runs of zeros) with zlib's
        run-length strategy (default True): still deflate, faster than the default
        strategy on sparse label volumes at a similar size (figures: benchmarks/README.md).

    Notes
    -----
    Why the ZIP container is written by hand: :mod:`zipfile` allows only one open write
    handle per archive, so members cannot grow side by side as batches arrive, and holding
    a whole stack in memory to write members one after another is what this class exists
    to avoid. So every member is compressed into its own temporary raw-deflate stream (CRC-32
    and sizes tracked) and :meth:`close` writes the container around them: local headers,
    data, central directory, and zip64 records where sizes or offsets pass 4 GiB. Dates are
    fixed (1980-01-01) so that identical arrays give identical files.

    Deflate input is cut into 1 MiB chunks at fixed offsets of each member's stream, each
    compressed independently (primed with the previous 32 KiB, ended by a sync flush, as
    pigz does); chunks of one batch compress in parallel threads, each also computing its
    CRC-32 (joined with :func:`crc32_combine`), and the compressed bytes depend neither on
    the batch size nor on the thread count (they do depend on the zlib build).
    """

    def __init__(self, path: Path | str,
                 layout: Mapping[str, tuple[tuple[int, ...], Any]],
                 compress_level: int = 6, threads: int | None = None,
                 rle_for_bool: bool = True) -> None:
        if not 0 <= int(compress_level) <= 9:
            raise ValueError(f"compress_level must be 0-9, got {compress_level}")
        if not layout:
            raise ValueError("layout is empty: nothing to write")
        self.path = Path(path)
        self.compress_level = int(compress_level)
        self.threads = default_compression_threads() if threads is None else max(1, int(threads))
        lengths = {int(shape[0]) for shape, _ in layout.values()}
        if len(lengths) != 1:
            raise ValueError(f"layout members differ in length (axis 0): {sorted(lengths)}")
        self.n_rows = lengths.pop()
        self._tmpdir = temporary_path(self.path)
        self._tmpdir.mkdir(parents=False, exist_ok=False)
        self._members: list[_Member] = []
        self._pool: ThreadPoolExecutor | None = None
        # chunks submitted and not yet written, oldest first; up to _window stay in flight
        self._inflight: collections.deque[tuple[_Member, Any]] = collections.deque()
        self._window = 4 * self.threads if self.threads > 1 else 0
        self._closed = False
        try:
            for i, (key, (shape, dtype)) in enumerate(layout.items()):
                dtype = np.dtype(dtype)
                strategy = (zlib.Z_RLE if rle_for_bool and dtype == np.bool_
                            else zlib.Z_DEFAULT_STRATEGY)
                member = _Member(key, tuple(int(s) for s in shape), dtype, self._tmpdir, i,
                                 strategy)
                self._members.append(member)
                self._feed(member, memoryview(_npy_header(member.shape, member.dtype)))
        except BaseException:
            self.abort()
            raise

    # -- writing -------------------------------------------------------------------------
    @property
    def rows_written(self) -> int:
        """Images appended so far."""
        return self._members[0].rows

    @_names_path
    def append(self, batch: Mapping[str, np.ndarray]) -> None:
        """Compress the next rows of every member.

        Parameters
        ----------
        batch : mapping of str to ndarray
            Host arrays for every layout key (extra keys are ignored), with the layout's
            dtype and trailing shape, all with the same number of rows. With several
            threads the last few chunks may still be compressing when this returns: do not
            modify the arrays afterwards (the renderer's batches are fresh arrays, or on the
            GPU views of buffers it reuses only once nothing refers to them any more).
        """
        if self._closed:
            raise ValueError(f"{self.path}: writer is closed")
        views = []
        for member, arr in check_batch(self.path, self._members, batch):
            flat = np.ascontiguousarray(arr).reshape(-1).view(np.uint8)
            views.append((member, memoryview(flat), arr.shape[0]))
        for member, view, rows in views:
            self._submit(member, member.chunks(view), final=False)
            member.rows += rows
        # Results are written in order, but only the oldest beyond a window are waited for:
        # the pool keeps compressing across batches instead of idling at the end of each
        # (measured gain: benchmarks/README.md).
        self._drain(self._window)

    def _submit(self, member: _Member, chunks: Iterable[Any], final: bool) -> None:
        """Queue the chunks' compression (on the pool, or here with one thread) in order."""
        chunks = list(chunks)
        for i, chunk in enumerate(chunks):
            last = final and i == len(chunks) - 1
            zdict = member.tail
            member.tail = bytes(chunk[-_DICT_BYTES:]) if len(chunk) else member.tail
            if self.threads > 1:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(self.threads,
                                                    thread_name_prefix="npz-deflate")
                job = self._pool.submit(_deflate_chunk, chunk, zdict, self.compress_level,
                                        member.strategy, last)
            else:
                job = _deflate_chunk(chunk, zdict, self.compress_level, member.strategy, last)
            self._inflight.append((member, job))

    def _drain(self, keep: int = 0) -> None:
        """Write finished chunks, oldest first, until at most ``keep`` are in flight."""
        while len(self._inflight) > keep:
            member, result = self._inflight.popleft()
            data, crc, size = result.result() if isinstance(result, Future) else result
            member.crc = crc32_combine(member.crc, crc, size)
            member.raw_size += size
            member.fh.write(data)
            member.compressed_size += len(data)

    def _feed(self, member: _Member, data: memoryview) -> None:
        self._submit(member, member.chunks(data), final=False)
        self._drain()

    # -- finishing -----------------------------------------------------------------------
    @_names_path
    def close(self) -> None:
        """Finish every member, write the archive and rename it to :attr:`path`.

        Safe to call twice (the second call does nothing).

        Raises
        ------
        ValueError
            Fewer rows than the layout declared were appended (temporaries are removed).
        OSError
            Writing failed (temporaries are removed); it names :attr:`path`.
        """
        if self._closed:
            return
        try:
            check_complete(self.path, self._members, self.n_rows)
            for member in self._members:
                last = bytes(member.pending)
                member.pending = bytearray()
                self._submit(member, [last], final=True)
            self._drain()
            for member in self._members:
                member.close()
            archive = self._tmpdir / "archive.npz"
            self._assemble(archive)
            os.replace(archive, self.path)
        except BaseException:
            self.abort()
            raise
        self._cleanup()

    def abort(self) -> None:
        """Drop everything written so far (temporaries removed); nothing reaches :attr:`path`."""
        self._cleanup()

    def _cleanup(self) -> None:
        self._closed = True
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._inflight.clear()
        for member in self._members:
            member.close()
        shutil.rmtree(self._tmpdir, ignore_errors=True)


    def _assemble(self, archive: Path) -> None:
        """Write the ZIP container (APPNOTE 6.3) around the members' deflate streams."""
        central: list[bytes] = []
        with open(archive, "wb") as out:
            for member in self._members:
                offset = out.tell()
                name = member.name.encode("ascii")
                usize, csize = member.raw_size, member.compressed_size
                big = usize >= _zip._ZIP64_LIMIT or csize >= _zip._ZIP64_LIMIT
                extra = struct.pack("<HHQQ", 1, 16, usize, csize) if big else b""
                version = _VERSION_ZIP64 if big or offset >= _zip._ZIP64_LIMIT else _VERSION_DEFLATE
                out.write(struct.pack(
                    "<IHHHHHIIIHH", 0x04034B50, version, 0, zlib.DEFLATED, _DOS_TIME,
                    _DOS_DATE, member.crc, 0xFFFFFFFF if big else csize,
                    0xFFFFFFFF if big else usize, len(name), len(extra)))
                out.write(name + extra)
                with open(member.path, "rb") as src:
                    _copy_stream(src, out, csize)
                member.path.unlink()
                # central directory: zip64 fields only for values that overflow, in order
                fields = []
                if usize >= _zip._ZIP64_LIMIT:
                    fields.append(usize)
                if csize >= _zip._ZIP64_LIMIT:
                    fields.append(csize)
                if offset >= _zip._ZIP64_LIMIT:
                    fields.append(offset)
                cextra = (struct.pack("<HH", 1, 8 * len(fields))
                          + struct.pack(f"<{len(fields)}Q", *fields)) if fields else b""
                central.append(struct.pack(
                    "<IHHHHHHIIIHHHHHII", 0x02014B50, _MADE_BY_UNIX | version, version, 0,
                    zlib.DEFLATED, _DOS_TIME, _DOS_DATE, member.crc,
                    min(csize, 0xFFFFFFFF), min(usize, 0xFFFFFFFF), len(name), len(cextra),
                    0, 0, 0, _EXTERNAL_ATTR, min(offset, 0xFFFFFFFF)) + name + cextra)
            cd_offset = out.tell()
            out.writelines(central)
            cd_size = out.tell() - cd_offset
            n = len(central)
            limit = _zip._ZIP64_LIMIT
            if n > _ZIP_MAX_ENTRIES or cd_offset >= limit or cd_size >= limit:
                eocd64 = out.tell()
                out.write(struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, _MADE_BY_UNIX | 45, 45,
                                      0, 0, n, n, cd_size, cd_offset))
                out.write(struct.pack("<IIQI", 0x07064B50, 0, eocd64, 1))
            out.write(struct.pack(
                "<IHHHHIIH", 0x06054B50, 0, 0, min(n, 0xFFFF), min(n, 0xFFFF),
                min(cd_size, 0xFFFFFFFF), min(cd_offset, 0xFFFFFFFF), 0))
            out.flush()
            os.fsync(out.fileno())
