"""The engine's GPU-only branches, run on the CPU through a stand-in for CuPy.

Without a GPU the ``device`` tests skip their CuPy case, so the code that only runs when
``Backend.is_gpu`` (no chunking, batch size from free device memory, ``asnumpy`` transfers,
device-resident batches, no compiled kernel) would go unexercised. Here a module that
forwards to NumPy and adds the few ``cupy`` names the package uses plays the GPU, and the
results must equal the NumPy path's. This checks the branching, not CuPy itself: on a GPU
machine the ``device`` tests do that.
"""

from __future__ import annotations

import types

import numpy as np
import pytest
from reference import icosahedron

from xyz2image_gpu import Renderer, RenderSettings, as_structure
from xyz2image_gpu.backend import Backend

FREE_BYTES = 1 << 30


class _FakeEvent:
    def __init__(self, copies: list) -> None:
        self._copies = copies

    def synchronize(self) -> None:
        for src, out in self._copies:
            out[...] = src
        self._copies.clear()


class _FakeStream:
    """A stream whose asynchronous copies land only when an event recorded after them is
    synchronised, so that reading a pinned buffer too early reads its garbage."""

    def __init__(self, non_blocking: bool = False) -> None:
        self.queued: list = []
        self.active = 0

    def __enter__(self):
        self.active += 1
        return self

    def __exit__(self, *exc) -> None:
        self.active -= 1

    def record(self) -> _FakeEvent:
        copies, self.queued = self.queued, []
        return _FakeEvent(copies)


class _FakeCupy(types.ModuleType):
    """NumPy under CuPy's name, with ``asnumpy``, ``cuda.runtime.memGetInfo``, streams,
    events and pinned memory (filled with 0xAB, as fresh memory holds anything)."""

    def __init__(self) -> None:
        super().__init__("cupy")
        self.async_copies = 0
        self.pinned_bytes = 0
        self.cuda = types.SimpleNamespace(
            runtime=types.SimpleNamespace(memGetInfo=lambda: (FREE_BYTES, 2 * FREE_BYTES)),
            get_current_stream=lambda: types.SimpleNamespace(synchronize=lambda: None),
            Stream=_FakeStream,
            alloc_pinned_memory=self._alloc_pinned,
        )

    def _alloc_pinned(self, nbytes: int) -> bytearray:
        self.pinned_bytes += nbytes
        return bytearray(b"\xab" * nbytes)

    def asnumpy(self, a, stream=None, out=None, blocking=True):
        if out is None:
            return np.asarray(a)
        assert out.shape == a.shape and out.dtype == a.dtype
        if blocking:
            out[...] = a
        else:
            assert stream is not None and stream.active, "async copy outside its stream"
            stream.queued.append((np.array(a, copy=True), out))
            self.async_copies += 1
        return out

    def __getattr__(self, name: str):
        return getattr(np, name)


@pytest.fixture
def fake_gpu() -> Backend:
    return Backend("cupy", _FakeCupy(), "NumPy standing in for CuPy")


OUTPUTS = ["coordinates_3d", "delta_3d", "delta_2d", "gaussian_2d", "gaussian_3d",
           "binary_2d", "binary_3d"]


@pytest.mark.parametrize("extra", [
    {},
    {"legacy": True},
    {"z_exponent": 1.7, "thermal": True, "probe": ((0.9, 0.3), (0.1, 0.8)),
     "column_correction": (0.17,), "column_broadening": 0.004},
    {"dose": 500.0, "scan_jitter": 0.1, "drift": 0.5, "phonon_jitter": True},
])
def test_gpu_branches_match_the_numpy_path(fake_gpu, extra):
    st = as_structure(icosahedron("Au", 3))
    settings = RenderSettings(edgesize=24, **extra)
    gpu = Renderer(settings, OUTPUTS, fake_gpu)
    assert gpu.backend.is_gpu and not gpu.uses_compiled_kernel
    assert gpu.work_memory == FREE_BYTES // 4
    assert gpu.chunk_size(st) > 10**6  # the whole batch is one step on a GPU
    cpu = Renderer(settings, OUTPUTS, "cpu", cpu_kernel="numpy")
    want = cpu.render(st, 5, seed=2, batch_size=2)
    got = gpu.render(st, 5, seed=2)
    cpu.close()
    assert set(got) == set(want)
    for key, value in want.items():
        assert got[key].dtype == value.dtype and got[key].shape == value.shape, key
        if key.startswith("gaussian"):
            assert np.abs(got[key].astype(int) - value.astype(int)).max() <= 1, key
        else:
            np.testing.assert_array_equal(got[key], value, err_msg=key)
    device_batch = next(gpu.iter_batches(st, 5, seed=2, to_host=False))
    assert all(isinstance(v, np.ndarray) for v in device_batch.values())
    gpu.close()


@pytest.mark.parametrize("batch_size", [1, 2, 3, 7])
def test_gpu_batches_overlap_copies_through_pinned_buffers(fake_gpu, batch_size):
    """On the GPU, batches reach the host through two streams and page-locked buffers that
    are reused every second batch (the last batch may be shorter). With copies that land
    only when their stream's event is waited for, every batch must still equal the NumPy
    path, and no batch handed over may change when later batches are rendered."""
    st = as_structure(icosahedron("Au", 3))
    outputs = ["coordinates_3d", "gaussian_2d", "delta_3d"]
    settings = RenderSettings(edgesize=16)
    cpu = Renderer(settings, outputs, "cpu", cpu_kernel="numpy")
    want = cpu.render(st, 7, seed=4)
    cpu.close()
    gpu = Renderer(settings, outputs, fake_gpu)
    batches = list(gpu.iter_batches(st, 7, seed=4, batch_size=batch_size))
    gpu.close()
    fake = fake_gpu.xp
    n_batches = -(-7 // batch_size)
    assert len(batches) == n_batches
    assert fake.async_copies >= n_batches * len(outputs)  # every output crossed async
    got = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
    assert set(got) == set(want)
    for key, value in want.items():
        if key.startswith("gaussian"):
            assert np.abs(got[key].astype(int) - value.astype(int)).max() <= 1, key
        else:
            np.testing.assert_array_equal(got[key], value, err_msg=key)
    # pinned memory: two slots, each sized for one full batch of every output
    per_image = 16 * 16 + 16**3 + st.max_atoms * 3 * 2 + 8
    assert fake.pinned_bytes <= 2 * min(batch_size, 7) * per_image + 4096
