"""SaSi protocols: pretrain, train, pick, evaluate."""

from .protocol_evaluate import ProtSaSiEvaluate
from .protocol_pick import ProtSaSiPick
from .protocol_pretrain import ProtSaSiPretrain
from .protocol_train import ProtSaSiTrain

__all__ = ["ProtSaSiEvaluate", "ProtSaSiPick", "ProtSaSiPretrain", "ProtSaSiTrain"]
