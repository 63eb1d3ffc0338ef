"""One short, robust run on a machine with an NVIDIA GPU: what works, how fast, how exact.

``make gpu-check`` (``python benchmarks/gpu_check.py``) runs these stages in order, each
recording its figures, or its error (type, message, tail of the traceback), in one JSON
document that is rewritten (temporary file, then rename) when a stage starts and when it
ends, whatever happens: an exception, a stage past its time limit, Ctrl-C or SIGTERM. A
crash of the interpreter itself loses only the running stage, which the file names.

``environment``
    Python, package and CUDA wheel versions, ``cupy.show_config()``, the device, driver and
    runtime versions, ``nvidia-smi``, the environment variables that matter.
``smoke``
    The backend's smoke test (``backend.cupy_status``: cuBLAS matmul, NVRTC exp, a compiled
    ``RawKernel``), each step timed; without a usable GPU each step's own error.
``bandwidth``
    Host<->device copies of ``--bandwidth-mib`` MiB, pinned and pageable, by CUDA events.
``throughput``
    Images/s of ``Renderer(...).iter_batches`` with ``to_host=True`` and ``to_host=False``
    (gaussian_2d, ``--edgesize`` px, the bundled 147-atom Au icosahedron, ``--batch-size``
    images a batch) and the per-batch split that can be had from outside the engine; then
    (``image_kernel``) the GPU's own image kernel against the batched products, gaussian_2d
    and gaussian_3d, to device memory; then (``augmented``) every augmentation on, and its
    ratio to the plain rate.
``cpu_baseline``
    The same images on this machine's cores with the compiled CPU kernel (NumPy path where
    it is not built): the GPU/CPU ratio.
``repeatability``
    Bytes of the same images rendered twice at one batch size, and at batch sizes 7 and 1.
``parity``
    The GPU against both CPU paths (NumPy, compiled) for plain, probe, thermal, column
    correction, augmentations (each, and all at once at 16 bit) and legacy settings: images
    within one grey level (shot-noised ones: but for at most 1e-4 of their pixels, see
    ``NOISY_FRACTION_OVER_ONE``), labels and the augmentations' draws (``scan_offsets``)
    equal.
``memory_pool``
    CuPy's device and pinned pools after each of ten ``iter_batches`` calls on one renderer.
``zarr``
    The zarr store's writer fed by the GPU: which compressor
    ``backend.zarr_gpu_codec`` chooses (nvCOMP zstd through zarr's GPU path, where this zarr
    has it) and why, images/s of rendering and writing a store that way (device batches,
    compressed on the device) and with CPU zstd (host batches), the stored bytes per image,
    and whether a CPU reader (``zarr.open``, CPU zstd) reads back the rendered images.
``dask_gpus``
    ``render --gpus N`` (a ``dask_cuda.LocalCUDACluster``, one worker per GPU) against the
    single-process render of the same units: the same bytes, and images/s of each (the
    single-process figures are kept when the cluster fails); skipped, saying what to
    install, without distributed and dask-cuda.
``dataset``
    The PyTorch dataset (``xyz2image_gpu.torch.RenderDataset``, the ``torch`` extra; a
    PyTorch built with CUDA) rendering in the main process: images/s through a DataLoader
    (``num_workers=0``) against render-only to device memory at the same batch size, the
    tensors' device, whether ``torch.from_dlpack`` shares the engine's memory (no copy), and
    whether its first batch equals ``Renderer.render``'s bytes at that batch size.
``tests``
    ``pytest -m gpu``: the ``device`` tests' CuPy cases, with what time is left.

A global ``--budget`` (seconds) skips the stages after ``smoke`` once spent, saying so;
``--stage-timeout`` bounds each stage. Without a usable GPU the GPU stages are recorded as
skipped and the exit status is 2, unless ``--allow-no-gpu``: then every stage that can run on
the CPU runs (repeatability and parity of the two CPU paths, the CPU baseline, the tests).
``--inject-failure STAGE[:error|hang|interrupt]`` fails a stage on purpose after its work
(tests use it to show that the other stages' figures are kept). Exit status: 0 every stage
ran and every check passed; 1 a stage failed or a check did not pass; 2 no usable GPU;
130 / 143 interrupted (Ctrl-C / SIGTERM).

Imports nothing beyond the package's own dependencies (psutil only if present, never ASE).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import io
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # stdlib, NumPy and the package (put on sys.path from the checkout if needed)

__all__ = ["STAGES", "main"]

STAGES = ("environment", "smoke", "bandwidth", "throughput", "cpu_baseline", "repeatability",
          "parity", "memory_pool", "zarr", "dask_gpus", "dataset", "tests")
#: Stages that always run, whatever the budget: they say what the machine is.
ALWAYS = ("environment", "smoke")
EXIT_OK, EXIT_FAILED, EXIT_NO_GPU, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 130, 143
#: Sizes of a normal run, and of ``--quick`` (seconds on a CPU, for the tests; its figures
#: mean nothing).
FULL = {"edgesize": 128, "batch_size": 4096, "images": 65536, "repeats": 3,
        "bandwidth_mib": 256, "parity_images": 64, "repeat_images": 4096,
        "batch1_images": 256, "cpu_seconds": 3.0, "pool_calls": 10, "dask_rotations": 2048}
QUICK = {"edgesize": 32, "batch_size": 16, "images": 64, "repeats": 1, "bandwidth_mib": 4,
         "parity_images": 3, "repeat_images": 24, "batch1_images": 6, "cpu_seconds": 0.1,
         "pool_calls": 10, "dask_rotations": 4}
#: Stage floors below which a stage is not started (seconds of budget left).
MIN_STAGE_S = 3.0
#: The device the GPU stages render on (the tests run them on the CPU behind a stand-in).
GPU_DEVICE = "gpu"
TRACEBACK_CHARS = 4000


class StageTimeout(Exception):
    """A stage ran past its time limit."""


class Terminated(BaseException):
    """SIGTERM arrived (treated as Ctrl-C: record, write, stop)."""


class InjectedFailure(RuntimeError):
    """Raised by ``--inject-failure``."""


class StageSkipped(Exception):
    """A stage cannot run here for a reason that is not a fault (an optional package)."""


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _error(exc: BaseException) -> dict[str, str]:
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return {"type": type(exc).__name__, "message": str(exc)[:2000],
            "traceback_tail": tb[-TRACEBACK_CHARS:]}


def _json_default(obj: Any) -> Any:
    try:
        return common._json_default(obj)
    except TypeError:
        return repr(obj)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename,
    so a reader (or a crash) never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(data, indent=1, default=_json_default, allow_nan=True) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def _time_limit(seconds: float | None) -> Iterator[None]:
    """Raise :class:`StageTimeout` in the main thread after ``seconds`` (SIGALRM; a no-op
    where there is none, or off the main thread). A call blocked inside C (a CUDA wait) is
    stopped when it returns."""
    usable = (seconds is not None and hasattr(signal, "setitimer")
              and hasattr(signal, "SIGALRM"))
    previous = None
    if usable:
        def on_alarm(signum: int, frame: Any) -> None:
            raise StageTimeout(f"stage stopped after its limit of {seconds:.1f} s")

        try:
            previous = signal.signal(signal.SIGALRM, on_alarm)
        except ValueError:  # not the main thread
            usable = False
    if usable:
        signal.setitimer(signal.ITIMER_REAL, max(0.001, seconds))
    try:
        yield
    finally:
        if usable:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)


# ---------------------------------------------------------------------------- context
@dataclass
class Context:
    """What the stages share: options, the document, the deadline, the device."""

    args: argparse.Namespace
    sizes: dict[str, Any]
    path: Path
    default_path: bool
    deadline: float
    doc: dict[str, Any]
    has_gpu: bool = False
    cupy: Any = None
    stopped: str | None = None
    _cache: dict[str, Any] = field(default_factory=dict)

    def remaining(self) -> float:
        return self.deadline - time.perf_counter()

    def save(self) -> None:
        self.doc["updated"] = _now()
        self.doc["elapsed_s"] = round(time.perf_counter() - self.doc["_t0"], 3)
        doc = {k: v for k, v in self.doc.items() if not k.startswith("_")}
        write_json_atomic(self.path, doc)

    def move_to(self, path: Path) -> None:
        """Write to ``path`` from now on (the default name gains the machine's)."""
        if path != self.path:
            old, self.path = self.path, path
            self.save()
            with contextlib.suppress(OSError):
                old.unlink()

    def structure(self, name: str = "au147_icosahedron") -> Any:
        """A bundled example structure (read once)."""
        if name not in self._cache:
            from xyz2image_gpu import as_structure
            from xyz2image_gpu.structures.examples import bundled_examples

            path = next(p for p in bundled_examples() if p.stem == name)
            self._cache[name] = as_structure(path)
        return self._cache[name]

    def sync(self) -> None:
        """Wait for all work on the device (every stream)."""
        if self.cupy is not None:
            self.cupy.cuda.Device().synchronize()


def _median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


# ---------------------------------------------------------------------------- stages
def stage_environment(ctx: Context, fig: dict[str, Any]) -> None:
    from importlib import metadata

    fig["python"] = {"version": platform.python_version(), "executable": sys.executable,
                     "platform": platform.platform()}
    fig["cpu"] = {"model": common._cpu_model(), "logical_cores": os.cpu_count()}
    with contextlib.suppress(AttributeError, OSError):
        fig["cpu"]["usable_cores"] = len(os.sched_getaffinity(0))
    wanted = ("numpy", "scipy", "tifffile", "click", "tqdm", "threadpoolctl", "filelock",
              "xyz2image-gpu", "pytest", "psutil", "ase", "torch")
    versions: dict[str, str | None] = {}
    for name in wanted:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    cuda_wheels = {}
    for dist in metadata.distributions():
        name = (dist.metadata["Name"] or "").lower()
        if name.startswith(("cupy", "nvidia-", "cuda-")):
            cuda_wheels[name] = dist.version
    fig["packages"] = versions
    fig["cuda_wheels"] = dict(sorted(cuda_wheels.items()))
    fig["env"] = {k: v for k, v in sorted(os.environ.items())
                  if k.startswith(("CUDA", "CUPY_", "CUBLAS", "NVIDIA_", "XYZ2IMAGE_GPU"))
                  or k in ("LD_LIBRARY_PATH", "PYTHONPATH")}
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        git = subprocess.run(["git", "rev-parse", "HEAD"], cwd=common.REPO_ROOT,
                             capture_output=True, text=True, timeout=5, check=False)
        fig["git_commit"] = git.stdout.strip() or None
    try:
        query = "name,driver_version,memory.total,compute_cap,clocks.max.sm,power.limit"
        smi = subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv"],
                             capture_output=True, text=True, timeout=15, check=False)
        fig["nvidia_smi"] = (smi.stdout or smi.stderr).strip()
    except (OSError, subprocess.SubprocessError) as exc:
        fig["nvidia_smi"] = f"not available ({type(exc).__name__}: {exc})"

    _cupy_facts(fig)
    import xyz2image_gpu  # an ImportError here is this stage's error, and says what is missing
    from xyz2image_gpu.pipeline.kernels import compiled_kernel_available

    fig["package"] = {"file": xyz2image_gpu.__file__,
                      "compiled_cpu_kernel": compiled_kernel_available()}


def _import_cupy() -> Any:
    """CuPy as the backend imports it (CUBLAS_WORKSPACE_CONFIG set first); directly, with
    the same setting, when the package itself does not import."""
    try:
        from xyz2image_gpu.backend import import_cupy
    except ImportError:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        import cupy

        return cupy
    return import_cupy()


def _cupy_facts(fig: dict[str, Any]) -> None:
    """What CuPy says of itself and the device, each fact on its own (a failure is kept as
    the fact's value)."""
    try:
        cupy = _import_cupy()
    except Exception as exc:  # noqa: BLE001 - absent, or a broken CUDA install
        fig["cupy"] = {"importable": False, "error": f"{type(exc).__name__}: {exc}"}
        return
    info: dict[str, Any] = {"importable": True, "version": cupy.__version__,
                            "CUBLAS_WORKSPACE_CONFIG": os.environ.get("CUBLAS_WORKSPACE_CONFIG")}
    fig["cupy"] = info
    probes: dict[str, Callable[[], Any]] = {
        "runtime_version": cupy.cuda.runtime.runtimeGetVersion,
        "driver_version": cupy.cuda.runtime.driverGetVersion,
        "device_count": cupy.cuda.runtime.getDeviceCount,
        "nvrtc_version": lambda: cupy.cuda.nvrtc.getVersion(),
    }
    for key, probe in probes.items():
        try:
            info[key] = probe()
        except Exception as exc:  # noqa: BLE001
            info[key] = f"error: {type(exc).__name__}: {exc}"
    try:
        props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
        name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
        info["device"] = {"name": name, "memory_gib": round(props["totalGlobalMem"] / 2**30, 2),
                          "compute_capability": f"{props['major']}.{props['minor']}",
                          "multiprocessors": props.get("multiProcessorCount")}
    except Exception as exc:  # noqa: BLE001
        info["device"] = f"error: {type(exc).__name__}: {exc}"
    text = io.StringIO()
    try:
        with contextlib.redirect_stdout(text):
            cupy.show_config()
        info["show_config"] = text.getvalue()
    except Exception as exc:  # noqa: BLE001
        info["show_config"] = text.getvalue() + f"\nerror: {type(exc).__name__}: {exc}"


def stage_smoke(ctx: Context, fig: dict[str, Any]) -> None:
    from xyz2image_gpu import backend
    from xyz2image_gpu.flags import FORCE_CPU_ENV, force_cpu

    t0 = time.perf_counter()
    cupy, reason = backend.cupy_status()
    fig["first_call_s"] = round(time.perf_counter() - t0, 4)
    fig["usable"], fig["reason"] = cupy is not None, reason
    if force_cpu():
        fig["forced_cpu"] = f"{FORCE_CPU_ENV} is set: the GPU is not used"
    ctx.has_gpu = cupy is not None and not force_cpu()
    ctx.cupy = cupy if ctx.has_gpu else None
    ctx.doc["gpu"] = {"usable": ctx.has_gpu, "reason": fig.get("forced_cpu", reason)}
    module = cupy
    if module is None:  # which steps fail, each on its own, where CuPy imports at all
        try:
            module = backend.import_cupy()
            if module.cuda.runtime.getDeviceCount() < 1:
                module = None
        except Exception:  # noqa: BLE001 - the reason above says why
            module = None
    steps = []
    for step, check in backend.smoke_steps(module) if module is not None else ():
        t1 = time.perf_counter()
        try:
            check()
            steps.append({"step": step, "ok": True, "s": round(time.perf_counter() - t1, 5)})
        except Exception as exc:  # noqa: BLE001
            steps.append({"step": step, "ok": False, "error": f"{type(exc).__name__}: {exc}"})
    fig["steps"] = steps
    with contextlib.suppress(Exception):
        ctx.doc["machine"] = common.machine_info()
        if ctx.default_path:
            ctx.move_to(ctx.path.with_name(
                f"gpu_check_{common.machine_slug(ctx.doc['machine'])}_{common.today()}.json"))


def stage_bandwidth(ctx: Context, fig: dict[str, Any]) -> None:
    from xyz2image_gpu.backend import get_backend

    cp = ctx.cupy
    be = get_backend("gpu")
    nbytes = int(ctx.sizes["bandwidth_mib"]) << 20
    fig["bytes"] = nbytes
    pinned = be.pinned_empty((nbytes,), np.uint8)
    pageable = np.empty(nbytes, np.uint8)
    pinned[:] = 7
    pageable[:] = 7
    dev = cp.empty(nbytes, dtype=cp.uint8)
    stream = cp.cuda.Stream(non_blocking=True)
    copies = {"h2d_pinned": lambda: dev.set(pinned, stream=stream),
              "d2h_pinned": lambda: dev.get(stream=stream, out=pinned),
              "h2d_pageable": lambda: dev.set(pageable, stream=stream),
              "d2h_pageable": lambda: dev.get(stream=stream, out=pageable)}
    for name, copy in copies.items():
        copy()
        stream.synchronize()
        times = []
        for _ in range(5):
            start, stop = cp.cuda.Event(), cp.cuda.Event()
            start.record(stream)
            copy()
            stop.record(stream)
            stop.synchronize()
            times.append(cp.cuda.get_elapsed_time(start, stop) / 1e3)
        fig[name] = {"GB_per_s": nbytes / _median(times) / 1e9, "median_s": _median(times)}
        ctx.save()
    copies.clear()
    dev = None
    cp.get_default_memory_pool().free_all_blocks()


def _timed_iteration(renderer: Any, structure: Any, n: int, batch: int, to_host: bool,
                     ctx: Context, gpu: bool) -> dict[str, Any]:
    """One pass over ``n`` images: wall time, and per batch the wall-clock interval and
    (``to_host=False`` on the GPU) CUDA events on the current stream around it."""
    cp = ctx.cupy if gpu else None
    intervals: list[float] = []
    events = []
    t0 = last = time.perf_counter()
    if cp is not None and not to_host:
        events.append(cp.cuda.get_current_stream().record())
    for _batch in renderer.iter_batches(structure, n, batch_size=batch, to_host=to_host):
        now = time.perf_counter()
        intervals.append(now - last)
        last = now
        if cp is not None and not to_host:
            events.append(cp.cuda.get_current_stream().record())
    if cp is not None:
        ctx.sync()
    wall = time.perf_counter() - t0
    out: dict[str, Any] = {"wall_s": wall, "images_per_s": n / wall, "batches": len(intervals),
                           "host_ms_per_batch": {
                               "first": 1e3 * intervals[0] if intervals else None,
                               "median": 1e3 * _median(intervals[1:] or intervals),
                               "max": 1e3 * max(intervals) if intervals else None}}
    if len(events) > 2:
        device = [cp.cuda.get_elapsed_time(a, b) for a, b in zip(events, events[1:])]
        out["device_ms_per_batch"] = {"median": _median(device[1:]), "first": device[0]}
    return out


def stage_throughput(ctx: Context, fig: dict[str, Any]) -> None:
    from xyz2image_gpu import Renderer, RenderSettings

    s = ctx.sizes
    structure = ctx.structure()
    settings = RenderSettings(edgesize=s["edgesize"])
    fig.update(output="gaussian_2d", edgesize=s["edgesize"], n_atoms=structure.max_atoms,
               batch_size=s["batch_size"], images=s["images"], dtype="uint8")
    with Renderer(settings, ["gaussian_2d"], GPU_DEVICE) as renderer:
        fig["default_batch_size"] = renderer.default_batch_size(structure)
        t0 = time.perf_counter()
        for _ in renderer.iter_batches(structure, s["batch_size"], batch_size=s["batch_size"]):
            pass
        ctx.sync()
        fig["warm_up_s"] = time.perf_counter() - t0  # kernels compiled (or loaded from cache)
        for to_host in (True, False):
            key = "to_host" if to_host else "to_device"
            runs = []
            for _ in range(s["repeats"]):
                runs.append(_timed_iteration(renderer, structure, s["images"], s["batch_size"],
                                             to_host, ctx, gpu=True))
                fig[key] = {"runs": runs,
                            "images_per_s": _median([r["images_per_s"] for r in runs])}
                ctx.save()
                if ctx.remaining() < 4 * runs[-1]["wall_s"] + MIN_STAGE_S:
                    break
    pool = ctx.cupy.get_default_memory_pool()
    fig["memory_pool"] = {"used_bytes": pool.used_bytes(), "total_bytes": pool.total_bytes()}
    out_bytes = s["batch_size"] * s["edgesize"] ** 2  # uint8 images of one batch
    d2h = ctx.doc["stages"]["bandwidth"]["figures"].get("d2h_pinned", {}).get("GB_per_s")
    fig["per_batch_split"] = {
        "method": ("wall clock and CUDA events around Renderer.iter_batches: the engine "
                   "exposes no per-stage timing hook (host assembly, kernels, copy) yet"),
        "to_device_host_ms": fig["to_device"]["runs"][-1]["host_ms_per_batch"]["median"],
        "to_device_device_ms": fig["to_device"]["runs"][-1].get(
            "device_ms_per_batch", {}).get("median"),
        "to_host_ms": fig["to_host"]["runs"][-1]["host_ms_per_batch"]["median"],
        "copy_ms_from_bandwidth": (1e3 * out_bytes / (d2h * 1e9)) if d2h else None,
        "reading": ("to_device_host_ms: the host's own work per batch (assembly, launches, any "
                    "synchronisation inside the engine); to_device_device_ms: time between "
                    "events on the current stream, the kernels when the device is the "
                    "bottleneck, else about to_device_host_ms; to_host_ms - to_device_host_ms "
                    "is what the copy to host memory adds; copy_ms_from_bandwidth is that "
                    "copy at the measured pinned device-to-host rate"),
    }
    ctx.doc["render"].append({"output": "gaussian_2d", "backend": "gpu/cupy", "device": "gpu",
                              "edgesize": s["edgesize"], "n_atoms": structure.max_atoms,
                              "images_per_s": fig["to_host"]["images_per_s"]})
    _image_kernel_ab(ctx, fig, structure)
    _augmented_rate(ctx, fig, structure)


#: Every augmentation at once, for the augmented throughput.
AUGMENTED = {"phonon_jitter": True, "dose": 1e4, "read_noise": 0.01, "scan_jitter": 0.1,
             "drift": 1.0}


def _augmented_rate(ctx: Context, fig: dict[str, Any], structure: Any) -> None:
    """Images/s with every augmentation on (drawn, rendered, noised and quantised on the
    device), to device and to host memory, one run each while time is left, and the ratio to
    the plain rate; records its own error instead of failing the stage."""
    from xyz2image_gpu import Renderer, RenderSettings

    s = ctx.sizes
    aug: dict[str, Any] = {"settings": AUGMENTED}
    fig["augmented"] = aug
    try:
        with Renderer(RenderSettings(edgesize=s["edgesize"], **AUGMENTED), ["gaussian_2d"],
                      GPU_DEVICE) as renderer:
            for _ in renderer.iter_batches(structure, s["batch_size"],
                                           batch_size=s["batch_size"], to_host=False):
                pass  # compiles (or loads) the kernels
            ctx.sync()
            for to_host in (False, True):
                if ctx.remaining() < 2 * MIN_STAGE_S:
                    aug["note"] = "stopped: the stage's time was spent"
                    break
                key = "to_host" if to_host else "to_device"
                run = _timed_iteration(renderer, structure, s["images"], s["batch_size"],
                                       to_host, ctx, gpu=True)
                plain = fig.get(key, {}).get("images_per_s")
                aug[key] = {"images_per_s": run["images_per_s"],
                            "ratio_to_plain": run["images_per_s"] / plain if plain else None,
                            "device_ms_per_batch": run.get("device_ms_per_batch")}
                ctx.save()
    except Exception as exc:  # noqa: BLE001 - keep the stage's other figures
        aug["error"] = _error(exc)


def _image_kernel_ab(ctx: Context, fig: dict[str, Any], structure: Any) -> None:
    """The GPU's own image kernel (``kernels/splat.cu``) against the batched products it
    replaced (``XYZ2IMAGE_GPU_NO_FUSED_KERNEL``), images/s to device memory, gaussian_2d at
    ``--edgesize`` and gaussian_3d at 64 px, one run each while time is left; each case
    records its own error instead of failing the stage."""
    from xyz2image_gpu import Renderer, RenderSettings
    from xyz2image_gpu.flags import NO_FUSED_KERNEL_ENV

    s = ctx.sizes
    ab: dict[str, Any] = {}
    fig["image_kernel"] = ab
    cases = (("gaussian_2d", s["edgesize"], s["images"], s["batch_size"]),
             ("gaussian_3d", 64, max(64, s["images"] // 64), 64))
    for output, edge, n, batch in cases:
        for label, off in (("fused", ""), ("products", "1")):
            if ctx.remaining() < 2 * MIN_STAGE_S:
                ab["note"] = "stopped: the stage's time was spent"
                return
            key = f"{output}_{label}"
            saved = os.environ.get(NO_FUSED_KERNEL_ENV)
            os.environ[NO_FUSED_KERNEL_ENV] = off
            try:
                with Renderer(RenderSettings(edgesize=edge), [output], GPU_DEVICE) as renderer:
                    ab[key] = {"kernel": type(renderer.kernel).__name__, "edgesize": edge,
                               "shared_memory_per_block":
                                   renderer.backend.shared_memory_per_block()}
                    for _ in renderer.iter_batches(structure, batch, batch_size=batch,
                                                   to_host=False):
                        pass  # compiles (or loads) the kernels
                    ctx.sync()
                    run = _timed_iteration(renderer, structure, n, batch, False, ctx, gpu=True)
                    ab[key].update(images=n, batch_size=batch,
                                   images_per_s=run["images_per_s"],
                                   device_ms_per_batch=run.get("device_ms_per_batch"))
            except Exception as exc:  # noqa: BLE001 - keep the other cases' figures
                ab[key] = {"error": _error(exc)}
            finally:
                if saved is None:
                    os.environ.pop(NO_FUSED_KERNEL_ENV, None)
                else:
                    os.environ[NO_FUSED_KERNEL_ENV] = saved
            ctx.save()


def stage_cpu_baseline(ctx: Context, fig: dict[str, Any]) -> None:
    from xyz2image_gpu import Renderer, RenderSettings
    from xyz2image_gpu.backend import available_cores
    from xyz2image_gpu.pipeline.kernels import compiled_kernel_available

    s = ctx.sizes
    structure = ctx.structure()
    kernel = "compiled" if compiled_kernel_available() else "numpy"
    fig.update(kernel=kernel, cores=available_cores(), edgesize=s["edgesize"],
               batch_size=s["batch_size"], n_atoms=structure.max_atoms)
    if kernel == "numpy":
        fig["note"] = ("the compiled CPU kernel is not built here (python setup.py build_ext "
                       "--inplace, or pip install -e .): NumPy path measured instead")
    with Renderer(RenderSettings(edgesize=s["edgesize"]), ["gaussian_2d"], "cpu",
                  cpu_kernel=kernel) as renderer:
        first = _timed_iteration(renderer, structure, s["batch_size"], s["batch_size"], True,
                                 ctx, gpu=False)
        rate = first["images_per_s"]
        n = max(s["batch_size"], int(rate * s["cpu_seconds"]) // s["batch_size"]
                * s["batch_size"])
        runs = []
        for _ in range(s["repeats"]):
            runs.append(_timed_iteration(renderer, structure, n, s["batch_size"], True, ctx,
                                         gpu=False))
            fig.update(images=n, runs=runs,
                       images_per_s=_median([r["images_per_s"] for r in runs]))
            ctx.save()
            if ctx.remaining() < 4 * runs[-1]["wall_s"] + MIN_STAGE_S:
                break
    ctx.doc["render"].append({"output": "gaussian_2d", "backend": f"cpu/{kernel}",
                              "device": "cpu", "edgesize": s["edgesize"],
                              "n_atoms": structure.max_atoms,
                              "images_per_s": fig["images_per_s"]})
    gpu = ctx.doc["stages"]["throughput"]["figures"]
    ratios = {k: gpu[k]["images_per_s"] / fig["images_per_s"]
              for k in ("to_host", "to_device") if k in gpu}
    if ratios:
        fig["gpu_over_cpu"] = ratios


def _render_range(device: str, kernel: str, settings: Any, outputs: list[str], structure: Any,
                  n_rotation: int, batch: int, stop: int | None = None) -> dict[str, np.ndarray]:
    from xyz2image_gpu import Renderer

    with Renderer(settings, outputs, device, cpu_kernel=kernel) as renderer:
        batches = list(renderer.iter_batches(structure, n_rotation, seed=11, batch_size=batch,
                                             stop=stop))
    return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


def _engines(ctx: Context) -> list[tuple[str, str, str]]:
    """(label, device, cpu_kernel) of the engines this machine has, GPU first."""
    from xyz2image_gpu.pipeline.kernels import compiled_kernel_available

    engines = [("gpu", GPU_DEVICE, "auto")] if ctx.has_gpu else []
    if compiled_kernel_available():
        engines.append(("cpu/compiled", "cpu", "compiled"))
    return engines + [("cpu/numpy", "cpu", "numpy")]


def _difference(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    if a.shape != b.shape or a.dtype != b.dtype:
        return {"equal": False, "detail": f"{a.shape} {a.dtype} against {b.shape} {b.dtype}"}
    equal = a.tobytes() == b.tobytes()
    out: dict[str, Any] = {"equal": equal}
    if not equal:
        per_image = (a != b).reshape(len(a), -1).any(axis=1)
        out["images_differ"] = int(per_image.sum())
        out["max_abs_diff"] = float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))
    return out


def stage_repeatability(ctx: Context, fig: dict[str, Any]) -> None:
    """Bytes across runs and batch sizes: the same images at batch sizes B, B again, 7, 1."""
    from xyz2image_gpu import RenderSettings

    s = ctx.sizes
    structure = ctx.structure()
    n, big, n1 = s["repeat_images"], s["batch_size"], min(s["batch1_images"], s["repeat_images"])
    engines = [e for e in _engines(ctx) if e[0] == "gpu"] or _engines(ctx)
    fig.update(images=n, batch_sizes=[big, 7, 1], batch1_images=n1,
               CUBLAS_WORKSPACE_CONFIG=os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
               engines=[e[0] for e in engines], results={})
    if not ctx.has_gpu:
        fig["note"] = "no GPU: the CPU engines' figures only"
    variants = {"uint8": {}, "float32": {"normalization": "float"}}
    for label, device, kernel in engines:
        for variant, extra in variants.items():
            settings = RenderSettings(edgesize=s["edgesize"], **extra)

            def images(batch: int, stop: int | None = None, *, device=device, kernel=kernel,
                       settings=settings) -> np.ndarray:
                return _render_range(device, kernel, settings, ["gaussian_2d"], structure, n,
                                     batch, stop)["gaussian_2d"]

            ref = images(big)
            row = {"run_to_run": _difference(ref, images(big)),
                   "batch_7": _difference(ref, images(7)),
                   "batch_1": _difference(ref[:n1], images(1, n1))}
            row["all_equal"] = all(r["equal"] for r in row.values())
            fig["results"][f"{label} {variant}"] = row
            ctx.save()
    fig["all_equal"] = all(r["all_equal"] for r in fig["results"].values())


#: Label outputs, compared for equality.
LABELS = ("coordinates_3d", "delta_3d", "delta_2d", "binary_3d", "binary_2d", "n_atoms",
          "frame_index", "rotations", "numbers", "elements", "column_map_2d",
          "column_map_2d_clean")
#: The training labels (the heatmaps are float sums: compared as float images).
TRAINING = ["numbers", "heatmap_2d", "element_heatmap_2d", "column_map_2d"]


def _parity_cases(ctx: Context) -> list[tuple[str, str, list[str], dict[str, Any]]]:
    from xyz2image_gpu.physics.probe import ProbeOptics, fit_probe

    e = ctx.sizes["edgesize"]
    probe = fit_probe(ProbeOptics(200, 20, source_size=0.6)).components
    column = {"probe": probe, "z_exponent": 1.7, "thermal": True,
              "column_correction": (0.175,), "column_broadening": 0.004}
    two_d = ["gaussian_2d", "coordinates_3d", "delta_2d", "binary_2d"]
    beam = {"probe": probe, "thermal": True, "normalization": "beam", "voltage_kv": 200.0,
            "convergence_mrad": 20.0, "framing": "fixed", "pixel_size": 20.0 / e}
    e3, el = max(16, e // 2), max(24, (e * 5) // 8)
    return [
        ("plain", "au147_icosahedron", two_d, {"edgesize": e}),
        ("3-D outputs", "au147_icosahedron", ["gaussian_3d", "delta_3d", "binary_3d"],
         {"edgesize": e3}),
        ("Z contrast, 16 bit", "aupd147_core_shell", ["gaussian_2d", "coordinates_3d"],
         {"edgesize": e, "z_exponent": 1.7, "bitrate": 16}),
        ("probe", "au147_icosahedron", ["gaussian_2d"], {"edgesize": e, "probe": probe}),
        ("thermal", "au147_icosahedron", ["gaussian_2d"], {"edgesize": e, "thermal": True}),
        ("column correction", "aupd147_core_shell", ["gaussian_2d"], {"edgesize": e, **column}),
        ("phonon jitter", "au147_icosahedron", ["gaussian_2d", "coordinates_3d"],
         {"edgesize": e, "phonon_jitter": True}),
        ("shot + read noise", "au147_icosahedron", ["gaussian_2d"],
         {"edgesize": e, "dose": 1e4, "read_noise": 0.01}),
        ("scan jitter + drift", "au147_icosahedron", ["gaussian_2d"],
         {"edgesize": e, "scan_jitter": 0.1, "drift": 1.0}),
        ("all augmentations, 16 bit", "aupd147_core_shell", ["gaussian_2d", "coordinates_3d"],
         {"edgesize": e, "z_exponent": 1.7, "bitrate": 16, "phonon_jitter": True,
          "dose": 1e4, "read_noise": 0.01, "scan_jitter": 0.1, "drift": 1.0}),
        ("legacy", "pt309_icosahedron", ["gaussian_2d", "delta_3d"], {"edgesize": el,
                                                                      "legacy": True}),
        ("beam units, default channelling", "aupd147_core_shell", ["gaussian_2d"],
         {"edgesize": e, **beam}),
        ("beam units, absolute shot noise, 16 bit", "aupd147_core_shell", ["gaussian_2d"],
         {"edgesize": e, **beam, "dose": 1e5, "intensity_scale": 2e4, "bitrate": 16}),
        ("training labels", "aupd147_core_shell", ["gaussian_2d", *TRAINING],
         {"edgesize": e, "column_radius": 0.4}),
        ("training labels, distorted scan", "aupd147_core_shell",
         [*TRAINING, "delta_2d", "binary_2d"], {"edgesize": e, "scan_jitter": 0.1,
                                                "drift": 1.0}),
    ]


#: Shot-noised images: the largest fraction of pixels allowed beyond one grey level. The
#: draws are the same on every device (tests/test_draws.py: to the bit), but a Poisson count
#: is a step function of its mean: where two engines' clean float images differ in the last
#: bit, a pixel near a step may count one electron more (measured between the CPU's compiled
#: and NumPy paths, 64 images at 128 px, 16 bit, every augmentation: 1.8e-5 of pixels).
NOISY_FRACTION_OVER_ONE = 1e-4


def _compare(key: str, a: np.ndarray, b: np.ndarray, *, shot_noise: bool = False,
             ) -> dict[str, Any]:
    """One output of two engines: labels equal, integer images within one grey level (with
    ``shot_noise``: but for at most :data:`NOISY_FRACTION_OVER_ONE` of the pixels), float
    arrays within 1e-4 of their largest value."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return {"ok": False, "detail": f"{a.shape} {a.dtype} against {b.shape} {b.dtype}"}
    if key in LABELS or key == "scan_offsets" or a.dtype.kind == "b":  # the draws: exact
        n_diff = int(np.count_nonzero(a != b))
        return {"ok": n_diff == 0, "n_diff": n_diff, "of": int(a.size)}
    diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
    if a.dtype.kind in "iu":
        worst = int(diff.max()) if diff.size else 0
        over = float(np.count_nonzero(diff > 1) / max(1, diff.size))
        row = {"ok": worst <= 1, "max_grey_diff": worst,
               "frac_differ": float(np.count_nonzero(diff) / max(1, diff.size))}
        if shot_noise:
            row.update(ok=over <= NOISY_FRACTION_OVER_ONE, frac_over_one=over)
        return row
    scale = float(np.max(np.abs(a))) if a.size else 0.0
    rel = float(diff.max() / scale) if scale > 0 else float(diff.max(initial=0.0))
    return {"ok": rel <= 1e-4, "max_rel_diff": rel}


def stage_parity(ctx: Context, fig: dict[str, Any]) -> None:
    from xyz2image_gpu import RenderSettings

    engines = _engines(ctx)
    labels = [e[0] for e in engines]
    pairs = [(a, b) for i, a in enumerate(labels) for b in labels[i + 1:]]
    n = ctx.sizes["parity_images"]
    fig.update(images_per_case=n, engines=labels, pairs=[f"{a} vs {b}" for a, b in pairs],
               cases=[])
    if not ctx.has_gpu:
        fig["note"] = "no GPU: the two CPU engines against each other only"
    for name, structure_name, outputs, extra in _parity_cases(ctx):
        settings = RenderSettings(**extra)
        structure = ctx.structure(structure_name)
        rendered = {label: _render_range(device, kernel, settings, outputs, structure, n,
                                         ctx.sizes["batch_size"])
                    for label, device, kernel in engines}
        rows = []
        for a, b in pairs:
            keys = sorted(set(rendered[a]) | set(rendered[b]))
            per_key = {k: (_compare(k, rendered[a][k], rendered[b][k],
                                    shot_noise=k == "gaussian_2d" and "dose" in extra)
                           if k in rendered[a] and k in rendered[b]
                           else {"ok": False, "detail": "missing in one engine"})
                       for k in keys}
            rows.append({"pair": f"{a} vs {b}", "ok": all(v["ok"] for v in per_key.values()),
                         "outputs": per_key})
        fig["cases"].append({"case": name, "structure": structure_name,
                             "settings": {k: v for k, v in extra.items() if k != "probe"},
                             "comparisons": rows, "ok": all(r["ok"] for r in rows)})
        ctx.save()
    fig["ok"] = all(c["ok"] for c in fig["cases"])


def stage_memory_pool(ctx: Context, fig: dict[str, Any]) -> None:
    from xyz2image_gpu import Renderer, RenderSettings

    s = ctx.sizes
    cp = ctx.cupy
    structure = ctx.structure()
    pool, pinned = cp.get_default_memory_pool(), cp.get_default_pinned_memory_pool()
    calls = []
    with Renderer(RenderSettings(edgesize=s["edgesize"]), ["gaussian_2d"], GPU_DEVICE) as renderer:
        for _ in range(s["pool_calls"]):
            for _batch in renderer.iter_batches(structure, 2 * s["batch_size"],
                                                batch_size=s["batch_size"]):
                pass
            ctx.sync()
            row = {"used_bytes": pool.used_bytes(), "total_bytes": pool.total_bytes(),
                   "pinned_free_blocks": pinned.n_free_blocks()}
            with contextlib.suppress(AttributeError):
                row["pinned_total_bytes"] = pinned.total_bytes()
            calls.append(row)
            fig["after_each_call"] = calls
    fig["calls"] = len(calls)
    fig["growth_bytes"] = calls[-1]["total_bytes"] - calls[0]["total_bytes"]
    fig["pinned_free_blocks_growth"] = (calls[-1]["pinned_free_blocks"]
                                        - calls[0]["pinned_free_blocks"])


def _write_store(renderer: Any, structure: Any, folder: Path, n: int, batch: int,
                 device_xp: Any, threads: int) -> tuple[float, int]:
    """Render ``n`` gaussian_2d images and write them as a zarr stack (zstd 1); return the
    images/s and the bytes stored."""
    from xyz2image_gpu.output.zarr_store import ZarrStackWriter

    shutil.rmtree(folder, ignore_errors=True)
    layout = {"gaussian_2d": ((n, *renderer.output_layout(structure, n)["gaussian_2d"][0][1:]),
                              np.uint8)}
    t0 = time.perf_counter()
    with ZarrStackWriter(folder, "f", 0, layout, codec="zstd", level=1, threads=threads,
                         device_xp=device_xp) as writer:
        for b in renderer.iter_batches(structure, n, batch_size=batch,
                                       to_host=device_xp is None):
            writer.append({"gaussian_2d": b["gaussian_2d"]})
    wall = time.perf_counter() - t0
    stored = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    return n / wall, stored


def stage_zarr(ctx: Context, fig: dict[str, Any]) -> None:
    try:
        import zarr
    except ImportError as exc:
        fig.update(skipped=f"no zarr ({exc}): pip install 'xyz2image-gpu[zarr]'")
        return
    from xyz2image_gpu import Renderer, RenderSettings
    from xyz2image_gpu.backend import available_cores, zarr_gpu_codec

    s = ctx.sizes
    structure = ctx.structure()
    n, batch = s["images"], s["batch_size"]
    with Renderer(RenderSettings(edgesize=s["edgesize"]), ["gaussian_2d"], GPU_DEVICE) as r:
        on_gpu, why = zarr_gpu_codec(r.backend, "zstd")
        fig.update(zarr=zarr.__version__, images=n, edgesize=s["edgesize"],
                   gpu_codec={"chosen": on_gpu, "reason": why})
        ctx.save()
        with tempfile.TemporaryDirectory(prefix="gpu_check_zarr_") as tmp:
            variants = [("cpu_zstd", None)] + ([("gpu_zstd", r.backend.xp)] if on_gpu else [])
            for key, xp in variants:
                runs = [_write_store(r, structure, Path(tmp) / key, n, batch, xp,
                                     available_cores()) for _ in range(s["repeats"])]
                fig[key] = {"images_per_s": _median([x[0] for x in runs]),
                            "bytes_per_image": runs[-1][1] / n}
                ctx.save()
                stored = zarr.open_group(Path(tmp) / key / "stacks.zarr" / "f" / "0000",
                                         mode="r")["gaussian_2d"][:]  # CPU reader, CPU zstd
                host = np.concatenate([b["gaussian_2d"] for b in r.iter_batches(
                    structure, n, batch_size=batch)])
                fig[key]["cpu_reader_values_equal"] = bool(np.array_equal(stored, host))
    fig["ok"] = all(fig[k]["cpu_reader_values_equal"] for k, _ in variants)


def _gpu_count(ctx: Context) -> int:
    try:
        return max(1, int(ctx.cupy.cuda.runtime.getDeviceCount()))
    except Exception:  # noqa: BLE001 - a stand-in without it: one GPU
        return 1


def stage_dask_gpus(ctx: Context, fig: dict[str, Any]) -> None:
    import hashlib

    from xyz2image_gpu import RenderSettings
    from xyz2image_gpu.run import RunConfig, run
    from xyz2image_gpu.run.distributed import ClusterError, check_cluster_request
    from xyz2image_gpu.structures.examples import bundled_examples

    try:
        check_cluster_request(None, 1)
    except ClusterError as exc:  # optional packages: not a fault of the machine
        raise StageSkipped(f"skipped: {exc}") from None
    s = ctx.sizes
    inputs = tuple(sorted(bundled_examples())[:2])
    base = {"inputs": inputs, "settings": RenderSettings(edgesize=s["edgesize"]),
            "output_types": ("gaussian_2d",), "n_rotation": s["dask_rotations"],
            "n_stacks": 2, "device": GPU_DEVICE, "batch_size": s["batch_size"]}

    def hashes(folder: Path) -> dict[str, str]:
        return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(folder.rglob("*.npz"))}

    def figures(summary: Any) -> dict[str, Any]:
        return {"images": summary.images, "stacks": summary.stacks_written,
                "wall_s": round(summary.elapsed, 3), "workers": summary.workers,
                "images_per_s": summary.images_per_second}

    with tempfile.TemporaryDirectory(prefix="gpu_check_dask_") as tmp:
        one = run(RunConfig(output_folder=Path(tmp) / "one", **base), progress="none")
        fig["single_process"] = figures(one)
        ctx.save()
        gpus = _gpu_count(ctx)
        fig["gpus"] = gpus
        dask = run(RunConfig(output_folder=Path(tmp) / "dask", gpus=gpus, **base),
                   progress="none")
        fig["dask_gpus"] = figures(dask)
        fig["dask_over_single"] = dask.images_per_second / one.images_per_second
        fig["bytes_equal"] = hashes(Path(tmp) / "one") == hashes(Path(tmp) / "dask")
        fig["note"] = ("wall time includes the cluster's start (seconds): compare rates on "
                       "runs of many units")
    fig["ok"] = fig["bytes_equal"] and not one.failed and not dask.failed


def stage_dataset(ctx: Context, fig: dict[str, Any]) -> None:
    from xyz2image_gpu import Renderer, RenderSettings

    try:
        import torch
        from torch.utils.data import DataLoader

        from xyz2image_gpu.torch import RenderDataset
    except ImportError as exc:  # an optional package: not a fault of the machine
        raise StageSkipped(f"skipped: PyTorch is not installed (the torch extra): {exc}"
                           ) from None
    s = ctx.sizes
    structure = ctx.structure()
    settings = RenderSettings(edgesize=s["edgesize"], all_random=True)
    n, batch = s["images"], s["batch_size"]
    fig.update(torch=torch.__version__, torch_cuda=torch.cuda.is_available(),
               output="gaussian_2d", edgesize=s["edgesize"], images=n, batch_size=batch)

    def wait() -> None:
        ctx.sync()
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    dataset = RenderDataset(structure, settings, ["gaussian_2d"], n_rotation=n,
                            batch_size=batch, device=GPU_DEVICE, shuffle=False)
    fig["renders_on_gpu"] = dataset.on_gpu
    loader = DataLoader(dataset, batch_size=None, num_workers=0)
    first = next(iter(loader))
    fig["tensor_device"] = str(first["gaussian_2d"].device)
    with Renderer(settings, ["gaussian_2d"], GPU_DEVICE) as renderer:
        want = renderer.render(structure, n, stop=batch, batch_size=batch)["gaussian_2d"]
        fig["first_batch_equals_render"] = bool(np.array_equal(
            first["gaussian_2d"].cpu().numpy(), want))
        device_batch = next(renderer.iter_batches(structure, n, stop=batch, batch_size=batch,
                                                  to_host=False))
        array = device_batch["gaussian_2d"]
        pointer = getattr(getattr(array, "data", None), "ptr", None)  # CuPy's device pointer
        if pointer is not None:
            fig["dlpack_shares_memory"] = torch.from_dlpack(array).data_ptr() == pointer
        del first, device_batch, array
        runs: dict[str, list[float]] = {"render_only_to_device": [], "dataset_0_workers": []}
        for epoch in range(s["repeats"]):
            t0 = time.perf_counter()
            for _ in renderer.iter_batches(structure, n, batch_size=batch, to_host=False):
                pass
            wait()
            runs["render_only_to_device"].append(n / (time.perf_counter() - t0))
            dataset.set_epoch(epoch + 1)
            t0 = time.perf_counter()
            for _ in loader:
                pass
            wait()
            runs["dataset_0_workers"].append(n / (time.perf_counter() - t0))
            fig["runs_images_per_s"] = runs
            ctx.save()
            if ctx.remaining() < MIN_STAGE_S + 3 * n / runs["dataset_0_workers"][-1]:
                break
    fig["images_per_s"] = {k: _median(v) for k, v in runs.items()}
    fig["dataset_over_render_only"] = _median(
        [d / r for d, r in zip(runs["dataset_0_workers"], runs["render_only_to_device"])])


def _junit_counts(path: Path) -> dict[str, Any]:
    """Outcome counts from a pytest JUnit XML report, and the failed test ids."""
    total: Counter[str] = Counter()
    failed: list[str] = []
    for case in ET.parse(path).getroot().iter("testcase"):
        tags = {child.tag for child in case}
        outcome = ("failed" if "failure" in tags else "error" if "error" in tags
                   else "skipped" if "skipped" in tags else "passed")
        total[outcome] += 1
        if outcome in ("failed", "error"):
            failed.append(f"{case.get('classname', '')}::{case.get('name', '')}")
    return {"counts": dict(total), "failed_tests": failed[:50]}


def stage_tests(ctx: Context, fig: dict[str, Any]) -> None:
    timeout = max(1.0, min(ctx.args.test_timeout, ctx.remaining() - 2.0))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(common.REPO_ROOT),
                                                      env.get("PYTHONPATH")]))
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        xml = Path(tmp) / "junit.xml"
        cmd = [sys.executable, "-m", "pytest", "-q", "-rs", "-m", "gpu", "-p", "no:cacheprovider",
               "--continue-on-collection-errors", f"--junitxml={xml}",
               str(common.REPO_ROOT / "tests")]
        fig.update(command=" ".join(cmd[1:-2] + ["tests"]), timeout_s=round(timeout, 1))
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, cwd=common.REPO_ROOT, capture_output=True, text=True,
                                  timeout=timeout, check=False, env=env)
            out, rc = proc.stdout + proc.stderr, proc.returncode
        except subprocess.TimeoutExpired as exc:
            out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) \
                else (exc.stdout or "")
            out += f"\n[gpu_check] pytest stopped after {timeout:.0f} s"
            rc = None
        fig["wall_s"] = time.perf_counter() - t0
        if xml.exists():
            fig.update(_junit_counts(xml))
    lines = out.strip().splitlines()
    fig["returncode"] = rc
    fig["summary_line"] = next((ln.strip("= ") for ln in reversed(lines)
                                if re.search(r"\d+ (passed|failed|error|skipped)", ln)), "")
    fig["skip_reasons"] = sorted({ln for ln in lines if ln.startswith("SKIPPED")})[:20]
    fig["output_tail"] = "\n".join(lines[-40:])
    fig["ok"] = rc == 0


#: name -> (function, needs a GPU).
STAGE_FUNCTIONS: dict[str, tuple[Callable[[Context, dict[str, Any]], None], bool]] = {
    "environment": (stage_environment, False),
    "smoke": (stage_smoke, False),
    "bandwidth": (stage_bandwidth, True),
    "throughput": (stage_throughput, True),
    "cpu_baseline": (stage_cpu_baseline, False),
    "repeatability": (stage_repeatability, False),
    "parity": (stage_parity, False),
    "memory_pool": (stage_memory_pool, True),
    "zarr": (stage_zarr, True),
    "dask_gpus": (stage_dask_gpus, True),
    "dataset": (stage_dataset, True),
    "tests": (stage_tests, False),
}


# ---------------------------------------------------------------------------- driver
def _inject(kind: str, name: str) -> None:
    if kind == "hang":
        time.sleep(3600)
    if kind == "interrupt":
        raise KeyboardInterrupt(f"injected into stage {name}")
    if kind == "sigterm":
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(10)  # the handler raises Terminated here
    raise InjectedFailure(f"failure injected into stage {name} (--inject-failure)")


def run_stage(ctx: Context, name: str) -> None:
    """Run one stage, recording its status, figures, error and time; never raises but for
    an interruption, which it records and turns into ``ctx.stopped``."""
    args = ctx.args
    fn, needs_gpu = STAGE_FUNCTIONS[name]
    rec = ctx.doc["stages"][name]
    if ctx.stopped:
        rec.update(status="not run", reason=ctx.stopped)
        return
    if name in args.skip:
        rec.update(status="skipped", reason="left out with --skip")
        return
    if needs_gpu and not ctx.has_gpu:
        rec.update(status="skipped", reason=f"skipped: no GPU ({ctx.doc['gpu']['reason']})")
        return
    if not ctx.has_gpu and not args.allow_no_gpu and name not in ALWAYS:
        rec.update(status="skipped", reason="skipped: no GPU, and no --allow-no-gpu")
        return
    remaining = ctx.remaining()
    if name not in ALWAYS and remaining < MIN_STAGE_S:
        rec.update(status="skipped",
                   reason=f"budget spent: {args.budget - remaining:.1f} s of {args.budget:g} s")
        return
    limit = args.stage_timeout if name in ALWAYS else min(args.stage_timeout, remaining)
    if name == "tests":  # pytest has its own timeout, inside this one
        limit = remaining + 5.0
    rec.update(status="running", started=_now(), time_limit_s=round(limit, 1))
    ctx.save()
    print(f"[gpu_check] {name} ...", flush=True)
    t0 = time.perf_counter()
    fig = rec["figures"]
    try:
        with _time_limit(limit):
            fn(ctx, fig)
            kind = args.inject.get(name)
            if kind:
                _inject(kind, name)
        rec["status"] = "ok"
    except StageSkipped as exc:
        rec.update(status="skipped", reason=str(exc))
    except StageTimeout as exc:
        rec.update(status="timeout", error=_error(exc))
    except (KeyboardInterrupt, Terminated) as exc:
        what = "SIGTERM" if isinstance(exc, Terminated) else "KeyboardInterrupt"
        rec.update(status="interrupted", error=_error(exc))
        ctx.stopped = f"interrupted ({what}) during stage {name}"
        ctx.doc["interrupted"] = what
    except Exception as exc:  # noqa: BLE001 - every failure is recorded, the next stage runs
        rec.update(status="error", error=_error(exc))
    finally:
        rec["wall_s"] = round(time.perf_counter() - t0, 3)
        ctx.save()
    detail = f": {rec['error']['type']}: {rec['error']['message'][:200]}" if "error" in rec \
        else ""
    print(f"[gpu_check] {name} {rec['status']} ({rec['wall_s']:.1f} s){detail}", flush=True)


def _checks(doc: dict[str, Any]) -> list[dict[str, Any]]:
    st = doc["stages"]
    fig = {k: v.get("figures", {}) for k, v in st.items()}
    checks = [{"check": "every stage that ran finished without error",
               "ok": not [k for k, v in st.items() if v["status"] in ("error", "timeout",
                                                                       "interrupted")],
               "detail": {k: v["status"] for k, v in st.items()}},
              {"check": "GPU usable (smoke test)", "ok": bool(doc["gpu"].get("usable")),
               "detail": doc["gpu"].get("reason")}]
    if "all_equal" in fig["repeatability"]:
        checks.append({"check": "same bytes across runs and batch sizes",
                       "ok": fig["repeatability"]["all_equal"],
                       "detail": {k: v["all_equal"]
                                  for k, v in fig["repeatability"]["results"].items()}})
    if "ok" in fig["parity"]:
        checks.append({"check": "parity: images within one grey level, labels equal",
                       "ok": fig["parity"]["ok"],
                       "detail": {c["case"]: c["ok"] for c in fig["parity"]["cases"]}})
    if "ok" in fig["dask_gpus"]:
        checks.append({"check": "render --gpus writes the single-process bytes",
                       "ok": fig["dask_gpus"]["ok"],
                       "detail": {"bytes_equal": fig["dask_gpus"]["bytes_equal"]}})
    if "first_batch_equals_render" in fig["dataset"]:
        checks.append({"check": "PyTorch dataset: tensors equal render's bytes",
                       "ok": fig["dataset"]["first_batch_equals_render"],
                       "detail": {k: fig["dataset"].get(k) for k in (
                           "tensor_device", "dlpack_shares_memory",
                           "dataset_over_render_only")}})
    if "ok" in fig["tests"]:
        checks.append({"check": "pytest -m gpu passed", "ok": fig["tests"]["ok"],
                       "detail": fig["tests"].get("summary_line")})
    return checks


def _targets(doc: dict[str, Any]) -> dict[str, Any]:
    """The issue's H200 targets against this run's figures (information, not a check)."""
    thr = doc["stages"]["throughput"]["figures"]
    cpu = doc["stages"]["cpu_baseline"]["figures"]
    out: dict[str, Any] = {}
    for key, goal in (("to_host", 1e6), ("to_device", 3e6)):
        if key in thr:
            rate = thr[key]["images_per_s"]
            out[f"{key}_images_per_s"] = {"measured": rate, "target": goal, "met": rate >= goal}
    aug = thr.get("augmented", {}).get("to_host", {})
    if aug.get("ratio_to_plain") is not None:
        r = aug["ratio_to_plain"]
        out["augmented_over_plain"] = {"measured": r, "target": 0.5, "met": r >= 0.5}
    if "gpu_over_cpu" in cpu and "to_host" in cpu["gpu_over_cpu"]:
        r = cpu["gpu_over_cpu"]["to_host"]
        out["gpu_over_compiled_cpu"] = {"measured": r, "target": 20, "met": r >= 20,
                                        "cpu_kernel": cpu.get("kernel")}
    return out


def _summary(doc: dict[str, Any]) -> str:
    usable = "usable" if doc["gpu"].get("usable") else "NOT usable"
    lines = [f"gpu_check {doc['date']}: GPU {usable} ({doc['gpu'].get('reason')})"]
    for name, rec in doc["stages"].items():
        why = rec.get("reason") or (rec.get("error", {}).get("message", "")[:160])
        lines.append(f"  {name:14s} {rec['status']:11s} {rec.get('wall_s', 0):7.1f} s  {why}")
    fig = {k: v.get("figures", {}) for k, v in doc["stages"].items()}
    for key in ("to_host", "to_device"):
        if key in fig["throughput"]:
            lines.append(f"  GPU {key}: {fig['throughput'][key]['images_per_s']:,.0f} images/s")
    if "dataset_over_render_only" in fig["dataset"]:
        d = fig["dataset"]
        lines.append(f"  PyTorch dataset: {d['images_per_s']['dataset_0_workers']:,.0f} "
                     f"images/s on {d['tensor_device']}, "
                     f"{d['dataset_over_render_only']:.0%} of render-only to device")
    if "images_per_s" in fig["cpu_baseline"]:
        c = fig["cpu_baseline"]
        lines.append(f"  CPU {c['kernel']} on {c['cores']} cores: {c['images_per_s']:,.0f} "
                     f"images/s; GPU/CPU {c.get('gpu_over_cpu', '-')}")
    for check in doc.get("checks", []):
        lines.append(f"  [{'ok' if check['ok'] else 'FAIL'}] {check['check']}")
    return "\n".join(lines)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=None,
                        help="where the JSON goes (default: benchmarks/results/"
                             "gpu_check_<machine>_<date>.json)")
    parser.add_argument("--budget", type=float, default=210.0,
                        help="seconds for the whole run; later stages are skipped once spent")
    parser.add_argument("--stage-timeout", type=float, default=90.0,
                        help="seconds one stage may take")
    parser.add_argument("--test-timeout", type=float, default=150.0,
                        help="seconds pytest may take (bounded by the budget left)")
    parser.add_argument("--allow-no-gpu", action="store_true",
                        help="without a usable GPU, run the stages that can run on the CPU")
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes (for the tests: seconds on a CPU, figures meaningless)")
    parser.add_argument("--skip", action="append", default=[], choices=STAGES, metavar="STAGE",
                        help=f"leave a stage out (repeatable): {', '.join(STAGES)}")
    parser.add_argument("--inject-failure", action="append", default=[], metavar="STAGE[:KIND]",
                        help="make STAGE fail after its work: KIND error (default), hang (until "
                             "its time limit), interrupt (as Ctrl-C) or sigterm")
    for key, value in FULL.items():
        parser.add_argument(f"--{key.replace('_', '-')}", type=type(value), default=None,
                            help=f"default {value} ({QUICK[key]} with --quick)")
    args = parser.parse_args(argv)
    args.inject = {}
    for item in args.inject_failure:
        name, _, kind = item.partition(":")
        if name not in STAGES or kind not in ("", "error", "hang", "interrupt", "sigterm"):
            parser.error(f"--inject-failure {item!r}: STAGE is one of {', '.join(STAGES)}, "
                         "KIND one of error, hang, interrupt, sigterm")
        args.inject[name] = kind or "error"
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    sizes = dict(QUICK if args.quick else FULL)
    sizes.update({k: getattr(args, k) for k in FULL if getattr(args, k) is not None})
    t0 = time.perf_counter()
    default_path = args.json is None
    path = args.json or common.RESULTS_DIR / f"gpu_check_{common.today()}.json"
    doc: dict[str, Any] = {
        "_t0": t0, "benchmark": "gpu_check", "schema": 2, "date": common.today(),
        "started": _now(), "updated": None, "finished": False, "exit_status": None,
        "argv": sys.argv[1:] if argv is None else list(argv), "budget_s": args.budget,
        "sizes": sizes, "gpu": {"usable": None, "reason": "not yet known"},
        "stages": {name: {"status": "pending", "figures": {}} for name in STAGES},
        "checks": [], "targets": {}, "machine": {}, "render": []}
    ctx = Context(args, sizes, Path(path), default_path, t0 + args.budget, doc)

    def on_sigterm(signum: int, frame: Any) -> None:
        raise Terminated("SIGTERM")

    previous = None
    with contextlib.suppress(ValueError, AttributeError):  # not the main thread / no SIGTERM
        previous = signal.signal(signal.SIGTERM, on_sigterm)
    status = EXIT_FAILED
    try:
        ctx.save()
        for name in STAGES:
            try:
                run_stage(ctx, name)
            except (KeyboardInterrupt, Terminated) as exc:  # between stages
                ctx.stopped = f"interrupted ({type(exc).__name__}) after stage {name}"
                ctx.doc["interrupted"] = type(exc).__name__
        doc["checks"] = _checks(doc)
        doc["targets"] = _targets(doc)
        if doc.get("interrupted"):
            status = EXIT_TERMINATED if doc["interrupted"] in ("SIGTERM", "Terminated") \
                else EXIT_INTERRUPTED
        elif not ctx.has_gpu and not args.allow_no_gpu:
            status = EXIT_NO_GPU
        else:
            relevant = [c for c in doc["checks"]
                        if ctx.has_gpu or c["check"] != "GPU usable (smoke test)"]
            status = EXIT_OK if all(c["ok"] for c in relevant) else EXIT_FAILED
    finally:
        doc["finished"] = True
        doc["exit_status"] = status
        with contextlib.suppress(Exception):
            ctx.save()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    print(_summary(doc), flush=True)
    if status == EXIT_NO_GPU:
        print("gpu_check: no usable GPU; run with --allow-no-gpu for the CPU stages",
              file=sys.stderr)
    print(f"wrote {ctx.path} ({doc['elapsed_s']:.0f} s, exit {status})", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
