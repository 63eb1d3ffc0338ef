"""The tests run without ASE: their modules import, and the stand-in that builds their
structures (``ase_compat``) gives ASE's atoms."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ase_compat import StandInAtoms, icosahedron, requires_ase

TESTS = Path(__file__).resolve().parent


def _sorted_rows(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    return a[np.lexsort(np.round(a, 6).T[::-1])]


def test_every_test_module_is_collected_without_ase():
    """Collect the whole suite in a process where ``import ase`` fails."""
    code = ("import sys; sys.modules['ase'] = None; import pytest; "
            "sys.exit(pytest.main(['--collect-only', '-q', '-p', 'no:cacheprovider', "
            f"{str(TESTS)!r}]))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(TESTS.parent), *filter(None, [os.environ.get("PYTHONPATH")])])}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env=env, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "error" not in proc.stdout.splitlines()[-1], proc.stdout[-3000:]


def test_stand_in_formulas_and_arrays():
    atoms = StandInAtoms("Au4Pd2", positions=np.arange(18.0).reshape(6, 3))
    assert atoms.numbers.tolist() == [79] * 4 + [46] * 2 and len(atoms) == 6
    both = atoms[:2] + atoms[4:]
    assert both.numbers.tolist() == [79, 79, 46, 46]
    np.testing.assert_array_equal(both.get_positions()[2], [12.0, 13.0, 14.0])
    copy = atoms.copy()
    copy.positions += 1.0
    copy.set_chemical_symbols(["O"] * 6)
    assert atoms.positions[0, 0] == 0.0 and atoms.numbers[0] == 79
    assert copy.get_atomic_numbers().tolist() == [8] * 6
    with pytest.raises(ValueError, match="not understood"):
        StandInAtoms("au2")


@requires_ase
@pytest.mark.parametrize(("symbol", "shells"), [("Au", 4), ("Pt", 3), ("Pd", 2), ("Au", 1)])
def test_stand_in_icosahedra_are_ases(symbol, shells):
    ours = icosahedron(symbol, shells, use_ase=False)
    theirs = icosahedron(symbol, shells, use_ase=True)
    assert isinstance(ours, StandInAtoms) and len(ours) == len(theirs)
    np.testing.assert_array_equal(ours.numbers, theirs.numbers)
    np.testing.assert_allclose(_sorted_rows(ours.positions), _sorted_rows(theirs.positions),
                               rtol=0, atol=1e-9)


@requires_ase
@pytest.mark.parametrize(("angle", "axis"), [(90, "z"), (-33.0, "x"), (250.0, (1.0, -2.0, 0.5))])
def test_stand_in_rotate_is_ases(angle, axis):
    from ase import Atoms

    pos = np.random.default_rng(3).normal(size=(9, 3))
    ours, theirs = StandInAtoms("H9", positions=pos), Atoms("H9", positions=pos)
    ours.rotate(angle, axis)
    theirs.rotate(angle, axis)
    np.testing.assert_allclose(ours.positions, theirs.positions, rtol=0, atol=1e-12)
