"""A run never leaves silent garbage: requests that cannot fit memory, folders that would mix
settings, changed inputs, unwritable outputs, signals and odd input paths all end in a clear
message (issue 9, item 7); and the units a run sends to its workers."""

from __future__ import annotations

import pickle
from pathlib import Path

from xyz2image_gpu import RenderSettings
from xyz2image_gpu.run import RunConfig
from xyz2image_gpu.run.execute import _Run
from xyz2image_gpu.structures.examples import bundled_examples

AU147 = next(p for p in bundled_examples() if p.name == "au147_icosahedron.xyz")
PT309 = next(p for p in bundled_examples() if p.name == "pt309_icosahedron.xyz")


def test_units_share_the_run_config_and_pickle(tmp_path):
    config = RunConfig(inputs=(AU147, PT309), output_folder=tmp_path / "out",
                       settings=RenderSettings(edgesize=16), n_stacks=2, workers=2)
    state = _Run(config, print, "none", None, 10.0)
    units, total = state.prepare()
    assert len(units) == 4 and total == 4
    assert len({id(u.config) for u in units}) == 1  # one config object, not copies
    assert units[0].config.settings == config.settings and units[0].config.inputs == ()
    clone = pickle.loads(pickle.dumps(units[3]))
    assert clone == units[3] and clone.outputs() == units[3].outputs()
    assert clone.outputs()[0] == Path(tmp_path / "out" / "pt309_icosahedron" / "0001.npz")
