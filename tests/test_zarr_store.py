"""The zarr v3 output: the stack writer against zarr's own writes, ``render --format zarr``
against ``--format npz``, bytes across workers and batch sizes, kill and resume, and the
choice of compression on the GPU (its CPU side, with the CuPy stand-in)."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

zarr = pytest.importorskip("zarr", minversion="3")

from fake_cupy import FakeCupy

from xyz2image_gpu import backend as backend_mod
from xyz2image_gpu.backend import Backend, zarr_gpu_codec
from xyz2image_gpu.cli import cli
from xyz2image_gpu.output import (
    is_temporary,
    zarr_store,
)
from xyz2image_gpu.output.zarr_store import CODECS, ZarrStackWriter
from xyz2image_gpu.run import RunConfig, settings_from_parameters
from xyz2image_gpu.run.units import _store_compression
from xyz2image_gpu.structures.examples import copy_examples

SMALL = ["--edgesize", "16", "--n-rotation", "5"]


def _data(n: int = 70, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"image": (rng.random((n, 12, 12)) * 60).astype(np.uint8),
            "volume": rng.random((n, 6, 6, 6)) > 0.9,
            "rotations": rng.random((n, 3, 3)),
            "coords": rng.integers(-300, 300, (n, 5, 3)).astype(np.int16),
            "index": np.arange(n, dtype=np.int32)}


def _tree(folder: Path, skip: tuple[str, ...] = ()) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()
            and str(p.relative_to(folder)) not in skip}


def _write(out: Path, data: dict[str, np.ndarray], batch: int, **kwargs) -> Path:
    layout = {k: (v.shape, v.dtype) for k, v in data.items()}
    with ZarrStackWriter(out, "file", 3, layout, **kwargs) as writer:
        for i in range(0, len(data["index"]), batch):
            writer.append({k: v[i:i + batch] for k, v in data.items()})
    return out / "stacks.zarr" / "file" / "0003"


# ------------------------------------------------------------------------------- writer


@pytest.mark.parametrize("codec", CODECS)
def test_writer_chunks_equal_zarrs_own_writes(tmp_path, codec):
    """Every chunk file and array's metadata equals what zarr itself writes for the same
    array (the independent reference), and the values read back are the input's."""
    data = _data()
    group_path = _write(tmp_path / "ours", data, batch=9, codec=codec, chunk_images=16,
                        threads=2)
    ours = zarr.open_group(group_path, mode="r")
    reference = zarr.open_group(tmp_path / "reference", mode="w")
    for key, values in data.items():
        mine = ours[key]
        np.testing.assert_array_equal(mine[:], values)
        assert mine.chunks[0] == 16 and mine.dtype == values.dtype
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # lz4: outside the v3 specification
            theirs = reference.create_array(
                key, shape=values.shape, dtype=values.dtype, chunks=mine.chunks,
                compressors=mine.compressors, fill_value=mine.fill_value,
                config={"write_empty_chunks": True})
        theirs[:] = values
    expected = _tree(tmp_path / "reference", skip=("zarr.json",))
    got = _tree(group_path, skip=("zarr.json",))
    assert got == expected
    assert len(got) == len(data) * (1 + 5)  # metadata + ceil(70 / 16) chunks per array


def test_writer_bytes_do_not_depend_on_batches_or_threads(tmp_path):
    data = _data()
    trees = [_tree(_write(tmp_path / f"run{i}", data, batch, threads=threads))
             for i, (batch, threads) in enumerate([(1, 1), (13, 2), (70, 3), (64, 1)])]
    assert all(t == trees[0] for t in trees[1:])


def test_writer_big_rows_get_fewer_images_per_chunk(tmp_path, monkeypatch):
    monkeypatch.setattr(zarr_store, "MAX_CHUNK_BYTES", 16 * 12 * 12)  # 16 images
    group = zarr.open_group(_write(tmp_path, _data(), batch=10, chunk_images=16), mode="r")
    assert group["volume"].chunks == (10, 6, 6, 6)  # 2304 // 216 bool voxels
    assert group["rotations"].chunks == (16, 3, 3)
    assert group["image"].chunks == (16, 12, 12)
    np.testing.assert_array_equal(group["volume"][:], _data()["volume"])


def test_writer_shards_round_trip_and_do_not_depend_on_batches(tmp_path):
    data = _data()
    trees = []
    for i, batch in enumerate((7, 70)):
        path = _write(tmp_path / f"run{i}", data, batch, chunk_images=8, shard_images=32)
        group = zarr.open_group(path, mode="r")
        assert group["image"].shards == (32, 12, 12) and group["image"].chunks == (8, 12, 12)
        for key, values in data.items():
            np.testing.assert_array_equal(group[key][:], values)
        trees.append(_tree(path))
    assert trees[0] == trees[1]
    # 70 images in shards of 32: three shard files per array
    assert sum(k.startswith("image/c/") for k in trees[0]) == 3


def test_writer_attributes_and_options_refused(tmp_path):
    data = _data(10)
    path = _write(tmp_path, data, batch=10, attributes={"stack": 3})
    assert dict(zarr.open_group(path, mode="r").attrs) == {"stack": 3}
    layout = {k: (v.shape, v.dtype) for k, v in data.items()}
    with pytest.raises(ValueError, match="zstd takes a level from 1 to 22"):
        ZarrStackWriter(tmp_path, "f", 0, layout, codec="zstd", level=30)
    with pytest.raises(ValueError, match="multiple of chunk_images"):
        ZarrStackWriter(tmp_path, "f", 0, layout, chunk_images=8, shard_images=12)
    with pytest.raises(ValueError, match="unknown codec"):
        ZarrStackWriter(tmp_path, "f", 0, layout, codec="snappy")
    assert not [p for p in tmp_path.iterdir() if is_temporary(p)]


def test_writer_incomplete_or_failed_leaves_nothing(tmp_path):
    data = _data(40)
    layout = {k: (v.shape, v.dtype) for k, v in data.items()}
    writer = ZarrStackWriter(tmp_path, "f", 0, layout, chunk_images=8)
    writer.append({k: v[:20] for k, v in data.items()})
    with pytest.raises(ValueError, match="incomplete, 20 of 40 rows"):
        writer.close()
    with pytest.raises(RuntimeError, match="boom"), \
            ZarrStackWriter(tmp_path, "f", 1, layout, chunk_images=8) as writer:
        writer.append({k: v[:20] for k, v in data.items()})
        raise RuntimeError("boom")
    with pytest.raises(ValueError, match="expects rows of shape"):
        ZarrStackWriter(tmp_path, "f", 2, layout).append(
            {**data, "image": data["image"][:, :5]})
    assert not (tmp_path / "stacks.zarr" / "f" / "0000").exists()
    assert not (tmp_path / "stacks.zarr" / "f" / "0001").exists()
    leftovers = [p.name for p in tmp_path.iterdir() if is_temporary(p)]
    assert leftovers == [p.name for p in tmp_path.iterdir()
                         if p.name.startswith(".f_0002")]  # the one never closed or aborted


def test_writer_memory_is_bounded_by_chunks_not_the_stack(tmp_path, monkeypatch):
    """Chunks are written while batches arrive: at most 2 x threads wait for their encoder,
    each a chunk long, however many images the stack has."""
    data = _data(400)
    layout = {k: (v.shape, v.dtype) for k, v in data.items()}
    encode = zarr_store._encode_and_write
    seen: list[int] = []

    def slow(encoder, chunk, path):
        seen.append(chunk.shape[0])
        return encode(encoder, chunk, path)

    monkeypatch.setattr(zarr_store, "_encode_and_write", slow)
    writer = ZarrStackWriter(tmp_path, "f", 0, layout, chunk_images=8, threads=3)
    most = 0
    for i in range(0, 400, 5):
        writer.append({k: v[i:i + 5] for k, v in data.items()})
        most = max(most, len(writer._inflight))
        assert len(seen) >= len(data) * ((i + 5) // 8) - 6  # written as they fill
    writer.close()
    assert most <= 6 and set(seen) == {8} and len(seen) == len(data) * 50


def test_writer_replaces_an_older_group(tmp_path):
    first, second = _data(20, seed=1), _data(20, seed=2)
    _write(tmp_path, first, batch=20)
    path = _write(tmp_path, second, batch=20)
    np.testing.assert_array_equal(zarr.open_group(path, mode="r")["image"][:], second["image"])
    assert not [p for p in tmp_path.iterdir() if is_temporary(p)]


# --------------------------------------------------------------------------------- CLI


def _render(inputs: Path, out: Path, *args: str) -> None:
    result = CliRunner().invoke(cli, ["render", str(inputs), "-o", str(out), "--quiet",
                                      *SMALL, *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output


@pytest.fixture
def structures(tmp_path) -> Path:
    folder = tmp_path / "structures"
    copy_examples(folder)
    for extra in list(folder.iterdir())[1:]:
        extra.unlink()  # one input keeps these runs small
    return folder


@pytest.mark.parametrize("types, extra", [
    ("coordinates_3d,delta_3d,gaussian_2d,binary_2d,delta_2d", []),
    ("gaussian_3d,binary_3d,gaussian_2d", ["--dose", "50", "--scan-jitter", "0.2"]),
])
def test_render_zarr_values_equal_npz(structures, tmp_path, types, extra):
    """Every output type and every other key of the .npz is in the zarr group, equal."""
    common = ["--output-types", types, "--n-stacks", "2", "--batch-size", "3", *extra]
    _render(structures, tmp_path / "npz", *common)
    _render(structures, tmp_path / "zarr", *common, "--format", "zarr", "--chunk-images", "4")
    stem = next(structures.iterdir()).stem
    store = zarr.open_group(tmp_path / "zarr" / "stacks.zarr", mode="r")
    for stack in range(2):
        with np.load(tmp_path / "npz" / stem / f"{stack:04d}.npz") as npz:
            group = store[f"{stem}/{stack:04d}"]
            assert sorted(group.array_keys()) == sorted(npz.files)
            for key in npz.files:
                assert group[key].dtype == npz[key].dtype
                np.testing.assert_array_equal(group[key][:], npz[key])
        assert group.attrs["stack"] == stack
    attrs = store.attrs["xyz2image_gpu"]["manifest"]
    manifest = json.loads((tmp_path / "zarr" / "manifest.json").read_text())
    assert attrs["parameters"] == manifest["parameters"]
    assert manifest["parameters"]["format"] == "zarr"
    assert manifest["parameters"]["codec"] == "zstd"
    assert manifest["parameters"]["compress_level"] == 1
    settings_from_parameters(manifest["parameters"])  # the store's keys are the run's own
    assert attrs["files"][stem]["completed_stacks"] == [0, 1]
    assert manifest["device"]["store_compression"] == (
        "chunks compressed on the CPU: images rendered on the CPU")
    assert not (tmp_path / "zarr" / stem / "0000.npz").exists()
    # nothing of the run outside the store but the manifest (no empty per-file folders)
    assert sorted(p.name for p in (tmp_path / "zarr").iterdir()
                  if not p.name.startswith(".")) == ["manifest.json", "stacks.zarr"]


def test_render_zarr_bytes_same_for_workers_and_batch_sizes(structures, tmp_path):
    trees = []
    for i, args in enumerate([("--workers", "1", "--batch-size", "2"),
                              ("--workers", "2", "--batch-size", "7"),
                              ("--workers", "1", "--batch-size", "64")]):
        out = tmp_path / f"run{i}"
        _render(structures, out, "--format", "zarr", "--n-stacks", "2", "--chunk-images", "3",
                "--output-types", "coordinates_3d,delta_3d,gaussian_2d", *args)
        trees.append(_tree(out / "stacks.zarr", skip=("zarr.json",)))
    assert trees[0] == trees[1] == trees[2]
    # the file group, and per stack its group and 7 arrays (the 3 types, rotations,
    # voxel_size, frame_index, n_atoms)
    assert sum(k.endswith("zarr.json") for k in trees[0]) == 1 + 2 * (1 + 7)


def test_render_other_format_needs_overwrite_which_removes_the_store(structures, tmp_path):
    out = tmp_path / "out"
    _render(structures, out, "--format", "zarr")
    refused = CliRunner().invoke(cli, ["render", str(structures), "-o", str(out), *SMALL])
    assert refused.exit_code == 1 and "format: 'zarr' -> '(unset)'" in refused.output
    assert (out / "stacks.zarr").is_dir()
    _render(structures, out, "--overwrite")
    assert not (out / "stacks.zarr").exists()
    assert len(list(out.glob("*/0000.npz"))) == 1


def test_info_says_whether_the_store_can_be_written():
    result = CliRunner().invoke(cli, ["info", "--device", "cpu"], catch_exceptions=False)
    assert (f"zarr {zarr.__version__}: --format zarr available; chunks compressed on the CPU: "
            "images rendered on the CPU") in result.output


def test_render_zarr_option_mistakes(structures, tmp_path):
    def fails(*args: str) -> str:
        result = CliRunner().invoke(cli, ["render", str(structures), "-o", str(tmp_path / "x"),
                                          *SMALL, *args])
        assert result.exit_code == 2, result.output
        return result.output

    assert "--codec would have no effect with --format npz" in fails("--codec", "lz4")
    assert "zlib levels of .npz members are 0-9" in fails("--compress-level", "12")
    assert "blosc-lz4 takes a level from 0 to 9" in fails("--format", "zarr", "--codec",
                                                          "blosc-lz4", "--compress-level", "12")
    assert "multiple of --chunk-images 4" in fails("--format", "zarr", "--chunk-images", "4",
                                                   "--shard-images", "6")
    assert not (tmp_path / "x").exists()


_KILLER = """
import os, signal, sys
from xyz2image_gpu.output import zarr_store
from xyz2image_gpu.cli import main
calls = []
publish = zarr_store.ZarrStackWriter._publish
def killed_at_second(self):
    calls.append(1)
    if len(calls) == 2:  # the second stack's chunks are written, not yet renamed
        os.kill(os.getpid(), signal.SIGKILL)
    publish(self)
zarr_store.ZarrStackWriter._publish = killed_at_second
sys.argv = ["xyz2image-gpu", *sys.argv[1:]]
main()
"""


def test_render_zarr_killed_then_resumed_gives_the_same_store(structures, tmp_path):
    args = ["render", str(structures), "--quiet", *SMALL, "--n-stacks", "3", "--format",
            "zarr", "--chunk-images", "2", "--workers", "1"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])}
    killed = subprocess.run([sys.executable, "-c", _KILLER, *args, "-o", str(tmp_path / "k")],
                            env=env, capture_output=True, timeout=120, check=False)
    assert killed.returncode == -9, killed.stderr.decode()
    stem = next(structures.iterdir()).stem
    file_group = tmp_path / "k" / "stacks.zarr" / stem
    # nothing partial visible: stack 0 complete, stack 1 only as a temporary outside the store
    assert sorted(p.name for p in file_group.iterdir()) == ["0000", "zarr.json"]
    assert [p for p in (tmp_path / "k").iterdir() if is_temporary(p)]
    visible = zarr.open_group(tmp_path / "k" / "stacks.zarr", mode="r")
    assert list(visible[stem].group_keys()) == ["0000"]

    resumed = CliRunner().invoke(cli, [*args, "-o", str(tmp_path / "k")],
                                 catch_exceptions=False)
    assert resumed.exit_code == 0, resumed.output
    manifest = json.loads((tmp_path / "k" / "manifest.json").read_text())
    assert manifest["files"][stem]["completed_stacks"] == [0, 1, 2]
    assert not [p for p in (tmp_path / "k").rglob("*") if is_temporary(p)]
    _render(structures, tmp_path / "whole", "--n-stacks", "3", "--format", "zarr",
            "--chunk-images", "2")
    assert (_tree(tmp_path / "k" / "stacks.zarr", skip=("zarr.json",))
            == _tree(tmp_path / "whole" / "stacks.zarr", skip=("zarr.json",)))


@pytest.fixture
def dataset(structures, tmp_path) -> tuple[Path, np.ndarray]:
    """A store of 12 images in chunks of 4 (in ``tmp_path/dataset``), and the same images
    from the .npz of the same run."""
    common = ["--n-rotation", "12", "--output-types", "gaussian_2d"]
    _render(structures, tmp_path / "dataset", *common, "--format", "zarr", "--chunk-images", "4")
    _render(structures, tmp_path / "npz", *common)
    stem = next(structures.iterdir()).stem
    with np.load(tmp_path / "npz" / stem / "0000.npz") as npz:
        return tmp_path / "dataset" / "stacks.zarr" / stem / "0000", npz["gaussian_2d"]


def test_readme_random_batch_lines(dataset):
    """README's lines that read a random batch with zarr.open, whole chunks at a time."""
    group, expected = dataset
    images = zarr.open(group, mode="r")["gaussian_2d"]
    rng = np.random.default_rng(0)
    size = images.chunks[0]
    for chunk in rng.permutation(images.shape[0] // size):  # shuffle whole chunks
        batch = images[chunk * size:(chunk + 1) * size]
        np.testing.assert_array_equal(batch, expected[chunk * size:(chunk + 1) * size])


def test_readme_dask_lines(dataset):
    da = pytest.importorskip("dask.array")
    group, expected = dataset
    lazy = da.from_zarr(str(group), component="gaussian_2d")
    assert lazy.chunks[0] == (4, 4, 4)
    np.testing.assert_array_equal(lazy[::5].compute(), expected[::5])


# ------------------------------------------------------------------------- on the GPU


def _fake_gpu_zarr(monkeypatch, codec_name: str) -> None:
    """A zarr whose enable_gpu() selects ``codec_name`` for zstd."""
    monkeypatch.setitem(sys.modules, "zarr.codecs.gpu", type(sys)("zarr.codecs.gpu"))
    real_get = zarr.config.get

    def get(key, *args, **kwargs):
        return codec_name if key == "codecs.zstd" else real_get(key, *args, **kwargs)

    monkeypatch.setattr(zarr.config, "get", get)


def test_gpu_compression_choice():
    fake = Backend("cupy", FakeCupy(), "NumPy standing in for CuPy")
    cpu = Backend("numpy", np, "NumPy")
    assert zarr_gpu_codec(cpu, "zstd") == (
        False, "chunks compressed on the CPU: images rendered on the CPU")
    on, why = zarr_gpu_codec(fake, "lz4")
    assert not on and "zstd's, the store uses lz4" in why
    has_gpu_codec = True
    try:
        import zarr.codecs.gpu  # noqa: F401
    except ImportError:
        has_gpu_codec = False
    on, why = zarr_gpu_codec(fake, "zstd")
    if not has_gpu_codec:  # this zarr (3.1) has none: says which it would need
        assert not on and backend_mod.ZARR_GPU_ZSTD in why and "nvidia-nvcomp" in why


def test_gpu_compression_chosen_where_zarr_has_the_codec(monkeypatch):
    fake = Backend("cupy", FakeCupy(), "NumPy standing in for CuPy")
    _fake_gpu_zarr(monkeypatch, backend_mod.ZARR_GPU_ZSTD)
    assert zarr_gpu_codec(fake, "zstd") == (
        True, f"chunks compressed on the GPU ({backend_mod.ZARR_GPU_ZSTD}, nvCOMP)")
    config = RunConfig(inputs=(), output_folder=Path("."), format="zarr",
                       output_types=("gaussian_2d",))
    assert _store_compression(fake, config)[0]
    with_tif = dataclasses.replace(config, output_types=("gaussian_2d", "gaussian_2d_image"))
    assert _store_compression(fake, with_tif) == (
        False, ("chunks compressed on the CPU: the *_image TIFF stacks need the images on "
                "the host"))
    _fake_gpu_zarr(monkeypatch, "zarr.codecs.zstd.ZstdCodec")
    on, why = zarr_gpu_codec(fake, "zstd")
    assert not on and "selects zarr.codecs.zstd.ZstdCodec" in why


def test_gpu_compression_buffers_chunks_on_the_device(tmp_path, monkeypatch):
    """With a device, chunks are gathered on the device and handed to zarr's GPU path whole,
    inside zarr's GPU configuration, with no copy to the host on the way."""
    fake = FakeCupy()
    data = _data(30)
    layout = {k: (v.shape, v.dtype) for k, v in data.items()}
    active: list[bool] = []
    entered: list[bool] = []

    @contextlib.contextmanager
    def gpu_config():
        active.append(True)
        entered.append(True)
        yield
        active.pop()

    monkeypatch.setattr(backend_mod, "zarr_gpu_config", gpu_config)
    writer = ZarrStackWriter(tmp_path, "f", 0, layout, chunk_images=8, threads=4,
                             device_xp=fake)
    # the arrays were opened under zarr's GPU configuration (its registry's GPU codec)
    assert len(entered) == 1 and sorted(writer._arrays) == sorted(layout)
    written: list[tuple[str, int, int, object]] = []

    class Recorder:
        def __init__(self, key):
            self.key = key

        def __setitem__(self, index, value):
            assert active and isinstance(value, fake.ndarray)
            written.append((self.key, index.start, index.stop, value))

    writer._arrays = {key: Recorder(key) for key in layout}
    syncs = fake.syncs
    for i in range(0, 30, 7):
        writer.append({k: fake.asarray(v[i:i + 7]) for k, v in data.items()})
    assert fake.syncs == syncs  # nothing came back to the host to be compressed there
    writer._publish = lambda: None
    writer.close()
    for key, values in data.items():
        mine = sorted(((s, e, fake.asnumpy(v)) for k, s, e, v in written if k == key),
                      key=lambda item: item[0])
        assert [(s, e) for s, e, _ in mine] == [(0, 8), (8, 16), (16, 24), (24, 30)]
        np.testing.assert_array_equal(np.concatenate([v for _, _, v in mine]), values)


def test_format_from_the_environment_variable_named_after_the_option(structures, tmp_path):
    from click.testing import CliRunner

    from xyz2image_gpu.cli import cli

    out = tmp_path / "env"
    result = CliRunner().invoke(cli, ["render", str(structures), "-o", str(out), "--quiet",
                                      "--edgesize", "32"],
                                env={"XYZ2IMAGE_GPU_RENDER_FORMAT": "zarr",
                                     "XYZ2IMAGE_GPU_RENDER_CODEC": "lz4"})
    assert result.exit_code == 0, result.output
    assert (out / "stacks.zarr").is_dir() and not list(out.glob("*/*.npz"))


def test_gpu_compression_writes_chunks_of_zeros(tmp_path, monkeypatch):
    """The arrays reopened under zarr's GPU configuration keep ``write_empty_chunks``: a
    chunk of zeros (an image with no atoms outside, a blank label) is a file, as the resume
    check (output/verify.py) requires of a whole stack."""
    from xyz2image_gpu.output.verify import zarr_group_problem

    monkeypatch.setattr(backend_mod, "zarr_gpu_config", contextlib.nullcontext)
    layout = {"atoms_outside": ((16,), np.dtype(np.int32)),
              "gaussian_2d": ((16, 4, 4), np.dtype(np.uint8))}
    writer = ZarrStackWriter(tmp_path, "f", 0, layout, chunk_images=8, threads=1,
                             device_xp=FakeCupy())
    try:
        for key, (shape, dtype) in layout.items():
            assert writer._arrays[key].config.write_empty_chunks, key
            writer._arrays[key][0:16] = np.zeros(shape, dtype)  # zarr's own (host) write
        assert zarr_group_problem(writer._tmpdir, layout) is None
    finally:
        writer.abort()
