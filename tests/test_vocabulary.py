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


# ------------------------------------------------------------------------ element lists


def test_element_lists_are_parsed_in_one_place(tmp_path):
    from xyz2image_gpu import RenderSettings, as_structure, run
    from xyz2image_gpu.physics.thermal import rms_displacement
    from xyz2image_gpu.structures import elements

    assert run.normalize_elements is elements.normalize_elements
    assert elements.element_numbers(["h", " C ", 6, "", "79"]) == (1, 6, 79)
    assert elements.element_numbers("C, h") == (1, 6)
    assert elements.element_numbers(None) == elements.element_numbers("") == ()
    assert elements.normalize_elements(["au", 1]) == ("H", "Au")
    with pytest.raises(ValueError, match="exclude_elements: unknown element 'Xx'"):
        elements.element_numbers("C,Xx", what="exclude_elements")
    with pytest.raises(KeyError):  # also a KeyError, as atomic_number raises
        elements.element_numbers(["Qq"])

    want = (("Au", 0.085), ("Pd", 0.09))
    for given in ("au=0.085, Pd=0.09", {"Au": 0.085, 46: "0.09"},
                  [("AU", 0.085), ("pd", 0.09)], ["Au=0.085", "Pd=0.09"],
                  "Au=1,Pd=0.09,au=0.085"):
        assert elements.element_values(given) == want, given
    for bad, message in (("Au", "expected ELEMENT=number"), ("Xx=1", "unknown element"),
                         ("Au=x", "not a number"), ([("Au",)], "pair")):
        with pytest.raises(ValueError, match=message):
            elements.element_values(bad)

    # every user of the vocabulary goes through it
    st = as_structure([[0, 0, 0], [1, 0, 0], [2, 0, 0]], symbols=["Au", "C", "H"],
                      exclude_elements="c,H")
    assert st.frames[0].numbers.tolist() == [79]
    with pytest.raises(ValueError, match="exclude_elements: unknown element 'Xx'"):
        as_structure([[0, 0, 0]], numbers=[79], exclude_elements=["Xx"])
    settings = RenderSettings(thermal=True, thermal_overrides={"pd": 0.2, "au": 0.1})
    assert settings.thermal_overrides == (("Pd", 0.2), ("Au", 0.1))
    assert settings == RenderSettings(thermal=True, thermal_overrides="Pd=0.2,Au=0.1")
    with pytest.raises(ValueError, match="thermal_overrides: unknown element 'Qq'"):
        RenderSettings(thermal_overrides=(("Qq", 0.1),))
    assert rms_displacement("Pd", overrides="Au=0.12,pd=0.2") == 0.2


# ------------------------------------------------------------------- settings and contrast


def test_one_default_contrast_for_the_api_and_the_cli():
    from xyz2image_gpu import RenderSettings
    from xyz2image_gpu.cli import options
    from xyz2image_gpu.pipeline.settings import HAADF_Z_EXPONENT

    assert HAADF_Z_EXPONENT == options.HAADF_Z_EXPONENT == 1.7
    assert RenderSettings().z_exponent == 1.7
    assert RenderSettings(legacy=True).z_exponent == 0.0
    assert RenderSettings(z_exponent=0).z_exponent == 0
    assert RenderSettings() == RenderSettings(z_exponent=1.7)
    assert RenderSettings().to_dict()["z_exponent"] == 1.7
    with pytest.raises(ValueError, match="legacy"):
        RenderSettings(legacy=True, z_exponent=1.7)


def test_settings_round_trip_through_a_dict():
    import json

    from xyz2image_gpu import RenderSettings

    settings = RenderSettings(
        edgesize=48, probe=((1.0, 0.4), (0.05, 1.5)), thermal=True,
        thermal_overrides={"au": 0.1}, column_correction=[0.17], column_broadening=0.004,
        framing="fixed", pixel_size=0.3, dose=100.0)
    data = json.loads(json.dumps(settings.to_dict()))
    assert data["probe"] == [[1.0, 0.4], [0.05, 1.5]]
    again = RenderSettings.from_dict(data)
    assert again == settings and hash(again) == hash(settings)
    assert RenderSettings.from_dict({}) == RenderSettings()
    assert RenderSettings.from_dict({"legacy": True}).z_exponent == 0
    with pytest.raises(ValueError, match="unknown RenderSettings field 'sigma'; valid: edgesize"):
        RenderSettings.from_dict({"sigma": 0.3})


def test_a_manifest_written_by_the_cli_turns_back_into_its_settings(tmp_path):
    """The "parameters" of a real manifest rebuild the settings the CLI rendered with, and
    those settings render the stack's bytes again through the API."""
    import json

    import numpy as np
    from click.testing import CliRunner

    from xyz2image_gpu import Renderer, RenderSettings, run
    from xyz2image_gpu.cli import cli
    from xyz2image_gpu.structures.examples import bundled_examples

    source = next(p for p in bundled_examples() if p.name == "aupd147_core_shell.xyz")
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, [
        "render", str(source), "-o", str(out), "--edgesize", "32", "--n-rotation", "3",
        "--seed", "5", "--device", "cpu", "--workers", "1", "--quiet",
        "--output-types", "gaussian_2d,binary_2d_image", "--framing", "structure",
        "--bitrate", "16", "--probe-kv", "200", "--probe-source-size", "0.5", "--thermal",
        "--thermal-rms", "au=0.1", "--column-correction", "0.17,-0.01",
        "--column-broadening", "0.004", "--exclude-elements", "h"])
    assert result.exit_code == 0, result.output
    params = json.loads((out / run.MANIFEST_NAME).read_text())["parameters"]
    # (the zarr store's keys are recorded with --format zarr only, shot_noise with a dose in
    # beam units only)
    assert set(params) == (set(RenderSettings().to_dict()) | set(run.RUN_PARAMETERS)) - set(
        run.config.STORE_PARAMETERS) - {"shot_noise"}
    settings = run.settings_from_parameters(params)
    assert settings == RenderSettings(
        edgesize=32, framing="structure", bitrate=16, thermal=True,
        thermal_overrides=(("Au", 0.1),), column_correction=(0.17, -0.01),
        column_broadening=0.004, probe=tuple(map(tuple, params["probe"])))
    assert settings.z_exponent == 1.7 and len(settings.probe) > 1
    with pytest.raises(ValueError, match="unknown RenderSettings field 'n_stacks'"):
        run.settings_from_parameters({**params, "n_stacks": 2})

    renderer = Renderer(settings, run.render_types(params["output_types"]), "cpu")
    try:
        again = renderer.render(source, params["n_rotation"], seed=params["seed"], stack=0)
    finally:
        renderer.close()
    with np.load(out / source.stem / "0000.npz") as stored:
        np.testing.assert_array_equal(again["gaussian_2d"], stored["gaussian_2d"])
        np.testing.assert_array_equal(again["rotations"], stored["rotations"])


# ------------------------------------------------------------------------- command line


def _commands():
    from xyz2image_gpu.cli import cli

    return cli.commands


def test_every_option_is_in_the_help_and_settings_defaults_are_the_fields():
    import dataclasses

    from click.testing import CliRunner

    from xyz2image_gpu import RenderSettings
    from xyz2image_gpu.cli import cli

    fields = {f.name: f.default for f in dataclasses.fields(RenderSettings)}
    for name, command in _commands().items():
        result = CliRunner().invoke(cli, [name, "--help"], terminal_width=100)
        assert result.exit_code == 0, result.output
        for param in command.params:
            for opt in param.opts:
                if opt.startswith("-"):
                    assert opt in result.output, (name, opt)
            field = {"thermal_rms": "thermal_overrides"}.get(param.name, param.name)
            if name in ("render", "preview") and field in fields:
                assert param.default == fields[field], (name, param.name)
            # comma lists are parameter types, not callbacks
            assert param.callback is None or param.is_eager, (name, param.name)


def test_shared_options_are_declared_once():
    """An option that several commands take is the same declaration in each."""
    seen: dict[str, tuple] = {}
    for name, command in _commands().items():
        for param in command.params:
            if param.name in ("help", "seed", "frame", "z_exponent", "pixel_size", "overwrite",
                              "detector_mrad", "channelling"):
                continue  # meanings differ: calibrate's are a start, of its reference, or fitted
                # (its --channelling: the model its --detector-mrad fit uses)
            key = (type(param.type).__name__, repr(param.default), param.help,
                   param.envvar, getattr(param.type, "min", None),
                   getattr(param.type, "max", None))
            if param.name == "probe_kv":  # the one help that says what the command does
                key = key[:2] + key[3:]
            first = seen.setdefault(param.name, (name, key))
            assert first[1] == key, (param.name, first[0], name)
    assert {"device", "edgesize", "gauss_sigma", "padxyz", "binary_radius",
            "probe_mrad", "probe_cs"} <= set(seen)


def test_environment_variables_of_the_command_line(tmp_path):
    import json

    from click.testing import CliRunner

    from xyz2image_gpu.cli import cli
    from xyz2image_gpu.structures.examples import bundled_examples

    source = str(next(iter(bundled_examples())))
    runner = CliRunner()
    bad = runner.invoke(cli, ["render", source, "-o", str(tmp_path / "bad")],
                        env={"XYZ2IMAGE_GPU_DEVICE": "tpu"})
    assert bad.exit_code == 2 and "'tpu' is not one of" in bad.output
    result = runner.invoke(cli, ["render", source, "-o", str(tmp_path / "out"), "--quiet"],
                           env={"XYZ2IMAGE_GPU_DEVICE": "cpu",
                                "XYZ2IMAGE_GPU_RENDER_EDGESIZE": "16",
                                "XYZ2IMAGE_GPU_RENDER_EXCLUDE_ELEMENTS": "h,c",
                                "XYZ2IMAGE_GPU_RENDER_THERMAL_RMS": "au=0.1"})
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    params = manifest["parameters"]
    assert params["edgesize"] == 16 and params["exclude_elements"] == ["H", "C"]
    assert params["thermal_overrides"] == [["Au", 0.1]]
    assert manifest["device"]["requested"] == "cpu"
