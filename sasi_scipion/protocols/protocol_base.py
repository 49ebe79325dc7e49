"""What every SaSi protocol shares: running ``sasi`` through ``runJob`` and
turning its failures into readable protocol errors."""

from __future__ import annotations

import glob
import importlib.util
import os
import shlex
from collections.abc import Iterable, Sequence

import pyworkflow.protocol.params as params
from pwem.protocols import EMProtocol
from pyworkflow.object import String
from tomo.protocols import ProtTomoBase

from .. import Plugin
from ..constants import OUTPUT_MODEL, SASI_ENV_ACTIVATION
from ..convert import tomograms_by_tsid
from ..engine.defaults import BATCH_NORM, BATCH_SIZE, WINDOW
from ..engine.errors import ERROR_FILE_VARIABLE, SasiInputError
from ..engine.limits import MAX_ITERATIONS, MAX_SEED
from ..engine.model_card import read_model_card
from ..engine.mrc_io import header_disagrees_warning, inspect_mrc, size_problem
from ..gpu_presence import gpu_present
from ..objects import SaSiModel

SAMPLING_RATE_SOURCE = "the sampling rate in Scipion"
"""How warnings name the tomograms' sampling rate, the voxel size the engine is given."""
LOG_TAIL_LINES = 12
"""Lines of a failed command's log quoted in the protocol's error message."""


class SaSiError(Exception):
    """A ``sasi`` command failed; the message holds its own one-line explanation."""


def tomogram_path(tomo) -> str:
    """Absolute path of a tomogram's MRC file (without an ``:mrc`` suffix)."""
    return os.path.abspath(tomo.getFileName().split(":")[0])


def model_file_problem(path: str) -> str | None:
    """The engine's one-line verdict on a model file that ``sasi`` would refuse; ``None``
    when usable. Without torch in this environment (the engine in its own, see
    ``SASI_ENV_ACTIVATION``): the file and its JSON side-car (missing, truncated, not a
    SaSi model, a newer format, an unknown backbone). With torch, also the weights
    (damaged, edited, not fitting the network), loading torch only now."""
    try:
        read_model_card(path)
        if importlib.util.find_spec("torch") is not None:
            from ..engine.model_file import build_network, read_model_file

            meta, state = read_model_file(path)
            build_network(meta, state, path)
    except SasiInputError as error:
        return str(error)
    return None


def voxel_size_arguments(tomograms) -> list[str]:
    """``--voxel-size A``: the set's sampling rate (Å/px), which every ``sasi`` command
    uses instead of the MRC headers' voxel size."""
    return ["--voxel-size", repr(float(tomograms.getSamplingRate()))]


def tomogram_problems(tomograms) -> tuple[list[str], list[str]]:
    """``(errors, warnings)`` about a set of tomograms, from the files' headers: the
    engine's rules (tsIds present and distinct, a real-valued 3D volume at least a
    window wide, a positive cubic voxel size in the header); a header voxel size other
    than the set's sampling rate (which the engine is given) is a warning."""
    try:
        by_tsid = tomograms_by_tsid(tomograms)
    except ValueError as error:
        return [f"{str(error)[0].upper()}{str(error)[1:]}."], []
    errors, warnings = [], []
    for tomo in by_tsid.values():
        path = tomogram_path(tomo)
        try:
            info = inspect_mrc(path)
        except SasiInputError as error:
            errors.append(f"{error}.")
            continue
        problem = size_problem(path, info.shape, WINDOW)
        if problem:
            errors.append(f"{problem}.")
        warning = header_disagrees_warning(path, info.voxel_size, tomograms.getSamplingRate(),
                                           SAMPLING_RATE_SOURCE)
        if warning:
            warnings.append(f"{warning}.")
    return errors, warnings


def engine_problems() -> list[str]:
    """An error when no ``sasi`` can run: no ``SASI_ENV_ACTIVATION`` and no torch in this
    (Scipion's) environment."""
    if (Plugin.getVar(SASI_ENV_ACTIVATION) or "").strip() \
            or importlib.util.find_spec("torch") is not None:
        return []
    return [f"The SaSi engine (torch) is not installed in Scipion's environment: set "
            f"{SASI_ENV_ACTIVATION} to the activation of the environment that holds it "
            "('scipion3 installb sasi-engine' makes one), or install sasi-scipion[engine] "
            "here (docs/deployment.md)."]


def run_number_problems(iterations: int, seed: int) -> list[str]:
    """Errors about the 'Iterations' and 'Random seed' fields of a training protocol."""
    errors = []
    if not 0 <= iterations <= MAX_ITERATIONS:
        errors.append(f"Iterations must be 0 (default) or more, and at most {MAX_ITERATIONS}.")
    if not 0 <= seed <= MAX_SEED:
        errors.append(f"Random seed must be a whole number from 0 to {MAX_SEED}.")
    return errors


def _holds(path: str, text: str) -> bool:
    with open(path, errors="replace") as handle:
        return any(text in line for line in handle)


class ProtSaSiBase(EMProtocol, ProtTomoBase):
    """Base class: GPU form parameters and the ``sasi`` command runner."""

    _label = None

    @staticmethod
    def _addGpuParams(form) -> None:
        form.addHidden(params.USE_GPU, params.BooleanParam, default=gpu_present(),
                       label="Use GPU for execution",
                       help="Run the network on a GPU (one of GPU IDs). With 'No' it runs on "
                            "the CPU with every available core. Default: Yes when this "
                            "machine has an NVIDIA GPU.")
        form.addHidden(params.GPU_LIST, params.StringParam, default="0",
                       label="Choose GPU IDs",
                       help="GPU to use (for example 0 or 1). Under a queue, the GPUs the "
                            "queue gives the job.")

    def validate(self) -> list[str]:
        """pyworkflow's checks and ``_validate``, then :meth:`_gpuPresenceProblems`."""
        return super().validate() + self._gpuPresenceProblems()

    def _gpuPresenceProblems(self) -> list[str]:
        """An error when 'Use GPU' is on, no queue is used and this machine shows no GPU."""
        use_gpu = getattr(self, params.USE_GPU, None)
        if use_gpu is None or not use_gpu.get() or self.useQueue() or gpu_present():
            return []
        return ["'Use GPU' is Yes but this machine shows no NVIDIA GPU: set 'Use GPU' to No "
                "(at the top of the form) to run on the CPU, or send the job to a queue with "
                "GPUs."]

    def getGpuList(self) -> list[int]:
        """The GPU ids of the form, or none when 'Use GPU' is off: a queue then asks for
        no GPU (``GPU_COUNT`` in the submit template is the length of this list)."""
        use_gpu = getattr(self, params.USE_GPU, None)
        return [] if use_gpu is not None and not use_gpu.get() else super().getGpuList()

    def _device(self) -> str:
        return "cuda" if self.useGpu.get() else "cpu"

    def _program(self, error_file: str) -> str:
        """The ``sasi`` program with its variables: ``SASI_ERROR_FILE`` (where it writes
        its reason if it fails) and, without a queue, the GPUs to use."""
        program = Plugin.getSasiProgram()
        prefix = f"{ERROR_FILE_VARIABLE}={shlex.quote(error_file)} "
        if self.useGpu.get() and not self.useQueue():
            # pyworkflow replaces %(GPU)s in the program with the comma-separated GPU ids;
            # under a queue the scheduler assigns the GPUs and sets CUDA_VISIBLE_DEVICES.
            prefix += "CUDA_VISIBLE_DEVICES=%(GPU)s "
        parts = program.rsplit("&& ", 1)
        return f"{parts[0]}&& {prefix}{parts[1]}" if len(parts) == 2 else prefix + program

    def runSasi(self, arguments: Sequence[str], device: bool = True) -> None:
        """Run ``sasi ARGUMENTS [--device ...]`` through ``runJob`` (queue and GPU aware).

        The file after ``--out`` is removed first and must exist afterwards: a queue
        job that fails or is cancelled returns from ``runJob`` without an error when
        every command is its own job, so the missing file is what tells.

        Raises:
            SaSiError: with the command's own error line and its log's last lines.
        """
        args = list(arguments) + (["--device", self._device()] if device else [])
        out = args[args.index("--out") + 1] if "--out" in args else None
        if out and os.path.exists(out):
            os.remove(out)
        error_file = self._getLogsPath(
            f"sasi-{args[0]}-{os.path.basename(out) if out else 'run'}.error")
        if os.path.exists(error_file):
            os.remove(error_file)
        try:
            self.runJob(self._program(error_file), " ".join(shlex.quote(a) for a in args),
                        env=Plugin.getEnviron(), numberOfThreads=1, numberOfMpi=1)
        except Exception as error:  # pyworkflow raises a bare Exception with the command
            raise SaSiError(self._failureReason(args[0], error_file) or str(error)) from error
        if out and not os.path.exists(out):
            raise SaSiError(self._failureReason(args[0], error_file)
                            or f"sasi {args[0]} wrote no {out}: its job failed or was cancelled")

    def _logFiles(self) -> list[str]:
        """run.stdout / run.stderr, then the ``.out`` / ``.err`` files of queued jobs (where
        a queue writes their output), oldest first."""
        queued = sorted(glob.glob(os.path.join(self._getLogsPath(), "*.out"))
                        + glob.glob(os.path.join(self._getLogsPath(), "*.err")),
                        key=os.path.getmtime)
        return [p for p in [*self.getLogPaths(), *queued] if os.path.exists(p)]

    def _failureReason(self, command: str, error_file: str) -> str | None:
        """``sasi COMMAND failed: <its reason>`` and the last lines of the newest log that
        holds the reason; without a reason, the last lines of the newest queued job's log.
        The reason is what this very command wrote to ``error_file`` (``SASI_ERROR_FILE``),
        never another step's error from a shared log. ``None`` when there is nothing to
        quote."""
        logs = self._logFiles()
        reason, source = None, None
        if os.path.exists(error_file):
            with open(error_file, errors="replace") as handle:
                reason = handle.readline().strip() or None
        if reason:
            holding = [p for p in logs if _holds(p, reason)]
            source = max(holding, key=os.path.getmtime) if holding else None
        if source is None:
            queued = [p for p in logs if p not in self.getLogPaths()]
            source = max(queued, key=os.path.getmtime) if queued else None
        headline = f"sasi {command} failed" + (f": {reason}" if reason else "")
        if source is None:
            return headline if reason else None
        with open(source, errors="replace") as handle:
            tail = "".join(handle.readlines()[-LOG_TAIL_LINES:]).rstrip()
        return f"{headline}\nLast lines of {source}:\n{tail}"

    def _tomogramWarnings(self, tomograms: Iterable) -> list[str]:
        """Warnings of :func:`tomogram_problems` for the sets ``tomograms`` (None skipped)."""
        return [w for t in tomograms if t is not None and t.getSize()
                for w in tomogram_problems(t)[1]]

    def _citations(self) -> list[str]:
        return ["Adethya2025"]


class ProtSaSiModelBase(ProtSaSiBase):
    """Base class of the protocols that write a model file (pretrain, train)."""

    _label = None
    _possibleOutputs = {OUTPUT_MODEL: SaSiModel}

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.modelPath = String()

    def _addTrainingGpuParams(self, form) -> None:
        """The GPU fields and the number of GPUs to train on in parallel."""
        form.addParam("numberOfGpus", params.IntParam, default=1, label="Number of GPUs",
                      help="Train on this many GPUs of one node at once (PyTorch data "
                           "parallelism, one process per GPU, started with torchrun): the "
                           "same result as one GPU, up to rounding, in less time. List at "
                           "least as many GPU IDs (under a queue, the GPU list's length is "
                           f"the number of GPUs the job asks for). The batch of {BATCH_SIZE} "
                           "windows is split between them, so use 1, 2, 4, 8 or 16. With "
                           "'Use GPU' off: CPU processes sharing the cores.")
        self._addGpuParams(form)

    @staticmethod
    def _addBatchNormParam(form) -> None:
        """The expert switch between sasi's DeepFinder U-Net and the paper's."""
        form.addParam("batchNorm", params.BooleanParam, default=BATCH_NORM,
                      condition="arch == 0", expertLevel=params.LEVEL_ADVANCED,
                      label="Batch normalisation",
                      help="A batch normalisation after every convolution of the deepfinder "
                           "network: it learns the classes much faster than the SaSi "
                           "paper's network, which has none (choose No for the paper's "
                           "recipe). A pre-trained model brings its own choice.")

    def _batchNormArguments(self) -> list[str]:
        """``--no-batch-norm`` when the switch is off for the deepfinder network."""
        return [] if self.batchNorm.get() or self.arch.get() != 0 else ["--no-batch-norm"]

    def _validateGpus(self) -> list[str]:
        count = self.numberOfGpus.get()
        if count < 1 or BATCH_SIZE % count:
            return [f"Number of GPUs must divide the batch of {BATCH_SIZE} windows: use 1, 2, "
                    "4, 8 or 16."]
        listed = len(self.getGpuList())
        if self.useGpu.get() and listed < count:
            return [f"Number of GPUs is {count} but the GPU list '{self.gpuList.get()}' names "
                    f"{listed}: list {count} GPU IDs (for example "
                    f"{','.join(str(i) for i in range(count))})."]
        return []

    def runTraining(self, arguments: Sequence[str], out: str) -> None:
        """Run ``sasi ARGUMENTS`` that writes the model file ``out`` (on ``Number of GPUs``
        processes); remember ``out``."""
        processes = self.numberOfGpus.get()
        self.runSasi([*arguments, "--processes", str(processes)] if processes > 1
                     else arguments)
        self.modelPath.set(out)
        self._store(self.modelPath)

    def defineModelOutput(self, sources: Sequence) -> None:
        """``outputModel`` from the model file's JSON side-car, derived from ``sources``."""
        path = self.modelPath.get()
        model = SaSiModel(path=path)
        model.setFromMetadata(read_model_card(path))
        self._defineOutputs(**{OUTPUT_MODEL: model})
        for source in sources:
            self._defineSourceRelation(source, model)
