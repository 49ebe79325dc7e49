"""Batch-norm statistics re-estimated on uniformly placed windows (``batch_statistics``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from sasi_scipion.engine.batch_statistics import (
    PICK_STATISTICS_BATCHES,
    STATISTICS_BATCHES,
    batch_norms,
    picking_statistics,
    uniform_windows,
)
from sasi_scipion.engine.errors import SasiInputError
from sasi_scipion.engine.model_file import Model, ModelMetadata
from sasi_scipion.engine.models import build_backbone
from sasi_scipion.engine.picking import adaptation_applies, adapted_model

CPU = torch.device("cpu")


def _volumes() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.standard_normal((30, 40, 50)).astype(np.float32) + 2.0,
            rng.standard_normal((24, 24, 24)).astype(np.float32) - 1.0]


def test_uniform_windows_are_seeded_slices_of_the_volumes() -> None:
    volumes = _volumes()
    windows = uniform_windows(volumes, 24, 64, np.random.default_rng(3))
    again = uniform_windows(volumes, 24, 64, np.random.default_rng(3))
    assert windows.shape == (64, 1, 24, 24, 24) and torch.equal(windows, again)
    # the 24-cube has one position, the other volume 7 x 17 x 27: nearly all from the first
    from_small = [bool(torch.equal(w[0], torch.from_numpy(volumes[1]))) for w in windows]
    assert sum(from_small) <= 2
    first = windows[np.flatnonzero(~np.array(from_small))[0], 0].numpy()
    big = volumes[0]
    assert any(np.array_equal(big[z:z + 24, y:y + 24, x:x + 24], first)
               for z in range(7) for y in range(17) for x in range(27))


def test_running_statistics_become_those_of_the_uniform_windows() -> None:
    """Stale statistics (as from label-centred windows) are replaced by the mean and
    variance of the first convolution's output over the seeded uniform windows; the
    weights, the momentum and evaluation mode stay."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1, bias=False), nn.BatchNorm3d(4),
                          nn.ReLU(), nn.Conv3d(4, 2, 1))
    norm = model[1]
    norm.running_mean.fill_(5.0)
    norm.running_var.fill_(9.0)
    weights = [p.detach().clone() for p in model.parameters()]
    volumes = _volumes()
    assert picking_statistics(model, volumes, 24, 8, seed=11, device=CPU) == 1
    rng = np.random.default_rng(11)
    with torch.no_grad():
        outputs = torch.cat([model[0](uniform_windows(volumes, 24, 8, rng))
                             for _ in range(STATISTICS_BATCHES)])
    np.testing.assert_allclose(norm.running_mean.numpy(),
                               outputs.mean(dim=(0, 2, 3, 4)).numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(norm.running_var.numpy(),
                               outputs.var(dim=(0, 2, 3, 4)).numpy(), rtol=1e-3)
    assert all(torch.equal(a, b) for a, b in zip(weights, model.parameters()))
    assert norm.momentum == 0.1 and not model.training
    plain = nn.Sequential(nn.Conv3d(1, 2, 1))
    assert picking_statistics(plain, volumes, 24, 8, seed=0, device=CPU) == 0


def test_a_trained_model_carries_the_statistics_of_its_whole_training_tomogram(
        small_tomogram, small_labels) -> None:
    """Training ends with :func:`picking_statistics` on its normalised tomogram and seed:
    running it again on the saved weights changes nothing (without it, the saved
    statistics would be the training steps' momentum averages), while another seed's
    windows give other statistics (the control)."""
    import copy

    from sasi_scipion.engine import TrainingSettings, train
    from sasi_scipion.engine.mrc_io import read_volume
    from sasi_scipion.engine.normalize import normalise

    settings = TrainingSettings(iterations=2, batch_size=2, consistency_batch=2, seed=4,
                                self_training="ignore")
    model = train([small_tomogram], [small_labels], {"*": 3}, settings=settings, device="cpu")
    volume = normalise(read_volume(small_tomogram).data)
    saved = {k: v.clone() for k, v in model.network.state_dict().items() if "running" in k}
    again = copy.deepcopy(model.network)
    picking_statistics(again, [volume], 24, settings.batch_size, settings.seed, CPU)
    assert saved and all(torch.equal(v, again.state_dict()[k]) for k, v in saved.items())
    assert model.info()["batch_norm_statistics"] == "tomogram"  # two classes
    # the trainer made its own self-labeller, ran it half-way and recorded its finds
    assert model.info()["self_training"] == "ignore"
    assert isinstance(model.info()["self_labels_found"], int)
    other_seed = copy.deepcopy(model.network)
    picking_statistics(other_seed, [volume], 24, settings.batch_size, 5, CPU)
    assert not all(torch.equal(v, other_seed.state_dict()[k]) for k, v in saved.items())


@pytest.mark.parametrize(("classes", "recalls", "kept", "changed", "recall"), [
    (["a", "b"], [[0.4, 0.4]], "tomogram", True, [0.4, 0.4]),  # several: re-estimated
    (["a"], [[0.9]], "training", False, [0.9]),  # one class that finds its labels: kept
    (["a"], [[0.0], [0.8]], "tomogram", True, [0.8]),  # rescued by the re-estimate
    (["a"], [[0.2], [0.1]], "training", False, [0.2]),  # no better: its own back
])
def test_which_statistics_a_trained_model_keeps(monkeypatch, classes, recalls, kept,
                                               changed, recall) -> None:
    from types import SimpleNamespace

    from sasi_scipion.engine import training_run
    from sasi_scipion.engine.picking import LabelDecisions
    from sasi_scipion.engine.training import TrainingSettings

    answers = iter(recalls)
    monkeypatch.setattr(training_run, "label_decisions", lambda *args: LabelDecisions(
        None, {}, next(answers)))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv3d(1, 2, 3, padding=1), nn.BatchNorm3d(2))
    model[1].running_mean.fill_(3.0)
    model[1].running_var.fill_(2.0)
    model[1].num_batches_tracked.fill_(7)
    data = SimpleNamespace(volumes=_volumes(), particles=[], class_names=classes, radii=[],
                           negatives=None)
    decisions, statistics = training_run.final_decisions(
        model, data, TrainingSettings(batch_size=2), CPU)
    assert statistics == kept and decisions.label_recall == recall
    assert bool((model[1].running_mean != 3.0).all()) is changed
    assert bool((model[1].running_var != 2.0).all()) is changed
    assert (int(model[1].num_batches_tracked) != 7) is changed
    plain = nn.Sequential(nn.Conv3d(1, 2, 1))
    answers = iter([[0.0]])
    assert training_run.final_decisions(plain, data, TrainingSettings(), CPU)[1] is None


def _metadata(settings: dict) -> ModelMetadata:
    """A two-class 10 Å model's metadata with training ``settings``."""
    return ModelMetadata(arch="deepfinder", arch_params={"batch_norm": True}, classes=["a", "b"],
                         radii=[3.0, 4.0], window=24, voxel_size=10.0,
                         normalisation="zscore", pretrained_only=False, iterations=1,
                         settings=settings)


@pytest.mark.parametrize(("setting", "statistics", "coarser", "applies"), [
    ("auto", "tomogram", True, True),     # a model of several classes, coarser data
    ("auto", "tomogram", False, False),   # native or finer data: the model's own
    ("auto", "training", True, False),    # a one-class model keeps its training steps'
    ("auto", None, True, False),          # an older model: unknown statistics
    ("on", "training", False, True),
    ("off", "tomogram", True, False),
])
def test_which_tomograms_picking_adapts_the_statistics_to(setting, statistics, coarser,
                                                          applies) -> None:
    meta = _metadata({"batch_norm_statistics": statistics})
    assert adaptation_applies(setting, meta, coarser) is applies


def test_an_unknown_adaptation_is_refused_with_the_choices() -> None:
    meta = _metadata({})
    with pytest.raises(SasiInputError, match="adapt_statistics sometimes: choose one of "
                                             "auto, on, off"):
        adaptation_applies("sometimes", meta, True)


def test_picking_adapts_a_copy_to_the_tomogram_and_leaves_the_model_alone() -> None:
    torch.manual_seed(0)
    network = build_backbone("deepfinder", 3, batch_norm=True).eval()
    meta = _metadata({"batch_size": 4, "seed": 5})
    model = Model(network, meta)
    before = {k: v.clone() for k, v in network.state_dict().items()}
    faint = 0.1 * np.random.default_rng(1).standard_normal((30, 40, 40)).astype(np.float32)
    adapted = adapted_model(model, faint, CPU)
    assert adapted.network is not network and adapted.metadata is meta
    for name, value in network.state_dict().items():
        assert torch.equal(value, before[name]), name  # the model itself is unchanged
    # the statistics are those of the tomogram's windows: faint data, a small variance
    first, original = batch_norms(adapted.network)[0], batch_norms(network)[0]
    assert (first.running_var < 0.5 * original.running_var).all()
    # exactly the cumulative estimate over PICK_STATISTICS_BATCHES batches, model's seed
    expected = build_backbone("deepfinder", 3, batch_norm=True)
    expected.load_state_dict(before)
    picking_statistics(expected, [faint], 24, 4, 5, CPU, batches=PICK_STATISTICS_BATCHES)
    for name, value in expected.state_dict().items():
        assert torch.equal(value, adapted.network.state_dict()[name]), name
    for name, value in adapted.network.named_parameters():  # weights unchanged
        assert torch.equal(value, before[name]), name
