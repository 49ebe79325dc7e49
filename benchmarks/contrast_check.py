"""How reliable are the contrast checks of ``engine/contrast.py``?

Simulates tomograms (64 x 128 x 128 voxels, 10 Å, procedural particles) at several
SNRs, particle fills, with and without distractors, five seeds each; for each, and for
its inversion (``-volume``), measures the skewness check (:func:`contrast_skew`,
label-free) and the label check (:func:`label_contrast`, 5 labels per class, sphere
radius 4 voxels). A check is right when it calls the original dark and the inversion
bright (the skewness: beyond ``SKEW_MARGIN`` with the right sign). About 3 minutes on
2 busy CPU cores.

Usage: python benchmarks/contrast_check.py [--out benchmarks/contrast_check.json]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from sasi_scipion.engine.contrast import (
    BRIGHT,
    DARK,
    SKEW_MARGIN,
    contrast_skew,
    label_contrast,
)
from sasi_scipion.engine.masks import sphere_label_volume
from sasi_scipion.engine.normalize import normalise
from sasi_scipion.engine.simulate import DEFAULT_FILL, procedural_templates, simulate_tomogram

SHAPE = (64, 128, 128)
SNRS = (0.05, 0.1, 0.2, 0.5)
FILLS = (0.02, DEFAULT_FILL, 0.3)
SEEDS = range(5)
LABELS_PER_CLASS = 5
LABEL_RADIUS = 4.0


def _measure(snr: float, fill: float, distractors: bool, seed: int) -> dict:
    templates = procedural_templates(10.0)
    rng = np.random.default_rng(1000 + seed)
    tomogram = simulate_tomogram(SHAPE, templates, rng, snr, 10.0, fill, distractors)
    volume = normalise(tomogram.volume)
    truth = tomogram.truth
    keep = np.concatenate([np.flatnonzero(truth.classes == name)[:LABELS_PER_CLASS]
                           for name in truth.class_names])
    labels = truth.subset(keep)
    label_map = sphere_label_volume(volume.shape, labels, labels.class_names,
                                    [LABEL_RADIUS] * len(labels.class_names))
    skew = contrast_skew(volume)
    inverted_skew = contrast_skew(-volume)
    return {"snr": snr, "fill": fill, "distractors": distractors, "seed": seed,
            "particles": len(truth), "skew": skew, "inverted_skew": inverted_skew,
            "skew_right": skew <= -SKEW_MARGIN and inverted_skew >= SKEW_MARGIN,
            "labels_right": label_contrast([volume], [label_map]) == DARK
            and label_contrast([-volume], [label_map]) == BRIGHT}


def _summary(rows: list[dict]) -> dict:
    """Counts over the tomograms: the skewness's sign right (original negative,
    inversion positive), beyond the margin both ways (a warning possible), the label
    check right."""
    skews = [r["skew"] for r in rows]
    return {"tomograms": len(rows),
            "skew_sign_right": sum(r["skew"] < 0 < r["inverted_skew"] for r in rows),
            "skew_right": sum(r["skew_right"] for r in rows),
            "labels_right": sum(r["labels_right"] for r in rows),
            "skew_range": [min(skews), max(skews)], "margin": SKEW_MARGIN}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/contrast_check.json")
    args = parser.parse_args()
    torch.set_num_threads(2)
    start = time.time()
    rows = [_measure(snr, fill, distractors, seed) for snr in SNRS for fill in FILLS
            for distractors in (False, True) for seed in SEEDS]
    summary = {**_summary(rows), "seconds": round(time.time() - start, 1)}
    with open(args.out, "w") as handle:
        json.dump({"summary": summary, "rows": rows}, handle, indent=1)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
