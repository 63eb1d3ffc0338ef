"""Benchmark: reading a long XYZ trajectory with ``read_xyz`` versus ``ase.io.read``.

Writes a trajectory of a 147-atom Au icosahedron (``ase.cluster.Icosahedron("Au", 4)``) with
small seeded random displacements per frame (extended-XYZ comment lines, positions in Å) to
a temporary directory, then times

* ``read_xyz(path, maxframes=None)`` (all frames), median of ``--repeats`` runs;
* ``ase.io.read(path, index=":")``, median of ``--repeats`` runs, or a single run when the
  first one takes longer than ``--ase-single-above`` seconds;
* ``read_xyz(path)`` with the default ``maxframes=50``, for reference;

checks that both readers agree, and prints frames per second and the speed-up.

Usage::

    python benchmarks/bench_read.py [--frames 10000] [--repeats 3] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

try:
    from xyz2image_gpu.structures import read_xyz
except ImportError:  # run from a checkout without installing the package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from xyz2image_gpu.structures import read_xyz

__all__ = ["main", "write_trajectory"]


def write_trajectory(path: Path, n_frames: int, seed: int = 0, sigma: float = 0.05) -> int:
    """Write an ``n_frames`` extended-XYZ trajectory of a 147-atom Au icosahedron.

    Parameters
    ----------
    path : pathlib.Path
        Output file.
    n_frames : int
        Number of frames.
    seed : int, default 0
        Seed of the random displacements.
    sigma : float, default 0.05
        Standard deviation of the per-frame Gaussian displacements, in Å.

    Returns
    -------
    int
        Number of atoms per frame.
    """
    from ase.cluster import Icosahedron

    base = Icosahedron("Au", 4).get_positions()
    n_atoms = base.shape[0]
    rng = np.random.default_rng(seed)
    comment = 'Properties=species:S:1:pos:R:3 pbc="F F F" frame={}'
    with open(path, "w", encoding="ascii") as handle:
        for k in range(n_frames):
            pos = base + rng.normal(scale=sigma, size=base.shape)
            body = "\n".join(f"Au {x:16.10f} {y:16.10f} {z:16.10f}" for x, y, z in pos.tolist())
            handle.write(f"{n_atoms}\n{comment.format(k)}\n{body}\n")
    return n_atoms


def _time(func: Callable[[], Any], repeats: int) -> tuple[list[float], Any]:
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = func()
        times.append(time.perf_counter() - t0)
    return times, result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; return (and optionally write) the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=10_000, help="frames in the file")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per reader")
    parser.add_argument(
        "--ase-single-above",
        type=float,
        default=20.0,
        help="time ASE only once when its first run takes longer than this (s)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args(argv)

    import ase
    import ase.io

    with tempfile.TemporaryDirectory(prefix="bench_read_") as tmp:
        path = Path(tmp) / "au147_traj.xyz"
        t0 = time.perf_counter()
        n_atoms = write_trajectory(path, args.frames, seed=args.seed)
        write_s = time.perf_counter() - t0
        size_mb = path.stat().st_size / 1e6
        print(f"wrote {args.frames} frames x {n_atoms} atoms ({size_mb:.1f} MB) in {write_s:.1f} s")

        ours_times, structure = _time(lambda: read_xyz(path, maxframes=None), args.repeats)
        head_times, _ = _time(lambda: read_xyz(path), args.repeats)

        ase_times, images = _time(lambda: ase.io.read(path, index=":"), 1)
        if ase_times[0] <= args.ase_single_above and args.repeats > 1:
            more, images = _time(lambda: ase.io.read(path, index=":"), args.repeats - 1)
            ase_times += more

        if len(images) != len(structure.frames):
            raise SystemExit(
                f"frame counts differ: ASE {len(images)}, ours {len(structure.frames)}"
            )
        max_dev = max(
            float(np.abs(f.positions - a.get_positions()).max())
            for f, a in zip(structure.frames, images)
        )
        same_numbers = all(
            np.array_equal(f.numbers, a.numbers) for f, a in zip(structure.frames, images)
        )
        if not same_numbers or max_dev > 1e-8:
            raise SystemExit(f"readers disagree: numbers equal={same_numbers}, max dev {max_dev}")

    ours_s = statistics.median(ours_times)
    ase_s = statistics.median(ase_times)
    figures = {
        "frames": args.frames,
        "atoms_per_frame": n_atoms,
        "file_mb": round(size_mb, 2),
        "read_xyz_s": ours_s,
        "read_xyz_runs_s": ours_times,
        "read_xyz_frames_per_s": args.frames / ours_s,
        "read_xyz_maxframes50_s": statistics.median(head_times),
        "ase_read_s": ase_s,
        "ase_read_runs_s": ase_times,
        "ase_read_frames_per_s": args.frames / ase_s,
        "speedup": ase_s / ours_s,
        "max_position_difference_A": max_dev,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "ase": ase.__version__,
        "machine": platform.machine(),
        "processor": platform.processor() or platform.platform(),
    }
    print(
        f"read_xyz (all frames): {ours_s:8.3f} s  {figures['read_xyz_frames_per_s']:10.0f} frames/s"
        f"  (median of {len(ours_times)})"
    )
    print(
        f"ase.io.read(':')     : {ase_s:8.3f} s  {figures['ase_read_frames_per_s']:10.0f} frames/s"
        f"  (median of {len(ase_times)})"
    )
    print(f"speed-up             : {figures['speedup']:.1f}x")
    print(f"read_xyz (maxframes=50): {figures['read_xyz_maxframes50_s'] * 1e3:.1f} ms")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    return figures


if __name__ == "__main__":
    main(sys.argv[1:])
