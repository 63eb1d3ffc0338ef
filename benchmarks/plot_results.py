"""Plot render-only throughput from benchmark JSON files: ``benchmarks/results/throughput.png``.

One panel per output type (gaussian_2d, gaussian_3d, binary_3d): images/s against atom count,
log-log; colour = edgesize, line style = backend and kernel (the seed's per-image algorithm
dashed), thin horizontal lines = the zlib level 6 floor on all cores (images/s at which
compression alone could store the output). Several machines: one marker each.

Usage::

    python benchmarks/plot_results.py                      # newest result of each machine
    python benchmarks/plot_results.py results/a.json results/b.json --out plot.png
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS_DIR

__all__ = ["latest_results", "main", "plot"]

STYLES = {"cpu/compiled": "-", "cpu/numpy": ":", "gpu/cupy": "-.", "seed": "--"}
STYLE_NAMES = {"cpu/compiled": "CPU, compiled kernel", "cpu/numpy": "CPU, NumPy (BLAS)",
               "gpu/cupy": "GPU, CuPy", "seed": "seed algorithm (1 process)"}
COLOURS = {16: "#8c564b", 32: "#9467bd", 64: "#1f77b4", 80: "#2ca02c", 128: "#ff7f0e",
           256: "#d62728"}
MARKERS = ("o", "s", "^", "D", "v")
PANELS = ("gaussian_2d", "gaussian_3d", "binary_3d")
_DATED = re.compile(r"^(?P<slug>.+)_(?P<date>\d{4}-\d{2}-\d{2})\.json$")


def latest_results(folder: Path = RESULTS_DIR) -> list[Path]:
    """The newest result file of each machine and kind (run_all, gpu_check) in ``folder``."""
    newest: dict[str, tuple[str, Path]] = {}
    for path in sorted(folder.glob("*.json")):
        m = _DATED.match(path.name)
        if not m:
            continue
        key, date = m["slug"], m["date"]
        if key not in newest or date >= newest[key][0]:
            newest[key] = (date, path)
    return [p for _, p in sorted(newest.values(), key=lambda v: v[1].name)]


def _machine_label(data: dict[str, Any]) -> str:
    m = data.get("machine", {})
    if m.get("gpu"):
        return f"{m['gpu']['name']} + {m.get('cpu_model', '?')} ({m.get('logical_cores')} cores)"
    return f"{m.get('cpu_model', '?')}, {m.get('logical_cores', '?')} cores"


def plot(paths: list[Path], out: Path) -> Path:
    """Draw the throughput figure from the ``render`` and ``seed`` records of ``paths``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    datasets = [json.loads(Path(p).read_text(encoding="utf-8")) for p in paths]
    datasets = [d for d in datasets if isinstance(d, dict) and d.get("render")]
    if not datasets:
        raise ValueError(f"no render-only results in {', '.join(map(str, paths))}")
    panels = [p for p in PANELS if any(r["output"] == p for d in datasets
                                       for r in d.get("render", []) + d.get("seed", []))]
    panels = panels or ["gaussian_2d"]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.6), squeeze=False,
                             sharex=True)
    axes = axes[0]
    machines = []
    used_styles, used_edges = set(), set()
    for k, data in enumerate(datasets):
        marker = MARKERS[k % len(MARKERS)]
        machines.append((marker, _machine_label(data), data.get("date", "")))
        lines: dict[tuple[str, str, int], list[tuple[int, float]]] = defaultdict(list)
        for r in data.get("render", []) + data.get("seed", []):
            lines[(r["output"], r["backend"], r["edgesize"])].append(
                (r["n_atoms"], r["images_per_s"]))
        for (output, backend, edge), pts in sorted(lines.items()):
            if output not in panels:
                continue
            ax = axes[panels.index(output)]
            pts.sort()
            xs, ys = zip(*pts)
            seed = backend == "seed"
            ax.plot(xs, ys, STYLES.get(backend, "-"), color=COLOURS.get(edge, "k"),
                    marker="x" if seed else marker, markersize=6 if seed else 4,
                    linewidth=1.2 if seed else 1.6)
            used_styles.add(backend)
            used_edges.add(edge)
        for r in data.get("zlib_floor", []):
            if r["output"] in panels:
                ax = axes[panels.index(r["output"])]
                ax.axhline(r["all_cores_images_per_s"], color=COLOURS.get(r["edgesize"], "k"),
                           linewidth=0.8, alpha=0.45)
                used_edges.add(r["edgesize"])
    for ax, output in zip(axes, panels):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(output)
        ax.set_xlabel("atoms per structure")
        ax.grid(True, which="both", alpha=0.25)
    axes[0].set_ylabel("images / s (render only, median)")
    handles = [Line2D([], [], color="0.2", linestyle=STYLES.get(s, "-"),
                      marker="x" if s == "seed" else None, label=STYLE_NAMES.get(s, s))
               for s in STYLE_NAMES if s in used_styles]
    handles += [Line2D([], [], color=COLOURS.get(e, "k"), linewidth=3, label=f"edgesize {e}")
                for e in sorted(used_edges)]
    handles.append(Line2D([], [], color="0.4", linewidth=0.8, alpha=0.6,
                          label="zlib level 6 floor, all cores"))
    if len(machines) > 1:
        handles += [Line2D([], [], color="0.2", marker=m, linestyle="none", label=lab)
                    for m, lab, _ in machines]
    fig.legend(handles=handles, loc="lower center", ncol=min(4, len(handles)), fontsize=8,
               frameon=False)
    title = "; ".join(f"{lab} ({date})" for _, lab, date in machines)
    fig.suptitle(f"xyz2image-gpu render-only throughput - {title}", fontsize=10)
    rows = (len(handles) + 3) // 4
    fig.tight_layout(rect=(0, 0.05 + 0.035 * rows, 1, 0.97))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", nargs="*", type=Path,
                        help=f"result files (default: the newest per machine in {RESULTS_DIR})")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "throughput.png")
    args = parser.parse_args(argv)
    paths = args.json or latest_results()
    if not paths:
        print(f"no result files in {RESULTS_DIR}; run benchmarks/run_all.py first",
              file=sys.stderr)
        return 1
    print(f"wrote {plot(paths, args.out)} from {', '.join(p.name for p in paths)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
