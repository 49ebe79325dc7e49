"""Per-class score cut-offs chosen from the user's own labels, without an oracle.

After training, the model picks its training tomogram(s). Each labelled
particle that a pick of its class lies on (within the class radius) tells the
score the model gives a particle it should find. A class's cut-off is
``CUTOFF_FACTOR`` times the ``RECOVERED_QUANTILE`` quantile of those scores:
the picks that score like the labelled particles stay, the weak components
(noise, fragments, distractors) go. A class whose labelled particles are all
missed as that class gets the class-agnostic cut-off instead: the same
fraction of the quantile of the best scores of picks of any class on every
labelled particle (with no cut-off at all, the picks of a class the model
confuses with others passed whatever their score: at N = 3 on the accuracy
benchmark, seed 0, this fallback raised precision from 0.17 to 0.34 and pooled
F1 from 0.28 to 0.49 at the same recall). 0 only when no labelled particle is
picked at all.

The same picks give the model's label recall (:func:`label_recall`): the share of
each class's labels found again as that class, a self-check that warns when a
trained model has not learned a class (:func:`label_recall_warning`).

The labelled particles were trained on, so their scores are higher than those of
unseen particles; the factor leaves room for that. Both constants were chosen
with ``benchmarks/accuracy.py --rescore`` (``benchmarks/RESULTS.md``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .coordinates import ParticleTable
from .defaults import LOW_LABEL_RECALL
from .errors import input_name

RECOVERED_QUANTILE = 0.1
"""Quantile of the labelled particles' scores that the cut-off is tied to."""
CUTOFF_FACTOR = 0.8
"""The cut-off is this fraction of that quantile."""


def labelled_scores(picks: ParticleTable, labels: ParticleTable, class_name: str,
                    radius: float, any_class: bool = False) -> np.ndarray:
    """Scores of the best pick of ``class_name`` (with ``any_class``: of any class)
    within ``radius`` voxels of each labelled particle of that class that has one
    (positions in voxels ``(x, y, z)``)."""
    mine = np.ones(len(picks), dtype=bool) if any_class else picks.classes == class_name
    pick_xyz, pick_scores = picks.xyz[mine], np.asarray(picks.scores)[mine]
    found = []
    for centre in labels.xyz[labels.classes == class_name]:
        near = np.linalg.norm(pick_xyz - centre, axis=1) <= radius
        if near.any():
            found.append(float(pick_scores[near].max()))
    return np.asarray(found)


def score_cutoffs(picks: Sequence[ParticleTable], labels: Sequence[ParticleTable],
                  class_names: Sequence[str], radii: Sequence[float],
                  factor: float = CUTOFF_FACTOR,
                  quantile: float = RECOVERED_QUANTILE) -> list[float]:
    """One score cut-off per class from the picks of the training tomograms.

    Args:
        picks: picks (with scores, no cut-off) of each training tomogram.
        labels: the user's labels of the same tomograms, in the same order.
        class_names: the model's classes.
        radii: particle radius per class, voxels.
        factor: fraction of the labelled particles' score quantile.
        quantile: which quantile of those scores.

    Returns:
        ``factor`` times the ``quantile`` quantile of each class's labelled
        particles' scores; for a class none of whose labels was picked as that class,
        the same of every labelled particle's best pick of any class (0 when there is
        none).
    """
    def cutoff(scores: list[np.ndarray]) -> float | None:
        pooled = np.concatenate(scores)
        return (round(factor * float(np.quantile(pooled, quantile)), 4)
                if len(pooled) else None)

    agnostic = cutoff([labelled_scores(p, lab, name, radius, any_class=True)
                       for name, radius in zip(class_names, radii)
                       for p, lab in zip(picks, labels)])
    cutoffs = [cutoff([labelled_scores(p, lab, name, radius) for p, lab in zip(picks, labels)])
               for name, radius in zip(class_names, radii)]
    return [c if c is not None else (agnostic or 0.0) for c in cutoffs]


def label_recall(picks: Sequence[ParticleTable], labels: Sequence[ParticleTable],
                 class_names: Sequence[str], radii: Sequence[float]) -> list[float]:
    """Per class, the fraction of its labelled particles that a pick of that class lies
    on (within the class radius, voxels) in the picks (no cut-off) of the training
    tomograms, ``labels`` being the user's labels of the same tomograms in order: how
    much of what it was taught the trained model finds again (1.0 for a class without
    labels, which training refuses)."""
    recall = []
    for name, radius in zip(class_names, radii):
        found = sum(len(labelled_scores(p, lab, name, radius)) for p, lab in zip(picks, labels))
        total = sum(int((lab.classes == name).sum()) for lab in labels)
        recall.append(round(found / total, 4) if total else 1.0)
    return recall


def label_recall_warning(class_names: Sequence[str], recall: Sequence[float]) -> str | None:
    """The warning for classes whose label recall (:func:`label_recall`) is below
    ``LOW_LABEL_RECALL``, naming the fix; ``None`` when every class is above."""
    low = [f"{name} {fraction:.0%}" for name, fraction in zip(class_names, recall)
           if fraction < LOW_LABEL_RECALL]
    if not low:
        return None
    return (f"the model picks few of your labelled particles as their own class in its "
            f"training tomogram(s) ({', '.join(low)} of the labels of that class): it has "
            f"not learned those classes and will pick them poorly; train again with another "
            f"{input_name('settings.seed')}, more {input_name('settings.iterations')} or "
            "more labels")
