"""The same fixed-seed training and picking at two commits, side by side.

For a change that must not alter results (a refactoring): each commit's tree is
exported (``git archive``) and run with this environment's Python and packages,
the exported tree first on ``PYTHONPATH``. One simulated data set (two tomograms of
``--shape`` voxels, seed 0) serves both. Each of ``--repeats`` rounds runs, in a
fresh process per command and in the order A, B (then B, A in the next round, so
that neither always runs first):

- ``sasi train`` on tomo_000 with 5 labels per class (``demo.few_labels``, seed 0),
  ``--iterations`` steps, seed 0, on the CPU;
- ``sasi pick`` of tomo_001 with that model (the commit's defaults).

Reported: whether the two commits' model weights and picks are identical (largest
absolute weight difference; picks compared coordinate by coordinate, with classes
and scores), and the time ratio B / A of each command per round and its median.
Seconds are wall time of the whole command (start-up, reading, training or picking,
writing).

Usage: python benchmarks/commit_compare.py A B [--shape 32,96,96] [--iterations 30]
       [--repeats 2] --out results.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

import numpy as np
from conv_floor import cpu_model

from sasi_scipion.engine.coordinates import read_particles, write_particles
from sasi_scipion.engine.demo import DEMO_LABELS_PER_CLASS, few_labels
from sasi_scipion.engine.model_file import read_model_file
from sasi_scipion.engine.simulate import simulate_dataset

REPOSITORY = Path(__file__).resolve().parents[1]
SEED = 0
SASI = ("-c", "import sys; from sasi_scipion.engine.cli import main; sys.exit(main())")
"""``python`` arguments that run the ``sasi`` command of the tree on ``PYTHONPATH``."""


def export_commit(commit: str, folder: Path) -> str:
    """Write ``commit``'s tree into ``folder``; return its short hash."""
    archive = subprocess.run(["git", "-C", str(REPOSITORY), "archive", commit],
                             check=True, capture_output=True).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    return subprocess.run(["git", "-C", str(REPOSITORY), "rev-parse", "--short", commit],
                          check=True, capture_output=True, text=True).stdout.strip()


def timed_sasi(tree: Path, *arguments: str) -> float:
    """Run ``sasi ARGUMENTS`` of ``tree`` in a fresh process; its wall time, seconds."""
    environment = {**os.environ, "PYTHONPATH": str(tree)}
    start = time.perf_counter()
    subprocess.run([sys.executable, *SASI, *arguments], check=True, env=environment,
                   cwd=tree, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def weight_difference(first: Path, second: Path) -> float:
    """Largest absolute difference between the weights of two model files of one
    network (``inf`` when their tensors differ in names or shapes)."""
    (_, a), (_, b) = read_model_file(first), read_model_file(second)
    if a.keys() != b.keys() or any(a[k].shape != b[k].shape for k in a):
        return float("inf")
    return max((float((a[k].double() - b[k].double()).abs().max()) for k in a
                if a[k].numel()), default=0.0)


def same_picks(first: Path, second: Path) -> bool:
    """Whether two pick files hold the same particles: centres, classes and scores."""
    a, b = read_particles(first, allow_empty=True), read_particles(second, allow_empty=True)
    return (len(a) == len(b) and np.array_equal(a.xyz, b.xyz)
            and list(a.classes) == list(b.classes)
            and (a.scores is None) == (b.scores is None)
            and (a.scores is None or np.array_equal(a.scores, b.scores)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", help="the commit before")
    parser.add_argument("b", help="the commit after")
    parser.add_argument("--shape", default="32,96,96", help="tomogram shape z,y,x (voxels)")
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    shape = tuple(int(n) for n in args.shape.split(","))
    with tempfile.TemporaryDirectory(prefix="sasi-commit-compare-") as folder:
        work = Path(folder)
        trees = {"a": work / "a", "b": work / "b"}
        commits = {side: export_commit(getattr(args, side), tree)
                   for side, tree in trees.items()}
        dataset = simulate_dataset(work / "data", tomograms=2, shape_zyx=shape, seed=SEED)
        labels = work / "labels.tsv"
        write_particles(labels, few_labels(read_particles(work / "data" / "tomo_000.tsv"),
                                           DEMO_LABELS_PER_CLASS, SEED))
        radii = [a for name, r in dataset["radii"].items() for a in ("--radius", f"{name}={r}")]
        seconds: dict[str, dict[str, list[float]]] = {
            side: {"train": [], "pick": []} for side in trees}
        for round_ in range(args.repeats):
            for side in ("a", "b") if round_ % 2 == 0 else ("b", "a"):
                model, picks = work / f"model_{side}.pt", work / f"picks_{side}.tsv"
                for stale in (model, picks):
                    stale.unlink(missing_ok=True)
                seconds[side]["train"].append(timed_sasi(
                    trees[side], "train", "--tomogram", str(work / "data" / "tomo_000.mrc"),
                    "--coords", str(labels), *radii, "--iterations", str(args.iterations),
                    "--seed", str(SEED), "--device", "cpu", "--out", str(model)))
                seconds[side]["pick"].append(timed_sasi(
                    trees[side], "pick", "--model", str(model), "--tomogram",
                    str(work / "data" / "tomo_001.mrc"), "--device", "cpu",
                    "--out", str(picks)))
                print(f"round {round_ + 1} {commits[side]}: train "
                      f"{seconds[side]['train'][-1]:.1f} s, pick {seconds[side]['pick'][-1]:.1f} s",
                      file=sys.stderr)
        weights = weight_difference(work / "model_a.pt", work / "model_b.pt")
        identical = same_picks(work / "picks_a.tsv", work / "picks_b.tsv")
        picked = len(read_particles(work / "picks_b.tsv", allow_empty=True))
    ratios = {command: [round(b / a, 3) for a, b in zip(seconds["a"][command],
                                                         seconds["b"][command])]
              for command in ("train", "pick")}
    report = {"commits": commits, "shape_zyx": list(shape), "iterations": args.iterations,
              "labels_per_class": DEMO_LABELS_PER_CLASS, "seed": SEED,
              "cpu": cpu_model(), "cores": os.cpu_count(),
              "max_weight_difference": weights, "identical_picks": identical,
              "picks": picked,
              "seconds": {side: {c: [round(s, 1) for s in v] for c, v in d.items()}
                          for side, d in seconds.items()},
              "ratio_b_over_a": ratios,
              "median_ratio_b_over_a": {c: statistics.median(r) for c, r in ratios.items()}}
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
