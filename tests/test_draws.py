"""The augmentations' draws from one C source (``kernels/philox.h``) on every device: the
compiled CPU kernel (``_splat.c``), the GPU's ``random.cu`` (compiled here by the C compiler
and launched block by block, :mod:`cuda_emulation`, through the CuPy stand-in) and the
array code of ``physics/random.py`` (the fallback, written independently in NumPy) draw the
same numbers: Philox words against Random123's known answers, float32 displacements and
scan shifts to the bit, Poisson counts exactly, quantised images to the byte. Seeds fixed:
the tests are deterministic."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
from cuda_emulation import EmulatedKernel, c_compiler
from fake_cupy import FakeCupy
from test_random import KAT

from xyz2image_gpu.backend import Backend
from xyz2image_gpu.physics import augment
from xyz2image_gpu.pipeline import kernels
from xyz2image_gpu.pipeline.kernels import device
from xyz2image_gpu.pipeline.rotations import rotation_key

pytestmark = pytest.mark.skipif(c_compiler() is None,
                                reason="no C compiler to build the kernels' CPU emulation")
compiled = pytest.mark.skipif(not kernels.compiled_kernel_available("noise"),
                              reason="the compiled CPU kernel is not built")

#: Three frames' keys, images spread over them, rotation indices out of order.
KEYS = np.array([rotation_key(7, name, 0, 1) for name in ("a", "b", "c")], dtype=np.uint64)
FRAME = np.array([0, 2, 1, 2, 0, 1, 1])
ROTATION = np.array([0, 5, 3, 9, 2, 1000, 70000])


def _fake() -> tuple[FakeCupy, Backend]:
    fake = FakeCupy()
    return fake, Backend("cupy", fake, "NumPy standing in for CuPy")


def test_the_c_philox_gives_random123s_known_answers():
    code = device.kernel_source("philox.h") + """
XYZ_KERNEL philox_kat(const unsigned int *c, const unsigned int *k, unsigned int *out, int n)
{
    XYZ_PER_THREAD
    {
        for (int i = threadIdx.x; i < n; i += blockDim.x) {
            xyz_block w = xyz_philox(c[4 * i], c[4 * i + 1], c[4 * i + 2], c[4 * i + 3],
                                     k[2 * i], k[2 * i + 1]);
            for (int q = 0; q < 4; q++)
                out[4 * i + q] = w.w[q];
        }
    }
}
"""
    kernel = EmulatedKernel(code, "philox_kat")
    c = np.array([v[0] for v in KAT], dtype=np.uint32)
    k = np.array([v[1] for v in KAT], dtype=np.uint32)
    out = np.zeros((len(KAT), 4), dtype=np.uint32)
    kernel((1,), (2,), (c, k, out, np.int32(len(KAT))))
    np.testing.assert_array_equal(out, np.array([v[2] for v in KAT], dtype=np.uint32))


def _array_phonon(rms):
    return augment.phonon_batch(np, KEYS[FRAME], ROTATION, rms[FRAME])


@compiled
def test_phonon_displacements_agree_on_every_device():
    rms = np.random.default_rng(0).uniform(0.05, 0.2, size=(3, 11))
    rms[1, 7:] = 0.0  # padding atoms stay put
    want = _array_phonon(rms)
    got = kernels.phonon_compiled(FRAME, ROTATION, KEYS, rms)
    assert got.dtype == np.float32 and got.shape == (7, 11, 3)
    np.testing.assert_array_equal(got, want)
    assert not got[FRAME == 1, 7:].any() and got[FRAME == 1, :7].all()
    fake, be = _fake()
    dev = device.phonon_device(be, *(fake.asarray(a) for a in (FRAME, ROTATION, KEYS, rms)))
    np.testing.assert_array_equal(fake.asnumpy(dev), want)
    # the public one-image reference: same numbers
    key = (int(KEYS[FRAME[3]]), int(ROTATION[3]))
    np.testing.assert_array_equal(augment.phonon_displacements(key, rms[FRAME[3]]),
                                  want[3].astype(np.float64))


@compiled
@pytest.mark.parametrize("edgesize", [1, 6, 33])
def test_scan_offsets_agree_on_every_device(edgesize):
    want = augment.scan_batch(np, KEYS[FRAME], ROTATION, edgesize, 0.3, 2.0)
    got = kernels.scan_compiled(FRAME, ROTATION, KEYS, edgesize, 0.3, 2.0)
    assert got.dtype == np.float32 and got.shape == (7, edgesize, 2)
    np.testing.assert_array_equal(got, want)
    fake, be = _fake()
    dev = device.scan_device(be, *(fake.asarray(a) for a in (FRAME, ROTATION, KEYS)),
                             edgesize, 0.3, 2.0)
    np.testing.assert_array_equal(fake.asnumpy(dev), want)


def _images(shape=(7, 37, 29)):
    """Float32 images whose pixels, at the electrons below, expect 0 to ~3e5 counts: both
    Poisson methods (inversion below 10, PTRS above) and empty pixels."""
    rng = np.random.default_rng(1)
    images = (rng.uniform(0.0, 1.0, size=shape) ** 4).astype(np.float32)
    images[:, ::5] = 0.0
    images[2] = 0.0  # a blank image: no shot noise, read noise of width 0
    return images


ELECTRONS = np.array([3e5, 40.0, 1e3, 5.0, 2e4, 1e6, 0.5])


@compiled
@pytest.mark.parametrize("electrons, read_noise", [(ELECTRONS, 0.0), (None, 0.05),
                                                   (ELECTRONS, 0.02)])
def test_noise_agrees_on_every_device(electrons, read_noise):
    images = _images()
    want = augment.noise_batch(np, images, KEYS[FRAME], ROTATION,
                               electrons_per_pixel=electrons, read_noise=read_noise)
    got = kernels.noise_compiled(images, FRAME, ROTATION, KEYS, electrons_per_pixel=electrons,
                                 read_noise=read_noise)
    np.testing.assert_array_equal(got, want)
    if electrons is not None and read_noise == 0:  # whole electrons, exactly
        peak = images.reshape(7, -1).max(axis=1).astype(np.float64)
        lit = peak > 0
        counts = got[lit].astype(np.float64) * (electrons[lit] / peak[lit])[:, None, None]
        np.testing.assert_allclose(counts, np.rint(counts), rtol=1e-6, atol=1e-3)
        assert counts.max() > 1e4 and (counts[counts > 0] < 10).any()
    fake, be = _fake()
    xs = [fake.asarray(a) for a in (FRAME, ROTATION, KEYS)]
    dev = device.noise_device(be, fake.asarray(images), *xs,
                              electrons_per_pixel=None if electrons is None
                              else fake.asarray(electrons),
                              read_noise=read_noise, normalization="float", bitrate=8)
    assert fake.syncs == 0  # drawn and applied with no host wait
    np.testing.assert_array_equal(fake.asnumpy(dev), want)
    # quantised in the same launch: the compiled quantisation's bytes
    for normalization, bitrate in (("image", 8), ("image", 16), ("fixed", 16)):
        stored = device.noise_device(
            be, fake.asarray(images), *xs,
            electrons_per_pixel=None if electrons is None else fake.asarray(electrons),
            read_noise=read_noise, normalization=normalization, bitrate=bitrate,
            intensity_scale=300.0)
        host = kernels.quantise_compiled(want, normalization=normalization, bitrate=bitrate,
                                         intensity_scale=300.0)
        np.testing.assert_array_equal(fake.asnumpy(stored), host)


@compiled
def test_noise_does_not_depend_on_the_batch():
    images = _images()
    whole = kernels.noise_compiled(images, FRAME, ROTATION, KEYS,
                                   electrons_per_pixel=ELECTRONS, read_noise=0.01)
    part = kernels.noise_compiled(images[3:5], FRAME[3:5], ROTATION[3:5], KEYS,
                                  electrons_per_pixel=ELECTRONS[3:5], read_noise=0.01)
    np.testing.assert_array_equal(part, whole[3:5])
    # in place, as the engine applies it
    again = images.copy()
    kernels.noise_compiled(again, FRAME, ROTATION, KEYS, electrons_per_pixel=ELECTRONS,
                           read_noise=0.01, out=again)
    np.testing.assert_array_equal(again, whole)


@compiled
def test_the_compiled_draws_refuse_inconsistent_inputs():
    images = _images()
    with pytest.raises(ValueError, match="inconsistent"):
        kernels.noise_compiled(images, FRAME, ROTATION, KEYS[:2], electrons_per_pixel=None,
                               read_noise=0.1)  # frame 2 has no key
    with pytest.raises(ValueError, match="inconsistent"):
        kernels.phonon_compiled(FRAME[:3], ROTATION, KEYS, np.ones((3, 4)))
    with pytest.raises(ValueError, match="C-contiguous float32"):
        kernels.noise_compiled(images, FRAME, ROTATION, KEYS, electrons_per_pixel=None,
                               read_noise=0.1, out=np.empty(images.shape[::-1], np.float32).T)


def test_the_sources_have_no_host_includes():
    """NVRTC compiles without the host's headers: the only includes are this folder's
    headers, inlined by kernel_source."""
    for name in ("random.cu", "splat.cu", "legacy.cu"):
        text = device.kernel_source(name)
        assert "#include" not in text, name


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="no CUDA toolkit (nvcc) here")
@pytest.mark.parametrize("kernel_names", [(device.NOISE, device.PHONON, device.SCAN),
                                          (device.LEGACY,)])
def test_the_kernels_compile_for_the_device(tmp_path, kernel_names):
    """Where a CUDA toolkit is installed, nvcc compiles random.cu (philox.h inlined, as NVRTC
    gets it) and legacy.cu for sm_90 with the options given to NVRTC, without warnings."""
    filename = kernel_names[0][0]
    src = tmp_path / filename
    src.write_text(device.kernel_source(filename))
    cmd = ["nvcc", "-arch=sm_90", *device.NVRTC_OPTIONS, "-Werror", "all-warnings",
           "--ptx", str(src), "-o", str(tmp_path / "kernel.ptx")]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=300)
    assert done.returncode == 0, done.stderr
    ptx = (tmp_path / "kernel.ptx").read_text()
    for _, name in kernel_names:
        assert f".entry {name}(" in ptx, name


@compiled
def test_the_engine_draws_the_same_without_the_compiled_draws():
    """The compiled kernel's images with the NumPy fallback's draws (an extension built
    before the draws existed) against its own draws: every output the same bytes, every
    augmentation on, 16 bit (where one electron more would show)."""
    from reference import icosahedron

    from xyz2image_gpu import Renderer, RenderSettings, as_structure

    st = as_structure(icosahedron("Au", 3))
    settings = RenderSettings(edgesize=40, bitrate=16, phonon_jitter=True, dose=3e4,
                              read_noise=0.01, scan_jitter=0.2, drift=1.0)
    with Renderer(settings, ["gaussian_2d", "coordinates_3d"], "cpu") as r:
        assert r.uses_compiled_kernel and r.kernel._compiled_draws
        want = r.render(st, 6, seed=3)
        r.kernel._compiled_draws = False
        got = r.render(st, 6, seed=3, batch_size=4)
    assert set(got) == set(want)
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)


@compiled
def test_the_gpu_path_gives_the_cpu_kernels_bytes_with_every_augmentation():
    """The GPU's whole augmented path on the stand-in (splat.cu with its scan offsets,
    random.cu's draws, noise and quantisation, compiled for the CPU) against the compiled CPU
    kernel: the same bytes, at 16 bit where one electron more would show, and no host wait
    in the loop but the hand-over."""
    from reference import icosahedron

    from xyz2image_gpu import Renderer, RenderSettings, as_structure

    st = as_structure(icosahedron("Au", 3))
    settings = RenderSettings(edgesize=40, bitrate=16, phonon_jitter=True, dose=3e4,
                              read_noise=0.01, scan_jitter=0.2, drift=1.0)
    outputs = ["gaussian_2d", "coordinates_3d"]
    with Renderer(settings, outputs, "cpu") as r:
        want = r.render(st, 6, seed=3)
    fake, be = _fake()
    with Renderer(settings, outputs, be) as gpu:
        assert type(gpu.kernel).__name__ == "FusedKernel"
        got = gpu.render(st, 6, seed=3, batch_size=4)
    assert set(got) == set(want)
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    launched = {name for name in fake.op_log if name.startswith("RawKernel")}
    assert launched == {f"RawKernel {k}" for k in ("xyz2image_gaussian", "xyz2image_noise",
                                                    "xyz2image_phonon", "xyz2image_scan")}


@pytest.mark.parametrize("engine", ["compiled", "numpy", "gpu"])
@pytest.mark.parametrize("normalization", ["float", "image"])
def test_noise_leaves_the_clean_image_alone(engine, normalization):
    """The noise is applied in place only to an image rendered for the augmentations: with
    noise alone the image seen is the clean one, which float32 output stores as it is."""
    from reference import icosahedron

    from xyz2image_gpu import Renderer, RenderSettings, as_structure

    if engine == "compiled" and not kernels.compiled_kernel_available("noise"):
        pytest.skip("the compiled CPU kernel is not built")
    st = as_structure(icosahedron("Au", 3))
    base = {"edgesize": 24, "normalization": normalization}
    device_arg = _fake()[1] if engine == "gpu" else "cpu"
    kw = {} if engine == "gpu" else {"cpu_kernel": engine}
    with Renderer(RenderSettings(**base), ["gaussian_2d"], device_arg, **kw) as r:
        plain = r.render(st, 3, seed=2)
    with Renderer(RenderSettings(**base, dose=50.0, read_noise=0.05), ["gaussian_2d"],
                  device_arg, **kw) as r:
        noisy = r.render(st, 3, seed=2)
    np.testing.assert_array_equal(noisy["gaussian_2d_clean"], plain["gaussian_2d"])
    assert np.abs(noisy["gaussian_2d"].astype(float) - plain["gaussian_2d"]).max() > 0


@compiled
def test_add_noise_is_the_same_with_and_without_the_compiled_kernel(monkeypatch):
    images = _images().astype(np.float64) * 3.0  # float64 in: rounded to float32 either way
    keys = [augment.image_key(4, "x", 0, 1, r) for r in range(len(images))]
    fast = augment.add_noise(images, keys, electrons_per_pixel=ELECTRONS, read_noise=0.02)
    monkeypatch.setenv(kernels.NO_EXTENSION_ENV, "1")
    assert not kernels.compiled_kernel_available("noise")
    slow = augment.add_noise(images, keys, electrons_per_pixel=ELECTRONS, read_noise=0.02)
    np.testing.assert_array_equal(fast, slow)


@pytest.mark.gpu
@compiled
def test_the_device_draws_what_the_cpu_draws():
    """On a GPU (NVRTC's build of random.cu): the same draws as the compiled CPU kernel from
    the same inputs. CUDA's exp, log, cos and sin may differ from the C library's in a
    double's last bit, which changes a stored float32 or a count only for a draw that close
    to a step: at most 1e-5 of the values may differ (none is expected)."""
    from conftest import gpu_skip_reason

    from xyz2image_gpu.backend import get_backend

    reason = gpu_skip_reason()
    if reason:
        pytest.skip(reason)
    be = get_backend("gpu")
    xp = be.xp
    rms = np.random.default_rng(0).uniform(0.05, 0.2, size=(3, 11))
    streams = [xp.asarray(a) for a in (FRAME, ROTATION, KEYS)]
    images = _images()
    got = {
        "phonon": device.phonon_device(be, *streams, xp.asarray(rms)),
        "scan": device.scan_device(be, *streams, 33, 0.3, 2.0),
        "noise": device.noise_device(be, xp.asarray(images), *streams,
                                     electrons_per_pixel=xp.asarray(ELECTRONS), read_noise=0.02,
                                     normalization="float", bitrate=8),
        "noise_absolute": device.noise_device(be, xp.asarray(images), *streams,
                                              electrons_per_pixel=xp.asarray(ELECTRONS),
                                              read_noise=0.02, normalization="float",
                                              bitrate=8, absolute=True),
    }
    want = {
        "phonon": kernels.phonon_compiled(FRAME, ROTATION, KEYS, rms),
        "scan": kernels.scan_compiled(FRAME, ROTATION, KEYS, 33, 0.3, 2.0),
        "noise": kernels.noise_compiled(images, FRAME, ROTATION, KEYS,
                                        electrons_per_pixel=ELECTRONS, read_noise=0.02),
        "noise_absolute": kernels.noise_compiled(images, FRAME, ROTATION, KEYS,
                                                 electrons_per_pixel=ELECTRONS, read_noise=0.02,
                                                 absolute=True),
    }
    for key, value in want.items():
        dev = be.to_host(got[key])
        assert dev.dtype == value.dtype and dev.shape == value.shape, key
        assert np.count_nonzero(dev != value) <= 1e-5 * value.size, key
        np.testing.assert_allclose(dev, value, rtol=1e-6, atol=1e-6, err_msg=key)
