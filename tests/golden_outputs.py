"""A fixed set of command-line runs whose output bytes are recorded, to prove that a change
that should not change images (a refactor, a new option left at its default) changes none.

``python tests/golden_outputs.py --record`` runs every case and writes the sha256 of each
output file (.npz and .tif; the manifest is left out: it holds paths and versions) to
``tests/data/golden_sha256.json``. ``tests/test_golden_outputs.py`` runs the same cases and
compares. Re-record only for a change that is meant to change images, and say so in the
commit message and CHANGELOG.md.

The hashes are those of this project's CI machines (x86-64 with AVX2, the compiled kernel
built with the flags of ``setup.py``, NumPy's OpenBLAS): the compiled kernel's bytes are fixed
by its own loop order, the NumPy path's by BLAS, which may order sums differently on other
processors.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path

RECORD = Path(__file__).resolve().parent / "data" / "golden_sha256.json"

#: Each case: name, CLI arguments after ``render INPUTS -o OUT``, and whether to force the
#: NumPy path (``XYZ2IMAGE_GPU_NO_EXTENSION=1``). Small images keep the whole set ~10 s.
_BASE = ["--edgesize", "24", "--n-rotation", "3", "--device", "cpu", "--workers", "1",
         "--quiet"]
CASES: list[tuple[str, list[str], bool]] = [
    ("default", [], False),
    ("default_numpy", [], True),
    ("every_type_16bit_structure", [
        "--output-types", ("coordinates_3d,delta_3d,delta_2d,gaussian_3d,gaussian_2d,"
        "binary_3d,binary_2d,delta_2d_image,gaussian_2d_image,binary_2d_image"),
        "--bitrate", "16", "--framing", "structure", "--n-stacks", "2", "--seed", "7"], False),
    ("every_type_numpy", [
        "--output-types", ("coordinates_3d,delta_3d,delta_2d,gaussian_3d,gaussian_2d,"
        "binary_3d,binary_2d"), "--all-random"], True),
    ("fixed_framing_fixed_scale", [
        "--output-types", "gaussian_2d,gaussian_3d,coordinates_3d", "--framing", "fixed",
        "--pixel-size", "0.9", "--normalization", "fixed", "--intensity-scale", "40"], False),
    ("float_normalization", [
        "--output-types", "gaussian_2d,gaussian_3d", "--normalization", "float",
        "--z-exponent", "1.2", "--exclude-elements", "Pd"], False),
    ("legacy", [
        "--output-types", ("coordinates_3d,delta_2d,gaussian_2d,gaussian_3d,binary_2d,"
        "gaussian_2d_image"), "--legacy"], False),
    ("probe_thermal_column", [
        "--output-types", "gaussian_2d,gaussian_3d", "--probe-kv", "200", "--probe-mrad", "20",
        "--probe-source-size", "0.6", "--thermal", "--thermal-rms", "Au=0.09",
        "--column-correction", "0.175", "--column-broadening", "0.004"], False),
    ("probe_thermal_column_numpy", [
        "--output-types", "gaussian_2d", "--probe-kv", "300", "--probe-mrad", "25",
        "--probe-defocus", "20", "--thermal", "--column-correction", "0.175",
        "--column-broadening", "0.004"], True),
    ("augmented", [
        "--output-types", "gaussian_2d,coordinates_3d,gaussian_2d_image", "--phonon-jitter",
        "--dose", "5000", "--read-noise", "0.02", "--scan-jitter", "0.1", "--drift", "0.5",
        "--bitrate", "16"], False),
    ("augmented_numpy", [
        "--output-types", "gaussian_2d", "--phonon-jitter", "--dose", "2000", "--scan-jitter",
        "0.2"], True),
    ("trajectory_frames", [
        "--output-types", "gaussian_2d,coordinates_3d", "--frameshift", "1", "--maxframes",
        "2", "--n-rotation", "2"], False),
    ("training_labels", [
        "--output-types", "numbers,heatmap_2d,element_heatmap_2d,column_map_2d,gaussian_2d",
        "--heatmap-sigma", "0.3", "--column-radius", "0.6", "--scan-jitter", "0.1"], False),
    ("training_labels_numpy", [
        "--output-types", "numbers,heatmap_2d,element_heatmap_2d,column_map_2d",
        "--elements", "Au,Pd,Pt"], True),
]


def write_inputs(folder: Path) -> Path:
    """The bundled examples plus a 3-frame trajectory, written into ``folder``."""
    from xyz2image_gpu.structures.examples import copy_examples, icosahedron_positions

    copy_examples(folder)
    pos, _ = icosahedron_positions(2, 2.88)
    lines: list[str] = []
    for f in range(3):
        lines += [str(len(pos)), f"frame {f}"]
        symbols = ["Pd" if i % 3 == 0 else "Au" for i in range(len(pos))]
        lines += [f"{el} {x * (1 + 0.02 * f):.6f} {y:.6f} {z:.6f}"
                  for el, (x, y, z) in zip(symbols, pos)]
    (folder / "breathing13.xyz").write_text("\n".join(lines) + "\n")
    return folder


@contextmanager
def _numpy_path(on: bool):
    key = "XYZ2IMAGE_GPU_NO_EXTENSION"
    saved = os.environ.get(key)
    if on:
        os.environ[key] = "1"
    else:
        os.environ.pop(key, None)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = saved


def run_case(inputs: Path, out: Path, args: list[str], numpy_path: bool) -> dict[str, str]:
    """Run one case through the CLI in this process; sha256 of every output file."""
    from click.testing import CliRunner

    from xyz2image_gpu.cli import cli

    with _numpy_path(numpy_path):
        result = CliRunner().invoke(cli, ["render", str(inputs), "-o", str(out), *_BASE, *args])
    if result.exit_code != 0:
        raise AssertionError(f"render {args} exited {result.exit_code}:\n{result.output}"
                             f"{result.exception!r}")
    hashes = {}
    for path in sorted(out.rglob("*")):
        if path.is_file() and path.name not in ("manifest.json", ".lock"):
            hashes[path.relative_to(out).as_posix()] = hashlib.sha256(
                path.read_bytes()).hexdigest()
    return hashes


def run_all(workdir: Path) -> dict[str, dict[str, str]]:
    inputs = write_inputs(workdir / "inputs")
    return {name: run_case(inputs, workdir / name, args, numpy_path)
            for name, args, numpy_path in CASES}


if __name__ == "__main__":
    import tempfile

    if sys.argv[1:] != ["--record"]:
        sys.exit("usage: python tests/golden_outputs.py --record")
    with tempfile.TemporaryDirectory() as tmp:
        hashes = run_all(Path(tmp))
    RECORD.parent.mkdir(exist_ok=True)
    RECORD.write_text(json.dumps(hashes, indent=1, sort_keys=True) + "\n")
    print(f"recorded {sum(map(len, hashes.values()))} files of {len(hashes)} cases to {RECORD}")
