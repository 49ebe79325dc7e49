"""Class calibration fitted on the labels: the fit, the tile-by-tile sphere means,
the calibrated class decision, the model file field, and picking a net whose
classes are swapped."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional

from sasi_scipion.engine import inference, picking, postprocess
from sasi_scipion.engine.calibration import (
    ClassCalibration,
    SphereMeans,
    calibration_problem,
    fit_calibration,
)
from sasi_scipion.engine.coordinates import ParticleTable
from sasi_scipion.engine.model_file import Model, ModelMetadata
from sasi_scipion.engine.mrc_io import Volume
from sasi_scipion.engine.normalize import NORMALISATION, normalise
from sasi_scipion.engine.picking import label_decisions, pick_tomogram
from sasi_scipion.engine.postprocess import summarise_probabilities

from .ball_levels import LevelsNet, balls


def test_the_fit_learns_a_decision_the_raw_argmax_gets_wrong() -> None:
    """Features whose largest entry names the wrong class (class 0's particles lean to
    class 1 and class 2's to class 0), but separable: the fit classifies held-out
    samples right, the argmax does not."""
    rng = np.random.default_rng(0)
    means = np.array([[-3.0, -1.0, -0.5, -2.0], [-3.0, -2.0, -0.5, -3.0],
                      [-3.0, -0.5, -2.0, -1.5]])  # background, then classes 0, 1, 2

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        classes = np.repeat(np.arange(3), n)
        return means[classes] + 0.2 * rng.standard_normal((3 * n, 4)), classes

    features, classes = draw(10)
    calibration = fit_calibration(features, classes, 3)
    held_out, truth = draw(200)
    calibrated = calibration.class_logits(torch.from_numpy(held_out.T)).argmax(dim=0).numpy()
    assert (calibrated == truth).mean() > 0.95
    assert (held_out[:, 1:].argmax(axis=1) == truth).mean() < 0.5
    assert calibration.weight.shape == (3, 4) and calibration.labels == 30


def test_nothing_is_fitted_for_one_class_or_a_class_without_labels() -> None:
    features = np.zeros((4, 3))
    assert fit_calibration(features[:, :2], np.zeros(4, dtype=int), 1) is None
    assert fit_calibration(features, np.array([0, 0, 0, 0]), 2) is None
    # a label whose sphere no voxel reached (NaN) is left out, not a NaN fit
    nan = np.array([[np.nan] * 3, [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    assert fit_calibration(nan, np.array([0, 0, 1]), 2) is not None
    assert fit_calibration(nan, np.array([1, 0, 0]), 2) is None  # class 1 only unreached


def test_sphere_means_added_tile_by_tile_equal_the_whole_volume_mean() -> None:
    rng = np.random.default_rng(1)
    values = torch.from_numpy(rng.standard_normal((3, 20, 18, 16)).astype(np.float32))
    centres = np.array([[9.5, 8.0, 7.0], [0.0, 0.0, 0.0], [19.0, 17.0, 15.0]])
    radii = np.array([4.0, 2.5, 3.0])
    probe = SphereMeans(centres, radii, 3)
    for z0 in (0, 7, 13):  # uneven parts, as tiles are
        for y0 in (0, 9):
            z1, y1 = {0: 7, 7: 13, 13: 20}[z0], y0 + 9
            probe.add(values[:, z0:z1, y0:y1], (slice(z0, z1), slice(y0, y1), slice(0, 16)))
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in values.shape[1:]], indexing="ij"), -1)
    for centre, radius, mean in zip(centres, radii, probe.means()):
        inside = ((grid - centre) ** 2).sum(-1) <= radius**2
        np.testing.assert_allclose(mean, values.numpy()[:, inside].mean(axis=1), rtol=1e-5)
    assert np.isnan(SphereMeans(np.array([[50.0, 50, 50]]), np.array([2.0]), 3).means()).all()


def test_a_calibrated_decision_changes_the_class_of_particle_voxels_only() -> None:
    logits = torch.tensor([[5.0, 0.0, 0.0], [0.0, 2.0, 1.0], [0.0, 1.0, 2.0]]).T  # 3 voxels
    log_probs = functional.log_softmax(logits.reshape(3, 3, 1, 1), dim=0)
    swap = ClassCalibration(np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0]]), np.zeros(2), 2)
    labels, scores, foreground = summarise_probabilities(log_probs)
    calibrated, calibrated_scores, calibrated_foreground = summarise_probabilities(log_probs,
                                                                                   swap)
    assert labels.ravel().tolist() == [0, 1, 2]
    assert calibrated.ravel().tolist() == [0, 2, 1]  # background stays background
    assert torch.equal(foreground, calibrated_foreground)
    assert calibrated_scores[0].item() == pytest.approx(scores[0].item())
    assert calibrated_scores[1].item() == pytest.approx(torch.sigmoid(torch.tensor(1.0)).item(),
                                                        abs=1e-5)


def test_model_files_refuse_a_calibration_of_the_wrong_shape() -> None:
    good = ClassCalibration(np.zeros((2, 3)), np.zeros(2), 6).as_dict()
    assert calibration_problem(good, 2) is None
    assert calibration_problem({}, 2) is None
    assert calibration_problem(good, 3) == ("its class calibration is not 3 (or 4) x 4 "
                                            "weights and as many biases")
    with_reject = ClassCalibration(np.zeros((3, 3)), np.zeros(3), 6).as_dict()
    assert calibration_problem(with_reject, 2) is None
    assert calibration_problem({**with_reject, "bias": [0.0, 0.0]}, 2) is not None
    assert "finite" in calibration_problem({**good, "bias": [0.0, float("nan")]}, 2)
    assert "table" in calibration_problem([1, 2], 2)
    assert ClassCalibration.from_dict({}) is None


class SwappedClasses(LevelsNet):
    """A fully convolutional stand-in net for normalised volumes of balls of two
    levels over a background level: it finds the balls, but calls those of the
    lower level ``b`` and those of the higher ``a`` (the labels say the reverse)."""

    size_multiple = 1
    num_outputs = 3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        background, low, high = self.levels
        v = self.level_scale(x[:, :1])  # background < 0, low 0, high 1
        edge = (background - low) / (high - low) / 2
        return self.gain * torch.cat([8.0 * (edge - v), -4.0 * (v - 1.0) ** 2, -4.0 * v**2],
                                     dim=1)


def test_training_labels_fix_a_net_that_swaps_two_classes() -> None:
    """The calibration is fitted on the labelled balls of a normalised training volume
    and stored in the model; picking a second volume (normalised by picking) then
    names both balls right, and without it (``calibrated=False``, the network's argmax)
    both wrong."""
    names, radii = ["a", "b"], [3.0, 3.0]
    centres = [(6, 8, 8), (6, 30, 30), (17, 8, 30), (17, 30, 8)]
    training = normalise(balls(centres, [1, 1, 2, 2]))
    labels = ParticleTable([c[::-1] for c in centres], ["a", "a", "b", "b"])  # (x, y, z)
    net = SwappedClasses(training[0, 0, 0], training[6, 8, 8], training[17, 8, 30])
    cpu = torch.device("cpu")
    calibration, cutoffs, recall = label_decisions(net, [training], [labels], names, radii,
                                                   cpu)
    assert recall == [1.0, 1.0]  # the swapped classes are calibrated: every label found
    assert calibration is not None and calibration.labels == 4
    meta = ModelMetadata(arch="deepfinder", arch_params={}, classes=names, radii=radii,
                         window=24, voxel_size=None, normalisation=NORMALISATION,
                         pretrained_only=False, iterations=1, score_cutoffs=cutoffs,
                         class_calibration=calibration.as_dict())
    # the same histogram as the training volume, so the same normalisation
    test = Volume(balls([(6, 10, 20), (17, 30, 20), (6, 30, 8), (17, 8, 8)], [1, 2, 1, 2]),
                  None)
    for calibrated, expected in [(True, ["a", "b", "a", "b"]), (False, ["b", "a", "b", "a"])]:
        picks = pick_tomogram(Model(net, meta), test, cpu, min_score=0.0,
                              calibrated=calibrated)
        order = np.lexsort((picks.xyz[:, 2], picks.xyz[:, 1] != 10, picks.xyz[:, 0] != 20))
        np.testing.assert_allclose(picks.xyz[order], [[20, 10, 6], [20, 30, 17], [8, 30, 6],
                                                      [8, 8, 17]], atol=0.5)
        assert list(picks.classes[order]) == expected


def test_background_points_make_a_reject_class_that_drops_lookalike_distractors() -> None:
    """Balls of a third, brighter level (distractors) are called ``a`` by the net;
    background points on them in the training volume give the calibration a reject
    class, and picking then finds only the four particles, each named right."""
    names, radii = ["a", "b"], [3.0, 3.0]
    centres = [(6, 8, 8), (6, 30, 30), (17, 8, 30), (17, 30, 8), (6, 8, 30), (17, 30, 30)]
    training = normalise(balls(centres, [1, 1, 2, 2, 3, 3]))
    labels = ParticleTable([c[::-1] for c in centres[:4]], ["a", "a", "b", "b"])
    background = ParticleTable([c[::-1] for c in centres[4:]], ["background"] * 2)
    net = SwappedClasses(training[0, 0, 0], training[6, 8, 8], training[17, 8, 30])
    cpu = torch.device("cpu")
    plain = label_decisions(net, [training], [labels], names, radii, cpu).calibration
    calibration, cutoffs, _ = label_decisions(net, [training], [labels], names, radii, cpu,
                                              [background])
    assert not plain.rejects and calibration.rejects and calibration.labels == 6
    assert calibration_problem(calibration.as_dict(), 2) is None
    test = Volume(balls([(6, 10, 20), (17, 30, 20), (6, 30, 8), (17, 8, 8), (12, 20, 32),
                          (12, 20, 6)], [1, 2, 1, 2, 3, 3]), None)
    found = {}
    for name, fitted in [("plain", plain), ("reject", calibration)]:
        meta = ModelMetadata(arch="deepfinder", arch_params={}, classes=names, radii=radii,
                             window=24, voxel_size=None, normalisation=NORMALISATION,
                             pretrained_only=False, iterations=1,
                             class_calibration=fitted.as_dict())
        picks = pick_tomogram(Model(net, meta), test, cpu, min_score=0.0)
        found[name] = sorted((tuple(np.round(p).astype(int)), c)
                             for p, c in zip(picks.xyz, picks.classes))
    particles = [((8, 8, 17), "b"), ((8, 30, 6), "a"), ((20, 10, 6), "a"), ((20, 30, 17), "b")]
    assert found["reject"] == particles
    assert len(found["plain"]) == 6 and set(particles) < set(found["plain"])


def test_decisions_from_the_tiles_near_the_labels_equal_the_whole_volume(monkeypatch) -> None:
    """On a long volume whose labels lie at one end, the calibration and the cut-offs
    segment and post-process only the tiles that meet the labels' regions, and come
    out as when every tile is segmented and the whole volume post-processed."""
    names, radii = ["a", "b"], [3.0, 3.0]
    centres = [(6, 8, 8), (6, 30, 30), (17, 8, 30), (17, 30, 8)]
    far = [(6, 8, 150), (17, 30, 150), (12, 20, 120)]  # particles nobody labelled
    training = normalise(balls(centres + far, [1, 1, 2, 2, 1, 2, 1], shape=(24, 40, 160)))
    labels = ParticleTable([c[::-1] for c in centres], ["a", "a", "b", "b"])
    net = SwappedClasses(training[0, 0, 0], training[6, 8, 8], training[17, 8, 30])
    cpu = torch.device("cpu")
    monkeypatch.setitem(inference.MAX_TILE_VOXELS, "cpu", 24 * 40 * 20)  # 8 tiles
    tiles = []
    monkeypatch.setattr(net, "forward", lambda x, forward=net.forward: (
        tiles.append(x.shape), forward(x))[1])
    processed = []
    monkeypatch.setattr(postprocess, "extract_particles", lambda segmentation, *args,
                        extract=postprocess.extract_particles, **kwargs: (
        processed.append(segmentation.labels.size), extract(segmentation, *args, **kwargs))[1])
    near = label_decisions(net, [training], [labels], names, radii, cpu)
    near_tiles, near_voxels = len(tiles), sum(processed)
    monkeypatch.setattr(picking, "label_regions",
                        lambda centres, shape, radii: [tuple((0, n) for n in shape)])
    tiles.clear()
    processed.clear()
    whole = label_decisions(net, [training], [labels], names, radii, cpu)
    assert len(tiles) == 16 and near_tiles < 10  # two passes of 8 tiles
    assert processed == [training.size] and near_voxels < 0.6 * training.size
    assert near[1] == whole[1] and near[1]["peaks"][0] > 0
    np.testing.assert_array_equal(near[0].weight, whole[0].weight)
    np.testing.assert_array_equal(near[0].bias, whole[0].bias)


def test_label_regions_reach_a_radius_the_suppression_and_the_peak_search_and_stop_at_the_faces(
) -> None:
    regions = picking.label_regions(np.array([[2.0, 30.0, 30.4]]), (40, 60, 45), [3.0, 5.0])
    # the largest radius, 1.5 of it (rounded up) for a better same-class neighbour
    reach = 5 + 8 + picking.peak_search_reach(3.0)
    assert 2 + reach + 1 < 40 and 30.4 + reach > 45  # clipped at z = 0 and x = 45 only
    assert regions == [((0, 2 + reach + 1), (30 - reach, 30 + reach + 1),
                        (int(np.floor(30.4 - reach)), 45))]
