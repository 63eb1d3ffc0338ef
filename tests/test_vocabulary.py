"""One vocabulary: environment flags, output types, element lists and the settings' dict,
each read or parsed in one place and used the same way by the API, the runs and the CLI."""

from __future__ import annotations

import pytest

from xyz2image_gpu import backend, flags
from xyz2image_gpu.pipeline.kernels import compiled

# ------------------------------------------------------------------------------ flags


@pytest.mark.parametrize(("value", "on"), [
    (None, False), ("", False), ("0", False), ("false", False), (" No ", False),
    ("1", True), ("yes", True), ("TRUE", True),
])
def test_environment_flags_are_read_in_one_place(monkeypatch, value, on):
    for name in (flags.FORCE_CPU_ENV, flags.NO_EXTENSION_ENV):
        monkeypatch.delenv(name, raising=False)
        if value is not None:
            monkeypatch.setenv(name, value)
    assert flags.force_cpu() is on and flags.no_extension() is on
    assert backend._force_cpu() is on
    if compiled._splat is not None:
        assert compiled.compiled_kernel_available() is not on
    assert (flags.FORCE_CPU_ENV in flags.set_flags()) is bool(value)


def test_flag_names_stay_importable_where_they_were():
    assert backend.FORCE_CPU_ENV == flags.FORCE_CPU_ENV == "XYZ2IMAGE_GPU_FORCE_CPU"
    assert compiled.NO_EXTENSION_ENV == flags.NO_EXTENSION_ENV == "XYZ2IMAGE_GPU_NO_EXTENSION"
    assert flags.DEVICE_ENV == "XYZ2IMAGE_GPU_DEVICE"
