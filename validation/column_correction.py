"""Column corrections of convolution images, fitted to the multislice references.

The convolution (incoherent Gaussian) image counts a column of n atoms as n times one atom
of one fixed width. Multislice does not: along a column the probe channels (short columns
come out *brighter* than n single atoms, long ones saturate) and spreads, so thick columns
image wider. Two corrections are fitted here, both by linear least squares over every
pixel of the training references:

``pixel`` (the idea of Combs et al., Adv. Struct. Chem. Imaging 5, 2019): a low-order
polynomial of the convolution image itself, pixel by pixel::

    x = I_conv / peak_1                       (units of one isolated reference atom)
    I_ms ≈ c1 x + c2 x² + c3 x³

``atom``: the same polynomial applied to each atom's *weight* instead of to pixels, plus a
thickness-dependent width, so that peak shapes are kept::

    x_i  = I_conv(r_i) / peak_1               (the convolution image at atom i: its column)
    I_ms ≈ Σ_i (c1 + c2 x_i + c3 x_i²) w_i Σ_g a_g G(r - r_i; sqrt(σ_ig² + β (x_i - 1)₊))

``peak_1`` is the peak of one isolated atom of the reference element (the heaviest element
of the references, Au) rendered with the same settings, so x counts "Au atoms in the
column" (a Pd atom counts as (46/79)^n of one). c1 carries the units of the multislice
image (fraction of the beam per Au atom); the shape of the correction is c2/c1, c3/c1.
β (Å² per atom) is chosen on a grid by the training residual.

Usage (after make_references.py)::

    OMP_NUM_THREADS=1 python validation/column_correction.py
        -> validation/results/column_correction.json and column_correction.md

Fitted on the training references ``score.TRAIN`` (each cluster once, in one of its two
orientations); 1 - R² (with the fitted absolute scale) and Pearson r are reported before /
after on the held-out ones, with a leave-one-out check and the polynomial degree.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import score

BETA_GRID = (0.0, 0.001, 0.002, 0.003, 0.004, 0.005, 0.006, 0.008)


# ---------------------------------------------------------------------------- helpers
def apply(x: np.ndarray, coefficients) -> np.ndarray:
    """Σ_k c_k x^k, k = 1..len(coefficients) (the ``pixel`` correction)."""
    x = np.asarray(x, dtype=np.float64)
    return sum(c * x ** (k + 1) for k, c in enumerate(coefficients))


def lstsq(basis: list[list[np.ndarray]], ys: list[np.ndarray]) -> np.ndarray:
    """Coefficients of y ≈ Σ_k c_k basis_k over every pixel of every image."""
    a = np.concatenate([np.stack([b.ravel() for b in bs], axis=1) for bs in basis])
    y = np.concatenate([np.ravel(v) for v in ys])
    coef, *_ = np.linalg.lstsq(a, y, rcond=None)
    return coef


def combine(basis: list[np.ndarray], coef) -> np.ndarray:
    return sum(c * b for c, b in zip(coef, basis))


def one_minus_r2(pred: np.ndarray, y: np.ndarray) -> float:
    y = np.ravel(y)
    return float(np.sum((np.ravel(pred) - y) ** 2) / np.sum((y - y.mean()) ** 2))


def monotone_up_to(coef, x_max: float) -> bool:
    xs = np.linspace(0, x_max, 2001)
    return bool(np.all(np.diff(apply(xs, coef)) >= 0))


# ---------------------------------------------------------------------------- per atom
def atom_model(ref: dict, base: dict) -> dict:
    """The convolution image of ``ref`` split into atoms, in float64.

    Every atom's probe components (amplitudes with Z**n and the thermal smearing, widths in
    Å) come from the package's own :class:`~xyz2image_gpu.Renderer` (``_frame_data``);
    the pixel coordinates follow ``framing="fixed"`` (projected bounding-box centre at
    pixel (E - 1) / 2, axis 0 = x). ``atom_image`` of it equals the package's float image
    to 2e-6 of the maximum.
    """
    from xyz2image_gpu import Renderer, RenderSettings
    from xyz2image_gpu.structures import as_structure

    edge = ref["image"].shape[0]
    pos = np.asarray(ref["positions"], dtype=np.float64)
    rs = RenderSettings(edgesize=edge, framing="fixed", pixel_size=ref["pixel_size"],
                        normalization="float", **base)
    renderer = Renderer(rs, ["gaussian_2d"], device="cpu", threads=1)
    frame = renderer._frame_data(as_structure(pos, numbers=ref["numbers"], name="x"))[0]
    renderer.close()
    centre = (pos.min(axis=0) + pos.max(axis=0)) / 2
    coords = (pos[:, :2] - centre[:2]) / ref["pixel_size"] + (edge - 1) / 2
    return {"coords": coords, "amps": np.asarray(frame.amplitudes, dtype=np.float64),
            "sigmas_px": np.asarray(frame.sigmas, dtype=np.float64) / ref["pixel_size"],
            "edge": edge, "pixel_size": ref["pixel_size"]}


def atom_image(model: dict, factors=None, broadening=None) -> np.ndarray:
    """Σ_i factor_i Σ_g a_ig G(r - r_i; sqrt(σ_ig² + broadening_i)) (float64).

    ``broadening`` (N,) Å² is added to every component's variance keeping its integral.
    """
    grid = np.arange(model["edge"], dtype=np.float64)
    amps = model["amps"] * (1.0 if factors is None else np.asarray(factors)[:, None])
    sig2 = model["sigmas_px"] ** 2
    if broadening is not None:
        wide = sig2 + np.asarray(broadening)[:, None] / model["pixel_size"] ** 2
        amps = amps * sig2 / wide
        sig2 = wide
    img = np.zeros((model["edge"], model["edge"]))
    for g in range(amps.shape[1]):
        s = np.sqrt(sig2[:, g])[:, None]
        gx = np.exp(-0.5 * ((grid[None, :] - model["coords"][:, :1]) / s) ** 2)
        gy = np.exp(-0.5 * ((grid[None, :] - model["coords"][:, 1:]) / s) ** 2)
        img += (gx * amps[:, g][:, None]).T @ gy
    return img


def column_occupancy(model: dict, peak: float) -> np.ndarray:
    """x_i: the convolution image at atom i's own position / one reference atom's peak."""
    c = model["coords"]
    d2 = ((c[:, None, :] - c[None, :, :]) ** 2).sum(-1)  # (N, N) px²
    val = np.zeros(len(c))
    for g in range(model["amps"].shape[1]):
        s2 = model["sigmas_px"][:, g] ** 2
        val += (model["amps"][None, :, g] * np.exp(-0.5 * d2 / s2[None, :])).sum(axis=1)
    return val / peak


# ---------------------------------------------------------------------------- data
def prepare(refs: list[dict], base: dict) -> dict:
    """Per reference: aligned normalised convolution image x, multislice y, atom model."""
    element = int(max(int(ref["numbers"].max()) for ref in refs))
    data = {}
    for ref in refs:
        model = score.render_convolution(ref, **base)
        shift, r, shifted = score.align(model, ref["image"])
        peak = score.single_atom_peak(element, ref["pixel_size"], **base)
        atoms = atom_model(ref, base)
        data[ref["name"]] = {
            "x": shifted / peak, "y": ref["image"], "shift": shift, "r": r,
            "atoms": atoms, "x_atoms": column_occupancy(atoms, peak), "peak": peak,
        }
    return {"element": element, "names": [ref["name"] for ref in refs], "refs": data}


def pixel_basis(d: dict, degree: int) -> list[np.ndarray]:
    return [d["x"] ** k for k in range(1, degree + 1)]


def atom_basis(d: dict, degree: int, beta: float) -> list[np.ndarray]:
    """[Σ_i x_i^k (atom i)] for k < degree, aligned, in units of one reference atom."""
    x = d["x_atoms"]
    broad = beta * np.clip(x - 1.0, 0.0, None) if beta else None
    return [score.fourier_shift(atom_image(d["atoms"], x**k, broad), d["shift"]) / d["peak"]
            for k in range(degree)]


def evaluate(data: dict, method: str, degree: int, train, beta: float = 0.0) -> dict:
    names, refs = data["names"], data["refs"]
    train = [n for n in names if n in train]

    def basis(n, deg=degree):
        if method == "pixel":
            return pixel_basis(refs[n], deg)
        return atom_basis(refs[n], deg, beta)

    bases = {n: basis(n) for n in names}
    coef = lstsq([bases[n] for n in train], [refs[n]["y"] for n in train])
    lin = lstsq([[refs[n]["x"]] for n in train], [refs[n]["y"] for n in train])
    per = {}
    for n in names:
        x, y = refs[n]["x"], refs[n]["y"]
        pred = combine(bases[n], coef)
        per[n] = {
            "held_out": n not in train,
            "r_before": score.pearson_r(x, y),
            "r_after": score.pearson_r(pred, y),
            "one_minus_R2_linear": one_minus_r2(lin[0] * x, y),
            "one_minus_R2_after": one_minus_r2(pred, y),
            "x_max": float(x.max()),
        }
    train_sse = float(sum(np.sum((combine(bases[n], coef) - refs[n]["y"]) ** 2)
                          for n in train))
    return {"method": method, "degree": degree, "beta_A2": beta, "train": train,
            "coefficients": [float(c) for c in coef],
            "relative": [float(c / coef[0]) for c in coef],
            "linear": [float(lin[0])], "train_sse": train_sse, "per_reference": per}


def summary(res: dict) -> dict:
    held = [v for v in res["per_reference"].values() if v["held_out"]]
    keys = ("r_before", "r_after", "one_minus_R2_linear", "one_minus_R2_after")
    return {k: float(np.mean([v[k] for v in held])) for k in keys} if held else {}


def fit_method(data: dict, method: str, degree: int, train) -> dict:
    """Fit on ``train``; for ``atom`` pick β by the training residual."""
    if method == "pixel":
        res = evaluate(data, "pixel", degree, train)
    else:
        trials = [evaluate(data, "atom", degree, train, beta) for beta in BETA_GRID]
        res = min(trials, key=lambda t: t["train_sse"])
        res["beta_scan"] = {str(t["beta_A2"]): t["train_sse"] for t in trials}
    res["held_out_mean"] = summary(res)
    return res


def leave_one_out(data: dict, method: str, degree: int, beta: float) -> dict:
    out = {}
    for n in data["names"]:
        others = [m for m in data["names"] if m != n]
        res = evaluate(data, method, degree, others, beta)
        out[n] = {k: res["per_reference"][n][k] for k in
                  ("r_before", "r_after", "one_minus_R2_linear", "one_minus_R2_after")}
    mean = {k: float(np.mean([v[k] for v in out.values()])) for k in next(iter(out.values()))}
    return {"per_reference": out, "mean": mean}


#: Degrees used by score.py: the brief's cubic for ``pixel``; for ``atom`` the quadratic
#: weight factor (c1 + c2 x_i), which beats the cubic both on the held-out references and
#: in leave-one-out (see column_correction.md).
DEGREES = {"pixel": 3, "atom": 2}


def fit_and_evaluate(refs: list[dict], base: dict, train=score.TRAIN, data=None) -> dict:
    """Both corrections at the degrees of :data:`DEGREES`, fitted on ``train``."""
    data = data or prepare(refs, base)
    return {m: fit_method(data, m, DEGREES[m], train) for m in ("pixel", "atom")}


# ---------------------------------------------------------------------------- main
def main() -> int:
    refs = score.load_references()
    if not refs:
        print("no references")
        return 1
    base = score.case_settings()["c_optics"]
    data = prepare(refs, base)
    results: dict = {"base_settings": base, "reference_element": data["element"],
                     "train": [n for n in data["names"] if n in score.TRAIN], "fits": {}}
    for method in ("pixel", "atom"):
        for degree in (1, 2, 3):
            res = fit_method(data, method, degree, score.TRAIN)
            res["leave_one_out"] = leave_one_out(data, method, degree, res["beta_A2"])
            everything = evaluate(data, method, degree, data["names"], res["beta_A2"])
            res["coefficients_all_references"] = everything["coefficients"]
            res["relative_all_references"] = everything["relative"]
            if method == "pixel":
                x_max = max(v["x"].max() for v in data["refs"].values())
                res["monotone_on_data_range"] = monotone_up_to(res["coefficients"], x_max)
            results["fits"][f"{method}_deg{degree}"] = res
    results["usage"] = {
        "pixel": "x = I_float / (peak of one isolated reference_element atom, same settings);"
                 " I = sum_k c_k x**k",
        "atom": "x_i = I_float at atom i / that peak; weight_i *= (c1 + c2 x_i + c3 x_i**2)"
                " / c1; sigma_ig**2 += beta * max(x_i - 1, 0) (Å², integral kept)",
    }
    score.RESULTS.mkdir(exist_ok=True)
    (score.RESULTS / "column_correction.json").write_text(json.dumps(results, indent=1))
    md = markdown(results)
    (score.RESULTS / "column_correction.md").write_text(md)
    print(md)
    return 0


def markdown(results: dict) -> str:
    lines = ["# Column corrections fitted to multislice", "",
             f"Base (case c): `{json.dumps(results['base_settings'])}`; x in units of one "
             f"isolated Z = {results['reference_element']} atom's peak. Training references: "
             + ", ".join(results["train"]) + "; the other four are held out.", "",
             ("| fit | β (Å²/atom) | held-out r before | held-out r after | "
             "held-out 1-R² (linear, global scale) | held-out 1-R² after | "
             "leave-one-out r after | leave-one-out 1-R² after | c_k / c_1 (training) |"),
             "|---|---|---|---|---|---|---|---|---|"]
    for key, res in results["fits"].items():
        h, loo = res["held_out_mean"], res["leave_one_out"]["mean"]
        lines.append(
            f"| {key} | {res['beta_A2']:.3f} | {h['r_before']:.4f} | {h['r_after']:.4f} | "
            f"{h['one_minus_R2_linear']:.4f} | {h['one_minus_R2_after']:.4f} | "
            f"{loo['r_after']:.4f} | {loo['one_minus_R2_after']:.4f} | "
            + ", ".join(f"{c:.4g}" for c in res["relative"]) + " |")
    for key in ("pixel_deg3", "atom_deg2", "atom_deg3"):
        res = results["fits"][key]
        lines += ["", f"Per reference, `{key}`:", "",
                  ("| reference | held out | r before | r after | 1-R² linear | 1-R² after |"
                  " x max |"), "|---|---|---|---|---|---|---|"]
        for n, v in res["per_reference"].items():
            lines.append(f"| {n} | {'yes' if v['held_out'] else ''} | {v['r_before']:.4f} | "
                         f"{v['r_after']:.4f} | {v['one_minus_R2_linear']:.4f} | "
                         f"{v['one_minus_R2_after']:.4f} | {v['x_max']:.2f} |")
        lines.append("")
        lines.append("Coefficients (training): " + ", ".join(
            f"{c:.5g}" for c in res["coefficients"]) + "; on all references: " + ", ".join(
            f"{c:.5g}" for c in res["coefficients_all_references"]) + " (relative "
            + ", ".join(f"{c:.4g}" for c in res["relative_all_references"]) + ").")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
