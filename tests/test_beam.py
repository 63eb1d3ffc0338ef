"""Images in absolute units: fractions of the incident beam (``normalization="beam"``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from xyz2image_gpu import RenderSettings, render
from xyz2image_gpu.cli import cli
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
    alone = float(_fixed(column, ["Au"] * 4, edgesize=81).sum(dtype=np.float64))
    raised = float(_fixed(column, ["Au"] * 4, edgesize=81, column_correction=(0.17,))
                   .sum(dtype=np.float64))
    assert raised / alone == pytest.approx((1 + 0.17 * 4) / 1.17, rel=0.01)


@pytest.mark.parametrize(("fields", "message"), [
    ({"normalization": "beam"}, "needs voltage_kv and convergence_mrad"),
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
            "--device", "cpu", "--output-types", "gaussian_2d,coordinates_3d"]
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
