"""The manifest (``OUTPUT/manifest.json``): every parameter, the device, and per input file
its hash and which stacks are complete. A run resumes from it: stacks recorded complete whose
files exist are skipped.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from ..output.atomic import temporary_path
from ..pipeline.settings import RenderSettings
from .config import SettingsMismatchError, absent_fields

__all__ = [
    "MANIFEST_FORMAT",
    "MANIFEST_NAME",
    "same_parameters",
]

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1


# ----------------------------------------------------------------------------- manifest


def _atomic_write_json(path: Path, data: Any) -> None:
    tmp = temporary_path(path)
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:  # an interrupt or a full disk leaves no temporary behind
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _load_manifest(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SettingsMismatchError(
            f"{path} is not a readable manifest ({exc}); use --overwrite to replace it or "
            "choose another output folder") from None
    if not isinstance(data, dict) or "parameters" not in data:
        raise SettingsMismatchError(
            f"{path} is not an xyz2image-gpu manifest; use --overwrite to replace it or "
            "choose another output folder")
    return data


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The parameters that differ, in words. A settings field that ``old`` lacks (a
    manifest of a version before the field existed) matches its default, or what its
    absence meant (:func:`.config.absent_fields`): it did not change the bytes then."""
    keys = list(new) + [k for k in old if k not in new]
    defaults = json.loads(json.dumps(RenderSettings().to_dict()))
    defaults.update(absent_fields(old))  # what the fields that came later meant then
    return [f"{k}: {old.get(k, '(unset)')!r} -> {new.get(k, '(unset)')!r}"
            for k in keys if old.get(k) != new.get(k)
            and not (k not in old and k in defaults and new.get(k) == defaults[k])]


def same_parameters(old: Any, new: dict[str, Any]) -> bool:
    """Whether a manifest's ``parameters`` (``old``; None or junk when unreadable) describe
    the same bytes as ``new`` (see :func:`_differences`)."""
    return isinstance(old, dict) and not _differences(old, new)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _package_version() -> str:
    try:
        from .. import __version__

        return str(__version__)
    except Exception:  # noqa: BLE001 - a partial install still renders
        return "unknown"
