"""The engine as a Python library (``docs/api.md``): its example runs as written, its
errors name the parameters, in-memory and file inputs train the same model, and
importing the package loads no torch."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sasi_scipion.engine import (
    ParticleTable,
    SasiInputError,
    TrainingSettings,
    Volume,
    evaluate,
    load_model,
    pick,
    train,
)
from sasi_scipion.engine.coordinates import write_particles
from sasi_scipion.engine.device import training_precision
from sasi_scipion.engine.mrc_io import write_volume

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"
CPU_DEVICE = torch.device("cpu")
TINY = TrainingSettings(iterations=1, batch_size=2, consistency_batch=2)
LABELS = ParticleTable([[10, 12, 8], [30, 20, 16], [20, 30, 20], [36, 10, 24]],
                       ["a", "a", "b", "b"])


def _example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) == 1, "docs/api.md should hold one python example"
    return blocks[0]


def test_the_documented_example_runs_as_written(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(_example(), str(DOC), "exec"), scope)
    model, picks, result, second = (scope[k] for k in ("model", "picks", "result", "second"))
    assert model.classes == sorted(scope["templates"])
    assert set(model.radii) == set(scope["radii"])
    shape_xyz = np.array(second.volume.shape[::-1])
    assert len(picks) > 0 and np.all((picks.xyz >= 0) & (picks.xyz < shape_xyz))
    assert result.pooled.tp + result.pooled.fn == len(second.truth)
    assert result.pooled.tp + result.pooled.fp == len(picks)
    assert load_model(tmp_path / "example-model.pt").info() == model.info()


@pytest.mark.parametrize("call, message", [
    (lambda t: train([t, t], [LABELS], {"*": 3}, settings=TINY), "2 tomograms but 1 labels"),
    (lambda t: train([t], [LABELS], {"a": 3}, settings=TINY), r"add radii\['b'\]=R"),
    (lambda t: train([t], [LABELS], {"*": 3}, settings=TrainingSettings(iterations=0)),
     "settings.iterations 0: give 1 to"),
    (lambda t: train([t], [LABELS], {"*": 3}, settings=TINY, arch="transformer"),
     "arch transformer: unknown network"),
    (lambda t: train([Volume(np.zeros((30, 30)), 10.0)], [LABELS], {"*": 3}, settings=TINY),
     r"tomograms\[0\]: expected a real 3D"),
    (lambda t: train([t], [LABELS], {"*": 3, "c": 3}, settings=TINY),
     r"radii\['c'\]=3: no particle of class 'c'"),
    (lambda t: train(t, [LABELS], {"*": 3}, settings=TINY), "tomograms: one tomogram where"),
    (lambda t: evaluate(LABELS, LABELS), "radii: the distance rule needs radii"),
    (lambda t: pick("none.pt", t, min_score=2), "min_score 2: give a finite number"),
])
def test_errors_name_the_parameter_not_a_flag(small_tomogram: Path, call, message) -> None:
    with pytest.raises(SasiInputError, match=message) as error:
        call(str(small_tomogram))
    assert "--" not in str(error.value)


def _state(model) -> dict[str, torch.Tensor]:
    return model.network.state_dict()


def test_in_memory_inputs_train_the_model_that_files_train(
        small_tomogram: Path, small_labels: Path, tmp_path: Path) -> None:
    data = np.random.default_rng(0).normal(size=(32, 40, 48)).astype(np.float32)
    from_files = train([small_tomogram], [small_labels], {"*": 3}, settings=TINY, device="cpu")
    in_memory = train([Volume(data, 10.0)], [LABELS], {"*": 3}, settings=TINY, device="cpu")
    other_seed = train([Volume(data, 10.0)], [LABELS], {"*": 3}, device="cpu",
                       settings=TrainingSettings(iterations=1, batch_size=2,
                                                 consistency_batch=2, seed=1))
    same = all(torch.equal(v, _state(in_memory)[k]) for k, v in _state(from_files).items())
    assert same and from_files.metadata.score_cutoffs == in_memory.metadata.score_cutoffs
    assert not all(torch.equal(v, _state(other_seed)[k])  # control: the seed matters
                   for k, v in _state(from_files).items())
    assert from_files.metadata.voxel_size == in_memory.metadata.voxel_size == 10.0
    # the model file says which arithmetic trained it, never "auto"
    assert from_files.metadata.settings["precision"] == training_precision("auto", CPU_DEVICE)


def test_a_saved_model_picks_what_the_model_in_memory_picks(small_tomogram: Path,
                                                           tmp_path: Path) -> None:
    model = train([small_tomogram], [LABELS], {"*": 3}, settings=TINY, device="cpu")
    model.save(tmp_path / "m.pt")
    picks = pick(model, small_tomogram, min_score=0.0, device="cpu", precision="fp32")
    again = pick(tmp_path / "m.pt", small_tomogram, min_score=0.0, device="cpu",
                 precision="fp32")
    np.testing.assert_allclose(again.xyz, picks.xyz)
    assert list(again.classes) == list(picks.classes)
    card = json.loads((tmp_path / "m.json").read_text())
    assert card["classes"] == ["a", "b"] and model.info()["classes"] == ["a", "b"]


def test_labels_in_a_file_or_a_table_are_the_same_labels(small_tomogram: Path,
                                                         tmp_path: Path) -> None:
    """Control for the file path: a label file written from ``LABELS`` trains alike."""
    write_particles(tmp_path / "l.tsv", LABELS)
    write_volume(tmp_path / "t.mrc", np.asarray(
        np.random.default_rng(1).normal(size=(32, 40, 48)), np.float32), 10.0)
    a = train([tmp_path / "t.mrc"], [tmp_path / "l.tsv"], {"*": 3}, settings=TINY, device="cpu")
    b = train([tmp_path / "t.mrc"], [LABELS], {"*": 3}, settings=TINY, device="cpu")
    assert all(torch.equal(v, _state(b)[k]) for k, v in _state(a).items())


def test_importing_the_engine_loads_torch_only_for_the_library_calls() -> None:
    probe = ("import sys, sasi_scipion.engine as e; a = 'torch' in sys.modules; "
             "e.train; print(a, 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True, timeout=120)
    assert done.stdout.split() == ["False", "True"]


class _Stop(Exception):
    pass


def test_a_checkpoint_lets_an_interrupted_training_go_on_to_the_same_model(
        small_tomogram: Path, tmp_path: Path, monkeypatch) -> None:
    from sasi_scipion.engine import resumable

    monkeypatch.setattr(resumable, "CHECKPOINT_INTERVAL_S", 0.0)  # one after every step
    settings = TrainingSettings(iterations=3, batch_size=2, consistency_batch=2)
    reference = train([small_tomogram], [LABELS], {"*": 3}, settings=settings, device="cpu")

    def stop_at_2(done: int, total: int) -> None:
        if done == 2:
            raise _Stop

    checkpoint = tmp_path / "m.pt.ckpt"
    with pytest.raises(_Stop):
        train([small_tomogram], [LABELS], {"*": 3}, settings=settings, device="cpu",
              progress=stop_at_2, checkpoint=checkpoint)
    assert torch.load(checkpoint, weights_only=True)["iteration"] == 1
    shutil.copy(checkpoint, tmp_path / "copy.ckpt")
    steps: list[int] = []
    resumed = train([small_tomogram], [LABELS], {"*": 3}, settings=settings, device="cpu",
                    progress=lambda done, total: steps.append(done), checkpoint=checkpoint)
    assert steps == [2, 3] and not checkpoint.exists()
    assert all(torch.equal(v, _state(resumed)[k]) for k, v in _state(reference).items())
    assert resumed.metadata.loss_history == reference.metadata.loss_history
    assert resumed.metadata.score_cutoffs == reference.metadata.score_cutoffs
    with pytest.raises(SasiInputError, match="checkpoint of another run"):
        train([small_tomogram], [LABELS], {"*": 3}, device="cpu", checkpoint=tmp_path / "copy.ckpt",
              settings=dataclasses.replace(settings, seed=1))


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="no CPU affinity here")
def test_picking_through_the_api_or_the_command_uses_every_cpu_of_the_process(
        small_tomogram: Path, tmp_path: Path) -> None:
    from sasi_scipion.engine.cli import main

    model = train([small_tomogram], [LABELS], {"*": 3}, settings=TINY, device="cpu")
    model.save(tmp_path / "m.pt")
    cpus, before = len(os.sched_getaffinity(0)), torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        pick(model, small_tomogram, device="cpu")
        assert torch.get_num_threads() == cpus
        torch.set_num_threads(1)
        assert main(["pick", "--model", str(tmp_path / "m.pt"), "--tomogram",
                     str(small_tomogram), "--out", str(tmp_path / "p.tsv"),
                     "--device", "cpu"]) == 0
        assert torch.get_num_threads() == cpus
    finally:
        torch.set_num_threads(before)
