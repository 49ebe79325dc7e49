"""Picking throughput and peak memory: tiled default against the paper's sliding window.

Each (mode, size) runs in a fresh process so its peak resident memory is its
own. Modes: ``tiled`` (default precision: bf16 on a CPU that has it),
``tiled-fp32``, ``sliding`` (W = 24, stride 12, fp32, the paper's reference).
Ratios are taken within one run, side by side, on the same machine.

Usage: python benchmarks/pick_speed.py [--sizes 64,128,128 96,256,256] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np
import torch
from report import write_report

MODES = {"tiled": ("tiled", "auto"), "tiled-fp32": ("tiled", "fp32"),
         "sliding": ("sliding", "fp32")}


def _measure(mode: str, shape: tuple[int, int, int]) -> dict:
    from sasi_scipion.engine.inference import segment_sliding, segment_tiled
    from sasi_scipion.engine.models import build_backbone

    torch.manual_seed(0)
    model = build_backbone("deepfinder", 4)
    volume = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    kind, precision = MODES[mode]
    device = torch.device("cpu")
    start = time.perf_counter()
    if kind == "tiled":
        segment_tiled(model, volume, device, precision=precision)
    else:
        segment_sliding(model, volume, device, precision=precision)
    seconds = time.perf_counter() - start
    return {"mode": mode, "shape_zyx": list(shape), "seconds": round(seconds, 2),
            "voxels_per_s": round(float(np.prod(shape)) / seconds),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", nargs="+", default=["64,128,128", "96,256,256"])
    parser.add_argument("--modes", nargs="+", default=list(MODES))
    parser.add_argument("--out")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_measure(args.child[0], tuple(int(v) for v in args.child[1].split(",")))))
        return
    rows = []
    for size in args.sizes:
        for mode in args.modes:
            out = subprocess.run([sys.executable, __file__, "--child", mode, size],
                                 capture_output=True, text=True, check=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
            print(rows[-1], file=sys.stderr)
        tiled = next(r for r in rows if r["mode"] == "tiled" and r["shape_zyx"] == [
            int(v) for v in size.split(",")])
        for r in rows:
            if r["shape_zyx"] == tiled["shape_zyx"]:
                r["speed_vs_tiled"] = round(r["voxels_per_s"] / tiled["voxels_per_s"], 3)
    write_report(rows, args.out)


if __name__ == "__main__":
    main()
