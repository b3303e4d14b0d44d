"""Training: optimizers and schedules, evaluation, and the masked trainer."""

from lth.training.acceleration import PRECISIONS, Acceleration
from lth.training.evaluate import evaluate
from lth.training.optim import OptimizerSettings, build_optimizer, learning_rate
from lth.training.trainer import RoundResult, Trainer, TrainProgress

__all__ = [
    "PRECISIONS",
    "Acceleration",
    "OptimizerSettings",
    "RoundResult",
    "TrainProgress",
    "Trainer",
    "build_optimizer",
    "evaluate",
    "learning_rate",
]
