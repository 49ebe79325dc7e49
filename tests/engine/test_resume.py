"""Checkpoints: a run killed with ``kill -9`` and resumed gives the model of an
uninterrupted run, bit for bit; the trainer's state round trip covers every kind of
step; new trainer attributes are saved without a change to the checkpoint code."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from sasi_scipion.engine.checkpoint import checkpoint_path
from sasi_scipion.engine.coordinates import ParticleTable, write_particles
from sasi_scipion.engine.models import build_backbone
from sasi_scipion.engine.mrc_io import write_volume
from sasi_scipion.engine.progress import ProgressLog
from sasi_scipion.engine.training import SaSiTrainer, TrainingSettings
from sasi_scipion.engine.training_data import ANY_CLASS, load_training_data

ITERATIONS = 8
EVERY = 2
PREVIOUS_LOG = '{"iteration": 1, "loss": 9.0}\n'


@pytest.fixture
def tomogram(tmp_path: Path) -> Path:
    path = tmp_path / "t.mrc"
    write_volume(path, np.random.default_rng(0).normal(size=(32, 48, 48)).astype(np.float32),
                 10.0)
    return path


def _command(tomogram: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "sasi_scipion.engine.cli", "pretrain", "--tomogram",
            str(tomogram), "--out", str(out), "--iterations", str(ITERATIONS), "--batch-size",
            "2", "--checkpoint-every", str(EVERY), "--device", "cpu", "--seed", "1", *extra]


def _run(argv: list[str]) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr


def _log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_kill_9_then_resume_gives_the_uninterrupted_model(tomogram: Path, tmp_path: Path) -> None:
    reference = tmp_path / "ref" / "m.pt"
    _run(_command(tomogram, reference))

    out = tmp_path / "run" / "m.pt"
    out.parent.mkdir()
    (out.parent / "m.log.jsonl").write_text(PREVIOUS_LOG)  # the log of an earlier run
    checkpoint = checkpoint_path(out)
    job = subprocess.Popen(_command(tomogram, out), stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not checkpoint.exists() and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(job.pid, signal.SIGKILL)
    job.wait()
    assert job.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not out.exists()
    assert (out.parent / "m.log.jsonl").read_text() == PREVIOUS_LOG
    saved = torch.load(checkpoint, weights_only=True)
    assert saved["iteration"] % EVERY == 0 and 0 < saved["iteration"] < ITERATIONS

    _run(_command(tomogram, out, "--resume"))
    expected = torch.load(reference, weights_only=True)
    got = torch.load(out, weights_only=True)
    assert expected["state_dict"].keys() == got["state_dict"].keys()
    for name, tensor in expected["state_dict"].items():
        assert torch.equal(tensor, got["state_dict"][name]), name
    assert got["loss_history"] == expected["loss_history"]
    log, reference_log = _log(out.parent / "m.log.jsonl"), _log(reference.parent / "m.log.jsonl")
    assert [r["iteration"] for r in log] == list(range(1, ITERATIONS + 1))
    assert [r["loss"] for r in log] == [r["loss"] for r in reference_log]
    assert sorted(p.name for p in out.parent.iterdir()) == ["m.json", "m.log.jsonl", "m.pt"]


def _trainer(tomogram: Path, labels: Path) -> SaSiTrainer:
    data = load_training_data([str(tomogram)], [str(labels)], {ANY_CLASS: 3.0}, 24)
    settings = TrainingSettings(iterations=4, batch_size=2, consistency_batch=2,
                                ssl_fraction=0.25, seed=2)
    torch.manual_seed(2)
    return SaSiTrainer(build_backbone("deepfinder", len(data.class_names) + 1), data,
                       data.volumes, settings, torch.device("cpu"))


def _quiet(total: int) -> ProgressLog:
    return ProgressLog(total, "test", stream=io.StringIO())


def test_trainer_state_round_trip_covers_every_step_kind(tomogram: Path, tmp_path: Path) -> None:
    """A SimCLR step, then split, then a consistency step (both draw unlabelled windows
    in the sampler's order) and supervised steps with infill."""
    labels = tmp_path / "l.tsv"
    write_particles(labels, ParticleTable([[10, 12, 8], [30, 20, 16], [20, 30, 20]],
                                          ["a", "a", "b"]))
    whole = _trainer(tomogram, labels)
    saved = {}

    def keep(done: int, history: list[dict]) -> None:
        if done == 1:
            buffer = io.BytesIO()
            torch.save({"state": whole.state_dict(), "history": list(history)}, buffer)
            saved["bytes"] = buffer.getvalue()

    history = whole.run(_quiet(4), after_step=keep)
    assert [r["phase"] for r in history] == ["ssl", "supervised", "supervised", "supervised"]
    assert "loss_cons" in history[1] and whole.unlabelled._order
    resumed = _trainer(tomogram, labels)
    checkpoint = torch.load(io.BytesIO(saved["bytes"]), weights_only=True)
    resumed.load_state_dict(checkpoint["state"])
    assert resumed.run(_quiet(4), checkpoint["history"]) == history
    for name, tensor in whole.model.state_dict().items():
        assert torch.equal(tensor, resumed.model.state_dict()[name]), name
    for name, tensor in whole.head.state_dict().items():
        assert torch.equal(tensor, resumed.head.state_dict()[name]), name


def test_new_trainer_attributes_are_saved_generically(tomogram: Path, tmp_path: Path) -> None:
    labels = tmp_path / "l.tsv"
    write_particles(labels, ParticleTable([[10, 12, 8], [20, 30, 20]], ["a", "b"]))
    trainer = _trainer(tomogram, labels)
    trainer.extra_head = nn.Linear(2, 2)
    trainer._steps_seen = np.int64(7)
    trainer.unlabelled._cursor = [np.int64(1), 2]
    state = trainer.state_dict()["attributes"]
    assert {"model", "head", "optimizer", "rng", "extra_head", "_steps_seen"} <= set(state)
    assert state["unlabelled"]["_cursor"] == [1, 2] and "volumes" not in state["unlabelled"]
    trainer._steps_seen = 0
    trainer.load_state_dict(trainer.state_dict() | {"attributes": state})
    assert trainer._steps_seen == 7
    trainer._handle = object()
    with pytest.raises(TypeError, match="cannot checkpoint SaSiTrainer._handle"):
        trainer.state_dict()
