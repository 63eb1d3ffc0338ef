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
3. **Images in beam units.** Each reference rendered by the package with
   ``normalization="beam"`` (the optics probe of ``score.py``'s case (c), thermal smearing,
   the reference's detector) in the reference's field: total intensity model ÷ multislice
   over the same field, and Pearson r after ``score.py``'s sub-pixel alignment.
4. **Channelling in beam units.** The column correction (``column_correction`` c1, c2 with
   ``column_broadening`` 0.004 Å², its weight factor ``(1 + c1 x + c2 x²) / (1 + c1 + c2)``
   in beam units) fitted on half of the references (``score.py``'s split) to the totals and
   to each zone-axis column's integrated intensity (pixels nearer to that column than to any
   other, within 1.2 Å), and scored on all of them.

Usage::

    /work/venv-abtem/bin/python validation/cross_sections.py --simulate   # ~10 min
    python validation/cross_sections.py                                   # ~5 s
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from xyz2image_gpu.physics.cross_section import (
    detector_cross_section,
    phase_object_cross_section,
)
from xyz2image_gpu.physics.thermal import rms_displacement

SINGLE = HERE / "references" / "single_atoms.json"
RESULTS = HERE / "results"
CONVERGENCE_MRAD = 20.0
CASES = [(el, kv, det) for el in ("Au", "Pd", "Cu", "Si", "C", "U") for kv in (200.0, 300.0)
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


def _optics(ref: dict) -> tuple[float, float, tuple[float, float]]:
    """(kV, convergence mrad, detector (inner, outer) mrad) of a reference."""
    s = ref["meta"]["settings"] if "meta" in ref else ref["settings"]
    return (s["energy_eV"] / 1e3, s["semiangle_cutoff_mrad"],
            (float(s["detector_inner_mrad"]), float(s["detector_outer_mrad"])))


def _optics_label(optics) -> str:
    kv, _, (lo, hi) = optics
    return f"{kv:.0f} kV, {lo:.0f}-{hi:.0f} mrad"


def score_clusters() -> list[dict]:
    out = []
    for path in sorted((HERE / "references").glob("*.npz")):
        with np.load(path) as z:
            image, numbers = z["image"], z["numbers"]
            pixel = float(np.ravel(z["pixel_size"])[0])
            meta = json.loads(str(z["settings_json"]))
        kv, conv, (lo, hi) = _optics(meta)
        po = sum(phase_object_cross_section(int(n), kv, lo, hi, conv) for n in numbers)
        born = sum(detector_cross_section(int(n), kv, lo, hi).total for n in numbers)
        tds = sum(detector_cross_section(int(n), kv, lo, hi, rms_displacement(int(n)))
                  .thermal_diffuse for n in numbers)
        integral = float(image.sum() * pixel * pixel)
        out.append({"reference": path.stem, "atoms": len(numbers),
                    "optics": _optics_label((kv, conv, (lo, hi))),
                    "sampling_A": round(meta["potential_sampling_A"], 4),
                    "zone_axis": not _is_random(path.stem),
                    "integral": integral, "phase_object_sum": po, "born_sum": born,
                    "tds_sum": tds, "integral_over_phase_object": integral / po,
                    "integral_over_born": integral / born})
    return out


def _is_random(name: str) -> bool:
    return "_rand" in name


#: The fit half of the 200 kV Au/Pd set (score.py's split: each cluster seen once); the
#: three-element set is fitted whole (one zone-axis and one random reference per optics).
FIT_SET = ("au55_ico", "au_fcc110", "au13pd42_cs_rand", "au147_ico_rand")
BROADENING = 0.004
#: How x counts the atoms (``column_width`` Å, ``column_weighting``): a Gaussian of 0.2 Å
#: per atom, each counted as (σ / σ_Au)^0.5 atoms.
WIDTH, WEIGHTING = 0.2, 0.5
#: Columns of at least this many atoms are scored per column.
MIN_COLUMN = 2


def _columns(ref: dict, tol: float = 0.6) -> tuple[np.ndarray, np.ndarray]:
    """Projected columns of a reference: centres (C, 2) in Å and atom counts (C,)."""
    sums, counts = [], []
    for p in np.asarray(ref["positions"], dtype=np.float64)[:, :2]:
        for k in range(len(sums)):
            if np.hypot(*(sums[k] / counts[k] - p)) < tol:
                sums[k] = sums[k] + p
                counts[k] += 1
                break
        else:
            sums.append(p.copy())
            counts.append(1)
    return np.array([s / n for s, n in zip(sums, counts)]), np.array(counts)


def column_integrals(ref: dict, image: np.ndarray, reach: float = 1.2) -> tuple[np.ndarray, ...]:
    """Each column's integrated intensity in ``image`` (the pixels nearer to it than to any
    other column, within ``reach`` Å), and its atom count."""
    centres, counts = _columns(ref)
    edge, px = ref["image"].shape[0], ref["pixel_size"]
    grid = np.asarray(ref["origin"], dtype=np.float64)[:, None] + np.arange(edge) * px
    x, y = np.meshgrid(grid[0], grid[1], indexing="ij")
    d = np.hypot(x[..., None] - centres[:, 0], y[..., None] - centres[:, 1])
    owner, near = d.argmin(-1), d.min(-1) < reach
    return np.bincount(owner[near], image[near], len(centres)), counts


def column_ratios(ref: dict, model: np.ndarray, reach: float = 1.2) -> tuple[np.ndarray, ...]:
    """Each column's integrated intensity, model ÷ multislice, and its atom count."""
    ours, counts = column_integrals(ref, model, reach)
    theirs, _ = column_integrals(ref, ref["image"], reach)
    return ours / theirs, counts


def column_noise(ref: dict) -> float:
    """Frozen-phonon noise of the per-column integrals: the r.m.s. relative difference of
    the two half-means' column integrals, halved (the full mean's standard error)."""
    a, counts = column_integrals(ref, np.asarray(ref["half_a"], dtype=np.float64))
    b, _ = column_integrals(ref, np.asarray(ref["half_b"], dtype=np.float64))
    keep = counts >= MIN_COLUMN
    rel = (a[keep] - b[keep]) / (a[keep] + b[keep])
    return float(np.sqrt(np.mean(rel**2)))


def _beam_model(ref: dict, correction=(), broadening=0.0) -> np.ndarray:
    """The package's beam-unit image of a reference (its optics' probe, thermal smearing);
    ``correction``/``broadening`` empty: no channelling."""
    import score

    from xyz2image_gpu import Renderer, RenderSettings
    from xyz2image_gpu.pipeline.rotations import R0
    from xyz2image_gpu.structures.convert import as_structure

    kv, conv, detector = _optics(ref)
    components, _, _ = score.optics_probe(kv, conv)
    settings = RenderSettings(
        edgesize=ref["image"].shape[0], framing="fixed", pixel_size=ref["pixel_size"],
        normalization="beam", voltage_kv=kv, convergence_mrad=conv, detector_mrad=detector,
        probe=components, thermal=True, column_correction=correction,
        column_broadening=broadening, channelling=None if correction or broadening else False,
        column_width=WIDTH if correction or broadening else 0.0, column_weighting=WEIGHTING)
    structure = as_structure(np.asarray(ref["positions"], dtype=np.float64) @ R0,
                             numbers=ref["numbers"], name=ref["name"])
    with Renderer(settings, ["gaussian_2d"], device="cpu", threads=1) as renderer:
        return renderer.render(structure, 1, seed=0)["gaussian_2d"][0].astype(np.float64)


def score_beam_images(refs: list[dict]) -> list[dict]:
    import score  # validation/score.py: alignment, noise ceiling

    out = []
    for ref in refs:
        model = _beam_model(ref)
        _, r, _ = score.align(model, ref["image"])
        out.append({"reference": ref["name"], "optics": _optics_label(_optics(ref)),
                    "zone_axis": not _is_random(ref["name"]),
                    "model_over_multislice": float(model.sum() / ref["image"].sum()),
                    "peak_model_over_multislice": float(model.max() / ref["image"].max()),
                    "r": float(r), "r_ceiling": score.r_ceiling(ref)})
    return out


def _cost(c, refs: list[dict], broadening) -> float:
    total = 0.0
    for ref in refs:
        model = _beam_model(ref, tuple(c), broadening)
        total += math.log(model.sum() / ref["image"].sum()) ** 2
        if not _is_random(ref["name"]):
            ratios, counts = column_ratios(ref, model)
            total += float(np.mean(np.log(ratios[counts >= MIN_COLUMN]) ** 2))
    return total


def _fit_shape(refs: list[dict], start: list[float]) -> list[float]:
    """(c1, c2) minimising :func:`_cost` on ``refs`` (Nelder-Mead from ``start``), rounded
    to 4 decimals."""
    from scipy.optimize import minimize

    res = minimize(_cost, start, args=(refs, BROADENING), method="Nelder-Mead",
                   options={"xatol": 1e-4, "fatol": 1e-7, "maxfev": 200})
    return [round(float(c), 4) for c in res.x]


def fit_channelling(refs: list[dict], log=print) -> dict:
    """Fit the channelling correction per optics, score every reference with and without.

    The shape comes from 200 kV, 70-200 mrad, where the references have columns of 2 to 8
    atoms: (c1, c2) fitted on :data:`FIT_SET` and the three-element references. Every other
    optics, whose references have columns of 8 atoms only, scales that shape by one factor
    fitted on all its references, so that shorter columns interpolate the same way and the
    factor keeps rising with the column up to 8 atoms.
    """
    import score
    from scipy.optimize import minimize_scalar

    groups: dict[tuple, list[dict]] = {}
    for ref in refs:
        groups.setdefault(_optics(ref), []).append(ref)
    base_optics = (200.0, 20.0, (70.0, 200.0))
    order = sorted(groups, key=lambda o: o != base_optics)
    fits, rows, base = [], [], None
    for optics in order:
        group = groups[optics]
        fit_refs = [r for r in group if r["name"] in FIT_SET or r["name"] not in score.ORDER]
        t0 = time.perf_counter()
        if base is None:
            coefficients = _fit_shape(fit_refs, [0.2, 0.0])
            base, scale = coefficients, 1.0
        else:
            res = minimize_scalar(
                lambda a, base=base, refs=fit_refs: _cost([a * c for c in base], refs,
                                                          BROADENING),
                bounds=(0.0, 3.0), method="bounded", options={"xatol": 1e-3})
            scale = float(res.x)
            coefficients = [round(scale * c, 4) for c in base]
        kv, conv, detector = optics
        fits.append({"voltage_kv": kv, "convergence_mrad": conv,
                     "detector_mrad": list(detector), "column_correction": coefficients,
                     "scale_of_base": round(scale, 4), "column_broadening": BROADENING,
                     "column_width": WIDTH, "column_weighting": WEIGHTING,
                     "fit_set": [r["name"] for r in fit_refs]})
        log(f"{_optics_label(optics)}: column_correction {coefficients} ({scale:.3f} x the "
            f"base), broadening {BROADENING} ({time.perf_counter() - t0:.0f} s)")
        names = {r["name"] for r in fit_refs}
        for ref in group:
            plain = _beam_model(ref)
            model = _beam_model(ref, tuple(coefficients), BROADENING)
            _, r, _ = score.align(model, ref["image"])
            _, r_plain, _ = score.align(plain, ref["image"])
            row = {"reference": ref["name"], "optics": _optics_label(optics),
                   "fit_set": ref["name"] in names, "zone_axis": not _is_random(ref["name"]),
                   "total_without": float(plain.sum() / ref["image"].sum()),
                   "model_over_multislice": float(model.sum() / ref["image"].sum()),
                   "r_without": float(r_plain), "r": float(r),
                   "r_ceiling": score.r_ceiling(ref),
                   "configs": ref["meta"].get("num_configs")}
            if row["zone_axis"]:
                ratios, counts = column_ratios(ref, model)
                keep = counts >= MIN_COLUMN
                err = np.abs(ratios[keep] - 1)
                row.update(columns=int(keep.sum()), column_atoms=int(counts[keep].max()),
                           column_error_mean=float(err.mean()),
                           column_error_max=float(err.max()),
                           column_noise=column_noise(ref))
            rows.append(row)
    return {"fits": fits, "column_broadening": BROADENING, "references": rows}


def held_out(channelling: dict, refs: list[dict], log=print) -> list[dict]:
    """Fits scored on references they did not see: the 200 kV, 70-200 mrad shape fitted on
    :data:`FIT_SET` alone, on the three-element references of those optics; and each
    detector's 200 kV fit on the 300 kV references."""
    import score

    first = _fit_shape([r for r in refs if r["name"] in FIT_SET], [0.3, -0.015])
    fits = {(f["voltage_kv"], tuple(f["detector_mrad"])): f["column_correction"]
            for f in channelling["fits"]}
    cases = [("the first set's fit half only", first,
              lambda r: r["name"] not in score.ORDER
              and _optics(r) == (200.0, 20.0, (70.0, 200.0)))]
    for det in ((70.0, 200.0), (40.0, 100.0)):
        if (200.0, det) in fits:
            cases.append((f"the 200 kV fit, {det[0]:.0f}-{det[1]:.0f} mrad", fits[(200.0, det)],
                          lambda r, det=det: _optics(r) == (300.0, 20.0, det)))
    rows = []
    for fitted_on, coefficients, chosen in cases:
        for ref in filter(chosen, refs):
            model = _beam_model(ref, tuple(coefficients), BROADENING)
            _, r, _ = score.align(model, ref["image"])
            row = {"fitted_on": fitted_on, "column_correction": coefficients,
                   "reference": ref["name"], "optics": _optics_label(_optics(ref)),
                   "model_over_multislice": float(model.sum() / ref["image"].sum()),
                   "r": float(r)}
            if not _is_random(ref["name"]):
                ratios, counts = column_ratios(ref, model)
                err = np.abs(ratios[counts >= MIN_COLUMN] - 1)
                row.update(column_error_mean=float(err.mean()),
                           column_error_max=float(err.max()))
            rows.append(row)
            log(f"held out: {fitted_on} on {ref['name']}: total "
                f"{row['model_over_multislice']:.3f}")
    return rows


def write(atoms: list[dict], clusters: list[dict], images: list[dict],
          channelling: dict, held: list[dict] = ()) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "cross_sections.json").write_text(
        json.dumps({"single_atoms": atoms, "clusters": clusters, "beam_images": images,
                    "channelling": channelling, "held_out": list(held)}, indent=1) + "\n")
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
    head = ("| reference | optics | atoms | zone axis | integral (Å²) | ÷ Σ phase object "
            "| ÷ Σ first Born |")
    lines += ["", "## Clusters: image integral over the sum of the atoms' cross-sections", "",
              head, "|" + " --- |" * 7]
    for c in clusters:
        lines.append(f"| {c['reference']} | {c['optics']} | {c['atoms']} | "
                     f"{'yes' if c['zone_axis'] else 'no'} "
                     f"| {c['integral']:.4f} | {c['integral_over_phase_object']:.3f} | "
                     f"{c['integral_over_born']:.3f} |")
    head = ("| reference | optics | zone axis | total: model ÷ multislice "
            "| peak: model ÷ multislice | Pearson r | noise ceiling |")
    lines += ["", ("## Images in beam units without channelling (`normalization=\"beam\"`, "
              "`channelling=False`, optics probe, thermal)"), "", head, "|" + " --- |" * 7]
    for m in images:
        lines.append(f"| {m['reference']} | {m['optics']} | {'yes' if m['zone_axis'] else 'no'} "
                     f"| {m['model_over_multislice']:.3f} | "
                     f"{m['peak_model_over_multislice']:.3f} | {m['r']:.4f} | "
                     f"{m['r_ceiling']:.4f} |")
    c = channelling
    lines += ["", "## Channelling in beam units (the default of `normalization=\"beam\"`)", "",
              (f"Column broadening {c['column_broadening']} Å² throughout. Fits per optics "
              "(`xyz2image_gpu.physics.column.CHANNELLING_FITS`):"), "",
              "| optics | column_correction | fitted on |", "| --- | --- | --- |"]
    for f in c["fits"]:
        label = _optics_label((f["voltage_kv"], f["convergence_mrad"], f["detector_mrad"]))
        coefficients = ", ".join(map(str, f["column_correction"]))
        lines.append(f"| {label} | {coefficients} | {', '.join(f['fit_set'])} |")
    head = ("| reference | optics | configs | total without | total with | columns (atoms ≤) "
            "| mean column error | largest column error | column noise | r without | r with "
            "| noise ceiling |")
    lines += ["", ("Per reference (* in the fit set): totals are model ÷ multislice; column "
              "errors |model ÷ multislice − 1| of each column's integrated intensity (columns "
              f"≥ {MIN_COLUMN} atoms); column noise: the reference's own frozen-phonon "
              "standard error per column (r.m.s., from its half-means)."), "", head,
              "|" + " --- |" * 12]
    for m in c["references"]:
        cols = (f"{m['columns']} ({m['column_atoms']}) | {m['column_error_mean']:.3f} | "
                f"{m['column_error_max']:.3f} | {m['column_noise']:.3f}"
                if m["zone_axis"] else "| | |")
        lines.append(f"| {m['reference']}{' *' if m['fit_set'] else ''} | {m['optics']} | "
                     f"{m['configs']} | {m['total_without']:.3f} | "
                     f"{m['model_over_multislice']:.3f} | {cols} | {m['r_without']:.4f} | "
                     f"{m['r']:.4f} | {m['r_ceiling']:.4f} |")
    if held:
        lines += ["", "## Held out: fits scored on references they did not see", "",
                  ("| fitted on | column_correction | reference | total: model ÷ multislice "
                  "| mean column error | largest column error | Pearson r |"),
                  "|" + " --- |" * 7]
        for h in held:
            cols = (f"{h['column_error_mean']:.3f} | {h['column_error_max']:.3f}"
                    if "column_error_mean" in h else " |")
            lines.append(f"| {h['fitted_on']} | {', '.join(map(str, h['column_correction']))} "
                         f"| {h['reference']} | {h['model_over_multislice']:.3f} | {cols} "
                         f"| {h['r']:.4f} |")
    (RESULTS / "cross_sections.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--simulate", action="store_true",
                        help="run the isolated-atom multislice (abTEM) first")
    args = parser.parse_args()
    rows = simulate() if args.simulate else json.loads(SINGLE.read_text())["atoms"]
    import score

    refs = score.load_references(group="all")  # every reference, both sets, loaded once
    atoms, clusters, images = score_atoms(rows), score_clusters(), score_beam_images(refs)
    channelling = fit_channelling(refs)
    write(atoms, clusters, images, channelling, held_out(channelling, refs))
    print((RESULTS / "cross_sections.md").read_text())


if __name__ == "__main__":
    main()
