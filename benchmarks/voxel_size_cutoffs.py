"""How much of the accuracy lost on a coarser tomogram is the score cut-off: the
accuracy harness's test tomograms, native (10 Å) and resampled to ``--voxel-size``
(13.5 Å by default), picked by a harness model with every pick kept (``sasi pick
--min-score 0``), then scored (SHREC occupancy rule, picks mapped back to the 10 Å
grid) at the model's own per-class cut-offs, at those cut-offs all shifted by the
same delta (the best of -0.3 to 0.3 in steps of 0.05), and at the best single
global threshold. If the coarse tomogram's best shift were far above its default,
cut-offs matched to the voxel size would recover the loss.

Usage: python benchmarks/voxel_size_cutoffs.py --work WORK --model sasi_3_0.pt
       [--voxel-size 13.5] --out results.json
where WORK is an accuracy-harness work folder (``accuracy.py --work``).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import numpy as np
from accuracy import _score
from report import current_commit
from voxel_size import _pick

from sasi_scipion.engine.coordinates import ParticleTable, read_particles
from sasi_scipion.engine.defaults import DEFAULT_COMPONENTS
from sasi_scipion.engine.model_file import Model
from sasi_scipion.engine.mrc_io import read_volume, write_volume
from sasi_scipion.engine.resample import resample, resampled_shape, to_source_voxels

SHIFTS = np.round(np.arange(-0.3, 0.31, 0.05), 2) + 0.0  # no -0.0
THRESHOLDS = np.round(np.arange(0.1, 0.96, 0.05), 2)


def every_pick(model: Path, tomogram: Path, out: Path) -> ParticleTable:
    """``sasi pick --min-score 0`` of ``tomogram``: every pick with its score."""
    _pick(model, tomogram, out, "--min-score", "0")
    return read_particles(out, allow_empty=True)


def kept(picks: dict[str, ParticleTable], keep) -> dict[str, ParticleTable]:
    """The picks for which ``keep(classes, scores)`` is true."""
    out = {}
    for name, table in picks.items():
        mask = keep(table.classes, table.scores)
        out[name] = ParticleTable(table.xyz[mask], table.classes[mask], table.scores[mask])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--model", required=True, help="model file name inside --work")
    parser.add_argument("--voxel-size", type=float, default=13.5)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    data = args.work / "data"
    dataset = json.loads((data / "dataset.json").read_text())
    tests, unscored = dataset["tomograms"][1:], dataset["unscored"]
    model = args.work / args.model
    meta = Model.load(model).metadata
    cutoffs = dict(zip(meta.classes, meta.score_cutoffs[DEFAULT_COMPONENTS]))
    folder = args.work / "voxel_size_cutoffs"
    folder.mkdir(exist_ok=True)
    rows = []
    for voxel_size in (None, args.voxel_size):
        picks = {}
        for name in tests:
            source = read_volume(data / f"{name}.mrc")
            tomogram, shape = data / f"{name}.mrc", source.data.shape
            if voxel_size is not None:
                shape = resampled_shape(shape, source.voxel_size, voxel_size)
                tomogram = folder / f"{name}_{voxel_size}A.mrc"
                write_volume(tomogram, resample(source.data, shape), voxel_size)
            table = every_pick(model, tomogram,
                               folder / f"{model.stem}_{voxel_size or 'native'}_{name}.tsv")
            table.xyz = to_source_voxels(table.xyz, source.data.shape, shape)
            picks[name] = table

        def shifted(delta: float):
            return lambda classes, scores: np.array(
                [s >= cutoffs[str(c)] + delta for c, s in zip(classes, scores)], dtype=bool)

        default = _score(kept(picks, shifted(0.0)), data, tests, unscored)
        by_shift = {float(d): _score(kept(picks, shifted(d)), data, tests, unscored)["pooled_f1"]
                    for d in SHIFTS}
        by_threshold = {float(t): _score(kept(picks, lambda c, s, t=t: s >= t), data, tests,
                                         unscored)["pooled_f1"] for t in THRESHOLDS}
        rows.append({"voxel_size": voxel_size or dataset["voxel_size"],
                     **{k: default[k] for k in ("pooled_f1", "precision", "recall",
                                                "class_aware_f1")},
                     "best_shift": max(by_shift.items(), key=lambda kv: kv[1]),
                     "best_threshold": max(by_threshold.items(), key=lambda kv: kv[1]),
                     "pooled_f1_by_shift": by_shift})
        print(rows[-1], file=sys.stderr)
    Path(args.out).write_text(json.dumps({
        "command": " ".join(sys.argv), "commit": current_commit(),
        "hardware": platform.processor() or platform.machine(), "model": str(model),
        "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
