"""Synthetic cryo-ET tomograms with their ground truth.

Volumes are ``float32`` numpy ``(z, y, x)``; truth centres are voxels ``(x, y, z)``,
0-based (the value at a centre is ``volume[z, y, x]``), at the centre of mass of
each placed particle; voxel sizes in Å. Only numpy, torch and cc3d are used.

The model (choices documented here, all deterministic for a given seed: one
``numpy.random.Generator`` drives placement, orientations, distractors and noise; the torch
operations are deterministic on the CPU):

- Templates: procedural shapes (a two-lobed globule, a flat disc, a rod; sizes
  given in Å and converted to voxels) or the MRC density maps of a folder (class =
  file stem, upper-cased when it is a PDB id; negative density clipped, each map
  cropped to a cube about its centre of mass, all scaled by one common factor so
  that relative densities are kept). ``4V94`` and ``vesicle`` are listed as
  "unscored" (SHREC 2021's distractor particles, placed and labelled like the others)
  when present.
- Placement: classes in turn (equally frequent), one uniform random orientation per
  particle (random unit quaternion; template rotated with ``grid_sample``,
  trilinear), then up to 40 uniform random positions with the whole template box
  inside the volume (so a particle keeps at least its radius from the border),
  rejected when its occupancy would touch an already placed particle. Placement
  stops when the occupancy reaches ``fill`` (default 8 % of the volume: crowded
  without overlap) or when 25 particles in a row found no free position.
- Occupancy: voxels where a rotated template exceeds 10 % of its maximum (one
  connected piece for all SHREC 2021 maps), enclosed cavities filled, holding the
  particle's 1-based row number in the truth table (0: solvent). A particle whose
  centre of mass falls off its own density (4V94) gets a one-voxel bridge from the
  centre to its density, so the truth centre always carries its own label.
- Clean density: the sum of the placed rotated templates (protein positive).
- Distractors (``distractors=True``; off by default, and then not one random number
  is drawn for them, so every output is the same as without the option): non-particle
  densities placed after the particles, which stay exactly where they are without
  distractors (same truth, same occupancy). None is a particle: each has occupancy 0,
  a pick on one is a false positive under either rule. Sizes in Å, converted to voxels;
  "protein density" is the templates' largest value (1 for loaded maps, which are scaled
  to it, and about 1 for the procedural shapes).

  - ``gold``: fiducial beads, solid spheres of 50 Å radius (10 nm gold) at 8 times the
    protein density (gold's scattering potential over the solvent is about 8 times
    protein's), 500 per µm³ (0.5 per 100³ voxels at 10 Å), at least 2.
  - ``membrane_vesicle``: 1 or 2 spherical lipid-bilayer shells per tomogram, radius
    250-600 Å, centre anywhere in the volume (the slab may cut the shell, as in a thin
    specimen); ``membrane``: with probability 1/2, a gently curved bilayer sheet
    crossing the volume (a sphere of 2-6 times the largest volume edge through a point
    of the volume's central half, random normal). A bilayer is two 15 Å head-group
    leaflets at protein density about a 15 Å hydrocarbon core at solvent density (45 Å
    in all). The shell class is not called ``vesicle``: that name stays the unscored
    *template* class of SHREC 2021 (``UNSCORED_CLASSES``).
  - ``junk``: irregular blobs, the union of 2-4 lumps inside a 20-30 Å radius (below
    every procedural particle's), at protein density, 6000 per µm³ (6 per 100³ voxels at
    10 Å), at least 10.

  Every distractor shape has the templates' 7 Å sigmoid edge (a bead's box reaches 6
  edge widths past its surface, so that its dense edge is not cut). Particles are never
  touched, and no distractor voxel lies in their occupancy grown by one 6-connected
  voxel (the SHREC rule's reach). Beads first, then junk, are placed like particles
  (box inside the volume, up to 40 random positions, dropped when none is free: a
  small, crowded volume may hold fewer beads than the minimum) where their voxels
  touch neither that grown occupancy nor an earlier distractor. Then the sheet and the
  vesicles, which cannot avoid a crowded volume's particles, lose their density in
  that grown occupancy and in the beads' and junk's voxels: they look interrupted where
  they meet a particle. The distractor label map (``int16`` on disk) marks voxels where
  a distractor's density exceeds 10 % of the protein density: 1 gold, 2 membrane or
  vesicle, 3 junk, 0 none.
- Imaging, in Fourier space (``torch.fft`` on the whole volume, float32): a
  phase-contrast CTF (300 kV, 3 µm underfocus, 10 % amplitude contrast, B-factor
  100 Å²; at 10 Å/voxel its first zero, near 1/24 Å, lies just below Nyquist, so it
  acts as a band-pass that keeps particles visible) whose sign (``-sin χ``) inverts
  the contrast: protein darker than the solvent, as in real reconstructions. Then
  white Gaussian noise scaled to the signal-to-noise ratio (signal variance over
  noise variance, both over the whole volume, after the wedge). The missing wedge
  of a single-axis tilt series (tilt axis y, ±60°: Fourier components with
  ``|k_z| > tan(60°) |k_x|`` are zero) is applied to signal and noise alike, since
  the noise enters through the same limited set of projections. The signal variance
  that sets the noise is the particles' alone (distractors are imaged with them but
  left out of it), so distractors do not change how visible the particles are.
- Default SNR 0.5 (``DEFAULT_SNR``): a particle is visible by eye in a slice, and
  clearly after light smoothing; an easy set for the demo and the tests. SHREC
  2021-like data is nearer 0.05-0.1 (pass ``--snr``).
- Memory: about 8 bytes per voxel for the placement and a few float32/complex64
  copies for imaging (a 200 x 512 x 512 volume peaks near 1.7 GB); distractors add 5
  bytes per voxel (their density and label map) and the imaging of their density
  (membranes are drawn in slabs of z-planes): 1.9 GB at 200 x 512 x 512.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import cc3d
import numpy as np
import torch
from torch.nn import functional

from .atomic import atomic_output
from .coordinates import ParticleTable, write_particles
from .defaults import UNSCORED_CLASSES, VOXEL_SIZE_TOLERANCE
from .errors import SasiInputError
from .metrics import dilate_occupancy
from .mrc_io import read_volume, write_volume

DEFAULT_SNR = 0.5
"""Default signal-to-noise ratio: particles are faint but visible in a slice,
an easy set for the demo and the tests. SHREC 2021-like data is near 0.1."""
DEFAULT_FILL = 0.08
OCCUPANCY_THRESHOLD = 0.1
TILT_RANGE_DEG = 60.0
VOLTAGE_KV = 300.0
DEFOCUS_A = 30000.0
AMPLITUDE_CONTRAST = 0.1
B_FACTOR_A2 = 100.0
EDGE_A = 7.0
"""Width (Å) of the sigmoid edge of every procedural shape and distractor."""
EDGE_REACH = 6.0
"""Edge widths past a dense distractor's surface where its density is cut (the sigmoid
is 0.25 % of its inside value there)."""
PLACEMENT_ATTEMPTS = 40
"""Random positions tried for one particle, bead or junk blob before it is dropped."""

GOLD_RADIUS_A = 50.0
GOLD_DENSITY = 8.0
"""Gold bead density in units of the protein density (the templates' maximum)."""
GOLD_PER_UM3, GOLD_MIN = 500.0, 2
"""Beads per µm³ (0.5 per 100³ voxels at 10 Å) and the fewest per tomogram."""
VESICLE_RADIUS_A = (250.0, 600.0)
VESICLES = (1, 2)
"""Fewest and most vesicles per tomogram."""
SHEET_CHANCE = 0.5
SHEET_CURVATURE = (2.0, 6.0)
"""Radius of a membrane sheet's sphere, in units of the largest volume edge."""
MEMBRANE_THICKNESS_A = 45.0
MEMBRANE_CORE_A = 15.0
JUNK_RADIUS_A = (20.0, 30.0)
JUNK_LUMPS = (2, 4)
JUNK_LUMP_FRACTION = (0.5, 0.8)
"""Radius of a junk blob's lumps, in units of the blob's radius."""
JUNK_PER_UM3, JUNK_MIN = 6000.0, 10
"""Junk blobs per µm³ (6 per 100³ voxels at 10 Å) and the fewest per tomogram."""
DISTRACTOR_LABELS = {"gold": 1, "membrane": 2, "membrane_vesicle": 2, "junk": 3}
"""Distractor class -> value in the distractor label map (0: no distractor)."""
SLAB_VOXELS = 2**21
"""Voxels per slab of z-planes in which membranes are drawn (bounds their memory)."""


def _smooth_inside(distance: np.ndarray, softness: float) -> np.ndarray:
    """Density 1 inside, 0 outside, a sigmoid edge; ``distance`` (< 0 inside) and
    ``softness`` in voxels."""
    return (1.0 / (1.0 + np.exp(distance / softness))).astype(np.float32)


def _box(radius: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    half = int(math.ceil(radius)) + 2
    axis = np.arange(-half, half + 1, dtype=np.float32)
    return np.meshgrid(axis, axis, axis, indexing="ij")


def procedural_templates(voxel_size: float = 10.0) -> dict[str, np.ndarray]:
    """Three particle shapes of clearly different form and size, ``(z, y, x)`` boxes.

    Sizes are in Å, so the boxes scale with ``voxel_size`` (Å per voxel):
    ``globule``: two fused spheres of 55 and 45 Å radius, 45 Å apart (~1800 voxels
    at 10 Å); ``disc``: a flat cylinder of 60 Å radius, 36 Å thick (~1200 voxels);
    ``rod``: a capsule 140 Å long with a 28 Å radius (~850 voxels). Density about 1
    inside, 0 outside, with a 7 Å sigmoid edge. A disc rather than a ring: a ring's
    centre lies in its hole, off the particle's density and occupancy.
    """
    s = 1.0 / voxel_size
    z, y, x = _box(105 * s)
    lobe1 = np.sqrt(z**2 + y**2 + (x + 20 * s) ** 2) - 55 * s
    lobe2 = np.sqrt(z**2 + y**2 + (x - 25 * s) ** 2) - 45 * s
    edge = EDGE_A * s
    globule = _smooth_inside(np.minimum(lobe1, lobe2), edge)
    z, y, x = _box(70 * s)
    disc = _smooth_inside(np.maximum(np.sqrt(y**2 + x**2) - 60 * s, np.abs(z) - 18 * s), edge)
    z, y, x = _box(100 * s)
    along = np.clip(x, -42 * s, 42 * s)
    rod = _smooth_inside(np.sqrt(z**2 + y**2 + (x - along) ** 2) - 28 * s, edge)
    return {"disc": disc, "globule": globule, "rod": rod}


def _class_name(stem: str) -> str:
    return stem.upper() if re.fullmatch(r"[0-9][A-Za-z0-9]{3}", stem) else stem


def _centre_of_mass(template: np.ndarray) -> np.ndarray:
    grid = np.indices(template.shape).reshape(3, -1)
    weights = np.clip(template, 0, None).ravel()
    return (grid * weights).sum(axis=1) / weights.sum()


def template_radius(template: np.ndarray, mass_fraction: float = 0.95) -> float:
    """Radius in voxels of the sphere about the centre of mass that holds
    ``mass_fraction`` of the template's positive density."""
    weights = np.clip(template, 0, None).ravel()
    grid = np.indices(template.shape).reshape(3, -1).T
    distance = np.sqrt(((grid - _centre_of_mass(template)) ** 2).sum(axis=1))
    order = np.argsort(distance)
    cumulative = np.cumsum(weights[order])
    return float(distance[order][np.searchsorted(cumulative, mass_fraction * cumulative[-1])])


def _recentre(template: np.ndarray) -> np.ndarray:
    """Crop a template to a cube about its centre of mass holding 99.5 % of its mass."""
    centre = np.rint(_centre_of_mass(template)).astype(int)
    half = int(math.ceil(template_radius(template, 0.995))) + 2
    out = np.zeros((2 * half + 1,) * 3, dtype=np.float32)
    src, dst = [], []
    for c, n in zip(centre, template.shape):
        lo, hi = max(c - half, 0), min(c + half + 1, n)
        src.append(slice(lo, hi))
        dst.append(slice(lo - (c - half), hi - (c - half)))
    out[tuple(dst)] = template[tuple(src)]
    return out


def load_templates(templates_dir: str | os.PathLike, voxel_size: float) -> dict[str, np.ndarray]:
    """Density maps (every ``*.mrc`` of a folder), recentred and scaled to a common maximum 1.

    Raises:
        SasiInputError: no folder, no map, or a map at another voxel size.
    """
    folder = Path(templates_dir)
    if not folder.is_dir():
        raise SasiInputError(f"--templates {folder}: no such folder; name a folder of MRC maps")
    paths = sorted(folder.glob("*.mrc"))
    if not paths:
        raise SasiInputError(f"--templates {folder}: holds no .mrc map; add density maps")
    maps = {}
    for path in paths:
        volume = read_volume(path)
        if volume.voxel_size and abs(volume.voxel_size - voxel_size) > (
            VOXEL_SIZE_TOLERANCE * voxel_size
        ):
            raise SasiInputError(
                f"{path}: voxel size {volume.voxel_size:.2f} Å, not {voxel_size:.2f} Å; "
                f"rescale the maps to {voxel_size:.2f} Å or pass --voxel-size "
                f"{volume.voxel_size:.2f}"
            )
        maps[_class_name(path.stem)] = _recentre(np.clip(volume.data, 0, None))
    peak = max(float(m.max()) for m in maps.values())
    return {name: m / peak for name, m in maps.items()}


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random 3 x 3 rotation matrix (from a random unit quaternion)."""
    w, x, y, z = rng.normal(size=4)
    norm = math.sqrt(w * w + x * x + y * y + z * z)
    w, x, y, z = w / norm, x / norm, y / norm, z / norm
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def _base_grid(shape_zyx: tuple[int, ...]) -> torch.Tensor:
    """Normalised sampling coordinates of a box, ``(z, y, x, 3)`` holding ``(x, y, z)``.

    The same grid as ``affine_grid`` with the identity and ``align_corners=True``.
    """
    axes = [torch.linspace(-1.0, 1.0, n) for n in shape_zyx]
    z, y, x = torch.meshgrid(*axes, indexing="ij")
    return torch.stack((x, y, z), dim=-1)


def rotate_template(
    template: np.ndarray, rotation: np.ndarray, base_grid: torch.Tensor | None = None
) -> np.ndarray:
    """Rotate a cubic ``(z, y, x)`` template about its box centre (trilinear interpolation).

    ``rotation`` acts on ``(x, y, z)`` coordinates (the ``affine_grid`` convention);
    ``base_grid`` is ``_base_grid(template.shape)``, computed when not given. Equivalent
    to ``grid_sample(input, affine_grid(rotation))``, with the grid built by one matrix
    product (``affine_grid`` is slow on the CPU for many small boxes).
    """
    if base_grid is None:
        base_grid = _base_grid(template.shape)
    matrix = torch.from_numpy(np.ascontiguousarray(rotation, dtype=np.float32))
    grid = (base_grid @ matrix.T)[None]
    tensor = torch.from_numpy(np.ascontiguousarray(template, dtype=np.float32))[None, None]
    return functional.grid_sample(tensor, grid, align_corners=True)[0, 0].numpy()


def particle_mask(rotated: np.ndarray, centre_zyx: np.ndarray) -> np.ndarray:
    """Occupancy of one rotated template (same ``(z, y, x)`` box), as booleans.

    Voxels above ``OCCUPANCY_THRESHOLD`` of the maximum, with enclosed cavities filled.
    When the centre voxel (``rint(centre_zyx)``) is still outside (a hollow or
    horseshoe particle whose centre of mass lies off its density), a one-voxel
    bridge from the centre to the nearest masked voxel is added, so that the truth
    centre always carries its particle's label.
    """
    mask = rotated > OCCUPANCY_THRESHOLD * rotated.max()
    outside = cc3d.connected_components((~mask).astype(np.uint8), connectivity=6)
    faces = [outside[0], outside[-1], outside[:, 0], outside[:, -1],
             outside[:, :, 0], outside[:, :, -1]]
    open_labels = np.unique(np.concatenate([f.ravel() for f in faces]))
    mask |= (outside > 0) & ~np.isin(outside, open_labels)
    centre = np.rint(centre_zyx).astype(int)
    if not mask[tuple(centre)]:
        points = np.argwhere(mask)
        target = points[np.argmin(((points - centre) ** 2).sum(axis=1))]
        steps = 2 * int(np.abs(target - centre).max()) + 1
        line = np.rint(np.linspace(centre, target, steps)).astype(int)
        mask[tuple(line.T)] = True
    return mask


def _place(
    shape_zyx: tuple[int, int, int],
    templates: Mapping[str, np.ndarray],
    rng: np.random.Generator,
    fill: float,
    attempts: int = PLACEMENT_ATTEMPTS,
    give_up: int = 25,
) -> tuple[np.ndarray, ParticleTable, np.ndarray]:
    """Crowd the volume with non-overlapping particles (see the module docstring).

    Each particle gets one random rotation and up to ``attempts`` random positions;
    placement stops at the target fill or after ``give_up`` particles in a row found
    no free position.
    """
    density = np.zeros(shape_zyx, dtype=np.float32)
    occupancy = np.zeros(shape_zyx, dtype=np.int32)
    names = sorted(templates)
    grids = {name: _base_grid(templates[name].shape) for name in names}
    xyz, classes = [], []
    target = fill * math.prod(shape_zyx)
    occupied, failures, turn = 0, 0, 0
    while names and occupied < target and failures < give_up:
        name = names[turn % len(names)]
        rotated = rotate_template(templates[name], random_rotation(rng), grids[name])
        centre = _centre_of_mass(rotated)
        mask = particle_mask(rotated, centre)
        size = rotated.shape
        for _ in range(attempts):
            origin = [int(rng.integers(0, n - s + 1)) for n, s in zip(shape_zyx, size)]
            region = tuple(slice(o, o + s) for o, s in zip(origin, size))
            if not occupancy[region][mask].any():
                break
        else:
            failures += 1
            continue
        failures = 0
        turn += 1
        density[region] += rotated
        occupancy[region][mask] = len(xyz) + 1
        occupied += int(mask.sum())
        xyz.append((np.array(origin) + centre)[::-1])
        classes.append(name)
    truth = ParticleTable(np.array(xyz).reshape(-1, 3), np.array(classes, dtype=object))
    return density, truth, occupancy


def _per_volume(rate_per_um3: float, minimum: int, shape_zyx: tuple[int, int, int],
                voxel_size: float) -> int:
    """How many objects a volume of ``shape_zyx`` voxels of ``voxel_size`` Å holds at
    ``rate_per_um3`` objects per µm³ (rounded), at least ``minimum``."""
    cubic_um = math.prod(shape_zyx) * (voxel_size * 1e-4) ** 3
    return max(minimum, round(rate_per_um3 * cubic_um))


def _bilayer(distance: np.ndarray, voxel_size: float) -> np.ndarray:
    """Lipid bilayer at signed ``distance`` (voxels) from its mid-surface: about 1 in the two
    head-group leaflets, 0 in the hydrocarbon core and the solvent (sigmoid edges)."""
    edge = EDGE_A / voxel_size
    magnitude = np.abs(distance)
    return (_smooth_inside(magnitude - MEMBRANE_THICKNESS_A / 2 / voxel_size, edge)
            - _smooth_inside(magnitude - MEMBRANE_CORE_A / 2 / voxel_size, edge))


def _add_membrane(
    density: np.ndarray, labels: np.ndarray, blocked: np.ndarray, centre_zyx: np.ndarray,
    radius: float, voxel_size: float, level: float,
) -> None:
    """Add a bilayer on a sphere to ``density`` and mark it in ``labels``, in place.

    Args:
        density: ``float32`` ``(z, y, x)`` distractor density.
        labels: ``uint8`` ``(z, y, x)`` distractor label map; voxels where the bilayer
            exceeds ``OCCUPANCY_THRESHOLD * level`` get the membrane label.
        blocked: boolean ``(z, y, x)``; the bilayer has no density there.
        centre_zyx: the sphere's centre, voxels ``(z, y, x)`` (may lie outside the volume).
        radius: the sphere's radius in voxels.
        voxel_size: Å per voxel.
        level: the protein density (the leaflets' density).

    Drawn slab by slab of z-planes (``SLAB_VOXELS`` voxels at most), within the bilayer's
    box; density beyond ``EDGE_REACH`` edge widths of its surface is left out.
    """
    reach = (MEMBRANE_THICKNESS_A / 2 + EDGE_REACH * EDGE_A) / voxel_size
    lo = [max(0, math.floor(c - radius - reach)) for c in centre_zyx]
    hi = [min(n, math.ceil(c + radius + reach) + 1) for c, n in zip(centre_zyx, density.shape)]
    dy = (np.arange(lo[1], hi[1]) - centre_zyx[1])[:, None]
    dx = (np.arange(lo[2], hi[2]) - centre_zyx[2])[None, :]
    planar = dy**2 + dx**2
    planes = max(1, SLAB_VOXELS // max(1, planar.size))
    for z0 in range(lo[0], hi[0], planes):
        z1 = min(z0 + planes, hi[0])
        dz = (np.arange(z0, z1) - centre_zyx[0])[:, None, None]
        distance = np.sqrt(dz**2 + planar) - radius
        region = (slice(z0, z1), slice(lo[1], hi[1]), slice(lo[2], hi[2]))
        near = (np.abs(distance) < reach) & ~blocked[region]
        wall = np.zeros(distance.shape, dtype=np.float32)
        wall[near] = level * _bilayer(distance[near], voxel_size)
        density[region] += wall
        labels[region][wall > OCCUPANCY_THRESHOLD * level] = DISTRACTOR_LABELS["membrane"]


def _add_compact(
    density: np.ndarray, labels: np.ndarray, blocked: np.ndarray, box: np.ndarray, label: int,
    rng: np.random.Generator, level: float,
) -> np.ndarray | None:
    """Add a small distractor where it is clear of particles and earlier distractors.

    ``box`` (a ``(z, y, x)`` density) goes, whole inside the volume, at the first of
    ``PLACEMENT_ATTEMPTS`` random positions where its voxels above
    ``OCCUPANCY_THRESHOLD * level`` touch neither ``blocked`` nor a labelled voxel of
    ``labels``; those voxels get ``label``, and ``density`` gets the box except in
    ``blocked`` (both in place).

    Returns:
        The box centre, voxels ``(z, y, x)``; ``None`` when no position was free or the
        box is larger than the volume.
    """
    size = box.shape
    if any(s > n for s, n in zip(size, density.shape)):
        return None
    mask = box > OCCUPANCY_THRESHOLD * level
    for _ in range(PLACEMENT_ATTEMPTS):
        origin = [int(rng.integers(0, n - s + 1)) for n, s in zip(density.shape, size)]
        region = tuple(slice(o, o + s) for o, s in zip(origin, size))
        if not (blocked[region][mask].any() or labels[region][mask].any()):
            density[region] += box * ~blocked[region]
            labels[region][mask] = label
            return np.array(origin) + (np.array(size) - 1) / 2
    return None


def _gold_bead(voxel_size: float, level: float) -> np.ndarray:
    """A gold fiducial: a solid ``(z, y, x)`` ball of ``GOLD_RADIUS_A`` at ``GOLD_DENSITY``
    times the protein density ``level``, in a box reaching ``EDGE_REACH`` edge widths
    past its surface (so that its dense edge is not cut)."""
    radius, edge = GOLD_RADIUS_A / voxel_size, EDGE_A / voxel_size
    z, y, x = _box(radius + EDGE_REACH * edge)
    inside = _smooth_inside(np.sqrt(z**2 + y**2 + x**2) - radius, edge)
    return GOLD_DENSITY * level * inside


def _junk_blob(rng: np.random.Generator, voxel_size: float, level: float) -> np.ndarray:
    """Irregular junk at the protein density ``level``, a ``(z, y, x)`` box.

    The union of ``JUNK_LUMPS`` (2-4) balls of ``JUNK_LUMP_FRACTION`` (0.5-0.8) times a
    radius drawn from ``JUNK_RADIUS_A``, each touching that radius's sphere from inside in
    a random direction.
    """
    radius = rng.uniform(*JUNK_RADIUS_A) / voxel_size
    z, y, x = _box(radius)
    distance = np.full(z.shape, np.inf, dtype=np.float32)
    for _ in range(int(rng.integers(JUNK_LUMPS[0], JUNK_LUMPS[1] + 1))):
        lump = rng.uniform(*JUNK_LUMP_FRACTION) * radius
        direction = rng.normal(size=3)
        cz, cy, cx = (radius - lump) * direction / np.linalg.norm(direction)
        distance = np.minimum(distance, np.sqrt((z - cz)**2 + (y - cy)**2 + (x - cx)**2) - lump)
    return level * _smooth_inside(distance, EDGE_A / voxel_size)


def _add_distractors(
    occupancy: np.ndarray, rng: np.random.Generator, voxel_size: float, level: float,
) -> tuple[np.ndarray, ParticleTable, np.ndarray]:
    """Gold beads, membranes, vesicles and junk around placed particles (module docstring).

    Args:
        occupancy: the particles' ``(z, y, x)`` occupancy (0: solvent); never touched.
        rng: source of the distractors' number, size and position.
        voxel_size: Å per voxel.
        level: the protein density (the templates' maximum).

    Returns:
        ``(density, table, labels)``: their ``float32`` ``(z, y, x)`` density; a table of
        voxels ``(x, y, z)`` with classes (``DISTRACTOR_LABELS``: bead and junk box centres,
        vesicle centres, one point on each sheet); the ``uint8`` ``(z, y, x)`` label map.
    """
    shape = occupancy.shape
    blocked = dilate_occupancy(occupancy > 0)
    density = np.zeros(shape, dtype=np.float32)
    labels = np.zeros(shape, dtype=np.uint8)
    points, classes = [], []
    bead = _gold_bead(voxel_size, level)
    compact = [("gold", _per_volume(GOLD_PER_UM3, GOLD_MIN, shape, voxel_size), lambda: bead),
               ("junk", _per_volume(JUNK_PER_UM3, JUNK_MIN, shape, voxel_size),
                lambda: _junk_blob(rng, voxel_size, level))]
    for name, count, make in compact:
        for _ in range(count):
            centre = _add_compact(density, labels, blocked, make(), DISTRACTOR_LABELS[name], rng,
                                  level)
            if centre is not None:
                points.append(centre)
                classes.append(name)
    blocked |= labels > 0
    spheres = []
    if rng.random() < SHEET_CHANCE:
        point = rng.uniform(0.25, 0.75, size=3) * shape
        normal = rng.normal(size=3)
        radius = rng.uniform(*SHEET_CURVATURE) * max(shape)
        spheres.append(("membrane", point - radius * normal / np.linalg.norm(normal), radius,
                        point))
    for _ in range(int(rng.integers(VESICLES[0], VESICLES[1] + 1))):
        centre = rng.uniform(0.0, 1.0, size=3) * shape
        spheres.append(("membrane_vesicle", centre, rng.uniform(*VESICLE_RADIUS_A) / voxel_size,
                        centre))
    for name, centre, radius, point in spheres:
        _add_membrane(density, labels, blocked, centre, radius, voxel_size, level)
        points.append(point)
        classes.append(name)
    xyz = np.array(points, dtype=np.float64).reshape(-1, 3)[:, ::-1]
    return density, ParticleTable(xyz, np.array(classes, dtype=object)), labels


def _frequencies(shape_zyx: tuple[int, int, int], voxel_size: float) -> list[torch.Tensor]:
    """Spatial frequencies (1/Å) of an ``rfftn`` along z, y, x, shaped to broadcast."""
    kz = torch.fft.fftfreq(shape_zyx[0], d=voxel_size).reshape(-1, 1, 1)
    ky = torch.fft.fftfreq(shape_zyx[1], d=voxel_size).reshape(1, -1, 1)
    kx = torch.fft.rfftfreq(shape_zyx[2], d=voxel_size).reshape(1, 1, -1)
    return [kz, ky, kx]


def _electron_wavelength(voltage_kv: float) -> float:
    """Relativistic electron wavelength in Å."""
    volts = voltage_kv * 1e3
    return 12.2643 / math.sqrt(volts * (1 + 0.978466e-6 * volts))


def _filtered(volume: torch.Tensor, *filters: torch.Tensor) -> torch.Tensor:
    """``volume`` (``(z, y, x)``) times each of ``filters`` in turn in Fourier space
    (``rfftn`` layout), in place on one spectrum."""
    spectrum = torch.fft.rfftn(volume)
    for transfer in filters:
        spectrum *= transfer
    return torch.fft.irfftn(spectrum, s=volume.shape)


def imaging_transfer(shape_zyx: tuple[int, int, int], voxel_size: float
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """The simulator's CTF (with its B-factor envelope, sign inverting the contrast) and
    missing-wedge mask for an ``rfftn`` of a ``(z, y, x)`` box of ``voxel_size`` Å, each
    shaped to multiply that spectrum (see the module docstring for the parameters)."""
    kz, ky, kx = _frequencies(shape_zyx, voxel_size)
    k2 = kz**2 + ky**2 + kx**2
    wavelength = _electron_wavelength(VOLTAGE_KV)
    phase = math.pi * wavelength * DEFOCUS_A * k2
    ctf = -(math.sqrt(1 - AMPLITUDE_CONTRAST**2) * torch.sin(phase)
            + AMPLITUDE_CONTRAST * torch.cos(phase)) * torch.exp(-B_FACTOR_A2 * k2 / 4)
    wedge = (kz.abs() <= math.tan(math.radians(TILT_RANGE_DEG)) * kx.abs()).float()
    return ctf, wedge.expand(kz.shape[0], ky.shape[1], kx.shape[2])


def image(density: np.ndarray, voxel_size: float, snr: float | None,
          rng: np.random.Generator, distractors: np.ndarray | None = None) -> np.ndarray:
    """CTF, noise and missing wedge applied to a clean density (see the module docstring).

    Args:
        density: clean density ``(z, y, x)``, protein positive.
        voxel_size: Å per voxel (sets the CTF's frequencies).
        snr: signal variance over noise variance; ``None`` adds no noise.
        rng: source of the noise.
        distractors: non-particle density ``(z, y, x)`` imaged with ``density`` but left
            out of the signal variance that sets the noise; ``None``: none.

    Returns:
        ``float32`` ``(z, y, x)``, protein darker than the solvent.
    """
    shape = density.shape
    ctf, wedge = imaging_transfer(shape, voxel_size)
    signal = _filtered(torch.from_numpy(density), ctf, wedge)
    signal_variance = float(signal.var())
    if distractors is not None:
        signal += _filtered(torch.from_numpy(distractors), ctf, wedge)
    del ctf
    if snr is None:
        return signal.numpy().astype(np.float32, copy=False)
    noise = _filtered(torch.from_numpy(rng.standard_normal(shape, dtype=np.float32)), wedge)
    noise *= math.sqrt(signal_variance / (snr * float(noise.var())))
    noise += signal
    return noise.numpy().astype(np.float32, copy=False)


class SimulatedTomogram(NamedTuple):
    """One simulated tomogram and its ground truth (see :func:`simulate_tomogram`)."""

    volume: np.ndarray
    truth: ParticleTable
    occupancy: np.ndarray
    distractors: ParticleTable
    distractor_labels: np.ndarray | None


def simulate_tomogram(
    shape_zyx: tuple[int, int, int],
    templates: Mapping[str, np.ndarray],
    rng: np.random.Generator,
    snr: float | None = DEFAULT_SNR,
    voxel_size: float = 10.0,
    fill: float = DEFAULT_FILL,
    distractors: bool = False,
) -> SimulatedTomogram:
    """Simulate one tomogram.

    Args:
        shape_zyx: volume shape in voxels ``(z, y, x)``.
        templates: class name -> cubic ``(z, y, x)`` density (protein positive), at
            ``voxel_size``.
        rng: the only source of randomness (placement, orientations, noise).
        snr: signal variance over noise variance; ``None``: noise-free (CTF and
            missing wedge only).
        voxel_size: Å per voxel.
        fill: fraction of the volume the particles' occupancy should reach.
        distractors: add gold beads, membranes, vesicles and junk after the particles
            (module docstring); ``False`` draws no random number for them.

    Returns:
        ``(volume, truth, occupancy, distractors, distractor_labels)``: the ``float32``
        ``(z, y, x)`` tomogram; the particle centres (voxels ``(x, y, z)``, 0-based) and
        classes; an ``int32`` ``(z, y, x)`` map holding at each voxel the 1-based row of
        its particle in ``truth`` (0: solvent; also at every distractor voxel); the
        distractors (voxels ``(x, y, z)``, classes of ``DISTRACTOR_LABELS``; empty without
        them) and their ``uint8`` ``(z, y, x)`` label map (``DISTRACTOR_LABELS`` values,
        0: none; ``None`` without them).

    Raises:
        SasiInputError: a template box larger than the volume.
    """
    for name, template in templates.items():
        if any(s > n for s, n in zip(template.shape, shape_zyx)):
            raise SasiInputError(
                f"template {name}: box {template.shape} does not fit in a "
                f"{tuple(shape_zyx)} volume; pass a larger --shape (Z,Y,X)"
            )
    density, truth, occupancy = _place(shape_zyx, templates, rng, fill)
    extra, table, labels = None, ParticleTable.empty(), None
    if distractors:
        protein = max(float(t.max()) for t in templates.values())
        extra, table, labels = _add_distractors(occupancy, rng, voxel_size, protein)
    volume = image(density, voxel_size, snr, rng, extra)
    return SimulatedTomogram(volume, truth, occupancy, table, labels)


def simulate_dataset(
    out_dir: str | os.PathLike,
    tomograms: int = 3,
    shape_zyx: tuple[int, int, int] = (96, 256, 256),
    seed: int = 0,
    templates_dir: str | os.PathLike | None = None,
    voxel_size: float = 10.0,
    snr: float | None = None,
    fill: float = DEFAULT_FILL,
    distractors: bool = False,
) -> dict:
    """Write ``tomo_NNN.mrc``, ``tomo_NNN.tsv`` (truth) and ``tomo_NNN_occupancy.mrc`` per
    tomogram and ``dataset.json`` (classes, radii in voxels, voxel size, ...) to ``out_dir``.

    With ``distractors`` (see :func:`simulate_tomogram`) also ``tomo_NNN_distractors.tsv``
    (``x y z class``, voxels, class ``gold``, ``membrane``, ``membrane_vesicle`` or
    ``junk``) and the ``int16`` label map ``tomo_NNN_distractor_mask.mrc`` (0 none,
    1 gold, 2 membrane or vesicle, 3 junk).

    Returns:
        The content of ``dataset.json``.
    """
    if snr is not None and snr <= 0:
        raise SasiInputError(f"--snr {snr}: the signal-to-noise ratio must be positive")
    if voxel_size <= 0:
        raise SasiInputError(f"--voxel-size {voxel_size}: must be positive (Å per voxel)")
    templates = (load_templates(templates_dir, voxel_size) if templates_dir
                 else procedural_templates(voxel_size))
    snr = DEFAULT_SNR if snr is None else snr
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = []
    for index in range(tomograms):
        name = f"tomo_{index:03d}"
        tomogram = simulate_tomogram(shape_zyx, templates, rng, snr, voxel_size, fill,
                                     distractors)
        write_volume(out / f"{name}.mrc", tomogram.volume, voxel_size)
        write_particles(out / f"{name}.tsv", tomogram.truth)
        # MRC has no 32-bit integer mode: int16 while the row numbers fit, else float32
        labels = tomogram.occupancy.astype(
            np.int16 if len(tomogram.truth) <= np.iinfo(np.int16).max else np.float32)
        write_volume(out / f"{name}_occupancy.mrc", labels, voxel_size)
        if distractors:
            write_particles(out / f"{name}_distractors.tsv", tomogram.distractors)
            write_volume(out / f"{name}_distractor_mask.mrc",
                         tomogram.distractor_labels.astype(np.int16), voxel_size)
        names.append(name)
    dataset = {
        "classes": sorted(templates),
        "radii": {n: round(template_radius(t), 1) for n, t in sorted(templates.items())},
        "voxel_size": voxel_size,
        "shape_zyx": list(shape_zyx),
        "seed": seed,
        "snr": snr,
        "fill": fill,
        "distractors": distractors,
        "templates": str(templates_dir) if templates_dir else "procedural",
        "unscored": [n for n in UNSCORED_CLASSES if n in templates],
        "tomograms": names,
    }
    with atomic_output(out / "dataset.json") as tmp:
        Path(tmp).write_text(json.dumps(dataset, indent=2) + "\n")
    return dataset
