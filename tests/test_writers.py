"""Streaming writers: .npz round trips, reproducible bytes, zip64, TIFF stacks, the thread."""

from __future__ import annotations

import errno
import os
import threading
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile

from xyz2image_gpu import output as writers
from xyz2image_gpu.output import (
    BackgroundWriter,
    NpzStreamWriter,
    TiffStackWriter,
    _zip,
    is_temporary,
    remove_stale_temporaries,
    temporary_path,
)


def _arrays(n: int = 23) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    sparse = np.zeros((n, 24, 24, 24), dtype=bool)
    sparse.reshape(-1)[rng.integers(0, sparse.size, 500)] = True
    return {
        "gaussian_2d": rng.integers(0, 256, (n, 40, 40), dtype=np.uint8),
        "gaussian_3d": rng.integers(0, 65536, (n, 8, 9, 10), dtype=np.uint16),
        "delta_3d": sparse,
        "coordinates_3d": rng.integers(-5, 100, (n, 147, 3), dtype=np.int16),
        "rotations": rng.random((n, 3, 3)),
        "voxel_size": rng.random(n),
        "frame_index": np.arange(n, dtype=np.int32),
        "floats": rng.random((n, 5)).astype(np.float32),
        # > 1 MiB per member: several deflate chunks, some split across batches
        "big": np.repeat(rng.integers(0, 4, (n, 1, 1), dtype=np.uint8), 64 * 1024, axis=2),
    }


def _write(path: Path, arrays: dict[str, np.ndarray], batch: int, **kwargs) -> Path:
    layout = {k: (v.shape, v.dtype) for k, v in arrays.items()}
    n = len(next(iter(arrays.values())))
    writer = NpzStreamWriter(path, layout, **kwargs)
    for i in range(0, n, batch):
        writer.append({k: v[i:i + batch] for k, v in arrays.items()})
    assert not path.exists()  # nothing under the final name before close()
    writer.close()
    writer.close()  # safe twice
    return path


def _no_temporaries(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if is_temporary(p)]


def test_npz_round_trip_matches_savez_compressed(tmp_path):
    arrays = _arrays()
    out = _write(tmp_path / "stream.npz", arrays, batch=5)
    ref = tmp_path / "ref.npz"
    np.savez_compressed(ref, **arrays)
    with np.load(out, allow_pickle=False) as got, np.load(ref, allow_pickle=False) as want:
        assert list(got.files) == list(arrays)
        for key in arrays:
            assert got[key].dtype == want[key].dtype
            assert got[key].shape == want[key].shape
            np.testing.assert_array_equal(got[key], want[key])
    with zipfile.ZipFile(out) as zf, zipfile.ZipFile(ref) as zr:
        assert zf.testzip() is None
        for info in zf.infolist():
            assert info.compress_type == zipfile.ZIP_DEFLATED
            assert info.date_time == (1980, 1, 1, 0, 0, 0)
            assert zf.read(info.filename) == zr.read(info.filename)  # identical .npy bytes
    assert _no_temporaries(tmp_path)


def test_npz_bytes_do_not_depend_on_batch_size_or_threads(tmp_path):
    arrays = _arrays()
    blobs = {
        (batch, threads): _write(tmp_path / f"b{batch}_t{threads}.npz", arrays, batch,
                                 threads=threads).read_bytes()
        for batch, threads in [(1, 1), (4, 2), (23, 4), (7, 1)]
    }
    assert len(set(blobs.values())) == 1


@pytest.mark.parametrize("mode", ["absent", "refused"])
def test_npz_bytes_same_when_kernel_copy_unavailable(tmp_path, monkeypatch, mode):
    """The archive is assembled with os.copy_file_range where it exists; without it, or
    when the kernel refuses it (EXDEV, ENOSYS), the buffered copy gives the same bytes."""
    arrays = _arrays()
    ref = _write(tmp_path / "ref.npz", arrays, 9, threads=2).read_bytes()
    if mode == "absent":
        monkeypatch.delattr(os, "copy_file_range", raising=False)
    else:
        def refuse(*args, **kwargs):
            raise OSError(18, "Invalid cross-device link")
        monkeypatch.setattr(os, "copy_file_range", refuse, raising=False)
    got = _write(tmp_path / "got.npz", arrays, 9, threads=2).read_bytes()
    assert got == ref
    assert _no_temporaries(tmp_path)


def test_npz_compress_level(tmp_path):
    arrays = {"x": np.tile(np.arange(256, dtype=np.uint8), (50, 64))}
    fast = _write(tmp_path / "l1.npz", arrays, 10, compress_level=1)
    stored = _write(tmp_path / "l0.npz", arrays, 10, compress_level=0)
    assert stored.stat().st_size > fast.stat().st_size
    for path in (fast, stored):
        with np.load(path) as z:
            np.testing.assert_array_equal(z["x"], arrays["x"])
    with pytest.raises(ValueError, match="compress_level"):
        NpzStreamWriter(tmp_path / "bad.npz", {"x": ((1,), np.uint8)}, compress_level=10)


def test_npz_zip64_records(tmp_path, monkeypatch):
    # pretend 4 GiB is 100 bytes: every size and offset takes the zip64 path
    monkeypatch.setattr(_zip, "_ZIP64_LIMIT", 100)
    arrays = _arrays(9)
    out = _write(tmp_path / "z64.npz", arrays, batch=4)
    with zipfile.ZipFile(out) as zf:
        assert zf.testzip() is None
        infos = zf.infolist()
        assert [i.filename for i in infos] == [f"{k}.npy" for k in arrays]
        assert any(i.header_offset > 100 for i in infos)
    with np.load(out, allow_pickle=False) as z:
        for key, value in arrays.items():
            np.testing.assert_array_equal(z[key], value)


def test_npz_many_members_and_empty_rows(tmp_path):
    arrays = {f"m{i:02d}": np.full((3, 2), i, dtype=np.int64) for i in range(40)}
    arrays["empty"] = np.zeros((3, 0), dtype=np.float32)
    out = _write(tmp_path / "many.npz", arrays, batch=2)
    with np.load(out) as z:
        for key, value in arrays.items():
            np.testing.assert_array_equal(z[key], value)


def test_npz_errors_leave_nothing(tmp_path):
    layout = {"a": ((4, 3), np.dtype(np.uint8)), "b": ((4,), np.dtype(np.float64))}
    writer = NpzStreamWriter(tmp_path / "x.npz", layout)
    with pytest.raises(ValueError, match="dtype"):
        writer.append({"a": np.zeros((2, 3), np.uint16), "b": np.zeros(2)})
    with pytest.raises(KeyError):
        writer.append({"a": np.zeros((2, 3), np.uint8)})
    writer.append({"a": np.zeros((2, 3), np.uint8), "b": np.zeros(2)})
    with pytest.raises(ValueError, match="more than"):
        writer.append({"a": np.zeros((3, 3), np.uint8), "b": np.zeros(3)})
    with pytest.raises(ValueError, match="incomplete"):
        writer.close()
    assert not (tmp_path / "x.npz").exists()
    assert list(tmp_path.iterdir()) == []
    writer.close()  # closed already: no-op

    aborted = NpzStreamWriter(tmp_path / "y.npz", layout)
    aborted.append({"a": np.ones((4, 3), np.uint8), "b": np.ones(4)})
    aborted.abort()
    assert list(tmp_path.iterdir()) == []

    with pytest.raises(ValueError, match="differ in length"):
        NpzStreamWriter(tmp_path / "z.npz", {"a": ((2,), np.uint8), "b": ((3,), np.uint8)})


def test_npz_context_manager_aborts_on_error(tmp_path):
    with pytest.raises(RuntimeError), NpzStreamWriter(tmp_path / "c.npz",
                                                      {"a": ((2,), np.uint8)}) as writer:
        writer.append({"a": np.zeros(1, np.uint8)})
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("len1", "len2"), [(0, 0), (1, 0), (0, 5), (1000, 3000),
                                             (70000, 1 << 20)])
def test_crc32_combine(len1, len2):
    rng = np.random.default_rng(len1 + len2)
    a, b = rng.bytes(len1), rng.bytes(len2)
    assert _zip.crc32_combine(zlib.crc32(a), zlib.crc32(b), len(b)) == zlib.crc32(a + b)


def test_crc32_combine_fallback_matches_zlib():
    # the hand-written one serves Pythons whose zlib module lacks crc32_combine (before 3.15)
    rng = np.random.default_rng(3)
    for len1, len2 in [(0, 0), (7, 0), (0, 9), (70000, (1 << 20) + 3)]:
        a, b = rng.bytes(len1), rng.bytes(len2)
        assert _zip._crc32_combine(zlib.crc32(a), zlib.crc32(b), len2) == zlib.crc32(a + b)
    if hasattr(zlib, "crc32_combine"):
        assert _zip.crc32_combine is zlib.crc32_combine


def test_temporaries(tmp_path):
    final = tmp_path / "0000.npz"
    tmp = temporary_path(final)
    assert tmp.parent == tmp_path and is_temporary(tmp) and not is_temporary(final)
    tmp.mkdir()
    (tmp / "member000.deflate").write_bytes(b"x")
    temporary_path(tmp_path / "0000_gaussian_2d.tif").write_bytes(b"x")
    final.write_bytes(b"keep")
    (tmp_path / ".hidden").write_bytes(b"keep")
    removed = remove_stale_temporaries(tmp_path)
    assert len(removed) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [".hidden", "0000.npz"]
    assert remove_stale_temporaries(tmp_path / "missing") == []


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_tiff_stack_round_trip(tmp_path, dtype):
    rng = np.random.default_rng(2)
    images = (rng.random((11, 16, 16)) * 200).astype(dtype)
    path = tmp_path / "0000_gaussian_2d.tif"
    writer = TiffStackWriter(path, images.shape, images.dtype, pixel_size_angstrom=0.125)
    for i in range(0, 11, 4):
        writer.append(images[i:i + 4])
    assert not path.exists()
    writer.close()
    writer.close()
    got = tifffile.imread(path)
    assert got.shape == (11, 16, 16) and got.dtype == images.dtype
    np.testing.assert_array_equal(got, images)
    with tifffile.TiffFile(path) as tif:
        assert tif.is_imagej
        meta = tif.imagej_metadata
        assert meta["unit"] == "A"  # ImageJ shows "A" as Å
        assert meta["images"] == 11 and meta["slices"] == 11
        num, den = tif.pages[0].tags["XResolution"].value
        assert num / den == pytest.approx(8.0, rel=1e-6)  # pixels per Å
        assert "DateTime" not in tif.pages[0].tags  # reproducible bytes
    assert _no_temporaries(tmp_path)


def test_tiff_bool_and_uncalibrated(tmp_path):
    images = np.zeros((3, 8, 8), dtype=bool)
    images[:, 2, 3] = True
    path = tmp_path / "b.tif"
    with TiffStackWriter(path, images.shape, bool, pixel_size_angstrom=None) as writer:
        writer.append(images)
    got = tifffile.imread(path)
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, images.astype(np.uint8) * 255)
    with tifffile.TiffFile(path) as tif:
        assert "unit" not in tif.imagej_metadata


def test_tiff_incomplete_and_abort(tmp_path):
    writer = TiffStackWriter(tmp_path / "t.tif", (4, 8, 8), np.uint8, 0.1)
    writer.append(np.zeros((2, 8, 8), np.uint8))
    with pytest.raises(ValueError, match="8, 8"):
        writer.append(np.zeros((1, 9, 9), np.uint8))
    with pytest.raises(ValueError, match="incomplete"):
        writer.close()
    assert list(tmp_path.iterdir()) == []
    other = TiffStackWriter(tmp_path / "u.tif", (4, 8, 8), np.uint8, 0.1)
    other.append(np.zeros((4, 8, 8), np.uint8))
    other.abort()
    assert list(tmp_path.iterdir()) == []


class _Recorder:
    def __init__(self, fail_at: int | None = None, delay: float = 0.0) -> None:
        self.seen: list[int] = []
        self.fail_at = fail_at
        self.delay = delay
        self.thread_names: set[str] = set()

    def append(self, batch: int) -> None:
        self.thread_names.add(threading.current_thread().name)
        time.sleep(self.delay)
        if batch == self.fail_at:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.seen.append(batch)


def test_background_writer_runs_in_order_on_its_thread():
    rec = _Recorder()
    done = []
    with BackgroundWriter(maxsize=2, name="bg-test") as bg:
        for i in range(20):
            bg.put(rec, i)
        bg.put(lambda: done.append(True))
    assert rec.seen == list(range(20)) and done == [True]
    assert rec.thread_names == {"bg-test"}
    bg.close()  # idempotent


def test_background_writer_error_reaches_producer_at_put():
    rec = _Recorder(fail_at=3)
    bg = BackgroundWriter(maxsize=1)
    with pytest.raises(OSError, match="No space left") as info:
        for i in range(1000):
            bg.put(rec, i)
            time.sleep(0.001)
    assert info.value.errno == errno.ENOSPC
    assert rec.seen == [0, 1, 2]  # nothing written after the failure
    bg.close()  # already raised: close does not raise it twice
    bg.close()


def test_background_writer_error_reaches_producer_at_close():
    rec = _Recorder(fail_at=1)
    bg = BackgroundWriter(maxsize=4)
    bg.put(rec, 0)
    bg.put(rec, 1)
    with pytest.raises(OSError, match="No space left"):
        bg.close()
    bg.close()
    with pytest.raises(ValueError, match="closed"):
        bg.put(rec, 2)


def test_background_writer_bounded_queue():
    rec = _Recorder(delay=0.02)
    bg = BackgroundWriter(maxsize=2)
    start = time.perf_counter()
    for i in range(10):
        bg.put(rec, i)
    queued_for = time.perf_counter() - start
    bg.close()
    # the producer was held back: 10 items, at most 2 queued + 1 in progress
    assert queued_for >= 0.02 * (10 - 3) * 0.8
    assert rec.seen == list(range(10))


def test_background_writer_abort_swallows_and_skips():
    rec = _Recorder(fail_at=0, delay=0.01)
    bg = BackgroundWriter(maxsize=8)
    for i in range(5):
        bg.put(rec, i)
    bg.abort()
    bg.close()  # nothing to raise after abort
    assert rec.seen == []
    other = BackgroundWriter()
    with pytest.raises(TypeError):
        other.put(object())
    other.close()


def test_thread_defaults_follow_cpu_affinity(monkeypatch):
    """Under a scheduler's allocation (fewer cores than the machine has) compression and
    rendering threads follow the cores this process may use, not os.cpu_count()."""
    from xyz2image_gpu import Renderer, backend

    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 5, 9}, raising=False)
    assert backend.available_cores() == 3
    assert writers.default_compression_threads() == 3
    assert Renderer(device="cpu").threads == 3
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    assert backend.available_cores() == 64
    assert writers.default_compression_threads() == 64


def test_background_writer_abort_after_finish_waits_for_the_thread():
    """abort() after finish() (a unit assembling its archive when the run is interrupted)
    returns only once the thread has stopped, so nothing writes behind the clean-up."""
    import threading
    import time

    started = threading.Event()
    writes: list[str] = []

    def slow_write() -> None:
        started.set()
        time.sleep(0.3)
        writes.append("done")

    writer = BackgroundWriter()
    writer.put(slow_write)
    writer.finish()
    assert started.wait(5)
    writer.abort()
    assert writes == ["done"] and writer.finished


def test_background_writer_abort_stops_a_thread_whose_finish_was_cut_short():
    """An interrupt between finish() marking the writer closed and queueing its stop left
    abort() joining a thread that waited for a stop forever (a SIGTERM hang)."""
    import threading

    writer = BackgroundWriter()
    writer._closed = True  # finish() interrupted before it queued its stop
    aborting = threading.Thread(target=writer.abort, daemon=True)
    aborting.start()
    aborting.join(10)
    assert not aborting.is_alive() and writer.finished
