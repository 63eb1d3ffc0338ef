"""``xyz2image-gpu render``: images and labels of .xyz files, streamed to .npz and .tif."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from ..backend import (
    DEVICES,
    BackendError,
)
from ..pipeline.engine import Renderer
from .main import cli
from .options import (
    _TYPE_NAMES,
    DEFAULT_OUTPUT_TYPES,
    HAADF_Z_EXPONENT,
    _parse_elements,
    _parse_output_types,
    _physics_settings,
    _settings,
    physics_options,
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
@click.option("--output-types", default=DEFAULT_OUTPUT_TYPES, callback=_parse_output_types,
              help=f"Comma-separated, from: {_TYPE_NAMES}. *_image types are .tif stacks.")
@click.option("--edgesize", type=click.IntRange(min=2), default=128,
              help="Pixels along each edge of the image / voxel cube.")
@click.option("--gauss-sigma", type=click.FloatRange(min=0, min_open=True), default=0.4,
              help="Standard deviation of each atom's Gaussian, Å.")
@click.option("--padxyz", type=click.FloatRange(min=0), default=1.5,
              help="Minimum margin around the structure, Å.")
@click.option("--bitrate", type=click.Choice(["8", "16"]), default="8",
              help="Bits per pixel of normalised images.")
@click.option("--binary-radius", type=click.FloatRange(min=0, min_open=True), default=1.0,
              help="Radius of the atoms' spheres in binary_3d / binary_2d, Å.")
@click.option("--frameshift", type=click.IntRange(min=0), default=0,
              help="First frame read from multi-frame files.")
@click.option("--maxframes", type=click.IntRange(min=1), default=50,
              help="Frames read from multi-frame files.")
@click.option("--exclude-elements", default=None, show_default="none", callback=_parse_elements,
              help="Comma-separated element symbols dropped from every frame, e.g. C,H.")
@click.option("--z-exponent", type=float, default=None,
              show_default=f"{HAADF_Z_EXPONENT} (0 with --legacy)",
              help="Weight atoms by Z**z. HAADF intensity grows about as Z^1.6-1.8 "
              "(Krivanek et al., Nature 464, 571 (2010): Z^1.64; validation/ against "
              "multislice: 1.6-1.7); 0 weighs all atoms equally, as the original script.")
@click.option("--framing", type=click.Choice(["image", "structure", "fixed"]), default="image",
              help="image: fit each rotated image (the original script); structure: one box "
                   "per structure; fixed: --pixel-size.")
@click.option("--pixel-size", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Å per pixel, for --framing fixed.")
@click.option("--normalization", type=click.Choice(["image", "float", "fixed"]),
              default="image",
              help="image: each image to full range; float: float32 sums; fixed: "
                   "--intensity-scale grey levels per unit.")
@click.option("--intensity-scale", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Grey levels per unit of summed intensity, for --normalization fixed.")
@click.option("--legacy", is_flag=True, help="Reproduce the original script's images exactly.")
@click.option("--all-random", is_flag=True,
              help="Rotation 0 random too (default: the input's view, turned 90° about z).")
@click.option("--seed", type=int, default=0, help="Seed of the random rotations.")
@click.option("--device", type=click.Choice(list(DEVICES)), default="auto",
              envvar="XYZ2IMAGE_GPU_DEVICE", show_envvar=True,
              help="auto: the GPU when CuPy and a CUDA device are there.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              show_default="1 with threads for Gaussian images from the compiled kernel, "
              "else one per CPU core",
              help="Rendering processes on the CPU (the GPU uses one).")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              show_default="the engine's choice", help="Images rendered at once.")
@click.option("--compress-level", type=click.IntRange(0, 9), default=6,
              help="zlib level of the .npz members.")
@click.option("--overwrite", is_flag=True,
              help="Redo complete stacks; replace a manifest with other settings.")
@click.option("-q", "--quiet", is_flag=True, help="No progress and no summary.")
@physics_options
def render(inputs: tuple[Path, ...], output_folder: Path, n_rotation: int, n_stacks: int,
           output_types: tuple[str, ...], edgesize: int, gauss_sigma: float, padxyz: float,
           bitrate: str, binary_radius: float, frameshift: int, maxframes: int,
           exclude_elements: tuple[str, ...], z_exponent: float | None, framing: str,
           pixel_size: float | None, normalization: str, intensity_scale: float | None,
           legacy: bool, all_random: bool, seed: int, device: str, workers: int | None,
           batch_size: int | None, compress_level: int, overwrite: bool, quiet: bool,
           **physics: Any) -> None:
    """Render images and labels of every .xyz file in INPUTS (files or folders).

    Each file gets OUTPUT/<stem>/<stack>.npz per stack, holding every frame x rotation
    (keys: the output types, rotations, voxel_size, frame_index, n_atoms), *_image types
    as OUTPUT/<stem>/<stack>_<type>.tif, and OUTPUT/manifest.json records the settings.
    Running the same command again resumes: complete stacks are skipped.

    \b
    Example:
      xyz2image-gpu render structures --n-rotation 64 --output-types \\
          gaussian_2d,binary_2d,gaussian_2d_image -o dataset
    """
    from .. import run as runner

    if z_exponent is None:
        z_exponent = 0.0 if legacy else HAADF_Z_EXPONENT
    fields, probe_optics = _physics_settings(physics)
    settings = _settings(
        edgesize=edgesize, gauss_sigma=gauss_sigma, padxyz=padxyz, bitrate=int(bitrate),
        binary_radius=binary_radius, z_exponent=z_exponent, framing=framing,
        pixel_size=pixel_size, normalization=normalization, intensity_scale=intensity_scale,
        legacy=legacy, all_random=all_random, **fields)
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
        compress_level=compress_level, device=device,
        workers=workers, batch_size=batch_size, overwrite=overwrite,
        probe_optics=probe_optics)

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
    except RuntimeError as exc:  # also runner.RequestTooLargeError, FolderBusyError
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
