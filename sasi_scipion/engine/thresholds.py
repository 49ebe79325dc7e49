"""Per-class score cut-offs chosen from the user's own labels, without an oracle.

After training, the model picks its training tomogram(s). Each labelled
particle that a pick of its class lies on (within the class radius) tells the
score the model gives a particle it should find. A class's cut-off is
``CUTOFF_FACTOR`` times the ``RECOVERED_QUANTILE`` quantile of those scores:
the picks that score like the labelled particles stay, the weak components
(noise, fragments, distractors) go. A class whose labelled particles are all
missed gets no cut-off (0).

The labelled particles were trained on, so their scores are higher than those of
unseen particles; the factor leaves room for that. Both constants were chosen
with ``benchmarks/accuracy.py --rescore`` (``benchmarks/RESULTS.md``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .coordinates import ParticleTable

RECOVERED_QUANTILE = 0.1
"""Quantile of the labelled particles' scores that the cut-off is tied to."""
CUTOFF_FACTOR = 0.8
"""The cut-off is this fraction of that quantile."""


def labelled_scores(picks: ParticleTable, labels: ParticleTable, class_name: str,
                    radius: float) -> np.ndarray:
    """Scores of the best pick of ``class_name`` within ``radius`` voxels of each
    labelled particle of that class that has one (positions in voxels ``(x, y, z)``)."""
    mine = picks.classes == class_name
    pick_xyz, pick_scores = picks.xyz[mine], np.asarray(picks.scores)[mine]
    found = []
    for centre in labels.xyz[labels.classes == class_name]:
        near = np.linalg.norm(pick_xyz - centre, axis=1) <= radius
        if near.any():
            found.append(float(pick_scores[near].max()))
    return np.asarray(found)


def score_cutoffs(picks: Sequence[ParticleTable], labels: Sequence[ParticleTable],
                  class_names: Sequence[str], radii: Sequence[float],
                  factor: float = CUTOFF_FACTOR) -> list[float]:
    """One score cut-off per class from the picks of the training tomograms.

    Args:
        picks: picks (with scores, no cut-off) of each training tomogram.
        labels: the user's labels of the same tomograms, in the same order.
        class_names: the model's classes.
        radii: particle radius per class, voxels.
        factor: fraction of the labelled particles' score quantile.

    Returns:
        ``factor`` times the ``RECOVERED_QUANTILE`` quantile of each class's labelled
        particles' scores, or 0 for a class none of whose labels was picked.
    """
    cutoffs = []
    for name, radius in zip(class_names, radii):
        scores = np.concatenate([labelled_scores(p, lab, name, radius)
                                 for p, lab in zip(picks, labels)])
        cutoffs.append(round(factor * float(np.quantile(scores, RECOVERED_QUANTILE)), 4)
                       if len(scores) else 0.0)
    return cutoffs
