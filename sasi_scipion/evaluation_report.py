"""Labelled rows of an evaluation, so that no score is read as what it is not.

An evaluation (``Evaluation.to_dict()`` of the engine, stored by 'sasi_scipion - evaluate')
holds per-class scores, where only a pick of a class may match a particle of that
class, and pooled scores, where a pick of any class may match any particle. The
pooled F1 therefore counts a pick of the wrong class as a hit; the class-aware total
(the per-class counts summed) does not. No pyworkflow or torch import.
"""

from __future__ import annotations

from .engine.metrics import Scores

CLASS_AWARE = "all classes, class-aware"
"""Row label of the per-class counts summed: a hit needs the right class."""
CLASS_AGNOSTIC = "all classes, class-agnostic"
"""Row label of the pooled scores: a pick of any class may match any particle."""
COLUMNS = ("TP", "FP", "FN", "precision", "recall", "F1")


def _scores(entry: dict) -> Scores:
    return Scores(int(entry["tp"]), int(entry["fp"]), int(entry["fn"]))


def class_aware_total(result: dict) -> Scores:
    """The per-class counts of ``result`` summed over classes."""
    total = Scores()
    for entry in result["per_class"].values():
        total = total + _scores(entry)
    return total


def report_rows(result: dict) -> list[tuple[str, Scores]]:
    """``(label, scores)``: one row per class (class-aware, sorted by name), then the
    class-aware total, then the class-agnostic (pooled) scores."""
    rows = [(name, _scores(entry)) for name, entry in sorted(result["per_class"].items())]
    return rows + [(CLASS_AWARE, class_aware_total(result)),
                   (CLASS_AGNOSTIC, _scores(result["pooled"]))]


def format_cells(scores: Scores) -> list[str]:
    """The cells of one row in :data:`COLUMNS` order (ratios with 3 decimals)."""
    return [str(scores.tp), str(scores.fp), str(scores.fn), f"{scores.precision:.3f}",
            f"{scores.recall:.3f}", f"{scores.f1:.3f}"]


def headline(result: dict) -> str:
    """One line with both F1 values, each named."""
    return (f"F1 class-aware {class_aware_total(result).f1:.3f} (a pick must have the "
            f"particle's class), class-agnostic {_scores(result['pooled']).f1:.3f} (any "
            "class counts)")
