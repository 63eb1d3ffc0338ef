"""No silent garbage: geometry that no image can show, atoms outside the field of view, and
API counts that are not counts (issue 9, item 7)."""

from __future__ import annotations

import json
import math
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from test_gpu_branches import _FakeCupy

from xyz2image_gpu import Renderer, RenderSettings, as_structure, render
from xyz2image_gpu.backend import Backend
from xyz2image_gpu.cli import cli
from xyz2image_gpu.pipeline.framing import (
    REACH_SIGMAS,
    FieldReport,
    count_outside,
    narrow_field_problem,
    precision_problem,
    sampling_problem,
)
from xyz2image_gpu.structures.examples import bundled_examples
from xyz2image_gpu.structures.model import StructureError

AU147 = next(p for p in bundled_examples() if p.name == "au147_icosahedron.xyz")
FAST = ["--edgesize", "16", "--n-rotation", "2", "--workers", "1", "--device", "cpu",
        "--output-types", "gaussian_2d"]


def _xyz(path: Path, *frames: list[tuple[float, float, float]]) -> Path:
    """An XYZ file with one gold frame per list of positions (Å)."""
    lines: list[str] = []
    for k, frame in enumerate(frames):
        lines += [str(len(frame)), f"frame {k}"]
        lines += [f"Au {x!r} {y!r} {z!r}" for x, y, z in frame]
    path.write_text("\n".join(lines) + "\n")
    return path


def _cluster(n: int = 4) -> list[tuple[float, float, float]]:
    return [(2.5 * i, 2.5 * (i % 2), 0.0) for i in range(n)]


def _render(*args: str):
    return CliRunner().invoke(cli, ["render", *map(str, args)], catch_exceptions=False)


def _files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if p.is_file() and p.name not in ("manifest.json", ".lock"))


# ---------------------------------------------------------------- 1. geometry


@pytest.mark.parametrize("far", [
    [(0.0, 0.0, 0.0), (1e30, 0.0, 0.0)],
    [(1e308, 0.0, 0.0), (-1e308, 0.0, 0.0)],
    [(1e30, 1e30, 1e30), (1e30 + 2.5, 1e30, 1e30)],  # a cluster far away: atoms collapse
])
def test_huge_coordinates_are_refused_naming_file_and_frame(tmp_path, far):
    """Coordinates whose float64 spacing exceeds 1% of the Gaussian gave all-zero or NaN
    images; now a StructureError names the file and the frame (frame 1 here)."""
    path = _xyz(tmp_path / "huge.xyz", _cluster(), far)
    r = Renderer(RenderSettings(edgesize=16), ["gaussian_2d"], "cpu")
    with pytest.raises(StructureError, match="coordinates reach") as info:
        r.render(path, 2)
    assert info.value.path == str(path) and info.value.frame == 1
    assert str(path) in str(info.value) and "frame 1" in str(info.value)


def test_precision_threshold_both_sides():
    """Refused where float64 spacing passes 1% of sigma (|x| >= 2**45 ≈ 3.5e13 Å for sigma 0.4 Å);
    any real structure, even one placed a kilometre away (1e13 Å), passes."""
    assert precision_problem(np.array([[1e13, 0.0, 0.0]]), 0.4) is None
    assert precision_problem(np.array([[-5e5, 2e5, 1.0]]), 0.05) is None
    assert precision_problem(np.array([[4e13, 0.0, 0.0]]), 0.4) is not None
    assert precision_problem(np.array([[1e30, 0.0, 0.0]]), 0.4) is not None


def test_overflowing_integer_positions_are_a_structure_error():
    """Python ints beyond float64 ended in a bare OverflowError traceback."""
    with pytest.raises(StructureError, match="not a numeric array"):
        as_structure([[10**400, 0, 0]], numbers=[79])


def test_atoms_far_apart_warn_in_the_api(tmp_path):
    """Atoms 10^6 Å apart at edgesize 16: every Gaussian falls between pixels and the images
    came out all zero without a word. The API still renders (a sub-pixel sigma is well
    defined) but warns, naming the file and frame; a FieldReport lists the frame."""
    path = _xyz(tmp_path / "far.xyz", [(0.0, 0.0, 0.0), (2.5, 0.0, 0.0), (1e6, 0.0, 0.0)])
    r = Renderer(RenderSettings(edgesize=16), ["gaussian_2d"], "cpu")
    with pytest.warns(UserWarning, match=r"far\.xyz, frame 0: .*come out blank"):
        out = r.render(path, 2)
    assert out["gaussian_2d"].max() == 0  # what the warning is about
    report = FieldReport()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # with a report: recorded, not warned
        r.render(path, 2, field_report=report)
    assert report.frames_blank == (0,) and "blank" in report.blank_reason
    with pytest.warns(UserWarning, match=r"far\.xyz, frame 0: .*blank"):
        render(path, 2, edgesize=16, device="cpu")


def test_atoms_far_apart_fail_the_file_in_the_cli(tmp_path):
    """The run fails that file (no stack marked complete, nothing left of it) and renders
    the others."""
    (tmp_path / "in").mkdir()
    far = _xyz(tmp_path / "in" / "far.xyz", [(0.0, 0.0, 0.0), (2.5, 0.0, 0.0), (1e6, 0.0, 0.0)])
    good = _xyz(tmp_path / "in" / "good.xyz", _cluster())
    out = tmp_path / "out"
    result = _render(far, good, "-o", out, *FAST)
    assert result.exit_code == 1
    assert f"{far}, frame 0: the field of view is too coarse" in result.output
    files = json.loads((out / "manifest.json").read_text())["files"]
    assert files["far"]["status"] == "failed" and files["far"]["completed_stacks"] == []
    assert files["good"]["status"] == "complete"
    assert _files(out) == ["good/0000.npz"]


@pytest.mark.parametrize("edgesize", [16, 128, 1024])
def test_sampling_threshold_passes_legitimate_extremes(edgesize):
    """A 100 nm gold particle (radius 500 Å, ~3e7 atoms), a 200 x 200 x 20 Å slab (~5e4
    atoms), a 13-atom cluster and a lone atom, at any edgesize 16-1024 and either framing,
    with sigma down to 0.1 Å: none is refused."""
    cases = [(30_000_000, 500.0), (50_000, math.hypot(100, 100, 10)), (13, 5.0), (1, 0.0)]
    for n_atoms, radius in cases:
        for framing in ("image", "structure"):
            for sigma in (0.1, 0.4):
                assert sampling_problem(n_atoms, sigma, radius, framing=framing,
                                        edgesize=edgesize, padxyz=1.5) is None


@pytest.mark.parametrize("edgesize", [16, 1024])
def test_sampling_threshold_refuses_atoms_far_apart(edgesize):
    """Three atoms spanning 10^6 Å are refused at every edgesize."""
    assert sampling_problem(3, 0.4, 6.7e5, framing="image", edgesize=edgesize,
                            padxyz=1.5) is not None


def test_sampling_threshold_sits_at_one_atom_reaching_a_pixel():
    """The boundary: n_atoms * (2 * REACH_SIGMAS * sigma_px)**2 = 1 (fixed framing makes
    sigma_px exact): just below it is refused, just above it is not."""
    n_atoms, sigma = 100, 0.4
    sigma_px = 1.0 / (2.0 * REACH_SIGMAS * math.sqrt(n_atoms))  # expected atoms seen: 1
    for factor, refused in ((0.99, True), (1.01, False)):
        problem = sampling_problem(n_atoms, sigma, 10.0, framing="fixed", edgesize=64,
                                   padxyz=0.0, pixel_size=sigma / (sigma_px * factor))
        assert (problem is not None) == refused, factor


def test_legitimate_renders_raise_no_warning():
    """The bundled cluster at the smallest edgesize, with a thin probe, in every framing."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for kw in ({}, {"framing": "structure"}, {"framing": "fixed", "pixel_size": 1.5}):
            out = render(AU147, 2, edgesize=16, gauss_sigma=0.1, device="cpu", **kw)
            assert out["gaussian_2d"].max() == 255


def test_field_narrower_than_a_gaussian_is_refused(tmp_path):
    """`--framing fixed --pixel-size 1e-9` gave all-255 images (one atom's blur filling the
    field); now a clear error before anything is written. Pixel sizes from sigma/15 at
    edgesize 16 are accepted."""
    assert narrow_field_problem(16, 0.4 / 15, 0.4) is None
    assert narrow_field_problem(16, 0.02, 0.4) is not None
    with pytest.raises(ValueError, match="narrower than the narrowest Gaussian"):
        Renderer(RenderSettings(edgesize=16, framing="fixed", pixel_size=1e-9))
    out = tmp_path / "out"
    result = _render(AU147, "-o", out, *FAST, "--framing", "fixed", "--pixel-size", "1e-9")
    assert result.exit_code == 1
    assert "narrower than the narrowest Gaussian" in result.output
    assert not out.exists()


# ---------------------------------------------------------------- 2. atoms outside


def test_count_outside_edges_nan_padding_and_the_third_axis():
    """Outside: a coordinate below -0.5 or above edgesize - 0.5, or NaN; padding atoms are
    not counted; the third axis only when asked."""
    e = 8
    coords = np.array([[[-0.5, 0, 0], [7.5, 7.5, 7.5], [-0.51, 3, 3], [3, 7.51, 3],
                        [np.nan, 3, 3], [3, 3, 9.0], [-5, -5, -5]]], dtype=np.float32)
    valid = np.array([[True] * 6 + [False]])
    assert count_outside(np, coords, valid, e, 2).tolist() == [3]
    assert count_outside(np, coords, valid, e, 3).tolist() == [4]
    assert count_outside(np, coords, valid, e, 2).dtype == np.int32
    one_atom = np.array([[[9.0, 3, 3]], [[3, 3, 3]]], dtype=np.float32)  # C-order transpose
    assert count_outside(np, one_atom, np.ones((2, 1), bool), e, 3).tolist() == [1, 0]
    assert one_atom[0, 0, 0] == 9.0  # coordinates untouched


def _line(path: Path, axis: int, n: int = 20) -> Path:
    """n atoms 1 Å apart along one axis."""
    pos = np.zeros((n, 3))
    pos[:, axis] = np.arange(n)
    return _xyz(path, [tuple(p) for p in pos.tolist()])


def test_atoms_outside_a_fixed_field_are_counted(tmp_path):
    """20 atoms 1 Å apart, a 16 px field of 1 Å pixels: the line spans pixel coordinates
    -2..17, so 4 atoms per image are outside. Along z (the beam) they count only for 3-D
    outputs."""
    settings = RenderSettings(edgesize=16, framing="fixed", pixel_size=1.0)
    in_plane, along_z = _line(tmp_path / "x.xyz", 0), _line(tmp_path / "z.xyz", 2)
    for outputs, path, outside in ((["gaussian_2d"], in_plane, 4),
                                   (["gaussian_2d"], along_z, 0),
                                   (["gaussian_2d", "gaussian_3d"], along_z, 4),
                                   (["coordinates_3d"], along_z, 4)):
        report = FieldReport()
        Renderer(settings, outputs, "cpu").render(path, 1, field_report=report)
        assert report.atoms_outside == outside, (outputs, path.name)
        assert report.images == 1 and report.images_empty == 0
        assert report.frames == ((0,) if outside else ())
    outside_warning = (r"x\.xyz, atoms fall outside the field of view in 1 of 2 images "
                       r"\(4 per such image on average, 4 over all of them; frame 0\)")
    with pytest.warns(UserWarning, match=outside_warning):
        out = render(in_plane, 2, edgesize=16, framing="fixed", pixel_size=1.0, device="cpu")
    assert sorted(out) == ["frame_index", "gaussian_2d", "rotations", "voxel_size"]


@pytest.mark.parametrize("kernel", ["numpy", "auto"])
def test_field_report_is_the_same_in_every_batch_split(kernel, tmp_path):
    """Per-frame counts add up the same whatever the batch size and kernel (the compiled
    path renders a batch in slices on threads)."""
    path = _xyz(tmp_path / "t.xyz", *[[(3.0 * i * (1 + f), 0.0, 0.0) for i in range(9)]
                                      for f in range(3)])
    settings = RenderSettings(edgesize=16, framing="fixed", pixel_size=1.5, all_random=True)
    reports = []
    for batch_size in (1, 4, 64):
        report = FieldReport()
        r = Renderer(settings, ["gaussian_2d"], "cpu", cpu_kernel=kernel, threads=2)
        r.render(path, 5, batch_size=batch_size, field_report=report)
        r.close()
        reports.append(report)
    assert reports[0] == reports[1] == reports[2]
    assert reports[0].images == 15 and reports[0].frames == (1, 2)


def test_field_report_on_the_gpu_paths_matches_the_cpu(tmp_path):
    """On the GPU stand-in: host batches (through the pinned, overlapped copies) and device
    batches (counts read back once, when the iteration ends) give the CPU's report."""
    path = _xyz(tmp_path / "t.xyz", *[[(3.0 * i * (1 + f), 0.0, 0.0) for i in range(9)]
                                      for f in range(3)])
    settings = RenderSettings(edgesize=16, framing="fixed", pixel_size=1.5, all_random=True)
    want = FieldReport()
    Renderer(settings, ["gaussian_2d"], "cpu").render(path, 5, field_report=want)
    gpu = Renderer(settings, ["gaussian_2d"], Backend("cupy", _FakeCupy(), "stand-in"))
    for to_host in (True, False):
        got = FieldReport()
        batches = list(gpu.iter_batches(path, 5, batch_size=4, to_host=to_host,
                                        field_report=got))
        assert all("_outside" not in b for b in batches)
        assert got == want, to_host
    early = FieldReport()  # a consumer that stops early still gets what was rendered
    batches = gpu.iter_batches(path, 5, batch_size=4, to_host=False, field_report=early)
    next(batches)
    batches.close()
    assert early.images == 4


def test_cli_warns_and_records_atoms_outside(tmp_path):
    """A field smaller than the cluster: a warning naming the file and frame, the count per
    stack in the manifest (kept on resume), and no new key in the .npz."""
    out = tmp_path / "out"
    args = [AU147, "-o", out, *FAST, "--framing", "fixed", "--pixel-size", "0.6",
            "--n-stacks", "2"]
    result = _render(*args)
    assert result.exit_code == 0, result.output
    assert f"warning: {AU147}, stack 0: " in result.output
    assert "fall outside the field of view" in result.output and "; frame 0)" in result.output
    entry = json.loads((out / "manifest.json").read_text())["files"]["au147_icosahedron"]
    assert entry["status"] == "complete"
    for stack in ("0", "1"):
        record = entry["outside_field"][stack]
        assert record["images"] == 2 and record["frames"] == [0]
        assert 0 < record["atoms_outside"] < 2 * 147
    with np.load(out / "au147_icosahedron" / "0000.npz") as npz:
        assert sorted(npz.files) == ["frame_index", "gaussian_2d", "rotations", "voxel_size"]
    again = _render(*args)
    assert "2 complete stacks skipped" in again.output and "warning" not in again.output
    kept = json.loads((out / "manifest.json").read_text())["files"]["au147_icosahedron"]
    assert kept["outside_field"] == entry["outside_field"]


def test_cli_records_zero_when_every_atom_is_inside(tmp_path):
    out = tmp_path / "out"
    assert _render(AU147, "-o", out, *FAST).exit_code == 0
    entry = json.loads((out / "manifest.json").read_text())["files"]["au147_icosahedron"]
    assert entry["outside_field"] == {"0": {"images": 2, "images_affected": 0,
                                            "atoms_outside": 0, "frames": []}}


@pytest.mark.parametrize("workers", ["1", "2"])
def test_cli_strict_fails_the_file_and_renders_the_others(tmp_path, workers):
    """--strict: the file with atoms outside fails with a clear error and leaves no file;
    the one that fits is rendered (also through worker processes)."""
    (tmp_path / "in").mkdir()
    wide = _line(tmp_path / "in" / "wide.xyz", 0)
    small = _xyz(tmp_path / "in" / "small.xyz", _cluster(3))
    out = tmp_path / "out"
    result = _render(wide, small, "-o", out, *FAST, "--framing", "fixed", "--pixel-size",
                     "1.0", "--strict", "--workers", workers)
    assert result.exit_code == 1
    assert f"{wide}: " in result.output and "fall outside the field of view" in result.output
    assert "(--strict)" in result.output
    files = json.loads((out / "manifest.json").read_text())["files"]
    assert files["wide"]["status"] == "failed" and "(--strict)" in files["wide"]["error"]
    assert files["small"]["status"] == "complete"
    assert files["small"]["outside_field"]["0"]["atoms_outside"] == 0
    assert _files(out) == ["small/0000.npz"]  # no temporaries either


def test_cli_every_atom_outside_is_an_error_without_strict(tmp_path):
    """Two atoms 100 Å apart in an 8 Å field: the images would show nothing (all zero);
    that fails the file even without --strict."""
    path = _xyz(tmp_path / "apart.xyz", [(0.0, 0.0, 0.0), (100.0, 0.0, 0.0)])
    out = tmp_path / "out"
    result = _render(path, "-o", out, *FAST, "--framing", "fixed", "--pixel-size", "0.5")
    assert result.exit_code == 1
    assert "every atom falls outside the field of view in 2 of 2 images (frame 0)" \
        in result.output
    files = json.loads((out / "manifest.json").read_text())["files"]
    assert files["apart"]["status"] == "failed"
    assert _files(out) == []


# ---------------------------------------------------------------- 3. API arguments


@pytest.mark.parametrize("kwargs", [
    {"n_rotation": 2.5}, {"n_rotation": True}, {"n_rotation": "4"}, {"n_rotation": 0},
    {"n_rotation": 3.0}, {"batch_size": 0}, {"batch_size": 2.5}, {"batch_size": False},
    {"batch_size": "8"}, {"stop": 1.5}, {"seed": 1.5}, {"seed": True}, {"seed": -1},
    {"stack": 0.5},
])
def test_counts_that_are_not_counts_are_refused(kwargs):
    """int(2.5) truncated silently, batch_size=0 meant the default, True counted as 1."""
    r = Renderer(RenderSettings(edgesize=16), ["gaussian_2d"], "cpu")
    args = {"n_rotation": 2, **kwargs}
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=f"{name} must be an integer"):
        next(r.iter_batches(AU147, **args))
    with pytest.raises(ValueError, match=f"{name} must be an integer"):
        r.render(AU147, **args)
    with pytest.raises(ValueError, match=f"{name} must be an integer"):
        render(AU147, edgesize=16, device="cpu", **args)


def test_integer_types_are_accepted():
    out = render(AU147, np.int64(2), edgesize=16, device="cpu", batch_size=np.int32(1))
    assert len(out["gaussian_2d"]) == 2


def _rod(tmp_path: Path) -> Path:
    """21 gold atoms 2 Å apart along z: 40 Å long, wider than a 27.9 Å field when tilted."""
    return _xyz(tmp_path / "rod.xyz", [(0.0, 0.0, 2.0 * i) for i in range(21)])


ROD_RUN = ["--n-rotation", "2", "--n-stacks", "6", "--edgesize", "32", "--framing", "fixed",
           "--pixel-size", "0.9", "--output-types", "gaussian_2d", "--device", "cpu"]


def test_strict_keeps_the_same_stacks_on_one_or_two_workers(tmp_path):
    """A file fails at its first failing stack: the stacks before it stay, none after it is
    kept, whether stacks finish in order (one worker) or not (worker processes), and the
    summary counts only the images of the stacks kept."""
    rod = _rod(tmp_path)
    kept = {}
    for workers in ("1", "2"):
        out = tmp_path / f"out{workers}"
        result = _render(rod, "-o", out, *ROD_RUN, "--strict", "--workers", workers)
        assert result.exit_code == 1, result.output
        entry = json.loads((out / "manifest.json").read_text())["files"]["rod"]
        assert entry["status"] == "failed"
        stacks = entry["completed_stacks"]
        assert sorted(entry["outside_field"]) == [str(s) for s in stacks]
        assert _files(out) == [f"rod/{s:04d}.npz" for s in stacks]
        assert f"wrote {2 * len(stacks)} images in {len(stacks)} stacks" in result.output
        kept[workers] = stacks
    assert kept["1"] == kept["2"]
    assert kept["1"] == list(range(len(kept["1"])))  # the stacks before the failing one
    assert len(kept["1"]) < 6


def test_strict_on_resume_renders_again_stacks_kept_with_atoms_outside(tmp_path):
    """Stacks written without --strict, with atoms outside, are not skipped as complete by a
    --strict run: they are rendered again, and fail the file."""
    rod, out = _rod(tmp_path), tmp_path / "out"
    first = _render(rod, "-o", out, *ROD_RUN, "--workers", "1")
    assert first.exit_code == 0 and "fall outside the field of view" in first.output
    again = _render(rod, "-o", out, *ROD_RUN, "--workers", "1", "--strict")
    assert again.exit_code == 1, again.output
    assert "(--strict)" in again.output
    entry = json.loads((out / "manifest.json").read_text())["files"]["rod"]
    assert entry["status"] == "failed"
    assert all(entry["outside_field"][str(s)]["atoms_outside"] == 0
               for s in entry["completed_stacks"])


@pytest.mark.parametrize("field, value", [
    ("z_exponent", float("nan")), ("z_exponent", float("inf")), ("z_exponent", 40.0),
    ("gauss_sigma", float("inf")), ("padxyz", float("inf")), ("read_noise", float("inf")),
    ("scan_jitter", float("inf")), ("drift", float("inf")), ("dose", float("inf")),
    ("column_correction", (float("nan"),)), ("thermal_overrides", (("Au", float("inf")),)),
])
def test_settings_that_render_blank_images_are_refused(field, value):
    """NaN, infinities and a Z exponent whose Z**z overflows float32 gave all-zero images
    marked complete; they are refused when the settings are made."""
    extra = {"thermal": True} if field == "thermal_overrides" else {}
    with pytest.raises(ValueError, match=field.split("_overrides")[0]):
        RenderSettings(**{field: value}, **extra)


@pytest.mark.parametrize("kwargs, needs", [
    ({"pixel_size": 0.3}, "framing='fixed'"),
    ({"intensity_scale": 5.0}, "normalization='fixed'"),
    ({"normalization": "float", "bitrate": 16}, "integer images"),
])
def test_settings_that_would_change_nothing_are_refused(kwargs, needs):
    """A value that changes no image was recorded in the manifest all the same, and then
    refused a resume without it."""
    with pytest.raises(ValueError, match=re.escape(needs)):
        RenderSettings(**kwargs)


def test_gaussians_wider_than_the_field_fail_the_file(tmp_path):
    """--gauss-sigma 1000 with the image framing made every pixel 255: the field of view is
    the structure and its margins, far narrower than one Gaussian."""
    small = _xyz(tmp_path / "small.xyz", _cluster(4))
    with pytest.raises(StructureError, match=r"small\.xyz, frame 0: .*wider than the whole"):
        render(small, 1, edgesize=16, gauss_sigma=1000.0, device="cpu")
    out = tmp_path / "out"
    result = _render(small, AU147, "-o", out, *FAST, "--gauss-sigma", "100")
    assert result.exit_code == 1 and "wider than the whole field of view" in result.output
    assert _files(out) == []
    # a wide but legitimate blur still renders: sigma 5 Å on a 147-atom cluster
    assert render(AU147, 1, edgesize=16, gauss_sigma=5.0, device="cpu")["gaussian_2d"].max() > 0


@pytest.mark.parametrize("options, message", [
    # recorded in the manifest though it changed nothing, it then refused a resume
    (["--pixel-size", "0.3"], "--pixel-size is used only with --framing fixed"),
    # a traceback after the manifest was written
    (["--seed", "-1"], "--seed"),
    # ignored without a word
    (["--probe-mrad", "30"], "--probe-mrad would have no effect"),
    # optics too extreme to integrate: a traceback
    (["--probe-kv", "200", "--probe-defocus", "50000"], "cannot fit the probe of 200 kV"),
])
def test_option_mistakes_are_usage_errors_before_anything_is_written(tmp_path, options,
                                                                      message):
    out = tmp_path / "out"
    result = _render(AU147, "-o", out, *FAST, *options)
    assert result.exit_code == 2 and message in result.output
    assert not out.exists()