"""The engine's GPU-only branches, run on the CPU through a stand-in for CuPy.

Without a GPU the ``device`` tests skip their CuPy case, so the code that only runs when
``Backend.is_gpu`` (no chunking, batch size from free device memory, ``asnumpy`` transfers,
device-resident batches, no compiled kernel) would go unexercised. Here a module that
forwards to NumPy and adds the few ``cupy`` names the package uses plays the GPU, and the
results must equal the NumPy path's. This checks the branching, not CuPy itself: on a GPU
machine the ``device`` tests do that.
"""

from __future__ import annotations

import numpy as np
import pytest
from fake_cupy import DeviceArray, FakeCupy, syncs_per_batch
from reference import icosahedron

from xyz2image_gpu import Renderer, RenderSettings, as_structure
from xyz2image_gpu.backend import Backend

FREE_BYTES = 1 << 30

#: The stand-in under the name test_guards.py imports it by.
_FakeCupy = FakeCupy


@pytest.fixture
def fake_gpu() -> Backend:
    return Backend("cupy", FakeCupy(FREE_BYTES), "NumPy standing in for CuPy")


OUTPUTS = ["coordinates_3d", "delta_3d", "delta_2d", "gaussian_2d", "gaussian_3d",
           "binary_2d", "binary_3d"]


@pytest.mark.parametrize("extra", [
    {},
    {"legacy": True},
    {"z_exponent": 1.7, "thermal": True, "probe": ((0.9, 0.3), (0.1, 0.8)),
     "column_correction": (0.17,), "column_broadening": 0.004},
    {"dose": 500.0, "scan_jitter": 0.1, "drift": 0.5, "phonon_jitter": True},
    # beam units with the fitted channelling on by default (count_scale on the device)
    {"normalization": "beam", "voltage_kv": 200.0, "convergence_mrad": 20.0,
     "thermal": True},
])
def test_gpu_branches_match_the_numpy_path(fake_gpu, extra):
    st = as_structure(icosahedron("Au", 3))
    settings = RenderSettings(edgesize=24, **extra)
    gpu = Renderer(settings, OUTPUTS, fake_gpu)
    assert gpu.backend.is_gpu and not gpu.uses_compiled_kernel
    assert gpu.work_memory == FREE_BYTES // 4
    assert gpu.chunk_size(st) > 10**6  # the whole batch is one step on a GPU
    cpu = Renderer(settings, OUTPUTS, "cpu", cpu_kernel="numpy")
    want = cpu.render(st, 5, seed=2, batch_size=2)
    got = gpu.render(st, 5, seed=2)
    cpu.close()
    assert set(got) == set(want)
    for key, value in want.items():
        assert got[key].dtype == value.dtype and got[key].shape == value.shape, key
        if key.startswith("gaussian") and value.dtype.kind == "f":  # beam fractions
            np.testing.assert_allclose(got[key], value, rtol=1e-4, atol=1e-6 * value.max(),
                                       err_msg=key)
        elif key.startswith("gaussian"):
            assert np.abs(got[key].astype(int) - value.astype(int)).max() <= 1, key
        else:
            np.testing.assert_array_equal(got[key], value, err_msg=key)
    device_batch = next(gpu.iter_batches(st, 5, seed=2, to_host=False))
    assert all(isinstance(v, gpu.backend.xp.ndarray) for v in device_batch.values())
    gpu.close()


@pytest.mark.parametrize("batch_size", [1, 2, 3, 7])
def test_gpu_batches_overlap_copies_through_pinned_buffers(fake_gpu, batch_size):
    """On the GPU, batches reach the host through two streams and page-locked buffers that
    are reused every second batch (the last batch may be shorter). With copies that land
    only when their stream's event is waited for, every batch must still equal the NumPy
    path, and no batch handed over may change when later batches are rendered."""
    st = as_structure(icosahedron("Au", 3))
    outputs = ["coordinates_3d", "gaussian_2d", "delta_3d"]
    settings = RenderSettings(edgesize=16)
    cpu = Renderer(settings, outputs, "cpu", cpu_kernel="numpy")
    want = cpu.render(st, 7, seed=4)
    cpu.close()
    gpu = Renderer(settings, outputs, fake_gpu)
    batches = list(gpu.iter_batches(st, 7, seed=4, batch_size=batch_size))
    gpu.close()
    fake = fake_gpu.xp
    n_batches = -(-7 // batch_size)
    assert len(batches) == n_batches
    assert fake.async_copies >= n_batches * len(outputs)  # every output crossed async
    got = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
    assert set(got) == set(want)
    for key, value in want.items():
        if key.startswith("gaussian"):
            assert np.abs(got[key].astype(int) - value.astype(int)).max() <= 1, key
        else:
            np.testing.assert_array_equal(got[key], value, err_msg=key)
    # pinned memory: at most one buffer set per batch held (this consumer keeps them all),
    # each sized for one full batch of every output
    per_image = 16 * 16 + 16**3 + st.max_atoms * 3 * 2 + 8
    assert fake.pinned_bytes <= max(3, n_batches) * min(batch_size, 7) * per_image + 4096


# ------------------------------------------------------------------ the stricter stand-in
def test_the_stand_in_refuses_what_cupy_would():
    """Device arrays reach the host only through asnumpy: implicit conversions, reads that
    CuPy answers with a hidden synchronisation, and host arrays in device operations fail."""
    fake = FakeCupy()
    a = fake.arange(6, dtype=np.float32).reshape(2, 3)
    assert isinstance(a, DeviceArray) and isinstance(a.sum(axis=1), DeviceArray)
    assert isinstance(a.max(), DeviceArray)  # a reduction stays on the device
    for read in (np.asarray, float, int, bool, lambda x: [0][x], lambda x: x.tolist(),
                 lambda x: x.item(), lambda x: x + np.ones(1, np.float32)):
        with pytest.raises(TypeError):
            read(a[0, 0] if read in (float, int, bool) else a)
    assert fake.syncs == 0
    np.testing.assert_array_equal(fake.asnumpy(a.sum(axis=0)), [3, 5, 7])
    fake.nonzero(a > 2)
    assert fake.syncs == 2 and fake.sync_log == ["asnumpy", "nonzero"]


def _renderer(fake, outputs=("gaussian_2d", "coordinates_3d"), **settings):
    settings = RenderSettings(edgesize=16, **settings)
    return Renderer(settings, list(outputs), Backend("cupy", fake, "stand-in"))


def _cpu(outputs=("gaussian_2d", "coordinates_3d"), **settings):
    settings = RenderSettings(edgesize=16, **settings)
    with Renderer(settings, list(outputs), "cpu", cpu_kernel="numpy") as r:
        return r.render(as_structure(icosahedron("Au", 3)), 12, seed=4)


def _assert_matches(got, want):
    for key, value in want.items():
        if key.startswith("gaussian"):
            assert np.abs(got[key].astype(int) - value.astype(int)).max() <= 1, key
        else:
            np.testing.assert_array_equal(got[key], value, err_msg=key)


@pytest.mark.parametrize("how", ["close", "throw", "consumer raises", "writer raises"])
def test_an_abandoned_render_leaves_no_copy_in_flight(how):
    """Item 5: whatever ends an iteration part-way, no asynchronous copy is still writing
    into the pinned buffers, or reading device memory being freed, once control is back
    with the caller (the streams are synchronised in a ``finally``). Later renders on the
    same renderer are unaffected."""
    fake = FakeCupy()
    st = as_structure(icosahedron("Au", 3))
    gpu = _renderer(fake)
    batches = gpu.iter_batches(st, 12, seed=4, batch_size=2)
    first = next(batches)
    assert fake.in_flight > 0  # the second batch's copies are queued behind the first
    if how == "close":
        batches.close()
    elif how == "throw":
        with pytest.raises(KeyError):
            batches.throw(KeyError("stop"))
    else:
        from xyz2image_gpu.output.background import BackgroundWriter

        class Failing:
            def append(self, batch):
                raise OSError("disk full")

        writer = BackgroundWriter(maxsize=1)
        with pytest.raises(OSError if how == "writer raises" else RuntimeError):
            for batch in batches:
                if how == "consumer raises":
                    raise RuntimeError("consumer")
                writer.put(Failing(), batch)  # the second put re-raises the writer's error
                writer.close()
        del batch
    del batches
    assert fake.in_flight == 0, "a copy is still in flight after the render was abandoned"
    assert fake.violations == []
    first.release()
    _assert_matches(gpu.render(st, 12, seed=4, batch_size=5), _cpu())
    gpu.close()


@pytest.mark.parametrize("settings, per_batch", [
    ({}, 1),
    ({"framing": "structure", "z_exponent": 1.7, "thermal": True}, 1),
    # augmentations drawn, applied and quantised on the device (random.cu)
    ({"dose": 100.0}, 1),
    ({"dose": 100.0, "read_noise": 0.02, "phonon_jitter": True, "scan_jitter": 0.1,
      "drift": 0.5}, 1),
    ({"phonon_jitter": True, "normalization": "fixed", "intensity_scale": 3.0}, 1),
    # legacy mode's filter matrices built on the device (legacy.cu)
    ({"legacy": True}, 1),
    ({"legacy": True, "framing": "structure"}, 1),
])
def test_the_steady_state_loop_waits_once_per_batch(settings, per_batch):
    """Items 10 and 7: in the steady state the loop's only host synchronisation is the wait
    for the batch it hands over, augmentations and legacy mode included; labels and
    coordinates need none."""
    fake = FakeCupy()
    outputs = ["gaussian_2d", "coordinates_3d", "delta_3d", "delta_2d", "binary_3d",
               "binary_2d"]
    gpu = _renderer(fake, outputs, **settings)
    st = as_structure(icosahedron("Au", 3))
    counts = syncs_per_batch(fake, gpu.iter_batches(st, 12, seed=4, batch_size=2))
    assert len(counts) == 6
    assert counts[1:-1] == [per_batch] * 4, fake.sync_log
    assert "event (spinning)" not in fake.sync_log
    gpu.close()


def test_only_rotations_and_indices_travel_per_batch():
    """Item 8: a unit's frames are uploaded once per call; each batch uploads its rotations
    (float32) and its images' frame indices, nothing that scales with the atoms."""
    fake = FakeCupy()
    gpu = _renderer(fake)
    st = as_structure(icosahedron("Au", 3))
    batches = gpu.iter_batches(st, 64, seed=4, batch_size=8)
    next(batches).release()
    per_batch = []
    for batch in batches:
        before = fake.uploaded_bytes
        batch.release()
        per_batch.append(before)
    steps = np.diff(per_batch)  # uploads queued for the batch after each one
    assert list(steps) == [8 * (9 * 4 + 8)] * 5 + [0], steps  # float32 (3, 3), int64 index
    gpu.close()


def test_streams_events_and_pinned_buffers_are_reused_across_calls():
    """Items 11 and 12: the renderer keeps its streams, events and page-locked buffers for
    every later call (CuPy's pool caches device blocks per stream); events are blocking and
    without timing; a consumer that releases each batch keeps the ring at three sets."""
    fake = FakeCupy()
    gpu = _renderer(fake)
    st = as_structure(icosahedron("Au", 3))
    for batch in gpu.iter_batches(st, 12, seed=4, batch_size=2):
        batch.release()
    made = (len(fake.streams), len(fake.events), fake.pinned_allocations, fake.pinned_bytes)
    for _ in range(3):
        for batch in gpu.iter_batches(st, 12, seed=1, batch_size=2):
            with batch:
                pass
    assert (len(fake.streams), len(fake.events), fake.pinned_allocations,
            fake.pinned_bytes) == made
    assert len(fake.streams) == 2 and len(gpu._ring.slots) == 3
    assert all(e.block and e.disable_timing for e in fake.events)
    gpu.close()


def test_batches_are_views_into_pinned_buffers_until_released():
    """Item 8: host batches are views into the ring's page-locked buffers, not copies; a
    buffer set is reused once its batch is released or when nothing of the batch is alive,
    never while a view of it is (the ring grows instead); ``detach`` gives owned copies."""
    from fake_cupy import _is_pinned

    fake = FakeCupy()
    gpu = _renderer(fake)
    st = as_structure(icosahedron("Au", 3))
    want = _cpu()
    batches = gpu.iter_batches(st, 12, seed=4, batch_size=2)
    b0 = next(batches)
    assert _is_pinned(b0["gaussian_2d"]) and _is_pinned(b0["coordinates_3d"])
    kept = b0["gaussian_2d"][1:]  # a view of a view: keeps the set from reuse
    expected = kept.copy()
    del b0
    owned = next(batches).detach()
    assert not _is_pinned(owned["gaussian_2d"])
    rest = [batch.detach() for batch in batches]
    np.testing.assert_array_equal(kept, expected)
    got = {k: np.concatenate([owned[k]] + [r[k] for r in rest]) for k in owned}
    _assert_matches(got, {k: v[2:] for k, v in want.items()})
    gpu.close()


def test_a_consumer_that_keeps_every_batch_gets_copies_beyond_the_rings_limit():
    """A consumer that releases nothing and keeps every batch: the ring grows to its limit
    of buffer sets, later batches arrive as plain copies (a synchronous read-back each),
    and every batch stays right."""
    from xyz2image_gpu.pipeline.gpu_streams import DeviceRing

    fake = FakeCupy()
    gpu = _renderer(fake)
    st = as_structure(icosahedron("Au", 3))
    kept = list(gpu.iter_batches(st, 12, seed=4, batch_size=1))
    assert len(gpu._ring.slots) == DeviceRing.MAX_SLOTS
    assert "asnumpy" in fake.sync_log  # the batches beyond the limit
    got = {k: np.concatenate([b[k] for b in kept]) for k in kept[0]}
    _assert_matches(got, _cpu())
    gpu.close()


def test_synchronize_waits_for_the_engines_streams():
    """Item 7: Backend.synchronize waits for the renderer's own streams, not only the
    current one."""
    fake = FakeCupy()
    gpu = _renderer(fake)
    batches = gpu.iter_batches(as_structure(icosahedron("Au", 3)), 12, seed=4, batch_size=2)
    next(batches)
    assert fake.in_flight > 0
    gpu.backend.synchronize()
    assert fake.in_flight == 0
    batches.close()
    gpu.close()


def test_free_memory_counts_the_pools_cached_blocks():
    """Item 11: blocks CuPy's pool holds free count as free for the batch size."""
    fake = FakeCupy(free_bytes=1 << 30, pool_free_bytes=1 << 28)
    gpu = _renderer(fake)
    assert gpu.backend.free_memory() == (1 << 30) + (1 << 28)
    assert gpu.work_memory == ((1 << 30) + (1 << 28)) // 4


def test_the_runs_writer_reads_gpu_batches_while_later_ones_render(tmp_path, monkeypatch):
    """The run's writer compresses a batch's 1 MiB chunks on threads after ``append``
    returns, and never releases it: the ring must not reuse its buffers while any of those
    chunks is alive (slowed down here, so that they are). The stack written through the
    stand-in equals the CPU's."""
    import time

    from xyz2image_gpu.output import npz
    from xyz2image_gpu.run import units
    from xyz2image_gpu.run.config import RunConfig, render_types

    deflate = npz._deflate_chunk

    def slow_deflate(*args, **kwargs):
        time.sleep(0.02)
        return deflate(*args, **kwargs)
    monkeypatch.setattr(npz, "_deflate_chunk", slow_deflate)

    path = tmp_path / "au.xyz"
    st = as_structure(icosahedron("Au", 3))
    rows = "\n".join(f"Au {x:.6f} {y:.6f} {z:.6f}" for x, y, z in st.frames[0].positions)
    path.write_text(f"{len(st.frames[0].positions)}\nau\n{rows}\n")
    settings = RenderSettings(edgesize=64)
    outputs = ("gaussian_2d", "delta_3d")  # 256 KiB per image: chunks that view the batch
    cfg = RunConfig(inputs=(path,), output_folder=tmp_path / "out", settings=settings,
                    output_types=outputs, n_rotation=40, batch_size=6, device="gpu")
    unit = units.Unit(str(path), "au", 0, cfg, "gpu", 2)
    fake = FakeCupy()
    gpu = Renderer(settings, render_types(outputs), Backend("cupy", fake, "stand-in"),
                   threads=2)
    units._RENDERERS.clear()
    units._RENDERERS[(settings, render_types(outputs), "gpu", 2)] = gpu
    try:
        assert units._render_unit(unit, lambda n: None) == 40
    finally:
        units._RENDERERS.clear()
        gpu.close()
    assert fake.in_flight == 0 and fake.violations == []
    with Renderer(settings, list(outputs), "cpu", cpu_kernel="numpy") as cpu:
        want = cpu.render(path, 40)
    with np.load(tmp_path / "out" / "au" / "0000.npz") as got:
        np.testing.assert_array_equal(got["delta_3d"], want["delta_3d"])
        diff = got["gaussian_2d"].astype(int) - want["gaussian_2d"].astype(int)
        assert np.abs(diff).max() <= 1
        np.testing.assert_array_equal(got["rotations"], want["rotations"])


# ------------------------------------------------------------------ the fused gaussian_2d kernel
@pytest.mark.parametrize("optin", [227 * 1024, 48 * 1024])
def test_the_gpu_renders_gaussian_2d_with_its_fused_kernel(optin):
    """On the GPU gaussian_2d is one launch per batch of kernels/splat.cu, its source
    built for the CPU here and run block by block through the stand-in's RawKernel: at
    edgesize 128 the float image asks for 64 KiB of shared memory (allowed only once the
    kernel opts in, as on a device) or, where the device grants no more than 48 KiB, lives
    in a scratch array; within one grey level of the NumPy path either way, with no
    separable-product operations (exp, matmul of profiles) left per batch."""
    from xyz2image_gpu.pipeline.strategies import FusedKernel

    fake = FakeCupy(1 << 34)
    fake.shared_per_block_optin = optin
    st = as_structure(icosahedron("Au", 3))
    for extra in ({}, {"bitrate": 16, "probe": ((0.9, 0.3), (0.1, 0.8))},
                  {"normalization": "fixed", "intensity_scale": 200.0}):
        settings = RenderSettings(edgesize=128, **extra)
        gpu = Renderer(settings, ["gaussian_2d"], Backend("cupy", fake, "stand-in"))
        assert isinstance(gpu.kernel, FusedKernel)
        before = len(fake.op_log)
        got = gpu.render(st, 6, seed=4, batch_size=3)
        log = fake.op_log[before:]
        assert log.count("RawKernel xyz2image_gaussian") == 2
        assert "exp" not in log and "rint" not in log
        with Renderer(settings, ["gaussian_2d"], "cpu", cpu_kernel="numpy") as cpu:
            want = cpu.render(st, 6, seed=4)
        diff = np.abs(got["gaussian_2d"].astype(int) - want["gaussian_2d"].astype(int))
        assert diff.max() <= 1, extra
        gpu.close()


def test_gpu_gaussian_bytes_do_not_depend_on_the_batch_size():
    """Item 6 for the kernel: each pixel is summed by one thread in atom order, so batches
    of 1, 4 and 11 give the same bytes, 2-D and 3-D (the stand-in's framing is NumPy's, so
    this checks the kernel's part; gpu_check's repeatability stage measures the whole on a
    device)."""
    st = as_structure(icosahedron("Au", 3))
    fake = FakeCupy(1 << 34)
    settings = RenderSettings(edgesize=24, probe=((0.9, 0.3), (0.1, 0.8)), bitrate=16)
    outputs = ["gaussian_2d", "gaussian_3d"]
    gpu = Renderer(settings, outputs, Backend("cupy", fake, "stand-in"))
    runs = [gpu.render(st, 11, seed=9, batch_size=b) for b in (1, 4, 11)]
    gpu.close()
    assert fake.op_log.count("RawKernel xyz2image_gaussian") == 2 * (11 + 3 + 1)
    for name in outputs:
        assert np.array_equal(runs[0][name], runs[1][name]), name
        assert np.array_equal(runs[0][name], runs[2][name]), name


def test_the_fused_kernel_halves_the_device_operations_per_batch(monkeypatch):
    """Item 9, counted on the stand-in (edgesize 128, 147 atoms, uint8): the separable
    product path (what the GPU ran before, and runs with XYZ2IMAGE_GPU_NO_FUSED_KERNEL set)
    took 67 device operations per batch (33 of them for the images), the fused kernel takes
    34, and the bytes those operations read and write drop more than tenfold (the kernel's
    own shared-memory traffic not counted)."""
    from xyz2image_gpu.flags import NO_FUSED_KERNEL_ENV
    from xyz2image_gpu.pipeline.strategies import ArrayKernel, FusedKernel

    st = as_structure(icosahedron("Au", 3))

    def per_batch(fused):
        fake = FakeCupy(1 << 34)
        monkeypatch.setenv(NO_FUSED_KERNEL_ENV, "" if fused else "1")
        gpu = Renderer(RenderSettings(edgesize=128), ["gaussian_2d"],
                       Backend("cupy", fake, "stand-in"))
        assert type(gpu.kernel) is (FusedKernel if fused else ArrayKernel)
        ops, traffic = [], []
        for batch in gpu.iter_batches(st, 48, seed=4, batch_size=16):
            ops.append(fake.ops)
            traffic.append(fake.op_bytes)
            batch.release()
        gpu.close()
        return np.diff(ops)[0], np.diff(traffic)[0] / 16

    fused_ops, fused_bytes = per_batch(True)
    array_ops, array_bytes = per_batch(False)
    assert fused_ops <= array_ops - 30, (fused_ops, array_ops)
    assert fused_bytes * 10 < array_bytes, (fused_bytes, array_bytes)


def test_images_too_wide_for_the_kernels_shared_memory_use_the_batched_products():
    """Where a block's shared memory cannot hold the kernel's row masks, gaussian_2d comes
    from the batched products (the same within one grey level), not from a failed launch."""
    fake = FakeCupy(1 << 34)
    fake.shared_per_block_optin = 12000  # below 11,280 static + 33 rows of masks
    st = as_structure(icosahedron("Au", 3))
    settings = RenderSettings(edgesize=33)
    gpu = Renderer(settings, ["gaussian_2d"], Backend("cupy", fake, "stand-in"))
    got = gpu.render(st, 4, seed=1)
    gpu.close()
    assert not any(name.startswith("RawKernel") for name in fake.op_log)
    with Renderer(settings, ["gaussian_2d"], "cpu", cpu_kernel="numpy") as cpu:
        want = cpu.render(st, 4, seed=1)
    assert np.abs(got["gaussian_2d"].astype(int) - want["gaussian_2d"].astype(int)).max() <= 1


def test_raw_kernels_come_from_the_gpu_backend_and_opt_in_to_more_shared_memory():
    """Backend.raw_kernel: only on the GPU; compiled once per source (cached); a launch that
    needs more than 48 KiB of dynamic shared memory raises the kernel's limit first (the
    stand-in, like a device, refuses the launch otherwise)."""
    from xyz2image_gpu.backend import BackendError
    from xyz2image_gpu.pipeline.kernels import device

    with pytest.raises(BackendError):
        Backend("numpy", np, "cpu").raw_kernel("", "k")
    fake = FakeCupy()
    gpu = Backend("cupy", fake, "stand-in")
    code = device.kernel_source(device.SPLAT[0])
    kernel = gpu.raw_kernel(code, device.SPLAT[1], device.NVRTC_OPTIONS)
    assert gpu.raw_kernel(code, device.SPLAT[1], device.NVRTC_OPTIONS) is kernel
    assert kernel.kernel.options == device.NVRTC_OPTIONS == ("--fmad=false",)
    assert gpu.shared_memory_per_block() == 227 * 1024
    e = 128
    coords = fake.zeros((1, 1, 3), dtype=np.float32)
    weights = fake.ones((1, 1), dtype=np.float32)
    out = fake.zeros((1, e, e), dtype=np.uint8)
    args = (coords, weights, weights, np.int32(1), np.int32(e), np.int32(2), out, np.int32(1),
            out, np.int32(1), np.int32(1), np.float32(255), np.float32(1), np.float64(16),
            weights, np.int32(0))  # no scan offsets
    shared = 4 * e * e + device.row_mask_bytes(e)
    with pytest.raises(RuntimeError, match="shared memory"):
        kernel.kernel((1,), (device.THREADS,), args, shared_mem=shared)  # not opted in
    kernel((1,), (device.THREADS,), args, shared_mem=shared)
    assert kernel.kernel.max_dynamic_shared_size_bytes == shared
    assert fake.asnumpy(out)[0, 0, 0] == 255  # the atom at the origin, normalised


@pytest.mark.parametrize("edgesize", [6, 24, 64])
def test_legacy_filter_matrices_are_built_on_the_device(edgesize):
    """legacy.cu's matrices (emulated) equal the host's within a few double ulps, and both
    filter as SciPy's gaussian_filter1d does (reflect mode, truncate 4), over widths from
    0.3 px to filters that wrap the image more than once; no host wait to build them."""
    from scipy.ndimage import gaussian_filter1d

    from xyz2image_gpu.pipeline.kernels import device, legacy_filter_matrices

    sigma = np.array([0.3, 0.75, 1.0, 2.4, 7.9, 25.0], dtype=np.float32)
    fake = FakeCupy()
    be = Backend("cupy", fake, "NumPy standing in for CuPy")
    dev = device.legacy_filter_device(be, fake.asarray(sigma), edgesize)
    assert fake.syncs == 0
    got = fake.asnumpy(dev)
    host = legacy_filter_matrices(sigma, edgesize)
    np.testing.assert_allclose(got, host, rtol=0, atol=4e-16)
    x = np.random.default_rng(3).uniform(size=edgesize)
    for m, s in zip(got, sigma.astype(np.float64)):
        np.testing.assert_allclose(m @ x, gaussian_filter1d(x, s, mode="reflect", truncate=4.0),
                                   rtol=1e-13, atol=1e-15)


def test_augmentations_add_few_device_operations_per_batch():
    """Every augmentation on the GPU (stand-in count, edgesize 32): a few launches of the
    package's kernels instead of array code, under 20 operations more than plain images
    (counted: 34 plain, 50 augmented; the array-code draws took thousands)."""
    st = as_structure(icosahedron("Au", 3))

    def per_batch(**extra):
        fake = FakeCupy()
        gpu = Renderer(RenderSettings(edgesize=32, **extra), ["gaussian_2d"],
                       Backend("cupy", fake, "stand-in"))
        ops = []
        for batch in gpu.iter_batches(st, 24, seed=4, batch_size=8):
            ops.append(fake.ops)
            batch.release()
        gpu.close()
        return np.diff(ops)[0], fake.op_log

    plain, _ = per_batch()
    augmented, log = per_batch(phonon_jitter=True, dose=1e4, read_noise=0.01,
                               scan_jitter=0.1, drift=1.0)
    assert augmented < plain + 20, (plain, augmented)
    assert {"RawKernel xyz2image_noise", "RawKernel xyz2image_phonon",
            "RawKernel xyz2image_scan"} <= set(log)
