"""Rescore a finished accuracy run with the class-agnostic fallback cut-off
(``thresholds.score_cutoffs`` since 2026-12-02) without picking the test tomograms
again.

The fallback only replaces cut-offs of 0 (classes none of whose labels was picked
as that class) by the class-agnostic one; every other class keeps its cut-off. So
the run's test picks, already cut with the old cut-offs, cut again at the fallback
for the classes that had 0, are exactly what the new rule gives. One pick of the
training tomogram per model (no cut-off) gives the labelled particles' scores.

Usage: python benchmarks/recut_fallback.py REPORT.json --out recut.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from accuracy import TRAINING_TOMOGRAM, _score, finished_run, summarise

from sasi_scipion.engine.coordinates import read_particles
from sasi_scipion.engine.model_file import read_model_file
from sasi_scipion.engine.thresholds import score_cutoffs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    report, work, data, dataset, tests = finished_run(args.report)
    results = []
    for entry in report["results"]:
        if entry["labels"] is None:
            continue
        stem = f"{entry['row']}_{entry['labels']}_{entry['seed']}"
        model = work / f"{stem}.pt"
        meta, _ = read_model_file(model)
        training_picks = work / f"{stem}_uncut_{TRAINING_TOMOGRAM}.tsv"
        subprocess.run([str(Path(sys.executable).parent / "sasi"), "pick", "--model",
                        str(model), "--tomogram", str(data / f"{TRAINING_TOMOGRAM}.mrc"),
                        "--out", str(training_picks), "--device", "cpu", "--min-score", "0"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        labels = read_particles(work / f"labels_{entry['labels']}_{entry['seed']}.tsv")
        new = dict(zip(meta.classes, score_cutoffs(
            [read_particles(training_picks, allow_empty=True)], [labels], meta.classes,
            meta.radii)))
        old = dict(zip(meta.classes, meta.score_cutoffs["peaks"]))
        changed = {c for c in meta.classes if old[c] == 0 and new[c] > 0}
        picks = {}
        for name in tests:
            table = read_particles(work / f"{stem}_tiled_{name}.tsv", allow_empty=True)
            keep = np.array([c not in changed or s >= new[c]
                             for c, s in zip(table.classes, table.scores)], dtype=bool)
            picks[name] = table.subset(keep)
        results.append({**{k: entry[k] for k in ("row", "labels", "seed", "train_s")},
                        "pick_mode": "tiled", "fallback_classes": len(changed),
                        **_score(picks, data, tests, dataset["unscored"], report["radii"])})
        print(results[-1], file=sys.stderr)
    Path(args.out).write_text(json.dumps(
        {**report, "recut_from": str(args.report), "command": " ".join(sys.argv),
         "summary": summarise(results), "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
