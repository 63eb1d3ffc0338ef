"""Score this package's convolution images against the multislice references.

Usage (from the repository root, with the package importable; abTEM is not needed)::

    OMP_NUM_THREADS=1 python validation/score.py            # -> validation/results/scores.{json,md}

For every ``validation/references/<name>.npz`` (see ``make_references.py``) the same atoms
are rendered by :class:`xyz2image_gpu.Renderer` on the CPU with ``framing="fixed"``,
``pixel_size`` = the reference's scan step, ``edgesize`` = its size,
``normalization="float"`` and ``n_rotation=1``.

Orientation. Rotation 0 of the package is the seed's fixed view ``R0`` (90° about z):
rendered positions are ``positions @ R0.T``. The reference's positions (already in the
simulated orientation, beam along z) are therefore handed to the renderer as
``positions @ R0`` (that is ``R0⁻¹`` applied to every atom), so that image 0 shows them
exactly as simulated; the script checks that ``out["rotations"][0]`` is ``R0``. Both images
then put the projected bounding-box centre at pixel ``(E - 1) / 2`` with axis 0 = x.

Alignment. The convolution image is shifted onto the reference by a Fourier (sub-pixel)
shift: the integer peak of the cross-correlation, then the shift that maximises Pearson r
(Nelder–Mead), bounded to ±3 px. The fitted shifts are reported; they are a few hundredths
of a pixel, which confirms that the two fields of view coincide.

Cases (Pearson r over the whole image, after alignment):

``a_seed``        one Gaussian σ = 0.4 Å, z_exponent 0 (the original script's physics)
``b_best_sigma``  one Gaussian, σ fitted on a grid (largest mean r over all references),
                  z_exponent 1.7
``c_optics``      the probe of ``fit_probe(ProbeOptics(200 kV, 20 mrad, Δf 0, Cs 0), n=3)``,
                  z_exponent 1.7, ``thermal=True`` (the package's 300 K Debye–Waller table)
``d_pixel_corrected``  ``c_optics`` followed by the per-pixel polynomial column
                  correction of ``column_correction.py`` (degree 3), fitted on the training
                  references only; r on the held-out ones is the number to quote
``e_atom_corrected``   ``c_optics`` with the per-atom correction (degree 2: weights and
                  widths as functions of the column occupancy), same split
"""

from __future__ import annotations

import functools
import json
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

HERE = Path(__file__).resolve().parent
REFERENCES = HERE / "references"
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE.parent))

from xyz2image_gpu import Renderer, RenderSettings
from xyz2image_gpu.physics.calibrate import pearson_r
from xyz2image_gpu.pipeline.rotations import R0
from xyz2image_gpu.structures import as_structure

#: The order in which references are reported.
ORDER = (
    "au55_ico", "au55_ico_rand", "au13pd42_cs", "au13pd42_cs_rand",
    "au_fcc110", "au_fcc110_rand", "au147_ico", "au147_ico_rand",
)
#: Fixed split for the column correction: each cluster once in training, once held out.
TRAIN = ("au55_ico", "au13pd42_cs_rand", "au_fcc110", "au147_ico_rand")
Z_EXPONENT = 1.7
SIGMA_GRID = np.round(np.arange(0.15, 0.601, 0.005), 4)
MAX_SHIFT = 3.0


# ---------------------------------------------------------------------------- references
def load_references(names=None, group: str = "relative") -> list[dict]:
    """The references as dicts (image as float64, settings parsed).

    ``group``: "relative" (the 200 kV, 70-200 mrad Au/Pd set of :data:`ORDER`, scored
    here), "absolute" (the three-element set at two voltages and two detectors,
    ``make_references.ABSOLUTE``, scored in beam units by ``cross_sections.py``) or "all".
    """
    refs = []
    paths = sorted(REFERENCES.glob("*.npz"))
    by_name = {p.stem: p for p in paths}
    rest = sorted(set(by_name) - set(ORDER))
    wanted = {"relative": [n for n in ORDER if n in by_name], "absolute": rest,
              "all": [n for n in ORDER if n in by_name] + rest}[group]
    if names:
        wanted = [n for n in wanted if n in names]
    for name in wanted:
        with np.load(by_name[name], allow_pickle=False) as d:
            ref = {k: d[k] for k in d.files}
        ref["name"] = name
        ref["image"] = ref["image"].astype(np.float64)
        ref["meta"] = json.loads(str(ref.pop("settings_json")))
        ref["pixel_size"] = float(ref["pixel_size"])
        refs.append(ref)
    return refs


# ---------------------------------------------------------------------------- rendering
def render_convolution(ref: dict, **settings) -> np.ndarray:
    """This package's float image of the reference's atoms in the reference's frame."""
    edge = ref["image"].shape[0]
    structure = as_structure(
        np.asarray(ref["positions"], dtype=np.float64) @ R0,  # R0⁻¹: image 0 shows them as is
        numbers=ref["numbers"], name=ref["name"],
    )
    rs = RenderSettings(
        edgesize=edge, framing="fixed", pixel_size=ref["pixel_size"],
        normalization="float", **settings,
    )
    renderer = Renderer(rs, ["gaussian_2d"], device="cpu", threads=1)
    try:
        out = renderer.render(structure, 1, seed=0)
    finally:
        renderer.close()
    if not np.allclose(out["rotations"][0], R0):
        raise RuntimeError("rotation 0 is not R0: set all_random=False")
    return out["gaussian_2d"][0].astype(np.float64)


def single_atom_peak(number: int, pixel_size: float, **settings) -> float:
    """Peak of one isolated atom (on a pixel centre) rendered with these settings."""
    structure = as_structure(np.zeros((1, 3)), numbers=[number], name="one_atom")
    rs = RenderSettings(edgesize=33, framing="fixed", pixel_size=pixel_size,
                        normalization="float", **settings)
    renderer = Renderer(rs, ["gaussian_2d"], device="cpu", threads=1)
    try:
        return float(renderer.render(structure, 1)["gaussian_2d"][0].max())
    finally:
        renderer.close()


# ---------------------------------------------------------------------------- alignment
def fourier_shift(image: np.ndarray, shift) -> np.ndarray:
    """``image`` moved by ``shift`` pixels (axis 0, axis 1), periodic, sub-pixel."""
    k0 = np.fft.fftfreq(image.shape[0])[:, None]
    k1 = np.fft.fftfreq(image.shape[1])[None, :]
    phase = np.exp(-2j * np.pi * (k0 * shift[0] + k1 * shift[1]))
    return np.fft.ifft2(np.fft.fft2(image) * phase).real


def align(model: np.ndarray, reference: np.ndarray, max_shift: float = MAX_SHIFT):
    """Sub-pixel shift of ``model`` that maximises Pearson r with ``reference``.

    Returns (shift (2,), r, shifted model).
    """
    from scipy.optimize import minimize

    a = reference - reference.mean()
    b = model - model.mean()
    cc = np.fft.ifft2(np.fft.fft2(a) * np.conj(np.fft.fft2(b))).real
    n0, n1 = cc.shape
    s0 = (np.arange(n0) + n0 // 2) % n0 - n0 // 2
    s1 = (np.arange(n1) + n1 // 2) % n1 - n1 // 2
    mask = (np.abs(s0)[:, None] <= max_shift) & (np.abs(s1)[None, :] <= max_shift)
    i, j = np.unravel_index(np.argmax(np.where(mask, cc, -np.inf)), cc.shape)
    start = np.array([s0[i], s1[j]], dtype=np.float64)

    def cost(s):
        if np.any(np.abs(s) > max_shift):
            return 1.0 + float(np.abs(s).max())
        return -pearson_r(fourier_shift(model, s), reference)

    res = minimize(cost, start, method="Nelder-Mead",
                   options={"xatol": 1e-3, "fatol": 1e-9, "initial_simplex":
                            [start, start + [0.3, 0], start + [0, 0.3]]})
    shift = res.x
    shifted = fourier_shift(model, shift)
    return shift, pearson_r(shifted, reference), shifted


# ---------------------------------------------------------------------------- cases
@functools.cache
def optics_probe(kv: float = 200.0, mrad: float = 20.0):
    """(components, residual, source) of the aberration-free probe fit (200 kV / 20 mrad:
    the relative set's optics)."""
    from xyz2image_gpu.physics.probe import ProbeOptics, fit_probe

    fit = fit_probe(ProbeOptics(float(kv), float(mrad), 0.0, 0.0, 0.0), n=3)
    return tuple(fit.components), float(fit.residual), "xyz2image_gpu.physics.probe.fit_probe"


def case_settings() -> dict[str, dict]:
    """Render settings of the fixed cases (b's σ is fitted in :func:`score_all`)."""
    comps, _, _ = optics_probe()
    return {
        "a_seed": {"gauss_sigma": 0.4, "z_exponent": 0.0},
        "c_optics": {"probe": comps, "z_exponent": Z_EXPONENT, "thermal": True},
    }


def r_ceiling(ref: dict) -> float | None:
    """Largest r a noise-free model can reach: sqrt(Spearman-Brown reliability) of the
    frozen-phonon mean, from the r between the even- and odd-configuration means."""
    if "half_a" not in ref:
        return ref["meta"].get("r_ceiling")
    r = pearson_r(ref["half_a"], ref["half_b"])
    return float(math.sqrt(max(0.0, 2 * r / (1 + r))))


def score_case(refs: list[dict], settings: dict) -> dict[str, dict]:
    out = {}
    for ref in refs:
        model = render_convolution(ref, **settings)
        shift, r, _ = align(model, ref["image"])
        out[ref["name"]] = {"r": r, "shift_px": [float(v) for v in shift]}
    return out


def sigma_scan(refs: list[dict], z_exponent: float = Z_EXPONENT) -> dict:
    """r of every reference for every σ of SIGMA_GRID (alignment per image)."""
    table = {}
    for ref in refs:
        rs = []
        for sig in SIGMA_GRID:
            model = render_convolution(ref, gauss_sigma=float(sig), z_exponent=z_exponent)
            rs.append(align(model, ref["image"])[1])
        table[ref["name"]] = np.array(rs)
    return table


def score_all(refs: list[dict]) -> dict:
    t0 = time.perf_counter()
    results: dict = {"cases": {}, "notes": {}}
    fixed = case_settings()
    results["cases"]["a_seed"] = {"settings": fixed["a_seed"],
                                  "per_reference": score_case(refs, fixed["a_seed"])}
    scan = sigma_scan(refs)
    mean = np.mean([scan[n] for n in scan], axis=0)
    best = float(SIGMA_GRID[int(np.argmax(mean))])
    b = {"gauss_sigma": best, "z_exponent": Z_EXPONENT}
    results["cases"]["b_best_sigma"] = {
        "settings": b, "per_reference": score_case(refs, b),
        "per_reference_best_sigma": {
            n: float(SIGMA_GRID[int(np.argmax(v))]) for n, v in scan.items()},
    }
    results["sigma_scan"] = {"sigma_A": SIGMA_GRID.tolist(),
                             **{n: np.round(v, 6).tolist() for n, v in scan.items()}}
    comps, residual, source = optics_probe()
    results["probe_fit"] = {"components": comps, "residual": residual, "source": source}
    c = fixed["c_optics"]
    results["cases"]["c_optics"] = {"settings": c, "per_reference": score_case(refs, c)}
    # z exponent on the two-element references (r is blind to it for one element)
    mixed = [ref for ref in refs if len(set(ref["numbers"].tolist())) > 1]
    if mixed:
        zgrid = np.round(np.arange(0.8, 2.61, 0.1), 2)
        zs = {}
        for ref in mixed:
            zs[ref["name"]] = [
                align(render_convolution(ref, **{**c, "z_exponent": float(z)}),
                      ref["image"])[1] for z in zgrid]
        results["z_exponent_scan"] = {"z_exponent": zgrid.tolist(), **zs}
    # (d, e) the column corrections, fitted on TRAIN, applied to every reference
    import column_correction as cc

    fits = cc.fit_and_evaluate(refs, base=c, train=TRAIN)
    for key, method in (("d_pixel_corrected", "pixel"), ("e_atom_corrected", "atom")):
        fit = fits[method]
        results["cases"][key] = {
            "settings": {**c, "column_correction": method,
                         "coefficients": fit["coefficients"], "beta_A2": fit["beta_A2"],
                         "reference_element": int(max(int(r["numbers"].max()) for r in refs))},
            "per_reference": {n: {"r": v["r_after"], "held_out": v["held_out"],
                                  "one_minus_R2": v["one_minus_R2_after"]}
                              for n, v in fit["per_reference"].items()},
        }
    # (f) the same per-atom correction applied by the engine itself (RenderSettings)
    atom = fits["atom"]
    engine_settings = {**c, "column_correction": tuple(atom["relative"][1:]),
                       "column_broadening": atom["beta_A2"], "column_reference": "Au"}
    scored = score_case(refs, engine_settings)
    results["cases"]["f_engine_corrected"] = {
        "settings": engine_settings,
        "per_reference": {n: {"r": v["r"], "held_out": atom["per_reference"][n]["held_out"]}
                          for n, v in scored.items()},
    }
    for case in results["cases"].values():
        per = case["per_reference"]
        case["mean_r"] = float(np.mean([v["r"] for v in per.values()]))
        case["min_r"] = float(np.min([v["r"] for v in per.values()]))
        held = [v["r"] for v in per.values() if v.get("held_out")]
        if held:
            case["mean_r_held_out"] = float(np.mean(held))
    results["references"] = {
        ref["name"]: {**{k: ref["meta"][k] for k in (
            "description", "n_atoms", "edge", "pixel_size_A", "num_configs", "seconds_total",
            "potential_gpts")}, "r_ceiling": r_ceiling(ref)} for ref in refs}
    results["seconds"] = time.perf_counter() - t0
    results["package"] = package_state()
    return results


def package_state() -> dict:
    """Which xyz2image_gpu was scored: version, git commit, modified package files."""
    import subprocess

    import xyz2image_gpu

    root = HERE.parent
    state = {"version": getattr(xyz2image_gpu, "__version__", None)}
    try:
        state["commit"] = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
            check=True).stdout.strip()
        state["modified"] = subprocess.run(
            ["git", "status", "--porcelain", "--", "xyz2image_gpu"], cwd=root,
            capture_output=True, text=True, check=True).stdout.split("\n")[:-1]
    except (OSError, subprocess.CalledProcessError):
        pass
    return state


def markdown(results: dict) -> str:
    cases = list(results["cases"])
    names = list(results["references"])
    head = ("| reference | " + " | ".join(cases) + " | noise ceiling |\n|---|"
            + "---|" * (len(cases) + 1) + "\n")
    rows = []
    for n in names:
        ceiling = results["references"][n].get("r_ceiling")
        cells = []
        for c in cases:
            v = results["cases"][c]["per_reference"][n]
            mark = " (held out)" if v.get("held_out") else ""
            cells.append(f"{v['r']:.4f}{mark}")
        cells.append(f"{ceiling:.4f}" if ceiling else "")
        rows.append(f"| {n} | " + " | ".join(cells) + " |")
    ceilings = [v.get("r_ceiling") for v in results["references"].values()]
    mean_ceiling = f"{np.mean(ceilings):.4f}" if all(ceilings) else ""
    mean = "| **mean** | " + " | ".join(
        f"**{results['cases'][c]['mean_r']:.4f}**" for c in cases) + f" | {mean_ceiling} |"
    rows.append(mean)
    if any("mean_r_held_out" in results["cases"][c] for c in cases):
        rows.append("| mean, held out only | " + " | ".join(
            f"{results['cases'][c].get('mean_r_held_out', float('nan')):.4f}"
            if "mean_r_held_out" in results["cases"][c] else "" for c in cases) + " | |")
    lines = [
        "# Convolution images vs multislice (Pearson r after sub-pixel alignment)", "",
        head + "\n".join(rows), "",
        ("Noise ceiling: the largest r a noise-free model can reach against the "
        "frozen-phonon mean (from the r between even- and odd-configuration "
        "means, Spearman-Brown)."), "",
        "Settings:", "",
    ]
    for c in cases:
        lines.append(f"* `{c}`: `{json.dumps(results['cases'][c]['settings'])}`")
    b = results["cases"]["b_best_sigma"]
    lines += ["", "Best single-Gaussian σ per reference (Å): " + ", ".join(
        f"{n} {s:.3f}" for n, s in b["per_reference_best_sigma"].items()), ""]
    shifts = [v["shift_px"] for v in results["cases"]["c_optics"]["per_reference"].values()]
    lines.append(f"Largest alignment shift (case c): {np.abs(shifts).max():.3f} px.")
    if "z_exponent_scan" in results:
        zs = results["z_exponent_scan"]
        for n, v in zs.items():
            if n == "z_exponent":
                continue
            k = int(np.argmax(v))
            lines.append(f"Z exponent scan ({n}, case c settings): best n = "
                         f"{zs['z_exponent'][k]:.1f} (r {v[k]:.4f}; at 1.7: "
                         f"{v[zs['z_exponent'].index(1.7)]:.4f}).")
    lines += ["", ("| reference | atoms | image | pixel (Å) | potential grid | configs | "
              "wall time (s) |"), "|---|---|---|---|---|---|---|"]
    for n, v in results["references"].items():
        lines.append(f"| {n} | {v['n_atoms']} | {v['edge']}² | {v['pixel_size_A']:.3f} | "
                     f"{v['potential_gpts']}² | {v['num_configs']} | {v['seconds_total']:.0f} |")
    total = sum(v["seconds_total"] for v in results["references"].values())
    lines.append(f"| total | | | | | | {total:.0f} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    refs = load_references()
    if not refs:
        print("no references in", REFERENCES)
        return 1
    print("references:", ", ".join(r["name"] for r in refs))
    results = score_all(refs)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "scores.json").write_text(json.dumps(results, indent=1))
    md = markdown(results)
    (RESULTS / "scores.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
