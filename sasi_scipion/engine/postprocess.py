"""Segmentations to particles: connected components (cc3d) with a score per particle.

Method card item 9. Per class: 26-connected components of the argmax map;
fragments of one particle (components whose centroids lie closer than the
class radius) are merged; components smaller than ``min_size_fraction`` of
the class sphere volume are dropped; components much larger than one sphere
(touching particles) are split by k-means on their voxel coordinates into as
many particles as spheres they hold. One particle per (part of a) component,
at its centroid; its score is the mean class probability over its voxels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cc3d
import numpy as np

from .coordinates import ParticleTable

MIN_SIZE_FRACTION = 0.25
"""Default smallest component kept, relative to the class sphere volume."""
SPLIT_FACTOR = 1.6
"""A component holding more than this many sphere volumes is split."""


@dataclass
class Segmentation:
    """Voxel-wise result of a network on a tomogram.

    Attributes:
        labels: ``uint8`` ``(z, y, x)`` argmax class (0 = background, i + 1 = class i).
        scores: ``float16`` ``(z, y, x)`` softmax probability of that class.
    """

    labels: np.ndarray
    scores: np.ndarray


def _kmeans(points: np.ndarray, weights: np.ndarray, k: int, iterations: int = 20) -> np.ndarray:
    """Cluster labels of ``points`` ``(n, 3)`` into ``k`` groups (farthest-point start)."""
    centres = [points[np.argmax(weights)]]
    for _ in range(1, k):
        distance = np.min([((points - c) ** 2).sum(1) for c in centres], axis=0)
        centres.append(points[np.argmax(distance)])
    centres_arr = np.array(centres, dtype=np.float64)
    assignment = np.zeros(len(points), dtype=int)
    for step in range(iterations):
        distances = ((points[:, None, :] - centres_arr[None]) ** 2).sum(-1)
        new = distances.argmin(1)
        if step and np.array_equal(new, assignment):
            break
        assignment = new
        for j in range(k):
            members = assignment == j
            if members.any():
                centres_arr[j] = np.average(points[members], axis=0, weights=weights[members])
    return assignment


def _merge_fragments(centroids: np.ndarray, sizes: np.ndarray, radius: float) -> np.ndarray:
    """Group index per component: components whose centroid lies within ``radius`` of a
    larger component's centroid join that component's group."""
    group = np.arange(len(sizes))
    order = np.argsort(-sizes, kind="stable")
    kept: list[int] = []
    for index in order:
        if kept:
            distance = ((centroids[kept] - centroids[index]) ** 2).sum(axis=1)
            nearest = int(np.argmin(distance))
            if distance[nearest] < radius**2:
                group[index] = group[kept[nearest]]
                continue
        kept.append(index)
    return group


def _class_particles(labels: np.ndarray, scores: np.ndarray, label: int, radius: float,
                     min_size_fraction: float) -> tuple[list[np.ndarray], list[float]]:
    """Centres ``(z, y, x)`` and scores of the particles of one class."""
    components = cc3d.connected_components(labels == label, connectivity=26)
    count = int(components.max())
    if count == 0:
        return [], []
    flat = components.ravel()
    indices = np.flatnonzero(flat)
    ids = flat[indices]
    coords = np.stack(np.unravel_index(indices, labels.shape), axis=1).astype(np.float64)
    probs = scores.ravel()[indices].astype(np.float64)
    sizes = np.bincount(ids, minlength=count + 1)[1:]
    centroids = np.stack([np.bincount(ids, weights=coords[:, a], minlength=count + 1)[1:]
                          for a in range(3)], axis=1) / sizes[:, None]
    groups = _merge_fragments(centroids, sizes.astype(float), radius)[ids - 1]
    sphere = 4.0 / 3.0 * math.pi * radius**3
    centres, particle_scores = [], []
    for group in np.unique(groups):
        members = groups == group
        points, weights = coords[members], probs[members]
        if len(points) < min_size_fraction * sphere:
            continue
        parts = max(1, int(round(len(points) / sphere))) if len(points) > SPLIT_FACTOR * sphere \
            else 1
        assignment = _kmeans(points, weights, parts) if parts > 1 else np.zeros(len(points), int)
        for part in range(parts):
            chosen = assignment == part
            if chosen.sum() < min_size_fraction * sphere:
                continue
            centres.append(points[chosen].mean(axis=0))
            particle_scores.append(float(weights[chosen].mean()))
    return centres, particle_scores


def extract_particles(
    segmentation: Segmentation,
    class_names: Sequence[str],
    radii: Sequence[float],
    min_size_fraction: float = MIN_SIZE_FRACTION,
    min_score: float = 0.0,
) -> ParticleTable:
    """Particles of every class in a segmentation.

    Args:
        segmentation: argmax labels and probabilities, ``(z, y, x)``.
        class_names: the K classes; label ``i + 1`` is ``class_names[i]``.
        radii: particle radius per class, voxels.
        min_size_fraction: smallest component kept, relative to the class sphere volume.
        min_score: particles whose mean class probability is lower are dropped.

    Returns:
        Centres in voxels ``(x, y, z)`` with class and score, sorted by class then
        descending score.
    """
    xyz, classes, scores = [], [], []
    for label, (name, radius) in enumerate(zip(class_names, radii), start=1):
        centres, class_scores = _class_particles(segmentation.labels, segmentation.scores, label,
                                                 float(radius), min_size_fraction)
        for order in np.argsort(-np.asarray(class_scores), kind="stable"):
            if class_scores[order] >= min_score:
                xyz.append(centres[order][::-1])
                classes.append(name)
                scores.append(class_scores[order])
    if not xyz:
        return ParticleTable(np.zeros((0, 3)), np.zeros(0, dtype=object), np.zeros(0))
    return ParticleTable(np.array(xyz), np.array(classes, dtype=object), np.array(scores))
