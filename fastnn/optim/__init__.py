"""Optimizers: SGD, Adam, AdamW, RMSprop, Adagrad; learning-rate schedules."""

from ._base import Optimizer
from .adagrad import Adagrad
from .adam import Adam, AdamW
from .rmsprop import RMSprop
from .schedules import (
    CosineAnnealingLR,
    ExponentialLR,
    LRScheduler,
    ReduceLROnPlateau,
    StepLR,
)
from .sgd import SGD

__all__ = [
    "Optimizer",
    "SGD",
    "Adam",
    "AdamW",
    "RMSprop",
    "Adagrad",
    "LRScheduler",
    "StepLR",
    "ExponentialLR",
    "CosineAnnealingLR",
    "ReduceLROnPlateau",
]
