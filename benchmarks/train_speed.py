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
2. Time to F1: full training runs (the library's ``train``, as ``sasi train`` and
   ``sasi demo --iterations N`` run it: default schedule for that budget) for each
   budget in ``--budgets``, each picked on tomo_001 (``pick``) and scored as the
   demo scores it (pooled F1, occupancy rule); the first budget whose F1 reaches
   ``--target`` ends it.

Side by side: ``--precisions fp32 bf16 --rounds 2`` times the steps of each
training precision in turn (the order reversed every round), one trainer each, in
one process; ``--budgets`` with no value skips the time to F1.

Usage: python benchmarks/train_speed.py [--budgets 100 200 300 600] [--precisions auto]
       [--rounds 1] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import torch
from conv_floor import cpu_model
from report import write_report

from sasi_scipion.engine.api import evaluate, pick, train
from sasi_scipion.engine.coordinates import read_particles, write_particles
from sasi_scipion.engine.defaults import TRAINING_PRECISIONS
from sasi_scipion.engine.demo import DEMO_LABELS_PER_CLASS, DEMO_SHAPE, few_labels
from sasi_scipion.engine.simulate import simulate_dataset
from sasi_scipion.engine.training import SaSiTrainer, TrainingSettings
from sasi_scipion.engine.training_run import prepare_train

SEED = 0
TARGET_F1 = 0.9
"""The demo's F1 target: pooled F1 on tomo_001, occupancy rule."""
BUDGETS = (100, 200, 300, 600)
"""Training budgets (iterations) tried in turn for the time to ``TARGET_F1`` on a CPU."""


def prepare(work: Path, shape_zyx: tuple[int, int, int] = DEMO_SHAPE) -> dict[str, float]:
    """Simulate the demo data (two tomograms of ``shape_zyx`` voxels) in ``work``, write
    its labels; return the radii (voxels per class)."""
    simulate_dataset(work / "data", tomograms=2, shape_zyx=shape_zyx, seed=SEED)
    labels = few_labels(read_particles(work / "data" / "tomo_000.tsv"),
                        DEMO_LABELS_PER_CLASS, SEED)
    write_particles(work / "labels.tsv", labels)
    return demo_radii(work)


def demo_radii(work: Path) -> dict[str, float]:
    """The radii (voxels per class) of the data ``prepare`` simulated in ``work``."""
    radii = json.loads((work / "data" / "dataset.json").read_text())["radii"]
    return {name: float(radius) for name, radius in radii.items()}


def default_trainer(work: Path, radii: dict[str, float], device: torch.device,
                    trainer_class: type[SaSiTrainer] = SaSiTrainer,
                    **settings: object) -> SaSiTrainer:
    """The trainer of the ``sasi train`` default run on ``device`` (its default budget) for
    the labelled tomogram of ``prepare``, set up as ``sasi train`` sets it up
    (``training_run.prepare_train``); ``settings`` override ``TrainingSettings`` fields."""
    options = TrainingSettings(seed=SEED, **settings)  # type: ignore[arg-type]
    return prepare_train([work / "data" / "tomo_000.mrc"], [work / "labels.tsv"], radii,
                         options, device, trainer_class=trainer_class).trainer


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


def time_to_f1(work: Path, radii: dict[str, float], budgets: list[int], target: float,
               device: str = "cpu", settings: Mapping[str, object] | None = None) -> list[dict]:
    """Train (``api.train``: ``sasi train``'s defaults, ``settings`` overriding
    ``TrainingSettings`` fields), pick (``api.pick``) and score the demo on ``device``
    for each budget until pooled F1 reaches ``target``; seconds per row. The models stay
    in ``work`` as ``model_<budget>.pt``."""
    data = work / "data"
    rows = []
    for budget in budgets:
        model_path = work / f"model_{budget}.pt"
        start = time.perf_counter()
        model = train([data / "tomo_000.mrc"], [work / "labels.tsv"], radii,
                      settings=TrainingSettings(iterations=budget, seed=SEED,
                                                **(settings or {})),  # type: ignore[arg-type]
                      device=device)
        model.save(model_path)
        train_s = time.perf_counter() - start
        start = time.perf_counter()
        picks = pick(model_path, data / "tomo_001.mrc", device=device)
        pick_s = time.perf_counter() - start
        write_particles(work / f"picks_{budget}.tsv", picks)
        pooled = evaluate(picks, data / "tomo_001.tsv",
                          occupancy=data / "tomo_001_occupancy.mrc").pooled
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
    parser.add_argument("--budgets", type=int, nargs="*", default=list(BUDGETS),
                        help="budgets for the time to F1 (none: skip it)")
    parser.add_argument("--precisions", nargs="+", default=["auto"],
                        choices=TRAINING_PRECISIONS, help="training precisions to time")
    parser.add_argument("--rounds", type=int, default=1,
                        help="rounds of step timings, the precisions' order reversed each round")
    parser.add_argument("--target", type=float, default=TARGET_F1)
    parser.add_argument("--out")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sasi-train-speed-") as folder:
        work = Path(folder)
        radii = prepare(work)
        trainers = {precision: default_trainer(work, radii, torch.device("cpu"),
                                               precision=precision)
                    for precision in args.precisions}
        steps: dict[str, list[dict]] = {precision: [] for precision in args.precisions}
        for round_ in range(args.rounds):
            for precision in args.precisions[::-1 if round_ % 2 else 1]:
                print(f"round {round_ + 1}, {precision}:", file=sys.stderr)
                steps[precision].append(step_rates(trainers[precision], args.iterations,
                                                   args.warmup))
        f1_rows = time_to_f1(work, radii, args.budgets, args.target)
    reached = next((r for r in f1_rows if r["f1"] >= args.target), None)
    medians = {precision: round(statistics.median(r["default_run_it_per_s"] for r in rounds), 3)
               for precision, rounds in steps.items()}
    first = args.precisions[0]
    write_report(f1_rows, args.out, cpu_model=cpu_model(), demo_shape=list(DEMO_SHAPE),
                 labels_per_class=DEMO_LABELS_PER_CLASS, seed=SEED, step_rates=steps,
                 median_default_run_it_per_s=medians,
                 speed_over_first_precision={p: round(m / medians[first], 3)
                                             for p, m in medians.items()},
                 target_f1=args.target,
                 time_to_target_s=reached["train_s"] if reached else None,
                 iterations_to_target=reached["iterations"] if reached else None,
                 peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)


if __name__ == "__main__":
    main()
