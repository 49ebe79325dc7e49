"""Training that survives an interruption: checkpoints during a run, and the run
continued from the last one.

One place for both layers: the library's ``train(checkpoint=...)`` and
``pretrain(checkpoint=...)`` (``api``) and the ``sasi train --resume`` and ``sasi
pretrain --resume`` commands (``train_command``, which adds its progress log and
data-parallel processes). The checkpoint file itself is ``checkpoint``'s.
"""

from __future__ import annotations

import time
from pathlib import Path

from .checkpoint import read_checkpoint, write_checkpoint
from .progress import ProgressLog, StepReport
from .training import SaSiTrainer
from .training_run import TrainingRun

CHECKPOINT_INTERVAL_S = 180.0
"""Without an interval in iterations, a checkpoint after each 3 minutes of training,
on whatever device: a killed run loses at most that much work."""


class Checkpointer:
    """Writes the checkpoint of a run (main process only) every ``every`` iterations,
    or every :data:`CHECKPOINT_INTERVAL_S` seconds when ``every`` is ``None``; with a
    ``progress`` log, its records go into the checkpoint too."""

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


class ResumableRun:
    """A :class:`~.training_run.TrainingRun` that keeps a checkpoint at ``path``: with
    ``resume`` and the checkpoint of an interrupted run of the same inputs, settings
    and initial weights there, it goes on after that run's last checkpointed iteration.

    Raises:
        SasiInputError: a damaged checkpoint, or one of another run.
    """

    def __init__(self, run: TrainingRun, path: Path, every: int | None = None,
                 resume: bool = True) -> None:
        self.run = run
        self.path = path
        fingerprint = run.fingerprint()
        self.history: list[dict] = []
        """Loss records of the iterations already done (empty: a fresh start)."""
        self.log: list[dict] = []
        """Progress-log records saved with the checkpoint."""
        if resume and path.exists():
            saved = read_checkpoint(path, fingerprint)
            run.trainer.load_state_dict(saved["trainer"])
            self.history, self.log = saved["history"], saved["log"]
        self.checkpointer = Checkpointer(run.trainer, path, fingerprint, every)

    def train(self, progress: StepReport, log: ProgressLog | None = None) -> list[dict]:
        """Run the iterations left, reporting each to ``progress`` and writing
        checkpoints (with ``log``'s records); the whole loss history."""
        self.checkpointer.progress = log
        return self.run.trainer.run(progress, self.history, self.checkpointer.after_step)

    def finish(self) -> None:
        """Remove the checkpoint: call once the trained model is saved."""
        self.path.unlink(missing_ok=True)
