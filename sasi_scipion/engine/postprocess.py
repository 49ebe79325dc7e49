"""Segmentations to particles: connected components (cc3d) with a score per particle.

Method card item 9. Two ways to form components (``COMPONENT_MODES``):

- ``foreground``: 26-connected components of the voxels whose
  background probability is below one half, whatever class they lean to; a
  component's class is the class with the largest summed probability over its
  voxels (each voxel votes for its most likely class with that probability).
  A particle whose voxels split between two similar classes stays one particle.
- ``argmax`` (the paper's, ``DEFAULT_COMPONENTS``): per class, 26-connected
  components of the argmax map.

Then, in both: fragments of one particle (components whose centroids lie
closer than the class radius) are merged; components smaller than
``min_size_fraction`` of the class sphere volume are dropped; components much
larger than one sphere (touching particles) are split by k-means on their
voxel coordinates into as many particles as spheres they hold. One particle
per (part of a) component, at its centroid; its score is the mean
probability over its voxels of the particle's class (``argmax``) or of not
being background (``foreground``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cc3d
import numpy as np
import torch

from .coordinates import ParticleTable

MIN_SIZE_FRACTION = 0.25
"""Default smallest component kept, relative to the class sphere volume."""
SPLIT_FACTOR = 1.6
"""A component holding more than this many sphere volumes is split."""


COMPONENT_MODES = ("argmax", "foreground")
"""How voxels are grouped into particles (see the module docstring)."""
DEFAULT_COMPONENTS = "argmax"
"""The component mode ``sasi pick`` uses unless told otherwise."""
FOREGROUND_THRESHOLD = 0.5
"""A voxel belongs to a particle when its background probability is below ``1 - this``."""


@dataclass
class Segmentation:
    """Voxel-wise result of a network on a tomogram.

    Attributes:
        labels: ``uint8`` ``(z, y, x)`` argmax class (0 = background, i + 1 = class i).
        scores: ``float16`` ``(z, y, x)`` softmax probability of that class.
        foreground: ``float16`` ``(z, y, x)`` probability of any particle class
            (one minus the background probability).
    """

    labels: np.ndarray
    scores: np.ndarray
    foreground: np.ndarray


def summarise_probabilities(probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor,
                                                            torch.Tensor]:
    """``(labels, scores, foreground)`` of softmax probabilities ``(K+1, z, y, x)``:
    the argmax class, its probability, and one minus the background probability."""
    scores, labels = probs.max(dim=0)
    return labels, scores, 1.0 - probs[0]


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


def _merge_fragments(centroids: np.ndarray, sizes: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Group index per component: a component whose centroid lies within the radius
    (``radii``, one per component, voxels) of a larger component's centroid joins
    that component's group."""
    group = np.arange(len(sizes))
    order = np.argsort(-sizes, kind="stable")
    kept: list[int] = []
    for index in order:
        if kept:
            distance = ((centroids[kept] - centroids[index]) ** 2).sum(axis=1)
            nearest = int(np.argmin(distance))
            if distance[nearest] < radii[kept[nearest]] ** 2:
                group[index] = group[kept[nearest]]
                continue
        kept.append(index)
    return group


@dataclass
class _Components:
    """The voxels of the 26-connected components of a mask.

    Attributes:
        ids: component (1-based) of each voxel.
        coords: ``(n, 3)`` voxel indices ``(z, y, x)``, float64.
        count: number of components.
        sizes: ``(count,)`` voxels per component.
        centroids: ``(count, 3)`` mean ``(z, y, x)`` per component.
    """

    ids: np.ndarray
    coords: np.ndarray
    count: int
    sizes: np.ndarray
    centroids: np.ndarray

    @classmethod
    def of(cls, mask: np.ndarray) -> _Components:
        components = cc3d.connected_components(mask, connectivity=26)
        count = int(components.max())
        flat = components.ravel()
        indices = np.flatnonzero(flat)
        ids = flat[indices]
        coords = np.stack(np.unravel_index(indices, mask.shape), axis=1).astype(np.float64)
        sizes = np.bincount(ids, minlength=count + 1)[1:]
        centroids = np.stack([np.bincount(ids, weights=coords[:, a], minlength=count + 1)[1:]
                              for a in range(3)], axis=1) / np.maximum(sizes, 1)[:, None]
        return cls(ids, coords, count, sizes, centroids)


def _particles_of_groups(points: np.ndarray, weights: np.ndarray, groups: np.ndarray,
                         radius_of: dict[int, float], min_size_fraction: float
                         ) -> list[tuple[int, np.ndarray, float]]:
    """``(group, centre (z, y, x), score)`` of every particle: groups smaller than
    ``min_size_fraction`` of their sphere dropped, groups holding more than
    ``SPLIT_FACTOR`` spheres split by k-means; score = mean weight."""
    found = []
    for group in np.unique(groups):
        members = groups == group
        group_points, group_weights = points[members], weights[members]
        radius = radius_of[int(group)]
        sphere = 4.0 / 3.0 * math.pi * radius**3
        if len(group_points) < min_size_fraction * sphere:
            continue
        parts = (max(1, int(round(len(group_points) / sphere)))
                 if len(group_points) > SPLIT_FACTOR * sphere else 1)
        assignment = (_kmeans(group_points, group_weights, parts) if parts > 1
                      else np.zeros(len(group_points), int))
        for part in range(parts):
            chosen = assignment == part
            if chosen.sum() < min_size_fraction * sphere:
                continue
            found.append((int(group), group_points[chosen].mean(axis=0),
                          float(group_weights[chosen].mean())))
    return found


def _argmax_particles(segmentation: Segmentation, radii: Sequence[float],
                      min_size_fraction: float) -> list[tuple[int, np.ndarray, float]]:
    """``(class index, centre (z, y, x), score)`` per particle, components per class."""
    found = []
    for index, radius in enumerate(radii):
        components = _Components.of(segmentation.labels == index + 1)
        if components.count == 0:
            continue
        flat = np.ravel_multi_index(components.coords.astype(np.intp).T,
                                    segmentation.labels.shape)
        weights = segmentation.scores.ravel()[flat].astype(np.float64)
        groups = _merge_fragments(components.centroids, components.sizes.astype(float),
                                  np.full(components.count, float(radius)))[components.ids - 1]
        radius_of = dict.fromkeys((int(g) for g in np.unique(groups)), float(radius))
        found += [(index, centre, score) for _, centre, score in _particles_of_groups(
            components.coords, weights, groups, radius_of, min_size_fraction)]
    return found


def _foreground_particles(segmentation: Segmentation, radii: Sequence[float],
                          min_size_fraction: float) -> list[tuple[int, np.ndarray, float]]:
    """``(class index, centre (z, y, x), score)`` per particle, class-agnostic
    components whose class is decided by summed probabilities."""
    classes = len(radii)
    components = _Components.of(segmentation.foreground > FOREGROUND_THRESHOLD)
    if components.count == 0:
        return []
    flat = np.ravel_multi_index(components.coords.astype(np.intp).T,
                                segmentation.labels.shape)
    foreground = segmentation.foreground.ravel()[flat].astype(np.float64)
    labels = segmentation.labels.ravel()[flat].astype(np.int64)
    votes = segmentation.scores.ravel()[flat].astype(np.float64) * (labels > 0)

    def decide(owner: np.ndarray, owners: int) -> np.ndarray:
        """Class index (0-based) with the largest summed vote per owner (0-based ids)."""
        totals = np.zeros((owners, classes + 1))
        np.add.at(totals, (owner, labels), votes)
        return totals[:, 1:].argmax(axis=1)

    component_class = decide(components.ids - 1, components.count)
    radius_array = np.asarray(radii, dtype=np.float64)
    groups = _merge_fragments(components.centroids, components.sizes.astype(float),
                              radius_array[component_class])[components.ids - 1]
    group_class = dict(zip(np.unique(groups).tolist(),
                           decide(np.unique(groups, return_inverse=True)[1],
                                  len(np.unique(groups))).tolist()))
    radius_of = {group: float(radius_array[c]) for group, c in group_class.items()}
    return [(group_class[group], centre, score) for group, centre, score in _particles_of_groups(
        components.coords, foreground, groups, radius_of, min_size_fraction)]


def extract_particles(
    segmentation: Segmentation,
    class_names: Sequence[str],
    radii: Sequence[float],
    min_size_fraction: float = MIN_SIZE_FRACTION,
    min_score: float | Sequence[float] = 0.0,
    components: str = DEFAULT_COMPONENTS,
) -> ParticleTable:
    """Particles of every class in a segmentation.

    Args:
        segmentation: argmax labels and probabilities, ``(z, y, x)``.
        class_names: the K classes; label ``i + 1`` is ``class_names[i]``.
        radii: particle radius per class, voxels.
        min_size_fraction: smallest component kept, relative to the class sphere volume.
        min_score: particles with a lower score are dropped; one value for every
            class or one per class.
        components: one of ``COMPONENT_MODES``.

    Returns:
        Centres in voxels ``(x, y, z)`` with class and score, sorted by class then
        descending score.
    """
    if components not in COMPONENT_MODES:
        raise ValueError(f"components {components!r}: choose one of {COMPONENT_MODES}")
    cut = np.broadcast_to(np.asarray(min_score, dtype=np.float64), (len(class_names),))
    finder = _foreground_particles if components == "foreground" else _argmax_particles
    found = [(index, centre, score)
             for index, centre, score in finder(segmentation, radii, min_size_fraction)
             if score >= cut[index]]
    found.sort(key=lambda item: (item[0], -item[2]))
    if not found:
        return ParticleTable(np.zeros((0, 3)), np.zeros(0, dtype=object), np.zeros(0))
    return ParticleTable(np.array([centre[::-1] for _, centre, _ in found]),
                         np.array([class_names[index] for index, _, _ in found], dtype=object),
                         np.array([score for _, _, score in found]))
