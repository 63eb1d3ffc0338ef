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


# ------------------------------------------------------------------------ output types


def test_output_types_are_validated_in_one_place():
    from xyz2image_gpu import Renderer, run
    from xyz2image_gpu.pipeline import settings

    assert run.normalize_output_types is settings.normalize_output_types
    for name in ("array_types", "image_types", "render_types"):
        assert getattr(run, name) is getattr(settings, name)
    assert run.config.ALL_TYPE_NAMES == settings.ALL_OUTPUT_TYPES
    names = ["gaussian_2d_image", " coordinates_3d", "", "binary_2d", "coordinates_3d"]
    assert settings.normalize_output_types(names) == (
        "coordinates_3d", "binary_2d", "gaussian_2d_image")
    assert settings.normalize_output_types("binary_2d,gaussian_2d") == (
        "gaussian_2d", "binary_2d")
    assert settings.render_types(names) == ("coordinates_3d", "gaussian_2d", "binary_2d")
    # the engine keeps the order given
    assert settings.requested_arrays(names) == ("gaussian_2d", "coordinates_3d", "binary_2d")
    renderer = Renderer(output_types="gaussian_2d_image", device="cpu")
    assert renderer.output_types == ("gaussian_2d",)
    renderer.close()
    for bad in (["gaussian_2d", "nope"], [], " , "):
        for check in (settings.normalize_output_types, settings.render_types,
                      lambda n: Renderer(output_types=n, device="cpu")):
            with pytest.raises(ValueError, match="valid names: coordinates_3d"):
                check(bad)
