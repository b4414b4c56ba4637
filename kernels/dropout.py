"""Inverted dropout with a counter-based mask: no random state, no stored mask.

Whether element ``(i, j)`` of call number ``counter`` is kept is a pure function of
``(seed, counter, i * m + j)``: a splitmix64 hash of those three numbers compared with a
threshold.  Any thread can compute any element's decision on its own, so the parallel build
is race-free and gives bit-for-bit the same mask as the serial one, and backward recomputes
the mask instead of keeping an (n, m) array from forward.
"""

import numpy as np
from numba import prange

from ._config import njit, twin

# splitmix64 constants (Steele, Lea and Flood, "Fast splittable pseudorandom number
# generators", 2014): the golden-ratio increment and the two multipliers of the finaliser.
_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_MUL1 = np.uint64(0xBF58476D1CE4E5B9)
_MUL2 = np.uint64(0x94D049BB133111EB)
_S30 = np.uint64(30)
_S27 = np.uint64(27)
_S31 = np.uint64(31)
_ONE = np.uint64(1)


@njit
def mix64(z):
    """splitmix64's finaliser: a bijection of uint64 that scrambles every input bit."""
    z = (z ^ (z >> _S30)) * _MUL1
    z = (z ^ (z >> _S27)) * _MUL2
    return z ^ (z >> _S31)


@njit
def call_key(seed, counter):
    """Per-call key from the layer's seed and its call counter (both uint64)."""
    return mix64(seed + mix64((counter + _ONE) * _GAMMA))


@njit
def element_hash(key, index):
    """Uniform uint64 for element ``index`` (uint64) of the call with ``key``."""
    return mix64(key + (index + _ONE) * _GAMMA)


def _dropout_forward(X, seed, counter, threshold, scale, out):
    """out = X * keep / (1 - p), where keep(i, j) = hash(seed, counter, i*m + j) >= threshold.

    X, out (n, m); ``seed``, ``counter``, ``threshold`` uint64 (threshold = p * 2**64, so an
    element is dropped with probability p); ``scale`` = 1 / (1 - p) (0 when p == 1).  out may
    be X.
    """
    n, m = X.shape
    s = X.dtype.type(scale)
    key = call_key(seed, counter)
    for i in prange(n):
        base = np.uint64(i) * np.uint64(m)
        for j in range(m):
            h = element_hash(key, base + np.uint64(j))
            out[i, j] = X[i, j] * s if h >= threshold else X[i, j] * 0


def _dropout_backward(dout, seed, counter, threshold, scale, dX):
    """dX = dout * keep / (1 - p) with the mask of the forward call made with the same
    ``seed`` and ``counter``.  dX may be dout."""
    n, m = dout.shape
    s = dout.dtype.type(scale)
    key = call_key(seed, counter)
    for i in prange(n):
        base = np.uint64(i) * np.uint64(m)
        for j in range(m):
            h = element_hash(key, base + np.uint64(j))
            dX[i, j] = dout[i, j] * s if h >= threshold else dout[i, j] * 0


dropout_forward, dropout_forward_parallel = twin(_dropout_forward)
dropout_backward, dropout_backward_parallel = twin(_dropout_backward)


def threshold_of(p):
    """uint64 threshold for drop probability ``p`` in [0, 1] (a Python helper, not a kernel)."""
    return np.uint64(min(int(p * 2.0**64), 2**64 - 1))


__all__ = [
    "dropout_forward",
    "dropout_forward_parallel",
    "dropout_backward",
    "dropout_backward_parallel",
]
