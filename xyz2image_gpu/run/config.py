"""What a run is asked to do (:class:`RunConfig`) and what it did (:class:`RunSummary`):
inputs found in files and folders, output paths, worker defaults.

Output layout (a contract that other tools read)::

    OUTPUT/manifest.json                    settings, device, per-file status
    OUTPUT/<file stem>/<stack:04d>.npz       array outputs + rotations, voxel_size, frame_index
                                            (+ n_atoms with coordinates_3d or numbers,
                                            elements with element_heatmap_2d)
    OUTPUT/<file stem>/<stack:04d>_<type>.tif  one ImageJ stack per *_image output type

or, with ``format="zarr"``, instead of the .npz files one zarr v3 store
(:mod:`..output.zarr_store`)::

    OUTPUT/stacks.zarr/<file stem>/<stack:04d>/<key>   the .npz's arrays, chunked along images
"""

from __future__ import annotations

import json
import re
import stat
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..backend import available_cores
from ..output.zarr_store import stack_group_path as zarr_group_path
from ..pipeline.settings import (
    ALL_OUTPUT_TYPES,
    IMAGE_TYPES,
    RenderSettings,
    array_types,
    image_types,
    normalize_output_types,
    render_types,
)
from ..structures.elements import normalize_elements
from ..structures.xyz import XYZ_SUFFIXES

__all__ = [
    "ALL_TYPE_NAMES",
    "FORMATS",
    "RUN_PARAMETERS",
    "STORE_PARAMETERS",
    "InputError",
    "RunConfig",
    "RunSummary",
    "SettingsMismatchError",
    "array_types",
    "default_workers",
    "find_inputs",
    "image_types",
    "is_stack_file",
    "normalize_elements",
    "normalize_output_types",
    "npz_path",
    "render_types",
    "settings_from_parameters",
    "tif_path",
    "zarr_group_path",
]

#: Output formats of the array outputs.
FORMATS = ("npz", "zarr")
#: Every output type name (:data:`..pipeline.settings.ALL_OUTPUT_TYPES`). The output type
#: functions exported here live in :mod:`..pipeline.settings`, the one home of the names.
ALL_TYPE_NAMES = ALL_OUTPUT_TYPES


class InputError(ValueError):
    """The inputs cannot be used (no .xyz files, two files with the same stem)."""


class SettingsMismatchError(RuntimeError):
    """The output folder holds stacks rendered with other settings."""


# ----------------------------------------------------------------------------- options


#: Outputs the compiled kernel makes without Python-level work per image (the label maps:
#: its Gaussians and BLAS products, which release the GIL too).
_THREADED_TYPES = frozenset({"gaussian_2d", "gaussian_3d", "coordinates_3d", "numbers",
                             "heatmap_2d", "element_heatmap_2d", "column_map_2d"})


def default_workers(settings: RenderSettings, output_types: Sequence[str]) -> int:
    """Rendering processes on the CPU when the user names none.

    One, rendering and compressing on threads, when the compiled kernel makes every output:
    it and zlib release the GIL, so threads fill the cores without the start-up of worker
    processes. Otherwise (the NumPy labels such as delta_3d, TIFF stacks, legacy mode) one
    process per core, where threads would wait on the GIL. The measurements behind both
    choices are in benchmarks/README.md ("Figures behind the run's and writers' defaults").
    """
    from ..pipeline.kernels.compiled import compiled_kernel_available

    if (compiled_kernel_available() and not settings.legacy
            and set(output_types) <= _THREADED_TYPES):
        return 1
    return available_cores()


def find_inputs(paths: Iterable[Path | str]) -> list[Path]:
    """Expand files and folders into the structure files to render.

    A folder contributes every ``.xyz``/``.extxyz`` file directly inside it, sorted by
    name, except hidden ones (named ``.*``); a file is taken as it is. Duplicates are
    dropped.

    Raises
    ------
    InputError
        No structure file was found, a path does not exist or is neither a regular file
        nor a folder (a FIFO, ``/dev/null``), two files share a stem (their outputs would
        share ``OUTPUT/<stem>/``), or a stem would name something of the output folder's
        own (``manifest.json``, the lock, a temporary: any stem starting with ``.``).
    """
    from .lock import LOCK_NAME
    from .manifest import MANIFEST_NAME

    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found += sorted(f for f in p.iterdir() if f.is_file() and not f.name.startswith(".")
                            and f.suffix.lower() in XYZ_SUFFIXES)
        elif p.is_file():
            found.append(p)
        elif p.exists():
            raise InputError(f"{p}: not a regular file ({_file_kind(p)}); give .xyz files or "
                             "folders of them")
        else:
            raise InputError(f"{p}: no such file or folder")
    unique: list[Path] = []
    seen: set[Path] = set()
    for f in found:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(f)
    if not unique:
        raise InputError(
            "no structure files found in " + ", ".join(str(p) for p in paths)
            + f" (looked for {', '.join(XYZ_SUFFIXES)})")
    stems: dict[str, Path] = {}
    for f in unique:
        if f.stem.startswith(".") or f.stem in (MANIFEST_NAME, LOCK_NAME):
            raise InputError(f"{f}: its outputs would go to OUTPUT/{f.stem}/, a name the output "
                             "folder keeps for its own files (the manifest, the lock, "
                             "temporaries); rename it")
        if f.stem in stems:
            raise InputError(f"{stems[f.stem]} and {f} share the name {f.stem!r}; their "
                             f"outputs would collide in OUTPUT/{f.stem}/ (rename one)")
        stems[f.stem] = f
    return unique


def _file_kind(path: Path) -> str:
    """What a path that is neither a regular file nor a folder is, in words."""
    mode = path.stat().st_mode
    for test, kind in ((stat.S_ISFIFO, "a named pipe (FIFO)"),
                       (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return kind
    return "not a file or folder"


#: Names of stack files in ``OUTPUT/<stem>/`` (:func:`npz_path`, :func:`tif_path`).
_STACK_FILE = re.compile(r"\d{4,}(?:\.npz|_[a-z0-9_]+\.tif)")


def is_stack_file(path: Path | str) -> bool:
    """True when ``path`` is named as :func:`npz_path` or :func:`tif_path` name stacks."""
    return _STACK_FILE.fullmatch(Path(path).name) is not None


def npz_path(output_folder: Path, stem: str, stack: int) -> Path:
    """``OUTPUT/<stem>/<stack:04d>.npz``."""
    return Path(output_folder) / stem / f"{stack:04d}.npz"


def tif_path(output_folder: Path, stem: str, stack: int, image_type: str) -> Path:
    """``OUTPUT/<stem>/<stack:04d>_<base>.tif``, e.g. ``0000_gaussian_2d.tif``."""
    return Path(output_folder) / stem / f"{stack:04d}_{IMAGE_TYPES[image_type]}.tif"


# ----------------------------------------------------------------------------- config


@dataclass(frozen=True)
class RunConfig:
    """Everything ``render`` needs (lengths in Å).

    Attributes
    ----------
    inputs : tuple of Path
        Structure files (see :func:`find_inputs`).
    output_folder : Path
    settings : RenderSettings
    output_types : tuple of str
        From :func:`normalize_output_types`.
    n_rotation, n_stacks : int
        Orientations per frame in each stack; stacks per file.
    seed : int
        Selects the random rotations.
    frameshift, maxframes : int
        Frame selection of multi-frame files.
    exclude_elements : tuple of str
        Element symbols dropped from every frame.
    compress_level : int
        zlib level of the ``.npz`` members, or the zarr codec's level.
    format : {"npz", "zarr"}
        Where the arrays go: one ``.npz`` per stack, or one zarr v3 store per run.
    codec : str
        The zarr store's codec (:data:`..output.zarr_store.CODECS`); ignored for npz.
    chunk_images, shard_images : int, int or None
        The zarr store's images per chunk, and per shard (None: no sharding).
    device : {"auto", "cpu", "gpu"}
    workers : int or None
        Rendering processes on the CPU (one on the GPU). None: one process rendering and
        compressing on threads when the compiled kernel makes every requested output
        (see :func:`default_workers`), else one process per core.
    batch_size : int or None
        Images per batch; None lets the engine choose.
    overwrite : bool
        Redo complete stacks, and replace a manifest with other settings.
    strict : bool
        Fail a file (its other stacks too, no file of it left half-written) when atoms fall
        outside the field of view, instead of recording their count and warning. Images
        with every atom outside, or that come out blank, fail it either way.
    probe_optics : dict or None
        The optics and fit that ``settings.probe`` came from, recorded in the manifest.
    shard : (int, int) or None
        ``(i, n)``: render only shard ``i`` of ``n`` (0-based), the units whose index, in
        the order of ``inputs`` then stacks, is ``i`` modulo ``n``; shards may run at once
        into one folder (see :mod:`.shards`). None: every unit.
    scheduler : str or None
        Render the units as tasks of a Dask cluster (:mod:`.distributed`): ``"local"``, a
        scheduler address (``tcp://host:8786``) or a scheduler file (``.json``).
    gpus : int or None
        With ``scheduler`` "local" (or None): a ``dask_cuda.LocalCUDACluster`` of this many
        workers, one per GPU.
    """

    inputs: tuple[Path, ...]
    output_folder: Path
    settings: RenderSettings = field(default_factory=RenderSettings)
    output_types: tuple[str, ...] = ("coordinates_3d", "delta_3d", "gaussian_2d")
    n_rotation: int = 1
    n_stacks: int = 1
    seed: int = 0
    frameshift: int = 0
    maxframes: int = 50
    exclude_elements: tuple[str, ...] = ()
    compress_level: int = 6
    format: str = "npz"
    codec: str = "zstd"
    chunk_images: int = 256
    shard_images: int | None = None
    device: str = "auto"
    workers: int | None = 1
    batch_size: int | None = None
    overwrite: bool = False
    strict: bool = False
    probe_optics: dict[str, Any] | None = None
    shard: tuple[int, int] | None = None
    scheduler: str | None = None
    gpus: int | None = None

    def parameters(self) -> dict[str, Any]:
        """The parameters that decide the output bytes (compared on resume)."""
        params = {
            **self.settings.to_dict(),
            "output_types": list(self.output_types),
            "n_rotation": int(self.n_rotation),
            "seed": int(self.seed),
            "frameshift": int(self.frameshift),
            "maxframes": int(self.maxframes),
            "exclude_elements": list(self.exclude_elements),
            "compress_level": int(self.compress_level),
        }
        if self.format != "npz":  # (absent for npz: manifests of earlier versions resume)
            params.update({"format": self.format, "codec": self.codec,
                           "chunk_images": int(self.chunk_images),
                           "shard_images": self.shard_images})
        if self.probe_optics is not None:  # where settings.probe came from
            params["probe_optics"] = self.probe_optics
        if self.settings.dose is not None and self.settings.absolute_noise:
            # beam units' absolute shot noise: a manifest written before it (the dose then
            # scaled to each image's brightest pixel) lacks the key, so it does not resume
            params["shot_noise"] = SHOT_NOISE_ABSOLUTE
        return json.loads(json.dumps(params))


#: The keys of :meth:`RunConfig.parameters` of the zarr store, recorded only when the run
#: writes one (so that manifests of .npz runs are as before, and resume).
STORE_PARAMETERS = ("format", "codec", "chunk_images", "shard_images")
#: ``parameters()["shot_noise"]``, recorded only with a dose in beam units: each probe
#: position receives ``dose * pixel_size²`` electrons (absent: relative to each image's
#: brightest pixel, the meaning of every other normalization).
SHOT_NOISE_ABSOLUTE = "per probe position"
#: The keys of :meth:`RunConfig.parameters` that are the run's own, not settings fields.
RUN_PARAMETERS = ("output_types", "n_rotation", "seed", "frameshift", "maxframes",
                  "exclude_elements", "compress_level", "probe_optics", "shot_noise",
                  *STORE_PARAMETERS)


def settings_from_parameters(parameters: Mapping[str, Any]) -> RenderSettings:
    """The :class:`RenderSettings` a manifest's ``"parameters"`` were written from.

    Parameters
    ----------
    parameters : mapping
        :meth:`RunConfig.parameters`, e.g. ``json.load(manifest)["parameters"]``.

    Raises
    ------
    ValueError
        A key that is neither a settings field nor one of :data:`RUN_PARAMETERS`.
    """
    return RenderSettings.from_dict({**absent_fields(parameters), **{
        k: v for k, v in parameters.items() if k not in RUN_PARAMETERS}})


def absent_fields(parameters: Mapping[str, Any]) -> dict[str, Any]:
    """Settings fields that a manifest written before they existed lacks, with the values
    that describe what it rendered (where that is not the field's default): a beam-unit
    run had no fitted channelling, and its explicit column correction weighed the atoms by
    their cross-sections (``column_weighting`` 1)."""
    implied: dict[str, Any] = {}
    if parameters.get("normalization") == "beam":
        corrected = bool(parameters.get("column_correction")
                         or parameters.get("column_broadening"))
        implied["channelling"] = corrected
        if corrected:
            implied["column_weighting"] = 1.0
    return {k: v for k, v in implied.items() if k not in parameters}


@dataclass
class RunSummary:
    """What a run did."""

    images: int = 0
    stacks_written: int = 0
    stacks_skipped: int = 0
    elapsed: float = 0.0
    failed: list[tuple[str, str]] = field(default_factory=list)
    device: str = ""
    workers: int = 1

    @property
    def images_per_second(self) -> float:
        return self.images / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def ok(self) -> bool:
        return not self.failed
