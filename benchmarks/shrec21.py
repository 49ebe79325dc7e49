"""The paper's SHREC 2021 protocol: train on model_0 with N labels per class, test on
model_9, models 8-9 and models 6-9, score with the SHREC 2021 localization rule.

Input: a SHREC 2021 folder as distributed (``model_0`` .. ``model_9``, each with
``reconstruction.mrc``, ``particle_locations.txt`` and ``occupancy_mask.mrc``; the
harness reads models 0 and 6 to 9). For each N of ``--labels`` (3, 5, 10), N
particles per scored class are drawn from model_0's ``particle_locations.txt``
(``--seed``), ``sasi train`` runs with the engine's defaults (SaSi: ISS SimCLR,
Volume Infill, consistency) and ``--iterations``, ``sasi pick`` picks models 6 to 9,
and the picks are scored against each model's occupancy mask (``metrics.
evaluate_occupancy``: a hit inside a particle's once-dilated occupancy, each particle
once; the classes of ``--unscored`` ignored), counts summed over the models of each
test set. The table prints the paper's rows (localization F1, class-agnostic) and
this run's pooled F1 beside them; the JSON report (``--out``) has every count, the
class-aware F1 too.

Radii (voxels) default to each class's median equivalent-sphere radius in model_0's
occupancy mask; ``--radius CLASS=R`` overrides one. ``--z-range LO:HI`` crops every
volume to z slices LO..HI-1 first (SHREC 2021 reconstructions hold data only in z
~165..345 of 512: ``--z-range 160:352`` reads a third of the voxels).

Usage: python benchmarks/shrec21.py SHREC_DIR --work DIR [--labels 3 5 10]
       [--iterations N] [--seed S] [--device auto] [--z-range LO:HI]
       [--radius CLASS=R ...] [--train-args "..."] [--out report.json]
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sasi_scipion.engine.atomic import atomic_output
from sasi_scipion.engine.cli import main as sasi
from sasi_scipion.engine.coordinates import ParticleTable, read_particles, write_particles
from sasi_scipion.engine.defaults import UNSCORED_CLASSES
from sasi_scipion.engine.demo import few_labels
from sasi_scipion.engine.errors import SasiInputError
from sasi_scipion.engine.formats import read_coordinates
from sasi_scipion.engine.metrics import Scores, evaluate_occupancy
from sasi_scipion.engine.mrc_io import read_volume, write_volume
from sasi_scipion.engine.training_data import parse_radii

MODELS = tuple(range(10))
TRAIN_MODEL = 0
TEST_SETS = {"T9": (9,), "T8-9": (8, 9), "T6-9": (6, 7, 8, 9)}
LABEL_COUNTS = (3, 5, 10)
TOMOGRAM, LOCATIONS, OCCUPANCY = "reconstruction.mrc", "particle_locations.txt", \
    "occupancy_mask.mrc"
SHREC_UNSCORED = (*UNSCORED_CLASSES, "fiducial")
"""Not scored: 4V94 and vesicles (the paper), and gold fiducials (not particles)."""
PAPER = {
    "DeepFinder + meanshift": {3: (.129, .065, .071), 5: (.062, .031, .057),
                               10: (.146, .073, .090)},
    "DeepFinder + cc3d": {3: (.288, .186, .189), 5: (.293, .195, .211),
                          10: (.358, .224, .198)},
    "DeepETPicker + cc3d": {3: (.387, .213, .201), 5: (.302, .152, .165),
                            10: (.403, .213, .212)},
    "SaSi (DF, ISS + infill)": {3: (.378, .262, .273), 5: (.372, .362, .315),
                                10: (.359, .410, .356)},
    "DF + ISS (no infill)": {3: (.468, .522, .386), 5: (.457, .314, .284),
                             10: (.459, .304, .263)},
    "3D-MAE + infill": {3: (.263, .261, .272), 5: (.484, .442, .403),
                        10: (.444, .517, .458)},
}
"""The paper's Table (SHREC 2021 localization F1, trained on model_0): per method, per
N, the F1 on T9, T8-9, T6-9 (``shared/docs/sasi-method.md``)."""


def model_dir(root: Path, model: int) -> Path:
    """The folder of SHREC model ``model``."""
    return root / f"model_{model}"


def check_folder(root: Path) -> None:
    """Refuse a folder that lacks a file the protocol reads.

    Raises:
        SasiInputError: naming the first missing files.
    """
    needed = [model_dir(root, m) / name for m in (TRAIN_MODEL, *TEST_SETS["T6-9"])
              for name in (TOMOGRAM, LOCATIONS, OCCUPANCY)]
    missing = [str(p.relative_to(root)) for p in needed if not p.is_file()]
    if missing:
        raise SasiInputError(
            f"{root}: not a SHREC 2021 folder, {len(missing)} file(s) missing "
            f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}); give the folder "
            "that holds model_0 .. model_9")


def _z_slice(text: str | None) -> slice | None:
    if text is None:
        return None
    try:
        low, high = (int(v) for v in text.split(":"))
    except ValueError:
        low = high = -1
    if not 0 <= low < high:
        raise SasiInputError(f"--z-range {text}: expected LO:HI with 0 <= LO < HI")
    return slice(low, high)


def prepare_model(root: Path, work: Path, model: int, z_range: slice | None
                  ) -> tuple[Path, ParticleTable, np.ndarray]:
    """A model's tomogram path, truth (0-based voxels) and occupancy ``(z, y, x)``; with
    ``z_range``, the tomogram cropped into ``work`` and the truth and occupancy
    renumbered to the particles left in it."""
    folder = model_dir(root, model)
    truth = read_coordinates(folder / LOCATIONS, fmt="shrec")
    occupancy = read_volume(folder / OCCUPANCY, check_values=False).data.astype(np.int64)
    if z_range is None:
        return folder / TOMOGRAM, truth, occupancy
    volume = read_volume(folder / TOMOGRAM)
    cropped = work / f"model_{model}_z{z_range.start}-{z_range.stop}.mrc"
    write_volume(cropped, volume.data[z_range], volume.voxel_size)
    occupancy = occupancy[z_range]
    kept = np.unique(occupancy[occupancy > 0]) - 1
    renumber = np.zeros(len(truth) + 1, dtype=np.int64)
    renumber[kept + 1] = np.arange(1, len(kept) + 1)
    truth = truth.subset(kept)
    truth.xyz[:, 2] -= z_range.start
    return cropped, truth, renumber[occupancy]


def occupancy_radii(truth: ParticleTable, occupancy: np.ndarray) -> dict[str, float]:
    """Per class, the median radius (voxels) of the spheres with the volumes of its
    particles' occupancy, rounded to 0.1."""
    counts = np.bincount(occupancy.reshape(-1), minlength=len(truth) + 1)[1:]
    radii = {}
    for name in truth.class_names:
        volumes = counts[(truth.classes == name) & (counts > 0)]
        if len(volumes):
            radii[name] = round(float(np.median((3 * volumes / (4 * math.pi)) ** (1 / 3))), 1)
    return radii


def score_sets(picks: dict[int, ParticleTable], truths: dict[int, ParticleTable],
               occupancies: dict[int, np.ndarray], unscored: Sequence[str]) -> dict:
    """Per test set of :data:`TEST_SETS`: pooled (class-agnostic) and class-aware
    counts summed over its models, with precision, recall, F1."""
    per_model = {m: evaluate_occupancy(picks[m], truths[m], occupancies[m], unscored)
                 for m in TEST_SETS["T6-9"]}
    report = {}
    for name, models in TEST_SETS.items():
        pooled, aware = Scores(), Scores()
        for m in models:
            pooled += per_model[m].pooled
            for scores in per_model[m].per_class.values():
                aware += scores
        report[name] = {"pooled": pooled.to_dict(), "class_aware": aware.to_dict()}
    return report


def _f1(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}".replace("0.", ".", 1)


def format_table(results: dict[int, dict], label: str) -> str:
    """The paper's table layout: one row per paper method and one for this run
    (``results``: N -> :func:`score_sets` report), F1 per N and test set."""
    counts = LABEL_COUNTS
    columns = [f"N={n} {s}" if i == 0 else s for n in counts for i, s in enumerate(TEST_SETS)]
    rows = [(method, [by_n[n][i] for n in counts for i in range(len(TEST_SETS))])
            for method, by_n in PAPER.items()]
    rows.append((label, [results[n][s]["pooled"]["f1"] if n in results else None
                         for n in counts for s in TEST_SETS]))
    width = max(len(name) for name, _ in rows)
    lines = ["SHREC 2021 localization F1, trained on model_0 with N labels per class "
             "(paper's rows, then this run's pooled F1)",
             f"{'method':<{width}} | " + " | ".join(f"{c:>8}" for c in columns)]
    lines.append("-" * len(lines[-1]))
    lines += [f"{name:<{width}} | " + " | ".join(f"{_f1(v):>8}" for v in values)
              for name, values in rows]
    return "\n".join(lines)


def _run_sasi(*argv: str) -> None:
    if sasi(list(argv)) != 0:
        raise SasiInputError(f"'sasi {argv[0]}' failed (its error is above)")


def run(args: argparse.Namespace) -> dict:
    """Train, pick and score for every N of ``args.labels``; return the report."""
    root, work = Path(args.shrec_dir), Path(args.work)
    check_folder(root)
    work.mkdir(parents=True, exist_ok=True)
    z_range = _z_slice(args.z_range)
    prepared = {m: prepare_model(root, work, m, z_range)
                for m in (TRAIN_MODEL, *TEST_SETS["T6-9"])}
    train_tomogram, train_truth, train_occupancy = prepared[TRAIN_MODEL]
    scored = train_truth.subset(np.array([c not in args.unscored for c in train_truth.classes],
                                         dtype=bool))
    radii = {name: r for name, r in occupancy_radii(train_truth, train_occupancy).items()
             if name in scored.class_names}
    radii.update(parse_radii(args.radius))
    report = {"shrec_dir": str(root), "iterations": args.iterations, "seed": args.seed,
              "z_range": args.z_range, "radii": radii, "unscored": list(args.unscored),
              "results": {}}
    for n in args.labels:
        start = time.time()
        labels, model = work / f"labels_{n}.tsv", work / f"model_{n}.pt"
        write_particles(labels, few_labels(scored, n, args.seed))
        _run_sasi("train", "--tomogram", str(train_tomogram), "--coords", str(labels),
                  *[a for name, r in radii.items() for a in ("--radius", f"{name}={r}")],
                  "--out", str(model), "--seed", str(args.seed), "--device", args.device,
                  *(["--iterations", str(args.iterations)] if args.iterations else []),
                  *shlex.split(args.train_args))
        picks = {}
        for m in TEST_SETS["T6-9"]:
            out = work / f"picks_{n}_model_{m}.tsv"
            _run_sasi("pick", "--model", str(model), "--tomogram", str(prepared[m][0]),
                      "--out", str(out), "--device", args.device)
            picks[m] = read_particles(out, allow_empty=True)
        report["results"][n] = score_sets(picks, {m: prepared[m][1] for m in picks},
                                          {m: prepared[m][2] for m in picks}, args.unscored)
        report["results"][n]["seconds"] = round(time.time() - start, 1)
    return report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("shrec_dir", help="folder holding model_0 .. model_9")
    parser.add_argument("--work", required=True, help="folder for labels, models, picks")
    parser.add_argument("--labels", type=int, nargs="+", default=list(LABEL_COUNTS),
                        help="labels per class, N (default 3 5 10)")
    parser.add_argument("--iterations", type=int,
                        help="training steps (default: sasi train's, 10000 on a GPU)")
    parser.add_argument("--seed", type=int, default=0, help="label draw and training seed")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--z-range", help="crop every volume to z slices LO:HI first")
    parser.add_argument("--radius", action="append", default=[],
                        help="CLASS=R radius in voxels (default: from model_0's occupancy)")
    parser.add_argument("--unscored", nargs="*", default=list(SHREC_UNSCORED),
                        help="classes neither labelled nor scored (default: "
                             f"{' '.join(SHREC_UNSCORED)})")
    parser.add_argument("--train-args", default="",
                        help="more 'sasi train' options, quoted (e.g. \"--arch resunet\")")
    parser.add_argument("--out", help="JSON report to write")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the protocol, print the table, write the report; 2 on bad input."""
    args = build_parser().parse_args(argv)
    try:
        report = run(args)
    except SasiInputError as error:
        print(f"shrec21: error: {error}", file=sys.stderr)
        return 2
    label = f"SaSi, this run ({args.iterations or 'default'} it., seed {args.seed})"
    print(format_table(report["results"], label))
    if args.out:
        with atomic_output(args.out) as tmp:
            tmp.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
