"""Optimizers: SGD, Adam, AdamW."""

from ._base import Optimizer
from .adam import Adam, AdamW
from .sgd import SGD

__all__ = ["Optimizer", "SGD", "Adam", "AdamW"]
