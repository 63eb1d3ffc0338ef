"""``device="auto"`` for a run: the GPU or the CPU, whichever renders these outputs faster.

A GPU is not faster for every request: labels alone, legacy mode (whose filter is built on the
host) or tiny images can go faster on the compiled CPU kernel than through a device round
trip. So when a GPU is usable, :func:`fastest_backend` renders the same small stack of the
run's first structure on both, warm (kernels compiled, memory pools filled), images copied to
the host as a run needs them, and keeps the faster. It costs a few hundred images on each
side, once per run, and only on a machine with a GPU.

The CPU side is timed as one process on the renderer's threads; a run that would use worker
processes on the CPU (NumPy labels, legacy mode) may go somewhat faster than measured.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from ..backend import Backend
from ..structures.model import Structure
from .engine import Renderer
from .settings import RenderSettings

__all__ = ["fastest_backend"]

#: Images rendered on each side: enough for a rate, little against a run.
PROBE_IMAGES = 256


def _rate(settings: RenderSettings, output_types: Sequence[str], backend: Backend,
          structure: Structure, images: int, timer: Callable[[], float]) -> float:
    """Images per second rendering ``images`` images of ``structure`` to host memory, warm."""
    n_rotation = max(1, -(-images // len(structure.frames)))
    with Renderer(settings, output_types, backend) as renderer:
        renderer.render(structure, n_rotation, stop=min(images, 16))  # warm-up
        backend.synchronize()
        start = timer()
        rendered = renderer.render(structure, n_rotation, stop=images)
        backend.synchronize()
        elapsed = timer() - start
    return len(rendered["rotations"]) / max(elapsed, 1e-9)


def fastest_backend(settings: RenderSettings, output_types: Sequence[str],
                    structure: Structure, gpu: Backend, cpu: Backend, *,
                    images: int = PROBE_IMAGES,
                    timer: Callable[[], float] = time.perf_counter) -> Backend:
    """The backend of ``gpu`` and ``cpu`` that renders ``structure`` faster.

    Parameters
    ----------
    settings, output_types
        What the run renders.
    structure : Structure
        The run's first structure.
    gpu, cpu : Backend
        The candidates.
    images : int
        Images rendered (after a warm-up) on each.
    timer : callable
        Seconds, monotonic.

    Returns
    -------
    Backend
        The faster one, its ``reason`` saying both rates.
    """
    images = min(images, 4 * len(structure.frames) * PROBE_IMAGES)
    rates = {b.name: _rate(settings, output_types, b, structure, images, timer)
             for b in (gpu, cpu)}
    chosen = gpu if rates[gpu.name] >= rates[cpu.name] else cpu
    measured = (f"device=auto measured {images} images of {structure.name}: GPU "
                f"{rates[gpu.name]:,.0f} images/s, CPU {rates[cpu.name]:,.0f} images/s")
    return Backend(chosen.name, chosen.xp, f"{measured}; {chosen.reason}")
