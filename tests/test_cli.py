"""The command line and the run orchestration: layout, failures, determinism, resume."""

from __future__ import annotations

import errno
import io
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner

from xyz2image_gpu import RenderSettings
from xyz2image_gpu import output as writers
from xyz2image_gpu import run as runner_mod
from xyz2image_gpu.cli import cli
from xyz2image_gpu.output import is_temporary
from xyz2image_gpu.run import config as run_config
from xyz2image_gpu.run.lock import _folder_lock
from xyz2image_gpu.structures.examples import bundled_examples, copy_examples, icosahedron_positions

AU147 = next(p for p in bundled_examples() if p.name == "au147_icosahedron.xyz")
PT309 = next(p for p in bundled_examples() if p.name == "pt309_icosahedron.xyz")
SMALL = ["--edgesize", "32", "--workers", "1"]


def _invoke(*args: str):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    return result


def _output_files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name not in ("manifest.json", ".lock")}


@pytest.fixture
def structures(tmp_path) -> Path:
    folder = tmp_path / "structures"
    copy_examples(folder)
    return folder


def _trajectory(path: Path, n_frames: int = 3) -> Path:
    """A small multi-frame XYZ file (a 13-atom cluster that breathes)."""
    pos, _ = icosahedron_positions(2, 2.88)
    lines = []
    for f in range(n_frames):
        lines += [str(len(pos)), f"frame {f}"]
        lines += [f"Au {x * (1 + 0.02 * f):.6f} {y:.6f} {z:.6f}" for x, y, z in pos]
    path.write_text("\n".join(lines) + "\n")
    return path


# ------------------------------------------------------------------------------ basics


def test_help_version_info():
    result = _invoke("--help")
    assert result.exit_code == 0
    for word in ("render", "info", "example", "preview", "Quick start"):
        assert word in result.output
    result = _invoke("render", "--help")
    assert result.exit_code == 0
    for option in ("--gauss-sigma", "--edgesize", "--padxyz", "--n-rotation", "--n-stacks",
                   "--output-types", "--bitrate", "--binary-radius", "--frameshift",
                   "--maxframes", "--output-folder", "--seed", "--device", "--workers",
                   "--batch-size", "--exclude-elements", "--z-exponent", "--legacy",
                   "--framing", "--pixel-size", "--normalization", "--intensity-scale",
                   "--all-random", "--quiet", "--overwrite", "--compress-level", "Example"):
        assert option in result.output, option
    assert "default: 0.4" in result.output and "npz_stacks" in result.output
    result = _invoke("--version")
    assert result.exit_code == 0 and "xyz2image-gpu" in result.output
    result = _invoke("info", "--device", "cpu")
    assert result.exit_code == 0
    assert "backend numpy" in result.output and "numpy" in result.output
    assert "cupy" in result.output


def test_example_command_and_icosahedron_geometry(tmp_path):
    result = _invoke("example", tmp_path / "ex")
    assert result.exit_code == 0
    names = sorted(p.name for p in (tmp_path / "ex").iterdir())
    assert names == sorted(p.name for p in bundled_examples())
    (tmp_path / "ex" / AU147.name).write_text("changed")
    assert _invoke("example", tmp_path / "ex").exit_code == 1
    assert _invoke("example", tmp_path / "ex", "--overwrite").exit_code == 0
    assert (tmp_path / "ex" / AU147.name).read_bytes() == AU147.read_bytes()

    ase_cluster = pytest.importorskip("ase.cluster")
    from xyz2image_gpu import read_xyz

    frame = read_xyz(AU147).frames[0]
    assert frame.n_atoms == 147 and set(frame.numbers.tolist()) == {79}
    nn = 2.88  # radial nearest-neighbour distance; ASE's a / sqrt(2)
    ase = ase_cluster.Icosahedron("Au", 4, latticeconstant=nn * np.sqrt(2))
    want = np.sort(np.linalg.norm(ase.positions - ase.positions.mean(0), axis=1))
    for pos in (frame.positions, icosahedron_positions(4, nn)[0]):
        got = np.sort(np.linalg.norm(pos - pos.mean(0), axis=1))
        assert len(got) == len(ase) == 147
        np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)
    assert len(icosahedron_positions(5, 2.77)[0]) == 309


# ------------------------------------------------------------------------------ render


def test_render_layout_keys_shapes_dtypes(tmp_path):
    traj = _trajectory(tmp_path / "traj.xyz", n_frames=3)
    out = tmp_path / "out"
    result = _invoke("render", AU147, traj, "-o", out, "--n-rotation", 4, "--n-stacks", 2,
                     "--output-types",
                     "coordinates_3d,delta_3d,gaussian_2d,binary_2d,gaussian_2d_image,"
                     "binary_2d_image", "--bitrate", "16", *SMALL)
    assert result.exit_code == 0, result.output
    assert "wrote 32 images in 4 stacks" in result.output
    expected = set()
    for stem in ("au147_icosahedron", "traj"):
        for stack in ("0000", "0001"):
            expected |= {f"{stem}/{stack}.npz", f"{stem}/{stack}_gaussian_2d.tif",
                         f"{stem}/{stack}_binary_2d.tif"}
    assert set(_output_files(out)) == expected

    with np.load(out / "traj" / "0001.npz", allow_pickle=False) as z:
        assert z.files == ["coordinates_3d", "delta_3d", "gaussian_2d", "binary_2d",
                           "rotations", "voxel_size", "frame_index", "n_atoms"]
        n = 3 * 4
        assert z["coordinates_3d"].shape == (n, 13, 3)
        assert z["delta_3d"].shape == (n, 32, 32, 32) and z["delta_3d"].dtype == bool
        assert z["gaussian_2d"].shape == (n, 32, 32) and z["gaussian_2d"].dtype == np.uint16
        assert z["binary_2d"].dtype == bool
        assert z["rotations"].shape == (n, 3, 3) and z["rotations"].dtype == np.float64
        assert z["voxel_size"].shape == (n,) and np.all(z["voxel_size"] > 0)
        np.testing.assert_array_equal(z["frame_index"], np.repeat([0, 1, 2], 4))
        np.testing.assert_array_equal(z["n_atoms"], 13)
        gauss = z["gaussian_2d"]
        rot1 = z["rotations"]
    tif = tifffile.imread(out / "traj" / "0001_gaussian_2d.tif")
    np.testing.assert_array_equal(tif, gauss)
    with np.load(out / "traj" / "0000.npz") as z0:
        assert not np.allclose(z0["rotations"][1:4], rot1[1:4])  # stacks differ

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["parameters"]["edgesize"] == 32
    assert manifest["parameters"]["n_rotation"] == 4 and manifest["parameters"]["seed"] == 0
    assert manifest["parameters"]["output_types"][-1] == "binary_2d_image"
    assert manifest["device"]["backend"] == "numpy"
    assert manifest["version"]
    entry = manifest["files"]["traj"]
    assert entry["status"] == "complete" and entry["completed_stacks"] == [0, 1]
    assert entry["path"] == str(traj) and entry["images_per_stack"] == 12


def test_frameshift_maxframes_exclude(tmp_path):
    traj = _trajectory(tmp_path / "traj.xyz", n_frames=4)
    out = tmp_path / "out"
    result = _invoke("render", traj, "-o", out, "--frameshift", 1, "--maxframes", 2,
                     "--output-types", "gaussian_2d", *SMALL)
    assert result.exit_code == 0, result.output
    with np.load(out / "traj" / "0000.npz") as z:
        np.testing.assert_array_equal(z["frame_index"], [1, 2])
    result = _invoke("render", traj, "-o", tmp_path / "o2", "--exclude-elements", "Au",
                     *SMALL)
    assert result.exit_code == 1
    assert "no atoms left" in result.output and "Traceback" not in result.output
    result = _invoke("render", traj, "-o", tmp_path / "o3", "--exclude-elements", "Xx")
    assert result.exit_code == 2 and "unknown element" in result.output


def test_bad_file_among_good_ones(tmp_path, structures):
    bad = structures / "broken.xyz"
    bad.write_text("3\ncomment\nAu 0 0 0\nAu 1.0 oops 0\nAu 2 2 2\n")
    out = tmp_path / "out"
    result = _invoke("render", structures, "-o", out, "--n-rotation", 2, *SMALL)
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert "broken.xyz" in result.output and "line 4" in result.output
    assert "1 of 4 input files failed" in result.output
    for stem in ("au147_icosahedron", "aupd147_core_shell", "pt309_icosahedron"):
        assert (out / stem / "0000.npz").exists()
    assert not (out / "broken").exists()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["files"]["broken"]["status"] == "failed"
    assert "line 4" in manifest["files"]["broken"]["error"]
    assert manifest["files"]["pt309_icosahedron"]["status"] == "complete"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--output-types", "gaussian_2d,nope"], "valid names: coordinates_3d"),
        (["--bitrate", "12"], "'12' is not one of"),
        (["--framing", "fixed"], "--framing fixed needs a positive --pixel-size"),
        (["--normalization", "fixed"], "--normalization fixed needs a positive --intensity-scale"),
        (["--legacy", "--z-exponent", "1.7"], "legacy"),
        (["--device", "tpu"], "'tpu' is not one of"),
        (["--edgesize", "1"], "edgesize"),
        # recorded in the manifest though they changed nothing, they refused a later run
        (["--heatmap-sigma", "0.3"], "--heatmap-sigma would have no effect without"),
        (["--elements", "Au", "--output-types", "heatmap_2d"], "--elements would have no"),
        (["--column-radius", "1"], "--column-radius would have no effect without"),
        (["--heatmap-sigma", "0"], "--heatmap-sigma"),
        (["--column-radius", "-0.5"], "--column-radius"),
        (["--elements", "Au,Qq"], "--elements"),
        (["--heatmap-dtype", "float64"], "--heatmap-dtype"),
    ],
)
def test_user_mistakes_give_clean_errors(tmp_path, args, message):
    result = _invoke("render", AU147, "-o", tmp_path / "out", *args)
    assert result.exit_code in (1, 2)
    assert message in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("variable", "value", "option"),
    [
        ("XYZ2IMAGE_GPU_RENDER_EDGESIZE", "abc", "--edgesize"),
        ("XYZ2IMAGE_GPU_RENDER_PIXEL_SIZE", "-1", "--pixel-size"),
        ("XYZ2IMAGE_GPU_RENDER_OUTPUT_TYPES", "gaussian_2d,nope", "--output-types"),
    ],
)
def test_bad_value_from_the_environment_names_the_variable(tmp_path, variable, value, option):
    result = CliRunner().invoke(cli, ["render", str(AU147), "-o", str(tmp_path / "out")],
                                env={variable: value})
    assert result.exit_code == 2
    assert f"'{option}' (env var: '{variable}')" in result.output
    # typed on the command line, the same mistake names the option alone
    typed = _invoke("render", AU147, "-o", tmp_path / "out", option, value)
    assert typed.exit_code == 2
    assert "env var" not in typed.output and f"'{option}'" in typed.output
    assert not (tmp_path / "out").exists()


def test_environment_variables_are_named_after_the_option_as_typed(tmp_path):
    # --n stores n_images: XYZ2IMAGE_GPU_PREVIEW_N is read (and the parameter's name too)
    for variable in ("XYZ2IMAGE_GPU_PREVIEW_N", "XYZ2IMAGE_GPU_PREVIEW_N_IMAGES"):
        result = CliRunner().invoke(cli, ["preview", str(AU147), "-o", str(tmp_path / "p.png")],
                                    env={variable: "abc"})
        assert result.exit_code == 2 and "'--n' (env var:" in result.output
        assert "'abc' is not a valid integer" in result.output


def test_inputs_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    result = _invoke("render", tmp_path / "empty", "-o", tmp_path / "out")
    assert result.exit_code == 2 and "no structure files found" in result.output
    result = _invoke("render", tmp_path / "missing.xyz")
    assert result.exit_code == 2 and "does not exist" in result.output
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "x.xyz").write_bytes(AU147.read_bytes())
    (tmp_path / "b" / "x.xyz").write_bytes(AU147.read_bytes())
    result = _invoke("render", tmp_path / "a", tmp_path / "b", "-o", tmp_path / "out")
    assert result.exit_code == 2 and "collide" in result.output


def test_quiet_and_progress_lines(tmp_path):
    result = _invoke("render", AU147, "-o", tmp_path / "q", "--quiet", *SMALL)
    assert result.exit_code == 0 and result.output == ""
    stream = io.StringIO()
    config = runner_mod.RunConfig(inputs=(AU147,), output_folder=tmp_path / "p",
                                  settings=RenderSettings(edgesize=16),
                                  output_types=("gaussian_2d",), n_rotation=6, batch_size=2)
    summary = runner_mod.run(config, progress="lines", progress_stream=stream,
                             progress_interval=0.0)
    assert summary.images == 6 and summary.ok and summary.images_per_second > 0
    lines = stream.getvalue().splitlines()
    assert lines and lines[-1].startswith("rendered 6/6 images (100%)")
    assert "images/s" in lines[-1] and "ETA" in lines[-1]


# ------------------------------------------------------------------ determinism, resume


def test_bytes_identical_across_workers_and_batch_sizes(tmp_path):
    inputs = [AU147, PT309]
    common = ["--edgesize", "24", "--n-rotation", "5", "--n-stacks", "2", "--output-types",
              "coordinates_3d,delta_3d,gaussian_2d,gaussian_2d_image", "--seed", "7"]
    runs = {}
    for workers, batch in [(1, 3), (2, 7), (1, 64)]:
        out = tmp_path / f"w{workers}_b{batch}"
        result = _invoke("render", *inputs, "-o", out, "--workers", workers,
                         "--batch-size", batch, *common)
        assert result.exit_code == 0, result.output
        assert f"{workers} worker" in result.output
        runs[(workers, batch)] = _output_files(out)
    first = runs[(1, 3)]
    assert len(first) == 8
    for files in runs.values():
        assert files == first


def test_resume_overwrite_and_settings_mismatch(tmp_path):
    out = tmp_path / "out"
    args = ["render", AU147, "-o", out, "--n-rotation", 3, "--n-stacks", 2, *SMALL]
    assert _invoke(*args).exit_code == 0
    first = _output_files(out)
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.npz")}

    result = _invoke(*args)  # resume: nothing to do
    assert result.exit_code == 0 and "2 complete stacks skipped" in result.output
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.npz")} == mtimes

    (out / "au147_icosahedron" / "0001.npz").unlink()  # lost file: redone
    result = _invoke(*args)
    assert "wrote 3 images in 1 stacks" in result.output
    assert _output_files(out) == first

    result = _invoke(*args, "--n-stacks", 3)  # more stacks: only the new one is rendered
    assert result.exit_code == 0 and "wrote 3 images in 1 stacks" in result.output

    result = _invoke(*args, "--overwrite")
    assert result.exit_code == 0 and "wrote 6 images in 2 stacks" in result.output

    result = _invoke(*args, "--gauss-sigma", 0.5)
    assert result.exit_code == 1
    assert "other settings" in result.output and "gauss_sigma" in result.output
    assert "--overwrite" in result.output and "Traceback" not in result.output
    result = _invoke(*args, "--gauss-sigma", 0.5, "--overwrite")
    assert result.exit_code == 0
    assert json.loads((out / "manifest.json").read_text())["parameters"]["gauss_sigma"] == 0.5

    changed = tmp_path / "au147_icosahedron.xyz"  # same stem, other contents: redone
    changed.write_text(AU147.read_text().replace("0.00000000", "0.10000000", 1))
    result = _invoke("render", changed, "-o", out, "--n-rotation", 3, "--n-stacks", 2,
                     "--gauss-sigma", 0.5, *SMALL)
    assert result.exit_code == 0 and "wrote 6 images in 2 stacks" in result.output


def _wait_for(predicate, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.005)
    return False


def test_kill_and_resume_gives_identical_bytes(tmp_path):
    args = [str(AU147), str(PT309), "--edgesize", "64", "--n-rotation", "150", "--n-stacks",
            "5", "--output-types", "gaussian_2d,delta_3d,gaussian_2d_image", "--workers", "1",
            "--batch-size", "16", "--quiet"]
    cmd = [sys.executable, "-m", "xyz2image_gpu.cli", "render"]
    out = tmp_path / "killed"
    proc = subprocess.Popen([*cmd, *args, "-o", str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        first_stack = out / "au147_icosahedron" / "0000.npz"
        appeared = _wait_for(lambda: first_stack.exists() or proc.poll() is not None, 60)
        assert appeared
        time.sleep(0.05)
        if proc.poll() is not None:
            pytest.skip("the run finished before it could be killed (machine too fast)")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL

    # every file under a final name is complete
    finals = [p for p in out.rglob("*") if p.is_file() and not is_temporary(p)
              and not any(is_temporary(q) for q in p.parents)]
    for path in finals:
        if path.suffix == ".npz":
            with zipfile.ZipFile(path) as zf:
                assert zf.testzip() is None
            with np.load(path) as z:
                assert z["gaussian_2d"].shape == (150, 64, 64)
                assert z["delta_3d"].shape == (150, 64, 64, 64)
        elif path.suffix == ".tif":
            assert tifffile.imread(path).shape == (150, 64, 64)
    manifest = json.loads((out / "manifest.json").read_text())
    done = manifest["files"]["au147_icosahedron"]["completed_stacks"]
    assert manifest["files"]["pt309_icosahedron"]["status"] != "complete"

    resumed = subprocess.run([*cmd, *args, "-o", str(out)], check=False, capture_output=True,
                             text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert not [p for p in out.rglob("*") if is_temporary(p)]  # stale temporaries gone
    reference = tmp_path / "reference"
    whole = subprocess.run([*cmd, *args, "-o", str(reference)], check=False,
                           capture_output=True, text=True, timeout=120)
    assert whole.returncode == 0, whole.stderr
    assert _output_files(out) == _output_files(reference)
    assert len(_output_files(reference)) == 20
    assert len(done) <= 5


# ------------------------------------------------------------------------ write errors


def test_writer_oserror_stops_the_run_cleanly(tmp_path, monkeypatch):
    def disk_full(self, batch):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(writers.NpzStreamWriter, "append", disk_full)
    out = tmp_path / "out"
    result = _invoke("render", AU147, PT309, "-o", out, "--n-rotation", 4, *SMALL)
    assert result.exit_code == 1
    assert "No space left on device" in result.output
    assert "cannot write output" in result.output and "Traceback" not in result.output
    assert not list(out.rglob("*.npz"))
    assert not [p for p in out.rglob("*") if is_temporary(p)]
    assert json.loads((out / "manifest.json").read_text())["files"][
        "au147_icosahedron"]["completed_stacks"] == []


@pytest.mark.parametrize("workers", [1, 2])
def test_unwritable_output_gives_clean_error(tmp_path, workers):
    out = tmp_path / "out"
    out.mkdir()
    (out / "au147_icosahedron").write_text("a file where a folder must go")
    result = _invoke("render", AU147, PT309, "-o", out, "--n-rotation", 2, "--n-stacks", 2,
                     "--edgesize", 16, "--workers", workers)
    assert result.exit_code == 1
    assert "cannot write output" in result.output and "Traceback" not in result.output


def test_busy_output_folder_is_refused(tmp_path):
    pytest.importorskip("fcntl")
    out = tmp_path / "out"
    out.mkdir()
    with _folder_lock(out):
        result = _invoke("render", AU147, "-o", out, *SMALL)
    assert result.exit_code == 1 and "another xyz2image-gpu run" in result.output
    assert _invoke("render", AU147, "-o", out, *SMALL).exit_code == 0


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root ignores file permissions")
def test_read_only_output_folder(tmp_path):
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o500)
    try:
        result = _invoke("render", AU147, "-o", out, *SMALL)
    finally:
        out.chmod(0o700)
    assert result.exit_code == 1
    assert "Permission denied" in result.output and "Traceback" not in result.output


# ----------------------------------------------------------------------------- preview


def test_preview_png(tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "p.png"
    result = _invoke("preview", AU147, "-o", out, "--n", 2, "--edgesize", 32, "--device",
                     "cpu")
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_preview_too_large_is_refused_before_rendering(tmp_path):
    out = tmp_path / "p.png"
    # 4 images of gaussian_2d, binary_2d at 10^5 px are hundreds of GiB: refused with the
    # option to change, before anything is allocated or written (this used to be a MemoryError)
    result = _invoke("preview", AU147, "-o", out, "--edgesize", 100000, "--device", "cpu")
    assert result.exit_code == 1
    assert "--edgesize 100000 need at least" in result.output and "GiB" in result.output
    assert "Traceback" not in result.output and not out.exists()


def test_physics_options_reach_the_files_and_manifest(tmp_path):
    out = tmp_path / "phys"
    result = _invoke("render", AU147, *SMALL, "--n-rotation", "3", "-o", out,
                     "--output-types", "gaussian_2d,coordinates_3d", "--probe-kv", "200",
                     "--probe-mrad", "20", "--probe-source-size", "0.5", "--thermal",
                     "--thermal-rms", "au=0.1", "--z-exponent", "1.7", "--dose", "100",
                     "--read-noise", "0.01", "--scan-jitter", "0.1", "--drift", "0.5",
                     "--phonon-jitter", "--column-correction", "0.17", "--column-broadening",
                     "0.004", "--quiet")
    assert result.exit_code == 0, result.output
    with np.load(out / "au147_icosahedron" / "0000.npz", allow_pickle=False) as z:
        for key in ("gaussian_2d", "gaussian_2d_clean", "electrons_per_pixel",
                    "scan_offsets", "coordinates_3d", "rotations"):
            assert key in z.files, key
        assert z["scan_offsets"].shape == (3, 32, 2)
    params = json.loads((out / "manifest.json").read_text())["parameters"]
    assert params["thermal"] and params["thermal_overrides"] == [["Au", 0.1]]
    assert params["probe_optics"]["residual"] < 0.05 and len(params["probe"]) >= 1
    assert params["column_correction"] == [0.17] and params["column_broadening"] == 0.004
    bad = _invoke("render", AU147, *SMALL, "-o", tmp_path / "bad", "--thermal-rms", "Xx=1")
    assert bad.exit_code != 0 and "Traceback" not in bad.output


def test_z_exponent_default_is_haadf_like_and_zero_for_legacy(tmp_path):
    for extra, want in (([], 1.7), (["--legacy"], 0.0), (["--z-exponent", "0"], 0.0)):
        out = tmp_path / f"z{len(extra)}{want}"
        result = _invoke("render", AU147, *SMALL, "--n-rotation", "2", "-o", out, "--quiet",
                         *extra)
        assert result.exit_code == 0, result.output
        params = json.loads((out / "manifest.json").read_text())["parameters"]
        assert params["z_exponent"] == want, extra


def test_default_workers_threads_for_compiled_gaussians(tmp_path, monkeypatch):
    """Without --workers: one process on threads when the compiled kernel makes every
    output, one per core otherwise (NumPy labels, TIFF stacks, legacy mode)."""
    from xyz2image_gpu.pipeline.kernels import compiled as renderers

    monkeypatch.setattr(run_config, "available_cores", lambda: 6)
    plain = RenderSettings()
    compiled = renderers.compiled_kernel_available()
    assert runner_mod.default_workers(plain, ("gaussian_2d",)) == (1 if compiled else 6)
    assert runner_mod.default_workers(plain, ("coordinates_3d", "gaussian_3d")) == (
        1 if compiled else 6)
    assert runner_mod.default_workers(plain, ("gaussian_2d", "delta_3d")) == 6
    assert runner_mod.default_workers(plain, ("gaussian_2d", "gaussian_2d_image")) == 6
    assert runner_mod.default_workers(RenderSettings(legacy=True), ("gaussian_2d",)) == 6
    monkeypatch.setattr(renderers, "compiled_kernel_available", lambda: False)
    assert runner_mod.default_workers(plain, ("gaussian_2d",)) == 6
    monkeypatch.undo()
    out = tmp_path / "out"
    result = _invoke("render", AU147, PT309, "-o", out, "--edgesize", "24", "--n-rotation",
                     "3", "--output-types", "gaussian_2d", "--device", "cpu")
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["execution"]["workers"] == runner_mod.default_workers(
        RenderSettings(), ("gaussian_2d",))


def test_error_while_a_unit_finishes_behind_the_next(tmp_path, monkeypatch):
    """With one worker a unit's archive is assembled while the next unit renders: a write
    error there still stops the run with a clean message, nothing half-written is left and
    the unit is not recorded as complete."""
    calls = []
    original = writers.NpzStreamWriter._assemble

    def fail_first(self, archive):
        calls.append(self.path.name)
        if len(calls) == 1:
            raise OSError(errno.EIO, "Input/output error")
        return original(self, archive)

    monkeypatch.setattr(writers.NpzStreamWriter, "_assemble", fail_first)
    out = tmp_path / "out"
    result = _invoke("render", AU147, PT309, "-o", out, "--n-rotation", 40, *SMALL)
    assert result.exit_code == 1
    assert "Input/output error" in result.output and "Traceback" not in result.output
    assert not [p for p in out.rglob("*") if is_temporary(p)]
    files = json.loads((out / "manifest.json").read_text())["files"]
    assert files["au147_icosahedron"]["completed_stacks"] == []
    assert not (out / "au147_icosahedron" / "0000.npz").exists()


def test_units_finish_behind_the_next_and_are_all_recorded(tmp_path):
    """Many units on one worker: every stack complete in the manifest, bytes as with two
    workers (where no unit finishes behind another)."""
    inputs = [AU147, PT309]
    common = ["--edgesize", "24", "--n-rotation", "6", "--n-stacks", "3", "--output-types",
              "gaussian_2d,coordinates_3d,gaussian_2d_image"]
    one = tmp_path / "one"
    two = tmp_path / "two"
    assert _invoke("render", *inputs, "-o", one, "--workers", 1, *common).exit_code == 0
    assert _invoke("render", *inputs, "-o", two, "--workers", 2, *common).exit_code == 0
    assert _output_files(one) == _output_files(two)
    manifest = json.loads((one / "manifest.json").read_text())
    for entry in manifest["files"].values():
        assert entry["status"] == "complete" and entry["completed_stacks"] == [0, 1, 2]


def test_render_warns_when_a_fixed_intensity_scale_clips(tmp_path):
    # fixed-scale integer images: pixels at the top grey level are counted per stack and
    # named in a warning (they lost their brightest values); a scale that fits says nothing
    from xyz2image_gpu.structures.examples import bundled_examples

    structure = bundled_examples()[0]
    common = ["render", str(structure), "--n-rotation", "2", "--edgesize", "32", "--device",
              "cpu", "--normalization", "fixed", "--output-types", "gaussian_2d"]
    loud = CliRunner().invoke(cli, [*common, "-o", str(tmp_path / "a"), "--intensity-scale",
                                    "1000"])
    assert loud.exit_code == 0, loud.output
    with np.load(next((tmp_path / "a").rglob("0000.npz"))) as z:
        at_top = int((z["gaussian_2d"] == 255).sum())
    assert at_top > 0 and f"{at_top} pixels" in loud.output
    assert "sit at the top grey level 255" in loud.output
    quiet = CliRunner().invoke(cli, [*common, "-o", str(tmp_path / "b"), "--intensity-scale",
                                     "0.5", "--bitrate", "16"])
    assert quiet.exit_code == 0 and "top grey level" not in quiet.output, quiet.output
