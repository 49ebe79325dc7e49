"""``sasi demo``: a user's first minutes: simulate, label a few, train, pick, score."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from .coordinates import ParticleTable, read_particles, write_particles
from .errors import SasiInputError
from .metrics import evaluate_occupancy
from .mrc_io import read_volume

DEMO_SHAPE = "64,160,160"
DEMO_LABELS_PER_CLASS = 5
DEMO_ITERATIONS = 300


def few_labels(truth: ParticleTable, per_class: int, seed: int) -> ParticleTable:
    """``per_class`` particles of every class drawn from ``truth`` with a fixed seed."""
    rng = np.random.default_rng(seed)
    chosen = [
        rng.choice(np.flatnonzero(truth.classes == name),
                   size=min(per_class, int((truth.classes == name).sum())), replace=False)
        for name in truth.class_names
    ]
    return truth.subset(np.sort(np.concatenate(chosen)))


def _sasi(*argv: str) -> None:
    from .cli import main

    if main(list(argv)) != 0:
        raise SasiInputError(f"demo step 'sasi {argv[0]}' failed (see above)")


def run_demo(out: str, iterations: int | None, seed: int, device_spec: str) -> float:
    """Run the demo in folder ``out``; print and return the pooled F1 on the test tomogram."""
    start = time.perf_counter()
    work = Path(out)
    data = work / "data"
    _sasi("simulate", str(data), "--tomograms", "2", "--shape", DEMO_SHAPE, "--seed", str(seed))
    dataset = json.loads((data / "dataset.json").read_text())
    labels = few_labels(read_particles(data / "tomo_000.tsv"), DEMO_LABELS_PER_CLASS, seed)
    write_particles(work / "labels.tsv", labels)
    radii = [f"{name}={radius}" for name, radius in dataset["radii"].items()]
    model = work / "model.pt"
    _sasi("train", "--tomogram", str(data / "tomo_000.mrc"), "--coords", str(work / "labels.tsv"),
          *[arg for r in radii for arg in ("--radius", r)], "--out", str(model),
          "--iterations", str(iterations or DEMO_ITERATIONS), "--seed", str(seed),
          "--device", device_spec, "--resume")
    picks = work / "picks_tomo_001.tsv"
    _sasi("pick", "--model", str(model), "--tomogram", str(data / "tomo_001.mrc"),
          "--out", str(picks), "--device", device_spec)
    result = evaluate_occupancy(
        read_particles(picks, allow_empty=True), read_particles(data / "tomo_001.tsv"),
        read_volume(data / "tomo_001_occupancy.mrc", check_values=False).data.astype(np.int64),
    )
    print(result.format_table())
    print(f"demo: trained on {len(labels)} labels ({DEMO_LABELS_PER_CLASS} per class) of "
          f"tomo_000, picked tomo_001: F1 {result.pooled.f1:.3f} in "
          f"{time.perf_counter() - start:.0f} s; files in {work}", file=sys.stderr)
    return result.pooled.f1
