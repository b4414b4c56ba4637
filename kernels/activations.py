"""Elementwise activations: forward, and the derivative written in terms of the output.

An activation is named by a small integer code so a dense kernel can fuse it into the pass
that adds the bias (forward) or into the pass after ``dZ @ W.T`` (backward).  Every
derivative here is a function of the activation's *output* ``A``, so a layer keeps only
``A`` and never the pre-activation ``Z``.  That holds for ReLU, leaky ReLU with a
non-negative slope, sigmoid and tanh.
"""

import math

from numba import prange

from ._config import njit, twin

IDENTITY = 0
RELU = 1
LEAKY_RELU = 2
SIGMOID = 3
TANH = 4

CODES = {
    "identity": IDENTITY,
    "relu": RELU,
    "leaky_relu": LEAKY_RELU,
    "sigmoid": SIGMOID,
    "tanh": TANH,
}


@njit
def activate(z, code, alpha):
    """Activation of one value ``z``; ``alpha`` is the leaky-ReLU slope (same dtype as z)."""
    if code == RELU:
        return z if z > 0 else z * 0
    if code == LEAKY_RELU:
        return z if z > 0 else z * alpha
    if code == SIGMOID:
        # exp(-z) overflows to inf for z < -88 (float32); 1 / (1 + inf) is then exactly 0.
        return 1 / (1 + math.exp(-z)) if z >= 0 else math.exp(z) / (1 + math.exp(z))
    if code == TANH:
        return math.tanh(z)
    return z


@njit
def derivative(a, code, alpha):
    """d activation / dz, from the output ``a``."""
    if code == RELU:
        return a * 0 + 1 if a > 0 else a * 0
    if code == LEAKY_RELU:
        return a * 0 + 1 if a > 0 else a * 0 + alpha
    if code == SIGMOID:
        return a * (1 - a)
    if code == TANH:
        return 1 - a * a
    return a * 0 + 1


def _activation_forward(Z, code, alpha, A):
    """A = f(Z), row-parallel.  Z, A: (n, m); A may be Z (in place)."""
    n, m = Z.shape
    s = Z.dtype.type(alpha)
    for i in prange(n):
        for j in range(m):
            A[i, j] = activate(Z[i, j], code, s)


def _activation_backward(A, dA, code, alpha, dZ):
    """dZ = dA * f'(Z), with f' computed from the output A.  dZ may be dA (in place)."""
    n, m = A.shape
    s = A.dtype.type(alpha)
    for i in prange(n):
        for j in range(m):
            dZ[i, j] = dA[i, j] * derivative(A[i, j], code, s)


activation_forward, activation_forward_parallel = twin(_activation_forward)
activation_backward, activation_backward_parallel = twin(_activation_backward)


def code_of(name):
    """Integer code for an activation name (used by the Python layer, not by kernels)."""
    return CODES[name]


__all__ = [
    "IDENTITY",
    "RELU",
    "LEAKY_RELU",
    "SIGMOID",
    "TANH",
    "CODES",
    "activate",
    "derivative",
    "code_of",
    "activation_forward",
    "activation_forward_parallel",
    "activation_backward",
    "activation_backward_parallel",
]
