"""The units of a run as tasks of a Dask cluster (``render --scheduler``, ``--gpus``).

The driver (the process that runs ``render``) plans the run and holds the folder's lock as
any run does (:mod:`.plan`); each unit becomes one task, :func:`_dask_task`, which calls
:func:`~.units.render_unit` on a worker and returns its small :class:`~.units.UnitResult`;
the driver alone records results in the manifest. So the outputs are the bytes of the
single-machine CLI, and the same command resumes a run interrupted in any way.

* **Clusters**: ``local`` starts a ``distributed.LocalCluster`` of ``--workers`` processes
  (default: one per core), two task threads each; ``--gpus N`` a ``dask_cuda.LocalCUDACluster``
  of N workers, one per GPU; an address (``tcp://host:8786``) or a scheduler file (.json)
  connects to a running cluster, whose workers must see the inputs and the output folder at
  the same paths (a shared file system).
* **Threads**: a worker process renders one unit at a time (a renderer is not shared
  between threads), and a second task thread renders the next unit while the last one's
  files are finished (compressed, assembled, synced), as the command-line runner overlaps
  them: local clusters have two task threads per worker. Each unit compresses on its
  worker's share of the cores: the cores of a local cluster divided among its workers; on
  a cluster found by address, the cores of the worker's host divided by the worker
  processes on that host (as the scheduler lists them when the run starts). BLAS of a
  local cluster's workers is limited to the same share.
* **Lost workers**: the scheduler runs a lost worker's tasks again elsewhere; temporaries
  are unique per host, process and attempt, so the retried unit never meets its first
  attempt's files, which the driver removes when the run ends.
* **Ctrl-C** (or SIGTERM): the driver sets a ``distributed.Event`` that running tasks poll
  between batches (at most every 0.5 s); they remove their temporaries and return, the
  driver waits for them (60 s at most), records what completed and exits; the same command
  resumes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..backend import available_cores
from .units import Unit, UnitCancelled, UnitResult, _thread_env, render_unit

if TYPE_CHECKING:
    from .execute import _Run

__all__ = [
    "ClusterError",
    "check_cluster_request",
    "execute_on_dask",
    "start_cluster",
]

_DASK_MISSING = ("--scheduler needs Dask's distributed package: pip install "
                 "'xyz2image-gpu[dask]'")
_DASK_CUDA_MISSING = ("--gpus needs dask-cuda (and CuPy): pip install "
                      "'xyz2image-gpu[dask,gpu]'")
#: Seconds between two looks of a running task at the stop event.
_STOP_POLL = 0.5
#: Seconds the driver waits for running tasks to stop after Ctrl-C.
_STOP_WAIT = 60.0


class ClusterError(RuntimeError):
    """The cluster that ``--scheduler``/``--gpus`` ask for cannot be had (a package missing,
    a scheduler that is neither ``local``, an address nor a file)."""


def _import_distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise ClusterError(_DASK_MISSING) from None
    return distributed


def check_cluster_request(scheduler: str | None, gpus: int | None) -> None:
    """Raise :class:`ClusterError` before anything is written when the request cannot work:
    ``distributed`` (with ``gpus``, ``dask_cuda``) missing, or a ``scheduler`` that is
    neither ``local``, an address (``tcp://host:8786``) nor an existing file."""
    _import_distributed()
    if gpus is not None:
        try:
            import dask_cuda  # noqa: F401
        except ImportError:
            raise ClusterError(_DASK_CUDA_MISSING) from None
    if scheduler not in (None, "local") and "://" not in scheduler \
            and not Path(scheduler).is_file():
        raise ClusterError(f"--scheduler {scheduler!r}: give 'local', a scheduler address "
                           "(tcp://host:8786) or an existing scheduler file (.json)")


@contextlib.contextmanager
def start_cluster(scheduler: str | None, gpus: int | None, workers: int | None,
                  ) -> Iterator[tuple[Any, int, int]]:
    """Connect to (or start) the cluster that ``--scheduler``/``--gpus`` name.

    Yields
    ------
    client : distributed.Client
    n_workers : int
        Its workers when it started.
    compression_threads : int
        Threads per unit: a local cluster's share of this machine's cores per worker; 0 for
        a cluster found by address (each worker takes its host's share,
        :func:`_worker_share`).

    Raises
    ------
    ClusterError
        See :func:`check_cluster_request`; or the scheduler cannot be reached.
    """
    check_cluster_request(scheduler, gpus)
    distributed = _import_distributed()
    cores = available_cores()
    with contextlib.ExitStack() as stack:
        if gpus is not None or scheduler in (None, "local"):
            n = int(gpus) if gpus is not None else int(workers or cores)
            share = max(1, cores // n)
            # the dashboard on a free port: runs side by side never fight over one
            # two task threads: one renders while the other's unit finishes its files
            options = {"n_workers": n, "threads_per_worker": 2, "dashboard_address": ":0"}
            with _thread_env(share):
                if gpus is not None:
                    from dask_cuda import LocalCUDACluster

                    cluster = stack.enter_context(LocalCUDACluster(**options))
                else:
                    cluster = stack.enter_context(
                        distributed.LocalCluster(processes=True, **options))
            client = stack.enter_context(distributed.Client(cluster))
        else:
            try:  # a scheduler that cannot be reached is not an output error
                if "://" in scheduler:
                    client = stack.enter_context(distributed.Client(scheduler))
                else:
                    client = stack.enter_context(distributed.Client(scheduler_file=scheduler))
            except (OSError, ValueError) as exc:  # TimeoutError is an OSError
                raise ClusterError(f"cannot connect to the scheduler {scheduler}: "
                                   f"{exc or type(exc).__name__}") from None
            n, share = len(client.scheduler_info()["workers"]), 0
        yield client, n, share


def _host(address: str) -> str:
    return address.split("://")[-1].rsplit(":", 1)[0]


def _workers_per_host(client: Any) -> dict[str, int]:
    """Worker processes on each host, as the scheduler lists them."""
    hosts: dict[str, int] = {}
    for address in client.scheduler_info()["workers"]:
        hosts[_host(address)] = hosts.get(_host(address), 0) + 1
    return hosts


def _worker_share(workers_per_host: dict[str, int]) -> int:
    """This Dask worker's share of its host's cores: the cores divided by the worker
    processes on the host (each renders one unit at a time)."""
    from distributed import get_worker

    return max(1, available_cores() // max(1, workers_per_host.get(
        _host(str(get_worker().address)), 1)))


#: One unit renders at a time in a worker process (the cached renderer is not shared by
#: threads); another thread's unit may be finishing its files meanwhile.
_RENDERING = threading.Lock()


def _dask_task(unit: Unit, stop_event: str,
               workers_per_host: dict[str, int] | None = None) -> UnitResult | None:
    """One unit on a Dask worker: its result, or None when the run was stopped."""
    from distributed import Event

    event = Event(stop_event)
    seen = {"at": 0.0, "set": False}

    def stop() -> bool:
        now = time.monotonic()
        if now - seen["at"] >= _STOP_POLL:
            seen["at"], seen["set"] = now, bool(event.is_set())
        return seen["set"]

    if unit.compression_threads == 0:
        unit = dataclasses.replace(unit, compression_threads=_worker_share(
            workers_per_host or {}))
    if stop():
        return None
    try:
        return render_unit(unit, stop=stop, rendering_lock=_RENDERING)
    except UnitCancelled:
        return None


def execute_on_dask(state: _Run, units: list[Unit]) -> None:
    """Render ``units`` as tasks of the cluster of ``state.config``; record each result as
    it arrives (the driver only). Raises the first task error (an OSError of a worker)."""
    distributed = _import_distributed()
    cfg = state.config
    with start_cluster(cfg.scheduler, cfg.gpus, cfg.workers) as (client, n_workers, share):
        units = [dataclasses.replace(u, compression_threads=share) for u in units]
        state.workers = state.summary.workers = n_workers
        state.manifest["execution"].update(
            {"workers": n_workers, "scheduler": cfg.scheduler or "local", "gpus": cfg.gpus})
        state._save(force=True)
        assert state.progress is not None
        state.progress.set_units(len(units))
        name = f"xyz2image-gpu-stop-{uuid.uuid4().hex}"
        event = distributed.Event(name, client=client)
        hosts = _workers_per_host(client) if share == 0 else None
        futures = {client.submit(_dask_task, unit, name, hosts, key=f"{name}-{i}",
                                 pure=False): unit
                   for i, unit in enumerate(units)}
        try:
            for future in distributed.as_completed(list(futures)):
                unit = futures.pop(future)
                if future.cancelled():
                    continue
                try:
                    result = future.result()  # a task's OSError is raised here
                except distributed.KilledWorker as exc:
                    raise RuntimeError(
                        f"{unit.path}, stack {unit.stack}: Dask workers died running it "
                        f"({exc}); out of memory? try a smaller --batch-size or fewer "
                        "workers per node; the same command resumes") from None
                if result is None:
                    continue
                state.record(unit, result)
                state.progress.update(result.n_images)
                state.progress.unit_done()
                if not result.ok:
                    client.cancel([f for f, u in futures.items() if state.after_failure(u)])
        except BaseException:
            event.set()  # running tasks stop at their next batch and remove their files
            with contextlib.suppress(Exception):
                distributed.wait(list(futures), timeout=_STOP_WAIT)
            client.cancel([f for f in futures if f.status != "finished"])
            for future, unit in futures.items():  # units that completed meanwhile are kept
                with contextlib.suppress(Exception):
                    result = future.result(timeout=1) if future.status == "finished" else None
                    if result is not None and result.ok:
                        state.record(unit, result)
            raise
        finally:
            with contextlib.suppress(Exception):
                event.clear()
    # a lost worker's unit ran again elsewhere; what its first attempt left is removed
    state.remove_temporaries(units)
