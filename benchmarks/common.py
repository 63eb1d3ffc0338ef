"""Shared helpers of the benchmark scripts: machine description, structures, timing, JSON,
and peak memory of a whole process tree.

Nothing here asserts on timings: the scripts measure and print, people judge.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from typing_extensions import Self

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"

if str(BENCH_DIR) not in sys.path:  # `import common`, `import seed_algorithm` from anywhere
    sys.path.insert(0, str(BENCH_DIR))
try:
    import xyz2image_gpu  # noqa: F401
except ImportError:  # a checkout that was not pip-installed
    sys.path.insert(0, str(REPO_ROOT))

__all__ = [
    "BENCH_DIR",
    "REPO_ROOT",
    "RESULTS_DIR",
    "PeakMemorySampler",
    "ProcessResult",
    "Timing",
    "au_cluster",
    "calibrated_median",
    "cli_command",
    "fmt_bytes",
    "fmt_rate",
    "machine_info",
    "machine_slug",
    "random_cluster",
    "results_path",
    "run_with_peak_memory",
    "today",
    "write_json",
]

#: Au atoms per Å³ in bulk gold (fcc, a = 4.078 Å).
AU_DENSITY = 4 / 4.078**3
#: Shells of Mackay icosahedra by atom count (10 n² + 2 atoms on shell n).
ICOSAHEDRON_SHELLS = {13: 2, 55: 3, 147: 4, 309: 5, 561: 6, 923: 7, 1415: 8, 2057: 9}


# ---------------------------------------------------------------------------- machine
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _gpu_description() -> dict[str, Any] | None:
    """Name, memory and CUDA versions of the GPU the package would use, or None."""
    from xyz2image_gpu import backend

    if not backend.gpu_available():
        return None
    cupy = backend.cupy_status()[0]
    dev = cupy.cuda.Device()
    props = cupy.cuda.runtime.getDeviceProperties(dev.id)
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    info: dict[str, Any] = {
        "name": name,
        "memory_gib": round(props["totalGlobalMem"] / 2**30, 1),
        "compute_capability": f"{props['major']}.{props['minor']}",
        "cupy": cupy.__version__,
    }
    with contextlib.suppress(AttributeError, RuntimeError):  # older CuPy
        info["cuda_runtime"] = cupy.cuda.runtime.runtimeGetVersion()
        info["cuda_driver"] = cupy.cuda.runtime.driverGetVersion()
    return info


def machine_info() -> dict[str, Any]:
    """A hostname-free description of this machine and the software that ran the benchmark."""
    from xyz2image_gpu import backend
    from xyz2image_gpu.pipeline import kernels as renderers

    info: dict[str, Any] = {
        "cpu_model": _cpu_model(),
        "logical_cores": os.cpu_count() or 1,
        "physical_cores": None,
        "memory_gib": None,
        "gpu": _gpu_description(),
        "gpu_reason": backend.cupy_status()[1],
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "numpy": np.__version__,
        "compiled_kernel": renderers.compiled_kernel_available(),
    }
    try:
        import psutil

        info["physical_cores"] = psutil.cpu_count(logical=False)
        info["memory_gib"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    for module in ("scipy", "cupy", "ase"):
        try:
            info[module] = __import__(module).__version__
        except (ImportError, AttributeError, OSError, RuntimeError):  # absent, or broken CUDA
            info[module] = None
    try:
        info["xyz2image_gpu"] = version("xyz2image-gpu")
    except PackageNotFoundError:
        info["xyz2image_gpu"] = None
    try:
        info["blas"] = _blas_name()
    except (AttributeError, TypeError, ValueError):  # NumPy < 1.25: no mode="dicts"
        info["blas"] = None
    return info


def _blas_name() -> str | None:
    config = np.show_config(mode="dicts")  # numpy >= 1.25
    blas = config.get("Build Dependencies", {}).get("blas", {})
    name = blas.get("name")
    return f"{name} {blas.get('version', '')}".strip() if name else None


def _slugify(text: str) -> str:
    text = re.sub(r"\((r|tm)\)|cpu|processor|@.*$", " ", text.lower())
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-")


def machine_slug(info: dict[str, Any]) -> str:
    """Short file-name-safe machine name: the GPU if any, else the CPU model and core count."""
    if info.get("gpu"):
        return _slugify(info["gpu"]["name"]) or "gpu"
    return f"{_slugify(info['cpu_model']) or 'cpu'}-{info['logical_cores']}c"


def today() -> str:
    return _dt.date.today().isoformat()


def results_path(out_dir: Path | str, info: dict[str, Any], prefix: str = "",
                 suffix: str = ".json") -> Path:
    """``out_dir/<prefix><machine-slug>_<YYYY-MM-DD><suffix>``."""
    return Path(out_dir) / f"{prefix}{machine_slug(info)}_{today()}{suffix}"


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_json(path: Path | str, data: Any) -> Path:
    """Write ``data`` as indented JSON (atomically: temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=_json_default) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


# ---------------------------------------------------------------------------- structures
def random_cluster(n_atoms: int, seed: int = 0, a: float = 4.078, jitter: float = 0.15
                   ) -> np.ndarray:
    """(N, 3) positions, Å: a compact cluster of ``n_atoms`` Au atoms at bulk density.

    The ``n_atoms`` sites of an fcc lattice (constant ``a``) nearest to a random point,
    each moved by a seeded Gaussian displacement of ``jitter`` Å: a roughly spherical,
    randomly cut cluster with realistic neighbour distances (no two atoms overlap).
    """
    rng = np.random.default_rng(seed)
    radius = (3 * n_atoms / (4 * math.pi * AU_DENSITY)) ** (1 / 3) + 2 * a
    k = math.ceil(radius / a) + 1
    g = np.arange(-k, k + 1)
    cells = np.stack(np.meshgrid(g, g, g, indexing="ij"), axis=-1).reshape(-1, 1, 3)
    basis = np.array([[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]])
    sites = ((cells + basis[None]) * a).reshape(-1, 3)
    centre = rng.uniform(-a / 2, a / 2, size=3)
    order = np.argsort(((sites - centre) ** 2).sum(axis=1), kind="stable")
    pos = sites[order[:n_atoms]]
    pos = pos + rng.normal(scale=jitter, size=pos.shape)
    return pos - pos.mean(axis=0)


def au_cluster(n_atoms: int, seed: int = 0) -> tuple[Any, str]:
    """An Au structure of ``n_atoms`` atoms and how it was made.

    Mackay icosahedra for their magic numbers (``ase.cluster.Icosahedron`` when ASE is
    installed, else the package's own geometry, same atom count), a random compact cluster
    (:func:`random_cluster`, a jittered fcc ball) otherwise.
    """
    from xyz2image_gpu import as_structure

    shells = ICOSAHEDRON_SHELLS.get(n_atoms)
    name = f"au{n_atoms}"
    if shells is not None:
        try:
            from ase.cluster import Icosahedron

            atoms = Icosahedron("Au", shells)
            return as_structure(atoms, name=name), f"ase.cluster.Icosahedron('Au', {shells})"
        except ImportError:
            from xyz2image_gpu.structures.examples import icosahedron_positions

            pos, _ = icosahedron_positions(shells, 2.88)
            return (as_structure(pos, symbols=["Au"] * len(pos), name=name),
                    f"xyz2image_gpu.structures.examples.icosahedron_positions({shells}, 2.88)")
    pos = random_cluster(n_atoms, seed=seed)
    return (as_structure(pos, symbols=["Au"] * len(pos), name=name),
            f"random_cluster({n_atoms}, seed={seed}): jittered fcc Au ball")


# ---------------------------------------------------------------------------- timing
@dataclass
class Timing:
    """Median images/s of repeated runs of ``n`` images."""

    n_images: int
    times_s: list[float] = field(default_factory=list)

    @property
    def median_s(self) -> float:
        return statistics.median(self.times_s)

    @property
    def images_per_s(self) -> float:
        return self.n_images / self.median_s

    def as_dict(self) -> dict[str, Any]:
        return {
            "n_images": self.n_images,
            "repeats": len(self.times_s),
            "times_s": [round(t, 5) for t in self.times_s],
            "median_s": round(self.median_s, 5),
            "images_per_s": self.images_per_s,
        }


def calibrated_median(
    run: Callable[[int], Any],
    *,
    target_s: float = 0.5,
    repeats: int = 3,
    start: int = 8,
    max_images: int = 1 << 20,
    min_images: int = 1,
    quantum: int = 1,
) -> Timing:
    """Time ``run(n)`` (renders ``n`` images): warm up, size ``n`` so that one run takes about
    ``target_s``, then the median of ``repeats`` runs.

    The warm-up doubles ``n`` from ``start`` until a run takes a tenth of the target, which
    also calibrates the rate; if the timed runs then take under a quarter of the target
    (the calibration ran during a burst of other work), ``n`` is sized again from them.
    """
    n = max(min_images, start)
    run(n)  # warm-up: imports, JIT/plan caches, thread pools, page faults
    while True:
        t0 = time.perf_counter()
        run(n)
        dt = time.perf_counter() - t0
        if dt >= target_s / 10 or n >= max_images:
            break
        n = min(max_images, n * 2 if dt <= 0 else max(n * 2, int(n * target_s / 10 / dt)))
    n = int(min(max_images, max(min_images, n * target_s / max(dt, 1e-9))))
    for _attempt in range(3):
        n = max(quantum, (n // quantum) * quantum)
        timing = Timing(n)
        for _ in range(repeats):
            t0 = time.perf_counter()
            run(n)
            timing.times_s.append(time.perf_counter() - t0)
        # calibrated while the machine was busy: runs far shorter than the target are
        # dominated by overheads and timer noise, so size again and redo
        if timing.median_s >= target_s / 4 or n >= max_images:
            break
        n = int(min(max_images, n * target_s / max(timing.median_s, 1e-9)))
    return timing


# ---------------------------------------------------------------------------- memory
class PeakMemorySampler:
    """Samples the RSS summed over a process and all its descendants every ``interval`` s.

    The sum counts pages that forked workers share (Python, NumPy) once per process, so it
    overstates what the machine needs by tens of MB per worker; arrays dominate the figures
    that matter here. Use as a context manager or ``start()``/``stop()``.
    """

    def __init__(self, pid: int | None = None, interval: float = 0.05) -> None:
        import psutil

        self._psutil = psutil
        self.root = psutil.Process(pid or os.getpid())
        self.interval = interval
        self.peak_bytes = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample(self) -> int:
        ps = self._psutil
        total = 0
        try:
            procs = [self.root] + self.root.children(recursive=True)
        except ps.Error:
            return 0
        for proc in procs:
            try:
                total += proc.memory_info().rss
            except ps.Error:  # exited between listing and reading
                pass
        self.samples += 1
        self.peak_bytes = max(self.peak_bytes, total)
        return total

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def start(self) -> Self:
        self._thread = threading.Thread(target=self._loop, name="peak-memory", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> int:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        return self.peak_bytes

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class ProcessResult:
    """What :func:`run_with_peak_memory` saw."""

    cmd: list[str]
    returncode: int
    wall_s: float
    peak_rss_bytes: int
    stdout: str
    stderr: str
    samples: int


def run_with_peak_memory(
    cmd: Sequence[str],
    *,
    cwd: Path | str | None = None,
    env: dict[str, str] | None = None,
    timeout: float | None = None,
    interval: float = 0.05,
) -> ProcessResult:
    """Run ``cmd``, timing it and sampling the RSS of its process tree every ``interval`` s."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        list(cmd), cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    sampler = PeakMemorySampler(proc.pid, interval=interval).start()
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        err += f"\n[benchmark] killed after {timeout} s"
    finally:
        sampler.stop()
    wall = time.perf_counter() - t0
    return ProcessResult(list(cmd), proc.returncode, wall, sampler.peak_bytes, out, err,
                         sampler.samples)


def cli_command() -> list[str]:
    """How to start ``xyz2image-gpu`` with this interpreter (its script, else ``-c``)."""
    bindir = Path(sys.executable).parent
    for name in ("xyz2image-gpu", "xyz2image-gpu.exe"):
        script = bindir / name
        if script.exists():
            return [str(script)]
    code = "import sys; from xyz2image_gpu.cli import main; sys.argv[0] = 'xyz2image-gpu'; main()"
    return [sys.executable, "-c", code]


# ---------------------------------------------------------------------------- printing
def fmt_rate(x: float | None) -> str:
    """Images/s with 3 significant figures (and thousands separators)."""
    if x is None or not math.isfinite(x):
        return "-"
    if x >= 100:
        return f"{x:,.0f}"
    return f"{x:.3g}"


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
