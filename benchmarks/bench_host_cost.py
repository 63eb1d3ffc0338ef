"""The host's own cost per GPU batch, measured without a GPU, on a device that costs nothing.

On the GPU the host prepares each batch (rotations, indices, launches, hand-over) while the
device renders; if that takes longer than the device, the host is the ceiling. This script
runs the engine's GPU path on a stand-in for CuPy whose every operation costs nothing: each
returns a preallocated array of the right shape and dtype (computed for real once per
distinct call, during the warm-up, and reused), uploads and copies do nothing, and waits
return at once. What remains per batch is the host's own Python and NumPy work, plus the
stand-in's dispatch of each device operation (a dictionary look-up, a few microseconds;
CuPy's own launch overhead is larger and is counted on a real GPU by ``gpu_check.py``).

Usage::

    python benchmarks/bench_host_cost.py                  # 4096-image batches, 128 px
    python benchmarks/bench_host_cost.py --smoke          # seconds
    python benchmarks/bench_host_cost.py --trajectory --batches 5   # every image a frame
    python benchmarks/bench_host_cost.py --augmented     # phonon, noise and scan on
    PYTHONPATH=/path/to/other/checkout python benchmarks/bench_host_cost.py   # another version

It prints the median milliseconds per batch in the steady state, the host ceiling it
implies (images/s), and the device operations dispatched per batch. Nothing asserts on a
timing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import types
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

import xyz2image_gpu
from xyz2image_gpu import Renderer, RenderSettings, as_structure
from xyz2image_gpu.backend import Backend

AU147 = Path(xyz2image_gpu.__file__).parent / "structures" / "data" / "au147_icosahedron.xyz"

#: Functions whose result is a view (or metadata): computed for real, as cheap as a view.
_VIEWS = frozenset({"broadcast_to", "transpose", "reshape", "expand_dims", "squeeze",
                    "moveaxis", "swapaxes", "shape", "ndim", "size", "result_type",
                    "may_share_memory", "shares_memory", "can_cast", "iscomplexobj"})


def _sig(x: Any) -> Any:
    """What decides the shape and dtype of an operation's result: shapes, dtypes, values of
    scalars and of the other arguments."""
    if isinstance(x, np.ndarray):
        return ("a", x.shape, x.dtype.str)
    if isinstance(x, (tuple, list)):
        return (type(x).__name__, *(_sig(v) for v in x))
    if isinstance(x, dict):
        return tuple(sorted((k, _sig(v)) for k, v in x.items()))
    if isinstance(x, slice):
        return ("s", x.start, x.stop, x.step)
    if isinstance(x, np.dtype):
        return x.str
    return x if isinstance(x, (int, float, bool, str, type, type(None))) else repr(x)


class _Free(np.ndarray):
    """A device array of the stand-in: views are real (free anyway), everything that would
    compute returns a preallocated result."""

    _device: FreeDevice

    def __array_ufunc__(self, ufunc: Any, method: str, *inputs: Any, **kwargs: Any) -> Any:
        out = kwargs.get("out")
        if out is not None:
            return out[0] if isinstance(out, tuple) and len(out) == 1 else out  # in place
        return _DEVICE.run(f"{ufunc.__name__}.{method}", getattr(ufunc, method), inputs, kwargs)

    def __array_function__(self, func: Any, types_: Any, args: Any, kwargs: Any) -> Any:
        return _DEVICE.call(func, args, kwargs)

    def __getitem__(self, key: Any) -> Any:
        parts = key if isinstance(key, tuple) else (key,)
        if any(isinstance(p, (np.ndarray, list)) for p in parts):  # gather: computes
            return _DEVICE.run("getitem", lambda a, k: np.ndarray.__getitem__(a, k),
                               (self, key), {})
        return super().__getitem__(key)

    def __setitem__(self, key: Any, value: Any) -> None:
        _DEVICE.ops += 1  # a scatter or fill: costs nothing

    def fill(self, value: Any) -> None:
        _DEVICE.ops += 1  # costs nothing


def _computing_method(name: str) -> Any:
    def method(self: _Free, *args: Any, **kwargs: Any) -> Any:
        return _DEVICE.run(name, getattr(np.ndarray, name), (self, *args), kwargs)
    method.__name__ = name
    return method


for _name in ("astype", "copy", "max", "min", "sum", "any", "all", "mean", "clip", "round",
              "cumsum", "argmax", "argmin", "nonzero", "take", "ravel", "flatten", "dot"):
    setattr(_Free, _name, _computing_method(_name))


class FreeDevice:
    """Runs and remembers device operations: the first call of each kind for real, later
    ones return the first one's (preallocated) results."""

    def __init__(self) -> None:
        self.memo: dict[Any, Any] = {}
        self.ops = 0
        self.computed = 0

    def _plain(self, x: Any) -> Any:
        if isinstance(x, _Free):
            return x.view(np.ndarray)
        if isinstance(x, tuple):
            return tuple(self._plain(v) for v in x)
        if isinstance(x, list):
            return [self._plain(v) for v in x]
        if isinstance(x, dict):
            return {k: self._plain(v) for k, v in x.items()}
        return x

    def _free(self, x: Any) -> Any:
        if isinstance(x, np.ndarray):
            return x.view(_Free)
        if isinstance(x, np.generic):
            return np.asarray(x).view(_Free)
        if isinstance(x, tuple):
            return tuple(self._free(v) for v in x)
        if isinstance(x, list):
            return [self._free(v) for v in x]
        return x

    def run(self, name: str, fn: Any, args: Any, kwargs: Any) -> Any:
        self.ops += 1
        key = (name, _sig(args), _sig(kwargs))
        hit = self.memo.get(key)
        if hit is None:
            self.computed += 1
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result = fn(*self._plain(args), **self._plain(kwargs))
            hit = self.memo[key] = (self._free(_owned(result)),)
        return hit[0]

    def call(self, func: Any, args: Any, kwargs: Any) -> Any:
        name = getattr(func, "__name__", repr(func))
        if kwargs.get("out") is not None:  # in place: costs nothing
            self.ops += 1
            return kwargs["out"]
        if name in _VIEWS:
            self.ops += 1
            return self._free(func(*self._plain(args), **self._plain(kwargs)))
        return self.run(name, func, args, kwargs)


def _owned(x: Any) -> Any:
    """A result that does not alias its inputs (a preallocated output of its own)."""
    if isinstance(x, np.ndarray):
        return np.array(x, copy=True)
    if isinstance(x, tuple):
        return tuple(_owned(v) for v in x)
    if isinstance(x, list):
        return [_owned(v) for v in x]
    return x


_DEVICE = FreeDevice()


class _Event:
    def record(self, stream: Any = None) -> None:
        pass

    def synchronize(self) -> None:
        pass


class _Stream:
    def __enter__(self) -> _Stream:  # noqa: PYI034 - a stand-in, never subclassed
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def record(self, event: Any = None) -> _Event:
        return event or _Event()

    def synchronize(self) -> None:
        pass

    def wait_event(self, event: Any) -> None:
        pass


class FreeCupy(types.ModuleType):
    """CuPy's names as the package uses them, every operation free (see the module)."""

    def __init__(self) -> None:
        super().__init__("cupy")
        self.__version__ = "0.0-free-stand-in"
        self.ndarray = _Free
        free = 64 << 30
        self.cuda = types.SimpleNamespace(
            runtime=types.SimpleNamespace(memGetInfo=lambda: (free, free)),
            get_current_stream=lambda: _Stream(),
            Stream=lambda null=False, non_blocking=False, ptds=False: _Stream(),
            Event=lambda block=False, disable_timing=False, interprocess=False: _Event(),
            Device=lambda device=None: types.SimpleNamespace(
                synchronize=lambda: None,
                attributes={"MaxSharedMemoryPerBlockOptin": 227 * 1024}),
            alloc_pinned_memory=lambda nbytes: bytearray(nbytes),
        )
        pool = types.SimpleNamespace(free_bytes=lambda: 0, used_bytes=lambda: 0)
        self.get_default_memory_pool = lambda: pool

    def RawKernel(self, code: str, name: str, options: Any = ()) -> Any:
        """A compiled kernel whose launch costs nothing (it writes its outputs in place)."""

        class _Launch:
            max_dynamic_shared_size_bytes = 0

            def __call__(self, grid: Any, block: Any, args: Any, shared_mem: int = 0) -> None:
                _DEVICE.ops += 1

        return _Launch()

    def asnumpy(self, a: Any, stream: Any = None, out: Any = None, blocking: bool = True
                ) -> Any:
        _DEVICE.ops += 1
        if out is not None:
            return out  # the copy costs the host nothing
        return _DEVICE.run("asnumpy", lambda x: np.array(x), (a,), {}).view(np.ndarray)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(np, name)
        if isinstance(attr, type) or not callable(attr):
            return attr

        def function(*args: Any, **kwargs: Any) -> Any:
            return _DEVICE.call(attr, args, kwargs)
        function.__name__ = name
        return function


def trajectory(n_frames: int, seed: int = 0) -> Any:
    """Au147 in ``n_frames`` frames, each jittered (0.05 Å r.m.s.): a trajectory."""
    st = as_structure(AU147)
    frame = st.frames[0]
    rng = np.random.default_rng(seed)
    pos = frame.positions[None] + 0.05 * rng.standard_normal((n_frames, *frame.positions.shape))
    return as_structure(pos, numbers=frame.numbers, maxframes=None)


#: Every augmentation at once (``--augmented``).
AUGMENTED = {"phonon_jitter": True, "dose": 1e4, "read_noise": 0.01, "scan_jitter": 0.1,
             "drift": 1.0}


def measure(batch_size: int = 4096, edgesize: int = 128, batches: int = 20,
            warmup: int = 3, trajectory_frames: bool = False,
            augmented: bool = False) -> dict[str, Any]:
    """Host milliseconds per batch of gaussian_2d (uint8) on the free stand-in: Au147 in
    many rotations, or (``trajectory_frames``) a trajectory of Au147 frames in one rotation
    each, every image its own frame; with ``augmented``, every augmentation on."""
    n_images = batch_size * (warmup + batches)
    st = trajectory(n_images) if trajectory_frames else as_structure(AU147)
    extra = AUGMENTED if augmented else {}
    renderer = Renderer(RenderSettings(edgesize=edgesize, **extra), ["gaussian_2d"],
                        Backend("cupy", FreeCupy(), "free stand-in"))
    it = renderer.iter_batches(st, 1 if trajectory_frames else n_images,
                               batch_size=batch_size)
    times, ops = [], []
    for k in range(warmup + batches):
        ops0 = _DEVICE.ops
        t0 = time.perf_counter()
        batch = next(it)
        t1 = time.perf_counter()
        release = getattr(batch, "release", None)  # older versions hand over plain dicts
        if release is not None:
            release()
        del batch
        if k >= warmup:
            times.append(t1 - t0)
            ops.append(_DEVICE.ops - ops0)
    it.close()
    renderer.close()
    ms = statistics.median(times) * 1e3
    return {
        "package": str(Path(xyz2image_gpu.__file__).parent),
        "batch_size": batch_size, "edgesize": edgesize, "atoms": st.max_atoms,
        "frames": len(st.frames), "images_per_frame": 1 if trajectory_frames else n_images,
        "output": "gaussian_2d uint8", "augmentations": extra, "batches_timed": batches,
        "ms_per_batch_median": ms,
        "ms_per_batch": [t * 1e3 for t in times],
        "host_ceiling_images_per_s": batch_size / (ms / 1e3),
        "device_ops_per_batch": statistics.median(ops),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--edgesize", type=int, default=128)
    parser.add_argument("--batches", type=int, default=20, help="timed batches")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--trajectory", action="store_true",
                        help="a trajectory in one rotation per frame (every image a frame)")
    parser.add_argument("--augmented", action="store_true",
                        help="every augmentation on (phonon, shot + read noise, scan)")
    parser.add_argument("--smoke", action="store_true", help="64-image batches at 32 px")
    parser.add_argument("--json", type=Path, default=None, help="write the result here")
    args = parser.parse_args(argv)
    if args.smoke:
        args.batch_size, args.edgesize, args.batches, args.warmup = 64, 32, 3, 1
    result = measure(args.batch_size, args.edgesize, args.batches, args.warmup,
                     args.trajectory, args.augmented)
    what = ("one rotation per frame" if args.trajectory
            else f"one frame in {result['images_per_frame']} rotations")
    if args.augmented:
        what += ", every augmentation"
    print(f"{result['package']}: {result['ms_per_batch_median']:.2f} ms of host work per "
          f"{result['batch_size']}-image batch (gaussian_2d, {result['edgesize']} px, "
          f"{result['atoms']} atoms, {what}, uint8; median of {result['batches_timed']}): host "
          f"ceiling {common.fmt_rate(result['host_ceiling_images_per_s'])} images/s, "
          f"{result['device_ops_per_batch']:.0f} device operations per batch")
    if args.json:
        common.write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
