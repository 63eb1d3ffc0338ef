"""What each physics feature costs: render-only images/s of gaussian_2d with it switched on.

Plain script: ``python benchmarks/bench_features.py [--device cpu|gpu] [--edgesize 128]
[--json PATH]``. Every case renders the same 147-atom Au icosahedron (Au@Pd for the Z
contrast case) in the same run; the table gives images/s (median of repeats) and the ratio to
the plain single-Gaussian image, the fast path.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

from xyz2image_gpu import Renderer, RenderSettings, as_structure
from xyz2image_gpu.physics.probe import ProbeOptics, fit_probe


def cases() -> dict[str, dict]:
    probe = fit_probe(ProbeOptics(200, 20, source_size=0.6)).components
    return {
        "plain (0.4 Å Gaussian)": {},
        "z_exponent 1.7": {"z_exponent": 1.7},
        f"optics probe ({len(probe)} Gaussians)": {"probe": probe},
        "thermal": {"thermal": True},
        "probe + Z + thermal": {"probe": probe, "z_exponent": 1.7, "thermal": True},
        "column correction": {"probe": probe, "z_exponent": 1.7, "thermal": True,
                              "column_correction": (0.175,), "column_broadening": 0.004},
        "phonon jitter": {"phonon_jitter": True},
        "shot + read noise": {"dose": 1e4, "read_noise": 0.01},
        "scan jitter + drift": {"scan_jitter": 0.1, "drift": 1.0},
        # absolute units: atoms weighted by cross-sections; the default adds channelling
        "beam units, no channelling": {**BEAM, "probe": probe, "thermal": True,
                                       "channelling": False},
        "beam units (default: channelling)": {**BEAM, "probe": probe, "thermal": True},
    }


#: Absolute units (``normalization="beam"``): 200 kV, 20 mrad, 70-200 mrad.
BEAM = {"normalization": "beam", "voltage_kv": 200.0, "convergence_mrad": 20.0,
        "framing": "fixed", "pixel_size": 0.15}


def measure(settings: RenderSettings, device: str, structure, n: int, repeats: int) -> float:
    renderer = Renderer(settings, ["gaussian_2d"], device)
    try:
        for _ in renderer.iter_batches(structure, min(n, 64)):
            pass  # warm-up
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            for _ in renderer.iter_batches(structure, n):
                pass
            times.append(time.perf_counter() - t0)
    finally:
        renderer.close()
    return n / statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--edgesize", type=int, default=128)
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    from ase.cluster import Icosahedron

    structure = as_structure(Icosahedron("Au", 4), name="au147")
    rows = []
    base = None
    print(f"gaussian_2d, {args.edgesize} px, 147 atoms, device {args.device}")
    print(f"{'feature':<34} {'images/s':>10} {'vs plain':>9}")
    for name, extra in cases().items():
        settings = RenderSettings(edgesize=args.edgesize, **extra)
        slow = settings.scan_distorted or settings.noisy or settings.phonon_jitter
        n = max(64, args.images // (8 if slow else 1))
        rate = measure(settings, args.device, structure, n, args.repeats)
        base = base or rate
        rows.append({"feature": name, "images_per_s": rate, "ratio_to_plain": rate / base})
        print(f"{name:<34} {rate:>10,.0f} {rate / base:>8.2f}x", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"machine": common.machine_info(), "device": args.device,
                                         "edgesize": args.edgesize, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
