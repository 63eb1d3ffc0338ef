"""Every output byte of a fixed set of CLI runs equals the recorded one (see golden_outputs.py).

Covers every output type, 8 and 16 bits, all framings and normalisations, legacy mode, the
optics probe, thermal smearing, the column correction and every augmentation, on the compiled
kernel and on the NumPy path.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import golden_outputs

from xyz2image_gpu.pipeline.kernels import compiled_kernel_available

RECORDED = json.loads(golden_outputs.RECORD.read_text())


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    return golden_outputs.write_inputs(tmp_path_factory.mktemp("golden") / "inputs")


def test_every_case_is_recorded():
    assert sorted(RECORDED) == sorted(name for name, _, _ in golden_outputs.CASES)


@pytest.mark.parametrize("name, args, numpy_path", golden_outputs.CASES,
                         ids=[c[0] for c in golden_outputs.CASES])
def test_output_bytes_unchanged(name, args, numpy_path, inputs, tmp_path):
    if not numpy_path and not compiled_kernel_available():
        pytest.fail("the compiled kernel is not built: the recorded bytes are its bytes")
    hashes = golden_outputs.run_case(inputs, tmp_path / name, args, numpy_path)
    assert hashes == RECORDED[name]
