"""Picking throughput and peak memory against the conv3d compute floor, MONAI's
``sliding_window_inference`` and the paper's sliding window.

Each (mode, size) runs in a fresh process so its peak resident memory is its
own. Modes (same DeepFinder U-Net, K = 3, same seeded weights, random volume):
- ``tiled``: the default, ``segment_tiled`` at default precision (bf16 on a CPU
  with native bfloat16, else fp32);
- ``tiled-fp32``: ``segment_tiled`` in fp32;
- ``sliding``: the paper's reference, ``segment_sliding`` (W = 24, stride 12), fp32;
- ``monai``: ``monai.inferers.sliding_window_inference``, fp32, overlap 0.25,
  Gaussian blending, ROI = the tile ``segment_tiled`` would use for this
  volume (same memory budget: 8 M input voxels on a CPU), batch 1;
- ``monai-64``: the same with a 64^3 ROI, 4 ROIs per batch (a common MONAI
  setting).
Gaussian blending is MONAI's recommended mode for stitching a U-Net's windows
(it down-weights the window faces, where zero padding distorts the output); it
costs the same as ``constant``. MONAI modes return the same label and score
maps as the engine (softmax, then argmax and its probability).

The floor is the net's FLOPs per voxel (``conv_floor.flops_per_voxel``) times
the voxels, divided by the conv3d GFLOP/s at the row's precision
(``conv_floor.measure_floor``, representative 32 -> 32 layer), measured in a
fresh process just before each row (``floor_gflops``). On a shared machine a
contended measurement only runs slower, so ``floor_s`` and ``time_vs_floor``
use the best rate of the run (the report's ``floor``: what the hardware can
do); ``time_vs_adjacent_floor`` uses the row's own. ``time_vs_floor`` is
seconds / floor seconds; ``time_vs_tiled`` is seconds /
the default's seconds at that size. A mode whose time, predicted from its
voxels/s at a smaller size, exceeds ``--max-seconds`` is not run at that size;
its row says so (``skipped``).

Usage: python benchmarks/pick_speed.py [--sizes 64,128,128 96,256,256 200,512,512]
       [--modes tiled tiled-fp32 sliding monai monai-64] [--max-seconds 900]
       [--out FILE.json] [--plot FILE.png]
       python benchmarks/pick_speed.py --rescore FILE.json [--out FILE.json] [--plot FILE.png]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np
import torch
from conv_floor import NUM_OUTPUTS, cpu_model, flops_per_voxel, measure_floor
from report import write_report

MODES = {"tiled": ("tiled", "auto"), "tiled-fp32": ("tiled", "fp32"),
         "sliding": ("sliding", "fp32"), "monai": ("monai", "fp32"),
         "monai-64": ("monai-64", "fp32")}
MONAI_OVERLAP = 0.25
MONAI_BLEND = "gaussian"
INSTALL_HINT = "pip install -e .[bench]"


def _monai_segment(model: torch.nn.Module, volume: np.ndarray, roi: tuple[int, int, int],
                   batch: int, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    try:
        from monai.inferers import sliding_window_inference
    except ImportError as error:
        raise SystemExit(f"mode monai needs MONAI, which is not importable ({error}); "
                         f"install the benchmark extra: {INSTALL_HINT}") from error
    if hasattr(os, "sched_getaffinity"):
        torch.set_num_threads(len(os.sched_getaffinity(0)))
    model = model.to(device, memory_format=torch.channels_last_3d).eval()

    def predictor(x: torch.Tensor) -> torch.Tensor:
        return model(x.contiguous(memory_format=torch.channels_last_3d))

    with torch.inference_mode():
        logits = sliding_window_inference(torch.from_numpy(volume)[None, None].to(device), roi,
                                          batch, predictor, overlap=MONAI_OVERLAP,
                                          mode=MONAI_BLEND)
        best, label = torch.softmax(logits[0], dim=0).max(dim=0)
    return label.to(torch.uint8).cpu().numpy(), best.to(torch.float16).cpu().numpy()


@functools.lru_cache(maxsize=1)
def random_volume(shape: tuple[int, int, int]) -> np.ndarray:
    """The seeded random ``float32`` volume every mode picks, kept for the next call with
    the same shape (the modes only read it)."""
    return np.random.default_rng(0).normal(size=shape).astype(np.float32)


def measure_mode(mode: str, shape: tuple[int, int, int], device: torch.device,
                 max_tile_voxels: int | None = None) -> dict:
    """One picking run of ``mode`` on a random ``shape`` volume on ``device`` (tiled modes:
    at the tile budget ``max_tile_voxels``, default the device type's): seconds, voxels/s
    and the process's peak RSS (MB) so far."""
    from sasi_scipion.engine.inference import (
        MAX_TILE_VOXELS,
        _round_up,
        resolve_precision,
        segment_sliding,
        segment_tiled,
        tile_extents,
    )
    from sasi_scipion.engine.models import build_backbone

    torch.manual_seed(0)
    model = build_backbone("deepfinder", 4)
    volume = random_volume(shape)
    kind, precision = MODES[mode]
    extra: dict = {}
    start = time.perf_counter()
    if kind == "tiled":
        segment_tiled(model, volume, device, max_tile_voxels, precision)
    elif kind == "sliding":
        segment_sliding(model, volume, device, precision=precision)
    else:
        if kind == "monai":
            margin = _round_up(model.receptive_margin, model.size_multiple)
            roi = tile_extents(shape, margin, model.size_multiple, MAX_TILE_VOXELS[device.type])
            batch = 1
        else:
            roi, batch = (64, 64, 64), 4
        extra = {"roi_zyx": list(roi), "sw_batch_size": batch, "overlap": MONAI_OVERLAP,
                 "blend": MONAI_BLEND}
        _monai_segment(model, volume, roi, batch, device)
    seconds = time.perf_counter() - start
    return {"mode": mode, "precision": resolve_precision(precision, device),
            "shape_zyx": list(shape), "seconds": round(seconds, 2),
            "voxels_per_s": round(float(np.prod(shape)) / seconds),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024, **extra}


def tiled_work_ratio(shape: tuple[int, int, int], device_type: str = "cpu",
                     max_tile_voxels: int | None = None) -> float:
    """FLOPs ``segment_tiled`` computes on a ``(z, y, x)`` volume at the tile budget
    ``max_tile_voxels`` (default: the device type's), over ``flops_per_voxel`` x the
    volume's voxels: the price of tile margins (encoder), decoder widening and padding.
    Counted by ``torch.utils.flop_counter`` on meta tensors (no arithmetic is done)."""
    from torch.utils.flop_counter import FlopCounterMode

    from sasi_scipion.engine.inference import (
        DECODE_SHARE,
        MAX_TILE_VOXELS,
        _round_up,
        plan_tiles,
        split_box,
    )
    from sasi_scipion.engine.models import build_backbone

    model = build_backbone("deepfinder", NUM_OUTPUTS).to("meta").eval()
    multiple = model.size_multiple
    budget = max_tile_voxels or MAX_TILE_VOXELS[device_type]
    plan = plan_tiles(shape, _round_up(model.receptive_margin, multiple), multiple, budget)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        for inputs, cores in plan:
            tile = torch.empty(1, 1, *[s.stop - s.start for s in inputs], device="meta")
            features = model.features(tile)
            core = tuple((c.start - i.start, c.stop - i.start) for c, i in zip(cores, inputs))
            for part in split_box(core, budget // DECODE_SHARE, multiple):  # type: ignore[arg-type]
                model.decode_region(features, part)
    return counter.get_total_flops() / (flops_per_voxel() * float(np.prod(shape)))


def skip_row(rows: list[dict], mode: str, shape: list[int], max_seconds: float) -> dict | None:
    """The row that skips ``mode`` at ``shape`` when its voxels/s in its last measured row
    predicts more than ``max_seconds`` seconds there; ``None`` to run it."""
    earlier = [r for r in rows if r["mode"] == mode and "skipped" not in r]
    if not earlier:
        return None
    predicted = float(np.prod(shape)) / earlier[-1]["voxels_per_s"]
    if predicted <= max_seconds:
        return None
    return {"mode": mode, "precision": earlier[-1]["precision"], "shape_zyx": shape,
            "skipped": f"predicted {predicted:.0f} s from its voxels/s at "
                       f"{'x'.join(map(str, earlier[-1]['shape_zyx']))} "
                       f"(over the limit of {max_seconds:.0f} s)"}


def _child(mode: str, size: str) -> dict:
    """One measurement in a fresh process (``mode`` ``floor``: the conv3d floor)."""
    run = subprocess.run([sys.executable, __file__, "--child", mode, size],
                         capture_output=True, text=True)
    if run.returncode != 0:
        raise SystemExit(f"mode {mode} at {size} failed:\n{run.stderr.strip()}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def add_ratios(rows: list[dict], best: dict, flops: float) -> None:
    """Add ``floor_s``, ``time_vs_floor`` (best floor of the run),
    ``time_vs_adjacent_floor`` and ``time_vs_tiled`` to every measured row, and to
    tiled rows ``work_ratio`` (``tiled_work_ratio``, for this code's tile budget)
    and ``time_vs_work_floor`` (``time_vs_floor`` / ``work_ratio``: how far the
    FLOPs actually computed run from the conv3d rate)."""
    for row in rows:
        if "skipped" in row:
            continue
        voxels = float(np.prod(row["shape_zyx"]))
        floor_s = flops * voxels / (best[row["precision"]]["gflops"] * 1e9)
        row["floor_s"] = round(floor_s, 4)  # tiny dry-run volumes: milliseconds
        row["time_vs_floor"] = round(row["seconds"] / floor_s, 2)
        adjacent = flops * voxels / (row["floor_gflops"] * 1e9)
        row["time_vs_adjacent_floor"] = round(row["seconds"] / adjacent, 2)
        if row["mode"].startswith("tiled"):
            if "work_ratio" not in row:
                row["work_ratio"] = round(tiled_work_ratio(tuple(row["shape_zyx"])), 3)
            row["time_vs_work_floor"] = round(row["time_vs_floor"] / row["work_ratio"], 2)
        tiled = next((r for r in rows if r["mode"] == "tiled" and "skipped" not in r
                      and r["shape_zyx"] == row["shape_zyx"]), None)
        if tiled:
            row["time_vs_tiled"] = round(row["seconds"] / tiled["seconds"], 2)


def plot(report: dict, path: str) -> None:
    """Voxels/s of every mode against tomogram size, the floors as lines (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    rows = [r for r in report["rows"] if "skipped" not in r]
    for mode in dict.fromkeys(r["mode"] for r in rows):
        mine = [r for r in rows if r["mode"] == mode]
        ax.plot([np.prod(r["shape_zyx"]) for r in mine], [r["voxels_per_s"] for r in mine],
                "o-", label=f"{mode} ({mine[0]['precision']})")
    for precision, style in (("fp32", "--"), ("bf16", ":")):
        if precision in report["floor"]:
            ax.axhline(report["floor"][precision]["floor_voxels_per_s"], color="k",
                       linestyle=style, label=f"conv3d floor, {precision}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    sizes = sorted({tuple(r["shape_zyx"]) for r in report["rows"]}, key=np.prod)
    ax.set_xticks([np.prod(s) for s in sizes], ["x".join(map(str, s)) for s in sizes])
    ax.minorticks_off()
    ax.set_xlabel("tomogram (z x y x x voxels)")
    ax.set_ylabel("voxels / s")
    ax.set_title(f"Picking speed, DeepFinder U-Net, {report['threads']} threads\n"
                 f"{report['cpu_model']}, torch {report['torch']}", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", nargs="+", default=["64,128,128", "96,256,256"])
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--max-seconds", type=float, default=900.0,
                        help="skip a mode at a size it is predicted to take longer on")
    parser.add_argument("--out")
    parser.add_argument("--plot", help="PNG of voxels/s against size")
    parser.add_argument("--rescore", metavar="JSON",
                        help="recompute the ratios (and --plot) of an earlier report; no runs")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rescore:
        with open(args.rescore) as handle:
            report = json.load(handle)
        add_ratios(report["rows"], report["floor"], report["flops_per_voxel"])
        extra = {k: v for k, v in report.items() if k not in ("cpu", "threads", "torch", "rows")}
        report = {**write_report(report["rows"], args.out, **extra),
                  "threads": report["threads"], "torch": report["torch"]}
        if args.plot:
            plot(report, args.plot)
        return
    if args.child:
        if args.child[0] == "floor":
            floor = measure_floor(warmup=2, repeats=5, per_layer=False)
        else:
            floor = measure_mode(args.child[0], tuple(int(v) for v in args.child[1].split(",")),
                                 torch.device("cpu"))
        print(json.dumps(floor))
        return
    if any(MODES[m][0].startswith("monai") for m in args.modes):
        try:
            import monai  # noqa: F401
        except ImportError as error:
            raise SystemExit(f"the monai modes need MONAI, which is not importable ({error}); "
                             f"install the benchmark extra: {INSTALL_HINT}") from error
    best: dict = {}
    rows: list[dict] = []
    for size in args.sizes:
        shape = [int(v) for v in size.split(",")]
        for mode in args.modes:
            skipped = skip_row(rows, mode, shape, args.max_seconds)
            if skipped:
                rows.append(skipped)
                print(rows[-1], file=sys.stderr)
                continue
            floor = _child("floor", size)
            for key in ("fp32", "bf16"):
                if key in floor and floor[key]["gflops"] > best.get(key, {}).get("gflops", 0):
                    best[key] = {k: floor[key][k]
                                 for k in ("gflops", "layout", "floor_voxels_per_s")}
            row = _child(mode, size)
            row["floor_gflops"] = floor[row["precision"]]["gflops"]
            rows.append(row)
            print(row, file=sys.stderr)
    add_ratios(rows, best, flops_per_voxel())
    report = write_report(rows, args.out, cpu_model=cpu_model(),
                          flops_per_voxel=round(flops_per_voxel()), floor=best,
                          monai={"overlap": MONAI_OVERLAP, "blend": MONAI_BLEND})
    if args.plot:
        plot(report, args.plot)


if __name__ == "__main__":
    main()
