"""What the channelling correction costs in beam units: images/s with and without it.

Plain script: ``python benchmarks/bench_channelling.py [--images 512] [--rounds 5]
[--threads 1] [--json PATH]``. The 147-atom Au icosahedron in beam units (200 kV, 20 mrad,
70-200 mrad, the optics probe with a 0.6 Å source, thermal smearing), gaussian_2d at 128 px,
rendered without channelling, with the default fit (``x`` from one 0.2 Å Gaussian per atom)
and with the same coefficients but ``x`` from the probe's components; the cases are
interleaved over the rounds and the medians are compared with the first case's.
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
from xyz2image_gpu.physics.column import fitted_channelling
from xyz2image_gpu.physics.probe import ProbeOptics, fit_probe


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    from ase.cluster import Icosahedron

    structure = as_structure(Icosahedron("Au", 4), name="au147")
    probe = fit_probe(ProbeOptics(200, 20, source_size=0.6)).components
    base = {"edgesize": 128, "normalization": "beam", "voltage_kv": 200.0,
            "convergence_mrad": 20.0, "framing": "fixed", "pixel_size": 0.15,
            "probe": probe, "thermal": True}
    fit = fitted_channelling(200.0, 20.0, (70.0, 200.0))
    cases = {
        "no channelling": {"channelling": False},
        "default channelling (x: 0.2 Å Gaussian per atom)": {},
        "channelling, x from the probe's components": {
            "column_correction": fit.coefficients, "column_broadening": fit.broadening},
    }
    renderers = {k: Renderer(RenderSettings(**base, **v), ["gaussian_2d"], "cpu",
                             threads=args.threads) for k, v in cases.items()}
    rates: dict[str, list[float]] = {k: [] for k in cases}
    try:
        for r in renderers.values():
            for _ in r.iter_batches(structure, 64):
                pass  # warm-up
        for _ in range(args.rounds):
            for name, r in renderers.items():
                t0 = time.perf_counter()
                for _ in r.iter_batches(structure, args.images):
                    pass
                rates[name].append(args.images / (time.perf_counter() - t0))
    finally:
        for r in renderers.values():
            r.close()
    first = statistics.median(rates["no channelling"])
    rows = []
    print(f"beam units, gaussian_2d 128 px, 147 atoms, {args.threads} thread(s)")
    for name, values in rates.items():
        rate = statistics.median(values)
        rows.append({"case": name, "images_per_s": rate, "ratio": rate / first})
        print(f"{name:<50} {rate:>9,.0f} images/s {rate / first:>6.2f}x")
    if args.json:
        args.json.write_text(json.dumps({"machine": common.machine_info(), "rows": rows},
                                        indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
