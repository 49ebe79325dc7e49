"""Self-supervised (SimCLR) pre-training on unlabelled tomograms."""

from __future__ import annotations

import pyworkflow.protocol.params as params
from tomo.objects import SetOfTomograms

from ..constants import OUTPUT_MODEL
from ..engine.defaults import BACKBONE_NAMES, DEFAULT_ITERATIONS
from .protocol_base import (
    ProtSaSiModelBase,
    engine_problems,
    run_number_problems,
    tomogram_path,
    tomogram_problems,
    voxel_size_arguments,
)


class ProtSaSiPretrain(ProtSaSiModelBase):
    """SaSi self-supervised pre-training: learns features of unlabelled tomograms with
    SimCLR (two augmented views of each sliding-grid window, NT-Xent loss). Feed the
    result to 'sasi_scipion - train' as its pre-trained model."""

    _label = "pretrain"

    def _defineParams(self, form) -> None:
        form.addSection(label="Input")
        form.addParam("inputTomograms", params.PointerParam, pointerClass=SetOfTomograms,
                      label="Tomograms", important=True,
                      help="Unlabelled tomograms, all at one sampling rate, like those you "
                           "will pick.")
        form.addParam("arch", params.EnumParam, choices=list(BACKBONE_NAMES), default=0,
                      label="Network", help="Backbone (deepfinder: the SaSi paper's U-Net).")
        self._addBatchNormParam(form)
        form.addParam("iterations", params.IntParam, default=0, label="Iterations",
                      help="Optimisation steps; 0 = the engine's default "
                           f"({DEFAULT_ITERATIONS['cpu']} on a CPU, "
                           f"{DEFAULT_ITERATIONS['cuda']} on a GPU).")
        form.addParam("seed", params.IntParam, default=0, expertLevel=params.LEVEL_ADVANCED,
                      label="Random seed", help="Same seed, same CPU result.")
        self._addTrainingGpuParams(form)

    def _insertAllSteps(self) -> None:
        self._insertFunctionStep(self.pretrainStep)
        self._insertFunctionStep(self.createOutputStep, needsGPU=False)

    def pretrainStep(self) -> None:
        out = self._getExtraPath("pretrained.pt")
        # --resume: a continued run (after a failure, a stop or a queue's time limit)
        # goes on from the checkpoint the interrupted one left.
        args = ["pretrain", "--out", out, "--arch", list(BACKBONE_NAMES)[self.arch.get()],
                "--seed", str(self.seed.get()), "--resume", *self._batchNormArguments(),
                *voxel_size_arguments(self.inputTomograms.get())]
        for tomo in self.inputTomograms.get().iterItems():
            args += ["--tomogram", tomogram_path(tomo)]
        if self.iterations.get() > 0:
            args += ["--iterations", str(self.iterations.get())]
        self.runTraining(args, out)

    def createOutputStep(self) -> None:
        self.defineModelOutput([self.inputTomograms])

    def _validate(self) -> list[str]:
        errors = []
        tomograms = self.inputTomograms.get()
        if tomograms is None or tomograms.getSize() == 0:
            errors.append("The input set holds no tomogram: choose a set with tomograms.")
        else:
            errors += tomogram_problems(tomograms)[0]
        errors += run_number_problems(self.iterations.get(), self.seed.get())
        return engine_problems() + errors + self._validateGpus()

    def _warnings(self) -> list[str]:
        return self._tomogramWarnings([self.inputTomograms.get()])

    def _summary(self) -> list[str]:
        if not hasattr(self, OUTPUT_MODEL):
            return ["Pre-training not finished yet."]
        model = getattr(self, OUTPUT_MODEL)
        return [f"Pre-trained {model.getArch()} on {self.inputTomograms.get().getSize()} "
                f"tomogram(s) at {model.getVoxelSize():.2f} Å/px: {model.getPath()}",
                *model.collapseWarning()]

    def _methods(self) -> list[str]:
        return [f"A {list(BACKBONE_NAMES)[self.arch.get()]} network was pre-trained with SimCLR on "
                f"unlabelled tomograms as in SaSi [Adethya2025]."]
