"""Do simple shape and density features of a pick separate particles from distractors?

For each learned model of a finished accuracy run (``--work``, the harness's folder:
``data/``, ``MODEL.pt``), the test tomograms are segmented once (cached as
``MODEL_TOMOGRAM_segmentation.npz`` beside the model) and picked with the model's own
score cut-offs. Each pick is marked a particle (on the occupancy map), on a
distractor (gold 1, membrane or vesicle 2, junk 3: the simulator's distractor mask)
or elsewhere (0), and measured around its centre ``c`` (class radius ``r``, voxels):

- ``score``: the pick's score (what ``sasi pick`` ranks by);
- ``shell_probability``: mean particle probability between 1.2 r and 2 r from ``c``;
- ``shell_std``: standard deviation of the normalised density in that shell;
- ``sphere_fill``: fraction of the voxels within r above probability 0.5;
- ``core_density``: mean normalised density within r / 2, sign flipped so that
  dense (dark) protein is positive;
- ``flatness``: smallest over middle eigenvalue of the probability-weighted
  covariance of the particle voxels within 1.5 r (a sheet gives near 0).

Printed per feature: the area under the ROC curve of particles against each kind of
false pick (0.5: no separation; near 0 or 1: a clean one), and the share of each
kind removed by a cut at the feature's 10th percentile over the particles (the cut a
user's labels could set; 10 % of the particles go with it).

Usage: python benchmarks/pick_features.py --work FOLDER --models sasi_10_1 sasi_5_1 ...
       [--out features.json]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch

from sasi_scipion.engine.device import use_all_cpus
from sasi_scipion.engine.model_file import Model
from sasi_scipion.engine.mrc_io import read_volume
from sasi_scipion.engine.normalize import normalise
from sasi_scipion.engine.picking import segment_tomogram
from sasi_scipion.engine.postprocess import FOREGROUND_THRESHOLD, Segmentation, extract_particles

FEATURES = ("score", "shell_probability", "shell_std", "sphere_fill", "core_density",
            "flatness")
KINDS = {1: "gold", 2: "membrane", 3: "junk", 0: "elsewhere"}
"""Distractor mask values of the simulator (0: no distractor there)."""


def segmentation(model: Model, tomogram: Path, cache: Path) -> Segmentation:
    """The model's segmentation of ``tomogram``, computed once and cached in ``cache``."""
    if cache.exists():
        stored = np.load(cache)
        return Segmentation(stored["labels"], stored["scores"], stored["foreground"])
    result, _ = segment_tomogram(model, tomogram, torch.device("cpu"))
    np.savez(cache, labels=result.labels, scores=result.scores, foreground=result.foreground)
    return result


def pick_features(segmentation: Segmentation, volume: np.ndarray, centre_zyx: np.ndarray,
                  radius: float) -> dict[str, float]:
    """The features of the module docstring for one pick (``volume`` normalised)."""
    reach = int(math.ceil(2 * radius))
    offsets = np.indices((2 * reach + 1,) * 3).reshape(3, -1).T - reach
    points = np.round(centre_zyx).astype(int) + offsets
    inside = ((points >= 0) & (points < volume.shape)).all(axis=1)
    points, offsets = points[inside], offsets[inside]
    distance = np.sqrt((offsets**2).sum(axis=1))
    index = tuple(points.T)
    probability = segmentation.foreground[index].astype(np.float64)
    density = volume[index].astype(np.float64)
    shell = (distance > 1.2 * radius) & (distance <= 2 * radius)
    weights = probability * (distance <= 1.5 * radius) * (probability > FOREGROUND_THRESHOLD)
    eigenvalues = np.sort(np.linalg.eigvalsh(np.cov(offsets.T, aweights=weights + 1e-9)))
    return {"shell_probability": probability[shell].mean(), "shell_std": density[shell].std(),
            "sphere_fill": (probability[distance <= radius] > FOREGROUND_THRESHOLD).mean(),
            "core_density": -density[distance <= radius / 2].mean(),
            "flatness": eigenvalues[0] / max(eigenvalues[1], 1e-9)}


def roc_auc(positives: np.ndarray, negatives: np.ndarray) -> float:
    """Probability that a random positive has a larger value than a random negative."""
    if not len(positives) or not len(negatives):
        return float("nan")
    ranks = np.concatenate([positives, negatives]).argsort().argsort() + 1
    return float((ranks[:len(positives)].sum() - len(positives) * (len(positives) + 1) / 2)
                 / (len(positives) * len(negatives)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--models", nargs="+", required=True)
    parser.add_argument("--out")
    args = parser.parse_args()
    use_all_cpus(torch.device("cpu"))
    data = args.work / "data"
    tests = json.loads((data / "dataset.json").read_text())["tomograms"][1:]
    rows = []
    for name in args.models:
        model = Model.load(args.work / f"{name}.pt")
        meta = model.metadata
        radius_of = dict(zip(meta.classes, meta.radii))
        cutoffs = [meta.score_cutoffs.get(c, 0.0) for c in meta.classes]
        for tomogram in tests:
            seg = segmentation(model, data / f"{tomogram}.mrc",
                               args.work / f"{name}_{tomogram}_segmentation.npz")
            volume = normalise(read_volume(data / f"{tomogram}.mrc").data)
            picks = extract_particles(seg, meta.classes, meta.radii, min_score=cutoffs)
            occupancy = read_volume(data / f"{tomogram}_occupancy.mrc", check_values=False).data
            distractors = read_volume(data / f"{tomogram}_distractor_mask.mrc",
                                      check_values=False).data
            for xyz, klass, score in zip(picks.xyz, picks.classes, picks.scores):
                zyx = np.clip(np.round(xyz[::-1]).astype(int), 0, np.array(volume.shape) - 1)
                rows.append({"model": name, "tomogram": tomogram,
                             "particle": bool(occupancy[tuple(zyx)] > 0),
                             "distractor": int(distractors[tuple(zyx)]), "score": float(score),
                             **pick_features(seg, volume, xyz[::-1], radius_of[klass])})
    particles = [r for r in rows if r["particle"]]
    summary = {"picks": len(rows), "particles": len(particles)}
    for kind, label in KINDS.items():
        false = [r for r in rows if not r["particle"] and r["distractor"] == kind]
        summary[f"false_{label}"] = len(false)
    table = {}
    for feature in FEATURES:
        good = np.array([r[feature] for r in particles])
        entry = {}
        for kind, label in KINDS.items():
            bad = np.array([r[feature] for r in rows
                            if not r["particle"] and r["distractor"] == kind])
            auc = roc_auc(good, bad)
            # the cut keeps the side the particles lie on
            keep_high = auc >= 0.5
            cut = np.quantile(good, 0.1 if keep_high else 0.9)
            removed = float(np.mean(bad < cut if keep_high else bad > cut)) if len(bad) else None
            entry[label] = {"auc": round(auc, 3), "removed_at_10pct": removed and round(removed, 3)}
        table[feature] = entry
    report = {"work": str(args.work), "models": args.models, **summary, "features": table}
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
