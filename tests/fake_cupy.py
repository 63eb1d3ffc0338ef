"""A strict stand-in for CuPy, on NumPy, for the tests of the GPU branches without a GPU.

It plays the parts of CuPy the package uses and refuses what CuPy would refuse, or what
would silently cost a host synchronisation on a real GPU:

* **Device arrays are their own type** (:class:`DeviceArray`, a thin wrapper around a NumPy
  array, ``FakeCupy.ndarray`` as ``cupy.ndarray``). ``np.asarray(device_array)`` raises
  ``TypeError`` as CuPy's ``__array__`` does, and so does mixing a NumPy array into a device
  operation (CuPy: "Unsupported type"). Stricter than CuPy: ``float()``, ``int()``,
  ``bool()``, ``operator.index()``, ``.tolist()``, ``.item()`` and ``repr``'s data raise
  too: CuPy answers them with a hidden ``.get()`` (a host synchronisation); here only
  ``asnumpy`` (``Backend.to_host``) and the asynchronous copy reach the host.
* **Asynchronous copies** (``asnumpy(..., stream=, out=, blocking=False)``) land only when
  an event recorded after them on their stream, the stream or the device is synchronised,
  and read their source *then*: a source overwritten in the meantime lands overwritten, and
  one whose last device array was dropped lands as poison (0xCD bytes) and is recorded in
  :attr:`FakeCupy.violations` (use after free). :attr:`FakeCupy.in_flight` counts the copies
  that have not landed. The destination must be page-locked (from ``alloc_pinned_memory``,
  which is filled with 0xAB, as fresh memory holds anything).
* **Host synchronisations are counted** (:attr:`FakeCupy.syncs`, with
  :attr:`FakeCupy.sync_log` saying which): event, stream and device ``synchronize``,
  blocking ``asnumpy``, and the device operations whose result size the host must read
  (``nonzero`` and friends, boolean-mask indexing).
* Events remember how they were made (:attr:`FakeCupy.events`): ``Event(block=True,
  disable_timing=True)`` sleeps while waiting, CuPy's default (``stream.record()``) spins.
* Uploads (``asarray`` of host data) add up in :attr:`FakeCupy.uploaded_bytes`.
* **DLPack**: a device array hands its memory to another library (``torch.from_dlpack``)
  through ``__dlpack__``, without a copy and without a synchronisation, as CuPy's does;
  the stand-in's memory being the host's, it reports a CPU device. Each export is counted
  in :attr:`FakeCupy.dlpack_exports`.
* ``cuda.runtime.memGetInfo`` and ``get_default_memory_pool().free_bytes()`` report
  :attr:`FakeCupy.free_bytes` and :attr:`FakeCupy.pool_free_bytes`.
* **Device operations are counted** (:attr:`FakeCupy.ops`, :attr:`FakeCupy.op_log`): every
  function, method, ufunc, item assignment and kernel launch whose result is new device
  memory or written in place (views such as ``reshape`` and basic slicing are free), with
  :attr:`FakeCupy.op_bytes` adding up the bytes each one reads and writes (its device
  operands and its result): a rough estimate of device memory traffic.
* ``RawKernel(code, name, options)`` compiles the CUDA source with the C compiler through
  ``xyz2image_gpu/pipeline/kernels/cuda_emulation.h`` (:mod:`cuda_emulation`) and launches
  it block by block on the arrays' NumPy data: the package's own kernel source runs here.
  Its arguments must be C-contiguous device arrays or NumPy scalars (a Python scalar's C
  type is a guess, a host array an error), and a launch asking for more than 48 KiB of
  dynamic shared memory fails unless ``max_dynamic_shared_size_bytes`` was raised first,
  as on a device.

It checks the package's use of CuPy's protocol, not CuPy's kernels: the arithmetic is
NumPy's. On a GPU machine the ``device`` tests run the real thing.
"""

from __future__ import annotations

import contextlib
import types
from typing import Any

import numpy as np
from numpy.lib.mixins import NDArrayOperatorsMixin

__all__ = ["DeviceArray", "FakeCupy", "syncs_per_batch"]

POISON = 0xCD

#: Device operations whose output size depends on the data: CuPy reads it back (a sync).
_SIZE_FROM_DATA = frozenset({"nonzero", "argwhere", "flatnonzero", "unique", "compress",
                             "extract"})
#: Functions that take host data to the device (an upload, no synchronisation).
_UPLOADS = frozenset({"asarray", "array", "asanyarray"})


class _PinnedMemory(bytearray):
    """Page-locked host memory (a bytearray the stand-in recognises)."""


def _is_pinned(a: np.ndarray) -> bool:
    obj: Any = a
    while obj is not None:
        if isinstance(obj, _PinnedMemory):
            return True
        if isinstance(obj, np.ndarray):
            obj = obj.base
        elif isinstance(obj, memoryview):
            obj = obj.obj
        else:
            return False
    return False


def _root(a: np.ndarray) -> np.ndarray:
    """The NumPy array that owns ``a``'s memory (the device allocation it stands for)."""
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


class DeviceArray(NDArrayOperatorsMixin):
    """A device array: NumPy data that the host may not read except through ``asnumpy``."""

    __slots__ = ("__weakref__", "_a", "_fake", "_root_id")
    __array_priority__ = 100

    def __init__(self, fake: FakeCupy, a: np.ndarray) -> None:
        self._a = a
        self._fake = fake
        self._root_id = fake._adopt(self, a)

    def __del__(self) -> None:
        fake = getattr(self, "_fake", None)
        if fake is not None:
            with contextlib.suppress(Exception):  # at interpreter shutdown
                fake._drop(self._root_id)

    # -- what CuPy refuses (or answers only with a hidden synchronisation) ----------------
    def __array__(self, *args: Any, **kwargs: Any) -> np.ndarray:
        raise TypeError("Implicit conversion to a NumPy array is not allowed. Please use "
                        "`.get()` to construct a NumPy array explicitly. (CuPy stand-in)")

    def _hidden_sync(self, what: str) -> Any:
        raise TypeError(f"{what} of a device array reads it back to the host (a hidden "
                        "synchronisation on CuPy); use Backend.to_host (CuPy stand-in)")

    def _refusing(what: str) -> Any:
        def refuse(self: DeviceArray, *args: Any, **kwargs: Any) -> Any:
            return self._hidden_sync(what)

        return refuse

    __float__ = _refusing("float()")
    __int__ = _refusing("int()")
    __complex__ = _refusing("complex()")
    __index__ = _refusing("operator.index()")
    __bool__ = _refusing("bool()")
    tolist = _refusing(".tolist()")
    item = _refusing(".item()")
    tobytes = _refusing(".tobytes()")
    get = _refusing(".get()")
    del _refusing

    def __repr__(self) -> str:
        return f"DeviceArray(shape={self._a.shape}, dtype={self._a.dtype})"

    __str__ = __repr__
    __hash__ = None  # type: ignore[assignment]

    # -- what CuPy allows -----------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return self._a.shape

    @shape.setter
    def shape(self, value: tuple[int, ...]) -> None:
        self._a.shape = value

    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    nbytes = property(lambda self: self._a.nbytes)
    itemsize = property(lambda self: self._a.itemsize)
    strides = property(lambda self: self._a.strides)
    flags = property(lambda self: self._a.flags)
    T = property(lambda self: self._fake._wrap(self._a.T))

    def __len__(self) -> int:
        return len(self._a)

    def __iter__(self) -> Any:
        return (self._fake._wrap(row) for row in self._a)

    def __getitem__(self, key: Any) -> Any:
        return self._fake._wrap(self._a[self._fake._index(key)])

    def __setitem__(self, key: Any, value: Any) -> None:
        self._fake._count("setitem", (self, value), None)
        self._a[self._fake._index(key)] = self._fake._unwrap(value, allow_host=True)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):  # no __array_interface__, __array_struct__, buffer, ...
            raise AttributeError(name)
        attr = getattr(self._a, name)  # astype, reshape, transpose, copy, sum, max, ...
        if not callable(attr):
            return self._fake._wrap(attr)
        fake = self._fake

        def method(*args: Any, **kwargs: Any) -> Any:
            if name in _SIZE_FROM_DATA:
                fake._sync(name)
            result = attr(*fake._unwrap(args), **fake._unwrap(kwargs))
            fake._count(name, (self, *args, *kwargs.values()), result)
            return fake._wrap(result)
        return method

    def __dlpack__(self, *, stream: Any = None, **kwargs: Any) -> Any:
        self._fake.dlpack_exports += 1
        return self._a.__dlpack__(**kwargs)  # the same memory: no copy

    def __dlpack_device__(self) -> tuple[int, int]:
        return self._a.__dlpack_device__()

    def __array_ufunc__(self, ufunc: Any, method: str, *inputs: Any, **kwargs: Any) -> Any:
        fake = self._fake
        out = kwargs.get("out")
        result = getattr(ufunc, method)(*fake._unwrap(inputs), **fake._unwrap(kwargs))
        fake._count(ufunc.__name__, (*inputs, *(out or ())), result,
                    in_place=out is not None)
        if out is not None and isinstance(out, tuple) and len(out) == 1:
            return out[0]  # in place: the same device array
        return fake._wrap(result)

    def __array_function__(self, func: Any, types: Any, args: Any, kwargs: Any) -> Any:
        return self._fake._call(func, args, kwargs)


class _Event:
    def __init__(self, fake: FakeCupy, block: bool = False, disable_timing: bool = False,
                 interprocess: bool = False) -> None:
        self.fake = fake
        self.block = block
        self.disable_timing = disable_timing
        self.marks: list[tuple[_Stream, int]] = []
        fake.events.append(self)

    def record(self, stream: _Stream | None = None) -> None:
        stream = stream if stream is not None else self.fake._current
        self.marks = [(stream, stream.sequence)]

    def synchronize(self) -> None:
        self.fake._sync("event" if self.block else "event (spinning)")
        for stream, upto in self.marks:
            stream._land(upto)

    def query(self) -> bool:
        return all(stream.sequence_landed >= upto for stream, upto in self.marks)


class _Stream:
    """A CUDA stream: a queue of asynchronous copies, in order."""

    def __init__(self, fake: FakeCupy, null: bool = False, non_blocking: bool = False,
                 ptds: bool = False) -> None:
        self.fake = fake
        self.non_blocking = non_blocking
        self.queued: list[tuple[int, np.ndarray, int, np.ndarray]] = []
        self.sequence = 0
        self.sequence_landed = 0
        self._outer: list[_Stream] = []
        if not null:
            fake.streams.append(self)

    def __enter__(self) -> _Stream:  # noqa: PYI034 - a stand-in, never subclassed
        self._outer.append(self.fake._current)
        self.fake._current = self
        return self

    def __exit__(self, *exc: object) -> None:
        self.fake._current = self._outer.pop()

    def record(self, event: _Event | None = None) -> _Event:
        event = event if event is not None else _Event(self.fake)  # CuPy's default: spins
        event.record(self)
        return event

    def wait_event(self, event: _Event) -> None:
        pass  # device-side ordering: nothing for the host to do

    def synchronize(self) -> None:
        self.fake._sync("stream")
        self._land(self.sequence)

    def _queue(self, src: np.ndarray, root_id: int, out: np.ndarray) -> None:
        self.sequence += 1
        self.queued.append((self.sequence, src, root_id, out))

    def _land(self, upto: int) -> None:
        keep = []
        for seq, src, root_id, out in self.queued:
            if seq > upto:
                keep.append((seq, src, root_id, out))
            elif root_id in self.fake._freed:
                out.view(np.uint8)[...] = POISON
            else:
                out[...] = src
        self.queued = keep
        self.sequence_landed = max(self.sequence_landed, upto)
        pending = {q[2] for s in self.fake.streams for q in s.queued}
        self.fake._freed &= pending  # ids of roots no copy reads any more may be reused


def _flat(values: Any) -> list[Any]:
    out: list[Any] = []
    for v in values:
        if isinstance(v, (tuple, list)):
            out.extend(_flat(v))
        else:
            out.append(v)
    return out


class _RawKernel:
    """``cupy.RawKernel``: the CUDA source built for the CPU by :mod:`cuda_emulation`."""

    DEFAULT_SHARED_BYTES = 48 * 1024

    def __init__(self, fake: FakeCupy, code: str, name: str, options: tuple[str, ...]) -> None:
        from cuda_emulation import EmulatedKernel

        self.fake = fake
        self.options = options
        self.emulated = EmulatedKernel(code, name)
        self.max_dynamic_shared_size_bytes = self.DEFAULT_SHARED_BYTES

    def __call__(self, grid: Any, block: Any, args: Any, shared_mem: int = 0,
                 **kwargs: Any) -> None:
        if shared_mem > max(self.DEFAULT_SHARED_BYTES, self.max_dynamic_shared_size_bytes):
            raise RuntimeError("CUDA_ERROR_INVALID_VALUE: dynamic shared memory beyond the "
                               "block's limit (raise max_dynamic_shared_size_bytes first)")
        if shared_mem > self.fake.shared_per_block_optin:
            raise RuntimeError("CUDA_ERROR_INVALID_VALUE: more shared memory than the device has")
        c_args = []
        for a in args:
            if isinstance(a, np.ndarray):
                raise TypeError("Unsupported type <class 'numpy.ndarray'>: a host array as a "
                                "kernel argument (CuPy stand-in)")
            if isinstance(a, DeviceArray):
                if not a._a.flags.c_contiguous:
                    raise ValueError("a kernel reads raw memory: pass C-contiguous arrays "
                                     "(CuPy stand-in)")
                c_args.append(a._a)
            elif isinstance(a, np.generic):
                c_args.append(a)
            else:
                raise TypeError(f"kernel argument {a!r}: pass a NumPy scalar, whose C type "
                                "is explicit (CuPy stand-in)")
        self.fake._count("RawKernel " + self.emulated.name, args, None, in_place=True)
        self.emulated(tuple(grid), tuple(block), tuple(c_args), shared_mem)


class FakeCupy(types.ModuleType):
    """NumPy under CuPy's name, with device arrays of their own type (see the module).

    Parameters
    ----------
    free_bytes, pool_free_bytes : int
        What ``memGetInfo`` and the memory pool report free.
    """

    def __init__(self, free_bytes: int = 1 << 30, pool_free_bytes: int = 0) -> None:
        super().__init__("cupy")
        self.__version__ = "0.0-stand-in"
        self.ndarray = DeviceArray
        self.free_bytes = free_bytes
        self.pool_free_bytes = pool_free_bytes
        self.syncs = 0
        self.sync_log: list[str] = []
        self.violations: list[str] = []
        self.async_copies = 0
        self.uploaded_bytes = 0
        self.dlpack_exports = 0
        self.pinned_bytes = 0
        self.pinned_allocations = 0
        self.ops = 0
        self.op_log: list[str] = []
        self.op_bytes = 0
        #: What ``Device().attributes["MaxSharedMemoryPerBlockOptin"]`` reports (an H200's).
        self.shared_per_block_optin = 227 * 1024
        self.events: list[_Event] = []
        self.streams: list[_Stream] = []
        self._live: dict[int, int] = {}  # root array id -> live device arrays on it
        self._roots: dict[int, np.ndarray] = {}
        self._freed: set[int] = set()  # roots freed while a copy still reads them
        self._null = _Stream(self, null=True)
        self._current = self._null
        fake = self
        pool = types.SimpleNamespace(free_bytes=lambda: fake.pool_free_bytes,
                                     used_bytes=lambda: 0, total_bytes=lambda: 0)
        self.get_default_memory_pool = lambda: pool
        self.cuda = types.SimpleNamespace(
            runtime=types.SimpleNamespace(memGetInfo=lambda: (fake.free_bytes,
                                                              2 * fake.free_bytes)),
            get_current_stream=lambda: fake._current,
            Stream=lambda null=False, non_blocking=False, ptds=False: _Stream(
                fake, null, non_blocking, ptds),
            Event=lambda block=False, disable_timing=False, interprocess=False: _Event(
                fake, block, disable_timing, interprocess),
            Device=lambda device=None: types.SimpleNamespace(
                synchronize=fake._device_sync,
                attributes={"MaxSharedMemoryPerBlockOptin": fake.shared_per_block_optin}),
            alloc_pinned_memory=self._alloc_pinned,
        )

    # -- bookkeeping ----------------------------------------------------------------------
    @property
    def in_flight(self) -> int:
        """Asynchronous copies queued and not landed."""
        return sum(len(s.queued) for s in self.streams)

    def _count(self, name: str, operands: Any, result: Any, *, in_place: bool = False) -> None:
        """Count a device operation when it makes new device memory or writes in place."""
        arrays = [o._a for o in _flat(operands) if isinstance(o, DeviceArray)]
        roots = {id(_root(a)) for a in arrays}
        fresh = isinstance(result, np.ndarray) and id(_root(result)) not in roots
        if not (fresh or in_place or name == "setitem"):
            return
        self.ops += 1
        self.op_log.append(name)
        self.op_bytes += sum(a.nbytes for a in arrays)
        if fresh:
            self.op_bytes += result.nbytes

    def RawKernel(self, code: str, name: str, options: tuple[str, ...] = (),
                  **kwargs: Any) -> _RawKernel:
        return _RawKernel(self, code, name, tuple(options))

    def _sync(self, what: str) -> None:
        self.syncs += 1
        self.sync_log.append(what)

    def _device_sync(self) -> None:
        self._sync("device")
        for stream in self.streams:
            stream._land(stream.sequence)

    def _alloc_pinned(self, nbytes: int) -> _PinnedMemory:
        self.pinned_bytes += nbytes
        self.pinned_allocations += 1
        return _PinnedMemory(b"\xab" * nbytes)

    def _adopt(self, wrapper: DeviceArray, a: np.ndarray) -> int:
        root = _root(a)
        key = id(root)
        self._live[key] = self._live.get(key, 0) + 1
        self._roots[key] = root  # keeps the id unique while any wrapper of it lives
        return key

    def _drop(self, key: int) -> None:
        left = self._live.get(key, 0) - 1
        if left > 0:
            self._live[key] = left
            return
        self._live.pop(key, None)
        self._roots.pop(key, None)
        pending = [q for s in self.streams for q in s.queued if q[2] == key]
        if pending:
            self._freed.add(key)
            self.violations.append(
                f"device memory freed while {len(pending)} asynchronous copies still read it")

    # -- wrapping -------------------------------------------------------------------------
    def _wrap(self, value: Any) -> Any:
        if isinstance(value, np.ndarray):
            return DeviceArray(self, value)
        if isinstance(value, np.generic):  # a reduction's result stays on the device (0-d)
            return DeviceArray(self, np.asarray(value))
        if isinstance(value, tuple):
            return tuple(self._wrap(v) for v in value)
        if isinstance(value, list):
            return [self._wrap(v) for v in value]
        return value

    def _unwrap(self, value: Any, allow_host: bool = False) -> Any:
        if isinstance(value, DeviceArray):
            return value._a
        if isinstance(value, np.ndarray):
            if allow_host:
                return value
            raise TypeError("Unsupported type <class 'numpy.ndarray'>: a host array in a "
                            "device operation (CuPy stand-in); upload it with asarray")
        if isinstance(value, tuple):
            return tuple(self._unwrap(v, allow_host) for v in value)
        if isinstance(value, list):
            return [self._unwrap(v, allow_host) for v in value]
        if isinstance(value, dict):
            return {k: self._unwrap(v, allow_host) for k, v in value.items()}
        return value

    def _index(self, key: Any) -> Any:
        parts = key if isinstance(key, tuple) else (key,)
        if any(isinstance(p, DeviceArray) and p.dtype == bool and p.ndim > 0 for p in parts):
            self._sync("boolean-mask indexing")  # its size is read back
        return self._unwrap(key, allow_host=True)

    def _call(self, func: Any, args: Any, kwargs: Any) -> Any:
        name = getattr(func, "__name__", "")
        if name in _SIZE_FROM_DATA:
            self._sync(name)
        upload = name in _UPLOADS
        from_host = upload and bool(args) and not isinstance(args[0], DeviceArray)
        operands = (*args, *kwargs.values())
        args = self._unwrap(args, allow_host=upload)
        kwargs = self._unwrap(kwargs, allow_host=upload)
        result = func(*args, **kwargs)
        self._count(name, operands, result, in_place=kwargs.get("out") is not None)
        if from_host and isinstance(result, np.ndarray):
            self.uploaded_bytes += result.nbytes
        if (from_host and isinstance(args[0], np.ndarray) and isinstance(result, np.ndarray)
                and np.shares_memory(result, args[0])):
            result = result.copy()  # an upload is a new device array, never the host's memory
        return self._wrap(result)

    # -- the cupy namespace ---------------------------------------------------------------
    def asnumpy(self, a: Any, stream: Any = None, out: np.ndarray | None = None,
                blocking: bool = True) -> np.ndarray:
        if not isinstance(a, DeviceArray):
            return np.asarray(a)
        if out is None:
            self._sync("asnumpy")
            return a._a.copy()
        assert out.shape == a.shape and out.dtype == a.dtype, (out.shape, a.shape)
        if blocking:
            self._sync("asnumpy")
            out[...] = a._a
            return out
        assert stream is not None and stream is self._current, "async copy off its stream"
        assert _is_pinned(out), "asynchronous copy into pageable memory"
        stream._queue(a._a, a._root_id, out)
        self.async_copies += 1
        return out

    def __getattr__(self, name: str) -> Any:
        attr = getattr(np, name)
        if isinstance(attr, type) or not callable(attr):
            return attr  # dtypes (cupy.float32 is numpy.float32), constants
        fake = self

        def function(*args: Any, **kwargs: Any) -> Any:
            return fake._call(attr, args, kwargs)
        function.__name__ = name
        return function


def syncs_per_batch(fake: FakeCupy, batches: Any, keep: list | None = None) -> list[int]:
    """Host synchronisations done while producing each batch of the iterator ``batches``
    (between two yields); each batch is released, after a copy of it is appended to
    ``keep`` when given."""
    counts = []
    while True:
        before = fake.syncs
        try:
            batch = next(batches)
        except StopIteration:
            return counts
        counts.append(fake.syncs - before)
        if keep is not None:
            keep.append(batch.detach())
        batch.release()
