"""Peak memory and time of ``sasi pick`` and ``sasi train`` on a tomogram of the size
facilities reconstruct (default 300 x 1024 x 1024 voxels, float32 MRC, 1.2 GB).

Memory does not depend on what the tomogram shows, so it is Gaussian noise with a
few hundred dense spheres (picking finds particles, post-processing has work), not
a simulation. Each command runs in a fresh process: its peak resident memory
(``ru_maxrss``), and the peaks of its anonymous and its file-backed memory, sampled from
``/proc`` (the tomogram and the maps of a large segmentation are memory-mapped files,
which count in the resident memory but are not allocations of the process).
``pick`` runs with the given model at its own voxel size and, with ``--resampled``,
once more with the tomogram's header at ``--resampled-factor`` times the model's voxel size (default
0.8: a finer tomogram, resampled on the fly to the model's coarser grid; 0.5 is a
tomogram binned half as much as the model's data, whose segmentation takes an
eighth of the native one's time);
``train`` runs ``--iterations`` steps with the labels of 10 of the spheres.

``--runs`` chooses among them (default all three).

Usage: python benchmarks/large_tomogram.py --model M.pt --work DIR
       [--shape 300,1024,1024] [--iterations 5] [--resampled [--resampled-factor F]]
       [--runs pick train] --out results.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from conv_floor import cpu_model
from report import current_commit

from sasi_scipion.engine.coordinates import ParticleTable, write_particles
from sasi_scipion.engine.model_file import read_model_file
from sasi_scipion.engine.mrc_io import write_volume

SPHERES = 400
"""Dense spheres planted in the noise tomogram."""
SPHERE_RADIUS = 6
"""Their radius, voxels."""
RUNS = ("pick", "pick_resampled", "train")
"""The commands measured, by their report names."""
RESAMPLED_FACTOR = 0.8
"""Header voxel size over the model's for the resampled pick (default)."""


def _tomogram(path: Path, shape: tuple[int, int, int], voxel_size: float,
              rng: np.random.Generator) -> np.ndarray:
    """Write the test tomogram plane block by plane block; return sphere centres
    ``(N, 3)`` ``(x, y, z)``."""
    margin = SPHERE_RADIUS + 2
    centres = np.column_stack([rng.uniform(margin, n - margin, SPHERES)
                               for n in shape[::-1]])
    volume = rng.standard_normal(shape, dtype=np.float32)
    ball = np.indices((2 * SPHERE_RADIUS + 1,) * 3) - SPHERE_RADIUS
    inside = (ball**2).sum(0) <= SPHERE_RADIUS**2
    for x, y, z in np.round(centres).astype(int):
        box = volume[z - SPHERE_RADIUS:z + SPHERE_RADIUS + 1,
                     y - SPHERE_RADIUS:y + SPHERE_RADIUS + 1,
                     x - SPHERE_RADIUS:x + SPHERE_RADIUS + 1]
        box[inside] -= 2.0  # protein dark
    write_volume(path, volume, voxel_size)
    return centres


MEMORY_FIELDS = {"RssAnon": "peak_anonymous_mb", "RssFile": "peak_file_backed_mb"}
"""``/proc/PID/status`` lines sampled while a command runs, and their report names:
anonymous memory (what the process itself allocates, and what a memory limit cannot
reclaim) and file-backed pages (mapped files: the tomogram, the maps' temporary file,
libraries; the kernel drops or writes them back under pressure)."""
SAMPLE_S = 0.2
"""Seconds between two samples of the command's memory."""


def _memory_kb(pid: int) -> dict[str, int]:
    """The :data:`MEMORY_FIELDS` of process ``pid`` now, KB (empty once it has ended)."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {}
    values = (line.split(":") for line in lines)
    return {key: int(value.split()[0]) for key, value in values if key in MEMORY_FIELDS}


def _run(arguments: list[str]) -> dict:
    """Run ``sasi arguments`` in a fresh process; its wall time, peak RSS
    (``ru_maxrss``) and the peaks of its anonymous and file-backed memory (sampled
    every :data:`SAMPLE_S` seconds)."""
    began = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        child = subprocess.Popen([str(Path(sys.executable).parent / "sasi"), *arguments],
                                 stdout=out, stderr=err)
        peaks = dict.fromkeys(MEMORY_FIELDS, 0)
        while True:
            for key, value in _memory_kb(child.pid).items():
                peaks[key] = max(peaks[key], value)
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)
            if pid:
                break
            time.sleep(SAMPLE_S)
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if child.returncode:
        raise RuntimeError(stderr[-2000:])
    return {"command": "sasi " + " ".join(arguments),
            "wall_s": round(time.perf_counter() - began, 1),
            "peak_rss_mb": usage.ru_maxrss // 1024,
            **{MEMORY_FIELDS[key]: value // 1024 for key, value in peaks.items()},
            "stdout": stdout.strip().splitlines()[-1:]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--shape", default="300,1024,1024")
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--resampled", action="store_true")
    parser.add_argument("--resampled-factor", type=float, default=RESAMPLED_FACTOR,
                        help="header voxel size of the resampled pick's tomogram over the "
                             "model's (default %(default)s)")
    parser.add_argument("--runs", nargs="+", choices=RUNS, default=list(RUNS),
                        help="which commands to measure (default all; pick_resampled "
                             "also needs --resampled)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    shape = tuple(int(n) for n in args.shape.split(","))
    meta, _ = read_model_file(args.model)
    args.work.mkdir(parents=True, exist_ok=True)
    commit = current_commit()
    tomogram = args.work / "large.mrc"
    centres = _tomogram(tomogram, shape, meta.voxel_size, np.random.default_rng(0))
    report = {"command": " ".join(sys.argv), "commit": commit, "shape_zyx": shape,
              "tomogram_mb": round(tomogram.stat().st_size / 2**20),
              "hardware": cpu_model(), "runs": {}}

    def record(name: str, arguments: list[str]) -> None:
        report["runs"][name] = _run(arguments)
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")  # as results come
        print(name, report["runs"][name], file=sys.stderr)

    if "pick" in args.runs:
        record("pick", ["pick", "--model", args.model, "--tomogram", str(tomogram),
                        "--out", str(args.work / "picks.tsv"), "--device", "cpu"])
    if args.resampled and "pick_resampled" in args.runs:
        fine = args.work / "large_fine.mrc"
        _tomogram(fine, shape, meta.voxel_size * args.resampled_factor, np.random.default_rng(0))
        record("pick_resampled", ["pick", "--model", args.model, "--tomogram", str(fine),
                                  "--out", str(args.work / "picks_fine.tsv"), "--device", "cpu"])
        fine.unlink()
    if "train" in args.runs:
        labels = args.work / "labels.tsv"
        write_particles(labels, ParticleTable(centres[:10], ["sphere"] * 10))
        record("train", ["train", "--tomogram", str(tomogram), "--coords", str(labels),
                         "--radius", str(SPHERE_RADIUS), "--out", str(args.work / "m.pt"),
                         "--iterations", str(args.iterations), "--device", "cpu"])
    print(Path(args.out).read_text())


if __name__ == "__main__":
    main()
