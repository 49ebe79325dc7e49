"""Few-shot accuracy on SHREC-2021-like tomograms: SaSi's components row by row.

Builds a data set with the engine's simulator from the SHREC 2021 density maps
(``../shared/templates/shrec21_10A``; 4V94 is an unscored distractor), one
training tomogram and ``--test-tomograms`` test tomograms, then for each N
(labels per class, drawn from the training tomogram with a fixed seed) and
each seed scores on the test tomograms (SHREC 2021 occupancy rule):

- ``blob``: a non-learned baseline: Gaussian-smoothed dark blobs (local minima
  below mean - 2 sd), class-agnostic (pooled F1 only);
- ``plain``: supervised U-Net + cc3d (the paper's "DeepFinder + cc3d");
- ``+infill``, ``+consistency``, ``+iss``: one SaSi component each;
- ``sasi``: everything (the engine's defaults; the training precision ``auto`` is
  bf16 on a CPU with AMX or AVX512-BF16, else fp32: ``train_precision`` in each
  result says which);
- ``sasi-paper``: everything with the paper's U-Net, without the batch
  normalisation the engine adds (``--no-batch-norm``);
- ``sasi+background``: the same, with N background points per distractor kind added
  to the labels (voxels of gold, membranes and vesicles, junk: class ``background``);
- ``sasi-one-class``: the same, trained on the N labels of one class only
  (``--one-class``, default 1BXN) and scored on that class (``one_class``: its
  precision, recall and F1, where a pick on any other complex, gold, membrane or
  junk is a false positive);
- ``sasi+ema``: the same, saving an exponential moving average of the weights
  (``--ema-decay 0.99``, ramping up from the first steps);
- ``sasi+lr2x``: the same at twice the supervised learning rate (``--learning-rate
  2e-3``);
- ``sasi-batch8x2``: the same windows in twice the steps of half the batch
  (``--batch-size 8 --iterations 1200``; this row ignores ``--iterations``);
- ``sasi+pu``, ``sasi+self-labels``: the same, with self-training half-way: the
  unlabelled particles the model then finds in the training tomogram are left out of
  the loss (``--self-training ignore``) or taught as labels (``--self-training
  labels``);
- ``sasi+band-limit``: the same, with half the supervised windows band-limited to
  up to 1.5 times the voxel size (``--band-limit 1.5``: coarser tomograms);
- ``sasi-fp32``, ``sasi-bf16``: the same, trained in float32 or under bf16 autocast
  (``--precision``), whatever the CPU;
- ``sasi-resunet``, ``sasi-vit``: everything, with the other backbones.

Every learned row but ``sasi-batch8x2`` gets the same number of iterations. Results go to a JSON
file; ``RESULTS.md`` quotes them.

Profiles: ``quick`` (3 scored maps, N = 5, one seed: fits in CI time),
``medium`` (all 12 scored maps, N = 3, 5, 10, five seeds, 150 iterations, SNR
0.2: about 3 minutes per training on 2 CPU cores), ``medium-lowsnr`` (the same
at SNR 0.05, nearer SHREC 2021), ``full`` (the paper's scale on a bigger
volume: hours on a GPU). The JSON file is rewritten after every row, with a
``summary`` (mean and standard deviation over seeds per row and N), so a long
run that is stopped keeps what it measured. Scores: class-agnostic ``pooled_f1``
(a pick of any class may hit any particle) and ``class_aware_f1`` (a hit needs
the right class: the per-class counts summed).

Every learned row's model is picked with the tiled default, or with each of
``--pick-modes`` (``tiled``, ``sliding``: the paper's 24-voxel windows).

Usage: python benchmarks/accuracy.py --profile quick|medium|medium-lowsnr|full [--rows ...]
       [--seeds 0 1] [--pick-modes tiled sliding] [--work DIR] --out results.json
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from template_matching import match_particles
from torch.nn import functional

from sasi_scipion.engine.coordinates import ParticleTable, read_particles, write_particles
from sasi_scipion.engine.demo import few_labels
from sasi_scipion.engine.device import use_all_cpus
from sasi_scipion.engine.limits import BACKGROUND_CLASS
from sasi_scipion.engine.metrics import Scores, evaluate_czii, evaluate_occupancy
from sasi_scipion.engine.model_file import Model
from sasi_scipion.engine.mrc_io import read_volume
from sasi_scipion.engine.normalize import normalise
from sasi_scipion.engine.picking import segment_tomogram
from sasi_scipion.engine.postprocess import (
    COMPONENT_MODES,
    FOREGROUND_THRESHOLD,
    SAME_CLASS_SUPPRESSION,
    extract_particles,
    smooth_gaussian,
)
from sasi_scipion.engine.simulate import load_templates
from sasi_scipion.engine.thresholds import score_cutoffs

TEMPLATES = Path(__file__).resolve().parents[2] / "shared" / "templates" / "shrec21_10A"
SIZE_GROUPS = {"small": ["1S3X", "3QM1", "3GL1", "3H84", "2CG9"],
               "medium": ["3D2F", "1U6G", "3CF3", "1BXN", "1QVR"],
               "large": ["4CR2", "5MRC"]}
PROFILES = {
    "quick": {"classes": ["1S3X", "1U6G", "4CR2", "4V94"], "shape": "64,160,160",
              "test_tomograms": 2, "labels": [5], "seeds": [0], "iterations": 150, "snr": 0.2,
              "distractors": False},
    "medium": {"classes": None, "shape": "64,192,192", "test_tomograms": 2,
               "labels": [3, 5, 10], "seeds": [0, 1, 2, 3, 4], "iterations": 150, "snr": 0.2,
               "distractors": True},
    "medium-lowsnr": {"classes": None, "shape": "64,192,192", "test_tomograms": 2,
                      "labels": [3, 5, 10], "seeds": [0, 1, 2, 3, 4], "iterations": 150,
                      "snr": 0.05, "distractors": True},
    "full": {"classes": None, "shape": "96,256,256", "test_tomograms": 2, "labels": [3, 5, 10],
             "seeds": [0, 1, 2], "iterations": 600, "snr": 0.1,
             "distractors": True},
}
TRAINING_TOMOGRAM = "tomo_000"
ONE_CLASS_ROWS = {"sasi-one-class"}
"""Rows trained on the N labels of one class only (``--one-class``), scored on that class:
does a model of one kind of particle leave the other complexes alone?"""
ONE_CLASS = "1BXN"
"""The default ``--one-class``: a medium-sized complex (radius 6.5 voxels)."""
BACKGROUND_ROWS = {"sasi+background"}
"""Rows whose labels also hold N background points per distractor kind (gold, membrane
or vesicle, junk) of the training tomogram, as a user would click a few of each."""
ROWS = {
    "plain": ["--ssl", "none", "--no-infill", "--no-consistency"],
    "+infill": ["--ssl", "none", "--no-consistency"],
    "+consistency": ["--ssl", "none", "--no-infill"],
    "+iss": ["--ssl", "iss", "--no-infill", "--no-consistency"],
    "sasi": [],
    "sasi-paper": ["--no-batch-norm"],
    "sasi+background": [],
    "sasi+ema": ["--ema-decay", "0.99"],
    "sasi+lr2x": ["--learning-rate", "2e-3"],
    "sasi-batch8x2": ["--batch-size", "8", "--iterations", "1200"],  # 600 x 16 windows
    "sasi+pu": ["--self-training", "ignore"],
    "sasi+self-labels": ["--self-training", "labels"],
    "sasi+band-limit": ["--band-limit", "1.5"],
    "sasi-fp32": ["--precision", "fp32"],
    "sasi-bf16": ["--precision", "bf16"],
    "sasi-one-class": [],
    "sasi-resunet": ["--arch", "resunet"],
    "sasi-vit": ["--arch", "vit"],
}


def _sasi(*args: str) -> None:
    subprocess.run([str(Path(sys.executable).parent / "sasi"), *args], check=True,
                   stderr=subprocess.DEVNULL)


def blob_picks(volume: np.ndarray, radius: float) -> ParticleTable:
    """Dark blobs: local minima of a Gaussian-smoothed volume below mean - 2 sd."""
    smooth = -smooth_gaussian(normalise(volume), max(radius / 2, 1.0))
    size = int(2 * radius) | 1
    peaks = smooth == functional.max_pool3d(smooth[None, None], size, 1, size // 2)[0, 0]
    peaks &= smooth > smooth.mean() + 2 * smooth.std()
    zyx = peaks.nonzero().numpy().astype(float)
    return ParticleTable(zyx[:, ::-1], np.array(["blob"] * len(zyx), dtype=object))


def with_background_points(labels: ParticleTable, distractor_mask: Path, per_kind: int,
                           seed: int) -> ParticleTable:
    """``labels`` plus ``per_kind`` voxels of each distractor kind of the simulator's
    distractor label map (gold, membrane or vesicle, junk; on the density, as a user
    would click them: a vesicle's centre is empty), all of class ``BACKGROUND_CLASS``."""
    mask = read_volume(distractor_mask, check_values=False).data
    rng = np.random.default_rng(seed)
    points = []
    for kind in np.unique(mask[mask > 0]):
        zyx = np.argwhere(mask == kind)
        points.append(zyx[rng.choice(len(zyx), size=min(per_kind, len(zyx)), replace=False)])
    xyz = np.concatenate(points)[:, ::-1].astype(np.float64)
    return ParticleTable(np.concatenate([labels.xyz, xyz]),
                         np.concatenate([labels.classes,
                                         np.full(len(xyz), BACKGROUND_CLASS, dtype=object)]))


def picks_inside(picks: ParticleTable, mask: np.ndarray) -> int:
    """How many picks (x, y, z voxels) round to a non-zero voxel of ``mask`` (z, y, x)."""
    zyx = np.rint(picks.xyz[:, ::-1]).astype(np.int64)
    inside = ((zyx >= 0) & (zyx < mask.shape)).all(axis=1)
    return int(np.count_nonzero(mask[tuple(zyx[inside].T)]))


def _score(picks: ParticleTable | dict[str, ParticleTable], data: Path, names: list[str],
           unscored: list[str], radii: dict[str, float] | None = None,
           focus: str | None = None) -> dict:
    """SHREC 2021 occupancy-rule scores over the test tomograms ``names`` (pooled,
    class-aware, per size group), the CZII challenge's F-beta 4 when ``radii``
    (class -> voxels) is given (unscored classes weighted 0), and with ``focus`` (a
    class name) that class's own precision, recall and F1 (``one_class``)."""
    pooled, per_class = Scores(), {}
    truths = []
    on_distractors = 0
    for name in names:
        truth = read_particles(data / f"{name}.tsv")
        truths.append(truth)
        occupancy = read_volume(data / f"{name}_occupancy.mrc", check_values=False).data
        table = picks[name] if isinstance(picks, dict) else picks
        result = evaluate_occupancy(table, truth, occupancy.astype(np.int64), unscored=unscored)
        distractor_mask = data / f"{name}_distractor_mask.mrc"
        if distractor_mask.exists():
            on_distractors += picks_inside(table, read_volume(distractor_mask,
                                                              check_values=False).data)
        for total, part in [(pooled, result.pooled)] + [
                (per_class.setdefault(c, Scores()), s) for c, s in result.per_class.items()]:
            total.tp, total.fp, total.fn = (total.tp + part.tp, total.fp + part.fp,
                                            total.fn + part.fn)
    class_aware = Scores(sum(c.tp for c in per_class.values()),
                         sum(c.fp for c in per_class.values()),
                         sum(c.fn for c in per_class.values()))
    groups = {}
    for group, members in SIZE_GROUPS.items():
        counts = [per_class[c] for c in members if c in per_class]
        if counts:
            s = Scores(sum(c.tp for c in counts), sum(c.fp for c in counts),
                       sum(c.fn for c in counts))
            groups[group] = round(s.f1, 3)
    scores = {"pooled_f1": round(pooled.f1, 3), "precision": round(pooled.precision, 3),
              "recall": round(pooled.recall, 3), "class_aware_f1": round(class_aware.f1, 3),
              "size_groups": groups}
    if any((data / f"{name}_distractor_mask.mrc").exists() for name in names):
        scores["picks_on_distractors"] = on_distractors
    if radii is not None:
        czii = evaluate_czii([picks[name] for name in names], truths, radii,
                             weights=dict.fromkeys(unscored, 0.0))
        scores["czii_f4"] = round(czii.score, 3)
    if focus is not None:
        own = per_class.get(focus, Scores())
        scores["one_class"] = {"class": focus, "precision": round(own.precision, 3),
                               "recall": round(own.recall, 3), "f1": round(own.f1, 3)}
    return scores


SUMMARY_METRICS = ("pooled_f1", "class_aware_f1", "czii_f4", "precision", "recall")


def summarise(results: list[dict]) -> list[dict]:
    """Mean and standard deviation over seeds (population, ``ddof=0``) of each
    (row, labels, pick mode, component mode, cut-off)'s metrics, in the order the
    rows first appear."""
    groups: dict[tuple, list[dict]] = {}
    for result in results:
        key = (result["row"], result["labels"], result.get("pick_mode"),
               result.get("components"), result.get("min_score"))
        groups.setdefault(key, []).append(result)
    summary = []
    for (row, labels, mode, components, cut), members in groups.items():
        entry = {"row": row, "labels": labels, "pick_mode": mode, "components": components,
                 "min_score": cut, "seeds": [m["seed"] for m in members]}
        for metric in SUMMARY_METRICS:
            values = [m[metric] for m in members if metric in m]
            if values:
                entry[metric] = {"mean": round(float(np.mean(values)), 3),
                                 "sd": round(float(np.std(values)), 3)}
        summary.append(entry)
    return summary


def finished_run(report_path: Path) -> tuple[dict, Path, Path, dict, list[str]]:
    """A finished report, its work folder, data folder, ``dataset.json`` and the
    names of its test tomograms."""
    report = json.loads(report_path.read_text())
    work = Path(report["work"])
    data = work / "data"
    dataset = json.loads((data / "dataset.json").read_text())
    return report, work, data, dataset, dataset["tomograms"][1:]


def rescore(report_path: Path, components: list[str], min_scores: list[float],
            cutoff_factors: list[float], foreground_thresholds: list[float],
            same_class_suppressions: Sequence[float] = (SAME_CLASS_SUPPRESSION,)) -> dict:
    """Pick the test tomograms again with every learned model of a finished report,
    extracting particles with each component mode and score cut-off from one
    segmentation per model and tomogram; return a report of the same layout whose
    results carry ``components`` and ``min_score`` (a number, or ``auto x F``: the
    per-class cut-offs of ``thresholds.score_cutoffs`` with factor F, from the
    model's picks of its training tomogram and the labels it was trained on), and
    ``foreground`` and ``peaks`` at each of ``foreground_thresholds``, ``peaks`` also
    at each of ``same_class_suppressions`` (named in ``components`` when not the
    default)."""
    report, work, data, dataset, tests = finished_run(report_path)
    use_all_cpus(torch.device("cpu"))
    results = []
    for entry in report["results"]:
        if entry["labels"] is None:
            continue
        model = work / f"{entry['row']}_{entry['labels']}_{entry['seed']}.pt"
        loaded = Model.load(model)
        meta = loaded.metadata
        segmentations = {name: segment_tomogram(loaded, data / f"{name}.mrc", torch.device("cpu"),
                                                entry.get("pick_mode", "tiled"))[0]
                         for name in [TRAINING_TOMOGRAM, *tests]}
        training = segmentations.pop(TRAINING_TOMOGRAM)
        labels = read_particles(work / f"labels_{entry['labels']}_{entry['seed']}.tsv")
        for mode, threshold, suppression in [
                (m, t, f) for m in components
                for t in (foreground_thresholds if m != "argmax" else [None])
                for f in (same_class_suppressions if m == "peaks"
                          else [SAME_CLASS_SUPPRESSION])]:
            extract = functools.partial(extract_particles, class_names=meta.classes,
                                        radii=meta.radii, components=mode,
                                        same_class_suppression=suppression,
                                        **({} if threshold is None
                                           else {"foreground_threshold": threshold}))
            mode_name = mode if threshold is None else f"{mode} > {threshold}"
            if suppression != SAME_CLASS_SUPPRESSION:
                mode_name += f", same class within {suppression} radii"
            training_picks = extract(training)
            cuts: list[tuple[float | str, float | list[float]]] = [(c, c) for c in min_scores]
            cuts += [(f"auto x {factor}", score_cutoffs([training_picks], [labels],
                                                        meta.classes, meta.radii, factor))
                     for factor in cutoff_factors]
            for name_of_cut, cut in cuts:
                picks = {name: extract(seg, min_score=cut)
                         for name, seg in segmentations.items()}
                results.append({**{k: entry[k] for k in ("row", "labels", "seed", "train_s")},
                                "pick_mode": entry.get("pick_mode", "tiled"),
                                "components": mode_name, "min_score": name_of_cut,
                                **_score(picks, data, tests, dataset["unscored"],
                                         report["radii"])})
                print(results[-1], file=sys.stderr)
    return {**report, "rescored": str(report_path), "summary": summarise(results),
            "results": results}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--profile", choices=PROFILES, default="quick")
    parser.add_argument("--rows", nargs="+", default=["blob", "tm", *ROWS])
    parser.add_argument("--seeds", nargs="+", type=int,
                        help="override the profile's seeds")
    parser.add_argument("--labels", nargs="+", type=int,
                        help="labels per class to run (default: the profile's)")
    parser.add_argument("--iterations", type=int,
                        help="training iterations per learned row (default: the profile's)")
    parser.add_argument("--pick-modes", nargs="+", default=["tiled"],
                        choices=["tiled", "sliding"],
                        help="pick every learned row's model in each of these modes")
    parser.add_argument("--work", help="folder for the data, models and picks (kept; "
                        "default: a new temporary folder)")
    parser.add_argument("--rescore", type=Path,
                        help="a finished report: pick its models again (see --components)")
    parser.add_argument("--components", nargs="+", default=list(COMPONENT_MODES),
                        choices=COMPONENT_MODES, help="with --rescore: component modes")
    parser.add_argument("--min-scores", nargs="+", type=float, default=[0.0],
                        help="with --rescore: score cut-offs")
    parser.add_argument("--cutoff-factors", nargs="+", type=float, default=[],
                        help="with --rescore: also per-class cut-offs from the training "
                             "tomogram's labels, with each of these factors")
    parser.add_argument("--foreground-thresholds", nargs="+", type=float,
                        default=[FOREGROUND_THRESHOLD],
                        help="with --rescore: particle probabilities for foreground "
                             "components")
    parser.add_argument("--same-class-suppressions", nargs="+", type=float,
                        default=[SAME_CLASS_SUPPRESSION],
                        help="with --rescore: for peaks, the distances (class radii) "
                             "within which a better peak of the same class drops a peak")
    parser.add_argument("--one-class", default=ONE_CLASS,
                        help="the class of the sasi-one-class row (default %(default)s)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    if args.rescore:
        Path(args.out).write_text(json.dumps(
            rescore(args.rescore, args.components, args.min_scores, args.cutoff_factors,
                    args.foreground_thresholds, args.same_class_suppressions),
            indent=2) + "\n")
        return
    profile = dict(PROFILES[args.profile])
    for key in ("seeds", "labels", "iterations"):
        if getattr(args, key):
            profile[key] = getattr(args, key)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="sasi-accuracy-"))
    work.mkdir(parents=True, exist_ok=True)
    maps = work / "maps"
    maps.mkdir(exist_ok=True)
    for path in TEMPLATES.glob("*.mrc"):
        if profile["classes"] is None or path.stem.upper() in profile["classes"]:
            shutil.copy(path, maps / path.name)
    data = work / "data"
    start = time.perf_counter()
    _sasi("simulate", str(data), "--tomograms", str(1 + profile["test_tomograms"]),
          "--shape", profile["shape"], "--seed", "0", "--templates", str(maps),
          "--snr", str(profile["snr"]), *(["--distractors"] if profile["distractors"] else []))
    dataset = json.loads((data / "dataset.json").read_text())
    tests = dataset["tomograms"][1:]
    radii = dataset["radii"]
    results: list[dict] = []

    def save() -> None:
        report = {"profile": args.profile, "settings": profile, "radii": radii,
                  "hardware": f"{platform.processor() or platform.machine()}, "
                              f"{torch.get_num_threads()} threads",
                  "torch": torch.__version__, "wall_s": round(time.perf_counter() - start),
                  "complete": len(results) == expected, "work": str(work),
                  "summary": summarise(results), "results": results}
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")

    learned = [r for r in args.rows if r in ROWS]
    expected = ("blob" in args.rows) + ("tm" in args.rows) + len(learned) * len(
        profile["labels"]) * len(profile["seeds"]) * len(args.pick_modes)
    if "tm" in args.rows:
        templates = {name: template for name, template in
                     load_templates(maps, dataset["voxel_size"]).items()
                     if name not in dataset["unscored"]}
        picks = {}
        for name in tests:
            cached = work / f"tm_{name}.tsv"
            if not cached.exists():
                truth = read_particles(data / f"{name}.tsv")
                counts = {c: int(np.count_nonzero(truth.classes == c)) for c in templates}
                write_particles(cached, match_particles(
                    read_volume(data / f"{name}.mrc").data, templates, radii, counts,
                    dataset["voxel_size"]))
            picks[name] = read_particles(cached, allow_empty=True)
        results.append({"row": "tm", "labels": None, "seed": None,
                        **_score(picks, data, tests, dataset["unscored"], radii)})
        print(results[-1], file=sys.stderr)
        save()
    if "blob" in args.rows:
        radius = float(np.median(list(radii.values())))
        picks = {name: blob_picks(read_volume(data / f"{name}.mrc").data, radius)
                 for name in tests}
        results.append({"row": "blob", "labels": None, "seed": None,
                        **_score(picks, data, tests, dataset["unscored"])})
        print(results[-1], file=sys.stderr)
        save()
    truth = read_particles(data / f"{TRAINING_TOMOGRAM}.tsv")
    truth = truth.subset(np.isin(truth.classes, [c for c in truth.class_names
                                                 if c not in dataset["unscored"]]))
    for seed in profile["seeds"]:  # seed outermost: a stopped run still covers every N
        for n in profile["labels"]:
            labels = work / f"labels_{n}_{seed}.tsv"
            write_particles(labels, few_labels(truth, n, seed))
            for row in learned:
                row_labels = labels
                row_radii = {c: r for c, r in radii.items() if c not in dataset["unscored"]}
                if row in ONE_CLASS_ROWS:
                    row_labels = work / f"labels_{n}_{seed}_{args.one_class}.tsv"
                    write_particles(row_labels, few_labels(
                        truth.subset(truth.classes == args.one_class), n, seed))
                    row_radii = {args.one_class: radii[args.one_class]}
                elif row in BACKGROUND_ROWS:
                    row_labels = work / f"labels_{n}_{seed}_background.tsv"
                    write_particles(row_labels, with_background_points(
                        read_particles(labels),
                        data / f"{TRAINING_TOMOGRAM}_distractor_mask.mrc", n, seed))
                model = work / f"{row}_{n}_{seed}.pt"
                began = time.perf_counter()
                _sasi("train", "--tomogram", str(data / f"{TRAINING_TOMOGRAM}.mrc"),
                      "--coords", str(row_labels),
                      *[a for c, r in row_radii.items() for a in ("--radius", f"{c}={r}")],
                      "--out", str(model), "--iterations", str(profile["iterations"]),
                      "--seed", str(seed), "--device", "cpu", *ROWS[row])
                train_s = time.perf_counter() - began
                train_precision = Model.load(model).metadata.settings.get("precision")
                for mode in args.pick_modes:
                    picks = {}
                    for name in tests:
                        out = work / f"{row}_{n}_{seed}_{mode}_{name}.tsv"
                        _sasi("pick", "--model", str(model), "--tomogram",
                              str(data / f"{name}.mrc"), "--out", str(out), "--device", "cpu",
                              "--mode", mode)
                        picks[name] = read_particles(out, allow_empty=True)
                    one_class = row in ONE_CLASS_ROWS
                    results.append({"row": row, "labels": n, "seed": seed, "pick_mode": mode,
                                    "train_s": round(train_s),
                                    "train_precision": train_precision,
                                    **_score(picks, data, tests, dataset["unscored"],
                                             None if one_class else radii,
                                             args.one_class if one_class else None)})
                    print(results[-1], file=sys.stderr)
                    save()
    print(Path(args.out).read_text())


if __name__ == "__main__":
    main()
