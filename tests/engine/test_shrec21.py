"""The SHREC 2021 harness (``benchmarks/shrec21.py``) on a miniature SHREC folder made
by the simulator in the challenge's layout (``model_0`` .. ``model_9``, each with
``reconstruction.mrc``, ``particle_locations.txt`` written by the SHREC writer,
``occupancy_mask.mrc``, ``class_mask.mrc``); one simulated class is renamed 4V94, which
the protocol neither labels nor scores."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from sasi_scipion.engine.coordinates import ParticleTable
from sasi_scipion.engine.formats import write_coordinates
from sasi_scipion.engine.mrc_io import write_volume
from sasi_scipion.engine.simulate import procedural_templates, simulate_tomogram

HARNESS = Path(__file__).resolve().parents[2] / "benchmarks" / "shrec21.py"
SHAPE = (32, 64, 64)
RENAMED = {"rod": "4V94"}


def _harness():
    spec = importlib.util.spec_from_file_location("shrec21", HARNESS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


shrec21 = _harness()


@pytest.fixture(scope="module")
def miniature(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("shrec")
    templates = procedural_templates(10.0)
    for model in shrec21.MODELS:
        tomogram = simulate_tomogram(SHAPE, templates, np.random.default_rng(model), 0.5)
        folder = root / f"model_{model}"
        folder.mkdir()
        truth = ParticleTable(tomogram.truth.xyz, [RENAMED.get(str(c), str(c))
                                                   for c in tomogram.truth.classes])
        write_volume(folder / "reconstruction.mrc", tomogram.volume, 10.0)
        write_coordinates(folder / "particle_locations.txt", truth, "shrec")
        write_volume(folder / "occupancy_mask.mrc", tomogram.occupancy.astype(np.int16), 10.0)
        rank = {name: i + 1 for i, name in enumerate(truth.class_names)}
        classes = np.array([0] + [rank[str(c)] for c in truth.classes], dtype=np.int16)
        write_volume(folder / "class_mask.mrc", classes[tomogram.occupancy], 10.0)
    return root


def _prepared(root: Path, z_range=None) -> dict:
    return {m: shrec21.prepare_model(root, root, m, z_range) for m in shrec21.TEST_SETS["T6-9"]}


def test_truth_as_picks_scores_one_and_no_picks_zero(miniature: Path) -> None:
    prepared = _prepared(miniature)
    truths = {m: p[1] for m, p in prepared.items()}
    occupancies = {m: p[2] for m, p in prepared.items()}
    perfect = shrec21.score_sets(truths, truths, occupancies, shrec21.SHREC_UNSCORED)
    empty = {m: ParticleTable.empty() for m in truths}
    none = shrec21.score_sets(empty, truths, occupancies, shrec21.SHREC_UNSCORED)
    for name, models in shrec21.TEST_SETS.items():
        scored = sum(int((truths[m].classes != "4V94").sum()) for m in models)
        assert perfect[name]["pooled"] == pytest.approx(
            {"tp": scored, "fp": 0, "fn": 0, "precision": 1, "recall": 1, "f1": 1})
        assert perfect[name]["class_aware"]["f1"] == 1.0
        assert (none[name]["pooled"]["fn"], none[name]["pooled"]["f1"]) == (scored, 0.0)


def test_counts_are_summed_over_each_test_set(miniature: Path) -> None:
    """Perfect picks on model_9 alone: F1 1 on T9, recall the share of model_9's
    particles on T8-9 and T6-9; the classes swapped: pooled F1 unchanged, class-aware 0."""
    prepared = _prepared(miniature)
    truths = {m: p[1] for m, p in prepared.items()}
    scored = {m: int((t.classes != "4V94").sum()) for m, t in truths.items()}
    swap = {"disc": "globule", "globule": "disc", "4V94": "4V94"}
    picks = {m: ParticleTable.empty() for m in truths}
    picks[9] = ParticleTable(truths[9].xyz, [swap[str(c)] for c in truths[9].classes])
    report = shrec21.score_sets(picks, truths, {m: p[2] for m, p in prepared.items()},
                                shrec21.SHREC_UNSCORED)
    assert report["T9"]["pooled"]["f1"] == 1.0 and report["T9"]["class_aware"]["tp"] == 0
    for name, models in shrec21.TEST_SETS.items():
        assert report[name]["pooled"]["recall"] == pytest.approx(
            scored[9] / sum(scored[m] for m in models))


def test_z_range_crop_keeps_ids_and_positions_together(miniature: Path, tmp_path: Path) -> None:
    tomogram, truth, occupancy = shrec21.prepare_model(miniature, tmp_path, 9, slice(8, 24))
    assert occupancy.shape == (16, *SHAPE[1:]) and tomogram.is_file()
    assert occupancy.max() == len(truth) and len(truth) > 0
    voxel = np.rint(truth.xyz).astype(int)
    inside = (voxel[:, 2] >= 0) & (voxel[:, 2] < 16)
    at_centre = occupancy[voxel[inside, 2], voxel[inside, 1], voxel[inside, 0]]
    assert np.mean(at_centre == np.flatnonzero(inside) + 1) > 0.9


def test_radii_from_occupancy_of_spheres() -> None:
    z, y, x = np.mgrid[:40, :40, :40]
    occupancy = np.zeros((40, 40, 40), dtype=np.int64)
    occupancy[(x - 10) ** 2 + (y - 10) ** 2 + (z - 10) ** 2 <= 16] = 1
    occupancy[(x - 28) ** 2 + (y - 28) ** 2 + (z - 28) ** 2 <= 49] = 2
    truth = ParticleTable([[10, 10, 10], [28, 28, 28]], ["small", "large"])
    radii = shrec21.occupancy_radii(truth, occupancy)
    assert radii["small"] == pytest.approx(4, abs=0.3)
    assert radii["large"] == pytest.approx(7, abs=0.3)


def test_folder_without_a_test_model_is_refused_in_one_line(tmp_path: Path, capsys) -> None:
    (tmp_path / "model_0").mkdir()
    assert shrec21.main([str(tmp_path), "--work", str(tmp_path / "w")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a SHREC 2021 folder, 15 file(s) missing" in err[0]
    assert "model_0/reconstruction.mrc" in err[0]


@pytest.mark.slow
def test_harness_trains_picks_and_prints_the_paper_table(miniature: Path, tmp_path: Path,
                                                         capsys) -> None:
    report_path = tmp_path / "report.json"
    assert shrec21.main([
        str(miniature), "--work", str(tmp_path / "work"), "--labels", "3", "--iterations",
        "2", "--device", "cpu", "--z-range", "4:28", "--out", str(report_path),
        "--train-args", "--batch-size 2 --ssl none --no-infill --no-consistency"]) == 0
    lines = capsys.readouterr().out.splitlines()
    paper = next(line for line in lines if line.startswith("SaSi (DF, ISS + infill)"))
    assert [c.strip() for c in paper.split("|")[1:]] == [
        ".378", ".262", ".273", ".372", ".362", ".315", ".359", ".410", ".356"]
    ours = lines[-1].split("|")
    assert ours[0].startswith("SaSi, this run (2 it., seed 0)")
    assert [v.strip() for v in ours[4:]] == ["-"] * 6
    report = json.loads(report_path.read_text())
    assert "4V94" not in report["radii"] and set(report["radii"]) == {"disc", "globule"}
    t69 = report["results"]["3"]["T6-9"]["pooled"]
    cropped = [shrec21.prepare_model(miniature, tmp_path, m, slice(4, 28))[1]
               for m in shrec21.TEST_SETS["T6-9"]]
    assert t69["tp"] + t69["fn"] == sum(int((t.classes != "4V94").sum()) for t in cropped)
    assert [float(v) for v in ours[1:4]] == pytest.approx(
        [report["results"]["3"][s]["pooled"]["f1"] for s in shrec21.TEST_SETS], abs=5e-4)
