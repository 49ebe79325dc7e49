"""Training speed on the CPU at the default settings, and time to the demo's F1.

Data: the demo's (``sasi_scipion/engine/demo.py``): two simulated 64 x 160 x 160
tomograms, 5 labels per class of tomo_000, seed 0.

1. Iterations per second of ``SaSiTrainer.step`` at the ``sasi train`` defaults
   (fp32, batch 16, infill, consistency guidance in the first half, ISS SimCLR
   on the first 10 %), per kind of step, each timed over ``--iterations`` steps
   after ``--warmup`` untimed ones:
   - ``ssl+consistency``: a SimCLR step (first 10 % of a run);
   - ``supervised+consistency``: up to half of a run;
   - ``supervised``: the second half.
   ``default_run_it_per_s`` weights them as a default run does (10 / 40 / 50 %).
2. Time to F1: full ``sasi train`` runs (default schedule for that budget, as
   ``sasi demo --iterations N``) for each budget in ``--budgets``, each picked
   on tomo_001 with ``sasi pick`` and scored as the demo scores it (pooled F1,
   occupancy rule); the first budget whose F1 reaches ``--target`` ends it.

Usage: python benchmarks/train_speed.py [--budgets 100 200 300 600] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from conv_floor import cpu_model
from report import write_report

from sasi_scipion.engine.cli import main as sasi
from sasi_scipion.engine.coordinates import read_particles, write_particles
from sasi_scipion.engine.demo import DEMO_LABELS_PER_CLASS, DEMO_SHAPE, few_labels
from sasi_scipion.engine.metrics import evaluate_occupancy
from sasi_scipion.engine.models import build_backbone
from sasi_scipion.engine.mrc_io import read_volume
from sasi_scipion.engine.train_command import DEFAULT_ITERATIONS, WINDOW
from sasi_scipion.engine.training import SaSiTrainer, TrainingSettings
from sasi_scipion.engine.training_data import load_training_data

SEED = 0


def _run(*argv: str) -> None:
    if sasi(list(argv)) != 0:
        raise SystemExit(f"'sasi {' '.join(argv)}' failed (see above)")


def prepare(work: Path) -> list[str]:
    """Simulate the demo data in ``work``, write its labels; return the radius options."""
    data = work / "data"
    _run("simulate", str(data), "--tomograms", "2", "--shape", DEMO_SHAPE, "--seed", str(SEED))
    labels = few_labels(read_particles(data / "tomo_000.tsv"), DEMO_LABELS_PER_CLASS, SEED)
    write_particles(work / "labels.tsv", labels)
    radii = json.loads((data / "dataset.json").read_text())["radii"]
    return [f"{name}={radius}" for name, radius in radii.items()]


def step_rates(work: Path, radii: list[str], iterations: int, warmup: int) -> dict:
    """Iterations per second of each kind of default training step (see module docstring)."""
    device = torch.device("cpu")
    data = load_training_data([str(work / "data" / "tomo_000.mrc")],
                              [str(work / "labels.tsv")], radii, WINDOW)
    total = DEFAULT_ITERATIONS["cpu"]
    settings = TrainingSettings(iterations=total, window=WINDOW, seed=SEED)
    torch.manual_seed(SEED)
    model = build_backbone("deepfinder", len(data.class_names) + 1)
    trainer = SaSiTrainer(model, data, data.volumes, settings, device)
    ssl_steps = int(round(settings.ssl_fraction * total))
    phases = {"ssl+consistency": 0, "supervised+consistency": ssl_steps,
              "supervised": total // 2}
    shares = {"ssl+consistency": ssl_steps / total,
              "supervised+consistency": (total // 2 - ssl_steps) / total,
              "supervised": (total - total // 2) / total}
    rates = {}
    for phase, first in phases.items():
        for i in range(warmup):
            trainer.step(first + i)
        start = time.perf_counter()
        for i in range(iterations):
            trainer.step(first + warmup + i)
        rates[phase] = round(iterations / (time.perf_counter() - start), 3)
        print(f"{phase}: {rates[phase]} it/s", file=sys.stderr)
    seconds_per_it = sum(shares[p] / rates[p] for p in rates)
    return {"it_per_s": rates, "shares": shares, "default_run_it_per_s":
            round(1 / seconds_per_it, 3), "default_run_iterations": total,
            "predicted_default_run_s": round(total * seconds_per_it)}


def time_to_f1(work: Path, radii: list[str], budgets: list[int], target: float) -> list[dict]:
    """Train, pick and score the demo for each budget until pooled F1 reaches ``target``."""
    data = work / "data"
    occupancy = read_volume(data / "tomo_001_occupancy.mrc",
                            check_values=False).data.astype(np.int64)
    truth = read_particles(data / "tomo_001.tsv")
    rows = []
    for budget in budgets:
        model = work / f"model_{budget}.pt"
        start = time.perf_counter()
        _run("train", "--tomogram", str(data / "tomo_000.mrc"),
             "--coords", str(work / "labels.tsv"), *[a for r in radii for a in ("--radius", r)],
             "--out", str(model), "--iterations", str(budget), "--seed", str(SEED),
             "--device", "cpu")
        train_s = time.perf_counter() - start
        picks = work / f"picks_{budget}.tsv"
        start = time.perf_counter()
        _run("pick", "--model", str(model), "--tomogram", str(data / "tomo_001.mrc"),
             "--out", str(picks), "--device", "cpu")
        pick_s = time.perf_counter() - start
        pooled = evaluate_occupancy(read_particles(picks, allow_empty=True), truth,
                                    occupancy).pooled
        rows.append({"iterations": budget, "train_s": round(train_s, 1),
                     "train_it_per_s": round(budget / train_s, 3), "pick_s": round(pick_s, 1),
                     "f1": round(pooled.f1, 3), "precision": round(pooled.precision, 3),
                     "recall": round(pooled.recall, 3)})
        print(rows[-1], file=sys.stderr)
        if pooled.f1 >= target:
            break
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=40, help="timed steps per kind")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--budgets", type=int, nargs="+", default=[100, 200, 300, 600])
    parser.add_argument("--target", type=float, default=0.9)
    parser.add_argument("--out")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sasi-train-speed-") as folder:
        work = Path(folder)
        radii = prepare(work)
        steps = step_rates(work, radii, args.iterations, args.warmup)
        f1_rows = time_to_f1(work, radii, args.budgets, args.target)
    reached = next((r for r in f1_rows if r["f1"] >= args.target), None)
    write_report(f1_rows, args.out, cpu_model=cpu_model(), demo_shape=DEMO_SHAPE,
                 labels_per_class=DEMO_LABELS_PER_CLASS, seed=SEED, step_rates=steps,
                 target_f1=args.target,
                 time_to_target_s=reached["train_s"] if reached else None,
                 iterations_to_target=reached["iterations"] if reached else None,
                 peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)


if __name__ == "__main__":
    main()
