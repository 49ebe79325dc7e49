"""``sasi demo``: a user's first minutes: simulate, label a few, train, pick, score.

Every step is a library call (``docs/api.md``): ``simulate_dataset``, then
``train`` (with a checkpoint beside the model, so that a rerun with the same ``out``
goes on from an interrupted training), ``pick`` and ``evaluate``, with progress lines
on stderr. The ``sasi demo`` command calls :func:`run_demo`.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from .api import evaluate, pick, train
from .checkpoint import checkpoint_path
from .coordinates import ParticleTable, read_particles, write_particles
from .progress import ProgressLog
from .simulate import simulate_dataset
from .training import TrainingSettings

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


def run_demo(out: str | Path, iterations: int | None = None, seed: int = 0,
             device: str = "auto") -> float:
    """Run the demo in folder ``out``; print and return the pooled F1 on the test
    tomogram. Writes ``data/`` (two simulated tomograms, their particles and
    occupancy maps), ``labels.tsv``, ``model.pt`` (and its side-car) and
    ``picks_tomo_001.tsv``; while training, ``model.pt.ckpt``, from which a rerun
    goes on after an interruption.

    Args:
        out: the work folder.
        iterations: training steps (``None``: :data:`DEMO_ITERATIONS`).
        seed: seed of the data, the labels drawn and the training.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
    """
    start = time.perf_counter()
    work = Path(out)
    data = work / "data"
    dataset = simulate_dataset(data, tomograms=2, shape_zyx=DEMO_SHAPE, seed=seed)
    print(f"wrote 2 tomogram(s) to {data}")
    labels = few_labels(read_particles(data / "tomo_000.tsv"), DEMO_LABELS_PER_CLASS, seed)
    write_particles(work / "labels.tsv", labels)
    model_path = work / "model.pt"
    settings = TrainingSettings(iterations=iterations or DEMO_ITERATIONS, seed=seed)
    with ProgressLog(settings.iterations, "train") as log:
        model = train([data / "tomo_000.mrc"], [work / "labels.tsv"],
                      {name: float(radius) for name, radius in dataset["radii"].items()},
                      settings=settings, device=device,
                      progress=lambda done, _: log.update(done),
                      checkpoint=checkpoint_path(model_path))
    model.save(model_path)
    print(f"trained {', '.join(model.classes)} -> {model_path}")
    picks_path = work / "picks_tomo_001.tsv"
    with ProgressLog(1, "pick tomo_001.mrc", step_name="tile") as log:
        def report(done: int, total: int) -> None:
            log.total = total
            log.update(done)

        picks = pick(model_path, data / "tomo_001.mrc", device=device, progress=report)
    write_particles(picks_path, picks)
    counts = ", ".join(f"{name}: {int((picks.classes == name).sum())}"
                       for name in picks.class_names)
    print(f"picked {len(picks)} particle(s) ({counts or 'none'}) -> {picks_path}")
    result = evaluate(picks_path, data / "tomo_001.tsv",
                      occupancy=data / "tomo_001_occupancy.mrc")
    print(result.format_table())
    print(f"demo: trained on {len(labels)} labels ({DEMO_LABELS_PER_CLASS} per class) of "
          f"tomo_000, picked tomo_001: F1 {result.pooled.f1:.3f} in "
          f"{time.perf_counter() - start:.0f} s; files in {work}", file=sys.stderr)
    return result.pooled.f1
