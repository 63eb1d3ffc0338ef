"""What decides an image: :class:`RenderSettings` (lengths in Å) and the vocabulary of output
types (:data:`OUTPUT_TYPES`, the TIFF :data:`IMAGE_TYPES`), validated here and nowhere else.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..structures.elements import atomic_number, element_values, normalize_elements
from .framing import FRAMINGS

__all__ = [
    "ALL_OUTPUT_TYPES",
    "BITRATES",
    "HAADF_DETECTOR_MRAD",
    "HAADF_Z_EXPONENT",
    "HEATMAP_DTYPES",
    "IMAGE_TYPES",
    "LABEL_MAPS",
    "METADATA_KEYS",
    "NORMALIZATIONS",
    "OUTPUT_TYPES",
    "SCANNED_LABELS",
    "RenderSettings",
    "array_types",
    "image_types",
    "normalize_output_types",
    "render_types",
    "requested_arrays",
]

#: Array outputs, with the original script's key names.
OUTPUT_TYPES = (
    "coordinates_3d",
    "delta_3d",
    "delta_2d",
    "gaussian_3d",
    "gaussian_2d",
    "binary_3d",
    "binary_2d",
    "numbers",
    "heatmap_2d",
    "element_heatmap_2d",
    "column_map_2d",
)
#: Label maps drawn in the image's pixel grid, scan distortions included (each then also
#: stored undistorted as ``<name>_clean``).
LABEL_MAPS = ("heatmap_2d", "element_heatmap_2d", "column_map_2d")
#: Every output drawn through a distorted scan as the image is, with ``<name>_clean``.
SCANNED_LABELS = ("delta_2d", "binary_2d", *LABEL_MAPS)
#: TIFF-stack outputs and the array each one shows.
IMAGE_TYPES = {
    "delta_2d_image": "delta_2d",
    "gaussian_2d_image": "gaussian_2d",
    "binary_2d_image": "binary_2d",
}
#: Every output type name: the arrays, then the TIFF stacks.
ALL_OUTPUT_TYPES = OUTPUT_TYPES + tuple(IMAGE_TYPES)
#: Per-image metadata every batch carries.
METADATA_KEYS = ("rotations", "voxel_size", "frame_index")
NORMALIZATIONS = ("image", "float", "fixed", "beam")
#: The annular detector of ``normalization="beam"`` when none is given: HAADF, mrad.
HAADF_DETECTOR_MRAD = (70.0, 200.0)
#: How heatmap_2d and element_heatmap_2d may be stored.
HEATMAP_DTYPES = ("float32", "float16")
#: Integer depths of normalised images.
BITRATES = (8, 16)
#: Default Z exponent, the same for the API and the command line: HAADF-like contrast.
#: ADF intensity grows about as Z^1.6-1.8 (Krivanek et al., Nature 464, 571 (2010): Z^1.64;
#: validation/ against multislice: 1.6-1.7). Legacy mode uses 0 (every atom counts once).
HAADF_Z_EXPONENT = 1.7

_GAUSSIAN = ("gaussian_2d", "gaussian_3d")


@dataclass(frozen=True)
class RenderSettings:
    """Everything that decides what an image looks like (lengths in Å).

    Attributes
    ----------
    edgesize : int
        Pixels along each edge of the square image / voxel cube.
    gauss_sigma : float
        Standard deviation of each atom's Gaussian, Å.
    padxyz : float
        Minimum margin around the structure, Å (``image`` and ``structure`` framing).
    bitrate : {8, 16}
        Integer depth of normalised images.
    binary_radius : float
        Radius of the atoms' spheres in binary_3d / binary_2d, Å.
    z_exponent : float or None
        Atoms weighted by Z**z_exponent. None (default): :data:`HAADF_Z_EXPONENT` (1.7,
        HAADF-like), or 0 with ``legacy`` (all equal, as the original script); the
        attribute holds the resolved number.
    framing : {"image", "structure", "fixed"}
        See :mod:`xyz2image_gpu.pipeline.framing`.
    pixel_size : float or None
        Å per pixel for ``framing="fixed"``.
    normalization : {"image", "float", "fixed", "beam"}
        ``image``: each image scaled to the full integer range (the original script);
        ``float``: float32 sums (an atom of weight 1 peaks at 1); ``fixed``:
        ``rint(sum * intensity_scale)`` clipped, one scale for every image; ``beam``:
        absolute units, the fraction of the incident beam that reaches the detector at each
        probe position (float32, or ``rint(fraction * intensity_scale)`` with a scale):
        each atom's image integrates to its element's cross-section for the detector
        (:func:`xyz2image_gpu.physics.cross_section.phase_object_cross_section`, Å²) and
        ``z_exponent`` plays no part. Needs ``voltage_kv`` and ``convergence_mrad``.
    intensity_scale : float or None
        Grey levels per unit of summed intensity for ``normalization="fixed"`` (and per
        unit of beam fraction for ``beam``, optional there).
    voltage_kv, convergence_mrad : float or None
        The accelerating voltage (kV) and the probe's convergence semi-angle (mrad) that
        ``normalization="beam"``'s cross-sections are computed for (the optics of
        ``--probe-kv``/``--probe-mrad`` on the command line); used by nothing else.
    detector_mrad : (float, float) or ()
        The annular detector's inner and outer semi-angles, mrad, for
        ``normalization="beam"``; empty: :data:`HAADF_DETECTOR_MRAD` (70-200), which the
        attribute then holds.
    legacy : bool
        Reproduce the original script: rounded positions, one count per occupied voxel,
        SciPy ``gaussian_filter`` semantics, truncating conversion.
    all_random : bool
        Draw rotation 0 at random too instead of the original script's fixed 90° view about z.
    probe : tuple of (amplitude, sigma) pairs
        The probe's intensity as a sum of radially symmetric Gaussians
        ``sum_g a_g exp(-r²/(2 sigma_g²))`` (sigma in Å), e.g. fitted to an aberrated probe
        by :func:`xyz2image_gpu.physics.probe.fit_probe`. Empty (default): one Gaussian of
        ``gauss_sigma`` and amplitude 1.
    thermal : bool
        Fold each element's r.m.s. thermal displacement u (Debye–Waller, Å) into every
        component's width, ``sigma² + u²``, keeping each component's 2-D integral.
    thermal_overrides : tuple of (element, u) pairs
        Replace the built-in room-temperature u (Å) of the named elements. Also accepted:
        a mapping or ``"Au=0.085,Pd=0.09"``; stored as (symbol, u) pairs.
    phonon_jitter : bool
        Frozen-phonon-like augmentation: render each image from atoms displaced at random
        by their element's u (Å, per axis); labels stay at the undisplaced positions.
    dose : float or None
        Poisson shot noise at this dose, electrons per Å² (see
        :mod:`xyz2image_gpu.physics.augment`), ``N = dose * pixel_size²`` electrons per
        pixel, kept as ``electrons_per_pixel`` (the clean image as ``gaussian_2d_clean``).
        Relative normalizations: each image's brightest pixel expects ``N`` electrons, the
        others in proportion. ``normalization="beam"``: absolute, each probe position
        receives ``N`` electrons and the detector counts ``Poisson(N f)`` of them (``f`` the
        pixel's beam fraction), stored as ``count / N`` (mean ``f``, variance ``f / N``).
    read_noise : float
        Gaussian read noise, standard deviation as a fraction of each clean image's maximum
        (in every normalization, ``beam`` included).
    scan_jitter : float
        R.m.s. scan-line jitter, Å: each row (slow scan axis 0) shifted at random along the
        fast axis (1).
    drift : float
        Linear specimen drift over one frame, Å, in a random direction per image (the
        middle row undisplaced). Each image's per-row shifts (Å, x and y) are saved as
        ``scan_offsets``.

    column_correction : tuple of float
        Per-atom correction of the convolution image towards multislice (channelling makes
        a column of n atoms differ from n single atoms): each atom's weight is multiplied by
        ``1 + sum_k c_k x^k``, ``x`` being the convolution image at the atom in units of
        one isolated ``column_reference`` atom's peak (about its column's atom count).
        Fitted values: ``validation/results/column_correction.json``. Empty: none.
    column_broadening : float
        With the correction: each atom's Gaussian widths grow by
        ``column_broadening * max(x - 1, 0)`` Å² (integral kept).
    column_reference : str
        Element whose single-atom peak is the unit of ``x``.
    column_weighting : float
        ``normalization="beam"`` only: how ``x`` counts the atoms, each as
        ``(w / w_ref)**column_weighting`` atoms, ``w`` its beam weight (cross-section) and
        ``w_ref`` the ``column_reference`` atom's: 0 counts atoms, 1 weighs them by their
        cross-sections. The fits use 0.5.
    column_width : float
        ``normalization="beam"`` only: ``x`` counts the atoms with one Gaussian of this
        width (Å) each, centred on the atom, instead of the probe's components (0, the
        default without a fit), so that atoms count as a column only where they line up
        along the beam rather than wherever their probe images overlap. The fits use 0.2.
    channelling : bool or None
        ``normalization="beam"`` only: the column correction fitted to multislice in beam
        units for the optics (:func:`xyz2image_gpu.physics.column.fitted_channelling`; the
        fits and their validity: ``validation/results/cross_sections.md``). None (default)
        resolves to True, with the fit's ``column_correction`` and ``column_broadening``,
        where a fit covers ``voltage_kv``, ``convergence_mrad`` and ``detector_mrad``, and to
        False elsewhere; True where no fit covers the optics is refused; False: none. Given
        ``column_correction`` / ``column_broadening`` replace the fit (channelling then
        resolves to whether they correct anything).
    heatmap_sigma : float
        Standard deviation of each atom's Gaussian in ``heatmap_2d`` and
        ``element_heatmap_2d``, Å: ``sum_a exp(-|p - c_a|² / (2 heatmap_sigma²))`` over the
        projected positions ``c_a`` (peak 1 at an isolated atom, not normalised per image).
        At least :data:`~.framing.HEATMAP_MIN_SIGMA_PX` (0.15) pixels at the coarsest pixel
        a frame can get, when heatmaps are rendered (:func:`~.framing.heatmap_problem`).
    heatmap_dtype : {"float32", "float16"}
        How the heatmaps are stored: float16 keeps about three significant digits
        (relative rounding error at most 2**-11 ≈ 4.9e-4; values below 2**-14 ≈ 6.1e-5,
        float16's smallest normal number, are stored as 0) in half the bytes, and
        deflates 2-2.5 times as fast.
    column_radius : float
        ``column_map_2d``: pixel ``p`` counts the atoms whose projected position lies within
        ``max(column_radius, half a pixel)`` of its centre along both image axes (a square
        window). 0 (default): the atoms whose nearest pixel it is, so the map sums to the
        number of atoms in the field of view.
    channel_elements : tuple of str
        The elements of ``element_heatmap_2d``'s channels (symbols, stored sorted by Z; any
        element list :func:`~xyz2image_gpu.structures.elements.normalize_elements` takes).
        Empty (default): every element of the structure, over all its frames.

    Augmentations (``phonon_jitter``, ``dose``, ``read_noise``, ``scan_jitter``,
    ``drift``) change gaussian_2d; ``gaussian_2d_clean`` keeps the image without them,
    paired with the undistorted labels. A distorted scan also distorts the 2-D labels
    (:data:`SCANNED_LABELS`), each kept undistorted as ``<name>_clean``.
    """

    edgesize: int = 128
    gauss_sigma: float = 0.4
    padxyz: float = 1.5
    bitrate: int = 8
    binary_radius: float = 1.0
    z_exponent: float | None = None
    framing: str = "image"
    pixel_size: float | None = None
    normalization: str = "image"
    intensity_scale: float | None = None
    legacy: bool = False
    all_random: bool = False
    probe: tuple[tuple[float, float], ...] = ()
    thermal: bool = False
    thermal_overrides: tuple[tuple[str, float], ...] = ()
    phonon_jitter: bool = False
    dose: float | None = None
    read_noise: float = 0.0
    scan_jitter: float = 0.0
    drift: float = 0.0
    column_correction: tuple[float, ...] = ()
    column_broadening: float = 0.0
    column_reference: str = "Au"
    column_weighting: float = 0.5
    column_width: float = 0.0
    channelling: bool | None = None
    voltage_kv: float | None = None
    convergence_mrad: float | None = None
    detector_mrad: tuple[float, ...] = ()
    heatmap_sigma: float = 0.25
    heatmap_dtype: str = "float32"
    column_radius: float = 0.0
    channel_elements: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.z_exponent is None:  # one default contrast for the API and the CLI
            object.__setattr__(self, "z_exponent", 0.0 if self.legacy else HAADF_Z_EXPONENT)
        # accept lists (e.g. from JSON) but store hashable tuples
        probe = tuple((float(a), float(sig)) for a, sig in self.probe)
        object.__setattr__(self, "probe", probe)
        overrides = element_values(self.thermal_overrides, what="thermal_overrides")
        object.__setattr__(self, "thermal_overrides", overrides)
        correction = tuple(float(c) for c in self.column_correction)
        object.__setattr__(self, "column_correction", correction)
        detector = tuple(float(a) for a in self.detector_mrad)
        if self.normalization == "beam" and not detector:  # resolved: one spelling per run
            detector = HAADF_DETECTOR_MRAD
        object.__setattr__(self, "detector_mrad", detector)
        channels = normalize_elements(self.channel_elements, what="channel_elements")
        object.__setattr__(self, "channel_elements", channels)
        self._check_finite()
        self._check_beam()
        self._resolve_channelling()
        if not self.heatmap_sigma > 0:
            raise ValueError(f"heatmap_sigma must be > 0 Å, got {self.heatmap_sigma}")
        if self.heatmap_dtype not in HEATMAP_DTYPES:
            raise ValueError(f"heatmap_dtype must be one of {', '.join(HEATMAP_DTYPES)}, "
                             f"got {self.heatmap_dtype!r}")
        if not self.column_radius >= 0:
            raise ValueError(f"column_radius must be >= 0 Å, got {self.column_radius}")
        if not self.column_broadening >= 0:
            raise ValueError("column_broadening must be >= 0 Å²")
        if self.legacy and (correction or self.column_broadening):
            raise ValueError("legacy mode takes no column correction")
        try:
            atomic_number(self.column_reference)
        except KeyError:
            raise ValueError(
                f"unknown column_reference element {self.column_reference!r}") from None
        for amplitude, sig in probe:
            if not (amplitude >= 0 and sig > 0):
                raise ValueError(
                    f"probe components need amplitude >= 0 and sigma > 0 Å, got {probe}"
                )
        if probe and not sum(a for a, _ in probe) > 0:
            raise ValueError("probe amplitudes must not all be 0")
        for el, u in overrides:
            if not u >= 0:
                raise ValueError(f"thermal displacement of {el} must be >= 0 Å, got {u}")
        if self.legacy and (probe or self.thermal):
            raise ValueError("legacy mode renders the original single Gaussian; "
                             "it takes no probe or thermal smearing")
        if self.dose is not None and not self.dose > 0:
            raise ValueError(f"dose must be > 0 electrons per Å², got {self.dose}")
        if not self.read_noise >= 0:
            raise ValueError(f"read_noise must be >= 0, got {self.read_noise}")
        if not (self.scan_jitter >= 0 and self.drift >= 0):
            raise ValueError("scan_jitter and drift must be >= 0 Å")
        if self.legacy and self.augmented:
            raise ValueError("legacy mode reproduces the original script; it takes no "
                             "augmentations")
        if int(self.edgesize) != self.edgesize or self.edgesize < 2:
            raise ValueError(f"edgesize must be an integer >= 2, got {self.edgesize}")
        if not self.gauss_sigma > 0:
            raise ValueError(f"gauss_sigma must be > 0 Å, got {self.gauss_sigma}")
        if not self.padxyz >= 0:
            raise ValueError(f"padxyz must be >= 0 Å, got {self.padxyz}")
        if self.bitrate not in BITRATES:
            raise ValueError(f"bitrate must be 8 or 16, got {self.bitrate}")
        if not self.binary_radius > 0:
            raise ValueError(f"binary_radius must be > 0 Å, got {self.binary_radius}")
        if self.framing not in FRAMINGS:
            raise ValueError(f"framing must be one of {', '.join(FRAMINGS)}, got {self.framing!r}")
        if self.framing == "fixed" and not (self.pixel_size and self.pixel_size > 0):
            raise ValueError("framing='fixed' needs a positive pixel_size in Å")
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(
                f"normalization must be one of {', '.join(NORMALIZATIONS)}, "
                f"got {self.normalization!r}"
            )
        if self.normalization == "fixed" and not (
            self.intensity_scale and self.intensity_scale > 0
        ):
            raise ValueError("normalization='fixed' needs a positive intensity_scale")
        if self.legacy and self.z_exponent != 0:
            raise ValueError("legacy mode counts every atom once; it needs z_exponent=0 "
                             "(its default in legacy mode; z_exponent=None in the API)")
        if self.legacy and self.normalization != "image":
            raise ValueError("legacy mode normalises each image as the original script did")
        # a value that changes nothing would still be recorded, and refuse a resume without it
        if self.pixel_size is not None and self.framing != "fixed":
            raise ValueError("pixel_size is used only with framing='fixed' (give both, or "
                             "neither)")
        if self.intensity_scale is not None and self.normalization not in ("fixed", "beam"):
            raise ValueError("intensity_scale is used only with normalization='fixed' or "
                             "'beam' (give both, or neither)")
        if self.normalization == "beam" and self.intensity_scale is not None \
                and not self.intensity_scale > 0:
            raise ValueError("normalization='beam' needs a positive intensity_scale, or none")
        if self.stored_normalization == "float" and self.bitrate != 8:
            raise ValueError(f"normalization={self.normalization!r} stores float32 images; "
                             "bitrate applies to integer images only (leave it at 8, or give "
                             "an intensity_scale with 'beam')")

    def _check_beam(self) -> None:
        """The optics and detector of ``normalization="beam"``, and only there."""
        beam = self.normalization == "beam"
        given = [name for name in ("voltage_kv", "convergence_mrad", "detector_mrad")
                 if getattr(self, name) not in (None, ())]
        if not beam:
            if given:
                raise ValueError(f"{', '.join(given)} used only with normalization='beam' "
                                 "(give both, or neither)")
            return
        if self.voltage_kv is None or self.convergence_mrad is None:
            raise ValueError("normalization='beam' needs voltage_kv and convergence_mrad (the "
                             "cross-sections depend on the optics; --probe-kv, --probe-mrad)")
        if not (self.voltage_kv > 0 and 0 < self.convergence_mrad < 200):
            raise ValueError("normalization='beam' needs voltage_kv > 0 and 0 < "
                             f"convergence_mrad < 200, got {self.voltage_kv} kV, "
                             f"{self.convergence_mrad} mrad")
        lo, hi = self.detector
        if len(self.detector_mrad) not in (0, 2) or not 0 <= lo < hi <= 1000 * math.pi:
            raise ValueError("detector_mrad must be (inner, outer) with 0 <= inner < outer "
                             f"(mrad), got {self.detector_mrad}")
        if lo < self.convergence_mrad:  # bright field: the unscattered beam interferes
            raise ValueError(
                f"normalization='beam' models annular dark-field detectors: the inner angle "
                f"({lo:g} mrad) must be at least the convergence angle "
                f"({self.convergence_mrad:g} mrad)")
        if self.legacy:
            raise ValueError("legacy mode normalises each image as the original script did")
        if self.z_exponent != HAADF_Z_EXPONENT:  # a value that changes nothing is refused
            raise ValueError("normalization='beam' weighs each atom by its cross-section; "
                             "z_exponent plays no part (leave it at its default)")

    def _resolve_channelling(self) -> None:
        """``channelling``: None -> the fitted correction for the optics (beam units); then
        refuse ``column_reference`` / ``column_weighting`` / ``column_width`` where they
        change nothing (no correction) or would misread the fit (which counts atoms in Au units)."""
        self._resolve_channelling_fit()
        if not (self.column_correction or self.column_broadening):
            for name in ("column_reference", *_BEAM_COLUMN_FIELDS):
                value = getattr(self, name)
                if value != _DEFAULTS[name]:
                    shown = value if isinstance(value, str) else f"{value:g}"
                    raise ValueError(f"{name} {shown} plays no part without a column "
                                     "correction (leave it at its default)")

    def _resolve_channelling_fit(self) -> None:
        given = bool(self.column_correction or self.column_broadening)
        if not 0 <= self.column_weighting <= 1:
            raise ValueError(f"column_weighting must be within [0, 1], got "
                             f"{self.column_weighting}")
        if not self.column_width >= 0:
            raise ValueError(f"column_width must be >= 0 Å, got {self.column_width}")
        if self.normalization != "beam":
            for name in _BEAM_COLUMN_FIELDS:
                if getattr(self, name) != _DEFAULTS[name]:
                    raise ValueError(f"{name} applies to normalization='beam' only (leave it "
                                     "at its default)")
            if self.channelling is not None:
                raise ValueError(f"channelling={self.channelling} applies the column "
                                 "correction fitted for normalization='beam'; for the other "
                                 "normalizations give column_correction")
            return
        if self.channelling is False and given:
            raise ValueError("channelling=False turns the column correction off; it takes no "
                             "column_correction or column_broadening (give one, or the other)")
        if given or self.channelling is False:
            object.__setattr__(self, "channelling", given)
            return
        from ..physics.column import fitted_channelling

        fit = fitted_channelling(self.voltage_kv, self.convergence_mrad, self.detector)
        if fit is None:
            if self.channelling:
                from ..physics.column import channelling_gap

                raise ValueError(
                    f"{channelling_gap(self.voltage_kv, self.convergence_mrad, self.detector)}"
                    "; with the reach of physics.column.fitted_channelling); give your own "
                    "column_correction, or channelling=False")
            object.__setattr__(self, "channelling", False)
            return
        if self.column_reference != "Au":
            raise ValueError(
                "the channelling fits count atoms in units of one Au atom's peak; with "
                f"column_reference {self.column_reference} give column_correction too")
        if self.column_weighting != fit.weighting or self.column_width not in (0, fit.width):
            raise ValueError(
                f"the channelling fits count atoms with column_weighting {fit.weighting:g} "
                f"and column_width {fit.width:g}; with other values give column_correction "
                "too")
        object.__setattr__(self, "column_correction", fit.coefficients)
        object.__setattr__(self, "column_broadening", fit.broadening)
        object.__setattr__(self, "column_width", fit.width)
        object.__setattr__(self, "channelling", True)

    def _check_finite(self) -> None:
        """Refuse NaN and infinite numbers (they render blank images without a word) and a
        Z exponent beyond ±10 (Z**z of heavy atoms overflows float32 sums far before)."""
        values = {
            "gauss_sigma": self.gauss_sigma, "padxyz": self.padxyz,
            "binary_radius": self.binary_radius, "z_exponent": self.z_exponent,
            "pixel_size": self.pixel_size, "intensity_scale": self.intensity_scale,
            "dose": self.dose, "read_noise": self.read_noise,
            "scan_jitter": self.scan_jitter, "drift": self.drift,
            "column_broadening": self.column_broadening,
            "column_weighting": self.column_weighting, "column_width": self.column_width,
            "voltage_kv": self.voltage_kv, "convergence_mrad": self.convergence_mrad,
            "heatmap_sigma": self.heatmap_sigma, "column_radius": self.column_radius,
        }
        values.update({f"detector_mrad[{k}]": a for k, a in enumerate(self.detector_mrad)})
        values.update({f"column_correction[{k}]": c
                       for k, c in enumerate(self.column_correction)})
        values.update({f"probe[{k}]": v for k, pair in enumerate(self.probe) for v in pair})
        values.update({f"thermal_overrides[{el}]": u for el, u in self.thermal_overrides})
        for name, value in values.items():
            if value is not None and not math.isfinite(float(value)):
                raise ValueError(f"{name} must be a finite number, got {value}")
        if not -10 <= self.z_exponent <= 10:
            raise ValueError(f"z_exponent must be within [-10, 10] (HAADF: about 1.7), got "
                             f"{self.z_exponent}")

    def to_dict(self) -> dict[str, Any]:
        """Every field by name, ``z_exponent`` resolved; JSON-ready (tuples become lists in
        JSON, and :meth:`from_dict` turns them back)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RenderSettings:
        """The settings a :meth:`to_dict` (e.g. read back from JSON) describes.

        Parameters
        ----------
        data : mapping
            Field names and values; lists stand for tuples, a missing field takes its
            default.

        Raises
        ------
        ValueError
            A key that is not a field (the message names it and the valid ones), or a value
            the settings reject.
        """
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise ValueError(
                f"unknown RenderSettings field{'s' if len(unknown) > 1 else ''} "
                f"{', '.join(map(repr, unknown))}; valid: {', '.join(names)}")
        return cls(**data)

    @property
    def noisy(self) -> bool:
        """Whether gaussian_2d gets shot or read noise."""
        return self.dose is not None or self.read_noise > 0

    @property
    def absolute_noise(self) -> bool:
        """Whether shot noise is absolute (beam units: each probe position receives
        ``dose * pixel_size²`` electrons) rather than scaled to each image's brightest pixel."""
        return self.normalization == "beam"

    @property
    def scan_distorted(self) -> bool:
        """Whether gaussian_2d sees scan-line jitter or drift."""
        return self.scan_jitter > 0 or self.drift > 0

    @property
    def augmented(self) -> bool:
        """Whether any augmentation changes gaussian_2d."""
        return self.noisy or self.phonon_jitter or self.scan_distorted

    @property
    def components(self) -> tuple[tuple[float, float], ...]:
        """The probe as (amplitude, sigma Å) Gaussians: ``probe`` or ``gauss_sigma``."""
        return self.probe or ((1.0, float(self.gauss_sigma)),)

    @property
    def detector(self) -> tuple[float, float]:
        """The annular detector of ``normalization="beam"``, mrad (inner, outer)."""
        if len(self.detector_mrad) == 2:
            return self.detector_mrad[0], self.detector_mrad[1]
        if not self.detector_mrad:
            return HAADF_DETECTOR_MRAD
        return (math.nan, math.nan)

    @property
    def stored_normalization(self) -> str:
        """How the kernels store images: ``beam`` is ``float`` (float32 beam fractions), or
        ``fixed`` with an ``intensity_scale``; every other normalization is itself."""
        if self.normalization == "beam":
            return "fixed" if self.intensity_scale is not None else "float"
        return self.normalization

    @property
    def image_dtype(self) -> np.dtype:
        if self.stored_normalization == "float":
            return np.dtype(np.float32)
        return np.dtype(np.uint8 if self.bitrate == 8 else np.uint16)


# ------------------------------------------------------------------------ output types


def _validated(names: str | Iterable[str]) -> list[str]:
    """Output type names in the order given, each once; a string is a comma-separated list.

    Raises
    ------
    ValueError
        An unknown name, or none given; the message lists the valid names.
    """
    if isinstance(names, str):
        names = names.split(",")
    valid = ", ".join(ALL_OUTPUT_TYPES)
    out: list[str] = []
    for name in names:
        name = str(name).strip()
        if not name:
            continue
        if name not in ALL_OUTPUT_TYPES:
            raise ValueError(f"unknown output type {name!r}; valid names: {valid}")
        if name not in out:
            out.append(name)
    if not out:
        raise ValueError(f"no output type given; valid names: {valid}")
    return out


def normalize_output_types(names: str | Iterable[str]) -> tuple[str, ...]:
    """Validate output type names (arrays and ``*_image`` stacks); each once, in the order
    of :data:`ALL_OUTPUT_TYPES`.

    Parameters
    ----------
    names : str or iterable of str
        Names from :data:`ALL_OUTPUT_TYPES`; a string is a comma-separated list. Blank
        names are skipped.

    Raises
    ------
    ValueError
        An unknown name (the message lists the valid ones), or none given.
    """
    wanted = set(_validated(names))
    return tuple(n for n in ALL_OUTPUT_TYPES if n in wanted)


def requested_arrays(names: str | Iterable[str]) -> tuple[str, ...]:
    """The arrays the engine makes for ``names``, in the order given: each ``*_image``
    name becomes the array it shows (validated as :func:`normalize_output_types`)."""
    out: list[str] = []
    for name in _validated(names):
        base = IMAGE_TYPES.get(name, name)
        if base not in out:
            out.append(base)
    return tuple(out)


def array_types(output_types: Sequence[str]) -> tuple[str, ...]:
    """The output types stored in the ``.npz`` (not the ``*_image`` ones)."""
    return tuple(n for n in output_types if n in OUTPUT_TYPES)


def image_types(output_types: Sequence[str]) -> tuple[str, ...]:
    """The ``*_image`` output types (written as ``.tif`` stacks)."""
    return tuple(n for n in output_types if n in IMAGE_TYPES)



#: Every field's default (the value that "plays no part" checks compare with).
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(RenderSettings)}
#: How the column correction counts atoms in beam units: fields of normalization="beam" only.
_BEAM_COLUMN_FIELDS = ("column_weighting", "column_width")

def render_types(output_types: str | Iterable[str]) -> tuple[str, ...]:
    """The arrays the engine makes for a run: array types plus the arrays the ``*_image``
    types show, in the order of :data:`OUTPUT_TYPES` (validated)."""
    needed = set(requested_arrays(output_types))
    return tuple(n for n in OUTPUT_TYPES if n in needed)
