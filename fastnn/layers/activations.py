"""Elementwise activation layers and the stand-alone Softmax layer."""

from typing import Any

import numpy as np

from fastnn import kernels as K

from .._threads import pick
from .._validation import check_number
from ._base import BufferCache, Layer
from ._inputs import layer_grad, layer_input


class _Elementwise(Layer):
    """An activation with a kernel code; Sequential fuses it into the preceding Linear."""

    def __init__(self) -> None:
        self._buffers = BufferCache()
        self._A = None

    def forward(self, X: np.ndarray) -> np.ndarray:
        X = layer_input(X, type(self).__name__)
        A = self._buffers.get("out", X.shape, X.dtype)
        pick(K.activation_forward, K.activation_forward_parallel, X.size)(
            X, self.code, self.alpha, A
        )
        self._A = A
        return A

    def backward(self, dA: np.ndarray) -> np.ndarray:
        if self._A is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before forward")
        A = self._A
        dA = layer_grad(dA, A.shape, A.dtype, type(self).__name__)
        dZ = self._buffers.get("dX", A.shape, A.dtype)
        pick(K.activation_backward, K.activation_backward_parallel, A.size)(
            A, dA, self.code, self.alpha, dZ
        )
        return dZ


class Identity(_Elementwise):
    code = K.IDENTITY


class ReLU(_Elementwise):
    """max(0, x)."""

    code = K.RELU


class LeakyReLU(_Elementwise):
    """x for x > 0, negative_slope * x otherwise (negative_slope >= 0)."""

    code = K.LEAKY_RELU

    def __init__(self, negative_slope: float = 0.01) -> None:
        super().__init__()
        # The backward pass reads the sign of the output, which matches the input's sign only
        # for a non-negative slope.
        self.alpha = check_number(negative_slope, "negative_slope", low=0.0)

    def get_config(self) -> dict[str, Any]:
        return {"negative_slope": self.alpha}


class Sigmoid(_Elementwise):
    """1 / (1 + exp(-x))."""

    code = K.SIGMOID


class Tanh(_Elementwise):
    code = K.TANH


class Softmax(Layer):
    """Row softmax as a layer of its own, with the full Jacobian-vector backward.

    Pair it with :class:`~fastnn.CrossEntropy` (on probabilities).  For training a classifier,
    :class:`~fastnn.SoftmaxCrossEntropy` on logits does the same in one fused, more stable pass.
    """

    def __init__(self) -> None:
        self._buffers = BufferCache()
        self._P = None

    def forward(self, X: np.ndarray) -> np.ndarray:
        X = layer_input(X, "Softmax")
        P = self._buffers.get("out", X.shape, X.dtype)
        pick(K.softmax_forward, K.softmax_forward_parallel, X.size)(X, P)
        self._P = P
        return P

    def backward(self, dP: np.ndarray) -> np.ndarray:
        if self._P is None:
            raise RuntimeError("Softmax.backward called before forward")
        dP = layer_grad(dP, self._P.shape, self._P.dtype, "Softmax")
        dZ = self._buffers.get("dX", self._P.shape, self._P.dtype)
        pick(K.softmax_backward, K.softmax_backward_parallel, dZ.size)(self._P, dP, dZ)
        return dZ


ACTIVATIONS = {
    "identity": Identity,
    "relu": ReLU,
    "leaky_relu": LeakyReLU,
    "sigmoid": Sigmoid,
    "tanh": Tanh,
}
