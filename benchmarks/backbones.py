"""Backbone figures: parameters, FLOPs per voxel and tiled picking throughput.

FLOPs are counted by ``torch.utils.flop_counter`` on one 24^3 window (a
multiply-add counts as two FLOPs) and divided by its voxels. Throughput is
``segment_tiled`` on a random 64 x 128 x 128 volume at the default precision
(for the ViT: its 24^3 windows, stride 12), all in one run.

Usage: python benchmarks/backbones.py [--out FILE.json]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from conv_floor import flops_per_voxel
from report import write_report

from sasi_scipion.engine.device import use_all_cpus
from sasi_scipion.engine.inference import segment_tiled
from sasi_scipion.engine.models import BACKBONES, build_backbone

SHAPE = (64, 128, 128)


def figures(arch: str) -> dict:
    flops = flops_per_voxel(arch, 4)
    torch.manual_seed(0)
    model = build_backbone(arch, 4).eval()
    volume = np.random.default_rng(0).normal(size=SHAPE).astype(np.float32)
    start = time.perf_counter()
    segment_tiled(model, volume, torch.device("cpu"))
    seconds = time.perf_counter() - start
    return {"arch": arch, "parameters": sum(p.numel() for p in model.parameters()),
            "gflop_per_window": round(flops * 24**3 / 1e9, 2),
            "kflop_per_voxel": round(flops / 1e3, 1),
            "pick_voxels_per_s": round(np.prod(SHAPE) / seconds)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out")
    args = parser.parse_args()
    use_all_cpus(torch.device("cpu"))  # as sasi pick does
    rows = [figures(arch) for arch in BACKBONES]
    write_report(rows, args.out, volume_zyx=list(SHAPE))


if __name__ == "__main__":
    main()
