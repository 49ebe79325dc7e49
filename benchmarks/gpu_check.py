"""The GPU check: the conv3d floor, training and picking speed, and correctness on one device.

``benchmarks/gpu_check.sh`` runs one stage per process, each under its own time limit;
each writes ``OUT_DIR/<stage>.json``, rewritten as results come in, so a stage stopped
at its limit leaves what it had measured. Units: seconds, iterations/s, voxels/s,
GFLOP/s (a multiply-add is two FLOPs), MB (2^20 bytes); volumes are ``(z, y, x)``.

- ``floor``: GFLOP/s of the representative 32 -> 32 3x3x3 conv3d (``conv_floor.best_gflops``)
  in fp32 and in each reduced precision the device computes natively (bf16 and fp16 on a
  GPU), on 64^3 and 128^3 inputs, with cuDNN's algorithm search (``cudnn.benchmark``) off,
  as the engine leaves it, and on. The best rate per precision is the floor.
- ``train``: iterations/s of the default recipe (``train_speed.step_rates``) in fp32, with
  bf16 autocast (``sasi train --precision bf16``) and with fp16 autocast (no gradient
  scaler: a speed figure only, the engine does not train in fp16); peak GPU memory.
- ``time_to_f1``: the library's ``train`` then ``pick`` on the demo data, as ``sasi train``
  and ``sasi pick`` run them (``train_speed.time_to_f1``), for increasing budgets until
  the demo's F1 target; a budget predicted to overrun the stage's time is not started.
- ``pick``: every ``pick_speed`` mode (tiled default, tiled fp32, the paper's sliding
  window, MONAI's ``sliding_window_inference``) with the same net and weights, after one
  untimed run each at the first size; voxels/s, ``torch.cuda.max_memory_allocated`` (MB)
  and the ratios to the floor (``pick_speed.add_ratios``); then the tiled default at
  larger tile budgets and, on a GPU, with cuDNN's algorithm search on. A row predicted to
  overrun the stage's time is skipped and says so.
- ``correct``: with a model trained on the demo data, the tiled labels and scores
  against one whole-volume pass (a budget the volume fits in), at fp32 and at the default
  precision (the two passes convolve other shapes, so other kernels may round a near-tie
  voxel the other way; a seam would change whole tile faces), and the default
  precision's picks against fp32 picks: F1 by the distance rule.

Every stage records ``environment``: the device, torch, CUDA and cuDNN versions and the
engine defaults in force there. ``--tiny`` shrinks every size for a dry run on a CPU.

Usage: python benchmarks/gpu_check.py STAGE OUT_DIR --work DIR [--device cuda]
       [--seconds 120] [--tiny]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from conv_floor import EDGE, LAYER_EDGE, best_gflops, bf16_supported, cpu_model, flops_per_voxel
from pick_speed import (
    INSTALL_HINT,
    MODES,
    add_ratios,
    measure_mode,
    skip_row,
    tiled_work_ratio,
)
from train_speed import (
    BUDGETS,
    TARGET_F1,
    default_trainer,
    demo_radii,
    prepare,
    step_rates,
    time_to_f1,
)

from sasi_scipion.engine.coordinates import ParticleTable, read_particles
from sasi_scipion.engine.demo import DEMO_ITERATIONS, DEMO_SHAPE
from sasi_scipion.engine.device import resolve_device
from sasi_scipion.engine.inference import (
    LOW_PRECISION_DTYPES,
    MAX_TILE_VOXELS,
    _round_up,
    plan_tiles,
    resolve_precision,
    segment_tiled,
)
from sasi_scipion.engine.metrics import evaluate_distance, evaluate_occupancy
from sasi_scipion.engine.model_file import load_model
from sasi_scipion.engine.mrc_io import read_volume
from sasi_scipion.engine.normalize import normalise
from sasi_scipion.engine.postprocess import extract_particles
from sasi_scipion.engine.training import SaSiTrainer, TrainingSettings

DTYPES = {"fp32": torch.float32, **LOW_PRECISION_DTYPES}
TINY_BATCH = 2
TINY_ITERATIONS = 10
"""Enough for a tiny run's model (batch 2, no consistency guidance) to label most voxels
background: a barely trained one can label the whole volume one class, whose particle
extraction (in picking and in ``sasi train``'s score cut-offs) takes minutes."""


@dataclass(frozen=True)
class Profile:
    """The sizes of one check."""

    floor_edges: tuple[int, ...]
    floor_runs: tuple[int, int]
    """Untimed and timed runs per conv3d measurement."""
    demo_shape: tuple[int, int, int]
    """The demo data's tomogram shape, ``(z, y, x)`` voxels."""
    train_runs: tuple[int, int]
    """Untimed and timed steps per kind of training step."""
    train_settings: tuple[tuple[str, int], ...]
    """``TrainingSettings`` fields that differ from the default recipe in the timed steps."""
    run_settings: tuple[tuple[str, object], ...]
    """``TrainingSettings`` fields that differ from it in the time-to-F1 runs."""
    budgets: tuple[int, ...]
    model_budget: int
    """Iterations of the model ``correct`` trains when ``time_to_f1`` left none."""
    pick_sizes: tuple[tuple[int, int, int], ...]
    tile_factors: tuple[int, ...]
    """Tile budgets tried besides the default, as multiples of it."""


FULL = Profile(floor_edges=(EDGE, LAYER_EDGE), floor_runs=(3, 10), demo_shape=DEMO_SHAPE,
               train_runs=(3, 20), train_settings=(), run_settings=(),
               budgets=(*BUDGETS, 1000, 2000), model_budget=DEMO_ITERATIONS,
               pick_sizes=((64, 128, 128), (200, 512, 512), (300, 1024, 1024)),
               tile_factors=(2, 4))
TINY = Profile(floor_edges=(16,), floor_runs=(1, 2), demo_shape=(32, 96, 96),
               train_runs=(0, 1),
               train_settings=(("batch_size", TINY_BATCH), ("consistency_batch", TINY_BATCH)),
               run_settings=(("batch_size", TINY_BATCH), ("consistency", False)),
               budgets=(TINY_ITERATIONS,),
               model_budget=TINY_ITERATIONS, pick_sizes=((16, 32, 32), (24, 48, 48)),
               tile_factors=(2,))


class Fp16AutocastTrainer(SaSiTrainer):
    """The default recipe under fp16 autocast, without a gradient scaler: for its speed."""

    def _autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=torch.float16)


class Report:
    """A stage's JSON file, rewritten whenever a result is set."""

    def __init__(self, path: Path, device: torch.device) -> None:
        self.path = path
        self.data: dict = {"environment": environment(device)}
        self.save()

    def set(self, key: str, value: object) -> None:
        self.data[key] = value
        self.save()

    def save(self) -> None:
        partial = self.path.with_suffix(".json.part")
        partial.write_text(json.dumps(self.data, indent=2) + "\n")
        os.replace(partial, self.path)


def environment(device: torch.device) -> dict:
    """The device, the library versions and the engine defaults in force on ``device``."""
    cuda = device.type == "cuda"
    recipe = TrainingSettings().for_device(device)
    return {"device": str(device),
            "name": torch.cuda.get_device_name(device) if cuda else cpu_model(),
            "memory_mb": torch.cuda.get_device_properties(device).total_memory // 2**20
            if cuda else None,
            "torch": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if cuda else None,
            "threads": torch.get_num_threads(),
            "defaults": {"pick_precision": resolve_precision("auto", device),
                         "max_tile_voxels": MAX_TILE_VOXELS[device.type],
                         "train_iterations": recipe.iterations,
                         "train_precision": recipe.precision,
                         "train_batch_size": recipe.batch_size,
                         "cudnn_benchmark": torch.backends.cudnn.benchmark,
                         "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
                         "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32}}


def reduced_precisions(device: torch.device) -> list[str]:
    """The reduced precisions ``device`` computes natively (elsewhere torch runs slow
    reference kernels): bf16 and fp16 on a GPU, bf16 and fp16 on a CPU where oneDNN has them."""
    if device.type == "cuda":
        return ["bf16", "fp16"] if torch.cuda.is_bf16_supported() else ["fp16"]
    native = {"bf16": bf16_supported(), "fp16": torch.ops.mkldnn._is_mkldnn_fp16_supported()}
    return [name for name, supported in native.items() if supported]


@contextlib.contextmanager
def cudnn_benchmark(enabled: bool) -> Iterator[None]:
    """cuDNN's algorithm search on or off inside the block."""
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> dict:
    """Peak GPU memory since ``reset_peak_memory``, MB: held by tensors and reserved by
    torch's caching allocator (nothing on a CPU)."""
    if device.type != "cuda":
        return {}
    return {"peak_gpu_mb": round(torch.cuda.max_memory_allocated(device) / 2**20),
            "peak_gpu_reserved_mb": round(torch.cuda.max_memory_reserved(device) / 2**20)}


def demo_data(work: Path, shape_zyx: tuple[int, int, int]) -> dict[str, float]:
    """The demo data in ``work`` (simulated on first use); its radii (voxels per class)."""
    return demo_radii(work) if (work / "labels.tsv").exists() else prepare(work, shape_zyx)


def measure_floor(device: torch.device, profile: Profile, precisions: list[str],
                  flops: float) -> dict:
    """Per precision the best conv3d GFLOP/s (the floor) over the profile's input edges
    and, on a GPU, cuDNN's algorithm search off and on; ``tried`` lists every setting.
    ``flops``: the net's FLOPs per voxel, for ``floor_voxels_per_s``."""
    searches = (False, True) if device.type == "cuda" else (torch.backends.cudnn.benchmark,)
    floor = {}
    for name in precisions:
        tried = []
        for edge in profile.floor_edges:
            for search in searches:
                with cudnn_benchmark(search):
                    rate = best_gflops(32, 32, 3, (edge, edge, edge), DTYPES[name],
                                       *profile.floor_runs, str(device))
                tried.append({"edge": edge, "cudnn_benchmark": search, **rate})
        best = max(tried, key=lambda entry: entry["gflops"])
        floor[name] = {"gflops": best["gflops"], "layout": best["layout"], "edge": best["edge"],
                       "cudnn_benchmark": best["cudnn_benchmark"],
                       "floor_voxels_per_s": round(best["gflops"] * 1e9 / flops), "tried": tried}
    return floor


def stage_floor(report: Report, device: torch.device, profile: Profile, **_: object) -> None:
    flops = flops_per_voxel()
    report.set("flops_per_voxel", round(flops))
    report.set("floor", measure_floor(device, profile, ["fp32", *reduced_precisions(device)],
                                      flops))


def stage_train(report: Report, device: torch.device, profile: Profile, work: Path,
                **_: object) -> None:
    radii = demo_data(work, profile.demo_shape)
    settings = dict(profile.train_settings)
    report.set("settings", {"demo_shape": profile.demo_shape, **settings})
    results: dict[str, dict] = {}
    for name in ["fp32", *reduced_precisions(device)]:
        reset_peak_memory(device)
        try:
            trainer = (default_trainer(work, radii, device, Fp16AutocastTrainer, **settings)
                       if name == "fp16" else
                       default_trainer(work, radii, device, precision=name, **settings))
            results[name] = {**step_rates(trainer, profile.train_runs[1], profile.train_runs[0]),
                             **peak_memory(device)}
        except (FloatingPointError, RuntimeError) as error:  # one precision failing
            results[name] = {"error": f"{type(error).__name__}: {error}"}
        report.set("precisions", results)
    fp32 = results["fp32"].get("default_run_it_per_s")
    for result in results.values():
        if fp32 and "error" not in result:
            result["vs_fp32"] = round(result["default_run_it_per_s"] / fp32, 2)
    report.set("precisions", results)


def stage_time_to_f1(report: Report, device: torch.device, profile: Profile, work: Path,
                     deadline: float, **_: object) -> None:
    radii = demo_data(work, profile.demo_shape)
    report.set("target_f1", TARGET_F1)
    rows: list[dict] = []
    for budget in profile.budgets:
        left = deadline - time.monotonic()
        if rows and budget / rows[-1]["train_it_per_s"] + rows[-1]["pick_s"] > left:
            rows.append({"iterations": budget,
                         "skipped": f"predicted to take longer than the {left:.0f} s left"})
            report.set("rows", rows)
            break
        rows += time_to_f1(work, radii, [budget], TARGET_F1, str(device),
                           dict(profile.run_settings))
        report.set("rows", rows)
        if rows[-1]["f1"] >= TARGET_F1:
            break
    reached = next((r for r in rows if r.get("f1", 0.0) >= TARGET_F1), None)
    report.set("reached", reached and {"iterations": reached["iterations"],
                                       "train_s": reached["train_s"],
                                       "train_and_pick_s": reached["train_s"] + reached["pick_s"]})


def stage_pick(report: Report, device: torch.device, profile: Profile, deadline: float,
               **_: object) -> None:
    default_budget = MAX_TILE_VOXELS[device.type]
    engine_search = torch.backends.cudnn.benchmark
    flops = flops_per_voxel()
    floor = measure_floor(device, profile, sorted({"fp32", resolve_precision("auto", device)}),
                          flops)
    report.set("flops_per_voxel", round(flops))
    report.set("floor", floor)
    try:
        import monai  # noqa: F401

        no_monai = None
    except ImportError as error:
        no_monai = f"MONAI is not importable ({error}); install the benchmark extra: {INSTALL_HINT}"
    variants = [(mode, None, engine_search) for mode in MODES]
    variants += [("tiled", default_budget * factor, engine_search)
                 for factor in profile.tile_factors]
    if device.type == "cuda" and not engine_search:
        variants.append(("tiled", None, True))

    def run(mode: str, shape: tuple[int, int, int], budget: int | None, search: bool) -> dict:
        reset_peak_memory(device)
        with cudnn_benchmark(search):
            row = measure_mode(mode, shape, device, budget)
        del row["peak_rss_mb"]  # the whole process's, not this run's
        row.update(peak_memory(device), cudnn_benchmark=search,
                   floor_gflops=floor[row["precision"]]["gflops"])
        if MODES[mode][0] == "tiled":
            row["max_tile_voxels"] = budget or default_budget
            row["work_ratio"] = round(tiled_work_ratio(shape, device.type, budget), 3)
        return row

    for mode in MODES:  # untimed: lazy initialisation, cuDNN's first calls
        if not (no_monai and mode.startswith("monai")):
            run(mode, profile.pick_sizes[0], None, engine_search)
    rows: list[dict] = []
    for shape in profile.pick_sizes:
        for mode, budget, search in variants:
            if no_monai and mode.startswith("monai"):
                rows.append({"mode": mode, "shape_zyx": list(shape), "skipped": no_monai})
                continue
            row = (skip_row(rows, mode, list(shape), deadline - time.monotonic())
                   or run(mode, shape, budget, search))
            rows.append(row)
            add_ratios(rows, floor, flops)
            report.set("rows", rows)


def _agreement(picks: ParticleTable, reference: ParticleTable, radii: dict[str, float]) -> float:
    """Pooled F1 of ``picks`` against ``reference`` (distance rule); 1.0 when both are empty."""
    if not len(picks) and not len(reference):
        return 1.0
    return round(evaluate_distance(picks, reference, radii).pooled.f1, 4)


def stage_correct(report: Report, device: torch.device, profile: Profile, work: Path,
                  **_: object) -> None:
    radii = demo_data(work, profile.demo_shape)
    models = sorted(work.glob("model_*.pt"), key=lambda p: int(p.stem.split("_")[1]))
    if not models:
        time_to_f1(work, radii, [profile.model_budget], TARGET_F1, str(device),
                   dict(profile.run_settings))
        models = [work / f"model_{profile.model_budget}.pt"]
    model, meta = load_model(models[-1], device)
    data = work / "data"
    volume = normalise(read_volume(data / "tomo_001.mrc").data)
    margin = _round_up(model.receptive_margin, model.size_multiple)
    whole_budget, tiled_budget = MAX_TILE_VOXELS[device.type], volume.size // 2
    report.set("setup", {
        "model": models[-1].name, "shape_zyx": list(volume.shape),
        "whole_pass_tiles": len(plan_tiles(volume.shape, margin, model.size_multiple,
                                           whole_budget)),
        "tiled_max_tile_voxels": tiled_budget,
        "tiles": len(plan_tiles(volume.shape, margin, model.size_multiple, tiled_budget))})
    radius = dict(zip(meta.classes, meta.radii))
    default = resolve_precision("auto", device)
    wholes, tileds, tiled_vs_whole = {}, {}, {}
    for precision in dict.fromkeys([default, "fp32"]):
        whole = wholes[precision] = segment_tiled(model, volume, device, whole_budget, precision)
        tiled = tileds[precision] = segment_tiled(model, volume, device, tiled_budget, precision)
        tiled_vs_whole[precision] = {
            "labels_equal": bool(np.array_equal(tiled.labels, whole.labels)),
            "mismatched_voxels": int((tiled.labels != whole.labels).sum()),
            "max_score_difference": float(np.abs(tiled.scores.astype(np.float32)
                                                 - whole.scores.astype(np.float32)).max())}
        report.set("tiled_vs_whole", tiled_vs_whole)
    picks = {name: extract_particles(seg, meta.classes, meta.radii) for name, seg in wholes.items()}
    tiled_picks = extract_particles(tileds[default], meta.classes, meta.radii)
    tiled_vs_whole[default].update(picks_whole=len(picks[default]), picks_tiled=len(tiled_picks),
                                   picks_f1=_agreement(tiled_picks, picks[default], radius))
    report.set("tiled_vs_whole", tiled_vs_whole)
    truth = read_particles(data / "tomo_001.tsv")
    occupancy = read_volume(data / "tomo_001_occupancy.mrc",
                            check_values=False).data.astype(np.int64)
    report.set("precision_agreement", {
        "precision": default,
        "label_agreement": float((wholes[default].labels == wholes["fp32"].labels).mean()),
        "picks": len(picks[default]), "picks_fp32": len(picks["fp32"]),
        "f1_vs_fp32_picks": _agreement(picks[default], picks["fp32"], radius),
        "f1_vs_truth": {name: round(evaluate_occupancy(p, truth, occupancy).pooled.f1, 4)
                        for name, p in picks.items()}})


STAGES = {"floor": stage_floor, "train": stage_train, "time_to_f1": stage_time_to_f1,
          "pick": stage_pick, "correct": stage_correct}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("stage", choices=list(STAGES))
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--work", type=Path, required=True,
                        help="folder for the demo data and models, shared by the stages")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--seconds", type=float, default=120.0,
                        help="time the stage plans its work to fit in")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes: a dry run")
    args = parser.parse_args()
    device = resolve_device(args.device)
    args.work.mkdir(parents=True, exist_ok=True)
    report = Report(args.out_dir / f"{args.stage}.json", device)
    STAGES[args.stage](report, device=device, profile=TINY if args.tiny else FULL,
                       work=args.work, deadline=time.monotonic() + args.seconds)


if __name__ == "__main__":
    main()
