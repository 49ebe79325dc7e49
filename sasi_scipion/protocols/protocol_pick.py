"""Pick particles in tomograms with a trained SaSi model, one step per tomogram."""

from __future__ import annotations

import math
import os
import threading

import pyworkflow.protocol.params as params
from pyworkflow.object import Set, String
from pyworkflow.protocol import STEPS_PARALLEL
from tomo.objects import SetOfCoordinates3D, SetOfTomograms

from ..constants import CLASS_OUTPUT_PREFIX, OUTPUT_COORDINATES, PICKS_SUFFIX
from ..convert import add_picks, class_output_name, tomograms_by_tsid
from ..engine.defaults import (
    MAX_RESAMPLING_FACTOR,
    PICK_MODES,
    PROTOTYPE_FILTERS,
    PROTOTYPE_QUANTILE,
    STATISTICS_ADAPTATIONS,
    VOXEL_SIZE_TOLERANCE,
)
from ..objects import SaSiModel
from .protocol_base import (
    ProtSaSiBase,
    engine_problems,
    model_file_problem,
    tomogram_path,
    tomogram_problems,
    voxel_size_arguments,
)


def box_size(radii: list[float]) -> int:
    """Extraction box (px) for a model: twice the largest particle diameter, even."""
    size = math.ceil(4 * max(radii)) if radii else 32
    return size + size % 2


class ProtSaSiPick(ProtSaSiBase):
    """SaSi picking: segments each tomogram with a trained model and places one
    particle per connected component of each class, with a score (mean class
    probability). One step per tomogram: with several threads, GPUs or queue slots
    the tomograms are picked in parallel and the outputs grow as they finish: every
    class in output3DCoordinates, and each class in outputCoordinates_<class>."""

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
                      help="Tomograms to pick. At another sampling rate than the model's "
                           f"(up to {MAX_RESAMPLING_FACTOR:g} times apart) they are resampled "
                           "to the model's while picking, and the coordinates come at their "
                           "own sampling rate.")
        form.addParam("inputModel", params.PointerParam, pointerClass=SaSiModel,
                      label="Trained model", important=True,
                      help="Output of 'sasi_scipion - train'.")
        form.addParam("useModelCutoffs", params.BooleanParam, default=True,
                      label="Score cut-offs from the labels?",
                      help="Yes: drop picks scoring below the per-class cut-offs that "
                           "training chose from how the model scores your labelled "
                           "particles. No: one minimum score for every class.")
        form.addParam("minScore", params.FloatParam, default=0.0, label="Minimum score",
                      condition="not useModelCutoffs",
                      help="Drop particles whose score (mean class probability) is lower "
                           "(0 to 1; 0 keeps every pick).")
        form.addParam("invertContrast", params.BooleanParam, default=False,
                      label="Invert contrast?",
                      help="Yes: negate the tomograms before picking, for protein bright "
                           "here when it was dark in the model's training tomograms (the "
                           "usual, and the simulator's), or the reverse. The pick log "
                           "warns when a tomogram looks inverted relative to the model.")
        form.addParam("adaptStatistics", params.EnumParam,
                      choices=list(STATISTICS_ADAPTATIONS),
                      default=STATISTICS_ADAPTATIONS.index("auto"),
                      expertLevel=params.LEVEL_ADVANCED,
                      label="Adapt normalisation to the tomograms",
                      help="Re-estimate the network's batch-normalisation statistics over "
                           "each tomogram before picking it (a few seconds). auto: for "
                           "tomograms at a coarser sampling rate than the model (a model "
                           "of several classes), whose features the training tomograms' "
                           "statistics no longer normalise (most of the accuracy lost at "
                           "a coarser sampling rate); on: for every tomogram, e.g. tomograms "
                           "filtered or reconstructed differently from the training "
                           "ones; off: never.")
        form.addParam("classCalibration", params.BooleanParam, default=True,
                      expertLevel=params.LEVEL_ADVANCED, label="Calibrated classes?",
                      help="Yes: each particle's class comes from the class calibration "
                           "that training fitted on your labels (and background points, "
                           "which it also uses to drop look-alike distractors). No: the "
                           "network's own most likely class, as in the paper. Older models "
                           "(trained before the calibration existed) have none and pick the "
                           "network's class either way.")
        form.addParam("prototypeFilter", params.EnumParam, choices=list(PROTOTYPE_FILTERS),
                      default=PROTOTYPE_FILTERS.index("auto"),
                      label="Keep only picks like the labels",
                      help="Drop picks that the network's encoder finds unlike the "
                           "particles you labelled for their class (cosine similarity to "
                           "the labels' mean feature vector, a label prototype). auto: for "
                           "a model trained on one class, which otherwise picks every "
                           "complex of a similar size; on: for every model; off: never. "
                           "Models trained before SaSi recorded label prototypes have "
                           "none (auto then keeps every pick).")
        form.addParam("prototypeQuantile", params.FloatParam, default=PROTOTYPE_QUANTILE,
                      condition=f"prototypeFilter != {PROTOTYPE_FILTERS.index('off')}",
                      expertLevel=params.LEVEL_ADVANCED, label="Prototype strictness",
                      help="A pick is dropped when it is less like its class's labels "
                           "than this quantile (0 to 1) of the labels' own similarities "
                           "to one another: 0 keeps what is as similar as the least "
                           "typical label; higher values keep fewer, surer picks.")
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
                      *voxel_size_arguments(self.inputTomograms.get()),
                      *([] if self.useModelCutoffs.get() else ["--min-score", str(self.minScore.get())]),
                      *(["--invert-contrast"] if self.invertContrast.get() else []),
                      *([] if self.classCalibration.get() else ["--no-class-calibration"]),
                      "--prototype-filter", PROTOTYPE_FILTERS[self.prototypeFilter.get()],
                      "--prototype-quantile", repr(float(self.prototypeQuantile.get())),
                      "--adapt-statistics",
                      STATISTICS_ADAPTATIONS[self.adaptStatistics.get()]])

    def classOutputs(self) -> dict[str, str]:
        """Output name per class of the model: ``outputCoordinates_<class>``."""
        return {name: class_output_name(CLASS_OUTPUT_PREFIX, name)
                for name in self.inputModel.get().getClassNames()}

    def registerStep(self, ts_id: str) -> None:
        """Add one tomogram's picks to the combined output and to each class's output
        (each created on first use, so that all exist, possibly empty, from the first
        tomogram on)."""
        tomo = tomograms_by_tsid(self.inputTomograms.get())[ts_id]
        group_ids = {name: i + 1 for i, name in enumerate(self.inputModel.get().getClassNames())}
        targets = [(OUTPUT_COORDINATES, None)] + [
            (output, {name}) for name, output in self.classOutputs().items()]
        with self._outputLock:
            for output_name, classes in targets:
                self._appendPicks(output_name, tomo, group_ids, classes)
            done = [t for t in self.pickedTsIds.get().split(",") if t] + [ts_id]
            self.pickedTsIds.set(",".join(done))
            self._store(self.pickedTsIds)

    def _appendPicks(self, output_name: str, tomo, group_ids: dict[str, int],
                     classes: set[str] | None) -> None:
        """Append the picks of ``tomo`` (of ``classes`` only, ``None``: all) to the output
        ``output_name``, creating it (stream open, sampling rate of the tomograms, box
        size from the model's radii) when it does not exist yet."""
        output = getattr(self, output_name, None)
        picks_path = self._picksPath(tomo.getTsId())
        if output is not None:
            output.enableAppend()
            add_picks(output, tomo, picks_path, group_ids, classes)
            self._updateOutputSet(output_name, output, Set.STREAM_OPEN)
            return
        suffix = "" if classes is None else "_" + output_name[len(CLASS_OUTPUT_PREFIX):]
        output = self._createSetOfCoordinates3D(self.inputTomograms, suffix)
        output.setSamplingRate(self.inputTomograms.get().getSamplingRate())
        output.setBoxSize(box_size(self.inputModel.get().getRadii()))
        output.setStreamState(Set.STREAM_OPEN)
        add_picks(output, tomo, picks_path, group_ids, classes)
        output.write()  # creates the table even when this tomogram has no pick
        self._defineOutputs(**{output_name: output})
        self._defineSourceRelation(self.inputTomograms, output)
        self._defineSourceRelation(self.inputModel, output)

    def closeOutputStep(self) -> None:
        for output_name in [OUTPUT_COORDINATES, *self.classOutputs().values()]:
            output = getattr(self, output_name)
            output.enableAppend()
            self._updateOutputSet(output_name, output, Set.STREAM_CLOSED)

    # ---------------------------------------------------------- checks
    def _validate(self) -> list[str]:
        errors = []
        tomograms, model = self.inputTomograms.get(), self.inputModel.get()
        if tomograms is None or tomograms.getSize() == 0:
            errors.append("The input set holds no tomogram: choose a set with tomograms.")
        else:
            errors += tomogram_problems(tomograms)[0]
        if model is None:
            return errors + ["Choose a trained model (output of 'sasi_scipion - train')."]
        if model.isPretrainedOnly():
            errors.append("The model is only pre-trained and knows no particle class: train "
                          "it with 'sasi_scipion - train' (as its pre-trained model) and pick with "
                          "the trained model.")
        outputs = self.classOutputs()
        if len(set(outputs.values())) < len(outputs):
            errors.append(f"The model's classes {', '.join(outputs)} give two outputs the "
                          "same name (letters, digits and _ are kept): train with class "
                          "names that differ in those.")
        problem = model_file_problem(model.getPath())
        if not os.path.exists(model.getPath()):
            errors.append(f"The model file {model.getPath()} is missing: re-run the training "
                          "protocol.")
        elif problem:
            errors.append(f"Trained model: {problem}.")
        ratio = self._samplingRatio()
        if ratio > MAX_RESAMPLING_FACTOR:
            errors.append(
                f"The model was trained at {model.getVoxelSize():.2f} Å/px but the "
                f"tomograms are at {tomograms.getSamplingRate():.2f} Å/px, {ratio:.1f} times "
                f"apart (SaSi resamples up to {MAX_RESAMPLING_FACTOR:g} times on the fly): "
                "check the tomograms' sampling rate, or rescale (bin) them to about "
                f"{model.getVoxelSize():.2f} Å/px.")
        if not self.useModelCutoffs.get() and not 0.0 <= self.minScore.get() <= 1.0:
            errors.append("Minimum score must lie between 0 and 1.")
        filter_choice = PROTOTYPE_FILTERS[self.prototypeFilter.get()]
        if filter_choice != "off" and not 0.0 <= self.prototypeQuantile.get() <= 1.0:
            errors.append("Prototype strictness must lie between 0 and 1.")
        if filter_choice == "on" and not model.hasLabelPrototypes():
            errors.append("The model has no label prototypes (it was trained before SaSi "
                          "recorded them): retrain it, or set 'Keep only picks like the "
                          "labels' to auto or off.")
        return engine_problems() + errors

    def _samplingRatio(self) -> float:
        """How many times the tomograms' sampling rate and the model's differ (1 when
        they agree within VOXEL_SIZE_TOLERANCE or one is unknown)."""
        tomograms, model = self.inputTomograms.get(), self.inputModel.get()
        if tomograms is None or not tomograms.getSize() or model is None:
            return 1.0
        rate, trained = tomograms.getSamplingRate(), model.getVoxelSize()
        if not (rate and trained) or abs(rate - trained) <= VOXEL_SIZE_TOLERANCE * trained:
            return 1.0
        return max(rate, trained) / min(rate, trained)

    def _warnings(self) -> list[str]:
        warnings = self._tomogramWarnings([self.inputTomograms.get()])
        if 1.0 < self._samplingRatio() <= MAX_RESAMPLING_FACTOR:
            warnings.append(
                f"The tomograms ({self.inputTomograms.get().getSamplingRate():.2f} Å/px) "
                "will be resampled to the model's sampling rate "
                f"({self.inputModel.get().getVoxelSize():.2f} Å/px) while picking; the "
                "picked coordinates are at the tomograms' own sampling rate.")
        return warnings

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
