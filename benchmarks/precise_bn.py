"""Do a briefly trained model's batch-norm running statistics make its picks worse?

Training updates each batch normalisation's running mean and variance with
momentum 0.1 while the weights change fast (150 steps on the medium profile), and
from label-centred windows, not from the whole tomograms picking sees. For every
learned model of ``--report`` this script compares

- ``as trained``: the model file's statistics, and
- ``tomogram``: the same weights with the statistics re-estimated over uniformly
  placed windows of the training tomogram (``batch_statistics.picking_statistics``,
  with the model's seed: exactly what training now does after its last step),

each with the label recall, score cut-offs, class calibration and label prototypes
fitted as training fits them (``picking.label_decisions``, ``prototypes``) and the
test tomograms picked with ``sasi pick``'s defaults (the prototype filter on for a
one-class model), scored as the harness does.

Usage: python benchmarks/precise_bn.py --report run.json [--variants "as trained" tomogram]
       [--rows R ...] [--labels N ...] [--seeds S ...] --out out.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import torch
from accuracy import ONE_CLASS_ROWS, TRAINING_TOMOGRAM, _score, finished_run

from sasi_scipion.engine.batch_statistics import picking_statistics
from sasi_scipion.engine.coordinates import read_particles
from sasi_scipion.engine.defaults import BATCH_SIZE, WINDOW
from sasi_scipion.engine.device import use_all_cpus
from sasi_scipion.engine.model_file import Model
from sasi_scipion.engine.mrc_io import read_volume
from sasi_scipion.engine.normalize import normalise
from sasi_scipion.engine.picking import label_decisions, pick_tomogram
from sasi_scipion.engine.prototypes import fit_prototypes

VARIANTS = ("as trained", "tomogram")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", type=Path, required=True)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--rows", nargs="+", help="only these rows of the report")
    parser.add_argument("--labels", nargs="+", type=int, help="only these label counts")
    parser.add_argument("--seeds", nargs="+", type=int, help="only these seeds")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    report, work, data, dataset, tests = finished_run(args.report)
    cpu = torch.device("cpu")
    use_all_cpus(cpu)
    training = normalise(read_volume(data / f"{TRAINING_TOMOGRAM}.mrc").data)
    rows = []
    for entry in report["results"]:
        row, n, seed = entry["row"], entry["labels"], entry["seed"]
        if n is None or (args.rows and row not in args.rows) or (
                args.labels and n not in args.labels) or (args.seeds and seed not in args.seeds):
            continue
        one_class = entry["one_class"]["class"] if row in ONE_CLASS_ROWS else None
        labels = read_particles(work / (f"labels_{n}_{seed}_{one_class}.tsv" if one_class
                                        else f"labels_{n}_{seed}.tsv"))
        for variant in args.variants:
            model = Model.load(work / f"{row}_{n}_{seed}.pt")
            meta = model.metadata
            if variant == "tomogram":  # as training now ends
                picking_statistics(model.network, [training], WINDOW, BATCH_SIZE, seed, cpu)
            decisions = label_decisions(model.network, [training], [labels], meta.classes,
                                        meta.radii, cpu)
            prototypes = fit_prototypes(model.network, [training], [labels], meta.classes)
            model = Model(model.network, dataclasses.replace(
                meta, label_prototypes=prototypes.as_dict(),
                **({} if variant == "as trained" else {
                    "score_cutoffs": decisions.score_cutoffs,
                    "class_calibration": (decisions.calibration.as_dict()
                                          if decisions.calibration else {})})))
            picks = {name: pick_tomogram(model, data / f"{name}.mrc", cpu)
                     for name in tests}
            rows.append({"row": row, "labels": n, "seed": seed, "statistics": variant,
                         "label_recall": round(float(np.mean(decisions.label_recall)), 3),
                         "picks": sum(len(t) for t in picks.values()),
                         **_score(picks, data, tests, dataset["unscored"],
                                  None if one_class else dataset["radii"], one_class)})
            print(json.dumps(rows[-1]), file=sys.stderr)
    Path(args.out).write_text(json.dumps({"command": " ".join(sys.argv), "rows": rows},
                                         indent=2) + "\n")


if __name__ == "__main__":
    main()
