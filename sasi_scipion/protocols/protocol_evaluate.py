"""Precision, recall and F1 of picked coordinates against reference coordinates."""

from __future__ import annotations

import json
import math

import numpy as np
import pyworkflow.protocol.params as params
from pyworkflow.object import Float, String
from pyworkflow.protocol import Protocol
from tomo.objects import SetOfCoordinates3D

from ..convert import coordinate_table, coordinate_tsids, tomograms_by_tsid
from ..engine.coordinates import ParticleTable
from ..engine.metrics import Evaluation, Scores, evaluate_distance
from .protocol_base import ProtSaSiBase
from .protocol_pick import ProtSaSiPick
from .protocol_train import classes_of_sets, clean_name


def match_classes(reference_names: list[str], pick_names: list[str]) -> dict[str, str | None]:
    """The pick class each reference class is scored against: the one of the same name,
    else the one the reference name ends with after a ``_`` (``truth_disc`` -> ``disc``,
    the longest such name), else ``None`` (no pick of that class exists)."""
    matched: dict[str, str | None] = {}
    for reference in reference_names:
        if reference in pick_names:
            matched[reference] = reference
            continue
        suffixes = [p for p in pick_names if reference.endswith(f"_{p}")]
        matched[reference] = max(suffixes, key=len) if suffixes else None
    return matched


class ProtSaSiEvaluate(ProtSaSiBase):
    """Scores picks against reference coordinates of the same tomograms (matched by
    tsId): a pick is a hit when it lies within the hit radius of a reference particle
    not yet matched (greedy one-to-one matching by distance). Pooled scores ignore the
    classes; per class, each reference class is compared with the picks of the class of
    the same name (:func:`match_classes`), never by order."""

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
                           "class), in any order. Each reference class is scored against the "
                           "picked class of the same name: the set's label (e.g. 'ribosome' "
                           "or 'truth ribosome'), or the name given in 'Reference class "
                           "names'.")
        form.addParam("referenceNames", params.StringParam, default="",
                      label="Reference class names",
                      help="Comma-separated class names, one per reference class in the "
                           "order of the summary; empty: the set labels (with the group id "
                           "when a set holds several groups).")
        form.addParam("hitRadius", params.FloatParam, default=0.0, label="Hit radius (px)",
                      help="Largest distance from a reference centre that still counts as a "
                           "hit, in pixels of the picks; 0 = half the box size of each "
                           "reference set.")

    def _insertAllSteps(self) -> None:
        self._insertFunctionStep(self.evaluateStep, needsGPU=False)

    def _referenceClasses(self) -> list[tuple[SetOfCoordinates3D, int | None, str]]:
        """``(set, group id or None, class name)`` per reference class."""
        sets = [pointer.get() for pointer in self.referenceCoordinates]
        plan = classes_of_sets(self.referenceCoordinates, "reference")
        names = [n.strip() for n in self.referenceNames.get().split(",")] \
            if self.referenceNames.get().strip() else []
        if len(names) == len(plan):
            plan = [(i, g, clean_name(n)) for (i, g, _), n in zip(plan, names)]
        return [(sets[i], group, name) for i, group, name in plan]

    def pickClasses(self) -> dict[int | None, str]:
        """Class name per group id of the picks (key ``None``: every pick). Picks of
        'sasi_scipion - pick' (any of its outputs): the model's classes (group id = 1-based
        index); other sets: named like reference sets (set label, with the group id when
        the set holds several groups)."""
        producer = self.inputCoordinates.getObjValue()
        if not isinstance(producer, Protocol) and producer is not None \
                and producer.getObjParentId() and self.getProject() is not None:
            # a pointer straight at an output set: the protocol that made it
            producer = self.getProject().getProtocol(producer.getObjParentId())
        if isinstance(producer, ProtSaSiPick):
            names = producer.inputModel.get().getClassNames()
            return {i + 1: name for i, name in enumerate(names)}
        return {group: name for _, group, name in classes_of_sets([self.inputCoordinates],
                                                                   "picks")}

    def classMatches(self) -> dict[str, str | None]:
        """The pick class that each reference class is scored against (``None``: none)."""
        return match_classes([name for _, _, name in self._referenceClasses()],
                             list(self.pickClasses().values()))

    def evaluateStep(self) -> None:
        picks = self.inputCoordinates.get()
        classes = self._referenceClasses()
        names = [name for _, _, name in classes]
        pick_names = self.pickClasses()
        matches = self.classMatches()
        # truth rows carry the name of the pick class they are scored against; the
        # results are reported under the reference names
        scored_as = {name: matches[name] or name for name in names}
        reported = {v: k for k, v in scored_as.items()}
        tomograms = tomograms_by_tsid(picks.getPrecedents())
        pooled, per_class = Scores(), {name: Scores() for name in names}
        for ts_id, tomo in tomograms.items():
            found = coordinate_table(
                picks, tomo, 1.0,
                lambda c: pick_names.get(c.getGroupId(), pick_names.get(
                    None, f"group{c.getGroupId()}"))) \
                if ts_id in coordinate_tsids(picks) else None
            truth_parts, radii = [], {}
            for coords, group, name in classes:
                if ts_id not in coordinate_tsids(coords):
                    continue
                scale = coords.getSamplingRate() / picks.getSamplingRate()
                truth_parts.append(coordinate_table(
                    coords, tomo, scale, lambda c, n=scored_as[name], g=group:
                    n if g is None or c.getGroupId() == g else None))
                radii[scored_as[name]] = (self.hitRadius.get()
                                          or 0.5 * coords.getBoxSize() * scale)
            if not truth_parts or found is None or not len(found):
                missed = sum(len(t) for t in truth_parts)
                pooled.fn += missed
                for t in truth_parts:
                    for name in t.classes:
                        per_class[reported[name]].fn += 1
                continue
            truth = _concat(truth_parts)
            result = evaluate_distance(found, truth, radii)
            _add(pooled, result.pooled)
            for name, scores in result.per_class.items():
                _add(per_class.setdefault(reported.get(name, name), Scores()), scores)
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
        given = [n for n in self.referenceNames.get().split(",") if n.strip()]
        plan = classes_of_sets(self.referenceCoordinates, "reference")
        if given and len(given) != len(plan):
            errors.append(f"'Reference class names' lists {len(given)} name(s) for "
                          f"{len(plan)} reference class(es): give one name per class.")
        elif all(r is not None for r in references):
            shared_pick: dict[str, list[str]] = {}
            for reference, pick in self.classMatches().items():
                if pick is not None:
                    shared_pick.setdefault(pick, []).append(reference)
            for pick, matched in shared_pick.items():
                if len(matched) > 1:
                    errors.append(f"The reference classes {', '.join(matched)} would all be "
                                  f"scored against the picked class {pick}: give them "
                                  "distinct names in 'Reference class names'.")
        if not (math.isfinite(self.hitRadius.get()) and self.hitRadius.get() >= 0):
            errors.append("The hit radius must be 0 (automatic) or a positive number.")
        return errors

    def _warnings(self) -> list[str]:
        picks = self.inputCoordinates.get()
        if picks is not None and picks.getSize() == 0:
            return ["The picks are empty: precision, recall and F1 will be 0."]
        if picks is None or any(p.get() is None for p in self.referenceCoordinates):
            return []
        unmatched = [r for r, p in self.classMatches().items() if p is None]
        if unmatched:
            return [f"No picked class is named like the reference class(es) "
                    f"{', '.join(unmatched)} (picked classes: "
                    f"{', '.join(self.pickClasses().values())}): their per-class scores "
                    "will be 0; name them in 'Reference class names'."]
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
