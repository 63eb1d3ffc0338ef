"""Benchmark: what checking the stacks on disk costs a resumed run.

Renders ``--stacks`` stacks of ``au147_icosahedron.xyz`` (``gaussian_2d`` and
``heatmap_2d`` at 128 px, ``--n-rotation`` images each, plus the ``gaussian_2d_image`` TIFF
stack), once as ``.npz`` and once into the zarr store (``--chunk-images 64``), then times:

* ``cheap``: :func:`xyz2image_gpu.run.units.unit_problem` on every stack (what resume runs:
  the containers' metadata against the expected shapes);
* ``full``: every byte decompressed and checked instead (``.npz``: every member's CRC-32
  through :meth:`zipfile.ZipFile.testzip`; ``.tif``: every page read; zarr: every array
  read), the alternative the cheap check was measured against;
* ``rerun``: the whole resumed command, every stack skipped (planning included).

The files were just written, so they are in the page cache: the figures are CPU cost, not
a cold disk's. Each figure is the median of ``--repeats``.

Usage::

    python benchmarks/bench_resume_check.py [--stacks 50] [--n-rotation 256] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: F401  (puts the checkout on sys.path)
import tifffile
from click.testing import CliRunner

from xyz2image_gpu import RenderSettings
from xyz2image_gpu.cli import cli
from xyz2image_gpu.pipeline.engine import Renderer
from xyz2image_gpu.run import RunConfig
from xyz2image_gpu.run.config import render_types
from xyz2image_gpu.run.units import Unit, unit_problem
from xyz2image_gpu.structures.convert import as_structure
from xyz2image_gpu.structures.examples import bundled_examples

TYPES = "gaussian_2d,heatmap_2d,gaussian_2d_image"


def _median(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _full(units: list[Unit]) -> None:
    for unit in units:
        arrays, *tifs = unit.outputs()
        if unit.config.format == "zarr":
            import zarr

            group = zarr.open_group(arrays, mode="r")
            for _, arr in group.arrays():
                arr[:]
        else:
            with zipfile.ZipFile(arrays) as zf:
                assert zf.testzip() is None
        for tif in tifs:
            tifffile.imread(tif)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stacks", type=int, default=50)
    ap.add_argument("--n-rotation", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    source = next(p for p in bundled_examples() if p.name == "au147_icosahedron.xyz")
    structure = as_structure(source)
    settings = RenderSettings(edgesize=128)
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in ("npz", "zarr"):
            out = Path(tmp) / fmt
            cmd = ["render", str(source), "-o", str(out), "--edgesize", "128",
                   "--n-rotation", str(args.n_rotation), "--n-stacks", str(args.stacks),
                   "--output-types", TYPES, "--device", "cpu", "--format", fmt, "--quiet",
                   *(["--chunk-images", "64"] if fmt == "zarr" else [])]
            t0 = time.perf_counter()
            result = CliRunner().invoke(cli, cmd, catch_exceptions=False)
            assert result.exit_code == 0, result.output
            render_s = time.perf_counter() - t0
            config = RunConfig(inputs=(), output_folder=out, settings=settings,
                               output_types=tuple(TYPES.split(",")),
                               n_rotation=args.n_rotation, n_stacks=args.stacks, format=fmt,
                               chunk_images=64 if fmt == "zarr" else 256)
            renderer = Renderer(settings, render_types(config.output_types), "cpu")
            layout = renderer.output_layout(structure, len(structure.frames) * args.n_rotation)
            renderer.close()
            units = [Unit(str(source), source.stem, s, config, "cpu", 1)
                     for s in range(args.stacks)]
            assert all(unit_problem(u, layout) is None for u in units)
            size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
            cheap = _median(lambda us=units, lay=layout: [unit_problem(u, lay) for u in us],
                            args.repeats)
            full = _median(lambda us=units: _full(us), max(1, args.repeats // 2))
            rerun = _median(lambda c=cmd: CliRunner().invoke(cli, c, catch_exceptions=False),
                            max(1, args.repeats // 2))
            n = args.stacks
            print(f"{fmt}: {n} stacks x {args.n_rotation} images, {size / 2**20:.0f} MiB "
                  f"(rendered in {render_s:.1f} s): cheap check {cheap * 1e3:.1f} ms "
                  f"({cheap / n * 1e3:.2f} ms/stack), full decompression {full * 1e3:.0f} ms "
                  f"({full / n * 1e3:.1f} ms/stack, {full / cheap:.0f}x), whole resumed "
                  f"command {rerun * 1e3:.0f} ms")


if __name__ == "__main__":
    main()
