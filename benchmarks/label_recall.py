"""Does a model's label recall tell a user, right after training, that the model is bad?

Training now measures, per class, the fraction of the user's labelled particles that
the trained model's own picks of its training tomogram find again
(``thresholds.label_recall``, stored in the model file, a warning below
``defaults.LOW_LABEL_RECALL``). This script computes it, as training does
(``picking.label_decisions``), for every learned model of the finished accuracy
reports ``--reports``, and prints it beside the model's scores on the test
tomograms from the same report: whether a low label recall marks the models that
fail on unseen data, and whether a good model ever warns.

Usage: python benchmarks/label_recall.py --reports run.json [run2.json ...] --out out.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from accuracy import ONE_CLASS_ROWS, TRAINING_TOMOGRAM, finished_run

from sasi_scipion.engine.coordinates import read_particles
from sasi_scipion.engine.defaults import LOW_LABEL_RECALL
from sasi_scipion.engine.device import use_all_cpus
from sasi_scipion.engine.model_file import Model
from sasi_scipion.engine.mrc_io import read_volume
from sasi_scipion.engine.normalize import normalise
from sasi_scipion.engine.picking import label_decisions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=Path, nargs="+", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    cpu = torch.device("cpu")
    use_all_cpus(cpu)
    rows, seen = [], set()
    for report_path in args.reports:
        report, work, data, _, _ = finished_run(report_path)
        training = normalise(read_volume(data / f"{TRAINING_TOMOGRAM}.mrc").data)
        for entry in report["results"]:
            row, n, seed = entry["row"], entry["labels"], entry["seed"]
            if n is None or (row, n, seed) in seen:
                continue
            seen.add((row, n, seed))
            one_class = entry["one_class"]["class"] if row in ONE_CLASS_ROWS else None
            model = Model.load(work / f"{row}_{n}_{seed}.pt")
            meta = model.metadata
            labels = read_particles(work / (f"labels_{n}_{seed}_{one_class}.tsv" if one_class
                                            else f"labels_{n}_{seed}.tsv"))
            recall = label_decisions(model.network, [training], [labels], meta.classes,
                                     meta.radii, cpu).label_recall
            rows.append({
                "row": row, "labels": n, "seed": seed, "label_recall": dict(zip(meta.classes,
                                                                                 recall)),
                "mean_label_recall": round(float(np.mean(recall)), 3),
                "classes_below": [c for c, r in zip(meta.classes, recall)
                                  if r < LOW_LABEL_RECALL],
                **{k: entry[k] for k in ("pooled_f1", "precision", "recall", "class_aware_f1")},
                **({"one_class": entry["one_class"]} if one_class else {})})
            print(json.dumps(rows[-1]), file=sys.stderr)
    Path(args.out).write_text(json.dumps({"command": " ".join(sys.argv), "rows": rows},
                                         indent=2) + "\n")


if __name__ == "__main__":
    main()
