"""The engine against independent float64 references (see ``reference.py``).

Every image is checked at the rotation the engine recorded for it (``out["rotations"]``):
the reference frames the structure itself, sums the Gaussians analytically (or runs SciPy's
``gaussian_filter`` for legacy mode) and quantises, and the engine must agree within one grey
level (float outputs: 1e-4 of the image maximum). Each test runs on NumPy and, where a GPU is
present, on CuPy (the ``device`` fixture).
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from ase_compat import Atoms
from conftest import gpu_skip_reason
from reference import (
    R0,
    analytic_gaussian_2d,
    analytic_gaussian_3d,
    binary_reference,
    delta_reference,
    frame_pixel_coords,
    icosahedron,
    quantise,
    rounding_ties,
    seed_gaussian,
)
from seed_algorithm import seed_gaussian_2d  # benchmarks/, put on sys.path by conftest.py

from xyz2image_gpu import OUTPUT_TYPES, Renderer, RenderSettings, as_structure, render
from xyz2image_gpu.pipeline import kernels as renderers
from xyz2image_gpu.pipeline.kernels.compiled import _splat_spheres_compiled
from xyz2image_gpu.pipeline.kernels.labels import _splat_spheres
from xyz2image_gpu.pipeline.rotations import rotation_matrices

DEFAULTS = {
    "edgesize": 128, "gauss_sigma": 0.4, "padxyz": 1.5, "bitrate": 8, "binary_radius": 1.0,
    "z_exponent": 0.0,  # equal weights unless a case says otherwise (not the API default)
    "framing": "image", "pixel_size": None, "normalization": "image", "intensity_scale": None,
    "legacy": False, "all_random": False,
}
TIE_TOL = 1e-4  # px: coordinates this close to a rounding or radius boundary may go either way


# ------------------------------------------------------------------------------ structures
def _mixed(shells: int, seed: int) -> Atoms:
    atoms = icosahedron("Pd", shells)
    rng = np.random.default_rng(seed)
    atoms.set_chemical_symbols(rng.choice(["Au", "Pd", "O", "Ce"], len(atoms)))
    atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
    return atoms


_STRUCTURES = {
    "single": lambda: Atoms("Au", positions=[[0.3, -0.2, 0.1]]),
    "au13": lambda: icosahedron("Au", 2),
    "au55": lambda: icosahedron("Au", 3),
    "au147": lambda: icosahedron("Au", 4),
    "mixed55": lambda: _mixed(3, 1),
    "mixed309": lambda: _mixed(5, 2),
    "pt5083": lambda: icosahedron("Pt", 12),
    "multi": lambda: [_mixed(2, 3), _mixed(3, 4), _mixed(1, 5) + _mixed(2, 6)[:6]],
}
_CACHE: dict[str, object] = {}


def structure(key: str):
    """(input for render, list of (positions, numbers) per frame); cached per session."""
    if key not in _CACHE:
        _CACHE[key] = _STRUCTURES[key]()
    obj = _CACHE[key]
    frames = obj if isinstance(obj, list) else [obj]
    return obj, [(a.positions.copy(), a.numbers.copy()) for a in frames]


def run(obj, n_rotation, outputs, device, *, cpu_kernel="auto", seed=0, stack=0,
        batch_size=None, start=0, stop=None, **settings):
    renderer = Renderer(RenderSettings(**settings), outputs, device, cpu_kernel=cpu_kernel)
    try:
        return renderer.render(obj, n_rotation, seed=seed, stack=stack, batch_size=batch_size,
                               start=start, stop=stop)
    finally:
        renderer.close()


def _settings(**kw) -> dict:
    s = dict(DEFAULTS)
    s.update(kw)
    return s


def _pixel_coords(pos, R, s):
    return frame_pixel_coords(pos, R, s["framing"], edgesize=s["edgesize"], padxyz=s["padxyz"],
                              pixel_size=s["pixel_size"])


def assert_image_close(got, ref, s, what=""):
    """``got`` (engine) against a float64 intensity ``ref`` quantised as settings ``s`` say."""
    if s["normalization"] == "float":
        assert got.dtype == np.float32
        err = np.abs(got.astype(np.float64) - ref).max()
        assert err <= 1e-4 * ref.max(), f"{what}: float error {err:.3g} of max {ref.max():.3g}"
        return
    expect = quantise(ref, s["bitrate"], s["normalization"], s["intensity_scale"])
    assert got.dtype == expect.dtype
    diff = np.abs(got.astype(np.int64) - expect.astype(np.int64))
    assert diff.max() <= 1, (
        f"{what}: {int((diff > 1).sum())} pixels off by more than one grey level, "
        f"worst {int(diff.max())} at {np.unravel_index(diff.argmax(), diff.shape)}"
    )


# ------------------------------------------------------------------------------ gaussian
GAUSS_2D_CASES = {
    "1atom-e32": ("single", 3, {"edgesize": 32}),
    "au13-e64-16bit": ("au13", 4, {"edgesize": 64, "bitrate": 16}),
    "mixed55-z1.7-structure": (
        "mixed55", 4,
        {"edgesize": 128, "z_exponent": 1.7, "framing": "structure", "gauss_sigma": 0.6}),
    "au147-fixedframe-fixednorm": (
        "au147", 3, {"edgesize": 96, "framing": "fixed", "pixel_size": 0.25,
                     "normalization": "fixed", "intensity_scale": 60.0}),
    "au147-z1.7-fixednorm-16bit": (
        "au147", 2, {"z_exponent": 1.7, "normalization": "fixed", "intensity_scale": 5.0,
                         "bitrate": 16, "padxyz": 0.3}),
    "mixed309-e256-float-z1.7": (
        "mixed309", 2, {"edgesize": 256, "z_exponent": 1.7, "normalization": "float"}),
    "pt5083-e256-structure": ("pt5083", 2, {"edgesize": 256, "framing": "structure"}),
    "pt5083-e200-float-random": (
        "pt5083", 1, {"edgesize": 200, "normalization": "float", "all_random": True}),
}


@pytest.mark.parametrize("kernel", ["auto", "numpy"])
@pytest.mark.parametrize("case", list(GAUSS_2D_CASES))
def test_gaussian_2d_matches_analytic(case, kernel, device):
    if device == "gpu" and kernel == "numpy":
        pytest.skip("cpu_kernel applies to the CPU only")
    key, n_rotation, kw = GAUSS_2D_CASES[case]
    obj, frames = structure(key)
    s = _settings(**kw)
    out = run(obj, n_rotation, ["gaussian_2d"], device, cpu_kernel=kernel, **s)
    assert out["gaussian_2d"].shape == (n_rotation, s["edgesize"], s["edgesize"])
    pos, numbers = frames[0]
    weights = numbers.astype(np.float64) ** s["z_exponent"]
    for k in range(n_rotation):
        u, vs = _pixel_coords(pos, out["rotations"][k], s)
        assert out["voxel_size"][k] == pytest.approx(vs, rel=1e-6)
        ref = analytic_gaussian_2d(u, weights, s["gauss_sigma"] / vs, s["edgesize"])
        assert_image_close(out["gaussian_2d"][k], ref, s, f"{case} image {k}")


GAUSS_3D_CASES = {
    "au13-e32": ("au13", 3, {"edgesize": 32}),
    "1atom-e33-structure-16bit": ("single", 1, {"edgesize": 33, "framing": "structure",
                                                     "bitrate": 16}),
    "mixed55-e48-structure-float-z1.7": (
        "mixed55", 2, {"edgesize": 48, "framing": "structure", "normalization": "float",
                           "z_exponent": 1.7}),
    "au55-e40-fixedframe-fixednorm": (
        "au55", 2, {"edgesize": 40, "framing": "fixed", "pixel_size": 0.3, "normalization": "fixed",
                        "intensity_scale": 100.0}),
}


@pytest.mark.parametrize("kernel", ["auto", "numpy"])
@pytest.mark.parametrize("case", list(GAUSS_3D_CASES))
def test_gaussian_3d_matches_analytic(case, kernel, device):
    if device == "gpu" and kernel == "numpy":
        pytest.skip("cpu_kernel applies to the CPU only")
    key, n_rotation, kw = GAUSS_3D_CASES[case]
    obj, frames = structure(key)
    s = _settings(**kw)
    out = run(obj, n_rotation, ["gaussian_3d", "gaussian_2d"], device, cpu_kernel=kernel, **s)
    e = s["edgesize"]
    assert out["gaussian_3d"].shape == (n_rotation, e, e, e)
    pos, numbers = frames[0]
    weights = numbers.astype(np.float64) ** s["z_exponent"]
    for k in range(n_rotation):
        u, vs = _pixel_coords(pos, out["rotations"][k], s)
        ref = analytic_gaussian_3d(u, weights, s["gauss_sigma"] / vs, e)
        assert_image_close(out["gaussian_3d"][k], ref, s, f"{case} volume {k}")
        ref2 = analytic_gaussian_2d(u, weights, s["gauss_sigma"] / vs, e)
        assert_image_close(out["gaussian_2d"][k], ref2, s, f"{case} image {k}")


def test_single_atom_peak_is_its_weight(device):
    """float normalization: an isolated atom of weight Z**z peaks at Z**z at its pixel."""
    atoms = Atoms("Au", positions=[[0.0, 0.0, 0.0]])
    out = run(atoms, 2, ["gaussian_2d"], device, edgesize=33, normalization="float",
              z_exponent=1.0, framing="structure")
    for img in out["gaussian_2d"]:
        assert img[16, 16] == pytest.approx(79.0, rel=1e-5)
        assert np.unravel_index(img.argmax(), img.shape) == (16, 16)


# ------------------------------------------------------------------------------ labels
def _resolve_ties(u, got_coords):
    """rint(u), except at rounding ties (|frac - 0.5| < TIE_TOL), where the engine's choice
    stands if it is one of the two neighbours. Asserts everything else matches exactly."""
    expect = np.rint(u).astype(np.int64)
    got = got_coords.astype(np.int64)
    ties = rounding_ties(u, TIE_TOL)
    mismatch = np.any(got != expect, axis=1)
    assert not np.any(mismatch & ~ties), (
        f"coordinates differ from rint(u) for atoms {np.nonzero(mismatch & ~ties)[0][:10]}: "
        f"got {got[mismatch & ~ties][:3].tolist()}, u {u[mismatch & ~ties][:3].tolist()}"
    )
    assert np.all(np.abs(got[ties] - u[ties]) <= 0.5 + TIE_TOL)
    resolved = expect.copy()
    resolved[ties] = got[ties]
    return resolved


def _assert_bool_close(got, ref, ambiguous, what):
    bad = (got != ref) & ~ambiguous
    assert not bad.any(), f"{what}: {int(bad.sum())} voxels differ, e.g. {np.argwhere(bad)[:3]}"


LABEL_CASES = {
    "au55-e48-image": ("au55", 4, {"edgesize": 48}),
    "mixed55-e40-structure-r1.5": ("mixed55", 3, {"edgesize": 40, "framing": "structure",
                                                       "binary_radius": 1.5}),
    "au147-e32-fixed-clipped": ("au147", 3, {"edgesize": 32, "framing": "fixed", "pixel_size": 0.3,
                                                 "binary_radius": 0.8}),
    "single-e16": ("single", 2, {"edgesize": 16, "binary_radius": 2.0}),
}
LABELS = ["coordinates_3d", "delta_3d", "delta_2d", "binary_3d", "binary_2d"]


@pytest.mark.parametrize("legacy", [False, True], ids=["subpixel", "legacy"])
@pytest.mark.parametrize("case", list(LABEL_CASES))
def test_labels_match_reference(case, legacy, device):
    key, n_rotation, kw = LABEL_CASES[case]
    obj, frames = structure(key)
    s = _settings(**kw)
    e = s["edgesize"]
    out = run(obj, n_rotation, LABELS, device, legacy=legacy, **kw)
    pos, _ = frames[0]
    n = len(pos)
    assert out["coordinates_3d"].shape == (n_rotation, n, 3)
    np.testing.assert_array_equal(out["n_atoms"], n)
    outside = 0
    for k in range(n_rotation):
        u, vs = _pixel_coords(pos, out["rotations"][k], s)
        assert out["voxel_size"][k] == pytest.approx(vs, rel=1e-6)
        coords = _resolve_ties(u, out["coordinates_3d"][k])
        outside += int(np.any((coords < 0) | (coords >= e), axis=1).sum())
        d3 = delta_reference(coords, e, 3)
        np.testing.assert_array_equal(out["delta_3d"][k], d3)
        np.testing.assert_array_equal(out["delta_2d"][k], d3.any(axis=2))
        centres = coords.astype(np.float64) if legacy else u
        b3, amb = binary_reference(centres, s["binary_radius"] / vs, e, TIE_TOL)
        assert b3.any()
        _assert_bool_close(out["binary_3d"][k], b3, amb, f"binary_3d image {k}")
        _assert_bool_close(out["binary_2d"][k], b3.any(axis=2), amb.any(axis=2),
                           f"binary_2d image {k}")
    if s["framing"] == "fixed":
        assert outside > 0, "the clipped case should have atoms outside the field of view"


# ------------------------------------------------------------------------------ legacy
LEGACY_CASES = {
    "au147-e80-8bit": ("au147", 4, {"edgesize": 80, "padxyz": 0.3}),
    "mixed55-e128-16bit": ("mixed55", 3, {"edgesize": 128, "bitrate": 16}),
    "au13-e32-sigma0.7": ("au13", 3, {"edgesize": 32, "gauss_sigma": 0.7}),
}


@pytest.mark.parametrize("case", list(LEGACY_CASES))
def test_legacy_matches_seed_filter(case, device):
    key, n_rotation, kw = LEGACY_CASES[case]
    obj, frames = structure(key)
    s = _settings(**kw)
    e = s["edgesize"]
    with_3d = e <= 48
    outputs = ["coordinates_3d", "gaussian_2d"] + (["gaussian_3d"] if with_3d else [])
    out = run(obj, n_rotation, outputs, device, legacy=True, **kw)
    pos, _ = frames[0]
    for k in range(n_rotation):
        u, vs = _pixel_coords(pos, out["rotations"][k], s)
        coords = _resolve_ties(u, out["coordinates_3d"][k])
        d3 = delta_reference(coords, e, 3).astype(np.float64)
        sigma = s["gauss_sigma"] / vs
        want = seed_gaussian(d3.any(axis=2), sigma, s["bitrate"])
        diff = np.abs(out["gaussian_2d"][k].astype(np.int64) - want)
        assert out["gaussian_2d"].dtype == want.dtype
        assert diff.max() <= 1, f"legacy 2D image {k}: worst {diff.max()}"
        if with_3d:
            want3 = seed_gaussian(d3, sigma, s["bitrate"])
            diff3 = np.abs(out["gaussian_3d"][k].astype(np.int64) - want3)
            assert diff3.max() <= 1, f"legacy 3D volume {k}: worst {diff3.max()}"


def test_legacy_image0_is_seed_view(device):
    """Image 0 in legacy mode is what the seed made: ``atoms.rotate(90, 'z')`` then its
    per-image algorithm (here the benchmark baseline, ``benchmarks/seed_algorithm.py``)."""
    atoms = icosahedron("Au", 4)
    atoms.positions += np.random.default_rng(7).normal(scale=0.05, size=atoms.positions.shape)
    out = run(atoms, 2, ["gaussian_2d"], device, legacy=True, edgesize=80, padxyz=0.3)
    np.testing.assert_array_equal(out["rotations"][0], R0)
    seed_view = atoms.copy()
    seed_view.rotate(90, "z")
    want = seed_gaussian_2d(seed_view.positions, np.eye(3), edgesize=80, gauss_sigma=0.4,
                            padxyz=0.3, bitrate=8)
    assert np.abs(out["gaussian_2d"][0].astype(int) - want).max() <= 1
    # and the baseline, given the engine's rotation, renders image 1 too
    want1 = seed_gaussian_2d(atoms.positions, out["rotations"][1], edgesize=80, padxyz=0.3)
    assert np.abs(out["gaussian_2d"][1].astype(int) - want1).max() <= 1


# ------------------------------------------------------------------------------ layout
@pytest.mark.parametrize("bitrate,normalization,dtype", [
    (8, "image", np.uint8), (16, "image", np.uint16), (8, "float", np.float32),
    (16, "fixed", np.uint16),
])
def test_keys_shapes_dtypes(bitrate, normalization, dtype, device):
    obj, frames = structure("multi")
    n_rot, e = 3, 20
    scale = 10.0 if normalization == "fixed" else None
    out = run(obj, n_rot, list(OUTPUT_TYPES), device, edgesize=e, bitrate=bitrate,
              normalization=normalization, intensity_scale=scale)
    n = n_rot * len(frames)
    max_atoms = max(len(p) for p, _ in frames)
    assert set(out) == set(OUTPUT_TYPES) | {"rotations", "voxel_size", "frame_index", "n_atoms",
                                            "elements"}
    channels = len({z for _, numbers in frames for z in numbers})
    expected = {
        "numbers": ((n, max_atoms), np.int16),
        "heatmap_2d": ((n, e, e), np.float32),
        "element_heatmap_2d": ((n, channels, e, e), np.float32),
        "elements": ((n, channels), np.int16),
        "column_map_2d": ((n, e, e), np.uint16),
        "coordinates_3d": ((n, max_atoms, 3), np.int16),
        "delta_3d": ((n, e, e, e), np.bool_),
        "delta_2d": ((n, e, e), np.bool_),
        "gaussian_3d": ((n, e, e, e), dtype),
        "gaussian_2d": ((n, e, e), dtype),
        "binary_3d": ((n, e, e, e), np.bool_),
        "binary_2d": ((n, e, e), np.bool_),
        "rotations": ((n, 3, 3), np.float64),
        "voxel_size": ((n,), np.float64),
        "frame_index": ((n,), np.int32),
        "n_atoms": ((n,), np.int32),
    }
    for key, (shape, dt) in expected.items():
        assert out[key].shape == shape, key
        assert out[key].dtype == np.dtype(dt), key
        assert isinstance(out[key], np.ndarray), key


def test_no_n_atoms_without_coordinates(device):
    out = run(structure("au13")[0], 2, ["gaussian_2d", "binary_2d"], device, edgesize=16)
    assert set(out) == {"gaussian_2d", "binary_2d", "rotations", "voxel_size", "frame_index"}


def test_output_types_constant():
    assert set(OUTPUT_TYPES) == {"coordinates_3d", "delta_3d", "delta_2d", "gaussian_3d",
                                 "gaussian_2d", "binary_3d", "binary_2d", "numbers",
                                 "heatmap_2d", "element_heatmap_2d", "column_map_2d"}


# ------------------------------------------------------------------------------ frames
@pytest.mark.parametrize("framing,extra", [("image", {}), ("structure", {}),
                                           ("fixed", {"pixel_size": 0.2})])
def test_multiframe_metadata_and_images(framing, extra, device):
    obj, frames = structure("multi")
    st = as_structure(obj, name="multi-particle")
    n_rot = 3
    kw = dict(edgesize=48, framing=framing, z_exponent=1.7, **extra)
    s = _settings(**kw)
    out = run(st, n_rot, ["coordinates_3d", "gaussian_2d"], device, seed=11, stack=2, **kw)
    counts = [len(p) for p, _ in frames]
    assert len(set(counts)) == len(counts), "frames should differ in atom count"
    np.testing.assert_array_equal(out["frame_index"], np.repeat(np.arange(len(frames)), n_rot))
    np.testing.assert_array_equal(out["n_atoms"], np.repeat(counts, n_rot))
    for f, (pos, numbers) in enumerate(frames):
        rots = rotation_matrices(n_rot, seed=11, name="multi-particle", frame_index=f, stack=2)
        np.testing.assert_array_equal(out["rotations"][f * n_rot:(f + 1) * n_rot], rots)
        vs_frame = []
        for r in range(n_rot):
            k = f * n_rot + r
            u, vs = _pixel_coords(pos, out["rotations"][k], s)
            vs_frame.append(vs)
            assert out["voxel_size"][k] == pytest.approx(vs, rel=1e-6)
            assert np.all(out["coordinates_3d"][k, len(pos):] == -1)
            _resolve_ties(u, out["coordinates_3d"][k, :len(pos)])
            ref = analytic_gaussian_2d(u, numbers.astype(float) ** 1.7, s["gauss_sigma"] / vs,
                                       s["edgesize"])
            assert_image_close(out["gaussian_2d"][k], ref, s, f"frame {f} rotation {r}")
        if framing != "image":  # one scale per frame
            assert np.ptp(vs_frame) < 1e-6 * vs_frame[0]


def test_structure_framing_keeps_every_rotation_inside(device):
    """framing='structure': the bounding sphere fits, so every atom of every view is inside
    [padxyz/voxel_size, E-1-padxyz/voxel_size] on all three axes."""
    obj, _ = structure("mixed55")
    out = run(obj, 16, ["coordinates_3d"], device, edgesize=64, framing="structure")
    c = out["coordinates_3d"].astype(float)
    margin = 1.5 / out["voxel_size"][:, None, None] - 0.5
    assert np.all(c >= margin - 1e-6) and np.all(c <= 63 - margin + 1e-6)


# ------------------------------------------------------------------------------ batching
OUTPUTS_ALL = ["coordinates_3d", "delta_2d", "gaussian_2d", "gaussian_3d", "binary_3d",
               "binary_2d"]


@pytest.mark.parametrize("legacy", [False, True], ids=["subpixel", "legacy"])
def test_batch_size_does_not_change_bytes(legacy, device):
    obj, _ = structure("multi")
    kw = {"edgesize": 24, "legacy": legacy, "seed": 3}
    ref = run(obj, 5, OUTPUTS_ALL, device, batch_size=None, **kw)
    for bs in (1, 7):
        out = run(obj, 5, OUTPUTS_ALL, device, batch_size=bs, **kw)
        assert set(out) == set(ref)
        for key in ref:
            np.testing.assert_array_equal(out[key], ref[key], err_msg=f"{key} batch_size={bs}")


def test_start_stop_subranges(device):
    obj, _ = structure("multi")
    kw = {"edgesize": 24, "seed": 4}
    whole = run(obj, 5, OUTPUTS_ALL, device, **kw)
    for start, stop in [(0, 1), (4, 11), (5, 10), (14, 15)]:
        part = run(obj, 5, OUTPUTS_ALL, device, start=start, stop=stop, batch_size=3, **kw)
        for key in whole:
            np.testing.assert_array_equal(part[key], whole[key][start:stop],
                                          err_msg=f"{key} [{start}, {stop})")
    renderer = Renderer(RenderSettings(edgesize=24), OUTPUTS_ALL, device)
    try:
        batches = list(renderer.iter_batches(obj, 5, seed=4, batch_size=4))
    finally:
        renderer.close()
    assert [len(b["rotations"]) for b in batches] == [4, 4, 4, 3]
    for key in whole:
        np.testing.assert_array_equal(np.concatenate([b[key] for b in batches]), whole[key])


def test_render_function_matches_renderer(device):
    obj, _ = structure("au13")
    a = render(obj, n_rotation=4, output_types=["gaussian_2d"], seed=2, device=device,
               edgesize=32)
    b = run(obj, 4, ["gaussian_2d"], device, seed=2, edgesize=32)
    for key in b:
        np.testing.assert_array_equal(a[key], b[key])


def test_seed_and_stack_change_views(device):
    obj, _ = structure("au13")
    base = render(obj, 3, ["gaussian_2d"], seed=0, stack=0, device=device, edgesize=32)
    for kw in ({"seed": 1, "stack": 0}, {"seed": 0, "stack": 1}):
        other = render(obj, 3, ["gaussian_2d"], device=device, edgesize=32, **kw)
        np.testing.assert_array_equal(other["gaussian_2d"][0], base["gaussian_2d"][0])  # R0
        assert not np.array_equal(other["gaussian_2d"][1:], base["gaussian_2d"][1:])


# ------------------------------------------------------------------------------ devices
@pytest.mark.gpu
def test_gpu_matches_cpu():
    reason = gpu_skip_reason()
    if reason:
        pytest.skip(reason)
    obj, _ = structure("au147")
    kw = {"edgesize": 64, "seed": 5}
    outputs = ["coordinates_3d", "gaussian_2d", "gaussian_3d", "binary_2d"]
    cpu = run(obj, 6, outputs, "cpu", **kw)
    gpu = run(obj, 6, outputs, "gpu", **kw)
    np.testing.assert_array_equal(cpu["rotations"], gpu["rotations"])
    for key in ("gaussian_2d", "gaussian_3d"):
        assert np.abs(cpu[key].astype(int) - gpu[key].astype(int)).max() <= 1, key
    assert np.abs(cpu["coordinates_3d"].astype(int) - gpu["coordinates_3d"]).max() <= 1


# ------------------------------------------------------------------------------ settings
@pytest.mark.parametrize("bad", [
    {"framing": "fixed"}, {"normalization": "fixed"}, {"bitrate": 12}, {"edgesize": 1},
    {"framing": "sphere"}, {"gauss_sigma": 0.0},
])
def test_invalid_settings_rejected(bad):
    with pytest.raises(ValueError):
        RenderSettings(**bad)


def test_unknown_output_type_rejected():
    with pytest.raises(ValueError):
        render(structure("single")[0], 1, ["gaussian_4d"], device="cpu")


# ------------------------------------------------------------------------------ edge cases
def test_far_atoms_do_not_wrap_into_view(device):
    """framing='fixed' with atoms ±65,536 px away (an atom that flew off in MD, say): their
    int16 coordinates must not wrap into the field of view."""
    pos = np.array([[0.0, 0.0, 0.0], [6553.83, 0.0, 0.0], [13107.2, 0.0, 0.0]])
    st = as_structure(pos, symbols=["Au"] * 3, name="far")
    out = run(st, 1, ["coordinates_3d", "delta_3d", "delta_2d"], device, edgesize=16,
              framing="fixed", pixel_size=0.1)
    u, _ = frame_pixel_coords(pos, out["rotations"][0], "fixed", edgesize=16, pixel_size=0.1)
    want = delta_reference(np.rint(u), 16, 3)
    assert want.sum() == 1
    np.testing.assert_array_equal(out["delta_3d"][0], want)
    np.testing.assert_array_equal(out["delta_2d"][0], want.any(axis=2))
    far = np.abs(u).max(axis=1) > 1000
    c = out["coordinates_3d"][0][far].astype(int)
    assert np.all(np.any((c < 0) | (c >= 16), axis=1)), f"far atoms stored in view: {c}"


_ZERO_EXTENT = """
import numpy as np
from xyz2image_gpu import render
from xyz2image_gpu.structures import as_structure
st = as_structure(np.zeros((1, 3)), symbols=["Au"])
try:
    out = render(st, 2, {outputs!r}, device={device!r}, edgesize=16, padxyz=0.0,
                 framing={framing!r})
except ValueError as exc:
    print("ValueError", exc)
else:
    assert np.all(np.isfinite(out["voxel_size"])) and np.all(out["voxel_size"] > 0), out
"""


@pytest.mark.parametrize("framing", ["image", "structure"])
def test_zero_extent_is_rejected_cleanly(framing, device):
    """A one-atom structure with padxyz=0 has no field of view: a clear ValueError (or a
    finite fallback), never a crash. Run in a subprocess since the failure was a segfault."""
    outputs = ["gaussian_2d", "binary_2d", "coordinates_3d"]
    code = _ZERO_EXTENT.format(outputs=outputs, device=device, framing=framing)
    proc = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, f"rc={proc.returncode}: {proc.stderr[-800:]}"


def test_sub_pixel_sigma_gives_empty_image_on_every_kernel(device):
    """A Gaussian far narrower than a pixel, centred between pixels (atoms at pixel
    coordinates 0.5 and 2.5), leaves every pixel at exactly 0: the stored image is all
    zeros on every kernel, not the profile tails scaled to full range."""
    st = as_structure(np.array([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]), symbols=["Au"] * 2)
    kernels = ["numpy", "auto"] if device == "cpu" else ["auto"]
    for kernel in kernels:
        r = Renderer(RenderSettings(edgesize=4, gauss_sigma=0.001, padxyz=0.25), ["gaussian_2d"],
                     device, cpu_kernel=kernel)
        with pytest.warns(UserWarning, match="too coarse to show the atoms"):
            img = r.render(st, 1)["gaussian_2d"]
        r.close()
        assert img.max() == 0, (kernel, img)


def test_device_batches_match_host_batches(device):
    """iter_batches(to_host=False) keeps arrays on the backend (for training loops fed from
    the GPU) and holds the same values as the host batches."""
    st = as_structure(Atoms("Au4", positions=[[0, 0, 0], [2, 0, 0], [0, 2, 0], [0, 0, 2]]))
    r = Renderer(RenderSettings(edgesize=24), ["gaussian_2d", "coordinates_3d"], device)
    host = next(r.iter_batches(st, 6, seed=3))
    dev = next(r.iter_batches(st, 6, seed=3, to_host=False))
    r.close()
    assert set(host) == set(dev)
    for key, value in dev.items():
        assert type(value).__module__.split(".")[0] == r.backend.xp.__name__, key
        np.testing.assert_array_equal(r.backend.to_host(value), host[key], err_msg=key)


# ------------------------------------------------------------------------------ threads
THREAD_CASES = {
    "plain": ({"edgesize": 40}, ["gaussian_2d", "gaussian_3d", "coordinates_3d", "delta_3d"]),
    # edgesize 128: the NumPy path splits a batch of 17 into steps of at most 10 images
    "augmented": ({"edgesize": 128, "dose": 2e3, "read_noise": 0.01, "phonon_jitter": True,
                   "scan_jitter": 0.05}, ["gaussian_2d", "coordinates_3d"]),
}


@pytest.mark.parametrize("kernel", ["auto", "numpy"])
@pytest.mark.parametrize("case", list(THREAD_CASES))
def test_thread_count_does_not_change_bytes(case, kernel):
    """The renderer's threads split a batch into steps that each run the whole pipeline (and
    noise on their own thread): the bytes match one thread, and no step waits on a task of
    its own full pool (that deadlocked once, with noise on the NumPy path). Run on a daemon
    thread so that a hang fails the test instead of stalling the suite."""
    extra, outputs = THREAD_CASES[case]
    obj, _ = structure("au13")
    settings = RenderSettings(**extra)
    results: dict[int, dict] = {}

    def render_all() -> None:
        for threads in (1, 2, 3):
            r = Renderer(settings, outputs, "cpu", threads=threads, cpu_kernel=kernel)
            try:
                results[threads] = r.render(obj, 23, seed=5, batch_size=17)
            finally:
                r.close()

    import threading

    worker = threading.Thread(target=render_all, daemon=True)
    worker.start()
    worker.join(timeout=60)
    assert not worker.is_alive(), "rendering on several threads did not finish (deadlock?)"
    assert set(results) == {1, 2, 3}
    for threads in (2, 3):
        assert set(results[threads]) == set(results[1])
        for key, value in results[1].items():
            np.testing.assert_array_equal(results[threads][key], value,
                                          err_msg=f"{key}, {threads} threads")


@pytest.mark.skipif(not renderers.compiled_kernel_available(), reason="_splat not built")
@pytest.mark.parametrize("ndim", [2, 3])
def test_compiled_profiles_match_direct_sum_over_widths(ndim):
    """The kernel builds each atom's profile from two exp calls and recurrences (short
    windows: exp per pixel). Float images against a float64 sum of exp over every pixel,
    for widths from a fifth of a pixel to 12 px, atoms inside, on and beyond the edges."""
    rng = np.random.default_rng(7)
    e = 48 if ndim == 2 else 20
    n = 40
    sigmas = np.array([0.2, 0.31, 0.5, 0.9, 1.7, 2.56, 4.0, 7.5, 12.0])
    coords = rng.uniform(-6, e + 6, size=(len(sigmas), n, 3)).astype(np.float32)
    weights = rng.uniform(0.2, 3.0, size=(len(sigmas), n)).astype(np.float32)
    sig = np.repeat(sigmas[:, None], n, axis=1).astype(np.float32)
    sig[:, ::5] *= 1.5  # a second width inside the same image
    got = renderers.splat_gaussian(coords, weights, sig, e, ndim, normalization="float",
                                   bitrate=8)
    grid = np.arange(e, dtype=np.float64)
    for b in range(len(sigmas)):
        ref = np.zeros((e,) * ndim)
        for a in range(n):
            s2 = 2.0 * float(sig[b, a]) ** 2
            prof = [np.exp(-(grid - float(coords[b, a, k])) ** 2 / s2) for k in range(ndim)]
            term = float(weights[b, a]) * prof[0][:, None] * prof[1][None, :]
            if ndim == 3:
                term = term[:, :, None] * prof[2][None, None, :]
            ref += term
        err = np.abs(got[b].astype(np.float64) - ref).max()
        assert err <= 2e-6 * max(ref.max(), 1e-30), (sigmas[b], err, ref.max())


@pytest.mark.skipif(not renderers.compiled_kernel_available(), reason="_splat not built")
def test_compiled_kernel_fills_given_array_and_checks_it():
    coords = np.full((2, 1, 3), 4.0, dtype=np.float32)
    w = np.ones((2, 1), dtype=np.float32)
    s = np.full((2, 1), 1.0, dtype=np.float32)
    into = np.zeros((2, 9, 9), dtype=np.uint8)
    back = renderers.splat_gaussian(coords, w, s, 9, 2, normalization="image", bitrate=8,
                                    out=into)
    assert back is into and into[:, 4, 4].tolist() == [255, 255]
    for bad in (np.zeros((2, 9, 9), np.uint16), np.zeros((2, 9, 8), np.uint8),
                np.zeros((2, 9, 18), np.uint8)[:, :, ::2]):
        with pytest.raises(ValueError, match="out must be"):
            renderers.splat_gaussian(coords, w, s, 9, 2, normalization="image", bitrate=8,
                                     out=bad)


@pytest.mark.skipif(not renderers.compiled_kernel_available("column"), reason="_splat not built")
@pytest.mark.parametrize(("n", "extent"), [(60, 40.0), (30, 40.0), (300, 400.0)])
def test_compiled_column_values_match_every_pair(n, extent):
    """The compiled column sum (terms below exp(-25) of their peak left out; beyond 32 atoms
    only the pairs a sweep along x finds within reach) against a float64 sum over every
    pair and probe component: small, dense and wide (most pairs out of reach) batches."""
    rng = np.random.default_rng(3)
    b, g = 3, 2
    coords = rng.uniform(0, extent, size=(b, n, 3)).astype(np.float32)
    coords[:, :10, :2] = coords[:, 10:20, :2] + 0.01  # columns of stacked atoms
    amps = rng.uniform(0.1, 2.0, size=(b, n, g)).astype(np.float32)
    amps[:, -5:] = 0.0  # padding atoms
    sig2 = rng.uniform(1.0, 16.0, size=(b, n, g)).astype(np.float32)
    got = renderers.column_values_compiled(coords, amps, sig2)
    c = coords.astype(np.float64)
    d2 = ((c[:, :, None, :2] - c[:, None, :, :2]) ** 2).sum(-1)
    want = (amps[:, None, :, :] * np.exp(-d2[..., None] / (2.0 * sig2[:, None, :, :]))).sum(
        axis=(2, 3))
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-9)
    assert want.max() > 2 * want.min()  # the columns made a difference


@pytest.mark.skipif(not renderers.compiled_kernel_available("quantise"), reason="_splat not built")
@pytest.mark.parametrize("normalization,bitrate,scale", [
    ("image", 8, None), ("image", 16, None), ("fixed", 8, 40.0), ("fixed", 16, 900.0)])
def test_compiled_quantise_matches_numpy(normalization, bitrate, scale):
    """Augmented images are quantised by the compiled store loop: the same bytes as
    renderers.quantise (NumPy), with an all-zero image, negative values (read noise) and
    values past the top among them."""
    rng = np.random.default_rng(11)
    images = rng.normal(0.3, 0.4, size=(5, 33, 31)).astype(np.float32)
    images[1] = 0.0
    images[2, 0, 0] = 1e4  # clipped at the top in fixed mode
    images[3] = np.round(images[3] * 8) / 8  # exact halves after scaling: ties to even
    kw = {"normalization": normalization, "bitrate": bitrate, "intensity_scale": scale}
    got = renderers.quantise_compiled(images, **kw)
    want = renderers.quantise(np, images, **kw)
    assert got.dtype == want.dtype and got.shape == want.shape
    diff = np.abs(got.astype(np.int64) - want.astype(np.int64))
    assert diff.max() <= (0 if normalization == "fixed" else 1)
    assert (diff > 0).mean() < 1e-3
    assert got[1].max() == 0


@pytest.mark.skipif(not renderers.compiled_kernel_available("binary"), reason="_splat not built")
@pytest.mark.parametrize("axes", [2, 3])
def test_compiled_binary_labels_equal_numpy_bytes(axes):
    """Binary labels from the compiled kernel against the NumPy path's splat: the same
    float32 test, so the same bytes, with atoms on voxel centres and half-way between
    (radius exactly reaching voxels), beyond the edges, invalid, or with no ball."""
    rng = np.random.default_rng(5)
    e = 20
    b, n = 6, 30
    centres = rng.uniform(-3, e + 3, size=(b, n, axes)).astype(np.float32)
    centres[:, :5] = np.round(centres[:, :5])  # on voxel centres
    centres[:, 5:10] = np.floor(centres[:, 5:10]) + 0.5  # half-way
    r2 = rng.uniform(0.5, 9.0, size=(b, n)).astype(np.float32)
    r2[:, :10] = np.float32(1.0)  # radius 1 from a voxel centre: ties at distance exactly 1
    r2[:, 10:12] = -1.0  # draws nothing
    valid = np.ones((b, n), dtype=bool)
    valid[:, -3:] = False
    got = _splat_spheres_compiled(centres, r2, valid, e, axes)
    want = _splat_spheres(np, centres, r2, valid, e, axes, max_elements=1 << 20)
    assert got.dtype == bool and got.shape == want.shape
    np.testing.assert_array_equal(got, want)
    assert want.sum() > 50


def test_many_small_ranges_of_a_stack_prepare_its_frames_once(monkeypatch):
    """A consumer that renders a stack range by range (the PyTorch dataset: one call per
    batch) gets what one call gives, and the frames are prepared once per structure, seed
    and stack, not per call."""
    from xyz2image_gpu.pipeline import engine

    calls = []
    real = engine.frame_data
    monkeypatch.setattr(engine, "frame_data",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    st = as_structure(icosahedron("Au", 3))
    two = as_structure(st, name="other")
    with Renderer(RenderSettings(edgesize=16), ["gaussian_2d", "coordinates_3d"], "cpu") as r:
        want = r.render(st, 10, seed=1, stack=2)
        assert len(calls) == 1
        for b0 in range(0, 10, 3):
            got = r.render(st, 10, seed=1, stack=2, start=b0, stop=min(10, b0 + 3))
            for key, value in got.items():
                np.testing.assert_array_equal(value, want[key][b0 : b0 + 3], err_msg=key)
        assert len(calls) == 1
        r.render(st, 10, seed=1, stack=3, stop=1)  # another stack: its own rotations
        r.render(two, 10, seed=1, stack=2, stop=1)  # another structure
        assert len(calls) == 3
        other = r.render(st, 10, seed=1, stack=3)
        assert not np.array_equal(other["rotations"], want["rotations"])
