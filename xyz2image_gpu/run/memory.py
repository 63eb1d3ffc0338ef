"""Whether a request fits this machine's memory, checked before anything is written.

A request whose single image cannot fit (``--edgesize 100000`` with a 3-D output asks for
petabytes) would otherwise fail in the middle of the run, after the manifest is written. The
estimate is the engine's own (:meth:`Renderer.scratch_bytes_per_image` for the scratch arrays,
:meth:`Renderer.output_layout` for the outputs): a lower bound of what one batch needs, so a
request refused here cannot run, and one accepted may still need more (queued batches,
compression buffers).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..pipeline.settings import OUTPUT_TYPES

if TYPE_CHECKING:
    from ..pipeline.engine import Renderer
    from ..structures.model import Structure
    from .config import RunConfig

__all__ = [
    "RequestTooLargeError",
    "available_memory",
    "check_images_fit",
]


class RequestTooLargeError(RuntimeError):
    """A request cannot fit this machine's memory (raised before anything is written)."""


def _read_int(path: str) -> int | None:
    try:
        text = Path(path).read_text().split()[0]
    except (OSError, IndexError):
        return None
    return int(text) if text.isdigit() else None


def _meminfo_available() -> int | None:
    """``MemAvailable`` of ``/proc/meminfo`` (Linux): free memory plus what can be reclaimed."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_room() -> int | None:
    """Bytes left under this process's cgroup memory limit (containers, batch jobs), if any."""
    for limit_file, usage_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),  # cgroup v2
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
         "/sys/fs/cgroup/memory/memory.usage_in_bytes"),  # cgroup v1
    ):
        limit = _read_int(limit_file)  # "max" (no limit) reads as None
        if limit is not None and limit < 1 << 60:
            return max(0, limit - (_read_int(usage_file) or 0))
    return None


def _sysconf_available() -> int | None:
    """Free physical pages times the page size, where the system tells them."""
    try:
        pages = os.sysconf("SC_AVPHYS_PAGES")
        page = os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None
    return pages * page if pages > 0 and page > 0 else None


def available_memory() -> int | None:
    """Bytes of host memory a run may still use, or None where the system does not tell.

    ``MemAvailable`` on Linux (else the free pages of :func:`os.sysconf`), capped by the room
    left under a cgroup memory limit.
    """
    found = [n for n in (_meminfo_available() or _sysconf_available(), _cgroup_room())
             if n is not None]
    return min(found) if found else None


def _format_bytes(n: float) -> str:
    units = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"]
    k = min(len(units) - 1, int(math.log(max(n, 1), 1024)))
    return f"{n:.0f} bytes" if k == 0 else f"{n / 1024 ** k:.1f} {units[k]}"


@dataclass
class _Need:
    """Bytes of one image: scratch arrays and outputs (the largest over a run's inputs)."""

    scratch: int = 0
    outputs: int = 0
    largest_output: tuple[int, str] = (0, "")

    def add(self, renderer: Renderer, structure: Structure) -> None:
        """Take the larger of what is recorded and what one image of ``structure`` needs."""
        layout = renderer.output_layout(structure, 1)
        sizes = {k: math.prod(shape) * dtype.itemsize for k, (shape, dtype) in layout.items()}
        self.scratch = max(self.scratch, renderer.scratch_bytes_per_image(structure))
        self.outputs = max(self.outputs, sum(sizes.values()))
        named = [(size, k) for k, size in sizes.items() if k in OUTPUT_TYPES]
        self.largest_output = max([self.largest_output, *named])

    def host_bytes(self, batch: int, gpu: bool) -> int:
        """Host memory of one batch: on the CPU its scratch and outputs; on the GPU its
        outputs three times (two page-locked buffers and the copy handed to the writer)."""
        return batch * (3 * self.outputs if gpu else self.scratch + self.outputs)


def _check_memory(config: RunConfig, need: _Need, workers: int, gpu: bool) -> None:
    """Raise :class:`RequestTooLargeError` when the request cannot fit host memory.

    Checks, naming the setting to change: one image (``--edgesize``, 3-D output types), one
    batch of an explicit ``--batch-size``, and an explicit ``--workers`` count (each worker
    renders its own batch). Does nothing where the available memory is unknown.
    """
    room = available_memory()
    if room is None or need.outputs == 0:
        return
    one = need.host_bytes(1, gpu)
    have = f"{_format_bytes(room)} available"
    if one > room:
        size, name = need.largest_output
        largest = f"; {name} alone is {_format_bytes(size)}" if name else ""
        hint = (" or leave out the 3-D output types"
                if any(t.endswith("_3d") and t != "coordinates_3d"
                       for t in config.output_types) else "")
        raise RequestTooLargeError(
            f"one image at --edgesize {config.settings.edgesize} needs at least "
            f"{_format_bytes(one)} of memory ({', '.join(config.output_types)}{largest}), "
            f"{have}: lower --edgesize{hint}")
    batch = int(config.batch_size or 1)
    per_worker = need.host_bytes(batch, gpu)
    if per_worker > room:
        raise RequestTooLargeError(
            f"--batch-size {batch} needs at least {_format_bytes(per_worker)} of memory, "
            f"{have}: use --batch-size {max(1, room // one)} or less, or leave it to the "
            "engine")
    if config.workers is not None and workers > 1 and workers * per_worker > room:
        raise RequestTooLargeError(
            f"--workers {workers} need at least {_format_bytes(workers * per_worker)} of "
            f"memory together, {have}: use --workers {max(1, room // per_worker)} or fewer")


def check_images_fit(renderer: Renderer, structure: Structure, n_images: int) -> None:
    """Raise :class:`RequestTooLargeError` when ``n_images`` images of ``structure`` cannot
    fit host memory in one batch (e.g. a preview at ``--edgesize 100000``); does nothing where
    the available memory is unknown."""
    room = available_memory()
    need = _Need()
    need.add(renderer, structure)
    wanted = need.host_bytes(n_images, gpu=False)
    if room is not None and wanted > room:
        raise RequestTooLargeError(
            f"{n_images} image(s) at --edgesize {renderer.settings.edgesize} need at least "
            f"{_format_bytes(wanted)} of memory, {_format_bytes(room)} available: lower "
            "--edgesize")
