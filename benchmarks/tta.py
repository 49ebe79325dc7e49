"""Test-time augmentation measured, not shipped (accuracy issue, item 4).

Each learned model of a finished ``accuracy.py`` report picks the training and test
tomograms again with the class probabilities averaged over voxel-exact flipped
copies of the tomogram (flips along x, y and z: the missing wedge keeps its shape
under each), for each count in ``--flips``: 1 (no augmentation), 2 (x), 4 (x, y, xy)
and 8 (every combination). The flip sets are nested, so one segmentation per flip
serves every count. Per-class score cut-offs are re-derived from the model's picks
of its training tomogram with the same augmentation (as ``accuracy.py --rescore``),
so 1 flip reproduces the rescored numbers.

Usage: python benchmarks/tta.py --report accuracy_medium_600_seed0_samecls.json \
           --flips 1 2 4 8 --out tta_600_seed0.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from accuracy import TRAINING_TOMOGRAM, _score, finished_run, summarise
from report import write_report

from sasi_scipion.engine.calibration import ClassCalibration
from sasi_scipion.engine.coordinates import read_particles
from sasi_scipion.engine.device import use_all_cpus
from sasi_scipion.engine.inference import segment_tiled
from sasi_scipion.engine.model_file import Model
from sasi_scipion.engine.picking import prepare_tomogram
from sasi_scipion.engine.postprocess import Segmentation, extract_particles, summarise_probabilities
from sasi_scipion.engine.thresholds import score_cutoffs

FLIP_AXES = [(), (2,), (1,), (2, 1), (0,), (2, 0), (1, 0), (2, 1, 0)]
"""Flipped axes of ``(z, y, x)`` arrays: none, x, y, xy, z, xz, yz, xyz; the first 1,
2, 4 and 8 are the nested sets of ``--flips``."""


def mean_probabilities(model: Model, volume: np.ndarray, counts: list[int]
                       ) -> dict[int, np.ndarray]:
    """Class probabilities ``(K+1, z, y, x)`` of ``volume`` (normalised ``(z, y, x)``)
    averaged over the first ``n`` flips of ``FLIP_AXES``, for each ``n`` in ``counts``."""
    network = model.network.eval()
    total = None
    means = {}
    for n, axes in enumerate(FLIP_AXES[:max(counts)], start=1):
        flipped = np.ascontiguousarray(np.flip(volume, axes)) if axes else volume
        probs = np.zeros((len(model.metadata.classes) + 1, *volume.shape), np.float32)

        def sink(log_probs: torch.Tensor, keep: tuple[slice, ...], probs=probs) -> None:
            probs[(slice(None), *keep)] = log_probs.exp().numpy()

        segment_tiled(network, flipped, torch.device("cpu"),
                      log_probability_sink=sink)
        probs = np.flip(probs, tuple(a + 1 for a in axes)) if axes else probs
        total = probs.copy() if total is None else total + probs
        if n in counts:
            means[n] = total / n
    return means


def as_segmentation(probs: np.ndarray, calibration: ClassCalibration | None) -> Segmentation:
    """The segmentation maps of averaged probabilities, as picking makes them."""
    maps = summarise_probabilities(torch.from_numpy(np.log(np.maximum(probs, 1e-30))),
                                   calibration)
    return Segmentation(*(m.numpy().astype(dtype) for m, dtype in zip(maps, Segmentation.DTYPES)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", type=Path, required=True,
                        help="a finished accuracy.py report (its work folder holds the models)")
    parser.add_argument("--flips", type=int, nargs="+", default=[1, 2, 4, 8],
                        choices=[1, 2, 4, 8])
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    report, work, data, dataset, tests = finished_run(args.report)
    use_all_cpus(torch.device("cpu"))
    results = []
    for entry in report["results"]:
        if entry["labels"] is None:
            continue
        model = Model.load(work / f"{entry['row']}_{entry['labels']}_{entry['seed']}.pt")
        meta = model.metadata
        calibration = ClassCalibration.from_dict(meta.class_calibration)
        labels = read_particles(work / f"labels_{entry['labels']}_{entry['seed']}.tsv")
        segmentations: dict[int, dict[str, Segmentation]] = {n: {} for n in args.flips}
        seconds = {}
        for name in [TRAINING_TOMOGRAM, *tests]:
            prepared, _ = prepare_tomogram(meta, data / f"{name}.mrc")
            volume = np.asarray(prepared[:, :, :], dtype=np.float32)
            start = time.perf_counter()
            for n, probs in mean_probabilities(model, volume, args.flips).items():
                segmentations[n][name] = as_segmentation(probs, calibration)
            seconds[name] = round(time.perf_counter() - start, 1)
        for n in args.flips:
            maps = segmentations[n]
            training_picks = extract_particles(maps.pop(TRAINING_TOMOGRAM), meta.classes,
                                               meta.radii)
            cut = score_cutoffs([training_picks], [labels], meta.classes, meta.radii)
            picks = {name: extract_particles(seg, meta.classes, meta.radii, min_score=cut)
                     for name, seg in maps.items()}
            results.append({**{k: entry[k] for k in ("row", "labels", "seed")},
                            "flips": n, "segment_s_all_flips": seconds,
                            **_score(picks, data, tests, dataset["unscored"], report["radii"])})
            print(json.dumps(results[-1]), file=sys.stderr)
    summary = summarise([{**r, "row": f"{r['row']}, {r['flips']} flips"} for r in results])
    write_report(results, args.out, report_of=str(args.report), summary=summary)


if __name__ == "__main__":
    main()
