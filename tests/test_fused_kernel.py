"""The GPU's fused Gaussian image kernel (``kernels/splat.cu``), its very source compiled by
the C compiler and launched block by block on the CPU (:mod:`cuda_emulation`).

Checked against the NumPy path (``gaussian_2d`` + ``quantise``), an analytic float64 sum and
the compiled CPU kernel, within one grey level (float images: within float rounding), over
edge sizes, atom counts, probe components, padding atoms, normalisations and bit rates; and
for the same bytes whatever the batch split, the threads per block and where the float image
is kept (shared or global memory).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import types
from functools import lru_cache

import numpy as np
import pytest
from cuda_emulation import EmulatedKernel, c_compiler

from xyz2image_gpu.pipeline import kernels
from xyz2image_gpu.pipeline.kernels import device

pytestmark = pytest.mark.skipif(c_compiler() is None,
                                reason="no C compiler to build the kernel's CPU emulation")

MODES = [("image", 8), ("image", 16), ("fixed", 8), ("fixed", 16), ("float", 8)]
SIZES = [(16, 1), (16, 147), (33, 147), (33, 1000), (128, 1), (128, 147), (128, 1000)]


@lru_cache(maxsize=1)
def _kernel() -> EmulatedKernel:
    return EmulatedKernel(device.kernel_source(device.SPLAT[0]), device.SPLAT[1])


class _Launches:
    """Backend.raw_kernel's part, on NumPy: the emulated kernel, launched with ``threads``."""

    def __init__(self, threads: int = device.THREADS) -> None:
        self.threads = threads
        self.calls: list[tuple] = []

    def __call__(self, grid, block, args, shared_mem=0):
        self.calls.append((grid, block, shared_mem))
        _kernel()(grid, (self.threads,), args, shared_mem)


def _backend(launch: _Launches) -> types.SimpleNamespace:
    return types.SimpleNamespace(xp=np, raw_kernel=lambda code, name, options: launch)


@lru_cache(maxsize=16)
def _atoms(e: int, n: int, g: int, b: int = 2, seed: int = 0):
    """``b`` images of ``n`` atoms with ``g`` probe components each, plus 5 padding atoms
    (weight 0) per image: coords (b, (n+5) g, 3) px, weights, sigma (b, (n+5) g)."""
    rng = np.random.default_rng(seed + 1000 * e + n + 7 * g)
    pos = rng.uniform(-3.0, e + 3.0, size=(b, n, 3))  # some atoms outside the image
    z = rng.choice([1.0, 0.35, 0.8], size=(b, n))
    comp_amp = np.array([1.0, 0.25, 0.04])[:g]
    comp_sig = np.array([1.0, 1.8, 4.5])[:g]
    base = rng.uniform(0.9, 2.6, size=(b, 1))
    coords = np.repeat(pos, g, axis=1)
    weights = (z[:, :, None] * comp_amp).reshape(b, n * g)
    sigma = np.broadcast_to(base[:, :, None] * comp_sig, (b, n, g)).reshape(b, n * g)
    pad = 5 * g
    coords = np.concatenate([coords, np.zeros((b, pad, 3))], axis=1)
    weights = np.concatenate([weights, np.zeros((b, pad))], axis=1)
    sigma = np.concatenate([sigma, np.ones((b, pad))], axis=1)
    return (coords.astype(np.float32), weights.astype(np.float32), sigma.astype(np.float32))


@lru_cache(maxsize=16)
def _analytic(e: int, n: int, g: int) -> np.ndarray:
    """The exact sum of the Gaussians in float64, no window."""
    coords, weights, sigma = (a.astype(np.float64) for a in _atoms(e, n, g))
    grid = np.arange(e, dtype=np.float64)
    gx = np.exp(-((grid[None, None, :] - coords[:, :, 0, None]) ** 2)
                / (2 * sigma[:, :, None] ** 2)) * weights[:, :, None]
    gy = np.exp(-((grid[None, None, :] - coords[:, :, 1, None]) ** 2)
                / (2 * sigma[:, :, None] ** 2))
    return np.matmul(gx.transpose(0, 2, 1), gy)


def _scale(e: int, n: int, g: int, bitrate: int) -> float:
    """A fixed intensity scale that puts the brightest pixel at 90% of the range."""
    return 0.9 * (2**bitrate - 1) / float(_analytic(e, n, g).max())


def _fused(coords, weights, sigma, e, normalization, bitrate, scale=None, *, ndim: int = 2,
           launch: _Launches | None = None, shared_limit: int = 227 * 1024) -> np.ndarray:
    launch = launch or _Launches()
    return device.splat_device(_backend(launch), coords, weights, sigma, e, ndim,
                               normalization=normalization, bitrate=bitrate,
                               intensity_scale=scale, shared_limit=shared_limit)


def _quantise64(images: np.ndarray, normalization: str, bitrate: int, scale) -> np.ndarray:
    top = 2**bitrate - 1
    if normalization == "image":
        peak = images.reshape(len(images), -1).max(axis=1)[:, None, None]
        images = images * (top / peak)
    else:
        images = images * scale
    return np.clip(np.rint(images), 0, top)


@pytest.mark.parametrize(("normalization", "bitrate"), MODES)
@pytest.mark.parametrize("g", [1, 3])
@pytest.mark.parametrize(("e", "n"), SIZES)
def test_the_fused_kernel_matches_numpy_and_the_analytic_sum(e, n, g, normalization, bitrate):
    coords, weights, sigma = _atoms(e, n, g)
    scale = _scale(e, n, g, bitrate) if normalization == "fixed" else None
    got = _fused(coords, weights, sigma, e, normalization, bitrate, scale)
    exact = _analytic(e, n, g)
    numpy_path = kernels.gaussian_2d(np, coords, weights, sigma, e)
    if normalization == "float":
        assert got.dtype == np.float32 and got.shape == exact.shape
        tol = 1e-5 * exact.reshape(len(exact), -1).max(axis=1)[:, None, None]
        assert np.all(np.abs(got - exact) <= tol)
        assert np.all(np.abs(got - numpy_path) <= tol)
        return
    assert got.dtype == (np.uint8 if bitrate == 8 else np.uint16)
    want = kernels.quantise(np, numpy_path, normalization=normalization, bitrate=bitrate,
                            intensity_scale=scale)
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1
    exact_q = _quantise64(exact, normalization, bitrate, scale)
    assert np.abs(got.astype(int) - exact_q.astype(int)).max() <= 1
    assert got.max() == 2**bitrate - 1 if normalization == "image" else got.max() > 0


@pytest.mark.skipif(not kernels.compiled_kernel_available(),
                    reason="the compiled CPU kernel (_splat.c) is not built")
@pytest.mark.parametrize(("normalization", "bitrate"), MODES)
@pytest.mark.parametrize(("e", "n", "g"), [(33, 147, 3), (128, 147, 1), (128, 1000, 3)])
def test_the_fused_kernel_agrees_with_the_compiled_cpu_kernel(e, n, g, normalization, bitrate):
    """The same algorithm as _splat.c (window, cut, float products, order): within one grey
    level, and nearly every pixel the same (the profiles differ by a few double ulps)."""
    coords, weights, sigma = _atoms(e, n, g)
    scale = _scale(e, n, g, bitrate) if normalization == "fixed" else None
    got = _fused(coords, weights, sigma, e, normalization, bitrate, scale)
    want = kernels.splat_gaussian(coords, weights, sigma, e, 2, normalization=normalization,
                                  bitrate=bitrate, intensity_scale=scale)
    if normalization == "float":
        peak = want.reshape(len(want), -1).max(axis=1)[:, None, None]
        assert np.all(np.abs(got - want) <= 1e-6 * peak)
        return
    diff = np.abs(got.astype(int) - want.astype(int))
    assert diff.max() <= 1
    assert (diff == 0).mean() > 0.999


@pytest.mark.parametrize(("e", "n", "g"), [(16, 147, 3), (33, 1000, 1), (128, 147, 1)])
def test_the_bytes_do_not_depend_on_the_batch_split_threads_or_memory(e, n, g):
    """Each image's pixels are summed by one thread over its atoms in input order: one
    launch of the batch, one launch per image, 64 threads a block instead of 256, and the
    float image in global instead of shared memory all give the same bytes."""
    coords, weights, sigma = _atoms(e, n, g, b=5, seed=3)
    for normalization, bitrate in MODES:
        scale = 1e3 if normalization == "fixed" else None

        def render(lo, hi, normalization=normalization, bitrate=bitrate, scale=scale, **kw):
            return _fused(coords[lo:hi], weights[lo:hi], sigma[lo:hi], e, normalization,
                          bitrate, scale, **kw)

        whole = render(0, 5)
        assert np.array_equal(whole, np.concatenate([render(i, i + 1) for i in range(5)]))
        assert np.array_equal(whole, np.concatenate([render(0, 2), render(2, 5)]))
        assert np.array_equal(whole, render(0, 5, launch=_Launches(threads=64)))
        launch = _Launches()
        masks_only = device.STATIC_SHARED_BYTES + device.row_mask_bytes(e)
        assert np.array_equal(whole, render(0, 5, launch=launch, shared_limit=masks_only))
        assert launch.calls[0][2] == device.row_mask_bytes(e)  # the image in scratch


@pytest.mark.parametrize(("normalization", "bitrate"), MODES)
@pytest.mark.parametrize(("e", "n", "g"), [(16, 1, 1), (16, 147, 3), (33, 147, 1), (20, 400, 3)])
def test_the_fused_kernel_in_3d_matches_numpy_and_the_compiled_kernel(e, n, g, normalization,
                                                                      bitrate):
    """gaussian_3d: the float of the double x-y product times the float z profile, as
    _splat.c's 3-D loop; within one grey level of the NumPy path's batched products and of
    the compiled kernel (float images: within float rounding)."""
    coords, weights, sigma = _atoms(e, n, g)
    numpy_path = kernels.gaussian_3d(np, coords, weights, sigma, e, max_elements=1 << 22)
    scale = None
    if normalization == "fixed":
        scale = 0.9 * (2**bitrate - 1) / float(numpy_path.max())
    got = _fused(coords, weights, sigma, e, normalization, bitrate, scale, ndim=3)
    assert got.shape == (2, e, e, e)
    compiled = None
    if kernels.compiled_kernel_available():
        compiled = kernels.splat_gaussian(coords, weights, sigma, e, 3,
                                          normalization=normalization, bitrate=bitrate,
                                          intensity_scale=scale)
    if normalization == "float":
        peak = numpy_path.reshape(2, -1).max(axis=1)[:, None, None, None]
        assert np.all(np.abs(got - numpy_path) <= 1e-5 * peak)
        if compiled is not None:
            assert np.all(np.abs(got - compiled) <= 1e-6 * peak)
        return
    want = kernels.quantise(np, numpy_path, normalization=normalization, bitrate=bitrate,
                            intensity_scale=scale)
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1
    if compiled is not None:
        diff = np.abs(got.astype(int) - compiled.astype(int))
        assert diff.max() <= 1 and (diff == 0).mean() > 0.999


def test_the_3d_bytes_do_not_depend_on_the_batch_split_or_memory():
    e = 16
    coords, weights, sigma = _atoms(e, 147, 3, b=3, seed=5)
    for normalization, bitrate in (("image", 8), ("fixed", 16), ("float", 8)):
        def render(lo, hi, normalization=normalization, bitrate=bitrate, **kw):
            return _fused(coords[lo:hi], weights[lo:hi], sigma[lo:hi], e, normalization,
                          bitrate, 50.0, ndim=3, **kw)

        whole = render(0, 3)
        assert np.array_equal(whole, np.concatenate([render(i, i + 1) for i in range(3)]))
        masks_only = device.STATIC_SHARED_BYTES + device.row_mask_bytes(e)
        assert np.array_equal(whole, render(0, 3, shared_limit=masks_only))
        assert np.array_equal(whole, render(0, 3, launch=_Launches(threads=96)))


def test_the_launch_asks_for_the_image_in_shared_memory_when_it_fits():
    coords, weights, sigma = _atoms(128, 147, 1)
    launch = _Launches()
    _fused(coords, weights, sigma, 128, "image", 8, launch=launch)
    masks = 128 * device.THREADS // 8
    assert launch.calls == [((2,), (device.THREADS,), 4 * 128 * 128 + masks)]
    launch = _Launches()
    _fused(coords, weights, sigma, 128, "image", 8, launch=launch, shared_limit=48 * 1024)
    assert launch.calls == [((2,), (device.THREADS,), masks)]
    assert device.fits(1020, 48 * 1024) and not device.fits(1030, 48 * 1024)
    with pytest.raises(ValueError, match="shared memory"):
        _fused(coords, weights, sigma, 1200, "image", 8, shared_limit=48 * 1024)


def test_empty_images_and_batches():
    """No atom (or only padding): a black image in every normalisation; no image: no launch."""
    e = 16
    coords = np.zeros((2, 3, 3), np.float32)
    weights = np.zeros((2, 3), np.float32)
    sigma = np.ones((2, 3), np.float32)
    for normalization, bitrate in MODES:
        got = _fused(coords, weights, sigma, e, normalization, bitrate, 10.0)
        assert got.shape == (2, e, e) and not got.any()
        got = _fused(coords[:, :0], weights[:, :0], sigma[:, :0], e, normalization, bitrate, 1.0)
        assert got.shape == (2, e, e) and not got.any()
    launch = _Launches()
    got = _fused(coords[:0], weights[:0], sigma[:0], e, "image", 8, launch=launch)
    assert got.shape == (0, e, e) and launch.calls == []


def test_non_finite_atoms_are_skipped_as_the_compiled_kernel_does():
    coords, weights, sigma = (a.copy() for a in _atoms(33, 147, 1))
    coords[0, 3, 0] = np.nan
    coords[1, 4, 1] = np.inf
    sigma[0, 5] = 0.0
    weights[1, 6] = np.inf
    got = _fused(coords, weights, sigma, 33, "image", 16)
    keep = np.ones(weights.shape, bool)
    keep[0, [3, 5]] = False
    keep[1, [4, 6]] = False
    want = _fused(coords, np.where(keep, weights, 0).astype(np.float32),
                  np.where(keep, sigma, 1).astype(np.float32), 33, "image", 16)
    assert np.array_equal(got, want)


def test_the_emulation_runs_phases_per_thread_and_reports_a_missing_barrier():
    """Each XYZ_PER_THREAD phase runs for every thread before the next begins (so a phase may
    read what other threads wrote in the one before), and a phase that begins without a
    __syncthreads() since the previous one is an error, as it would be a race on a device."""
    code = """
XYZ_KERNEL reverse(float *x, const int barrier)
{
    __shared__ float s[8];
    XYZ_PER_THREAD
    {
        s[threadIdx.x] = x[blockIdx.x * blockDim.x + threadIdx.x];
    }
    if (barrier)
        __syncthreads();
    XYZ_PER_THREAD
    {
        x[blockIdx.x * blockDim.x + threadIdx.x] = s[blockDim.x - 1 - threadIdx.x];
    }
}
"""
    kernel = EmulatedKernel(code, "reverse")
    x = np.arange(16, dtype=np.float32)
    kernel((2,), (8,), (x, np.int32(1)))
    np.testing.assert_array_equal(x, [7, 6, 5, 4, 3, 2, 1, 0, 15, 14, 13, 12, 11, 10, 9, 8])
    with pytest.raises(RuntimeError, match="without a __syncthreads"):
        kernel((2,), (8,), (x, np.int32(0)))


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="no CUDA toolkit (nvcc) here")
def test_the_kernel_source_compiles_for_the_device(tmp_path):
    """Where a CUDA toolkit is installed, nvcc compiles the source for sm_90 (the H100/H200)
    with the options given to NVRTC, without warnings, and its static shared memory is what
    the host wrapper counts on when it decides whether the float image fits beside it."""
    cmd = ["nvcc", "-arch=sm_90", *device.NVRTC_OPTIONS, "-Werror", "all-warnings",
           "-Xptxas", "-v", "-c", str(device.Path(device.__file__).with_name(
               device.SPLAT[0])), "-o", str(tmp_path / "splat.o")]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=300)
    assert done.returncode == 0, done.stderr
    smem = re.search(r"(\d+) bytes smem", done.stderr)
    assert smem and int(smem.group(1)) == device.STATIC_SHARED_BYTES, done.stderr
    assert "spill" not in done.stderr or " 0 bytes spill stores" in done.stderr


@pytest.mark.parametrize(("e", "n", "g"), [(33, 147, 3), (64, 147, 1)])
def test_scanned_images_match_the_compiled_kernel_and_the_numpy_path(e, n, g):
    """A distorted scan (row i sees the atoms shifted by offsets[i]): the fused kernel gives
    the compiled CPU kernel's float32 sums (the same window and order: nearly every pixel
    bit for bit) and the NumPy path's within float rounding; the shifts are large enough
    that some atoms leave and enter rows."""
    coords, weights, sigma = _atoms(e, n, g)
    rng = np.random.default_rng(5)
    offsets = np.stack([np.linspace(-2.5, 2.5, e)[None, :] + rng.normal(0, 0.7, (2, e)),
                        rng.normal(0, 1.5, (2, e))], axis=-1).astype(np.float32)
    launch = _Launches()
    got = device.splat_device(_backend(launch), coords, weights, sigma, e, 2,
                              normalization="float", bitrate=8, offsets_px=offsets)
    numpy_path = kernels.gaussian_2d_scanned(np, coords, weights, sigma, offsets, e,
                                             max_elements=1 << 22)
    plain = kernels.gaussian_2d(np, coords, weights, sigma, e)
    scale = numpy_path.reshape(2, -1).max(axis=1)[:, None, None]
    assert np.all(np.abs(got - numpy_path) <= 1e-5 * scale)
    assert np.abs(numpy_path - plain).max() > 0.1 * scale.max()  # the shifts matter
    if kernels.compiled_kernel_available():
        cpu = kernels.splat_gaussian(coords, weights, sigma, e, 2, normalization="float",
                                     bitrate=8, offsets_px=offsets)
        assert np.mean(got == cpu) > 0.99
        np.testing.assert_allclose(got, cpu, rtol=1e-6, atol=1e-7 * float(scale.max()))
    with pytest.raises(ValueError, match="2-D"):
        device.splat_device(_backend(launch), coords, weights, sigma, e, 3,
                            normalization="float", bitrate=8, offsets_px=offsets)
