"""Gather the GPU check's results into ``OUT_DIR/summary.json`` and print them in short.

Reads what ``gpu_check.sh`` wrote: ``stages.tsv`` (stage, exit status, seconds, limit in
seconds), each stage's ``<stage>.json`` and ``<stage>.log`` (its last lines are kept),
``gpu.csv`` and ``cpu.txt``. Standard library only, so it runs where the install failed.

Usage: python3 benchmarks/gpu_summary.py OUT_DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

LOG_LINES = 20
"""Last lines of a stage's log kept in the summary."""


def collect(out_dir: Path) -> dict:
    """The summary: the machine and, per stage, its exit status, seconds, limit, last log
    lines and results (``None`` where it wrote none)."""
    stages = {}
    for line in (out_dir / "stages.tsv").read_text().splitlines():
        stage, rc, seconds, limit = line.split("\t")
        log, result = out_dir / f"{stage}.log", out_dir / f"{stage}.json"
        stages[stage] = {
            "rc": int(rc), "seconds": int(seconds), "limit_s": int(limit),
            "log_tail": log.read_text(errors="replace").splitlines()[-LOG_LINES:]
            if log.exists() else [],
            "result": json.loads(result.read_text()) if result.exists() else None}
    cpu = (out_dir / "cpu.txt").read_text() if (out_dir / "cpu.txt").exists() else ""
    gpu = out_dir / "gpu.csv"
    return {"gpu": gpu.read_text().strip() if gpu.exists() else None,
            "cpu": next((line.split(":", 1)[1].strip() for line in cpu.splitlines()
                         if line.startswith("Model name")), None),
            "stages": stages}


def _shape(row: dict) -> str:
    return "x".join(map(str, row["shape_zyx"]))


def headline(stage: str, result: dict) -> list[str]:
    """A few lines of a stage's main figures."""
    if stage == "floor":
        return [", ".join(f"{name} {entry['gflops']:,.0f} GFLOP/s"
                          for name, entry in result.get("floor", {}).items())]
    if stage == "train":
        return [", ".join(f"{name} {entry['default_run_it_per_s']} it/s" if "error" not in entry
                          else f"{name} failed"
                          for name, entry in result.get("precisions", {}).items())]
    if stage == "time_to_f1":
        rows = [r for r in result.get("rows", []) if "f1" in r]
        reached = result.get("reached")
        if reached:
            return [f"F1 {result['target_f1']} after {reached['iterations']} iterations, "
                    f"{reached['train_s']} s of training"]
        return ["target F1 not reached: " + ", ".join(f"{r['f1']} at {r['iterations']}"
                                                      for r in rows)]
    if stage == "pick":
        return [f"{row['mode']} {_shape(row)}: skipped" if "skipped" in row else
                f"{row['mode']} {row['precision']} {_shape(row)} tile {row.get('max_tile_voxels')}"
                f" cudnn.benchmark {row['cudnn_benchmark']}: {row['voxels_per_s']:,} voxels/s,"
                f" {row.get('peak_gpu_mb', '-')} MB, {row.get('time_vs_floor')}x the floor"
                for row in result.get("rows", [])]
    if stage == "correct":
        agreement = result.get("precision_agreement", {})
        return [", ".join(f"tiled = whole ({name}): {entry['labels_equal']} "
                          f"({entry['mismatched_voxels']} voxels differ, scores by at most "
                          f"{entry['max_score_difference']:.2g})"
                          for name, entry in result.get("tiled_vs_whole", {}).items())
                + (f"; {agreement['precision']} picks against fp32 picks: F1 "
                   f"{agreement['f1_vs_fp32_picks']}" if agreement else "")]
    return []


def main() -> None:
    out_dir = Path(sys.argv[1])
    summary = collect(out_dir)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"GPU: {summary['gpu']}\nCPU: {summary['cpu']}")
    for stage, entry in summary["stages"].items():
        print(f"{stage}: exit status {entry['rc']}, {entry['seconds']} s")
        for line in headline(stage, entry["result"]) if entry["result"] else entry["log_tail"][-3:]:
            print(f"    {line}")


if __name__ == "__main__":
    main()
