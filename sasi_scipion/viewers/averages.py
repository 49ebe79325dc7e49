"""Per-class averages of the subvolumes around picks (no alignment).

Volumes are numpy arrays ``(z, y, x)``; positions voxels ``(x, y, z)`` from the
first voxel (the value at a centre is ``volume[z, y, x]``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..engine.coordinates import ParticleTable

BOX_PER_RADIUS = 1.5
"""Half the edge of an averaged box, in class radii: the particle and some context."""


@dataclass
class ClassAverage:
    """The mean box of one class: ``average`` ``(d, d, d)`` float32 ``(z, y, x)``
    (``None`` when no pick's box fits in the volume) over ``count`` picks."""

    name: str
    average: np.ndarray | None
    count: int


def half_box(radius: float) -> int:
    """Half the edge of the averaged box (voxels, at least 2) for a class radius in
    voxels."""
    return max(2, int(np.ceil(BOX_PER_RADIUS * radius)))


def class_averages(volume: np.ndarray, picks: ParticleTable, class_names: Sequence[str],
                   radii: Sequence[float]) -> list[ClassAverage]:
    """One :class:`ClassAverage` per class of ``class_names`` (radii in voxels, same
    order): the plain mean of the boxes of edge ``2 * half_box(radius) + 1`` centred
    on the rounded pick positions; picks whose box leaves the volume are left out."""
    averages = []
    centres = np.rint(picks.xyz).astype(int)
    for name, radius in zip(class_names, radii):
        half = half_box(radius)
        total = np.zeros((2 * half + 1,) * 3, dtype=np.float64)
        count = 0
        for x, y, z in centres[picks.classes == name]:
            low = np.array([z, y, x]) - half
            if (low < 0).any() or (low + 2 * half + 1 > np.array(volume.shape)).any():
                continue
            total += volume[low[0]:low[0] + 2 * half + 1, low[1]:low[1] + 2 * half + 1,
                            low[2]:low[2] + 2 * half + 1]
            count += 1
        averages.append(ClassAverage(name, (total / count).astype(np.float32) if count
                                     else None, count))
    return averages
