"""Weak point labels to dense label volumes (filled spheres)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .coordinates import ParticleTable

IGNORE_LABEL = 255
"""Label-map value of voxels that teach nothing: the supervised loss leaves them out
(``losses.dice_focal_loss``). Self-training marks unlabelled particles so
(``self_training``), so that they are not taught as background."""


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
    paint_spheres(labels, particles, class_names, radii)
    return labels


def paint_spheres(labels: np.ndarray, particles: ParticleTable, class_names: Sequence[str],
                  radii: Sequence[float], value: int | None = None,
                  background_only: bool = False) -> None:
    """Write, in place, a sphere of its class radius (voxels) around each particle
    (centres in voxels ``(x, y, z)``) into the ``uint8`` label volume ``labels``
    ``(z, y, x)``: the class label ``i + 1`` of ``class_names[i]``, or ``value`` for
    every sphere; with ``background_only``, only over voxels that are 0. Classes not
    in ``class_names`` are skipped; later particles overwrite earlier ones."""
    bounds = np.array(labels.shape)
    for label, (name, radius) in enumerate(zip(class_names, radii), start=1):
        offsets = sphere_offsets(radius)
        for x, y, z in particles.xyz[particles.classes == name]:
            voxels = offsets + np.rint([z, y, x]).astype(int)
            zz, yy, xx = voxels[np.all((voxels >= 0) & (voxels < bounds), axis=1)].T
            keep = labels[zz, yy, xx] == 0 if background_only else slice(None)
            labels[zz[keep], yy[keep], xx[keep]] = label if value is None else value
