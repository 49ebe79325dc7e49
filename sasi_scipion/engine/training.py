"""The SaSi training loop: supervised Dice + Focal on few labels, Self-augmented
Volume Infill, Self-interpreted Consistency Guidance and SimCLR self-supervision
on an ISS or PSS schedule (method card items 2 to 7).

Choices where the paper is silent (all exposed in ``TrainingSettings``):
- Budget in iterations, not epochs: with 3 to 10 labels per class one epoch
  of labelled windows is about one batch, so the paper's 8000 epochs are
  about 8000 iterations.
- ISS: the first ``ssl_fraction`` of the iterations are SimCLR (+ consistency)
  iterations, the rest supervised. PSS: the same number of SSL iterations,
  split into ``pss_blocks`` blocks placed at the start of equal periods of
  the first half of training.
- Infill acts on ``infill_fraction`` of every supervised batch so the net
  also sees clean windows.
- Consistency guidance runs in the first half of training on a batch of
  unlabelled windows (``consistency_batch``) with a random exact transform
  (flips and 90° turns about z), weight ``consistency_weight``.
- Self-training (``self_training``, ``DEFAULT_SELF_TRAINING`` unless told): at
  ``self_training_at`` of the iterations the model's unlabelled finds in the training
  tomograms are left out of the loss or taught as labels.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from .augment import center_crop, random_exact_transform
from .checkpoint import evolving_state, restore_state
from .coordinates import ParticleTable
from .defaults import (
    BATCH_SIZE,
    DEFAULT_ITERATIONS,
    DEFAULT_SELF_TRAINING,
    MAX_RESAMPLING_FACTOR,
    SELF_TRAINING_MODES,
    WINDOW,
    SelfTrainingMode,
    SslSchedule,
    TrainingPrecision,
)
from .device import training_precision
from .distributed import ALONE, Replica
from .errors import SasiWarning, input_name
from .infill import volume_infill
from .limits import finite_problem, iterations_problem, seed_problem
from .losses import consistency_loss, dice_focal_loss, nt_xent_loss
from .models.layers import share_batch_statistics
from .models.projection import ProjectionHead
from .normalize import Voxels
from .progress import StepReport
from .sampling import SupervisedSampler, UnlabelledSampler, simclr_views
from .self_training import from_rows, paint_self_labels, to_rows
from .training_data import TrainingData

SelfLabeller = Callable[[nn.Module], list[ParticleTable]]
"""Finds the unlabelled particles of each training tomogram with the model being
trained (``training_run.self_labeller``), voxels ``(x, y, z)`` with their classes."""

COLLAPSE_STEPS = 20
"""SimCLR steps in a row at the collapse loss that count as a collapse."""
COLLAPSE_TOLERANCE = 0.01
"""How close (relative) to ``ln(2B - 1)`` a SimCLR loss counts as collapsed."""
SIMCLR_COLLAPSE = "simclr-collapse"
"""The ``warning`` value of the history record where a collapse was detected."""


def simclr_collapse_loss(batch_size: int) -> float:
    """NT-Xent of ``batch_size`` pairs whose projections are all the same: ``ln(2B - 1)``."""
    return math.log(2 * batch_size - 1)


def simclr_collapsed(history: Sequence[dict[str, float | str]], batch_size: int) -> bool:
    """Whether the last ``COLLAPSE_STEPS`` SimCLR losses of ``history`` all lie within
    ``COLLAPSE_TOLERANCE`` of :func:`simclr_collapse_loss`: every window is projected
    to the same point and SimCLR teaches nothing."""
    losses = [float(r["loss_ssl"]) for r in history if "loss_ssl" in r][-COLLAPSE_STEPS:]
    collapse = simclr_collapse_loss(batch_size)
    return len(losses) == COLLAPSE_STEPS and all(
        abs(loss - collapse) <= COLLAPSE_TOLERANCE * collapse for loss in losses)


def collapse_iteration(history: Sequence[dict[str, float | str]]) -> int | None:
    """The iteration at which a SimCLR collapse was reported, if any."""
    return next((int(r["iteration"]) for r in history if r.get("warning") == SIMCLR_COLLAPSE),
                None)


def self_labels_found(history: Sequence[dict[str, float | str]]) -> int | None:
    """How many unlabelled particles self-training found (``self_labels`` of its step),
    or ``None`` when it did not run."""
    return next((int(r["self_labels"]) for r in history if "self_labels" in r), None)


@dataclass
class TrainingSettings:
    """Hyper-parameters of one training run (JSON-ready, stored in the model file).

    Attributes:
        iterations: optimisation steps; ``None``: ``defaults.DEFAULT_ITERATIONS`` of
            the device (:meth:`for_device`).
        batch_size: windows per supervised or SimCLR batch (paper: 16).
        learning_rate: Adam step size of supervised steps (paper: 1e-4 for
            everything; 1e-3 learns the few labels in a CPU-sized budget).
        ssl_learning_rate: Adam step size of SimCLR steps (paper: 1e-4; at
            1e-3 the NT-Xent loss collapses to log(2B - 1) and stays there).
        window: window edge W in voxels (paper: 24).
        infill: use Self-augmented Volume Infill.
        infill_fraction: fraction of each supervised batch that is infilled.
        consistency: use Self-interpreted Consistency Guidance.
        consistency_weight: weight of the consistency loss.
        consistency_batch: unlabelled windows per consistency step.
        ssl: SimCLR schedule, ``iss``, ``pss`` or ``none``.
        ssl_fraction: share of the iterations spent on SimCLR.
        pss_blocks: SSL blocks in the PSS schedule (paper: one SSL epoch every
            400 of 8000 epochs until half of training, i.e. 10).
        temperature: NT-Xent temperature (paper: 0.1).
        seed: seed of every random choice.
        precision: ``auto`` (default: ``bf16`` on a CPU with AMX or AVX512-BF16, else
            ``fp32``; :meth:`for_device` resolves it, ``device.training_precision``),
            ``fp32``, or ``bf16`` autocast (weights and optimiser stay float32).
        ema_decay: weights saved are an exponential moving average of the training
            weights with this decay (0: the last weights); the decay ramps up
            as ``min(decay, (1 + n) / (10 + n))`` after ``n`` averaged steps, so
            the initial weights fade quickly.
        band_limit: half the supervised windows are band-limited to a voxel size up
            to this many times the training one's (``sampling.SupervisedSampler``), so
            that the model also picks coarser tomograms resampled to its voxel size;
            1 (default): none.
        self_training: what to do with the unlabelled particles the model finds in its
            training tomograms at :attr:`self_training_at` (``self_training``):
            ``off`` (default), ``ignore`` or ``labels``.
        self_training_at: the share of the iterations after which they are found.
    """

    iterations: int | None = None
    batch_size: int = BATCH_SIZE
    learning_rate: float = 1e-3
    ssl_learning_rate: float = 1e-4
    window: int = WINDOW
    infill: bool = True
    infill_fraction: float = 0.5
    consistency: bool = True
    consistency_weight: float = 1.0
    consistency_batch: int = 8
    ssl: SslSchedule = "iss"
    ssl_fraction: float = 0.1
    pss_blocks: int = 10
    temperature: float = 0.1
    seed: int = 0
    precision: TrainingPrecision = "auto"
    ema_decay: float = 0.0
    band_limit: float = 1.0
    self_training: SelfTrainingMode = DEFAULT_SELF_TRAINING
    self_training_at: float = 0.5

    def for_device(self, device: torch.device) -> TrainingSettings:
        """These settings as they run on ``device``: the default budget of its type
        when :attr:`iterations` is ``None``, and the precision ``auto`` resolved."""
        return dataclasses.replace(
            self, iterations=(self.iterations if self.iterations is not None
                              else DEFAULT_ITERATIONS[device.type]),
            precision=training_precision(self.precision, device))

    def problem(self) -> str | None:
        """Why these settings cannot train, naming the setting and the fix (iterations,
        seed, learning rate, EMA decay, batch size, self-training); ``None`` when they
        can."""
        def name(field: str) -> str:
            return input_name(f"settings.{field}")
        return (
            (iterations_problem(self.iterations) if self.iterations is not None else None)
            or seed_problem(self.seed)
            or finite_problem(name("learning_rate"), self.learning_rate, 0.0, low_open=True)
            or finite_problem(name("ema_decay"), self.ema_decay, 0.0, 0.9999)
            or finite_problem(name("band_limit"), self.band_limit, 1.0, MAX_RESAMPLING_FACTOR)
            or (None if self.self_training in SELF_TRAINING_MODES else
                f"{name('self_training')} {self.self_training!r}: choose one of "
                f"{', '.join(SELF_TRAINING_MODES)}")
            or finite_problem(name("self_training_at"), self.self_training_at, 0.0, 1.0,
                              low_open=True, high_open=True)
            or (None if self.batch_size >= 1 else
                f"{name('batch_size')} {self.batch_size}: give a positive whole number")
        )


def ssl_iterations(settings: TrainingSettings) -> np.ndarray:
    """Boolean mask over iterations: True where the step is a SimCLR step."""
    mask = np.zeros(settings.iterations, dtype=bool)
    total = int(round(settings.ssl_fraction * settings.iterations))
    if settings.ssl == "none" or total == 0:
        return mask
    if settings.ssl == "iss":
        mask[:total] = True
        return mask
    half = settings.iterations // 2
    blocks = max(1, min(settings.pss_blocks, total))
    period = max(1, half // blocks)
    block_length = max(1, total // blocks)
    for start in range(0, blocks * period, period):
        mask[start : start + block_length] = True
    return mask


def _ema(decay: float) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    """``AveragedModel``'s update for an exponential moving average whose decay ramps
    up to ``decay`` (see ``TrainingSettings.ema_decay``)."""
    def update(average: torch.Tensor, current: torch.Tensor,
               averaged: torch.Tensor) -> torch.Tensor:
        rate = min(decay, (1.0 + float(averaged)) / (10.0 + float(averaged)))
        return average + (current - average) * (1.0 - rate)
    return update


class SaSiTrainer:
    """Runs the optimisation of one backbone on few labels and unlabelled windows.

    Args:
        model: a backbone from ``models.build_backbone`` (logits and ``encode``).
        data: labelled tomograms, or ``None`` for self-supervised pre-training
            (then every step is a SimCLR step).
        unlabelled: normalised ``(z, y, x)`` volumes for SimCLR and consistency
            (``normalize.Voxels``).
        settings: the run's hyper-parameters.
        device: where to compute.
        replica: this process's place in a data-parallel run (see ``distributed``);
            every process draws the global batches and works on its share.
        self_labeller: finds the unlabelled particles for ``settings.self_training``
            (unless it is ``off``; ``training_run.self_labeller`` of ``data`` when not
            given); the main process's finds are used by all.
    """

    def __init__(
        self,
        model: nn.Module,
        data: TrainingData | None,
        unlabelled: list[Voxels],
        settings: TrainingSettings,
        device: torch.device,
        replica: Replica = ALONE,
        self_labeller: SelfLabeller | None = None,
    ) -> None:
        if settings.iterations is None:
            raise ValueError("settings.iterations is None: give settings.for_device(...)")
        replica.check_divides(settings.batch_size, input_name("settings.batch_size"))
        replica.check_divides(settings.consistency_batch, "the consistency batch")
        self.settings = settings.for_device(device)  # the precision auto resolved
        self.device = device
        self.replica = replica
        self.rng = np.random.default_rng(settings.seed)
        torch.manual_seed(settings.seed)
        self.model = model.to(device).to(memory_format=torch.channels_last_3d)
        replica.broadcast_parameters(self.model)
        if replica.world_size > 1:  # batch normalisation over the whole global batch
            share_batch_statistics(self.model, replica.sum_across)
        self.data = data
        window = settings.window
        self.supervised = (
            SupervisedSampler(data.volumes, data.label_maps, data.particles, data.class_names,
                              window=window, negatives=data.negatives,
                              band_limit=settings.band_limit)
            if data is not None else None
        )
        self.unlabelled = UnlabelledSampler(unlabelled, window=window, stride=window // 2)
        embedding = model.embedding_channels * (window // model.embedding_stride) ** 3
        self.head = ProjectionHead(embedding).to(device)
        replica.broadcast_parameters(self.head)
        self.average = (AveragedModel(self.model, device, avg_fn=_ema(settings.ema_decay),
                                      use_buffers=True)
                        if settings.ema_decay > 0 else None)
        self.optimizer = torch.optim.Adam(self._parameters(), lr=settings.learning_rate)
        self.schedule = (
            np.ones(settings.iterations, dtype=bool) if data is None else ssl_iterations(settings)
        )
        self.self_training_iteration = (
            int(round(settings.self_training_at * settings.iterations))
            if data is not None and settings.self_training != "off" else None)
        if self.self_training_iteration is not None and self_labeller is None:
            from .training_run import self_labeller as labeller_of  # it imports this module
            self_labeller = labeller_of(data, self.settings, device)
        self.self_labeller = self_labeller
        self._self_labels: np.ndarray | None = None  # self_training.to_rows of the finds

    def _to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        tensor = tensor.to(self.device, non_blocking=True)
        return tensor.to(memory_format=torch.channels_last_3d) if tensor.dim() == 5 else tensor

    def _autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=torch.bfloat16,
                              enabled=self.settings.precision == "bf16")

    def _ssl_loss(self) -> torch.Tensor:
        crops = self.unlabelled.sample(self.settings.batch_size, self.rng)
        view1, view2 = (self._to_device(self.replica.shard(view))
                        for view in simclr_views(crops, self.settings.window, self.rng))
        # the head sees the whole global batch in every process: its batch
        # normalisation then uses the same statistics however the batch is sharded
        z1 = self.head(self.replica.gather(self.model.encode(view1))).float()
        z2 = self.head(self.replica.gather(self.model.encode(view2))).float()
        return nt_xent_loss(z1, z2, self.settings.temperature)

    def _supervised_loss(self) -> torch.Tensor:
        x, y = self.supervised.sample(self.settings.batch_size, self.rng)
        if self.settings.infill:
            count = int(round(self.settings.infill_fraction * len(x)))
            if count:
                x_mix, y_mix = volume_infill(x[:count], y[:count], len(self.data.class_names) + 1,
                                             self.rng)
                x = torch.cat([x_mix, x[count:]])
                y = torch.cat([y_mix, y[count:]])
        x, y = self.replica.shard(x), self.replica.shard(y)
        return dice_focal_loss(self.model(self._to_device(x)), self._to_device(y),
                               sum_across=self.replica.sum_across)

    def _consistency_loss(self) -> torch.Tensor:
        crops = self.unlabelled.sample(self.settings.consistency_batch, self.rng)
        x = self._to_device(self.replica.shard(center_crop(crops, self.settings.window)))
        transform = random_exact_transform(self.rng)
        return consistency_loss(self.model, x, transform.apply, self.replica.sum_across)

    def _find_self_labels(self) -> int:
        """Find the unlabelled particles with the current weights (only the main process
        searches, on a copy that shares no statistics; every process gets its finds),
        paint them into the sampler's label maps; return how many."""
        tables = self.self_labeller(self.model) if self.replica.is_main else []
        rows = to_rows(tables, self.data.class_names)
        self._self_labels = self.replica.broadcast_rows(rows, self.device)
        self._apply_self_labels()
        return len(self._self_labels)

    def _apply_self_labels(self) -> None:
        """The sampler's label maps (and, for ``labels``, its window centres) with the
        particles of ``_self_labels`` added to the user's labels."""
        data, mode = self.data, self.settings.self_training
        found = from_rows(self._self_labels, len(data.volumes), data.class_names)
        for tomogram, table in enumerate(found):
            self.supervised.label_maps[tomogram] = paint_self_labels(
                data.label_maps[tomogram], table, data.class_names, data.radii, mode)
            if mode == "labels":
                for index, name in enumerate(data.class_names):
                    self.supervised.add_particles(tomogram, table.xyz[table.classes == name],
                                                  index)

    def step(self, iteration: int) -> dict[str, float | str]:
        """Run optimisation step ``iteration`` (0-based); return its logged values (with
        ``self_labels``, the number of particles found, at the self-training step)."""
        found = (self._find_self_labels()
                 if iteration == self.self_training_iteration and self._self_labels is None
                 else None)
        self.model.train()
        is_ssl = bool(self.schedule[iteration])
        terms: dict[str, torch.Tensor] = {}
        guided = (
            self.settings.consistency and self.data is not None and not is_ssl
            and iteration < self.settings.iterations // 2
        )
        with self._autocast():
            if is_ssl:
                terms["loss_ssl"] = self._ssl_loss()
            else:
                terms["loss_sup"] = self._supervised_loss()
            if guided:
                terms["loss_cons"] = self.settings.consistency_weight * self._consistency_loss()
        loss = sum(terms.values())
        logged = {name: self.replica.mean_of(value) for name, value in terms.items()}
        total = sum(logged.values())
        if not torch.isfinite(total):  # the same verdict in every process
            raise FloatingPointError(
                f"training diverged at iteration {iteration + 1} (loss {total.item()}); "
                f"lower {input_name('settings.learning_rate')}"
            )
        for group in self.optimizer.param_groups:
            group["lr"] = (self.settings.ssl_learning_rate if is_ssl
                           else self.settings.learning_rate)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.replica.average_gradients(self._parameters())
        self.optimizer.step()
        if self.average is not None:
            self.average.update_parameters(self.model)
        record: dict[str, float | str] = {"phase": "ssl" if is_ssl else "supervised",
                                          "loss": float(total.item())}
        record.update({name: float(value.item()) for name, value in logged.items()})
        if found is not None:
            record["self_labels"] = float(found)
        return record

    def _parameters(self) -> list[nn.Parameter]:
        return [*self.model.parameters(), *self.head.parameters()]

    def trained_model(self) -> nn.Module:
        """The weights to save: the moving average when ``ema_decay`` is set, else the
        last weights."""
        return self.model if self.average is None else self.average.module

    def state_dict(self) -> dict[str, Any]:
        """Everything training changes (weights, optimiser, random generators, sampler
        orders, found generically: ``checkpoint.evolving_state``), for a checkpoint."""
        return evolving_state(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict` of a trainer built with the same arguments."""
        restore_state(self, state)
        if self._self_labels is not None:
            self._apply_self_labels()

    def run(
        self,
        progress: StepReport,
        history: Sequence[dict[str, float | str]] = (),
        after_step: Callable[[int, list[dict[str, float | str]]], None] | None = None,
    ) -> list[dict[str, float | str]]:
        """Run the iterations after those of ``history`` (the records of a resumed run;
        empty: all of them), reporting each to ``progress`` and calling
        ``after_step(iterations done, history)`` after it; return the loss history (one
        record per iteration). A SimCLR collapse is a :class:`SasiWarning`."""
        history = list(history)
        warned = collapse_iteration(history) is not None
        for iteration in range(len(history), self.settings.iterations):
            record: dict[str, float | str] = {"iteration": iteration + 1, **self.step(iteration)}
            history.append(record)
            if not warned and "loss_ssl" in record and simclr_collapsed(
                    history, self.settings.batch_size):
                warned = True
                record["warning"] = SIMCLR_COLLAPSE
                warnings.warn(
                    f"SimCLR collapsed at iteration {iteration + 1}: its loss has stayed at "
                    f"ln(2B - 1) = {simclr_collapse_loss(self.settings.batch_size):.3f} for "
                    f"{COLLAPSE_STEPS} steps, so every window gets the same embedding and "
                    f"self-supervision teaches nothing; train with {input_name('settings.ssl')}"
                    " none, or pre-train on more tomograms", SasiWarning, stacklevel=2)
            progress.update(iteration + 1, **{k: v for k, v in record.items() if k != "iteration"})
            if after_step is not None:
                after_step(iteration + 1, history)
        return history


