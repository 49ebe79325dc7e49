"""The ``sasi`` command: simulate, pretrain, train, pick, evaluate, convert, info, demo.

Bad input ends with a one-line ``sasi: error: ...`` on stderr that names the fix,
exit status 2, and no output file.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import signal
import sys
import threading
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NoReturn

import torch

from . import ENGINE_VERSION, api
from .atomic import atomic_output, check_outputs
from .defaults import (
    DEFAULT_ITERATIONS,
    PICK_MODES,
    PRECISIONS,
    PROTOTYPE_FILTERS,
    PROTOTYPE_QUANTILE,
    SELF_TRAINING_MODES,
    SSL_AUTO,
    SSL_SCHEDULES,
    STATISTICS_ADAPTATIONS,
    TRAINING_PRECISIONS,
    UNSCORED_CLASSES,
)
from .errors import ERROR_FILE_VARIABLE, SasiInputError, SasiWarning, named_as_flags
from .formats import (
    DEFAULT_CLASS,
    FORMATS,
    Reference,
    check_classes,
    check_reference,
    output_format,
    read_coordinates,
    tomogram_reference,
    write_coordinates,
)
from .limits import BACKGROUND_CLASS, finite_problem, split_class_value, voxel_size_problem
from .metrics import evaluate_czii
from .model_file import model_summary, read_model_file, sidecar_paths
from .mrc_io import inspect_mrc
from .postprocess import COMPONENT_MODES, DEFAULT_COMPONENTS
from .progress import ProgressLog
from .runtime import describe_runtime
from .training import TrainingSettings
from .training_data import class_radii, parse_radii

EXIT_BAD_INPUT = 2
EXIT_TERMINATED = 128 + signal.SIGTERM
HEAVY_COMMANDS = ("pretrain", "train", "pick", "demo")
"""Commands that announce where they run (see ``runtime.describe_runtime``)."""
CZII_REPORT = "czii_fbeta4"
"""Key of the CZII challenge block (F-beta, beta 4) in ``sasi evaluate --json``."""
FLAGS = {
    "tomograms": "--tomogram", "tomogram": "--tomogram", "labels": "--coords",
    "radii": "--radius", "unlabelled": "--unlabelled", "pretrained": "--pretrained",
    "model": "--model", "occupancy": "--occupancy", "arch": "--arch",
    "batch_norm": "--no-batch-norm", "device": "--device", "mode": "--mode",
    "min_score": "--min-score", "voxel_size": "--voxel-size",
    "prototype_filter": "--prototype-filter", "prototype_quantile": "--prototype-quantile",
    "adapt_statistics": "--adapt-statistics",
    "settings.iterations": "--iterations", "settings.seed": "--seed",
    "settings.learning_rate": "--learning-rate", "settings.ema_decay": "--ema-decay",
    "settings.band_limit": "--band-limit", "settings.self_training": "--self-training",
    "settings.self_training_at": "--self-training-at",
    "settings.batch_size": "--batch-size", "settings.ssl": "--ssl",
}
"""The flag of each library parameter, which the command's messages name
(``errors.named_as_flags``)."""


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


def _weights(specs: Sequence[str]) -> dict[str, float]:
    """Parse ``CLASS=W`` class weights (``--weight``) of the CZII block."""
    weights: dict[str, float] = {}
    for spec in specs:
        name, weight = split_class_value(spec)
        if not name or not weight >= 0:
            raise SasiInputError(
                f"--weight {spec}: expected CLASS=W with W a number >= 0 (0: not scored)")
        weights[name] = weight
    return weights


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one ``sasi: error:`` line (exit status 2)."""

    def error(self, message: str) -> NoReturn:
        raise SasiInputError(f"{message}; see '{self.prog} --help'")


class Terminated(Exception):
    """SIGTERM arrived (a queue's time limit, ``scancel``, a stop)."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


def _device_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto",
                        help="auto (first visible GPU, else CPU), cpu, cuda or cuda:N")


def _voxel_size_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--voxel-size", type=float, metavar="A",
                        help="Å per voxel of the tomograms, used instead of their MRC "
                             "headers' (a warning when a header disagrees); the Scipion "
                             "protocols pass the tomograms' sampling rate")


def _training_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="model file to write (.pt)")
    parser.add_argument("--iterations", type=_positive_int,
                        help=f"optimisation steps (default: {DEFAULT_ITERATIONS['cpu']} on a "
                             f"CPU, {DEFAULT_ITERATIONS['cuda']} on a GPU)")
    parser.add_argument("--batch-size", type=_positive_int,
                        default=TrainingSettings.batch_size)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--arch", default="deepfinder", help="backbone (default deepfinder)")
    parser.add_argument("--no-batch-norm", action="store_true",
                        help="the SaSi paper's DeepFinder U-Net as published, without the "
                             "batch normalisation sasi adds after every convolution (which "
                             "learns the classes much faster); deepfinder only")
    parser.add_argument("--precision", choices=TRAINING_PRECISIONS,
                        default=TrainingSettings.precision,
                        help="auto (default: bf16 autocast on a CPU with native bf16, AMX or "
                             "AVX512-BF16, where it trains 1.6 to 2 times as fast at the same "
                             "accuracy; fp32 elsewhere), fp32 or bf16")
    parser.add_argument("--ema-decay", type=float, default=TrainingSettings.ema_decay,
                        help="save an exponential moving average of the weights with this "
                             "decay, e.g. 0.98 (default 0: the last weights)")
    parser.add_argument("--processes", type=_positive_int, default=1,
                        help="data-parallel processes on this node, started with torchrun: "
                             "one per GPU with --device cuda (the first N GPUs of "
                             "CUDA_VISIBLE_DEVICES); on the CPU each takes a share of the "
                             "cores. Same result as 1 process up to rounding; the batch "
                             "size must be a multiple of N")
    parser.add_argument("--checkpoint-every", type=_positive_int, metavar="N",
                        help="write the checkpoint OUT.ckpt every N iterations (default: "
                             "every 3 minutes of training)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the checkpoint OUT.ckpt of an interrupted run of "
                             "the same command (bit-identical result on the same machine); "
                             "without a checkpoint, start afresh")
    _voxel_size_option(parser)
    _device_option(parser)


def _output_format_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=FORMATS,
                        help="coordinate format to write (default: from the extension: "
                             ".tsv SaSi, .star RELION 5, .tbl Dynamo, .txt SHREC 2021, "
                             ".json copick; docs/formats.md)")


def _invert_contrast_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--invert-contrast", action="store_true",
                        help="negate the tomogram before picking: protein is bright here "
                             "and was dark in the model's training data (the simulator's "
                             "and most reconstructions'), or the reverse; 'sasi info' "
                             "shows the model's contrast")


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r}: expected a finite number above 0")
    return value


def _add_convert(sub: argparse._SubParsersAction) -> None:
    """``sasi convert IN OUT``: one coordinate format to another."""
    conv = sub.add_parser("convert", help="convert a coordinate file to another format")
    conv.add_argument("input", metavar="IN", help="coordinate file to read (any format)")
    conv.add_argument("output", metavar="OUT", help="coordinate file to write")
    conv.add_argument("--tomogram", help="the tomogram of the particles: its shape and "
                                         "voxel size (needed for Å and centred formats)")
    conv.add_argument("--voxel-size", type=_positive_float,
                      help="Å per voxel (overrides the tomogram's header)")
    conv.add_argument("--class", dest="class_name",
                      help=f"class of particles whose file names none (default "
                           f"{DEFAULT_CLASS})")
    conv.add_argument("--from", dest="from_format", choices=FORMATS,
                      help="format of IN (default: from its content)")
    _output_format_option(conv)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every sub-command."""
    parser = _Parser(
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
    sim.add_argument("--distractors", action="store_true",
                     help="add gold beads, membranes, vesicles and junk (not particles: a pick "
                          "on one is a false positive), listed in tomo_NNN_distractors.tsv "
                          "and tomo_NNN_distractor_mask.mrc")

    pre = sub.add_parser("pretrain", help="self-supervised (SimCLR) pre-training")
    pre.add_argument("--tomogram", action="append", default=[], required=True)
    _training_options(pre)

    train = sub.add_parser("train", help="few-shot training from a few labelled particles")
    train.add_argument("--tomogram", action="append", default=[], required=True,
                       help="labelled tomogram (repeat; pairs with --coords in order)")
    train.add_argument("--coords", action="append", default=[], required=True,
                       help="its coordinate file: .tsv (x y z class, voxels), RELION "
                            ".star, Dynamo .tbl, SHREC .txt or copick .json "
                            f"(docs/formats.md); points of class '{BACKGROUND_CLASS}' are not "
                            "particles (gold, membrane, junk): training shows their windows "
                            "as background")
    train.add_argument("--unlabelled", action="append", default=[],
                       help="extra unlabelled tomogram for self-supervision (repeat)")
    train.add_argument("--radius", action="append", default=[],
                       help="CLASS=R particle radius in voxels (or R for every class)")
    train.add_argument("--pretrained", help="model file from 'sasi pretrain' to start from")
    train.add_argument("--no-infill", action="store_true", help="no Volume Infill")
    train.add_argument("--no-consistency", action="store_true", help="no consistency guidance")
    train.add_argument("--ssl", choices=(SSL_AUTO, *SSL_SCHEDULES), default=SSL_AUTO,
                       help="SimCLR schedule (auto: iss, or none with --pretrained)")
    train.add_argument("--band-limit", type=float, default=TrainingSettings.band_limit,
                       metavar="R",
                       help="band-limit half the training windows to a voxel size up to R "
                            "times the tomograms' (at random), so that the model also picks "
                            "coarser tomograms well, e.g. 1.5 (default 1: off)")
    train.add_argument("--self-training", choices=SELF_TRAINING_MODES,
                       default=TrainingSettings.self_training,
                       help="what to do with the particles you did not label that the model "
                            "finds in the training tomograms part-way through (at "
                            "--self-training-at): ignore (leave them out of the loss instead "
                            "of teaching them as background), labels (teach them as extra "
                            "labels of the class picked) or off; your labels always stay "
                            f"(default {TrainingSettings.self_training})")
    train.add_argument("--self-training-at", type=float, metavar="F",
                       default=TrainingSettings.self_training_at,
                       help="share of the iterations after which self-training finds them "
                            f"(default {TrainingSettings.self_training_at:g})")
    _training_options(train)

    pick = sub.add_parser("pick", help="find particles in a tomogram")
    pick.add_argument("--model", required=True)
    pick.add_argument("--tomogram", required=True)
    pick.add_argument("--out", required=True,
                      help="coordinate file to write (.tsv; .star, .tbl, .txt, .json: see "
                           "--format)")
    _output_format_option(pick)
    pick.add_argument("--mode", choices=PICK_MODES, default="tiled",
                      help="tiled (fast, default) or sliding (the paper's W / stride W/2)")
    pick.add_argument("--min-score", type=float,
                      help="drop particles scoring lower (default: the model's per-class "
                           "cut-offs, chosen from its training labels; 0 keeps every pick)")
    pick.add_argument("--components", choices=COMPONENT_MODES, default=DEFAULT_COMPONENTS,
                      help="argmax: per-class components of the argmax map (the paper's); "
                           "foreground: one component per particle-like blob, its class by "
                           "summed probabilities")
    pick.add_argument("--precision", choices=PRECISIONS, default="auto",
                      help="auto: fp16 on a GPU, bf16 on a CPU that has it, else fp32")
    pick.add_argument("--no-class-calibration", dest="class_calibration",
                      action="store_false",
                      help="call each particle the network's argmax class (the paper's) "
                           "instead of the model's class calibration from its training labels")
    pick.add_argument("--prototype-filter", choices=PROTOTYPE_FILTERS, default="auto",
                      help="drop picks that the network's encoder finds unlike the training "
                           "labels of their class: auto (default) for a one-class model, on "
                           "for any model, off never")
    pick.add_argument("--prototype-quantile", type=float, default=PROTOTYPE_QUANTILE,
                      metavar="Q",
                      help="with the prototype filter, drop picks less like their class's "
                           "labels than this quantile (0 to 1) of the labels' own "
                           "similarities (default %(default)s; higher: fewer, surer picks)")
    pick.add_argument("--adapt-statistics", choices=STATISTICS_ADAPTATIONS, default="auto",
                      help="re-estimate the network's batch-normalisation statistics over "
                           "the tomogram picked: auto (default) for a tomogram coarser than "
                           "the model (a model of several classes), on for any tomogram "
                           "whose detail differs from the training data's (e.g. filtered "
                           "differently), off never")
    _invert_contrast_option(pick)
    _voxel_size_option(pick)
    _device_option(pick)

    ev = sub.add_parser("evaluate", help="precision, recall and F1 of picks against the truth")
    ev.add_argument("--picks", required=True)
    ev.add_argument("--truth", required=True)
    ev.add_argument("--occupancy", help="particle-id map: SHREC 2021 rule (else distance rule)")
    ev.add_argument("--radius", action="append", default=[],
                    help="CLASS=R hit radius for the distance rule (voxels)")
    ev.add_argument("--model", help="take the distance-rule radii from this model")
    ev.add_argument("--unscored", action="append", default=None,
                    help="classes not scored (default: 4V94 and vesicle; weight 0 in the "
                         "CZII block)")
    ev.add_argument("--weight", action="append", default=[],
                    help="CLASS=W weight of a class in the CZII block (reported whenever "
                         "radii are known; default: the challenge's weights for its classes, "
                         "else 1)")
    ev.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ev.add_argument("--tomogram",
                    help="the tomogram of the picks: its shape and voxel size for "
                         "coordinates in Å (default: those of --occupancy)")

    _add_convert(sub)

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
                     templates_dir=args.templates, voxel_size=args.voxel_size, snr=args.snr,
                     distractors=args.distractors)
    print(f"wrote {args.tomograms} tomogram(s) to {args.out_dir}")


def _run_training(args: argparse.Namespace, pretrain: bool) -> None:
    from .train_command import run_pretrain, run_train

    (run_pretrain if pretrain else run_train)(args)


def _parallel_training(args: argparse.Namespace, argv: Sequence[str]) -> int | None:
    """Start ``--processes`` N > 1 training processes with torchrun and return their exit
    status; ``None`` when this process is to train itself."""
    from .device import resolve_device
    from .distributed import in_worker, relaunch_with_torchrun
    from .train_command import WINDOW, check_training_args
    from .training_data import parse_radii, plan_labels

    if args.command not in ("train", "pretrain") or args.processes == 1 or in_worker():
        return None
    check_training_args(args, pretrain=args.command == "pretrain")
    if args.command == "train":  # so that bad labels end with status 2, not torchrun's 1
        with warnings.catch_warnings():  # the workers give the warnings
            warnings.simplefilter("ignore", SasiWarning)
            plan_labels(args.tomogram, args.coords, parse_radii(args.radius), WINDOW,
                        args.voxel_size)
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

    out = Path(args.out)
    fmt = _output_format("--out", out, args.format)
    problem = (finite_problem("--min-score", args.min_score, 0.0, 1.0)
               if args.min_score is not None else None) or voxel_size_problem(args.voxel_size)
    if problem:
        raise SasiInputError(problem)
    log_path = out.with_suffix(".log.jsonl")
    check_outputs([("--out", out), ("--out", log_path)],
                  [("--model", args.model), ("--tomogram", args.tomogram)])
    reference = tomogram_reference(args.tomogram, args.voxel_size,
                                   fix="set the pixel size in its header, give --voxel-size "
                                       "or write --format tsv")
    check_reference(out, fmt, reference)
    if fmt == "copick":  # one class per file: refuse before picking, not after
        check_classes(out, fmt, read_model_file(args.model)[0].classes)
    device = resolve_device(args.device)
    with atomic_output(log_path) as tmp_log, \
            ProgressLog(1, f"pick {Path(args.tomogram).name}", tmp_log, step_name="tile") as log:
        def report(done: int, total: int) -> None:
            log.total = total
            log.update(done)

        picks = api.pick(args.model, args.tomogram, mode=args.mode, min_score=args.min_score,
                         device=str(device), progress=report, components=args.components,
                         precision=args.precision, invert_contrast=args.invert_contrast,
                         voxel_size=args.voxel_size, class_calibration=args.class_calibration,
                         prototype_filter=args.prototype_filter,
                         prototype_quantile=args.prototype_quantile,
                         adapt_statistics=args.adapt_statistics)
        write_coordinates(out, picks, fmt, reference)
    counts = ", ".join(f"{name}: {int((picks.classes == name).sum())}"
                       for name in picks.class_names)
    print(f"picked {len(picks)} particle(s) ({counts or 'none'}) -> {args.out}")


def _output_format(option: str, path: Path, fmt: str | None) -> str:
    """The format to write ``path`` (``formats.output_format``), errors naming ``option``."""
    try:
        return output_format(path, fmt)
    except SasiInputError as error:
        raise SasiInputError(f"{option} {error}") from error


def _evaluation_reference(args: argparse.Namespace) -> Reference:
    """Shape and voxel size for the coordinates of ``sasi evaluate``: the tomogram's,
    else the occupancy map's."""
    fix = "give --tomogram T (its shape and voxel size)"
    if args.tomogram or not args.occupancy:
        return tomogram_reference(args.tomogram, fix=fix)
    info = inspect_mrc(args.occupancy)
    return Reference(shape=info.shape, voxel_size=info.voxel_size, fix=fix)


def _run_evaluate(args: argparse.Namespace) -> None:
    """The SHREC 2021 rule (``--occupancy``) or the distance rule, then the CZII block
    (:data:`CZII_REPORT`) whenever radii are known (``--radius``, ``--model``)."""
    reference = _evaluation_reference(args)
    picks = read_coordinates(args.picks, reference, allow_empty=True)
    truth = read_coordinates(args.truth, reference)
    weights = _weights(args.weight)
    radii = parse_radii(args.radius)
    if args.model:
        meta, _ = read_model_file(args.model)
        radii = {**dict(zip(meta.classes, meta.radii)), **radii}
    names = sorted(set(truth.class_names))
    truth_radii = dict(zip(names, class_radii(names, radii, 10**6))) if radii else None
    unscored = args.unscored if args.unscored is not None else UNSCORED_CLASSES
    if not args.occupancy and truth_radii is None:
        raise SasiInputError(
            "the distance rule needs radii: give --radius CLASS=R, --model M.pt, "
            "or --occupancy for the SHREC rule"
        )
    result = api.evaluate(picks, truth, occupancy=args.occupancy, radii=truth_radii,
                          unscored=unscored)
    report, text = result.to_dict(), result.format_table()
    if truth_radii is not None:
        czii = evaluate_czii(picks, truth, truth_radii,
                             weights={**dict.fromkeys(unscored, 0.0), **weights})
        report[CZII_REPORT] = czii.to_dict()
        text += "\n\n" + czii.format_table()
    print(json.dumps(report, indent=2) if args.json else text)


def _run_convert(args: argparse.Namespace) -> None:
    """Read ``IN`` in any format and write ``OUT`` in the format its extension or
    ``--format`` names; every check runs before anything is written."""
    out = Path(args.output)
    fmt = _output_format("OUT", out, args.format)
    inputs = [("IN", args.input)] + ([("--tomogram", args.tomogram)] if args.tomogram else [])
    check_outputs([("OUT", out)], inputs)
    reference = tomogram_reference(
        args.tomogram, args.voxel_size,
        fix="give --tomogram T (its shape and voxel size)" + (
            "" if args.tomogram else " or --voxel-size A"))
    check_reference(out, fmt, reference)
    table = read_coordinates(args.input, reference, fmt=args.from_format,
                             default_class=args.class_name or DEFAULT_CLASS, allow_empty=True)
    write_coordinates(out, table, fmt, reference)
    print(f"wrote {len(table)} particle(s) as {fmt} -> {out}")


def _run_info(args: argparse.Namespace) -> None:
    meta, state = read_model_file(args.model)
    card_path = sidecar_paths(args.model)[0]
    try:
        card = json.loads(card_path.read_text()) if card_path.is_file() else None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SasiInputError(f"{card_path}: damaged side-car ({error}); delete it (the "
                             "model file holds the same)") from error
    summary = {"model": str(args.model), **model_summary(meta, state),
               "sidecar": card is not None}
    print(json.dumps(summary, indent=2))


def _run_demo(args: argparse.Namespace) -> None:
    from .demo import run_demo

    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise SasiInputError(f"--out {args.out}: is a file; the demo needs a work folder")
    run_demo(args.out, iterations=args.iterations, seed=args.seed, device=args.device)


COMMANDS = {
    "simulate": _run_simulate,
    "pretrain": lambda a: _run_training(a, pretrain=True),
    "train": lambda a: _run_training(a, pretrain=False),
    "pick": _run_pick,
    "evaluate": _run_evaluate,
    "convert": _run_convert,
    "info": _run_info,
    "demo": _run_demo,
}


def _fail(message: str, status: int, prefix: str = "sasi: error: ") -> int:
    """Print ``message`` on one line, copy it to ``$SASI_ERROR_FILE``; return ``status``."""
    print(f"{prefix}{message}", file=sys.stderr)
    _write_error_file(message)
    return status


def _write_error_file(message: str) -> None:
    path = os.environ.get(ERROR_FILE_VARIABLE)
    if not path:
        return
    try:
        with atomic_output(path) as tmp:
            tmp.write_text(message + "\n")
    except OSError as error:
        print(f"sasi: cannot write {ERROR_FILE_VARIABLE} {path}: {error}", file=sys.stderr)


def _show_warning(message: Warning | str, category: type[Warning], filename: str,
                  lineno: int, file: object = None, line: str | None = None) -> None:
    """A library warning as one ``warning: ...`` line on stderr; others as Python
    shows them."""
    text = (f"warning: {message}\n" if issubclass(category, SasiWarning)
            else warnings.formatwarning(message, category, filename, lineno, line))
    sys.stderr.write(text)
    sys.stderr.flush()


@contextlib.contextmanager
def _command_context() -> Iterator[None]:
    """Messages name the flags, library warnings are ``warning:`` lines and the
    engine's progress notes plain lines on stderr, for the time of one command."""
    logger = logging.getLogger(__package__)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    level, propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        with named_as_flags(FLAGS), warnings.catch_warnings():
            warnings.simplefilter("always", SasiWarning)
            warnings.showwarning = _show_warning
            yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sasi`` console script; returns the exit status.

    SIGTERM (a queue's time limit) ends a command like Ctrl-C: temporary files are
    removed and the last checkpoint stays for ``--resume``.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if in_main_thread else None
    try:
        args = build_parser().parse_args(argv)
        if args.command in HEAVY_COMMANDS:
            print(f"sasi {args.command}: {describe_runtime()}", file=sys.stderr, flush=True)
        with _command_context():
            status = _parallel_training(args, argv)
            if status is not None:
                return status
            COMMANDS[args.command](args)
    except SasiInputError as error:
        return _fail(str(error), EXIT_BAD_INPUT)
    except FloatingPointError as error:
        return _fail(str(error), 1)
    except KeyboardInterrupt:
        return _fail("interrupted; no output written", 130, prefix="sasi: ")
    except Terminated:
        return _fail("terminated (SIGTERM); no output written; a training run continues "
                     "from its last checkpoint with --resume", EXIT_TERMINATED, prefix="sasi: ")
    except Exception as error:
        _write_error_file(f"{type(error).__name__}: {(str(error).splitlines() or [''])[0]}")
        raise
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)
    return 0


if __name__ == "__main__":
    sys.exit(main())
