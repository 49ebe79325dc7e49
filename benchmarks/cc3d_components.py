"""cc3d multi-label components against the per-class passes of ``argmax`` picking.

``postprocess._argmax_particles`` (the paper's components) ran one binary
``cc3d.connected_components`` per class (a mask, a labelling and a scan of the whole
volume each) and computed sizes and centroids with ``numpy.bincount``
(``postprocess._Components.of``); it now labels every class at once (cc3d's
multi-label mode: voxels join only neighbours of the same value) and takes sizes
and centroids from ``cc3d.statistics`` (``_Components.per_label``), then hands each
class's components to the same fragment merging and splitting. This script keeps
the per-class version (``per_class_particles``) and times both, and the component
stage alone, on a synthetic argmax map like a network's: ``--blobs`` particles
(balls of radius 3 to 12 voxels) of ``--classes`` classes in a ``--shape`` volume,
each with a few voxels of another class and a fifth split between two classes,
plus speckle of isolated voxels; scores uniform in [0.3, 1) as float16.

Every variant runs ``--repeats`` times, the variants taking turns (after one
warm-up run each), and the two must give the same particles (classes, centres,
scores, in the same order) and the same components (voxel ids, voxels, sizes,
centroids) bit for bit; the script prints the best and median times side by side
and exits with status 1 if anything differs.

Usage: python benchmarks/cc3d_components.py [--shape 64,192,192] [--classes 12]
       [--blobs 300] [--repeats 5] [--seed 0]
"""

from __future__ import annotations

import argparse
import statistics as stats
import time
from importlib.metadata import version

import numpy as np
from conv_floor import cpu_model

from sasi_scipion.engine.postprocess import (
    MIN_SIZE_FRACTION,
    Segmentation,
    _argmax_particles,
    _Components,
    class_particles,
)

Particle = tuple[int, np.ndarray, float]


def synthetic_segmentation(shape: tuple[int, int, int], classes: int, blobs: int,
                           seed: int) -> tuple[Segmentation, list[float]]:
    """An argmax map with ``blobs`` particles of ``classes`` classes, and the radii."""
    rng = np.random.default_rng(seed)
    radii = [float(r) for r in rng.uniform(3.0, 12.0, size=classes).round(1)]
    labels = np.zeros(shape, dtype=np.uint8)
    for _ in range(blobs):
        klass = int(rng.integers(classes))
        radius = radii[klass] * rng.uniform(0.8, 1.1)
        centre = rng.uniform(0, shape)
        box = tuple(slice(max(int(c - radius), 0), min(int(c + radius) + 2, n))
                    for c, n in zip(centre, shape))
        zz, yy, xx = np.ogrid[box]
        ball = (zz - centre[0]) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2 \
            < radius ** 2
        view = labels[box]
        view[ball] = klass + 1
        if rng.random() < 0.2:  # a particle split between two classes
            view[ball & (zz > centre[0])] = (klass + 1) % classes + 1
        noisy = ball & (rng.random(ball.shape) < 0.03)  # a few voxels of another class
        view[noisy] = rng.integers(1, classes + 1, size=int(noisy.sum()))
    speckle = rng.random(shape) < 0.001
    labels[speckle] = rng.integers(1, classes + 1, size=int(speckle.sum()))
    scores = rng.uniform(0.3, 1.0, size=shape).astype(np.float16)
    return Segmentation(labels, scores, np.zeros(shape, np.float16)), radii


def per_class_particles(segmentation: Segmentation, radii: list[float],
                        min_size_fraction: float) -> list[Particle]:
    """``_argmax_particles`` as it was before the switch: one binary pass per class."""
    return [particle for index, radius in enumerate(radii)
            for particle in class_particles(segmentation, index, radius,
                                            _Components.of(segmentation.labels == index + 1),
                                            min_size_fraction)]


def per_class_components(segmentation: Segmentation, classes: int) -> list[_Components]:
    """The component stage alone, per class: a mask and a binary pass per class, sizes
    and centroids by ``numpy.bincount`` (``_Components.of``)."""
    return [_Components.of(segmentation.labels == value) for value in range(1, classes + 1)]


def multilabel_components(segmentation: Segmentation, classes: int) -> list[_Components]:
    """The component stage alone, multi-label (``_Components.per_label``)."""
    return _Components.per_label(segmentation.labels, classes)


def same_components(a: list[_Components], b: list[_Components]) -> bool:
    return len(a) == len(b) and all(
        x.count == y.count and all(np.array_equal(getattr(x, f), getattr(y, f))
                                   for f in ("ids", "coords", "sizes", "centroids"))
        for x, y in zip(a, b))


def same(a: list[Particle], b: list[Particle]) -> bool:
    return len(a) == len(b) and all(
        ca == cb and np.array_equal(pa, pb) and sa == sb
        for (ca, pa, sa), (cb, pb, sb) in zip(a, b))


def timed(functions: dict, repeats: int) -> tuple[dict[str, list[float]], dict]:
    """Seconds of each function per repeat, and its result (from a warm-up run).
    The functions take turns within each repeat, so that a load that comes and goes
    on the machine weighs on all of them alike."""
    results = {name: function() for name, function in functions.items()}
    seconds: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            seconds[name].append(time.perf_counter() - start)
    return seconds, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="64,192,192")
    parser.add_argument("--classes", type=int, default=12)
    parser.add_argument("--blobs", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    shape = tuple(int(v) for v in args.shape.split(","))
    segmentation, radii = synthetic_segmentation(shape, args.classes, args.blobs, args.seed)
    names = ("argmax particles, per-class passes",
             "argmax particles, multi-label + statistics",
             "components only, per-class passes",
             "components only, multi-label + statistics")
    seconds, results = timed({
        names[0]: lambda: per_class_particles(segmentation, radii, MIN_SIZE_FRACTION),
        names[1]: lambda: _argmax_particles(segmentation, radii, MIN_SIZE_FRACTION),
        names[2]: lambda: per_class_components(segmentation, args.classes),
        names[3]: lambda: multilabel_components(segmentation, args.classes)}, args.repeats)
    current = results[names[0]]
    identical = (same(current, results[names[1]])
                 and same_components(results[names[2]], results[names[3]]))
    print(f"cpu: {cpu_model()}; cc3d {version('connected-components-3d')}; numpy "
          f"{np.__version__}; segmentation {shape} (z, y, x), "
          f"{args.classes} classes, {args.blobs} blobs, "
          f"{int((segmentation.labels > 0).sum())} particle voxels; "
          f"{len(current)} particles")
    print(f"{'variant':<46}{'best s':>9}{'median s':>10}")
    for name in names:
        print(f"{name:<46}{min(seconds[name]):>9.3f}{stats.median(seconds[name]):>10.3f}")
    print(f"identical particles and components (ids, voxels, sizes, centroids): {identical}")
    if not identical:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
