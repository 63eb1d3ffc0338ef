"""Options and parameter types the commands share, declared once.

* Parameter types for the comma-separated lists: :class:`OutputTypesType`,
  :class:`ElementListType`, :class:`ElementValuesType` (``El=value`` pairs) and
  :class:`FloatListType`, each parsing through the package's one parser of that vocabulary.
* :func:`setting_option`: an option for a :class:`RenderSettings` field, whose default is the
  field's, so that the command line and the API cannot drift apart.
* Option groups: :func:`device_option`, :func:`geometry_options`, :func:`label_options`
  (the label maps), :func:`optics_options` (the probe's optics) and
  :func:`physics_options` (the probe fit, thermal smearing, augmentations and the column
  correction).
* :func:`settings_from_options`: the collected options turned into :class:`RenderSettings`.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click

from ..backend import DEVICES
from ..flags import DEVICE_ENV
from ..physics.column import channelling_gap
from ..physics.probe import ProbeOptics, fit_probe
from ..pipeline.settings import (
    ALL_OUTPUT_TYPES,
    HAADF_Z_EXPONENT,
    HEATMAP_DTYPES,
    RenderSettings,
    normalize_output_types,
)
from ..structures.elements import element_values, normalize_elements

__all__ = [
    "DEFAULT_OUTPUT_TYPES",
    "HAADF_Z_EXPONENT",
    "TYPE_NAMES",
    "CommaListType",
    "DetectorType",
    "ElementListType",
    "ElementValuesType",
    "FloatListType",
    "IntChoice",
    "OutputTypesType",
    "ShardType",
    "device_option",
    "geometry_options",
    "label_options",
    "make_settings",
    "optics_options",
    "package_version",
    "physics_options",
    "refuse_unused_label_options",
    "setting_option",
    "settings_from_options",
    "split_list",
]

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_OUTPUT_TYPES = "coordinates_3d,delta_3d,gaussian_2d"
#: The valid output type names, for help texts.
TYPE_NAMES = ", ".join(ALL_OUTPUT_TYPES)

_FIELDS = {f.name: f for f in dataclasses.fields(RenderSettings)}
#: Options named otherwise than their field (``--thermal-rms``: thermal_overrides).
_FIELD_OF_OPTION: dict[str, str] = {}
#: The option of each setting field, as typed (``intensity_scale`` -> ``--intensity-scale``);
#: the beam's optics come from the probe's options.
_OPTION_OF_FIELD: dict[str, str] = {"voltage_kv": "--probe-kv", "convergence_mrad": "--probe-mrad"}
_OPTICS = {f.name: f.default for f in dataclasses.fields(ProbeOptics)}
_PROBE_GAUSSIANS = inspect.signature(fit_probe).parameters["n"].default


def package_version() -> str:
    """The installed package's version (``--version``, ``info``)."""
    from .. import __version__

    return str(__version__)


def split_list(value: str | None) -> list[str]:
    """The non-blank items of a comma- (or semicolon-) separated list, stripped."""
    return [t.strip() for t in (value or "").replace(";", ",").split(",") if t.strip()]


# ------------------------------------------------------------------------ parameter types


class CommaListType(click.ParamType):
    """A comma-separated list parsed by :meth:`parse`; a value that is not a string (a
    default, already parsed) is taken as it is."""

    #: Appended to the parser's error message: how the list should look.
    hint = ""

    def parse(self, items: list[str]) -> Any:
        raise NotImplementedError

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Any:
        if not isinstance(value, str):
            return value
        try:
            return self.parse(split_list(value))
        except ValueError as exc:
            self.fail(f"{exc}{self.hint}", param, ctx)


class ShardType(click.ParamType):
    """``i/n``: shard ``i`` (0-based) of ``n``, e.g. ``0/4`` ... ``3/4``."""

    name = "i/n"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Any:
        if not isinstance(value, str):
            return value
        index, sep, count = value.partition("/")
        try:
            i, n = int(index), int(count)
        except ValueError:
            i, n = -1, 0
        if not sep or n < 1 or not 0 <= i < n:
            self.fail(f"{value!r} is not a shard: give i/n with 0 <= i < n, e.g. 0/4 "
                      "(with SLURM: $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT)", param, ctx)
        return (i, n)


class OutputTypesType(CommaListType):
    """Output type names, validated and put in canonical order."""

    name = "types"

    def parse(self, items: list[str]) -> tuple[str, ...]:
        return normalize_output_types(items)


class ElementListType(CommaListType):
    """Element symbols (any case) or atomic numbers -> symbols sorted by Z."""

    name = "elements"
    hint = "; give element symbols, e.g. C,H"

    def parse(self, items: list[str]) -> tuple[str, ...]:
        return normalize_elements(items)


class ElementValuesType(CommaListType):
    """``El=value`` pairs -> ``(symbol, value)`` pairs."""

    name = "el=value"
    hint = "; e.g. Au=0.085,Pd=0.09"

    def parse(self, items: list[str]) -> tuple[tuple[str, float], ...]:
        return element_values(items)


class FloatListType(CommaListType):
    """Numbers -> a tuple of floats. Their positions count (coefficients c1,c2,...; INNER,
    OUTER), so a blank item between commas is refused rather than dropped."""

    name = "numbers"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Any:
        if isinstance(value, str) and value.strip():
            items = [t.strip() for t in value.replace(";", ",").split(",")]
            if "" in items[:-1]:  # a trailing comma alone is allowed
                self.fail(f"{value!r} has a blank item: each position is a number of its "
                          "own; give comma-separated numbers, e.g. 1.0,-0.02", param, ctx)
        return super().convert(value, param, ctx)

    def parse(self, items: list[str]) -> tuple[float, ...]:
        try:
            return tuple(float(t) for t in items)
        except ValueError:
            raise ValueError(f"{','.join(items)!r}: give comma-separated numbers, "
                             "e.g. 1.0,-0.02") from None


class DetectorType(FloatListType):
    """``INNER,OUTER`` semi-angles of an annular detector, mrad."""

    name = "inner,outer"

    def parse(self, items: list[str]) -> tuple[float, ...]:
        values = super().parse(items)
        if len(values) != 2 or not 0 <= values[0] < values[1]:
            raise ValueError(f"{','.join(items)!r}: give INNER,OUTER in mrad with "
                             "0 <= INNER < OUTER, e.g. 70,200")
        return values


class IntChoice(click.Choice):
    """One of a few integers (shown and typed as text, returned as int)."""

    def __init__(self, choices: Sequence[int]) -> None:
        super().__init__([str(c) for c in choices])

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> int:
        return int(super().convert(str(value), param, ctx))


# ------------------------------------------------------------------------------ options


def setting_option(*decls: str, field: str | None = None, **attrs: Any) -> Callable[[F], F]:
    """``click.option`` for the :class:`RenderSettings` field ``field`` (default: named after
    the last option name, ``--gauss-sigma`` -> ``gauss_sigma``).

    The option defaults to the field's default, so the two cannot differ, and
    :func:`settings_from_options` passes its value to that field. (The parameter keeps the
    option's name, which click's environment variables are named after.)
    """
    option = decls[-1].lstrip("-").replace("-", "_")
    field = field or option
    if field not in _FIELDS:
        raise TypeError(f"{field!r} is not a RenderSettings field")
    if field != option:
        _FIELD_OF_OPTION[option] = field
    _OPTION_OF_FIELD[field] = decls[-1]
    return click.option(*decls, default=_FIELDS[field].default, **attrs)


def _apply(options: Sequence[Callable[[F], F]], func: F) -> F:
    """Apply option decorators so that they list in the order given."""
    for option in reversed(options):
        func = option(func)
    return func


def device_option(func: F) -> F:
    """``--device``, also read from ``XYZ2IMAGE_GPU_DEVICE``."""
    return click.option("--device", type=click.Choice(list(DEVICES)), default="auto",
                        envvar=DEVICE_ENV, show_envvar=True, show_default=True,
                        help="auto: the GPU when CuPy and a CUDA device are there.")(func)


def geometry_options(*, legacy: bool = True) -> Callable[[F], F]:
    """The image's size and each atom's Gaussian, sphere and weight (lengths in Å).

    Parameters
    ----------
    legacy : bool
        Whether the command has ``--legacy`` (which makes the Z exponent's default 0).
    """
    z_default = f"{HAADF_Z_EXPONENT} (0 with --legacy)" if legacy else str(HAADF_Z_EXPONENT)
    options = [
        setting_option("--edgesize", type=click.IntRange(min=2), show_default=True,
                       help="Pixels along each edge of the image / voxel cube."),
        setting_option("--gauss-sigma", type=click.FloatRange(min=0, min_open=True),
                       show_default=True, help="Standard deviation of each atom's Gaussian, Å."),
        setting_option("--padxyz", type=click.FloatRange(min=0), show_default=True,
                       help="Minimum margin around the structure, Å."),
        setting_option("--binary-radius", type=click.FloatRange(min=0, min_open=True),
                       show_default=True,
                       help="Radius of the atoms' spheres in binary_3d / binary_2d, Å."),
        setting_option("--z-exponent", type=float, show_default=z_default,
                       help="Weight atoms by Z**z. HAADF intensity grows about as Z^1.6-1.8 "
                       "(Krivanek et al., Nature 464, 571 (2010): Z^1.64; validation/ against "
                       "multislice: 1.6-1.7); 0 weighs all atoms equally, as the original "
                       "script."),
    ]
    return lambda func: _apply(options, func)


def label_options(func: F) -> F:
    """The label maps' options: heatmap width, column window and element channels (Å)."""
    options = [
        setting_option("--heatmap-sigma", type=click.FloatRange(min=0, min_open=True),
                       show_default=True,
                       help="Width of each atom's unit Gaussian in heatmap_2d and "
                       "element_heatmap_2d, Å; at least 0.15 pixels (narrower ones, "
                       "sampled at pixel centres, miss most atoms)."),
        setting_option("--heatmap-dtype", type=click.Choice(HEATMAP_DTYPES),
                       show_default=True,
                       help="How the heatmaps are stored: float16 halves their bytes "
                       "(about 3 significant digits) and deflates 2-2.5 times as fast."),
        setting_option("--column-radius", type=click.FloatRange(min=0), show_default=True,
                       help="column_map_2d: each pixel counts the atoms within this many Å "
                       "of its centre along x and y (at least its own pixel; 0: atoms per "
                       "pixel)."),
        setting_option("--elements", field="channel_elements", type=ElementListType(),
                       show_default="each input's elements",
                       help="Channels of element_heatmap_2d, e.g. Au,Pd (stored sorted by Z, "
                       "as the 'elements' array); atoms of other elements get none."),
    ]
    return _apply(options, func)


#: Label options and the output types that use them.
_LABEL_OPTION_TYPES = {
    "heatmap_sigma": ("heatmap_2d", "element_heatmap_2d"),
    "heatmap_dtype": ("heatmap_2d", "element_heatmap_2d"),
    "column_radius": ("column_map_2d",),
    "elements": ("element_heatmap_2d",),
}


def refuse_unused_label_options(options: dict[str, Any], output_types: Sequence[str]) -> None:
    """A usage error for a label option given without an output type that uses it (its
    value would be recorded and refuse a resume, while changing nothing)."""
    for name, types in _LABEL_OPTION_TYPES.items():
        if name in options and not set(types) & set(output_types):
            _refuse_given({name: options[name]},
                          f"without --output-types {' or '.join(types)}")


def optics_options(kv_help: str) -> Callable[[F], F]:
    """The probe-forming optics (:class:`ProbeOptics`; defaults from its fields).

    Parameters
    ----------
    kv_help : str
        Help of ``--probe-kv``: what the command does with the optics.
    """
    options = [
        click.option("--probe-kv", type=click.FloatRange(min=0, min_open=True), default=None,
                     help=kv_help),
        click.option("--probe-mrad", type=click.FloatRange(0, 200, min_open=True, max_open=True),
                     default=_OPTICS["convergence_mrad"], show_default=True,
                     help="Convergence semi-angle, mrad (with --probe-kv)."),
        click.option("--probe-defocus", type=float, default=_OPTICS["defocus"],
                     show_default=True,
                     help="Defocus, Å, positive = underfocus (with --probe-kv)."),
        click.option("--probe-cs", type=float, default=_OPTICS["cs_mm"], show_default=True,
                     help="Spherical aberration Cs, mm (with --probe-kv)."),
    ]
    return lambda func: _apply(options, func)


def physics_options(func: F) -> F:
    """Options of the probe, thermal smearing, augmentations and the column correction
    (lengths in Å)."""
    options = [
        optics_options("Fit the probe of these optics (accelerating voltage, kV) by a sum "
                       "of Gaussians instead of one of --gauss-sigma."),
        click.option("--probe-source-size", type=click.FloatRange(min=0),
                     default=_OPTICS["source_size"], show_default=True,
                     help="Source size FWHM, Å (with --probe-kv)."),
        click.option("--probe-gaussians", type=click.IntRange(1, 6), default=_PROBE_GAUSSIANS,
                     show_default=True, help="Gaussians in the probe fit."),
        setting_option("--thermal", is_flag=True,
                       help="Fold each element's room-temperature r.m.s. thermal displacement "
                       "(Debye–Waller) into its Gaussian widths."),
        setting_option("--thermal-rms", field="thermal_overrides", type=ElementValuesType(),
                       show_default="table",
                       help="Override r.m.s. displacements, Å, e.g. Au=0.085,Pd=0.09."),
        setting_option("--phonon-jitter", is_flag=True,
                       help="Augment: displace atoms at random by their thermal r.m.s. "
                       "(labels keep the undisplaced atoms)."),
        setting_option("--dose", type=click.FloatRange(min=0, min_open=True),
                       help="Augment: Poisson shot noise at this dose, electrons per Å² (the "
                       "brightest pixel expects dose·pixel²; with --normalization beam each "
                       "probe position receives them)."),
        setting_option("--read-noise", type=click.FloatRange(min=0), show_default=True,
                       help="Augment: Gaussian read noise, fraction of the image maximum."),
        setting_option("--scan-jitter", type=click.FloatRange(min=0), show_default=True,
                       help="Augment: r.m.s. scan-line jitter along the fast axis, Å."),
        setting_option("--drift", type=click.FloatRange(min=0), show_default=True,
                       help="Augment: linear drift over one frame, Å, random direction."),
        setting_option("--column-correction", type=FloatListType(), show_default="none",
                       help="Per-atom channelling correction c1,c2,...: each atom's weight "
                       "times 1 + sum c_k x^k, x = its column's image in single-atom units; "
                       "fitted to multislice: 0.17 (validation/results/)."),
        setting_option("--column-broadening", type=click.FloatRange(min=0), show_default=True,
                       help="With --column-correction: widths grow by this × (x - 1), Å² "
                       "(fitted: 0.004)."),
        setting_option("--column-reference", show_default=True,
                       help="Element whose single-atom peak is the unit of x (with "
                       "--column-correction)."),
        setting_option("--column-weighting", type=click.FloatRange(0, 1), show_default=True,
                       help="With --normalization beam: x counts each atom as (its "
                       "cross-section / the reference's)^this atoms."),
        setting_option("--column-width", type=click.FloatRange(min=0), show_default=True,
                       help="With --normalization beam: x counts each atom with one "
                       "Gaussian of this width, Å (0: the probe's); the fits use 0.2."),
        setting_option("--channelling/--no-channelling", field="channelling",
                       show_default="on with "
                       "--normalization beam where a fit covers the optics",
                       help="With --normalization beam: the column (channelling) correction "
                       "fitted to multislice for these optics; --column-correction replaces "
                       "it."),
    ]
    return _apply(options, func)


# ----------------------------------------------------------------------------- settings


def _in_option_terms(message: str) -> str:
    """A settings error as the command line says it: ``normalization='beam'`` becomes
    ``--normalization beam`` and ``intensity_scale`` ``--intensity-scale``."""
    def assignment(m: re.Match) -> str:
        option = _OPTION_OF_FIELD.get(m.group(1))
        return f"{option} {m.group(2)}" if option else m.group(0)

    def name(m: re.Match) -> str:
        return _OPTION_OF_FIELD.get(m.group(0), m.group(0))

    def flag(m: re.Match) -> str:  # channelling=False -> --no-channelling
        option = _OPTION_OF_FIELD.get(m.group(1), "")
        if "/" not in option:
            return m.group(0)
        on, off = option.split("/")
        return on if m.group(2) == "True" else off

    message = re.sub(r"(?<![\w-])([a-z_0-9]+)='([^']*)'", assignment, message)
    # a one-word field opening a complaint: "dose must be > 0 ..." -> "--dose must be ..."
    message = re.sub(r"^[a-z0-9]+(?= must )", name, message)
    message = re.sub(r"(?<![\w-])([a-z_0-9]+)=(True|False)(?![\w-])", flag, message)
    return re.sub(r"(?<![\w-])[a-z0-9]+(?:_[a-z0-9]+)+(?![\w-])", name, message)


def make_settings(**fields: Any) -> RenderSettings:
    """:class:`RenderSettings` of these fields; a rejected value is a usage error, worded
    with the command line's option names."""
    try:
        return RenderSettings(**fields)
    except ValueError as exc:
        raise click.UsageError(_in_option_terms(str(exc))) from None


def probe_optics(options: dict[str, Any], source_size: float = 0.0) -> ProbeOptics | None:
    """The :class:`ProbeOptics` of :func:`optics_options` (None without ``--probe-kv``);
    values the optics reject are a usage error."""
    if options["probe_kv"] is None:
        return None
    try:
        return ProbeOptics(voltage_kv=options["probe_kv"],
                           convergence_mrad=options["probe_mrad"],
                           defocus=options["probe_defocus"], cs_mm=options["probe_cs"],
                           source_size=source_size)
    except (TypeError, ValueError) as exc:
        options_of = {"voltage_kv": "--probe-kv", "convergence_mrad": "--probe-mrad",
                      "defocus": "--probe-defocus", "cs_mm": "--probe-cs",
                      "source_size": "--probe-source-size"}
        message = re.sub(r"(?<![\w-])(voltage_kv|convergence_mrad|defocus|cs_mm|source_size)"
                         r"(?![\w-])", lambda m: options_of[m.group(1)], str(exc))
        raise click.UsageError(message) from None


def _refuse_given(options: dict[str, Any], why: str) -> None:
    """A usage error naming the options of ``options`` that the user gave (on the command
    line or in the environment) although they have no effect."""
    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return
    given = [name for name in options
             if ctx.get_parameter_source(name) not in (None, click.core.ParameterSource.DEFAULT)]
    if given:
        names = ", ".join("--" + name.replace("_", "-") for name in given)
        raise click.UsageError(f"{names} would have no effect {why}")


def settings_from_options(options: dict[str, Any]) -> tuple[RenderSettings, dict[str, Any] | None]:
    """The settings of a command's options, and where the probe came from.

    Parameters
    ----------
    options : dict
        The values of :func:`setting_option` options (by option name) and, optionally, of
        :func:`physics_options`' probe options; nothing else.

    Returns
    -------
    settings : RenderSettings
    probe_optics : dict or None
        The optics, the fit and its residual when ``--probe-kv`` was given (recorded in the
        manifest), else None.
    """
    fields = {_FIELD_OF_OPTION.get(k, k): v for k, v in options.items()}
    probe = {k: fields.pop(k) for k in list(fields) if k.startswith("probe_")}
    unknown = set(fields) - set(_FIELDS)
    if unknown:
        raise TypeError(f"not RenderSettings fields: {', '.join(sorted(unknown))}")
    described = None
    if probe and probe["probe_kv"] is None:
        _refuse_given(probe, "without --probe-kv (they describe its optics)")
    optics = probe_optics(probe, probe["probe_source_size"]) if probe else None
    if optics is not None:
        try:
            fit = fit_probe(optics, probe["probe_gaussians"])
        except (ValueError, MemoryError) as exc:  # optics too extreme to integrate or fit
            raise click.UsageError(f"cannot fit the probe of {optics.describe()}: "
                                   f"{exc or type(exc).__name__}") from None
        fields["probe"] = fit.components
        described = {"optics": optics.describe(), "fit": fit.describe(),
                     "residual": fit.residual}
    if fields.get("normalization") == "beam":  # the cross-sections need the optics
        if optics is None:
            raise click.UsageError("--normalization beam needs the probe's optics: "
                                   "--probe-kv (and --probe-mrad, default 20)")
        fields["voltage_kv"] = optics.voltage_kv
        fields["convergence_mrad"] = optics.convergence_mrad
    settings = make_settings(**fields)
    if settings.normalization == "beam" and fields.get("channelling") is None \
            and not settings.channelling:  # the default found no fit for these optics
        gap = channelling_gap(settings.voltage_kv, settings.convergence_mrad, settings.detector)
        click.echo(f"note: {gap}): rendering without the channelling "
                   "correction (--column-correction gives one; --no-channelling silences "
                   "this)", err=True)
    return settings, described

