"""Benchmark: the output formats end to end, ``.npz`` (zlib 6 and 1) against the zarr store
(zstd 1, lz4), and each codec alone on all cores, in the same run.

End to end: ``xyz2image-gpu render`` in a subprocess on the two 147-atom bundled examples
(``au147_icosahedron.xyz``, ``aupd147_core_shell.xyz``), for

(a) ``gaussian_2d`` at edgesize 128 (the case where the writer is the limit);
(b) the original script's default outputs ``coordinates_3d,delta_3d,gaussian_2d`` at 80 px.

Per format: images/s as the CLI reports it (``run()``'s own wall time: planning, rendering,
compressing, writing, renaming; not Python's start-up), the whole command's wall time, and
bytes written per image (the .npz files, or the store's files). The formats of one case run
in turn within each repeat (so that a burst of other work on a shared machine hits them
alike); each figure is the median of the repeats.

Codec alone: the images of case (a) (read back from the run's .npz) compressed in memory on
a thread per core, as each format cuts them: zlib in 1 MiB chunks (the .npz writer's), zstd
and lz4 in 256-image chunks (the store's); and the zarr store's writer alone on the same
images (:class:`ZarrStackWriter`, its own threads) against zarr's own ``array[:] = images``
(zarr's asyncio codec pipeline and thread pool), both into a fresh folder. Ratios quoted:
zarr end to end / .npz end to end (zlib 6), and zarr end to end / its codec alone.

Usage::

    python benchmarks/bench_formats.py [--quick | --smoke] [--repeats N] [--json PATH]
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
import warnings
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
from common import fmt_bytes, fmt_rate

__all__ = ["main", "run_benchmarks"]

EXAMPLE_FILES = ("au147_icosahedron.xyz", "aupd147_core_shell.xyz")
_SUMMARY_RE = re.compile(r"wrote (\d+) images .*?; ([\d.]+) s, ([\d.]+) images/s")


@dataclass(frozen=True)
class Case:
    name: str
    output_types: tuple[str, ...]
    edgesize: int
    n_rotation: int  # per file


@dataclass(frozen=True)
class Format:
    name: str
    args: tuple[str, ...]


FORMATS = (
    Format("npz zlib 6", ("--format", "npz", "--compress-level", "6")),
    Format("npz zlib 1", ("--format", "npz", "--compress-level", "1")),
    Format("zarr zstd 1", ("--format", "zarr", "--codec", "zstd", "--compress-level", "1")),
    Format("zarr lz4", ("--format", "zarr", "--codec", "lz4")),
)

PRESETS: dict[str, tuple[tuple[Case, ...], int]] = {
    "full": ((Case("a", ("gaussian_2d",), 128, 8192),
              Case("b", ("coordinates_3d", "delta_3d", "gaussian_2d"), 80, 512)), 5),
    "quick": ((Case("a", ("gaussian_2d",), 128, 2048),
               Case("b", ("coordinates_3d", "delta_3d", "gaussian_2d"), 80, 256)), 3),
    "smoke": ((Case("a", ("gaussian_2d",), 32, 16),
               Case("b", ("coordinates_3d", "delta_3d", "gaussian_2d"), 24, 8)), 1),
}
CHUNK_IMAGES = 256
ZLIB_CHUNK = 1 << 20


def _folder_bytes(folder: Path, pattern: str) -> int:
    return sum(p.stat().st_size for p in folder.glob(pattern) if p.is_file())


def _run_cli(cmd: list[str], env: dict[str, str]) -> tuple[float, float, float]:
    """Run the CLI; return (its own images/s, wall seconds of the whole command, CPU
    seconds of the command and its children: user + system)."""
    import resource
    import subprocess

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    match = _SUMMARY_RE.search(proc.stderr)
    if match is None:
        raise RuntimeError(f"no summary line in the CLI's output:\n{proc.stderr[-2000:]}")
    return float(match.group(3)), wall, cpu


def _median_rate(fn: Callable[[], int], repeats: int) -> float:
    """Images/s of ``fn()`` (returns the images it processed): median of ``repeats`` runs
    after one warm-up."""
    fn()
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        n = fn()
        rates.append(n / (time.perf_counter() - start))
    return statistics.median(rates)


def render_pass(files: list[str], case: Case) -> Callable[[], int]:
    """A function that renders case ``case`` once (``Renderer.iter_batches``, host arrays, a
    thread per core), every file in turn, what the CLI renders before writing; returns the
    image count."""
    from xyz2image_gpu import Renderer, RenderSettings, as_structure
    from xyz2image_gpu.backend import available_cores

    renderer = Renderer(RenderSettings(edgesize=case.edgesize), case.output_types, "cpu",
                        threads=available_cores())
    structures = [as_structure(f) for f in files]

    def go() -> int:
        n = 0
        for structure in structures:
            for batch in renderer.iter_batches(structure, case.n_rotation):
                n += len(batch["rotations"])
        return n

    return go


def codec_passes(images: np.ndarray) -> dict[str, Callable[[], int]]:
    """Per codec, a function that compresses ``images`` once on a thread per core, cut as
    its format cuts them, and returns the image count (``.compressed``: the bytes out)."""
    import numcodecs

    from xyz2image_gpu.backend import available_cores

    cores = available_cores()
    n = len(images)
    raw = images.reshape(-1).view(np.uint8)
    chunks = [images[i:i + CHUNK_IMAGES] for i in range(0, n, CHUNK_IMAGES)]
    zlib_chunks = [raw[i:i + ZLIB_CHUNK] for i in range(0, raw.nbytes, ZLIB_CHUNK)]

    def on_pool(encode: Callable[[Any], bytes], parts: list[Any]) -> Callable[[], int]:
        def go() -> int:
            with ThreadPoolExecutor(cores) as pool:
                sizes = list(pool.map(lambda p: len(encode(p)), parts))
            go.compressed = sum(sizes)  # type: ignore[attr-defined]
            return n
        return go

    return {
        "zlib 6": on_pool(lambda p: zlib.compress(p, 6), zlib_chunks),
        "zlib 1": on_pool(lambda p: zlib.compress(p, 1), zlib_chunks),
        "zstd 1": on_pool(numcodecs.Zstd(level=1).encode, chunks),
        "lz4": on_pool(numcodecs.LZ4(acceleration=1).encode, chunks),
    }


def _timed_once(fn: Callable[[], int]) -> float:
    start = time.perf_counter()
    n = fn()
    return n / (time.perf_counter() - start)


def codec_alone(images: np.ndarray, repeats: int, workdir: Path) -> dict[str, Any]:
    """The codecs alone on a thread per core, and the zarr writers alone, on ``images``."""
    from xyz2image_gpu.backend import available_cores

    cores = available_cores()
    n = len(images)
    raw = images.reshape(-1).view(np.uint8)
    out: dict[str, Any] = {"n_images": n, "image_bytes": int(images[0].nbytes),
                           "threads": cores, "codecs": {}}
    for name, go in codec_passes(images).items():
        rate = _median_rate(go, repeats)
        out["codecs"][name] = {"images_per_s": rate,
                               "bytes_per_image": go.compressed / n,  # type: ignore[attr-defined]
                               "ratio": raw.nbytes / go.compressed}  # type: ignore[attr-defined]

    # the store's writer alone, against zarr's own write of the same array
    import zarr
    from zarr.codecs import ZstdCodec

    from xyz2image_gpu.output.zarr_store import ZarrStackWriter

    layout = {"gaussian_2d": (images.shape, images.dtype)}

    def ours() -> int:
        folder = workdir / "writer_ours"
        shutil.rmtree(folder, ignore_errors=True)
        with ZarrStackWriter(folder, "f", 0, layout, codec="zstd", level=1,
                             chunk_images=CHUNK_IMAGES, threads=cores) as writer:
            for i in range(0, n, 512):
                writer.append({"gaussian_2d": images[i:i + 512]})
        return n

    def zarrs() -> int:
        folder = workdir / "writer_zarr"
        shutil.rmtree(folder, ignore_errors=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            array = zarr.create_array(folder, shape=images.shape, dtype=images.dtype,
                                      chunks=(CHUNK_IMAGES, *images.shape[1:]),
                                      compressors=ZstdCodec(level=1), fill_value=0)
        array[:] = images
        return n

    out["writers"] = {"ZarrStackWriter (own threads)": _median_rate(ours, repeats),
                      "zarr array[:] = images (zarr's pipeline)": _median_rate(zarrs, repeats)}
    return out


def run_benchmarks(preset: str = "quick", repeats: int | None = None,
                   workdir: Path | None = None) -> dict[str, Any]:
    """Run every case and format; return a JSON-ready dict (and print tables)."""
    from xyz2image_gpu.structures.examples import copy_examples

    cases, default_repeats = PRESETS[preset]
    repeats = repeats or default_repeats
    env = dict(os.environ)
    import xyz2image_gpu

    pkg_parent = str(Path(xyz2image_gpu.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([pkg_parent] + [p for p in
                                         env.get("PYTHONPATH", "").split(os.pathsep) if p])
    result: dict[str, Any] = {"preset": preset, "repeats": repeats, "cases": [],
                              "notes": [("images/s: the CLI's own figure (run() wall time), "
                                         "median of the repeats; formats interleaved")]}
    with tempfile.TemporaryDirectory(prefix="xyz2image_formats_", dir=workdir) as tmp_name:
        tmp = Path(tmp_name)
        copy_examples(tmp / "structures", overwrite=True)
        files = [str(tmp / "structures" / name) for name in EXAMPLE_FILES]
        images_a = None
        for case in cases:
            n_images = case.n_rotation * len(files)
            print(f"\n== case ({case.name}) {','.join(case.output_types)} at {case.edgesize} px,"
                  f" {n_images} images; median of {repeats}", flush=True)
            rates: dict[str, list[float]] = {f.name: [] for f in FORMATS}
            walls: dict[str, list[float]] = {f.name: [] for f in FORMATS}
            cpus: dict[str, list[float]] = {f.name: [] for f in FORMATS}
            sizes: dict[str, int] = {}
            alone: dict[str, list[float]] = {"zstd 1": [], "lz4": [], "render": []}
            passes: dict[str, Callable[[], int]] = {}
            for k in range(repeats):
                for fmt in FORMATS:
                    out = tmp / f"{case.name}_{fmt.name.replace(' ', '_')}"
                    shutil.rmtree(out, ignore_errors=True)
                    cmd = common.cli_command() + [
                        "render", *files, "--n-rotation", str(case.n_rotation),
                        "--edgesize", str(case.edgesize), "--output-types",
                        ",".join(case.output_types), "--device", "cpu", "-o", str(out),
                        *fmt.args]
                    rate, wall, cpu = _run_cli(cmd, env)
                    rates[fmt.name].append(rate)
                    walls[fmt.name].append(wall)
                    cpus[fmt.name].append(cpu)
                    sizes[fmt.name] = (_folder_bytes(out, "stacks.zarr/**/*")
                                       if "zarr" in fmt.name else _folder_bytes(out, "*/*.npz"))
                    if case.name == "a" and fmt.name == "npz zlib 6" and images_a is None:
                        images_a = np.concatenate([np.load(p)["gaussian_2d"] for p in
                                                   sorted(out.glob("*/0000.npz"))])
                if case.name == "a" and images_a is not None:
                    # in the same repeat as the runs: a change of the machine's load hits
                    # the end-to-end runs and their references alike
                    if not passes:
                        passes = {**codec_passes(images_a), "render": render_pass(files, case)}
                        for key in alone:
                            passes[key]()  # warm-up
                    for key, values in alone.items():
                        values.append(_timed_once(passes[key]))
            record: dict[str, Any] = {"case": case.name, "output_types": list(case.output_types),
                                      "edgesize": case.edgesize, "n_images": n_images,
                                      "formats": {}}
            base = statistics.median(rates["npz zlib 6"])
            print(f"{'format':12s}  {'images/s':>9s}  {'x npz-6':>7s}  {'wall s':>7s}  "
                  f"{'CPU us/image':>12s}  {'bytes/image':>11s}")
            for fmt in FORMATS:
                med = statistics.median(rates[fmt.name])
                record["formats"][fmt.name] = {
                    "images_per_s": med, "images_per_s_runs": rates[fmt.name],
                    "median_wall_s": statistics.median(walls[fmt.name]),
                    "cpu_us_per_image": 1e6 * statistics.median(cpus[fmt.name]) / n_images,
                    "bytes_per_image": sizes[fmt.name] / n_images,
                    "ratio_to_npz_zlib6": med / base}
                print(f"{fmt.name:12s}  {fmt_rate(med):>9s}  {med / base:7.2f}  "
                      f"{statistics.median(walls[fmt.name]):7.2f}  "
                      f"{1e6 * statistics.median(cpus[fmt.name]) / n_images:12.1f}  "
                      f"{fmt_bytes(sizes[fmt.name] / n_images):>11s}", flush=True)
            if case.name == "a" and alone["render"]:
                zstd, lz4 = rates["zarr zstd 1"], rates["zarr lz4"]
                ceiling = [1 / (1 / r + 1 / c) for r, c in zip(alone["render"], alone["zstd 1"])]
                record["same_repeat"] = {
                    "zstd1_alone_images_per_s": alone["zstd 1"], "lz4_alone_images_per_s":
                    alone["lz4"], "render_only_images_per_s": alone["render"],
                    "zarr_zstd1_over_zstd1_alone": statistics.median(
                        e / c for e, c in zip(zstd, alone["zstd 1"])),
                    "zarr_lz4_over_lz4_alone": statistics.median(
                        e / c for e, c in zip(lz4, alone["lz4"])),
                    "zarr_zstd1_over_render_plus_zstd1": statistics.median(
                        e / c for e, c in zip(zstd, ceiling)),
                    "zarr_zstd1_over_npz_zlib6_per_repeat": statistics.median(
                        z / n for z, n in zip(zstd, rates["npz zlib 6"])),
                }
                same = record["same_repeat"]
                print(f"in the same repeats (medians of per-repeat ratios): zarr zstd 1 / "
                      f"zstd 1 alone {same['zarr_zstd1_over_zstd1_alone']:.2f} (alone: "
                      f"{fmt_rate(statistics.median(alone['zstd 1']))} images/s), zarr lz4 / "
                      f"lz4 alone {same['zarr_lz4_over_lz4_alone']:.2f}, zarr zstd 1 / "
                      f"(render + zstd 1 on the same cores) "
                      f"{same['zarr_zstd1_over_render_plus_zstd1']:.2f} (render-only "
                      f"{fmt_rate(statistics.median(alone['render']))} images/s); zarr zstd 1 "
                      f"/ npz zlib 6 {same['zarr_zstd1_over_npz_zlib6_per_repeat']:.2f}")
            result["cases"].append(record)
        if images_a is not None:
            alone = codec_alone(images_a, repeats, tmp)
            alone["render_only_images_per_s"] = _median_rate(render_pass(files, cases[0]),
                                                             repeats)
            result["codec_alone"] = alone
            print(f"\n== codecs alone on {alone['threads']} threads, the {alone['n_images']} "
                  f"images of case (a) in memory")
            for name, c in alone["codecs"].items():
                print(f"{name:8s}  {fmt_rate(c['images_per_s']):>9s} images/s  "
                      f"{fmt_bytes(c['bytes_per_image']):>9s}/image  ratio {c['ratio']:.2f}")
            for name, rate in alone["writers"].items():
                print(f"writer alone, {name}: {fmt_rate(rate)} images/s")
            render = alone["render_only_images_per_s"]
            print(f"render-only, case (a): {fmt_rate(render)} images/s")
            a = result["cases"][0]["formats"]

            def ceiling(codec: str) -> float:
                """Rendering and compressing on the same cores, nothing else: 1/(1/r + 1/c)."""
                return 1 / (1 / render + 1 / alone["codecs"][codec]["images_per_s"])
            result["targets"] = {
                "zarr_zstd1_over_npz_zlib6": a["zarr zstd 1"]["ratio_to_npz_zlib6"],
                "zarr_zstd1_over_zstd1_alone": (a["zarr zstd 1"]["images_per_s"]
                                                / alone["codecs"]["zstd 1"]["images_per_s"]),
                "zarr_lz4_over_lz4_alone": (a["zarr lz4"]["images_per_s"]
                                            / alone["codecs"]["lz4"]["images_per_s"]),
                "render_plus_zstd1_ceiling_images_per_s": ceiling("zstd 1"),
                "zarr_zstd1_over_ceiling": a["zarr zstd 1"]["images_per_s"] / ceiling("zstd 1"),
                "npz_zlib6_over_ceiling": a["npz zlib 6"]["images_per_s"] / ceiling("zlib 6"),
                "cpu_per_image_npz_zlib6_over_zarr_zstd1": (
                    a["npz zlib 6"]["cpu_us_per_image"] / a["zarr zstd 1"]["cpu_us_per_image"]),
            }
            t = result["targets"]
            print(f"\ntargets, case (a): zarr zstd 1 / npz zlib 6 = "
                  f"{t['zarr_zstd1_over_npz_zlib6']:.2f} (target >= 3); zarr zstd 1 / zstd 1 "
                  f"alone = {t['zarr_zstd1_over_zstd1_alone']:.2f} (target >= 0.8); zarr lz4 "
                  f"/ lz4 alone = {t['zarr_lz4_over_lz4_alone']:.2f}")
            print(f"render + zstd 1 on the same cores (1/(1/render + 1/codec)): "
                  f"{fmt_rate(t['render_plus_zstd1_ceiling_images_per_s'])} images/s; zarr "
                  f"zstd 1 reaches {t['zarr_zstd1_over_ceiling']:.2f} of it (npz zlib 6: "
                  f"{t['npz_zlib6_over_ceiling']:.2f} of its own); CPU time per image npz "
                  f"zlib 6 / zarr zstd 1 = {t['cpu_per_image_npz_zlib6_over_zarr_zstd1']:.2f}")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="fewer images (~2 min on 2 cores)")
    mode.add_argument("--smoke", action="store_true", help="tiny sizes, seconds (CI)")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None,
                        help="where the results go (default: benchmarks/results/formats_"
                             "<machine>_<date>.json; a temporary folder with --smoke)")
    args = parser.parse_args(argv)
    try:
        import zarr  # noqa: F401
    except ImportError as exc:
        print(f"bench_formats needs the zarr extra ({exc})", file=sys.stderr)
        return 2
    preset = "smoke" if args.smoke else "quick" if args.quick else "full"
    machine = common.machine_info()
    start = time.perf_counter()
    result = {"benchmark": "bench_formats", "date": common.today(), "machine": machine,
              "load_average_start": list(os.getloadavg()),
              **run_benchmarks(preset, args.repeats)}
    result["elapsed_s"] = time.perf_counter() - start
    result["load_average_end"] = list(os.getloadavg())
    path = args.json
    if path is None:
        folder = (Path(tempfile.mkdtemp(prefix="xyz2image_bench_")) if args.smoke
                  else common.RESULTS_DIR)
        path = common.results_path(folder, machine, prefix="formats_")
    print(f"\nwrote {common.write_json(path, result)} ({result['elapsed_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
