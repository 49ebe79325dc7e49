"""The ``sasi`` command: simulate, pretrain, train, pick, evaluate, info, demo.

Bad input ends with a one-line ``sasi: error: ...`` on stderr that names the fix,
exit status 2, and no output file.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from . import ENGINE_VERSION
from .coordinates import read_particles, write_particles
from .errors import SasiInputError
from .inference import PRECISIONS
from .metrics import evaluate_distance, evaluate_occupancy
from .model_file import read_model_file, sidecar_paths
from .mrc_io import read_volume
from .picking import PICK_MODES, pick_tomogram
from .progress import ProgressLog
from .runtime import describe_runtime
from .training import SSL_SCHEDULES, TrainingSettings
from .training_data import class_radii, parse_radii

EXIT_BAD_INPUT = 2
HEAVY_COMMANDS = ("pretrain", "train", "pick", "demo")
"""Commands that announce where they run (see ``runtime.describe_runtime``)."""


def _shape(text: str) -> tuple[int, int, int]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or min(values) < 16:
        raise argparse.ArgumentTypeError(f"{text!r}: expected Z,Y,X with each at least 16")
    return values  # type: ignore[return-value]


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a positive integer")
    return int(text)


def _device_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto",
                        help="auto (first visible GPU, else CPU), cpu, cuda or cuda:N")


def _training_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="model file to write (.pt)")
    parser.add_argument("--iterations", type=_positive_int,
                        help="optimisation steps (default: 600 on a CPU, 10000 on a GPU)")
    parser.add_argument("--batch-size", type=_positive_int,
                        default=TrainingSettings.batch_size)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--arch", default="deepfinder", help="backbone (default deepfinder)")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                        help="fp32 (default) or bf16 autocast: 4x faster steps on an AMX CPU "
                             "but slower learning per step (measured)")
    parser.add_argument("--processes", type=_positive_int, default=1,
                        help="data-parallel processes on this node, started with torchrun: "
                             "one per GPU with --device cuda (the first N GPUs of "
                             "CUDA_VISIBLE_DEVICES); on the CPU each takes a share of the "
                             "cores. Same result as 1 process up to rounding; the batch "
                             "size must be a multiple of N")
    _device_option(parser)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every sub-command."""
    parser = argparse.ArgumentParser(
        prog="sasi", description="SaSi few-shot particle picking for cryo-ET tomograms.")
    parser.add_argument("--version", action="version", version=f"sasi {ENGINE_VERSION}")
    sub = parser.add_subparsers(dest="command", required=True)

    sim = sub.add_parser("simulate", help="write synthetic tomograms with their truth")
    sim.add_argument("out_dir")
    sim.add_argument("--tomograms", type=_positive_int, default=3)
    sim.add_argument("--shape", type=_shape, default=(96, 256, 256), help="Z,Y,X voxels")
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--templates", help="folder of MRC density maps (default: procedural)")
    sim.add_argument("--snr", type=float, help="signal-to-noise ratio (default: easy demo)")
    sim.add_argument("--voxel-size", type=float, default=10.0, help="Å per voxel")

    pre = sub.add_parser("pretrain", help="self-supervised (SimCLR) pre-training")
    pre.add_argument("--tomogram", action="append", default=[], required=True)
    _training_options(pre)

    train = sub.add_parser("train", help="few-shot training from a few labelled particles")
    train.add_argument("--tomogram", action="append", default=[], required=True,
                       help="labelled tomogram (repeat; pairs with --coords in order)")
    train.add_argument("--coords", action="append", default=[], required=True,
                       help="its coordinate file (.tsv: x y z class, voxels)")
    train.add_argument("--unlabelled", action="append", default=[],
                       help="extra unlabelled tomogram for self-supervision (repeat)")
    train.add_argument("--radius", action="append", default=[],
                       help="CLASS=R particle radius in voxels (or R for every class)")
    train.add_argument("--pretrained", help="model file from 'sasi pretrain' to start from")
    train.add_argument("--no-infill", action="store_true", help="no Volume Infill")
    train.add_argument("--no-consistency", action="store_true", help="no consistency guidance")
    train.add_argument("--ssl", choices=("auto", *SSL_SCHEDULES), default="auto",
                       help="SimCLR schedule (auto: iss, or none with --pretrained)")
    _training_options(train)

    pick = sub.add_parser("pick", help="find particles in a tomogram")
    pick.add_argument("--model", required=True)
    pick.add_argument("--tomogram", required=True)
    pick.add_argument("--out", required=True, help="coordinate file to write (.tsv)")
    pick.add_argument("--mode", choices=PICK_MODES, default="tiled",
                      help="tiled (fast, default) or sliding (the paper's W / stride W/2)")
    pick.add_argument("--min-score", type=float, default=0.0,
                      help="drop particles whose mean class probability is lower")
    pick.add_argument("--precision", choices=PRECISIONS, default="auto",
                      help="auto: fp16 on a GPU, bf16 on a CPU that has it, else fp32")
    _device_option(pick)

    ev = sub.add_parser("evaluate", help="precision, recall and F1 of picks against the truth")
    ev.add_argument("--picks", required=True)
    ev.add_argument("--truth", required=True)
    ev.add_argument("--occupancy", help="particle-id map: SHREC 2021 rule (else distance rule)")
    ev.add_argument("--radius", action="append", default=[],
                    help="CLASS=R hit radius for the distance rule (voxels)")
    ev.add_argument("--model", help="take the distance-rule radii from this model")
    ev.add_argument("--unscored", action="append", default=None,
                    help="classes not scored (default: 4V94 and vesicle)")
    ev.add_argument("--json", action="store_true", help="print JSON instead of a table")

    info = sub.add_parser("info", help="print what a model file holds")
    info.add_argument("--model", required=True)

    demo = sub.add_parser("demo", help="simulate, train on 5 labels per class, pick, evaluate")
    demo.add_argument("--out", default="sasi-demo", help="work folder")
    demo.add_argument("--iterations", type=_positive_int, help="training steps")
    demo.add_argument("--seed", type=int, default=0)
    _device_option(demo)
    return parser


def _run_simulate(args: argparse.Namespace) -> None:
    from .simulate import simulate_dataset

    simulate_dataset(args.out_dir, tomograms=args.tomograms, shape_zyx=args.shape, seed=args.seed,
                     templates_dir=args.templates, voxel_size=args.voxel_size, snr=args.snr)
    print(f"wrote {args.tomograms} tomogram(s) to {args.out_dir}")


def _run_training(args: argparse.Namespace, pretrain: bool) -> None:
    from .train_command import run_pretrain, run_train

    (run_pretrain if pretrain else run_train)(args)


def _parallel_training(args: argparse.Namespace, argv: Sequence[str]) -> int | None:
    """Start ``--processes`` N > 1 training processes with torchrun and return their exit
    status; ``None`` when this process is to train itself."""
    from .device import resolve_device
    from .distributed import in_worker, relaunch_with_torchrun

    if args.command not in ("train", "pretrain") or args.processes == 1 or in_worker():
        return None
    if args.batch_size % args.processes:
        raise SasiInputError(f"--batch-size {args.batch_size} does not split evenly over "
                             f"--processes {args.processes}: use a multiple of {args.processes}")
    device = resolve_device(args.device)
    visible = torch.cuda.device_count()
    if device.type == "cuda" and visible < args.processes:
        raise SasiInputError(f"--processes {args.processes}: only {visible} GPU(s) visible; "
                             "use at most that many, one process per GPU")
    return relaunch_with_torchrun(args.processes, argv)


def _run_pick(args: argparse.Namespace) -> None:
    from .device import resolve_device

    device = resolve_device(args.device)
    log_path = Path(args.out).with_suffix(".log.jsonl")
    with ProgressLog(1, f"pick {Path(args.tomogram).name}", log_path, step_name="tile") as log:
        def report(done: int, total: int) -> None:
            log.total = total
            log.update(done)

        picks = pick_tomogram(args.model, args.tomogram, device, args.mode, args.min_score,
                              args.precision, progress=report)
    write_particles(args.out, picks)
    counts = ", ".join(f"{name}: {int((picks.classes == name).sum())}"
                       for name in picks.class_names)
    print(f"picked {len(picks)} particle(s) ({counts or 'none'}) -> {args.out}")


def _run_evaluate(args: argparse.Namespace) -> None:
    picks = read_particles(args.picks, allow_empty=True)
    truth = read_particles(args.truth)
    if args.occupancy:
        occupancy = read_volume(args.occupancy, check_values=False).data.astype("int64")
        unscored = args.unscored if args.unscored is not None else ("4V94", "vesicle")
        result = evaluate_occupancy(picks, truth, occupancy, unscored=unscored)
    else:
        radii = parse_radii(args.radius)
        if args.model:
            meta, _ = read_model_file(args.model)
            radii = {**dict(zip(meta.classes, meta.radii)), **radii}
        if not radii:
            raise SasiInputError(
                "the distance rule needs radii: give --radius CLASS=R, --model M.pt, "
                "or --occupancy for the SHREC rule"
            )
        names = sorted(set(truth.class_names))
        result = evaluate_distance(picks, truth, dict(zip(names, class_radii(names, radii, 10**6))))
    print(json.dumps(result.to_dict(), indent=2) if args.json else result.format_table())


def _run_info(args: argparse.Namespace) -> None:
    meta, state = read_model_file(args.model)
    card = json.loads(sidecar_paths(args.model)[0].read_text()) \
        if sidecar_paths(args.model)[0].is_file() else None
    summary = {"model": str(args.model), "arch": meta.arch, "classes": meta.classes,
               "radii": meta.radii, "window": meta.window, "voxel_size": meta.voxel_size,
               "pretrained_only": meta.pretrained_only, "iterations": meta.iterations,
               "parameters": int(sum(t.numel() for t in state.values())),
               "engine_version": meta.engine_version, "sidecar": card is not None}
    print(json.dumps(summary, indent=2))


def _run_demo(args: argparse.Namespace) -> None:
    from .demo import run_demo

    run_demo(args.out, iterations=args.iterations, seed=args.seed, device_spec=args.device)


COMMANDS = {
    "simulate": _run_simulate,
    "pretrain": lambda a: _run_training(a, pretrain=True),
    "train": lambda a: _run_training(a, pretrain=False),
    "pick": _run_pick,
    "evaluate": _run_evaluate,
    "info": _run_info,
    "demo": _run_demo,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sasi`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.command in HEAVY_COMMANDS:
        print(f"sasi {args.command}: {describe_runtime()}", file=sys.stderr, flush=True)
    try:
        status = _parallel_training(args, argv)
        if status is not None:
            return status
        COMMANDS[args.command](args)
    except SasiInputError as error:
        print(f"sasi: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except FloatingPointError as error:
        print(f"sasi: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("sasi: interrupted; no output written", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
