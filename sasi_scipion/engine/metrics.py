"""Scoring picked particles against ground truth: precision, recall, F1 and F-beta.

Three rules:

* :func:`evaluate_occupancy` — the SHREC 2021 localization rule. A pick is a hit
  when it lands inside a true particle's occupancy (dilated once by a 6-connected
  cross), each true particle counting once.
* :func:`evaluate_distance` — a pick is a hit when it lies within the true
  particle's class radius (voxels) of a true centre, with greedy one-to-one
  matching by ascending distance.
* :func:`evaluate_czii` — the CZII CryoET Object Identification challenge (2024-2025):
  the distance rule at half the class radius, per class only, counts summed over
  tomograms, F-beta (beta 4: recall-heavy) per class, and their weighted mean.

Coordinates are voxels, 0-based, columns ``(x, y, z)`` as in
:class:`~sasi_scipion.engine.coordinates.ParticleTable`; volumes are numpy arrays
indexed ``[z, y, x]``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from .coordinates import ParticleTable
from .defaults import UNSCORED_CLASSES
from .errors import SasiInputError, input_name

OCCUPANCY_RULE = "shrec2021-occupancy"
DISTANCE_RULE = "distance"
CZII_RULE = "czii-fbeta"
CZII_BETA = 4.0
CZII_RADIUS_FRACTION = 0.5
"""A CZII hit lies within this fraction of the true particle's class radius."""
CZII_WEIGHTS = {"apo-ferritin": 1.0, "beta-amylase": 0.0, "beta-galactosidase": 2.0,
                "ribosome": 1.0, "thyroglobulin": 2.0, "virus-like-particle": 1.0}
"""The challenge's class weights (beta-amylase is reported but not scored)."""

# Pairs are built for this many picks at a time to bound the (picks, truth) matrix.
_PAIR_CHUNK = 2048


@dataclass
class Scores:
    """Counts of true positives, false positives and false negatives."""

    tp: int = 0
    fp: int = 0
    fn: int = 0

    @property
    def precision(self) -> float:
        """``tp / (tp + fp)``, 0.0 when there is no pick."""
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        """``tp / (tp + fn)``, 0.0 when there is no true particle."""
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        """Harmonic mean of precision and recall, 0.0 when both are 0."""
        return self.fbeta(1.0)

    def fbeta(self, beta: float) -> float:
        """``(1 + beta²) p r / (beta² p + r)`` (recall weighs ``beta`` times as much as
        precision), 0.0 when precision and recall are both 0."""
        p, r = self.precision, self.recall
        return (1 + beta**2) * p * r / (beta**2 * p + r) if p + r else 0.0

    def __add__(self, other: Scores) -> Scores:
        """Counts summed (e.g. over tomograms)."""
        return Scores(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)

    def to_dict(self) -> dict[str, float | int]:
        """Counts and ratios as plain Python numbers (JSON-ready)."""
        return {
            "tp": int(self.tp),
            "fp": int(self.fp),
            "fn": int(self.fn),
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
        }


@dataclass
class Evaluation:
    """Result of one evaluation.

    Attributes:
        rule: ``"shrec2021-occupancy"`` or ``"distance"``.
        pooled: class-agnostic scores (a pick of any class may match any particle).
        per_class: scores per class name, matching only picks and particles of
            that class.
    """

    rule: str
    pooled: Scores
    per_class: dict[str, Scores] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """``{"rule": ..., "pooled": {...}, "per_class": {name: {...}}}`` (JSON-ready)."""
        return {
            "rule": self.rule,
            "pooled": self.pooled.to_dict(),
            "per_class": {name: s.to_dict() for name, s in self.per_class.items()},
        }

    def format_table(self) -> str:
        """A plain-text table: one row per class and a ``pooled`` row."""
        rows = [*sorted(self.per_class.items()), ("pooled", self.pooled)]
        width = max([len("class")] + [len(name) for name, _ in rows])
        header = (
            f"{'class':<{width}}  {'TP':>6} {'FP':>6} {'FN':>6} "
            f"{'precision':>9} {'recall':>6} {'F1':>6}"
        )
        lines = [f"rule: {self.rule}", header, "-" * len(header)]
        for name, s in rows:
            lines.append(
                f"{name:<{width}}  {s.tp:>6d} {s.fp:>6d} {s.fn:>6d} "
                f"{s.precision:>9.3f} {s.recall:>6.3f} {s.f1:>6.3f}"
            )
        return "\n".join(lines)


@dataclass
class FBetaEvaluation:
    """Per-class F-beta scores and their weighted mean (:func:`evaluate_czii`).

    Attributes:
        beta: recall weighs ``beta`` times as much as precision.
        per_class: counts per class name, summed over tomograms.
        weights: weight of each class of ``per_class`` in the mean (0: reported only).
    """

    beta: float
    per_class: dict[str, Scores]
    weights: dict[str, float]

    @property
    def score(self) -> float:
        """Weighted mean of the per-class F-betas; 0.0 when every weight is 0."""
        total = sum(self.weights.values())
        weighted = sum(w * self.per_class[name].fbeta(self.beta)
                       for name, w in self.weights.items())
        return weighted / total if total else 0.0

    def to_dict(self) -> dict:
        """``{"rule", "beta", "radius_fraction", "score", "per_class": {name: {tp, fp, fn,
        precision, recall, f1, fbeta, weight}}}`` (JSON-ready)."""
        return {
            "rule": CZII_RULE,
            "beta": self.beta,
            "radius_fraction": CZII_RADIUS_FRACTION,
            "score": self.score,
            "per_class": {name: {**s.to_dict(), "fbeta": s.fbeta(self.beta),
                                 "weight": self.weights[name]}
                          for name, s in self.per_class.items()},
        }

    def format_table(self) -> str:
        """A plain-text table: one row per class and the weighted mean."""
        label = f"F{self.beta:g}"
        width = max([len("class")] + [len(name) for name in self.per_class])
        header = (f"{'class':<{width}}  {'TP':>6} {'FP':>6} {'FN':>6} "
                  f"{'precision':>9} {'recall':>6} {label:>6} {'weight':>6}")
        lines = [f"rule: {CZII_RULE} (beta {self.beta:g}, hit within "
                 f"{CZII_RADIUS_FRACTION:g} x radius)", header, "-" * len(header)]
        for name, s in sorted(self.per_class.items()):
            lines.append(
                f"{name:<{width}}  {s.tp:>6d} {s.fp:>6d} {s.fn:>6d} {s.precision:>9.3f} "
                f"{s.recall:>6.3f} {s.fbeta(self.beta):>6.3f} {self.weights[name]:>6g}")
        lines.append(f"weighted {label}: {self.score:.3f}")
        return "\n".join(lines)


def _pick_order(picks: ParticleTable) -> np.ndarray:
    """Pick indices by descending score (stable), or file order without scores."""
    if picks.scores is None:
        return np.arange(len(picks))
    return np.argsort(-picks.scores, kind="stable")


def _pick_rank(picks: ParticleTable) -> np.ndarray:
    """Rank of each pick in :func:`_pick_order` (0: processed first)."""
    rank = np.empty(len(picks), dtype=np.int64)
    rank[_pick_order(picks)] = np.arange(len(picks))
    return rank


def dilate_occupancy(occupancy: np.ndarray) -> np.ndarray:
    """Dilate a labelled ``(z, y, x)`` map once with a 6-connected cross.

    A background voxel (0) takes the id of a face neighbour; where neighbours
    disagree it takes the largest id. Labelled voxels keep their id.
    """
    occ = np.asarray(occupancy)
    grown = np.zeros_like(occ)
    for axis in range(3):
        n = occ.shape[axis]
        if n < 2:
            continue
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[axis], hi[axis] = slice(0, n - 1), slice(1, n)
        lo_t, hi_t = tuple(lo), tuple(hi)
        # neighbour at +1 shifted onto its lower voxel, and neighbour at -1 onto its upper voxel
        np.maximum(grown[lo_t], occ[hi_t], out=grown[lo_t])
        np.maximum(grown[hi_t], occ[lo_t], out=grown[hi_t])
    return np.where(occ != 0, occ, grown)


def _voxel_ids(picks: ParticleTable, labels: np.ndarray) -> np.ndarray:
    """Label under each pick (rounded to the nearest voxel); 0 outside the volume."""
    ids = np.zeros(len(picks), dtype=np.int64)
    if not len(picks):
        return ids
    xyz = np.floor(picks.xyz + 0.5).astype(np.int64)
    zyx = xyz[:, ::-1]
    shape = np.array(labels.shape)
    inside = np.all((zyx >= 0) & (zyx < shape), axis=1)
    z, y, x = zyx[inside].T
    ids[inside] = labels[z, y, x]
    return ids


def _check_occupancy(occupancy: np.ndarray, truth: ParticleTable) -> np.ndarray:
    occ = np.asarray(occupancy)
    if occ.ndim != 3:
        raise SasiInputError(
            f"occupancy map has {occ.ndim} dimension(s), expected a 3D (z, y, x) volume; "
            "give the occupancy .mrc of the tomogram"
        )
    if not np.issubdtype(occ.dtype, np.integer) and (
        not np.all(np.isfinite(occ)) or not np.array_equal(occ, np.round(occ))
    ):
        raise SasiInputError(
            "occupancy map holds non-integer values; give a map of particle ids "
            "(1-based truth row numbers, 0 = background)"
        )
    occ = occ.astype(np.int64)
    if occ.size and occ.min() < 0:
        raise SasiInputError(
            "occupancy map holds negative ids; give a map of particle ids "
            "(1-based truth row numbers, 0 = background)"
        )
    if occ.size and occ.max() > len(truth):
        raise SasiInputError(
            f"occupancy map and truth table do not match (map id {int(occ.max())} > "
            f"{len(truth)} truth particles); give the truth .tsv written with this occupancy map"
        )
    return occ


def evaluate_occupancy(
    picks: ParticleTable,
    truth: ParticleTable,
    occupancy: np.ndarray,
    unscored: Sequence[str] = UNSCORED_CLASSES,
) -> Evaluation:
    """Score ``picks`` with the SHREC 2021 localization rule.

    Args:
        picks: picked centres (voxels, ``x, y, z``); processed by descending score
            when scores exist, else in file order, so the best duplicate is the hit.
        truth: the true particles; row ``i`` has id ``i + 1`` in ``occupancy``.
        occupancy: integer ``(z, y, x)`` map of 1-based truth row numbers, 0 for
            background. It is dilated once with a 6-connected cross.
        unscored: class names whose particles are not scored: picks landing on them
            are ignored and they are never false negatives.

    Returns:
        An :class:`Evaluation` with rule ``"shrec2021-occupancy"``.

    Raises:
        SasiInputError: ``occupancy`` is not 3D, or holds an id beyond the truth table.
    """
    occ = _check_occupancy(occupancy, truth)
    unscored_set = {str(c) for c in unscored}
    truth_classes = np.array([str(c) for c in truth.classes], dtype=object)
    pick_classes = np.array([str(c) for c in picks.classes], dtype=object)
    scored_truth = np.array([c not in unscored_set for c in truth_classes], dtype=bool)
    ids = _voxel_ids(picks, dilate_occupancy(occ))
    order = _pick_order(picks)

    pooled = Scores()
    hit = np.zeros(len(truth), dtype=bool)
    for i in order:
        row = int(ids[i]) - 1
        if row < 0:
            pooled.fp += 1
        elif not scored_truth[row]:
            continue
        elif hit[row]:
            pooled.fp += 1
        else:
            hit[row] = True
            pooled.tp += 1
    pooled.fn = int((scored_truth & ~hit).sum())

    names = {c for c in truth_classes if c not in unscored_set}
    names |= {c for c in pick_classes if c not in unscored_set and c not in set(truth_classes)}
    per_class: dict[str, Scores] = {}
    for name in sorted(names):
        scores = Scores()
        hit = np.zeros(len(truth), dtype=bool)
        for i in order:
            if pick_classes[i] != name:
                continue
            row = int(ids[i]) - 1
            if row < 0:
                scores.fp += 1
            elif not scored_truth[row]:
                continue
            elif truth_classes[row] != name or hit[row]:
                scores.fp += 1
            else:
                hit[row] = True
                scores.tp += 1
        scores.fn = int(((truth_classes == name) & ~hit).sum())
        per_class[name] = scores
    return Evaluation(OCCUPANCY_RULE, pooled, per_class)


def _greedy_match(
    pick_xyz: np.ndarray, pick_rank: np.ndarray, truth_xyz: np.ndarray, truth_radius: np.ndarray
) -> int:
    """Number of one-to-one matches, greedy by ascending distance (voxels).

    A pair qualifies when the distance is at most the truth particle's radius.
    Ties are broken by pick rank, then by truth row.
    """
    if not len(pick_xyz) or not len(truth_xyz):
        return 0
    p_idx, t_idx, dist = [], [], []
    for start in range(0, len(pick_xyz), _PAIR_CHUNK):
        chunk = pick_xyz[start:start + _PAIR_CHUNK]
        d = np.linalg.norm(chunk[:, None, :] - truth_xyz[None, :, :], axis=2)
        p, t = np.nonzero(d <= truth_radius[None, :])
        p_idx.append(p + start)
        t_idx.append(t)
        dist.append(d[p, t])
    p_all, t_all, d_all = np.concatenate(p_idx), np.concatenate(t_idx), np.concatenate(dist)
    order = np.lexsort((t_all, pick_rank[p_all], d_all))
    pick_used = np.zeros(len(pick_xyz), dtype=bool)
    truth_used = np.zeros(len(truth_xyz), dtype=bool)
    matches = 0
    for k in order:
        p, t = p_all[k], t_all[k]
        if pick_used[p] or truth_used[t]:
            continue
        pick_used[p] = truth_used[t] = True
        matches += 1
    return matches


def _truth_radii(truth: ParticleTable, radii: Mapping[str, float]) -> np.ndarray:
    """The class radius (voxels) of each true particle.

    Raises:
        SasiInputError: a truth class has no radius in ``radii``.
    """
    truth_classes = [str(c) for c in truth.classes]
    missing = sorted({c for c in truth_classes if c not in radii})
    if missing:
        raise SasiInputError(
            f"no radius for truth class(es) {', '.join(missing)}; give "
            f"{input_name('radii', missing[0])}=R (voxels) for each"
        )
    return np.array([float(radii[c]) for c in truth_classes], dtype=np.float64)


def _per_class_distance(
    picks: ParticleTable, rank: np.ndarray, truth: ParticleTable, truth_radius: np.ndarray
) -> dict[str, Scores]:
    """Distance-rule scores per class (only same-class pairs match), for every class of
    ``picks`` or ``truth``; ``rank`` from :func:`_pick_rank`, ``truth_radius`` the hit
    radius (voxels) of each true particle."""
    truth_classes = np.array([str(c) for c in truth.classes], dtype=object)
    pick_classes = np.array([str(c) for c in picks.classes], dtype=object)
    per_class: dict[str, Scores] = {}
    for name in sorted(set(truth_classes) | set(pick_classes)):
        p_sel = pick_classes == name
        t_sel = truth_classes == name
        tp = _greedy_match(picks.xyz[p_sel], rank[p_sel], truth.xyz[t_sel], truth_radius[t_sel])
        per_class[name] = Scores(tp, int(p_sel.sum()) - tp, int(t_sel.sum()) - tp)
    return per_class


def evaluate_distance(
    picks: ParticleTable, truth: ParticleTable, radii: dict[str, float]
) -> Evaluation:
    """Score ``picks`` by distance to the true centres.

    A pick matches an unmatched true particle within that particle's class radius
    (voxels, Euclidean in ``x, y, z``); matching is greedy one-to-one by ascending
    distance over all qualifying (pick, truth) pairs, ties going to the better
    scored pick. ``pooled`` matches across classes; ``per_class`` matches only
    same-class pairs.

    Raises:
        SasiInputError: a truth class has no radius in ``radii``.
    """
    truth_radius = _truth_radii(truth, radii)
    rank = _pick_rank(picks)
    tp = _greedy_match(picks.xyz, rank, truth.xyz, truth_radius)
    pooled = Scores(tp, len(picks) - tp, len(truth) - tp)
    return Evaluation(DISTANCE_RULE, pooled, _per_class_distance(picks, rank, truth, truth_radius))


def default_weights(class_names: Iterable[str]) -> dict[str, float]:
    """``CZII_WEIGHTS`` when every class is one of the challenge's, else 1 per class."""
    names = sorted(set(class_names))
    if all(name in CZII_WEIGHTS for name in names):
        return {name: CZII_WEIGHTS[name] for name in names}
    return dict.fromkeys(names, 1.0)


def evaluate_czii(
    picks: ParticleTable | Sequence[ParticleTable],
    truth: ParticleTable | Sequence[ParticleTable],
    radii: Mapping[str, float],
    beta: float = CZII_BETA,
    weights: Mapping[str, float] | None = None,
) -> FBetaEvaluation:
    """Score ``picks`` with the CZII challenge metric.

    Per class, a pick is a true positive when it lies within ``CZII_RADIUS_FRACTION``
    (0.5) of the class radius of a not yet matched true particle of its class (voxels,
    Euclidean in ``x, y, z``; inclusive); matching is the distance rule's greedy
    one-to-one by ascending distance (ties to the better scored pick). Counts are summed
    over tomograms per class, then each class gets its F-beta and the score is their
    weighted mean.

    Args:
        picks: the picks of one tomogram, or of several (paired in order with ``truth``).
        truth: the true particles of the same tomogram(s).
        radii: class name -> radius in voxels; every truth class needs one.
        beta: recall weighs ``beta`` times as much as precision (the challenge: 4).
        weights: class name -> weight (>= 0; 0: reported, not scored), overriding
            :func:`default_weights` (the challenge's weights when every class is a
            challenge class, else 1 each) for the classes it names.

    Returns:
        An :class:`FBetaEvaluation` over every class of the picks or the truth.

    Raises:
        ValueError: ``picks`` and ``truth`` hold different numbers of tomograms.
        SasiInputError: a truth class without a radius, or a negative weight.
    """
    pick_tables = [picks] if isinstance(picks, ParticleTable) else list(picks)
    truth_tables = [truth] if isinstance(truth, ParticleTable) else list(truth)
    if len(pick_tables) != len(truth_tables):
        raise ValueError(f"{len(pick_tables)} pick table(s) for {len(truth_tables)} truth "
                         "table(s); give one of each per tomogram")
    negative = sorted(name for name, w in (weights or {}).items() if not w >= 0)
    if negative:
        raise SasiInputError(f"negative weight for class(es) {', '.join(negative)}; "
                             "give weights >= 0 (0: not scored)")
    per_class: dict[str, Scores] = {}
    for tomo_picks, tomo_truth in zip(pick_tables, truth_tables):
        hit_radius = CZII_RADIUS_FRACTION * _truth_radii(tomo_truth, radii)
        counts = _per_class_distance(tomo_picks, _pick_rank(tomo_picks), tomo_truth, hit_radius)
        for name, scores in counts.items():
            per_class[name] = per_class.get(name, Scores()) + scores
    class_weights = default_weights(per_class)
    class_weights.update({n: float(w) for n, w in (weights or {}).items() if n in per_class})
    return FBetaEvaluation(float(beta), dict(sorted(per_class.items())), class_weights)
