"""SaSi viewers."""

from .viewers import SaSiEvaluationViewer, SaSiPicksViewer, SaSiTrainingViewer

__all__ = ["SaSiEvaluationViewer", "SaSiPicksViewer", "SaSiTrainingViewer"]
