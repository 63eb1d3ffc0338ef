"""Resume keeps only whole stacks: a stack recorded complete whose file is cut short,
damaged or of another shape is named in a warning and rendered again; the checks of
:mod:`xyz2image_gpu.output.verify` against files written by NumPy, tifffile and zarr
themselves."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner

from xyz2image_gpu.cli import cli
from xyz2image_gpu.output.verify import npz_problem, tiff_problem, zarr_group_problem
from xyz2image_gpu.structures.examples import bundled_examples

AU147 = next(p for p in bundled_examples() if p.name == "au147_icosahedron.xyz")
ARGS = ["--edgesize", "16", "--workers", "1", "--n-rotation", "3", "--n-stacks", "2",
        "--device", "cpu"]


def _invoke(*args: object):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != "manifest.json" and p.parent.name != "stacks.zarr"}


# ------------------------------------------------------------------ the checks alone


def test_npz_check_against_numpys_own_archives(tmp_path):
    arrays = {"a": np.arange(6000, dtype=np.uint8).reshape(6, 10, 100),
              "rotations": np.random.default_rng(1).random((6, 3, 3))}
    layout = {k: (v.shape, v.dtype) for k, v in arrays.items()}
    path = tmp_path / "x.npz"
    np.savez_compressed(path, **arrays)
    assert npz_problem(path, layout) is None
    assert "a is (6, 10, 100) uint8, expected (6, 10, 101) uint8" in npz_problem(
        path, {**layout, "a": ((6, 10, 101), np.uint8)})
    assert "a is (6, 10, 100) uint8, expected (6, 10, 100) int16" in npz_problem(
        path, {**layout, "a": ((6, 10, 100), np.int16)})
    assert "missing b.npy" in npz_problem(path, {**layout, "b": ((6,), np.int32)})
    assert "unexpected rotations.npy" in npz_problem(path, {"a": layout["a"]})
    # cut short anywhere: never taken as whole
    data = path.read_bytes()
    cut = tmp_path / "cut.npz"
    for n in [0, 1, 30, len(data) // 3, len(data) // 2, len(data) - 23, len(data) - 1]:
        cut.write_bytes(data[:n])
        assert npz_problem(cut, layout) is not None, n
    # a central directory that claims more data than lies before it
    with zipfile.ZipFile(path) as zf:
        start = zf.start_dir
    shifted = data[:start - 40] + data[start:]  # the last member's tail lost
    cut.write_bytes(shifted)
    assert npz_problem(cut, layout) is not None


def test_tiff_check_against_tifffiles_own_stacks(tmp_path):
    images = np.random.default_rng(2).random((7, 12, 12)).astype(np.float32)
    path = tmp_path / "x.tif"
    tifffile.imwrite(path, images, imagej=True)
    assert tiff_problem(path, (7, 12, 12), np.float64) is None  # stored as float32
    assert "holds 7 images, expected 8" in tiff_problem(path, (8, 12, 12), np.float32)
    assert "expected (12, 13) float32" in tiff_problem(path, (7, 12, 13), np.float32)
    assert "expected (12, 12) uint8" in tiff_problem(path, (7, 12, 12), np.bool_)
    data = path.read_bytes()
    cut = tmp_path / "cut.tif"
    with tifffile.TiffFile(path) as tif:  # where the last page's directory ends
        last = tif.pages[-1]
        ifd_end = last.offset + 2 + 12 * len(last.tags) + 4
    assert ifd_end > len(data) - 40
    for n in [0, 7, len(data) // 2, len(data) - 100, ifd_end - 1]:
        cut.write_bytes(data[:n])
        assert tiff_problem(cut, (7, 12, 12), np.float32) is not None, n


@pytest.mark.parametrize("shards", [None, 4])
def test_zarr_check_against_zarrs_own_groups(tmp_path, shards):
    zarr = pytest.importorskip("zarr")
    group = zarr.open_group(tmp_path / "g", mode="w", zarr_format=3)
    data = np.arange(10 * 4 * 4, dtype=np.uint16).reshape(10, 4, 4)
    arr = group.create_array("img", shape=data.shape, dtype=data.dtype, chunks=(2, 4, 4),
                             shards=None if shards is None else (shards, 4, 4),
                             config={"write_empty_chunks": True})
    arr[:] = data
    layout = {"img": ((10, 4, 4), np.uint16)}
    assert zarr_group_problem(tmp_path / "g", layout) is None
    assert "expected (11, 4, 4) uint16" in zarr_group_problem(
        tmp_path / "g", {"img": ((11, 4, 4), np.uint16)})
    assert "missing more" in zarr_group_problem(
        tmp_path / "g", {**layout, "more": ((10,), np.int32)})
    files = sorted((tmp_path / "g" / "img" / "c").rglob("*"))
    chunks = [p for p in files if p.is_file()]
    assert len(chunks) == (5 if shards is None else 3)  # what zarr wrote: every chunk
    chunks[-1].unlink()
    assert "img lacks its chunk c/" in zarr_group_problem(tmp_path / "g", layout)
    (tmp_path / "g" / "img" / "zarr.json").unlink()
    assert "missing img" in zarr_group_problem(tmp_path / "g", layout)


# ------------------------------------------------------------------ resume


def _damage_npz(folder: Path) -> Path:
    path = folder / "au147_icosahedron" / "0001.npz"
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    return path


def _damage_tif(folder: Path) -> Path:
    path = folder / "au147_icosahedron" / "0000_gaussian_2d.tif"
    data = path.read_bytes()
    path.write_bytes(data[:len(data) - 200])
    return path


def _zero_npz_tail(folder: Path) -> Path:
    """What a crash of the file system leaves: the file's length, its last blocks zeros."""
    path = folder / "au147_icosahedron" / "0000.npz"
    data = path.read_bytes()
    path.write_bytes(data[:len(data) - 300] + bytes(300))
    return path


def _drop_zarr_chunk(folder: Path) -> Path:
    group = folder / "stacks.zarr" / "au147_icosahedron" / "0001"
    chunk = group / "gaussian_2d" / "c" / "1" / "0" / "0"
    chunk.unlink()
    return group


@pytest.mark.parametrize("damage, fmt", [
    (_damage_npz, "npz"), (_damage_tif, "npz"), (_zero_npz_tail, "npz"),
    (_drop_zarr_chunk, "zarr"), (_damage_tif, "zarr")],
    ids=["npz-cut", "tif-cut", "npz-zero-tail", "zarr-chunk", "zarr-tif-cut"])
def test_resume_renders_a_damaged_stack_again(tmp_path, damage, fmt):
    if fmt == "zarr":
        pytest.importorskip("zarr")
    out = tmp_path / "out"
    args = ["render", AU147, "-o", out, "--output-types", "gaussian_2d,gaussian_2d_image",
            "--format", fmt, *(["--chunk-images", 2] if fmt == "zarr" else []), *ARGS]
    first = _invoke(*args)
    assert first.exit_code == 0, first.output
    whole = _tree(out)
    # undamaged: nothing said, nothing rendered again
    again = _invoke(*args)
    assert "warning" not in again.output and "2 complete stacks skipped" in again.output

    damaged = damage(out)
    assert _tree(out) != whole
    result = _invoke(*args)
    assert result.exit_code == 0, result.output
    assert f"warning: {damaged} is damaged, incomplete or not what this run writes" in result.output
    assert "wrote 3 images in 1 stacks" in result.output
    assert "1 complete stacks skipped" in result.output
    assert _tree(out) == whole  # the same bytes as the first run's
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["files"]["au147_icosahedron"]["completed_stacks"] == [0, 1]


def test_resume_renders_a_stack_of_another_shape_again(tmp_path):
    """A stack whose arrays are not what this run writes (e.g. copied in from elsewhere)."""
    out = tmp_path / "out"
    args = ["render", AU147, "-o", out, "--output-types", "gaussian_2d", *ARGS]
    assert _invoke(*args).exit_code == 0
    whole = _tree(out)
    path = out / "au147_icosahedron" / "0000.npz"
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    np.savez_compressed(path, **{**arrays, "gaussian_2d": arrays["gaussian_2d"][:, :15]})
    result = _invoke(*args)
    assert (f"warning: {path} is damaged, incomplete or not what this run writes "
            "(gaussian_2d is (3, 15, 16) uint8, expected (3, 16, 16) uint8)") in result.output
    assert _tree(out) == whole
    shutil.rmtree(out)


# ------------------------------------------------------------------ fewer stacks


@pytest.mark.parametrize("fmt", ["npz", "zarr"])
def test_fewer_stacks_into_the_same_folder_names_the_stacks_left_over(tmp_path, fmt):
    if fmt == "zarr":
        pytest.importorskip("zarr")
    out = tmp_path / "out"
    base = ["render", AU147, "-o", out, "--output-types", "gaussian_2d,gaussian_2d_image",
            "--format", fmt, "--edgesize", "16", "--workers", "1", "--n-rotation", "2",
            "--device", "cpu"]
    assert _invoke(*base, "--n-stacks", 3).exit_code == 0
    before = _tree(out)
    arrays = ("stacks.zarr/au147_icosahedron/{:04d}" if fmt == "zarr"
              else "au147_icosahedron/{:04d}.npz")
    left = [arrays.format(1), "au147_icosahedron/0001_gaussian_2d.tif",
            arrays.format(2), "au147_icosahedron/0002_gaussian_2d.tif"]
    result = _invoke(*base, "--n-stacks", 1)
    assert result.exit_code == 0, result.output
    assert "warning: 4 stacks on disk beyond this run's --n-stacks 1" in result.output
    for name in left:
        assert name in result.output
    assert _tree(out) == before  # kept, untouched
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["n_stacks"] == 1
    assert manifest["files"]["au147_icosahedron"]["completed_stacks"] == [0]

    # every stack on disk in the plan again: nothing to say
    result = _invoke(*base, "--n-stacks", 3)
    assert result.exit_code == 0 and "warning" not in result.output, result.output
    assert _tree(out) == before
    result = _invoke(*base, "--n-stacks", 4)
    assert "warning" not in result.output and "3 complete stacks skipped" in result.output
