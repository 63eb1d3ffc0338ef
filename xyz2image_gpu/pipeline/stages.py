"""One batch's way through the pipeline, stage by stage::

    host inputs -> gather -> geometry -> labels
                                      -> maps
                                      -> components -> images -> augmentations

* :func:`gather`: each image's atoms, from the table of the render's frames by the image's
  frame (on the device on the GPU, where the table was uploaded once);
* :func:`geometry`: rotate each image's atoms and frame them in pixels (:mod:`.framing`);
* :func:`labels`: coordinates_3d, numbers, delta_* and binary_* from the undisplaced atoms
  (the 2-D ones through the image's distorted scan when it has one);
* :func:`maps`: the label maps (heatmaps, per-element heatmaps, column map) in the image's
  pixel grid, through the image's distorted scan when it has one;
* :func:`components`: every probe component of every atom as one Gaussian in pixels, with
  the column correction (:mod:`..physics.column`);
* :func:`images`: gaussian_2d and gaussian_3d;
* :func:`augmentations`: phonon jitter, scan distortion and noise turn the clean gaussian_2d
  into the one stored, beside the clean one, their draws made where the batch renders
  (:mod:`..physics.augment`).

The host inputs are :func:`.frames.batch_inputs`'s arrays for one batch (or one step
of it): per image, its frame, rotation and metadata. Every
stage does its per-pixel work through the strategy the renderer chose once (:mod:`.strategies`,
which also carries the settings and the backend), so no stage branches on the backend or
the kernel. Arrays stay on the backend's device.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ..physics.column import ColumnCorrection
from . import kernels
from .framing import count_outside, frame_pixel_coordinates
from .settings import LABEL_MAPS, SCANNED_LABELS
from .strategies import ArrayKernel

__all__ = [
    "Components",
    "Geometry",
    "augmentations",
    "components",
    "gather",
    "geometry",
    "images",
    "labels",
    "maps",
    "noised_clean",
    "scan_offsets",
]

#: Labels drawn at atoms' positions rounded to voxels.
_ROUNDED_LABELS = frozenset({"coordinates_3d", "delta_3d", "delta_2d"})

#: Outputs with a third pixel axis: atoms outside along it are outside their cube.
_THREE_D = frozenset({"gaussian_3d", "delta_3d", "binary_3d", "coordinates_3d"})


@dataclass
class Geometry:
    """Where a batch's atoms fall in its images.

    Attributes
    ----------
    coords : array, (B, N, 3) float32
        Pixel coordinates (rounded to voxels in legacy mode).
    voxels : array or None, (B, N, 3) float32
        ``coords`` rounded to voxels, for the labels that need them (None when none does).
    voxel : array, (B,) float32
        Å per pixel of each image.
    valid : array, (B, N) bool
        False for the padding atoms of frames with fewer atoms.
    rotations : array, (B, 3, 3) float32
        Each image's rotation, applied as ``positions @ rotations^T``.
    outside : array, (B,) int32
        Atoms of each image that the framing puts outside the image (before any rounding;
        axis 2 counts when a 3-D output is requested): :func:`.framing.count_outside`.
    memo : dict
        Values a kernel derives from the geometry once per batch (the legacy filter).
    binary_reach : int or None
        A static splat reach for the binary labels, known on the host (GPU), or None.
    """

    coords: Any
    voxels: Any
    voxel: Any
    valid: Any
    rotations: Any
    outside: Any
    memo: dict[str, Any] = field(default_factory=dict)
    binary_reach: int | None = None


@dataclass
class Components:
    """Every probe component of every atom of a batch as one isotropic Gaussian.

    Attributes
    ----------
    coords : array, (B, N*G, 3)
        Pixel coordinates, each atom's repeated for its ``G`` components.
    weights : array, (B, N*G)
        Peak heights (0 for padding atoms).
    sigma_px : array, (B, N*G)
        Widths, pixels.
    n_comp : int
        Components per atom, ``G``.
    """

    coords: Any
    weights: Any
    sigma_px: Any
    n_comp: int

    def spread(self, xp: Any, per_atom: Any) -> Any:
        """Per-atom coordinates (B, N, 3) repeated for each component: (B, N*G, 3)."""
        return _spread(xp, per_atom, self.n_comp)


def _spread(xp: Any, per_atom: Any, n_comp: int) -> Any:
    if n_comp == 1:
        return per_atom
    b, n, _ = per_atom.shape
    spread = xp.broadcast_to(per_atom[:, :, None, :], (b, n, n_comp, 3))
    return spread.reshape(b, n * n_comp, 3)


#: The per-atom (and per-frame) inputs :func:`gather` takes from the table of frames.
GATHERED = ("positions", "amplitudes", "sigmas", "valid", "radius")


def gather(kernel: ArrayKernel, table: Any, host: Mapping[str, Any]) -> dict[str, Any]:
    """``host`` with each image's atoms added, taken from ``table`` by ``image_frame``.

    ``table`` holds the render's frames padded to one size (positions, amplitudes, sigmas,
    valid, radius, indexed by frame; on the backend's device); only the (B,) index array
    moves. Returns ``host``'s arrays plus ``positions`` (B, N, 3), ``amplitudes`` and
    ``sigmas`` (B, N, G), ``valid`` (B, N) and ``radius`` (B,), ``numbers`` (B, N) where
    the table has them, and ``image_frame`` on the backend.
    """
    be = kernel.backend
    xp = be.xp
    index = be.asarray(host["image_frame"])
    out = dict(host)
    optional = tuple(k for k in ("numbers", "count_scale") if getattr(table, k) is not None)
    for key in GATHERED + optional:
        out[key] = xp.take(getattr(table, key), index, axis=0)
    out["image_frame"] = index
    return out


def geometry(kernel: ArrayKernel, host: Mapping[str, Any],
             output_types: Collection[str], *, binary_reach: int | None = None) -> Geometry:
    """Rotate a batch's atoms and frame them in pixels (Å to pixels: :mod:`.framing`).

    ``host``: :func:`gather`'s arrays; ``binary_reach``: see :class:`Geometry`.
    """
    s = kernel.settings
    be = kernel.backend
    xp = be.xp
    pos = be.asarray(host["positions"])
    rot = be.asarray(host["rotations"].astype(np.float32))
    valid = be.asarray(host["valid"])
    radius = be.asarray(host["radius"])
    rotated = xp.matmul(pos, rot.transpose(0, 2, 1))
    coords, voxel = frame_pixel_coordinates(
        xp, rotated, framing=s.framing, edgesize=s.edgesize, padxyz=s.padxyz,
        pixel_size=s.pixel_size, radius=radius,
    )
    axes = 3 if _THREE_D & set(output_types) else 2
    outside = count_outside(xp, coords, valid, s.edgesize, axes)
    if s.legacy:
        coords = xp.rint(coords)  # the original script renders from rounded voxel positions
        voxels = coords
    else:
        voxels = xp.rint(coords) if _ROUNDED_LABELS & set(output_types) else None
    return Geometry(coords, voxels, voxel, valid, rot, outside, binary_reach=binary_reach)


def labels(kernel: ArrayKernel, inputs: Mapping[str, Any], table: Any, geo: Geometry,
           output_types: Collection[str]) -> dict[str, Any]:
    """The requested labels: coordinates_3d (int16 voxels, -1 for padding), numbers (int16
    atomic numbers of the same atoms, -1 for padding: :func:`gather`'s ``numbers``),
    delta_3d/2d and binary_3d/2d (bool), all from the undisplaced atoms.

    With a distorted scan, delta_2d and binary_2d are drawn through it as the image is
    (:func:`scan_offsets`) and kept undistorted as ``<name>_clean``; the 3-D labels and
    the coordinates have no rows to distort.
    """
    s = kernel.settings
    xp = kernel.xp
    e = s.edgesize
    out: dict[str, Any] = {}
    offsets = None
    if s.scan_distorted and set(SCANNED_LABELS) & set(output_types):
        offsets = scan_offsets(kernel, inputs, table, geo) / geo.voxel[:, None, None]
    if "coordinates_3d" in output_types:
        out["coordinates_3d"] = kernels.coordinates_3d(xp, geo.voxels, geo.valid)
    if "numbers" in output_types:
        out["numbers"] = inputs["numbers"]
    if "delta_3d" in output_types:
        out["delta_3d"] = kernels.delta_3d(xp, geo.voxels, geo.valid, e)
    if "delta_2d" in output_types:
        out["delta_2d"] = kernels.delta_2d(xp, geo.voxels, geo.valid, e)
        if offsets is not None:
            out["delta_2d_clean"] = out["delta_2d"]
            out["delta_2d"] = kernels.delta_2d_scanned(xp, geo.coords, geo.valid, offsets, e)
    if "binary_3d" in output_types or "binary_2d" in output_types:
        radius_px = (s.binary_radius / geo.voxel).astype(geo.coords.dtype)
        for name, ndim in (("binary_3d", 3), ("binary_2d", 2)):
            if name in output_types:
                out[name] = kernel.binary(ndim, geo.coords, radius_px, geo.valid,
                                          reach=geo.binary_reach)
        if "binary_2d" in output_types and offsets is not None:
            out["binary_2d_clean"] = out["binary_2d"]
            out["binary_2d"] = kernels.binary_2d_scanned(
                xp, geo.coords, radius_px, geo.valid, offsets, e,
                max_elements=kernel.work_memory // 32, reach=geo.binary_reach)
    return out


def scan_offsets(kernel: ArrayKernel, inputs: Mapping[str, Any], table: Any,
                 geo: Geometry) -> Any:
    """Each image row's scan offsets (B, E, 2) float32, Å, drawn where the batch renders
    (:meth:`.strategies.ArrayKernel.scan_offsets`) once per batch: the labels, the maps and
    the augmented image read the same draws (kept in ``geo.memo``)."""
    if "scan_offsets" not in geo.memo:
        be = kernel.backend
        geo.memo["scan_offsets"] = kernel.scan_offsets(
            inputs["image_frame"], be.asarray(inputs["rotation_index"]), table.stream_keys)
    return geo.memo["scan_offsets"]


def maps(kernel: ArrayKernel, inputs: Mapping[str, Any], table: Any, geo: Geometry,
         output_types: Collection[str]) -> dict[str, Any]:
    """The requested label maps, from the undisplaced atoms in the image's pixel grid.

    * ``heatmap_2d`` (B, E, E) ``heatmap_dtype``: ``sum_a exp(-|p - c_a|² / (2 s²))`` over
      the atoms' projected pixel positions ``c_a``, ``s`` = ``heatmap_sigma`` in pixels;
    * ``element_heatmap_2d`` (B, C, E, E) ``heatmap_dtype``: the same sum over the atoms of each
      channel's element (``table.channels`` (C,) atomic numbers, on the backend);
    * ``column_map_2d`` (B, E, E) uint16: atoms within ``max(column_radius, half a pixel)``
      of each pixel along both axes (:mod:`.kernels.maps`).

    With a distorted scan (``scan_jitter``, ``drift``) each map is drawn as the image is,
    row ``i`` showing the atoms shifted by the row's offsets (:func:`scan_offsets`), and the
    undistorted map is kept as ``<name>_clean``. Everything stays on the
    backend's device.
    """
    wanted = [name for name in LABEL_MAPS if name in output_types]
    if not wanted:
        return {}
    s = kernel.settings
    be = kernel.backend
    xp = be.xp
    coords = geo.coords
    b, n, _ = coords.shape
    dtype = coords.dtype
    weights = geo.valid.astype(dtype)
    offsets = None
    if s.scan_distorted:
        offsets = scan_offsets(kernel, inputs, table, geo) / geo.voxel[:, None, None]
    channels = table.channels
    scans = {"": None} if offsets is None else {"": offsets, "_clean": None}
    out: dict[str, Any] = {}
    if "heatmap_2d" in wanted or "element_heatmap_2d" in wanted:
        sigma = xp.broadcast_to((s.heatmap_sigma / geo.voxel).astype(dtype)[:, None], (b, n))
    if "heatmap_2d" in wanted:
        comps = Components(coords, weights, sigma, 1)
        for suffix, scan in scans.items():
            out["heatmap_2d" + suffix] = kernel.stored_heatmap(kernel.heatmap(comps, scan))
    if "element_heatmap_2d" in wanted:
        c = int(channels.shape[0])
        member = inputs["numbers"][:, None, :] == channels[None, :, None]  # (B, C, N)
        comps = Components(
            xp.broadcast_to(coords[:, None], (b, c, n, 3)).reshape(b * c, n, 3),
            (member * weights[:, None, :]).astype(dtype).reshape(b * c, n),
            xp.broadcast_to(sigma[:, None], (b, c, n)).reshape(b * c, n), 1)
        for suffix, scan in scans.items():
            if scan is not None:
                scan = xp.broadcast_to(scan[:, None], (b, c) + scan.shape[1:]).reshape(
                    (b * c,) + scan.shape[1:])
            out["element_heatmap_2d" + suffix] = kernel.stored_heatmap(
                kernel.heatmap(comps, scan)).reshape(b, c, s.edgesize, s.edgesize)
    if "column_map_2d" in wanted:
        half = xp.maximum((s.column_radius / geo.voxel).astype(dtype), dtype.type(0.5))
        for suffix, scan in scans.items():
            out["column_map_2d" + suffix] = kernel.column_map(coords, weights, half, scan)
    return out


def components(kernel: ArrayKernel, host: Mapping[str, np.ndarray], geo: Geometry,
               column: ColumnCorrection | None) -> Components:
    """Each atom's probe components in pixels, corrected for its column when asked."""
    be = kernel.backend
    xp = be.xp
    amps = be.asarray(host["amplitudes"])
    b, nmax, n_comp = amps.shape
    sig_px = be.asarray(host["sigmas"]) / geo.voxel[:, None, None]
    if column is not None:
        sig2 = sig_px * sig_px
        counted = amps  # beam units: atoms counted, see ColumnCorrection
        if "count_scale" in host:
            counted = amps * be.asarray(host["count_scale"])[:, :, None]
        x = kernel.column_values(geo.coords, *column.x_inputs(xp, counted, sig2, geo.voxel))
        amps, sig2 = column.apply(xp, x, amps, sig2, geo.voxel, counted)
        sig_px = xp.sqrt(sig2)
    return Components(_spread(xp, geo.coords, n_comp), amps.reshape(b, nmax * n_comp),
                      sig_px.reshape(b, nmax * n_comp), n_comp)


def images(kernel: ArrayKernel, geo: Geometry, comps: Components,
           batch_labels: Mapping[str, Any], output_types: Collection[str],
           out: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """The requested Gaussian images: quantised, except a gaussian_2d that noise alone
    augments (:func:`noised_clean`), which stays float32 for :func:`augmentations`.

    ``batch_labels``: :func:`labels`' result (legacy images reuse delta_*); ``out``: host arrays the
    kernel fills in place, by output name (:meth:`.strategies.ArrayKernel.output_buffers`).
    """
    float_2d = noised_clean(kernel.settings)
    result: dict[str, Any] = {}
    for name, ndim in (("gaussian_2d", 2), ("gaussian_3d", 3)):
        if name in output_types:
            result[name] = kernel.gaussian(
                ndim, geo, comps, quantised=not (ndim == 2 and float_2d), out=out.get(name),
                delta=batch_labels.get(f"delta_{ndim}d"),
            )
    return result


def noised_clean(settings: Any) -> bool:
    """Whether the augmented image is the clean one with noise alone (no phonon jitter, no
    scan distortion): its noise is drawn from the clean float image. Otherwise the clean
    gaussian_2d is rendered in its stored form at once, and the augmented one apart."""
    return settings.noisy and not (settings.phonon_jitter or settings.scan_distorted)


def augmentations(kernel: ArrayKernel, inputs: Mapping[str, Any], table: Any, geo: Geometry,
                  comps: Components, clean: Any) -> dict[str, Any]:
    """The augmented gaussian_2d beside the clean one (``clean``: float32 with noise alone,
    :func:`noised_clean`, else already in the stored form), both in the stored form, where
    the batch renders (no host round trip on the GPU).

    ``inputs``: :func:`gather`'s arrays (``image_frame`` on the backend, ``rotation_index``);
    ``table``: the render's :class:`~.frames.FrameTable` on the backend, whose
    ``stream_keys`` and ``rms`` the draws read by frame (:mod:`..physics.augment`).

    Returns
    -------
    dict of arrays on the backend
        ``electrons_per_pixel`` (B,) with a dose, ``scan_offsets`` (B, E, 2) Å with a
        distorted scan, ``gaussian_2d`` (the image as seen) and ``gaussian_2d_clean``.
    """
    s = kernel.settings
    be = kernel.backend
    xp = be.xp
    frame = inputs["image_frame"]
    rotation = be.asarray(inputs["rotation_index"])
    keys = table.stream_keys
    out: dict[str, Any] = {}
    seen = clean
    if s.phonon_jitter or s.scan_distorted:
        moved = geo.coords
        if s.phonon_jitter:  # frozen-phonon snapshot, framed by the undisplaced atoms
            shift = xp.matmul(kernel.phonon(frame, rotation, keys, table.rms),
                              geo.rotations.transpose(0, 2, 1))
            moved = geo.coords + shift / geo.voxel[:, None, None]
        shifted = replace(comps, coords=comps.spread(xp, moved))
        if s.scan_distorted:
            out["scan_offsets"] = scan_offsets(kernel, inputs, table, geo)
            seen = kernel.scanned(shifted, out["scan_offsets"] / geo.voxel[:, None, None])
        else:
            seen = kernel.gaussian(2, geo, shifted, quantised=False)
    noise_alone = noised_clean(s)
    # with noise alone the stored clean image may be clean itself (float32 output): noise in
    # place only in an image rendered for the augmentations
    out["gaussian_2d_clean"] = kernel.quantise_augmented(clean) if noise_alone else clean
    if s.noisy:
        per_pixel = None if s.dose is None else s.dose * geo.voxel.astype(xp.float64) ** 2
        out["gaussian_2d"] = kernel.noise(seen, frame, rotation, keys, per_pixel,
                                          overwrite=not noise_alone)
        if per_pixel is not None:
            out["electrons_per_pixel"] = per_pixel
    else:
        out["gaussian_2d"] = kernel.quantise_augmented(seen)
    return out
