"""Normalised cross-correlation template matching: the accuracy harness's strongest
non-learned baseline (what a user with the true maps could run instead of SaSi).

For each class, the true density map is turned by ``ROTATIONS`` uniform random
rotations (fixed seed), each rotated map is filtered like the data (the simulator's
CTF and missing wedge, :func:`~sasi_scipion.engine.simulate.imaging_transfer`, applied
in a padded box), cut to a sphere of the class radius, made zero-mean and unit-norm in
it, and correlated with the whole tomogram in Fourier space. Dividing by the local
standard deviation of the tomogram under the same sphere gives the normalised
cross-correlation (NCC, -1 to 1) at every voxel; the class's score map is its maximum
over rotations. Peaks of each map (no higher score within the class radius) are the
candidates, ``CANDIDATES_PER_PICK`` times the class's count per class; taken best first
(compared as z-scores of their maps: small templates correlate with noise more
strongly), a candidate is kept unless a kept one lies closer than the larger of their
radii or its class already has its ``count`` (an oracle count: the true number of that
class in the tomogram, which favours the baseline).

Volumes are ``(z, y, x)`` float arrays; picks are voxels ``(x, y, z)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch
from torch.nn import functional

from sasi_scipion.engine.coordinates import ParticleTable
from sasi_scipion.engine.normalize import normalise
from sasi_scipion.engine.simulate import imaging_transfer, random_rotation, rotate_template

ROTATIONS = 300
CANDIDATES_PER_PICK = 3  # peaks per class kept before classes are resolved, per oracle pick
FILTER_PADDING = 16  # voxels added on each side of a map's box before filtering (CTF ringing)


def _sphere(shape_zyx: tuple[int, ...], radius: float) -> torch.Tensor:
    """A sphere of ``radius`` voxels about voxel 0 of a ``shape_zyx`` volume, wrapped
    around its edges (the layout of a correlation kernel)."""
    axes = [torch.fft.fftfreq(n, 1.0 / n) for n in shape_zyx]
    z, y, x = torch.meshgrid(*axes, indexing="ij")
    return ((z**2 + y**2 + x**2) <= radius**2).float()


def _filtered_templates(template: np.ndarray, voxel_size: float, rotations: int,
                        seed: int) -> tuple[torch.Tensor, int]:
    """``template`` turned by each of ``rotations`` seeded uniform rotations and filtered
    like the data, each centred in a cube padded by ``FILTER_PADDING`` voxels per side:
    ``(rotations, box, box, box)`` and the cube's centre voxel index."""
    rng = np.random.default_rng(seed)
    box = template.shape[0] + 2 * FILTER_PADDING
    ctf, wedge = imaging_transfer((box,) * 3, voxel_size)
    transfer = ctf * wedge
    padded = torch.zeros((rotations, box, box, box))
    inner = slice(FILTER_PADDING, FILTER_PADDING + template.shape[0])
    for index in range(rotations):
        padded[index, inner, inner, inner] = torch.from_numpy(
            rotate_template(template, random_rotation(rng)))
    filtered = torch.fft.irfftn(torch.fft.rfftn(padded, dim=(1, 2, 3)) * transfer,
                                s=(box,) * 3, dim=(1, 2, 3))
    return filtered, FILTER_PADDING + template.shape[0] // 2


def ncc_map(volume: np.ndarray, template: np.ndarray, radius: float, voxel_size: float,
            rotations: int = ROTATIONS, seed: int = 0) -> np.ndarray:
    """The maximum over ``rotations`` of the NCC of ``template`` (``(z, y, x)``, protein
    positive, at ``voxel_size`` Å) with ``volume`` (``(z, y, x)``), inside a sphere of
    ``radius`` voxels; ``float32`` ``(z, y, x)``."""
    shape = volume.shape
    data = torch.from_numpy(normalise(volume).astype(np.float32))
    spectrum = torch.fft.rfftn(data)
    mask = _sphere(shape, radius)
    voxels = float(mask.sum())
    mask_spectrum = torch.fft.rfftn(mask).conj()
    local_mean = torch.fft.irfftn(spectrum * mask_spectrum, s=shape) / voxels
    local_square = torch.fft.irfftn(torch.fft.rfftn(data**2) * mask_spectrum, s=shape) / voxels
    local_sd = (local_square - local_mean**2).clamp_min(1e-6).sqrt()
    del local_mean, local_square
    filtered, centre = _filtered_templates(template, voxel_size, rotations, seed)
    reach = int(math.ceil(radius))
    offsets = torch.arange(-reach, reach + 1)
    dz, dy, dx = torch.meshgrid(offsets, offsets, offsets, indexing="ij")
    inside = (dz**2 + dy**2 + dx**2) <= radius**2
    dz, dy, dx = dz[inside], dy[inside], dx[inside]
    best = torch.full(shape, -math.inf)
    kernel = torch.zeros(shape)
    where = (dz % shape[0], dy % shape[1], dx % shape[2])
    for rotated in filtered:
        values = rotated[centre + dz, centre + dy, centre + dx]
        values = values - values.mean()
        kernel[where] = values / values.norm().clamp_min(1e-12)
        kernel_spectrum = torch.fft.rfftn(kernel).conj_physical_()
        torch.maximum(best, torch.fft.irfftn(kernel_spectrum.mul_(spectrum), s=shape), out=best)
    # the local deviation does not depend on the rotation: divide the maximum once
    return best.div_(local_sd.mul_(math.sqrt(voxels))).numpy()


def _peaks(scores: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Voxels ``(z, y, x)`` with no higher score within ``radius`` (a cube of side
    ``2 radius + 1``), best first, and their scores."""
    tensor = torch.from_numpy(scores)
    size = 2 * int(radius) + 1
    is_peak = tensor == functional.max_pool3d(tensor[None, None], size, 1, size // 2)[0, 0]
    zyx = is_peak.nonzero().numpy()
    values = scores[tuple(zyx.T)]
    order = np.argsort(-values, kind="stable")
    return zyx[order], values[order]


def match_particles(volume: np.ndarray, templates: Mapping[str, np.ndarray],
                    radii: Mapping[str, float], counts: Mapping[str, int], voxel_size: float,
                    rotations: int = ROTATIONS, seed: int = 0) -> ParticleTable:
    """Template-matching picks of every class of ``templates`` in ``volume``: the best
    ``counts[class]`` peaks per class (see the module docstring), classes resolved by
    z-scored NCC. ``radii`` in voxels; scores are the NCC values."""
    candidates = []  # (z-score, class, zyx, ncc)
    for name, template in templates.items():
        if counts.get(name, 0) == 0:
            continue
        scores = ncc_map(volume, template, radii[name], voxel_size, rotations, seed)
        spread = float(scores.std()) or 1.0
        zyx, values = _peaks(scores, radii[name])
        reserve = CANDIDATES_PER_PICK * counts[name]
        for point, value in zip(zyx[:reserve], values[:reserve], strict=True):
            candidates.append(((value - float(scores.mean())) / spread, name, point, value))
    candidates.sort(key=lambda c: -c[0])
    kept: list[tuple] = []
    for candidate in candidates:
        _, name, point, _ = candidate
        if sum(other[1] == name for other in kept) < counts[name] and all(
                np.linalg.norm(point - other[2]) >= max(radii[name], radii[other[1]])
                for other in kept):
            kept.append(candidate)
    if not kept:
        return ParticleTable(np.zeros((0, 3)), np.array([], dtype=object), np.zeros(0))
    return ParticleTable(np.array([c[2][::-1] for c in kept], dtype=np.float64),
                         np.array([c[1] for c in kept], dtype=object),
                         np.array([c[3] for c in kept], dtype=np.float64))
