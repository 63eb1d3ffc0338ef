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


class _FakeCupy(types.ModuleType):
    """NumPy under CuPy's name, with ``asnumpy`` and ``cuda.runtime.memGetInfo``."""

    def __init__(self) -> None:
        super().__init__("cupy")
        self.asnumpy = np.asarray
        self.cuda = types.SimpleNamespace(
            runtime=types.SimpleNamespace(memGetInfo=lambda: (FREE_BYTES, 2 * FREE_BYTES)),
            get_current_stream=lambda: types.SimpleNamespace(synchronize=lambda: None),
        )

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
