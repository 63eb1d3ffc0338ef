"""``backend.cupy_status``: the GPU is reported usable only after its smoke test passes.

``import cupy`` and ``getDeviceCount()`` succeed on a machine with an NVIDIA driver alone;
the first product then fails for lack of cuBLAS and the first compiled kernel for lack of
NVRTC. Here a stand-in ``cupy`` module (NumPy underneath) is put in ``sys.modules`` and made
to fail as a missing library would, step by step: the reason must name the step and carry
the install hint, and ``auto`` must fall back to NumPy.
"""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest

from xyz2image_gpu import backend
from xyz2image_gpu.backend import INSTALL_HINT, BackendError, cupy_status, get_backend

MISSING_CUBLAS = "libcublasLt.so.13: cannot open shared object file: No such file or directory"
MISSING_NVRTC = "libnvrtc.so.13: cannot open shared object file: No such file or directory"


class _RawKernel:
    """``cupy.RawKernel`` on NumPy arrays: runs the smoke kernel's y = 2 x + 1."""

    def __init__(self, code: str, name: str) -> None:
        assert name in code
        self.name = name

    def __call__(self, grid, block, args) -> None:
        x, y, n = args
        y[: int(n)] = 2.0 * x[: int(n)] + 1.0


def _fake_cupy(**override) -> types.ModuleType:
    cupy = types.ModuleType("cupy")
    cupy.__version__ = "14.2.0-standin"
    cupy.float32 = np.float32
    cupy.asarray, cupy.asnumpy, cupy.zeros = np.asarray, np.asarray, np.zeros
    cupy.matmul, cupy.exp, cupy.RawKernel = np.matmul, np.exp, _RawKernel
    runtime = types.SimpleNamespace(getDeviceCount=lambda: 1,
                                    getDeviceProperties=lambda i: {"name": b"Stand-in H200"})
    cupy.cuda = types.SimpleNamespace(runtime=runtime, Device=lambda: types.SimpleNamespace(id=0),
                                      nvrtc=types.SimpleNamespace(getVersion=lambda: (13, 0)))
    for name, value in override.items():
        if name == "nvrtc_version":
            cupy.cuda.nvrtc.getVersion = value
        else:
            setattr(cupy, name, value)
    return cupy


def _raise(exc: BaseException):
    def fail(*args, **kwargs):
        raise exc

    return fail


@pytest.fixture
def fake_cupy(monkeypatch):
    """Install a stand-in ``cupy`` (``install(**override)``), with the status cache cleared
    before and after, the CPU not forced and CUBLAS_WORKSPACE_CONFIG restored afterwards
    (and the real ``cupy_status`` in place of the one of conftest's fake-GPU mode)."""
    monkeypatch.setattr(backend, "cupy_status", cupy_status)
    monkeypatch.delenv(backend.FORCE_CPU_ENV, raising=False)
    monkeypatch.setenv(backend.CUBLAS_WORKSPACE_ENV, "restored-after-the-test")
    monkeypatch.delenv(backend.CUBLAS_WORKSPACE_ENV)
    cupy_status.cache_clear()

    def install(**override) -> types.ModuleType:
        module = _fake_cupy(**override)
        monkeypatch.setitem(sys.modules, "cupy", module)
        cupy_status.cache_clear()
        return module

    yield install
    cupy_status.cache_clear()


def test_a_working_device_passes_the_smoke_test(fake_cupy):
    module = fake_cupy()
    cupy, why = cupy_status()
    assert cupy is module
    assert "Stand-in H200" in why and "smoke test passed" in why
    assert backend.gpu_available()
    assert get_backend("auto").name == "cupy"
    # the setting that makes cuBLAS reproducible across streams was made before the import
    assert backend.os.environ[backend.CUBLAS_WORKSPACE_ENV] == ":4096:8"


def test_a_user_cublas_workspace_setting_is_kept(fake_cupy, monkeypatch):
    monkeypatch.setenv(backend.CUBLAS_WORKSPACE_ENV, ":16:8")
    fake_cupy()
    assert cupy_status()[0] is not None
    assert backend.os.environ[backend.CUBLAS_WORKSPACE_ENV] == ":16:8"


@pytest.mark.parametrize(("override", "step", "words"), [
    ({"matmul": _raise(ImportError(MISSING_CUBLAS))}, "cuBLAS matmul", "libcublasLt"),
    ({"exp": _raise(RuntimeError(MISSING_NVRTC))}, "NVRTC elementwise exp", "libnvrtc"),
    ({"RawKernel": _raise(RuntimeError(MISSING_NVRTC))}, "NVRTC RawKernel", "libnvrtc"),
    # the kernel came from CuPy's on-disk cache, but NVRTC itself cannot be loaded
    ({"nvrtc_version": _raise(OSError(MISSING_NVRTC))}, "NVRTC RawKernel", "libnvrtc"),
    ({"matmul": lambda a, b: np.matmul(a, b) + 1}, "cuBLAS matmul", "wrong result"),
    ({"RawKernel": lambda code, name: (lambda grid, block, args: None)}, "NVRTC RawKernel",
     "wrong result"),
])
def test_a_failed_step_is_named_with_the_install_hint(fake_cupy, override, step, words):
    fake_cupy(**override)
    cupy, why = cupy_status()
    assert cupy is None
    assert f"failed at the {step}" in why and words in why, why
    assert "Stand-in H200" in why and INSTALL_HINT in why
    assert not backend.gpu_available()
    auto = get_backend("auto")
    assert auto.name == "numpy" and step in auto.reason
    with pytest.raises(BackendError) as info:
        get_backend("gpu")
    assert str(info.value).count(INSTALL_HINT) == 1 and step in str(info.value)


def test_the_hint_names_extras_that_work_with_a_driver_alone():
    assert "xyz2image-gpu[gpu]" in INSTALL_HINT and "xyz2image-gpu[gpu-cuda13]" in INSTALL_HINT
    assert "cupy-cuda12x[ctk]" in INSTALL_HINT and "cupy-cuda13x[ctk]" in INSTALL_HINT


def test_no_device_and_no_cupy_are_reported(fake_cupy, monkeypatch):
    module = fake_cupy()
    module.cuda.runtime.getDeviceCount = lambda: 0
    cupy_status.cache_clear()
    assert cupy_status() == (None, "CuPy imports but no CUDA device is present")
    monkeypatch.setitem(sys.modules, "cupy", None)  # import cupy raises ImportError
    cupy_status.cache_clear()
    cupy, why = cupy_status()
    assert cupy is None and why.startswith("CuPy is not importable (ModuleNotFoundError")


def test_tests_without_a_device_parameter_run_on_the_cpu(monkeypatch):
    """conftest pins the CPU for tests like this one, so that on a GPU machine their
    assertions about NumPy (manifests, worker counts) still hold: with CuPy reported usable,
    ``auto`` must still resolve to NumPy, in the API and in the command line."""
    from click.testing import CliRunner

    from xyz2image_gpu.cli import cli

    monkeypatch.setattr(backend, "cupy_status", lambda: (_fake_cupy(), "a GPU"))
    assert backend.os.environ.get(backend.FORCE_CPU_ENV) == "1"
    assert get_backend("auto").name == "numpy"
    result = CliRunner().invoke(cli, ["info"])
    assert result.exit_code == 0 and "device=auto -> backend numpy" in result.output
