"""Streaming ImageJ ``.tif`` stacks: one TIFF page per image, pixel size in Å, no DateTime
tag (reproducible bytes).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import _CompleteOrAbort, _names_path, temporary_path

__all__ = [
    "TiffStackWriter",
]


class TiffStackWriter(_CompleteOrAbort):
    """Write a stack of 2D images to an ImageJ TIFF, one page per image, batch by batch.

    The file reads back with ``tifffile.imread(path)`` as ``(n, E, E)`` and opens in
    ImageJ/Fiji as a stack calibrated in Å (ImageJ ``unit=A``, which ImageJ shows as Å, and
    X/Y resolution of ``1 / pixel_size`` pixels per Å).

    Parameters
    ----------
    path : path-like
        Final ``.tif`` path; nothing exists under it until :meth:`close` succeeds.
    shape : tuple of int
        ``(n_images, E, E)``: the full stack.
    dtype : dtype
        Image dtype. ``bool`` is written as ``uint8`` 0/255 (atoms white); ``float64`` as
        ``float32`` (ImageJ reads no 64-bit floats); integers as they are.
    pixel_size_angstrom : float or None
        Pixel size in Å, or None for an uncalibrated stack (e.g. when the pixel size varies
        from image to image; the ``.npz`` beside it holds every image's ``voxel_size``).
    """

    def __init__(self, path: Path | str, shape: tuple[int, ...], dtype: Any,
                 pixel_size_angstrom: float | None) -> None:
        import tifffile

        if len(shape) != 3:
            raise ValueError(f"a TIFF stack needs shape (n, E, E), got {shape}")
        self.path = Path(path)
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.pixel_size_angstrom = pixel_size_angstrom
        self._rows = 0
        self._closed = False
        self._tmp = temporary_path(self.path)
        self._imagej_description = tifffile.imagej_description
        self._tif = tifffile.TiffWriter(self._tmp, imagej=True)
        self._kwargs: dict[str, Any] = {"contiguous": True, "photometric": "minisblack"}
        metadata: dict[str, Any] = {}
        if pixel_size_angstrom is not None and pixel_size_angstrom > 0:
            res = 1.0 / float(pixel_size_angstrom)
            self._kwargs["resolution"] = (res, res)
            metadata["unit"] = "A"
        self._kwargs["metadata"] = metadata

    @property
    def rows_written(self) -> int:
        """Images written so far."""
        return self._rows

    def _convert(self, images: np.ndarray) -> np.ndarray:
        if images.dtype == np.bool_:
            return images.view(np.uint8) * np.uint8(255)
        if images.dtype == np.float64:
            return images.astype(np.float32)
        return images

    @_names_path
    def append(self, images: np.ndarray) -> None:
        """Write the next images, shape ``(b, E, E)``.

        Raises
        ------
        OSError
            Writing failed (a full disk); it names :attr:`path`.
        """
        if self._closed:
            raise ValueError(f"{self.path}: writer is closed")
        images = np.asarray(images)
        if images.ndim != 3 or images.shape[1:] != self.shape[1:]:
            raise ValueError(f"{self.path}: expected images of shape (b, {self.shape[1]}, "
                             f"{self.shape[2]}), got {images.shape}")
        if self._rows + images.shape[0] > self.shape[0]:
            raise ValueError(f"{self.path}: more than the {self.shape[0]} images declared")
        for image in self._convert(images):
            self._tif.write(np.ascontiguousarray(image), **self._kwargs)
        self._rows += images.shape[0]

    @_names_path
    def close(self) -> None:
        """Finish the file and rename it to :attr:`path`; safe to call twice."""
        if self._closed:
            return
        try:
            if self._rows != self.shape[0]:
                raise ValueError(
                    f"{self.path}: incomplete, {self._rows} of {self.shape[0]} images written")
            # per-image writes leave ImageJ guessing the axis of the images ("channels");
            # declare them slices of one stack
            self._tif.overwrite_description(self._imagej_description(
                self.shape, axes="ZYX", **self._kwargs["metadata"]))
            self._tif.close()
            os.replace(self._tmp, self.path)
        except BaseException:
            self.abort()
            raise
        self._closed = True

    def abort(self) -> None:
        """Drop the partial file; nothing reaches :attr:`path`."""
        self._closed = True
        with contextlib.suppress(Exception):  # the file is being discarded anyway
            self._tif.close()
        try:
            self._tmp.unlink()
        except FileNotFoundError:
            pass
