"""Self-training: ignored voxels teach nothing, unlabelled finds are chosen and painted
as documented, and a trainer applies them at its step and after a resume."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from sasi_scipion.engine.coordinates import ParticleTable, write_particles
from sasi_scipion.engine.distributed import Replica
from sasi_scipion.engine.infill import volume_infill
from sasi_scipion.engine.losses import dice_focal_loss
from sasi_scipion.engine.masks import IGNORE_LABEL, sphere_label_volume
from sasi_scipion.engine.models import build_backbone
from sasi_scipion.engine.mrc_io import write_volume
from sasi_scipion.engine.progress import ProgressLog
from sasi_scipion.engine.self_training import (
    from_rows,
    paint_self_labels,
    to_rows,
    unlabelled_picks,
)
from sasi_scipion.engine.training import SaSiTrainer, TrainingSettings, self_labels_found
from sasi_scipion.engine.training_data import ANY_CLASS, load_training_data
from sasi_scipion.engine.training_run import self_labeller

CLASSES = ["a", "b"]
RADII = [3.0, 5.0]


def test_ignored_voxels_add_nothing_to_the_loss_or_its_gradient() -> None:
    rng = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 8, 8, 8, generator=rng, requires_grad=True)
    target = torch.randint(0, 3, (2, 8, 8, 8), generator=rng)
    ignored = target.clone()
    ignored[:, :4] = IGNORE_LABEL
    loss = dice_focal_loss(logits, ignored)
    loss.backward()
    assert torch.count_nonzero(logits.grad[:, :, :4]) == 0
    assert torch.count_nonzero(logits.grad[:, :, 4:]) > 0
    # the same as the loss of the counted half alone
    kept = logits.detach()[:, :, 4:].clone().requires_grad_(True)
    assert loss.item() == pytest.approx(dice_focal_loss(kept, target[:, 4:]).item(), rel=1e-5)
    # and changing the logits there changes nothing
    changed = logits.detach().clone()
    changed[:, :, :4] = 10 * torch.randn(2, 3, 4, 8, 8, generator=rng)
    assert dice_focal_loss(changed, ignored).item() == pytest.approx(loss.item(), rel=1e-6)


def test_infill_mixes_ignored_voxels_as_a_label_of_their_own() -> None:
    y = torch.zeros(3, 24, 24, 24, dtype=torch.long)
    y[:, 4:10, 4:10, 4:10] = 1
    y[:, 12:20, 12:20, 12:20] = IGNORE_LABEL
    x = torch.where(y == 1, 5.0, torch.where(y == IGNORE_LABEL, -5.0, 0.0))[:, None]
    x_mix, y_mix = volume_infill(x, y, 2, np.random.default_rng(0))
    assert set(torch.unique(y_mix).tolist()) == {0, 1, IGNORE_LABEL}
    # where the mixed intensity is the ignored structure's, the label is ignored
    assert (y_mix[x_mix[:, 0] < -4.5] == IGNORE_LABEL).all()
    assert (y_mix[x_mix[:, 0] > 4.5] == 1).all()
    plain = torch.where(y == IGNORE_LABEL, 0, y)
    _, y_plain = volume_infill(x, plain, 2, np.random.default_rng(0))
    assert IGNORE_LABEL not in torch.unique(y_plain).tolist()


def test_unlabelled_picks_are_the_confident_ones_on_no_label_or_background_point() -> None:
    labels = ParticleTable([[10, 10, 10], [30, 10, 10]], ["a", "b"])
    background = ParticleTable([[10, 30, 10]], ["background"])
    picks = ParticleTable(
        [[11, 10, 10],    # on label a
         [30, 14, 10],    # 4 voxels from label b (radius 5): on it, though picked as a
         [10, 32, 10],    # on the background point (pick radius 3)
         [30, 30, 10],    # free and confident: kept
         [40, 40, 10],    # free but below the cut-off of b
         [20, 20, 20]],   # free and confident: kept
        ["a", "a", "a", "b", "b", "a"], scores=[0.9, 0.9, 0.9, 0.8, 0.3, 0.6])
    found = unlabelled_picks(picks, labels, background, CLASSES, RADII, cutoffs=[0.5, 0.5])
    np.testing.assert_array_equal(found.xyz, [[30, 30, 10], [20, 20, 20]])
    assert list(found.classes) == ["b", "a"]
    without_background = unlabelled_picks(picks, labels, None, CLASSES, RADII, [0.5, 0.5])
    assert len(without_background) == 3


def test_painting_changes_only_background_voxels() -> None:
    labels = ParticleTable([[10, 10, 10]], ["b"])
    label_map = sphere_label_volume((20, 24, 24), labels, CLASSES, RADII)
    found = ParticleTable([[14, 10, 10], [18, 18, 10]], ["a", "a"])  # one overlaps the label
    for mode, value in (("ignore", IGNORE_LABEL), ("labels", 1)):
        painted = paint_self_labels(label_map, found, CLASSES, RADII, mode)
        assert painted is not label_map and label_map.max() == 2  # the input is unchanged
        assert (painted[label_map == 2] == 2).all()  # the user's label stays
        assert painted[10, 18, 18] == value and painted[10, 10, 14] == 2
        changed = painted != label_map
        assert (label_map[changed] == 0).all() and (painted[changed] == value).all()
        # two spheres of radius 3 (123 voxels each) less the overlap with the label
        assert 123 < changed.sum() < 2 * 123
    with pytest.raises(ValueError, match="paints nothing"):
        paint_self_labels(label_map, found, CLASSES, RADII, "off")


def test_rows_round_trip() -> None:
    tables = [ParticleTable([[1, 2, 3]], ["b"]), ParticleTable.empty(),
              ParticleTable([[4, 5, 6], [7, 8, 9]], ["a", "b"])]
    back = from_rows(to_rows(tables, CLASSES), 3, CLASSES)
    for table, got in zip(tables, back):
        np.testing.assert_array_equal(got.xyz, table.xyz)
        assert list(got.classes) == list(table.classes)


def _broadcast(rank: int, store: str, result: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{store}", rank=rank,
                                         world_size=2)
    rows = np.arange(15.0).reshape(3, 5) if rank == 0 else np.zeros((1, 5))
    got = Replica(rank, 2).broadcast_rows(rows, torch.device("cpu"))
    np.save(f"{result}{rank}.npy", got)
    torch.distributed.destroy_process_group()


def test_every_process_gets_the_main_process_finds(tmp_path: Path) -> None:
    mp.spawn(_broadcast, args=(str(tmp_path / "store"), str(tmp_path / "rows")), nprocs=2)
    for rank in (0, 1):
        np.testing.assert_array_equal(np.load(tmp_path / f"rows{rank}.npy"),
                                      np.arange(15.0).reshape(3, 5))


@pytest.fixture
def labelled(tmp_path: Path) -> tuple[Path, Path]:
    tomogram, labels = tmp_path / "t.mrc", tmp_path / "l.tsv"
    write_volume(tomogram, np.random.default_rng(0).normal(size=(32, 48, 48))
                 .astype(np.float32), 10.0)
    write_particles(labels, ParticleTable([[10, 12, 8], [30, 20, 16], [20, 30, 20]],
                                          ["a", "a", "b"]))
    return tomogram, labels


FOUND = [ParticleTable([[36, 36, 20], [12, 36, 12]], ["a", "b"])]
"""What the labeller below 'finds': two particles away from the labels."""


def _trainer(tomogram: Path, labels: Path, mode: str, calls: list[int]) -> SaSiTrainer:
    data = load_training_data([str(tomogram)], [str(labels)], {ANY_CLASS: 3.0}, 24)
    settings = TrainingSettings(iterations=4, batch_size=2, consistency_batch=2,
                                ssl_fraction=0.25, seed=2, self_training=mode,
                                self_training_at=0.5, precision="fp32")

    def labeller(model: torch.nn.Module) -> list[ParticleTable]:
        calls.append(1)
        return FOUND

    torch.manual_seed(2)
    return SaSiTrainer(build_backbone("deepfinder", 3), data, data.volumes, settings,
                       torch.device("cpu"), self_labeller=labeller)


@pytest.mark.parametrize("mode", ["ignore", "labels"])
def test_trainer_paints_the_finds_at_its_step_and_again_after_a_resume(labelled, mode) -> None:
    calls: list[int] = []
    whole = _trainer(*labelled, mode, calls)
    original = whole.supervised.label_maps[0].copy()
    saved = {}

    def keep(done: int, history: list[dict]) -> None:
        if done == 3:
            buffer = io.BytesIO()
            torch.save({"state": whole.state_dict(), "history": list(history)}, buffer)
            saved["bytes"] = buffer.getvalue()

    history = whole.run(ProgressLog(4, "test", stream=io.StringIO()), after_step=keep)
    assert calls == [1] and [r.get("self_labels") for r in history] == [None, None, 2.0, None]
    assert self_labels_found(history) == 2 and self_labels_found(history[:2]) is None
    painted = whole.supervised.label_maps[0]
    assert np.array_equal(whole.data.label_maps[0], original)  # the user's map is kept
    expected = paint_self_labels(original, FOUND[0], ["a", "b"], [3.0, 3.0], mode)
    np.testing.assert_array_equal(painted, expected)
    assert painted[20, 36, 36] == (IGNORE_LABEL if mode == "ignore" else 1)
    centres = [len(c) for c in whole.supervised.centres]
    assert centres == ([2, 1] if mode == "ignore" else [3, 2])

    resumed = _trainer(*labelled, mode, calls)
    checkpoint = torch.load(io.BytesIO(saved["bytes"]), weights_only=True)
    resumed.load_state_dict(checkpoint["state"])
    np.testing.assert_array_equal(resumed.supervised.label_maps[0], expected)
    assert [len(c) for c in resumed.supervised.centres] == centres
    assert resumed.run(ProgressLog(4, "test", stream=io.StringIO()),
                       checkpoint["history"]) == history
    assert calls == [1]  # found once: the resumed run did not search again
    for name, tensor in whole.model.state_dict().items():
        assert torch.equal(tensor, resumed.model.state_dict()[name]), name


def test_self_training_settings_are_checked() -> None:
    assert "choose one of off, ignore, labels" in TrainingSettings(
        self_training="some").problem()
    assert "below 1" in TrainingSettings(self_training_at=1.0).problem()
    assert TrainingSettings(self_training="labels", self_training_at=0.3).problem() is None


def test_a_search_that_finds_nothing_leaves_the_run_as_without_self_training(labelled) -> None:
    """The real search (a model copy, its own statistics, picks near the labels) runs
    at the self-training step; with no finds the run must be the one without
    self-training, weight for weight: the search draws on neither the trainer's
    generators nor its model, so any difference ``ignore`` makes is its finds'."""
    tomogram, labels = labelled
    data = load_training_data([str(tomogram)], [str(labels)], {ANY_CLASS: 3.0}, 24)
    searched: list[int] = []

    def trained(mode: str) -> dict[str, torch.Tensor]:
        settings = TrainingSettings(iterations=4, batch_size=2, consistency_batch=2,
                                    ssl_fraction=0.25, seed=2, self_training=mode,
                                    self_training_at=0.5, precision="fp32")
        search = self_labeller(data, settings, torch.device("cpu"))

        def finds_nothing(model: torch.nn.Module) -> list[ParticleTable]:
            searched.append(len(search(model)))
            return [ParticleTable.empty() for _ in data.volumes]

        torch.manual_seed(2)
        trainer = SaSiTrainer(build_backbone("deepfinder", 3), data, data.volumes, settings,
                              torch.device("cpu"), self_labeller=finds_nothing)
        history = trainer.run(ProgressLog(4, "test", stream=io.StringIO()))
        assert self_labels_found(history) == (0 if mode == "ignore" else None)
        return trainer.model.state_dict()

    without, searching = trained("off"), trained("ignore")
    assert len(searched) == 1  # the search ran, once
    for name, tensor in without.items():
        assert torch.equal(tensor, searching[name]), name
