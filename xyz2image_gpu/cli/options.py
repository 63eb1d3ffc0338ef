"""Options and parameter types the commands share: output types, element lists, the probe,
contrast and augmentation options, and their translation into :class:`RenderSettings`.
"""

from __future__ import annotations

from typing import Any

import click

from ..pipeline.settings import IMAGE_TYPES, OUTPUT_TYPES, RenderSettings

__all__ = [
    "DEFAULT_OUTPUT_TYPES",
    "HAADF_Z_EXPONENT",
    "physics_options",
]

DEFAULT_OUTPUT_TYPES = "coordinates_3d,delta_3d,gaussian_2d"
_TYPE_NAMES = ", ".join(OUTPUT_TYPES + tuple(IMAGE_TYPES))


#: Default Z exponent of the command line: HAADF-like contrast (the engine's default, 0,
#: keeps the original script's equal weights).
HAADF_Z_EXPONENT = 1.7


def _version() -> str:
    from ..run.manifest import _package_version

    return _package_version()


def _split(value: str | None) -> list[str]:
    return [t.strip() for t in (value or "").replace(";", ",").split(",") if t.strip()]


def _parse_output_types(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    from ..run.config import normalize_output_types

    try:
        return normalize_output_types(_split(value))
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None


def _parse_elements(ctx: click.Context, param: click.Parameter, value: str | None
                    ) -> tuple[str, ...]:
    from ..run.config import normalize_elements

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
    from ..structures.elements import atomic_number, symbol

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
    from ..physics.probe import ProbeOptics, fit_probe

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
