"""What the augmentations' random draws cost on the CPU: Philox (``philox.h``) against the
per-image PCG64 generators the package drew with before, in the same run.

Plain script: ``python benchmarks/bench_draws.py [--images 256] [--edgesize 128]
[--repeats 5] [--json PATH]``. On one core, the same float32 images (the bundled 147-atom
Au icosahedron rendered at ``--edgesize``, 64 views, repeated), each way of drawing:

* **PCG64 (before)**: one ``numpy.random.Generator(PCG64(SeedSequence(key + purpose)))`` per
  image and purpose, NumPy's ``poisson`` and ``normal`` (the package's draws up to 0.1.0);
* **Philox, compiled**: ``_splat.c``'s entries, the C of ``philox.h`` (the GPU's own code);
* **Philox, NumPy**: ``physics/random.py``'s array code, the fallback without a compiler.

Rows: shot + read noise of whole images (dose 1e4 e/Å², read noise 0.01, the feature
benchmark's setting), phonon displacements of 147 atoms, and scan shifts of ``--edgesize``
rows. CPU time of the one thread that draws (the machine's other work moves it less than wall
time), the ways taken in turn in each of ``--repeats`` rounds; medians, ratios to PCG64.
Nothing asserts on a timing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

import xyz2image_gpu
from xyz2image_gpu import Renderer, RenderSettings, as_structure
from xyz2image_gpu.physics import augment
from xyz2image_gpu.pipeline import kernels
from xyz2image_gpu.pipeline.rotations import _name_hash, rotation_key

AU147 = Path(xyz2image_gpu.__file__).parent / "structures" / "data" / "au147_icosahedron.xyz"


def _pcg64(key: tuple, purpose: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([*key, purpose])))


def pcg64_noise(images: np.ndarray, keys: list[tuple], electrons: np.ndarray,
                read_noise: float) -> np.ndarray:
    """The shot and read noise as drawn before (per image: its own PCG64, NumPy's poisson
    and normal), the same convention (brightest pixel expects ``electrons``)."""
    out = np.empty(images.shape, dtype=np.float32)
    for i, image in enumerate(images):
        rng = _pcg64(keys[i], 2)
        peak = float(image.max())
        scale = float(electrons[i]) / peak
        noisy = rng.poisson(np.maximum(image.astype(np.float64), 0.0) * scale) / scale
        out[i] = noisy + rng.normal(0.0, read_noise * peak, size=image.shape)
    return out


def pcg64_phonon(keys: list[tuple], rms: np.ndarray) -> np.ndarray:
    return np.stack([_pcg64(k, 1).standard_normal((len(rms), 3)) * rms[:, None] for k in keys])


def pcg64_scan(keys: list[tuple], edgesize: int, jitter: float, drift: float) -> np.ndarray:
    out = np.empty((len(keys), edgesize, 2))
    t = np.arange(edgesize) / max(1, edgesize - 1) - 0.5
    for i, k in enumerate(keys):
        rng = _pcg64(k, 3)
        angle = rng.uniform(0.0, 2.0 * np.pi)
        rows = rng.standard_normal(edgesize) * jitter
        out[i, :, 0] = drift * np.cos(angle) * t
        out[i, :, 1] = drift * np.sin(angle) * t + rows
    return out


def median_cpu_s(ways: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median CPU seconds (this thread's) of each way, the ways run in turn in every round,
    so a change in the machine's load falls on all of them alike."""
    for fn in ways.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {way: [] for way in ways}
    for _ in range(repeats):
        for way, fn in ways.items():
            t0 = time.thread_time()
            fn()
            times[way].append(time.thread_time() - t0)
    return {way: statistics.median(t) for way, t in times.items()}


def measure(images: int = 256, edgesize: int = 128, repeats: int = 5,
            verbose: bool = True) -> dict[str, Any]:
    """Microseconds per image of each draw, each way (see the module); rows with the ratio
    to PCG64 measured in the same call."""
    structure = as_structure(AU147)
    atoms = structure.max_atoms
    settings = RenderSettings(edgesize=edgesize, normalization="float")
    with Renderer(settings, ["gaussian_2d"], "cpu") as renderer:
        out = renderer.render(structure, min(64, images), seed=0)
    reps = -(-images // len(out["gaussian_2d"]))
    stack = np.concatenate([out["gaussian_2d"]] * reps)[:images]
    voxel = np.concatenate([out["voxel_size"]] * reps)[:images]
    electrons = 1e4 * voxel**2
    b, e = len(stack), edgesize
    old_keys = [(0, _name_hash(structure.name), 0, 0, r) for r in range(b)]
    frame = np.zeros(b, dtype=np.int64)
    rotation = np.arange(b, dtype=np.int64)
    keys = np.array([rotation_key(0, structure.name, 0, 0)], dtype=np.uint64)
    rms = np.full(atoms, 0.085)
    has_c = kernels.compiled_kernel_available("noise")
    cases = {
        "shot + read noise": {
            "PCG64 (before)": lambda: pcg64_noise(stack, old_keys, electrons, 0.01),
            "Philox, compiled": lambda: kernels.noise_compiled(
                stack, frame, rotation, keys, electrons_per_pixel=electrons, read_noise=0.01),
            "Philox, NumPy": lambda: augment.noise_batch(
                np, stack, keys[frame], rotation, electrons_per_pixel=electrons,
                read_noise=0.01),
        },
        f"phonon ({atoms} atoms)": {
            "PCG64 (before)": lambda: pcg64_phonon(old_keys, rms),
            "Philox, compiled": lambda: kernels.phonon_compiled(
                frame, rotation, keys, rms[None, :]),
            "Philox, NumPy": lambda: augment.phonon_batch(
                np, keys[frame], rotation, np.broadcast_to(rms, (b, atoms))),
        },
        f"scan ({e} rows)": {
            "PCG64 (before)": lambda: pcg64_scan(old_keys, e, 0.1, 1.0),
            "Philox, compiled": lambda: kernels.scan_compiled(frame, rotation, keys, e, 0.1, 1.0),
            "Philox, NumPy": lambda: augment.scan_batch(np, keys[frame], rotation, e, 0.1, 1.0),
        },
    }
    rows = []
    if verbose:
        print(f"random draws on one core, {b} images, {e} px, {atoms} atoms; "
              f"compiled kernel: {'yes' if has_c else 'no'}")
        print(f"{'draw':<22} {'way':<18} {'us/image':>10} {'vs PCG64':>9}")
    for draw, ways in cases.items():
        if not has_c:
            ways.pop("Philox, compiled")
        seconds = median_cpu_s(ways, repeats)
        base = None
        for way in ways:
            per_image = seconds[way] / b * 1e6
            base = base or per_image
            rows.append({"draw": draw, "way": way, "us_per_image": per_image,
                         "speedup_vs_pcg64": base / per_image})
            if verbose:
                print(f"{draw:<22} {way:<18} {per_image:>10,.1f} {base / per_image:>8.2f}x",
                      flush=True)
    return {"images": b, "edgesize": e, "atoms": atoms, "compiled": has_c, "rows": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--edgesize", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    result = measure(args.images, args.edgesize, args.repeats)
    if args.json:
        args.json.write_text(json.dumps({"machine": common.machine_info(), **result}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
