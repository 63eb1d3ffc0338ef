"""Output: consumers that put rendered batches on disk, streaming, in bounded memory.

* :mod:`.npz`: compressed ``.npz`` stacks written member by member (``_zip`` holds the zip
  container and CRC arithmetic);
* :mod:`.tiff`: ImageJ ``.tif`` stacks;
* :mod:`.background`: a writer thread fed by a bounded queue;
* :mod:`.atomic`: temporary names and renames, so nothing half-written is left;
* :mod:`.preview`: a PNG montage of a few orientations.
"""

from __future__ import annotations

from .atomic import TEMP_SUFFIX, is_temporary, remove_stale_temporaries, temporary_path
from .background import BackgroundWriter
from .npz import NpzStreamWriter, default_compression_threads
from .tiff import TiffStackWriter

__all__ = [
    "TEMP_SUFFIX",
    "BackgroundWriter",
    "NpzStreamWriter",
    "TiffStackWriter",
    "default_compression_threads",
    "is_temporary",
    "remove_stale_temporaries",
    "temporary_path",
]
