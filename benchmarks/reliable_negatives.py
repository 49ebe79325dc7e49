"""Retrain with reliable negatives: the training tomogram's picks unlike every label.

A model trained on a few labels picks every blob of a similar size; its encoder
still tells the labelled complexes from the others (``prototype_filter.py``). This
experiment turns that into a training signal, as positive-unlabelled learning's
"reliable negatives": for each learned model of a finished accuracy run
(``--report``), it

1. picks the training tomogram with the model (``sasi pick``, its defaults);
2. measures each pick's bottleneck vector (``prototype_filter.encoder_vectors``)
   and keeps as a negative every pick that is less similar to the prototype of
   every class than the ``--quantile`` quantile of that class's labels'
   leave-one-out similarities and farther than twice the largest radius from
   every label (at most ``--max-negatives``, the least similar first);
3. trains a new model from the same seed on the labels plus those points as
   ``background`` points (``sasi train``, the row's options and the run's
   iteration count), picks the test tomograms and scores them as the harness does.

The report lists, per model, the negatives found (and how many lie on a true
particle: on one of the scored classes, or on the labelled class for a one-class
row) and the scores before and after.

Usage: python benchmarks/reliable_negatives.py --report accuracy_run.json
       [--rows sasi-one-class] [--quantile 0] [--max-negatives 60] --out results.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from accuracy import ONE_CLASS_ROWS, ROWS, TRAINING_TOMOGRAM, _sasi, _score, finished_run

from sasi_scipion.engine.coordinates import ParticleTable, read_particles, write_particles
from sasi_scipion.engine.device import use_all_cpus
from sasi_scipion.engine.limits import BACKGROUND_CLASS
from sasi_scipion.engine.model_file import Model
from sasi_scipion.engine.mrc_io import read_volume
from sasi_scipion.engine.normalize import normalise
from sasi_scipion.engine.prototypes import encoder_vectors, fit_prototypes


def reliable_negatives(network: torch.nn.Module, volume: np.ndarray, labels: ParticleTable,
                       picks: ParticleTable, quantile: float, distance: float,
                       limit: int) -> ParticleTable:
    """The picks (voxels ``(x, y, z)``) unlike every labelled class and far from every
    label, least similar first, as ``BACKGROUND_CLASS`` points (step 2 of the module
    docstring)."""
    prototypes = fit_prototypes(network, [volume], [labels], list(labels.class_names))
    similarity = encoder_vectors(network, volume, picks.xyz) @ prototypes.vectors.T
    unlike = (similarity < prototypes.cutoffs(quantile)).all(axis=1)
    far = np.linalg.norm(picks.xyz[:, None] - labels.xyz[None], axis=2).min(axis=1) > distance
    chosen = np.flatnonzero(unlike & far)
    chosen = chosen[np.argsort(similarity[chosen].max(axis=1))][:limit]
    return ParticleTable(picks.xyz[chosen], np.full(len(chosen), BACKGROUND_CLASS, dtype=object))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", type=Path, required=True)
    parser.add_argument("--rows", nargs="+", help="only these rows of the report")
    parser.add_argument("--quantile", type=float, default=0.0)
    parser.add_argument("--max-negatives", type=int, default=60)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    report, work, data, dataset, tests = finished_run(args.report)
    use_all_cpus(torch.device("cpu"))
    training = normalise(read_volume(data / f"{TRAINING_TOMOGRAM}.mrc").data)
    occupancy = read_volume(data / f"{TRAINING_TOMOGRAM}_occupancy.mrc", check_values=False).data
    # occupancy value v > 0: the v-th particle of the truth file
    truth_classes = ["background", *read_particles(data / f"{TRAINING_TOMOGRAM}.tsv").classes]
    iterations = report["settings"]["iterations"]
    results = []
    for entry in report["results"]:
        row, n, seed = entry["row"], entry["labels"], entry["seed"]
        if n is None or (args.rows and row not in args.rows):
            continue
        one_class = entry["one_class"]["class"] if row in ONE_CLASS_ROWS else None
        stem = f"{row}_{n}_{seed}"
        labels = read_particles(work / (f"labels_{n}_{seed}_{one_class}.tsv" if one_class
                                        else f"labels_{n}_{seed}.tsv"))
        training_picks = work / f"{stem}_{TRAINING_TOMOGRAM}_picks.tsv"
        _sasi("pick", "--model", str(work / f"{stem}.pt"), "--tomogram",
              str(data / f"{TRAINING_TOMOGRAM}.mrc"), "--out", str(training_picks),
              "--device", "cpu", "--prototype-filter", "off")
        model = Model.load(work / f"{stem}.pt")
        radii = dict(zip(model.metadata.classes, model.metadata.radii))
        negatives = reliable_negatives(model.network.eval(), training, labels,
                                       read_particles(training_picks, allow_empty=True),
                                       args.quantile, 2 * max(radii.values()),
                                       args.max_negatives)
        zyx = np.clip(np.rint(negatives.xyz[:, ::-1]).astype(int), 0,
                      np.array(occupancy.shape) - 1)
        under = [truth_classes[int(v)] for v in occupancy[tuple(zyx.T)]]
        wanted = [one_class] if one_class else [c for c in dataset["classes"]
                                                if c not in dataset["unscored"]]
        on_particles = sum(c in wanted for c in under)
        combined = work / f"labels_{n}_{seed}_{row}_negatives.tsv"
        write_particles(combined, ParticleTable(np.concatenate([labels.xyz, negatives.xyz]),
                                                np.concatenate([labels.classes,
                                                                negatives.classes])))
        retrained = work / f"{stem}_negatives.pt"
        began = time.perf_counter()
        _sasi("train", "--tomogram", str(data / f"{TRAINING_TOMOGRAM}.mrc"),
              "--coords", str(combined),
              *[a for c, r in radii.items() for a in ("--radius", f"{c}={r}")],
              "--out", str(retrained), "--iterations", str(iterations), "--seed", str(seed),
              "--device", "cpu", *ROWS[row])
        train_s = time.perf_counter() - began
        picks = {}
        for name in tests:
            out = work / f"{stem}_negatives_{name}.tsv"
            _sasi("pick", "--model", str(retrained), "--tomogram", str(data / f"{name}.mrc"),
                  "--out", str(out), "--device", "cpu")
            picks[name] = read_particles(out, allow_empty=True)
        scores = _score(picks, data, tests, dataset["unscored"],
                        None if one_class else dataset["radii"], one_class)
        before = {k: v for k, v in entry.items() if k not in ("row", "labels", "seed")}
        results.append({"row": row, "labels": n, "seed": seed, "negatives": len(negatives),
                        "negatives_on_particles": on_particles, "train_s": round(train_s),
                        "before": before, "after": scores})
        print(json.dumps(results[-1]), file=sys.stderr)
        Path(args.out).write_text(json.dumps(
            {"report": str(args.report), "quantile": args.quantile,
             "max_negatives": args.max_negatives, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
