"""What the training labels cost: render-only images/s of gaussian_2d with each label added,
and the bytes each label adds per image once deflated as the ``.npz`` stores it.

Plain script: ``python benchmarks/bench_labels.py [--device cpu|gpu] [--edgesize 128]
[--json PATH]``. Every case renders the same 147-atom Au icosahedron with every third atom
Pd (two element channels) in the same run, with the compiled CPU kernel and with the NumPy
path (on a GPU: the device); the table gives images/s (median of repeats), the ratio to
gaussian_2d alone, and the label's arrays deflated at zlib level 6: bytes per image and
images/s on one thread (for gaussian_2d alone, the image's own).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import zlib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

from xyz2image_gpu import Renderer, RenderSettings, as_structure
from xyz2image_gpu.pipeline.kernels import compiled_kernel_available
from xyz2image_gpu.structures.examples import icosahedron_positions

#: Each case: the outputs rendered (gaussian_2d first, the baseline alone) and settings.
CASES: dict[str, tuple[list[str], dict]] = {
    "gaussian_2d alone": (["gaussian_2d"], {}),
    "+ numbers": (["gaussian_2d", "numbers"], {}),
    "+ heatmap_2d": (["gaussian_2d", "heatmap_2d"], {}),
    "+ heatmap_2d, float16": (["gaussian_2d", "heatmap_2d"], {"heatmap_dtype": "float16"}),
    "+ element_heatmap_2d (2 channels)": (["gaussian_2d", "element_heatmap_2d"], {}),
    "+ column_map_2d": (["gaussian_2d", "column_map_2d"], {}),
    "+ column_map_2d, radius 0.5 Å": (["gaussian_2d", "column_map_2d"],
                                      {"column_radius": 0.5}),
    "+ all four labels": (["gaussian_2d", "numbers", "heatmap_2d", "element_heatmap_2d",
                           "column_map_2d"], {}),
}


def structure():
    positions, _ = icosahedron_positions(4, 2.88)
    numbers = np.where(np.arange(len(positions)) % 3 == 0, 46, 79)
    return as_structure(positions, numbers=numbers, name="aupd147")


def measure(renderer: Renderer, st, repeats: int, target_s: float) -> float:
    """Median images/s of ``iter_batches`` consumed batch by batch (:mod:`common`'s
    calibrated timing: warmed up, sized to ``target_s`` per run)."""
    def run(n: int) -> None:
        for _ in renderer.iter_batches(st, n):
            pass

    return common.calibrated_median(run, target_s=target_s, repeats=repeats).images_per_s


def stored(renderer: Renderer, st, n: int = 64, repeats: int = 5) -> tuple[float, float]:
    """zlib level-6 bytes per image of the label's keys (everything but gaussian_2d and the
    per-image metadata every stack has), and images/s compressing them on one thread
    (median of ``repeats``); without labels, those of gaussian_2d itself."""
    out = renderer.render(st, n)
    skip = {"gaussian_2d", "rotations", "voxel_size", "frame_index"}
    keys = [k for k in out if k not in skip] or ["gaussian_2d"]
    raw = [np.ascontiguousarray(out[k]).tobytes() for k in keys]
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        size = sum(len(zlib.compress(b, 6)) for b in raw)
        times.append(time.perf_counter() - t0)
    return size / n, n / statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--edgesize", type=int, default=128)
    parser.add_argument("--target", type=float, default=0.5, help="seconds per timed run")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    st = structure()
    kernels = ["auto"] if args.device != "cpu" else (
        ["compiled", "numpy"] if compiled_kernel_available() else ["numpy"])
    rows = []
    print(f"{args.edgesize} px, 147 atoms (Au, Pd), device {args.device}; images/s, median "
          f"of {args.repeats}")
    print(f"{'outputs':<36} {'kernel':>8} {'images/s':>10} {'vs alone':>9} {'bytes/img':>10} "
          f"{'zlib img/s':>11}")
    for kernel in kernels:
        base = None
        for name, (outputs, extra) in CASES.items():
            settings = RenderSettings(edgesize=args.edgesize, **extra)
            with Renderer(settings, outputs, args.device, cpu_kernel=kernel) as renderer:
                rate = measure(renderer, st, args.repeats, args.target)
                size, zlib_rate = stored(renderer, st)
            base = base or rate
            rows.append({"outputs": name, "kernel": kernel, "images_per_s": rate,
                         "ratio_to_gaussian_2d": rate / base, "label_bytes_per_image": size,
                         "label_zlib6_images_per_s_one_thread": zlib_rate})
            print(f"{name:<36} {kernel:>8} {rate:>10,.0f} {rate / base:>8.2f}x {size:>10,.0f} "
                  f"{zlib_rate:>11,.0f}", flush=True)
    if args.json:
        data = {"machine": common.machine_info(), "edgesize": args.edgesize,
                "device": args.device, "rows": rows}
        args.json.write_text(json.dumps(data, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
