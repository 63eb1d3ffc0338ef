"""Absolute intensities: the package's per-atom cross-sections against multislice.

Two checks, each written to ``results/cross_sections.{json,md}``:

1. **Isolated atoms.** ``--simulate`` (needs abTEM, see README.md) scans a probe over one
   atom in a periodic cell with abTEM and integrates the annular-detector signal over the
   probe positions; that integral is the atom's cross-section for the detector (Å²), since
   the image is in fractions of the beam and the probe's intensity integrates to one. The
   scan covers the whole cell with a 0.5 Å step: the signal is periodic and band-limited to
   twice the aperture (2 × 20 mrad / λ ≤ 2 Å⁻¹ here), so the sum over that grid is its exact
   integral. The potential is sampled at 0.02 Å (0.04 Å, the cluster references' sampling,
   is compared in one case). Results: ``references/single_atoms.json``. Without
   ``--simulate`` the stored results are scored.
2. **Clusters.** The integral of each multislice reference image (``references/*.npz``)
   against the sum of its atoms' cross-sections: random orientations measure whether atoms
   add up independently, zone-axis orientations how much more aligned columns scatter
   (channelling).

Usage::

    /work/venv-abtem/bin/python validation/cross_sections.py --simulate   # ~10 min
    python validation/cross_sections.py                                   # ~5 s
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from xyz2image_gpu.physics.cross_section import (
    detector_cross_section,
    phase_object_cross_section,
)
from xyz2image_gpu.physics.thermal import rms_displacement

SINGLE = HERE / "references" / "single_atoms.json"
RESULTS = HERE / "results"
CONVERGENCE_MRAD = 20.0
CASES = [(el, kv, det) for el in ("Au", "Pd", "Si", "C", "U") for kv in (200.0, 300.0)
         for det in ((70.0, 200.0), (40.0, 100.0))]
#: (element, kV, detector) also simulated at the cluster references' coarser sampling
COARSE = [("Au", 200.0, (70.0, 200.0)), ("Au", 200.0, (40.0, 100.0))]


def simulate_atom(symbol: str, kv: float, detector: tuple[float, float], sampling: float,
                  cell: float = 8.0, step: float = 0.5) -> dict:
    """One atom in a periodic cell, scanned over the whole cell; abTEM needed."""
    import abtem
    import dask
    from ase import Atoms

    dask.config.set(scheduler="threads", num_workers=1)
    abtem.config.set({"fftw.threads": 1})
    atoms = Atoms(symbol, positions=[(cell / 2, cell / 2, 1.0)], cell=(cell, cell, 2.0),
                  pbc=True)
    potential = abtem.Potential(atoms, sampling=sampling, slice_thickness=2.0,
                                projection="infinite", parametrization="lobato")
    probe = abtem.Probe(energy=kv * 1e3, semiangle_cutoff=CONVERGENCE_MRAD)
    probe.grid.match(potential)
    scan = abtem.GridScan(start=(0, 0), end=(cell, cell), sampling=step, endpoint=False)
    t0 = time.perf_counter()
    signal = probe.scan(potential, scan=scan,
                        detectors=abtem.AnnularDetector(inner=detector[0], outer=detector[1]))
    image = np.asarray(signal.compute(progress_bar=False).array, dtype=np.float64)
    return {"element": symbol, "kv": kv, "detector_mrad": list(detector),
            "convergence_mrad": CONVERGENCE_MRAD, "sampling_A": sampling, "cell_A": cell,
            "scan_step_A": step, "cross_section_A2": float(image.sum() * step * step),
            "anti_aliasing_mrad": float(min(probe.cutoff_angles)),
            "seconds": round(time.perf_counter() - t0, 1), "abtem": abtem.__version__}


def simulate(log=print) -> list[dict]:
    done = json.loads(SINGLE.read_text())["atoms"] if SINGLE.exists() else []
    have = {(d["element"], d["kv"], tuple(d["detector_mrad"]), d["sampling_A"]) for d in done}
    wanted = [(*c, 0.02) for c in CASES] + [(*c, 0.04) for c in COARSE]
    for el, kv, det, sampling in wanted:
        if (el, kv, det, sampling) in have:
            continue
        row = simulate_atom(el, kv, det, sampling)
        done.append(row)
        log(f"{el} {kv:.0f} kV {det} mrad at {sampling} Å: {row['cross_section_A2']:.6f} Å² "
            f"({row['seconds']} s)")
        SINGLE.write_text(json.dumps({"atoms": done}, indent=1) + "\n")
    return done


def score_atoms(rows: list[dict]) -> list[dict]:
    out = []
    for d in rows:
        el, kv, (lo, hi) = d["element"], d["kv"], d["detector_mrad"]
        po = phase_object_cross_section(el, kv, lo, hi, d["convergence_mrad"])
        born = detector_cross_section(el, kv, lo, hi).total
        out.append({**{k: d[k] for k in ("element", "kv", "detector_mrad", "sampling_A")},
                    "multislice": d["cross_section_A2"], "phase_object": po, "born": born,
                    "phase_object_ratio": po / d["cross_section_A2"],
                    "born_ratio": born / d["cross_section_A2"]})
    return out


def score_clusters() -> list[dict]:
    out = []
    for path in sorted((HERE / "references").glob("*.npz")):
        with np.load(path) as z:
            image, numbers = z["image"], z["numbers"]
            pixel = float(np.ravel(z["pixel_size"])[0])
            meta = json.loads(str(z["settings_json"]))
        settings = meta["settings"]
        kv = settings["energy_eV"] / 1e3
        lo, hi = settings["detector_inner_mrad"], settings["detector_outer_mrad"]
        conv = settings["semiangle_cutoff_mrad"]
        po = sum(phase_object_cross_section(int(n), kv, lo, hi, conv) for n in numbers)
        born = sum(detector_cross_section(int(n), kv, lo, hi).total for n in numbers)
        tds = sum(detector_cross_section(int(n), kv, lo, hi, rms_displacement(int(n)))
                  .thermal_diffuse for n in numbers)
        integral = float(image.sum() * pixel * pixel)
        out.append({"reference": path.stem, "atoms": len(numbers),
                    "sampling_A": round(meta["potential_sampling_A"], 4),
                    "zone_axis": not path.stem.endswith("_rand"),
                    "integral": integral, "phase_object_sum": po, "born_sum": born,
                    "tds_sum": tds, "integral_over_phase_object": integral / po,
                    "integral_over_born": integral / born})
    return out


def write(atoms: list[dict], clusters: list[dict]) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "cross_sections.json").write_text(
        json.dumps({"single_atoms": atoms, "clusters": clusters}, indent=1) + "\n")
    head = ("| element | kV | detector (mrad) | sampling (Å) | multislice | phase object "
            "| ÷ multislice | first Born | ÷ multislice |")
    lines = ["# Cross-sections against multislice", "",
             "## Isolated atoms (abTEM probe scan, 20 mrad; Å²)", "", head,
             "|" + " --- |" * 9]
    for a in atoms:
        lines.append(
            f"| {a['element']} | {a['kv']:.0f} | {a['detector_mrad'][0]:.0f}-"
            f"{a['detector_mrad'][1]:.0f} | {a['sampling_A']} | {a['multislice']:.6f} | "
            f"{a['phase_object']:.6f} | {a['phase_object_ratio']:.3f} | {a['born']:.6f} | "
            f"{a['born_ratio']:.3f} |")
    head = ("| reference | atoms | zone axis | integral (Å²) | ÷ Σ phase object "
            "| ÷ Σ first Born |")
    lines += ["", "## Clusters: image integral over the sum of the atoms' cross-sections", "",
              head, "|" + " --- |" * 6]
    for c in clusters:
        lines.append(f"| {c['reference']} | {c['atoms']} | {'yes' if c['zone_axis'] else 'no'} "
                     f"| {c['integral']:.4f} | {c['integral_over_phase_object']:.3f} | "
                     f"{c['integral_over_born']:.3f} |")
    (RESULTS / "cross_sections.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--simulate", action="store_true",
                        help="run the isolated-atom multislice (abTEM) first")
    args = parser.parse_args()
    rows = simulate() if args.simulate else json.loads(SINGLE.read_text())["atoms"]
    atoms, clusters = score_atoms(rows), score_clusters()
    write(atoms, clusters)
    print((RESULTS / "cross_sections.md").read_text())


if __name__ == "__main__":
    main()
