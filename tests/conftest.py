"""Shared fixtures: every engine test runs on NumPy and on CuPy (skipped without a GPU).

Tests without a ``device`` parameter run on the CPU whatever the machine:
:func:`_cpu_unless_testing_the_gpu` sets ``XYZ2IMAGE_GPU_FORCE_CPU`` for them (subprocesses
inherit it), so that their assertions about the NumPy backend, worker counts and the like
hold on a GPU machine too. Only tests marked ``gpu`` (the ``gpu`` case of a ``device`` test
carries the mark) leave it unset.

``XYZ2IMAGE_GPU_TEST_FAKE_GPU=1 python -m pytest`` plays a GPU machine on any machine: CuPy
is reported usable as a stand-in that fails loudly when used, so a test that lets
``device="auto"`` reach the GPU without meaning to fails here as it would on a real one
(``make test-fake-gpu``); the ``gpu`` cases of ``device`` tests are skipped.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from xyz2image_gpu import backend
from xyz2image_gpu.flags import flag_set

# benchmarks/seed_algorithm.py (the seed's per-image algorithm) is used by test_engine.py
BENCHMARKS_DIR = Path(__file__).resolve().parents[1] / "benchmarks"
if str(BENCHMARKS_DIR) not in sys.path:
    sys.path.insert(0, str(BENCHMARKS_DIR))

FAKE_GPU_ENV = "XYZ2IMAGE_GPU_TEST_FAKE_GPU"


class _UnpinnedGpu(types.ModuleType):
    """What ``cupy`` is in fake-GPU mode: any use is a test that forgot to pin the CPU."""

    __version__ = "fake"

    def __getattr__(self, name: str):
        raise AssertionError(
            f"a test used the GPU (cupy.{name}) through device='auto' without pinning the CPU "
            f"({FAKE_GPU_ENV}=1 plays a GPU machine): pass device='cpu' / --device cpu or "
            "take the `device` fixture")


def fake_gpu_mode() -> bool:
    return flag_set(FAKE_GPU_ENV)


@pytest.fixture(autouse=True, scope="session")
def _fake_gpu_machine():
    """In fake-GPU mode, make CuPy look usable for the whole session."""
    if not fake_gpu_mode():
        yield
        return
    status = (_UnpinnedGpu("cupy"), f"a fake GPU ({FAKE_GPU_ENV}=1)")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(backend, "cupy_status", lambda: status)
        yield


@pytest.fixture(autouse=True)
def _cpu_unless_testing_the_gpu(request, monkeypatch):
    """Pin the CPU (``XYZ2IMAGE_GPU_FORCE_CPU=1``) except in tests marked ``gpu``: the
    ``gpu`` case of a ``device`` test, and GPU-only tests such as ``test_gpu_matches_cpu``."""
    if request.node.get_closest_marker("gpu") is None:
        monkeypatch.setenv(backend.FORCE_CPU_ENV, "1")


def gpu_skip_reason() -> str | None:
    """None when the GPU can be used, else why not (shown in pytest's skip summary)."""
    if fake_gpu_mode():
        return f"the GPU is a fake ({FAKE_GPU_ENV}=1)"
    if backend.gpu_available():
        return None
    if backend._force_cpu():
        return f"GPU disabled by {backend.FORCE_CPU_ENV}"
    return f"no usable GPU: {backend.cupy_status()[1]}"


@pytest.fixture(params=["cpu", pytest.param("gpu", marks=pytest.mark.gpu)])
def device(request) -> str:
    """The device string to pass to ``render``: ``"cpu"``, or ``"gpu"`` where one exists."""
    if request.param == "gpu":
        reason = gpu_skip_reason()
        if reason is not None:
            pytest.skip(reason)
    return request.param
