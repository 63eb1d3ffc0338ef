"""The renderer's host-side preparation: per-frame host data and the frame table uploaded
once per :meth:`~.engine.Renderer.iter_batches` call; the per-batch host inputs.

* :func:`frame_data`: each frame's centred positions, probe components (with thermal
  smearing) and radius, checked once per structure (a frame that cannot be shown is refused
  here, naming the file and frame);
* :func:`frame_table`: every frame padded to the structure's largest frame, with its
  rotation key: what a batch's images are gathered from (:func:`.stages.gather`);
* :func:`batch_inputs`: one batch's host arrays (each image's frame, rotation and metadata),
  the inputs of :mod:`.stages`; the augmentations' draws are made where the batch renders.

Everything here runs on the host in NumPy and is a function of what it is given (the
settings, the output types, whether the kernel needs static shapes): no backend, no state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..backend import Backend
from ..physics.cross_section import beam_weights
from ..physics.thermal import smear_components, thermal_widths
from ..structures.elements import atomic_number
from ..structures.model import Structure, StructureError
from .framing import (
    coarsest_pixel,
    heatmap_problem,
    precision_problem,
    sampling_problem,
    wide_gaussian_problem,
)
from .kernels.labels import splat_reach
from .rotations import keyed_rotation_matrices, rotation_key
from .settings import RenderSettings

__all__ = [
    "NUMBERED",
    "FrameData",
    "FrameTable",
    "batch_inputs",
    "binary_reach",
    "channel_numbers",
    "components",
    "frame_data",
    "frame_table",
    "thermal_rms",
]


@dataclass
class FrameData:
    """Host-side per-frame data, prepared once per structure."""

    index: int
    centred: np.ndarray  # (N, 3) float64, relative to the centroid
    amplitudes: np.ndarray  # (N, G) peak height of each atom's probe component
    sigmas: np.ndarray  # (N, G) width of each atom's probe component, Å
    radius: float  # largest distance from the centroid, Å
    rms: np.ndarray | None  # (N,) thermal displacement for phonon jitter, Å
    blank: str | None = None  # why its Gaussian images would come out blank, if they would
    numbers: np.ndarray | None = None  # (N,) atomic numbers
    #: (N,) what turns an atom's amplitudes into its count for the column correction (beam
    #: units): ``w**(p - 1) / w_ref**p``, ``p`` the settings' ``column_weighting``
    count_scale: np.ndarray | None = None


@dataclass
class FrameTable:
    """Every frame of one render, padded to the structure's largest frame: what a batch's
    images are gathered from by their frame (``positions[image_frame]``). Built on the host
    once per :meth:`~.engine.Renderer.iter_batches` call; on the GPU the per-atom arrays are
    uploaded once and each batch sends only its rotations and image-to-frame indices.

    Padding atoms copy atom 0 of their frame (extents unchanged), with amplitude 0, width 1
    and ``valid`` False (atomic number -1 in ``numbers``).
    """

    positions: Any  # (F, N, 3) float32, relative to each frame's centroid, Å
    amplitudes: Any  # (F, N, G) float32
    sigmas: Any  # (F, N, G) float32, Å
    valid: Any  # (F, N) bool
    radius: Any  # (F,) float32, Å
    frame_ids: np.ndarray  # (F,) int32 source index of each frame (host)
    n_atoms: np.ndarray  # (F,) int32 (host)
    keys: np.ndarray  # (F,) uint64 each frame's rotation stream (host)
    binary_reach: int | None = None  # static splat reach of binary labels (GPU), see labels
    # with augmentations (else None), on the backend's device, indexed by the kernels:
    stream_keys: Any = None  # (F,) uint64 ``keys``, the key of each frame's random streams
    rms: Any = None  # (F, N) float64 phonon jitter r.m.s. per atom (0 for padding), Å
    #: (F, N) int16 atomic numbers, -1 for padding; only where an output needs them.
    numbers: Any = None
    #: (C,) int16 atomic numbers of element_heatmap_2d's channels, where it is requested.
    channels: Any = None
    #: (F, N) float32 (0 for padding): ``amplitudes * count_scale`` are the components the
    #: column correction counts atoms with in beam units, each atom's unweighted probe
    #: times ``(w / w_ref)**column_weighting`` (:class:`~..physics.column.ColumnCorrection`);
    #: else None.
    count_scale: Any = None

    #: The arrays that live on the backend's device (those that are not None).
    DEVICE = ("positions", "amplitudes", "sigmas", "valid", "radius", "stream_keys", "rms",
              "numbers", "channels", "count_scale")

    def on(self, backend: Backend) -> FrameTable:
        """This table with its per-atom arrays on ``backend`` (the same table on NumPy)."""
        if not backend.is_gpu:
            return self
        moved = {k: None if getattr(self, k) is None else backend.asarray(getattr(self, k))
                 for k in self.DEVICE}
        return FrameTable(**moved, frame_ids=self.frame_ids, n_atoms=self.n_atoms,
                          keys=self.keys, binary_reach=self.binary_reach)


def frame_data(settings: RenderSettings, structure: Structure, *,
               renders_images: bool, renders_heatmaps: bool = False) -> list[FrameData]:
    """Per-frame host data; refuses frames whose images could not show the atoms.

    ``renders_images``: whether Gaussian outputs are requested; ``renders_heatmaps``:
    whether heatmap_2d or element_heatmap_2d are. A frame whose field of view
    is too coarse for any atom to reach a pixel (:func:`~.framing.sampling_problem`,
    Gaussian outputs outside legacy mode) is marked in its ``blank``: rendering it is well
    defined (all zeros), the caller tells.

    Raises
    ------
    StructureError
        Naming the file and frame: the positions are too large to place the atoms
        (:func:`~.framing.precision_problem`), the Gaussians are wider than the field
        (:func:`~.framing.wide_gaussian_problem`), all atoms sit at one point with no
        margin, or the heatmaps' Gaussians are too narrow for the frame's coarsest pixel
        (:func:`~.framing.heatmap_problem`).
    """
    s = settings
    sigma_min = min(sigma for _, sigma in s.components)
    data = []
    for frame in structure.frames:
        pos = np.asarray(frame.positions, dtype=np.float64)
        problem = precision_problem(pos, sigma_min)
        if problem:
            raise StructureError(problem, path=structure.source, frame=frame.index)
        centred = pos - pos.mean(axis=0)
        radius = float(np.sqrt((centred * centred).sum(axis=1).max()))
        if radius == 0 and s.padxyz == 0 and s.framing != "fixed":
            raise StructureError(
                "all atoms sit at one point and padxyz is 0: the field of view has no "
                "size; use padxyz > 0 or framing='fixed'",
                path=structure.source, frame=frame.index,
            )
        if s.framing != "fixed" and renders_images:
            problem = wide_gaussian_problem(sigma_min, radius, s.padxyz)
            if problem:
                raise StructureError(problem, path=structure.source, frame=frame.index)
        if renders_heatmaps:
            problem = heatmap_problem(s.heatmap_sigma, coarsest_pixel(
                radius, framing=s.framing, edgesize=s.edgesize, padxyz=s.padxyz,
                pixel_size=s.pixel_size))
            if problem:
                raise StructureError(problem, path=structure.source, frame=frame.index)
        weights = atom_weights(s, frame.numbers)
        rms = thermal_rms(s, frame.numbers) if s.thermal or s.phonon_jitter else None
        amps, sigmas = components(s, frame.numbers, weights, rms)
        blank = None
        if not s.legacy and renders_images:
            blank = sampling_problem(
                len(pos), float(sigmas.min()), radius, framing=s.framing,
                edgesize=s.edgesize, padxyz=s.padxyz, pixel_size=s.pixel_size)
        count_scale = column_count_scale(s, frame.numbers, weights)
        data.append(FrameData(frame.index, centred, amps, sigmas, radius,
                              rms if s.phonon_jitter else None, blank, frame.numbers,
                              count_scale))
    return data


def column_count_scale(settings: RenderSettings, numbers: np.ndarray,
                       weights: np.ndarray | None = None) -> np.ndarray | None:
    """What turns each atom's amplitudes into its count for the column correction in beam
    units, ``w**(p - 1) / w_ref**p`` (N,) with ``p`` the ``column_weighting``: the atom's
    unweighted probe times ``(w / w_ref)**p``; None outside beam units or without a
    correction. ``weights``: :func:`atom_weights` of ``numbers``, when known."""
    s = settings
    if s.normalization != "beam" or not (s.column_correction or s.column_broadening):
        return None
    w = np.asarray(atom_weights(s, numbers) if weights is None else weights, dtype=np.float64)
    w_ref = float(atom_weights(s, np.array([atomic_number(s.column_reference)]))[0])
    p = s.column_weighting
    return w ** (p - 1.0) / w_ref**p


def atom_weights(settings: RenderSettings, numbers: np.ndarray) -> np.ndarray:
    """Each atom's weight (N,): ``Z**z_exponent``, or with ``normalization="beam"`` its
    cross-section over the probe's integral (:func:`.physics.cross_section.beam_weights`)."""
    s = settings
    if s.normalization == "beam":
        return beam_weights(numbers, s.voltage_kv, s.convergence_mrad, s.detector,
                            s.components)
    if s.z_exponent == 0:
        return np.ones(len(numbers))
    return np.asarray(numbers, dtype=np.float64) ** s.z_exponent


def components(
    settings: RenderSettings, numbers: np.ndarray, weights: np.ndarray, rms: np.ndarray | None
) -> tuple[Any, Any]:
    """Per-atom probe components: amplitudes and widths (Å), both (N, G).

    ``rms``: the atoms' thermal displacements, folded in when ``settings.thermal``.
    """
    u = rms if settings.thermal else np.zeros(len(numbers))
    amps, sigmas = smear_components(settings.components, u)
    return amps * weights[:, None], sigmas


def thermal_rms(settings: RenderSettings, numbers: np.ndarray) -> np.ndarray:
    """Each atom's r.m.s. thermal displacement along one axis, Å."""
    u = thermal_widths(numbers, dict(settings.thermal_overrides))
    return np.asarray(u, dtype=np.float64)


def frame_table(settings: RenderSettings, structure: Structure, frames: list[FrameData],
                seed: int, stack: int, *, output_types: Sequence[str],
                static_shapes: bool) -> FrameTable:
    """Every frame's padded host arrays and rotation key, once per render.

    ``output_types`` and ``static_shapes`` (the kernel's) decide :func:`binary_reach`;
    ``output_types`` also whether the atomic numbers (``numbers`` and the label maps per
    element) and the channels (:func:`channel_numbers`) are in the table.
    """
    nmax = structure.max_atoms
    f = len(frames)
    n_comp = len(settings.components)
    pos = np.empty((f, nmax, 3), dtype=np.float32)
    amps = np.zeros((f, nmax, n_comp), dtype=np.float32)
    sigmas = np.ones((f, nmax, n_comp), dtype=np.float32)  # padding: finite, weight 0
    valid = np.zeros((f, nmax), dtype=bool)
    n_atoms = np.empty(f, dtype=np.int32)
    for i, fd in enumerate(frames):
        n = len(fd.centred)
        pos[i, :n] = fd.centred
        pos[i, n:] = fd.centred[0]  # padding copies atom 0: extents unchanged
        amps[i, :n] = fd.amplitudes
        sigmas[i, :n] = fd.sigmas
        valid[i, :n] = True
        n_atoms[i] = n
    keys = np.array([rotation_key(seed, structure.name, fd.index, stack) for fd in frames],
                    dtype=np.uint64)
    rms = None
    if settings.phonon_jitter:
        rms = np.zeros((f, nmax), dtype=np.float64)
        for i, fd in enumerate(frames):
            rms[i, : len(fd.centred)] = fd.rms
    numbers = channels = None
    if NUMBERED & set(output_types):
        numbers = np.full((f, nmax), -1, dtype=np.int16)
        for i, fd in enumerate(frames):
            numbers[i, : len(fd.centred)] = fd.numbers
    if "element_heatmap_2d" in output_types:
        channels = channel_numbers(settings, structure)
    count_scale = None
    if frames and frames[0].count_scale is not None:
        count_scale = np.zeros((f, nmax), dtype=np.float32)
        for i, fd in enumerate(frames):
            count_scale[i, : len(fd.centred)] = fd.count_scale
    return FrameTable(
        pos, amps, sigmas, valid,
        np.array([fd.radius for fd in frames], dtype=np.float32),
        np.array([fd.index for fd in frames], dtype=np.int32), n_atoms, keys,
        binary_reach(settings, frames, output_types=output_types,
                     static_shapes=static_shapes),
        stream_keys=keys if settings.augmented else None, rms=rms, numbers=numbers,
        channels=channels, count_scale=count_scale,
    )


#: Outputs drawn from each atom's atomic number.
NUMBERED = frozenset({"numbers", "element_heatmap_2d"})


def channel_numbers(settings: RenderSettings, structure: Structure) -> np.ndarray:
    """Atomic numbers of ``element_heatmap_2d``'s channels, ascending, (C,) int16:
    ``settings.channel_elements``, or by default every element of ``structure`` (all its
    frames), so that every stack of one input has the same channels."""
    if settings.channel_elements:
        return np.array([atomic_number(el) for el in settings.channel_elements],
                        dtype=np.int16)
    present = np.unique(np.concatenate([np.asarray(f.numbers) for f in structure.frames]))
    return present.astype(np.int16)


def binary_reach(settings: RenderSettings, frames: list[FrameData], *,
                 output_types: Sequence[str], static_shapes: bool) -> int | None:
    """A splat reach that holds every binary label ball of these frames in any rotation,
    known on the host, where the kernel needs a static one (``static_shapes``: the GPU);
    else None.

    The ball's radius is ``binary_radius / voxel`` pixels; the smallest voxel a frame
    can get: ``pixel_size`` (fixed), ``(2 r + 2 padxyz) / (E - 1)`` (structure; ``r``
    its radius), and for ``image`` framing ``(m + 2 padxyz) / (E - 1)`` with ``m``, the
    largest extent along the three axes, at least ``d / sqrt(3)`` for any two atoms
    ``d`` apart (one of the three components of their separation is that long). A 0.1%
    margin covers float32 rounding; a larger reach gives the same bytes.
    """
    s = settings
    if not (static_shapes and {"binary_2d", "binary_3d"} & set(output_types)):
        return None
    largest = 0.0
    for fd in frames:
        if s.framing == "fixed":
            voxel = float(s.pixel_size or 0.0)
        elif s.framing == "structure":
            voxel = (2.0 * fd.radius + 2.0 * s.padxyz) / (s.edgesize - 1)
        else:
            far = fd.centred[np.argmax((fd.centred * fd.centred).sum(axis=1))]
            span = float(np.sqrt(((fd.centred - far) ** 2).sum(axis=1).max()))
            voxel = (span / np.sqrt(3.0) + 2.0 * s.padxyz) / (s.edgesize - 1)
        if not voxel > 0:
            return None  # no bound: the kernel reads the radii (a synchronisation)
        largest = max(largest, s.binary_radius / voxel)
    return splat_reach(largest * 1.001)


def batch_inputs(
    settings: RenderSettings,
    table: FrameTable,
    n_rotation: int,
    start: int,
    stop: int,
) -> dict[str, np.ndarray]:
    """Host arrays for images [start, stop): each image's frame (its row of ``table``),
    rotation and metadata; with augmentations, each image's rotation index (its draws'
    streams are those of its frame's key and that index: :mod:`..physics.augment`).

    Vectorised over the images whatever the frames: the per-atom arrays are gathered
    from ``table`` where the batch renders (:func:`.stages.gather`).
    """
    k = np.arange(start, stop, dtype=np.int64)
    which, r = np.divmod(k, n_rotation)
    batch = {
        "image_frame": which,
        "rotations": keyed_rotation_matrices(table.keys[which], r,
                                             all_random=settings.all_random),
        "frame_index": table.frame_ids[which],
        "n_atoms": table.n_atoms[which],
    }
    if table.channels is not None:  # the same channels for every image (host copy)
        batch["elements"] = np.broadcast_to(np.asarray(table.channels),
                                            (len(k), len(table.channels))).copy()
    if settings.augmented:  # the draws are made where the batch renders, from these
        batch["rotation_index"] = r
    return batch
