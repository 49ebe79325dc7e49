"""Picking at another voxel size than the model's: the accuracy harness's test
tomograms (10 Å) resampled to each ``--voxel-sizes`` value and written with that
header, picked with a model the harness trained at 10 Å (``sasi pick``, which
resamples them back on the fly), the picks mapped to the 10 Å grid and scored
like the harness (SHREC occupancy rule), beside the native tomograms' picks by
the same model in the same run. For each voxel size coarser than the data's, a
control row: the native tomogram band-limited to that voxel size's Nyquist
frequency (resampled there and back, written at the native header, so that pick
does not resample it): what the detail lost costs on its own, without picking on
another grid. Every row is picked twice, with ``--adapt-statistics off`` and ``on``
(batch-normalisation statistics re-estimated over the tomogram picked; ``auto``, the
default, is ``on`` for the coarser tomograms and ``off`` for the others).

Usage: python benchmarks/voxel_size.py --work WORK --model sasi_10_0.pt
       [--voxel-sizes 7.5 13.5] --out results.json
where WORK is an accuracy-harness work folder (``accuracy.py --work``) and the model
a file in it.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

from accuracy import _score
from report import current_commit

from sasi_scipion.engine.coordinates import read_particles
from sasi_scipion.engine.mrc_io import read_volume, write_volume
from sasi_scipion.engine.resample import resample, resampled_shape, to_source_voxels

ADAPTATIONS = ("off", "on")
"""``sasi pick --adapt-statistics`` values each row is picked with."""


def _pick(model: Path, tomogram: Path, out: Path, *extra: str) -> float:
    """Run ``sasi pick [EXTRA]``; return its wall time in seconds."""
    began = time.perf_counter()
    subprocess.run([str(Path(sys.executable).parent / "sasi"), "pick", "--model", str(model),
                    "--tomogram", str(tomogram), "--out", str(out), "--device", "cpu", *extra],
                   check=True, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--model", required=True, help="model file name inside --work")
    parser.add_argument("--voxel-sizes", type=float, nargs="+", default=[7.5, 13.5])
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    data = args.work / "data"
    dataset = json.loads((data / "dataset.json").read_text())
    tests = dataset["tomograms"][1:]
    model = args.work / args.model
    folder = args.work / "voxel_size"
    folder.mkdir(exist_ok=True)
    results: list[dict] = []
    commit = current_commit()
    native_size = dataset["voxel_size"]
    runs = [(None, False), *[(v, False) for v in args.voxel_sizes],
            *[(v, True) for v in args.voxel_sizes if v > native_size]]
    for voxel_size, control in runs:
        tomograms = {}
        for name in tests:
            source = read_volume(data / f"{name}.mrc")
            tomogram, shape = data / f"{name}.mrc", source.data.shape
            if voxel_size is not None:
                shape = resampled_shape(source.data.shape, source.voxel_size, voxel_size)
                tomogram = folder / f"{name}_{voxel_size}A{'_band' if control else ''}.mrc"
                resampled = resample(source.data, shape)
                if control:  # the detail of voxel_size only, on the native grid
                    write_volume(tomogram, resample(resampled, source.data.shape),
                                 source.voxel_size)
                else:
                    write_volume(tomogram, resampled, voxel_size)
            tomograms[name] = tomogram, source.data.shape, shape
        label = f"{voxel_size}_band" if control else voxel_size or "native"
        for adapt in ADAPTATIONS:
            picks, seconds = {}, 0.0
            for name, (tomogram, source_shape, shape) in tomograms.items():
                out = folder / f"{Path(args.model).stem}_{label}_{adapt}_{name}.tsv"
                seconds += _pick(model, tomogram, out, "--adapt-statistics", adapt)
                table = read_particles(out, allow_empty=True)
                if not control:
                    table.xyz = to_source_voxels(table.xyz, source_shape, shape)
                picks[name] = table
            results.append({"voxel_size": native_size if control or voxel_size is None
                            else voxel_size,
                            "band_limited_to": voxel_size if control else None,
                            "native": voxel_size is None, "adapt_statistics": adapt,
                            "pick_s": round(seconds, 1),
                            **_score(picks, data, tests, dataset["unscored"])})
            print(results[-1], file=sys.stderr)
            _write(Path(args.out), model, commit, results)
    print(Path(args.out).read_text())


def _write(out: Path, model: Path, commit: str, results: list[dict]) -> None:
    """Write the rows so far, each with its difference from the first (native,
    ``--adapt-statistics off``) row."""
    native = results[0]
    for row in results[1:]:
        row["pooled_f1_minus_native"] = round(row["pooled_f1"] - native["pooled_f1"], 3)
        row["class_aware_f1_minus_native"] = round(
            row["class_aware_f1"] - native["class_aware_f1"], 3)
    out.write_text(json.dumps({
        "command": " ".join(sys.argv), "commit": commit,
        "hardware": platform.processor() or platform.machine(), "model": str(model),
        "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
