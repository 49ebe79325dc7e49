"""Self-training: what to do with the unlabelled particles of the training tomograms.

A user labels a few particles of a tomogram that holds many more; the label map
calls every other voxel background, so each unlabelled particle that falls into a
window around a label is taught as background (the positive-unlabelled problem).
Half-way through training (``TrainingSettings.self_training_at``) the model picks
its training tomograms near the labels (``training_run``); its confident picks that
lie on no label or background point are the unlabelled particles it sees. They are
then either

- ``ignore``: left out of the loss (``masks.IGNORE_LABEL`` over their class sphere,
  where the label map said background), a positive-unlabelled correction that
  needs no class decision; or
- ``labels``: painted as labels of the class picked, and windows drawn around them
  like around the user's labels (self-training proper; a wrong class is taught).

The user's labels and background points always stay as given: only voxels the label
map calls background change. Positions are voxels ``(x, y, z)``; radii voxels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .coordinates import ParticleTable
from .defaults import SelfTrainingMode
from .masks import IGNORE_LABEL, paint_spheres

PSEUDO_LABEL_QUANTILE = 0.5
"""``labels`` takes picks scoring at least this quantile of the scores of the picks on
the user's labelled particles of the same class (``thresholds.score_cutoffs`` with
factor 1): taught as labels, a pick should look like a labelled particle."""


def unlabelled_picks(picks: ParticleTable, labels: ParticleTable,
                     negatives: ParticleTable | None, class_names: Sequence[str],
                     radii: Sequence[float], cutoffs: Sequence[float]) -> ParticleTable:
    """The picks of one training tomogram that score at least their class's cut-off and
    lie on none of its labelled particles or background points: nearer to none than the
    larger of the two class radii (a background point: the pick's radius)."""
    if not len(picks):
        return picks
    index = {name: i for i, name in enumerate(class_names)}
    pick_class = np.array([index[str(c)] for c in picks.classes], dtype=int)
    pick_radius = np.asarray(radii, dtype=float)[pick_class]
    keep = np.asarray(picks.scores) >= np.asarray(cutoffs, dtype=float)[pick_class]
    known = [(labels.xyz, np.array([radii[index[str(c)]] for c in labels.classes]))]
    if negatives is not None and len(negatives):
        known.append((negatives.xyz, np.zeros(len(negatives))))
    for xyz, known_radius in known:
        if not len(xyz):
            continue
        distance = np.linalg.norm(picks.xyz[:, None] - xyz[None], axis=2)
        keep &= ~(distance < np.maximum(pick_radius[:, None], known_radius[None])).any(axis=1)
    return picks.subset(keep)


def paint_self_labels(label_map: np.ndarray, found: ParticleTable,
                      class_names: Sequence[str], radii: Sequence[float],
                      mode: SelfTrainingMode) -> np.ndarray:
    """A copy of the ``uint8`` label map ``(z, y, x)`` with the sphere of each particle
    of ``found`` (voxels ``(x, y, z)``) painted where it was background: with
    ``IGNORE_LABEL`` (``ignore``) or with the particle's class label (``labels``)."""
    if mode not in ("ignore", "labels"):
        raise ValueError(f"self-training mode {mode!r} paints nothing")
    painted = label_map.copy()
    paint_spheres(painted, found, class_names, radii,
                  value=IGNORE_LABEL if mode == "ignore" else None, background_only=True)
    return painted


def to_rows(tables: Sequence[ParticleTable], class_names: Sequence[str]) -> np.ndarray:
    """Particles of several tomograms as float64 rows ``(tomogram, x, y, z, class
    index)``: a checkpoint's and a data-parallel broadcast's form."""
    index = {name: i for i, name in enumerate(class_names)}
    rows = [np.column_stack([np.full(len(t), n), t.xyz,
                             [index[str(c)] for c in t.classes]]).reshape(-1, 5)
            for n, t in enumerate(tables)]
    return np.concatenate(rows) if rows else np.zeros((0, 5))


def from_rows(rows: np.ndarray, tomograms: int,
              class_names: Sequence[str]) -> list[ParticleTable]:
    """The tables of :func:`to_rows` back, one per tomogram (``tomograms`` of them)."""
    rows = np.asarray(rows, dtype=np.float64).reshape(-1, 5)
    names = np.asarray(class_names, dtype=object)
    return [ParticleTable(rows[rows[:, 0] == n, 1:4],
                          names[rows[rows[:, 0] == n, 4].astype(int)])
            for n in range(tomograms)]
