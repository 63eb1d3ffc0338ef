"""``--device auto`` on a machine with a GPU measures both devices and keeps the faster."""

from __future__ import annotations

import itertools
import json

import pytest
from click.testing import CliRunner
from fake_cupy import FakeCupy

from xyz2image_gpu import RenderSettings, as_structure
from xyz2image_gpu.backend import Backend, get_backend
from xyz2image_gpu.cli import cli
from xyz2image_gpu.pipeline import device_choice
from xyz2image_gpu.run import execute
from xyz2image_gpu.structures.examples import bundled_examples

AU147 = next(p for p in bundled_examples() if p.name == "au147_icosahedron.xyz")


def _timer(gpu_seconds: float, cpu_seconds: float):
    """A clock under which rendering takes these times on the GPU, then on the CPU."""
    ticks = itertools.accumulate([0.0, gpu_seconds, 0.0, cpu_seconds])
    return iter(ticks).__next__


def _gpu() -> Backend:
    return Backend("cupy", FakeCupy(), "NumPy standing in for CuPy")


@pytest.mark.parametrize("gpu_seconds, cpu_seconds, chosen", [(0.001, 0.1, "cupy"),
                                                              (0.1, 0.001, "numpy")])
def test_the_faster_backend_is_chosen_and_says_why(gpu_seconds, cpu_seconds, chosen):
    structure = as_structure(AU147)
    backend = device_choice.fastest_backend(
        RenderSettings(edgesize=16), ["gaussian_2d"], structure, _gpu(), get_backend("cpu"),
        images=32, timer=_timer(gpu_seconds, cpu_seconds))
    assert backend.name == chosen
    assert f"GPU {32 / gpu_seconds:,.0f} images/s, CPU {32 / cpu_seconds:,.0f}" in backend.reason


def test_cli_auto_records_the_measured_choice(tmp_path, monkeypatch):
    """A run with --device auto on a (stand-in) GPU machine measures both devices on its
    first readable input; here the CPU wins and the manifest says why."""
    real_get_backend = execute.get_backend

    def with_gpu(device="auto"):
        return _gpu() if device == "auto" else real_get_backend(device)

    def measured(*args, **kwargs):
        return device_choice.fastest_backend(*args, images=32, timer=_timer(0.1, 0.001),
                                             **kwargs)

    monkeypatch.setattr(execute, "get_backend", with_gpu)
    monkeypatch.setattr(execute, "fastest_backend", measured)
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["render", str(AU147), "-o", str(out), "--edgesize", "16",
                                      "--output-types", "gaussian_2d", "--device", "auto",
                                      "--workers", "1", "--quiet"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    device = json.loads((out / "manifest.json").read_text())["device"]
    assert device["requested"] == "auto" and device["backend"] == "numpy"
    assert "device=auto measured 32 images of au147_icosahedron" in device["reason"]
