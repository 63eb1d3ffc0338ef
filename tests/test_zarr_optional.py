"""``--format zarr`` where zarr v3 cannot be had (not installed, or Python < 3.11): a clear
error naming the extra, before anything is written. Runs with or without zarr."""

from __future__ import annotations

import sys
from collections import namedtuple

import pytest
from click.testing import CliRunner

from xyz2image_gpu.cli import cli
from xyz2image_gpu.output import zarr_store
from xyz2image_gpu.structures.examples import copy_examples


def _render_zarr(tmp_path):
    copy_examples(tmp_path / "in")
    return CliRunner().invoke(cli, ["render", str(tmp_path / "in"), "-o", str(tmp_path / "o"),
                                    "--format", "zarr", "--edgesize", "16"])


def test_missing_zarr_is_an_error_naming_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "zarr", None)  # import zarr raises ImportError
    with pytest.raises(zarr_store.ZarrUnavailableError, match=r"xyz2image-gpu\[zarr\]"):
        zarr_store.require_zarr()
    result = _render_zarr(tmp_path)
    assert result.exit_code == 1 and "xyz2image-gpu[zarr]" in result.output
    assert not (tmp_path / "o").exists()
    info = CliRunner().invoke(cli, ["info", "--device", "cpu"])
    assert "zarr: not usable: --format zarr needs the zarr extra" in info.output


def test_old_python_is_an_error_naming_the_version(monkeypatch, tmp_path):
    version = namedtuple("version", "major minor micro releaselevel serial")
    monkeypatch.setattr(sys, "version_info", version(3, 10, 12, "final", 0))
    result = _render_zarr(tmp_path)
    assert result.exit_code == 1, result.output
    assert "needs Python >= 3.11 (this is 3.10)" in result.output
    assert "--format npz" in result.output and not (tmp_path / "o").exists()
