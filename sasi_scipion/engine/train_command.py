"""``sasi train`` and ``sasi pretrain``: set up, run and save a training run."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .atomic import atomic_output, check_outputs, remove_partials
from .checkpoint import checkpoint_path, read_checkpoint, run_fingerprint, write_checkpoint
from .contrast import contrast_skew, label_contrast
from .defaults import BATCH_NORM, DEFAULT_BACKBONE, DEFAULT_ITERATIONS, SSL_AUTO, WINDOW
from .device import resolve_device
from .distributed import ALONE, Replica, in_worker, join_process_group, leave_process_group
from .errors import SasiInputError
from .limits import finite_problem, iterations_problem, seed_problem, voxel_size_problem
from .model_file import ModelMetadata, build_network, read_model_file, save_model, sidecar_paths
from .models import BACKBONES, build_backbone
from .normalize import NORMALISATION
from .picking import label_cutoffs
from .progress import ProgressLog
from .training import SaSiTrainer, TrainingSettings, collapse_iteration
from .training_data import check_tomograms, load_training_data, load_unlabelled

CHECKPOINT_INTERVAL_S = 180.0
"""Without ``--checkpoint-every``, a checkpoint after each 3 minutes of training, on
whatever device: a killed run loses at most that much work."""


def _check_out(path: str) -> Path:
    out = Path(path)
    if out.suffix != ".pt":
        raise SasiInputError(f"--out {path}: a model file must end in .pt")
    return out


def training_outputs(out: Path) -> list[tuple[str, Path]]:
    """``(option, path)`` of every file a run writing model ``out`` may write."""
    card, log = sidecar_paths(out)
    return [("--out", out), ("--out", card), ("--out", log), ("--out", checkpoint_path(out))]


def check_training_args(args: argparse.Namespace, pretrain: bool) -> Path:
    """Every check of a training command that reads no volume: numbers, output paths
    against the inputs, a left-over checkpoint, the tomograms' headers; return ``--out``.

    Raises:
        SasiInputError: naming the fix.
    """
    out = _check_out(args.out)
    problem = (
        (iterations_problem(args.iterations) if args.iterations is not None else None)
        or seed_problem(args.seed)
        or finite_problem("--learning-rate", args.learning_rate, 0.0, low_open=True)
        or finite_problem("--ema-decay", args.ema_decay, 0.0, 0.9999)
        or voxel_size_problem(args.voxel_size)
    )
    if problem:
        raise SasiInputError(problem)
    if args.arch not in BACKBONES:
        raise SasiInputError(
            f"--arch {args.arch}: unknown network; choose one of {', '.join(sorted(BACKBONES))}"
        )
    if args.no_batch_norm and args.arch != DEFAULT_BACKBONE:
        raise SasiInputError(f"--no-batch-norm: only the {DEFAULT_BACKBONE} network has a "
                             f"batch normalisation to leave out, not --arch {args.arch}")
    tomograms = [("--tomogram", p) for p in args.tomogram]
    inputs = tomograms if pretrain else [
        *tomograms, *(("--coords", p) for p in args.coords),
        *(("--unlabelled", p) for p in args.unlabelled),
        *([("--pretrained", args.pretrained)] if args.pretrained else [])]
    check_outputs(training_outputs(out), inputs)
    checkpoint = checkpoint_path(out)
    if checkpoint.exists() and not args.resume:
        raise SasiInputError(
            f"{checkpoint}: an interrupted run left this checkpoint; add --resume to continue "
            "it, or delete the file to start again"
        )
    check_tomograms(tomograms if pretrain else
                    [*tomograms, *(("--unlabelled", p) for p in args.unlabelled)], WINDOW)
    return out


def _load_matching(model: nn.Module, state: dict[str, torch.Tensor]) -> int:
    """Copy the tensors of ``state`` whose name and shape match; return how many."""
    own = model.state_dict()
    matching = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    own.update(matching)
    model.load_state_dict(own)
    return len(matching)


def network_params(arch: str, no_batch_norm: bool,
                   pretrained: ModelMetadata | None = None) -> dict[str, bool]:
    """Constructor arguments of a new network ``arch`` (``ModelMetadata.arch_params``):
    a pre-trained model's own, so that its weights fit, else batch normalisation in a
    DeepFinder U-Net unless ``no_batch_norm``.

    Raises:
        SasiInputError: ``no_batch_norm`` with a pre-trained model that has it.
    """
    if pretrained is not None:
        if no_batch_norm and pretrained.arch_params.get("batch_norm"):
            raise SasiInputError("--no-batch-norm: the --pretrained model has batch "
                                 "normalisation and its weights need it; leave the option "
                                 "out or pre-train with --no-batch-norm")
        return dict(pretrained.arch_params)
    if arch != DEFAULT_BACKBONE:
        return {}
    return {"batch_norm": BATCH_NORM and not no_batch_norm}


def _settings(
    args: argparse.Namespace, device: torch.device, **switches: object
) -> TrainingSettings:
    iterations = args.iterations or DEFAULT_ITERATIONS[device.type]
    return TrainingSettings(iterations=iterations, batch_size=args.batch_size,
                            learning_rate=args.learning_rate, window=WINDOW, seed=args.seed,
                            precision=args.precision, ema_decay=args.ema_decay, **switches)


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


class _Checkpointer:
    """Writes the checkpoint of a run (main process only) every ``every`` iterations,
    or every :data:`CHECKPOINT_INTERVAL_S` seconds when ``every`` is ``None``."""

    def __init__(self, trainer: SaSiTrainer, path: Path, fingerprint: str,
                 every: int | None) -> None:
        self.trainer = trainer
        self.path = path
        self.fingerprint = fingerprint
        self.every = every
        self.progress: ProgressLog | None = None
        self._last = time.monotonic()

    def after_step(self, done: int, history: list[dict]) -> None:
        """Write a checkpoint after ``done`` iterations when one is due."""
        if not self.trainer.replica.is_main or done >= self.trainer.settings.iterations:
            return
        due = (done % self.every == 0 if self.every
               else time.monotonic() - self._last >= CHECKPOINT_INTERVAL_S)
        if due:
            write_checkpoint(self.path, self.fingerprint, done, self.trainer.state_dict(),
                             history, self.progress.records if self.progress else [])
            self._last = time.monotonic()


def _train_and_save(args: argparse.Namespace, trainer: SaSiTrainer, out: Path, label: str,
                    description: dict, arrays: Sequence[np.ndarray],
                    make_meta: Callable[[list[dict]], ModelMetadata]) -> None:
    """Train (from the checkpoint with ``--resume``, writing checkpoints on the way)
    with progress on stderr and in the log side-car, then save the model and remove
    the checkpoint; only the main process logs and writes."""
    settings, replica = trainer.settings, trainer.replica
    fingerprint = run_fingerprint({**description, "settings": vars(settings)}, arrays,
                                  trainer.model.state_dict())
    checkpoint = checkpoint_path(out)
    history: list[dict] = []
    log: list[dict] = []
    if args.resume and checkpoint.exists():
        saved = read_checkpoint(checkpoint, fingerprint)
        trainer.load_state_dict(saved["trainer"])
        history, log = saved["history"], saved["log"]
    checkpointer = _Checkpointer(trainer, checkpoint, fingerprint, args.checkpoint_every)
    if not replica.is_main:
        with open(os.devnull, "w") as quiet:
            trainer.run(ProgressLog(settings.iterations, label, stream=quiet, previous=log),
                        history, checkpointer.after_step)
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
        checkpointer.progress = progress
        history = trainer.run(progress, history, checkpointer.after_step)
        save_model(out, trainer.trained_model(), make_meta(history))
    checkpoint.unlink(missing_ok=True)


def run_train(args: argparse.Namespace) -> None:
    """Few-shot training from labelled tomograms, optionally from a pre-trained model."""
    out = check_training_args(args, pretrain=False)
    with _placement(args) as (device, replica):
        _train(args, out, device, replica)


def _read_pretrained(path: str) -> tuple[ModelMetadata, dict[str, torch.Tensor]]:
    """A pre-trained model file, checked (its weights must fit its own network)."""
    meta, state = read_model_file(path)
    build_network(meta, state, path)
    if meta.window != WINDOW:
        raise SasiInputError(f"{path}: window {meta.window}, expected {WINDOW}; give a model "
                             "trained by this version of sasi")
    return meta, state


def _train(args: argparse.Namespace, out: Path, device: torch.device, replica: Replica) -> None:
    pre_meta, state = _read_pretrained(args.pretrained) if args.pretrained else (None, None)
    # every tomogram is resampled to the pre-trained model's voxel size, else the first's
    data = load_training_data(args.tomogram, args.coords, args.radius, WINDOW, args.voxel_size,
                              pre_meta.voxel_size if pre_meta else None)
    extra, extra_size = (load_unlabelled(args.unlabelled, WINDOW, "--unlabelled",
                                         args.voxel_size, data.voxel_size)
                         if args.unlabelled else ([], None))
    voxel_size = data.voxel_size or extra_size
    arch = args.arch if pre_meta is None else pre_meta.arch
    ssl = args.ssl if args.ssl != SSL_AUTO else ("none" if args.pretrained else "iss")
    settings = _settings(args, device, infill=not args.no_infill,
                         consistency=not args.no_consistency, ssl=ssl)
    torch.manual_seed(args.seed)  # the initial weights too depend on --seed only
    arch_params = network_params(arch, args.no_batch_norm, pre_meta)
    model = build_backbone(arch, len(data.class_names) + 1, **arch_params)
    if state is not None:
        copied = _load_matching(model, state)
        print(f"train: started from {args.pretrained} ({copied} tensors)", file=sys.stderr)
    trainer = SaSiTrainer(model, data, data.volumes + extra, settings, device, replica)
    contrast = label_contrast(data.volumes, data.label_maps)
    skew = float(np.mean([contrast_skew(volume) for volume in data.volumes]))

    def meta(history: list[dict]) -> ModelMetadata:
        print("train: choosing score cut-offs from the labelled particles", file=sys.stderr)
        cutoffs = label_cutoffs(trainer.trained_model(), data.volumes, data.particles,
                                data.class_names, data.radii, device)
        return ModelMetadata(
            arch=arch, arch_params=arch_params, classes=data.class_names, radii=data.radii,
            window=WINDOW, voxel_size=voxel_size, normalisation=NORMALISATION,
            pretrained_only=False, iterations=settings.iterations,
            settings={**vars(settings), "pretrained": args.pretrained,
                      "labels": sum(len(t) for t in data.particles),
                      "background_points": sum(len(t) for t in data.negatives or []),
                      "processes": replica.world_size,
                      "ssl_collapsed_at": collapse_iteration(history)},
            loss_history=history, score_cutoffs=cutoffs, contrast=contrast,
            contrast_skew=skew)

    description = {"command": "train", "arch": arch, "arch_params": arch_params,
                   "classes": data.class_names, "radii": data.radii, "voxel_size": voxel_size}
    arrays = [*data.volumes, *data.label_maps, *(t.xyz for t in data.particles), *extra]
    _train_and_save(args, trainer, out, "train", description, arrays, meta)
    if replica.is_main:
        print(f"trained {', '.join(data.class_names)} -> {out}")


def run_pretrain(args: argparse.Namespace) -> None:
    """SimCLR self-supervised pre-training on unlabelled tomograms."""
    out = check_training_args(args, pretrain=True)
    with _placement(args) as (device, replica):
        _pretrain(args, out, device, replica)


def _pretrain(args: argparse.Namespace, out: Path, device: torch.device,
              replica: Replica) -> None:
    volumes, voxel_size = load_unlabelled(args.tomogram, WINDOW, voxel_size=args.voxel_size)
    settings = _settings(args, device, infill=False, consistency=False, ssl="iss",
                         ssl_fraction=1.0)
    torch.manual_seed(args.seed)
    arch_params = network_params(args.arch, args.no_batch_norm)
    model = build_backbone(args.arch, 2, **arch_params)
    trainer = SaSiTrainer(model, None, volumes, settings, device, replica)

    def meta(history: list[dict]) -> ModelMetadata:
        return ModelMetadata(
            arch=args.arch, arch_params=arch_params, classes=[], radii=[], window=WINDOW,
            voxel_size=voxel_size, normalisation=NORMALISATION, pretrained_only=True,
            iterations=settings.iterations,
            settings={**vars(settings), "processes": replica.world_size,
                      "ssl_collapsed_at": collapse_iteration(history)},
            loss_history=history)

    description = {"command": "pretrain", "arch": args.arch, "arch_params": arch_params,
                   "voxel_size": voxel_size}
    _train_and_save(args, trainer, out, "pretrain", description, volumes, meta)
    if replica.is_main:
        print(f"pre-trained {args.arch} -> {out}")
