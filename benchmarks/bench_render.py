"""Render-only throughput of the engine beside the seed's per-image algorithm.

Measures images (or volumes) per second for gaussian_2d at edgesize 128 on 147- and 561-atom
Au icosahedra, and gaussian_3d / binary_3d at edgesize 64 and 80, on every available backend
(NumPy on the CPU; CuPy on the GPU when one is usable), with the seed's algorithm
(``seed_algorithm.py``: one image at a time, SciPy ``gaussian_filter``) timed in the same run
on the same views. Nothing is written to disk: batches are produced on the host (one
device-to-host copy per batch on the GPU, synchronised) and dropped.

Each figure is the median of several repeats after a warm-up; the seed runs in one process,
as the original script does for a single structure (it parallelises over files).

Usage::

    python benchmarks/bench_render.py                 # full run
    python benchmarks/bench_render.py --quick         # a quick look (smaller counts)
    python benchmarks/bench_render.py --json benchmarks/results/render.json
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from xyz2image_gpu import Renderer, RenderSettings, as_structure
from xyz2image_gpu.backend import cupy_status, get_backend, gpu_available
from xyz2image_gpu.pipeline.rotations import rotation_matrices

HERE = Path(__file__).resolve().parent
for _path in (HERE, HERE.parent / "tests"):  # seed_algorithm.py here, reference.py in tests/
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))
icosahedron = importlib.import_module("reference").icosahedron
seed_render_stack = importlib.import_module("seed_algorithm").seed_render_stack

# (output type, edgesize, icosahedron shells, images per repeat: cpu, gpu, seed)
CASES = [
    ("gaussian_2d", 128, 4, (4000, 100_000, 300)),
    ("gaussian_2d", 128, 6, (4000, 100_000, 300)),
    ("gaussian_3d", 64, 4, (400, 8_000, 30)),
    ("gaussian_3d", 64, 6, (400, 8_000, 30)),
    ("gaussian_3d", 80, 4, (200, 4_000, 20)),
    ("gaussian_3d", 80, 6, (200, 4_000, 20)),
    ("binary_3d", 64, 4, (50, 4_000, 6)),
    ("binary_3d", 64, 6, (25, 4_000, 3)),
    ("binary_3d", 80, 4, (25, 2_000, 3)),
    ("binary_3d", 80, 6, (15, 2_000, 2)),
]
QUICK_DIVISOR = 5
SEED_NAME = "bench"


def _median_rate(fn, n_images: int, repeats: int) -> tuple[float, list[float]]:
    """Call ``fn()`` ``repeats`` times; return median images/s and the raw seconds."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return n_images / statistics.median(times), times


def bench_engine(structure, output_type: str, edgesize: int, *, device: str, n_images: int,
                 repeats: int, threads: int | None) -> tuple[float, list[float]]:
    renderer = Renderer(RenderSettings(edgesize=edgesize), [output_type], device,
                        threads=threads)
    backend = renderer.backend

    def run(n: int) -> None:
        for _batch in renderer.iter_batches(structure, n, seed=0):
            pass
        backend.synchronize()

    try:
        run(min(n_images, 64))  # warm-up: kernels, caches, thread pool, allocator
        return _median_rate(lambda: run(n_images), n_images, repeats)
    finally:
        renderer.close()


def bench_seed(positions: np.ndarray, output_type: str, edgesize: int, n_images: int,
               repeats: int) -> tuple[float, list[float]]:
    rotations = rotation_matrices(n_images, seed=0, name=SEED_NAME)
    seed_render_stack(positions, rotations[:1], output_type, edgesize=edgesize)  # warm-up
    return _median_rate(
        lambda: seed_render_stack(positions, rotations, output_type, edgesize=edgesize),
        n_images, repeats,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts, 3 repeats")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write results here")
    parser.add_argument("--repeats", type=int, default=None, help="repeats per figure")
    parser.add_argument("--devices", default="auto",
                        help="comma list of cpu,gpu (default: cpu, plus gpu when available)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for the engine (default: all cores)")
    parser.add_argument("--only", default=None,
                        help="comma list of output types to run (default: all)")
    args = parser.parse_args(argv)

    repeats = args.repeats or (3 if args.quick else 5)
    if args.devices == "auto":
        devices = ["cpu"] + (["gpu"] if gpu_available() else [])
    else:
        devices = [d.strip() for d in args.devices.split(",") if d.strip()]
    only = set(args.only.split(",")) if args.only else None

    meta = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "engine_threads": args.threads or os.cpu_count(),
        "devices": devices,
        "gpu": cupy_status()[1] if "gpu" in devices else None,
        "repeats": repeats,
        "quick": args.quick,
        "statistic": "median images/s over repeats, after one warm-up",
        "seed": "benchmarks/seed_algorithm.py, one image at a time, one process",
    }
    print(f"# xyz2image-gpu render benchmark ({'quick' if args.quick else 'full'}), "
          f"median of {repeats}")
    for d in devices:
        print(f"# {d}: {get_backend(d).reason}")
    header = (f"{'output':<12}{'edge':>5}{'atoms':>6}  {'device':<6}{'engine img/s':>14}"
              f"{'seed img/s':>12}{'speed-up':>10}")
    print(header)
    print("-" * len(header))

    results = []
    structures: dict[int, object] = {}
    for output_type, edgesize, shells, counts in CASES:
        if only and output_type not in only:
            continue
        if args.quick and shells == 6 and output_type != "gaussian_2d":
            continue
        divisor = QUICK_DIVISOR if args.quick else 1
        n_cpu, n_gpu, n_seed = (max(2, n // divisor) for n in counts)
        if shells not in structures:
            structures[shells] = as_structure(icosahedron("Au", shells), name=SEED_NAME)
        st = structures[shells]
        positions = st.frames[0].positions
        seed_rate, seed_times = bench_seed(positions, output_type, edgesize, n_seed, repeats)
        for device in devices:
            n = n_gpu if device == "gpu" else n_cpu
            rate, times = bench_engine(st, output_type, edgesize, device=device, n_images=n,
                                       repeats=repeats, threads=args.threads)
            ratio = rate / seed_rate
            print(f"{output_type:<12}{edgesize:>5}{len(positions):>6}  {device:<6}"
                  f"{rate:>14,.0f}{seed_rate:>12,.1f}{ratio:>9.1f}x", flush=True)
            results.append({
                "output_type": output_type, "edgesize": edgesize, "structure": f"Au{shells}",
                "n_atoms": len(positions), "device": device, "n_images": n,
                "engine_images_per_s": rate, "engine_seconds": times,
                "seed_images": n_seed, "seed_images_per_s": seed_rate,
                "seed_seconds": seed_times, "speedup": ratio,
            })
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
        print(f"# wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
