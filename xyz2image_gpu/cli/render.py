"""``xyz2image-gpu render``: images and labels of .xyz files, streamed to .npz and .tif."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from ..backend import BackendError
from ..output.zarr_store import (
    CODECS,
    DEFAULT_CHUNK_IMAGES,
    ZarrUnavailableError,
    check_codec_level,
    codec_default_level,
    require_zarr,
)
from ..pipeline.engine import Renderer
from ..pipeline.framing import FRAMINGS
from ..pipeline.settings import BITRATES, NORMALIZATIONS
from ..run.config import FORMATS
from .main import cli
from .options import (
    DEFAULT_OUTPUT_TYPES,
    TYPE_NAMES,
    DetectorType,
    ElementListType,
    IntChoice,
    OutputTypesType,
    ShardType,
    device_option,
    geometry_options,
    label_options,
    physics_options,
    refuse_unused_label_options,
    setting_option,
    settings_from_options,
)

__all__ = [
    "render",
]


# ------------------------------------------------------------------------------- render


@cli.command(context_settings={"show_default": True},
             short_help="Render images and labels of .xyz files.")
@click.argument("inputs", nargs=-1, required=True,
                type=click.Path(exists=True, path_type=Path))
@click.option("-o", "--output-folder", type=click.Path(file_okay=False, path_type=Path),
              default=Path("npz_stacks"), help="Where OUTPUT/<stem>/<stack>.npz go.")
@click.option("--n-rotation", type=click.IntRange(min=1), default=1,
              help="Orientations per frame in each stack (1: the input's own view).")
@click.option("--n-stacks", type=click.IntRange(min=1), default=1,
              help="Stacks per input file, each with its own random rotations.")
@click.option("--output-types", type=OutputTypesType(), default=DEFAULT_OUTPUT_TYPES,
              help=f"Comma-separated, from: {TYPE_NAMES}. *_image types are .tif stacks.")
@geometry_options()
@setting_option("--bitrate", type=IntChoice(BITRATES),
                help="Bits per pixel of normalised images.")
@setting_option("--framing", type=click.Choice(FRAMINGS),
                help="image: fit each rotated image (the original script); structure: one box "
                     "per structure; fixed: --pixel-size.")
@setting_option("--pixel-size", type=click.FloatRange(min=0, min_open=True),
                help="Å per pixel, for --framing fixed.")
@setting_option("--normalization", type=click.Choice(NORMALIZATIONS),
                help="image: each image to full range; float: float32 sums; fixed: "
                     "--intensity-scale grey levels per unit; beam: fraction of the incident "
                     "beam on the detector (absolute; needs --probe-kv, --probe-mrad).")
@setting_option("--intensity-scale", type=click.FloatRange(min=0, min_open=True),
                help="Grey levels per unit of summed intensity, for --normalization fixed "
                     "(per unit of beam fraction with beam: integer images).")
@setting_option("--detector-mrad", type=DetectorType(), show_default="70,200",
                help="Annular detector INNER,OUTER semi-angles, mrad, for --normalization "
                     "beam.")
@setting_option("--legacy", is_flag=True,
                help="Reproduce the original script's images exactly.")
@setting_option("--all-random", is_flag=True,
                help="Rotation 0 random too (default: the input's view, turned 90° about z).")
@click.option("--frameshift", type=click.IntRange(min=0), default=0,
              help="First frame read from multi-frame files (past the last frame: the last "
              "frame alone, as the original script).")
@click.option("--maxframes", type=click.IntRange(min=1), default=50,
              help="Frames read from multi-frame files.")
@click.option("--exclude-elements", type=ElementListType(), default="", show_default="none",
              help="Comma-separated element symbols dropped from every frame, e.g. C,H.")
@click.option("--seed", type=click.IntRange(min=0), default=0,
              help="Seed of the random rotations (and augmentations).")
@device_option
@click.option("--workers", type=click.IntRange(min=1), default=None,
              show_default="1 with threads for Gaussian images from the compiled kernel, "
              "else one per CPU core",
              help="Rendering processes on the CPU (the GPU uses one).")
@click.option("--shard", type=ShardType(), default=None, show_default="every unit",
              help="Render only shard i of n (0-based) of the units (file x stack), e.g. one "
                   "task of a job array; shards may run at once into one --output-folder.")
@click.option("--scheduler", default=None, metavar="local|ADDRESS|FILE",
              show_default="no Dask",
              help="Render the units as tasks of a Dask cluster: 'local' (a LocalCluster of "
                   "--workers processes), a scheduler address (tcp://host:8786) or a "
                   "scheduler file (.json). Needs the dask extra.")
@click.option("--gpus", type=click.IntRange(min=1), default=None, show_default="none",
              help="Render on a dask_cuda LocalCUDACluster with one worker per GPU, "
                   "this many GPUs. Needs the dask and gpu extras.")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              show_default="the engine's choice", help="Images rendered at once.")
@click.option("--format", "output_format", type=click.Choice(FORMATS), default="npz",
              help="npz: one .npz per stack (NumPy alone reads it); zarr: one zarr v3 store "
                   "per run, OUTPUT/stacks.zarr/<stem>/<stack>/<key> (the zarr extra).")
@click.option("--codec", type=click.Choice(CODECS), default="zstd",
              help="Compressor of the zarr store's chunks (lz4: numcodecs' codec, outside "
                   "the zarr v3 specification; blosc-*: Blosc with byte shuffle).")
@click.option("--compress-level", type=click.IntRange(min=0), default=None,
              show_default="6 for npz (zlib), 1 for zarr",
              help="zlib level (0-9) of the .npz members, or the zarr codec's level (zstd "
                   "1-22, blosc-* 0-9, lz4: acceleration >= 1).")
@click.option("--chunk-images", type=click.IntRange(min=1), default=DEFAULT_CHUNK_IMAGES,
              help="Images per chunk of the zarr store (fewer for 3D volumes: at most 16 MiB "
                   "per chunk).")
@click.option("--shard-images", type=click.IntRange(min=1), default=None,
              show_default="no sharding",
              help="Images per shard of the zarr store, a multiple of --chunk-images: small "
                   "chunks for random access, few files.")
@click.option("--overwrite", is_flag=True,
              help="Redo complete stacks; replace a manifest with other settings.")
@click.option("--strict", is_flag=True,
              help="Fail a file when atoms fall outside the field of view (--framing fixed) "
                   "instead of warning.")
@click.option("-q", "--quiet", is_flag=True, help="No progress and no summary.")
@label_options
@physics_options
def render(inputs: tuple[Path, ...], output_folder: Path, n_rotation: int, n_stacks: int,
           output_types: tuple[str, ...], frameshift: int, maxframes: int,
           exclude_elements: tuple[str, ...], seed: int, device: str, workers: int | None,
           shard: tuple[int, int] | None, scheduler: str | None, gpus: int | None,
           batch_size: int | None, output_format: str, codec: str,
           compress_level: int | None, chunk_images: int, shard_images: int | None,
           overwrite: bool, strict: bool, quiet: bool,
           **setting_options: Any) -> None:
    """Render images and labels of every .xyz file in INPUTS (files or folders).

    Each file gets OUTPUT/<stem>/<stack>.npz per stack, holding every frame x rotation
    (keys: the output types, rotations, voxel_size, frame_index, n_atoms, elements), *_image types
    as OUTPUT/<stem>/<stack>_<type>.tif, and OUTPUT/manifest.json records the settings.
    Running the same command again resumes: complete stacks are skipped.

    \b
    Example:
      xyz2image-gpu render structures --n-rotation 64 --output-types \\
          gaussian_2d,binary_2d,gaussian_2d_image -o dataset
    """
    from .. import run as runner

    refuse_unused_label_options(setting_options, output_types)
    settings, probe_optics = settings_from_options(setting_options)
    if shard is not None and (scheduler is not None or gpus is not None):
        raise click.UsageError("--shard splits a run without a scheduler (a job array); it "
                               "cannot be combined with --scheduler or --gpus")
    if gpus is not None:
        if scheduler not in (None, "local"):
            raise click.UsageError("--gpus starts its own local cluster; it cannot be "
                                   f"combined with --scheduler {scheduler}")
        if device == "cpu":
            raise click.UsageError("--gpus renders on GPUs; it cannot be combined with "
                                   "--device cpu")
        device = "gpu"
    compress_level = _storage_options(output_format, codec, compress_level, chunk_images,
                                      shard_images)
    try:
        files = runner.find_inputs(inputs)
    except runner.InputError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        Renderer(settings, runner.render_types(output_types), device)
    except BackendError as exc:
        raise click.ClickException(str(exc)) from None
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    config = runner.RunConfig(
        inputs=tuple(files), output_folder=output_folder, settings=settings,
        output_types=output_types, n_rotation=n_rotation, n_stacks=n_stacks, seed=seed,
        frameshift=frameshift, maxframes=maxframes, exclude_elements=exclude_elements,
        compress_level=compress_level, format=output_format, codec=codec,
        chunk_images=chunk_images, shard_images=shard_images, device=device,
        workers=workers, batch_size=batch_size, overwrite=overwrite, strict=strict,
        probe_optics=probe_optics, shard=shard, scheduler=scheduler, gpus=gpus)

    def report(message: str) -> None:
        click.echo(message, err=True)

    try:
        summary = runner.run(config, report=report, progress="none" if quiet else "auto")
    except runner.SettingsMismatchError as exc:
        raise click.ClickException(str(exc)) from None
    except BackendError as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt as exc:  # Ctrl-C (130), or SIGTERM as runner.RunInterrupted (143)
        click.echo(runner.interrupted_message(exc), err=True)
        sys.exit(runner.interrupted_exit_code(exc))
    except OSError as exc:
        raise click.ClickException(runner.write_error_message(exc)) from None
    except RuntimeError as exc:  # also RequestTooLargeError, FolderBusyError, ClusterError
        raise click.ClickException(str(exc)) from None
    if not quiet:
        skipped = (f", {summary.stacks_skipped} complete stacks skipped"
                   if summary.stacks_skipped else "")
        click.echo(
            f"wrote {summary.images} images in {summary.stacks_written} stacks to "
            f"{output_folder}{skipped}; {summary.elapsed:.1f} s, "
            f"{summary.images_per_second:.1f} images/s ({summary.device.split(':')[0]}, "
            f"{summary.workers} worker{'s' if summary.workers > 1 else ''})", err=True)
    if summary.failed:
        click.echo(f"{len(summary.failed)} of {len(files)} input files failed:", err=True)
        for _path, message in summary.failed:
            click.echo(f"  {message}", err=True)
        sys.exit(1)


def _storage_options(output_format: str, codec: str, level: int | None, chunk_images: int,
                     shard_images: int | None) -> int:
    """Check the storage options together; return the compression level to use.

    Options of the zarr store given with ``--format npz`` are usage errors (they would have
    no effect), as are levels outside the codec's range; ``--format zarr`` without zarr v3
    is an error naming the extra.
    """
    ctx = click.get_current_context()
    if output_format == "npz":
        given = [f"--{name.replace('_', '-')}" for name in ("codec", "chunk_images",
                                                           "shard_images")
                 if ctx.get_parameter_source(name) not in (None,
                                                           click.core.ParameterSource.DEFAULT)]
        if given:
            raise click.UsageError(f"{', '.join(given)} would have no effect with --format "
                                   "npz (they shape the zarr store: add --format zarr)")
        if level is not None and level > 9:
            raise click.UsageError(f"--compress-level {level}: zlib levels of .npz members "
                                   "are 0-9")
        return 6 if level is None else level
    try:
        require_zarr()
    except ZarrUnavailableError as exc:
        raise click.ClickException(str(exc)) from None
    level = codec_default_level(codec) if level is None else level
    try:
        check_codec_level(codec, level)
    except ValueError as exc:
        raise click.UsageError(f"--compress-level: {exc}") from None
    if shard_images is not None and shard_images % chunk_images:
        raise click.UsageError(f"--shard-images {shard_images} must be a multiple of "
                               f"--chunk-images {chunk_images}")
    return level
