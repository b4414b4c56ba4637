"""Row softmax, log-softmax and the softmax Jacobian-vector product, numerically stable.

Each row is shifted by its maximum before ``exp``, so logits of +-1e4 give exact 0 and 1
probabilities and finite log-probabilities (no inf - inf).
"""

import math

from numba import prange

from ._config import njit, twin


@njit
def row_max(Z, i):
    m = Z[i, 0]
    for j in range(1, Z.shape[1]):
        if Z[i, j] > m:
            m = Z[i, j]
    return m


@njit
def row_logsumexp(Z, i):
    """log(sum(exp(Z[i]))) computed stably; returns (max, logsumexp)."""
    m = row_max(Z, i)
    s = Z[i, 0] * 0
    for j in range(Z.shape[1]):
        s += math.exp(Z[i, j] - m)
    return m, m + math.log(s)


def _softmax_forward(Z, P):
    """P = softmax(Z) over each row.  Z, P (n, k); P may be Z."""
    n, k = Z.shape
    for i in prange(n):
        m = row_max(Z, i)
        s = Z[i, 0] * 0
        for j in range(k):
            e = math.exp(Z[i, j] - m)
            P[i, j] = e
            s += e
        r = 1 / s
        for j in range(k):
            P[i, j] *= r


def _log_softmax_forward(Z, L):
    """L = log(softmax(Z)) over each row.  L may be Z."""
    n, k = Z.shape
    for i in prange(n):
        _, lse = row_logsumexp(Z, i)
        for j in range(k):
            L[i, j] = Z[i, j] - lse


def _softmax_backward(P, dP, dZ):
    """dZ = P * (dP - sum(dP * P)) per row: the softmax Jacobian-vector product."""
    n, k = P.shape
    for i in prange(n):
        dot = P[i, 0] * 0
        for j in range(k):
            dot += dP[i, j] * P[i, j]
        for j in range(k):
            dZ[i, j] = P[i, j] * (dP[i, j] - dot)


softmax_forward, softmax_forward_parallel = twin(_softmax_forward)
log_softmax_forward, log_softmax_forward_parallel = twin(_log_softmax_forward)
softmax_backward, softmax_backward_parallel = twin(_softmax_backward)

__all__ = [
    "softmax_forward",
    "softmax_forward_parallel",
    "log_softmax_forward",
    "log_softmax_forward_parallel",
    "softmax_backward",
    "softmax_backward_parallel",
]
