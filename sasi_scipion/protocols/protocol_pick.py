"""Pick particles in tomograms with a trained SaSi model, one step per tomogram."""

from __future__ import annotations

import math
import os
import threading

import pyworkflow.protocol.params as params
from pyworkflow.object import Set, String
from pyworkflow.protocol import STEPS_PARALLEL
from tomo.objects import SetOfCoordinates3D, SetOfTomograms

from ..constants import OUTPUT_COORDINATES, PICKS_SUFFIX
from ..convert import add_picks, tomograms_by_tsid
from ..engine.defaults import PICK_MODES, VOXEL_SIZE_TOLERANCE
from ..objects import SaSiModel
from .protocol_base import ProtSaSiBase, model_file_problem, tomogram_path, tomogram_problems


def box_size(radii: list[float]) -> int:
    """Extraction box (px) for a model: twice the largest particle diameter, even."""
    size = math.ceil(4 * max(radii)) if radii else 32
    return size + size % 2


class ProtSaSiPick(ProtSaSiBase):
    """SaSi picking: segments each tomogram with a trained model and places one
    particle per connected component of each class, with a score (mean class
    probability). One step per tomogram: with several threads, GPUs or queue slots
    the tomograms are picked in parallel and the output grows as they finish."""

    _label = "pick"
    _possibleOutputs = {OUTPUT_COORDINATES: SetOfCoordinates3D}
    stepsExecutionMode = STEPS_PARALLEL

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._outputLock = threading.Lock()
        self.pickedTsIds = String("")

    def _defineParams(self, form) -> None:
        form.addSection(label="Input")
        form.addParam("inputTomograms", params.PointerParam, pointerClass=SetOfTomograms,
                      label="Tomograms", important=True,
                      help="Tomograms at the sampling rate the model was trained at.")
        form.addParam("inputModel", params.PointerParam, pointerClass=SaSiModel,
                      label="Trained model", important=True,
                      help="Output of 'sasi - train'.")
        form.addParam("useModelCutoffs", params.BooleanParam, default=True,
                      label="Score cut-offs from the labels?",
                      help="Yes: drop picks scoring below the per-class cut-offs that "
                           "training chose from how the model scores your labelled "
                           "particles. No: one minimum score for every class.")
        form.addParam("minScore", params.FloatParam, default=0.0, label="Minimum score",
                      condition="not useModelCutoffs",
                      help="Drop particles whose score (mean class probability) is lower "
                           "(0 to 1; 0 keeps every pick).")
        form.addParam("mode", params.EnumParam, choices=list(PICK_MODES), default=0,
                      expertLevel=params.LEVEL_ADVANCED, label="Inference mode",
                      help="tiled: fast, exact large tiles (default); sliding: the paper's "
                           "24-voxel windows with stride 12 (slower reference).")
        self._addGpuParams(form)
        form.addParallelSection(threads=1, mpi=0)

    # -------------------------------------------------------------- steps
    def _insertAllSteps(self) -> None:
        finals = []
        for ts_id in tomograms_by_tsid(self.inputTomograms.get()):
            pick = self._insertFunctionStep(self.pickStep, ts_id, prerequisites=[])
            finals.append(self._insertFunctionStep(self.registerStep, ts_id, needsGPU=False,
                                                   prerequisites=[pick]))
        self._insertFunctionStep(self.closeOutputStep, needsGPU=False, prerequisites=finals)

    def _picksPath(self, ts_id: str) -> str:
        return self._getExtraPath(f"{ts_id}{PICKS_SUFFIX}")

    def pickStep(self, ts_id: str) -> None:
        tomo = tomograms_by_tsid(self.inputTomograms.get())[ts_id]
        self.runSasi(["pick", "--model", self.inputModel.get().getPath(),
                      "--tomogram", tomogram_path(tomo), "--out", self._picksPath(ts_id),
                      "--mode", PICK_MODES[self.mode.get()],
                      *([] if self.useModelCutoffs.get() else ["--min-score", str(self.minScore.get())])])

    def registerStep(self, ts_id: str) -> None:
        """Add one tomogram's picks to the output set (created on first use)."""
        tomograms = self.inputTomograms.get()
        tomo = tomograms_by_tsid(tomograms)[ts_id]
        model = self.inputModel.get()
        group_ids = {name: i + 1 for i, name in enumerate(model.getClassNames())}
        with self._outputLock:
            output = getattr(self, OUTPUT_COORDINATES, None)
            if output is None:
                output = self._createSetOfCoordinates3D(self.inputTomograms)
                output.setSamplingRate(tomograms.getSamplingRate())
                output.setBoxSize(box_size(model.getRadii()))
                output.setStreamState(Set.STREAM_OPEN)
                add_picks(output, tomo, self._picksPath(ts_id), group_ids)
                output.write()  # creates the table even when this tomogram has no pick
                self._defineOutputs(**{OUTPUT_COORDINATES: output})
                self._defineSourceRelation(self.inputTomograms, output)
                self._defineSourceRelation(self.inputModel, output)
            else:
                output.enableAppend()
                add_picks(output, tomo, self._picksPath(ts_id), group_ids)
                self._updateOutputSet(OUTPUT_COORDINATES, output, Set.STREAM_OPEN)
            done = [t for t in self.pickedTsIds.get().split(",") if t] + [ts_id]
            self.pickedTsIds.set(",".join(done))
            self._store(self.pickedTsIds)

    def closeOutputStep(self) -> None:
        output = getattr(self, OUTPUT_COORDINATES)
        output.enableAppend()
        self._updateOutputSet(OUTPUT_COORDINATES, output, Set.STREAM_CLOSED)

    # ---------------------------------------------------------- checks
    def _validate(self) -> list[str]:
        errors = []
        tomograms, model = self.inputTomograms.get(), self.inputModel.get()
        if tomograms is None or tomograms.getSize() == 0:
            errors.append("The input set holds no tomogram: choose a set with tomograms.")
        else:
            errors += tomogram_problems(tomograms)[0]
        if model is None:
            return errors + ["Choose a trained model (output of 'sasi - train')."]
        if model.isPretrainedOnly():
            errors.append("The model is only pre-trained and knows no particle class: train "
                          "it with 'sasi - train' (as its pre-trained model) and pick with "
                          "the trained model.")
        problem = model_file_problem(model.getPath())
        if not os.path.exists(model.getPath()):
            errors.append(f"The model file {model.getPath()} is missing: re-run the training "
                          "protocol.")
        elif problem:
            errors.append(f"Trained model: {problem}.")
        if tomograms is not None and tomograms.getSize() and model.getVoxelSize():
            rate = tomograms.getSamplingRate()
            if abs(rate - model.getVoxelSize()) > VOXEL_SIZE_TOLERANCE * model.getVoxelSize():
                errors.append(
                    f"The model was trained at {model.getVoxelSize():.2f} Å/px but the "
                    f"tomograms are at {rate:.2f} Å/px: rescale (bin) the tomograms to "
                    f"{model.getVoxelSize():.2f} Å/px or train a model at {rate:.2f} Å/px.")
        if not self.useModelCutoffs.get() and not 0.0 <= self.minScore.get() <= 1.0:
            errors.append("Minimum score must lie between 0 and 1.")
        return errors

    def _warnings(self) -> list[str]:
        return self._tomogramWarnings([self.inputTomograms.get()])

    def _summary(self) -> list[str]:
        output = getattr(self, OUTPUT_COORDINATES, None)
        if output is None:
            return ["No tomogram picked yet."]
        names = self.inputModel.get().getClassNames()
        counts = {}
        for coord in output.iterItems():
            counts[coord.getGroupId()] = counts.get(coord.getGroupId(), 0) + 1
        done = len([t for t in self.pickedTsIds.get().split(",") if t])
        lines = [f"{output.getSize()} particles in {done} of "
                 f"{self.inputTomograms.get().getSize()} tomogram(s), box {output.getBoxSize()} px"]
        lines += [f"  group {i + 1} = {name}: {counts.get(i + 1, 0)}"
                  for i, name in enumerate(names)]
        return lines

    def _methods(self) -> list[str]:
        return ["Particles were picked with a SaSi model [Adethya2025]: network segmentation, "
                "then one particle per 26-connected component (cc3d)."]
