"""Weak point labels to dense label volumes (filled spheres)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .coordinates import ParticleTable


def sphere_offsets(radius: float) -> np.ndarray:
    """Integer ``(n, 3)`` offsets ``(dz, dy, dx)`` of the voxels within ``radius`` voxels."""
    r = int(np.ceil(radius))
    grid = np.mgrid[-r : r + 1, -r : r + 1, -r : r + 1].reshape(3, -1).T
    return grid[(grid**2).sum(axis=1) <= radius**2 + 1e-9]


def sphere_label_volume(
    shape_zyx: tuple[int, int, int],
    particles: ParticleTable,
    class_names: Sequence[str],
    radii: Sequence[float],
) -> np.ndarray:
    """Label volume: 0 = background, ``i + 1`` inside a sphere of class ``class_names[i]``.

    Args:
        shape_zyx: volume shape ``(z, y, x)``.
        particles: centres in voxels ``(x, y, z)``; classes not in ``class_names``
            are ignored.
        class_names: the K class names, in label order.
        radii: sphere radius per class, in voxels.

    Returns:
        ``uint8`` array of ``shape_zyx``. Where spheres overlap, the later
        particle in the table wins.
    """
    labels = np.zeros(shape_zyx, dtype=np.uint8)
    bounds = np.array(shape_zyx)
    for label, (name, radius) in enumerate(zip(class_names, radii), start=1):
        offsets = sphere_offsets(radius)
        for x, y, z in particles.xyz[particles.classes == name]:
            centre = np.rint([z, y, x]).astype(int)
            voxels = offsets + centre
            inside = np.all((voxels >= 0) & (voxels < bounds), axis=1)
            zz, yy, xx = voxels[inside].T
            labels[zz, yy, xx] = label
    return labels
