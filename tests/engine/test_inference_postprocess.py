"""Tiled inference against the whole-volume pass and the paper's sliding window;
connected-component post-processing on planted blobs."""

from __future__ import annotations

import copy
import errno
import math
import os
import tempfile

import numpy as np
import pytest
import torch

from sasi_scipion.engine import postprocess
from sasi_scipion.engine.calibration import feature_radii
from sasi_scipion.engine.coordinates import ParticleTable
from sasi_scipion.engine.errors import SasiInputError
from sasi_scipion.engine.inference import (
    DECODE_SHARE,
    _prepare,
    plan_tiles,
    resolve_precision,
    segment_sliding,
    segment_tiled,
    segmented_boxes,
    split_box,
)
from sasi_scipion.engine.masks import sphere_label_volume
from sasi_scipion.engine.models.deepfinder import DeepFinderUNet
from sasi_scipion.engine.normalize import NormalisedVolume, normalisation_stats, normalise
from sasi_scipion.engine.postprocess import (
    COMPONENT_MODES,
    SAME_CLASS_SUPPRESSION,
    Segmentation,
    _peak_particles,
    extract_particles,
    extract_particles_in,
    extraction_reach,
    isolated_boxes,
    peak_candidates,
)
from sasi_scipion.engine.progress import ProgressLog
from sasi_scipion.engine.training import SaSiTrainer, TrainingSettings
from sasi_scipion.engine.training_data import TrainingData

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def small_net() -> DeepFinderUNet:
    """A narrow DeepFinder net (same receptive field as the default width)."""
    torch.manual_seed(0)
    return DeepFinderUNet(3, width=8).eval()


def _whole_volume_probs(net: DeepFinderUNet, volume: np.ndarray) -> np.ndarray:
    padded = np.zeros([-(-n // 4) * 4 for n in volume.shape], np.float32)
    padded[: volume.shape[0], : volume.shape[1], : volume.shape[2]] = volume
    with torch.no_grad():
        probs = torch.softmax(net(torch.from_numpy(padded)[None, None]), 1)[0].numpy()
    return probs[:, : volume.shape[0], : volume.shape[1], : volume.shape[2]]


@pytest.mark.parametrize("budget, tiles, decoded_in_parts", [(400_000, 8, False),
                                                               (600_000, 2, True),
                                                               (40 * 152 * 132, 1, True)])
def test_tiled_inference_equals_one_whole_volume_pass(small_net, budget, tiles,
                                                      decoded_in_parts) -> None:
    volume = np.random.default_rng(0).normal(size=(37, 150, 131)).astype(np.float32)
    plan = plan_tiles(volume.shape, 32, 4, budget)
    assert len(plan) == tiles
    parts = [split_box(tuple((c.start, c.stop) for c in cores), budget // DECODE_SHARE, 4)
             for _, cores in plan]
    assert (max(len(p) for p in parts) > 1) == decoded_in_parts
    seg = segment_tiled(small_net, volume, CPU, max_tile_voxels=budget, precision="fp32")
    probs = _whole_volume_probs(small_net, volume)
    assert seg.labels.shape == volume.shape and seg.labels.dtype == np.uint8
    assert seg.scores.dtype == np.float16
    # float16 storage of the score bounds the difference (about 5e-4 near 1).
    assert np.abs(seg.scores.astype(np.float32) - probs.max(0)).max() < 1e-3
    best = np.sort(probs, axis=0)
    decided = (best[-1] - best[-2]) > 1e-4  # argmax ties may flip with rounding
    assert np.array_equal(seg.labels[decided], probs.argmax(0)[decided])


@pytest.mark.parametrize("region", [((8, 24), (12, 40), (32, 64)),  # interior
                                    ((0, 4), (48, 52), (20, 24)),  # touching faces
                                    ((36, 40), (0, 8), (0, 64))])
def test_region_logits_equal_the_whole_pass_cropped(small_net, region) -> None:
    """The decoder runs on the region only, yet every kept voxel gets the
    whole pass's logits (widening too little would change voxels at its faces)."""
    x = torch.from_numpy(np.random.default_rng(1).normal(size=(1, 1, 40, 52, 64))
                         .astype(np.float32))
    with torch.no_grad():
        whole = small_net(x)[(..., *(slice(lo, hi) for lo, hi in region))]
        part = small_net.decode_region(small_net.features(x), region)
    assert part.shape == whole.shape
    assert torch.allclose(part, whole, atol=1e-5, rtol=0)


def test_bf16_net_gives_the_autocast_results(small_net) -> None:
    """The DeepFinder net runs in bf16 as a whole instead of under autocast: the
    same labels, and scores equal to bf16 rounding (the copy folds its
    up-sampling kernels from bf16 weights, autocast from fp32 ones)."""
    volume = np.random.default_rng(2).normal(size=(40, 64, 72)).astype(np.float32)
    whole_bf16 = segment_tiled(small_net, volume, CPU, precision="bf16")
    autocast_net = copy.deepcopy(small_net)
    autocast_net.autocast_free = False
    autocast = segment_tiled(autocast_net, volume, CPU, precision="bf16")
    fp32 = segment_tiled(small_net, volume, CPU, precision="fp32")
    assert next(small_net.parameters()).dtype == torch.float32  # the caller's net is kept
    assert next(_prepare(small_net, CPU, "bf16").parameters()).dtype == torch.bfloat16
    assert next(_prepare(autocast_net, CPU, "bf16").parameters()).dtype == torch.float32
    assert np.array_equal(whole_bf16.labels, autocast.labels)
    assert np.abs(whole_bf16.scores.astype(np.float32) - autocast.scores).max() <= 1e-3
    assert not np.array_equal(whole_bf16.scores, fp32.scores)  # bf16 really ran


@pytest.mark.parametrize("box, max_voxels", [(((0, 40), (8, 160), (4, 132)), 100_000),
                                             (((4, 20), (0, 8), (0, 8)), 10_000),
                                             (((0, 36), (0, 36), (0, 37)), 5_000)])
def test_split_box_covers_the_box_in_grid_aligned_parts(box, max_voxels) -> None:
    parts = split_box(box, max_voxels, 4)
    covered = np.zeros([hi for _, hi in box], dtype=int)
    for part in parts:
        covered[tuple(slice(lo, hi) for lo, hi in part)] += 1
        assert all((lo - b[0]) % 4 == 0 for (lo, _), b in zip(part, box))
        assert math.prod(hi - lo for lo, hi in part) <= max(max_voxels, 4 * 36 * 37)
    inside = tuple(slice(lo, hi) for lo, hi in box)
    assert covered[inside].min() == 1 and covered.sum() == covered[inside].size


def test_tiles_cover_every_voxel_once_within_the_budget() -> None:
    for shape in [(200, 512, 512), (64, 100, 90), (20, 20, 20)]:
        budget = 2_000_000
        tiles = plan_tiles(shape, 32, 4, budget)
        cover = np.zeros([-(-n // 4) * 4 for n in shape], np.uint8)
        for inputs, cores in tiles:
            assert math.prod(s.stop - s.start for s in inputs) <= max(budget, 96**3)
            assert all(s.start % 4 == 0 for s in inputs)
            assert all(i.start <= c.start and c.stop <= i.stop for i, c in zip(inputs, cores))
            cover[cores] += 1
        assert (cover == 1).all()


@pytest.fixture(scope="module")
def trained_net() -> DeepFinderUNet:
    """A narrow net trained for 60 steps to find bright and dark blobs: decisive,
    unlike an untrained net whose output barely depends on its input."""
    rng = np.random.default_rng(0)
    shape = (40, 72, 72)
    particles = ParticleTable(np.column_stack([rng.integers(8, 64, 12), rng.integers(8, 64, 12),
                                               rng.integers(8, 32, 12)]), ["a"] * 6 + ["b"] * 6)
    labels = sphere_label_volume(shape, particles, ["a", "b"], [4, 3])
    volume = (rng.normal(size=shape) - 1.5 * (labels == 1) + 1.5 * (labels == 2)).astype(
        np.float32)
    data = TrainingData([volume], [labels], [particles], ["a", "b"], [4, 3], 10.0)
    settings = TrainingSettings(iterations=60, ssl="none", consistency=False, infill=False,
                                batch_size=8, learning_rate=3e-3)
    torch.manual_seed(0)
    net = DeepFinderUNet(3, width=8)
    with ProgressLog(settings.iterations, "fixture", None) as progress:
        SaSiTrainer(net, data, [volume], settings, CPU).run(progress)
    return net.eval()


def test_tiled_and_sliding_agree_on_a_random_volume(trained_net) -> None:
    """Stated tolerance: the paper's windows see zero padding at their faces,
    the tiled pass does not; the argmax agrees on at least 98 % of the voxels
    and the winning probability differs by less than 0.03 on average."""
    volume = np.random.default_rng(1).normal(size=(40, 72, 72)).astype(np.float32)
    volume[10:18, 20:28, 20:28] -= 1.5  # one dark blob besides the noise
    tiled = segment_tiled(trained_net, volume, CPU, precision="fp32")
    sliding = segment_sliding(trained_net, volume, CPU, window=24, stride=12, precision="fp32")
    assert (tiled.labels > 0).sum() > 50  # the net does find something
    assert (tiled.labels == sliding.labels).mean() > 0.98
    assert np.abs(tiled.scores.astype(np.float32) - sliding.scores.astype(np.float32)).mean() \
        < 0.03


def test_precision_choices() -> None:
    assert resolve_precision("fp32", CPU) == "fp32"
    assert resolve_precision("auto", torch.device("cuda")) == "fp16"
    assert resolve_precision("auto", CPU) in ("bf16", "fp32")
    with pytest.raises(ValueError, match="fp64"):
        resolve_precision("fp64", CPU)


def _segmentation_of(labels: np.ndarray) -> Segmentation:
    """Particle voxels at probability 0.8 (of their class, and of not being
    background), background voxels at 0.9 background."""
    particle = labels > 0
    return Segmentation(labels, np.where(particle, 0.8, 0.9).astype(np.float16),
                        np.where(particle, 0.8, 0.1).astype(np.float16))


def _segmentation(particles: ParticleTable, radii: list[float],
                  shape: tuple[int, int, int] = (40, 60, 60)) -> Segmentation:
    return _segmentation_of(sphere_label_volume(shape, particles, ["a", "b"], radii))


@pytest.mark.parametrize("components", COMPONENT_MODES)
def test_components_give_exact_centroids_and_scores(components) -> None:
    truth = ParticleTable([[10, 12, 8], [40, 30, 20], [25, 45, 30]], ["a", "a", "b"])
    picks = extract_particles(_segmentation(truth, [4, 5]), ["a", "b"], [4, 5],
                              components=components)
    assert len(picks) == 3
    order = np.lexsort(picks.xyz.T[::-1])
    expected = np.lexsort(truth.xyz.T[::-1])
    assert np.allclose(picks.xyz[order], truth.xyz[expected], atol=1e-9)
    assert list(picks.classes[order]) == list(truth.classes[expected])
    assert np.allclose(picks.scores, 0.8, atol=1e-3)


@pytest.mark.parametrize("components", COMPONENT_MODES)
def test_small_components_are_dropped_and_min_score_applies(components) -> None:
    labels = _segmentation(ParticleTable([[20, 20, 20]], ["a"]), [4, 5]).labels
    labels[5, 5, 5] = 1  # a one-voxel speck of class a
    labels[30:32, 50:52, 50:52] = 2  # 8 voxels: far below a quarter of a radius-5 sphere
    seg = _segmentation_of(labels)
    picks = extract_particles(seg, ["a", "b"], [4, 5], components=components)
    assert len(picks) == 1 and np.allclose(picks.xyz[0], [20, 20, 20])
    assert len(extract_particles(seg, ["a", "b"], [4, 5], min_score=0.85,
                                 components=components)) == 0
    # one cut-off per class: class a's particle stays when only class b's cut-off is high
    assert len(extract_particles(seg, ["a", "b"], [4, 5], min_score=[0.5, 0.85],
                                 components=components)) == 1


@pytest.mark.parametrize("components", COMPONENT_MODES)
def test_touching_particles_are_split_and_fragments_merged(components) -> None:
    # 10 apart, radius 5: the spheres share a voxel. (Closer, one class's peaks are
    # within SAME_CLASS_SUPPRESSION radii: see the test of that rule.)
    touching = ParticleTable([[20, 30, 20], [30, 30, 20]], ["a", "a"])
    picks = extract_particles(_segmentation(touching, [5, 5]), ["a", "b"], [5, 5],
                              components=components)
    assert len(picks) == 2
    found = np.sort(picks.xyz[:, 0])
    assert np.allclose(found, [20, 30], atol=1.0)

    labels = _segmentation(ParticleTable([[30, 30, 20]], ["a"]), [5, 5]).labels
    labels[20, 30, 30] = 0  # cut the sphere in two 26-disconnected halves
    labels[20, 29:32, 29:32] = 0
    labels[20] = 0
    picks = extract_particles(_segmentation_of(labels), ["a", "b"], [5, 5],
                              components=components)
    assert len(picks) == 1
    # components merge the halves' centroids; a peak sits in one half, its centre
    # the centroid of what lies within half a radius of it
    assert np.allclose(picks.xyz[0], [30, 30, 20], atol=0.5 if components != "peaks" else 2.5)


def test_a_particle_split_between_two_classes_is_one_pick_of_the_majority_class() -> None:
    """Argmax components cut a particle whose voxels lean to two classes into two
    picks; foreground components and peaks keep one, of the class with the larger
    summed probability."""
    labels = _segmentation(ParticleTable([[30, 30, 20]], ["a"]), [6, 6]).labels
    labels[(labels > 0) & (np.arange(60)[None, None, :] >= 31)] = 2  # x >= 31 leans to b
    seg = _segmentation_of(labels)
    split = extract_particles(seg, ["a", "b"], [6, 6], components="argmax")
    assert sorted(split.classes) == ["a", "b"]
    for components in ("foreground", "peaks"):
        whole = extract_particles(seg, ["a", "b"], [6, 6], components=components)
        assert list(whole.classes) == ["a"]
        assert np.allclose(whole.xyz[0], [30, 30, 20], atol=0.5)


def test_peaks_separate_a_row_of_touching_particles_of_two_sizes() -> None:
    """Five touching spheres in one component: k-means is not needed, each centre is
    found within a voxel, each with its own class."""
    truth = ParticleTable([[10, 30, 20], [19, 30, 20], [28, 30, 20], [39, 30, 20],
                           [50, 30, 20]], ["a", "a", "a", "b", "b"])
    seg = _segmentation(truth, [4.5, 6])
    picks = extract_particles(seg, ["a", "b"], [4.5, 6], components="peaks")
    order = np.argsort(picks.xyz[:, 0])
    assert len(picks) == 5
    assert np.allclose(picks.xyz[order], truth.xyz, atol=1.0)
    assert list(picks.classes[order]) == list(truth.classes)


def _two_peaked_particles(centres_x: list[float], labels_of: list[int], radius: float,
                          shape: tuple[int, int, int] = (30, 30, 50)) -> Segmentation:
    """Overlapping spheres of ``radius`` on the line ``y = z = 15`` (centres at
    ``centres_x``), each voxel labelled ``labels_of`` its nearest centre, the particle
    probability falling from 0.95 at each centre to 0.55 at its sphere's surface: one
    maximum per sphere."""
    z, y, x = np.indices(shape).astype(np.float64)
    distances = np.stack([np.sqrt((x - cx) ** 2 + (y - 15) ** 2 + (z - 15) ** 2)
                          for cx in centres_x])
    nearest = distances.argmin(axis=0)
    inside = distances.min(axis=0) <= radius
    labels = np.where(inside, np.asarray(labels_of)[nearest], 0).astype(np.uint8)
    probability = np.where(inside, 0.95 - 0.4 * distances.min(axis=0) / radius, 0.05)
    return Segmentation(labels, probability.astype(np.float16), probability.astype(np.float16))


@pytest.mark.parametrize(("apart", "labels_of", "expected"), [
    (9.0, [2, 2], ["b"]),  # one class, maxima 7 apart (1.17 radii): one elongated particle
    (12.0, [2, 2], ["b", "b"]),  # 2 radii, touching: maxima 12 apart, two particles
    (9.0, [1, 2], ["a", "b"]),  # two classes, maxima 7 apart: two touching particles
])
def test_peaks_of_one_class_within_the_suppression_distance_are_one_particle(
        apart: float, labels_of: list[int], expected: list[str]) -> None:
    """A second maximum closer than ``SAME_CLASS_SUPPRESSION`` radii to a better one of
    the same class is the same particle; of another class, a touching particle. (The
    smoothed maxima of overlapping spheres drift towards each other: 9 apart, they
    lie 7 apart, beyond one radius and within 1.5.)"""
    radius = 6.0
    assert radius < 7.0 < SAME_CLASS_SUPPRESSION * radius < 12.0
    seg = _two_peaked_particles([20.0, 20.0 + apart], labels_of, radius)
    picks = extract_particles(seg, ["a", "b"], [radius, radius], components="peaks")
    order = np.argsort(picks.xyz[:, 0])
    assert list(picks.classes[order]) == expected
    if len(expected) == 2:
        assert np.allclose(picks.xyz[order, 0], [20.0, 20.0 + apart], atol=1.0)
    else:
        assert 19.0 <= picks.xyz[0, 0] <= 21.0 + apart


def test_same_class_suppression_is_a_keyword_of_at_least_one_radius() -> None:
    """At one radius (the rule before 2026-12-03) the elongated particle of the test
    above is two picks; under one radius is refused, naming the bound."""
    seg = _two_peaked_particles([20.0, 29.0], [2, 2], 6.0)
    picks = extract_particles(seg, ["a", "b"], [6.0, 6.0], components="peaks",
                              same_class_suppression=1.0)
    assert list(picks.classes) == ["b", "b"]
    with pytest.raises(ValueError, match="at least 1"):
        extract_particles(seg, ["a", "b"], [6.0, 6.0], same_class_suppression=0.5)


@pytest.mark.parametrize("planes", [1, 12, 25])
def test_peak_search_in_slabs_gives_the_whole_volume_result(planes: int) -> None:
    """The peak search of a large tomogram runs in z slabs with halos: slabs of
    ``planes`` planes (one plane: more halo than core) find the same peaks, in the same
    order, with the same heights, as one pass over the whole volume."""
    rng = np.random.default_rng(3)
    truth = ParticleTable(rng.uniform(4, 44, (40, 3)), ["a"] * 40)
    foreground = sphere_label_volume((40, 48, 48), truth, ["a"], [3.5]) > 0
    foreground = (0.8 * foreground + 0.3 * rng.random((40, 48, 48))).astype(np.float16)
    whole = peak_candidates(foreground, 3.5, 0.5, slab_voxels=foreground.size)
    slabs = peak_candidates(foreground, 3.5, 0.5, slab_voxels=planes * 48 * 48)
    assert len(whole[0]) > 20
    assert np.array_equal(slabs[0], whole[0])
    assert np.array_equal(slabs[1], whole[1])


def _peaks_scanning_every_voxel_and_kept_peak(segmentation: Segmentation, radii: list[float],
                                             min_size_fraction: float, threshold: float
                                             ) -> list[tuple[int, np.ndarray, float]]:
    """The peak particles as the engine found them before it sliced each peak's
    neighbourhood and bucketed the kept peaks: every cube voxel indexed by its
    coordinates, every candidate measured against every kept peak."""
    radius_array = np.asarray(radii, dtype=np.float64)
    vote_radii = feature_radii(np.arange(len(radii)), radii)
    zyx, _ = peak_candidates(segmentation.foreground, float(radius_array.min()), threshold)
    foreground = segmentation.foreground
    shape = np.array(foreground.shape)
    reach = int(math.ceil(radius_array.max()))
    offsets = np.stack(np.meshgrid(*[np.arange(-reach, reach + 1)] * 3, indexing="ij"),
                       axis=-1).reshape(-1, 3)
    distances = np.sqrt((offsets**2).sum(axis=1))
    kept_centres: list[np.ndarray] = []
    kept_radii: list[float] = []
    kept_classes: list[int] = []
    found = []

    def vote(labels, scores, chosen) -> int:
        return int(np.argmax(np.bincount(labels[chosen], weights=scores[chosen],
                                         minlength=len(radii) + 1)[1:]))

    for peak in zyx:
        points = peak + offsets
        inside = ((points >= 0) & (points < shape)).all(axis=1)
        points, near = points[inside], distances[inside]
        index = tuple(points.T)
        probability = foreground[index].astype(np.float32)
        labels = segmentation.labels[index]
        scores = segmentation.scores[index].astype(np.float64) * (probability > threshold)
        guess = vote(labels, scores, near <= vote_radii.min())
        klass = vote(labels, scores, near <= vote_radii[guess])
        radius = float(radius_array[klass])
        if kept_centres:
            apart = np.linalg.norm(np.array(kept_centres) - peak, axis=1)
            same = np.array(kept_classes) == klass
            if ((apart < np.maximum(np.array(kept_radii), radius)).any()
                    or (same & (apart < SAME_CLASS_SUPPRESSION * radius)).any()):
                continue
        sphere = near <= radius
        particle = sphere & (probability > threshold)
        if particle.sum() < min_size_fraction * 4.0 / 3.0 * math.pi * radius**3:
            continue
        core = particle & (near <= max(radius / 2, 1.0))
        weights = probability[core].astype(np.float64)
        centre = (points[core] * weights[:, None]).sum(axis=0) / weights.sum()
        kept_centres.append(peak.astype(np.float64))
        kept_radii.append(radius)
        kept_classes.append(klass)
        found.append((klass, centre, float(probability[particle].mean())))
    return found


@pytest.mark.parametrize("seed", [0, 1])
def test_peak_particles_match_the_scan_of_every_voxel_and_kept_peak(seed: int) -> None:
    """Slicing each peak's neighbourhood and bucketing the kept peaks in cells change
    nothing: on a crowded, noisy segmentation of three classes with particles cut by
    the volume's faces, the same particles (classes, centres, scores) in the same
    order, bit for bit."""
    rng = np.random.default_rng(seed)
    shape = (36, 50, 44)
    radii = [3.0, 4.5, 6.5]
    truth = ParticleTable(rng.uniform(-2, 50, (70, 3)) * [44 / 50, 1, 36 / 50],
                          rng.choice(["a", "b", "c"], 70))
    labels = sphere_label_volume(shape, truth, ["a", "b", "c"], radii)
    speckle = rng.random(shape) < 0.02  # isolated voxels of random classes
    labels[speckle] = rng.integers(1, 4, int(speckle.sum()))
    foreground = np.clip((labels > 0) * 0.7 + 0.4 * rng.random(shape), 0, 1)
    segmentation = Segmentation(labels.astype(np.uint8), foreground.astype(np.float16),
                                (0.5 + 0.5 * rng.random(shape)).astype(np.float16))
    expected = _peaks_scanning_every_voxel_and_kept_peak(segmentation, radii, 0.25, 0.5)
    found = _peak_particles(segmentation, radii, 0.25, 0.5)
    assert len(expected) > 30 and len({c for c, _, _ in expected}) == 3
    assert [c for c, _, _ in found] == [c for c, _, _ in expected]
    assert np.array_equal(np.array([p for _, p, _ in found]),
                          np.array([p for _, p, _ in expected]))
    assert [s for _, _, s in found] == [s for _, _, s in expected]


def test_isolated_boxes_grow_clip_and_merge_chains_of_overlaps() -> None:
    """A meets B once both grow by 2, B meets C, D stays alone; growth stops at the faces."""
    a, b = ((0, 4), (0, 4), (0, 4)), ((0, 4), (0, 4), (7, 10))
    c, d = ((0, 4), (6, 9), (12, 15)), ((10, 12), (20, 22), (0, 2))
    merged = isolated_boxes([a, d, c, b], 2, (12, 30, 30))
    assert sorted(merged) == [((0, 6), (0, 11), (0, 17)), ((8, 12), (18, 24), (0, 4))]
    assert isolated_boxes([], 2, (12, 30, 30)) == []


@pytest.mark.parametrize("components", COMPONENT_MODES)
def test_particles_in_regions_equal_the_whole_volume_ones(components) -> None:
    """A crowded, noisy segmentation of three classes that is background outside four
    regions (cutting particles, two of them touching, one at a face):
    post-processing only the regions' crops gives the whole volume's particles
    (classes and scores bit for bit, centres to float rounding: a crop's centroids are
    taken in its own voxels) in the same order, in every component mode."""
    rng = np.random.default_rng(3)
    shape = (36, 60, 175)
    radii = [3.0, 4.5, 6.5]
    truth = ParticleTable(rng.uniform(0, 1, (280, 3)) * [175, 60, 36],
                          rng.choice(["a", "b", "c"], 280))
    labels = sphere_label_volume(shape, truth, ["a", "b", "c"], radii)
    speckle = rng.random(shape) < 0.02
    labels[speckle] = rng.integers(1, 4, int(speckle.sum()))
    foreground = np.clip((labels > 0) * 0.7 + 0.4 * rng.random(shape), 0, 1)
    scores = 0.5 + 0.5 * rng.random(shape)
    regions = [((0, 14), (5, 25), (3, 22)), ((10, 30), (8, 28), (22, 40)),
               ((20, 36), (40, 60), (140, 175)), ((4, 18), (40, 55), (80, 95))]
    inside = np.zeros(shape, dtype=bool)
    for box in regions:
        inside[tuple(slice(lo, hi) for lo, hi in box)] = True
    segmentation = Segmentation(np.where(inside, labels, 0).astype(np.uint8),
                                np.where(inside, scores, 0).astype(np.float16),
                                np.where(inside, foreground, 0).astype(np.float16))
    names = ["a", "b", "c"]
    assert len(isolated_boxes(regions, extraction_reach(radii), shape)) == 3
    whole = extract_particles(segmentation, names, radii, components=components)
    crops = extract_particles_in(segmentation, regions, names, radii, components=components)
    assert len(whole) >= 10 and len(set(whole.classes)) == 3
    np.testing.assert_allclose(crops.xyz, whole.xyz, rtol=0, atol=1e-9)
    assert list(crops.classes) == list(whole.classes)
    assert np.array_equal(crops.scores, whole.scores)


def test_segmented_boxes_are_the_cores_segment_tiled_computes(small_net) -> None:
    """Outside the boxes the maps are background; inside every box a voxel is not."""
    volume = np.random.default_rng(0).standard_normal((24, 40, 160)).astype(np.float32)
    regions = [((2, 8), (3, 9), (140, 150))]
    budget = 24 * 40 * 20
    segmentation = segment_tiled(small_net, volume, CPU, max_tile_voxels=budget,
                                 regions=regions)
    boxes = segmented_boxes(small_net, volume.shape, CPU, regions, max_tile_voxels=budget)
    inside = np.zeros(volume.shape, dtype=bool)
    for box in boxes:
        inside[tuple(slice(lo, hi) for lo, hi in box)] = True
        assert (segmentation.scores[tuple(slice(lo, hi) for lo, hi in box)] > 0).all()
    assert not segmentation.scores[~inside].any()
    assert 0 < inside.mean() < 0.5


def test_normalise_in_place_overwrites_only_an_own_float32_array() -> None:
    """In place, a float32 tomogram is normalised where it lies, to the values of the
    copying call; other dtypes are copied (nothing to overwrite them with)."""
    volume = (np.random.default_rng(0).standard_normal((8, 9, 10)) * 3 + 5).astype(np.float32)
    centre, scale = normalisation_stats(volume)
    copied = normalise(volume)
    assert copied is not volume and copied.dtype == np.float32
    assert np.array_equal(copied, ((volume - centre) / scale).astype(np.float32))
    assert abs(float(np.median(copied))) < 0.1
    same = volume.copy()
    assert normalise(same, in_place=True) is same
    assert np.array_equal(same, copied)
    integers = np.round(volume * 10).astype(np.int16)
    assert normalise(integers, in_place=True) is not integers


def test_a_volume_normalised_on_read_segments_as_its_normalised_copy(trained_net) -> None:
    """Tiled and sliding inference read a ``NormalisedVolume`` (here over an int16
    volume, tile by tile) to the segmentation of the normalised array."""
    rng = np.random.default_rng(2)
    raw = np.round(rng.normal(size=(40, 72, 72)) * 40 + 300).astype(np.int16)
    raw[10:18, 20:28, 20:28] -= 60
    lazy, copied = NormalisedVolume(raw), normalise(raw)
    for segment in (lambda v: segment_tiled(trained_net, v, CPU, precision="fp32",
                                            max_tile_voxels=60_000),
                    lambda v: segment_sliding(trained_net, v, CPU, precision="fp32")):
        expected, result = segment(copied), segment(lazy)
        assert (expected.labels > 0).sum() > 50
        for got, want in zip(result.maps(), expected.maps()):
            np.testing.assert_array_equal(got, want)


def test_a_large_volume_s_maps_live_in_a_temporary_file_with_the_same_picks(
        trained_net, monkeypatch) -> None:
    """Beyond ``MAPS_IN_MEMORY_VOXELS`` the segmentation's maps are memory maps of a
    temporary file, with the values and picks of maps in memory."""
    volume = np.random.default_rng(1).normal(size=(40, 72, 72)).astype(np.float32)
    volume[10:18, 20:28, 20:28] -= 1.5
    in_memory = segment_tiled(trained_net, volume, CPU, precision="fp32")
    monkeypatch.setattr(postprocess, "MAPS_IN_MEMORY_VOXELS", volume.size - 1)
    on_disk = segment_tiled(trained_net, volume, CPU, precision="fp32")
    assert all(isinstance(m, np.memmap) for m in on_disk.maps())
    assert not any(isinstance(m, np.memmap) for m in in_memory.maps())
    for got, want in zip(on_disk.maps(), in_memory.maps()):
        np.testing.assert_array_equal(got, want)
    picks = [extract_particles(s, ["a", "b"], [4, 3]) for s in (in_memory, on_disk)]
    assert len(picks[0]) > 0
    np.testing.assert_array_equal(picks[1].xyz, picks[0].xyz)
    np.testing.assert_array_equal(picks[1].classes, picks[0].classes)


def test_no_room_for_the_maps_is_a_clear_error_before_anything_is_computed(
        monkeypatch, tmp_path) -> None:
    """The maps' space is reserved when they are made: a full disk raises an error
    naming the folder and ``TMPDIR`` instead of a crash when a tile is written."""
    monkeypatch.setattr(postprocess, "MAPS_IN_MEMORY_VOXELS", 10)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))

    def full(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", full)
    with pytest.raises(SasiInputError, match=rf"2 x 3 x 4 tomogram .* in {tmp_path} .*"
                                             r"No space left .* set TMPDIR"):
        Segmentation.blank((2, 3, 4))
    assert not list(tmp_path.iterdir())  # the temporary file is gone
