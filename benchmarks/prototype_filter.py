"""Would a label prototype in the network's encoder features remove the wrong picks?

A model trained on one class picks every complex of a similar size (the issue's
one-class precision). This script asks, on a finished accuracy run and without
retraining, whether the network already knows better in its encoder: for each
learned model of ``--report`` it

1. crops a ``WINDOW``-voxel cube (zero outside the tomogram) of the normalised
   training tomogram around each labelled particle, runs the encoder
   (``network.features``) and takes the bottleneck features (quarter resolution)
   averaged over the central 2 x 2 x 2 cells: one vector per label;
2. makes each class's prototype (the mean of its labels' unit vectors) and, for
   each label, its cosine similarity to its class's prototype without itself
   (leave one out);
3. measures the same vector at every pick of the model's pick files of the test
   tomograms and its cosine similarity to the prototype of the pick's class;
4. drops the picks whose similarity is below the ``q`` quantile of the labels'
   leave-one-out similarities of that class, for each ``--quantiles`` ``q``, and
   scores what remains as the harness does (pooled, class-aware, one-class).

With ``--reassign``, each pick also takes the class of its most similar prototype
(one more set of rows; the cut-off then applies to that class).

Usage: python benchmarks/prototype_filter.py --report accuracy_run.json
       [--quantiles 0 0.1 0.25] [--reassign] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from accuracy import ONE_CLASS_ROWS, TRAINING_TOMOGRAM, _score, finished_run

from sasi_scipion.engine.coordinates import ParticleTable, read_particles
from sasi_scipion.engine.device import use_all_cpus
from sasi_scipion.engine.model_file import Model
from sasi_scipion.engine.mrc_io import read_volume
from sasi_scipion.engine.normalize import normalise
from sasi_scipion.engine.sampling import crop_padded

WINDOW = 40
"""Edge of the cube the encoder sees around a centre, voxels (a multiple of 4)."""
BATCH = 32


def encoder_vectors(network: torch.nn.Module, volume: np.ndarray,
                    centres_xyz: np.ndarray) -> np.ndarray:
    """``(N, C)`` unit bottleneck feature vectors at ``centres_xyz`` (voxels ``(x, y, z)``)
    of the normalised ``volume`` ``(z, y, x)``."""
    vectors = []
    middle = WINDOW // 8  # the bottleneck's centre cell index (quarter resolution)
    for first in range(0, len(centres_xyz), BATCH):
        crops = np.stack([crop_padded(volume, np.round(c[::-1]).astype(int), WINDOW)
                          for c in centres_xyz[first:first + BATCH]])
        with torch.no_grad():
            bottom = network.features(torch.from_numpy(crops)[:, None])[2]
        centre = bottom[:, :, middle - 1:middle + 1, middle - 1:middle + 1,
                        middle - 1:middle + 1].mean(dim=(2, 3, 4))
        vectors.append(torch.nn.functional.normalize(centre, dim=1).numpy())
    return np.concatenate(vectors) if vectors else np.zeros((0, 1))


def label_prototypes(network: torch.nn.Module, volume: np.ndarray, labels: ParticleTable
                     ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Per class of ``labels`` (centres in voxels ``(x, y, z)`` of the normalised
    ``volume``): its prototype (the unit mean of its labels' :func:`encoder_vectors`)
    and each label's cosine similarity to the mean of the other labels of its class."""
    vectors = encoder_vectors(network, volume, labels.xyz)
    prototypes, similarities = {}, {}
    for name in labels.class_names:
        own = vectors[labels.classes == name]
        total = own.sum(axis=0)
        prototypes[name] = total / np.linalg.norm(total)
        others = total[None] - own  # leave one out
        similarities[name] = np.einsum("nc,nc->n", own, others) / np.linalg.norm(others, axis=1)
    return prototypes, similarities


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", type=Path, required=True)
    parser.add_argument("--quantiles", nargs="+", type=float, default=[0.0, 0.1, 0.25])
    parser.add_argument("--reassign", action="store_true")
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
        network = Model.load(work / f"{row}_{n}_{seed}.pt").network.eval()
        labels = read_particles(work / (f"labels_{n}_{seed}_{one_class}.tsv" if one_class
                                        else f"labels_{n}_{seed}.tsv"))
        names = list(labels.class_names)
        prototypes, similarities = label_prototypes(network, training, labels)
        matrix = np.stack([prototypes[name] for name in names])
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
                    classes = (np.array(names, dtype=object)[np.argmax(vectors @ matrix.T, axis=1)]
                               if reassign and len(table) else table.classes)
                    similarity = np.array([vectors[i] @ prototypes[c]
                                           for i, c in enumerate(classes)])
                    keep = (np.ones(len(table), dtype=bool) if q is None else
                            similarity >= np.array([np.quantile(similarities[c], q)
                                                    for c in classes]))
                    kept[name] = ParticleTable(table.xyz[keep], np.asarray(classes)[keep],
                                               None if table.scores is None
                                               else np.asarray(table.scores)[keep])
                scores = _score(kept, data, tests, dataset["unscored"], radii, one_class)
                rows.append({"row": row, "labels": n, "seed": seed, "reassign": reassign,
                             "quantile": q, "picks": sum(len(t) for t in kept.values()),
                             **scores})
                print(json.dumps(rows[-1]), file=sys.stderr)
    text = json.dumps({"report": str(args.report), "window": WINDOW, "rows": rows}, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
