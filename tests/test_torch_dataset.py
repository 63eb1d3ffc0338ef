"""The PyTorch dataset (``xyz2image_gpu.torch``): every image of an epoch rendered exactly
once across DataLoader workers and distributed ranks, fresh rotations each epoch, and every
image equal to what ``render`` returns for its keys (file, frame, stack, rotation)."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections import Counter
from functools import cache

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from fake_cupy import DeviceArray, FakeCupy
from torch.utils.data import DataLoader

from xyz2image_gpu import RenderSettings, StructureError, as_structure, render
from xyz2image_gpu.backend import Backend
from xyz2image_gpu.structures.examples import icosahedron_positions, write_xyz
from xyz2image_gpu.torch import KEY_NAMES, RenderDataset, plan
from xyz2image_gpu.torch.prefetch import ahead

EDGE = 16
OUTPUTS = ("gaussian_2d", "coordinates_3d", "binary_2d")
N_ROTATION = 5
SEED = 3
#: Seconds a DataLoader waits for a worker's batch: a batch lost on the way fails the test.
WAIT_S = 60


def _positions(shells: int, d: float) -> np.ndarray:
    return icosahedron_positions(shells, d)[0]


# two single-frame structures of different sizes and one of two frames
AU13 = as_structure(_positions(2, 2.88), numbers=np.full(13, 79), name="au13")
PD55 = as_structure(_positions(3, 2.75), numbers=np.full(55, 46), name="pd55")
TWO_FRAMES = as_structure(np.stack([_positions(2, 2.88), 1.05 * _positions(2, 2.88)]),
                          numbers=np.full(13, 78), name="pt13_two_frames")
STRUCTURES = (AU13, PD55, TWO_FRAMES)
#: Images of one epoch: every frame of every structure in N_ROTATION orientations.
TOTAL = (1 + 1 + 2) * N_ROTATION


def dataset(**kw) -> RenderDataset:
    args = {"n_rotation": N_ROTATION, "seed": SEED, "batch_size": 3, "device": "cpu"}
    args.update(kw)
    return RenderDataset(args.pop("structures", STRUCTURES), RenderSettings(edgesize=EDGE),
                         args.pop("output_types", OUTPUTS), **args)


@cache
def reference(name: str, stack: int, all_random: bool = True) -> dict[str, np.ndarray]:
    """What ``render`` returns for one structure and stack (the independent reference)."""
    structure = next(s for s in STRUCTURES if s.name == name)
    return render(structure, N_ROTATION, list(OUTPUTS), seed=SEED, stack=stack,
                  device="cpu", edgesize=EDGE, all_random=all_random)


def images(items) -> dict[tuple[int, int, int, int], dict[str, np.ndarray]]:
    """Each image of batches (or samples) by its keys; an image seen twice fails."""
    out: dict[tuple[int, int, int, int], dict[str, np.ndarray]] = {}
    for item in items:
        batch = {k: v.numpy() for k, v in item.items()}
        if batch["file"].ndim == 0:  # a sample
            batch = {k: v[None] for k, v in batch.items()}
        for i in range(len(batch["file"])):
            key = tuple(int(batch[k][i]) for k in KEY_NAMES)
            assert key not in out, f"image {key} rendered twice"
            out[key] = {k: v[i] for k, v in batch.items()}
    return out


def assert_equals_render(got: dict[tuple[int, int, int, int], dict[str, np.ndarray]],
                         all_random: bool = True, structures=STRUCTURES) -> None:
    """Each image equals ``render``'s for its structure (``file`` indexes ``structures``),
    stack and image index."""
    for (file, frame, stack, rotation), arrays in got.items():
        want = reference(structures[file].name, stack, all_random)
        k = frame * N_ROTATION + rotation
        for name, value in want.items():
            assert arrays[name].dtype == value.dtype, name
            np.testing.assert_array_equal(arrays[name], value[k], err_msg=name)


# ---------------------------------------------------------------------------- the plan
@pytest.mark.parametrize("world_size", [1, 2])
@pytest.mark.parametrize("num_workers", [1, 2, 3])
def test_plan_deals_every_image_once(world_size, num_workers):
    counts = [7, 1, 12, 5]
    blocks = plan.blocks(counts, 4)
    for epoch in (0, 1):
        ordered = plan.epoch_order(blocks, seed=9, epoch=epoch, shuffle=True)
        seen = Counter()
        for rank in range(world_size):
            for worker in range(num_workers):
                for b in plan.shard(ordered, rank=rank, world_size=world_size, worker=worker,
                                    num_workers=num_workers):
                    assert 0 < b.size <= 4
                    seen.update((b.file, k) for k in range(b.start, b.stop))
        assert seen == Counter((f, k) for f, n in enumerate(counts) for k in range(n))
    assert plan.epoch_order(blocks, seed=9, epoch=0, shuffle=True) != plan.epoch_order(
        blocks, seed=9, epoch=1, shuffle=True)
    assert plan.epoch_order(blocks, seed=9, epoch=0, shuffle=False) == blocks


# ---------------------------------------------------------------------------- DataLoader
@pytest.mark.filterwarnings("ignore:This DataLoader will create")  # 3 workers, 2 cores
@pytest.mark.parametrize("world_size", [1, 2])
def test_ranks_and_workers_render_every_image_once_and_as_render_does(world_size):
    """1-3 workers (and the main process) x 1-2 ranks: each rank's batches come in the same
    order whatever its workers; together the ranks hold every image of the epoch once."""
    for epoch in (0, 1):
        everything: dict = {}
        for rank in range(world_size):
            ds = dataset(rank=rank, world_size=world_size)
            ds.set_epoch(epoch)
            runs = {}
            for workers in (0, 1, 2, 3):
                batches = list(DataLoader(ds, batch_size=None, num_workers=workers,
                                          timeout=WAIT_S if workers else 0))
                assert len(batches) == len(ds)
                runs[workers] = [tuple(tuple(b[k].tolist()) for k in KEY_NAMES)
                                 for b in batches]
                got = images(batches)
                assert len(got) == ds.n_images()
                if workers == 0:
                    first = got
                else:  # the same images, byte for byte
                    assert got.keys() == first.keys()
                    for key, arrays in got.items():
                        for name, value in arrays.items():
                            np.testing.assert_array_equal(value, first[key][name])
            assert runs[1] == runs[0] == runs[2] == runs[3]
            assert not everything.keys() & first.keys()
            everything.update(first)
        assert len(everything) == TOTAL
        assert {k[2] for k in everything} == {epoch}
        assert_equals_render(everything)


def test_each_epoch_draws_fresh_rotations_all_random():
    ds = dataset()
    epochs = []
    for epoch in (0, 1, 2):
        ds.set_epoch(epoch)
        epochs.append(images(DataLoader(ds, batch_size=None)))
        assert_equals_render(epochs[-1])
    for a, b in ((0, 1), (1, 2), (0, 2)):
        for (file, frame, _, rotation), arrays in epochs[a].items():
            other = epochs[b][(file, frame, b, rotation)]
            assert not np.allclose(arrays["rotations"], other["rotations"])
    # rotation 0 is random too, unless the original view is asked for
    fixed = dataset(original_view=True)
    views = []
    for epoch in (0, 1):
        fixed.set_epoch(epoch)
        got = images(DataLoader(fixed, batch_size=None))
        assert_equals_render(got, all_random=False)
        views.append(got[(0, 0, epoch, 0)]["rotations"])
    np.testing.assert_array_equal(views[0], views[1])
    assert not np.allclose(epochs[0][(0, 0, 0, 0)]["rotations"],
                           epochs[1][(0, 0, 1, 0)]["rotations"])
    # the order of the blocks changes too
    order = []
    for epoch in (0, 1):
        ds.set_epoch(epoch)
        order.append([(int(b["file"][0]), int(b["frame"][0]), int(b["rotation"][0]))
                      for b in ds])
    assert order[0] != order[1] and sorted(order[0]) == sorted(order[1])


def test_samples_are_the_batches_one_by_one():
    batches = dataset()
    samples = dataset(samples=True)
    assert len(samples) == samples.n_images() == TOTAL and len(batches) == 2 + 2 + 4  # blocks of 3
    got_batches = list(batches)
    got_samples = list(samples)
    assert len(got_samples) == TOTAL
    assert got_samples[0]["gaussian_2d"].shape == (EDGE, EDGE)
    assert got_samples[0]["file"].shape == ()
    flat = [{k: v[i] for k, v in b.items()} for b in got_batches for i in range(len(b["file"]))]
    assert len(flat) == len(got_samples)
    for a, b in zip(flat, got_samples):
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), k
    # a DataLoader collates samples of one structure into batches
    one = dataset(structures=[PD55], samples=True)
    collated = list(DataLoader(one, batch_size=4, num_workers=2, timeout=WAIT_S))
    assert [len(b["file"]) for b in collated] == [3, 2]  # worker 0's 3, worker 1's 2
    assert_equals_render(images(collated), structures=[PD55])


def test_persistent_spawned_workers_follow_set_epoch():
    """The epoch reaches workers that outlive an epoch, started by spawn (pickled)."""
    ds = dataset(structures=STRUCTURES[:2])
    loader = DataLoader(ds, batch_size=None, num_workers=2, persistent_workers=True, timeout=WAIT_S,
                        multiprocessing_context="spawn")
    for epoch in (0, 1):
        ds.set_epoch(epoch)
        got = images(loader)
        assert {k[2] for k in got} == {epoch} and len(got) == 2 * N_ROTATION
        assert_equals_render(got)


def test_inputs_files_folders_and_atoms(tmp_path):
    ase = pytest.importorskip("ase")
    folder = tmp_path / "structures"
    folder.mkdir()
    positions = _positions(2, 2.88)
    write_xyz(folder / "b.xyz", ["Au"] * 13, positions)
    write_xyz(folder / "a.xyz", ["Pt"] * 13, positions)
    atoms = ase.Atoms("Pd13", positions=positions)
    ds = RenderDataset([folder, atoms, AU13], RenderSettings(edgesize=EDGE), n_rotation=2,
                       device="cpu")
    assert [s.name for s in ds.structures] == ["a", "b", "structure_1", "au13"]
    got = images(ds)
    assert len(got) == 8
    for file, structure in enumerate(ds.structures):
        want = render(structure, 2, seed=0, device="cpu", edgesize=EDGE, all_random=True)
        for rotation in range(2):
            np.testing.assert_array_equal(got[(file, 0, 0, rotation)]["gaussian_2d"],
                                          want["gaussian_2d"][rotation])


def test_mistakes_are_refused_with_their_reason(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="share the name 'au13'"):
        dataset(structures=[AU13, AU13])
    with pytest.raises(ValueError, match=r"rank 2 is outside \[0, 2\)"):
        dataset(rank=2, world_size=2)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        dataset(batch_size=0)
    with pytest.raises(ValueError, match="gaussian_4d"):
        dataset(output_types=["gaussian_4d"])
    with pytest.raises(ValueError, match="no structure files found in " + str(tmp_path)):
        dataset(structures=tmp_path)
    with pytest.raises(ValueError, match="epoch must be an integer >= 0"):
        dataset().set_epoch(-1)
    huge = tmp_path / "huge.xyz"
    write_xyz(huge, ["Au", "Au"], np.array([[0.0, 0.0, 0.0], [1e30, 0.0, 0.0]]))
    with pytest.raises(StructureError, match="double precision") as info:
        dataset(structures=[AU13, huge])
    assert str(huge) in str(info.value)  # refused when the dataset is made, naming the file
    # rank and world size come from torch.distributed when it is initialised
    monkeypatch.setattr(torch.distributed, "is_available", lambda: True)
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_rank", lambda: 1)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 3)
    ds = dataset()
    assert (ds.rank, ds.world_size) == (1, 3)
    assert len(images(ds)) == ds.n_images() < TOTAL


def test_importing_the_package_does_not_import_torch():
    code = "import sys, xyz2image_gpu; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


# ---------------------------------------------------------------------------- the GPU path
def test_gpu_batches_reach_torch_through_dlpack_without_a_copy(monkeypatch):
    """On the GPU the engine keeps batches on the device and torch.from_dlpack takes them:
    no transfer to the host, no synchronisation, the tensors share the arrays' memory."""
    fake = FakeCupy(1 << 30)
    ds = dataset(device=Backend("cupy", fake, "NumPy standing in for CuPy"))
    assert ds.on_gpu
    taken = []
    from_dlpack = torch.from_dlpack

    def recording(array):
        tensor = from_dlpack(array)
        taken.append((array, tensor))
        return tensor

    monkeypatch.setattr(torch, "from_dlpack", recording)
    batches = list(DataLoader(ds, batch_size=None, num_workers=0))
    assert fake.sync_log == [] and fake.async_copies == 0
    arrays_per_batch = len(OUTPUTS) + 4  # rotations, voxel_size, frame_index, n_atoms
    assert len(taken) == fake.dlpack_exports == arrays_per_batch * len(batches)
    for array, tensor in taken:
        assert isinstance(array, DeviceArray)
        assert tensor.data_ptr() == array._a.ctypes.data  # the same memory
    got = images(batches)
    assert len(got) == TOTAL
    for (file, frame, stack, rotation), arrays in got.items():
        want = reference(STRUCTURES[file].name, stack)
        k = frame * N_ROTATION + rotation
        for name, value in want.items():
            if name == "gaussian_2d":  # NumPy/BLAS path vs compiled kernel: one grey level
                assert np.abs(arrays[name].astype(int) - value[k].astype(int)).max() <= 1
            else:
                np.testing.assert_array_equal(arrays[name], value[k], err_msg=name)
    with pytest.raises(RuntimeError, match="main process"):
        list(DataLoader(ds, batch_size=None, num_workers=1))
    # a PyTorch that cannot take device arrays (a CPU build on a GPU machine) says so

    def refusing(array):
        raise RuntimeError("Unsupported device type for DLPack")

    monkeypatch.setattr(torch, "from_dlpack", refusing)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match=r"no CUDA .* install a CUDA build of PyTorch"):
        next(iter(ds))


# ---------------------------------------------------------------------------- prefetch
def test_prefetch_renders_ahead_the_same_batches_and_stops_cleanly():
    plain = list(dataset())
    ahead = dataset(prefetch=2)
    got = list(DataLoader(ahead, batch_size=None))
    assert len(got) == len(plain)
    for a, b in zip(plain, got):
        for k in a:
            assert torch.equal(a[k], b[k]), k
    assert len(list(dataset(prefetch=1, samples=True))) == TOTAL
    # a loop that stops early stops the thread that renders ahead
    items = iter(ahead)
    next(items)
    items.close()
    assert not [t for t in threading.enumerate() if t.name == "xyz2image-gpu-prefetch"]


def test_prefetch_raises_the_renderers_error_in_the_loop():
    def failing():
        yield 1
        yield 2
        raise ValueError("frame 3 of broken.xyz cannot be shown")

    items = ahead(failing(), 1)
    assert [next(items), next(items)] == [1, 2]
    with pytest.raises(ValueError, match="broken.xyz"):
        next(items)
    assert not [t for t in threading.enumerate() if t.name == "xyz2image-gpu-prefetch"]



def test_every_output_type_and_augmentation_key_passes_through():
    """Whatever the engine renders (every output type it knows, the augmentations' extra
    arrays) reaches the items unchanged, equal to render's."""
    from xyz2image_gpu import OUTPUT_TYPES

    settings = {"edgesize": 12, "dose": 200.0, "scan_jitter": 0.05, "all_random": True,
                "bitrate": 16}
    ds = RenderDataset([PD55], RenderSettings(**settings), OUTPUT_TYPES, n_rotation=3,
                       seed=SEED, batch_size=2, device="cpu")
    want = render(PD55, 3, list(OUTPUT_TYPES), seed=SEED, device="cpu", **settings)
    assert {"gaussian_2d_clean", "electrons_per_pixel", "scan_offsets"} <= want.keys()
    got = images(ds)
    assert len(got) == 3
    for (_, frame, _, rotation), arrays in got.items():
        assert set(arrays) == set(want) | set(KEY_NAMES)
        for name, value in want.items():
            assert arrays[name].dtype == value.dtype, name
            np.testing.assert_array_equal(arrays[name], value[frame * 3 + rotation],
                                          err_msg=name)
    assert got[(0, 0, 0, 0)]["gaussian_2d"].dtype == np.uint16


def test_a_dtype_torch_cannot_hold_is_named(monkeypatch):
    def refusing(array):
        raise TypeError("can't convert np.ndarray of type numpy.uint16")

    ds = RenderDataset([AU13], RenderSettings(edgesize=EDGE, bitrate=16), device="cpu")
    monkeypatch.setattr(torch, "from_numpy", refusing)
    with pytest.raises(TypeError, match=r"cannot hold 'gaussian_2d' \(uint16\).*PyTorch >= 2.3"):
        next(iter(ds))
