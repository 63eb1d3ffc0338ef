"""A PyTorch dataset that renders its images while the network trains: no files.

:class:`RenderDataset` is a :class:`torch.utils.data.IterableDataset` over structures and
render settings. Each epoch renders every frame of every structure in ``n_rotation`` fresh
random orientations (the epoch is the stack index of the rotation draws) and yields them
as dicts of tensors, a batch at a time (default) or one image at a time. The images are
those of :meth:`~xyz2image_gpu.pipeline.engine.Renderer.iter_batches` with the same seed,
structure, stack and image index: byte for byte on the CPU, and on the GPU as far as its
bytes repeat across batch sizes (README, "Reproducibility").

Where it renders:

* on the CPU, in each DataLoader worker process (or in the main process with
  ``num_workers=0``); a worker renders on one thread, the main process on every core;
  NumPy arrays become tensors without a copy (:func:`torch.from_numpy`);
* on the GPU, in the main process only (CUDA does not survive a fork, and a worker would
  copy every batch through host memory): the engine keeps each batch on the device
  (``to_host=False``) and :func:`torch.from_dlpack` hands its CuPy arrays to PyTorch without
  a copy. CuPy is reached through :mod:`xyz2image_gpu.backend` only. The engine queues a
  batch on CuPy's current stream and ``from_dlpack`` makes PyTorch's current stream wait
  for it (the DLPack ``stream`` protocol); a tensor's memory goes back to CuPy's pool when
  PyTorch lets it go, safe while both libraries work on the default stream, as they do
  unless told otherwise.

Which images a worker renders is :mod:`.plan`'s: blocks of one batch, shuffled per epoch,
dealt to ranks, then to a rank's workers; every image of an epoch is rendered exactly once
across all of them.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
from collections.abc import Iterable, Iterator, Sequence
from multiprocessing import context as mp_context
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from xyz2image_gpu.backend import Backend, get_backend
from xyz2image_gpu.pipeline.engine import Renderer
from xyz2image_gpu.pipeline.engine import _integer as _count  # the engine's checks, its words
from xyz2image_gpu.pipeline.settings import RenderSettings
from xyz2image_gpu.run.config import find_inputs
from xyz2image_gpu.structures.convert import as_structure
from xyz2image_gpu.structures.model import Structure
from xyz2image_gpu.torch import plan
from xyz2image_gpu.torch.prefetch import ahead

__all__ = ["KEY_NAMES", "RenderDataset"]

#: Keys every item carries besides the engine's arrays: which image it is. ``file`` is the
#: structure's position in :attr:`RenderDataset.structures`, ``frame`` the frame's position
#: in that structure (``frame_index`` is its number in the file), ``stack`` the epoch and
#: ``rotation`` the orientation; the image is ``frame * n_rotation + rotation`` of
#: ``render(structures[file], n_rotation, stack=stack, ...)``.
KEY_NAMES = ("file", "frame", "stack", "rotation")


class _Epoch:
    """The epoch as a plain value, in a pickled copy of the dataset (see ``__getstate__``)."""

    def __init__(self, value: int) -> None:
        self.value = value


class RenderDataset(IterableDataset):
    """Images rendered on the fly, for :class:`torch.utils.data.DataLoader`.

    Parameters
    ----------
    structures : path, Structure, ase.Atoms, or a sequence of them
        What to render. A folder contributes its ``.xyz``/``.extxyz`` files (as the
        command line finds them), a file is read as :func:`~xyz2image_gpu.as_structure`
        reads it; a :class:`~xyz2image_gpu.Structure` is taken as it is; anything else (an
        ASE ``Atoms`` object; a list of them inside the sequence: one multi-frame
        structure) goes through :func:`~xyz2image_gpu.as_structure` and is named
        ``structure_<i>`` after its position ``i`` unless it is a Structure. The names must
        differ: the rotations are drawn from them.
    settings : RenderSettings, optional
        How images look (default ``RenderSettings()``).
    output_types : sequence of str
        Any output types the engine renders (``Renderer``'s ``output_types``).
    n_rotation : int
        Orientations of every frame per epoch.
    seed : int
        Seed of the rotations (and augmentations) and of the shuffle.
    batch_size : int
        Images per batch (per block of the plan, see :mod:`.plan`); the last batch of each
        structure may be shorter. Does not change any image.
    samples : bool
        Yield one image at a time (tensors without the leading axis) instead of batches.
    prefetch : int
        Batches rendered ahead on a background thread of the process that iterates
        (0: each batch when it is asked for). With ``num_workers=0`` it lets rendering
        overlap the training step (the engine renders outside the GIL): what worker
        processes do, without moving each batch between processes.
    shuffle : bool
        Visit the blocks of an epoch in an order drawn from ``(seed, epoch)``; else
        structure by structure.
    original_view : bool
        Render rotation 0 of every frame in the original script's fixed view each epoch
        (``RenderSettings.all_random`` False); by default every orientation is random.
    device : {"auto", "cpu", "gpu"} or Backend
        Where images are rendered; decided once, here.
    rank, world_size : int, optional
        This process's share of a distributed job; default: from :mod:`torch.distributed`
        when its process group is initialised (make the dataset after
        ``init_process_group``), else 0 and 1.
    frameshift, maxframes, exclude_elements
        Frame selection and elements to drop, as the command line's options, for the
        structures read from files (and ``exclude_elements`` for the others).

    Each item is a dict of tensors: the engine's arrays (the requested outputs,
    ``rotations``, ``voxel_size``, ``frame_index``, and ``n_atoms`` with ``coordinates_3d``;
    whatever the output types render), plus int64 :data:`KEY_NAMES`. On the GPU every
    tensor is on the device. Call :meth:`set_epoch` before each epoch's ``iter(loader)``:
    it reaches workers that persist between epochs too.

    With ``samples=True`` a DataLoader's ``batch_size`` collates images of one worker, which
    may come from different structures: outputs whose size depends on the structure
    (``coordinates_3d``) then do not stack; batch mode (``DataLoader(dataset,
    batch_size=None)``) keeps each batch within one structure.

    Ranks may receive one batch more than others (the blocks are dealt, none repeated):
    a distributed loop that needs equal counts should stop at ``min`` over ranks or use
    :class:`torch.distributed.algorithms.Join`.

    Raises
    ------
    ValueError
        Unknown output types, bad counts, a rank outside the world, two structures of one
        name, or a structure the settings cannot show (``StructureError``, naming it).
    BackendError
        ``device="gpu"`` without a usable GPU.
    """

    def __init__(
        self,
        structures: Any,
        settings: RenderSettings | None = None,
        output_types: Sequence[str] = ("gaussian_2d",),
        *,
        n_rotation: int = 1,
        seed: int = 0,
        batch_size: int = 256,
        samples: bool = False,
        prefetch: int = 0,
        shuffle: bool = True,
        original_view: bool = False,
        device: str | Backend = "auto",
        rank: int | None = None,
        world_size: int | None = None,
        frameshift: int = 0,
        maxframes: int | None = 50,
        exclude_elements: Iterable[str | int] = (),
    ) -> None:
        super().__init__()
        settings = settings or RenderSettings()
        if not original_view and not settings.all_random:
            settings = dataclasses.replace(settings, all_random=True)
        self.settings = settings
        self.n_rotation = _count("n_rotation", n_rotation, 1)
        self.seed = _count("seed", seed, 0)
        self.batch_size = _count("batch_size", batch_size, 1)
        self.samples = bool(samples)
        self.prefetch = _count("prefetch", prefetch, 0)
        self.shuffle = bool(shuffle)
        self.structures: tuple[Structure, ...] = _structures(
            structures, frameshift=frameshift, maxframes=maxframes,
            exclude_elements=tuple(exclude_elements))
        self.rank, self.world_size = _distributed(rank, world_size)
        backend = get_backend(device)
        #: The GPU's backend, or "cpu": each process makes its renderer from it.
        self._device: Backend | str = backend if backend.is_gpu else "cpu"
        with Renderer(settings, output_types, "cpu", threads=1) as probe:  # checks the types
            self.output_types = probe.output_types
            for structure in self.structures:  # checks every frame (StructureError)
                for _ in probe.iter_batches(structure, self.n_rotation, stop=0):
                    pass
        self._blocks = plan.blocks([len(s.frames) * self.n_rotation for s in self.structures],
                                   self.batch_size)
        # shared memory: DataLoader workers (persistent ones too) read the epoch set later
        self._epoch: Any = multiprocessing.RawValue("q", 0)
        self._renderer: Renderer | None = None
        self._renderer_pid: int | None = None

    # ------------------------------------------------------------------ epochs
    @property
    def epoch(self) -> int:
        """The epoch the next iteration renders: the stack index of its rotations."""
        return int(self._epoch.value)

    def set_epoch(self, epoch: int) -> None:
        """Render epoch ``epoch`` (>= 0) next: fresh rotations (stack ``epoch``) and, with
        ``shuffle``, a fresh order. Call it before ``iter(loader)``."""
        self._epoch.value = _count("epoch", epoch, 0)

    @property
    def on_gpu(self) -> bool:
        """Whether images are rendered on the GPU (in the main process)."""
        return not isinstance(self._device, str)

    # ------------------------------------------------------------------ sizes
    def _rank_blocks(self, epoch: int | None = None) -> list[plan.Block]:
        epoch = self.epoch if epoch is None else epoch
        ordered = plan.epoch_order(self._blocks, seed=self.seed, epoch=epoch,
                                   shuffle=self.shuffle)
        return plan.shard(ordered, rank=self.rank, world_size=self.world_size, worker=0,
                          num_workers=1)

    def n_images(self) -> int:
        """Images this rank renders in the current epoch (all ranks: ``sum`` of them)."""
        return sum(b.size for b in self._rank_blocks())

    def __len__(self) -> int:
        """Items this rank yields in the current epoch: batches, or images with ``samples``."""
        return self.n_images() if self.samples else len(self._rank_blocks())

    # ------------------------------------------------------------------ iteration
    def _renderer_here(self, in_worker: bool) -> Renderer:
        """This process's renderer: one thread in a worker, every core in the main process."""
        if self._renderer is None or self._renderer_pid != os.getpid():
            # a renderer inherited through fork is the parent's (its threads are not here)
            self._renderer = Renderer(self.settings, self.output_types, self._device,
                                      threads=1 if in_worker else None)
            self._renderer_pid = os.getpid()
        return self._renderer

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        worker = get_worker_info()
        if worker is not None and self.on_gpu:
            raise RuntimeError(
                "RenderDataset renders on the GPU in the main process: use "
                "DataLoader(..., num_workers=0), or device='cpu' to render in workers")
        worker_id, num_workers = (worker.id, worker.num_workers) if worker else (0, 1)
        epoch = self.epoch
        ordered = plan.epoch_order(self._blocks, seed=self.seed, epoch=epoch,
                                   shuffle=self.shuffle)
        mine = plan.shard(ordered, rank=self.rank, world_size=self.world_size,
                          worker=worker_id, num_workers=num_workers)
        renderer = self._renderer_here(worker is not None)
        batches = self._batches(renderer, mine, epoch)
        if self.prefetch:
            batches = ahead(batches, self.prefetch)
        for item in batches:
            if not self.samples:
                yield item
                continue
            for i in range(len(item["file"])):
                yield {k: v[i] for k, v in item.items()}

    def _batches(self, renderer: Renderer, blocks: list[plan.Block], epoch: int,
                 ) -> Iterator[dict[str, torch.Tensor]]:
        """Each block of ``blocks`` rendered, as one dict of tensors."""
        for block in blocks:
            for batch in renderer.iter_batches(
                    self.structures[block.file], self.n_rotation, seed=self.seed, stack=epoch,
                    batch_size=block.size, start=block.start, stop=block.stop,
                    to_host=not self.on_gpu):
                yield self._tensors(batch, block, epoch)

    def _tensors(self, batch: dict[str, Any], block: plan.Block, epoch: int,
                 ) -> dict[str, torch.Tensor]:
        """The batch's arrays as tensors without a copy, and the images' keys."""
        if self.on_gpu:  # CuPy arrays, which the engine gave up (to_host=False): DLPack
            try:
                out = {k: torch.from_dlpack(v) for k, v in batch.items()}
            except (RuntimeError, BufferError, TypeError) as exc:
                hint = ("" if torch.cuda.is_available() else
                        "; this PyTorch has no CUDA (torch.cuda.is_available() is False): "
                        "install a CUDA build of PyTorch, or render with device='cpu'")
                raise RuntimeError(f"PyTorch cannot take the GPU's arrays through DLPack "
                                   f"({type(exc).__name__}: {exc}){hint}") from exc
        else:  # the batch's own arrays (the engine's CPU batches are the caller's)
            out = {k: _tensor(k, np.asarray(v)) for k, v in batch.items()}
        # made where the batch is, from no host data: on the GPU an upload from pageable
        # memory would wait for the device (the render queued before it) every batch
        device = next(iter(out.values())).device
        k = torch.arange(block.start, block.stop, dtype=torch.int64, device=device)
        out["file"] = torch.full_like(k, block.file)
        out["frame"] = torch.div(k, self.n_rotation, rounding_mode="floor")
        out["stack"] = torch.full_like(k, epoch)
        out["rotation"] = torch.remainder(k, self.n_rotation)
        return out

    # ------------------------------------------------------------------ pickling
    def __getstate__(self) -> dict[str, Any]:
        if self.on_gpu:
            raise RuntimeError(
                "a RenderDataset that renders on the GPU stays in its process: use "
                "DataLoader(..., num_workers=0), or device='cpu' to render in workers")
        state = self.__dict__.copy()
        state["_renderer"] = state["_renderer_pid"] = None
        if mp_context.get_spawning_popen() is None:
            # shared memory travels only to a process being started (a DataLoader worker);
            # any other copy keeps the epoch's value
            state["_epoch"] = _Epoch(self.epoch)
        return state

    def __del__(self) -> None:
        renderer = getattr(self, "_renderer", None)
        if renderer is not None and self._renderer_pid == os.getpid():
            renderer.close()


# ---------------------------------------------------------------------------- helpers
def _tensor(name: str, a: np.ndarray) -> torch.Tensor:
    """``a`` as a tensor sharing its memory (a copy where it is read-only: PyTorch's tensors
    are writable); a dtype this PyTorch cannot hold is an error that names the array."""
    try:
        return torch.from_numpy(a if a.flags.writeable else a.copy())
    except TypeError as exc:
        hint = ("; unsigned integers wider than 8 bits (16-bit images: bitrate=16) need "
                "PyTorch >= 2.3" if a.dtype.kind == "u" and a.dtype.itemsize > 1 else "")
        raise TypeError(f"PyTorch {torch.__version__} cannot hold {name!r} ({a.dtype}): "
                        f"{exc}{hint}") from exc


def _distributed(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """``(rank, world_size)``: as given, else torch.distributed's when initialised."""
    dist = torch.distributed
    initialised = dist.is_available() and dist.is_initialized()
    if world_size is None:
        world_size = dist.get_world_size() if initialised else 1
    if rank is None:
        rank = dist.get_rank() if initialised else 0
    world_size = _count("world_size", world_size, 1)
    rank = _count("rank", rank, 0)
    if rank >= world_size:
        raise ValueError(f"rank {rank} is outside [0, {world_size}) (world_size)")
    return rank, world_size


def _structures(structures: Any, *, frameshift: int, maxframes: int | None,
                exclude_elements: tuple[str | int, ...]) -> tuple[Structure, ...]:
    """Every structure of ``structures`` (see :class:`RenderDataset`), names distinct."""
    items = ([structures] if isinstance(structures, (str, os.PathLike, Structure))
             or hasattr(structures, "get_positions") else list(structures))
    out: list[Structure] = []
    for i, item in enumerate(items):
        if isinstance(item, (str, os.PathLike)):
            out += [as_structure(path, frameshift=frameshift, maxframes=maxframes,
                                 exclude_elements=exclude_elements)
                    for path in find_inputs([Path(item)])]
        elif isinstance(item, Structure):
            out.append(as_structure(item, exclude_elements=exclude_elements)
                       if exclude_elements else item)
        else:
            out.append(as_structure(item, name=f"structure_{i}",
                                    exclude_elements=exclude_elements))
    if not out:
        raise ValueError("RenderDataset needs at least one structure")
    seen: dict[str, Structure] = {}
    for s in out:
        if s.name in seen:
            where = " and ".join(x.source or f"a structure named {x.name!r}"
                                 for x in (seen[s.name], s))
            raise ValueError(f"{where} share the name {s.name!r}: the rotations are drawn "
                             "from the name, so both would be seen in the same orientations "
                             "(rename one: as_structure(..., name=...))")
        seen[s.name] = s
    return tuple(out)
