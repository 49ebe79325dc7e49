"""What every SaSi protocol shares: running ``sasi`` through ``runJob`` and
turning its failures into readable protocol errors."""

from __future__ import annotations

import glob
import json
import os
import shlex
from collections.abc import Sequence

import pyworkflow.protocol.params as params
from pwem.protocols import EMProtocol
from pyworkflow.object import String
from tomo.protocols import ProtTomoBase

from .. import Plugin
from ..constants import OUTPUT_MODEL
from ..objects import SaSiModel

ERROR_PREFIX = "sasi: error: "


class SaSiError(Exception):
    """A ``sasi`` command failed; the message holds its own one-line explanation."""


def tomogram_path(tomo) -> str:
    """Absolute path of a tomogram's MRC file (without an ``:mrc`` suffix)."""
    return os.path.abspath(tomo.getFileName().split(":")[0])


class ProtSaSiBase(EMProtocol, ProtTomoBase):
    """Base class: GPU form parameters and the ``sasi`` command runner."""

    _label = None

    @staticmethod
    def _addGpuParams(form) -> None:
        form.addHidden(params.USE_GPU, params.BooleanParam, default=True,
                       label="Use GPU for execution",
                       help="Run the network on a GPU (one of GPU IDs). With 'No' it runs on "
                            "the CPU with every available core.")
        form.addHidden(params.GPU_LIST, params.StringParam, default="0",
                       label="Choose GPU IDs",
                       help="GPU to use (for example 0 or 1). Under a queue, the GPUs the "
                            "queue gives the job.")

    def _device(self) -> str:
        return "cuda" if self.useGpu.get() else "cpu"

    def _program(self) -> str:
        program = Plugin.getSasiProgram()
        if not self.useGpu.get() or self.useQueue():
            # Under a queue the scheduler assigns the GPUs and sets CUDA_VISIBLE_DEVICES.
            return program
        # pyworkflow replaces %(GPU)s in the program with the comma-separated GPU ids.
        parts = program.rsplit("&& ", 1)
        gpu = "CUDA_VISIBLE_DEVICES=%(GPU)s "
        return f"{parts[0]}&& {gpu}{parts[1]}" if len(parts) == 2 else gpu + program

    def runSasi(self, arguments: Sequence[str], device: bool = True) -> None:
        """Run ``sasi ARGUMENTS [--device ...]`` through ``runJob`` (queue and GPU aware).

        Raises:
            SaSiError: with the command's own error line when it fails.
        """
        args = list(arguments) + (["--device", self._device()] if device else [])
        try:
            self.runJob(self._program(), " ".join(shlex.quote(a) for a in args),
                        env=Plugin.getEnviron(), numberOfThreads=1, numberOfMpi=1)
        except Exception as error:  # pyworkflow raises a bare Exception with the command
            raise SaSiError(self._failureReason(args[0]) or str(error)) from error

    def _failureReason(self, command: str) -> str | None:
        """The last ``sasi: error:`` line of this run's logs: run.stdout / run.stderr, and
        the ``.out`` / ``.err`` files of queued jobs (where a queue writes their output)."""
        reason = None
        queued = sorted(glob.glob(os.path.join(self._getLogsPath(), "*.out"))
                        + glob.glob(os.path.join(self._getLogsPath(), "*.err")),
                        key=os.path.getmtime)
        for path in [*self.getLogPaths(), *queued]:
            if os.path.exists(path):
                with open(path, errors="replace") as handle:
                    for line in handle:
                        if ERROR_PREFIX in line:
                            reason = line.split(ERROR_PREFIX, 1)[1].strip()
        return f"sasi {command} failed: {reason}" if reason else None

    def _citations(self) -> list[str]:
        return ["Adethya2025"]


class ProtSaSiModelBase(ProtSaSiBase):
    """Base class of the protocols that write a model file (pretrain, train)."""

    _label = None
    _possibleOutputs = {OUTPUT_MODEL: SaSiModel}

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.modelPath = String()

    def runTraining(self, arguments: Sequence[str], out: str) -> None:
        """Run ``sasi ARGUMENTS`` that writes the model file ``out``; remember ``out``."""
        self.runSasi(arguments)
        self.modelPath.set(out)
        self._store(self.modelPath)

    def defineModelOutput(self, sources: Sequence) -> None:
        """``outputModel`` from the model file's JSON side-car, derived from ``sources``."""
        path = self.modelPath.get()
        with open(os.path.splitext(path)[0] + ".json") as handle:
            card = json.load(handle)
        model = SaSiModel(path=path)
        model.setFromMetadata(card)
        self._defineOutputs(**{OUTPUT_MODEL: model})
        for source in sources:
            self._defineSourceRelation(source, model)
