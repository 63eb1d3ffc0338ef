"""``benchmarks/gpu_check.py``: every stage recorded, whatever fails, in a JSON written as it
goes. Run here without a GPU (``--allow-no-gpu --quick``), with failures injected, and with
its GPU stages' own code run against a stand-in CuPy (the engine on the CPU behind it)."""

from __future__ import annotations

import json
import sys
import time
import types

import gpu_check  # benchmarks/, put on sys.path by conftest.py
import numpy as np
import pytest
from test_cupy_status import _fake_cupy

from xyz2image_gpu import backend

GPU_STAGES = ("bandwidth", "throughput", "memory_pool", "zarr", "dask_gpus", "dataset")
CPU_STAGES = ("environment", "smoke", "cpu_baseline", "repeatability", "parity", "tests")


@pytest.fixture
def run(tmp_path, monkeypatch):
    """``run(*args) -> (exit status, JSON document)``, in this process."""
    # import_cupy sets CUBLAS_WORKSPACE_CONFIG: restore the environment afterwards
    monkeypatch.setenv(backend.CUBLAS_WORKSPACE_ENV, "restored-after-the-test")
    monkeypatch.delenv(backend.CUBLAS_WORKSPACE_ENV)

    def call(*args: str) -> tuple[int, dict]:
        path = tmp_path / "check.json"
        status = gpu_check.main(["--quick", "--json", str(path), *args])
        doc = json.loads(path.read_text())
        assert doc["finished"] and doc["exit_status"] == status
        assert set(doc["stages"]) == set(gpu_check.STAGES)
        assert not list(tmp_path.glob(".*.tmp")), "a temporary file was left behind"
        return status, doc

    return call


def _status(doc: dict) -> dict[str, str]:
    return {name: rec["status"] for name, rec in doc["stages"].items()}


def test_dry_run_without_a_gpu_runs_every_cpu_stage(run):
    status, doc = run("--allow-no-gpu")
    assert status == gpu_check.EXIT_OK, _status(doc)
    st = doc["stages"]
    assert doc["gpu"]["usable"] is False
    for name in GPU_STAGES:
        assert st[name]["status"] == "skipped" and "no GPU" in st[name]["reason"]
    for name in CPU_STAGES:
        assert st[name]["status"] == "ok", (name, st[name])
        assert st[name]["wall_s"] >= 0
    assert st["environment"]["figures"]["packages"]["numpy"] == np.__version__
    assert st["smoke"]["figures"]["reason"] and "usable" in st["smoke"]["figures"]
    assert st["cpu_baseline"]["figures"]["images_per_s"] > 0
    rep = st["repeatability"]["figures"]
    assert rep["all_equal"] and rep["batch_sizes"] == [16, 7, 1]
    assert st["parity"]["figures"]["ok"] and len(st["parity"]["figures"]["cases"]) == 15
    assert st["tests"]["figures"]["returncode"] == 0
    assert "-m gpu" in st["tests"]["figures"]["command"]
    assert doc["render"] and doc["machine"]["cpu_model"]


def test_an_injected_failure_keeps_every_other_figure(run):
    status, doc = run("--allow-no-gpu", "--inject-failure", "parity", "--skip", "tests")
    assert status == gpu_check.EXIT_FAILED
    parity = doc["stages"]["parity"]
    assert parity["status"] == "error"
    assert parity["error"]["type"] == "InjectedFailure"
    assert "inject" in parity["error"]["message"]
    assert "InjectedFailure" in parity["error"]["traceback_tail"]
    assert len(parity["figures"]["cases"]) == 15  # its own figures, up to the failure
    assert doc["stages"]["cpu_baseline"]["figures"]["images_per_s"] > 0
    assert doc["stages"]["repeatability"]["figures"]["all_equal"]
    assert doc["stages"]["tests"] == {"status": "skipped", "figures": {},
                                      "reason": "left out with --skip"}
    failed = next(c for c in doc["checks"] if c["check"].startswith("every stage"))
    assert failed["ok"] is False and failed["detail"]["parity"] == "error"


def test_a_hung_stage_times_out_and_an_interrupt_stops_the_run(run):
    status, doc = run("--allow-no-gpu", "--stage-timeout", "1.5",
                      "--inject-failure", "cpu_baseline:hang",
                      "--inject-failure", "repeatability:interrupt")
    assert status == gpu_check.EXIT_INTERRUPTED
    st = doc["stages"]
    assert st["cpu_baseline"]["status"] == "timeout"
    assert st["cpu_baseline"]["error"]["type"] == "StageTimeout"
    assert st["cpu_baseline"]["figures"]["images_per_s"] > 0
    assert st["repeatability"]["status"] == "interrupted"
    assert st["repeatability"]["figures"]["all_equal"]
    for name in ("parity", "memory_pool", "tests"):
        assert st[name]["status"] == "not run" and "KeyboardInterrupt" in st[name]["reason"]
    assert doc["interrupted"] == "KeyboardInterrupt"


def test_sigterm_is_recorded_like_an_interrupt(run):
    status, doc = run("--allow-no-gpu", "--inject-failure", "smoke:sigterm")
    assert status == gpu_check.EXIT_TERMINATED
    assert doc["stages"]["smoke"]["status"] == "interrupted"
    assert doc["stages"]["smoke"]["figures"]["reason"]
    assert doc["stages"]["environment"]["status"] == "ok"
    assert {doc["stages"][n]["status"] for n in gpu_check.STAGES[2:]} == {"not run"}


def test_a_spent_budget_skips_the_later_stages_and_says_so(run):
    status, doc = run("--allow-no-gpu", "--budget", "0.001")
    assert status == gpu_check.EXIT_OK
    st = doc["stages"]
    assert st["environment"]["status"] == st["smoke"]["status"] == "ok"
    for name in ("cpu_baseline", "repeatability", "parity", "tests"):
        assert st[name]["status"] == "skipped" and st[name]["reason"].startswith("budget spent")


def test_without_a_gpu_it_says_why_and_exits_2(run):
    status, doc = run()
    assert status == gpu_check.EXIT_NO_GPU
    assert _status(doc)["environment"] == _status(doc)["smoke"] == "ok"
    assert doc["gpu"]["reason"]
    assert {_status(doc)[n] for n in gpu_check.STAGES[2:]} == {"skipped"}


# ------------------------------------------------------------------ GPU stages, stand-in CuPy
class _Event:
    def __init__(self, *args, **kwargs) -> None:
        self.t = time.perf_counter()

    def record(self, stream=None):
        self.t = time.perf_counter()
        return self

    def synchronize(self) -> None:
        pass


class _Stream:
    def __init__(self, non_blocking: bool = False) -> None:
        pass

    def record(self) -> _Event:
        return _Event()

    def synchronize(self) -> None:
        pass


class _DeviceBytes:
    def __init__(self, n: int) -> None:
        self.data = np.zeros(n, np.uint8)

    def set(self, host, stream=None) -> None:
        self.data[...] = host

    def get(self, stream=None, out=None):
        out[...] = self.data
        return out


class _Pool:
    def used_bytes(self) -> int:
        return 1 << 20

    def total_bytes(self) -> int:
        return 2 << 20

    def n_free_blocks(self) -> int:
        return 3

    def free_all_blocks(self) -> None:
        pass


def _stand_in_cupy() -> types.ModuleType:
    """The smoke test's stand-in, plus what the GPU stages call: copies, events, streams,
    pools, versions, ``show_config``."""
    cupy = _fake_cupy()
    pool = _Pool()
    cupy.uint8 = np.uint8
    cupy.empty = lambda n, dtype=None: _DeviceBytes(n)
    cupy.get_default_memory_pool = cupy.get_default_pinned_memory_pool = lambda: pool
    cupy.show_config = lambda: print("CuPy Version : stand-in")
    cuda = cupy.cuda
    cuda.Event, cuda.Stream = _Event, _Stream
    cuda.get_current_stream = _Stream
    cuda.get_elapsed_time = lambda a, b: 1e3 * max(b.t - a.t, 1e-6)
    cuda.Device = lambda *a: types.SimpleNamespace(id=0, synchronize=lambda: None)
    cuda.alloc_pinned_memory = bytearray
    cuda.runtime.runtimeGetVersion = cuda.runtime.driverGetVersion = lambda: 13000
    cuda.runtime.memGetInfo = lambda: (1 << 30, 1 << 31)
    cuda.runtime.getDeviceProperties = lambda i: {
        "name": b"Stand-in H200", "totalGlobalMem": 1 << 37, "major": 9, "minor": 0,
        "multiProcessorCount": 132}
    return cupy


def test_the_gpu_stages_run_against_a_stand_in_cupy(run, monkeypatch):
    """Everything the GPU stages do around the engine (copies, events, pools, figures), with
    the engine itself on the CPU: a typo there would cost a GPU run its figures."""
    cupy = _stand_in_cupy()
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    monkeypatch.setattr(backend, "cupy_status", lambda: (cupy, "a stand-in GPU"))
    monkeypatch.delenv(backend.FORCE_CPU_ENV, raising=False)
    monkeypatch.setattr(gpu_check, "GPU_DEVICE", "cpu")
    distributed = pytest.importorskip("distributed")
    monkeypatch.setitem(sys.modules, "dask_cuda", types.SimpleNamespace(
        LocalCUDACluster=lambda **kw: distributed.LocalCluster(processes=False, **kw)))
    status, doc = run("--skip", "tests")
    assert status == gpu_check.EXIT_OK, _status(doc)
    st = {name: rec["figures"] for name, rec in doc["stages"].items()}
    assert all(s in ("ok", "skipped") for s in _status(doc).values()), _status(doc)
    assert doc["gpu"] == {"usable": True, "reason": "a stand-in GPU"}
    env = st["environment"]["cupy"]
    assert env["device"]["name"] == "Stand-in H200" and "stand-in" in env["show_config"]
    assert env["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert [s["ok"] for s in st["smoke"]["steps"]] == [True, True, True]
    assert st["bandwidth"]["d2h_pinned"]["GB_per_s"] > 0
    for key in ("to_host", "to_device"):
        assert st["throughput"][key]["images_per_s"] > 0
    assert st["throughput"]["to_device"]["runs"][0]["device_ms_per_batch"]["median"] >= 0
    split = st["throughput"]["per_batch_split"]
    assert "no per-stage timing hook" in split["method"] and split["copy_ms_from_bandwidth"]
    ab = st["throughput"]["image_kernel"]
    assert set(ab) == {f"{o}_{k}" for o in ("gaussian_2d", "gaussian_3d")
                       for k in ("fused", "products")}, ab
    assert all(case["images_per_s"] > 0 for case in ab.values()), ab
    aug = st["throughput"]["augmented"]
    assert "error" not in aug, aug
    assert all(aug[k]["images_per_s"] > 0 and aug[k]["ratio_to_plain"] > 0
               for k in ("to_host", "to_device")), aug
    assert set(st["cpu_baseline"]["gpu_over_cpu"]) == {"to_host", "to_device"}
    assert st["repeatability"]["engines"] == ["gpu"] and st["repeatability"]["all_equal"]
    assert st["parity"]["engines"][0] == "gpu" and st["parity"]["ok"]
    assert st["memory_pool"]["calls"] == 10 and st["memory_pool"]["growth_bytes"] == 0
    assert st["dask_gpus"]["bytes_equal"] and st["dask_gpus"]["dask_gpus"]["images"] == 16
    assert st["dask_gpus"]["single_process"]["images"] == 16
    if "skipped" not in st["zarr"]:  # with the zarr extra: the CPU's compressor, said why
        assert st["zarr"]["gpu_codec"] == {
            "chosen": False, "reason": "chunks compressed on the CPU: images rendered on the CPU"}
        assert st["zarr"]["cpu_zstd"]["images_per_s"] > 0
        assert st["zarr"]["cpu_zstd"]["cpu_reader_values_equal"] and st["zarr"]["ok"]
    if _status(doc)["dataset"] == "ok":  # PyTorch installed (the torch extra)
        assert st["dataset"]["first_batch_equals_render"]
        assert st["dataset"]["images_per_s"]["dataset_0_workers"] > 0
        assert st["dataset"]["dataset_over_render_only"] > 0
    assert {"to_host_images_per_s", "to_device_images_per_s",
            "augmented_over_plain"} <= set(doc["targets"])
    assert doc["machine"]["gpu"]["name"] == "Stand-in H200"


def test_the_dask_stage_keeps_its_single_process_figures_when_the_cluster_fails(
        tmp_path, monkeypatch):
    pytest.importorskip("distributed")

    def no_cluster(**options):
        raise RuntimeError("no CUDA device for worker 0")

    monkeypatch.setattr(gpu_check, "GPU_DEVICE", "cpu")
    monkeypatch.setitem(sys.modules, "dask_cuda",
                        types.SimpleNamespace(LocalCUDACluster=no_cluster))
    ctx = gpu_check.Context(args=None, sizes=gpu_check.QUICK, path=tmp_path / "c.json",
                            default_path=False, deadline=time.perf_counter() + 60,
                            doc={"_t0": time.perf_counter()})
    fig: dict = {}
    with pytest.raises(RuntimeError, match="no CUDA device"):
        gpu_check.stage_dask_gpus(ctx, fig)
    assert fig["single_process"]["images"] == 16 and fig["gpus"] == 1
    assert json.loads((tmp_path / "c.json").read_text())["elapsed_s"] >= 0
    monkeypatch.setitem(sys.modules, "dask_cuda", None)  # not installed: skipped, saying so
    with pytest.raises(gpu_check.StageSkipped, match=r"xyz2image-gpu\[dask,gpu\]"):
        gpu_check.stage_dask_gpus(ctx, {})
