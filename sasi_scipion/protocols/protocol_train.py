"""Few-shot training from a few labelled particles (SetOfCoordinates3D)."""

from __future__ import annotations

import os
import re

import pyworkflow.protocol.params as params
from tomo.objects import SetOfCoordinates3D, SetOfTomograms

from ..constants import BOX_TO_RADIUS, LABELS_SUFFIX, OUTPUT_MODEL
from ..convert import coordinate_table, coordinate_tsids, tomograms_by_tsid
from ..engine.coordinates import ParticleTable, write_particles
from ..engine.defaults import (
    BACKBONE_NAMES,
    DEFAULT_ITERATIONS,
    DEFAULT_SELF_TRAINING,
    MAX_RESAMPLING_FACTOR,
    SELF_TRAINING_FATES,
    SELF_TRAINING_MODES,
    SSL_AUTO,
    SSL_SCHEDULES,
    VOXEL_SIZE_TOLERANCE,
)
from ..engine.limits import BACKGROUND_CLASS, radius_problem
from ..objects import SaSiModel
from .protocol_base import (
    WINDOW,
    ProtSaSiModelBase,
    engine_problems,
    model_file_problem,
    run_number_problems,
    tomogram_path,
    tomogram_problems,
    voxel_size_arguments,
)

SSL_CHOICES = [SSL_AUTO, *SSL_SCHEDULES]


def clean_name(text: str) -> str:
    """A class name the engine's files can hold: no blanks or tabs."""
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", text.strip()).strip("_") or "particle"


def set_label(pointer, fallback: str) -> str:
    """A class name for the set a pointer designates: the set's label, else the label
    of the protocol that made it, else ``fallback``."""
    coords = pointer.get()
    owner = pointer.getObjValue()
    label = coords.getObjLabel() or (owner.getObjLabel() if owner is not coords else "")
    return clean_name(label or fallback)


def classes_of_sets(pointers, prefix: str) -> list[tuple[int, int | None, str]]:
    """``(set index, group id or None, class name)`` per class of coordinate sets: one
    class per group id for a set with several, else one per set named after it."""
    plan = []
    for index, pointer in enumerate(pointers):
        label = set_label(pointer, f"{prefix}{index + 1}")
        coords = pointer.get()
        groups = sorted(int(g) for g in coords.getUniqueValues("_groupId")) \
            if coords.getSize() else []
        if len(groups) > 1:
            plan += [(index, g, f"{label}_{g}") for g in groups]
        else:
            plan.append((index, None, label))
    return plan


class ProtSaSiTrain(ProtSaSiModelBase):
    """SaSi few-shot training: learns to segment particles from 3 to 10 labelled
    particles per class, with Self-augmented Volume Infill, self-interpreted
    consistency guidance and SimCLR self-supervision on the same tomograms.

    Classes: a coordinate set whose coordinates carry several group ids gives
    one class per group id; otherwise each set is one class, named after the set
    (change the names with 'Class names'). A class named 'background' holds
    points that are not particles, taught as background."""

    _label = "train"

    # --------------------------------------------------------------- form
    def _defineParams(self, form) -> None:
        form.addSection(label="Input")
        form.addParam("inputCoordinates", params.MultiPointerParam,
                      pointerClass=SetOfCoordinates3D, label="Labelled particles",
                      important=True,
                      help="One or more coordinate sets (from any picker or an import): a few "
                           "particles per class. A set with several group ids gives one class "
                           "per group id, otherwise one class per set. A class named "
                           f"'{BACKGROUND_CLASS}' holds points that are not particles (gold "
                           "beads, membranes, junk, empty ice): training shows them as "
                           "background, so picking learns to leave them out.")
        form.addParam("inputTomograms", params.PointerParam, pointerClass=SetOfTomograms,
                      allowsNull=True, label="Tomograms (optional)",
                      help="Tomograms to train on; empty: the tomograms the coordinates were "
                           "picked on. Matched to the coordinates by tsId.")
        form.addParam("classNames", params.StringParam, default="", label="Class names",
                      help="Comma-separated names, one per class in the order listed in the "
                           "summary; empty: the set labels (with the group id when a set holds "
                           "several groups).")
        form.addParam("radii", params.StringParam, default="", label="Particle radii (px)",
                      help="Comma-separated radius per class in pixels of the tomograms, or one "
                           "value for all; empty: half the box size of each coordinate set.")
        form.addParam("pretrainedModel", params.PointerParam, pointerClass=SaSiModel,
                      allowsNull=True, label="Pre-trained model (optional)",
                      help="Output of 'sasi_scipion - pretrain' (or a trained model to fine-tune).")
        form.addSection(label="Training")
        form.addParam("arch", params.EnumParam, choices=list(BACKBONE_NAMES), default=0,
                      label="Network",
                      help="Backbone when no pre-trained model is given (a pre-trained model "
                           "brings its own): deepfinder, the SaSi paper's U-Net.")
        self._addBatchNormParam(form)
        form.addParam("iterations", params.IntParam, default=0, label="Iterations",
                      help="Optimisation steps; 0 = the engine's default "
                           f"({DEFAULT_ITERATIONS['cpu']} on a CPU: 6 to 9 minutes on 2 cores "
                           "of a CPU with native bf16 (AMX or AVX512-BF16), about twice that on "
                           "CPUs without; "
                           f"{DEFAULT_ITERATIONS['cuda']} on a GPU).")
        form.addParam("infill", params.BooleanParam, default=True,
                      label="Self-augmented Volume Infill",
                      help="Mix augmented copies of each window and its labels (AugMix for "
                           "volumes): more particles in new poses per window.")
        form.addParam("consistency", params.BooleanParam, default=True,
                      label="Consistency guidance",
                      help="In the first half of training, make the prediction of a flipped or "
                           "turned window agree with the turned prediction.")
        form.addParam("sslSchedule", params.EnumParam, choices=SSL_CHOICES, default=0,
                      label="Self-supervision schedule",
                      help="SimCLR on the training tomograms: iss (first 10 % of the steps), "
                           "pss (blocks spread over the first half), none; auto = iss, or none "
                           "when starting from a pre-trained model.")
        form.addParam("selfTraining", params.EnumParam, choices=list(SELF_TRAINING_MODES),
                      default=SELF_TRAINING_MODES.index(DEFAULT_SELF_TRAINING),
                      label="Self-training",
                      help="Half-way through training, the model picks its training tomograms; "
                           "confident picks on no label are particles nobody labelled. ignore: "
                           "leave them out of the loss, so they are not taught as background; "
                           "labels: teach them as extra labels of the class picked (a wrong "
                           "class is taught too); off: every unlabelled voxel is background. "
                           "Your labels never change.")
        form.addParam("seed", params.IntParam, default=0, expertLevel=params.LEVEL_ADVANCED,
                      label="Random seed", help="Same seed, same CPU result.")
        self._addTrainingGpuParams(form)

    # ------------------------------------------------------------ classes
    def _sets(self) -> list[SetOfCoordinates3D]:
        return [pointer.get() for pointer in self.inputCoordinates]

    def _tomograms(self) -> SetOfTomograms:
        if self.inputTomograms.get() is not None:
            return self.inputTomograms.get()
        return self._sets()[0].getPrecedents()

    def classPlan(self) -> list[tuple[int, int | None, str]]:
        """``(set index, group id or None, class name)`` per class, in class order."""
        plan = classes_of_sets(self.inputCoordinates, "set")
        names = [n.strip() for n in self.classNames.get().split(",")] \
            if self.classNames.get().strip() else []
        if len(names) == len(plan):
            plan = [(i, g, clean_name(n)) for (i, g, _), n in zip(plan, names)]
        return plan

    def _scale(self, coords: SetOfCoordinates3D) -> float:
        """Coordinates' sampling rate over the training tomograms' (1 when equal)."""
        return coords.getSamplingRate() / self._tomograms().getSamplingRate()

    def classRadii(self) -> list[float]:
        """Radius per class in pixels of the training tomograms."""
        plan = self.classPlan()
        given = [float(v) for v in self.radii.get().split(",") if v.strip()]
        if len(given) == 1:
            return given * len(plan)
        if given:
            return given
        return [round(BOX_TO_RADIUS * self._sets()[i].getBoxSize() * self._scale(self._sets()[i]),
                      1) for i, _, _ in plan]

    # -------------------------------------------------------------- steps
    def _insertAllSteps(self) -> None:
        self._insertFunctionStep(self.convertInputStep, needsGPU=False)
        self._insertFunctionStep(self.trainStep)
        self._insertFunctionStep(self.createOutputStep, needsGPU=False)

    def convertInputStep(self) -> None:
        """Write one engine label file per tomogram that holds labels."""
        tomograms = tomograms_by_tsid(self._tomograms())
        plan = self.classPlan()
        for ts_id, tomo in tomograms.items():
            tables = []
            for index, coords in enumerate(self._sets()):
                if ts_id not in coordinate_tsids(coords):
                    continue
                names = {g: n for i, g, n in plan if i == index}
                tables.append(coordinate_table(
                    coords, tomo, self._scale(coords),
                    lambda c, names=names: names.get(c.getGroupId(), names.get(None))))
            if tables and sum(len(t) for t in tables):
                merged = ParticleTable(
                    [row for t in tables for row in t.xyz],
                    [name for t in tables for name in t.classes])
                write_particles(self._labelsPath(ts_id), merged)

    def _labelsPath(self, ts_id: str) -> str:
        return self._getExtraPath(f"{ts_id}{LABELS_SUFFIX}")

    def trainStep(self) -> None:
        out = self._getExtraPath("model.pt")
        # --resume: a continued run (after a failure, a stop or a queue's time limit)
        # goes on from the checkpoint the interrupted one left.
        args = ["train", "--out", out, "--seed", str(self.seed.get()),
                "--arch", list(BACKBONE_NAMES)[self.arch.get()],
                "--ssl", SSL_CHOICES[self.sslSchedule.get()], "--resume",
                "--self-training", SELF_TRAINING_MODES[self.selfTraining.get()],
                *self._batchNormArguments(), *voxel_size_arguments(self._tomograms())]
        for ts_id, tomo in tomograms_by_tsid(self._tomograms()).items():
            if os.path.exists(self._labelsPath(ts_id)):
                args += ["--tomogram", tomogram_path(tomo), "--coords", self._labelsPath(ts_id)]
            else:
                args += ["--unlabelled", tomogram_path(tomo)]
        for (_, _, name), radius in zip(self.classPlan(), self.classRadii()):
            if name != BACKGROUND_CLASS:  # points that are not particles have no radius
                args += ["--radius", f"{name}={radius}"]
        if self.pretrainedModel.get() is not None:
            args += ["--pretrained", self.pretrainedModel.get().getPath()]
        if self.iterations.get() > 0:
            args += ["--iterations", str(self.iterations.get())]
        if not self.infill.get():
            args.append("--no-infill")
        if not self.consistency.get():
            args.append("--no-consistency")
        self.runTraining(args, out)

    def createOutputStep(self) -> None:
        self.defineModelOutput(list(self.inputCoordinates))

    # ---------------------------------------------------------- checks
    def _validate(self) -> list[str]:
        sets = self._sets()
        if not sets or any(s is None for s in sets):
            return ["Choose at least one coordinate set with labelled particles."]
        errors = [f"Coordinate set '{s.getObjLabel() or i + 1}' is empty: label a few particles "
                  "(3 to 10 per class) first." for i, s in enumerate(sets) if s.getSize() == 0]
        tomograms = self._tomograms()
        if tomograms is None or tomograms.getSize() == 0:
            return errors + ["No tomograms: give 'Tomograms' or coordinates picked on tomograms."]
        errors += tomogram_problems(tomograms)[0]
        known = {t.getTsId() for t in tomograms.iterItems()}
        for s in sets:
            missing = coordinate_tsids(s) - known
            if missing:
                errors.append(
                    f"Coordinates refer to tomograms {', '.join(sorted(missing))} that are not "
                    "in the chosen tomograms (matched by tsId): choose the tomograms they were "
                    "picked on.")
        plan = self.classPlan()
        names = [n for _, _, n in plan]
        given_names = [n for n in self.classNames.get().split(",") if n.strip()]
        if given_names and len(given_names) != len(plan):
            errors.append(f"'Class names' lists {len(given_names)} name(s) for {len(plan)} "
                          f"class(es) ({', '.join(names)}): give one name per class.")
        if names and all(n == BACKGROUND_CLASS for n in names):
            errors.append(f"Every class is '{BACKGROUND_CLASS}' (points that are not "
                          "particles): add a coordinate set of the particles to learn.")
        if len(set(names)) != len(names):
            errors.append(f"Two classes have the same name ({', '.join(names)}): set 'Class "
                          "names' or give the coordinate sets different labels.")
        try:
            radii = self.classRadii()
        except ValueError:
            return errors + ["'Particle radii' must be numbers separated by commas."]
        if len(radii) != len(plan):
            errors.append(f"'Particle radii' lists {len(radii)} value(s) for {len(plan)} "
                          "class(es): give one per class or a single value.")
        else:
            errors += [f"Particle radii: {problem}." for problem in
                       (radius_problem(n, r, WINDOW) for n, r in zip(names, radii)
                        if n != BACKGROUND_CLASS) if problem]
        errors += self._validatePretrained(tomograms.getSamplingRate())
        errors += self._validateGpus()
        errors += run_number_problems(self.iterations.get(), self.seed.get())
        return engine_problems() + errors

    def _validatePretrained(self, sampling_rate: float) -> list[str]:
        model = self.pretrainedModel.get()
        if model is None:
            return []
        problem = model_file_problem(model.getPath())
        if problem:
            return [f"Pre-trained model: {problem}."]
        if not model.getVoxelSize():
            return []
        ratio = (max(model.getVoxelSize(), sampling_rate)
                 / min(model.getVoxelSize(), sampling_rate))
        if ratio > MAX_RESAMPLING_FACTOR:
            return [f"The pre-trained model was trained at {model.getVoxelSize():.2f} Å/px, "
                    f"the tomograms are at {sampling_rate:.2f} Å/px, {ratio:.1f} times apart "
                    f"(SaSi resamples up to {MAX_RESAMPLING_FACTOR:g} times on the fly): "
                    "pre-train on tomograms at this sampling rate or rescale the tomograms "
                    f"to about {model.getVoxelSize():.2f} Å/px."]
        return []

    def _warnings(self) -> list[str]:
        complete = self._sets() and all(s is not None for s in self._sets())
        warnings = self._tomogramWarnings([self._tomograms()]) if complete else []
        for s in self._sets():
            if s is not None and abs(self._scale(s) - 1) > VOXEL_SIZE_TOLERANCE:
                warnings.append(f"Coordinates of '{s.getObjLabel()}' are at "
                                f"{s.getSamplingRate():.2f} Å/px and will be rescaled to the "
                                f"tomograms' {self._tomograms().getSamplingRate():.2f} Å/px.")
            if s is not None and s.getSize() > 200:
                warnings.append(f"'{s.getObjLabel()}' holds {s.getSize()} particles: SaSi is "
                                "made for a few labels; any number works but training takes "
                                "as long as with a few.")
        return warnings

    def _summary(self) -> list[str]:
        lines = [f"Class {n}: radius {r} px" for (_, _, n), r in
                 zip(self.classPlan(), self.classRadii())] if self._sets() else []
        if hasattr(self, OUTPUT_MODEL):
            model = getattr(self, OUTPUT_MODEL)
            lines.append(f"Trained {model.getArch()} at {model.getVoxelSize():.2f} Å/px: "
                         f"{model.getPath()}")
            lines += model.collapseWarning()
            lines += model.labelRecallLines()
            lines += model.selfTrainingLines()
        else:
            lines.append("Training not finished yet.")
        return lines

    def _selfTrainingMethod(self) -> str | None:
        fate = SELF_TRAINING_FATES.get(SELF_TRAINING_MODES[self.selfTraining.get()])
        return f"unlabelled particles found half-way {fate}" if fate else None

    def _methods(self) -> list[str]:
        parts = ["Volume Infill" if self.infill.get() else None,
                 "consistency guidance" if self.consistency.get() else None,
                 f"{SSL_CHOICES[self.sslSchedule.get()]} self-supervision",
                 self._selfTrainingMethod()]
        return [f"A SaSi particle picker [Adethya2025] was trained on "
                f"{sum(s.getSize() for s in self._sets())} labelled particles of "
                f"{len(self.classPlan())} class(es) with {', '.join(p for p in parts if p)}."]
