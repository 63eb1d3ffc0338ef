"""calibrate recovers the settings of images this project rendered."""

from __future__ import annotations

import numpy as np
import pytest
from reference import icosahedron

from xyz2image_gpu import render
from xyz2image_gpu.physics.calibrate import calibrate, pearson_r
from xyz2image_gpu.physics.probe import ProbeOptics, fit_probe


def _mixed_cluster():
    atoms = icosahedron("Au", 3)
    rng = np.random.default_rng(3)
    atoms.numbers[rng.random(len(atoms)) < 0.5] = 46  # Pd
    return atoms


def _reference(atoms, **settings):
    settings.setdefault("normalization", "float")
    out = render(atoms, 1, ["gaussian_2d"], device="cpu", framing="fixed", pixel_size=0.2,
                 edgesize=80, **settings)
    imaged = atoms.positions @ out["rotations"][0].T  # the structure as the image shows it
    return out["gaussian_2d"][0], imaged


def test_recovers_sigma_z_exponent_and_scale():
    atoms = _mixed_cluster()
    image, imaged = _reference(atoms, gauss_sigma=0.33, z_exponent=1.6)
    image = 7.5 * image + 2.0  # an arbitrary intensity scale and offset
    result = calibrate(image, imaged, atoms.numbers, 0.2, sigma=0.45, z_exponent=1.2)
    assert result.gauss_sigma == pytest.approx(0.33, rel=0.02)
    assert result.z_exponent == pytest.approx(1.6, abs=0.05)
    assert result.intensity_scale == pytest.approx(7.5, rel=0.02)
    assert result.background == pytest.approx(2.0, abs=0.05)
    assert np.hypot(*result.shift) < 0.02
    assert result.r_final > 0.9999 > result.r_initial
    opts = result.render_options()
    assert "--gauss-sigma 0.33" in opts and "--z-exponent 1.6" in opts


def test_recovers_source_size_of_an_optics_probe():
    atoms = icosahedron("Pt", 3)
    optics = ProbeOptics(voltage_kv=200, convergence_mrad=20, source_size=0.6)
    image, imaged = _reference(atoms, probe=fit_probe(optics).components)
    start = ProbeOptics(voltage_kv=200, convergence_mrad=20, source_size=0.3)
    result = calibrate(image, imaged, atoms.numbers, 0.2, optics=start, fit_z=False,
                       z_exponent=0.0)
    assert result.source_size == pytest.approx(0.6, rel=0.03)
    assert result.r_final > 0.9999
    opts = result.render_options().split()
    assert float(opts[opts.index("--probe-source-size") + 1]) == pytest.approx(0.6, rel=0.03)


def test_pearson_and_input_checks():
    a = np.arange(16.0).reshape(4, 4)
    assert pearson_r(a, 2 * a + 1) == pytest.approx(1.0)
    assert pearson_r(a, -a) == pytest.approx(-1.0)
    with pytest.raises(ValueError):
        calibrate(np.zeros((2, 2, 2)), np.zeros((1, 3)), [79], 0.1)
    with pytest.raises(ValueError):
        calibrate(np.zeros((4, 4)), np.zeros((2, 3)), [79], 0.1)


def test_calibrate_command(tmp_path):
    from click.testing import CliRunner

    from xyz2image_gpu.cli import cli

    atoms = _mixed_cluster()
    image, imaged = _reference(atoms, gauss_sigma=0.35, z_exponent=1.7)
    np.save(tmp_path / "ref.npy", image)
    lines = [str(len(atoms)), "as imaged"] + [
        f"{'Au' if z == 79 else 'Pd'} {x:.8f} {y:.8f} {w:.8f}"
        for z, (x, y, w) in zip(atoms.numbers, imaged)]
    (tmp_path / "cluster.xyz").write_text("\n".join(lines) + "\n")
    result = CliRunner().invoke(cli, ["calibrate", str(tmp_path / "ref.npy"),
                                      str(tmp_path / "cluster.xyz"), "--pixel-size", "0.2",
                                      "--sigma", "0.5", "--z-exponent", "1.2"])
    assert result.exit_code == 0, result.output
    assert "--gauss-sigma 0.35" in result.output
    assert "--z-exponent 1.70" in result.output
    bad = CliRunner().invoke(cli, ["calibrate", str(tmp_path / "cluster.xyz"),
                                   str(tmp_path / "cluster.xyz"), "--pixel-size", "0.2"])
    assert bad.exit_code != 0 and "Traceback" not in bad.output


def test_calibration_improves_r_on_a_multislice_reference():
    """validation/references/au13pd42_cs.npz is an abTEM frozen-phonon HAADF image of an
    Au13@Pd42 cluster: starting from the original script's settings (0.4 Å, no Z contrast)
    calibration must raise the Pearson r well above 0.99."""
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "validation/references/au13pd42_cs.npz"
    with np.load(path, allow_pickle=False) as z:
        image, pos, num, px = z["image"], z["positions"], z["numbers"], float(z["pixel_size"])
    result = calibrate(image, pos, num, px, sigma=0.4, z_exponent=0.0)
    assert result.r_initial < 0.9 and result.r_final > 0.99
    assert 0.25 < result.gauss_sigma < 0.32  # narrower than the seed's 0.4 Å at 20 mrad
    assert 1.3 < result.z_exponent < 1.9  # HAADF Z contrast, Au vs Pd
    single = calibrate(image, pos, np.full(len(num), 79), px, z_exponent=1.7)
    assert single.z_exponent == 1.7  # one element: the exponent is not identifiable


def test_detector_sensitivity_of_an_image_in_detector_counts():
    # an absolute image (beam fractions) as a detector would record it: 3.2e5 counts per unit
    # fraction of the beam on a dark level of 140 counts
    atoms = _mixed_cluster()
    optics = ProbeOptics(voltage_kv=300, convergence_mrad=25, source_size=0.5)
    image, imaged = _reference(atoms, probe=fit_probe(optics).components, normalization="beam",
                               voltage_kv=300.0, convergence_mrad=25.0, detector_mrad=(50, 150))
    counts = 3.2e5 * image + 140.0
    start = ProbeOptics(voltage_kv=300, convergence_mrad=25, source_size=0.3)
    result = calibrate(counts, imaged, atoms.numbers, 0.2, optics=start,
                       detector_mrad=(50, 150))
    assert result.intensity_scale == pytest.approx(3.2e5, rel=0.01)
    assert result.background == pytest.approx(140.0, abs=2.0)
    assert result.source_size == pytest.approx(0.5, rel=0.03)
    assert "--normalization beam --detector-mrad 50,150" in result.render_options()
    with pytest.raises(ValueError, match="optics"):
        calibrate(counts, imaged, atoms.numbers, 0.2, detector_mrad=(50, 150))


def test_a_multislice_image_in_beam_fractions_has_unit_sensitivity():
    """abTEM's images are fractions of the beam already: the fitted detector sensitivity of
    a random-orientation reference is 1 within the absolute model's accuracy."""
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "validation/references/au55_ico_rand.npz"
    with np.load(path, allow_pickle=False) as z:
        image, pos, num, px = z["image"], z["positions"], z["numbers"], float(z["pixel_size"])
    result = calibrate(image, pos, num, px, detector_mrad=(70, 200),
                       optics=ProbeOptics(voltage_kv=200, convergence_mrad=20, source_size=0.3))
    assert result.intensity_scale == pytest.approx(1.0, abs=0.05)
    assert abs(result.background) < 0.01 * image.max() and result.r_final > 0.99


def test_calibrate_command_fits_a_detector(tmp_path):
    from click.testing import CliRunner

    from xyz2image_gpu.cli import cli

    atoms = icosahedron("Au", 3)
    optics = ProbeOptics(voltage_kv=200, convergence_mrad=20, source_size=0.4)
    image, imaged = _reference(atoms, probe=fit_probe(optics).components, normalization="beam",
                               voltage_kv=200.0, convergence_mrad=20.0)
    np.save(tmp_path / "counts.npy", 2.5e4 * image + 30.0)
    lines = [str(len(atoms)), "as imaged"] + [f"Au {x:.8f} {y:.8f} {w:.8f}" for x, y, w in imaged]
    (tmp_path / "au.xyz").write_text("\n".join(lines) + "\n")
    args = ["calibrate", str(tmp_path / "counts.npy"), str(tmp_path / "au.xyz"),
            "--pixel-size", "0.2", "--detector-mrad", "70,200"]
    refused = CliRunner().invoke(cli, args)
    assert refused.exit_code == 2 and "needs the probe's optics" in refused.output
    result = CliRunner().invoke(cli, [*args, "--probe-kv", "200", "--probe-mrad", "20"])
    assert result.exit_code == 0, result.output
    # inverted contrast cannot be a detector's sensitivity; a frame past the end is refused
    np.save(tmp_path / "inverted.npy", -2.5e4 * image)
    inverted = CliRunner().invoke(cli, ["calibrate", str(tmp_path / "inverted.npy"),
                                        *args[2:], "--probe-kv", "200"])
    assert inverted.exit_code == 1 and "negative intensity scale" in inverted.output
    past = CliRunner().invoke(cli, [*args, "--probe-kv", "200", "--frame", "3"])
    assert past.exit_code == 2 and "has no frame 3" in past.output
    words = result.output.split()
    sensitivity = float(words[words.index("sensitivity:") + 1])
    # 2 %: calibrate smears the coherent probe's Gaussians by the source, the reference was
    # rendered with Gaussians fitted to the incoherent probe, and the two differ slightly
    # (the fitted source size comes out 0.38 Å, not 0.40)
    assert sensitivity == pytest.approx(2.5e4, rel=0.02)
    assert "--normalization beam --detector-mrad 70,200" in result.output
    # an image of the model without channelling, fitted by that model
    plain, _ = _reference(atoms, probe=fit_probe(optics).components, normalization="beam",
                          voltage_kv=200.0, convergence_mrad=20.0, channelling=False)
    np.save(tmp_path / "plain.npy", 2.5e4 * plain + 30.0)
    off = CliRunner().invoke(cli, ["calibrate", str(tmp_path / "plain.npy"), *args[2:],
                                   "--probe-kv", "200", "--no-channelling"])
    assert off.exit_code == 0, off.output
    words = off.output.split()
    assert float(words[words.index("sensitivity:") + 1]) == pytest.approx(2.5e4, rel=0.02)
    assert off.output.rstrip().endswith("--no-channelling")


@pytest.mark.parametrize("fill", [np.nan, 0.0])
def test_blank_or_nan_reference_is_an_error(fill):
    """A NaN or blank reference exited 0 with r = 0 and '--intensity-scale nan' (or 0), values
    render refuses."""
    image = np.full((32, 32), fill)
    with pytest.raises(ValueError, match="NaN or infinite|blank"):
        calibrate(image, np.zeros((1, 3)), [79], 0.4)


def test_calibrate_command_fits_a_detector_without_channelling(tmp_path):
    """An image rendered with --no-channelling: calibrate --no-channelling recovers the
    sensitivity and background applied to it (the default model, with the fitted channelling,
    does not: the column correction raises its columns by tens of per cent)."""
    from click.testing import CliRunner

    from xyz2image_gpu.cli import cli

    atoms = icosahedron("Au", 3)
    optics = ProbeOptics(voltage_kv=200, convergence_mrad=20, source_size=0.4)
    image, imaged = _reference(atoms, probe=fit_probe(optics).components, normalization="beam",
                               voltage_kv=200.0, convergence_mrad=20.0, channelling=False)
    np.save(tmp_path / "counts.npy", 4e3 * image + 50.0)
    lines = [str(len(atoms)), "as imaged"] + [f"Au {x:.8f} {y:.8f} {w:.8f}" for x, y, w in imaged]
    (tmp_path / "au.xyz").write_text("\n".join(lines) + "\n")
    args = ["calibrate", str(tmp_path / "counts.npy"), str(tmp_path / "au.xyz"),
            "--pixel-size", "0.2", "--probe-kv", "200"]

    def sensitivity(*extra):
        result = CliRunner().invoke(cli, [*args, "--detector-mrad", "70,200", *extra])
        assert result.exit_code == 0, result.output
        words = result.output.split()
        return float(words[words.index("sensitivity:") + 1]), result.output

    off, output = sensitivity("--no-channelling")
    assert off == pytest.approx(4e3, rel=0.02)
    assert "--detector-mrad 70,200 --no-channelling" in output
    on, output = sensitivity()
    assert abs(on / 4e3 - 1) > 0.05 and "--no-channelling" not in output
    relative = CliRunner().invoke(cli, [*args, "--no-channelling"])
    assert relative.exit_code == 2
    assert "--no-channelling applies with --detector-mrad" in relative.output


def test_calibrate_command_names_the_image_it_cannot_use(tmp_path):
    from click.testing import CliRunner

    from xyz2image_gpu.cli import cli

    (tmp_path / "au.xyz").write_text("2\nas imaged\nAu 0 0 0\nAu 2.5 0 0\n")
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object))
    np.save(tmp_path / "stack.npy", np.ones((3, 16, 16)))
    (tmp_path / "text.tif").write_text("not a tiff\n")
    np.save(tmp_path / "ok.npy", np.random.default_rng(0).random((16, 16)))
    for name, message in (("objects.npy", "cannot be read as a .npy image"),
                          ("stack.npy", "the reference must be one 2-D image, got shape (3, 16"),
                          ("text.tif", "cannot be read as a .tif image")):
        result = CliRunner().invoke(cli, ["calibrate", str(tmp_path / name),
                                          str(tmp_path / "au.xyz"), "--pixel-size", "0.2"])
        assert result.exit_code == 1 and f"{name}: {message}" in result.output, result.output
    bright = CliRunner().invoke(cli, ["calibrate", str(tmp_path / "ok.npy"),
                                      str(tmp_path / "au.xyz"), "--pixel-size", "0.2",
                                      "--probe-kv", "200", "--detector-mrad", "5,10"])
    assert bright.exit_code == 2 and "'--detector-mrad'" in bright.output
    assert "(--probe-mrad 20)" in bright.output


def test_calibrate_command_warns_about_a_meaningless_fit(tmp_path):
    from click.testing import CliRunner

    from xyz2image_gpu.cli import cli

    atoms = icosahedron("Au", 3)
    _, imaged = _reference(atoms)
    noise = np.random.default_rng(3).random((80, 80))  # no atoms in it at all
    np.save(tmp_path / "noise.npy", noise)
    lines = [str(len(atoms)), "as imaged"] + [f"Au {x:.8f} {y:.8f} {w:.8f}" for x, y, w in imaged]
    (tmp_path / "au.xyz").write_text("\n".join(lines) + "\n")
    result = CliRunner().invoke(cli, ["calibrate", str(tmp_path / "noise.npy"),
                                      str(tmp_path / "au.xyz"), "--pixel-size", "0.2"])
    assert result.exit_code == 0 and "warning: the best model correlates with noise.npy" \
        in result.output
