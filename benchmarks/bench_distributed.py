"""The render command on a Dask cluster against the plain CLI, in the same run.

16 units (8 input files, copies of the bundled 147- and 309-atom examples, x 2 stacks) of
2,048 images of gaussian_2d at 128 px each, rendered

* by ``xyz2image-gpu render`` (one process: the engine's default for gaussian_2d, rendering
  and compressing on threads), and
* by ``xyz2image-gpu render --scheduler local --workers 2`` (a ``distributed.LocalCluster``
  of 2 worker processes, each rendering one unit at a time, the next while the last one's
  files are finished, and compressing on its share of the cores),

alternately, ``--repeats`` times each, each in a fresh subprocess into a fresh folder: the
median wall time of each (Python and cluster start-up included) and the ratio of images/s.

The steady state, with the fixed costs amortised, is measured in this process: a
2-process and a 1-process ``LocalCluster`` started once and warmed up (one small run), then
``run(config)`` (the CLI's runner) and ``run(config, scheduler=<address>)`` on each cluster
alternately, each timed by its own summary (planning included): the ratios of images/s to
the CLI's, and of 2 workers to 1 (scaling). The Dask fixed costs
are measured apart: a 2-process ``LocalCluster`` and its client started and closed, the
first task's round trip, and the cost per task of 200 empty tasks (medians). The bytes of
the CLI and Dask runs are compared.

The machine may be shared with other work: every figure is a median and every comparison a
ratio of runs interleaved in the same process; the load average is recorded.

Usage::

    python benchmarks/bench_distributed.py [--smoke] [--repeats N] [--json PATH]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
from common import fmt_rate

__all__ = ["SIZES", "dask_fixed_costs", "main", "run_benchmark"]

#: (files, stacks, images per unit, edgesize, repeats) of each mode.
SIZES = {"full": (8, 2, 2048, 128, 3), "smoke": (2, 2, 16, 32, 1)}


def _inputs(folder: Path, n_files: int) -> list[Path]:
    from xyz2image_gpu.structures.examples import bundled_examples

    examples = sorted(bundled_examples())
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n_files):
        source = examples[i % len(examples)]
        path = folder / f"s{i}_{source.name}"
        shutil.copyfile(source, path)
        paths.append(path)
    return paths


def _hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*.npz"))}


def _render(inputs: list[Path], out: Path, n_rotation: int, n_stacks: int, edgesize: int,
            extra: list[str]) -> float:
    cmd = [*common.cli_command(), "render", *map(str, inputs), "-o", str(out),
           "--n-rotation", str(n_rotation), "--n-stacks", str(n_stacks), "--edgesize",
           str(edgesize), "--output-types", "gaussian_2d", "--device", "cpu", "--quiet",
           *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=3600)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return wall


def _noop(x: int) -> int:
    return x


def dask_fixed_costs(repeats: int = 3, n_tasks: int = 200) -> dict[str, Any]:
    """Seconds to start and close a 2-process LocalCluster with its client (median), the
    first task's round trip, and seconds per task of ``n_tasks`` empty tasks."""
    import distributed

    starts, closes, first, per_task = [], [], [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=2, processes=True,
                                           dashboard_address=":0")
        client = distributed.Client(cluster)
        starts.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        client.submit(_noop, 0, pure=False).result()
        first.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        client.gather(client.map(_noop, range(n_tasks), pure=False))
        per_task.append((time.perf_counter() - t0) / n_tasks)
        t0 = time.perf_counter()
        client.close()
        cluster.close()
        closes.append(time.perf_counter() - t0)
    return {"cluster_start_s": statistics.median(starts),
            "cluster_close_s": statistics.median(closes),
            "first_task_s": statistics.median(first),
            "per_task_ms": 1e3 * statistics.median(per_task), "tasks": n_tasks,
            "repeats": repeats}


def steady_state(inputs: list[Path], folder: Path, n_rotation: int, n_stacks: int,
                 edgesize: int, repeats: int) -> dict[str, Any]:
    """The CLI's runner, a warm 2-process LocalCluster and a warm 1-process one,
    alternately, in this process."""
    import contextlib

    import distributed

    from xyz2image_gpu import RenderSettings
    from xyz2image_gpu.run import RunConfig, run

    def config(out: Path, **kw: Any) -> RunConfig:
        return RunConfig(inputs=tuple(inputs), output_folder=out,
                         settings=RenderSettings(edgesize=edgesize),
                         output_types=("gaussian_2d",), n_rotation=n_rotation,
                         n_stacks=n_stacks, device="cpu", workers=None, **kw)

    rates: dict[str, list[float]] = {"cli": [], "dask": [], "dask_1_worker": []}
    with contextlib.ExitStack() as stack:
        address = {}
        for mode, n in (("dask", 2), ("dask_1_worker", 1)):
            cluster = stack.enter_context(distributed.LocalCluster(
                n_workers=n, threads_per_worker=2, processes=True, dashboard_address=":0"))
            address[mode] = cluster.scheduler_address
            run(RunConfig(inputs=tuple(inputs[:2]), output_folder=folder / f"warm-up-{mode}",
                          settings=RenderSettings(edgesize=edgesize),
                          output_types=("gaussian_2d",), n_rotation=8, device="cpu",
                          scheduler=address[mode]), progress="none")
        for r in range(repeats):
            for mode, mode_rates in rates.items():
                extra = {} if mode == "cli" else {"scheduler": address[mode]}
                out = folder / f"steady-{mode}{r}"
                summary = run(config(out, **extra), progress="none")
                mode_rates.append(summary.images_per_second)
                print(f"  steady state, run {r + 1} {mode:13s}: {summary.elapsed:6.2f} s, "
                      f"{fmt_rate(summary.images_per_second)} images/s", flush=True)
                shutil.rmtree(out)
    cli, dask = statistics.median(rates["cli"]), statistics.median(rates["dask"])
    one = statistics.median(rates["dask_1_worker"])
    pairs = [d / c for c, d in zip(rates["cli"], rates["dask"])]
    scaling = [d / o for o, d in zip(rates["dask_1_worker"], rates["dask"])]
    return {"cli_images_per_s": cli, "dask_images_per_s": dask, "dask_over_cli": dask / cli,
            "pair_ratios": pairs, "median_pair_ratio": statistics.median(pairs),
            "dask_1_worker_images_per_s": one, "two_workers_over_one": dask / one,
            "scaling_pair_ratios": scaling, "runs": rates}


def run_benchmark(size: str = "full", repeats: int | None = None) -> dict[str, Any]:
    """Run both modes alternately; return the figures (also printed)."""
    n_files, n_stacks, n_rotation, edgesize, default_repeats = SIZES[size]
    repeats = repeats or default_repeats
    images = n_files * n_stacks * n_rotation
    walls: dict[str, list[float]] = {"cli": [], "dask": []}
    modes = {"cli": [], "dask": ["--scheduler", "local", "--workers", "2"]}
    print(f"== Dask LocalCluster (2 processes) vs the CLI: {n_files * n_stacks} units of "
          f"{n_rotation} gaussian_2d images at {edgesize} px, {repeats} runs each", flush=True)
    load_start = os.getloadavg()
    same_bytes = None
    with tempfile.TemporaryDirectory(prefix="bench_distributed_") as tmp:
        inputs = _inputs(Path(tmp) / "inputs", n_files)
        for r in range(repeats):
            kept: dict[str, Path] = {}
            for mode, extra in modes.items():
                out = Path(tmp) / f"{mode}{r}"
                wall = _render(inputs, out, n_rotation, n_stacks, edgesize, extra)
                walls[mode].append(wall)
                kept[mode] = out
                print(f"  run {r + 1} {mode:4s}: {wall:6.2f} s, {fmt_rate(images / wall)} "
                      "images/s", flush=True)
            if same_bytes is None:
                same_bytes = _hashes(kept["cli"]) == _hashes(kept["dask"])
            for out in kept.values():
                shutil.rmtree(out)
        steady = steady_state(inputs, Path(tmp), n_rotation, n_stacks, edgesize,
                              repeats if size == "smoke" else max(repeats, 5))
    fixed = dask_fixed_costs(repeats=repeats)
    cli = statistics.median(walls["cli"])
    dask = statistics.median(walls["dask"])
    compute = max(dask - fixed["cluster_start_s"] - fixed["cluster_close_s"], 1e-9)
    result = {
        "units": n_files * n_stacks, "images_per_unit": n_rotation, "edgesize": edgesize,
        "images": images, "repeats": repeats, "cores": os.cpu_count(),
        "cli_wall_s": walls["cli"], "dask_wall_s": walls["dask"],
        "cli_images_per_s": images / cli, "dask_images_per_s": images / dask,
        "dask_over_cli": cli / dask,
        "median_pair_ratio": statistics.median(
            c / d for c, d in zip(walls["cli"], walls["dask"])),
        "dask_compute_images_per_s": images / compute, "dask_compute_over_cli": cli / compute,
        "steady_state": steady, "target_dask_over_cli": 0.85, "same_bytes": same_bytes,
        "fixed_costs": fixed,
        "load_average_start": list(load_start), "load_average_end": list(os.getloadavg()),
        "method": ("end to end: median wall time of whole commands in fresh subprocesses, "
                   "CLI and Dask alternating; compute phase = Dask wall minus the median "
                   "cluster start and close measured apart; steady state: run() in this "
                   "process against run(scheduler=) on a warm 2-process LocalCluster, "
                   "alternating, medians of images/s and of the ratios of adjacent runs; "
                   "the machine may be shared: compare ratios"),
    }
    print(f"  CLI  {fmt_rate(result['cli_images_per_s'])} images/s, Dask "
          f"{fmt_rate(result['dask_images_per_s'])} images/s: Dask/CLI "
          f"{result['dask_over_cli']:.2f} end to end, {result['dask_compute_over_cli']:.2f} "
          f"without the cluster's start and close; steady state (warm cluster) "
          f"{steady['dask_over_cli']:.2f}, run by run {steady['median_pair_ratio']:.2f} "
          f"(target >= 0.85); 2 workers / 1 worker {steady['two_workers_over_one']:.2f}; "
          f"same bytes: {same_bytes}")
    print(f"  Dask fixed costs: cluster start {fixed['cluster_start_s']:.2f} s, close "
          f"{fixed['cluster_close_s']:.2f} s, first task {1e3 * fixed['first_task_s']:.0f} ms, "
          f"{fixed['per_task_ms']:.2f} ms per task; load average {load_start} -> "
          f"{result['load_average_end']}", flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, seconds (CI)")
    parser.add_argument("--repeats", type=int, default=None, help="runs of each mode")
    parser.add_argument("--json", type=Path, default=None,
                        help="where the result goes (default: benchmarks/results/"
                             "distributed_<machine>_<date>.json; --smoke: not written)")
    args = parser.parse_args(argv)
    try:
        import distributed  # noqa: F401
    except ImportError:
        print("bench_distributed: needs the dask extra (pip install 'xyz2image-gpu[dask]')",
              file=sys.stderr)
        return 2
    machine = common.machine_info()
    result = {"benchmark": "bench_distributed", "date": common.today(), "machine": machine,
              **run_benchmark("smoke" if args.smoke else "full", args.repeats)}
    path = args.json
    if path is None and not args.smoke:
        path = common.results_path(common.RESULTS_DIR, machine, prefix="distributed_")
    if path is not None:
        print(f"wrote {common.write_json(path, result)}")
    return 0 if result["same_bytes"] else 1


if __name__ == "__main__":
    sys.exit(main())
