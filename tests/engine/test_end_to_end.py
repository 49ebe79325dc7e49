"""Simulate, train on 5 labels per class, pick and evaluate: the method works.

One small easy data set (procedural shapes, SNR 0.5), trained once for the
module with every SaSi component on (ISS SimCLR, Volume Infill, consistency) and
half the windows band-limited to up to 1.5 times the voxel size (``--band-limit``),
so that it also picks the coarser tomograms of the voxel-size test.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sasi_scipion.engine.cli import main
from sasi_scipion.engine.coordinates import ParticleTable, read_particles, write_particles
from sasi_scipion.engine.defaults import WINDOW
from sasi_scipion.engine.demo import few_labels
from sasi_scipion.engine.metrics import evaluate_distance, evaluate_occupancy
from sasi_scipion.engine.model_file import load_model, read_model_file
from sasi_scipion.engine.mrc_io import read_volume, write_volume
from sasi_scipion.engine.resample import resample, resampled_shape, to_source_voxels
from sasi_scipion.engine.training import TrainingSettings
from sasi_scipion.engine.training_data import load_training_data
from sasi_scipion.engine.training_run import self_labeller

ITERATIONS = 160
F1_BAR = 0.5
"""Pooled SHREC F1 the test requires; random picks of the same number score
below 0.05 here (see ``test_chance_level``)."""


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    work = tmp_path_factory.mktemp("e2e")
    data = work / "data"
    assert main(["simulate", str(data), "--tomograms", "2", "--shape", "48,128,128",
                 "--seed", "1"]) == 0
    dataset = json.loads((data / "dataset.json").read_text())
    labels = few_labels(read_particles(data / "tomo_000.tsv"), 5, seed=0)
    write_particles(work / "labels.tsv", labels)
    radii = [arg for name, r in dataset["radii"].items() for arg in ("--radius", f"{name}={r}")]
    model = work / "model.pt"
    # float32 on every CPU, as the picks below: the same model wherever the suite runs,
    # so the voxel-size bound tests resampling, not one CPU's bf16 rounding (under the
    # auto precision a CPU with native bf16 trains this 160-step model in bf16, and on
    # an AMX Xeon its 13.5 Å picks then missed the bound; benchmarks/RESULTS.md
    # measures the bound per seed)
    assert main(["train", "--tomogram", str(data / "tomo_000.mrc"),
                 "--coords", str(work / "labels.tsv"), *radii, "--out", str(model),
                 "--iterations", str(ITERATIONS), "--seed", "0", "--device", "cpu",
                 "--band-limit", "1.5", "--precision", "fp32"]) == 0
    return {"work": work, "data": data, "model": model}


def _score(picks_path: Path, data: Path) -> float:
    occupancy = read_volume(data / "tomo_001_occupancy.mrc", check_values=False).data
    result = evaluate_occupancy(read_particles(picks_path, allow_empty=True),
                                read_particles(data / "tomo_001.tsv"), occupancy.astype(np.int64))
    return result.pooled.f1


def test_few_shot_training_finds_the_particles(trained, capsys) -> None:
    picks = trained["work"] / "picks.tsv"
    assert main(["pick", "--model", str(trained["model"]), "--tomogram",
                 str(trained["data"] / "tomo_001.mrc"), "--out", str(picks)]) == 0
    table = read_particles(picks)
    truth = read_particles(trained["data"] / "tomo_001.tsv")
    assert 0.5 * len(truth) < len(table) < 1.5 * len(truth)
    assert table.scores is not None and ((table.scores > 0) & (table.scores <= 1)).all()
    f1 = _score(picks, trained["data"])
    assert f1 > F1_BAR, f"pooled F1 {f1:.3f}"
    capsys.readouterr()
    assert main(["evaluate", "--picks", str(picks), "--truth",
                 str(trained["data"] / "tomo_001.tsv"), "--occupancy",
                 str(trained["data"] / "tomo_001_occupancy.mrc"), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["rule"] == "shrec2021-occupancy"
    assert printed["pooled"]["f1"] == pytest.approx(f1)


@pytest.mark.parametrize("voxel_size", [7.5, 13.5])
def test_a_tomogram_at_another_voxel_size_is_picked_as_well(trained, voxel_size,
                                                            capsys) -> None:
    """The test tomogram (10 Å) resampled to 7.5 and 13.5 Å and written with that
    header: the 10 Å model picks it resampled back on the fly (the coarser one with
    batch-normalisation statistics re-estimated over it), the picks come in its own
    voxels, and, mapped to the 10 Å grid, score within 0.05 F1 of the native
    tomogram's picks."""
    source = read_volume(trained["data"] / "tomo_001.mrc")
    shape = resampled_shape(source.data.shape, source.voxel_size, voxel_size)
    tomogram = trained["work"] / f"tomo_001_{voxel_size}A.mrc"
    write_volume(tomogram, resample(source.data, shape), voxel_size)
    native, other = trained["work"] / "native.tsv", trained["work"] / f"at_{voxel_size}.tsv"
    for path, picks in ((trained["data"] / "tomo_001.mrc", native), (tomogram, other)):
        assert main(["pick", "--model", str(trained["model"]), "--tomogram", str(path),
                     "--out", str(picks), "--precision", "fp32"]) == 0
    log = capsys.readouterr().err
    assert f"resampling {' x '.join(map(str, shape))} voxels of {voxel_size:.3f} Å" in log
    # coarser than the model: picked with statistics re-estimated over it (auto)
    adapted = f"{tomogram}: batch-normalisation statistics re-estimated over this tomogram"
    assert (adapted in log) == (voxel_size > source.voxel_size)
    table = read_particles(other)
    # in the resampled tomogram's voxels: inside it, not inside the 10 Å grid's extent
    extent = np.array(shape[::-1])
    assert (table.xyz < extent).all() and table.xyz.max(0)[0] > 0.8 * extent[0]
    table.xyz = to_source_voxels(table.xyz, source.data.shape, shape)
    mapped = trained["work"] / f"mapped_{voxel_size}.tsv"
    write_particles(mapped, table)
    native_f1, f1 = _score(native, trained["data"]), _score(mapped, trained["data"])
    assert native_f1 > F1_BAR
    assert f1 > native_f1 - 0.05, f"F1 {f1:.3f} at {voxel_size} Å, {native_f1:.3f} native"


def test_chance_level(trained) -> None:
    truth = read_particles(trained["data"] / "tomo_001.tsv")
    shape = np.array([128, 128, 48])
    rng = np.random.default_rng(0)
    random_picks = truth.subset(np.arange(len(truth)))
    random_picks.xyz = rng.uniform(0, 1, size=(len(truth), 3)) * shape
    path = trained["work"] / "random.tsv"
    write_particles(path, random_picks)
    assert _score(path, trained["data"]) < 0.3 < F1_BAR


def test_tiled_and_sliding_pick_the_same_particles(trained) -> None:
    paths = {}
    for mode in ("tiled", "sliding"):
        paths[mode] = trained["work"] / f"picks_{mode}.tsv"
        assert main(["pick", "--model", str(trained["model"]), "--tomogram",
                     str(trained["data"] / "tomo_001.mrc"), "--out", str(paths[mode]),
                     "--mode", mode, "--precision", "fp32"]) == 0
    tiled, sliding = (read_particles(p) for p in paths.values())
    meta, _ = read_model_file(trained["model"])
    agreement = evaluate_distance(tiled, sliding, dict(zip(meta.classes, meta.radii)))
    # The two modes see different context (tiles: the whole receptive field; the paper's
    # windows: 24 voxels, as in training), so a 160-step model does not pick exactly
    # alike. Measured agreement: above 0.85 on an Intel Sapphire Rapids CPU, 0.72 on an
    # AMD Zen 5 CPU (F1 against the truth there: tiled 0.74, sliding 0.87).
    assert agreement.pooled.f1 > 0.65
    for path in paths.values():
        assert _score(path, trained["data"]) > F1_BAR


def test_model_file_records_the_run(trained, capsys) -> None:
    meta, state = read_model_file(trained["model"])
    assert meta.classes == ["disc", "globule", "rod"] and not meta.pretrained_only
    assert meta.voxel_size == pytest.approx(10.0) and meta.window == 24
    assert len(meta.loss_history) == ITERATIONS
    phases = [row["phase"] for row in meta.loss_history]
    assert phases[: ITERATIONS // 10] == ["ssl"] * (ITERATIONS // 10)
    # consistency guidance: in the supervised steps of the first half only
    assert "loss_cons" not in meta.loss_history[0]
    assert "loss_cons" in meta.loss_history[ITERATIONS // 10]
    assert "loss_cons" not in meta.loss_history[-1]
    assert meta.settings["labels"] == 15 and meta.settings["band_limit"] == 1.5
    assert meta.settings["precision"] == "fp32"
    assert meta.settings["batch_norm_statistics"] == "tomogram"  # three classes
    log = trained["model"].with_suffix(".log.jsonl")
    assert len(log.read_text().splitlines()) == ITERATIONS
    capsys.readouterr()
    assert main(["info", "--model", str(trained["model"])]) == 0
    assert json.loads(capsys.readouterr().out)["parameters"] == sum(
        t.numel() for t in state.values())


@pytest.mark.parametrize("mode", ["ignore", "labels"])
def test_self_training_finds_unlabelled_particles_of_the_training_tomogram(trained,
                                                                        mode) -> None:
    dataset = json.loads((trained["data"] / "dataset.json").read_text())
    data = load_training_data([str(trained["data"] / "tomo_000.mrc")],
                              [str(trained["work"] / "labels.tsv")], dataset["radii"], WINDOW)
    network, _ = load_model(trained["model"], torch.device("cpu"))

    def finds(self_training: str) -> ParticleTable:
        settings = TrainingSettings(self_training=self_training)
        (found,) = self_labeller(data, settings, torch.device("cpu"))(network)
        return found

    found = finds(mode)
    truth = read_particles(trained["data"] / "tomo_000.tsv")
    labels = read_particles(trained["work"] / "labels.tsv")
    radius = np.array([dataset["radii"][str(c)] for c in truth.classes])
    to_truth = np.linalg.norm(found.xyz[:, None] - truth.xyz[None], axis=2)
    nearest = to_truth.argmin(axis=1)
    on_particle = to_truth[np.arange(len(found)), nearest] < radius[nearest]
    to_labels = np.linalg.norm(found.xyz[:, None] - labels.xyz[None], axis=2)
    # unlabelled particles of the tomogram, each once, none of them a label; ``labels``
    # keeps those scoring at least the median of the labels' own scores, which the
    # unlabelled particles (taught as background around the labels) mostly score
    # below (0.79-0.88 against the labels' 0.82-0.92 on one such model), so it finds
    # fewer, and always a subset of what ``ignore`` finds (a higher cut-off per class)
    share = 0.25 if mode == "ignore" else 0.1
    assert len(found) >= share * (len(truth) - len(labels)), f"{len(found)} found"
    assert on_particle.mean() >= 0.8, f"{on_particle.mean():.2f} on particles"
    assert len(set(nearest[on_particle])) == on_particle.sum()
    assert (to_labels.min(axis=1) > 4).all()
    if mode == "labels":  # taught with a class: mostly the right one
        right = found.classes[on_particle] == truth.classes[nearest[on_particle]]
        assert right.mean() >= 0.7, f"{right.mean():.2f} of the classes right"
        loose = finds("ignore")
        to_loose = np.linalg.norm(found.xyz[:, None] - loose.xyz[None], axis=2)
        assert len(found) < len(loose) and (to_loose.min(axis=1) < 1e-6).all()


def test_seed_makes_cpu_training_reproducible(trained) -> None:
    weights = []
    for run in range(2):
        out = trained["work"] / f"repro{run}.pt"
        assert main(["train", "--tomogram", str(trained["data"] / "tomo_000.mrc"),
                     "--coords", str(trained["work"] / "labels.tsv"), "--radius", "8",
                     "--out", str(out), "--iterations", "4", "--batch-size", "4",
                     "--seed", "7", "--device", "cpu"]) == 0
        weights.append(read_model_file(out)[1])
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_console_script_is_installed() -> None:
    result = subprocess.run([Path(sys.executable).parent / "sasi", "--version"],
                            capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.startswith("sasi ")
