"""End-to-end benchmark: ``xyz2image-gpu render`` versus the seed script's approach.

Both run in a subprocess on the two 147-atom bundled examples (``au147_icosahedron.xyz``,
``aupd147_core_shell.xyz``) from the first byte read to the last byte written:

(a) ``gaussian_2d`` only, edgesize 128, 2048 rotations per file;
(b) the seed's default outputs ``coordinates_3d,delta_3d,gaussian_2d``, edgesize 80, 512
    rotations per file.

For each: images/s (median wall time of the whole command, Python start-up included) and
peak memory (RSS summed over the process tree, sampled every 50 ms with psutil); the same
for the seed's approach and the ratio; and the fraction of the CLI's wall time that
``zlib`` level 6 alone needs for the bytes the CLI wrote (the npz members' raw bytes, one
thread and all cores). Then the steady rate: the CLI again at four times the rotations,
(extra images) / (extra seconds), which cancels start-up, against zlib alone on all cores
for the same bytes. Then the CLI's peak memory for (b) at 8192 rotations of one file,
against the seed's memory at 8192 by formula (the seed is not run at 8192: tens of GB).

The seed's approach (``python bench_cli.py seed ...``) is rewritten here from the original
script's description: read with ASE, one image at a time (``rotate``/``euler_rotate`` with
uniform random angles, round to voxels, float64 delta arrays, SciPy ``gaussian_filter``,
scale to 255, ``astype``), whole stacks accumulated in Python lists, ``np.asarray`` and
``np.savez_compressed`` at the end, one input file per process in a ``multiprocessing``
Pool of one process per core.

Usage::

    python benchmarks/bench_cli.py [--quick | --smoke] [--device cpu|gpu] [--json PATH]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
from common import fmt_bytes, fmt_rate

__all__ = ["CASES", "CliCase", "compress_only", "main", "run_benchmarks",
           "seed_memory_estimate", "seed_process_file"]

SEED_DEFAULT_OUTPUTS = ("coordinates_3d", "delta_3d", "gaussian_2d")
EXAMPLE_FILES = ("au147_icosahedron.xyz", "aupd147_core_shell.xyz")


@dataclass(frozen=True)
class CliCase:
    """One end-to-end configuration."""

    name: str
    output_types: tuple[str, ...]
    edgesize: int
    n_rotation: int

    @property
    def label(self) -> str:
        return (f"({self.name}) {','.join(self.output_types)} E={self.edgesize} "
                f"x{self.n_rotation}")


@dataclass(frozen=True)
class CliPreset:
    cases: tuple[CliCase, ...]
    repeats: int  # timed runs of the CLI (median)
    seed_repeats: int  # timed runs of the seed approach
    peak_rotations: int  # 0: skip the large single-file peak-memory run
    long_factor: int = 4  # CLI also at this many times n_rotation, for the steady rate; 0: skip


CASES = (
    CliCase("a", ("gaussian_2d",), 128, 2048),
    CliCase("b", SEED_DEFAULT_OUTPUTS, 80, 512),
)
PRESETS = {
    "full": CliPreset(CASES, repeats=3, seed_repeats=3, peak_rotations=8192),
    "quick": CliPreset(CASES, repeats=3, seed_repeats=1, peak_rotations=8192),
    "smoke": CliPreset((CliCase("a", ("gaussian_2d",), 32, 16),
                        CliCase("b", SEED_DEFAULT_OUTPUTS, 16, 8)),
                       repeats=1, seed_repeats=1, peak_rotations=0, long_factor=2),
}
_SUMMARY_RE = re.compile(r"wrote (\d+) images .*?; ([\d.]+) s, ([\d.]+) images/s \((\w+), "
                         r"(\d+) workers?\)")


# ---------------------------------------------------------------------------- the seed
def seed_process_file(task: tuple[str, str, dict[str, Any]]) -> str:
    """The seed's work for one input file: every frame x rotation, then one .npz.

    ``task`` is ``(path, output_folder, params)``; params: ``edgesize``, ``n_rotation``,
    ``gauss_sigma``, ``padxyz``, ``bitrate``, ``output_types``, ``frameshift``,
    ``maxframes``. Runs in a Pool worker.
    """
    from random import uniform

    from ase.io import read
    from scipy.ndimage import gaussian_filter

    path, output_folder, p = task
    edge, wanted = p["edgesize"], set(p["output_types"])
    top = 2 ** p["bitrate"] - 1
    utype = f"uint{p['bitrate']}"
    frames = read(path, index=":")
    first = min(p["frameshift"], len(frames) - 1)
    frames = frames[first:min(p["frameshift"] + p["maxframes"], len(frames))]
    stacks: dict[str, list[np.ndarray]] = {k: [] for k in wanted}
    for atoms in frames:
        del atoms[atoms.numbers == 6]  # the seed drops a carbon support
        for rot in range(p["n_rotation"]):
            if rot == 0:
                atoms.rotate(90, "z")
            else:  # rotations accumulate on the same Atoms object, as in the seed
                atoms.euler_rotate(uniform(0, 360), uniform(0, 360), uniform(0, 360))
            xyz = atoms.get_positions()
            xyz -= xyz.min(axis=0)
            extent = xyz.max(axis=0)
            cube = extent.max()
            xyz += (cube - extent) / 2 + p["padxyz"]
            box = cube + 2 * p["padxyz"]
            sigma_px = p["gauss_sigma"] / (box / (edge - 1))
            vox = np.round(xyz / box * (edge - 1)).astype(int)
            # the seed builds both delta arrays, float64, for every image
            d3 = np.zeros((edge, edge, edge))
            d3[vox[:, 0], vox[:, 1], vox[:, 2]] = 1
            d2 = np.zeros((edge, edge))
            d2[vox[:, 0], vox[:, 1]] = 1
            if "coordinates_3d" in wanted:
                stacks["coordinates_3d"].append(vox)
            if "delta_3d" in wanted:
                stacks["delta_3d"].append(d3)
            if "delta_2d" in wanted:
                stacks["delta_2d"].append(d2)
            if "gaussian_2d" in wanted:
                g = gaussian_filter(d2, sigma_px)
                g /= g.max() / top
                stacks["gaussian_2d"].append(g.astype(utype))
            if "gaussian_3d" in wanted:
                g = gaussian_filter(d3, sigma_px)
                g /= g.max() / top
                stacks["gaussian_3d"].append(g.astype(utype))
    arrays: dict[str, np.ndarray] = {}
    for key in ("coordinates_3d", "delta_3d", "delta_2d", "gaussian_2d", "gaussian_3d"):
        if key in wanted:
            arrays[key] = np.asarray(stacks[key])
            if key.startswith("delta"):
                arrays[key] = arrays[key].astype(bool)
    stem = Path(path).stem
    folder = Path(output_folder) / stem
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{p['n_rotation'] * len(frames):08d}.npz"
    np.savez_compressed(target, **arrays)
    return str(target)


def seed_main(argv: list[str]) -> int:
    """``bench_cli.py seed FILES -o OUT ...``: the seed's approach over files (a Pool)."""
    import multiprocessing

    parser = argparse.ArgumentParser(prog="bench_cli.py seed")
    parser.add_argument("files", nargs="+")
    parser.add_argument("-o", "--output-folder", required=True)
    parser.add_argument("--edgesize", type=int, default=80)
    parser.add_argument("--n-rotation", type=int, default=1)
    parser.add_argument("--output-types", default=",".join(SEED_DEFAULT_OUTPUTS))
    parser.add_argument("--gauss-sigma", type=float, default=0.4)
    parser.add_argument("--padxyz", type=float, default=1.5)
    parser.add_argument("--bitrate", type=int, default=8)
    args = parser.parse_args(argv)
    params = {"edgesize": args.edgesize, "n_rotation": args.n_rotation,
              "gauss_sigma": args.gauss_sigma, "padxyz": args.padxyz,
              "bitrate": args.bitrate, "output_types": args.output_types.split(","),
              "frameshift": 0, "maxframes": 50}
    tasks = [(f, args.output_folder, params) for f in args.files]
    t0 = time.perf_counter()
    with multiprocessing.Pool(multiprocessing.cpu_count()) as pool:
        written = pool.map(seed_process_file, tasks)
    print(f"seed approach wrote {len(written)} files in {time.perf_counter() - t0:.2f} s")
    return 0


def seed_memory_estimate(n_images: int, edgesize: int, n_atoms: int,
                         output_types: tuple[str, ...] = SEED_DEFAULT_OUTPUTS,
                         bitrate: int = 8) -> dict[str, Any]:
    """Peak bytes the seed's approach needs for one file of ``n_images`` images.

    Every image's outputs are kept in lists; at the end ``np.asarray`` copies each list into
    one array (float64 for the deltas, then ``astype(bool)``) while the lists are still
    alive. For delta_3d: the list's float64 volumes (``8 E³`` each, but ``np.zeros`` pages
    that were never written are not resident, so between ~0 and ``8 E³``), the float64 copy
    (``8 E³``) and the bool copy (``E³``): between ``9 E³`` and ``17 E³`` bytes per image.
    Small outputs: int64 coordinates (``24 N`` twice), ``E²`` gaussian_2d twice.
    """
    e3, e2 = edgesize**3, edgesize**2
    per_lo = per_hi = 0
    if "delta_3d" in output_types:
        per_lo += 9 * e3
        per_hi += 17 * e3
    if "delta_2d" in output_types:
        per_lo += 9 * e2
        per_hi += 17 * e2
    if "coordinates_3d" in output_types:
        per_lo += 48 * n_atoms
        per_hi += 48 * n_atoms
    if "gaussian_2d" in output_types:
        per_lo += 2 * e2 * bitrate // 8
        per_hi += 2 * e2 * bitrate // 8
    if "gaussian_3d" in output_types:
        per_lo += 2 * e3 * bitrate // 8
        per_hi += 2 * e3 * bitrate // 8
    return {
        "n_images": n_images,
        "edgesize": edgesize,
        "n_atoms": n_atoms,
        "bytes_low": n_images * per_lo,
        "bytes_high": n_images * per_hi,
        "formula": "n x (9..17 E^3 [delta_3d: float64 list pages + float64 asarray copy + "
                   "bool] + 48 N [int64 coords, twice] + 2 E^2 [uint8 gaussian_2d, twice]) "
                   "per file process, plus the interpreter",
    }


# ---------------------------------------------------------------------------- helpers
def _example_files(folder: Path) -> list[Path]:
    from xyz2image_gpu.structures.examples import copy_examples

    copy_examples(folder, overwrite=True)
    return [folder / name for name in EXAMPLE_FILES]


def _cli_cmd(files: list[Path], case: CliCase, n_rotation: int, out: Path,
             device: str) -> list[str]:
    return common.cli_command() + [
        "render", *map(str, files), "--n-rotation", str(n_rotation),
        "--edgesize", str(case.edgesize), "--output-types", ",".join(case.output_types),
        "-o", str(out), "--device", device,
    ]


def _seed_cmd(files: list[Path], case: CliCase, out: Path) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "seed", *map(str, files),
            "-o", str(out), "--edgesize", str(case.edgesize), "--n-rotation",
            str(case.n_rotation), "--output-types", ",".join(case.output_types)]


def _timed_runs(make_cmd: Any, out_root: Path, repeats: int, env: dict[str, str],
                name: str) -> tuple[list[common.ProcessResult], Path]:
    """Run a command ``repeats`` times into fresh folders; return the results and the last
    output folder (kept for the compression measurement)."""
    runs = []
    out = out_root
    for k in range(repeats):
        out = out_root / f"{name}{k}"
        if k > 0:
            shutil.rmtree(out_root / f"{name}{k - 1}", ignore_errors=True)
        res = common.run_with_peak_memory(make_cmd(out), env=env, cwd=out_root)
        if res.returncode != 0:
            raise RuntimeError(f"{' '.join(res.cmd)} failed ({res.returncode}):\n"
                               f"{res.stderr[-3000:]}")
        runs.append(res)
    return runs, out


def _summarise(runs: list[common.ProcessResult], n_images: int) -> dict[str, Any]:
    walls = [r.wall_s for r in runs]
    med = statistics.median(walls)
    out: dict[str, Any] = {
        "n_images": n_images,
        "wall_s": walls,
        "median_wall_s": med,
        "images_per_s": n_images / med,
        "peak_rss_bytes": max(r.peak_rss_bytes for r in runs),
        "peak_rss_bytes_runs": [r.peak_rss_bytes for r in runs],
        "memory_samples": [r.samples for r in runs],
    }
    m = _SUMMARY_RE.search(runs[-1].stderr + runs[-1].stdout)
    if m:
        out["cli_reported"] = {"images": int(m[1]), "seconds": float(m[2]),
                               "images_per_s": float(m[3]), "backend": m[4],
                               "workers": int(m[5])}
    return out


def compress_only(folder: Path, threads: int | None = None,
                  chunk_bytes: int = 1 << 20) -> dict[str, Any]:
    """Seconds zlib level 6 alone takes for the raw bytes of every npz member under
    ``folder`` (one thread; and 1 MiB chunks on ``threads`` threads)."""
    threads = threads or os.cpu_count() or 1
    t_one = t_all = 0.0
    raw_total = 0
    members = 0
    with ThreadPoolExecutor(threads) as pool:
        for path in sorted(folder.rglob("*.npz")):
            with zipfile.ZipFile(path) as zf:
                for name in zf.namelist():
                    raw = zf.read(name)
                    raw_total += len(raw)
                    members += 1
                    t0 = time.perf_counter()
                    zlib.compress(raw, 6)
                    t_one += time.perf_counter() - t0
                    chunks = [raw[i:i + chunk_bytes] for i in range(0, len(raw), chunk_bytes)]
                    t0 = time.perf_counter()
                    list(pool.map(lambda b: zlib.compress(b, 6), chunks))
                    t_all += time.perf_counter() - t0
                    del raw, chunks
    return {"members": members, "raw_bytes": raw_total, "single_thread_s": t_one,
            "all_cores_s": t_all, "threads": threads}


def _steady_rate(files: list[Path], case: CliCase, device: str, cfg: CliPreset, tmp: Path,
                 env: dict[str, str], short: dict[str, Any]) -> dict[str, Any]:
    """The CLI's rate once started: the same case at ``long_factor`` times the rotations,
    and (extra images) / (extra seconds) against the short runs, which cancels the fixed
    cost of start-up, worker spawn and the last archive's assembly. Compared with zlib
    level 6 alone on all cores for the long run's bytes (the deflate floor the issue sets
    the CLI against: rendering and writing hidden behind compression)."""
    n_rot = case.n_rotation * cfg.long_factor
    runs, last = _timed_runs(
        lambda out: _cli_cmd(files, case, n_rot, out, device), tmp, cfg.repeats, env,
        f"cli_{case.name}_{device}_long_")
    long = _summarise(runs, n_rot * len(files))
    comp = compress_only(last)
    shutil.rmtree(last, ignore_errors=True)
    extra_images = long["n_images"] - short["n_images"]
    extra_s = long["median_wall_s"] - short["median_wall_s"]
    floor = long["n_images"] / comp["all_cores_s"]
    out = {"n_images": long["n_images"], "wall_s": long["wall_s"],
           "median_wall_s": long["median_wall_s"], "peak_rss_bytes": long["peak_rss_bytes"],
           "images_per_s": None, "fixed_s": None, "share_of_zlib_all_cores": None,
           "compress_only": comp, "zlib_all_cores_images_per_s": floor,
           "zlib_1_thread_images_per_s": long["n_images"] / comp["single_thread_s"]}
    if extra_s > 0.05 * long["median_wall_s"]:  # otherwise timing noise, not a rate
        rate = extra_images / extra_s
        out.update(images_per_s=rate, share_of_zlib_all_cores=rate / floor,
                   fixed_s=short["median_wall_s"] - short["n_images"] / rate)
    return out


# ---------------------------------------------------------------------------- main
def run_benchmarks(preset: str = "quick", devices: list[str] | None = None,
                   run_seed: bool = True, workdir: Path | None = None) -> dict[str, Any]:
    """Run the end-to-end cases on ``devices`` (default: ``cpu``) and the seed's approach.

    Returns a JSON-ready dict; prints a table as it goes.
    """
    import psutil

    cfg = PRESETS[preset]
    devices = devices or ["cpu"]
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    # the subprocesses import the same xyz2image_gpu as this process, installed or not
    import xyz2image_gpu

    pkg_parent = str(Path(xyz2image_gpu.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([pkg_parent] + [p for p in
                                         env.get("PYTHONPATH", "").split(os.pathsep) if p])
    results: dict[str, Any] = {"preset": preset, "devices": devices, "cases": [],
                               "summary": []}
    tmp_ctx = tempfile.TemporaryDirectory(prefix="xyz2image_cli_", dir=workdir)
    with tmp_ctx as tmp_name:
        tmp = Path(tmp_name)
        files = _example_files(tmp / "structures")
        n_atoms = 147
        print(f"\n== end-to-end CLI, 2 files x {n_atoms} atoms (wall time incl. start-up; "
              "peak RSS of the process tree)", flush=True)
        print(f"{'case':10s}  {'program':18s}  {'images':>6s}  {'images/s':>9s}  "
              f"{'median s':>8s}  {'peak RSS':>10s}  zlib-only share (1 thread / all cores)")
        for case in cfg.cases:
            n_images = case.n_rotation * len(files)
            record: dict[str, Any] = {"case": case.name, "label": case.label,
                                      "output_types": list(case.output_types),
                                      "edgesize": case.edgesize,
                                      "n_rotation": case.n_rotation, "n_files": len(files),
                                      "n_atoms": n_atoms, "cli": {}}
            for device in devices:
                runs, last = _timed_runs(
                    lambda out, d=device, c=case: _cli_cmd(files, c, c.n_rotation, out, d),
                    tmp, cfg.repeats, env, f"cli_{case.name}_{device}_")
                ours = _summarise(runs, n_images)
                comp = compress_only(last)
                ours["compress_only"] = comp
                ours["compress_fraction_1_thread"] = comp["single_thread_s"] / ours[
                    "median_wall_s"]
                ours["compress_fraction_all_cores"] = comp["all_cores_s"] / ours[
                    "median_wall_s"]
                shutil.rmtree(last, ignore_errors=True)
                if cfg.long_factor > 1:
                    ours["steady"] = _steady_rate(files, case, device, cfg, tmp, env, ours)
                record["cli"][device] = ours
                print(f"({case.name}) {case.edgesize:>3}px  {'xyz2image-gpu ' + device:18s}  "
                      f"{n_images:6d}  {fmt_rate(ours['images_per_s']):>9}  "
                      f"{ours['median_wall_s']:8.2f}  {fmt_bytes(ours['peak_rss_bytes']):>10}  "
                      f"{ours['compress_fraction_1_thread']:.0%} / "
                      f"{ours['compress_fraction_all_cores']:.0%}", flush=True)
            est = seed_memory_estimate(case.n_rotation, case.edgesize, n_atoms,
                                       case.output_types)
            procs = min(len(files), os.cpu_count() or 1)
            record["seed_memory_estimate"] = {**est, "processes": procs,
                                              "bytes_low_all": procs * est["bytes_low"],
                                              "bytes_high_all": procs * est["bytes_high"]}
            available = psutil.virtual_memory().available
            if run_seed and procs * est["bytes_high"] > 0.7 * available:
                record["seed"] = {"skipped": f"needs up to {fmt_bytes(procs * est['bytes_high'])}"
                                  f", {fmt_bytes(available)} available"}
                print(f"({case.name}) seed approach skipped: {record['seed']['skipped']}")
            elif run_seed:
                runs, last = _timed_runs(lambda out, c=case: _seed_cmd(files, c, out), tmp,
                                         cfg.seed_repeats, env, f"seed_{case.name}_")
                shutil.rmtree(last, ignore_errors=True)
                seed = _summarise(runs, n_images)
                seed["processes"] = procs
                record["seed"] = seed
                for device, ours in record["cli"].items():
                    ours["vs_seed_images_per_s"] = ours["images_per_s"] / seed["images_per_s"]
                    ours["seed_peak_over_ours"] = seed["peak_rss_bytes"] / ours[
                        "peak_rss_bytes"]
                print(f"({case.name}) {case.edgesize:>3}px  {'seed approach':18s}  "
                      f"{n_images:6d}  {fmt_rate(seed['images_per_s']):>9}  "
                      f"{seed['median_wall_s']:8.2f}  {fmt_bytes(seed['peak_rss_bytes']):>10}",
                      flush=True)
            for device, ours in record["cli"].items():
                st = ours.get("steady")
                if st and st["images_per_s"] is None:
                    print(f"({case.name}) steady state on {device}: not measurable, the "
                          f"{st['n_images']}-image run took about as long as the short one")
                elif st:
                    print(f"({case.name}) steady state on {device}: {st['n_images']} vs "
                          f"{n_images} images -> {fmt_rate(st['images_per_s'])} images/s "
                          f"beyond start-up ({st['fixed_s']:.2f} s); zlib alone on all "
                          f"cores: {fmt_rate(st['zlib_all_cores_images_per_s'])} images/s "
                          f"-> {st['share_of_zlib_all_cores']:.0%}", flush=True)
            results["cases"].append(record)
            for device, ours in record["cli"].items():
                line = (f"CLI {case.label} on {device}: "
                        f"{fmt_rate(ours['images_per_s'])} images/s, peak "
                        f"{fmt_bytes(ours['peak_rss_bytes'])}")
                seed = record.get("seed", {})
                if "images_per_s" in seed:
                    line += (f"; seed {fmt_rate(seed['images_per_s'])} images/s, peak "
                             f"{fmt_bytes(seed['peak_rss_bytes'])} -> "
                             f"{ours['vs_seed_images_per_s']:.1f}x faster, "
                             f"{ours['seed_peak_over_ours']:.1f}x less memory")
                line += (f"; zlib alone = {ours['compress_fraction_1_thread']:.0%} (1 thread) /"
                         f" {ours['compress_fraction_all_cores']:.0%} (all cores) of its time")
                if ours.get("steady") and ours["steady"]["images_per_s"] is not None:
                    st = ours["steady"]
                    line += (f"; steady state {fmt_rate(st['images_per_s'])} images/s = "
                             f"{st['share_of_zlib_all_cores']:.0%} of zlib alone on all cores")
                results["summary"].append(line)

        if cfg.peak_rotations:
            case = next(c for c in cfg.cases if c.name == "b")
            device = devices[0]
            n = cfg.peak_rotations
            out = tmp / "peak"
            cmd = _cli_cmd(files[:1], case, n, out, device)
            res = common.run_with_peak_memory(cmd, env=env, cwd=tmp)
            if res.returncode != 0:
                raise RuntimeError(f"peak run failed: {res.stderr[-3000:]}")
            shutil.rmtree(out, ignore_errors=True)
            est = seed_memory_estimate(n, case.edgesize, n_atoms, case.output_types)
            peak = {"n_rotation": n, "n_files": 1, "device": device,
                    "output_types": list(case.output_types), "edgesize": case.edgesize,
                    "wall_s": res.wall_s, "images_per_s": n / res.wall_s,
                    "peak_rss_bytes": res.peak_rss_bytes, "seed_estimate": est}
            # the seed measured at 512 rotations of 2 files: scale its per-image bytes
            b = next((r for r in results["cases"] if r["case"] == "b"), None)
            if b and "peak_rss_bytes" in b.get("seed", {}):
                per_image = b["seed"]["peak_rss_bytes"] / (b["n_rotation"] * b["n_files"])
                peak["seed_extrapolated_bytes"] = per_image * n
            results["peak_memory"] = peak
            line = (f"CLI peak memory, {','.join(case.output_types)} E={case.edgesize} x{n} "
                    f"(1 file, {device}): {fmt_bytes(res.peak_rss_bytes)} in "
                    f"{res.wall_s:.1f} s; seed by formula "
                    f"{fmt_bytes(est['bytes_low'])}-{fmt_bytes(est['bytes_high'])}")
            if "seed_extrapolated_bytes" in peak:
                line += (f", extrapolated from its measured 512-rotation peak "
                         f"{fmt_bytes(peak['seed_extrapolated_bytes'])}")
            print(line, flush=True)
            results["summary"].append(line)
    return results


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "seed":
        return seed_main(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="one seed run per case")
    mode.add_argument("--smoke", action="store_true", help="tiny sizes, seconds")
    parser.add_argument("--device", action="append", choices=("cpu", "gpu"),
                        help="device(s) of the CLI runs (default: cpu)")
    parser.add_argument("--no-seed", action="store_true", help="skip the seed's approach")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args(argv)
    preset = "smoke" if args.smoke else "quick" if args.quick else "full"
    results = run_benchmarks(preset, devices=args.device, run_seed=not args.no_seed)
    results["machine"] = common.machine_info()
    print()
    for line in results["summary"]:
        print(line)
    if args.json:
        common.write_json(args.json, results)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
