"""Framing: from rotated positions in Å to sub-pixel coordinates, batched on the device.

Three ways to choose the field of view (``framing``):

``image`` (default, the original script's)
    Per image: shift the minimum to 0, centre each axis in a cube of edge ``m + 2*padxyz``
    where ``m`` is the largest extent, pixel size ``edge / (edgesize - 1)``. Every image is
    filled, but the scale changes with the orientation.
``structure``
    Per frame: one cube of edge ``2*rmax + 2*padxyz`` around the frame's centroid, ``rmax``
    the largest distance of an atom from it, so it holds every orientation and all rotations
    of a frame share one scale.
``fixed``
    A fixed ``pixel_size`` in Å, the rotated structure's bounding box centred; every
    structure shares one scale. Atoms outside the field of view are not drawn; they are
    counted (:func:`count_outside`, :class:`FieldReport`) and the run warns or fails.

Pixel index ``i`` sits at coordinate ``i`` (so the original script's voxel ``round(u)`` is
nearest).

Guards against fields that cannot show the structure
----------------------------------------------------
:func:`narrow_field_problem` looks at the settings (a ``fixed`` field narrower than one
Gaussian); :func:`precision_problem` and :func:`sampling_problem` look at one frame on the
host before it is rendered (positions, radius, the narrowest Gaussian); :func:`count_outside`
counts, per image and on the device, the atoms that the framing puts outside the image, and
:class:`FieldReport` adds those counts up over a render.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .kernels.gaussian import PROFILE_FLOOR

__all__ = [
    "FRAMINGS",
    "HEATMAP_MIN_SIGMA_PX",
    "FieldReport",
    "coarsest_pixel",
    "count_outside",
    "frame_pixel_coordinates",
    "heatmap_problem",
    "narrow_field_problem",
    "precision_problem",
    "sampling_problem",
    "wide_gaussian_problem",
]

FRAMINGS = ("image", "structure", "fixed")


def frame_pixel_coordinates(
    xp: Any,
    positions: Any,
    *,
    framing: str,
    edgesize: int,
    padxyz: float,
    pixel_size: float | None = None,
    radius: Any = None,
) -> tuple[Any, Any]:
    """Turn rotated positions into pixel coordinates.

    Parameters
    ----------
    xp : module
        ``numpy`` or ``cupy``.
    positions : array, (B, N, 3) float32
        Rotated positions in Å, relative to each frame's centroid. Padding atoms must be
        copies of a real atom of the same image so that minima and maxima are unaffected.
    framing : {"image", "structure", "fixed"}
    edgesize : int
        Pixels along each axis.
    padxyz : float
        Margin in Å (``image`` and ``structure``).
    pixel_size : float, optional
        Å per pixel for ``fixed``.
    radius : array, (B,), optional
        For ``structure``: the frame's largest atom distance from its centroid, in Å.

    Returns
    -------
    coords : array, (B, N, 3) float32
        Sub-pixel coordinates.
    voxel_size : array, (B,) float32
        Å per pixel of each image.
    """
    dtype = positions.dtype
    half = (edgesize - 1) / 2.0
    if framing == "image":
        lo, hi = _extents(xp, positions)
        extent = hi - lo
        m = extent.max(axis=1)
        voxel = (m + 2.0 * padxyz) / (edgesize - 1)
        shift = -lo + (m[:, None] - extent) / 2.0 + padxyz
        coords = (positions + shift[:, None, :]) / voxel[:, None, None]
    elif framing == "structure":
        if radius is None:
            raise ValueError("framing='structure' needs each frame's radius")
        voxel = (2.0 * radius + 2.0 * padxyz) / (edgesize - 1)
        coords = positions / voxel[:, None, None] + half
    elif framing == "fixed":
        if pixel_size is None or not pixel_size > 0:
            raise ValueError("framing='fixed' needs a positive pixel_size in Å")
        lo, hi = _extents(xp, positions)
        centre = (lo + hi) / 2.0
        voxel = xp.full(positions.shape[0], pixel_size, dtype=dtype)
        coords = (positions - centre[:, None, :]) / voxel[:, None, None] + half
    else:
        raise ValueError(f"unknown framing {framing!r}; choose one of {', '.join(FRAMINGS)}")
    return coords.astype(dtype, copy=False), voxel.astype(dtype, copy=False)


def _extents(xp: Any, positions: Any) -> tuple[Any, Any]:
    """Per-image minimum and maximum along each axis, (B, 3) each.

    Reduced over a contiguous (B, 3, N) copy: NumPy reduces the middle axis of (B, N, 3) one
    strided element at a time (measured, 1024 x 147 atoms: 2.7 us per image for each of min
    and max, 0.3 us for the copy and both reductions together).
    """
    t = xp.ascontiguousarray(positions.transpose(0, 2, 1))
    return t.min(axis=2), t.max(axis=2)


# ------------------------------------------------------------------------------ guards

#: Largest float64 spacing of the input positions, as a fraction of the narrowest Gaussian.
#: Positions are centred in float64 and rendered in float32 relative to the frame's centroid,
#: so the only precision lost for good is the input's own: a position of magnitude x is known
#: to ``spacing(x)``, about ``x * 2**-52``. A shift of 1% of sigma moves a Gaussian's pixel
#: values by at most 0.6% of its peak (its steepest slope is exp(-1/2) / sigma), 1.5 grey
#: levels of 8 bits; beyond that the atoms' places are numerical noise. With sigma = 0.4 Å
#: this allows |x| below 2**45 ≈ 3.5e13 Å (3.5 km), far beyond any structure, and keeps the
#: float64 centroid sum and every float32 value made from the centred positions (at most
#: twice that) far from overflow.
MAX_SPACING_SIGMAS = 0.01

#: An atom's Gaussian reaches pixels only within sqrt(2 * 25) ≈ 7.07 sigma of its centre
#: along each axis: every kernel cuts profiles below exp(PROFILE_FLOOR) = exp(-25) of the
#: peak (the compiled 8-bit kernel even at exp(-16)), so this is the widest reach of any.
REACH_SIGMAS = math.sqrt(-2.0 * PROFILE_FLOOR)


def wide_gaussian_problem(sigma_min: float, radius: float, padxyz: float) -> str | None:
    """Why the ``image``/``structure`` field of a frame is too narrow for its Gaussians, or
    None: :func:`narrow_field_problem` for the fields these framings choose.

    Their field is at most ``2 * (radius + padxyz)`` Å across (``structure``: exactly; an
    ``image`` field spans the rotated extent, at most the diameter, plus the margins). A
    Gaussian wider than that makes every image a featureless patch, for the same reason.

    Parameters
    ----------
    sigma_min : float
        The narrowest Gaussian, Å.
    radius : float
        The frame's largest distance of an atom from its centroid, Å.
    padxyz : float
        The margin, Å.
    """
    field = 2.0 * (radius + padxyz)
    if field >= sigma_min:
        return None
    return (f"the Gaussians (sigma {sigma_min:.3g} Å) are wider than the whole field of view "
            f"({field:.3g} Å: the structure and its margins): every image would be a "
            "featureless patch; is gauss_sigma (or the probe) in Å?")


#: The narrowest ``heatmap_sigma`` the heatmaps take, in pixels (:func:`heatmap_problem`).
HEATMAP_MIN_SIGMA_PX = 0.15


def coarsest_pixel(radius: float, *, framing: str, edgesize: int, padxyz: float,
                   pixel_size: float | None = None) -> float:
    """The coarsest pixel (Å) the framing can give a frame whose atoms reach ``radius`` Å
    from their centroid: ``pixel_size`` for ``fixed``, else ``(2 * radius + 2 * padxyz) /
    (edgesize - 1)`` (reached by ``structure`` framing, bounding ``image`` framing)."""
    if framing == "fixed":
        return float(pixel_size or 0.0)
    return (2.0 * radius + 2.0 * padxyz) / (edgesize - 1)


def heatmap_problem(heatmap_sigma: float, voxel: float, *, fixed: bool = False) -> str | None:
    """Why heatmaps of Gaussians of ``heatmap_sigma`` Å on pixels of ``voxel`` Å would come
    out (nearly) blank, or None.

    A heatmap samples each atom's Gaussian (peak 1) at the pixel centres. With ``s`` =
    ``heatmap_sigma / voxel`` pixels, an atom at sub-pixel offset ``(dx, dy)`` from its
    nearest pixel centre peaks there at ``exp(-(dx² + dy²) / (2 s²))``. Over all offsets
    (atoms land anywhere) that peak averages 0.73 at ``s`` = 0.5 (94% of the atoms above
    0.5), 0.36 at 0.25 (27%), 0.14 at 0.15 (10%; 1.5e-5 on a pixel corner) and 0.063 at 0.1
    (4%). Below :data:`HEATMAP_MIN_SIGMA_PX` = 0.15 pixels fewer than one atom in ten peaks
    above 0.5: the heatmaps come out nearly blank and are refused. Above it they are kept as
    defined, their peaks varying with the atoms' sub-pixel positions below about half a
    pixel. (A pixel-integrated Gaussian
    would keep each atom's mass at any ``s``, but it changes every heatmap value at the
    widths in use, which the point samples define and stored datasets hold.)
    """
    if not voxel > 0:
        return None  # no field at all: the caller's own error
    sigma_px = heatmap_sigma / voxel
    if sigma_px >= HEATMAP_MIN_SIGMA_PX:
        return None
    least = HEATMAP_MIN_SIGMA_PX * voxel
    other = ("a pixel_size (--pixel-size) below "
             f"{math.floor(heatmap_sigma / HEATMAP_MIN_SIGMA_PX * 1000) / 1000:.3g} Å" if fixed
             else "a larger edgesize, or fixed framing with a smaller pixel size")
    return (f"heatmap_sigma (--heatmap-sigma) {heatmap_sigma:.3g} Å is {sigma_px:.2g} pixels "
            f"of up to {voxel:.3g} Å: below {HEATMAP_MIN_SIGMA_PX} pixels the heatmaps sample "
            "each atom's Gaussian at pixel centres that mostly miss it and come out nearly "
            f"blank; use heatmap_sigma >= {math.ceil(least * 1000) / 1000:.3g} Å, or {other}")


def narrow_field_problem(edgesize: int, pixel_size: float, sigma_min: float) -> str | None:
    """Why a ``fixed`` field of view is too narrow to show any structure, or None.

    The field spans ``(edgesize - 1) * pixel_size`` Å. When that is less than the narrowest
    Gaussian's sigma, no two atoms can be told apart in it (two Gaussians are resolved only
    some 2 sigma apart, and atoms are at least ~0.7 Å apart): an image is a patch of one
    atom's blur, flat within 1 - exp(-1/8) = 12% across; a tenth of that width is flat within
    0.13%, a third of an 8-bit grey level (all 255 with ``normalization="image"``). Even at
    edgesize 16 this allows every pixel size from sigma / 15 (0.027 Å for sigma 0.4 Å) up.

    Parameters
    ----------
    edgesize : int
        Pixels along each axis.
    pixel_size : float
        Å per pixel.
    sigma_min : float
        The narrowest Gaussian, Å (thermal smearing only widens it).

    Returns
    -------
    str or None
        The problem, for an error message.
    """
    field = (edgesize - 1) * pixel_size
    if field >= sigma_min:
        return None
    return (f"pixel_size {pixel_size:.3g} Å makes the field of view {field:.3g} Å across, "
            f"narrower than the narrowest Gaussian (sigma {sigma_min:.3g} Å): every image "
            "would be a featureless patch of one atom's blur; choose a pixel size of at least "
            f"{sigma_min / (edgesize - 1):.3g} Å (typically 0.05-1 Å)")


def precision_problem(positions: np.ndarray, sigma_min: float) -> str | None:
    """Why a frame's positions are too large to place its atoms, or None when they are fine.

    Parameters
    ----------
    positions : numpy.ndarray, (N, 3) float64
        Positions in Å (finite: the readers refuse NaN and infinity).
    sigma_min : float
        The frame's narrowest Gaussian, Å.

    Returns
    -------
    str or None
        The problem, for a message that names the file and frame; None if the float64
        spacing at the largest coordinate is at most :data:`MAX_SPACING_SIGMAS` of
        ``sigma_min``.
    """
    largest = float(np.abs(positions).max())
    spacing = float(np.spacing(largest))
    if spacing <= MAX_SPACING_SIGMAS * sigma_min:
        return None
    return (f"coordinates reach {largest:.3g} Å, where double precision places atoms only "
            f"to within {spacing:.3g} Å, more than {MAX_SPACING_SIGMAS:g} of the narrowest "
            f"Gaussian (sigma {sigma_min:.3g} Å): the atoms' places are lost; are the "
            "positions in Å?")


def sampling_problem(
    n_atoms: int,
    sigma_min: float,
    radius: float,
    *,
    framing: str,
    edgesize: int,
    padxyz: float,
    pixel_size: float | None = None,
) -> str | None:
    """Why a frame's images would come out blank, or None when its atoms can be seen.

    A Gaussian narrower than a pixel is seen only if the atom happens to lie within
    :data:`REACH_SIGMAS` sigma of a pixel centre along each image axis; the atoms land at
    all sub-pixel offsets, so a fraction ``p = min(1, 2 * REACH_SIGMAS * sigma_px)**2`` of
    them reaches a pixel. When ``n_atoms * p < 1`` the images show on average less than one
    atom: they are blank (or a stray dot) whatever the rotation. The test takes the coarsest
    pixel the framing can give this frame (``(2 * radius + 2 * padxyz) / (edgesize - 1)``,
    reached by ``structure`` framing and bounding ``image`` framing; ``pixel_size`` for
    ``fixed``), the narrowest Gaussian, every atom as its own column and the 2-D fraction,
    so it refuses only fields that cannot show the structure: a 100 nm gold particle
    (3e7 atoms) at edgesize 16 has ``sigma_px`` = 0.006 and ``n_atoms * p`` ~ 2e5.

    Parameters
    ----------
    n_atoms : int
        Atoms in the frame.
    sigma_min : float
        The narrowest Gaussian of the frame, Å.
    radius : float
        The largest distance of an atom from the frame's centroid, Å.
    framing, edgesize, padxyz, pixel_size
        As for :func:`frame_pixel_coordinates` (``padxyz`` and ``pixel_size`` in Å).

    Returns
    -------
    str or None
        The problem, for a message that names the file and frame.
    """
    voxel = coarsest_pixel(radius, framing=framing, edgesize=edgesize, padxyz=padxyz,
                           pixel_size=pixel_size)
    if not voxel > 0:
        return None  # no field at all: the caller's own error
    sigma_px = sigma_min / voxel
    seen = min(1.0, 2.0 * REACH_SIGMAS * sigma_px) ** 2
    if n_atoms * seen >= 1.0:
        return None
    return (f"the field of view is too coarse to show the atoms: up to {voxel:.3g} Å per pixel "
            f"(the atoms reach {radius:.3g} Å from their centroid) against Gaussians of "
            f"sigma {sigma_min:.3g} Å ({sigma_px:.2g} pixels), so on average fewer than one of "
            f"the {n_atoms} atoms would reach a pixel and the images would come out blank; "
            "is an atom misplaced or are the positions not in Å? Otherwise use a larger "
            "edgesize or a smaller field of view (fixed framing with a smaller pixel size)")


def count_outside(xp: Any, coords: Any, valid: Any, edgesize: int, ndim: int) -> Any:
    """Per image, the atoms whose pixel coordinates lie outside the image.

    An atom is outside when its coordinate along one of the first ``ndim`` axes (2, or 3 for
    3-D outputs) is below -0.5 or above ``edgesize - 0.5`` (the far edges of the first and
    last pixels), or is not a number. Padding atoms (``valid`` False) are not counted.

    Parameters
    ----------
    xp : module
        ``numpy`` or ``cupy``.
    coords : array, (B, N, 3) float32
        Pixel coordinates from :func:`frame_pixel_coordinates`.
    valid : array, (B, N) bool
        Real atoms (True) and padding (False).
    edgesize : int
    ndim : {2, 3}

    Returns
    -------
    array, (B,) int32
        On the backend of ``coords``; reduced on the device, nothing read back.

    Notes
    -----
    Tested as ``max(|c - (edgesize - 1) / 2|) <= edgesize / 2`` over a contiguous (B, ndim,
    N) copy: element-wise tests of the strided (B, N, ndim) view cost NumPy 10x more
    (measured, 2048 images x 147 atoms: 13.5 ms against 1.2 ms, ~0.6 us per image, under 1%
    of what the image itself costs). ``max`` propagates NaN, which then fails the test.
    """
    dist = coords[:, :, :ndim].transpose(0, 2, 1).copy()  # a copy even where already C-order
    dist -= coords.dtype.type((edgesize - 1) / 2.0)
    xp.abs(dist, out=dist)
    inside = dist.max(axis=1) <= coords.dtype.type(edgesize / 2.0)
    return (~inside & valid).sum(axis=1, dtype=xp.int32)


@dataclass
class FieldReport:
    """Atoms that fell outside the field of view, added up over one render.

    Pass one to :meth:`Renderer.iter_batches` (``field_report=``); it is complete when the
    iteration ends.

    Attributes
    ----------
    images : int
        Images rendered.
    images_affected : int
        Images with at least one atom outside the field.
    atoms_outside : int
        Atoms outside the field, summed over the images.
    frames : tuple of int
        Source indices of the frames with atoms outside in some image, sorted.
    images_empty : int
        Images with every atom outside: nothing of the structure is in them.
    frames_empty : tuple of int
        Frames with such an image, sorted.
    frames_blank : tuple of int
        Frames whose Gaussian images come out blank: the pixels are so coarse against the
        Gaussians that no atom reaches one (:func:`sampling_problem`).
    blank_reason : str
        Why, for the first of them.
    pixels_at_top, pixels_checked : int
        Integer images on a fixed scale (``normalization="fixed"``, or beam units with an
        ``intensity_scale``): the pixels at the top grey level (clipped, or exactly there)
        and the pixels looked at (:meth:`add_top`).
    top_level : int
        That grey level.
    """

    images: int = 0
    images_affected: int = 0
    atoms_outside: int = 0
    frames: tuple[int, ...] = ()
    images_empty: int = 0
    frames_empty: tuple[int, ...] = ()
    frames_blank: tuple[int, ...] = ()
    blank_reason: str = ""
    pixels_at_top: int = 0
    pixels_checked: int = 0
    top_level: int = 0

    def add_top(self, images: Any) -> None:
        """Add one batch of integer images on a fixed scale: count its pixels at the top
        grey level (NumPy or CuPy arrays; one small reduction)."""
        top = int(np.iinfo(images.dtype).max)
        self.pixels_at_top += int((images == top).sum())
        self.pixels_checked += int(images.size)
        self.top_level = top

    def clipping(self) -> str:
        """The pixels at the top grey level, in words; empty when there are none."""
        if not self.pixels_at_top:
            return ""
        share = self.pixels_at_top / max(1, self.pixels_checked)
        return (f"{self.pixels_at_top} pixels ({share:.2%}) sit at the top grey level "
                f"{self.top_level}: the intensity scale clips the brightest values there "
                "(a smaller --intensity-scale"
                + (" or --bitrate 16" if self.top_level < 65535 else "") + " keeps them)")

    def add_blank(self, frames: list[int], reason: str) -> None:
        """Record frames whose images come out blank, and why (the first one's reason)."""
        self.frames_blank = tuple(sorted(set(self.frames_blank) | set(frames)))
        self.blank_reason = self.blank_reason or reason

    def add(self, outside: np.ndarray, n_atoms: np.ndarray, frame_index: np.ndarray) -> None:
        """Add one batch: per image the atoms outside, the atoms, and the frame index."""
        outside = np.asarray(outside)
        hit = outside > 0
        empty = outside >= np.asarray(n_atoms)
        frame_index = np.asarray(frame_index)
        self.images += int(outside.shape[0])
        if hit.any():
            self.images_affected += int(hit.sum())
            self.atoms_outside += int(outside.sum(dtype=np.int64))
            self.frames = tuple(sorted(set(self.frames) | set(frame_index[hit].tolist())))
        if empty.any():
            self.images_empty += int(empty.sum())
            self.frames_empty = tuple(sorted(set(self.frames_empty)
                                             | set(frame_index[empty].tolist())))

    def blank_why(self) -> str:
        """Why the first blank frame is blank, naming the other blank frames."""
        more = self.frames_blank[1:]
        return self.blank_reason + (f" (also frame{_plural(more)} {_listed(more)})"
                                    if more else "")

    def to_dict(self) -> dict[str, Any]:
        """The counts as plain JSON values (for the manifest)."""
        return {"images": self.images, "images_affected": self.images_affected,
                "atoms_outside": self.atoms_outside, "frames": list(self.frames)}

    def describe(self) -> str:
        """What is wrong, naming the frames: blank frames first, then atoms outside the
        field; empty when nothing is."""
        if self.frames_blank:
            return f"frame {self.frames_blank[0]}: {self.blank_why()}"
        if not self.atoms_outside:
            return ""
        if self.images_empty:
            return (f"every atom falls outside the field of view in {self.images_empty} of "
                    f"{self.images} images (frame{_plural(self.frames_empty)} "
                    f"{_listed(self.frames_empty)}): those images show nothing of the "
                    "structure; choose a larger pixel size or edgesize")
        per_image = self.atoms_outside / max(1, self.images_affected)
        return (f"atoms fall outside the field of view in {self.images_affected} of "
                f"{self.images} images ({per_image:.3g} per such image on average, "
                f"{self.atoms_outside} over all of them; frame{_plural(self.frames)}"
                f" {_listed(self.frames)}); choose a larger pixel size or edgesize to see "
                "them all")


def _plural(items: tuple[int, ...]) -> str:
    return "s" if len(items) != 1 else ""


def _listed(items: tuple[int, ...], limit: int = 10) -> str:
    shown = ", ".join(map(str, items[:limit]))
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "")
