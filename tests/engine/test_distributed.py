"""Data-parallel training with torchrun: 2 CPU processes (gloo) learn what 1 does."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sasi_scipion.engine.cli import main
from sasi_scipion.engine.model_file import load_model, read_model_file

ITERATIONS = 6
"""Step 1 is SimCLR (ISS, 10 %), steps 1 to 3 add consistency guidance, the rest are
supervised with infill: every loss that crosses the processes is exercised."""


def _train(tomogram: Path, labels: Path, out: Path, processes: int,
           *extra: str) -> subprocess.CompletedProcess:
    """``sasi train [EXTRA]`` in ``processes`` processes, in float32 whatever the CPU: the
    tolerances below are float32 rounding (bf16 autocast, the default on a CPU with native bf16,
    rounds each convolution to 8 bits of mantissa and would hide a real mismatch)."""
    command = [sys.executable, "-m", "sasi_scipion.engine.cli", "train", "--tomogram",
               str(tomogram), "--coords", str(labels), "--radius", "3", "--iterations",
               str(ITERATIONS), "--batch-size", "4", "--seed", "5", "--device", "cpu",
               "--processes", str(processes), "--precision", "fp32", "--out", str(out),
               *extra]
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[int, tuple[subprocess.CompletedProcess, Path]]:
    from sasi_scipion.engine.coordinates import ParticleTable, write_particles
    from sasi_scipion.engine.mrc_io import write_volume

    folder = tmp_path_factory.mktemp("ddp")
    rng = np.random.default_rng(0)
    write_volume(folder / "tomo.mrc", rng.normal(size=(40, 48, 48)).astype(np.float32), 10.0)
    write_particles(folder / "labels.tsv", ParticleTable(
        [[10, 12, 8], [30, 20, 16], [20, 30, 20], [36, 10, 24]], ["a", "a", "b", "b"]))
    return {n: (_train(folder / "tomo.mrc", folder / "labels.tsv", folder / f"m{n}.pt", n),
                folder / f"m{n}.pt") for n in (1, 2)}


def test_two_processes_learn_what_one_learns(runs) -> None:
    for result, _ in runs.values():
        assert result.returncode == 0, result.stderr[-2000:]
    (meta_one, weights_one), (meta_two, weights_two) = (read_model_file(runs[n][1])
                                                        for n in (1, 2))
    assert meta_two.settings["processes"] == 2 and meta_one.settings["processes"] == 1
    losses_one = [r["loss"] for r in meta_one.loss_history]
    losses_two = [r["loss"] for r in meta_two.loss_history]
    assert [r["phase"] for r in meta_two.loss_history] == ["ssl"] + ["supervised"] * 5
    assert "loss_cons" in meta_two.loss_history[2]
    # 2.2e-4 at most with batch normalisation (its statistics summed over the processes
    # as sums and sums of squares, one process's by torch's own kernel); 0.2 when each
    # process normalised with its own share's statistics
    np.testing.assert_allclose(losses_two, losses_one, rtol=2e-3)
    difference = np.concatenate([(weights_two[k] - v).abs().flatten().numpy()
                                 for k, v in weights_one.items() if v.is_floating_point()])
    # Adam turns a rounding-level gradient near zero into a full step of either sign, so
    # some weights differ by up to a learning rate; batch normalisation of batches of
    # 4 windows makes rounding visible in most decoder weights (a third of all weights
    # differ by over 1e-5, as much as one process differs from itself with the
    # statistics computed as sums instead of by torch's kernel). A real mismatch moves
    # the losses and the function the two nets compute.
    assert np.quantile(difference, 0.99) < 1e-3  # one supervised learning rate
    x = torch.from_numpy(np.random.default_rng(1).normal(size=(2, 1, 24, 24, 24))
                         .astype(np.float32))
    with torch.no_grad():
        probs = [torch.softmax(load_model(runs[n][1], torch.device("cpu"))[0](x), 1)
                 for n in (1, 2)]
    # 1.4e-3 at most on an Intel Emerald Rapids CPU (AMX), under 1e-3 on an AMD Zen 4,
    # with the training steps' batch-norm statistics; 0.015 on an AMD EPYC (family 25
    # model 1) since training re-estimates them from the final weights (batch_statistics),
    # which carries those flipped steps into every normalisation: the rounding depends on
    # the CPU's kernels. A real mismatch moves the losses above.
    assert float((probs[0] - probs[1]).abs().max()) < 0.03


def test_only_rank_zero_writes_and_both_ranks_ran(runs) -> None:
    result, out = runs[2]
    assert "starting 2 training processes" in result.stderr
    assert "rank=0/2" in result.stderr and "rank=1/2" in result.stderr
    assert sorted(p.name for p in out.parent.glob("m2*")) == ["m2.json", "m2.log.jsonl", "m2.pt"]


@pytest.mark.slow
def test_self_training_finds_the_same_particles_in_two_processes(runs) -> None:
    """Self-training half-way (step 3): rank 0's finds are broadcast, so both processes
    leave the same voxels out of the loss and the run matches one process's."""
    folder = runs[1][1].parent
    metadata = {}
    for n in (1, 2):
        out = folder / f"self_training{n}.pt"
        result = _train(folder / "tomo.mrc", folder / "labels.tsv", out, n,
                        "--self-training", "ignore", "--self-training-at", "0.5")
        assert result.returncode == 0, result.stderr[-2000:]
        assert "train: self-training (ignore) with" in result.stderr
        metadata[n] = read_model_file(out)[0]
    found = [[r.get("self_labels") for r in metadata[n].loss_history] for n in (1, 2)]
    assert found[0] == found[1] and found[0][3] is not None
    assert metadata[2].settings["self_training"] == "ignore"
    assert metadata[2].settings["self_labels_found"] == found[0][3]
    np.testing.assert_allclose([r["loss"] for r in metadata[2].loss_history],
                               [r["loss"] for r in metadata[1].loss_history], rtol=2e-3)


def test_batch_must_split_over_the_processes(runs, tmp_path, capsys) -> None:
    folder = runs[1][1].parent
    status = main(["train", "--tomogram", str(folder / "tomo.mrc"), "--coords",
                   str(folder / "labels.tsv"), "--radius", "3", "--out",
                   str(tmp_path / "m.pt"), "--batch-size", "5", "--processes", "2",
                   "--device", "cpu"])
    assert status == 2
    assert "--batch-size 5 does not split evenly over --processes 2" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())

