"""Tests for xyz2image_gpu.structures (XYZ reading, input normalisation) and .elements."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from ase_compat import HAVE_ASE, requires_ase

from xyz2image_gpu.structures import (
    Frame,
    Structure,
    StructureError,
    as_structure,
    read_xyz,
)
from xyz2image_gpu.structures import xyz as structures
from xyz2image_gpu.structures.elements import MAX_Z, SYMBOLS, atomic_number, symbol

if HAVE_ASE:  # the tests that compare with ASE's readers and objects; they skip without it
    import ase.io
    from ase import Atoms
    from ase.build import bulk, molecule
    from ase.cluster import Icosahedron

# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------


@pytest.fixture(params=["batched", "per-frame"])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test through both parsing paths: batched np.loadtxt and frame by frame."""
    monkeypatch.setattr(structures, "_BATCHED", request.param == "batched")
    if request.param == "batched":
        monkeypatch.setattr(structures, "_BATCH_LINES", 5)  # several batches per file
        monkeypatch.setattr(structures, "_CHUNK_CHARS", 64)  # many read chunks
    return request.param


def write(tmp_path: Path, text: str, name: str = "t.xyz", newline: str = "\n") -> Path:
    path = tmp_path / name
    path.write_bytes(text.replace("\n", newline).encode())
    return path


def assert_matches_ase(path: Path, structure: Structure) -> None:
    ref = ase.io.read(path, index=":")
    assert len(structure.frames) == len(ref)
    for k, (frame, atoms) in enumerate(zip(structure.frames, ref)):
        assert frame.index == k
        assert frame.numbers.dtype == np.int16
        assert frame.positions.dtype == np.float64
        np.testing.assert_array_equal(frame.numbers, atoms.numbers)
        np.testing.assert_allclose(frame.positions, atoms.get_positions(), rtol=0, atol=1e-8)


def rattled(atoms: Atoms, seed: int, n: int | None = None) -> Atoms:
    atoms = atoms.copy() if n is None else atoms[:n].copy()
    atoms.rattle(stdev=0.05, seed=seed)
    return atoms


def frames_text(frames: list[list[str]], comment: str = "comment") -> str:
    out = []
    for atoms in frames:
        out += [str(len(atoms)), comment, *atoms]
    return "\n".join(out) + "\n"


GOOD = ["Au 0.0 0.0 0.0", "Au 1.0 2.0 3.0", "C -1.5 0.5 2.5"]


# --------------------------------------------------------------------------------------
# elements
# --------------------------------------------------------------------------------------


@requires_ase
def test_symbols_table_matches_ase() -> None:
    from ase.data import chemical_symbols

    assert SYMBOLS[0] == "X"
    assert MAX_Z == 118
    assert SYMBOLS[118] == "Og"
    assert SYMBOLS[1:] == tuple(chemical_symbols[1:119])


@pytest.mark.parametrize("token", ["Au", "au", "AU", "aU", " Au ", "79", 79, np.int64(79)])
def test_atomic_number_accepts(token: object) -> None:
    assert atomic_number(token) == 79


@pytest.mark.parametrize("token", ["X", "Xx", "", "0", "119", "-1", "7.9", 0, 119, True, None])
def test_atomic_number_rejects(token: object) -> None:
    with pytest.raises(KeyError, match=repr(token).replace("(", r"\(").replace(")", r"\)")):
        atomic_number(token)  # type: ignore[arg-type]


def test_symbol() -> None:
    assert symbol(79) == "Au"
    assert symbol(1) == "H"
    for bad in (0, 119, "79", 1.0):
        with pytest.raises(KeyError):
            symbol(bad)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------
# agreement with ASE
# --------------------------------------------------------------------------------------


@requires_ase
def test_plain_xyz_mixed_elements_matches_ase(tmp_path: Path, mode: str) -> None:
    path = tmp_path / "ethanol.xyz"
    ase.io.write(path, molecule("CH3CH2OH"), format="xyz")
    s = read_xyz(path)
    assert s.name == "ethanol"
    assert s.source == str(path)
    assert set(s.frames[0].numbers.tolist()) == {1, 6, 8}
    assert_matches_ase(path, s)


@requires_ase
def test_extxyz_with_forces_lattice_and_varying_counts_matches_ase(
    tmp_path: Path, mode: str
) -> None:
    images = []
    for k, n in enumerate([4, 2, 3, 4, 1]):
        atoms = rattled(bulk("Cu", cubic=True), seed=k, n=n)
        atoms.set_array("forces", np.random.default_rng(k).normal(size=(n, 3)))
        atoms.info["energy"] = -1.25 * (k + 1)
        images.append(atoms)
    path = tmp_path / "traj.extxyz"
    ase.io.write(path, images, format="extxyz")
    assert "forces:R:3" in path.read_text()
    s = read_xyz(path, maxframes=None)
    assert [f.n_atoms for f in s.frames] == [4, 2, 3, 4, 1]
    assert s.max_atoms == 4
    assert_matches_ase(path, s)


@requires_ase
def test_cluster_matches_ase(tmp_path: Path, mode: str) -> None:
    path = tmp_path / "au55.xyz"
    ase.io.write(path, [rattled(Icosahedron("Au", 3), seed=k) for k in range(4)])
    s = read_xyz(path)
    assert s.name == "au55"
    assert s.max_atoms == 55
    assert (s.frames[0].numbers == 79).all()
    assert_matches_ase(path, s)


@requires_ase
def test_mixed_multiframe_matches_ase(tmp_path: Path, mode: str) -> None:
    rng = np.random.default_rng(7)
    images = []
    for k in range(6):
        n = int(rng.integers(1, 30))
        numbers = rng.choice([1, 6, 8, 29, 47, 79, 92], size=n)
        images.append(Atoms(numbers=numbers, positions=rng.uniform(-20, 20, size=(n, 3))))
    path = tmp_path / "mixed.xyz"
    ase.io.write(path, images)
    assert_matches_ase(path, read_xyz(path, maxframes=None))


def test_custom_properties_column_order_and_z_column(tmp_path: Path, mode: str) -> None:
    text = (
        "2\n"
        'Properties=id:I:1:pos:R:3:Z:I:1:charge:R:1 energy=1.0 comment="a b=c"\n'
        "1 0.5 1.5 2.5 79 0.1\n"
        "2 -1 -2 -3 6 0.2\n"
        "2\n"
        "properties=pos:R:3:species:S:1\n"
        "1 2 3 cu\n"
        "4 5 6 O\n"
    )
    s = read_xyz(write(tmp_path, text), maxframes=None)
    np.testing.assert_array_equal(s.frames[0].numbers, [79, 6])
    np.testing.assert_array_equal(s.frames[0].positions, [[0.5, 1.5, 2.5], [-1, -2, -3]])
    np.testing.assert_array_equal(s.frames[1].numbers, [29, 8])
    np.testing.assert_array_equal(s.frames[1].positions, [[1, 2, 3], [4, 5, 6]])


def test_properties_in_quoted_comment_is_ignored(tmp_path: Path, mode: str) -> None:
    text = '1\nnote="Properties=pos:R:3:species:S:1"\nAu 1 2 3\n'
    s = read_xyz(write(tmp_path, text))
    np.testing.assert_array_equal(s.frames[0].numbers, [79])


# --------------------------------------------------------------------------------------
# tolerated formatting
# --------------------------------------------------------------------------------------


def test_case_insensitive_symbols_and_atomic_numbers(tmp_path: Path, mode: str) -> None:
    text = frames_text([["au 0 0 0", "AU 1 0 0", "Au 2 0 0", "79 3 0 0", "6 4 0 0", "cl 5 0 0"]])
    s = read_xyz(write(tmp_path, text))
    np.testing.assert_array_equal(s.frames[0].numbers, [79, 79, 79, 79, 6, 17])


@pytest.mark.parametrize("newline", ["\r\n", "\r"])
def test_crlf_and_cr_line_ends(tmp_path: Path, mode: str, newline: str) -> None:
    text = frames_text([GOOD, GOOD[:2]])
    s = read_xyz(write(tmp_path, text, newline=newline), maxframes=None)
    assert [f.n_atoms for f in s.frames] == [3, 2]
    np.testing.assert_array_equal(s.frames[0].positions[2], [-1.5, 0.5, 2.5])


def test_tabs_whitespace_extra_columns_and_trailing_blank_lines(tmp_path: Path, mode: str) -> None:
    text = (
        "  3  \n"
        '\ta comment with = signs and "quotes\n'
        "\tAu\t0.0\t0.0\t0.0\t9.9\n"
        "   Au   1.0   2.0   3.0   extra   columns  \n"
        "C -1.5 0.5 2.5 1 2 3 4 5 6\n"
        "2\n\n"
        "Au 1 1 1 x\n"
        "Au 2 2 2 y\n"
        "\n   \n\t\n\n"
    )
    s = read_xyz(write(tmp_path, text), maxframes=None)
    assert [f.n_atoms for f in s.frames] == [3, 2]
    np.testing.assert_array_equal(s.frames[0].numbers, [79, 79, 6])
    np.testing.assert_array_equal(s.frames[0].positions, [[0, 0, 0], [1, 2, 3], [-1.5, 0.5, 2.5]])
    np.testing.assert_array_equal(s.frames[1].positions, [[1, 1, 1], [2, 2, 2]])


def test_no_final_newline_and_bom(tmp_path: Path, mode: str) -> None:
    path = tmp_path / "bom.xyz"
    path.write_bytes(b"\xef\xbb\xbf1\nc\nAu 1 2 3")
    s = read_xyz(path)
    np.testing.assert_array_equal(s.frames[0].positions, [[1, 2, 3]])


@requires_ase
def test_many_frames_across_batches(tmp_path: Path, mode: str, monkeypatch) -> None:
    monkeypatch.setattr(structures, "_BATCH_LINES", 50)
    images = [rattled(Icosahedron("Au", 2), seed=k, n=5 + k % 9) for k in range(40)]
    path = tmp_path / "long.xyz"
    ase.io.write(path, images)
    assert_matches_ase(path, read_xyz(path, maxframes=None))


# --------------------------------------------------------------------------------------
# frame selection and exclusion
# --------------------------------------------------------------------------------------


@pytest.fixture
def five_frames(tmp_path: Path) -> Path:
    return write(tmp_path, frames_text([[f"Au {k} 0 0"] * (k + 1) for k in range(5)]), "five.xyz")


@pytest.mark.parametrize(
    ("frameshift", "maxframes"),
    [(0, 50), (0, 1), (0, 2), (1, 3), (3, 50), (4, 1), (4, 10), (5, 2), (17, 50), (2, None)],
)
def test_frame_selection_like_original(
    five_frames: Path, mode: str, frameshift: int, maxframes: int | None
) -> None:
    n = 5
    mf = n if maxframes is None else maxframes
    expected = list(range(n))[min(frameshift, n - 1) : min(frameshift + mf, n)]
    s = read_xyz(five_frames, frameshift=frameshift, maxframes=maxframes)
    assert [f.index for f in s.frames] == expected
    assert [f.n_atoms for f in s.frames] == [k + 1 for k in expected]
    assert [f.positions[0, 0] for f in s.frames] == [float(k) for k in expected]


def test_frameshift_beyond_end_takes_last_frame(five_frames: Path, mode: str) -> None:
    s = read_xyz(five_frames, frameshift=1000)
    assert [f.index for f in s.frames] == [4]
    assert s.frames[0].n_atoms == 5


@pytest.mark.parametrize(
    ("kwargs", "exc"),
    [
        ({"frameshift": -1}, ValueError),
        ({"maxframes": 0}, ValueError),
        ({"maxframes": -3}, ValueError),
        ({"frameshift": 1.5}, TypeError),
    ],
)
def test_bad_selection_arguments(five_frames: Path, kwargs: dict, exc: type) -> None:
    with pytest.raises(exc):
        read_xyz(five_frames, **kwargs)
    with pytest.raises(exc):
        as_structure(np.zeros((1, 3)), numbers=[1], **kwargs)


def test_frames_after_the_selection_are_not_read(tmp_path: Path, mode: str) -> None:
    path = write(tmp_path, frames_text([GOOD, GOOD, ["Au x y z"]]))
    assert len(read_xyz(path, maxframes=2).frames) == 2
    with pytest.raises(StructureError, match="frame 2, line 13"):
        read_xyz(path, maxframes=3)


@pytest.mark.parametrize("exclude", [["C"], ["c"], [6], ("6",), "C", {6, 1}])
def test_exclude_elements(tmp_path: Path, mode: str, exclude: object) -> None:
    path = write(tmp_path, frames_text([GOOD, ["C 0 0 0", "Au 5 5 5"]]))
    s = read_xyz(path, exclude_elements=exclude)
    assert [f.numbers.tolist() for f in s.frames] == [[79, 79], [79]]
    np.testing.assert_array_equal(s.frames[1].positions, [[5, 5, 5]])


def test_exclude_unknown_element_is_value_error(five_frames: Path) -> None:
    with pytest.raises(ValueError, match="Qq"):
        read_xyz(five_frames, exclude_elements=["Qq"])


# --------------------------------------------------------------------------------------
# malformed input
# --------------------------------------------------------------------------------------


def expect_error(path: Path, frame: int, line: int, match: str, **kwargs) -> StructureError:
    with pytest.raises(StructureError) as info:
        read_xyz(path, **kwargs)
    exc = info.value
    text = str(exc)
    assert path.name in text
    assert f"frame {frame}" in text
    assert f"line {line}" in text
    assert text.startswith(f"{path}, frame {frame}, line {line}: ")
    assert (exc.path, exc.frame, exc.line) == (str(path), frame, line)
    assert match.lower() in exc.message.lower(), exc.message
    assert isinstance(exc, ValueError)
    return exc


@pytest.mark.parametrize("text", ["", "\n", "  \n\t\n\n"])
def test_empty_file(tmp_path: Path, mode: str, text: str) -> None:
    expect_error(write(tmp_path, text, "empty.xyz"), 0, 1, "empty")


@pytest.mark.parametrize("count", ["abc", "0", "-2", "2.0", "3 atoms"])
def test_bad_count_line(tmp_path: Path, mode: str, count: str) -> None:
    path = write(tmp_path, f"{count}\nc\nAu 0 0 0\n")
    expect_error(path, 0, 1, "positive integer atom count")
    # the same in the third frame: count line is line 9
    path = write(tmp_path, frames_text([GOOD[:1], GOOD[:2]]) + f"{count}\nc\nAu 0 0 0\n")
    expect_error(path, 2, 8, "atom count", maxframes=None)


def test_file_ends_early(tmp_path: Path, mode: str) -> None:
    # frame 1 declares 3 atoms on line 6 but only 2 atom lines follow (then blank lines)
    path = write(tmp_path, frames_text([GOOD, GOOD[:2]]).replace("\n2\n", "\n3\n") + "\n\n")
    exc = expect_error(path, 1, 6, "ends after 2 atom lines", maxframes=None)
    assert "3" in exc.message
    path = write(tmp_path, "2\ncomment\n")
    expect_error(path, 0, 1, "ends after 0 atom lines")
    path = write(tmp_path, "4")
    expect_error(path, 0, 1, "before the comment line")


def test_count_too_small(tmp_path: Path, mode: str) -> None:
    # frame 0 says 2 atoms but has 3: line 5 ("C -1.5 ...") is where frame 1's count should be
    path = write(tmp_path, frames_text([GOOD, GOOD]).replace("3\n", "2\n", 1))
    exc = expect_error(path, 1, 5, "atom count of the next frame", maxframes=None)
    assert "frame 0 (2)" in exc.message


def test_count_too_large(tmp_path: Path, mode: str) -> None:
    # frame 0 says 4 atoms but has 3: the 4th "atom line" is frame 1's count line (line 6)
    path = write(tmp_path, frames_text([GOOD, GOOD, GOOD]).replace("3\n", "4\n", 1))
    exc = expect_error(path, 0, 6, "columns")
    assert "atom count" in exc.message


def test_blank_line_between_frames(tmp_path: Path, mode: str) -> None:
    path = write(tmp_path, frames_text([GOOD]) + "\n" + frames_text([GOOD]))
    expect_error(path, 1, 6, "blank line", maxframes=None)


@pytest.mark.parametrize(
    ("bad_line", "match"),
    [
        ("Au 1.0 abc 3.0", "non-numeric coordinate 'abc'"),
        ("Au 1.0 2.0 3,0", "non-numeric coordinate '3,0'"),
        ("Au 1.0 2.0", "at least 4 columns"),
        ("Au", "at least 4 columns"),
        ("Xx 1.0 2.0 3.0", "unknown element 'Xx'"),
        ("0 1.0 2.0 3.0", "unknown element '0'"),
        ("Au nan 2.0 3.0", "non-finite coordinate 'nan'"),
        ("Au 1.0 -inf 3.0", "non-finite coordinate '-inf'"),
        ("Au 1.0 2.0 1e999", "non-finite"),
    ],
)
def test_bad_atom_line(tmp_path: Path, mode: str, bad_line: str, match: str) -> None:
    frames = [GOOD, GOOD, GOOD]
    frames[1] = [GOOD[0], bad_line, GOOD[2]]
    path = write(tmp_path, frames_text(frames), "bad.xyz")
    expect_error(path, 1, 9, match)  # frame 1 starts on line 6; its 2nd atom is on line 9


def test_first_error_in_file_order_is_reported(tmp_path: Path, mode: str) -> None:
    # frame 1 has a bad coordinate (line 9); frame 3 has a bad count line (line 16)
    text = frames_text([GOOD, ["Au 0 0 0", "Au 1 x 2", "Au 0 0 0"], GOOD]) + "bad\nc\n"
    expect_error(write(tmp_path, text), 1, 9, "non-numeric", maxframes=None)


def test_bad_properties(tmp_path: Path, mode: str) -> None:
    path = write(tmp_path, frames_text([GOOD]) + "1\nProperties=species:S:1:velo:R:3\nAu 1 2 3\n")
    expect_error(path, 1, 7, "no pos column", maxframes=None)
    path = write(tmp_path, "1\nProperties=species:S:1:pos:R\nAu 1 2 3\n")
    expect_error(path, 0, 2, "name:type:ncols")


def test_extxyz_too_few_columns_for_properties(tmp_path: Path, mode: str) -> None:
    text = "2\nProperties=id:I:1:species:S:1:pos:R:3\n1 Au 0 0 0\n2 Au 0 0\n"
    expect_error(write(tmp_path, text), 0, 4, "at least 5 columns")


def test_frame_empty_after_exclusion(tmp_path: Path, mode: str) -> None:
    path = write(tmp_path, frames_text([GOOD, ["C 0 0 0", "c 1 1 1"], GOOD]))
    exc = expect_error(path, 1, 6, "no atoms left", exclude_elements=["C"])
    assert "C" in exc.message


def test_count_errors_before_frameshift_are_reported(tmp_path: Path, mode: str) -> None:
    path = write(tmp_path, frames_text([GOOD]) + "x\n" + frames_text([GOOD]))
    expect_error(path, 1, 6, "atom count", frameshift=5)


def test_missing_file() -> None:
    with pytest.raises(FileNotFoundError):
        read_xyz("/nonexistent/dir/none.xyz")


# --------------------------------------------------------------------------------------
# StructureError, Frame, Structure
# --------------------------------------------------------------------------------------


def test_structure_error_format_and_pickle() -> None:
    exc = StructureError("boom", path="a/b.xyz", frame=3, line=12)
    assert str(exc) == "a/b.xyz, frame 3, line 12: boom"
    assert str(StructureError("boom", path=Path("x.xyz"))) == "x.xyz: boom"
    assert str(StructureError("boom", frame=0)) == "frame 0: boom"
    assert str(StructureError("boom")) == "boom"
    back = pickle.loads(pickle.dumps(exc))
    assert (str(back), back.path, back.frame, back.line) == (str(exc), "a/b.xyz", 3, 12)


def test_frame_and_structure_validation() -> None:
    f = Frame(numbers=np.array([79, 6]), positions=[[0, 0, 0], [1, 1, 1]], index=2)
    assert f.numbers.dtype == np.int16 and f.positions.dtype == np.float64
    assert f.n_atoms == 2
    with pytest.raises(ValueError):
        f.positions[0, 0] = 5.0  # read-only
    assert f == Frame(numbers=[79, 6], positions=np.array([[0, 0, 0], [1, 1, 1.0]]), index=2)
    for numbers, positions in [
        ([79], [[0, 0]]),
        ([79, 79], [[0, 0, 0]]),
        ([0], [[0, 0, 0]]),
        ([119], [[0, 0, 0]]),
        ([79], [[0, np.nan, 0]]),
        ([], np.zeros((0, 3))),
    ]:
        with pytest.raises(StructureError):
            Frame(numbers=np.array(numbers), positions=np.array(positions, dtype=float), index=0)
    s = Structure(name="s", frames=[f, Frame(numbers=[1], positions=[[0, 0, 0]], index=3)])
    assert isinstance(s.frames, tuple)
    assert s.max_atoms == 2
    assert s.source is None
    with pytest.raises(StructureError):
        Structure(name="s", frames=())


# --------------------------------------------------------------------------------------
# as_structure
# --------------------------------------------------------------------------------------


def test_as_structure_array_with_numbers_and_symbols() -> None:
    pos = np.array([[0, 0, 0], [1.5, 0, 0], [0, 2.5, 0]])
    s = as_structure(pos, numbers=[79, 79, 6])
    assert s.name == "structure"
    assert len(s.frames) == 1 and s.frames[0].index == 0
    np.testing.assert_array_equal(s.frames[0].positions, pos)
    t = as_structure(pos.tolist(), symbols=["au", "Au", "C"], name="mine", exclude_elements=["C"])
    assert t.name == "mine"
    np.testing.assert_array_equal(t.frames[0].numbers, [79, 79])


def test_as_structure_frames_array_and_selection() -> None:
    pos = np.arange(5 * 2 * 3, dtype=float).reshape(5, 2, 3)
    s = as_structure(pos, numbers=[1, 8], frameshift=1, maxframes=2)
    assert [f.index for f in s.frames] == [1, 2]
    np.testing.assert_array_equal(s.frames[1].positions, pos[2])
    s = as_structure(pos, numbers=np.tile([1, 8], (5, 1)), frameshift=9)
    assert [f.index for f in s.frames] == [4]
    assert len(as_structure(pos, numbers=[1, 8], maxframes=None).frames) == 5


@pytest.mark.parametrize(
    ("obj", "kwargs", "exc"),
    [
        (np.zeros((3, 2)), {"numbers": [1, 1, 1]}, StructureError),
        (np.zeros((2, 2, 2, 3)), {"numbers": [1, 1]}, StructureError),
        (np.zeros((3, 3)), {"numbers": [1, 1]}, StructureError),
        (np.zeros((3, 3)), {"symbols": ["H", "H", "Qq"]}, StructureError),
        (np.zeros((3, 3)), {"numbers": [1, 1, 200]}, StructureError),
        (np.array([[0, 0, np.inf]]), {"numbers": [1]}, StructureError),
        (np.zeros((0, 3)), {"numbers": []}, StructureError),
        (np.zeros((1, 3)), {"numbers": [6], "exclude_elements": ["C"]}, StructureError),
        (np.zeros((1, 3)), {}, ValueError),
        (np.zeros((1, 3)), {"numbers": [1], "symbols": ["H"]}, ValueError),
        (object(), {}, TypeError),
    ],
)
def test_as_structure_array_validation(obj: object, kwargs: dict, exc: type) -> None:
    with pytest.raises(exc):
        as_structure(obj, **kwargs)


def test_as_structure_nan_in_later_frame_names_frame() -> None:
    pos = np.zeros((3, 2, 3))
    pos[2, 1, 0] = np.nan
    with pytest.raises(StructureError, match="frame 2"):
        as_structure(pos, numbers=[1, 1], maxframes=None)


@requires_ase
def test_as_structure_atoms_and_list_of_atoms() -> None:
    atoms = rattled(Icosahedron("Au", 2), seed=1)
    s = as_structure(atoms)
    np.testing.assert_array_equal(s.frames[0].positions, atoms.get_positions())
    np.testing.assert_array_equal(s.frames[0].numbers, atoms.numbers)
    images = [rattled(molecule("CH4"), seed=k) for k in range(4)]
    s = as_structure(images, frameshift=1, maxframes=2, exclude_elements=["H"], name="methane")
    assert s.name == "methane"
    assert [f.index for f in s.frames] == [1, 2]
    assert [f.numbers.tolist() for f in s.frames] == [[6], [6]]
    np.testing.assert_array_equal(s.frames[1].positions, images[2].get_positions()[:1])


def test_as_structure_structure_passthrough_refilter_rename(five_frames: Path) -> None:
    s = read_xyz(five_frames, maxframes=None)
    assert as_structure(s) is s
    assert as_structure(s, frameshift=3) is s  # already selected
    renamed = as_structure(s, name="other")
    assert renamed.name == "other" and renamed.frames == s.frames
    mixed = as_structure(np.zeros((2, 3)), numbers=[79, 6])
    filtered = as_structure(mixed, exclude_elements=["C"])
    assert filtered.frames[0].numbers.tolist() == [79]
    with pytest.raises(StructureError, match="no atoms left"):
        as_structure(mixed, exclude_elements=["C", "Au"])


@requires_ase
def test_as_structure_paths(tmp_path: Path, five_frames: Path) -> None:
    s = as_structure(str(five_frames), frameshift=2, maxframes=2)
    assert s.name == "five"
    assert [f.index for f in s.frames] == [2, 3]
    assert as_structure(five_frames, name="n").name == "n"
    ext = tmp_path / "cu.EXTXYZ"
    ase.io.write(ext, bulk("Cu", cubic=True), format="extxyz")
    assert as_structure(ext).frames[0].n_atoms == 4


@requires_ase
def test_as_structure_other_formats_via_ase(tmp_path: Path) -> None:
    images = [rattled(Icosahedron("Au", 2), seed=k) for k in range(3)]
    path = tmp_path / "run.traj"
    ase.io.write(path, images)
    s = as_structure(path, frameshift=1)
    assert s.name == "run" and s.source == str(path)
    assert [f.index for f in s.frames] == [1, 2]
    np.testing.assert_allclose(s.frames[1].positions, images[2].get_positions())
    bad = write(tmp_path, "not a trajectory", "bad.traj")
    with pytest.raises(StructureError, match="bad.traj"):
        as_structure(bad)
    with pytest.raises(FileNotFoundError):
        as_structure(tmp_path / "missing.traj")


def test_as_structure_without_ase(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_ase(name: str, *args, **kwargs):
        if name == "ase" or name.startswith("ase."):
            raise ImportError("no ase here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ase)
    path = write(tmp_path, "whatever", "x.cif")
    with pytest.raises(StructureError, match=r"xyz2image-gpu\[ase\]"):
        as_structure(path)
