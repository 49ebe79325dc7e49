"""Segmentations to particles: connected components (cc3d) with a score per particle.

Method card item 9. Three ways to find particles (``COMPONENT_MODES``):

- ``foreground``: 26-connected components of the voxels whose
  background probability is below one half, whatever class they lean to; a
  component's class is the class with the largest summed probability over its
  voxels (each voxel votes for its most likely class with that probability).
  A particle whose voxels split between two similar classes stays one particle.
- ``peaks`` (``DEFAULT_COMPONENTS``): one particle per local maximum of the smoothed particle
  probability (Gaussian, sigma = half the smallest radius) above the same
  threshold, as the best CZII challenge solutions find centres; a peak's
  class by the summed votes of its particle voxels within a class radius, peaks closer than a
  class radius to a better one dropped, and closer than ``SAME_CLASS_SUPPRESSION``
  class radii to a better one of the same class. Touching particles need no k-means.
- ``argmax`` (the paper's): per class, 26-connected
  components of the argmax map (all classes labelled in one multi-label cc3d
  pass, ``_Components.per_label``).

Then, for ``argmax`` and ``foreground``: fragments of one particle (components whose centroids lie
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
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass

import cc3d
import numpy as np
import torch
from torch.nn import functional

from .calibration import ClassCalibration, feature_radii
from .coordinates import ParticleTable
from .defaults import COMPONENT_MODES, DEFAULT_COMPONENTS, ComponentMode
from .errors import SasiInputError

MIN_SIZE_FRACTION = 0.25
"""Default smallest component kept, relative to the class sphere volume."""
SPLIT_FACTOR = 1.6
"""A component holding more than this many sphere volumes is split."""
PEAK_SLAB_VOXELS = 32_000_000
"""Voxels of one z slab of the peak search (``peak_candidates``), halo included: its
working memory is about 30 bytes a voxel (1 GB), whatever the tomogram's size."""
SAME_CLASS_SUPPRESSION = 1.5
"""With ``peaks``, a peak closer than this many class radii to a better peak of the
same class is the same particle (a large or elongated particle's second maximum);
peaks of other classes suppress only within a radius, so touching particles of
different classes stay apart (``docs/method.md``, post-processing)."""
FOREGROUND_THRESHOLD = 0.5
"""With ``foreground`` components, a voxel belongs to a particle when its particle
probability (one minus the background probability) exceeds this."""
Box = tuple[tuple[int, int], tuple[int, int], tuple[int, int]]
"""``((z0, z1), (y0, y1), (x0, x1))``: a box in voxels, half-open."""


MAPS_IN_MEMORY_VOXELS = 64_000_000
"""Largest volume whose blank segmentation (:meth:`Segmentation.blank`) is held in
memory (5 bytes a voxel, 320 MB); a larger one's maps live in a temporary file."""


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

    DTYPES = (np.uint8, np.float16, np.float16)
    """The dtypes of :attr:`labels`, :attr:`scores` and :attr:`foreground`."""

    @classmethod
    def blank(cls, shape_zyx: Sequence[int]) -> Segmentation:
        """Background everywhere (label 0, probabilities 0), in memory up to
        ``MAPS_IN_MEMORY_VOXELS`` voxels; beyond that, memory maps of one unnamed
        temporary file (in ``TMPDIR``, or the system's temporary folder; its space is
        reserved at once, and the operating system frees it with the maps): a large
        tomogram's maps then take disk, not memory (unless ``TMPDIR`` is a RAM
        file system such as tmpfs).

        Raises:
            SasiInputError: no room for the temporary file, naming ``TMPDIR``.
        """
        shape = tuple(int(n) for n in shape_zyx)
        voxels = math.prod(shape)
        if voxels <= MAPS_IN_MEMORY_VOXELS:
            return cls(*(np.zeros(shape, dtype=dtype) for dtype in cls.DTYPES))
        # the wider maps first, so that every map starts on a multiple of its item size
        order = sorted(range(len(cls.DTYPES)), key=lambda i: -np.dtype(cls.DTYPES[i]).itemsize)
        offsets, size = {}, 0
        for i in order:
            offsets[i], size = size, size + voxels * np.dtype(cls.DTYPES[i]).itemsize
        reserve = getattr(os, "posix_fallocate", None)  # not on macOS: no reservation
        try:
            with tempfile.TemporaryFile(prefix="sasi-maps-") as backing:
                if reserve is not None:  # all the space now: a full disk is an error here
                    reserve(backing.fileno(), 0, size)
                maps = [np.memmap(backing, dtype=dtype, mode="w+", offset=offsets[i],
                                  shape=shape) for i, dtype in enumerate(cls.DTYPES)]
        except OSError as error:
            raise SasiInputError(
                f"no room for the segmentation maps of a {' x '.join(map(str, shape))} "
                f"tomogram ({size / 2**30:.1f} GB) in {tempfile.gettempdir()} ({error}); "
                "free space there, or set TMPDIR to a folder with room") from error
        return cls(*maps)

    def maps(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(labels, scores, foreground)``."""
        return self.labels, self.scores, self.foreground


def summarise_probabilities(log_probs: torch.Tensor,
                            calibration: ClassCalibration | None = None
                            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(labels, scores, foreground)`` of log-softmax probabilities ``(K+1, z, y, x)``:
    the argmax class, its probability, and one minus the background probability.
    With a ``calibration``, a voxel whose argmax is a particle class takes the
    calibrated class instead, and its calibrated probability among the classes as
    its score; the background decision stays the network's, and ``foreground`` too
    unless the calibration has a reject class: then it is multiplied by one minus
    the calibrated reject probability."""
    probs = log_probs.exp()
    scores, labels = probs.max(dim=0)
    foreground = 1.0 - probs[0]
    if calibration is not None:
        logits = calibration.class_logits(log_probs)
        if calibration.rejects:
            foreground = foreground * (1.0 - functional.softmax(logits, dim=0)[-1])
            logits = logits[:-1]
        class_scores, class_labels = functional.softmax(logits, dim=0).max(dim=0)
        particle = labels > 0
        labels = torch.where(particle, class_labels + 1, labels)
        scores = torch.where(particle, class_scores, scores)
    return labels, scores, foreground


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

    @classmethod
    def per_label(cls, labels: np.ndarray, count: int) -> list[_Components]:
        """The components of ``labels == v`` for each ``v`` in ``1..count``, as
        :meth:`of` gives them, from one multi-label cc3d pass and ``cc3d.statistics``
        (``benchmarks/cc3d_components.py``: the same components, faster)."""
        components = cc3d.connected_components(labels, connectivity=26)
        statistics = cc3d.statistics(components, no_slice_conversion=True)
        flat = components.ravel()
        indices = np.flatnonzero(flat)
        ids, values = flat[indices].astype(np.int64), labels.ravel()[indices]
        owner = np.zeros(len(statistics["voxel_counts"]), dtype=np.int64)
        owner[ids] = values
        order = np.argsort(values, kind="stable")  # raster order within each value
        bounds = np.searchsorted(values[order], np.arange(1, count + 2))
        found = []
        for value in range(1, count + 1):
            members = order[bounds[value - 1]:bounds[value]]
            own = np.flatnonzero(owner == value)  # its components, numbered in raster order
            coords = np.stack(np.unravel_index(indices[members], labels.shape),
                              axis=1).astype(np.float64)
            found.append(cls(np.searchsorted(own, ids[members]) + 1, coords, len(own),
                             statistics["voxel_counts"][own].astype(np.int64),
                             statistics["centroids"][own]))
        return found


def _particles_of_groups(points: np.ndarray, weights: np.ndarray, groups: np.ndarray,
                         radius_of: dict[int, float], min_size_fraction: float
                         ) -> list[tuple[int, np.ndarray, float]]:
    """``(group, centre (z, y, x), score)`` of every particle: groups smaller than
    ``min_size_fraction`` of their sphere dropped, groups holding more than
    ``SPLIT_FACTOR`` spheres split by k-means; score = mean weight."""
    found = []
    order = np.argsort(groups, kind="stable")
    names, starts, counts = np.unique(groups[order], return_index=True, return_counts=True)
    for group, start, count in zip(names.tolist(), starts, counts):
        members = order[start:start + count]
        group_points, group_weights = points[members], weights[members]
        sphere = 4.0 / 3.0 * math.pi * radius_of[group] ** 3
        if count < min_size_fraction * sphere:
            continue
        parts = max(1, int(round(count / sphere))) if count > SPLIT_FACTOR * sphere else 1
        assignment = (_kmeans(group_points, group_weights, parts) if parts > 1
                      else np.zeros(count, int))
        sizes = np.bincount(assignment, minlength=parts)
        sums = np.stack([np.bincount(assignment, weights=group_points[:, a], minlength=parts)
                         for a in range(3)], axis=1)
        scores = np.bincount(assignment, weights=group_weights, minlength=parts)
        for part in np.flatnonzero(sizes >= min_size_fraction * sphere):
            found.append((group, sums[part] / sizes[part], float(scores[part] / sizes[part])))
    return found


def _argmax_particles(segmentation: Segmentation, radii: Sequence[float],
                      min_size_fraction: float) -> list[tuple[int, np.ndarray, float]]:
    """``(class index, centre (z, y, x), score)`` per particle, components per class."""
    per_class = _Components.per_label(segmentation.labels, len(radii))
    return [particle for index, (radius, components) in enumerate(zip(radii, per_class))
            for particle in class_particles(segmentation, index, radius, components,
                                            min_size_fraction)]


def class_particles(segmentation: Segmentation, index: int, radius: float,
                    components: _Components, min_size_fraction: float
                    ) -> list[tuple[int, np.ndarray, float]]:
    """``(class index, centre (z, y, x), score)`` per particle of class ``index`` (radius
    in voxels) from its argmax components: fragments merged, large blobs split."""
    if components.count == 0:
        return []
    flat = np.ravel_multi_index(components.coords.astype(np.intp).T,
                                segmentation.labels.shape)
    weights = segmentation.scores.ravel()[flat].astype(np.float64)
    groups = _merge_fragments(components.centroids, components.sizes.astype(float),
                              np.full(components.count, float(radius)))[components.ids - 1]
    radius_of = dict.fromkeys((int(g) for g in np.unique(groups)), float(radius))
    return [(index, centre, score) for _, centre, score in _particles_of_groups(
        components.coords, weights, groups, radius_of, min_size_fraction)]


def _foreground_particles(segmentation: Segmentation, radii: Sequence[float],
                          min_size_fraction: float, threshold: float
                          ) -> list[tuple[int, np.ndarray, float]]:
    """``(class index, centre (z, y, x), score)`` per particle, class-agnostic
    components of the voxels whose particle probability exceeds ``threshold``, each
    of the class with the largest summed probability."""
    classes = len(radii)
    components = _Components.of(segmentation.foreground > threshold)
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
    names, owner = np.unique(groups, return_inverse=True)
    group_class = dict(zip(names.tolist(), decide(owner, len(names)).tolist()))
    radius_of = {group: float(radius_array[c]) for group, c in group_class.items()}
    return [(group_class[group], centre, score) for group, centre, score in _particles_of_groups(
        components.coords, foreground, groups, radius_of, min_size_fraction)]


def gaussian_reach(sigma: float) -> int:
    """Voxels on either side of the centre that :func:`smooth_gaussian`'s kernel covers."""
    return max(1, int(math.ceil(3 * sigma)))


def smooth_gaussian(volume: np.ndarray, sigma: float) -> torch.Tensor:
    """``volume`` ``(z, y, x)`` convolved with a normalised Gaussian of ``sigma`` voxels
    (separable, truncated at :func:`gaussian_reach`, zero outside), float32."""
    half = gaussian_reach(sigma)
    axis = torch.arange(-half, half + 1, dtype=torch.float32)
    kernel = torch.exp(-(axis**2) / (2 * sigma**2))
    kernel /= kernel.sum()
    x = torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32))[None, None]
    for dim in range(3):
        shape = [1, 1, 1, 1, 1]
        shape[2 + dim] = len(axis)
        padding = [0, 0, 0]
        padding[dim] = half
        x = functional.conv3d(x, kernel.reshape(shape), padding=padding)
    return x[0, 0]


def _vote(labels: np.ndarray, scores: np.ndarray, chosen: np.ndarray, classes: int) -> int:
    """The class index (0-based) with the largest summed ``scores`` among the ``chosen``
    voxels, by their argmax ``labels`` (0 = background, never chosen)."""
    return int(np.argmax(np.bincount(labels[chosen], weights=scores[chosen],
                                     minlength=classes + 1)[1:]))


def peak_search_reach(smallest_radius: float) -> int:
    """Voxels around a candidate centre whose particle probability decides whether
    :func:`peak_candidates` finds it (its smoothing, then its maximum filter)."""
    return gaussian_reach(max(smallest_radius / 2, 1.0)) + int(smallest_radius)


def peak_candidates(foreground: np.ndarray, smallest_radius: float, threshold: float,
                    slab_voxels: int = PEAK_SLAB_VOXELS) -> tuple[np.ndarray, np.ndarray]:
    """Candidate particle centres: the local maxima (over a cube of ``2 r + 1`` voxels,
    ``r`` = ``smallest_radius``) of the particle probability ``foreground`` ``(z, y, x)``
    smoothed with a Gaussian of ``sigma = r / 2`` (at least 1 voxel), on or next to a
    voxel above ``threshold``.

    Computed in z slabs of about ``slab_voxels`` voxels, each with the halo its
    smoothing and maximum filter reach, so that memory stays near ``slab_voxels``
    however large the tomogram; the result is the one a single pass over the whole
    volume gives.

    Returns:
        ``(zyx, heights)``: ``(N, 3)`` voxel indices ``(z, y, x)``, highest smoothed
        probability first (ties in index order), and their smoothed probabilities.
    """
    sigma = max(smallest_radius / 2, 1.0)
    size = 2 * int(smallest_radius) + 1
    halo = peak_search_reach(smallest_radius)  # the exact core of a slab lies this far in
    depth = foreground.shape[0]
    plane = int(np.prod(foreground.shape[1:]))
    core = max(1, slab_voxels // max(plane, 1) - 2 * halo)
    found, heights = [], []
    for first in range(0, depth, core):
        last = min(first + core, depth)
        lo, hi = max(first - halo, 0), min(last + halo, depth)
        slab = foreground[lo:hi].astype(np.float32)
        smooth = smooth_gaussian(slab, sigma)
        peaks = smooth == functional.max_pool3d(smooth[None, None], size, 1, size // 2)[0, 0]
        # a peak on or next to a particle voxel (a one-voxel gap may split a particle)
        particle = torch.from_numpy(slab > threshold).float()
        peaks &= functional.max_pool3d(particle[None, None], 3, 1, 1)[0, 0] > 0
        peaks[: first - lo] = False
        peaks[last - lo:] = False
        zyx = peaks.nonzero()
        heights.append(smooth[tuple(zyx.T)].numpy())
        zyx[:, 0] += lo
        found.append(zyx.numpy())
    zyx, height = np.concatenate(found), np.concatenate(heights)
    order = np.argsort(-height, kind="stable")
    return zyx[order], height[order]


class _Neighbourhood:
    """The voxels of a ``(z, y, x)`` volume within a cube of ``reach`` voxels around a
    centre, clipped to the volume, in C order (z slowest), with their distances to it."""

    def __init__(self, shape: Sequence[int], reach: int) -> None:
        self.shape = np.asarray(shape)
        self.reach = reach
        offsets = np.indices((2 * reach + 1,) * 3) - reach
        self.distances = np.sqrt((offsets**2).sum(axis=0))
        """``(2 reach + 1,) * 3``: each cube voxel's distance to the centre, voxels."""

    def around(self, centre: np.ndarray) -> tuple[tuple[slice, ...], np.ndarray, np.ndarray]:
        """``(box, distances, corner)``: the slices of the volume the cube around
        ``centre`` covers, the distances of those voxels to it (flattened, C order) and
        the box's first voxel ``(z, y, x)``."""
        corner = np.maximum(centre - self.reach, 0)
        end = np.minimum(centre + self.reach + 1, self.shape)
        box = tuple(slice(a, b) for a, b in zip(corner.tolist(), end.tolist()))
        inner = tuple(slice(a + self.reach, b + self.reach)
                      for a, b in zip((corner - centre).tolist(), (end - centre).tolist()))
        return box, self.distances[inner].ravel(), corner


class _KeptPeaks:
    """The peaks kept so far, bucketed in cubic cells of ``cell`` voxels, so that the
    ones within ``cell`` voxels of a point are found without scanning them all."""

    def __init__(self, cell: int) -> None:
        self.cell = cell
        self.centres: list[np.ndarray] = []
        self.radii: list[float] = []
        self.classes: list[int] = []
        self.cells: dict[tuple[int, int, int], list[int]] = {}

    def _cell_of(self, point: np.ndarray) -> tuple[int, int, int]:
        z, y, x = (int(v) // self.cell for v in point)
        return z, y, x

    def near(self, point: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Distances from ``point`` to the kept peaks in its cell and the 26 around it
        (every kept peak closer than ``cell`` voxels is among them), their radii and
        their class indices."""
        z, y, x = self._cell_of(point)
        indices = [i for dz in (-1, 0, 1) for dy in (-1, 0, 1) for dx in (-1, 0, 1)
                   for i in self.cells.get((z + dz, y + dy, x + dx), ())]
        if not indices:
            return np.zeros(0), np.zeros(0), np.zeros(0, dtype=int)
        centres = np.array([self.centres[i] for i in indices])
        return (np.linalg.norm(centres - point, axis=1),
                np.array([self.radii[i] for i in indices]),
                np.array([self.classes[i] for i in indices]))

    def add(self, point: np.ndarray, radius: float, klass: int) -> None:
        """Keep the peak at ``point`` (voxels ``(z, y, x)``) of class index ``klass``
        with its class ``radius``."""
        self.cells.setdefault(self._cell_of(point), []).append(len(self.centres))
        self.centres.append(point.astype(np.float64))
        self.radii.append(radius)
        self.classes.append(klass)


def _peak_particles(segmentation: Segmentation, radii: Sequence[float],
                    min_size_fraction: float, threshold: float,
                    same_class_suppression: float = SAME_CLASS_SUPPRESSION
                    ) -> list[tuple[int, np.ndarray, float]]:
    """``(class index, centre (z, y, x), score)`` per particle: local maxima of the
    smoothed particle probability on or next to the voxels above ``threshold``; each peak's
    class from the summed probability votes of its particle voxels within the
    radius of the class that wins within the smallest radius, kept when
    enough of its class sphere is particle and no better peak lies within that radius
    (or within the better peak's own radius), nor one of the same class within
    ``same_class_suppression`` radii;
    centre = the probability-weighted centroid within half its radius, score = the
    mean particle probability within it."""
    radius_array = np.asarray(radii, dtype=np.float64)
    vote_radii = feature_radii(np.arange(len(radii)), radii)
    zyx, _ = peak_candidates(segmentation.foreground, float(radius_array.min()), threshold)
    foreground = segmentation.foreground
    reach = int(math.ceil(radius_array.max()))
    neighbourhood = _Neighbourhood(foreground.shape, reach)
    # no peak suppresses beyond the largest radius times the same-class factor
    kept = _KeptPeaks(max(suppression_reach(radii, same_class_suppression), 1))
    found = []
    for peak in zyx:
        distances, kept_radii, kept_classes = kept.near(peak)
        if (distances < kept_radii).any():  # inside a better peak's particle
            continue
        box, near, corner = neighbourhood.around(peak)
        probability = foreground[box].astype(np.float32).ravel()
        labels = segmentation.labels[box].ravel()
        scores = segmentation.scores[box].astype(np.float64).ravel() * (probability > threshold)
        # a first guess from the smallest core, then the vote over the guess's core
        guess = _vote(labels, scores, near <= vote_radii.min(), len(radii))
        klass = _vote(labels, scores, near <= vote_radii[guess], len(radii))
        radius = float(radius_array[klass])
        same_class = kept_classes == klass
        if ((distances < radius).any()
                or (same_class & (distances < same_class_suppression * radius)).any()):
            continue
        sphere = near <= radius
        particle = sphere & (probability > threshold)
        if particle.sum() < min_size_fraction * 4.0 / 3.0 * math.pi * radius**3:
            continue
        core = particle & (near <= max(radius / 2, 1.0))
        weights = probability[core].astype(np.float64)
        points = np.stack(np.unravel_index(np.flatnonzero(core),
                                           tuple(s.stop - s.start for s in box)), axis=1)
        centre = ((points + corner) * weights[:, None]).sum(axis=0) / weights.sum()
        kept.add(peak, radius, klass)
        found.append((klass, centre, float(probability[particle].mean())))
    return found


def extract_particles(
    segmentation: Segmentation,
    class_names: Sequence[str],
    radii: Sequence[float],
    min_size_fraction: float = MIN_SIZE_FRACTION,
    min_score: float | Sequence[float] = 0.0,
    components: ComponentMode = DEFAULT_COMPONENTS,
    foreground_threshold: float = FOREGROUND_THRESHOLD,
    same_class_suppression: float = SAME_CLASS_SUPPRESSION,
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
        foreground_threshold: with ``foreground`` or ``peaks``, the particle
            probability a voxel must exceed.
        same_class_suppression: with ``peaks``, a peak closer than this many class
            radii to a better peak of the same class is dropped (at least 1).

    Returns:
        Centres in voxels ``(x, y, z)`` with class and score, sorted by class then
        descending score.
    """
    if components not in COMPONENT_MODES:
        raise ValueError(f"components {components!r}: choose one of {COMPONENT_MODES}")
    cut = np.broadcast_to(np.asarray(min_score, dtype=np.float64), (len(class_names),))
    if same_class_suppression < 1.0:
        raise ValueError(f"same_class_suppression {same_class_suppression}: at least 1 "
                         "(a peak within one radius of a better one is always dropped)")
    if components == "argmax":
        particles = _argmax_particles(segmentation, radii, min_size_fraction)
    elif components == "foreground":
        particles = _foreground_particles(segmentation, radii, min_size_fraction,
                                          foreground_threshold)
    else:
        particles = _peak_particles(segmentation, radii, min_size_fraction,
                                    foreground_threshold, same_class_suppression)
    found = [(index, centre, score) for index, centre, score in particles
             if score >= cut[index]]
    found.sort(key=lambda item: (item[0], -item[2]))
    if not found:
        return ParticleTable.empty(scored=True)
    return ParticleTable(np.array([centre[::-1] for _, centre, _ in found]),
                         np.array([class_names[index] for index, _, _ in found], dtype=object),
                         np.array([score for _, _, score in found]))


def suppression_reach(radii: Sequence[float],
                      same_class_suppression: float = SAME_CLASS_SUPPRESSION) -> int:
    """Voxels (rounded up) within which a kept peak can suppress another: the largest
    radius times ``same_class_suppression``."""
    return int(math.ceil(same_class_suppression * max(radii)))


def extraction_reach(radii: Sequence[float],
                     same_class_suppression: float = SAME_CLASS_SUPPRESSION) -> int:
    """Voxels beyond a particle voxel that any component mode of
    :func:`extract_particles` reads or compares with: the peak search's reach, plus the
    farthest a peak looks (class votes, sphere fill and fragment merging within the
    largest radius, suppression by a better peak within :func:`suppression_reach`),
    plus the one-voxel gap a peak may keep from a particle voxel."""
    return (peak_search_reach(float(min(radii)))
            + suppression_reach(radii, same_class_suppression) + 1)


def isolated_boxes(boxes: Sequence[Box], margin: int, shape_zyx: Sequence[int]) -> list[Box]:
    """``boxes`` (voxels ``(z, y, x)``) grown by ``margin`` on every side, clipped to a
    volume of ``shape_zyx``, and merged (into their bounding box) until no two overlap."""
    merged = [[[max(lo - margin, 0), min(hi + margin, n)] for (lo, hi), n in zip(box, shape_zyx)]
              for box in boxes]
    changed = True
    while changed:
        changed = False
        for i in range(len(merged)):
            for j in range(len(merged) - 1, i, -1):
                if all(a[0] < b[1] and b[0] < a[1] for a, b in zip(merged[i], merged[j])):
                    merged[i] = [[min(a[0], b[0]), max(a[1], b[1])]
                                 for a, b in zip(merged[i], merged.pop(j))]
                    changed = True
    return [((z[0], z[1]), (y[0], y[1]), (x[0], x[1])) for z, y, x in merged]


def extract_particles_in(segmentation: Segmentation, regions: Sequence[Box],
                         class_names: Sequence[str], radii: Sequence[float],
                         **options) -> ParticleTable:
    """:func:`extract_particles` (``options`` are its keywords) of a segmentation that
    is background (label 0, probabilities 0) outside ``regions`` (voxels ``(z, y, x)``,
    as ``inference.segment_tiled`` leaves it), post-processing only the crops around
    them: each group of regions within reach of each other (:func:`isolated_boxes`,
    :func:`extraction_reach`) is one crop, and nothing in one crop reaches another.
    The result is the whole volume's, in far less time when the regions cover a small
    part of a large tomogram."""
    tables = []
    reach = extraction_reach(radii, options.get("same_class_suppression",
                                                SAME_CLASS_SUPPRESSION))
    for box in isolated_boxes(regions, reach, segmentation.labels.shape):
        crop = tuple(slice(lo, hi) for lo, hi in box)
        table = extract_particles(Segmentation(segmentation.labels[crop],
                                               segmentation.scores[crop],
                                               segmentation.foreground[crop]),
                                  class_names, radii, **options)
        table.xyz = table.xyz + np.array([lo for lo, _ in box[::-1]], dtype=np.float64)
        tables.append(table)
    if not tables:
        return ParticleTable.empty(scored=True)
    order = np.lexsort((-np.concatenate([t.scores for t in tables]),
                        np.concatenate([[class_names.index(c) for c in t.classes]
                                        for t in tables]).astype(int)))
    return ParticleTable(np.concatenate([t.xyz for t in tables])[order],
                         np.concatenate([t.classes for t in tables])[order],
                         np.concatenate([t.scores for t in tables])[order])
