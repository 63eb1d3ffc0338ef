"""render() of an array of positions: atomic numbers or symbols by keyword, or an error that
says how to give them."""

from __future__ import annotations

import numpy as np
import pytest

from xyz2image_gpu import Renderer, as_structure, render
from xyz2image_gpu.structures.examples import icosahedron_positions


def test_render_takes_numbers_or_symbols_for_an_array_of_positions(device):
    positions, _ = icosahedron_positions(2, 2.88)
    numbers = np.where(np.arange(len(positions)) % 3 == 0, 46, 79)
    symbols = ["Pd" if z == 46 else "Au" for z in numbers]
    kw = {"n_rotation": 3, "output_types": ["gaussian_2d", "coordinates_3d"], "seed": 4,
          "device": device, "edgesize": 32}
    want = render(as_structure(positions, numbers=numbers), **kw)
    for given in ({"numbers": numbers}, {"symbols": symbols}):
        got = render(positions, **given, **kw)
        assert got.keys() == want.keys()
        for key in want:
            np.testing.assert_array_equal(got[key], want[key], err_msg=f"{given} {key}")
    # (F, N, 3): one image set per frame, the numbers shared
    frames = np.stack([positions, positions * 1.02])
    got = render(frames, numbers=numbers, **kw)
    assert got["frame_index"].tolist() == [0, 0, 0, 1, 1, 1]


def test_an_array_without_numbers_says_how_to_give_them():
    for call in (lambda: render(np.zeros((5, 3)), device="cpu"),
                 lambda: Renderer(device="cpu").render(np.zeros((5, 3)))):
        with pytest.raises(ValueError, match=r"numbers= or symbols=") as info:
            call()
        assert "xyz2image_gpu.as_structure(positions, numbers=" in str(info.value)
        assert "render(positions, numbers=" in str(info.value)
    with pytest.raises(ValueError, match="apply only to array input"):
        render(as_structure(np.zeros((1, 3)), numbers=[79]), numbers=[79], device="cpu")
