"""Each backbone trains with the full SaSi recipe, saves, reloads and picks.

A small easy simulated data set (procedural shapes, SNR 0.5) and short budgets:
the bars are well above chance (random picks score below 0.1 here) but far
below what longer training reaches.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from sasi_scipion.engine.calibration import ClassCalibration
from sasi_scipion.engine.cli import main
from sasi_scipion.engine.coordinates import read_particles, write_particles
from sasi_scipion.engine.demo import few_labels
from sasi_scipion.engine.inference import segment_tiled
from sasi_scipion.engine.metrics import evaluate_occupancy
from sasi_scipion.engine.model_file import load_model
from sasi_scipion.engine.mrc_io import read_volume
from sasi_scipion.engine.normalize import normalise
from sasi_scipion.engine.picking import model_cutoffs
from sasi_scipion.engine.postprocess import DEFAULT_COMPONENTS, extract_particles

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("backbones")
    assert main(["simulate", str(folder), "--tomograms", "2", "--shape", "48,96,96",
                 "--seed", "5"]) == 0
    write_particles(folder / "labels.tsv",
                    few_labels(read_particles(folder / "tomo_000.tsv"), 5, seed=0))
    return folder


@pytest.mark.parametrize(("arch", "iterations", "bar"), [("resunet", 80, 0.3), ("vit", 120, 0.2)])
def test_backbone_trains_saves_reloads_and_picks(data: Path, arch: str, iterations: int,
                                                  bar: float) -> None:
    radii = json.loads((data / "dataset.json").read_text())["radii"]
    model_path = data / f"{arch}.pt"
    assert main(["train", "--tomogram", str(data / "tomo_000.mrc"), "--coords",
                 str(data / "labels.tsv"), *[a for c, r in radii.items()
                                             for a in ("--radius", f"{c}={r}")],
                 "--arch", arch, "--out", str(model_path), "--iterations", str(iterations),
                 "--batch-size", "8", "--seed", "0", "--device", "cpu"]) == 0
    picks_path = data / f"{arch}_picks.tsv"
    assert main(["pick", "--model", str(model_path), "--tomogram", str(data / "tomo_001.mrc"),
                 "--out", str(picks_path), "--precision", "fp32"]) == 0
    picks = read_particles(picks_path, allow_empty=True)
    occupancy = read_volume(data / "tomo_001_occupancy.mrc", check_values=False).data
    result = evaluate_occupancy(picks, read_particles(data / "tomo_001.tsv"),
                                occupancy.astype(np.int64))
    assert result.pooled.f1 > bar, f"{arch}: pooled F1 {result.pooled.f1:.3f}"

    model, meta = load_model(model_path, CPU)
    assert meta.arch == arch and type(model).__name__ != "DeepFinderUNet"
    volume = normalise(read_volume(data / "tomo_001.mrc").data)
    calibration = ClassCalibration.from_dict(meta.class_calibration)
    again = extract_particles(segment_tiled(model, volume, CPU, precision="fp32",
                                            calibration=calibration),
                              meta.classes, meta.radii,
                              min_score=model_cutoffs(meta, DEFAULT_COMPONENTS))
    assert len(again) == len(picks)
    assert np.allclose(again.xyz, picks.xyz, atol=1e-3)
