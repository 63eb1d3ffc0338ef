"""The labels networks train on: ``numbers``, ``heatmap_2d``, ``element_heatmap_2d`` (with
``elements``) and ``column_map_2d``, each checked against an independent reference: the
pixel coordinates of :func:`reference.frame_pixel_coords`, analytic sums of Gaussians,
direct counts of atoms per pixel and per column, and ASE's reader for the atomic numbers;
and the 2-D labels (these maps, ``delta_2d``, ``binary_2d``) through a distorted scan,
against per-row references from the stored scan offsets.
"""

from __future__ import annotations

import numpy as np
import pytest
from ase_compat import Atoms
from reference import analytic_gaussian_2d, frame_pixel_coords, icosahedron

from xyz2image_gpu import Renderer, RenderSettings, as_structure, render

MAPS = ["heatmap_2d", "element_heatmap_2d", "column_map_2d"]
LABELS = ["numbers", *MAPS]


def _mixed(shells: int, seed: int, symbols=("Au", "Pd", "Cu")) -> Atoms:
    atoms = icosahedron("Pd", shells)
    rng = np.random.default_rng(seed)
    atoms.set_chemical_symbols(rng.choice(list(symbols), len(atoms)))
    atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
    return atoms


def _frames():
    """Two frames with different atom counts and elements (Cu only in the second)."""
    return [_mixed(2, 1, ("Au", "Pd")), _mixed(3, 2)]


def _render(obj, outputs, device="cpu", *, n_rotation=3, cpu_kernel="auto", **settings):
    with Renderer(RenderSettings(**settings), outputs, device, cpu_kernel=cpu_kernel) as r:
        return r.render(obj, n_rotation, seed=3)


def _pixel_coords(frames, out, k, **framing):
    """Reference pixel coordinates (N, 3) and Å per pixel of image ``k``."""
    atoms = frames[int(out["frame_index"][k])]
    u, voxel = frame_pixel_coords(atoms.positions, out["rotations"][k], **framing)
    return u, voxel, atoms.numbers


def _direct_counts(u, half, edgesize, offsets=None):
    """Atoms per pixel, counted atom by atom: pixel (i, j) holds atom a when
    ``-half < i - x_a <= half`` and the same along y (``offsets`` (E, 2) px: row i sees the
    atoms shifted by them)."""
    counts = np.zeros((edgesize, edgesize), dtype=np.int64)
    for i in range(edgesize):
        ox, oy = (0.0, 0.0) if offsets is None else offsets[i]
        for x, y in u[:, :2]:
            if -half < i - (x + ox) <= half:
                for j in range(edgesize):
                    if -half < j - (y + oy) <= half:
                        counts[i, j] += 1
    return counts


def _boundary_atoms(u, half, tol=1e-3):
    """Atoms within ``tol`` px of a window boundary, whose pixel float32 may decide either
    way (the test skips the pixels they touch)."""
    frac = (np.asarray(u[:, :2]) - half) % 1.0
    return np.any((frac < tol) | (frac > 1 - tol), axis=1)


# -------------------------------------------------------------------------- heatmaps
@pytest.mark.parametrize("cpu_kernel", ["auto", "numpy"])
@pytest.mark.parametrize("framing", [{"framing": "image"},
                                     {"framing": "fixed", "pixel_size": 0.45}])
def test_heatmaps_are_analytic_sums_of_unit_gaussians(device, cpu_kernel, framing):
    """heatmap_2d is sum_a exp(-|p - c_a|² / 2s²) at the reference pixel positions (peak 1
    per isolated atom, whatever the element's weight in the image); each channel of
    element_heatmap_2d sums its element's atoms only, in the order ``elements`` records,
    and the channels add up to heatmap_2d."""
    frames = _frames()
    e, sigma = 28, 0.3
    out = _render(frames, MAPS, device, cpu_kernel=cpu_kernel, edgesize=e, heatmap_sigma=sigma,
                  z_exponent=1.7, **framing)
    assert out["heatmap_2d"].dtype == np.float32
    np.testing.assert_array_equal(out["elements"], np.tile([29, 46, 79], (6, 1)))
    for k in range(6):
        u, voxel, numbers = _pixel_coords(frames, out, k, edgesize=e, **framing)
        want = analytic_gaussian_2d(u, 1.0, sigma / voxel, e)
        np.testing.assert_allclose(out["heatmap_2d"][k], want, rtol=1e-4, atol=1e-4)
        for c, z in enumerate(out["elements"][k]):
            mine = numbers == z
            want_c = analytic_gaussian_2d(u[mine], 1.0, sigma / voxel, e) if mine.any() else 0
            np.testing.assert_allclose(out["element_heatmap_2d"][k, c], want_c, rtol=1e-4,
                                       atol=1e-4, err_msg=f"image {k}, Z={z}")
        np.testing.assert_allclose(out["element_heatmap_2d"][k].sum(axis=0),
                                   out["heatmap_2d"][k], rtol=1e-5, atol=1e-6)
    # frame 0 has no Cu: its channel is empty there, present in frame 1's images
    assert out["element_heatmap_2d"][:3, 0].max() == 0
    assert out["element_heatmap_2d"][3:, 0].max() > 0.5


def test_legacy_mode_draws_the_labels_at_its_rounded_positions():
    """Legacy mode renders from atoms rounded to voxels; its heatmap and column map use the
    same rounded positions (the image's geometry)."""
    frames = _frames()
    e = 24
    out = _render(frames, ["gaussian_2d", "heatmap_2d", "column_map_2d"], edgesize=e,
                  legacy=True, heatmap_sigma=0.3)
    for k in range(6):
        u, voxel, _ = _pixel_coords(frames, out, k, edgesize=e)
        rounded = np.rint(u)
        np.testing.assert_allclose(out["heatmap_2d"][k],
                                   analytic_gaussian_2d(rounded, 1.0, 0.3 / voxel, e),
                                   rtol=1e-4, atol=1e-4)
        want = np.zeros((e, e), dtype=int)
        np.add.at(want, (rounded[:, 0].astype(int), rounded[:, 1].astype(int)), 1)
        np.testing.assert_array_equal(out["column_map_2d"][k], want)


def test_float16_heatmaps_are_the_float32_ones_rounded(device):
    frames = _frames()
    common = {"edgesize": 20, "scan_jitter": 0.1}
    wide = _render(frames, ["heatmap_2d", "element_heatmap_2d"], device, **common)
    half = _render(frames, ["heatmap_2d", "element_heatmap_2d"], device,
                   heatmap_dtype="float16", **common)
    assert set(half) == set(wide)
    for key in ("heatmap_2d", "heatmap_2d_clean", "element_heatmap_2d",
                "element_heatmap_2d_clean"):
        assert half[key].dtype == np.float16, key
        # rounded to nearest; below float16's smallest normal number (2**-14), 0
        want = np.where(wide[key] < 2.0**-14, 0, wide[key]).astype(np.float16)
        np.testing.assert_array_equal(half[key], want, err_msg=key)
        assert (half[key] > 0).sum() > 0.2 * half[key].size
    with pytest.raises(ValueError, match="heatmap_dtype"):
        RenderSettings(heatmap_dtype="float64")


def test_an_isolated_atom_peaks_at_one():
    out = render(np.zeros((1, 3)), numbers=[79], output_types=["heatmap_2d"], edgesize=33,
                 framing="fixed", pixel_size=0.2, heatmap_sigma=0.3, device="cpu")
    assert out["heatmap_2d"].max() == pytest.approx(1.0, abs=1e-6)
    assert np.unravel_index(out["heatmap_2d"][0].argmax(), (33, 33)) == (16, 16)


def test_channel_elements_choose_and_order_the_channels():
    """``channel_elements`` fixes the channels whatever the structure holds (sorted by Z);
    an element it leaves out gets no channel, one absent from the structure an empty one."""
    frames = _frames()
    out = _render(frames, ["element_heatmap_2d", "heatmap_2d"], edgesize=20, n_rotation=1,
                  channel_elements="Pt,Au")
    np.testing.assert_array_equal(out["elements"], [[78, 79], [78, 79]])
    assert out["element_heatmap_2d"].shape == (2, 2, 20, 20)
    assert out["element_heatmap_2d"][:, 0].max() == 0  # no Pt anywhere
    for k in range(2):
        u, voxel, numbers = _pixel_coords(frames, out, k, edgesize=20)
        want = analytic_gaussian_2d(u[numbers == 79], 1.0, 0.25 / voxel, 20)
        np.testing.assert_allclose(out["element_heatmap_2d"][k, 1], want, rtol=1e-4,
                                   atol=1e-4)
    with pytest.raises(ValueError, match="channel_elements"):
        RenderSettings(channel_elements="Au,Qq")
    for bad in ({"heatmap_sigma": 0}, {"column_radius": -1}, {"heatmap_sigma": float("nan")}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            RenderSettings(**bad)


# ------------------------------------------------------------------------ column map
@pytest.mark.parametrize("cpu_kernel", ["auto", "numpy"])
@pytest.mark.parametrize("radius", [0.0, 0.7])
def test_column_map_counts_atoms_per_pixel_window(device, cpu_kernel, radius):
    """column_map_2d against a count atom by atom; with radius 0 each atom is in exactly
    one pixel, its nearest, so every image's map sums to its atom count."""
    frames = _frames()
    e = 24
    out = _render(frames, ["column_map_2d"], device, cpu_kernel=cpu_kernel, edgesize=e,
                  column_radius=radius)
    assert out["column_map_2d"].dtype == np.uint16
    for k in range(6):
        u, voxel, _ = _pixel_coords(frames, out, k, edgesize=e)
        half = max(radius / voxel, 0.5)
        want = _direct_counts(u, half, e)
        unsure = np.zeros((e, e), dtype=bool)
        for x, y in u[_boundary_atoms(u, half), :2]:  # float32 may decide these either way
            unsure[max(0, int(x - half) - 1):int(x + half) + 2,
                   max(0, int(y - half) - 1):int(y + half) + 2] = True
        np.testing.assert_array_equal(out["column_map_2d"][k][~unsure], want[~unsure])
        if radius == 0:
            assert out["column_map_2d"][k].sum() == len(u)
    if radius:
        assert out["column_map_2d"].max() > 1


def test_column_map_counts_the_atoms_of_each_column():
    """A crystal seen down its columns: 3 x 3 columns along the beam (z) holding 1..9 atoms.
    The map reads each column's atom count at the column's pixel, over a square of
    half-width ``column_radius``, and 0 between columns."""
    counts = np.arange(1, 10).reshape(3, 3)
    xy = np.array([0.0, 2.6, 5.1])
    positions = np.array([[xy[a], xy[b], 2.0 * z] for a in range(3) for b in range(3)
                          for z in range(counts[a, b])])
    e, pixel = 33, 0.25
    for radius in (0.0, 0.5):
        out = render(positions, numbers=np.full(len(positions), 79), n_rotation=1,
                     output_types=["column_map_2d"], edgesize=e, framing="fixed",
                     pixel_size=pixel, column_radius=radius, device="cpu")
        u, _ = frame_pixel_coords(positions, out["rotations"][0], "fixed", edgesize=e,
                                  pixel_size=pixel)
        image = out["column_map_2d"][0]
        half = max(radius / pixel, 0.5)
        covered = np.zeros((e, e), dtype=bool)
        for a in range(3):
            for b in range(3):
                x, y = u[np.all(np.isclose(positions[:, :2], [xy[a], xy[b]]), axis=1)][0, :2]
                # the pixels within half of the column, (x - half, x + half] along each axis
                rows = slice(int(np.floor(x - half)) + 1, int(np.floor(x + half)) + 1)
                cols = slice(int(np.floor(y - half)) + 1, int(np.floor(y + half)) + 1)
                assert rows.stop - rows.start == cols.stop - cols.start == round(2 * half)
                assert (image[rows, cols] == counts[a, b]).all(), (a, b, image[rows, cols])
                covered[rows, cols] = True
        assert (image[~covered] == 0).all()
        assert np.abs((u[:, :2] + half) % 1.0 - 0.5).max() < 0.45  # no atom on a boundary


# --------------------------------------------------------------------------- numbers
def test_numbers_match_ase_beside_the_coordinates(tmp_path):
    """numbers (int16) hold each atom's atomic number in coordinates_3d's rows, -1 in the
    padding rows of frames with fewer atoms; compared with ASE's reading of the file."""
    ase_io = pytest.importorskip("ase.io")
    path = tmp_path / "traj.xyz"
    small, large = _frames()
    ase_io.write(path, [small, large], format="extxyz")
    out = render(path, n_rotation=2, output_types=["numbers", "coordinates_3d"], edgesize=16,
                 device="cpu")
    read = ase_io.read(path, index=":")
    assert out["numbers"].dtype == np.int16 and out["numbers"].shape == (4, len(large))
    for k in range(4):
        n = int(out["n_atoms"][k])
        want = read[int(out["frame_index"][k])].numbers
        assert n == len(want)
        np.testing.assert_array_equal(out["numbers"][k, :n], want)
        assert (out["numbers"][k, n:] == -1).all()
        assert (out["coordinates_3d"][k, n:] == -1).all()
    assert (out["numbers"][:2, len(small):] == -1).all() and len(small) < len(large)


# --------------------------------------------------------------------- scan distortion
def _isolated_in_projection(u, apart=16.0):
    """The projected (x, y) of the atoms no other atom comes within ``apart`` pixels of in
    projection (a random orientation may stack two atoms of the 3-D structure)."""
    xy = np.asarray(u)[:, :2]
    d = np.sqrt(((xy[:, None] - xy[None]) ** 2).sum(-1)) + np.eye(len(xy)) * 1e9
    return xy[d.min(axis=1) > apart]


def _isolated_atoms():
    """Four Au atoms 7 Å apart: each one's peak is its own."""
    return np.array([[0.0, 0.0, 0.0], [7.0, 0.4, 1.0], [0.3, 7.2, -1.0], [7.1, 7.3, 0.5]])


@pytest.mark.parametrize("cpu_kernel", ["auto", "numpy"])
def test_label_maps_follow_the_distorted_scan(device, cpu_kernel):
    """With scan jitter and drift the maps are drawn through the image's own scan: each
    isolated atom's heatmap peak sits at the distorted image's peak, the column map counts
    the atoms where the scan's offsets put them, and ``<name>_clean`` keeps the maps of
    the undistorted geometry (equal to a render without the distortion)."""
    positions = _isolated_atoms()
    e, pixel = 48, 0.25
    common = {"edgesize": e, "framing": "fixed", "pixel_size": pixel,
              "normalization": "float", "heatmap_sigma": 0.2}
    outputs = ["gaussian_2d", *MAPS]
    structure = as_structure(positions, numbers=[79] * 4)
    out = _render(structure, outputs, device, cpu_kernel=cpu_kernel, n_rotation=4,
                  scan_jitter=0.15, drift=0.6, **common)
    clean = _render(structure, outputs, device, cpu_kernel=cpu_kernel, n_rotation=4, **common)
    for name in MAPS:
        np.testing.assert_array_equal(out[name + "_clean"], clean[name], err_msg=name)
    assert not np.allclose(out["heatmap_2d"], clean["heatmap_2d"], atol=1e-2)
    checked = 0
    for k in range(4):
        u, voxel = frame_pixel_coords(positions, out["rotations"][k], "fixed", edgesize=e,
                                      pixel_size=pixel)
        offsets = out["scan_offsets"][k].astype(np.float64) / voxel
        for x, y in _isolated_in_projection(u):
            window = (slice(max(0, int(x) - 5), int(x) + 6), slice(max(0, int(y) - 5),
                                                                   int(y) + 6))
            image = out["gaussian_2d"][k][window]
            heat = out["heatmap_2d"][k][window]
            assert np.unravel_index(heat.argmax(), heat.shape) == np.unravel_index(
                image.argmax(), image.shape)
            checked += 1
        want = _direct_counts(u, 0.5, e, offsets)
        np.testing.assert_array_equal(out["column_map_2d"][k], want)
        np.testing.assert_allclose(out["element_heatmap_2d"][k, 0], out["heatmap_2d"][k],
                                   rtol=1e-6, atol=1e-7)
    assert checked >= 8


def test_distorted_maps_equal_the_distorted_image_of_unit_weights():
    """With the image's own width, weight 1 (z_exponent 0) and float images, the distorted
    heatmap is the distorted image, pixel for pixel, and the clean ones agree too."""
    positions = _isolated_atoms()
    out = render(positions, numbers=[79] * 4, n_rotation=3,
                 output_types=["gaussian_2d", "heatmap_2d"], edgesize=40, framing="fixed",
                 pixel_size=0.3, normalization="float", z_exponent=0, gauss_sigma=0.35,
                 heatmap_sigma=0.35, scan_jitter=0.2, drift=0.5, device="cpu")
    np.testing.assert_allclose(out["heatmap_2d"], out["gaussian_2d"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["heatmap_2d_clean"], out["gaussian_2d_clean"], rtol=1e-5,
                               atol=1e-6)


def test_labels_keep_the_undisplaced_atoms_under_phonon_jitter_and_noise():
    """Phonon jitter moves the image's atoms and noise changes its pixels; the labels stay
    those of the undisplaced structure, as every label does."""
    frames = _frames()
    outputs = ["gaussian_2d", *LABELS]
    plain = _render(frames, outputs, edgesize=20)
    jittered = _render(frames, outputs, edgesize=20, phonon_jitter=True, dose=500.0)
    assert not np.array_equal(plain["gaussian_2d"], jittered["gaussian_2d"])
    for key in LABELS:
        np.testing.assert_array_equal(jittered[key], plain[key], err_msg=key)
    assert not any(key.endswith("_clean") and key != "gaussian_2d_clean" for key in jittered)


def test_maps_alone_carry_their_scan_offsets():
    """Without gaussian_2d the distorted maps still come with the offsets they were drawn
    through (and no image keys)."""
    out = render(_isolated_atoms(), numbers=[79] * 4, n_rotation=2,
                 output_types=["column_map_2d"], edgesize=24, scan_jitter=0.3,
                 device="cpu")
    assert set(out) == {"column_map_2d", "column_map_2d_clean", "scan_offsets", "rotations",
                        "voxel_size", "frame_index"}
    with_image = render(_isolated_atoms(), numbers=[79] * 4, n_rotation=2,
                        output_types=["column_map_2d", "gaussian_2d"], edgesize=24,
                        scan_jitter=0.3, device="cpu")
    np.testing.assert_array_equal(out["scan_offsets"], with_image["scan_offsets"])
    np.testing.assert_array_equal(out["column_map_2d"], with_image["column_map_2d"])


# ------------------------------------------------------------------- the GPU's branch
@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("settings, per_batch", [
    ({}, 1),
    ({"scan_jitter": 0.2, "drift": 0.4}, 1),  # the maps' distorted scan stays on the device
])
def test_gpu_labels_stay_on_the_device_and_match_the_numpy_path(settings, per_batch, fused,
                                                                monkeypatch):
    """On the GPU (the CuPy stand-in) the labels are computed on the device, heatmaps by the
    fused image kernel where it applies (by batched products with the kernel switched off),
    and a batch costs no host synchronisation beyond the wait for the batch handed over;
    the values are the NumPy path's."""
    from fake_cupy import FakeCupy, syncs_per_batch

    from xyz2image_gpu.backend import Backend
    from xyz2image_gpu.flags import NO_FUSED_KERNEL_ENV

    monkeypatch.setenv(NO_FUSED_KERNEL_ENV, "" if fused else "1")

    frames = _frames()
    common = RenderSettings(edgesize=20, **settings)
    outputs = [*LABELS, "delta_2d", "binary_2d"]
    with Renderer(common, outputs, "cpu", cpu_kernel="numpy") as cpu:
        want = cpu.render(frames, 4, seed=5)
    fake = FakeCupy()
    gpu = Renderer(common, outputs, Backend("cupy", fake, "stand-in"))
    kept: list[dict] = []
    counts = syncs_per_batch(fake, gpu.iter_batches(frames, 4, seed=5, batch_size=2), kept)
    gpu.close()
    assert counts[1:-1] == [per_batch] * (len(counts) - 2), fake.sync_log
    # no image is requested: a kernel launch draws the (undistorted, or _clean) heatmaps
    assert ("RawKernel xyz2image_gaussian" in fake.op_log) == fused
    got = {key: np.concatenate([batch[key] for batch in kept]) for key in kept[0]}
    assert set(got) == set(want)
    for key, value in want.items():
        joined = got[key]
        assert joined.dtype == value.dtype, key
        if "heatmap" in key:
            np.testing.assert_allclose(joined, value, rtol=1e-5, atol=1e-6, err_msg=key)
        else:
            np.testing.assert_array_equal(joined, value, err_msg=key)


# ----------------------------------------------------------------- the command line
def test_the_command_line_writes_the_labels(tmp_path):
    """``render --output-types`` with the labels writes them into each stack's .npz with
    ``elements`` (each file's own elements by default, the same for its every stack, or
    ``--elements``), the same bytes whatever the workers and batch size, and the values
    ``render`` returns for the same settings."""
    from click.testing import CliRunner

    from xyz2image_gpu.cli import cli
    from xyz2image_gpu.structures.examples import bundled_examples

    inputs = sorted(p for p in bundled_examples() if "pd" in p.name or "au147" in p.name)
    assert len(inputs) == 2
    common = ["--edgesize", "20", "--n-rotation", "3", "--n-stacks", "2", "--seed", "4",
              "--output-types", "numbers,heatmap_2d,element_heatmap_2d,column_map_2d",
              "--heatmap-sigma", "0.3", "--column-radius", "0.5", "--quiet", "--device", "cpu"]
    files = {}
    for workers, batch in [(1, 2), (2, 5)]:
        out = tmp_path / f"w{workers}b{batch}"
        result = CliRunner().invoke(cli, ["render", *map(str, inputs), "-o", str(out),
                                          "--workers", str(workers), "--batch-size",
                                          str(batch), *common])
        assert result.exit_code == 0, result.output
        files[workers] = {p.relative_to(out): p.read_bytes() for p in out.rglob("*.npz")}
    assert len(files[1]) == 4 and files[1] == files[2]
    for path in inputs:
        with np.load(tmp_path / "w1b2" / path.stem / "0001.npz") as npz:
            stored = dict(npz)
        want = render(path, 3, LABELS, stack=1, seed=4, edgesize=20, heatmap_sigma=0.3,
                      column_radius=0.5, device="cpu")
        assert set(stored) == set(want)
        for key, value in want.items():
            np.testing.assert_array_equal(stored[key], value, err_msg=key)
        numbers = np.unique(stored["numbers"][stored["numbers"] > 0])
        np.testing.assert_array_equal(stored["elements"], np.tile(numbers, (3, 1)))
    out = tmp_path / "chosen"
    result = CliRunner().invoke(cli, ["render", *map(str, inputs), "-o", str(out), *common,
                                      "--elements", "pd,AU,Pt"])
    assert result.exit_code == 0, result.output
    for path in inputs:
        with np.load(out / path.stem / "0000.npz") as npz:
            np.testing.assert_array_equal(npz["elements"], np.tile([46, 78, 79], (3, 1)))
            assert npz["element_heatmap_2d"].shape == (3, 3, 20, 20)


def test_a_folder_of_an_earlier_version_resumes(tmp_path):
    """A manifest written before the label settings existed lacks them: at their defaults
    they changed nothing, so the run resumes; other values are a mismatch naming them."""
    import json

    from click.testing import CliRunner

    from xyz2image_gpu.cli import cli
    from xyz2image_gpu.structures.examples import bundled_examples

    au147 = next(p for p in bundled_examples() if "au147" in p.name)
    out = tmp_path / "out"
    args = ["render", str(au147), "-o", str(out), "--edgesize", "16", "--n-rotation", "2",
            "--device", "cpu", "--workers", "1", "--output-types", "gaussian_2d,heatmap_2d"]
    assert CliRunner().invoke(cli, args).exit_code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    for key in ("heatmap_sigma", "column_radius", "channel_elements"):
        del manifest["parameters"][key]
    (out / "manifest.json").write_text(json.dumps(manifest))
    result = CliRunner().invoke(cli, [*args, "--heatmap-sigma", "0.3"])
    assert result.exit_code == 1 and "(heatmap_sigma: '(unset)' -> 0.3)" in result.output
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0 and "1 complete stacks skipped" in result.output


@pytest.mark.parametrize("half", [0.5, 1.0, 1.75, 2.3])
def test_column_map_rectangles_equal_the_box_product(half):
    """The CPU's rectangles and prefix sums decide every window edge as the GPU's product of
    box profiles does, ties included (coordinates on quarter pixels put many atoms exactly
    on an edge); padding atoms and atoms outside the image count nowhere."""
    from xyz2image_gpu.pipeline.kernels.maps import column_map_2d, column_map_2d_rectangles

    rng = np.random.default_rng(int(half * 4))
    e, b, n = 12, 5, 40
    coords = np.concatenate([np.round(rng.uniform(-3, e + 2, (b, n // 2, 3)) * 4) / 4,
                             rng.uniform(-3, e + 2, (b, n // 2, 3))], axis=1)
    coords = coords.astype(np.float32)
    weights = (rng.uniform(size=(b, n)) < 0.8).astype(np.float32)
    halves = np.full(b, half, dtype=np.float32)
    got = column_map_2d_rectangles(coords, weights, halves, e)
    want = column_map_2d(np, coords, weights, halves, e)
    np.testing.assert_array_equal(got, want)
    # and both against the count atom by atom, in float32 as the engine decides
    for k in range(b):
        mine = coords[k][weights[k] > 0]
        d = np.arange(e, dtype=np.float32)[:, None] - mine[:, 0][None, :]
        rows = (d > -halves[k]) & (d <= halves[k])
        d = np.arange(e, dtype=np.float32)[:, None] - mine[:, 1][None, :]
        cols = (d > -halves[k]) & (d <= halves[k])
        np.testing.assert_array_equal(got[k], rows.astype(int) @ cols.T.astype(int))


# ------------------------------------------------- delta_2d and binary_2d, distorted
def test_scanned_projections_with_zero_offsets_are_the_plain_ones():
    """The distorted delta_2d and binary_2d kernels make the same float32 decisions as the
    undistorted ones: with zero offsets, the same arrays (padding atoms and atoms outside
    the image included)."""
    from xyz2image_gpu.pipeline.kernels.labels import (
        binary_2d,
        binary_2d_scanned,
        delta_2d,
        delta_2d_scanned,
    )

    rng = np.random.default_rng(5)
    e, b, n = 14, 4, 30
    coords = rng.uniform(-2, e + 1, (b, n, 3)).astype(np.float32)
    valid = rng.uniform(size=(b, n)) < 0.8
    zero = np.zeros((b, e, 2), dtype=np.float32)
    radius = np.array([0.7, 1.0, 1.9, 2.6], dtype=np.float32)
    np.testing.assert_array_equal(delta_2d_scanned(np, coords, valid, zero, e),
                                  delta_2d(np, np.rint(coords), valid, e))
    np.testing.assert_array_equal(
        binary_2d_scanned(np, coords, radius, valid, zero, e, max_elements=1 << 14),
        binary_2d(np, coords, radius, valid, e, max_elements=1 << 14))


def test_delta_and_binary_2d_follow_the_distorted_scan(device):
    """With a distorted scan delta_2d and binary_2d are drawn as the image's rows see the
    atoms (checked pixel by pixel against a float64 reference from the reference pixel
    positions and the stored offsets), each isolated atom's image peak lies on its distorted
    binary_2d disc, and ``<name>_clean`` equals a render without the distortion."""
    positions = _isolated_atoms()
    e, pixel, r = 48, 0.25, 0.6
    common = {"edgesize": e, "framing": "fixed", "pixel_size": pixel,
              "normalization": "float", "binary_radius": r}
    outputs = ["gaussian_2d", "delta_2d", "binary_2d"]
    structure = as_structure(positions, numbers=[79] * 4)
    out = _render(structure, outputs, device, n_rotation=4, scan_jitter=0.3, drift=0.8,
                  **common)
    clean = _render(structure, outputs, device, n_rotation=4, **common)
    for name in ("delta_2d", "binary_2d"):
        np.testing.assert_array_equal(out[name + "_clean"], clean[name], err_msg=name)
    assert not np.array_equal(out["binary_2d"], clean["binary_2d"])
    grid = np.arange(e, dtype=np.float64)
    for k in range(4):
        u, voxel = frame_pixel_coords(positions, out["rotations"][k], "fixed", edgesize=e,
                                      pixel_size=pixel)
        offsets = out["scan_offsets"][k].astype(np.float64) / voxel
        delta = np.zeros((e, e), dtype=bool)
        disc = np.zeros((e, e), dtype=bool)
        unsure = np.zeros((e, e), dtype=bool)  # float32 may decide these either way
        tied = np.zeros(e, dtype=bool)
        for x, y, z in u:
            dz = z - np.clip(np.rint(z), 0, e - 1)
            r2 = (r / voxel) ** 2 - dz * dz
            for i in range(e):
                cx, cy = x + offsets[i, 0], y + offsets[i, 1]
                if np.rint(cx) == i and 0 <= np.rint(cy) < e:
                    delta[i, int(np.rint(cy))] = True
                tied[i] |= min(abs(cx % 1 - 0.5), abs(cy % 1 - 0.5)) < 1e-3
                d2 = (i - cx) ** 2 + (grid - cy) ** 2
                disc[i] |= d2 <= r2
                unsure[i] |= np.abs(d2 - r2) < 1e-3
        assert tied.sum() <= e // 4  # most rows are compared
        np.testing.assert_array_equal(out["delta_2d"][k][~tied], delta[~tied])
        np.testing.assert_array_equal(out["binary_2d"][k][~unsure], disc[~unsure])
        assert out["delta_2d"][k].sum() > 0
        # each atom's peak in the distorted image lies on its distorted disc
        for x, y in _isolated_in_projection(u):
            window = (slice(max(0, int(x) - 5), int(x) + 6), slice(max(0, int(y) - 5),
                                                                   int(y) + 6))
            image = out["gaussian_2d"][k][window]
            peak = np.unravel_index(image.argmax(), image.shape)
            assert out["binary_2d"][k][window][peak]


def test_the_labels_benchmark_runs(tmp_path):
    """benchmarks/bench_labels.py at a tiny size: every case measured and written."""
    import json

    import bench_labels  # benchmarks/, put on sys.path by conftest.py

    path = tmp_path / "labels.json"
    assert bench_labels.main(["--edgesize", "16", "--repeats", "1", "--target", "0.005",
                              "--json", str(path)]) == 0
    rows = json.loads(path.read_text())["rows"]
    assert len(rows) % len(bench_labels.CASES) == 0 and rows
    sizes = {row["outputs"]: row["label_bytes_per_image"] for row in rows}
    assert sizes["+ heatmap_2d"] > sizes["+ heatmap_2d, float16"] > sizes["+ numbers"] > 0
    assert all(row["images_per_s"] > 0 for row in rows)


def test_the_zarr_store_holds_the_same_labels(tmp_path):
    """``--format zarr`` stores every label key (``<name>_clean``, ``elements``,
    ``scan_offsets`` included) with the ``.npz``'s values."""
    zarr = pytest.importorskip("zarr", minversion="3")
    from click.testing import CliRunner

    from xyz2image_gpu.cli import cli
    from xyz2image_gpu.structures.examples import bundled_examples

    path = next(p for p in bundled_examples() if "aupd" in p.name)
    common = ["render", str(path), "--n-rotation", "3", "--edgesize", "16", "--quiet",
              "--device", "cpu", "--scan-jitter", "0.1", "--output-types",
              "numbers,heatmap_2d,element_heatmap_2d,column_map_2d,delta_2d,binary_2d"]
    for fmt in ("npz", "zarr"):
        result = CliRunner().invoke(cli, [*common, "--format", fmt, "-o", str(tmp_path / fmt)])
        assert result.exit_code == 0, result.output
    with np.load(tmp_path / "npz" / path.stem / "0000.npz") as npz:
        want = dict(npz)
    group = zarr.open(str(tmp_path / "zarr" / "stacks.zarr"), mode="r")[f"{path.stem}/0000"]
    assert sorted(group.array_keys()) == sorted(want)
    for key, value in want.items():
        got = group[key][...]
        assert got.dtype == value.dtype, key
        np.testing.assert_array_equal(got, value, err_msg=key)
