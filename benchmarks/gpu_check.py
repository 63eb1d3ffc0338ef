"""One command for a machine with an NVIDIA GPU: tests, CPU/GPU parity, GPU benchmark.

``make gpu-check`` (``python benchmarks/gpu_check.py``) runs, offline and in about 5 minutes
(budget: 8):

1. ``python -m pytest -q -rs``: every test with a ``device`` parameter runs on CuPy too
   (``tests/conftest.py``); pass/fail/skip counts, overall and for the GPU cases;
2. parity: the same structures and settings rendered with ``device="cpu"`` (the NumPy
   kernel, ``cpu_kernel="numpy"``) and ``device="gpu"``: largest grey-level difference of
   gaussian_2d / gaussian_3d, equality of coordinates_3d, delta_* and binary_*;
3. the GPU benchmark subset of ``run_all.py``: render-only images/s on CuPy (gaussian_2d at
   64/128/256 px over 55-5,000 atoms, gaussian_3d and binary_3d at 64/80 px), the NumPy
   backend (and compiled kernel) on the same machine in the same run for the ratio, the
   seed baseline, the zlib floor, and the CLI end to end on the GPU (and CPU).

Writes ``gpu_check_<machine>_<date>.json`` and ``.txt`` (a readable summary) to ``--out``
(default ``benchmarks/results/``). Exit status: 0 all good; 1 a test or a parity check
failed; 2 no usable GPU (``--allow-no-gpu`` runs the rest as a dry run instead: tests on
the CPU, parity of the NumPy path against the compiled CPU kernel, a tiny CPU benchmark).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
from common import fmt_rate

from xyz2image_gpu import Renderer, RenderSettings
from xyz2image_gpu.backend import FORCE_CPU_ENV, cupy_status, gpu_available
from xyz2image_gpu.flags import force_cpu
from xyz2image_gpu.pipeline.kernels import compiled_kernel_available

__all__ = ["ParityCase", "main", "run_parity", "run_tests"]

BUDGET_S = 480.0
EXIT_OK, EXIT_FAILED, EXIT_NO_GPU = 0, 1, 2


# ---------------------------------------------------------------------------- tests
def _junit_counts(path: Path) -> dict[str, Any]:
    """Outcome counts from a pytest JUnit XML report, overall and for GPU test ids."""
    total: Counter[str] = Counter()
    gpu: Counter[str] = Counter()
    failed: list[str] = []
    for case in ET.parse(path).getroot().iter("testcase"):
        tags = {child.tag for child in case}
        outcome = ("failed" if "failure" in tags else "error" if "error" in tags
                   else "skipped" if "skipped" in tags else "passed")
        name = case.get("name", "")
        total[outcome] += 1
        if re.search(r"gpu", name, re.IGNORECASE):
            gpu[outcome] += 1
        if outcome in ("failed", "error"):
            failed.append(f"{case.get('classname', '')}::{name}")
    return {"all": dict(total), "gpu": dict(gpu), "failed_tests": failed}


def run_tests(timeout: float) -> dict[str, Any]:
    """``python -m pytest -q -rs`` in the repository; counts, skip reasons and the tail."""
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        xml = Path(tmp) / "junit.xml"
        cmd = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
               f"--junitxml={xml}"]
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, cwd=common.REPO_ROOT, capture_output=True, text=True,
                                  timeout=timeout, check=False)
            out, rc = proc.stdout + proc.stderr, proc.returncode
        except subprocess.TimeoutExpired as exc:
            out = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (
                exc.stdout or "")
            out += f"\n[gpu_check] pytest killed after {timeout:.0f} s"
            rc = -9
        wall = time.perf_counter() - t0
        counts = _junit_counts(xml) if xml.exists() else {"all": {}, "gpu": {},
                                                             "failed_tests": []}
    lines = out.strip().splitlines()
    summary = next((ln for ln in reversed(lines) if re.search(r"\d+ (passed|failed|error)", ln)),
                   lines[-1] if lines else "")
    skips = [ln for ln in lines if ln.startswith("SKIPPED")]
    return {"command": " ".join(cmd[1:]), "returncode": rc, "wall_s": wall, **counts,
            "summary_line": summary.strip("= "), "skip_reasons": skips[:40],
            "output_tail": "\n".join(lines[-60:]), "ok": rc == 0}


# ---------------------------------------------------------------------------- parity
@dataclass(frozen=True)
class ParityCase:
    """One parity comparison: a structure, settings and outputs."""

    name: str
    structure: str  # "au147", "aupd147", "pt309", "au1415"
    outputs: tuple[str, ...]
    n_rotation: int
    settings: dict[str, Any] = field(default_factory=dict)


PARITY_CASES = (
    ParityCase("2d labels + image, 128 px", "au147",
               ("coordinates_3d", "delta_2d", "gaussian_2d", "binary_2d"), 64),
    ParityCase("3d outputs, 64 px", "au147",
               ("coordinates_3d", "delta_3d", "gaussian_3d", "binary_3d"), 16, {"edgesize": 64}),
    ParityCase("core-shell, Z^1.7, 16 bit", "aupd147", ("gaussian_2d", "coordinates_3d"), 64,
               {"z_exponent": 1.7, "bitrate": 16}),
    ParityCase("float normalisation, structure framing", "pt309", ("gaussian_2d",), 32,
               {"normalization": "float", "framing": "structure"}),
    ParityCase("legacy (seed) mode, 80 px", "pt309", ("gaussian_2d", "delta_3d"), 16,
               {"legacy": True, "edgesize": 80}),
    ParityCase("1415 atoms, 128 px", "au1415", ("gaussian_2d", "coordinates_3d"), 32),
)
#: Label outputs compared for equality; a few rounding-boundary flips (an atom exactly
#: between two voxels, a voxel exactly on a sphere) are reported as a warning.
LABELS = ("coordinates_3d", "delta_3d", "delta_2d", "binary_3d", "binary_2d")
LABEL_FLIP_TOLERANCE = 1e-4  # fraction of atoms / voxels


def _parity_structures() -> dict[str, Any]:
    from xyz2image_gpu import as_structure
    from xyz2image_gpu.structures.examples import bundled_examples

    files = {p.stem: p for p in bundled_examples()}
    return {
        "au147": common.au_cluster(147)[0],
        "aupd147": as_structure(files["aupd147_core_shell"]),
        "pt309": as_structure(files["pt309_icosahedron"]),
        "au1415": common.au_cluster(1415)[0],
    }


def _compare(name: str, ref: np.ndarray, test: np.ndarray, settings: RenderSettings
             ) -> dict[str, Any]:
    """Differences of one output between the reference and the tested backend."""
    out: dict[str, Any] = {"output": name, "shape": list(ref.shape), "dtype": str(ref.dtype)}
    if ref.shape != test.shape or ref.dtype != test.dtype:
        out.update(ok=False, detail=f"shape/dtype {test.shape} {test.dtype} differ")
        return out
    if name.startswith("gaussian"):
        if ref.dtype.kind == "f":
            scale = float(np.abs(ref).max()) or 1.0
            diff = float(np.abs(ref.astype(np.float64) - test).max()) / scale
            out.update(max_rel_diff=diff, ok=diff <= 1e-4, detail=f"max rel diff {diff:.2e}")
        else:
            d = np.abs(ref.astype(np.int64) - test.astype(np.int64))
            tol = 1 if settings.bitrate == 8 else 2
            out.update(max_grey_diff=int(d.max()), frac_pixels_diff=float((d > 0).mean()),
                       ok=int(d.max()) <= tol,
                       detail=f"max {int(d.max())} grey levels (tolerance {tol}), "
                              f"{(d > 0).mean():.2%} of pixels differ")
        return out
    if name == "coordinates_3d":
        d = np.abs(ref.astype(np.int64) - test.astype(np.int64)).max(axis=-1)
        n_diff = int((d > 0).sum())
        frac = n_diff / max(1, d.size)
        out.update(equal=n_diff == 0, n_diff=n_diff, max_diff=int(d.max()),
                   ok=int(d.max()) <= 1 and frac <= LABEL_FLIP_TOLERANCE,
                   detail="equal" if n_diff == 0 else
                   f"{n_diff} of {d.size} atoms differ, by <= {int(d.max())} voxel")
        return out
    n_diff = int((ref != test).sum())
    frac = n_diff / max(1, ref.size)
    out.update(equal=n_diff == 0, n_diff=n_diff, ok=frac <= LABEL_FLIP_TOLERANCE,
               detail="equal" if n_diff == 0 else f"{n_diff} of {ref.size} voxels differ")
    return out


def run_parity(test_device: str, test_kernel: str, cases: tuple[ParityCase, ...] = PARITY_CASES
               ) -> dict[str, Any]:
    """Render every case on the CPU (NumPy kernel) and on ``test_device``; compare."""
    structures = _parity_structures()
    results = []
    for case in cases:
        settings = RenderSettings(**case.settings)
        s = structures[case.structure]
        rendered = []
        for device, kernel in (("cpu", "numpy"), (test_device, test_kernel)):
            r = Renderer(settings, case.outputs, device, cpu_kernel=kernel)
            try:
                rendered.append(r.render(s, case.n_rotation, seed=7))
            finally:
                r.close()
        ref, test = rendered
        rows = [_compare(name, ref[name], test[name], settings) for name in case.outputs]
        rot_equal = bool(np.array_equal(ref["rotations"], test["rotations"]))
        results.append({"case": case.name, "structure": case.structure,
                        "n_atoms": s.max_atoms, "n_rotation": case.n_rotation,
                        "settings": settings.to_dict(), "rotations_equal": rot_equal,
                        "outputs": rows, "ok": rot_equal and all(r["ok"] for r in rows)})
    return {"reference": "cpu/numpy", "tested": f"{test_device}/{test_kernel}",
            "cases": results, "ok": all(c["ok"] for c in results)}


# ---------------------------------------------------------------------------- benchmark
def run_benchmark(dry_run: bool) -> dict[str, Any]:
    """The GPU subset of run_all (CuPy, then NumPy on the same machine), and the CLI."""
    import bench_cli
    import run_all

    structures_sizes = (55, 147, 561, 1415, 5000)
    if dry_run:
        gpu_preset = cpu_preset = run_all.PRESETS["smoke"]
        backends_gpu: list[run_all.Backend] = []
        cli_preset, devices = "smoke", ["cpu"]
    else:
        gpu_preset = run_all.PRESETS["quick"]
        cpu_preset = run_all.Preset("gpu_check_cpu", (147, 1415), (128,), (147,), (80,),
                                    (147,), target_s=0.3, repeats=3, start=8, cli="quick")
        backends_gpu = [run_all.Backend("gpu", "cupy")]
        cli_preset, devices = "quick", ["gpu", "cpu"]
    backends_cpu = [run_all.Backend("cpu", "numpy")]
    if compiled_kernel_available():
        backends_cpu.insert(0, run_all.Backend("cpu", "compiled"))
    sizes = set(gpu_preset.sizes_2d) | set(gpu_preset.sizes_3d) | set(cpu_preset.sizes_2d)
    sizes |= set(cpu_preset.sizes_3d) | set(cpu_preset.seed_sizes_2d)
    structures = {n: common.au_cluster(n)[0] for n in sorted(sizes)}
    results: dict[str, Any] = {"render": [], "seed": [], "zlib_floor": [],
                               "machine": common.machine_info(),
                               "presets": {"gpu": gpu_preset.name, "cpu": cpu_preset.name},
                               "sizes_available": list(structures_sizes)}
    run_all.run_render(cpu_preset, backends_cpu, structures, results, with_seed=True)
    if backends_gpu:
        run_all.run_render(gpu_preset, backends_gpu, structures, results, with_seed=False)
    run_all.run_floor(cpu_preset, structures, results)
    results["cli"] = bench_cli.run_benchmarks(cli_preset, devices=devices, run_seed=True)
    results["headline"] = run_all._headline(results)
    # GPU over NumPy on the same machine, point by point
    cpu = {(r["output"], r["edgesize"], r["n_atoms"]): r["images_per_s"]
           for r in results["render"] if r["backend"] == "cpu/numpy"}
    for r in results["render"]:
        base = cpu.get((r["output"], r["edgesize"], r["n_atoms"]))
        if r["device"] == "gpu" and base:
            r["vs_cpu_numpy"] = r["images_per_s"] / base
    return results


# ---------------------------------------------------------------------------- report
def _text_report(report: dict[str, Any]) -> str:
    m = report["machine"]
    gpu = m["gpu"]["name"] if m.get("gpu") else "no GPU"
    lines = [f"xyz2image-gpu gpu_check, {report['date']}: {report['verdict']}",
             (f"machine: {gpu}; {m['cpu_model']}, {m['logical_cores']} cores, "
              f"{m.get('memory_gib')} GiB; numpy {m['numpy']}, cupy {m.get('cupy')}"),
             f"GPU status: {report['gpu_reason']}", ""]
    t = report.get("tests")
    if t:
        lines += [f"tests: {t['summary_line']} ({t['wall_s']:.0f} s, exit {t['returncode']})",
                  f"  all: {t['all']}", f"  GPU test ids: {t['gpu']}"]
        lines += [f"  FAILED {name}" for name in t["failed_tests"][:30]]
        lines += [f"  {s}" for s in t["skip_reasons"][:10]]
        lines.append("")
    p = report.get("parity")
    if p:
        lines.append(f"parity: {p['tested']} against {p['reference']}: "
                     f"{'ok' if p['ok'] else 'FAILED'}")
        for c in p["cases"]:
            lines.append(f"  [{'ok' if c['ok'] else 'FAIL'}] {c['case']} ({c['structure']}, "
                         f"{c['n_rotation']} rotations)")
            lines += [f"      {r['output']:15s} {r['detail']}" for r in c["outputs"]]
        lines.append("")
    b = report
    if "render" in b:
        lines.append("render-only images/s (median):")
        lines.append(f"  {'backend':14s} {'output':12s} {'edge':>4s} {'atoms':>5s} "
                     f"{'images/s':>11s} {'vs seed':>8s} {'vs numpy':>8s}")
        for r in b["render"]:
            vs = f"{r['vs_seed']:.1f}x" if r.get("vs_seed") else "-"
            vn = f"{r['vs_cpu_numpy']:.1f}x" if r.get("vs_cpu_numpy") else "-"
            lines.append(f"  {r['backend']:14s} {r['output']:12s} {r['edgesize']:4d} "
                         f"{r['n_atoms']:5d} {fmt_rate(r['images_per_s']):>11s} {vs:>8s} "
                         f"{vn:>8s}")
        for r in b["seed"]:
            lines.append(f"  {'seed':14s} {r['output']:12s} {r['edgesize']:4d} "
                         f"{r['n_atoms']:5d} {fmt_rate(r['images_per_s']):>11s}")
        for r in b["zlib_floor"]:
            lines.append(f"  zlib level 6 floor {r['output']} {r['edgesize']} px: "
                         f"{fmt_rate(r['single_thread_images_per_s'])} images/s one thread, "
                         f"{fmt_rate(r['all_cores_images_per_s'])} on {r['threads']} threads")
        lines += [f"  {s}" for s in b.get("cli", {}).get("summary", [])]
        lines.append("")
    lines += [f"note: {n}" for n in report.get("notes", [])]
    lines.append(f"elapsed: {report['elapsed_s']:.0f} s")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=common.RESULTS_DIR,
                        help="folder of gpu_check_<machine>_<date>.json/.txt")
    parser.add_argument("--allow-no-gpu", action="store_true",
                        help="without a GPU, run a dry run on the CPU instead of exiting 2")
    parser.add_argument("--skip-tests", action="store_true", help="do not run pytest")
    parser.add_argument("--skip-bench", action="store_true", help="do not run the benchmark")
    parser.add_argument("--test-timeout", type=float, default=240.0,
                        help="seconds before pytest is stopped")
    args = parser.parse_args(argv)

    t0 = time.perf_counter()
    has_gpu = gpu_available()
    reason = cupy_status()[1]
    if force_cpu():
        reason = f"{FORCE_CPU_ENV} is set; unset it to use the GPU ({reason})"
    report: dict[str, Any] = {"benchmark": "gpu_check", "date": common.today(),
                              "machine": common.machine_info(), "gpu_reason": reason,
                              "dry_run": not has_gpu, "notes": []}
    print(f"GPU: {reason}", flush=True)
    if not has_gpu:
        msg = ("no usable NVIDIA GPU: " + reason + ". Install CuPy for your CUDA version "
               "(see benchmarks/README.md, 'Offline GPU machine') and check nvidia-smi.")
        if not args.allow_no_gpu:
            print(f"gpu_check: {msg}\nRun with --allow-no-gpu for a CPU-only dry run.",
                  file=sys.stderr)
            return EXIT_NO_GPU
        print(f"dry run ({msg})", flush=True)
        report["notes"].append("dry run without a GPU: tests on the CPU, parity of the "
                               "compiled CPU kernel against NumPy, tiny CPU benchmark")

    status = EXIT_OK
    if not args.skip_tests:
        print("\n== pytest", flush=True)
        tests = run_tests(args.test_timeout)
        report["tests"] = tests
        print(f"{tests['summary_line']}  (all: {tests['all']}; GPU ids: {tests['gpu']})",
              flush=True)
        if not tests["ok"]:
            status = EXIT_FAILED
            print(tests["output_tail"][-4000:], flush=True)

    print("\n== parity", flush=True)
    if has_gpu:
        parity = run_parity("gpu", "auto")
    elif compiled_kernel_available():
        parity = run_parity("cpu", "compiled")
    else:
        parity = {"tested": "none", "reference": "cpu/numpy", "cases": [], "ok": True,
                  "skipped": "no GPU and no compiled CPU kernel"}
    report["parity"] = parity
    for c in parity["cases"]:
        print(f"[{'ok' if c['ok'] else 'FAIL'}] {c['case']}: "
              + "; ".join(f"{r['output']} {r['detail']}" for r in c["outputs"]), flush=True)
    if not parity["ok"]:
        status = EXIT_FAILED

    if not args.skip_bench:
        remaining = BUDGET_S - (time.perf_counter() - t0)
        if remaining < 120 and has_gpu:
            report["notes"].append(f"benchmark reduced: {remaining:.0f} s of the budget left")
        bench = run_benchmark(dry_run=not has_gpu or remaining < 120)
        bench.pop("machine", None)
        report.update(bench)  # render / seed / zlib_floor at the top level, as run_all's

    report["elapsed_s"] = time.perf_counter() - t0
    report["verdict"] = ("OK" if status == EXIT_OK else "FAILED") + (
        " (dry run, no GPU)" if not has_gpu else "")
    slug = common.machine_slug(report["machine"])
    base = Path(args.out) / f"gpu_check_{slug}_{common.today()}"
    common.write_json(base.with_suffix(".json"), report)
    text = _text_report(report)
    base.with_suffix(".txt").write_text(text, encoding="utf-8")
    print("\n" + text)
    print(f"wrote {base}.json and {base}.txt ({report['elapsed_s']:.0f} s)")
    return status


if __name__ == "__main__":
    sys.exit(main())
