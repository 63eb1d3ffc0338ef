"""The PyTorch dataset against the engine alone: images/s delivered to a training loop.

In one process, round after round, each round measures back to back (on a shared machine
the load drifts over minutes; ratios compare runs seconds apart):

* **render-only**: ``Renderer(...).iter_batches`` on every core (the engine's threads),
  batches consumed as they come, at the dataset's batch size and at the engine's default;
* **DataLoader, 0 workers**: ``DataLoader(RenderDataset(...), batch_size=None)``: the
  dataset renders in the main process on every core, tensors without a copy;
* **DataLoader, 2 workers**: the same with ``num_workers=2, persistent_workers=True``: each
  worker renders on one thread and PyTorch moves every batch to the main process through
  shared memory. The workers are started (and warmed up) before the rounds; their start-up
  is reported apart;
* **with a training step** (``step_*``): the same loops sleeping ``STEP_MS`` per batch, as a
  loop that waits for a GPU leaves the cores and the GIL to the renderer, and the dataset
  with ``prefetch=2`` (rendering ahead on a thread of the main process); full overlap of
  rendering and training would deliver ``min(render-only, batch / step)``.

Each run is one epoch (``set_epoch``: fresh rotations) of gaussian_2d at 128 px of the
bundled Au147 icosahedron, every rotation random. The training loop only takes each batch.
Per round, each rate is divided by that round's render-only rate at the same batch size;
the figures are the medians over rounds. Nothing asserts on a timing.

Usage::

    python benchmarks/bench_dataset.py            # 32,768 images per run, 5 rounds
    python benchmarks/bench_dataset.py --quick    # 16,384 images, 3 rounds
    python benchmarks/bench_dataset.py --smoke    # CI: 32 px, seconds
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
from common import fmt_rate

import xyz2image_gpu
from xyz2image_gpu import Renderer, RenderSettings, as_structure

AU147 = Path(xyz2image_gpu.__file__).parent / "structures" / "data" / "au147_icosahedron.xyz"

#: name -> (edgesize, images per run, rounds, dataset batch size)
PRESETS = {
    "full": (128, 32768, 5, 256),
    "quick": (128, 16384, 3, 256),
    "smoke": (32, 512, 1, 64),
}
WORKERS = (0, 2)
#: The simulated training step per batch (``step_*`` cases), ms: a sleep, as a loop waiting
#: for a GPU leaves the cores and the GIL to the renderer.
STEP_MS = {"full": 4.0, "quick": 4.0, "smoke": 1.0}


def _rate(run: Callable[[], int]) -> float:
    t0 = time.perf_counter()
    n = run()
    return n / (time.perf_counter() - t0)


def measure(preset: str = "full") -> dict[str, Any]:
    """Run the comparison; return its figures (see the module's docstring)."""
    import torch
    from torch.utils.data import DataLoader

    from xyz2image_gpu.torch import RenderDataset

    edgesize, n_images, rounds, batch_size = PRESETS[preset]
    load_start = [round(x, 2) for x in os.getloadavg()]
    settings = RenderSettings(edgesize=edgesize, all_random=True)
    structure = as_structure(AU147)
    output = "gaussian_2d"
    renderer = Renderer(settings, [output], "cpu")
    default_batch = renderer.default_batch_size(structure)
    batch_sizes = list(dict.fromkeys([batch_size, default_batch]))

    def render_only(size: int) -> Callable[[], int]:
        def run() -> int:
            n = 0
            for batch in renderer.iter_batches(structure, n_images, batch_size=size):
                n += len(batch[output])
            return n
        return run

    def dataset(**kw: Any) -> Any:
        return RenderDataset(structure, settings, [output], n_rotation=n_images,
                             batch_size=batch_size, device="cpu", **kw)

    plain, ahead = dataset(), dataset(prefetch=2)
    # name -> (dataset, its DataLoader, seconds of the simulated training step per batch)
    cases = {f"dataset_{w}_workers": (plain, DataLoader(plain, batch_size=None, num_workers=w,
                                                       persistent_workers=w > 0), 0.0)
             for w in WORKERS}
    step_s = STEP_MS[preset] / 1e3
    for name, (ds, loader, _) in list(cases.items()):
        cases[f"step_{name}"] = (ds, loader, step_s)
    cases["step_dataset_0_workers_prefetch_2"] = (ahead, DataLoader(ahead, batch_size=None),
                                                  step_s)
    epoch = 0

    def through(name: str) -> Callable[[], int]:
        ds, loader, step = cases[name]

        def run() -> int:
            nonlocal epoch
            epoch += 1
            ds.set_epoch(epoch)
            n = 0
            for batch in loader:
                n += len(batch[output])
                if step:
                    time.sleep(step)  # the GIL and the cores free, as while a GPU trains
            return n
        return run

    startup = {}
    for size in batch_sizes:  # warm-up: threads, the kernel, BLAS
        render_only(size)()
    for name in cases:
        t0 = time.perf_counter()
        through(name)()  # the workers' start and first epoch
        startup[name] = time.perf_counter() - t0
    rows: list[dict[str, float]] = []
    for r in range(rounds):
        row = {f"render_only_b{size}": _rate(render_only(size)) for size in batch_sizes}
        for name in cases:
            row[name] = _rate(through(name))
        rows.append(row)
        print(f"  round {r + 1}: " + ", ".join(f"{k} {fmt_rate(v)}" for k, v in row.items()),
              flush=True)
    renderer.close()
    cases.clear()  # stops the persistent workers

    base = f"render_only_b{batch_size}"
    median = {k: statistics.median(row[k] for row in rows) for k in rows[0]}
    ratios = {k: statistics.median(row[k] / row[base] for row in rows)
              for k in rows[0] if k != base}
    return {
        "benchmark": "dataset",
        "preset": preset,
        "structure": "au147_icosahedron (bundled)",
        "output": output,
        "edgesize": edgesize,
        "images_per_run": n_images,
        "rounds": rounds,
        "dataset_batch_size": batch_size,
        "engine_default_batch_size": default_batch,
        "torch": torch.__version__,
        "images_per_s_median": median,
        "ratio_to_render_only_median": ratios,
        "ratio_base": base,
        "first_epoch_s": startup,
        "training_step_ms": STEP_MS[preset],
        "step_ideal_images_per_s": min(median[base], batch_size / step_s),
        "rounds_images_per_s": rows,
        "load_average_start_end": [load_start, [round(x, 2) for x in os.getloadavg()]],
        "notes": [
            ("each run one epoch (set_epoch), all rotations random; training loop only "
             "takes each batch"),
            ("ratios: per round, against render-only at the dataset's batch size in the "
             "same round; medians over rounds"),
            "2 workers: persistent, started before the rounds; one thread each",
            ("step_*: the loop sleeps training_step_ms per batch (a GPU's training step); "
             "step_ideal_images_per_s = min(render-only, batch / step), what full overlap "
             "of rendering and training would give"),
        ],
    }


def report(result: dict[str, Any]) -> list[str]:
    """Lines that summarise ``result``."""
    med, ratio = result["images_per_s_median"], result["ratio_to_render_only_median"]
    lines = [(f"dataset vs render-only, {result['output']} {result['edgesize']} px, "
              f"Au147, batches of {result['dataset_batch_size']} (medians of "
              f"{result['rounds']} rounds):")]
    for key, value in med.items():
        share = f" ({ratio[key]:.0%} of render-only)" if key in ratio else ""
        lines.append(f"  {key:36s} {fmt_rate(value):>10} images/s{share}")
    lines.append(f"  with a {result['training_step_ms']:g} ms step, full overlap would give "
                 f"{fmt_rate(result['step_ideal_images_per_s'])} images/s")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="16,384 images, 3 rounds")
    mode.add_argument("--smoke", action="store_true", help="32 px, seconds (CI)")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"folder of the JSON result (default {common.RESULTS_DIR}; "
                             "a temporary folder with --smoke)")
    args = parser.parse_args(argv)
    preset = "smoke" if args.smoke else "quick" if args.quick else "full"
    machine = common.machine_info()
    result = {**measure(preset), "machine": machine, "date": common.today()}
    for line in report(result):
        print(line)
    out = args.out or (Path(tempfile.mkdtemp(prefix="xyz2image_bench_dataset_"))
                       if args.smoke else common.RESULTS_DIR)
    path = common.write_json(common.results_path(out, machine, prefix="dataset_"), result)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
