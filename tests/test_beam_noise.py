"""Shot noise in absolute units (``normalization="beam"``): each probe position receives
``N = dose * pixel²`` electrons, the detector counts ``Poisson(N f)`` of them (``f`` the
pixel's beam fraction) and the image holds ``count / N``, whatever the image's brightest
pixel. Checked against the analytic Poisson law (and SciPy's pmf), and the same bytes from
the NumPy fallback, the compiled CPU kernel and the GPU's ``random.cu`` (compiled for the CPU
through :mod:`cuda_emulation`, launched through the CuPy stand-in)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from cuda_emulation import c_compiler
from fake_cupy import FakeCupy
from scipy import stats
from test_draws import ELECTRONS, FRAME, KEYS, ROTATION, _images

from xyz2image_gpu import Renderer, RenderSettings, as_structure
from xyz2image_gpu.backend import Backend
from xyz2image_gpu.cli import cli
from xyz2image_gpu.physics import augment
from xyz2image_gpu.pipeline import kernels
from xyz2image_gpu.pipeline.kernels import device
from xyz2image_gpu.structures.examples import bundled_examples

BEAM = {"normalization": "beam", "voltage_kv": 200.0, "convergence_mrad": 20.0}
compiled = pytest.mark.skipif(not kernels.compiled_kernel_available("noise_absolute"),
                              reason="the compiled CPU kernel is not built (or too old)")
emulated = pytest.mark.skipif(c_compiler() is None,
                              reason="no C compiler to build the kernels' CPU emulation")


def _levels() -> tuple[np.ndarray, np.ndarray]:
    """Images (B, 64, 64) of four beam fractions in bands of 16 rows (Poisson means N f
    from 0.3 to 600: inversion and PTRS), and the fractions."""
    f = np.array([3e-4, 4e-3, 0.05, 0.3])
    images = np.repeat(f, 16)[None, :, None] * np.ones((6, 64, 64))
    return images.astype(np.float32), f.astype(np.float32).astype(np.float64)


@pytest.mark.parametrize("path", ["compiled", "numpy"])
def test_beam_shot_noise_has_mean_f_and_variance_f_over_n(path, monkeypatch):
    """Mean f and variance f/N per level (tolerances from the Poisson moments: 4 standard
    errors), whole electrons, and the counts' histogram against SciPy's Poisson pmf. The
    per-peak rule would give variance f·peak/N, 3.3x less here (peak 0.3)."""
    if path == "compiled" and not kernels.compiled_kernel_available("noise_absolute"):
        pytest.skip("the compiled CPU kernel is not built")
    if path == "numpy":
        monkeypatch.setenv(kernels.NO_EXTENSION_ENV, "1")
    images, f = _levels()
    n_e = 2000.0
    keys = [augment.image_key(3, "levels", 0, 0, r) for r in range(len(images))]
    noisy = augment.add_noise(images, keys, electrons_per_pixel=np.full(len(images), n_e),
                              read_noise=0.0, absolute=True).astype(np.float64)
    counts = noisy * n_e
    np.testing.assert_allclose(counts, np.rint(counts), atol=1e-3 * counts.max())
    for k, fk in enumerate(f):
        band = noisy[:, 16 * k:16 * (k + 1)].ravel()
        n = band.size
        lam = n_e * fk
        var = fk / n_e  # Poisson(lam) / N: variance lam / N²
        assert abs(band.mean() - fk) < 4 * np.sqrt(var / n), (fk, band.mean())
        # var of the sample variance: (mu4 - sigma⁴) / n, mu4 = lam + 3 lam² (in counts)
        sd_var = np.sqrt((lam + 2 * lam**2) / n) / n_e**2
        assert abs(band.var() - var) < 4 * sd_var, (fk, band.var(), var)
        if lam < 50:  # the whole distribution: chi-square against SciPy's pmf
            c = np.rint(band * n_e).astype(int)
            top = int(stats.poisson.ppf(0.999, lam))
            observed = np.bincount(np.minimum(c, top), minlength=top + 1)
            expected = stats.poisson.pmf(np.arange(top + 1), lam) * n
            expected[-1] += stats.poisson.sf(top, lam) * n
            keep = expected > 5
            chi2 = (((observed[keep] - expected[keep]) ** 2) / expected[keep]).sum()
            assert stats.chi2.sf(chi2, keep.sum() - 1) > 1e-4, (lam, observed, expected)


@pytest.mark.parametrize("absolute", [True, False])
def test_a_brighter_peak_leaves_the_other_pixels_noise_alone(absolute):
    """Absolute: doubling an image's brightest pixel changes no other pixel's noisy value
    (the same draws, the same means); the per-peak rule of the relative units changes
    them all. And across images of peaks 0.3 and 0.6, one level keeps variance f/N."""
    images, f = _levels()
    brighter = images.copy()
    brighter[:, 0, 0] = 2 * images.max()
    keys = [augment.image_key(5, "peak", 0, 0, r) for r in range(len(images))]
    kw = {"electrons_per_pixel": np.full(len(images), 500.0), "read_noise": 0.0,
          "absolute": absolute}
    a = augment.add_noise(images, keys, **kw)
    b = augment.add_noise(brighter, keys, **kw)
    rest = np.ones(images.shape[1:], dtype=bool)
    rest[0, 0] = False
    if absolute:
        np.testing.assert_array_equal(a[:, rest], b[:, rest])
        band = (slice(None), slice(32, 48))  # f = 0.05
        for img in (a, b):
            x = img[band].astype(np.float64).ravel()
            lam = 500.0 * f[2]
            var = f[2] / 500.0
            assert abs(x.var() - var) < 4 * np.sqrt((lam + 2 * lam**2) / x.size) / 500.0**2
    else:
        assert not np.array_equal(a[:, rest], b[:, rest])


def _fake() -> tuple[FakeCupy, Backend]:
    fake = FakeCupy()
    return fake, Backend("cupy", fake, "NumPy standing in for CuPy")


@compiled
@emulated
@pytest.mark.parametrize("read_noise", [0.0, 0.02])
def test_absolute_noise_is_the_same_bytes_on_every_path(read_noise, monkeypatch):
    """NumPy fallback, compiled kernel and random.cu (emulated, quantised in the same launch
    as the compiled quantisation) draw the same absolute noise; one flag, not another draw:
    with N · peak electrons the per-peak rule gives the same counts up to rounding."""
    images = _images()
    want = augment.noise_batch(np, images, KEYS[FRAME], ROTATION, electrons_per_pixel=ELECTRONS,
                               read_noise=read_noise, absolute=True)
    got = kernels.noise_compiled(images, FRAME, ROTATION, KEYS, electrons_per_pixel=ELECTRONS,
                                 read_noise=read_noise, absolute=True)
    np.testing.assert_array_equal(got, want)
    relative = kernels.noise_compiled(images, FRAME, ROTATION, KEYS,
                                      electrons_per_pixel=ELECTRONS, read_noise=read_noise)
    assert not np.array_equal(got, relative)
    if read_noise == 0:  # whole electrons of N per pixel, not of N per peak
        counts = got.astype(np.float64) * ELECTRONS[:, None, None]
        np.testing.assert_allclose(counts, np.rint(counts), rtol=1e-6, atol=1e-3)
    fake, be = _fake()
    # the array code on the device (the GPU's ArrayKernel): the same numbers
    on_device = augment.noise_batch(fake, fake.asarray(images), fake.asarray(KEYS[FRAME]),
                                    fake.asarray(ROTATION), read_noise=read_noise,
                                    electrons_per_pixel=fake.asarray(ELECTRONS), absolute=True)
    np.testing.assert_array_equal(fake.asnumpy(on_device), want)
    xs = [fake.asarray(a) for a in (FRAME, ROTATION, KEYS)]
    for normalization, bitrate in (("float", 8), ("fixed", 8), ("fixed", 16)):
        stored = device.noise_device(be, fake.asarray(images), *xs,
                                     electrons_per_pixel=fake.asarray(ELECTRONS),
                                     read_noise=read_noise, normalization=normalization,
                                     bitrate=bitrate, intensity_scale=300.0, absolute=True)
        host = want if normalization == "float" else kernels.quantise_compiled(
            want, normalization=normalization, bitrate=bitrate, intensity_scale=300.0)
        np.testing.assert_array_equal(fake.asnumpy(stored), host)
    keys = [augment.image_key(4, "x", 0, 1, r) for r in range(len(images))]
    fast = augment.add_noise(images, keys, electrons_per_pixel=ELECTRONS, read_noise=read_noise,
                             absolute=True)
    monkeypatch.setenv(kernels.NO_EXTENSION_ENV, "1")
    slow = augment.add_noise(images, keys, electrons_per_pixel=ELECTRONS, read_noise=read_noise,
                             absolute=True)
    np.testing.assert_array_equal(fast, slow)


def _icosahedron():
    from reference import icosahedron

    return as_structure(icosahedron("Au", 3))


@compiled
@emulated
@pytest.mark.parametrize("extra", [{}, {"intensity_scale": 2e4, "bitrate": 16},
                                   {"intensity_scale": 500.0, "bitrate": 8},
                                   {"phonon_jitter": True, "read_noise": 0.01}])
def test_the_engines_agree_in_beam_units_with_noise(extra):
    """The compiled CPU kernel with its own draws, with the NumPy fallback's draws, and the
    GPU path on the stand-in (splat.cu, random.cu emulated): the same bytes in beam units
    with a dose, float32, 8 and 16 bit with an intensity scale, noise alone (drawn from the
    clean image) and with phonon jitter (drawn in place). Without the channelling correction:
    its pair sums (compiled and NumPy kernels) round differently in the last bit."""
    st = _icosahedron()
    settings = RenderSettings(edgesize=32, dose=1e4, **BEAM, channelling=False, **extra)
    outputs = ["gaussian_2d"]
    with Renderer(settings, outputs, "cpu") as r:
        assert r.kernel._compiled_draws and r.kernel._compiled_absolute
        want = r.render(st, 4, seed=3)
        r.kernel._compiled_draws = False
        numpy_draws = r.render(st, 4, seed=3)
    fake, be = _fake()
    with Renderer(settings, outputs, be) as gpu:
        assert type(gpu.kernel).__name__ == "FusedKernel"
        on_gpu = gpu.render(st, 4, seed=3, batch_size=3)
    assert "RawKernel xyz2image_noise" in fake.op_log
    assert want["gaussian_2d"].dtype == settings.image_dtype
    for got in (numpy_draws, on_gpu):
        assert set(got) == set(want)
        for key in want:
            np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    assert not np.array_equal(want["gaussian_2d"], want["gaussian_2d_clean"])


@compiled
def test_an_old_build_without_the_flag_falls_back_to_the_same_bytes(monkeypatch):
    """A compiled kernel built before absolute noise (no ``noise_absolute``): beam mode's
    noise comes from the NumPy draws, the same bytes; the relative modes keep the kernel."""
    st = _icosahedron()
    settings = RenderSettings(edgesize=24, dose=1e4, **BEAM)
    with Renderer(settings, ["gaussian_2d"], "cpu") as r:
        want = r.render(st, 3, seed=1)
    monkeypatch.delattr(kernels.compiled._splat, "noise_absolute")
    assert not kernels.compiled_kernel_available("noise_absolute")
    with Renderer(settings, ["gaussian_2d"], "cpu") as r:
        assert r.kernel._compiled_draws and not r.kernel._compiled_absolute
        got = r.render(st, 3, seed=1)
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    with pytest.raises(RuntimeError, match="too old for absolute"):
        kernels.noise_compiled(np.ones((1, 4, 4), np.float32), FRAME[:1], ROTATION[:1], KEYS,
                               electrons_per_pixel=np.ones(1), read_noise=0.0, absolute=True)


def _residual_check(noisy: np.ndarray, clean: np.ndarray, per_pixel: np.ndarray) -> None:
    """noisy - clean: mean 0 with variance f/N per pixel; the sum and the sum of squares
    within 4 standard deviations of their Poisson expectations."""
    f = clean.astype(np.float64)
    n_e = per_pixel[:, None, None]
    r = noisy.astype(np.float64) - f
    var = f / n_e
    assert abs(r.sum()) < 4 * np.sqrt(var.sum())
    lam = f * n_e
    sd_sq = np.sqrt(((lam + 2 * lam**2) / n_e**4).sum())
    assert abs((r**2).sum() - var.sum()) < 4 * sd_sq, ((r**2).sum(), var.sum())


def test_the_engine_noise_in_beam_units_is_poisson_per_probe_position(device):
    st = _icosahedron()
    settings = RenderSettings(edgesize=64, dose=2e4, **BEAM)
    out = Renderer(settings, ["gaussian_2d"], device).render(st, 6, seed=8)
    per_pixel = out["electrons_per_pixel"]
    np.testing.assert_allclose(per_pixel, 2e4 * out["voxel_size"] ** 2)
    _residual_check(out["gaussian_2d"], out["gaussian_2d_clean"], per_pixel)


def _stack(folder):
    with np.load(next(folder.rglob("0000.npz"))) as z:
        return {k: z[k] for k in z.files}


def test_render_command_with_a_dose_in_beam_units(tmp_path):
    """The CLI in beam units with a dose: electrons_per_pixel = dose · pixel², the noisy
    image's mean the clean one's within its Poisson error, the clean image's integral the
    cross-sections'; 16 and 8 bit with --intensity-scale store rint(noisy · scale), the same
    draws; the manifest records the absolute meaning, and a manifest without it (an earlier
    version's, per-peak) does not resume."""
    from xyz2image_gpu.physics.cross_section import phase_object_cross_section

    dose, px = 5e3, 0.2
    base = ["render", str(bundled_examples()[0]), "--n-rotation", "3", "--normalization",
            "beam", "--probe-kv", "200", "--probe-mrad", "20", "--dose", str(dose),
            "--framing", "fixed", "--pixel-size", str(px), "--edgesize", "96", "--quiet",
            "--device", "cpu", "--output-types", "gaussian_2d,coordinates_3d", "--seed", "2",
            "--no-channelling"]  # the clean mean is then n_atoms σ / area
    runs = {}
    for name, extra in (("float", []), ("16", ["--intensity-scale", "2e4", "--bitrate", "16"]),
                        ("8", ["--intensity-scale", "200", "--bitrate", "8"])):
        out = tmp_path / name
        result = CliRunner().invoke(cli, [*base, "-o", str(out), *extra],
                                    catch_exceptions=False)
        assert result.exit_code == 0, result.output
        runs[name] = _stack(out)
    z = runs["float"]
    assert z["gaussian_2d"].dtype == np.float32
    np.testing.assert_allclose(z["electrons_per_pixel"], dose * px**2)
    noisy = z["gaussian_2d"].astype(np.float64)
    clean = z["gaussian_2d_clean"].astype(np.float64)
    p = noisy[0].size
    err = np.sqrt((clean / (dose * px**2)).sum(axis=(1, 2))) / p
    assert np.all(np.abs(noisy.mean(axis=(1, 2)) - clean.mean(axis=(1, 2))) < 4 * err)
    _residual_check(noisy, clean, z["electrons_per_pixel"])
    sigma = phase_object_cross_section("Au", 200.0, 70.0, 200.0, 20.0)
    expected_mean = int(z["n_atoms"][0]) * sigma / (96 * px) ** 2
    np.testing.assert_allclose(clean.mean(axis=(1, 2)), expected_mean, rtol=0.02)
    for name, scale, top in (("16", 2e4, 65535), ("8", 200.0, 255)):
        grey = runs[name]["gaussian_2d"]
        assert grey.dtype == (np.uint16 if name == "16" else np.uint8)
        want = np.clip(np.rint(noisy * scale), 0, top)
        assert np.abs(grey.astype(np.float64) - want).max() <= 1, name
        assert grey.max() < top  # no clipping: the mean carries over
    params = json.loads((tmp_path / "float" / "manifest.json").read_text())
    assert params["parameters"]["shot_noise"] == "per probe position"
    # a manifest of the per-peak meaning (no shot_noise key) is refused on resume
    manifest = tmp_path / "float" / "manifest.json"
    del params["parameters"]["shot_noise"]
    manifest.write_text(json.dumps(params))
    result = CliRunner().invoke(cli, [*base, "-o", str(tmp_path / "float")])
    assert result.exit_code == 1
    assert "other settings" in result.output and "shot_noise" in result.output


def test_only_beam_units_with_a_dose_record_the_shot_noise_meaning():
    from xyz2image_gpu.run import RunConfig, settings_from_parameters

    def params(**settings):
        return RunConfig(inputs=[], output_folder=".",
                         settings=RenderSettings(**settings)).parameters()

    assert "shot_noise" not in params(dose=100.0)  # relative: as before, old runs resume
    assert "shot_noise" not in params(**BEAM)
    beam = params(dose=100.0, **BEAM)
    assert beam["shot_noise"] == "per probe position"
    assert settings_from_parameters(beam) == RenderSettings(dose=100.0, **BEAM)
