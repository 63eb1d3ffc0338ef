"""What the augmentations' random draws cost on the CPU: Philox (``philox.h``) against the
per-image PCG64 generators the package drew with before, in the same run.

Plain script: ``python benchmarks/bench_draws.py [--images 256] [--edgesize 128]
[--repeats 5] [--json PATH]``. On one core, the same float32 images (a 147-atom Au
icosahedron rendered at ``--edgesize``, 64 views, repeated), each way of drawing:

* **PCG64 (before)**: one ``numpy.random.Generator(PCG64(SeedSequence(key + purpose)))`` per
  image and purpose, NumPy's ``poisson`` and ``normal`` (the package's draws up to 0.1.0);
* **Philox, compiled**: ``_splat.c``'s entries, the C of ``philox.h`` (the GPU's own code);
* **Philox, NumPy**: ``physics/random.py``'s array code, the fallback without a compiler.

Rows: shot + read noise of whole images (dose 1e4 e/Å², read noise 0.01, the feature
benchmark's setting), phonon displacements of 147 atoms, and scan shifts of ``--edgesize``
rows. Medians of ``--repeats``; ratios to PCG64. Nothing asserts on a timing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

from xyz2image_gpu import Renderer, RenderSettings, as_structure
from xyz2image_gpu.physics import augment
from xyz2image_gpu.pipeline import kernels
from xyz2image_gpu.pipeline.rotations import _name_hash, rotation_key


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


def median_s(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--edgesize", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    from ase.cluster import Icosahedron

    atoms = Icosahedron("Au", 4)
    structure = as_structure(atoms, name="au147")
    settings = RenderSettings(edgesize=args.edgesize, normalization="float")
    with Renderer(settings, ["gaussian_2d"], "cpu") as renderer:
        out = renderer.render(structure, min(64, args.images), seed=0)
    reps = -(-args.images // len(out["gaussian_2d"]))
    images = np.concatenate([out["gaussian_2d"]] * reps)[: args.images]
    voxel = np.concatenate([out["voxel_size"]] * reps)[: args.images]
    electrons = 1e4 * voxel**2
    b = len(images)
    frame_key = rotation_key(0, "au147", 0, 0)
    old_keys = [(0, _name_hash("au147"), 0, 0, r) for r in range(b)]
    frame = np.zeros(b, dtype=np.int64)
    rotation = np.arange(b, dtype=np.int64)
    keys = np.array([frame_key], dtype=np.uint64)
    rms = np.full(len(atoms), 0.085)
    e = args.edgesize
    has_c = kernels.compiled_kernel_available("noise")

    rows = []
    print(f"random draws on one core, {b} images, {e} px, {len(atoms)} atoms; "
          f"compiled kernel: {'yes' if has_c else 'no'}")
    print(f"{'draw':<22} {'way':<18} {'us/image':>10} {'vs PCG64':>9}")
    cases = {
        "shot + read noise": {
            "PCG64 (before)": lambda: pcg64_noise(images, old_keys, electrons, 0.01),
            "Philox, compiled": lambda: kernels.noise_compiled(
                images, frame, rotation, keys, electrons_per_pixel=electrons, read_noise=0.01),
            "Philox, NumPy": lambda: augment.noise_batch(
                np, images, keys[frame], rotation, electrons_per_pixel=electrons,
                read_noise=0.01),
        },
        "phonon (147 atoms)": {
            "PCG64 (before)": lambda: pcg64_phonon(old_keys, rms),
            "Philox, compiled": lambda: kernels.phonon_compiled(
                frame, rotation, keys, rms[None, :]),
            "Philox, NumPy": lambda: augment.phonon_batch(
                np, keys[frame], rotation, np.broadcast_to(rms, (b, len(rms)))),
        },
        f"scan ({e} rows)": {
            "PCG64 (before)": lambda: pcg64_scan(old_keys, e, 0.1, 1.0),
            "Philox, compiled": lambda: kernels.scan_compiled(frame, rotation, keys, e, 0.1, 1.0),
            "Philox, NumPy": lambda: augment.scan_batch(np, keys[frame], rotation, e, 0.1, 1.0),
        },
    }
    for draw, ways in cases.items():
        base = None
        for way, fn in ways.items():
            if way == "Philox, compiled" and not has_c:
                continue
            per_image = median_s(fn, args.repeats) / b * 1e6
            base = base or per_image
            rows.append({"draw": draw, "way": way, "us_per_image": per_image,
                         "speedup_vs_pcg64": base / per_image})
            print(f"{draw:<22} {way:<18} {per_image:>10,.1f} {base / per_image:>8.2f}x",
                  flush=True)
    if args.json:
        args.json.write_text(json.dumps({"machine": common.machine_info(), "images": b,
                                         "edgesize": e, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
