"""``sasi demo``: a user's first minutes: simulate, label a few, train, pick, score.

Training and picking run as the ``sasi train`` and ``sasi pick`` commands the user
would type (with their progress lines, log files and ``--resume``), through the
runner the ``sasi`` command hands in; simulating and scoring are library calls.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from .api import evaluate
from .coordinates import ParticleTable, read_particles, write_particles
from .errors import SasiInputError
from .simulate import simulate_dataset

DEMO_SHAPE = (64, 160, 160)
"""Shape ``(z, y, x)`` of the demo's two simulated tomograms, voxels."""
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


def run_demo(out: str, iterations: int | None, seed: int, device_spec: str,
             sasi: Callable[[Sequence[str]], int]) -> float:
    """Run the demo in folder ``out``, its commands through ``sasi`` (``cli.main``);
    print and return the pooled F1 on the test tomogram."""
    def step(*argv: str) -> None:
        if sasi(list(argv)) != 0:
            raise SasiInputError(f"demo step 'sasi {argv[0]}' failed (see above)")

    start = time.perf_counter()
    work = Path(out)
    data = work / "data"
    dataset = simulate_dataset(data, tomograms=2, shape_zyx=DEMO_SHAPE, seed=seed)
    print(f"wrote 2 tomogram(s) to {data}")
    labels = few_labels(read_particles(data / "tomo_000.tsv"), DEMO_LABELS_PER_CLASS, seed)
    write_particles(work / "labels.tsv", labels)
    radii = [f"{name}={radius}" for name, radius in dataset["radii"].items()]
    model = work / "model.pt"
    step("train", "--tomogram", str(data / "tomo_000.mrc"), "--coords", str(work / "labels.tsv"),
          *[arg for r in radii for arg in ("--radius", r)], "--out", str(model),
          "--iterations", str(iterations or DEMO_ITERATIONS), "--seed", str(seed),
          "--device", device_spec, "--resume")
    picks = work / "picks_tomo_001.tsv"
    step("pick", "--model", str(model), "--tomogram", str(data / "tomo_001.mrc"),
          "--out", str(picks), "--device", device_spec)
    result = evaluate(picks, data / "tomo_001.tsv", occupancy=data / "tomo_001_occupancy.mrc")
    print(result.format_table())
    print(f"demo: trained on {len(labels)} labels ({DEMO_LABELS_PER_CLASS} per class) of "
          f"tomo_000, picked tomo_001: F1 {result.pooled.f1:.3f} in "
          f"{time.perf_counter() - start:.0f} s; files in {work}", file=sys.stderr)
    return result.pooled.f1
