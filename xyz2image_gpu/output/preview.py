"""A quick look at a structure: a PNG montage of a few orientations.

Each row is one orientation: the simulated image (``gaussian_2d``), the atoms as discs
(``binary_2d``) and the projected atom positions (``coordinates_3d``, coloured by depth),
all in the same pixel frame. Matplotlib is imported only here (the ``preview`` extra).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..pipeline.engine import Renderer
from ..pipeline.settings import RenderSettings
from ..run.memory import RequestTooLargeError, check_images_fit
from ..structures.convert import as_structure

__all__ = [
    "PreviewError",
    "render_preview",
    "write_preview",
]

_TYPES = ("coordinates_3d", "gaussian_2d", "binary_2d")


class PreviewError(RuntimeError):
    """The preview cannot be made (e.g. matplotlib is missing)."""


def render_preview(path: Path | str, *, n_images: int = 4, seed: int = 0,
                   settings: RenderSettings | None = None, frame: int = 0,
                   device: str = "auto") -> dict[str, np.ndarray]:
    """Render ``n_images`` orientations of one frame of ``path`` for the montage.

    Returns
    -------
    dict of ndarray
        The engine's outputs: gaussian_2d, binary_2d, coordinates_3d (pixel coordinates),
        n_atoms, rotations, voxel_size (Å per pixel), frame_index.
    """
    structure = as_structure(path, frameshift=frame, maxframes=1)
    with Renderer(settings or RenderSettings(), _TYPES, device) as renderer:
        try:
            check_images_fit(renderer, structure, n_images)
        except RequestTooLargeError as exc:
            raise PreviewError(str(exc)) from None
        return renderer.render(structure, n_images, seed=seed)


def write_preview(path: Path | str, output: Path | str, *, n_images: int = 4, seed: int = 0,
                  settings: RenderSettings | None = None, frame: int = 0,
                  device: str = "auto", dpi: int = 100) -> Path:
    """Write the montage of :func:`render_preview` to ``output`` (PNG).

    Raises
    ------
    PreviewError
        matplotlib is not installed.
    """
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise PreviewError(
            "preview needs matplotlib: pip install 'xyz2image-gpu[preview]'") from None
    out = render_preview(path, n_images=n_images, seed=seed, settings=settings, frame=frame,
                         device=device)
    n = len(out["rotations"])
    edge = out["gaussian_2d"].shape[-1]
    fig = Figure(figsize=(9.0, 3.0 * n), dpi=dpi, layout="constrained")
    axes = np.asarray(fig.subplots(n, 3, squeeze=False))
    name = Path(path).name
    fig.suptitle(f"{name}: {n} orientations, {edge}x{edge} px")
    for i in range(n):
        px = float(out["voxel_size"][i])
        ax_g, ax_b, ax_s = axes[i]
        # array axis 0 is x (rows), axis 1 is y (columns), as the .npz stores them
        ax_g.imshow(out["gaussian_2d"][i], cmap="gray", interpolation="nearest")
        ax_g.set_title(f"gaussian_2d ({px:.3f} Å/px)", fontsize=9)
        ax_b.imshow(out["binary_2d"][i], cmap="gray", interpolation="nearest")
        ax_b.set_title("binary_2d", fontsize=9)
        k = int(out["n_atoms"][i])
        xyz = out["coordinates_3d"][i, :k].astype(float)
        sc = ax_s.scatter(xyz[:, 1], xyz[:, 0], c=xyz[:, 2], s=8, cmap="viridis")
        ax_s.set_xlim(-0.5, edge - 0.5)
        ax_s.set_ylim(edge - 0.5, -0.5)
        ax_s.set_aspect("equal")
        ax_s.set_facecolor("black")
        ax_s.set_title(f"{k} atoms, colour = depth z (px)", fontsize=9)
        fig.colorbar(sc, ax=ax_s, shrink=0.8)
        for ax in (ax_g, ax_b, ax_s):
            ax.set_xticks([])
            ax.set_yticks([])
        ax_g.set_ylabel(f"rotation {i}")
    output = Path(output)
    fig.savefig(output, format="png")
    return output
