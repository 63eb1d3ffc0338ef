"""Shared fixtures: every engine test runs on NumPy and on CuPy (skipped without a GPU)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from xyz2image_gpu import backend

# benchmarks/seed_algorithm.py (the seed's per-image algorithm) is used by test_engine.py
BENCHMARKS_DIR = Path(__file__).resolve().parents[1] / "benchmarks"
if str(BENCHMARKS_DIR) not in sys.path:
    sys.path.insert(0, str(BENCHMARKS_DIR))


def gpu_skip_reason() -> str | None:
    """None when the GPU can be used, else why not (shown in pytest's skip summary)."""
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

