"""The benchmark suite: render-only throughput per backend, the seed baseline, the zlib floor
and the end-to-end CLI, written to ``benchmarks/results/<machine>_<date>.json``.

Measured, for every backend available here (NumPy on the CPU with the compiled kernel and
with ``cpu_kernel="numpy"``; CuPy when ``xyz2image_gpu.backend.gpu_available()``):

* **render-only images/s**: ``Renderer(...).iter_batches(...)`` consumed batch by batch
  (host arrays, so GPU work is synchronised), for gaussian_2d at edgesize 64/128/256 and
  gaussian_3d, binary_3d at 64/80, over Au clusters of ~50 to 5,000 atoms. Each point is
  warmed up, sized to take ``--target`` seconds, and timed ``--repeats`` times: the median.
* **the seed's per-image algorithm** (``benchmarks/seed_algorithm.py``: rotate, round, SciPy
  ``gaussian_filter``, one image at a time, one process) on the same views;
* **the zlib floor**: ``zlib.compress(level 6)`` alone of the bytes the CLI would store for
  the same images (one thread, and chunks on a thread per core: zlib releases the GIL);
* **the augmentations' random draws** (``bench_draws.py``): Philox against PCG64, one core;
* **the host's cost per GPU batch** (``bench_host_cost.py``): the GPU path on a stand-in
  device whose operations cost nothing, so only the host's own work is timed;
* **end-to-end CLI** (``bench_cli.py``): ``xyz2image-gpu render`` versus the seed's approach,
  images/s and peak memory of the process tree;
* **Dask** (``bench_distributed.py``, with the dask extra): ``render --scheduler local`` on a
  2-process LocalCluster against the CLI, and Dask's fixed costs;
* **output formats** (``bench_formats.py``, with the zarr extra): the CLI end to end writing
  ``.npz`` (zlib 6 and 1) and the zarr store (zstd 1, lz4), against each codec alone on all
  cores;
* **the PyTorch dataset** (``bench_dataset.py``, with the ``torch`` extra): images/s that
  ``RenderDataset`` delivers through a DataLoader with 0 and 2 workers, against render-only
  in the same rounds.

Usage::

    python benchmarks/run_all.py            # everything (~10 min on 2 cores)
    python benchmarks/run_all.py --quick    # make bench-quick: ~3-5 min on 2 cores
    python benchmarks/run_all.py --smoke    # CI: seconds, JSON to a temp dir
    python benchmarks/run_all.py --gpu-only # the CuPy backend only (+ baseline, CLI on GPU)

Figures are printed as they are measured; nothing asserts on a timing.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
from common import calibrated_median, fmt_rate

from xyz2image_gpu import Renderer, RenderSettings
from xyz2image_gpu.backend import gpu_available
from xyz2image_gpu.pipeline.kernels import compiled_kernel_available
from xyz2image_gpu.pipeline.rotations import rotation_matrices

try:
    from seed_algorithm import seed_render_stack
except ImportError:  # pragma: no cover - seed_algorithm.py is owned by bench_render's author
    # TODO: drop this fallback once benchmarks/seed_algorithm.py is always present.
    seed_render_stack = None

__all__ = [
    "PRESETS",
    "Backend",
    "Preset",
    "available_backends",
    "main",
    "render_rate",
    "seed_rate",
    "zlib_floor",
]


# ---------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class Preset:
    """What one run measures."""

    name: str
    sizes_2d: tuple[int, ...]
    edges_2d: tuple[int, ...]
    sizes_3d: tuple[int, ...]
    edges_3d: tuple[int, ...]
    seed_sizes_2d: tuple[int, ...]  # atom counts of the seed baseline at edgesize 128
    target_s: float  # seconds per timed run
    repeats: int
    start: int  # images of the first warm-up run
    cli: str  # bench_cli preset


PRESETS = {
    "full": Preset("full", (55, 147, 561, 1415, 5000), (64, 128, 256),
                   (55, 147, 561, 1415, 5000), (64, 80), (55, 147, 561, 1415, 5000),
                   target_s=0.6, repeats=5, start=8, cli="full"),
    "quick": Preset("quick", (55, 147, 561, 1415, 5000), (64, 128, 256),
                    (147, 1415), (64, 80), (147, 1415), target_s=0.3, repeats=5, start=8,
                    cli="quick"),
    "smoke": Preset("smoke", (13, 55), (32,), (13,), (16,), (13,), target_s=0.01, repeats=1,
                    start=2, cli="smoke"),
}
#: The headline point: edgesize and atom count of the figures quoted first.
HEADLINE = ("gaussian_2d", 128, 147)


@dataclass(frozen=True)
class Backend:
    """One way to render: a device and (on the CPU) a Gaussian kernel."""

    device: str  # "cpu" or "gpu"
    kernel: str  # "compiled", "numpy" (CPU) or "cupy" (GPU)

    @property
    def label(self) -> str:
        return f"{self.device}/{self.kernel}"

    def renderer(self, settings: RenderSettings, outputs: Sequence[str]) -> Renderer:
        kernel = self.kernel if self.device == "cpu" else "auto"
        return Renderer(settings, outputs, self.device, cpu_kernel=kernel)


def available_backends(gpu_only: bool = False, cpu: bool = True) -> list[Backend]:
    """The backends to measure here: compiled and NumPy kernels on the CPU, CuPy if usable."""
    out = []
    if gpu_available():
        out.append(Backend("gpu", "cupy"))
    if cpu and not gpu_only:
        if compiled_kernel_available():
            out.append(Backend("cpu", "compiled"))
        out.append(Backend("cpu", "numpy"))
    return out


# ---------------------------------------------------------------------------- measuring
def render_rate(backend: Backend, structure: Any, output: str, edgesize: int, *,
                target_s: float, repeats: int, start: int = 8) -> dict[str, Any]:
    """Render-only images/s of ``backend`` for one output type, edgesize and structure."""
    renderer = backend.renderer(RenderSettings(edgesize=edgesize), [output])
    try:
        def run(n: int) -> None:
            for batch in renderer.iter_batches(structure, n):
                batch[output]  # host array: the device work is done
            renderer.backend.synchronize()

        timing = calibrated_median(run, target_s=target_s, repeats=repeats, start=start)
        return {
            **timing.as_dict(),
            "batch_size": renderer.default_batch_size(structure),
            "compiled_kernel_used": bool(renderer.uses_compiled_kernel
                                         and output.startswith("gaussian")),
        }
    finally:
        renderer.close()


def seed_rate(structure: Any, output: str, edgesize: int, *, target_s: float,
              repeats: int, start: int = 2) -> dict[str, Any]:
    """Images/s of the seed's per-image algorithm (one process) on the same kind of views."""
    positions = np.asarray(structure.frames[0].positions, dtype=np.float64)
    if seed_render_stack is not None:
        def run(n: int) -> None:
            rots = rotation_matrices(n, seed=0, name=structure.name)
            seed_render_stack(positions, rots, output, edgesize=edgesize)
    else:  # minimal private equivalent (gaussian_2d only); see the TODO at the imports
        from scipy.ndimage import gaussian_filter

        def run(n: int) -> None:
            for rot in rotation_matrices(n, seed=0, name=structure.name):
                p = positions @ rot.T
                p -= p.min(axis=0)
                ext = p.max(axis=0)
                p += (ext.max() - ext) / 2 + 1.5
                edge = ext.max() + 3.0
                idx = np.round(p / edge * (edgesize - 1)).astype(int)
                d = np.zeros((edgesize, edgesize))
                d[idx[:, 0], idx[:, 1]] = 1
                g = gaussian_filter(d, 0.4 / (edge / (edgesize - 1)))
                g /= g.max() / 255
                g.astype(np.uint8)

    timing = calibrated_median(run, target_s=target_s, repeats=repeats, start=start)
    return {**timing.as_dict(), "processes": 1}


def _compress_parallel(chunks: list[bytes], pool: ThreadPoolExecutor) -> int:
    return sum(len(c) for c in pool.map(lambda b: zlib.compress(b, 6), chunks))


def zlib_floor(data: np.ndarray, *, repeats: int, threads: int | None = None,
               chunk_bytes: int = 1 << 20) -> dict[str, Any]:
    """Images/s at which ``zlib.compress(level 6)`` alone could store the stack ``data``.

    One thread compresses the stack as one stream (what ``np.savez_compressed`` does for a
    member); ``threads`` threads compress ``chunk_bytes`` pieces of it (the CLI's writer
    compresses chunks in parallel the same way).
    """
    threads = threads or os.cpu_count() or 1
    raw = np.ascontiguousarray(data).tobytes()
    n = len(data)
    t_single: list[float] = []
    size = 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        size = len(zlib.compress(raw, 6))
        t_single.append(time.perf_counter() - t0)
    chunks = [raw[i:i + chunk_bytes] for i in range(0, len(raw), chunk_bytes)]
    t_multi: list[float] = []
    with ThreadPoolExecutor(threads) as pool:
        _compress_parallel(chunks[:threads], pool)  # start the threads
        for _ in range(repeats):
            t0 = time.perf_counter()
            _compress_parallel(chunks, pool)
            t_multi.append(time.perf_counter() - t0)
    med1, medn = float(np.median(t_single)), float(np.median(t_multi))
    return {
        "n_images": n,
        "raw_bytes": len(raw),
        "compressed_bytes": size,
        "ratio": len(raw) / max(1, size),
        "single_thread_s": med1,
        "single_thread_images_per_s": n / med1,
        "single_thread_mb_per_s": len(raw) / med1 / 1e6,
        "threads": threads,
        "all_cores_s": medn,
        "all_cores_images_per_s": n / medn,
        "all_cores_mb_per_s": len(raw) / medn / 1e6,
        "repeats": repeats,
    }


def floor_images(structure: Any, output: str, edgesize: int, n: int) -> np.ndarray:
    """``n`` images as the CLI would store them (the default uint8 / bool outputs)."""
    renderer = Renderer(RenderSettings(edgesize=edgesize), [output], "cpu")
    try:
        return renderer.render(structure, n)[output]
    finally:
        renderer.close()


# ---------------------------------------------------------------------------- reporting
_COLUMNS = ("backend", "output", "edge", "atoms", "images/s", "median s", "n", "vs seed")
_WIDTHS = (14, 12, 5, 6, 11, 9, 7, 8)


def _row(*cells: Any) -> None:
    parts = [str(c).ljust(w) if i < 2 else str(c).rjust(w)
             for i, (c, w) in enumerate(zip(cells, _WIDTHS))]
    print("  ".join(parts).rstrip(), flush=True)


def _header(title: str) -> None:
    print(f"\n== {title}", flush=True)
    _row(*_COLUMNS)
    print("  ".join("-" * w for w in _WIDTHS), flush=True)


def _headline(results: dict[str, Any]) -> dict[str, Any]:
    """The figures quoted first: each backend at gaussian_2d / 128 px / 147 atoms (or the
    measured point nearest to it)."""
    out_t, edge, atoms = HEADLINE
    points = [(r["edgesize"], r["n_atoms"]) for r in results["render"] + results["seed"]
              if r["output"] == out_t]
    if points and (edge, atoms) not in points:
        edge = min({e for e, _ in points}, key=lambda e: abs(np.log(e / edge)))
        atoms = min({n for e, n in points if e == edge}, key=lambda n: abs(np.log(n / atoms)))
    seed = next((r for r in results["seed"] if (r["output"], r["edgesize"], r["n_atoms"])
                 == (out_t, edge, atoms)), None)
    floor = next((r for r in results["zlib_floor"] if (r["output"], r["edgesize"])
                  == (out_t, edge)), None)
    head: dict[str, Any] = {"output": out_t, "edgesize": edge, "n_atoms": atoms,
                            "backends": {}}
    for r in results["render"]:
        if (r["output"], r["edgesize"], r["n_atoms"]) == (out_t, edge, atoms):
            head["backends"][r["backend"]] = {
                "images_per_s": r["images_per_s"],
                "vs_seed_1_process": r.get("vs_seed"),
                "vs_seed_all_cores_ideal": (r["images_per_s"] / (seed["images_per_s"]
                                            * results["machine"]["logical_cores"])
                                            if seed else None),
            }
    if seed:
        head["seed_images_per_s_1_process"] = seed["images_per_s"]
    if floor:
        head["zlib_floor_images_per_s_1_thread"] = floor["single_thread_images_per_s"]
        head["zlib_floor_images_per_s_all_cores"] = floor["all_cores_images_per_s"]
    return head


def _print_headline(results: dict[str, Any]) -> None:
    head = results["headline"]
    m = results["machine"]
    gpu = f", GPU {m['gpu']['name']}" if m.get("gpu") else ""
    print(f"\n== Summary ({m['cpu_model']}, {m['logical_cores']} cores{gpu}; "
          f"preset {results['preset']})")
    print(f"render-only {head['output']}, edgesize {head['edgesize']}, "
          f"{head['n_atoms']} atoms:")
    seed = head.get("seed_images_per_s_1_process")
    for label, b in head["backends"].items():
        ratio = f"  {b['vs_seed_1_process']:.1f}x the seed (1 process)" if seed else ""
        print(f"  {label:14s} {fmt_rate(b['images_per_s']):>10} images/s{ratio}")
    if seed:
        print(f"  {'seed':14s} {fmt_rate(seed):>10} images/s (one process; the seed's Pool "
              f"runs one file per core)")
    if "zlib_floor_images_per_s_1_thread" in head:
        print(f"  zlib level 6 floor: {fmt_rate(head['zlib_floor_images_per_s_1_thread'])} "
              f"images/s one thread, {fmt_rate(head['zlib_floor_images_per_s_all_cores'])} "
              f"on all cores")
    host = results.get("host_cost")
    if host:
        print(f"  host cost per GPU batch ({host['batch_size']} images, {host['edgesize']} px): "
              f"{host['ms_per_batch_median']:.2f} ms, a host ceiling of "
              f"{fmt_rate(host['host_ceiling_images_per_s'])} images/s")
    dataset = results.get("dataset")
    if dataset and "ratio_to_render_only_median" in dataset:
        ratio = dataset["ratio_to_render_only_median"]
        print(f"  PyTorch dataset ({dataset['edgesize']} px, batches of "
              f"{dataset['dataset_batch_size']}): "
              + ", ".join(f"{w} workers {ratio[f'dataset_{w}_workers']:.0%}"
                          for w in (0, 2)) + " of render-only images/s")
    cli = results.get("cli")
    if cli and "summary" in cli:
        for line in cli["summary"]:
            print(f"  {line}")


# ---------------------------------------------------------------------------- main
def run_render(preset: Preset, backends: list[Backend], structures: dict[int, Any],
               results: dict[str, Any], *, with_seed: bool = True) -> None:
    """Render-only throughput of every backend and (unless ``with_seed`` is false) the seed
    baseline, case by case; records go to ``results["render"]`` and ``results["seed"]``."""
    cases = [("gaussian_2d", e, n) for e in preset.edges_2d for n in preset.sizes_2d]
    cases += [(o, e, n) for o in ("gaussian_3d", "binary_3d") for e in preset.edges_3d
              for n in preset.sizes_3d]
    seed_cases = [("gaussian_2d", e, 147 if 147 in structures else min(structures))
                  for e in preset.edges_2d]
    seed_cases += [("gaussian_2d", 128, n) for n in preset.seed_sizes_2d if 128 in
                   preset.edges_2d]
    seed_cases += [(o, e, 147 if 147 in structures else min(structures))
                   for o in ("gaussian_3d", "binary_3d") for e in preset.edges_3d]
    seed_cases = list(dict.fromkeys(seed_cases)) if with_seed else []
    seed_set = set(seed_cases)

    # point by point, every backend (and the seed) back to back: on a shared machine the
    # load drifts over minutes, and the ratios should compare runs taken seconds apart
    _header("render-only images/s (seed: per-image SciPy algorithm, one process)")
    for output, edge, n in list(dict.fromkeys(cases + seed_cases)):
        s = structures[n]
        if (output, edge, n) in seed_set:
            try:
                r = seed_rate(s, output, edge, target_s=preset.target_s,
                              repeats=preset.repeats)
            except (ImportError, RuntimeError, ValueError, MemoryError) as exc:  # reported
                print(f"  seed {output} {edge} {n}: failed: {exc!r}", flush=True)
            else:
                results["seed"].append({"backend": "seed", "output": output, "edgesize": edge,
                                        "n_atoms": s.max_atoms, **r})
                _row("seed", output, edge, s.max_atoms, fmt_rate(r["images_per_s"]),
                     f"{r['median_s']:.3f}", r["n_images"], "1.0x")
        if (output, edge, n) not in cases:
            continue
        seed = next((r["images_per_s"] for r in results["seed"] if
                     (r["output"], r["edgesize"], r["n_atoms"]) == (output, edge, s.max_atoms)),
                    None)
        for backend in backends:
            r = render_rate(backend, s, output, edge, target_s=preset.target_s,
                            repeats=preset.repeats, start=preset.start)
            rec = {"backend": backend.label, "device": backend.device,
                   "kernel": backend.kernel, "output": output, "edgesize": edge,
                   "n_atoms": s.max_atoms, **r,
                   "vs_seed": r["images_per_s"] / seed if seed else None}
            results["render"].append(rec)
            _row(backend.label, output, edge, s.max_atoms, fmt_rate(r["images_per_s"]),
                 f"{r['median_s']:.3f}", r["n_images"],
                 f"{rec['vs_seed']:.1f}x" if seed else "-")


def run_floor(preset: Preset, structures: dict[int, Any], results: dict[str, Any]) -> None:
    """zlib level 6 alone on the stored bytes of each output type at 147 atoms."""
    n_atoms = 147 if 147 in structures else min(structures)
    s = structures[n_atoms]
    cases = [("gaussian_2d", e) for e in preset.edges_2d]
    cases += [(o, e) for o in ("gaussian_3d", "binary_3d") for e in preset.edges_3d]
    print(f"\n== zlib level 6 floor ({n_atoms} atoms; bytes as stored: uint8 / bool)")
    print(f"{'output':12s}  {'edge':>4s}  {'images':>6s}  {'raw MB':>6s}  {'ratio':>5s}  "
          f"{'1 thread img/s':>14s}  {'all cores img/s':>15s}  MB/s (1 thread / all cores)")
    for output, edge in cases:
        per_image = edge ** (2 if output.endswith("2d") else 3)
        # one pass to size the work: ~target seconds of single-thread compression at
        # ~100 MB/s, at least 8 images, at most 256 MB of raw bytes
        n = int(np.clip(preset.target_s * 100e6 / per_image, 8, 256e6 / per_image))
        data = floor_images(s, output, edge, n)
        r = zlib_floor(data, repeats=preset.repeats)
        results["zlib_floor"].append({"output": output, "edgesize": edge,
                                      "n_atoms": s.max_atoms, **r})
        print(f"{output:12s}  {edge:4d}  {n:6d}  {r['raw_bytes'] / 1e6:6.1f}  "
              f"{r['ratio']:5.1f}  {fmt_rate(r['single_thread_images_per_s']):>14}  "
              f"{fmt_rate(r['all_cores_images_per_s']):>15}  "
              f"{r['single_thread_mb_per_s']:.0f} / {r['all_cores_mb_per_s']:.0f}", flush=True)


def run_host_cost(preset: Preset, results: dict[str, Any]) -> None:
    """The host's own cost per GPU batch, on a stand-in device whose operations cost nothing
    (``bench_host_cost.py``): 4096-image batches of gaussian_2d at 128 px, Au147."""
    import bench_host_cost

    args = (64, 32, 3, 1) if preset.name == "smoke" else (4096, 128, 20, 3)
    r = bench_host_cost.measure(*args)
    results["host_cost"] = r
    print(f"\n== Host cost per GPU batch (device operations free): "
          f"{r['ms_per_batch_median']:.2f} ms per {r['batch_size']}-image batch at "
          f"{r['edgesize']} px, host ceiling {fmt_rate(r['host_ceiling_images_per_s'])} "
          f"images/s", flush=True)


def run_distributed(preset: Preset, results: dict[str, Any]) -> None:
    """``render --scheduler local`` (2 processes) against the CLI (``bench_distributed.py``);
    left out, saying so, without the dask extra."""
    try:
        import distributed  # noqa: F401
    except ImportError:
        print("\n== Dask: not measured (no distributed; pip install 'xyz2image-gpu[dask]')")
        return
    import bench_distributed

    print()
    results["distributed"] = bench_distributed.run_benchmark(
        "smoke" if preset.name == "smoke" else "full",
        repeats=1 if preset.name == "quick" else None)


def run_draws(preset: Preset, results: dict[str, Any]) -> None:
    """The augmentations' random draws on one core (``bench_draws.py``): Philox, compiled
    and NumPy, against the per-image PCG64 generators used before, in the same run."""
    import bench_draws

    args = (8, 32, 1) if preset.name == "smoke" else (256, 128, 5)
    print("\n== Random draws of the augmentations (one core)", flush=True)
    results["draws"] = bench_draws.measure(*args)


def run_dataset(preset: Preset, results: dict[str, Any]) -> None:
    """The PyTorch dataset through a DataLoader (0 and 2 workers) against render-only
    (``bench_dataset.py``); skipped, saying so, without PyTorch."""
    try:
        import torch  # noqa: F401
    except ImportError as exc:
        results["dataset"] = {"skipped": f"PyTorch is not installed ({exc})"}
        print(f"\n== PyTorch dataset: skipped (PyTorch is not installed: {exc})")
        return
    import bench_dataset

    print("\n== PyTorch dataset through a DataLoader against render-only", flush=True)
    r = bench_dataset.measure(preset.name)
    results["dataset"] = r
    for line in bench_dataset.report(r):
        print(line, flush=True)


def _loadavg() -> list[float] | None:
    """1/5/15-minute load averages (other work on a shared machine skews the figures)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):  # not on this platform
        return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the suite; return the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="fewer points, ~3-5 min on 2 cores")
    mode.add_argument("--smoke", action="store_true",
                      help="tiny sizes, seconds (CI); JSON to a temporary folder unless --out")
    parser.add_argument("--gpu-only", action="store_true",
                        help="only the CuPy backend (with the seed baseline and CLI on GPU)")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"folder of the JSON result (default {common.RESULTS_DIR})")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per point")
    parser.add_argument("--target", type=float, default=None, help="seconds per timed run")
    parser.add_argument("--no-cli", action="store_true", help="skip the end-to-end CLI part")
    parser.add_argument("--no-seed", action="store_true", help="skip the seed baselines")
    parser.add_argument("--no-formats", action="store_true",
                        help="skip the output formats (npz against zarr)")
    parser.add_argument("--no-plot", action="store_true", help="do not draw throughput.png")
    args = parser.parse_args(argv)

    preset = PRESETS["smoke" if args.smoke else "quick" if args.quick else "full"]
    if args.repeats or args.target:
        preset = Preset(**{**preset.__dict__, "repeats": args.repeats or preset.repeats,
                           "target_s": args.target or preset.target_s})
    if args.gpu_only and not gpu_available():
        from xyz2image_gpu.backend import cupy_status

        print(f"--gpu-only: no usable GPU here ({cupy_status()[1]})", file=sys.stderr)
        return 2
    out_dir = args.out
    if out_dir is None:
        out_dir = (Path(tempfile.mkdtemp(prefix="xyz2image_bench_")) if args.smoke
                   else common.RESULTS_DIR)

    t_start = time.perf_counter()
    machine = common.machine_info()
    backends = available_backends(gpu_only=args.gpu_only)
    print(f"machine: {machine['cpu_model']}, {machine['logical_cores']} logical cores, "
          f"{machine['memory_gib']} GiB; GPU: "
          f"{machine['gpu']['name'] if machine['gpu'] else 'none (' + machine['gpu_reason'] + ')'}")
    print(f"numpy {machine['numpy']} ({machine['blas']}), compiled kernel: "
          f"{machine['compiled_kernel']}; backends: {', '.join(b.label for b in backends)}")
    print(f"preset {preset.name}: median of {preset.repeats} runs of ~{preset.target_s} s "
          "per point, after a warm-up")

    sizes = sorted(set(preset.sizes_2d) | set(preset.sizes_3d) | set(preset.seed_sizes_2d))
    structures: dict[int, Any] = {}
    made_by: dict[int, str] = {}
    for n in sizes:
        structures[n], made_by[n] = common.au_cluster(n)

    results: dict[str, Any] = {
        "benchmark": "run_all",
        "date": common.today(),
        "preset": preset.name,
        "settings": {k: v for k, v in preset.__dict__.items() if k != "name"},
        "machine": machine,
        "structures": {str(n): made_by[n] for n in sizes},
        "render_settings": {"gauss_sigma": 0.4, "padxyz": 1.5, "bitrate": 8,
                            "framing": "image", "normalization": "image"},
        "notes": [
            ("render-only: Renderer.iter_batches consumed batch by batch (host arrays), "
             "default batch size, warm-up, median of the timed runs"),
            ("seed: benchmarks/seed_algorithm.py, one image at a time in one process; "
             "the seed script itself ran one such process per input file"),
            "zlib floor: zlib.compress level 6 of the stored bytes alone",
        ],
        "load_average_start": _loadavg(),
        "render": [],
        "seed": [],
        "zlib_floor": [],
    }
    try:
        run_render(preset, backends, structures, results, with_seed=not args.no_seed)
        run_floor(preset, structures, results)
        run_host_cost(preset, results)
        run_draws(preset, results)
        if not args.gpu_only:
            run_dataset(preset, results)
        if not args.no_cli:
            import bench_cli

            devices = [b.device for b in backends]
            devices = list(dict.fromkeys(devices))
            results["cli"] = bench_cli.run_benchmarks(preset.cli, devices=devices,
                                                      run_seed=not args.no_seed)
            run_distributed(preset, results)
        if not args.no_formats:
            try:
                import zarr  # noqa: F401
            except ImportError as exc:
                print(f"\n== output formats: skipped, no zarr ({exc}): pip install "
                      "'xyz2image-gpu[zarr]'")
            else:
                import bench_formats

                results["formats"] = bench_formats.run_benchmarks(preset.name)
    finally:
        results["elapsed_s"] = time.perf_counter() - t_start
        results["load_average_end"] = _loadavg()
        results["headline"] = _headline(results)
        path = common.write_json(common.results_path(out_dir, machine), results)
    _print_headline(results)
    print(f"\nwrote {path} ({results['elapsed_s']:.0f} s; load average at start "
          f"{results['load_average_start']}, at end {results['load_average_end']})")
    if not args.no_plot:
        try:
            import plot_results

            png = plot_results.plot([path], Path(out_dir) / "throughput.png")
            print(f"wrote {png}")
        except ImportError as exc:
            print(f"no plot ({exc})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
