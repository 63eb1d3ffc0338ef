"""Beyond one process (issue 12): the unit API, job-array shards and Dask clusters all write
the bytes that one ``xyz2image-gpu render`` writes, and resume after a kill."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from xyz2image_gpu import RenderSettings
from xyz2image_gpu.output import is_temporary, temporary_path
from xyz2image_gpu.run import (
    FolderBusyError,
    RunConfig,
    UnitCancelled,
    plan_run,
    record_complete,
    render_unit,
    run,
)
from xyz2image_gpu.structures.examples import bundled_examples

EXAMPLES = sorted(bundled_examples())[:3]
AU147 = next(p for p in bundled_examples() if p.name == "au147_icosahedron.xyz")
TYPES = ("gaussian_2d", "coordinates_3d", "gaussian_2d_image")


def _config(out: Path, **kw) -> RunConfig:
    base = {"inputs": tuple(EXAMPLES), "output_folder": out,
            "settings": RenderSettings(edgesize=16), "output_types": TYPES, "n_rotation": 3,
            "n_stacks": 2, "seed": 5, "device": "cpu", "workers": 1}
    return RunConfig(**{**base, **kw})


def _hashes(folder: Path) -> dict[str, str]:
    """sha256 of every stack file (the manifest holds paths and timings: compared apart)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.suffix in (".npz", ".tif")}


def _records(folder: Path) -> dict[str, tuple[str, list[int]]]:
    files = json.loads((folder / "manifest.json").read_text())["files"]
    return {stem: (e["status"], e["completed_stacks"]) for stem, e in files.items()}


def _temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if is_temporary(p)]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """One process, the CLI's runner: the bytes every other executor must write."""
    out = tmp_path_factory.mktemp("reference")
    summary = run(_config(out), progress="none")
    assert summary.stacks_written == 2 * len(EXAMPLES) and not summary.failed
    return out


# ------------------------------------------------------------------------- unit API


def test_temporary_names_are_unique_per_host_process_and_attempt(tmp_path):
    final = tmp_path / "0000.npz"
    a, b = temporary_path(final), temporary_path(final)
    assert a != b and a.parent == b.parent == tmp_path
    assert is_temporary(a) and is_temporary(b)
    host = socket.gethostname().split(".")[0]
    for part in (str(os.getpid()), host[:8].replace(".", "-")):
        assert part in a.name


def test_the_unit_api_writes_what_the_runner_writes(tmp_path, reference):
    out = tmp_path / "api"
    with plan_run(_config(out)) as plan:
        assert [(u.stem, u.stack) for u in plan.units] == [
            (p.stem, s) for p in EXAMPLES for s in range(2)]
        assert plan.total_images == sum(
            3 * json.loads((reference / "manifest.json").read_text())["files"][p.stem]
            ["n_frames"] for p in EXAMPLES for _ in range(2))
        with pytest.raises(FolderBusyError):  # the plan holds the folder until closed
            plan_run(_config(out))
        for unit in reversed(plan.units):  # any order: each unit is independent
            result = render_unit(unit)
            assert result.ok and all(p.is_file() for p in result.files)
            record_complete(plan, result)
        assert plan.summary.stacks_written == len(plan.units)
    assert _hashes(out) == _hashes(reference) and len(_hashes(out)) == 4 * len(EXAMPLES)
    assert _records(out) == _records(reference)
    with plan_run(_config(out)) as again:  # resume: nothing left
        assert again.units == [] and again.summary.stacks_skipped == 2 * len(EXAMPLES)


def test_a_cancelled_unit_leaves_nothing(tmp_path):
    config = _config(tmp_path / "out", inputs=(AU147,), settings=RenderSettings(edgesize=16),
                     batch_size=1)
    with plan_run(config) as plan:
        calls = []
        with pytest.raises(UnitCancelled):
            render_unit(plan.units[0], calls.append, stop=lambda: len(calls) >= 2)
        assert calls == [1, 1]
    folder = tmp_path / "out" / AU147.stem
    assert not _temporaries(tmp_path / "out") and not list(folder.glob("*.npz"))
    assert _records(tmp_path / "out") == {AU147.stem: ("pending", [])}


def test_a_unit_whose_input_fails_leaves_nothing_and_is_recorded_failed(tmp_path):
    config = _config(tmp_path / "out", inputs=(AU147,), strict=True, settings=RenderSettings(
        edgesize=16, framing="fixed", pixel_size=0.2))  # a 3 Å field: atoms fall outside
    with plan_run(config) as plan:
        result = render_unit(plan.units[1])
        assert not result.ok and "outside" in result.error and result.files == ()
        record_complete(plan, result)
        assert plan.summary.failed == [(str(AU147), result.error)]
    assert not list((tmp_path / "out").rglob("*.npz")) and not _temporaries(tmp_path / "out")
    assert _records(tmp_path / "out") == {AU147.stem: ("failed", [])}


def test_merged_manifests_keep_every_shards_stacks():
    from xyz2image_gpu.run import SettingsMismatchError
    from xyz2image_gpu.run.shards import merge_manifest, shard_units

    assert shard_units(7, (1, 3)) == [1, 4] and shard_units(3, None) == [0, 1, 2]

    def entry(sha, done, status="pending", error=None):
        return {"sha256": sha, "completed_stacks": done, "status": status, "error": error,
                "outside_field": {str(s): {"atoms_outside": 0} for s in done}}

    disk = {"parameters": {"seed": 1}, "n_stacks": 3, "files": {
        "a": entry("x", [0, 2]), "b": entry("y", [1]), "gone": entry("z", [0])}}
    mine = {"parameters": {"seed": 1}, "n_stacks": 3, "files": {
        "a": entry("x", [1]), "b": entry("changed", [0]), "c": entry("w", [], "failed", "bad")}}
    merged, dropped = merge_manifest(disk, mine)
    merged = merged["files"]
    assert merged["a"]["completed_stacks"] == [0, 1, 2] and merged["a"]["status"] == "complete"
    assert set(merged["a"]["outside_field"]) == {"0", "1", "2"} and dropped == []
    assert merged["b"]["completed_stacks"] == [0]  # its input changed: the old stacks go
    assert merged["c"]["status"] == "failed" and merged["gone"] == disk["files"]["gone"]
    # a file failed at stack 1 in one shard: the other's stack 2 goes, record and files
    mine["files"]["a"] = {**entry("x", [], "failed", "outside"), "failed_stack": 1}
    merged, dropped = merge_manifest(disk, mine)
    assert merged["files"]["a"]["completed_stacks"] == [0] and dropped == [("a", 2)]
    assert merged["files"]["a"]["status"] == "failed" and merged["files"]["a"]["error"]
    assert set(merged["files"]["a"]["outside_field"]) == {"0"}
    # a rerun in which the stack that failed completes clears the failure (a transient
    # fault, or a rerun without --strict): nothing is dropped, the file is complete
    failed_disk = {**disk, "files": {**disk["files"], "a": {
        **entry("x", [0], "failed", "outside"), "failed_stack": 1}}}
    mine["files"]["a"] = entry("x", [0, 1, 2])
    merged, dropped = merge_manifest(failed_disk, mine)
    assert dropped == [] and merged["files"]["a"]["status"] == "complete"
    assert "failed_stack" not in merged["files"]["a"] and not merged["files"]["a"]["error"]
    # while another shard's rerun has not reached stack 1 yet, the failure stands
    mine["files"]["a"] = entry("x", [2])
    merged, dropped = merge_manifest(failed_disk, mine)
    assert merged["files"]["a"]["status"] == "failed" and dropped == [("a", 2)]
    with pytest.raises(SettingsMismatchError, match="other settings"):
        merge_manifest({**disk, "parameters": {"seed": 2}}, mine)


# ------------------------------------------------------------------- job-array shards

#: CLI runs of the shard tests: 6 units (3 files x 2 stacks) of 48 images each.
SHARD_ARGS = ["--edgesize", "32", "--n-rotation", "48", "--n-stacks", "2", "--seed", "3",
              "--device", "cpu", "--workers", "1", "--batch-size", "8", "--output-types",
              ",".join(TYPES), "--quiet"]


def _cli(out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "xyz2image_gpu.cli", "render", *map(str, EXAMPLES), "-o",
         str(out), *SHARD_ARGS, *extra], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)


def _finish(proc: subprocess.Popen) -> None:
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, output


@pytest.fixture(scope="module")
def shard_reference(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shard-reference")
    _finish(_cli(out))
    return out


def test_two_shards_at_once_write_what_one_process_writes(tmp_path, shard_reference):
    out = tmp_path / "out"
    procs = [_cli(out, "--shard", f"{i}/2") for i in range(2)]
    for proc in procs:
        _finish(proc)
    assert _hashes(out) == _hashes(shard_reference) and len(_hashes(out)) == 12
    assert _records(out) == _records(shard_reference)
    assert all(status == "complete" for status, _ in _records(out).values())
    assert not _temporaries(out)
    busy = subprocess.run(  # a second copy of a running shard is refused
        [sys.executable, "-c", (
            "import sys, filelock, subprocess;"
            f"lock = filelock.FileLock({str(out / '.lock.shard-1-of-2')!r}); lock.acquire();"
            "sys.exit(subprocess.run(sys.argv[1:]).returncode)"),
         sys.executable, "-m", "xyz2image_gpu.cli", "render", *map(str, EXAMPLES), "-o",
         str(out), *SHARD_ARGS, "--shard", "1/2", "--overwrite"],
        check=False, capture_output=True, text=True, timeout=60)
    assert busy.returncode == 1 and "shard 1/2 is writing" in busy.stderr, busy.stderr


def test_a_killed_shard_resumes_to_the_same_bytes(tmp_path, shard_reference):
    out = tmp_path / "out"
    _finish(_cli(out, "--shard", "1/2"))
    proc = _cli(out, "--shard", "0/2")
    first = out / EXAMPLES[0].stem / "0000.npz"
    deadline = time.monotonic() + 60
    while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    killed = proc.poll() is None
    proc.kill()
    proc.communicate(timeout=60)
    records = _records(out)
    if killed:  # the usual case: killed between its first and its last unit
        assert records[EXAMPLES[2].stem][1] == [1]
    _finish(_cli(out, "--shard", "0/2"))
    assert _hashes(out) == _hashes(shard_reference)
    assert _records(out) == _records(shard_reference)
    assert not _temporaries(out)


def test_shards_keep_a_failing_file_as_one_process_does(tmp_path):
    """au147 at 1.05 Å per pixel, seed 2, --strict: one process renders stack 0 and fails at
    stack 1 (atoms outside the field), so stacks 2 and 3 are never rendered. Shard 0 of 2
    renders stacks 0 and 2 while shard 1 fails at stack 1: stack 2 goes again."""
    args = [sys.executable, "-m", "xyz2image_gpu.cli", "render", str(AU147), "--edgesize",
            "16", "--framing", "fixed", "--pixel-size", "1.05", "--all-random", "--strict",
            "--seed", "2", "--n-stacks", "4", "--output-types", "gaussian_2d", "--device",
            "cpu", "--quiet", "-o"]
    one = subprocess.run([*args, str(tmp_path / "one")], capture_output=True, text=True,
                         timeout=120, check=False)
    assert one.returncode == 1 and "outside the field of view" in one.stderr
    assert _records(tmp_path / "one") == {AU147.stem: ("failed", [0])}  # the setting holds
    for order in ((0, 1), (1, 0)):  # whichever shard ends first
        out = tmp_path / f"shards{order[0]}"
        for i in order:
            subprocess.run([*args, str(out), "--shard", f"{i}/2"], capture_output=True,
                           timeout=120, check=False)
        assert _records(out) == _records(tmp_path / "one"), order
        assert _hashes(out) == _hashes(tmp_path / "one"), order


def test_shard_and_unsharded_runs_exclude_each_other(tmp_path, monkeypatch):
    import threading

    import filelock

    from xyz2image_gpu.run import lock as run_lock
    from xyz2image_gpu.run.lock import _folder_lock

    # another shard starting checks .lock for an instant: this one waits it out
    checking = filelock.FileLock(str(tmp_path / ".lock"), thread_local=False)
    checking.acquire()
    threading.Timer(0.3, checking.release).start()
    with _folder_lock(tmp_path, (2, 3)):
        pass
    monkeypatch.setattr(run_lock, "_CHECK_WAIT", 0.1)

    with _folder_lock(tmp_path, (0, 3)):
        with pytest.raises(FolderBusyError, match="shards of another"), _folder_lock(tmp_path):
            pass
        with _folder_lock(tmp_path, (1, 3)):  # another shard of the run: welcome
            pass
        # shards of another count would render overlapping units: refused
        with pytest.raises(FolderBusyError, match=r"another count \(--shard i/3\)"), \
                _folder_lock(tmp_path, (0, 4)):
            pass
    with _folder_lock(tmp_path), pytest.raises(FolderBusyError, match="without --shard"), \
            _folder_lock(tmp_path, (0, 3)):
        pass
    assert filelock.FileLock(str(tmp_path / ".lock.shard-0-of-3")).acquire(timeout=0)


# ---------------------------------------------------------------------- Dask clusters

def _shard_config(out: Path, **kw) -> RunConfig:
    """The run of SHARD_ARGS as a RunConfig."""
    return _config(out, settings=RenderSettings(edgesize=32), n_rotation=48, seed=3,
                   batch_size=8, **kw)


def _kill_a_worker_mid_run(distributed, out: Path):
    """Run the shard job on a 2-process cluster and SIGKILL a worker while it renders a unit.

    Returns the killed worker (None when the run ended first), the run's summary and the
    cluster's scheduler address.
    """
    import signal
    import threading

    with distributed.LocalCluster(n_workers=2, threads_per_worker=2, processes=True,
                                  dashboard_address=":0") as cluster, \
            distributed.Client(cluster) as client:
        pids = client.run(os.getpid)
        from xyz2image_gpu.backend import available_cores
        from xyz2image_gpu.run.distributed import _worker_share, _workers_per_host

        hosts = _workers_per_host(client)  # found by address: each worker its host's share
        assert sum(hosts.values()) == 2 and len(hosts) == 1
        assert client.submit(_worker_share, hosts, pure=False).result() == max(
            1, available_cores() // 2)
        summary: dict[str, object] = {}
        thread = threading.Thread(target=lambda: summary.update(result=run(
            _shard_config(out, scheduler=cluster.scheduler_address), progress="none")))
        thread.start()
        victim = None
        deadline = time.monotonic() + 60
        while victim is None and thread.is_alive() and time.monotonic() < deadline:
            busy = [a for a, keys in client.processing().items() if keys]
            if busy and any((out / p.stem).is_dir() and any((out / p.stem).iterdir())
                            for p in EXAMPLES):
                victim = busy[0]
                os.kill(pids[victim], signal.SIGKILL)  # mid-unit: its temporaries stay
            time.sleep(0.005)
        thread.join(120)
        return victim, summary, cluster.scheduler_address


def test_a_worker_killed_mid_run_loses_nothing(tmp_path, shard_reference):
    distributed = pytest.importorskip("distributed")
    for attempt in range(3):  # a loaded machine may finish the small run before the kill
        out = tmp_path / f"out{attempt}"
        victim, summary, address = _kill_a_worker_mid_run(distributed, out)
        if victim is not None:
            break
    assert victim is not None, "the run ended before a worker could be killed"
    assert summary["result"].stacks_written == 6 and not summary["result"].failed
    assert _hashes(out) == _hashes(shard_reference)
    assert _records(out) == _records(shard_reference)
    assert not _temporaries(out)
    execution = json.loads((out / "manifest.json").read_text())["execution"]
    assert execution["scheduler"] == address and execution["workers"] == 2


def test_a_scheduler_file_and_a_worker_of_two_threads(tmp_path, shard_reference):
    """A cluster named by its scheduler file, its one worker with two task threads: the
    bytes of one process."""
    distributed = pytest.importorskip("distributed")

    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=":0") as cluster:
        scheduler_file = tmp_path / "scheduler.json"
        scheduler_file.write_text(json.dumps({"address": cluster.scheduler_address}))
        summary = run(_shard_config(tmp_path / "out", scheduler=str(scheduler_file)),
                      progress="none")
    assert summary.stacks_written == 2 * len(EXAMPLES) and summary.workers == 1
    assert _hashes(tmp_path / "out") == _hashes(shard_reference)
    assert _records(tmp_path / "out") == _records(shard_reference)


def test_driver_interrupted_then_killed_resumes_to_the_same_bytes(tmp_path, shard_reference):
    pytest.importorskip("distributed")
    import signal

    out = tmp_path / "out"
    args = ["--scheduler", "local", "--workers", "2"]

    def start_and_wait_for_a_unit() -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, "-m", "xyz2image_gpu.cli", "render", *map(str, EXAMPLES), "-o",
             str(out), *SHARD_ARGS, *args], stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, start_new_session=True)
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            if any(out.glob("*/*.npz")):  # a unit complete (its files are renamed at the end)
                break
            time.sleep(0.002)
        return proc

    for _attempt in range(3):  # a loaded machine may finish the small run before the signal
        proc = start_and_wait_for_a_unit()  # Ctrl-C: running units stop, nothing half-written
        os.kill(proc.pid, signal.SIGINT)
        output, _ = proc.communicate(timeout=120)
        if proc.returncode == 130 and len(list(out.glob("*/*.npz"))) < 6:
            break
        shutil.rmtree(out, ignore_errors=True)
    assert proc.returncode == 130, output
    assert "interrupted" in output.lower() and not _temporaries(out)
    first = _records(out)  # what completed is recorded, what was running is gone
    recorded = {f"{stem}/{s:04d}.npz" for stem, (_, done) in first.items() for s in done}
    on_disk = {str(p.relative_to(out)) for p in out.glob("*/*.npz")}
    # a unit that a worker finished as the driver stopped may be on disk unrecorded: it is
    # complete (renamed into place at its end), and the rerun renders it again
    assert recorded <= on_disk and len(on_disk) < 6, first
    for name in on_disk:
        assert (out / name).read_bytes() == (shard_reference / name).read_bytes(), name
    proc = start_and_wait_for_a_unit()  # kill -9 of the driver and its cluster
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    _finish(_cli(out, *args))
    assert _hashes(out) == _hashes(shard_reference)
    assert _records(out) == _records(shard_reference)
    assert not _temporaries(out)


def test_gpus_start_one_cuda_worker_per_gpu_with_its_share_of_the_cores(monkeypatch):
    """--gpus wiring, on a stand-in for dask_cuda (no GPU here): one worker per GPU, two
    task threads each (one renders, one finishes), compression and BLAS threads the cores
    divided among the GPUs."""
    distributed = pytest.importorskip("distributed")
    import types

    from xyz2image_gpu.backend import available_cores
    from xyz2image_gpu.run.distributed import start_cluster

    made = []

    def local_cuda_cluster(**options):
        made.append((options, os.environ.get("OMP_NUM_THREADS")))
        return distributed.LocalCluster(processes=False, **options)

    monkeypatch.setitem(sys.modules, "dask_cuda",
                        types.SimpleNamespace(LocalCUDACluster=local_cuda_cluster))
    with start_cluster(None, 2, None) as (client, n_workers, share):
        assert len(client.scheduler_info()["workers"]) == 2
    expected = max(1, available_cores() // 2)
    assert (n_workers, share) == (2, expected)
    assert made == [({"n_workers": 2, "threads_per_worker": 2, "dashboard_address": ":0"},
                     str(expected))]


@pytest.mark.parametrize(("args", "message"), [
    (["--shard", "2/2"], "is not a shard"),
    (["--shard", "0/2", "--scheduler", "local"], "cannot be combined with --scheduler"),
    (["--gpus", "1", "--scheduler", "tcp://h:8786"], "cannot be combined with --scheduler"),
    (["--gpus", "1", "--device", "cpu"], "cannot be combined with --device cpu"),
    (["--scheduler", "nowhere.json"], "an existing scheduler file"),
])
def test_cluster_option_mistakes_are_refused_before_writing(tmp_path, args, message):
    from click.testing import CliRunner

    from xyz2image_gpu.cli import cli

    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["render", str(AU147), "-o", str(out), *args])
    assert result.exit_code in (1, 2) and message in result.output, result.output
    assert not out.exists()


def test_an_unreachable_scheduler_is_a_cluster_error_not_an_output_error(tmp_path):
    pytest.importorskip("distributed")
    import dask
    from click.testing import CliRunner

    from xyz2image_gpu.cli import cli

    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with dask.config.set({"distributed.comm.timeouts.connect": "0.5s"}):
        result = CliRunner().invoke(cli, ["render", str(AU147), "-o", str(tmp_path / "out"),
                                          "--scheduler", f"tcp://127.0.0.1:{port}", "--quiet"])
    assert result.exit_code == 1
    assert f"cannot connect to the scheduler tcp://127.0.0.1:{port}" in result.output
    assert "cannot write output" not in result.output and "Traceback" not in result.output
    assert not list((tmp_path / "out").glob("*/*.npz"))


def test_gpus_without_dask_cuda_says_what_to_install(tmp_path, monkeypatch):
    pytest.importorskip("distributed")
    from xyz2image_gpu.run.distributed import ClusterError, check_cluster_request

    monkeypatch.setitem(sys.modules, "dask_cuda", None)  # import fails
    with pytest.raises(ClusterError, match=r"xyz2image-gpu\[dask,gpu\]"):
        check_cluster_request(None, 1)


def test_progress_counts_units_beside_images():
    import io

    from xyz2image_gpu.run import Progress

    stream = io.StringIO()
    progress = Progress(8, "lines", stream, interval=0.0)
    progress.set_units(2)
    progress.update(4)
    progress.unit_done()
    progress.update(4)
    progress.close()
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("rendered 4/8 images in 0/2 units (50%)")
    assert lines[1].startswith("rendered 8/8 images in 1/2 units (100%)")
    bar = Progress(8, "bar", io.StringIO())
    bar.set_units(3)
    bar.unit_done()
    assert "units 1/3" in str(bar._bar)
    bar.close()


def test_the_zarr_store_from_shards_and_dask_workers(tmp_path):
    """One zarr store written by two shards at once, and by Dask workers: each unit its own
    group, the bytes of one process; the store's copy of the manifest is the merged one."""
    pytest.importorskip("zarr")
    distributed = pytest.importorskip("distributed")

    def store_files(out: Path) -> dict[str, str]:
        return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted((out / "stacks.zarr").rglob("*")) if p.is_file()
                and p.parent != out / "stacks.zarr"}  # the root holds the run's manifest

    config = {"format": "zarr", "output_types": ("gaussian_2d", "coordinates_3d")}
    run(_config(tmp_path / "one", **config), progress="none")
    expected = store_files(tmp_path / "one")
    assert len(expected) > 2 * len(EXAMPLES)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=":0") as cluster:
        run(_config(tmp_path / "dask", scheduler=cluster.scheduler_address, **config),
            progress="none")
    assert store_files(tmp_path / "dask") == expected
    args = [sys.executable, "-m", "xyz2image_gpu.cli", "render", *map(str, EXAMPLES), "-o",
            str(tmp_path / "shards"), "--edgesize", "16", "--n-rotation", "3", "--n-stacks",
            "2", "--seed", "5", "--device", "cpu", "--workers", "1", "--format", "zarr",
            "--output-types", "gaussian_2d,coordinates_3d", "--compress-level", "6", "--quiet",
            "--shard"]
    procs = [subprocess.Popen([*args, f"{i}/2"]) for i in range(2)]
    assert [p.wait(120) for p in procs] == [0, 0]
    assert store_files(tmp_path / "shards") == expected
    assert _records(tmp_path / "shards") == _records(tmp_path / "one")
    root = json.loads((tmp_path / "shards" / "stacks.zarr" / "zarr.json").read_text())
    assert root["attributes"]["xyz2image_gpu"]["manifest"]["files"] == json.loads(
        (tmp_path / "shards" / "manifest.json").read_text())["files"]
    assert not _temporaries(tmp_path / "shards") and not _temporaries(tmp_path / "dask")
