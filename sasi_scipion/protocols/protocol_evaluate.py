"""Precision, recall and F1 of picked coordinates against reference coordinates."""

from __future__ import annotations

import json
import math

import numpy as np
import pyworkflow.protocol.params as params
from pyworkflow.object import Float, String
from tomo.objects import SetOfCoordinates3D

from ..convert import coordinate_table, coordinate_tsids, tomograms_by_tsid
from ..engine.coordinates import ParticleTable
from ..engine.metrics import Evaluation, Scores, evaluate_distance
from .protocol_base import ProtSaSiBase
from .protocol_train import classes_of_sets


class ProtSaSiEvaluate(ProtSaSiBase):
    """Scores picks against reference coordinates of the same tomograms (matched by
    tsId): a pick is a hit when it lies within the hit radius of a reference particle
    not yet matched (greedy one-to-one matching by distance). Pooled scores ignore the
    classes; per class, reference set (or group) n is compared with picks of group id n,
    the class order of 'sasi - train'."""

    _label = "evaluate"

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.evaluationJson = String()
        self.pooledF1 = Float()

    def _defineParams(self, form) -> None:
        form.addSection(label="Input")
        form.addParam("inputCoordinates", params.PointerParam, pointerClass=SetOfCoordinates3D,
                      label="Picks", important=True, help="Coordinates to score.")
        form.addParam("referenceCoordinates", params.MultiPointerParam,
                      pointerClass=SetOfCoordinates3D, label="Reference", important=True,
                      help="True particles: one set per class (or one set with a group id per "
                           "class), in the class order of the picks.")
        form.addParam("hitRadius", params.FloatParam, default=0.0, label="Hit radius (px)",
                      help="Largest distance from a reference centre that still counts as a "
                           "hit, in pixels of the picks; 0 = half the box size of each "
                           "reference set.")

    def _insertAllSteps(self) -> None:
        self._insertFunctionStep(self.evaluateStep, needsGPU=False)

    def _referenceClasses(self) -> list[tuple[SetOfCoordinates3D, int | None, str]]:
        sets = [pointer.get() for pointer in self.referenceCoordinates]
        return [(sets[i], group, name)
                for i, group, name in classes_of_sets(self.referenceCoordinates, "reference")]

    def evaluateStep(self) -> None:
        picks = self.inputCoordinates.get()
        classes = self._referenceClasses()
        names = [name for _, _, name in classes]
        tomograms = tomograms_by_tsid(picks.getPrecedents())
        pooled, per_class = Scores(), {name: Scores() for name in names}
        for ts_id, tomo in tomograms.items():
            found = coordinate_table(
                picks, tomo, 1.0,
                lambda c: names[c.getGroupId() - 1] if 0 < c.getGroupId() <= len(names)
                else f"group{c.getGroupId()}") if ts_id in coordinate_tsids(picks) else None
            truth_parts, radii = [], {}
            for coords, group, name in classes:
                if ts_id not in coordinate_tsids(coords):
                    continue
                scale = coords.getSamplingRate() / picks.getSamplingRate()
                truth_parts.append(coordinate_table(
                    coords, tomo, scale,
                    lambda c, n=name, g=group: n if g is None or c.getGroupId() == g else None))
                radii[name] = self.hitRadius.get() or 0.5 * coords.getBoxSize() * scale
            if not truth_parts or found is None or not len(found):
                missed = sum(len(t) for t in truth_parts)
                pooled.fn += missed
                for t in truth_parts:
                    for name in t.classes:
                        per_class[name].fn += 1
                continue
            truth = _concat(truth_parts)
            result = evaluate_distance(found, truth, radii)
            _add(pooled, result.pooled)
            for name, scores in result.per_class.items():
                _add(per_class.setdefault(name, Scores()), scores)
        evaluation = Evaluation("distance", pooled, per_class)
        self.evaluationJson.set(json.dumps(evaluation.to_dict()))
        self.pooledF1.set(pooled.f1)
        self._store(self.evaluationJson, self.pooledF1)

    def getEvaluation(self) -> dict | None:
        """The stored result: ``{"rule", "pooled": {...}, "per_class": {...}}``."""
        return json.loads(self.evaluationJson.get()) if self.evaluationJson.get() else None

    def _validate(self) -> list[str]:
        picks = self.inputCoordinates.get()
        references = [p.get() for p in self.referenceCoordinates]
        if picks is None or not references:
            return ["Choose the picks and at least one reference set."]
        errors = []
        try:
            tomograms_by_tsid(picks.getPrecedents())
        except ValueError as error:
            return [f"The picked tomograms: {error}."]
        if any(r.getSize() == 0 for r in references):
            errors.append("A reference set is empty: choose sets holding the true particles.")
        shared = set().union(*(coordinate_tsids(r) for r in references)) & {
            t.getTsId() for t in picks.getPrecedents().iterItems()}
        if not shared:
            errors.append("Picks and references share no tomogram (tsId): choose references "
                          "of the picked tomograms.")
        if not (math.isfinite(self.hitRadius.get()) and self.hitRadius.get() >= 0):
            errors.append("The hit radius must be 0 (automatic) or a positive number.")
        return errors

    def _warnings(self) -> list[str]:
        picks = self.inputCoordinates.get()
        if picks is not None and picks.getSize() == 0:
            return ["The picks are empty: precision, recall and F1 will be 0."]
        return []

    def _summary(self) -> list[str]:
        result = self.getEvaluation()
        if result is None:
            return ["Not evaluated yet."]
        lines = ["class: TP FP FN precision recall F1"]
        rows = list(result["per_class"].items()) + [("pooled", result["pooled"])]
        for name, s in rows:
            lines.append(f"{name}: {s['tp']} {s['fp']} {s['fn']} {s['precision']:.3f} "
                         f"{s['recall']:.3f} {s['f1']:.3f}")
        return lines

    def _methods(self) -> list[str]:
        result = self.getEvaluation()
        if result is None:
            return []
        return [f"The picks reached a pooled F1 of {result['pooled']['f1']:.3f} (precision "
                f"{result['pooled']['precision']:.3f}, recall {result['pooled']['recall']:.3f}) "
                "against the reference coordinates."]


def _concat(tables: list[ParticleTable]) -> ParticleTable:
    return ParticleTable(np.concatenate([t.xyz for t in tables]),
                         np.concatenate([t.classes for t in tables]))


def _add(total: Scores, part: Scores) -> None:
    total.tp += part.tp
    total.fp += part.fp
    total.fn += part.fn
