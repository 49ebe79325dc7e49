"""``sasi train`` and ``sasi pretrain``: set up, run and save a training run."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from .device import resolve_device
from .distributed import ALONE, Replica, in_worker, join_process_group, leave_process_group
from .errors import SasiInputError
from .model_file import ModelMetadata, read_model_file, save_model, sidecar_paths
from .models import build_backbone
from .normalize import NORMALISATION
from .progress import ProgressLog
from .training import SaSiTrainer, TrainingSettings
from .training_data import common_voxel_size, load_training_data, load_unlabelled

WINDOW = 24
DEFAULT_ITERATIONS = {"cpu": 600, "cuda": 10000}
"""Default budget per device type: 7 to 10 minutes on a 2-core CPU (0.7 s per
float32 step on average on an AMD Zen 5, 1.0 to 1.3 s on an Intel Sapphire
Rapids; ``benchmarks/RESULTS.md``), the paper's scale (about 10k iterations)
on a GPU."""


def _check_out(path: str) -> Path:
    out = Path(path)
    if out.suffix != ".pt":
        raise SasiInputError(f"--out {path}: a model file must end in .pt")
    return out


def _load_matching(model: nn.Module, state: dict[str, torch.Tensor]) -> int:
    """Copy the tensors of ``state`` whose name and shape match; return how many."""
    own = model.state_dict()
    matching = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    own.update(matching)
    model.load_state_dict(own)
    return len(matching)


def _settings(
    args: argparse.Namespace, device: torch.device, **switches: object
) -> TrainingSettings:
    iterations = args.iterations or DEFAULT_ITERATIONS[device.type]
    return TrainingSettings(iterations=iterations, batch_size=args.batch_size,
                            learning_rate=args.learning_rate, window=WINDOW, seed=args.seed,
                            precision=args.precision, **switches)


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


def _run(model: nn.Module, trainer: SaSiTrainer, out: Path, label: str) -> list[dict]:
    """Train with progress on stderr and in the log side-car (rank 0 only)."""
    if not trainer.replica.is_main:
        with open(os.devnull, "w") as quiet:
            return trainer.run(ProgressLog(trainer.settings.iterations, label, stream=quiet))
    log_path = sidecar_paths(out)[1]
    processes = trainer.replica.world_size
    print(f"{label}: {trainer.settings.iterations} iterations on {trainer.device}"
          f"{f' and {processes - 1} more processes' if processes > 1 else ''} "
          f"({sum(p.numel() for p in model.parameters()):,} parameters); log: {log_path}",
          file=sys.stderr)
    with ProgressLog(trainer.settings.iterations, label, log_path) as progress:
        return trainer.run(progress)


def run_train(args: argparse.Namespace) -> None:
    """Few-shot training from labelled tomograms, optionally from a pre-trained model."""
    out = _check_out(args.out)
    with _placement(args) as (device, replica):
        _train(args, out, device, replica)


def _train(args: argparse.Namespace, out: Path, device: torch.device, replica: Replica) -> None:
    data = load_training_data(args.tomogram, args.coords, args.radius, WINDOW)
    extra, extra_size = load_unlabelled(args.unlabelled) if args.unlabelled else ([], None)
    voxel_size = common_voxel_size([data.voxel_size, extra_size],
                                   ["the labelled tomograms", "the --unlabelled tomograms"])
    arch, state = args.arch, None
    if args.pretrained:
        pre_meta, state = read_model_file(args.pretrained)
        common_voxel_size([voxel_size, pre_meta.voxel_size],
                          ["the tomograms", f"pre-trained model {args.pretrained}"])
        if pre_meta.window != WINDOW:
            raise SasiInputError(f"{args.pretrained}: window {pre_meta.window}, expected {WINDOW}")
        arch = pre_meta.arch
    ssl = args.ssl if args.ssl != "auto" else ("none" if args.pretrained else "iss")
    settings = _settings(args, device, infill=not args.no_infill,
                         consistency=not args.no_consistency, ssl=ssl)
    torch.manual_seed(args.seed)  # the initial weights too depend on --seed only
    model = build_backbone(arch, len(data.class_names) + 1)
    if state is not None:
        copied = _load_matching(model, state)
        print(f"train: started from {args.pretrained} ({copied} tensors)", file=sys.stderr)
    trainer = SaSiTrainer(model, data, data.volumes + extra, settings, device, replica)
    history = _run(model, trainer, out, "train")
    if not replica.is_main:
        return
    meta = ModelMetadata(arch=arch, arch_params={}, classes=data.class_names, radii=data.radii,
                         window=WINDOW, voxel_size=voxel_size, normalisation=NORMALISATION,
                         pretrained_only=False, iterations=settings.iterations,
                         settings={**vars(settings), "pretrained": args.pretrained,
                                   "labels": sum(len(t) for t in data.particles),
                                   "processes": replica.world_size},
                         loss_history=history)
    save_model(out, model, meta)
    print(f"trained {', '.join(data.class_names)} -> {out}")


def run_pretrain(args: argparse.Namespace) -> None:
    """SimCLR self-supervised pre-training on unlabelled tomograms."""
    out = _check_out(args.out)
    with _placement(args) as (device, replica):
        _pretrain(args, out, device, replica)


def _pretrain(args: argparse.Namespace, out: Path, device: torch.device,
              replica: Replica) -> None:
    volumes, voxel_size = load_unlabelled(args.tomogram)
    settings = _settings(args, device, infill=False, consistency=False, ssl="iss",
                         ssl_fraction=1.0)
    torch.manual_seed(args.seed)
    model = build_backbone(args.arch, 2)
    trainer = SaSiTrainer(model, None, volumes, settings, device, replica)
    history = _run(model, trainer, out, "pretrain")
    if not replica.is_main:
        return
    meta = ModelMetadata(arch=args.arch, arch_params={}, classes=[], radii=[], window=WINDOW,
                         voxel_size=voxel_size, normalisation=NORMALISATION, pretrained_only=True,
                         iterations=settings.iterations,
                         settings={**vars(settings), "processes": replica.world_size},
                         loss_history=history)
    save_model(out, model, meta)
    print(f"pre-trained {args.arch} -> {out}")
