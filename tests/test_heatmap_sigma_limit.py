"""A heatmap Gaussian much narrower than a pixel: sampled at pixel centres it misses most
atoms, so ``heatmap_sigma`` below :data:`HEATMAP_MIN_SIGMA_PX` pixels (the coarsest pixel a
frame can get) is refused, naming the option; above it the heatmaps keep their definition,
whose per-atom peaks follow the analytic sub-pixel statistics the limit is drawn from."""

from __future__ import annotations

import numpy as np
import pytest
from ase_compat import Atoms
from click.testing import CliRunner
from reference import frame_pixel_coords
from scipy.special import erf

from xyz2image_gpu import Renderer, RenderSettings
from xyz2image_gpu.cli import cli
from xyz2image_gpu.pipeline.framing import HEATMAP_MIN_SIGMA_PX
from xyz2image_gpu.structures.model import StructureError


def _mean_peak(s: float) -> float:
    """An atom's highest heatmap pixel, averaged over uniform sub-pixel offsets."""
    return float((s * np.sqrt(2 * np.pi) * erf(1 / (2 * np.sqrt(2) * s))) ** 2)


def _sparse_grid(n: int, spacing: float, seed: int) -> Atoms:
    """n x n gold atoms ``spacing`` Å apart at random sub-Å offsets, in one plane."""
    rng = np.random.default_rng(seed)
    xy = np.stack(np.meshgrid(np.arange(n), np.arange(n)), -1).reshape(-1, 2) * spacing
    xy = xy + rng.random(xy.shape)
    return Atoms(["Au"] * len(xy), positions=np.c_[xy, np.zeros(len(xy))])


def test_the_limit_is_where_heatmaps_miss_nine_atoms_in_ten():
    s = HEATMAP_MIN_SIGMA_PX
    # fraction of uniform offsets whose peak exceeds 0.5: a disc of radius s sqrt(2 ln 2)
    assert np.pi * 2 * np.log(2) * s * s < 0.1 <= np.pi * 2 * np.log(2) * (s + 0.01) ** 2
    assert _mean_peak(s) == pytest.approx(0.141, abs=1e-3)
    assert _mean_peak(0.1) == pytest.approx(0.063, abs=1e-3)


@pytest.mark.parametrize("sigma_px", [0.16, 0.5])
def test_heatmap_peaks_just_above_the_limit_are_the_point_samples(sigma_px):
    """Each isolated atom's highest pixel is exp(-d² / 2s²), d its distance to the nearest
    pixel centre; over random offsets their mean and the share above 0.5 match the
    analytic values the limit rests on."""
    atoms = _sparse_grid(14, 4.0, seed=5)
    pixel = 1.0
    settings = RenderSettings(edgesize=64, framing="fixed", pixel_size=pixel,
                              heatmap_sigma=sigma_px * pixel)
    with Renderer(settings, ["heatmap_2d"], "cpu") as r:
        out = r.render(atoms, 1, seed=0)
    u, voxel = frame_pixel_coords(atoms.positions, out["rotations"][0], "fixed",
                                  edgesize=64, pixel_size=pixel)
    assert voxel == pixel
    heat = out["heatmap_2d"][0]
    nearest = np.rint(u[:, :2]).astype(int)
    d2 = ((u[:, :2] - nearest) ** 2).sum(axis=1)
    want = np.exp(-d2 / (2 * sigma_px ** 2))
    got = np.array([heat[i - 1:i + 2, j - 1:j + 2].max() for i, j in nearest])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    n = len(got)
    assert abs(got.mean() - _mean_peak(sigma_px)) < 4 * got.std() / np.sqrt(n)
    # share of the pixel within s sqrt(2 ln 2) of its centre (a disc, clipped by the square)
    g = (np.arange(1000) + 0.5) / 1000 - 0.5
    share = float((g[:, None] ** 2 + g[None, :] ** 2 < 2 * np.log(2) * sigma_px ** 2).mean())
    assert abs((got > 0.5).mean() - share) < 4 * np.sqrt(share * (1 - share) / n) + 1e-9


def test_too_narrow_heatmap_sigma_is_refused_naming_the_option(tmp_path):
    # fixed framing: known before anything renders
    with pytest.raises(ValueError, match=r"heatmap_sigma \(--heatmap-sigma\) 0.25 Å is "
                                         r"0.12 pixels of up to 2 Å.*>= 0.3 Å"):
        Renderer(RenderSettings(framing="fixed", pixel_size=2.0, heatmap_sigma=0.25),
                 ["element_heatmap_2d"], "cpu")
    Renderer(RenderSettings(framing="fixed", pixel_size=2.0, heatmap_sigma=0.3),
             ["heatmap_2d"], "cpu").close()  # 0.15 pixels: kept
    Renderer(RenderSettings(framing="fixed", pixel_size=2.0, heatmap_sigma=0.25),
             ["gaussian_2d", "column_map_2d"], "cpu").close()  # no heatmap: no limit

    # image framing: per frame, against its coarsest pixel ((2 * 30 + 3) / 15 = 4.2 Å)
    sparse = Atoms(["Au", "Au"], positions=[[0, 0, 0], [60, 0, 0]])
    refused = r"heatmap_sigma \(--heatmap-sigma\) 0.25 Å is 0.06 pixels of up to 4.2 Å"
    with (Renderer(RenderSettings(edgesize=16), ["heatmap_2d"], "cpu") as r,
          pytest.raises(StructureError, match=refused)):
        r.render(sparse, 1)
    with Renderer(RenderSettings(edgesize=16, heatmap_sigma=0.63), ["heatmap_2d"],
                  "cpu") as r:
        assert r.render(sparse, 1)["heatmap_2d"].max() > 0

    # the command line: a usage error before anything is written, or the file failed
    out = tmp_path / "out"
    path = tmp_path / "sparse.xyz"
    path.write_text("2\n\nAu 0 0 0\nAu 60 0 0\n")
    result = CliRunner().invoke(cli, ["render", str(path), "-o", str(out), "--output-types",
                                      "heatmap_2d", "--framing", "fixed", "--pixel-size", "2",
                                      "--edgesize", "16", "--device", "cpu"])
    assert result.exit_code == 1 and "--heatmap-sigma" in result.output, result.output
    assert not out.exists()
    result = CliRunner().invoke(cli, ["render", str(path), "-o", str(out), "--output-types",
                                      "heatmap_2d", "--edgesize", "16", "--device", "cpu"])
    assert result.exit_code == 1, result.output
    assert str(path) in result.output and "(--heatmap-sigma) 0.25 Å" in result.output
    assert not list(out.rglob("*.npz"))
