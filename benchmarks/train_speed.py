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
from sasi_scipion.engine.defaults import DEFAULT_ITERATIONS, WINDOW
from sasi_scipion.engine.demo import DEMO_LABELS_PER_CLASS, DEMO_SHAPE, few_labels
from sasi_scipion.engine.metrics import evaluate_occupancy
from sasi_scipion.engine.models import build_backbone
from sasi_scipion.engine.mrc_io import read_volume
from sasi_scipion.engine.training import SaSiTrainer, TrainingSettings
from sasi_scipion.engine.training_data import load_training_data, parse_radii
from sasi_scipion.engine.training_run import network_params

SEED = 0
DEMO_SHAPE_OPTION = ",".join(map(str, DEMO_SHAPE))
"""The demo's tomogram shape as ``sasi simulate --shape`` takes it (``z,y,x``)."""
TARGET_F1 = 0.9
"""The demo's F1 target: pooled F1 on tomo_001, occupancy rule."""
BUDGETS = (100, 200, 300, 600)
"""Training budgets (iterations) tried in turn for the time to ``TARGET_F1`` on a CPU."""


def _run(*argv: str) -> None:
    if sasi(list(argv)) != 0:
        raise SystemExit(f"'sasi {' '.join(argv)}' failed (see above)")


def prepare(work: Path, shape: str = DEMO_SHAPE_OPTION) -> list[str]:
    """Simulate the demo data (two ``shape`` tomograms, ``z,y,x`` voxels) in ``work``, write
    its labels; return the radius options."""
    data = work / "data"
    _run("simulate", str(data), "--tomograms", "2", "--shape", shape, "--seed", str(SEED))
    labels = few_labels(read_particles(data / "tomo_000.tsv"), DEMO_LABELS_PER_CLASS, SEED)
    write_particles(work / "labels.tsv", labels)
    return radius_options(work)


def radius_options(work: Path) -> list[str]:
    """``--radius CLASS=R`` values (voxels) of the data ``prepare`` simulated in ``work``."""
    radii = json.loads((work / "data" / "dataset.json").read_text())["radii"]
    return [f"{name}={radius}" for name, radius in radii.items()]


def default_trainer(work: Path, radii: list[str], device: torch.device,
                    trainer_class: type[SaSiTrainer] = SaSiTrainer,
                    **settings: object) -> SaSiTrainer:
    """A trainer of the ``sasi train`` default run on ``device`` (its default budget) for
    the labelled tomogram of ``prepare``; ``settings`` override ``TrainingSettings`` fields."""
    data = load_training_data([str(work / "data" / "tomo_000.mrc")],
                              [str(work / "labels.tsv")], parse_radii(radii), WINDOW)
    options = TrainingSettings(iterations=DEFAULT_ITERATIONS[device.type], window=WINDOW,
                               seed=SEED, **settings)  # type: ignore[arg-type]
    torch.manual_seed(SEED)
    model = build_backbone("deepfinder", len(data.class_names) + 1,
                           **network_params("deepfinder", None))  # what sasi train builds
    return trainer_class(model, data, data.volumes, options, device)


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_rates(trainer: SaSiTrainer, iterations: int, warmup: int) -> dict:
    """Iterations per second of each kind of default training step (see module docstring)."""
    total = trainer.settings.iterations
    ssl_steps = int(round(trainer.settings.ssl_fraction * total))
    phases = {"ssl+consistency": 0, "supervised+consistency": ssl_steps,
              "supervised": total // 2}
    shares = {"ssl+consistency": ssl_steps / total,
              "supervised+consistency": (total // 2 - ssl_steps) / total,
              "supervised": (total - total // 2) / total}
    rates = {}
    for phase, first in phases.items():
        for i in range(warmup):
            trainer.step(first + i)
        _synchronise(trainer.device)
        start = time.perf_counter()
        for i in range(iterations):
            trainer.step(first + warmup + i)
        _synchronise(trainer.device)
        rates[phase] = round(iterations / (time.perf_counter() - start), 3)
        print(f"{phase}: {rates[phase]} it/s", file=sys.stderr)
    seconds_per_it = sum(shares[p] / rates[p] for p in rates)
    return {"it_per_s": rates, "shares": shares, "default_run_it_per_s":
            round(1 / seconds_per_it, 3), "default_run_iterations": total,
            "predicted_default_run_s": round(total * seconds_per_it)}


def time_to_f1(work: Path, radii: list[str], budgets: list[int], target: float,
               device: str = "cpu", train_options: tuple[str, ...] = ()) -> list[dict]:
    """Train (``sasi train`` with ``train_options``), pick and score the demo on ``device``
    for each budget until pooled F1 reaches ``target``; seconds per row. The models stay
    in ``work`` as ``model_<budget>.pt``."""
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
             "--device", device, *train_options)
        train_s = time.perf_counter() - start
        picks = work / f"picks_{budget}.tsv"
        start = time.perf_counter()
        _run("pick", "--model", str(model), "--tomogram", str(data / "tomo_001.mrc"),
             "--out", str(picks), "--device", device)
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
    parser.add_argument("--budgets", type=int, nargs="+", default=list(BUDGETS))
    parser.add_argument("--target", type=float, default=TARGET_F1)
    parser.add_argument("--out")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sasi-train-speed-") as folder:
        work = Path(folder)
        radii = prepare(work)
        trainer = default_trainer(work, radii, torch.device("cpu"))
        steps = step_rates(trainer, args.iterations, args.warmup)
        f1_rows = time_to_f1(work, radii, args.budgets, args.target)
    reached = next((r for r in f1_rows if r["f1"] >= args.target), None)
    write_report(f1_rows, args.out, cpu_model=cpu_model(), demo_shape=DEMO_SHAPE_OPTION,
                 labels_per_class=DEMO_LABELS_PER_CLASS, seed=SEED, step_rates=steps,
                 target_f1=args.target,
                 time_to_target_s=reached["train_s"] if reached else None,
                 iterations_to_target=reached["iterations"] if reached else None,
                 peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)


if __name__ == "__main__":
    main()
