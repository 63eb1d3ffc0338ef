"""The ``xyz2image-gpu`` command line: render, info, example, preview.

``main`` is the console-script entry point; ``python -m xyz2image_gpu.cli`` runs it too.
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path
from typing import Any

import click

from .backend import (
    DEVICES,
    FORCE_CPU_ENV,
    BackendError,
    available_cores,
    cupy_status,
    get_backend,
)
from .engine import IMAGE_TYPES, OUTPUT_TYPES, Renderer, RenderSettings

__all__ = ["cli", "main"]

DEFAULT_OUTPUT_TYPES = "coordinates_3d,delta_3d,gaussian_2d"
_TYPE_NAMES = ", ".join(OUTPUT_TYPES + tuple(IMAGE_TYPES))


#: Default Z exponent of the command line: HAADF-like contrast (the engine's default, 0,
#: keeps the original script's equal weights).
HAADF_Z_EXPONENT = 1.7


def _version() -> str:
    from .runner import _package_version

    return _package_version()


def _split(value: str | None) -> list[str]:
    return [t.strip() for t in (value or "").replace(";", ",").split(",") if t.strip()]


def _parse_output_types(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    from .runner import normalize_output_types

    try:
        return normalize_output_types(_split(value))
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None


def _parse_elements(ctx: click.Context, param: click.Parameter, value: str | None
                    ) -> tuple[str, ...]:
    from .runner import normalize_elements

    try:
        return normalize_elements(_split(value))
    except ValueError as exc:
        raise click.BadParameter(f"{exc}; give element symbols, e.g. C,H", ctx=ctx,
                                 param=param) from None


def _settings(**kwargs: Any) -> RenderSettings:
    try:
        return RenderSettings(**kwargs)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


def _parse_rms(ctx: click.Context, param: click.Parameter, value: str | None
               ) -> tuple[tuple[str, float], ...]:
    from .elements import atomic_number, symbol

    pairs = []
    for token in _split(value):
        el, sep, u = token.partition("=")
        try:
            if not sep:
                raise ValueError("expected ELEMENT=Å")
            pairs.append((symbol(atomic_number(el.strip())), float(u)))
        except (KeyError, ValueError) as exc:
            raise click.BadParameter(f"{token!r}: {exc}; e.g. Au=0.085,Pd=0.09", ctx=ctx,
                                     param=param) from None
    return tuple(pairs)


def _parse_floats(ctx: click.Context, param: click.Parameter, value: str | None
                  ) -> tuple[float, ...]:
    try:
        return tuple(float(t) for t in _split(value))
    except ValueError:
        raise click.BadParameter(f"{value!r}: give comma-separated numbers, e.g. 1.0,-0.02",
                                 ctx=ctx, param=param) from None


def physics_options(func: Any) -> Any:
    """Options of the probe, contrast and augmentations (lengths in Å)."""
    options = [
        click.option("--probe-kv", type=click.FloatRange(min=0, min_open=True), default=None,
                     help="Fit the probe of these optics (accelerating voltage, kV) by a sum "
                     "of Gaussians instead of one of --gauss-sigma."),
        click.option("--probe-mrad", type=click.FloatRange(0, 200, min_open=True), default=20.0,
                     help="Convergence semi-angle, mrad (with --probe-kv)."),
        click.option("--probe-defocus", type=float, default=0.0,
                     help="Defocus, Å, positive = underfocus (with --probe-kv)."),
        click.option("--probe-cs", type=float, default=0.0,
                     help="Spherical aberration Cs, mm (with --probe-kv)."),
        click.option("--probe-source-size", type=click.FloatRange(min=0), default=0.0,
                     help="Source size FWHM, Å (with --probe-kv)."),
        click.option("--probe-gaussians", type=click.IntRange(1, 6), default=3,
                     help="Gaussians in the probe fit."),
        click.option("--thermal", is_flag=True,
                     help="Fold each element's room-temperature r.m.s. thermal displacement "
                     "(Debye–Waller) into its Gaussian widths."),
        click.option("--thermal-rms", default=None, callback=_parse_rms, show_default="table",
                     help="Override r.m.s. displacements, Å, e.g. Au=0.085,Pd=0.09."),
        click.option("--phonon-jitter", is_flag=True,
                     help="Augment: displace atoms at random by their thermal r.m.s. "
                     "(labels keep the undisplaced atoms)."),
        click.option("--dose", type=click.FloatRange(min=0, min_open=True), default=None,
                     help="Augment: Poisson shot noise at this dose, electrons per Å²."),
        click.option("--read-noise", type=click.FloatRange(min=0), default=0.0,
                     help="Augment: Gaussian read noise, fraction of the image maximum."),
        click.option("--scan-jitter", type=click.FloatRange(min=0), default=0.0,
                     help="Augment: r.m.s. scan-line jitter along the fast axis, Å."),
        click.option("--drift", type=click.FloatRange(min=0), default=0.0,
                     help="Augment: linear drift over one frame, Å, random direction."),
        click.option("--column-correction", default=None, callback=_parse_floats,
                     show_default="none",
                     help="Per-atom channelling correction c1,c2,...: each atom's weight "
                     "times 1 + sum c_k x^k, x = its column's image in single-atom units; "
                     "fitted to multislice: 0.17 (validation/results/)."),
        click.option("--column-broadening", type=click.FloatRange(min=0), default=0.0,
                     help="With --column-correction: widths grow by this × (x - 1), Å² "
                     "(fitted: 0.004)."),
        click.option("--column-reference", default="Au",
                     help="Element whose single-atom peak is the unit of x."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _physics_settings(physics: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """RenderSettings fields from the physics options, and the probe optics (or None)."""
    fields = {
        "thermal": physics["thermal"], "thermal_overrides": physics["thermal_rms"],
        "phonon_jitter": physics["phonon_jitter"], "dose": physics["dose"],
        "read_noise": physics["read_noise"], "scan_jitter": physics["scan_jitter"],
        "drift": physics["drift"], "column_correction": physics["column_correction"],
        "column_broadening": physics["column_broadening"],
        "column_reference": physics["column_reference"],
    }
    if physics["probe_kv"] is None:
        return fields, None
    from .probe import ProbeOptics, fit_probe

    try:
        optics = ProbeOptics(voltage_kv=physics["probe_kv"],
                             convergence_mrad=physics["probe_mrad"],
                             defocus=physics["probe_defocus"], cs_mm=physics["probe_cs"],
                             source_size=physics["probe_source_size"])
    except (TypeError, ValueError) as exc:
        raise click.UsageError(str(exc)) from None
    fit = fit_probe(optics, physics["probe_gaussians"])
    fields["probe"] = fit.components
    return fields, {"optics": optics.describe(), "fit": fit.describe(),
                    "residual": fit.residual}


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(_version(), "--version", prog_name="xyz2image-gpu")
def cli() -> None:
    """Simulated ADF-STEM images (Gaussian approximation) and 3D labels from .xyz structures,
    batched on the GPU (CuPy) or the CPU (NumPy).

    \b
    Quick start:
      xyz2image-gpu example structures
      xyz2image-gpu render structures --n-rotation 64
      xyz2image-gpu preview structures/au147_icosahedron.xyz -o au147.png
    """


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
    from . import runner

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
    except KeyboardInterrupt:
        click.echo("interrupted; complete stacks are kept: run the same command again to "
                   "resume", err=True)
        sys.exit(130)
    except OSError as exc:
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        raise click.ClickException(
            f"cannot write output{where}: {exc.strerror or exc}; the run stopped, "
            "complete stacks are kept (run the same command again to resume)") from None
    except RuntimeError as exc:
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


# --------------------------------------------------------------------------------- info


@cli.command(short_help="Show the backend render would use, and versions.")
@click.option("--device", type=click.Choice(list(DEVICES)), default="auto", show_default=True,
              envvar="XYZ2IMAGE_GPU_DEVICE", help="The device to resolve.")
def info(device: str) -> None:
    """Print which backend and device render would use, and why, plus versions."""
    import numpy
    import tifffile

    lines = [f"xyz2image-gpu {_version()}",
             f"python {platform.python_version()} ({sys.executable})",
             f"numpy {numpy.__version__}", f"tifffile {tifffile.__version__}",
             f"click {_dist_version('click')}"]
    cupy, why = cupy_status()
    lines.append(f"cupy {cupy.__version__ if cupy is not None else 'not usable'}: {why}")
    lines.append(f"cpu cores: {available_cores()} usable of {os.cpu_count()}")
    from .renderers import NO_EXTENSION_ENV, compiled_kernel_available

    lines.append("compiled CPU kernel: " + (
        "built, used for Gaussian images on the CPU" if compiled_kernel_available()
        else f"not used (not built, or {NO_EXTENSION_ENV} is set): NumPy/BLAS path"))
    if os.environ.get(FORCE_CPU_ENV):
        lines.append(f"{FORCE_CPU_ENV}={os.environ[FORCE_CPU_ENV]}")
    try:
        backend = get_backend(device)
        lines.append(f"device={device} -> backend {backend.name} "
                     f"({'GPU' if backend.is_gpu else 'CPU'}): {backend.reason}")
    except BackendError as exc:
        lines.append(f"device={device} -> unavailable: {exc}")
    click.echo("\n".join(lines))


def _dist_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


# ---------------------------------------------------------------------------- calibrate


@cli.command(context_settings={"show_default": True},
             short_help="Fit sigma or probe, Z exponent and scale to a reference image.")
@click.argument("image", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("structure", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--pixel-size", type=click.FloatRange(min=0, min_open=True), required=True,
              help="Å per pixel of IMAGE.")
@click.option("--frame", type=click.IntRange(min=0), default=0, help="Frame of STRUCTURE.")
@click.option("--sigma", type=click.FloatRange(min=0, min_open=True), default=0.4,
              help="Starting Gaussian sigma, Å.")
@click.option("--z-exponent", type=float, default=HAADF_Z_EXPONENT,
              help="Starting (or fixed) Z exponent.")
@click.option("--fix-z", is_flag=True, help="Keep --z-exponent instead of fitting it.")
@click.option("--probe-kv", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Fit the source size of these optics instead of one Gaussian.")
@click.option("--probe-mrad", type=click.FloatRange(0, 200, min_open=True), default=20.0,
              help="Convergence semi-angle, mrad.")
@click.option("--probe-defocus", type=float, default=0.0, help="Defocus, Å (+ underfocus).")
@click.option("--probe-cs", type=float, default=0.0, help="Cs, mm.")
def calibrate(image: Path, structure: Path, pixel_size: float, frame: int, sigma: float,
              z_exponent: float, fix_z: bool, probe_kv: float | None, probe_mrad: float,
              probe_defocus: float, probe_cs: float) -> None:
    """Fit render settings to IMAGE (.npy or .tif, indexed [x, y]) of STRUCTURE (.xyz, atoms
    as imaged: beam along z), whose bounding box is centred in the image.

    Prints the fitted values, the Pearson r before and after, and the render options that
    reproduce the image (``--normalization fixed`` puts new images on its intensity scale).
    """
    import numpy as np

    from .calibrate import calibrate as fit
    from .probe import ProbeOptics
    from .structures import StructureError, read_xyz

    try:
        if image.suffix.lower() == ".npy":
            ref = np.load(image, allow_pickle=False)
        else:
            import tifffile

            ref = tifffile.imread(image)
        st = read_xyz(structure, frameshift=frame, maxframes=1)
    except (OSError, ValueError) as exc:  # StructureError is a ValueError
        raise click.ClickException(str(exc)) from None
    ref = np.squeeze(ref)
    optics = None
    if probe_kv is not None:
        optics = ProbeOptics(probe_kv, probe_mrad, probe_defocus, probe_cs, 0.0)
    try:
        result = fit(ref, st.frames[0].positions, st.frames[0].numbers, pixel_size,
                     sigma=sigma, z_exponent=z_exponent, fit_z=not fix_z, optics=optics)
    except (StructureError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    if result.optics is not None:
        click.echo(f"source size: {result.source_size:.4f} Å FWHM ({result.optics.describe()})")
    else:
        click.echo(f"gauss sigma: {result.gauss_sigma:.4f} Å")
    click.echo(f"z exponent: {result.z_exponent:.3f}")
    click.echo(f"intensity scale: {result.intensity_scale:.6g}, background "
               f"{result.background:.6g}, shift ({result.shift[0]:+.3f}, "
               f"{result.shift[1]:+.3f}) Å")
    click.echo(f"pearson r: {result.r_initial:.4f} -> {result.r_final:.4f}")
    click.echo(f"render options: {result.render_options()}")


# ------------------------------------------------------------------------------ example


@cli.command(short_help="Copy the bundled example structures into OUTDIR.")
@click.argument("outdir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--overwrite", is_flag=True, help="Replace files of the same name.")
def example(outdir: Path, overwrite: bool) -> None:
    """Copy the bundled example structures (Au147, Pt309, Pd55@Au92) into OUTDIR.

    \b
    Example:
      xyz2image-gpu example structures && xyz2image-gpu render structures --n-rotation 64
    """
    from .examples import copy_examples

    try:
        copied = copy_examples(outdir, overwrite=overwrite)
    except FileExistsError as exc:
        raise click.ClickException(f"{exc}; use --overwrite to replace it") from None
    except OSError as exc:
        raise click.ClickException(f"cannot write to {outdir}: {exc.strerror or exc}") from None
    for path in copied:
        click.echo(str(path))
    click.echo(f"next: xyz2image-gpu render {outdir} --n-rotation 64", err=True)


# ------------------------------------------------------------------------------ preview


@cli.command(context_settings={"show_default": True},
             short_help="Write a PNG montage of a few orientations.")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("preview.png"), help="PNG to write.")
@click.option("--n", "n_images", type=click.IntRange(1, 64), default=4,
              help="Orientations shown (rows).")
@click.option("--seed", type=int, default=0, help="Seed of the random rotations.")
@click.option("--edgesize", type=click.IntRange(min=2), default=128, help="Pixels per edge.")
@click.option("--gauss-sigma", type=click.FloatRange(min=0, min_open=True), default=0.4,
              help="Gaussian sigma, Å.")
@click.option("--padxyz", type=click.FloatRange(min=0), default=1.5, help="Margin, Å.")
@click.option("--binary-radius", type=click.FloatRange(min=0, min_open=True), default=1.0,
              help="Atom radius in binary_2d, Å.")
@click.option("--z-exponent", type=float, default=HAADF_Z_EXPONENT,
              help="Weight atoms by Z**z (see render --help).")
@click.option("--frame", type=click.IntRange(min=0), default=0, help="Frame of the file shown.")
@click.option("--device", type=click.Choice(list(DEVICES)), default="auto",
              envvar="XYZ2IMAGE_GPU_DEVICE")
def preview(file: Path, output: Path, n_images: int, seed: int, edgesize: int,
            gauss_sigma: float, padxyz: float, binary_radius: float, z_exponent: float,
            frame: int, device: str) -> None:
    """Write a PNG montage of FILE in a few orientations: gaussian_2d, binary_2d, atoms.

    \b
    Example:
      xyz2image-gpu preview structures/au147_icosahedron.xyz -o au147.png --n 4
    """
    from .preview import PreviewError, write_preview
    from .structures import StructureError

    settings = _settings(edgesize=edgesize, gauss_sigma=gauss_sigma, padxyz=padxyz,
                         binary_radius=binary_radius, z_exponent=z_exponent)
    try:
        path = write_preview(file, output, n_images=n_images, seed=seed, settings=settings,
                             frame=frame, device=device)
    except (PreviewError, StructureError, BackendError) as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"cannot write {output}: {exc.strerror or exc}") from None
    click.echo(str(path))


def main(argv: list[str] | None = None) -> Any:
    """Console-script entry point (``xyz2image-gpu``)."""
    return cli.main(args=argv, prog_name="xyz2image-gpu")


if __name__ == "__main__":
    main()
