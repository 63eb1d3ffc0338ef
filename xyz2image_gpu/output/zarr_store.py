"""Streaming zarr v3 stores: :class:`ZarrStackWriter` writes one stack (one input file x one
stack) as a group of arrays of a run's store, chunk by chunk while the batches arrive, every
array chunked along images, so that memory is bounded by one chunk per array, not by the
stack.

Layout (a contract that readers use)::

    OUTPUT/stacks.zarr/zarr.json                 root group; attributes: the run's settings
                                                 and manifest ("xyz2image_gpu")
    OUTPUT/stacks.zarr/<stem>/zarr.json          one group per input file
    OUTPUT/stacks.zarr/<stem>/<stack:04d>/       one group per stack: the same arrays and
                                                 names as the stack's .npz

A stack's group is written under a temporary name in the output folder (outside the store,
so no reader lists it) and renamed into the store when every chunk is written: a unit's
arrays are complete or absent, whoever writes them (the CLI's threads or processes, or one
worker of a cluster per unit), and nothing else of the store is touched by a unit but the
(idempotent) creation of its parent groups.

Bytes are reproducible: a chunk always holds the same images (chunks are cut at fixed image
indices, whatever the batch size), is encoded alone, and the metadata has no dates; chunks
compressed by the CPU do not depend on the number of threads.

Encoding. Chunks of a store without sharding are encoded by numcodecs (the library zarr
delegates its compressors to) on this writer's own threads and written as files where zarr
puts them (``<array>/c/<i>/0/...``); the bytes equal what zarr's own ``array[...] = ...``
writes (tested), at about two to three times its speed here (zarr's asyncio path has a
fixed cost per chunk; benchmarks/README.md). Sharded arrays, and compression on the GPU,
go through zarr itself.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import shutil
import sys
import warnings
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ._rows import check_batch, check_complete
from .atomic import _CompleteOrAbort, _names_path, temporary_path

__all__ = [
    "CODECS",
    "DEFAULT_CHUNK_IMAGES",
    "STORE_NAME",
    "ZarrStackWriter",
    "ZarrUnavailableError",
    "check_codec_level",
    "codec_default_level",
    "group_staging_path",
    "require_zarr",
    "stack_group_path",
    "store_path",
    "write_store_attributes",
]

#: The store's folder name inside the output folder.
STORE_NAME = "stacks.zarr"
#: Images per chunk by default (a 128 px uint8 image: 4 MiB chunks).
DEFAULT_CHUNK_IMAGES = 256
#: At most this many raw bytes per chunk: arrays with big rows (3D volumes) get fewer images
#: per chunk than ``chunk_images`` (a 128³ bool volume: 8 a chunk).
MAX_CHUNK_BYTES = 16 << 20
#: The store's own key in its root attributes.
ATTRIBUTE_KEY = "xyz2image_gpu"

#: Codec names: zstd (the default), LZ4 (numcodecs' codec, outside the zarr v3
#: specification: zarr-python with numcodecs reads it), Blosc with each of its compressors
#: (byte shuffle), and none. Not gzip: its header holds the time of writing (numcodecs
#: sets no fixed mtime), so its chunks would differ from run to run; blosc-zlib is deflate.
CODECS = ("zstd", "lz4", "blosc-lz4", "blosc-lz4hc", "blosc-zstd", "blosc-zlib",
          "blosc-blosclz", "none")
#: Valid levels per codec: zstd 1-22; lz4 is an acceleration (1 = most compression);
#: blosc 0-9.
_LEVELS = {"zstd": (1, 22), "lz4": (1, 65537), "none": (0, 0)}
_BLOSC_LEVELS = (0, 9)

_EXTRA_HINT = ("pip install 'xyz2image-gpu[zarr]' (zarr >= 3, which needs Python >= 3.11)")


class ZarrUnavailableError(RuntimeError):
    """zarr v3 cannot be imported here (not installed, too old, or Python < 3.11)."""


def require_zarr() -> Any:
    """Import and return :mod:`zarr` (v3); :class:`ZarrUnavailableError` naming the
    ``zarr`` extra otherwise."""
    if sys.version_info < (3, 11):
        raise ZarrUnavailableError(
            f"--format zarr needs zarr >= 3, which needs Python >= 3.11 (this is "
            f"{sys.version_info.major}.{sys.version_info.minor}); use --format npz, or "
            f"{_EXTRA_HINT}")
    try:
        import zarr
    except ImportError as exc:
        raise ZarrUnavailableError(
            f"--format zarr needs the zarr extra ({exc}): {_EXTRA_HINT}") from None
    if int(zarr.__version__.split(".")[0]) < 3:
        raise ZarrUnavailableError(
            f"--format zarr needs zarr >= 3, found {zarr.__version__}: {_EXTRA_HINT}")
    return zarr


def codec_default_level(codec: str) -> int:
    """The level a codec uses when none is given: 1 (fast: zstd 1, blosc 1, lz4
    acceleration 1), 0 for none."""
    return 0 if codec == "none" else 1


def check_codec_level(codec: str, level: int) -> None:
    """ValueError naming the codec's range when ``level`` is outside it."""
    if codec not in CODECS:
        raise ValueError(f"unknown codec {codec!r}; choose from {', '.join(CODECS)}")
    low, high = _BLOSC_LEVELS if codec.startswith("blosc-") else _LEVELS[codec]
    if not low <= int(level) <= high:
        what = "acceleration" if codec == "lz4" else "level"
        raise ValueError(f"codec {codec} takes a {what} from {low} to {high}, got {level}")


def store_path(output_folder: Path | str) -> Path:
    """``OUTPUT/stacks.zarr``."""
    return Path(output_folder) / STORE_NAME


def stack_group_path(output_folder: Path | str, stem: str, stack: int) -> Path:
    """``OUTPUT/stacks.zarr/<stem>/<stack:04d>``: one stack's group."""
    return store_path(output_folder) / stem / f"{stack:04d}"


def group_staging_path(output_folder: Path | str, stem: str, stack: int) -> Path:
    """``OUTPUT/<stem>_<stack:04d>.zarr``: the name whose temporary (outside the store) holds
    a stack's group while it is written."""
    return Path(output_folder) / f"{stem}_{stack:04d}.zarr"


def _group_json(attributes: Mapping[str, Any]) -> dict[str, Any]:
    return {"attributes": dict(attributes), "zarr_format": 3, "consolidated_metadata": None,
            "node_type": "group"}


def _write_json_atomic(path: Path, data: Any) -> None:
    tmp = temporary_path(path)
    try:
        tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _ensure_group(folder: Path) -> None:
    """Make ``folder`` a zarr group (an empty one) unless it is one already; safe when
    several writers do it at once (the same bytes, written by atomic rename)."""
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "zarr.json").exists():
        _write_json_atomic(folder / "zarr.json", _group_json({}))


def write_store_attributes(output_folder: Path | str, attributes: Mapping[str, Any]) -> Path:
    """Create the run's store if needed and set its root attributes (``"xyz2image_gpu"``:
    the run's settings and manifest), by atomic rename."""
    root = store_path(output_folder)
    root.mkdir(parents=True, exist_ok=True)
    _write_json_atomic(root / "zarr.json", _group_json({ATTRIBUTE_KEY: dict(attributes)}))
    return root


# ------------------------------------------------------------------------------ codecs


def _zarr_compressors(codec: str, level: int, itemsize: int) -> list[Any]:
    """zarr's codec objects for the array metadata (and zarr's own writes)."""
    from zarr.codecs import BloscCodec, ZstdCodec

    if codec == "none":
        return []
    if codec == "zstd":
        return [ZstdCodec(level=level, checksum=False)]
    if codec == "lz4":
        from zarr.codecs.numcodecs import LZ4

        with warnings.catch_warnings():  # "not in the zarr v3 specification": said in --help
            warnings.simplefilter("ignore")
            return [LZ4(acceleration=level)]
    return [BloscCodec(cname=codec.split("-", 1)[1], clevel=level, shuffle="shuffle",
                       typesize=itemsize, blocksize=0)]


def _numcodecs_encoder(codec: str, level: int, itemsize: int) -> Any:
    """The numcodecs codec that encodes a chunk as :func:`_zarr_compressors` does, or None
    for no compression (the bytes as they are)."""
    import numcodecs

    if codec == "none":
        return None
    if codec == "zstd":
        return numcodecs.Zstd(level=level, checksum=False)
    if codec == "lz4":
        return numcodecs.LZ4(acceleration=level)
    return numcodecs.Blosc(cname=codec.split("-", 1)[1], clevel=level,
                           shuffle=numcodecs.Blosc.SHUFFLE, blocksize=0, typesize=itemsize)


def _encode_and_write(encoder: Any, chunk: np.ndarray, path: Path) -> int:
    """Encode one chunk (little-endian bytes, then the compressor) into ``path``; return
    the bytes written."""
    raw = memoryview(chunk).cast("B")
    data = raw if encoder is None else encoder.encode(raw)
    with open(path, "wb") as fh:
        fh.write(data)
    return len(data)


class _ArrayStream:
    """One array of a stack: its chunk buffer, filled row by row."""

    def __init__(self, key: str, shape: tuple[int, ...], dtype: np.dtype, chunk_rows: int,
                 buffer_rows: int) -> None:
        self.key = key
        self.shape = shape
        self.dtype = dtype.newbyteorder("<") if dtype.byteorder == ">" else dtype
        self.chunk_rows = chunk_rows
        self.buffer_rows = buffer_rows  # rows written at once: a chunk, or a shard
        self.rows = 0  # rows appended
        self.flushed = 0  # rows handed to the encoder
        self.buffer: np.ndarray | None = None
        self.filled = 0

    def take(self, arr: Any, xp: Any = np) -> list[tuple[int, Any]]:
        """Append rows; return the full buffers ``(first row, rows)`` ready to write
        (``xp``: the array module of ``arr`` and of the buffers, NumPy or CuPy)."""
        out: list[tuple[int, np.ndarray]] = []
        pos = 0
        n = arr.shape[0]
        while pos < n:
            if self.buffer is None:
                rows = min(self.buffer_rows, self.shape[0] - self.flushed)
                if self.filled == 0 and n - pos >= rows:  # a whole buffer in the batch
                    out.append((self.flushed, xp.ascontiguousarray(arr[pos:pos + rows],
                                                                   dtype=self.dtype)))
                    self.flushed += rows
                    pos += rows
                    continue
                self.buffer = xp.empty((rows, *self.shape[1:]), self.dtype)
            take = min(self.buffer.shape[0] - self.filled, n - pos)
            self.buffer[self.filled:self.filled + take] = arr[pos:pos + take]
            self.filled += take
            pos += take
            if self.filled == self.buffer.shape[0]:
                out.append((self.flushed, self.buffer))
                self.flushed += self.buffer.shape[0]
                self.buffer = None
                self.filled = 0
        self.rows += n
        return out


class ZarrStackWriter(_CompleteOrAbort):
    """Write one stack's arrays as a zarr v3 group, one batch of images at a time.

    Parameters
    ----------
    output_folder : path-like
        The run's output folder; the group goes to
        ``OUTPUT/stacks.zarr/<stem>/<stack:04d>`` (:func:`stack_group_path`) when
        :meth:`close` succeeds, and nothing is under that name before.
    stem : str
        The input file's stem (its group's name).
    stack : int
    layout : mapping of str to (shape, dtype)
        Every array's full shape and dtype; axis 0 counts images (all arrays the same
        length).
    codec : str, optional
        One of :data:`CODECS` (default zstd).
    level : int, optional
        The codec's level (:func:`check_codec_level`); default :func:`codec_default_level`.
    chunk_images : int, optional
        Images per chunk (default 256); fewer for arrays whose rows are big, so that a chunk
        holds at most 16 MiB raw. The last chunk of an array is padded with zeros, as zarr
        does. Memory: one chunk being filled per array, and at most ``2 * threads`` chunks
        being encoded (sharded arrays: shards).
    shard_images : int, optional
        Images per shard (a multiple of the chunk's): chunks grouped into one file each
        (zarr's sharding codec), for small chunks (random access) without many small files;
        a shard is buffered whole. Default None: no sharding.
    threads : int, optional
        Threads encoding chunks in parallel (the compressors release the GIL); default: every
        core this process may use. The bytes do not depend on it.
    attributes : mapping, optional
        The group's attributes (JSON).
    device_xp : module, optional
        CuPy, to compress on the GPU through zarr's GPU codec path (the caller asks
        :func:`..backend.zarr_gpu_codec` first): batches are then device arrays, chunks are
        buffered on the device and only compressed chunks cross the bus. Default None: the
        CPU.
    """

    def __init__(self, output_folder: Path | str, stem: str, stack: int,
                 layout: Mapping[str, tuple[tuple[int, ...], Any]], *, codec: str = "zstd",
                 level: int | None = None, chunk_images: int = DEFAULT_CHUNK_IMAGES,
                 shard_images: int | None = None, threads: int | None = None,
                 attributes: Mapping[str, Any] | None = None,
                 device_xp: Any = None) -> None:
        zarr = require_zarr()
        from ..backend import available_cores

        level = codec_default_level(codec) if level is None else int(level)
        check_codec_level(codec, level)
        if not layout:
            raise ValueError("layout is empty: nothing to write")
        if int(chunk_images) < 1:
            raise ValueError(f"chunk_images must be >= 1, got {chunk_images}")
        if shard_images is not None and (int(shard_images) < int(chunk_images)
                                         or int(shard_images) % int(chunk_images)):
            raise ValueError(f"shard_images ({shard_images}) must be a multiple of "
                             f"chunk_images ({chunk_images})")
        lengths = {int(shape[0]) for shape, _ in layout.values()}
        if len(lengths) != 1:
            raise ValueError(f"layout arrays differ in length (axis 0): {sorted(lengths)}")
        self.n_rows = lengths.pop()
        self.codec, self.level = codec, level
        self.path = stack_group_path(output_folder, stem, stack)
        self.threads = available_cores() if threads is None else max(1, int(threads))
        self.gpu_compression = device_xp is not None
        self._xp = device_xp
        # outside the store: no reader lists a stack being written
        self._tmpdir = temporary_path(group_staging_path(output_folder, stem, stack))
        self._closed = False
        self._pool: ThreadPoolExecutor | None = None
        self._inflight: collections.deque[Any] = collections.deque()
        self._window = 2 * self.threads
        self._streams: list[_ArrayStream] = []
        self._arrays: dict[str, Any] = {}
        self._encoders: dict[str, Any] = {}
        self.compressed_bytes = 0
        self._tmpdir.mkdir(parents=True, exist_ok=False)
        try:
            group = zarr.open_group(self._tmpdir, mode="w", zarr_format=3,
                                    attributes=dict(attributes or {}))
            for key, (shape, dtype) in layout.items():
                shape = tuple(int(s) for s in shape)
                dtype = np.dtype(dtype)
                row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
                chunk_rows = max(1, min(int(chunk_images), MAX_CHUNK_BYTES // max(1, row_bytes),
                                        max(1, shape[0])))
                shard_rows = None
                if shard_images is not None:
                    shard_rows = chunk_rows * max(1, int(shard_images) // int(chunk_images))
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # lz4: outside the v3 specification
                    self._arrays[key] = group.create_array(
                        key, shape=shape, dtype=dtype,
                        chunks=(chunk_rows, *shape[1:]),
                        shards=None if shard_rows is None else (shard_rows, *shape[1:]),
                        compressors=_zarr_compressors(codec, level, dtype.itemsize),
                        fill_value=False if dtype == np.bool_ else 0,
                        config={"write_empty_chunks": True})
                self._encoders[key] = _numcodecs_encoder(codec, level, dtype.itemsize)
                self._streams.append(_ArrayStream(key, shape, dtype, chunk_rows,
                                                  shard_rows or chunk_rows))
            self._direct = shard_images is None and not self.gpu_compression
            if self.gpu_compression:
                # codec objects come from zarr's registry as an array is opened: opened under
                # the GPU configuration, zstd is its GPU codec (the metadata is the same)
                from ..backend import zarr_gpu_config

                with zarr_gpu_config():  # the runtime config is not stored: set it again
                    self._arrays = {key: zarr.open_array(self._tmpdir / key, mode="r+")
                                    .with_config({"write_empty_chunks": True})
                                    for key in self._arrays}
        except BaseException:
            self.abort()
            raise

    # -- writing -------------------------------------------------------------------------
    @_names_path
    def append(self, batch: Mapping[str, Any]) -> None:
        """Buffer the next rows of every array; encode and write the chunks they complete.

        Parameters
        ----------
        batch : mapping of str to ndarray
            Arrays for every layout key (extra keys ignored) with the layout's dtype and
            trailing shape, all with the same number of rows: host arrays, or CuPy arrays
            with ``gpu_compression``. They are copied (or, for whole chunks, only read
            until the chunk is written): do not modify them afterwards.
        """
        if self._closed:
            raise ValueError(f"{self.path}: writer is closed")
        as_array = (lambda a: a) if self.gpu_compression else np.asarray
        arrays = check_batch(self.path, self._streams, batch, as_array, what="array")
        for stream, arr in arrays:
            for start, rows in stream.take(arr, self._xp or np):
                self._submit(stream, start, rows)
        self._drain(self._window)

    def _chunk_file(self, stream: _ArrayStream, index: int) -> Path:
        """Where zarr keeps chunk ``index`` of an array chunked along axis 0 only:
        ``<key>/c/<index>/0/.../0`` (the v3 default chunk key encoding)."""
        parts = [str(index)] + ["0"] * (len(stream.shape) - 1)
        path = self._tmpdir.joinpath(stream.key, "c", *parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def _submit(self, stream: _ArrayStream, start: int, rows: Any) -> None:
        """Queue one buffer's encoding and write (on the pool, or here with one thread)."""
        if self._direct:
            chunk = rows
            if chunk.shape[0] < stream.chunk_rows:  # the last chunk: padded, as zarr does
                chunk = np.zeros((stream.chunk_rows, *stream.shape[1:]), stream.dtype)
                chunk[:rows.shape[0]] = rows
            job: tuple[Any, ...] = (_encode_and_write, self._encoders[stream.key], chunk,
                                    self._chunk_file(stream, start // stream.chunk_rows))
        else:
            job = (self._zarr_write, stream.key, start, rows)
        if self.threads > 1 and not self.gpu_compression:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="zarr-encode")
            self._inflight.append(self._pool.submit(*job))
        else:
            self._inflight.append(job[0](*job[1:]))

    def _zarr_write(self, key: str, start: int, rows: Any) -> int:
        """Write whole chunks (or shards) through zarr itself (sharding, the GPU codec)."""
        array = self._arrays[key]
        if self.gpu_compression:
            from ..backend import zarr_gpu_config

            with zarr_gpu_config():
                array[start:start + rows.shape[0]] = rows
        else:
            array[start:start + rows.shape[0]] = rows
        return 0

    def _drain(self, keep: int = 0) -> None:
        """Wait for writes, oldest first, until at most ``keep`` are in flight."""
        while len(self._inflight) > keep:
            job = self._inflight.popleft()
            self.compressed_bytes += job.result() if isinstance(job, Future) else job

    # -- finishing -----------------------------------------------------------------------
    @_names_path
    def close(self) -> None:
        """Write the last chunks and rename the group into the store; safe to call twice.

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
            check_complete(self.path, self._streams, self.n_rows)
            self._drain()  # every buffer is full and submitted once every row is appended
            self._publish()
        except BaseException:
            self.abort()
            raise
        self._cleanup()

    def _publish(self) -> None:
        """Rename the finished group to its final name (replacing an older one there)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _ensure_group(self.path.parent.parent)
        _ensure_group(self.path.parent)
        old = None
        if self.path.exists():  # rendered again (--overwrite, or not recorded complete)
            old = self._tmpdir.with_name(self._tmpdir.name[:-4] + ".old.tmp")
            os.replace(self.path, old)
        os.replace(self._tmpdir, self.path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def abort(self) -> None:
        """Drop everything written so far; nothing reaches :attr:`path`."""
        self._cleanup()

    def _cleanup(self) -> None:
        self._closed = True
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._inflight.clear()
        for stream in self._streams:
            stream.buffer = None
        shutil.rmtree(self._tmpdir, ignore_errors=True)
