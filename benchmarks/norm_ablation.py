"""Ablation: does the DeepFinder U-Net learn the medium profile's 12 classes faster in
150 steps with batch normalisation, or with a data-dependent (LSUV) initialisation?

``bn`` is the engine's batch-normalised U-Net (``batch_norm=True``, the default since
2026-12-02; the recorded ablation ran before that, with ``nn.BatchNorm3d`` inserted
after every convolution and the convolutions' biases kept); ``lsuv`` zeroes each
convolution's bias and scales its weights until its output has unit standard
deviation on 32 training windows, in layer order, before the first step; ``default``
is the paper's net (no normalisation). Everything else is the training run
``sasi train`` sets up (``training_run.prepare_train``) with the engine's settings
(``--ssl none``: no SimCLR, infill or consistency, the "plain" row), the same labels
(``demo.few_labels``) and seed, picked as ``sasi pick`` picks (the library's ``pick``:
class calibration and score cut-offs from the labels; the recorded ablation of
2026-12-01 predates them and picked without cut-offs), and the accuracy harness's
scores on its test tomograms (``accuracy._score``).

Usage: python benchmarks/norm_ablation.py --work WORK [--variants default bn lsuv]
       [--labels 10] [--seed 0] [--ssl none] [--iterations 150] --out results.jsonl
where WORK is an accuracy-harness work folder (``accuracy.py --work``) holding ``data/``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from accuracy import TRAINING_TOMOGRAM, _score
from torch import nn

from sasi_scipion.engine.api import pick
from sasi_scipion.engine.coordinates import read_particles, write_particles
from sasi_scipion.engine.demo import few_labels
from sasi_scipion.engine.progress import ProgressLog
from sasi_scipion.engine.training import TrainingSettings
from sasi_scipion.engine.training_run import prepare_train


def _lsuv(model: nn.Module, windows: torch.Tensor, passes: int = 3) -> None:
    """Unit output standard deviation for every convolution but the head, in order."""
    for conv in [m for m in model.modules() if isinstance(m, nn.Conv3d) and m is not model.head]:
        seen: dict[str, torch.Tensor] = {}
        hook = conv.register_forward_hook(lambda m, a, out, seen=seen: seen.__setitem__("y", out))
        with torch.no_grad():
            nn.init.zeros_(conv.bias)
            for _ in range(passes):
                model(windows)
                conv.weight.mul_(1.0 / max(seen["y"].std().item(), 1e-8))
        hook.remove()


def run(work: Path, variant: str, labels_per_class: int, seed: int, ssl: str,
        iterations: int) -> dict:
    data_dir = work / "data"
    dataset = json.loads((data_dir / "dataset.json").read_text())
    truth = read_particles(data_dir / f"{TRAINING_TOMOGRAM}.tsv")
    truth = truth.subset(np.isin(truth.classes, [c for c in truth.class_names
                                                 if c not in dataset["unscored"]]))
    labels = work / f"ablation_labels_{labels_per_class}_{seed}.tsv"
    write_particles(labels, few_labels(truth, labels_per_class, seed))
    radii = {c: float(r) for c, r in dataset["radii"].items() if c not in dataset["unscored"]}
    settings = TrainingSettings(iterations=iterations, seed=seed, ssl=ssl,
                                infill=ssl != "none", consistency=ssl != "none")
    run = prepare_train([data_dir / f"{TRAINING_TOMOGRAM}.mrc"], [labels], radii, settings,
                        torch.device("cpu"), batch_norm=variant == "bn")
    trainer = run.trainer
    if variant == "lsuv":
        _lsuv(trainer.model, trainer.supervised.sample(32, np.random.default_rng(123))[0])
        trainer.optimizer = torch.optim.Adam(trainer._parameters(), lr=settings.learning_rate)
    began = time.perf_counter()
    history = trainer.run(ProgressLog(iterations, f"ablation {variant}", print_every_s=60))
    train_s = time.perf_counter() - began
    model = run.model(history)
    tests = dataset["tomograms"][1:]
    picks = {name: pick(model, data_dir / f"{name}.mrc", device="cpu") for name in tests}
    return {"variant": variant, "labels": labels_per_class, "seed": seed, "ssl": ssl,
            "iterations": iterations, "train_s": round(train_s),
            "final_loss": round(float(np.mean([h["loss"] for h in history[-10:]])), 3),
            "classes_picked": len(set().union(*[set(p.classes) for p in picks.values()])),
            **_score(picks, data_dir, tests, dataset["unscored"], dataset["radii"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--variants", nargs="+", default=["default", "bn", "lsuv"],
                        choices=["default", "bn", "lsuv"])
    parser.add_argument("--labels", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ssl", default="none")
    parser.add_argument("--iterations", type=int, default=150)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    for variant in args.variants:
        result = run(args.work, variant, args.labels, args.seed, args.ssl, args.iterations)
        print(json.dumps(result), file=sys.stderr)
        with args.out.open("a") as out:
            out.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
