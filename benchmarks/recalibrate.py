"""Rescore the models of a finished accuracy run with the class calibration
(``calibration.fit_calibration``, since 2026-12-02) that training now fits, side by
side with their picks without it.

For every learned model of the report, the calibration and the score cut-offs are
chosen exactly as training chooses them now (``picking.label_decisions`` on the
training tomogram and the model's labels), once per L2 penalty given; the test
tomograms are picked with them (tiled, the default component mode) and scored. The
report's own results (the network's argmax classes, the cut-offs the model was
saved with) are kept beside them as ``calibration: none``.

With ``--background``, also with the background points of the ``sasi+background``
row (N per distractor kind of the training tomogram) as the calibration's reject
class: the models were trained without them, so this measures what the points
do through the calibration alone.

Usage: python benchmarks/recalibrate.py REPORT.json [--l2 0.001 0.01] [--background]
       --out recalibrated.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch
from accuracy import (
    TRAINING_TOMOGRAM,
    _score,
    finished_run,
    summarise,
    with_background_points,
)

from sasi_scipion.engine.calibration import CALIBRATION_L2
from sasi_scipion.engine.coordinates import read_particles
from sasi_scipion.engine.device import use_all_cpus
from sasi_scipion.engine.limits import BACKGROUND_CLASS
from sasi_scipion.engine.model_file import Model
from sasi_scipion.engine.mrc_io import read_volume
from sasi_scipion.engine.normalize import normalise
from sasi_scipion.engine.picking import label_decisions, label_picks, pick_tomogram
from sasi_scipion.engine.postprocess import DEFAULT_COMPONENTS
from sasi_scipion.engine.thresholds import score_cutoffs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path)
    parser.add_argument("--l2", nargs="+", type=float,
                        default=[CALIBRATION_L2])
    parser.add_argument("--background", action="store_true",
                        help="also calibrate with N background points per distractor kind "
                             "(the sasi+background row's points) as the reject class")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    report, work, data, dataset, tests = finished_run(args.report)
    training = normalise(read_volume(data / f"{TRAINING_TOMOGRAM}.mrc").data)
    cpu = torch.device("cpu")
    use_all_cpus(cpu)
    results = []
    for entry in report["results"]:
        if entry["labels"] is None:
            continue
        results.append({**entry, "calibration": "none (as run)"})
        model = Model.load(work / f"{entry['row']}_{entry['labels']}_{entry['seed']}.pt")
        meta = model.metadata
        labels = read_particles(work / f"labels_{entry['labels']}_{entry['seed']}.tsv")
        background = with_background_points(
            labels, data / f"{TRAINING_TOMOGRAM}_distractor_mask.mrc", entry["labels"],
            entry["seed"])
        background = background.subset(background.classes == BACKGROUND_CLASS)
        variants = [("none", None, None), *[(f"l2 {l2:g}", l2, None) for l2 in args.l2],
                    *[(f"l2 {l2:g} + background points", l2, [background])
                      for l2 in args.l2 if args.background]]
        for name_of_variant, l2, negatives in variants:
            began = time.perf_counter()
            if l2 is None:  # this code's class votes, no calibration
                fitted = None
                cutoffs = {DEFAULT_COMPONENTS: score_cutoffs(
                    label_picks(model.network, [training], [labels], meta.classes,
                                meta.radii, cpu, None), [labels], meta.classes, meta.radii)}
            else:
                fitted, cutoffs, _ = label_decisions(model.network, [training], [labels],
                                                     meta.classes, meta.radii, cpu, negatives,
                                                     calibration_l2=l2)
            calibrated = Model(model.network, dataclasses.replace(
                meta, score_cutoffs=cutoffs,
                class_calibration=fitted.as_dict() if fitted else {}))
            picks = {name: pick_tomogram(calibrated, data / f"{name}.mrc", cpu)
                     for name in tests}
            results.append({**{k: entry[k] for k in ("row", "labels", "seed", "train_s")},
                            "pick_mode": "tiled",
                            "calibration": name_of_variant,
                            "calibration_s": round(time.perf_counter() - began),
                            **_score(picks, data, tests, dataset["unscored"],
                                     report["radii"])})
            print(results[-1], file=sys.stderr)
    for result in results:  # one summary row per calibration
        result["row"] = f"{result['row']} (calibration {result['calibration']})"
    Path(args.out).write_text(json.dumps(
        {**report, "recalibrated_from": str(args.report), "command": " ".join(sys.argv),
         "summary": summarise(results), "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
