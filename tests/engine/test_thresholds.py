"""Per-class score cut-offs from the user's labels (hand-computed cases)."""

from __future__ import annotations

import numpy as np
import pytest

from sasi_scipion.engine.coordinates import ParticleTable
from sasi_scipion.engine.thresholds import (
    RECOVERED_QUANTILE,
    label_recall,
    label_recall_warning,
    labelled_scores,
    score_cutoffs,
)


def _picks() -> ParticleTable:
    return ParticleTable([[10, 10, 10], [11, 10, 10], [30, 30, 30], [50, 50, 50], [70, 5, 5]],
                         ["a", "a", "a", "b", "a"], [0.6, 0.9, 0.5, 0.8, 0.2])


def test_each_label_takes_the_best_pick_of_its_class_within_its_radius() -> None:
    labels = ParticleTable([[10, 12, 10], [30, 30, 34], [90, 90, 90], [50, 50, 50]],
                           ["a", "a", "a", "a"])
    # label 1: picks 0 and 1 within 3 voxels -> 0.9; label 2 is 4 away: missed at r = 3;
    # label 3 has no pick near; label 4 sits on a pick of class b, which does not count
    assert list(labelled_scores(_picks(), labels, "a", 3.0)) == [0.9]
    assert list(labelled_scores(_picks(), labels, "a", 4.0)) == [0.9, 0.5]


def test_cutoffs_are_a_fraction_of_the_labelled_score_quantile() -> None:
    labels = ParticleTable([[10, 10, 10], [30, 30, 30], [50, 50, 50]], ["a", "a", "b"])
    cutoffs = score_cutoffs([_picks()], [labels], ["a", "b", "c"], [2.0, 2.0, 2.0], factor=0.5)
    expected_a = 0.5 * float(np.quantile([0.9, 0.5], RECOVERED_QUANTILE))
    # c: no label picked as c: the cut-off of every label's best pick of any class
    agnostic = 0.5 * float(np.quantile([0.9, 0.5, 0.8], RECOVERED_QUANTILE))
    assert cutoffs == pytest.approx([expected_a, 0.4, agnostic], abs=1e-4)
    # the weak pick far from every label (0.2) falls below class a's cut-off
    assert cutoffs[0] > 0.2


def test_a_class_missed_as_itself_gets_the_class_agnostic_cutoff() -> None:
    """Class b's label lies on a pick of class a (0.9): b is confused, not absent, and
    its picks are cut where any class's picks on the labels score; no pick on any
    label at all leaves no cut-off."""
    picks = ParticleTable([[10, 10, 10], [30, 30, 30]], ["a", "a"], [0.6, 0.9])
    labels = ParticleTable([[10, 10, 10], [30, 30, 30]], ["a", "b"])
    cutoffs = score_cutoffs([picks], [labels], ["a", "b"], [2.0, 2.0], factor=1.0)
    assert cutoffs == pytest.approx([0.6, float(np.quantile([0.6, 0.9], RECOVERED_QUANTILE))],
                                    abs=1e-4)
    far = ParticleTable([[90, 90, 90]], ["a"])
    assert score_cutoffs([picks], [far], ["a", "b"], [2.0, 2.0]) == [0.0, 0.0]


def test_cutoffs_pool_the_labels_of_every_training_tomogram() -> None:
    second = ParticleTable([[5, 5, 5]], ["a"], [0.3])
    labels = [ParticleTable([[10, 10, 10]], ["a"]), ParticleTable([[5, 5, 5]], ["a"])]
    cutoffs = score_cutoffs([_picks(), second], labels, ["a"], [2.0], factor=1.0)
    assert cutoffs[0] == pytest.approx(float(np.quantile([0.9, 0.3], RECOVERED_QUANTILE)),
                                       abs=1e-4)


def test_label_recall_counts_the_labels_a_pick_of_their_class_lies_on() -> None:
    """Over two training tomograms: class a has 3 of 4 labels under a pick of a; class
    b's one label sits under a pick of a only (missed as b); the warning names b."""
    labels = [ParticleTable([[10, 12, 10], [30, 30, 30], [90, 90, 90]], ["a", "a", "a"]),
              ParticleTable([[50, 50, 50], [70, 5, 5]], ["b", "a"])]
    picks = [_picks(), ParticleTable([[50, 50, 51], [70, 6, 5]], ["a", "a"], [0.7, 0.6])]
    recall = label_recall(picks, labels, ["a", "b"], [3.0, 3.0])
    assert recall == [0.75, 0.0]
    warning = label_recall_warning(["a", "b"], recall)
    assert "(b 0% of the labels of that class)" in warning and "a 75%" not in warning
    assert "another settings.seed" in warning
    assert label_recall_warning(["a", "b"], [0.75, 0.5]) is None
