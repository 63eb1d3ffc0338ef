"""No silent garbage: API counts that are not counts (issue 9, item 7)."""

from __future__ import annotations

import numpy as np
import pytest

from xyz2image_gpu import Renderer, RenderSettings, render
from xyz2image_gpu.structures.examples import bundled_examples

AU147 = next(p for p in bundled_examples() if p.name == "au147_icosahedron.xyz")


# ---------------------------------------------------------------- 3. API arguments


@pytest.mark.parametrize("kwargs", [
    {"n_rotation": 2.5}, {"n_rotation": True}, {"n_rotation": "4"}, {"n_rotation": 0},
    {"n_rotation": 3.0}, {"batch_size": 0}, {"batch_size": 2.5}, {"batch_size": False},
    {"batch_size": "8"}, {"stop": 1.5},
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
