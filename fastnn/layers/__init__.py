"""Layers: Linear, elementwise activations, Softmax."""

from ._base import BufferCache, Layer
from .activations import ACTIVATIONS, Identity, LeakyReLU, ReLU, Sigmoid, Softmax, Tanh
from .linear import Linear

__all__ = [
    "Layer",
    "BufferCache",
    "Linear",
    "Identity",
    "ReLU",
    "LeakyReLU",
    "Sigmoid",
    "Tanh",
    "Softmax",
    "ACTIVATIONS",
]
