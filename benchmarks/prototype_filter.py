"""Would a label prototype in the network's encoder features remove the wrong picks?

A model trained on one class picks every complex of a similar size (the issue's
one-class precision). This script measures, on a finished accuracy run and without
retraining, the engine's label-prototype filter (``sasi_scipion.engine.prototypes``,
which ``sasi pick`` applies by default to one-class models): for each learned model
of ``--report`` it

1. fits the label prototypes in the normalised training tomogram as training does
   (``fit_prototypes``: the encoder embedding of a 40-voxel cube around each label,
   the central 2 x 2 x 2 bottleneck cells, unit length; each class's unit mean, and
   each label's leave-one-out similarity);
2. measures the same vector at every pick of the model's pick files of the test
   tomograms and its cosine similarity to the prototype of the pick's class (the
   pick files must be unfiltered: a report of a harness run before the filter, or
   of a multi-class row, which ``sasi pick`` does not filter by default);
3. drops the picks whose similarity is below the ``q`` quantile of the labels'
   leave-one-out similarities of that class, for each ``--quantiles`` ``q``, and
   scores what remains as the harness does (pooled, class-aware, one-class).

With ``--reassign``, each pick also takes the class of its most similar prototype
(one more set of rows; the cut-off then applies to that class). With ``--engine``,
each model is also saved with its prototypes (``<model>+prototypes.pt``) and the
test tomograms are picked by ``sasi pick`` with its defaults (the filter on for a
one-class model): one more row, ``quantile`` ``"sasi pick"``, which should equal
the ``defaults.PROTOTYPE_QUANTILE`` row of a one-class model.

Usage: python benchmarks/prototype_filter.py --report accuracy_run.json
       [--quantiles 0 0.1 0.25] [--reassign] [--engine] [--out results.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import torch
from accuracy import ONE_CLASS_ROWS, TRAINING_TOMOGRAM, _sasi, _score, finished_run

from sasi_scipion.engine.coordinates import ParticleTable, read_particles
from sasi_scipion.engine.device import use_all_cpus
from sasi_scipion.engine.model_file import Model
from sasi_scipion.engine.mrc_io import read_volume
from sasi_scipion.engine.normalize import normalise
from sasi_scipion.engine.prototypes import PROTOTYPE_CROP, encoder_vectors, fit_prototypes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", type=Path, required=True)
    parser.add_argument("--quantiles", nargs="+", type=float, default=[0.0, 0.1, 0.25])
    parser.add_argument("--reassign", action="store_true")
    parser.add_argument("--engine", action="store_true",
                        help="also pick with 'sasi pick' and the prototypes in the model")
    parser.add_argument("--out")
    args = parser.parse_args()
    report, work, data, dataset, tests = finished_run(args.report)
    use_all_cpus(torch.device("cpu"))
    training = normalise(read_volume(data / f"{TRAINING_TOMOGRAM}.mrc").data)
    volumes = {name: normalise(read_volume(data / f"{name}.mrc").data) for name in tests}
    rows = []
    for entry in report["results"]:
        if entry["labels"] is None:
            continue
        row, n, seed, mode = entry["row"], entry["labels"], entry["seed"], entry["pick_mode"]
        one_class = entry.get("one_class", {}).get("class") if row in ONE_CLASS_ROWS else None
        model = Model.load(work / f"{row}_{n}_{seed}.pt")
        network = model.network.eval()
        labels = read_particles(work / (f"labels_{n}_{seed}_{one_class}.tsv" if one_class
                                        else f"labels_{n}_{seed}.tsv"))
        names = list(labels.class_names)
        prototypes = fit_prototypes(network, [training], [labels], names)
        picks = {name: read_particles(work / f"{row}_{n}_{seed}_{mode}_{name}.tsv",
                                      allow_empty=True) for name in tests}
        measured = {name: encoder_vectors(network, volumes[name], table.xyz)
                    for name, table in picks.items()}
        radii = None if one_class else dataset["radii"]
        for reassign in ([False, True] if args.reassign and not one_class else [False]):
            for q in [None, *args.quantiles]:
                kept = {}
                for name, table in picks.items():
                    vectors = measured[name]
                    indices = (np.argmax(vectors @ prototypes.vectors.T, axis=1)
                               if reassign and len(table) else
                               np.array([names.index(c) for c in table.classes], dtype=int))
                    classes = np.array(names, dtype=object)[indices]
                    keep = (np.ones(len(table), dtype=bool) if q is None else
                            prototypes.similarities(vectors, indices)
                            >= prototypes.cutoffs(q)[indices])
                    kept[name] = ParticleTable(table.xyz[keep], np.asarray(classes)[keep],
                                               None if table.scores is None
                                               else np.asarray(table.scores)[keep])
                scores = _score(kept, data, tests, dataset["unscored"], radii, one_class)
                rows.append({"row": row, "labels": n, "seed": seed, "reassign": reassign,
                             "quantile": q, "picks": sum(len(t) for t in kept.values()),
                             **scores})
                print(json.dumps(rows[-1]), file=sys.stderr)
        if args.engine:
            path = work / f"{row}_{n}_{seed}+prototypes.pt"
            Model(network, dataclasses.replace(model.metadata,
                                               label_prototypes=prototypes.as_dict())).save(path)
            engine_picks = {}
            for name in tests:
                out = work / f"{row}_{n}_{seed}+prototypes_{name}.tsv"
                _sasi("pick", "--model", str(path), "--tomogram", str(data / f"{name}.mrc"),
                      "--out", str(out), "--device", "cpu", "--mode", mode)
                engine_picks[name] = read_particles(out, allow_empty=True)
            rows.append({"row": row, "labels": n, "seed": seed, "reassign": False,
                         "quantile": "sasi pick",
                         "picks": sum(len(t) for t in engine_picks.values()),
                         **_score(engine_picks, data, tests, dataset["unscored"], radii,
                                  one_class)})
            print(json.dumps(rows[-1]), file=sys.stderr)
    text = json.dumps({"report": str(args.report), "crop": PROTOTYPE_CROP, "rows": rows},
                      indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
