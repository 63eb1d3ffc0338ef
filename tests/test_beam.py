"""Images in absolute units: fractions of the incident beam (``normalization="beam"``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from xyz2image_gpu import RenderSettings, render
from xyz2image_gpu.cli import cli
from xyz2image_gpu.physics.column import CHANNELLING_FITS, fitted_channelling
from xyz2image_gpu.physics.cross_section import phase_object_cross_section
from xyz2image_gpu.structures.examples import bundled_examples

BEAM = {"normalization": "beam", "voltage_kv": 200.0, "convergence_mrad": 20.0}
PX = 0.05


def _sigma(element, detector=(70.0, 200.0), kv=200.0, conv=20.0):
    return phase_object_cross_section(element, kv, *detector, conv)


def _fixed(positions, symbols, edgesize=161, **settings):
    kwargs = dict(framing="fixed", pixel_size=PX, edgesize=edgesize, gauss_sigma=0.3, **BEAM)
    kwargs.update(settings)
    return render(np.asarray(positions, dtype=float), 1, ("gaussian_2d",), symbols=symbols,
                  device="cpu", **kwargs)["gaussian_2d"][0]


@pytest.mark.parametrize(("element", "detector"), [("Au", ()), ("Si", ()), ("Pd", (40, 100))])
def test_one_atom_integrates_to_its_cross_section(element, detector):
    image = _fixed([[0, 0, 0]], [element], detector_mrad=detector)
    assert image.dtype == np.float32
    expected = _sigma(element, tuple(detector) or (70.0, 200.0))
    assert float(image.sum(dtype=np.float64)) * PX * PX == pytest.approx(expected, rel=1e-4)
    # the peak of a Gaussian of 0.3 Å that integrates to σ
    assert float(image.max()) == pytest.approx(expected / (2 * np.pi * 0.3**2), rel=2e-3)


def test_separated_atoms_add_up():
    image = _fixed([[-2.5, 0, 0], [2.5, 0, 1.0], [0, 2.5, -1.0]], ["Au", "Si", "Pd"],
                   edgesize=201)
    total = _sigma("Au") + _sigma("Si") + _sigma("Pd")
    assert float(image.sum(dtype=np.float64)) * PX * PX == pytest.approx(total, rel=1e-4)


def test_probe_shape_and_thermal_smearing_keep_the_integral():
    probe = ((0.9963, 0.2565), (0.0037, 1.0))
    image = _fixed([[0, 0, 0]], ["Au"], edgesize=241, probe=probe, thermal=True)
    assert float(image.sum(dtype=np.float64)) * PX * PX == pytest.approx(_sigma("Au"), rel=1e-3)


def test_beam_fractions_can_be_stored_as_integers_with_a_scale():
    floats = _fixed([[0, 0, 0]], ["Au"], edgesize=81)
    grey = _fixed([[0, 0, 0]], ["Au"], edgesize=81, intensity_scale=1e6, bitrate=16)
    assert grey.dtype == np.uint16
    np.testing.assert_allclose(grey, np.rint(floats.astype(np.float64) * 1e6), atol=1)


@pytest.mark.parametrize("element", ["Au", "Pd", "C", "U"])
def test_column_correction_keeps_an_isolated_atom_of_any_element(element):
    # x is in units of one isolated Au atom's peak; each atom's factor is divided by its
    # value for the atom alone, so any isolated atom keeps its cross-section (with thermal
    # smearing and broadening too)
    kwargs = {"edgesize": 121, "thermal": True, "column_broadening": 0.004}
    plain = _fixed([[0, 0, 0]], [element], **kwargs)
    corrected = _fixed([[0, 0, 0]], [element], column_correction=(0.2778, -0.0121), **kwargs)
    assert float(corrected.sum(dtype=np.float64)) * PX * PX == pytest.approx(
        _sigma(element), rel=1e-3)
    np.testing.assert_allclose(corrected, plain, rtol=1e-5, atol=1e-9)


def test_column_correction_keeps_an_isolated_atom_and_raises_a_column():
    # x is the image at the atom in units of one isolated reference atom's peak: alone, x = 1,
    # and in beam units the factor (1 + c x) / (1 + c) keeps its cross-section
    plain = _fixed([[0, 0, 0]], ["Au"], edgesize=81)
    corrected = _fixed([[0, 0, 0]], ["Au"], edgesize=81, column_correction=(0.17,))
    assert float(corrected.sum(dtype=np.float64)) == pytest.approx(
        float(plain.sum(dtype=np.float64)), rel=1e-4)
    # a column of 4 atoms along the beam, 2.9 Å apart: x is about 4 for each
    column = [[0, 0, 2.9 * k] for k in range(4)]
    alone = float(_fixed(column, ["Au"] * 4, edgesize=81, channelling=False)
                  .sum(dtype=np.float64))
    raised = float(_fixed(column, ["Au"] * 4, edgesize=81, column_correction=(0.17,))
                   .sum(dtype=np.float64))
    assert raised / alone == pytest.approx((1 + 0.17 * 4) / 1.17, rel=0.01)


def test_channelling_gain_is_held_past_the_vertex():
    # (1 + c1 x + c2 x²) rises to x = -c1 / (2 c2) = 5 and is held there: a column of 12 Au
    # atoms (x ≈ 12) gets the per-atom gain of x = 5: f(5) / f(1), f = 1 + c1 x + c2 x²
    c = (0.2, -0.02)
    column = [[0, 0, 2.9 * k] for k in range(12)]
    plain = _fixed(column, ["Au"] * 12, edgesize=81, channelling=False)
    held = _fixed(column, ["Au"] * 12, edgesize=81, column_correction=c)
    vertex = 1 + c[0] * 5 + c[1] * 25
    ratio = float(held.sum(dtype=np.float64)) / float(plain.sum(dtype=np.float64))
    assert ratio == pytest.approx(vertex / (1 + c[0] + c[1]), rel=1e-3)


@pytest.mark.parametrize(("d", "width"), [(0.0, 0.2), (0.3, 0.2), (0.6, 0.2), (0.3, 0.1)])
def test_column_width_counts_the_atoms_that_line_up(d, width):
    # two Au atoms d Å apart across the beam: each has x = 1 + exp(-d² / (2 width²)), so
    # the corrected total over the plain one is (1 + c x) / (1 + c) (no thermal smearing)
    pair = [[-d / 2, 0, 0], [d / 2, 0, 2.9]]
    plain = _fixed(pair, ["Au"] * 2, edgesize=81, channelling=False)
    corrected = _fixed(pair, ["Au"] * 2, edgesize=81, column_correction=(0.17,),
                       column_width=width)
    x = 1 + np.exp(-d * d / (2 * width * width))
    ratio = float(corrected.sum(dtype=np.float64)) / float(plain.sum(dtype=np.float64))
    assert ratio == pytest.approx((1 + 0.17 * x) / 1.17, rel=2e-3)


@pytest.mark.parametrize("weighting", [0.0, 0.5, 1.0])
def test_column_weighting_counts_light_atoms_in_part(weighting):
    # a column of 4 Cu atoms: x = 4 (w_Cu / w_Au)**weighting in units of an Au atom's peak
    # (same probe, no thermal smearing: the unweighted peaks are equal), so the corrected
    # total over the plain one is (1 + 4 c r) / (1 + c r), r = (σ_Cu / σ_Au)**weighting
    column = [[0, 0, 2.6 * k] for k in range(4)]
    plain = _fixed(column, ["Cu"] * 4, edgesize=81, channelling=False)
    raised = _fixed(column, ["Cu"] * 4, edgesize=81, column_correction=(0.17,),
                    column_weighting=weighting)
    r = (_sigma("Cu") / _sigma("Au")) ** weighting
    ratio = float(raised.sum(dtype=np.float64)) / float(plain.sum(dtype=np.float64))
    assert ratio == pytest.approx((1 + 0.17 * 4 * r) / (1 + 0.17 * r), rel=0.01)


@pytest.mark.parametrize(("fields", "message"), [
    ({"normalization": "beam"}, "needs voltage_kv and convergence_mrad"),
    ({"column_weighting": 0.3}, "column_weighting applies to normalization='beam' only"),
    (dict(BEAM, column_weighting=1.5), "within \\[0, 1\\]"),
    (dict(BEAM, column_weighting=0.3), "the channelling fits count atoms with"),
    (dict(BEAM, column_width=0.5), "the channelling fits count atoms with"),
    ({"column_width": 0.2}, "column_width applies to normalization='beam' only"),
    (dict(BEAM, column_width=-1.0), "column_width must be >= 0"),
    ({**BEAM, "detector_mrad": (15.0, 60.0)}, "must be at least the convergence angle"),
    ({**BEAM, "z_exponent": 2.5}, "z_exponent plays no part"),
    ({"normalization": "beam", "voltage_kv": 200.0}, "needs voltage_kv and convergence_mrad"),
    (dict(BEAM, convergence_mrad=250.0), "convergence_mrad < 200"),
    (dict(BEAM, detector_mrad=(200.0, 70.0)), "inner < outer"),
    (dict(BEAM, detector_mrad=(70.0,)), "inner < outer"),
    (dict(BEAM, bitrate=16), "bitrate applies to integer images"),
    ({"voltage_kv": 200.0}, "used only with normalization='beam'"),
    ({"detector_mrad": (70.0, 200.0)}, "used only with normalization='beam'"),
    (dict(BEAM, voltage_kv=float("nan")), "finite"),
    (dict(BEAM, legacy=True, z_exponent=0.0), "legacy"),
])
def test_bad_beam_settings_are_refused(fields, message):
    with pytest.raises(ValueError, match=message):
        RenderSettings(**fields)


def test_beam_settings_round_trip():
    s = RenderSettings(**BEAM, detector_mrad=[40, 100], intensity_scale=1e5, bitrate=16)
    again = RenderSettings.from_dict(json.loads(json.dumps(s.to_dict())))
    assert again == s and again.detector == (40.0, 100.0)
    assert RenderSettings(**BEAM).detector == (70.0, 200.0)
    # the default is resolved: leaving it out and spelling it out are one setting (resume)
    assert RenderSettings(**BEAM) == RenderSettings(**BEAM, detector_mrad=(70, 200))
    assert RenderSettings(**BEAM).to_dict()["detector_mrad"] == (70.0, 200.0)


def test_render_command_in_beam_units(tmp_path):
    structure = bundled_examples()[0]
    out = tmp_path / "beam"
    args = ["render", str(structure), "-o", str(out), "--n-rotation", "2", "--normalization",
            "beam", "--probe-kv", "300", "--probe-mrad", "25", "--detector-mrad", "40,100",
            "--framing", "fixed", "--pixel-size", "0.2", "--edgesize", "96", "--quiet",
            "--device", "cpu", "--output-types", "gaussian_2d,coordinates_3d",
            "--no-channelling"]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    stack = next(out.rglob("0000.npz"))
    with np.load(stack) as z:
        images, n_atoms = z["gaussian_2d"], z["n_atoms"]
    assert images.dtype == np.float32
    # Au147 in a 19 Å field: nearly all of each atom's signal is in the image
    integral = images.sum(axis=(1, 2), dtype=np.float64) * 0.2 * 0.2
    expected = int(n_atoms[0]) * _sigma("Au", (40.0, 100.0), kv=300.0, conv=25.0)
    np.testing.assert_allclose(integral, expected, rtol=0.02)
    params = json.loads((out / "manifest.json").read_text())["parameters"]
    assert params["normalization"] == "beam" and params["voltage_kv"] == 300.0
    assert params["convergence_mrad"] == 25.0 and params["detector_mrad"] == [40.0, 100.0]
    assert params["channelling"] is False and params["column_correction"] == []


def test_channelling_is_on_by_default_in_beam_units():
    fit = fitted_channelling(200.0, 20.0, (70.0, 200.0))
    s = RenderSettings(**BEAM)
    assert s.channelling is True and fit is not None
    assert (s.column_correction, s.column_broadening) == (fit.coefficients, fit.broadening)
    # resolved: leaving it out and spelling the fit out are one setting (resume)
    spelled = RenderSettings(**BEAM, column_correction=fit.coefficients,
                             column_broadening=fit.broadening, column_width=fit.width)
    assert spelled == s == RenderSettings(**BEAM, channelling=True)
    assert RenderSettings.from_dict(json.loads(json.dumps(s.to_dict()))) == s
    off = RenderSettings(**BEAM, channelling=False)
    assert off.column_correction == () and off.column_broadening == 0.0
    assert off.column_width == 0.0 and s.column_width == fit.width > 0
    # given coefficients replace the fit
    own = RenderSettings(**BEAM, column_correction=(0.1,))
    assert own.channelling is True and own.column_correction == (0.1,)
    # the relative normalizations keep no correction unless given
    assert RenderSettings().channelling is None and RenderSettings().column_correction == ()


def test_channelling_outside_the_fits():
    # no fit covers 60 kV: off by default, refused when asked for
    far = dict(BEAM, voltage_kv=60.0)
    assert RenderSettings(**far).channelling is False
    assert RenderSettings(**far).column_correction == ()
    with pytest.raises(ValueError, match="no channelling fit covers 60 kV"):
        RenderSettings(**far, channelling=True)
    assert fitted_channelling(200.0, 20.0, (20.0, 40.0)) is None  # another detector
    assert fitted_channelling(200.0, 35.0, (70.0, 200.0)) is None  # another probe


def test_channelling_between_fitted_voltages_is_interpolated():
    fits = {f.voltage_kv: f for f in CHANNELLING_FITS if f.detector_mrad == (70.0, 200.0)}
    if len(fits) < 2:
        pytest.skip("one voltage fitted")
    (lo, a), (hi, b) = sorted(fits.items())[:2]
    mid = fitted_channelling((lo + hi) / 2, 20.0, (70.0, 200.0))
    n = max(len(a.coefficients), len(b.coefficients))
    pad = lambda c: np.pad(np.asarray(c, float), (0, n - len(c)))
    np.testing.assert_allclose(mid.coefficients, (pad(a.coefficients) + pad(b.coefficients)) / 2,
                               atol=1e-6)
    assert mid.broadening == pytest.approx((a.broadening + b.broadening) / 2, abs=1e-6)


@pytest.mark.parametrize(("fields", "message"), [
    ({"channelling": True}, "for the other normalizations give column_correction"),
    ({"channelling": False}, "for the other normalizations give column_correction"),
    (dict(BEAM, channelling=False, column_correction=(0.2,)), "takes no column_correction"),
    (dict(BEAM, channelling=False, column_broadening=0.01), "takes no column_correction"),
    # options that would change nothing, or misread the fit, are refused
    (dict(BEAM, channelling=False, column_weighting=0.2), "column_weighting 0.2 plays no part"),
    (dict(BEAM, voltage_kv=60.0, column_weighting=0.2), "column_weighting 0.2 plays no part"),
    ({"column_reference": "Pd"}, "column_reference Pd plays no part"),
    (dict(BEAM, channelling=False, column_reference="Pd"), "column_reference Pd plays no part"),
    (dict(BEAM, column_reference="Pd"), "count atoms in units of one Au atom's peak"),
    (dict(BEAM, channelling=False, column_width=0.2), "column_width 0.2 plays no part"),
])
def test_contradictory_channelling_is_refused(fields, message):
    with pytest.raises(ValueError, match=message):
        RenderSettings(**fields)


def test_column_reference_with_own_correction_is_kept():
    s = RenderSettings(**BEAM, column_reference="Pd", column_correction=(0.2,))
    assert s.channelling is True and s.column_reference == "Pd"
    assert RenderSettings(column_reference="Pd", column_correction=(0.2,)).column_reference == "Pd"


def test_render_command_applies_the_fitted_channelling(tmp_path):
    structure = bundled_examples()[0]
    common = ["render", str(structure), "--n-rotation", "1", "--normalization", "beam",
              "--probe-kv", "200", "--framing", "fixed", "--pixel-size", "0.2",
              "--edgesize", "96", "--quiet", "--device", "cpu", "--output-types",
              "gaussian_2d"]
    totals = {}
    for name, extra in (("on", []), ("off", ["--no-channelling"])):
        out = tmp_path / name
        result = CliRunner().invoke(cli, [*common, "-o", str(out), *extra],
                                    catch_exceptions=False)
        assert result.exit_code == 0, result.output
        with np.load(next(out.rglob("0000.npz"))) as z:
            totals[name] = float(z["gaussian_2d"].sum(dtype=np.float64))
        params = json.loads((out / "manifest.json").read_text())["parameters"]
        assert params["channelling"] is (name == "on")
    fit = fitted_channelling(200.0, 20.0, (70.0, 200.0))
    assert params["column_correction"] == [] and fit.coefficients
    # Au147 has columns of up to 4 atoms in its view: channelling raises the total
    assert totals["on"] > 1.05 * totals["off"]
    both = CliRunner().invoke(cli, [*common, "-o", str(tmp_path / "x"), "--no-channelling",
                                    "--column-correction", "0.2"])
    assert both.exit_code == 2 and "--no-channelling" in both.output


@pytest.mark.parametrize(("args", "message"), [
    (["--normalization", "beam"], "needs the probe's optics: --probe-kv"),
    (["--detector-mrad", "70,20", "--normalization", "beam", "--probe-kv", "200"],
     "0 <= INNER < OUTER"),
    (["--detector-mrad", "70,200"], "--detector-mrad used only with --normalization beam"),
])
def test_render_command_refuses_incomplete_beam_settings(tmp_path, args, message):
    out = tmp_path / "bad"
    result = CliRunner().invoke(cli, ["render", str(bundled_examples()[0]), "-o", str(out),
                                      *args])
    assert result.exit_code == 2 and message in result.output
    assert not out.exists()


@pytest.mark.parametrize(("option", "value"), [
    ("--column-correction", "0.1,,0.2"), ("--column-correction", ",0.2"),
    ("--detector-mrad", "70,,200"),
])
def test_a_blank_number_in_a_list_is_refused(tmp_path, option, value):
    """The coefficients' positions are their powers (c1 x + c2 x² ...): '0.1,,0.2' was read
    as c1 = 0.1, c2 = 0.2 (the blank dropped), not c3 = 0.2."""
    result = CliRunner().invoke(cli, [
        "render", str(bundled_examples()[0]), "-o", str(tmp_path / "out"), "--quiet",
        "--normalization", "beam", "--probe-kv", "200", "--device", "cpu", option, value])
    assert result.exit_code == 2 and f"'{option}'" in result.output
    assert "has a blank item" in result.output and not (tmp_path / "out").exists()
    from xyz2image_gpu.cli.options import FloatListType

    assert FloatListType().convert("0.1, -0.02,", None, None) == (0.1, -0.02)


@pytest.mark.parametrize(("args", "message"), [
    (["--probe-kv", "inf"], "--probe-kv must be finite"),
    (["--probe-kv", "200", "--probe-defocus", "nan"], "--probe-defocus must be finite"),
    (["--probe-kv", "200", "--dose", "inf"], "--dose must be a finite number"),
    (["--probe-kv", "200", "--drift", "nan"], "--drift must be a finite number"),
])
def test_non_finite_values_are_refused_by_option_name(tmp_path, args, message):
    """They named the field (voltage_kv, dose): one-word fields and the optics' fields were
    not put in the command line's terms."""
    result = CliRunner().invoke(cli, [
        "render", str(bundled_examples()[0]), "-o", str(tmp_path / "out"), "--quiet",
        "--normalization", "beam", "--device", "cpu", *args])
    assert result.exit_code == 2 and f"Error: {message}" in result.output, result.output


def test_a_beam_manifest_from_before_channelling_resumes(tmp_path):
    # manifests written before the channelling fields existed lack them: a beam run then
    # had no fitted correction, and an explicit one weighed atoms by cross-section
    from xyz2image_gpu.run.config import settings_from_parameters
    from xyz2image_gpu.run.manifest import same_parameters

    structure = bundled_examples()[0]
    out = tmp_path / "old"
    args = ["render", str(structure), "-o", str(out), "--n-rotation", "1", "--normalization",
            "beam", "--probe-kv", "200", "--framing", "fixed", "--pixel-size", "0.2",
            "--edgesize", "48", "--quiet", "--device", "cpu", "--output-types", "gaussian_2d"]
    for extra, implied in (([], {"channelling": False}),
                           (["--column-correction", "0.2"], {"channelling": True,
                                                             "column_weighting": 1.0})):
        run = CliRunner().invoke(cli, [*args, "--no-channelling", *extra]
                                 if not extra else [*args, *extra, "--column-weighting", "1"],
                                 catch_exceptions=False)
        assert run.exit_code == 0, run.output
        manifest = out / "manifest.json"
        doc = json.loads(manifest.read_text())
        params = doc["parameters"]
        for key in ("channelling", "column_weighting"):
            params.pop(key)
        assert settings_from_parameters(params).channelling is implied["channelling"]
        assert settings_from_parameters(params).column_weighting == implied.get(
            "column_weighting", 0.5)
        new = json.loads(json.dumps(settings_from_parameters(params).to_dict()))
        assert same_parameters(params, {**new, **{k: v for k, v in doc["parameters"].items()
                                                 if k not in new}})
        manifest.write_text(json.dumps(doc))
        again = CliRunner().invoke(cli, [*args, "--no-channelling", *extra]
                                   if not extra else [*args, *extra, "--column-weighting", "1"],
                                   catch_exceptions=False)
        assert again.exit_code == 0 and "other settings" not in again.output, again.output
        # the default (fitted channelling) is another setting: refused
        refused = CliRunner().invoke(cli, args)
        assert refused.exit_code != 0 and "other settings" in refused.output
        import shutil
        shutil.rmtree(out)


def test_render_command_notes_optics_without_a_channelling_fit(tmp_path):
    common = ["render", str(bundled_examples()[0]), "--n-rotation", "1", "--normalization",
              "beam", "--probe-kv", "80", "--framing", "fixed", "--pixel-size", "0.2",
              "--edgesize", "48", "--quiet", "--device", "cpu", "--output-types", "gaussian_2d"]
    noted = CliRunner().invoke(cli, [*common, "-o", str(tmp_path / "a")])
    assert noted.exit_code == 0, noted.output
    assert "no channelling fit covers 80 kV" in noted.output
    quiet = CliRunner().invoke(cli, [*common, "-o", str(tmp_path / "b"), "--no-channelling"])
    assert quiet.exit_code == 0 and "channelling" not in quiet.output
    asked = CliRunner().invoke(cli, [*common, "-o", str(tmp_path / "c"), "--channelling"])
    assert asked.exit_code == 2 and "no channelling fit covers 80 kV" in asked.output
    assert not (tmp_path / "c").exists()


def _multislice_references():
    from pathlib import Path

    folder = Path(__file__).resolve().parents[1] / "validation" / "references"
    return sorted(folder.glob("aupdcu_*.npz"))


@pytest.mark.parametrize("path", _multislice_references(), ids=lambda p: p.stem)
def test_default_beam_model_against_multislice(path):
    # abTEM frozen-phonon references (validation/make_references.py --set absolute): the
    # default beam-unit model, channelling included, integrates to the multislice image's
    # total within 5 %, and without channelling the zone-axis totals fall 30-50 % short
    from xyz2image_gpu.physics.probe import ProbeOptics, fit_probe
    from xyz2image_gpu.pipeline.rotations import R0
    from xyz2image_gpu.structures import as_structure

    with np.load(path) as z:
        image, positions, numbers = z["image"], z["positions"], z["numbers"]
        px = float(z["pixel_size"])
        meta = json.loads(str(z["settings_json"]))
    s = meta["settings"]
    kv = s["energy_eV"] / 1e3
    probe = fit_probe(ProbeOptics(kv, s["semiangle_cutoff_mrad"]), 3).components
    structure = as_structure(positions @ R0, numbers=numbers, name=path.stem)
    totals = {}
    for channelling in (None, False):
        fields = {
            "edgesize": image.shape[0], "framing": "fixed", "pixel_size": px,
            "normalization": "beam", "voltage_kv": kv, "probe": probe, "thermal": True,
            "convergence_mrad": s["semiangle_cutoff_mrad"], "channelling": channelling,
            "detector_mrad": (s["detector_inner_mrad"], s["detector_outer_mrad"])}
        # a fit covers every reference's optics
        assert RenderSettings(**fields).channelling is (channelling is None)
        model = render(structure, 1, ("gaussian_2d",), device="cpu", **fields)
        totals[channelling] = float(model["gaussian_2d"][0].sum(dtype=np.float64))
    reference = float(image.sum(dtype=np.float64))
    assert totals[None] / reference == pytest.approx(1.0, abs=0.05)
    if "_rand" not in path.stem:
        assert totals[False] / reference < 0.7


def test_integer_beam_images_carry_their_scale_in_the_file(tmp_path):
    # 16-bit beam units: each image's grey levels per unit beam fraction are stored beside
    # it, and stored / scale gives the float32 beam fractions within half a grey level
    common = ["render", str(bundled_examples()[0]), "--n-rotation", "2", "--normalization",
              "beam", "--probe-kv", "200", "--framing", "fixed", "--pixel-size", "0.2",
              "--edgesize", "48", "--quiet", "--device", "cpu", "--output-types", "gaussian_2d"]
    stacks = {}
    for name, extra in (("int", ["--intensity-scale", "2e4", "--bitrate", "16"]),
                        ("float", [])):
        out = tmp_path / name
        result = CliRunner().invoke(cli, [*common, "-o", str(out), *extra])
        assert result.exit_code == 0, result.output
        with np.load(next(out.rglob("0000.npz"))) as z:
            stacks[name] = {k: z[k] for k in z.files}
    assert "intensity_scale" not in stacks["float"]
    scale = stacks["int"]["intensity_scale"]
    assert scale.shape == (2,) and np.all(scale == 2e4)
    beam = stacks["int"]["gaussian_2d"].astype(np.float64) / scale[:, None, None]
    np.testing.assert_allclose(beam, stacks["float"]["gaussian_2d"], rtol=0,
                               atol=0.5 / 2e4 + 1e-9)
