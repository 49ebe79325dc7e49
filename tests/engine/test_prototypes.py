"""Label prototypes (``prototypes``): the encoder vector at a point, the leave-one-out
similarities, the model file field, training storing them, and picking a one-class
model that finds two kinds of blob but keeps the kind it was trained on."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from sasi_scipion.engine import (
    ParticleTable,
    SasiInputError,
    SasiWarning,
    TrainingSettings,
    pick,
    train,
)
from sasi_scipion.engine import prototypes as prototypes_module
from sasi_scipion.engine.model_file import Model, ModelMetadata, save_model
from sasi_scipion.engine.models import build_backbone
from sasi_scipion.engine.mrc_io import Volume
from sasi_scipion.engine.normalize import NORMALISATION, normalise
from sasi_scipion.engine.picking import pick_tomogram
from sasi_scipion.engine.prototypes import (
    LabelPrototypes,
    encoder_vectors,
    fit_prototypes,
    prototypes_apply,
    prototypes_problem,
)

from .ball_levels import LevelsNet, balls

CPU = torch.device("cpu")


def test_the_vector_at_a_point_is_the_encoder_at_the_centre_of_its_cube() -> None:
    """On a random volume, the vector at ``(x, y, z)`` is the unit mean of the central
    2 x 2 x 2 embedding cells of the 40-voxel cube centred there: (x, y, z) is read as
    columns, rows, sections, and cubes past the edge are zero-padded."""
    torch.manual_seed(0)
    net = build_backbone("deepfinder", 2).eval()
    volume = np.random.default_rng(0).standard_normal((48, 56, 64)).astype(np.float32)
    x, y, z = 37, 25, 22
    cube = volume[z - 20:z + 20, y - 20:y + 20, x - 20:x + 20]
    with torch.no_grad():
        embedding = net.encode(torch.from_numpy(np.ascontiguousarray(cube))[None, None])
    expected = nn.functional.normalize(embedding[0, :, 4:6, 4:6, 4:6].mean(dim=(1, 2, 3)),
                                       dim=0).numpy()
    corner = np.zeros((40, 40, 40), dtype=np.float32)
    corner[20:, 20:, 20:] = volume[:20, :20, :20]
    with torch.no_grad():
        padded = net.encode(torch.from_numpy(corner)[None, None])
    at_corner = nn.functional.normalize(padded[0, :, 4:6, 4:6, 4:6].mean(dim=(1, 2, 3)),
                                        dim=0).numpy()
    vectors = encoder_vectors(net, volume, np.array([[x, y, z], [0, 0, 0]]))
    np.testing.assert_allclose(vectors, [expected, at_corner], atol=1e-5)
    assert vectors.shape == (2, net.embedding_channels)


def test_leave_one_out_similarities_and_cut_offs(monkeypatch) -> None:
    """Each label's similarity is to the mean of the others of its class; the cut-off is
    their quantile, and a class with one label keeps every pick."""
    rng = np.random.default_rng(2)
    vectors = rng.standard_normal((5, 4))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    labels = ParticleTable(np.arange(15, dtype=float).reshape(5, 3), ["a", "a", "a", "a", "b"])
    # the 'encoder' gives label i (x = 3 i) the vector i
    monkeypatch.setattr(prototypes_module, "encoder_vectors",
                        lambda network, volume, xyz: vectors[xyz[:, 0].astype(int) // 3])
    prototypes = fit_prototypes(nn.Identity(), [np.zeros((4, 4, 4))], [labels], ["a", "b"])
    for i in range(4):
        others = vectors[[j for j in range(4) if j != i]].sum(axis=0)
        assert prototypes.label_similarities[0][i] == pytest.approx(
            vectors[i] @ others / np.linalg.norm(others))
    assert len(prototypes.label_similarities[1]) == 0
    np.testing.assert_allclose(prototypes.vectors[1], vectors[4])
    cut = prototypes.cutoffs(0.25)
    assert cut[0] == pytest.approx(np.quantile(prototypes.label_similarities[0], 0.25))
    assert cut[1] == -np.inf
    again = LabelPrototypes.from_dict(prototypes.as_dict())
    np.testing.assert_allclose(again.vectors, prototypes.vectors)
    assert prototypes_problem(prototypes.as_dict(), 2) is None


def test_model_files_refuse_prototypes_of_the_wrong_shape(tmp_path) -> None:
    good = LabelPrototypes(np.eye(2, 3), (np.array([0.9, 0.8]), np.zeros(0))).as_dict()
    assert prototypes_problem({}, 2) is None and LabelPrototypes.from_dict({}) is None
    assert prototypes_problem(good, 3) == ("its label prototypes are not 3 vectors and 3 "
                                           "lists of label similarities")
    assert "finite" in prototypes_problem({**good, "label_similarities": [[float("nan")], []]},
                                          2)
    assert "table" in prototypes_problem({"vectors": []}, 2)
    meta = _meta(["a", "b"], label_prototypes={**good, "vectors": [[1.0]]})
    save_model(tmp_path / "m.pt", build_backbone("deepfinder", 3), meta)
    with pytest.raises(Exception, match="label prototypes are not 2 vectors"):
        Model.load(tmp_path / "m.pt")


def test_the_filter_is_on_for_one_class_models_by_default() -> None:
    assert prototypes_apply("auto", 1, True) and not prototypes_apply("auto", 2, True)
    assert prototypes_apply("on", 2, True) and not prototypes_apply("off", 1, True)
    assert not prototypes_apply("auto", 1, False)


class TwoLevels(LevelsNet):
    """A stand-in one-class net for normalised volumes of balls of two levels: it calls
    every ball (either level) a particle, while its 'encoder' tells the levels apart
    (4-voxel cells: the share of voxels near each level, and a constant)."""

    size_multiple = 4
    num_outputs = 2
    fixed_window = None
    embedding_stride = 4
    embedding_channels = 3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        background, low, _ = self.levels
        v = (x - background) / (low - background)  # background 0, balls 1 and above
        return self.gain * torch.cat([torch.zeros_like(v), 8.0 * (v - 0.5)], dim=1)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        near = [(torch.abs(self.level_scale(x) - level) < 0.25).float() for level in (0, 1)]
        cells = torch.cat([*near, 0.05 * torch.ones_like(x)], dim=1)
        return nn.functional.avg_pool3d(cells, 4)


def _meta(classes, **fields) -> ModelMetadata:
    return ModelMetadata(arch="deepfinder", arch_params={}, classes=classes,
                         radii=[4.0] * len(classes), window=24, voxel_size=None,
                         normalisation=NORMALISATION, pretrained_only=False, iterations=1,
                         **fields)


SHAPE = (32, 48, 64)
LEVELS = [1, 1, 1, 1, 2, 2]
RADII = [2.5, 3.0, 3.5, 4.0, 3.0, 3.5]


def test_a_one_class_model_keeps_the_picks_like_its_labels() -> None:
    """Trained on four balls of one level (of varying size; two balls of another level
    in the same volume unlabelled), the model finds all six balls of a second volume;
    with its label prototypes (``auto`` for one class) it keeps only the four of the
    labelled level, at their centres; ``off`` keeps all six."""
    centres = [(8, 10, 10), (8, 36, 50), (22, 12, 52), (22, 36, 12), (8, 24, 30), (22, 24, 32)]
    training = normalise(balls(centres, LEVELS, RADII, SHAPE))
    net = TwoLevels(training[0, 0, 0], training[8, 10, 10], training[8, 24, 30])
    labels = ParticleTable([c[::-1] for c in centres[:4]], ["a"] * 4)
    prototypes = fit_prototypes(net, [training], [labels], ["a"])
    meta = _meta(["a"], label_prototypes=prototypes.as_dict())
    moved = [(9, 12, 40), (22, 10, 24), (9, 34, 12), (21, 36, 48), (10, 22, 56), (21, 26, 8)]
    test = Volume(balls(moved, LEVELS, RADII, SHAPE), None)  # the same histogram: same levels
    found = {}
    for setting in ("auto", "off"):
        picks = pick_tomogram(Model(net, meta), test, CPU, min_score=0.0,
                              prototype_filter=setting, precision="fp32")
        found[setting] = sorted(tuple(int(v) for v in np.round(p)[::-1]) for p in picks.xyz)
    assert found["auto"] == sorted(moved[:4])
    assert found["off"] == sorted(moved)
    strict = pick_tomogram(Model(net, meta), test, CPU, min_score=0.0, prototype_quantile=1.0,
                           precision="fp32")
    assert 0 < len(strict) < 4  # the most similar label's similarity: fewer picks


def test_filter_errors_name_the_fix(small_tomogram) -> None:
    model = Model(build_backbone("deepfinder", 2), _meta(["a"]))
    with pytest.raises(SasiInputError, match="no label prototypes .*retrain it, or pick "
                                             "with prototype_filter off"):
        pick(model, small_tomogram, prototype_filter="on")
    with pytest.raises(SasiInputError, match="prototype_quantile 1.5: give a quantile"):
        pick(model, small_tomogram, prototype_quantile=1.5)
    with pytest.raises(SasiInputError, match="prototype_filter always: choose one of auto"):
        pick(model, small_tomogram, prototype_filter="always")


def test_training_stores_the_labels_prototypes(small_tomogram) -> None:
    labels = ParticleTable([[10, 12, 8], [30, 20, 16], [20, 30, 20], [36, 10, 24]],
                           ["a", "a", "a", "b"])
    with pytest.warns(SasiWarning, match="picks few of your labelled particles as their own class"):
        model = train([small_tomogram], [labels], {"*": 3}, device="cpu",
                      settings=TrainingSettings(iterations=1, batch_size=2,
                                                consistency_batch=2))
    assert model.info()["label_recall"] == {"a": 0.0, "b": 0.0}  # one step learns nothing
    prototypes = LabelPrototypes.from_dict(model.metadata.label_prototypes)
    assert prototypes.vectors.shape == (2, model.network.embedding_channels)
    np.testing.assert_allclose(np.linalg.norm(prototypes.vectors, axis=1), 1.0, rtol=1e-6)
    assert [len(s) for s in prototypes.label_similarities] == [3, 0]
    assert model.info()["label_prototypes"] is True
