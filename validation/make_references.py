"""Multislice HAADF-STEM reference images of small clusters, computed with abTEM.

Run it with abTEM installed (it is *not* a dependency of the package), e.g.::

    python3 -m venv /work/venv-abtem
    /work/venv-abtem/bin/pip install abtem ase
    /work/venv-abtem/bin/python validation/make_references.py            # all references
    /work/venv-abtem/bin/python validation/make_references.py --only au55_ico --configs 2

Each reference is one ``validation/references/<name>.npz``:

``image``          (E, E) float32, frozen-phonon mean HAADF signal (fraction of the beam)
``positions``      (N, 3) float64, the atoms as simulated (after any rotation; beam along +z),
                   in the coordinates of the simulation cell (Å)
``numbers``        (N,) int, atomic numbers
``pixel_size``     Å per scan step (both axes)
``origin``         (2,) Å: scan position of pixel [0, 0] in the coordinates of ``positions``;
                   pixel [i, j] is the probe at ``origin + (i, j) * pixel_size`` (axis 0 = x)
``cell``           (3,) Å, the (periodic) simulation cell
``rotation``       (3, 3) the rotation applied to the as-built cluster (rows: new = R @ old)
``half_a``, ``half_b``  means of the even / odd frozen-phonon configurations (noise level)
``settings_json``  every simulation setting, abTEM / ASE / NumPy versions, timings (JSON str)

The scan grid follows the package's ``framing="fixed"`` convention: the rotated
bounding box's centre (x, y) sits at pixel (E - 1) / 2, so an image rendered by
``xyz2image_gpu`` with ``framing="fixed", pixel_size=pixel_size, edgesize=E`` should
line up with the reference without any shift.

Method: PRISM (``abtem.SMatrix``) with interpolation factor 2, which for these cells
agrees with conventional multislice (interpolation 1) to r = 0.999997 and 2 % in peak
height (see README.md), at a quarter of the cost. Frozen phonons are computed one
configuration at a time and checkpointed (``--cache``), so an interrupted run resumes.
Threads: one process, two dask threads, single-threaded FFTW (the machine is shared).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "2")

import numpy as np

HERE = Path(__file__).resolve().parent
REFERENCES = HERE / "references"

#: Microscope and simulation settings shared by every reference.
SETTINGS = {
    "energy_eV": 200e3,
    "semiangle_cutoff_mrad": 20.0,
    "defocus_A": 0.0,
    "Cs_A": 0.0,
    "detector_inner_mrad": 70.0,
    "detector_outer_mrad": 200.0,
    # 0.04 Å: the 2/3 antialiasing aperture then passes 209 mrad > the 200 mrad detector
    # edge (0.05 Å would cut scattering off at 167 mrad)
    "potential_sampling_max_A": 0.04,
    "slice_thickness_A": 1.0,
    "projection": "infinite",
    "parametrization": "lobato",
    "method": "PRISM",
    "prism_interpolation": 2,
    # frozen-phonon configurations per reference ("default", or by name); 8 keeps all eight
    # references within ~45 min of a shared 2-core CPU. The remaining frozen-phonon noise
    # caps the r any model can reach (r_ceiling in the metadata, 0.994-0.998 with 8);
    # --configs 16 reuses the cached first 8 and raises it.
    "num_configs": {"default": 8},
    "phonon_seed": 2024,
    # room-temperature r.m.s. displacement per axis (U_iso = sigma²), Å: the 300 K values of
    # the package's table (xyz2image_gpu/thermal.py, from Debye-Waller factors; B = 8π²u²)
    "phonon_sigmas_A": {"Au": 0.0898, "Pd": 0.0768, "Pt": 0.0697},
    # vacuum between the cluster's projected bounding box and the edge of the image
    "margin_A": 2.5,
    # vacuum between the image (scan field) and the edge of the periodic cell
    "cell_buffer_A": 2.0,
    # vacuum above / below the cluster along the beam
    "z_buffer_A": 0.5,
}


#: The second set (issue "Absolute intensity", item 5): three elements, zone-axis columns of
#: eight atoms, two voltages, two detectors scanned together, potential sampled at 0.025 Å.
#: Each simulation writes one reference per detector, named ``<cluster>_<kV>kv_<in>-<out>``.
#: 0.025 Å: an isolated Au atom's cross-section is then within 0.5 % (200 kV) and 1.1 %
#: (300 kV) of its value at 0.02 Å, where 0.03 Å is off by +6.5 % and -2.2 % and 0.04 Å
#: by +3.4 % (abTEM scans of one atom, ``cross_sections.simulate_atom``; measured once).
ABSOLUTE = {
    **SETTINGS,
    "energies_eV": [200e3, 300e3],
    "detectors_mrad": [[70.0, 200.0], [40.0, 100.0]],
    "potential_sampling_max_A": 0.025,
    "num_configs": {"default": 8},
    "phonon_sigmas_A": {**SETTINGS["phonon_sigmas_A"], "Cu": 0.0853},
}
for _key in ("energy_eV", "detector_inner_mrad", "detector_outer_mrad"):
    ABSOLUTE.pop(_key)


def _fft_size(n: int, multiple: int = 2) -> int:
    """Smallest integer >= n with only factors 2, 3, 5 and divisible by ``multiple``."""
    m = int(n)
    while True:
        k = m
        for p in (2, 3, 5):
            while k % p == 0:
                k //= p
        if k == 1 and m % multiple == 0:
            return m
        m += 1


def _haar_rotation(seed: int) -> np.ndarray:
    """A Haar-uniform rotation matrix from a seed (uniform unit quaternion, Shoemake)."""
    u1, u2, u3 = np.random.default_rng(seed).random(3)
    w = np.sqrt(u1) * np.cos(2 * np.pi * u3)
    x = np.sqrt(1 - u1) * np.sin(2 * np.pi * u2)
    y = np.sqrt(1 - u1) * np.cos(2 * np.pi * u2)
    z = np.sqrt(u1) * np.sin(2 * np.pi * u3)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def _fcc_110_crystallite(symbol: str = "Au", a: float = 4.078, radius: float = 5.2,
                         half_length: float = 9.0):
    """An fcc cylinder with its axis along [110] (turned to z): columns of up to 7 atoms."""
    from ase import Atoms

    n = 8
    g = np.arange(-n, n + 1)
    cube = np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3).astype(float)
    basis = np.array([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    pts = (cube[:, None, :] + basis[None]).reshape(-1, 3) * a
    # x' = [1-10]/√2, y' = [001], z' = [110]/√2
    rot = np.array([[1, -1, 0], [0, 0, np.sqrt(2)], [1, 1, 0]]) / np.sqrt(2)
    p = pts @ rot.T
    keep = (p[:, 0] ** 2 + p[:, 1] ** 2 <= radius**2) & (np.abs(p[:, 2]) <= half_length)
    return Atoms(symbol * int(keep.sum()), positions=p[keep])


def _ternary_rod(a: float = 3.92, radius: float = 4.0, atoms_per_column: int = 8,
                 seed: int = 7):
    """An fcc rod along [110] whose nine columns of eight atoms are Au, Pd or Cu, three each.

    Each column holds one element, as in an ordered alloy seen along a zone axis, so that
    per-column intensities can be read per element and column length. The lattice
    constant (3.92 Å, Pd's) is one for all three: this is a test object, not a relaxed
    alloy.
    """
    from ase import Atoms

    rod = _fcc_110_crystallite("Pd", a=a, radius=radius, half_length=8 * a)
    p = rod.positions
    step = a / np.sqrt(2)  # atom spacing along a [110] column
    z0 = -atoms_per_column * step / 2 + 0.01
    p = p[(p[:, 2] >= z0) & (p[:, 2] < z0 + atoms_per_column * step)]
    keys = [tuple(k) for k in np.round(p[:, :2], 2)]
    columns = sorted(set(keys))
    elements = np.resize(np.array([79, 46, 29]), len(columns))
    np.random.default_rng(seed).shuffle(elements)
    of = dict(zip(columns, elements))
    return Atoms(numbers=[of[k] for k in keys], positions=p)


def clusters() -> dict[str, tuple]:
    """name -> (builder, rotation seed or None, description)."""
    from ase.cluster import Icosahedron

    def au55():
        return Icosahedron("Au", 3)

    def au147():
        return Icosahedron("Au", 4)

    def au13_pd42():
        atoms = Icosahedron("Pd", 3)
        c = atoms.positions.mean(axis=0)
        r = np.linalg.norm(atoms.positions - c, axis=1)
        core = np.argsort(r)[:13]
        numbers = atoms.numbers.copy()
        numbers[core] = 79
        atoms.numbers = numbers
        return atoms

    def fcc110():
        return _fcc_110_crystallite()

    return {
        "au55_ico": (au55, None, "Au55 Mackay icosahedron, as built by ase.cluster"),
        "au55_ico_rand": (au55, 11, "Au55 icosahedron, random orientation"),
        "au13pd42_cs": (au13_pd42, None, "Au13@Pd42 core-shell icosahedron, as built"),
        "au13pd42_cs_rand": (au13_pd42, 12, "Au13@Pd42 core-shell icosahedron, random"),
        "au_fcc110": (fcc110, None,
                      "Au fcc cylinder (r 5.2 Å, length 18 Å) along [110]: columns of <= 7"),
        "au_fcc110_rand": (fcc110, 29, ("the same Au fcc crystallite, random orientation "
                           "(seed 29 of 13-39: smallest projected extent, rod axis 26° off "
                           "the beam)")),
        "au147_ico": (au147, None, "Au147 Mackay icosahedron, as built by ase.cluster"),
        "au147_ico_rand": (au147, 14, "Au147 icosahedron, random orientation"),
    }


def absolute_clusters() -> dict[str, tuple]:
    """The second set: name -> (builder, rotation seed or None, description)."""
    return {
        "aupdcu_fcc110": (_ternary_rod, None,
                          ("fcc rod along [110] (a 3.92 Å, r 4 Å): 9 columns of 8 atoms, "
                           "3 each of Au, Pd, Cu")),
        "aupdcu_fcc110_rand": (_ternary_rod, 66,
                               ("the same rod, random orientation (seed 66 of 40-79: rod "
                                "axis 32° off the beam, projected extent 12.9 Å)")),
    }


def absolute_names() -> list[str]:
    """Every reference of the second set: ``<cluster>_<kV>kv_<inner>-<outer>``."""
    return [reference_name(c, e, d) for c in absolute_clusters()
            for e in ABSOLUTE["energies_eV"] for d in ABSOLUTE["detectors_mrad"]]


def reference_name(cluster: str, energy_eV: float, detector) -> str:
    return f"{cluster}_{energy_eV / 1e3:.0f}kv_{detector[0]:.0f}-{detector[1]:.0f}"


def geometry(positions: np.ndarray, pixel_size: float, s: dict) -> dict:
    """Cell, image size and scan origin for centred positions (beam along z)."""
    lo, hi = positions.min(axis=0), positions.max(axis=0)
    extent = hi - lo
    edge = int(np.ceil((extent[:2].max() + 2 * s["margin_A"]) / pixel_size)) + 1
    edge += (edge + 1) % 2  # odd: the bounding box centre falls on a pixel centre
    fov = (edge - 1) * pixel_size
    cell_xy = fov + pixel_size + 2 * s["cell_buffer_A"]
    cell = np.array([cell_xy, cell_xy, extent[2] + 2 * s["z_buffer_A"]])
    shift = cell / 2 - (lo + hi) / 2  # bounding-box centre -> cell centre
    origin = cell[:2] / 2 - (edge - 1) / 2 * pixel_size
    gpts = _fft_size(int(np.ceil(cell_xy / s["potential_sampling_max_A"])),
                     multiple=2 * s["prism_interpolation"])
    return {"edge": edge, "cell": cell, "shift": shift, "origin": origin, "gpts": gpts}


def pixel_size_for(n_atoms: int, extent: float) -> float:
    """Scan step: 0.2 Å (Nyquist for 20 mrad at 200 kV is 0.31 Å), coarser past 96 px."""
    return max(0.2, round((extent + 5.0) / 95, 3))


def settings_key(s: dict) -> str:
    """Hash of the settings that decide one configuration's image (cache file names)."""
    import hashlib

    fixed = {k: v for k, v in s.items() if k != "num_configs"}
    return hashlib.sha1(json.dumps(fixed, sort_keys=True).encode()).hexdigest()[:8]


def simulate(name: str, s: dict, cache: Path, num_configs: int, log=print) -> list[dict]:
    """Frozen-phonon PRISM scans of one cluster: one reference per detector of ``s``.

    ``s`` holds ``energy_eV`` and either ``detectors_mrad`` (a list of [inner, outer]: all
    recorded in the same scans) or ``detector_inner_mrad`` / ``detector_outer_mrad``.
    """
    import abtem
    import ase
    import dask
    from ase import Atoms

    dask.config.set(scheduler="threads", num_workers=2)
    abtem.config.set({"fftw.threads": 1})

    builder, rot_seed, description = {**clusters(), **absolute_clusters()}[name]
    detectors = [tuple(d) for d in s.get(
        "detectors_mrad", [[s.get("detector_inner_mrad"), s.get("detector_outer_mrad")]])]
    atoms0 = builder()
    pos = atoms0.positions - atoms0.positions.mean(axis=0)
    rotation = np.eye(3) if rot_seed is None else _haar_rotation(rot_seed)
    pos = pos @ rotation.T
    extent = np.ptp(pos, axis=0)
    pixel = pixel_size_for(len(pos), float(extent[:2].max()))
    g = geometry(pos, pixel, s)
    positions = pos + g["shift"]
    atoms = Atoms(numbers=atoms0.numbers, positions=positions, cell=g["cell"], pbc=True)
    edge = g["edge"]
    symbols = sorted(set(atoms.get_chemical_symbols()))
    sigmas = {el: s["phonon_sigmas_A"][el] for el in symbols}
    log(f"{name} at {s['energy_eV'] / 1e3:.0f} kV: {len(atoms)} atoms {symbols}, image "
        f"{edge}x{edge} px at {pixel} Å, cell {np.round(g['cell'], 2)} Å, potential "
        f"{g['gpts']}² px, detectors {detectors} mrad")

    scan = abtem.GridScan(
        start=tuple(g["origin"]),
        end=tuple(g["origin"] + edge * pixel),
        gpts=edge,
        endpoint=False,
    )
    annuli = [abtem.AnnularDetector(inner=lo, outer=hi) for lo, hi in detectors]
    cache.mkdir(parents=True, exist_ok=True)
    key = settings_key(s)
    images, timings = [], []  # images: one (D, E, E) array per configuration
    for k in range(num_configs):
        part = cache / f"{name}_{key}_cfg{k:02d}.npy"
        tpart = cache / f"{name}_{key}_cfg{k:02d}.time"
        if part.exists() and tpart.exists():
            images.append(np.load(part).reshape(len(detectors), edge, edge))
            timings.append(float(tpart.read_text()))
            continue
        t0 = time.perf_counter()
        phonons = abtem.FrozenPhonons(
            atoms, num_configs=1, sigmas=sigmas, seed=s["phonon_seed"] + k
        )
        potential = abtem.Potential(
            phonons,
            gpts=g["gpts"],
            slice_thickness=s["slice_thickness_A"],
            projection=s["projection"],
            parametrization=s["parametrization"],
        )
        smatrix = abtem.SMatrix(
            potential=potential,
            energy=s["energy_eV"],
            semiangle_cutoff=s["semiangle_cutoff_mrad"],
            interpolation=s["prism_interpolation"],
        )
        ctf = abtem.CTF(defocus=s["defocus_A"], Cs=s["Cs_A"],
                        semiangle_cutoff=s["semiangle_cutoff_mrad"], energy=s["energy_eV"])
        meas = smatrix.scan(scan=scan, detectors=annuli, ctf=ctf)
        if len(annuli) == 1:
            meas = [meas]
        image = np.stack([np.asarray(m.compute(progress_bar=False).array, dtype=np.float64)
                          .reshape(edge, edge) for m in meas])
        dt = time.perf_counter() - t0
        np.save(part, image)
        tpart.write_text(repr(dt))
        images.append(image)
        timings.append(dt)
        log(f"  config {k + 1}/{num_configs}: {dt:.1f} s "
            f"({len(smatrix)} plane waves, {len(potential)} slices)")
    stack = np.stack(images)  # (configs, D, E, E)
    refs = []
    for d, (lo, hi) in enumerate(detectors):
        per_config = stack[:, d]
        image = per_config.mean(axis=0)
        settings = {k: v for k, v in s.items() if k != "detectors_mrad"}
        settings.update(detector_inner_mrad=lo, detector_outer_mrad=hi)
        meta = {
            "name": name if len(detectors) == 1 else reference_name(name, s["energy_eV"],
                                                                    (lo, hi)),
            "cluster": name,
            "description": description,
            "n_atoms": len(atoms),
            "symbols": symbols,
            "rotation_seed": rot_seed,
            "edge": edge,
            "pixel_size_A": pixel,
            "origin_A": [float(v) for v in g["origin"]],
            "cell_A": [float(v) for v in g["cell"]],
            "potential_gpts": g["gpts"],
            "potential_sampling_A": float(g["cell"][0] / g["gpts"]),
            "num_configs": num_configs,
            "phonon_sigmas_used_A": sigmas,
            "seconds_per_config": timings,
            "seconds_total": float(np.sum(timings)),
            "detectors_in_the_same_scan_mrad": [list(v) for v in detectors],
            "settings": settings,
            "abtem_version": abtem.__version__,
            "ase_version": ase.__version__,
            "numpy_version": np.__version__,
            "python": sys.version.split()[0],
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, 2 dask threads, CPU",
            "intensity_units": f"fraction of the incident beam on the {lo:.0f}-{hi:.0f} mrad "
                               "annulus",
            # a rough single-configuration noise estimate: spread of configs / sqrt(n)
            "frozen_phonon_sem_rel": float(
                np.std(per_config, axis=0).max() / np.sqrt(len(per_config))
                / max(image.max(), 1e-30)
            ),
        }
        # frozen-phonon noise: r between the means of the even and odd configurations gives
        # (Spearman-Brown) the reliability of the full mean, whose square root is the largest
        # Pearson r any noise-free model can reach against this reference
        half_a = per_config[0::2].mean(axis=0)
        half_b = per_config[1::2].mean(axis=0)
        r_half = float(np.corrcoef(half_a.ravel(), half_b.ravel())[0, 1])
        meta["r_halves"] = r_half
        meta["r_ceiling"] = float(np.sqrt(max(0.0, 2 * r_half / (1 + r_half))))
        refs.append({
            "image": image.astype(np.float32),
            "positions": positions,
            "numbers": atoms.numbers.astype(np.int32),
            "pixel_size": np.float64(pixel),
            "origin": np.asarray(g["origin"], dtype=np.float64),
            "cell": np.asarray(g["cell"], dtype=np.float64),
            "rotation": rotation,
            "half_a": half_a.astype(np.float32),
            "half_b": half_b.astype(np.float32),
            "settings_json": np.array(json.dumps(meta)),
        })
    return refs


def _save(ref: dict, path: Path) -> None:
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, **ref)
    os.replace(tmp, path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", nargs="*",
                    help="reference or cluster names (default: all, both sets)")
    ap.add_argument("--set", choices=("all", "relative", "absolute"), default="all",
                    help="'relative': the 200 kV Au/Pd set; 'absolute': the three-element "
                         "set at two voltages and two detectors")
    ap.add_argument("--configs", type=int, default=None,
                    help="frozen-phonon configurations per reference (default: "
                         "SETTINGS['num_configs'])")
    ap.add_argument("--out", type=Path, default=REFERENCES)
    ap.add_argument("--cache", type=Path,
                    default=Path(os.environ.get("TMPDIR", "/tmp")) / "xyz2image_validation",
                    help="per-configuration checkpoints (resume after an interruption)")
    ap.add_argument("--slice-thickness", type=float, default=None,
                    help="override the slice thickness, Å (convergence checks)")
    ap.add_argument("--overwrite", action="store_true")
    ap.add_argument("--list", action="store_true", help="list the references and exit")
    args = ap.parse_args(argv)
    jobs = []  # (cluster, settings, [output names])
    if args.set in ("all", "relative"):
        s = dict(SETTINGS)
        jobs += [(n, s, [n]) for n in clusters()]
    if args.set in ("all", "absolute"):
        for n in absolute_clusters():
            for e in ABSOLUTE["energies_eV"]:
                s = {**ABSOLUTE, "energy_eV": e}
                jobs.append((n, s, [reference_name(n, e, d) for d in s["detectors_mrad"]]))
    if args.list:
        for cluster, _, outs in jobs:
            desc = {**clusters(), **absolute_clusters()}[cluster][2]
            print(", ".join(outs), "-", desc)
        return 0
    if args.only:
        jobs = [j for j in jobs if j[0] in args.only or set(j[2]) & set(args.only)]
    args.out.mkdir(parents=True, exist_ok=True)
    for cluster, s, outs in jobs:
        if args.slice_thickness:
            s = {**s, "slice_thickness_A": args.slice_thickness}
        paths = [args.out / f"{o}.npz" for o in outs]
        if all(p.exists() for p in paths) and not args.overwrite:
            print(f"{', '.join(outs)}: exist, skipped")
            continue
        t0 = time.perf_counter()
        n_cfg = args.configs or s["num_configs"].get(cluster, s["num_configs"]["default"])
        refs = simulate(cluster, s, args.cache, n_cfg, log=lambda m: print(m, flush=True))
        for ref, path in zip(refs, paths):
            _save(ref, path)
        total = json.loads(str(refs[0]["settings_json"]))["seconds_total"]
        print(f"{', '.join(outs)}: done in {time.perf_counter() - t0:.0f} s "
              f"(configs: {total:.0f} s) -> {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
