"""The GPU check's dry run, ``benchmarks/gpu_check.sh OUT --device cpu --tiny``, end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sasi_scipion.engine.defaults import DEFAULT_ITERATIONS
from sasi_scipion.engine.inference import MAX_TILE_VOXELS

REPO = Path(__file__).resolve().parents[2]
STAGES = ["floor", "train", "time_to_f1", "pick", "correct"]


@pytest.fixture(scope="module")
def summary(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("gpu-check")
    run = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu_check.sh"), str(out), "--device", "cpu", "--tiny"],
        # the tiny bf16 SimCLR step took 24 s on an Emerald Rapids CPU: the train stage's
        # 60 s GPU-sized limit is too short for a CPU dry run
        env={**os.environ, "SASI_GPU_PYTHON": sys.executable, "SASI_GPU_LIMIT_TRAIN": "300",
             "SASI_GPU_BUDGET_S": "900"}, capture_output=True, text=True, timeout=1200)
    assert run.returncode == 0, run.stdout + run.stderr
    assert {f"{stage}.{kind}" for stage in STAGES for kind in ("json", "log")} <= {
        path.name for path in out.iterdir()}
    return json.loads((out / "summary.json").read_text())


def test_every_stage_ran_and_passed(summary: dict) -> None:
    assert list(summary["stages"]) == STAGES
    for stage in summary["stages"].values():
        assert stage["rc"] == 0 and stage["result"] and 0 <= stage["seconds"] <= stage["limit_s"]
    defaults = summary["stages"]["floor"]["result"]["environment"]["defaults"]
    assert defaults["max_tile_voxels"] == MAX_TILE_VOXELS["cpu"]
    assert defaults["train_iterations"] == DEFAULT_ITERATIONS["cpu"]
    assert defaults["pick_precision"] in ("bf16", "fp32")


def test_speeds_are_measured(summary: dict) -> None:
    results = {name: stage["result"] for name, stage in summary["stages"].items()}
    assert results["floor"]["floor"]["fp32"]["gflops"] > 0
    fp32 = results["train"]["precisions"]["fp32"]
    assert fp32["default_run_it_per_s"] > 0 and fp32["vs_fp32"] == 1.0
    assert all("error" not in entry for entry in results["train"]["precisions"].values())
    (row,) = results["time_to_f1"]["rows"]
    assert row["train_s"] > 0 and 0 <= row["f1"] <= 1
    rows = results["pick"]["rows"]
    assert {"tiled", "tiled-fp32", "sliding", "monai"} <= {row["mode"] for row in rows}
    for row in rows:
        assert row.get("skipped") or (row["voxels_per_s"] > 0 and row["time_vs_floor"] > 0)
    assert all("skipped" not in row for row in rows if not row["mode"].startswith("monai"))


ROUNDING_FLIPS = 1e-4
"""Largest share of voxels whose label may differ between the tiled and the whole-volume
pass. The two convolve other shapes, so the CPU library may pick other kernels that round
differently (one voxel of 294,912 flipped in fp32 on an AMX Xeon); a tile seam would
change whole faces of a tile."""
SCORE_ROUNDING = 0.02
"""Largest difference of a voxel's score between the two passes: float rounding, not a
seam (which shifts the probabilities near it by far more)."""


def test_tiled_labels_equal_the_whole_volume_pass_up_to_rounding(summary: dict) -> None:
    result = summary["stages"]["correct"]["result"]
    assert result["setup"]["whole_pass_tiles"] == 1 < result["setup"]["tiles"]
    comparisons = result["tiled_vs_whole"]
    assert "fp32" in comparisons
    voxels = int(np.prod(result["setup"]["shape_zyx"]))
    for entry in comparisons.values():
        assert entry["mismatched_voxels"] <= ROUNDING_FLIPS * voxels
        assert entry["max_score_difference"] <= SCORE_ROUNDING
    default = result["precision_agreement"]["precision"]
    assert comparisons[default]["picks_f1"] == 1.0
    assert 0.9 < result["precision_agreement"]["label_agreement"] <= 1
