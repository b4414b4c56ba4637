"""Layers: Linear, elementwise activations, Softmax, GELU, Dropout, BatchNorm1d, LayerNorm."""

from ._base import BufferCache, Layer
from .activations import ACTIVATIONS, Identity, LeakyReLU, ReLU, Sigmoid, Softmax, Tanh
from .dropout import Dropout
from .gelu import GELU
from .linear import Linear
from .normalization import BatchNorm1d, LayerNorm

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
    "GELU",
    "Dropout",
    "BatchNorm1d",
    "LayerNorm",
]
