"""Why class-aware F1 stays low: which classes the picks of a model call which.

For every learned multi-class model of a finished ``accuracy.py`` report (the
harness's own pick files of its test tomograms, no picking again), each true
particle a pick hits (the SHREC 2021 occupancy rule with ``metrics``' own voxel
lookup and pick order: best-scoring pick first, one hit per particle, unscored
classes left out) adds one to ``confusion[true][called]``;
a particle no pick hits adds one to ``confusion[true]["missed"]``.

With ``--neighbourhood`` it also tries a class decision from the neighbourhood of
each pick instead of the segmentation's vote: the model segments the training and
test tomograms once (``sasi pick``'s tiled default, class calibration on), and per
point it takes

- ``votes``: the share of each class in the score-weighted argmax votes of the
  particle voxels within three radii (half the smallest, the median and the largest
  class radius), and
- ``fills``: the share of particle voxels (probability above 0.5) within each
  class's radius (a size signature: a large complex fills the spheres of every
  class, a small one only the small ones),

fits a multinomial logistic regression on those of the labelled centres of the
training tomogram (``calibration.fit_calibration``, L2 1e-3, 1e-2, 1e-1), gives each
of the model's picks the class it predicts and scores the picks as the harness does
(positions and scores unchanged, so pooled F1 stays). Two decisions with almost no
fitted weights sit beside it (:func:`centroid_classes`): the nearest class mean of
the labels' fills (``fills centroid``), and that Gaussian log-likelihood (one pooled
variance) plus the log of the pick's vote share within the median radius
(``votes x fills centroid``).

Usage: python benchmarks/class_confusion.py --report run.json [--seeds S ...]
       [--labels N ...] [--neighbourhood] --out out.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from accuracy import ONE_CLASS_ROWS, TRAINING_TOMOGRAM, _score, finished_run

from sasi_scipion.engine.calibration import fit_calibration
from sasi_scipion.engine.coordinates import ParticleTable, read_particles
from sasi_scipion.engine.device import use_all_cpus
from sasi_scipion.engine.metrics import _pick_order, _voxel_ids, dilate_occupancy
from sasi_scipion.engine.model_file import Model
from sasi_scipion.engine.mrc_io import read_volume
from sasi_scipion.engine.picking import model_cutoffs, segment_tomogram
from sasi_scipion.engine.postprocess import (
    DEFAULT_COMPONENTS,
    FOREGROUND_THRESHOLD,
    Segmentation,
    extract_particles,
)

MISSED = "missed"
FEATURE_SETS = ("votes", "fills", "votes+fills")
L2_PENALTIES = (1e-3, 1e-2, 1e-1)


def confusion(picks: dict[str, ParticleTable], data: Path, tests: list[str],
              classes: list[str]) -> dict[str, dict[str, int]]:
    """``confusion[true class][called class or MISSED]`` over the test tomograms."""
    table = {c: dict.fromkeys([*classes, MISSED], 0) for c in classes}
    for name in tests:
        truth = read_particles(data / f"{name}.tsv")
        occupancy = dilate_occupancy(read_volume(data / f"{name}_occupancy.mrc",
                                                 check_values=False).data.astype(np.int64))
        table_picks = picks[name]
        ids = _voxel_ids(table_picks, occupancy)
        hit: set[int] = set()
        for i in _pick_order(table_picks):
            row = int(ids[i]) - 1
            if row < 0 or row in hit or truth.classes[row] not in table:
                continue
            hit.add(row)
            counts = table[truth.classes[row]]
            called = str(table_picks.classes[i])
            counts[called] = counts.get(called, 0) + 1
        for row, name_of_class in enumerate(truth.classes):
            if name_of_class in table and row not in hit:
                table[name_of_class][MISSED] += 1
    return table


class Neighbourhoods:
    """Per-point features of one segmentation (:data:`FEATURE_SETS`); points ``(z, y,
    x)`` voxels, radii voxels, one per class."""

    def __init__(self, segmentation: Segmentation, radii: list[float]) -> None:
        self.radii = np.asarray(radii, dtype=np.float64)
        self.reach = int(np.ceil(self.radii.max()))
        pad = self.reach
        self.particle = np.pad(segmentation.foreground.astype(np.float32)
                               > FOREGROUND_THRESHOLD, pad)
        self.labels = np.pad(segmentation.labels, pad)
        self.scores = np.pad(segmentation.scores.astype(np.float32), pad) * self.particle
        offsets = np.indices((2 * pad + 1,) * 3) - pad
        self.distances = np.sqrt((offsets**2).sum(axis=0))
        self.vote_radii = (max(1.5, 0.5 * self.radii.min()), 0.5 * float(np.median(self.radii)),
                           0.5 * self.radii.max())

    def features(self, zyx: np.ndarray, feature_set: str) -> np.ndarray:
        """``(n, F)`` features of ``feature_set`` at the ``(n, 3)`` points ``zyx``
        (voxels, rounded): 3 K vote shares, K fills, or both."""
        classes = len(self.radii)
        rows = []
        for z, y, x in np.floor(zyx + 0.5).astype(int):
            box = np.s_[z:z + 2 * self.reach + 1, y:y + 2 * self.reach + 1,
                        x:x + 2 * self.reach + 1]
            labels, scores, particle = self.labels[box], self.scores[box], self.particle[box]
            row: list[float] = []
            if "votes" in feature_set:
                for radius in self.vote_radii:
                    inside = self.distances <= radius
                    votes = np.bincount(labels[inside], weights=scores[inside],
                                        minlength=classes + 1)[1:]
                    row += list(votes / max(votes.sum(), 1e-6))
            if "fills" in feature_set:
                row += [float(particle[self.distances <= r].mean()) for r in self.radii]
            rows.append(row)
        return np.array(rows, dtype=np.float64).reshape(len(rows), -1)


def centroid_classes(train_fills: np.ndarray, known: np.ndarray, fills: np.ndarray,
                     votes: np.ndarray | None, classes: int) -> np.ndarray:
    """Class indices of points with ``fills`` ``(n, K)``: the largest Gaussian
    log-likelihood about each class's mean of the labels' ``train_fills`` (their
    classes ``known``) with one variance pooled over classes and radii, plus, given
    ``votes`` ``(n, K)`` (vote shares), the log of each class's share."""
    means = np.stack([train_fills[known == k].mean(axis=0) for k in range(classes)])
    variance = max(float(((train_fills - means[known]) ** 2).mean()), 1e-4)
    log_likelihood = -((fills[:, None, :] - means[None]) ** 2).sum(axis=2) / (2 * variance)
    if votes is not None:
        log_likelihood = log_likelihood + np.log(votes + 1e-3)
    return np.argmax(log_likelihood, axis=1)


def neighbourhood_rows(model: Model, labels: ParticleTable, data: Path,
                       tests: list[str], dataset: dict) -> dict[str, dict]:
    """Scores of the model's picks with the segmentation's classes (``vote``) and with
    each feature set and penalty's refitted class decision."""
    meta = model.metadata
    cpu = torch.device("cpu")
    segmentations = {name: segment_tomogram(model, data / f"{name}.mrc", cpu)[0]
                     for name in [TRAINING_TOMOGRAM, *tests]}
    cut = model_cutoffs(meta, DEFAULT_COMPONENTS)
    picks = {name: extract_particles(segmentations[name], meta.classes, meta.radii,
                                     min_score=cut) for name in tests}
    scored = {"vote": _score(picks, data, tests, dataset["unscored"], dataset["radii"])}
    known = np.array([meta.classes.index(c) for c in labels.classes])
    around = {name: Neighbourhoods(s, meta.radii) for name, s in segmentations.items()}
    for feature_set in FEATURE_SETS:
        train = around[TRAINING_TOMOGRAM].features(labels.xyz[:, ::-1], feature_set)
        test_features = {name: around[name].features(picks[name].xyz[:, ::-1], feature_set)
                         for name in tests}
        for l2 in L2_PENALTIES:
            fit = fit_calibration(train, known, len(meta.classes), l2=l2)
            refitted = {}
            for name in tests:
                called = np.argmax(test_features[name] @ fit.weight.T + fit.bias, axis=1)
                refitted[name] = ParticleTable(
                    picks[name].xyz, np.array([meta.classes[i] for i in called], dtype=object),
                    picks[name].scores)
            scored[f"{feature_set}, L2 {l2:g}"] = _score(
                refitted, data, tests, dataset["unscored"], dataset["radii"])
    classes = len(meta.classes)
    train_fills = around[TRAINING_TOMOGRAM].features(labels.xyz[:, ::-1], "fills")
    for name_of_decision, with_votes in (("fills centroid", False),
                                         ("votes x fills centroid", True)):
        refitted = {}
        for name in tests:
            both = around[name].features(picks[name].xyz[:, ::-1], "votes+fills")
            median_votes = both[:, classes:2 * classes] if with_votes else None
            called = centroid_classes(train_fills, known, both[:, 3 * classes:],
                                      median_votes, classes)
            refitted[name] = ParticleTable(
                picks[name].xyz, np.array([meta.classes[i] for i in called], dtype=object),
                picks[name].scores)
        scored[name_of_decision] = _score(refitted, data, tests, dataset["unscored"],
                                          dataset["radii"])
    return scored


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", type=Path, required=True)
    parser.add_argument("--seeds", nargs="+", type=int, help="only these seeds")
    parser.add_argument("--labels", nargs="+", type=int, help="only these label counts")
    parser.add_argument("--neighbourhood", action="store_true",
                        help="also refit the class decision on neighbourhood features")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    report, work, data, dataset, tests = finished_run(args.report)
    use_all_cpus(torch.device("cpu"))
    classes = sorted(c for c in dataset["radii"] if c not in dataset["unscored"])
    models = []
    for entry in report["results"]:
        row, n, seed = entry["row"], entry["labels"], entry["seed"]
        if n is None or row in ONE_CLASS_ROWS or (args.seeds and seed not in args.seeds) or (
                args.labels and n not in args.labels):
            continue
        stem = f"{row}_{n}_{seed}_{entry.get('pick_mode', 'tiled')}"
        picks = {name: read_particles(work / f"{stem}_{name}.tsv", allow_empty=True)
                 for name in tests}
        result = {"row": row, "labels": n, "seed": seed,
                  "confusion": confusion(picks, data, tests, classes)}
        if args.neighbourhood:
            result["class_decisions"] = neighbourhood_rows(
                Model.load(work / f"{row}_{n}_{seed}.pt"),
                read_particles(work / f"labels_{n}_{seed}.tsv"), data, tests, dataset)
        models.append(result)
        Path(args.out).write_text(json.dumps({"command": " ".join(sys.argv),
                                              "report": str(args.report),
                                              "models": models}, indent=2) + "\n")
        hits = sum(v for c, r in result["confusion"].items() for k, v in r.items()
                   if k != MISSED)
        right = sum(r[c] for c, r in result["confusion"].items())
        print(row, n, seed, f"right class on {right} of {hits} hit particles",
              {k: (v["pooled_f1"], v["class_aware_f1"])
               for k, v in result.get("class_decisions", {}).items()}, file=sys.stderr)


if __name__ == "__main__":
    main()
