"""The zip container of ``.npz`` files: npy headers, zip constants, CRC-32 arithmetic and
stream copies.

Hand-written rather than :mod:`zipfile` because the members are deflated in parallel chunks,
which :mod:`zipfile` cannot take (see :class:`~.npz.NpzStreamWriter`, Notes).
"""

from __future__ import annotations

import functools
import io
import os
import shutil
import zlib
from typing import Any

import numpy as np

__all__ = [
    "crc32_combine",
]

# ZIP format constants (APPNOTE.TXT). _ZIP64_LIMIT is a module variable so tests can lower
# it and exercise the zip64 records without writing 4 GiB.
_ZIP64_LIMIT = 0xFFFFFFFF
_ZIP_MAX_ENTRIES = 0xFFFF
_DOS_TIME = 0  # 00:00:00
_DOS_DATE = (0 << 9) | (1 << 5) | 1  # 1980-01-01: fixed, so outputs are reproducible
_EXTERNAL_ATTR = (0o100644 << 16) & 0xFFFFFFFF  # regular file, rw-r--r--
_VERSION_DEFLATE = 20
_VERSION_ZIP64 = 45
_MADE_BY_UNIX = 3 << 8


def _npy_header(shape: tuple[int, ...], dtype: np.dtype) -> bytes:
    """The ``.npy`` header (magic, version, dict) for a C-ordered array of shape and dtype."""
    header = {
        "descr": np.lib.format.dtype_to_descr(dtype),
        "fortran_order": False,
        "shape": tuple(int(s) for s in shape),
    }
    buf = io.BytesIO()
    try:
        np.lib.format.write_array_header_1_0(buf, header)
    except ValueError:  # header longer than 64 KiB: needs format 2.0
        buf = io.BytesIO()
        np.lib.format.write_array_header_2_0(buf, header)
    return buf.getvalue()


# CRC-32 of a concatenation from the CRCs of its parts, so that each chunk's CRC is computed
# on the compression threads: zlib.crc32_combine where Python has it (3.15 and later),
# else the same algorithm written here: crc(A + B) = crc(A) * x^(8 len(B)) + crc(B) in
# GF(2)[x] modulo the CRC polynomial, in zlib's reflected bit order.
_CRC_POLY = 0xEDB88320


def _multmodp(a: int, b: int) -> int:
    """a * b modulo the CRC-32 polynomial (reflected: bit 31 is x^0)."""
    m = 1 << 31
    p = 0
    while True:
        if a & m:
            p ^= b
            if a & (m - 1) == 0:
                return p
        m >>= 1
        b = (b >> 1) ^ _CRC_POLY if b & 1 else b >> 1


def _x2n_table() -> list[int]:
    table = [1 << 30]  # x^1
    for _ in range(31):
        table.append(_multmodp(table[-1], table[-1]))  # x^(2^k)
    return table


_X2N = _x2n_table()


@functools.lru_cache(maxsize=64)
def _x8nmodp(n: int) -> int:
    """x^(8 n) modulo the CRC-32 polynomial."""
    p, k = 1 << 31, 3  # x^0; 8 = 2^3
    while n:
        if n & 1:
            p = _multmodp(_X2N[k & 31], p)
        n >>= 1
        k += 1
    return p


def _crc32_combine(crc1: int, crc2: int, len2: int) -> int:
    """CRC-32 of ``A + B`` from ``crc1 = crc32(A)``, ``crc2 = crc32(B)`` and ``len(B)``."""
    return _multmodp(_x8nmodp(len2), crc1) ^ crc2


#: CRC-32 of ``A + B`` from ``crc32(A)``, ``crc32(B)`` and ``len(B)``: zlib's own where the
#: :mod:`zlib` module exposes it, else :func:`_crc32_combine`.
crc32_combine = getattr(zlib, "crc32_combine", _crc32_combine)


def _copy_stream(src: Any, dst: Any, size: int) -> None:
    """Append ``size`` bytes of ``src`` to ``dst`` (both binary files, ``dst`` at its end).

    In the kernel with :func:`os.copy_file_range` where the system has it (Linux), which
    spares the copy through Python's buffers (benchmarks/README.md, "What limits the CPU").
    Elsewhere, or if the kernel refuses (older kernels across file systems),
    :func:`shutil.copyfileobj`.
    """
    dst.flush()
    done = 0
    copy_range = getattr(os, "copy_file_range", None)
    if copy_range is not None:
        try:
            while done < size:
                n = copy_range(src.fileno(), dst.fileno(), size - done)
                if n == 0:
                    break
                done += n
        except OSError:
            if done:
                raise  # part of it was copied: do not guess where the files stand
        dst.seek(0, os.SEEK_END)
        src.seek(done)
    shutil.copyfileobj(src, dst, 16 << 20)
