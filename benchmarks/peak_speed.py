"""Peak post-processing (``sasi pick``'s default components) at two commits, side by side.

``postprocess._peak_particles`` visits the peak candidates one by one, best first. On a
large or crowded tomogram the candidates number in the tens of thousands, so the cost
of one visit decides the post-processing time. This script builds one synthetic
segmentation like a network's on a crowded, noisy tomogram (``--particles`` spheres of
three classes with radii 3, 4.5 and 6.5 voxels in a ``--shape`` volume, isolated
speckle of particle voxels, particle probability 0.7 inside plus uniform noise of 0.4,
class scores uniform in [0.5, 1), float16; seed ``--seed``), exports each commit's
tree (``git archive``) and times ``extract_particles(components="peaks")`` of each
tree in a fresh process, ``--repeats`` times, the commits taking turns (A, B, then B,
A). Reported per commit: the peak candidates, the particles, the seconds of each run,
and whether the two commits' particles are identical bit for bit (classes, centres,
scores, in order).

Usage: python benchmarks/peak_speed.py A B [--shape 64,256,256] [--particles 1500]
       [--repeats 4] [--seed 0] --out results.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from commit_compare import export_commit
from conv_floor import cpu_model

from sasi_scipion.engine.coordinates import ParticleTable
from sasi_scipion.engine.masks import sphere_label_volume
from sasi_scipion.engine.postprocess import Segmentation, extract_particles, peak_candidates

RADII = (3.0, 4.5, 6.5)
"""Particle radius per class of the synthetic segmentation, voxels."""


def synthetic_segmentation(shape: tuple[int, int, int], particles: int, seed: int
                           ) -> tuple[Segmentation, list[str]]:
    """The segmentation described in the module docstring, and its class names."""
    rng = np.random.default_rng(seed)
    names = ["a", "b", "c"]
    centres = rng.uniform(0, 1, (particles, 3)) * np.array(shape[::-1])  # x, y, z
    labels = sphere_label_volume(shape, ParticleTable(centres, rng.choice(names, particles)),
                                 names, list(RADII))
    speckle = rng.random(shape) < 0.01
    labels[speckle] = rng.integers(1, len(names) + 1, int(speckle.sum()))
    foreground = np.clip((labels > 0) * 0.7 + 0.4 * rng.random(shape, dtype=np.float32), 0, 1)
    scores = 0.5 + 0.5 * rng.random(shape, dtype=np.float32)
    return Segmentation(labels.astype(np.uint8), foreground.astype(np.float16),
                        scores.astype(np.float16)), names


def measure(shape: tuple[int, int, int], particles: int, seed: int) -> dict:
    """Time one peak extraction of the synthetic segmentation with the code on
    ``sys.path``; its candidates, particles, seconds and a digest of the particles."""
    segmentation, names = synthetic_segmentation(shape, particles, seed)
    candidates = len(peak_candidates(segmentation.foreground, min(RADII), 0.5)[0])
    start = time.perf_counter()
    picks = extract_particles(segmentation, names, list(RADII), components="peaks")
    seconds = time.perf_counter() - start
    digest = hashlib.sha256(np.ascontiguousarray(picks.xyz).tobytes()
                            + "".join(picks.classes).encode()
                            + np.ascontiguousarray(picks.scores).tobytes()).hexdigest()
    return {"candidates": candidates, "particles": len(picks), "seconds": seconds,
            "digest": digest}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", nargs="?", help="the commit before")
    parser.add_argument("b", nargs="?", help="the commit after")
    parser.add_argument("--shape", default="64,256,256", help="volume shape z,y,x (voxels)")
    parser.add_argument("--particles", type=int, default=1500)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--measure", action="store_true",
                        help="time the code on sys.path once and print the result as JSON")
    parser.add_argument("--out")
    args = parser.parse_args()
    shape = tuple(int(n) for n in args.shape.split(","))
    if args.measure:
        print(json.dumps(measure(shape, args.particles, args.seed)))
        return
    if not (args.a and args.b and args.out):
        parser.error("give the two commits A B and --out")
    runs: dict[str, list[dict]] = {"a": [], "b": []}
    with tempfile.TemporaryDirectory(prefix="sasi-peak-speed-") as folder:
        trees = {side: Path(folder) / side for side in runs}
        commits = {side: export_commit(getattr(args, side), tree) for side, tree in trees.items()}
        for round_ in range(args.repeats):
            for side in ("a", "b") if round_ % 2 == 0 else ("b", "a"):
                result = subprocess.run(
                    [sys.executable, __file__, "--measure", "--shape", args.shape,
                     "--particles", str(args.particles), "--seed", str(args.seed)],
                    check=True, capture_output=True, text=True,
                    env={**os.environ, "PYTHONPATH": str(trees[side])})
                runs[side].append(json.loads(result.stdout.splitlines()[-1]))
                print(f"round {round_ + 1} {commits[side]}: {runs[side][-1]['seconds']:.1f} s",
                      file=sys.stderr)
    seconds = {side: [round(r["seconds"], 2) for r in results] for side, results in runs.items()}
    ratios = [round(b / a, 3) for a, b in zip(seconds["a"], seconds["b"])]
    report = {"commits": commits, "shape_zyx": list(shape), "particles_simulated": args.particles,
              "seed": args.seed, "cpu": cpu_model(), "cores": os.cpu_count(),
              "candidates": {side: r[0]["candidates"] for side, r in runs.items()},
              "particles": {side: r[0]["particles"] for side, r in runs.items()},
              "identical": len({r["digest"] for results in runs.values() for r in results}) == 1,
              "seconds": seconds, "ratio_b_over_a": ratios,
              "median_ratio_b_over_a": statistics.median(ratios)}
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
