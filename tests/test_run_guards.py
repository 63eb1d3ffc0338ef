"""A run never leaves silent garbage: requests that cannot fit memory, folders that would mix
settings, changed inputs, unwritable outputs, signals and odd input paths all end in a clear
message (issue 9, item 7); and the units a run sends to its workers."""

from __future__ import annotations

import errno
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tifffile
from click.testing import CliRunner

from xyz2image_gpu import RenderSettings
from xyz2image_gpu import output as writers
from xyz2image_gpu.cli import cli
from xyz2image_gpu.output import is_temporary
from xyz2image_gpu.run import RunConfig
from xyz2image_gpu.run import memory as run_memory
from xyz2image_gpu.run.execute import _Run
from xyz2image_gpu.structures.examples import bundled_examples

AU147 = next(p for p in bundled_examples() if p.name == "au147_icosahedron.xyz")
PT309 = next(p for p in bundled_examples() if p.name == "pt309_icosahedron.xyz")
SMALL = ["--edgesize", "16", "--workers", "1"]
RESUME = "run the same command again"


def _invoke(*args: object):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def _stack_files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")
            if p.suffix in (".npz", ".tif")}


def _temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if is_temporary(p)]


def test_units_share_the_run_config_and_pickle(tmp_path):
    config = RunConfig(inputs=(AU147, PT309), output_folder=tmp_path / "out",
                       settings=RenderSettings(edgesize=16), n_stacks=2, workers=2)
    state = _Run(config, print, "none", None, 10.0)
    state.plan()
    units, total = state.prepare()
    assert len(units) == 4 and total == 4
    assert len({id(u.config) for u in units}) == 1  # one config object, not copies
    assert units[0].config.settings == config.settings and units[0].config.inputs == ()
    clone = pickle.loads(pickle.dumps(units[3]))
    assert clone == units[3] and clone.outputs() == units[3].outputs()
    assert clone.outputs()[0] == Path(tmp_path / "out" / "pt309_icosahedron" / "0001.npz")


# ------------------------------------------------------------------ 1. memory, up front


def test_request_that_cannot_fit_memory_is_refused_before_writing(tmp_path, monkeypatch):
    out = tmp_path / "out"
    result = _invoke("render", AU147, "-o", out, "--edgesize", 100000)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "--edgesize 100000" in result.output and "memory" in result.output
    assert "delta_3d" in result.output and RESUME not in result.output
    assert not out.exists()  # nothing written, not even the folder

    # one image of delta_3d at 128 px fits 40 MiB; 64 of them or two workers do not
    monkeypatch.setattr(run_memory, "available_memory", lambda: 40 << 20)
    args = ["render", AU147, "-o", out, "--edgesize", 128, "--output-types", "delta_3d"]
    result = _invoke(*args, "--batch-size", 64)
    assert result.exit_code == 1 and "--batch-size 64" in result.output
    result = _invoke(*args, "--workers", 2, "--n-stacks", 2)
    assert result.exit_code == 1 and "--workers 2" in result.output
    assert "--workers 1 or fewer" in result.output
    assert not out.exists()


# ---------------------------------------------------------- 2. --overwrite never mixes


def test_overwrite_with_other_settings_removes_the_old_stacks(tmp_path):
    out = tmp_path / "out"
    first = _invoke("render", AU147, PT309, "-o", out, "--n-stacks", 2, "--output-types",
                    "gaussian_2d,gaussian_2d_image", *SMALL)
    assert first.exit_code == 0, first.output
    assert len(_stack_files(out)) == 8
    (out / "pt309_icosahedron" / "notes.txt").write_text("not ours: kept")

    result = _invoke("render", AU147, "-o", out, "--overwrite", "--gauss-sigma", 0.5,
                     "--output-types", "gaussian_2d", *SMALL)
    assert result.exit_code == 0, result.output
    assert "removed 8 stack files rendered with other settings" in result.output
    assert _stack_files(out) == {"au147_icosahedron/0000.npz"}
    assert (out / "pt309_icosahedron" / "notes.txt").exists()
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["files"]) == {"au147_icosahedron"}
    assert manifest["parameters"]["gauss_sigma"] == 0.5

    # same settings: --overwrite redoes this run's stacks and keeps the other inputs'
    assert _invoke("render", PT309, "-o", out, "--gauss-sigma", 0.5, "--output-types",
                   "gaussian_2d", *SMALL).exit_code == 0
    result = _invoke("render", AU147, "-o", out, "--overwrite", "--gauss-sigma", 0.5,
                     "--output-types", "gaussian_2d", *SMALL)
    assert result.exit_code == 0 and "removed" not in result.output
    assert _stack_files(out) == {"au147_icosahedron/0000.npz", "pt309_icosahedron/0000.npz"}
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["files"]) == {"au147_icosahedron", "pt309_icosahedron"}


# ------------------------------------------------------------------ 3. changed inputs


def test_changed_input_is_reported_and_rendered_again(tmp_path):
    source = tmp_path / "au147_icosahedron.xyz"
    source.write_bytes(AU147.read_bytes())
    out = tmp_path / "out"
    assert _invoke("render", source, "-o", out, *SMALL).exit_code == 0
    result = _invoke("render", source, "-o", out, *SMALL)
    assert "warning" not in result.output and "1 complete stacks skipped" in result.output

    source.write_text(AU147.read_text().replace("0.00000000", "0.10000000", 1))
    result = _invoke("render", source, "-o", out, *SMALL)
    assert result.exit_code == 0
    assert f"warning: {source} changed since its stacks were written" in result.output
    assert "rendered again" in result.output and "wrote 1 images in 1 stacks" in result.output


# ------------------------------------------------------------- 4. TIFF disk full


@pytest.mark.parametrize("error", [
    OSError(errno.ENOSPC, "No space left on device"),
    # what numpy's tofile raises for a short write on a full disk: no errno at all
    OSError("16384 requested and 16048 written"),
], ids=["enospc", "short-write"])
def test_tiff_disk_full_names_the_file_and_says_no_space(tmp_path, monkeypatch, error):
    def disk_full(self, *args, **kwargs):
        raise error

    monkeypatch.setattr(tifffile.TiffWriter, "write", disk_full)
    out = tmp_path / "out"
    result = _invoke("render", AU147, "-o", out, "--output-types",
                     "gaussian_2d,gaussian_2d_image", *SMALL)
    assert result.exit_code == 1 and "Traceback" not in result.output
    tif = out / "au147_icosahedron" / "0000_gaussian_2d.tif"
    assert str(tif) in result.output and "No space left" in result.output
    assert "free space" in result.output
    assert not _stack_files(out) and not _temporaries(out)


# ------------------------------------------------------------------ 5. SIGTERM


@pytest.mark.skipif(not hasattr(signal, "SIGTERM") or sys.platform == "win32",
                    reason="POSIX signals")
@pytest.mark.parametrize(("signame", "workers", "group"), [
    ("SIGTERM", 1, False), ("SIGTERM", 2, False), ("SIGTERM", 2, True),
    # a closed terminal or a dropped ssh session: SIGHUP to the session's processes
    ("SIGHUP", 1, False), ("SIGHUP", 2, True),
])
def test_sigterm_ends_like_ctrl_c(tmp_path, signame, workers, group):
    signum = getattr(signal, signame)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "xyz2image_gpu.cli", "render", str(AU147), str(PT309),
           "-o", str(out), "--edgesize", "48", "--n-rotation", "60", "--n-stacks", "20",
           "--output-types", "gaussian_2d,delta_3d,gaussian_2d_image", "--batch-size", "8",
           "--workers", str(workers), "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=group)
    try:
        end = time.monotonic() + 60
        while not list(out.glob("*/*.npz")) and proc.poll() is None \
                and time.monotonic() < end:
            time.sleep(0.01)
        if proc.poll() is not None:
            pytest.skip("the run finished before it could be stopped (machine too fast)")
        time.sleep(0.1)  # mid-unit
        if group:  # as a batch scheduler does: every process of the job
            os.killpg(proc.pid, signum)
        else:
            proc.send_signal(signum)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + signum, stderr
    assert f"interrupted by {signame}; complete stacks are kept" in stderr
    assert RESUME in stderr
    assert "leaked" not in stderr and "Traceback" not in stderr, stderr
    assert not _temporaries(out)
    manifest = json.loads((out / "manifest.json").read_text())
    recorded = {f"{stem}/{s:04d}.npz" for stem, entry in manifest["files"].items()
                for s in entry["completed_stacks"]}
    assert recorded and recorded <= _stack_files(out)


# -------------------------------------------------------- 6. FIFOs and devices as input


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX named pipes")
def test_fifo_and_dev_null_inputs_are_named_for_what_they_are(tmp_path):
    fifo = tmp_path / "pipe.xyz"
    os.mkfifo(fifo)
    for path, kind in [(fifo, "a named pipe (FIFO)"), (Path(os.devnull), "a character device")]:
        result = _invoke("render", path, "-o", tmp_path / "out")
        assert result.exit_code == 2
        assert f"{path}: not a regular file ({kind})" in result.output
        assert "no such file" not in result.output
    assert not (tmp_path / "out").exists()


# --------------------------------------------------- 7. "run again" only where it helps


def test_resume_hint_only_where_rerunning_helps(tmp_path, monkeypatch):
    out = tmp_path / "blocked"
    out.mkdir()
    (out / "au147_icosahedron").write_text("a file where a folder must go")
    result = _invoke("render", AU147, "-o", out, *SMALL)  # would fail the same way again
    assert result.exit_code == 1 and "cannot write output" in result.output
    assert RESUME not in result.output

    hints = {}
    for code in (errno.ENOSPC, errno.EIO):
        def fail(self, batch, code=code):
            raise OSError(code, os.strerror(code))

        monkeypatch.setattr(writers.NpzStreamWriter, "append", fail)
        result = _invoke("render", AU147, "-o", tmp_path / f"e{code}", *SMALL)
        assert result.exit_code == 1 and "Traceback" not in result.output
        hints[code] = result.output
    assert f"free space, then {RESUME}" in hints[errno.ENOSPC]  # space first
    assert RESUME in hints[errno.EIO]  # a transient error: rerunning can help


# ---------------------------------------------------------------- 8. import stays light


def test_import_loads_no_run_or_output_machinery():
    code = ("import sys, xyz2image_gpu; heavy = ('xyz2image_gpu.run', 'xyz2image_gpu.output', "
            "'filelock', 'tifffile', 'click', 'tqdm', 'multiprocessing'); "
            "print(','.join(m for m in heavy if m in sys.modules)); "
            "import xyz2image_gpu.run; "
            "print(','.join(m for m in ('filelock', 'tifffile') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, timeout=60)
    assert result.stdout.splitlines() == ["", ""], result.stdout


def test_an_input_deleted_mid_run_fails_alone(tmp_path, monkeypatch):
    """An input that disappears after the run began is that file's read error (not an
    output write error stopping the run); the other inputs complete."""
    import shutil

    inputs = tmp_path / "in"
    inputs.mkdir()
    for path in (AU147, PT309):
        shutil.copy(path, inputs / path.name)
    prepare = _Run.prepare

    def prepare_then_delete(self):
        planned = prepare(self)
        (inputs / PT309.name).unlink()
        return planned

    monkeypatch.setattr(_Run, "prepare", prepare_then_delete)
    out = tmp_path / "out"
    result = _invoke("render", inputs, "-o", out, *SMALL, "--output-types", "gaussian_2d")
    assert result.exit_code == 1
    assert f"{inputs / PT309.name}" in result.output and "cannot read input" in result.output
    assert "cannot write output" not in result.output
    files = json.loads((out / "manifest.json").read_text())["files"]
    assert files["au147_icosahedron"]["status"] == "complete"
    assert files["pt309_icosahedron"]["status"] == "failed"
    assert sorted(p.name for p in out.rglob("*.npz")) == ["0000.npz"]


def test_input_names_that_would_clash_with_the_output_folders_own_files(tmp_path):
    """'.lock.xyz' and 'manifest.json.xyz' aborted every input with 'File exists'; a stem
    like '.a.tmp' had its stack removed as a stale temporary on every run. Given by name
    they are refused up front; a folder's hidden files are skipped."""
    import shutil

    for name in (".lock.xyz", "manifest.json.xyz", ".a.123.tmp.xyz"):
        bad = tmp_path / name
        shutil.copy(AU147, bad)
        result = _invoke("render", bad, "-o", tmp_path / "out", *SMALL)
        assert result.exit_code == 2 and "keeps for its own files" in result.output, name
    assert not (tmp_path / "out").exists()
    folder = tmp_path / "folder"
    folder.mkdir()
    shutil.copy(AU147, folder / ".lock.xyz")
    shutil.copy(AU147, folder / "au.xyz")
    result = _invoke("render", folder, "-o", tmp_path / "out2", *SMALL)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "out2").iterdir()) == [".lock", "au",
                                                                     "manifest.json"]
