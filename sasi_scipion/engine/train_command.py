"""``sasi train`` and ``sasi pretrain``: the command's checks, data-parallel processes,
checkpoints (``resumable``), progress log and model file around a run that
``training_run`` sets up."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch

from .atomic import atomic_output, check_outputs, remove_partials
from .checkpoint import checkpoint_path
from .defaults import SSL_AUTO, WINDOW
from .device import resolve_device, use_all_cpus
from .distributed import ALONE, Replica, in_worker, join_process_group, leave_process_group
from .errors import SasiInputError, SasiWarning, input_name
from .limits import voxel_size_problem
from .model_file import sidecar_paths
from .progress import ProgressLog
from .resumable import CHECKPOINT_INTERVAL_S, ResumableRun
from .training import TrainingSettings
from .training_data import check_tomograms, parse_radii
from .training_run import TrainingRun, check_network, prepare_pretrain, prepare_train


def _check_out(path: str) -> Path:
    out = Path(path)
    if out.suffix != ".pt":
        raise SasiInputError(f"--out {path}: a model file must end in .pt")
    return out


def training_outputs(out: Path) -> list[tuple[str, Path]]:
    """``(option, path)`` of every file a run writing model ``out`` may write."""
    card, log = sidecar_paths(out)
    return [("--out", out), ("--out", card), ("--out", log), ("--out", checkpoint_path(out))]


def training_settings(args: argparse.Namespace, pretrain: bool) -> TrainingSettings:
    """The settings the options of ``sasi train`` or ``sasi pretrain`` ask for
    (``--ssl auto``: none with ``--pretrained``, else ISS; no ``--iterations``: the
    device's default budget)."""
    switches: dict[str, object] = {}
    if not pretrain:
        switches = {"infill": not args.no_infill, "consistency": not args.no_consistency,
                    "band_limit": args.band_limit, "self_training": args.self_training,
                    "self_training_at": args.self_training_at,
                    "ssl": args.ssl if args.ssl != SSL_AUTO else
                    ("none" if args.pretrained else "iss")}
    return TrainingSettings(iterations=args.iterations, batch_size=args.batch_size,
                            learning_rate=args.learning_rate, window=WINDOW, seed=args.seed,
                            precision=args.precision, ema_decay=args.ema_decay,
                            **switches)  # type: ignore[arg-type]


def batch_norm_choice(args: argparse.Namespace) -> bool | None:
    """``False`` with ``--no-batch-norm``, else ``None`` (the default, or the
    pre-trained model's)."""
    return False if args.no_batch_norm else None


def check_training_args(args: argparse.Namespace, pretrain: bool) -> Path:
    """Every check of a training command that reads no volume: numbers, output paths
    against the inputs, a left-over checkpoint, the tomograms' headers; return ``--out``.

    Raises:
        SasiInputError: naming the fix.
    """
    out = _check_out(args.out)
    problem = training_settings(args, pretrain).problem() or voxel_size_problem(args.voxel_size)
    if problem:
        raise SasiInputError(problem)
    check_network(args.arch, batch_norm_choice(args))
    tomograms = [(input_name("tomograms", i), p) for i, p in enumerate(args.tomogram)]
    unlabelled = [] if pretrain else [(input_name("unlabelled", i), p)
                                      for i, p in enumerate(args.unlabelled)]
    inputs = tomograms if pretrain else [
        *tomograms, *((input_name("labels"), p) for p in args.coords), *unlabelled,
        *([(input_name("pretrained"), args.pretrained)] if args.pretrained else [])]
    check_outputs(training_outputs(out), inputs)
    checkpoint = checkpoint_path(out)
    if checkpoint.exists() and not args.resume:
        raise SasiInputError(
            f"{checkpoint}: an interrupted run left this checkpoint; add --resume to continue "
            "it, or delete the file to start again"
        )
    check_tomograms([*tomograms, *unlabelled], WINDOW)
    return out


@contextlib.contextmanager
def _placement(args: argparse.Namespace) -> Iterator[tuple[torch.device, Replica]]:
    """The device and replica of this process: alone, or one of ``--processes``
    processes that ``torchrun`` started (then on GPU ``LOCAL_RANK`` with cuda)."""
    device = resolve_device(args.device)
    if not in_worker():
        yield device, ALONE
        return
    replica, local_rank = join_process_group(device.type)
    try:
        if replica.world_size != args.processes:
            raise SasiInputError(f"torchrun started {replica.world_size} processes but "
                                 f"--processes is {args.processes}: give the same number")
        yield (torch.device(f"cuda:{local_rank}") if device.type == "cuda" else device), replica
    finally:
        leave_process_group()


def _train_and_save(args: argparse.Namespace, run: TrainingRun, out: Path) -> None:
    """Train (from the checkpoint with ``--resume``, writing checkpoints on the way)
    with progress on stderr and in the log side-car, then save the model and remove
    the checkpoint; only the main process logs, warns and writes."""
    trainer, label = run.trainer, run.label
    settings, replica = trainer.settings, trainer.replica
    checkpoint = checkpoint_path(out)
    resumable = ResumableRun(run, checkpoint, args.checkpoint_every, resume=args.resume)
    history, log = resumable.history, resumable.log
    if not replica.is_main:
        with open(os.devnull, "w") as quiet, warnings.catch_warnings():
            warnings.simplefilter("ignore", SasiWarning)
            resumable.train(ProgressLog(settings.iterations, label, stream=quiet, previous=log))
        return
    if args.resume:
        for _, path in training_outputs(out):
            remove_partials(path)
        print(f"{label}: " + (f"resuming from {checkpoint} after iteration {len(history)}"
                              if history else f"no checkpoint {checkpoint}; starting afresh"),
              file=sys.stderr)
    log_path = sidecar_paths(out)[1]
    processes = replica.world_size
    every = (f"every {args.checkpoint_every} iterations" if args.checkpoint_every
             else f"every {CHECKPOINT_INTERVAL_S / 60:g} minutes")
    print(f"{label}: {settings.iterations} iterations on {trainer.device}"
          f"{f' and {processes - 1} more processes' if processes > 1 else ''} "
          f"({sum(p.numel() for p in trainer.model.parameters()):,} parameters); "
          f"log: {log_path}; checkpoint {every}: {checkpoint}", file=sys.stderr)
    with atomic_output(log_path) as tmp_log, \
            ProgressLog(settings.iterations, label, tmp_log, previous=log) as progress:
        history = resumable.train(progress, progress)
        use_all_cpus(trainer.device)  # the score cut-offs segment the labelled tomograms
        run.model(history).save(out)
    resumable.finish()


def run_train(args: argparse.Namespace) -> None:
    """``sasi train``: few-shot training from labelled tomograms, optionally from a
    pre-trained model."""
    out = check_training_args(args, pretrain=False)
    with _placement(args) as (device, replica):
        run = prepare_train(args.tomogram, args.coords, parse_radii(args.radius),
                            training_settings(args, pretrain=False), device,
                            unlabelled=args.unlabelled, pretrained=args.pretrained,
                            arch=args.arch, batch_norm=batch_norm_choice(args),
                            voxel_size=args.voxel_size, replica=replica)
        _train_and_save(args, run, out)
        if replica.is_main:
            print(f"trained {', '.join(run.trainer.data.class_names)} -> {out}")


def run_pretrain(args: argparse.Namespace) -> None:
    """``sasi pretrain``: SimCLR self-supervised pre-training on unlabelled tomograms."""
    out = check_training_args(args, pretrain=True)
    with _placement(args) as (device, replica):
        run = prepare_pretrain(args.tomogram, training_settings(args, pretrain=True), device,
                               arch=args.arch, batch_norm=batch_norm_choice(args),
                               voxel_size=args.voxel_size, replica=replica)
        _train_and_save(args, run, out)
        if replica.is_main:
            print(f"pre-trained {args.arch} -> {out}")
