"""Loss kernels: each returns the mean loss over the batch and writes its gradient.

Gradients are those of the *mean*, so they carry the 1/n factor.  Per-row losses are summed
in a ``prange`` reduction; every thread writes only its own rows of the gradient.
"""

import math

from numba import prange

from ._config import twin
from .softmax import row_logsumexp


def _softmax_xent_labels(Z, y, dZ):
    """Softmax cross-entropy from logits and integer labels, fused.

    Z (n, k) logits, y (n,) integer labels in [0, k).  Writes dZ = (softmax(Z) - onehot(y)) / n
    and returns mean_i(logsumexp(Z_i) - Z_i[y_i]).  No one-hot array is built.  dZ may be Z.
    """
    n, k = Z.shape
    inv_n = Z.dtype.type(1.0 / n)
    total = 0.0
    for i in prange(n):
        m, lse = row_logsumexp(Z, i)
        t = y[i]
        total += lse - Z[i, t]
        for j in range(k):
            dZ[i, j] = math.exp(Z[i, j] - lse) * inv_n
        dZ[i, t] -= inv_n
    return total / n


def _softmax_xent_targets(Z, T, dZ):
    """Softmax cross-entropy from logits and target distributions (one-hot or soft rows).

    Returns mean_i(-sum_j T_ij log softmax(Z)_ij); writes dZ = (softmax(Z) * sum_j T_ij - T) / n,
    which is (P - T) / n for rows of T that sum to one.  dZ may be Z.
    """
    n, k = Z.shape
    inv_n = Z.dtype.type(1.0 / n)
    total = 0.0
    for i in prange(n):
        m, lse = row_logsumexp(Z, i)
        row = 0.0
        tsum = Z[i, 0] * 0
        for j in range(k):
            row -= T[i, j] * (Z[i, j] - lse)
            tsum += T[i, j]
        total += row
        for j in range(k):
            dZ[i, j] = (math.exp(Z[i, j] - lse) * tsum - T[i, j]) * inv_n
    return total / n


def _cross_entropy_targets(P, T, eps, dP):
    """Cross-entropy on probabilities: mean_i(-sum_j T_ij log(clip(P_ij, eps, 1))).

    P (n, k) probabilities (a softmax output), T (n, k) targets.  Writes
    dP = -T / clip(P) / n, the gradient with respect to P.
    """
    n, k = P.shape
    inv_n = P.dtype.type(1.0 / n)
    lo = P.dtype.type(eps)
    total = 0.0
    for i in prange(n):
        row = 0.0
        for j in range(k):
            p = min(max(P[i, j], lo), P.dtype.type(1))
            row -= T[i, j] * math.log(p)
            dP[i, j] = -T[i, j] / p * inv_n
        total += row
    return total / n


def _cross_entropy_labels(P, y, eps, dP):
    """Cross-entropy on probabilities from integer labels (the one-hot case, without one-hot)."""
    n, k = P.shape
    inv_n = P.dtype.type(1.0 / n)
    lo = P.dtype.type(eps)
    total = 0.0
    for i in prange(n):
        for j in range(k):
            dP[i, j] = 0
        t = y[i]
        p = min(max(P[i, t], lo), P.dtype.type(1))
        total -= math.log(p)
        dP[i, t] = -inv_n / p
    return total / n


def _mse(Y, T, dY):
    """Mean squared error over every element: mean((Y - T)^2); dY = 2 (Y - T) / Y.size."""
    n, k = Y.shape
    scale = Y.dtype.type(2.0 / (n * k))
    total = 0.0
    for i in prange(n):
        row = 0.0
        for j in range(k):
            d = Y[i, j] - T[i, j]
            row += d * d
            dY[i, j] = scale * d
        total += row
    return total / (n * k)


softmax_xent_labels, softmax_xent_labels_parallel = twin(_softmax_xent_labels)
softmax_xent_targets, softmax_xent_targets_parallel = twin(_softmax_xent_targets)
cross_entropy_targets, cross_entropy_targets_parallel = twin(_cross_entropy_targets)
cross_entropy_labels, cross_entropy_labels_parallel = twin(_cross_entropy_labels)
mse, mse_parallel = twin(_mse)

__all__ = [
    "softmax_xent_labels",
    "softmax_xent_labels_parallel",
    "softmax_xent_targets",
    "softmax_xent_targets_parallel",
    "cross_entropy_targets",
    "cross_entropy_targets_parallel",
    "cross_entropy_labels",
    "cross_entropy_labels_parallel",
    "mse",
    "mse_parallel",
]
