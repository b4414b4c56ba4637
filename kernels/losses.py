"""Loss kernels: each returns the mean loss over the batch and writes its gradient.

Gradients are those of the *mean*, so they carry the 1/n factor.  Per-row losses are summed
in a ``prange`` reduction; every thread writes only its own rows of the gradient.
"""

import math

import numpy as np
from numba import prange

from ._config import njit, twin
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


# -- weighted, smoothed and extra losses ------------------------------------------------------
# The kernels above are the fast path for the common unweighted case and keep their signatures.
# The ones below take optional weights.  ``sw`` holds per-sample weights (n,), or has length 0
# for "every sample weighs 1".  A loss is the weighted mean sum_i sw_i l_i / D, where D is
# sum_i sw_i, except for class-weighted labels where D = sum_i sw_i cw[y_i] (torch's
# normalisation).  When D is 0 (every weight in the batch is 0) the loss and gradient are 0.


@njit
def _sample_weight(sw, i):
    if sw.shape[0] == 0:
        return 1.0
    return np.float64(sw[i])


@njit
def _inverse(D):
    return 1.0 / D if D > 0 else 0.0


def _softmax_xent_labels_weighted(Z, y, cw, sw, smoothing, dZ):
    """Softmax cross-entropy from logits and integer labels with class weights, sample weights
    and label smoothing (torch.nn.CrossEntropyLoss semantics).

    Z (n, k) logits; y (n,) labels; cw (k,) class weights (ones for none); sw (n,) or (0,)
    sample weights; ``smoothing`` eps in [0, 1].  With log-probabilities L = log softmax(Z),
    l_i = (1 - eps) cw[y_i] (-L[i, y_i]) + eps / k * sum_j cw[j] (-L[i, j]), and the loss is
    sum_i sw_i l_i / sum_i sw_i cw[y_i].  Writes its gradient into dZ (dZ may be Z).
    """
    n, k = Z.shape
    a = 1.0 - smoothing
    b = smoothing / k
    cw_sum = 0.0
    for j in range(k):
        cw_sum += cw[j]
    D = 0.0
    for i in prange(n):
        D += _sample_weight(sw, i) * cw[y[i]]
    inv_D = _inverse(D)
    tp = dZ.dtype.type
    total = 0.0
    for i in prange(n):
        m, lse = row_logsumexp(Z, i)
        t = y[i]
        s = _sample_weight(sw, i)
        wy = np.float64(cw[t])
        row = a * wy * (lse - Z[i, t])
        if smoothing != 0:
            acc = 0.0
            for j in range(k):
                acc += cw[j] * (lse - Z[i, j])
            row += b * acc
        total += s * row
        c = s * inv_D
        coef = tp(c * (a * wy + b * cw_sum))
        cb = tp(c * b)
        for j in range(k):
            dZ[i, j] = math.exp(Z[i, j] - lse) * coef - cb * cw[j]
        dZ[i, t] -= tp(c * a * wy)
    return total * inv_D


def _softmax_xent_targets_weighted(Z, T, cw, sw, smoothing, dZ):
    """Softmax cross-entropy from logits and target rows (one-hot or probabilities) with
    class weights, sample weights and label smoothing (torch semantics for probability
    targets: T' = (1 - eps) T + eps / k, l_i = -sum_j cw[j] T'_ij L_ij, and the loss is
    sum_i sw_i l_i / sum_i sw_i: class weights are *not* in the normaliser here).

    Z, T, dZ (n, k); cw (k,); sw (n,) or (0,).  dZ may be Z.
    """
    n, k = Z.shape
    a = 1.0 - smoothing
    b = smoothing / k
    D = 0.0
    for i in prange(n):
        D += _sample_weight(sw, i)
    inv_D = _inverse(D)
    tp = dZ.dtype.type
    total = 0.0
    for i in prange(n):
        m, lse = row_logsumexp(Z, i)
        s = _sample_weight(sw, i)
        row = 0.0
        tw = 0.0
        for j in range(k):
            wt = cw[j] * (a * T[i, j] + b)
            row += wt * (lse - Z[i, j])
            tw += wt
        total += s * row
        c = s * inv_D
        ctw = tp(c * tw)
        for j in range(k):
            dZ[i, j] = math.exp(Z[i, j] - lse) * ctw - tp(c * cw[j] * (a * T[i, j] + b))
    return total * inv_D


def _cross_entropy_labels_weighted(P, y, cw, sw, eps, dP):
    """Cross-entropy on probabilities from integer labels, with class and sample weights:
    sum_i sw_i cw[y_i] (-log clip(P[i, y_i], eps, 1)) / sum_i sw_i cw[y_i].

    P, dP (n, k); y (n,); cw (k,); sw (n,) or (0,).  dP is zero except at the labels.
    """
    n, k = P.shape
    lo = P.dtype.type(eps)
    one = P.dtype.type(1)
    D = 0.0
    for i in prange(n):
        D += _sample_weight(sw, i) * cw[y[i]]
    inv_D = _inverse(D)
    total = 0.0
    for i in prange(n):
        for j in range(k):
            dP[i, j] = 0
        t = y[i]
        w = _sample_weight(sw, i) * cw[t]
        p = min(max(P[i, t], lo), one)
        total -= w * math.log(p)
        dP[i, t] = -w * inv_D / p
    return total * inv_D


def _cross_entropy_targets_weighted(P, T, cw, sw, eps, dP):
    """Cross-entropy on probabilities from target rows, with class and sample weights:
    sum_i sw_i (-sum_j cw[j] T_ij log clip(P_ij, eps, 1)) / sum_i sw_i.

    P, T, dP (n, k); cw (k,); sw (n,) or (0,).
    """
    n, k = P.shape
    lo = P.dtype.type(eps)
    one = P.dtype.type(1)
    D = 0.0
    for i in prange(n):
        D += _sample_weight(sw, i)
    inv_D = _inverse(D)
    total = 0.0
    for i in prange(n):
        c = _sample_weight(sw, i) * inv_D
        row = 0.0
        for j in range(k):
            p = min(max(P[i, j], lo), one)
            w = cw[j] * T[i, j]
            row -= w * math.log(p)
            dP[i, j] = -c * w / p
        total += _sample_weight(sw, i) * row
    return total * inv_D


def _mse_weighted(Y, T, sw, dY):
    """Sample-weighted mean squared error: sum_i sw_i mean_j (Y_ij - T_ij)^2 / sum_i sw_i.

    Y, T, dY (n, k); sw (n,) or (0,) (then it equals ``mse``).  dY may be Y.
    """
    n, k = Y.shape
    D = 0.0
    for i in prange(n):
        D += _sample_weight(sw, i)
    inv_D = _inverse(D)
    tp = dY.dtype.type
    total = 0.0
    for i in prange(n):
        s = _sample_weight(sw, i)
        g = tp(2.0 * s * inv_D / k)
        row = 0.0
        for j in range(k):
            d = Y[i, j] - T[i, j]
            row += d * d
            dY[i, j] = g * d
        total += s * row
    return total * inv_D / k


def _huber(Y, T, delta, sw, dY):
    """Huber loss (torch.nn.HuberLoss): per element ``0.5 d^2`` when ``|d| < delta``, else
    ``delta (|d| - 0.5 delta)``, with ``d = Y - T``; the mean over elements, or the
    sample-weighted mean of the per-sample means when sw has length n.

    Y, T, dY (n, k); ``delta`` > 0.  dY = clip(d, -delta, delta) * weight.  dY may be Y.
    """
    n, k = Y.shape
    D = 0.0
    for i in prange(n):
        D += _sample_weight(sw, i)
    inv_D = _inverse(D)
    tp = dY.dtype.type
    dl = tp(delta)
    total = 0.0
    for i in prange(n):
        s = _sample_weight(sw, i)
        g = tp(s * inv_D / k)
        row = 0.0
        for j in range(k):
            d = Y[i, j] - T[i, j]
            ad = abs(d)
            if ad < dl:
                row += 0.5 * d * d
                dY[i, j] = g * d
            else:
                row += delta * (ad - 0.5 * delta)
                dY[i, j] = g * dl if d > 0 else -g * dl
        total += s * row
    return total * inv_D / k


def _bce_with_logits(Z, T, pos_weight, sw, dZ):
    """Binary cross-entropy on logits (torch.nn.BCEWithLogitsLoss), stable for any logit.

    Z, T, dZ (n, k): logits and targets in [0, 1] (0/1 labels or probabilities); pos_weight
    (k,) multiplies the positive term (ones for none); sw (n,) or (0,).  Per element, with
    ``softplus(z) = max(z, 0) + log1p(exp(-|z|))`` (never overflows):
    l = pw t softplus(-z) + (1 - t) softplus(z), which is softplus(z) - z t when pw = 1.
    The loss is the mean over elements (sample-weighted mean of per-row means with sw), and
    dZ = (sigmoid(z) (pw t + 1 - t) - pw t) * weight.  dZ may be Z.
    """
    n, k = Z.shape
    D = 0.0
    for i in prange(n):
        D += _sample_weight(sw, i)
    inv_D = _inverse(D)
    tp = dZ.dtype.type
    total = 0.0
    for i in prange(n):
        s = _sample_weight(sw, i)
        g = s * inv_D / k
        row = 0.0
        for j in range(k):
            z = np.float64(Z[i, j])
            t = np.float64(T[i, j])
            pw = np.float64(pos_weight[j])
            e = math.exp(-abs(z))
            sp = max(z, 0.0) + math.log1p(e)  # softplus(z)
            row += pw * t * (sp - z) + (1.0 - t) * sp
            sig = 1.0 / (1.0 + e) if z >= 0 else e / (1.0 + e)
            dZ[i, j] = tp((sig * (pw * t + 1.0 - t) - pw * t) * g)
        total += s * row
    return total * inv_D / k


softmax_xent_labels, softmax_xent_labels_parallel = twin(_softmax_xent_labels)
softmax_xent_targets, softmax_xent_targets_parallel = twin(_softmax_xent_targets)
cross_entropy_targets, cross_entropy_targets_parallel = twin(_cross_entropy_targets)
cross_entropy_labels, cross_entropy_labels_parallel = twin(_cross_entropy_labels)
mse, mse_parallel = twin(_mse)
softmax_xent_labels_weighted, softmax_xent_labels_weighted_parallel = twin(
    _softmax_xent_labels_weighted
)
softmax_xent_targets_weighted, softmax_xent_targets_weighted_parallel = twin(
    _softmax_xent_targets_weighted
)
cross_entropy_labels_weighted, cross_entropy_labels_weighted_parallel = twin(
    _cross_entropy_labels_weighted
)
cross_entropy_targets_weighted, cross_entropy_targets_weighted_parallel = twin(
    _cross_entropy_targets_weighted
)
mse_weighted, mse_weighted_parallel = twin(_mse_weighted)
huber, huber_parallel = twin(_huber)
bce_with_logits, bce_with_logits_parallel = twin(_bce_with_logits)

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
    "softmax_xent_labels_weighted",
    "softmax_xent_labels_weighted_parallel",
    "softmax_xent_targets_weighted",
    "softmax_xent_targets_weighted_parallel",
    "cross_entropy_labels_weighted",
    "cross_entropy_labels_weighted_parallel",
    "cross_entropy_targets_weighted",
    "cross_entropy_targets_weighted_parallel",
    "mse_weighted",
    "mse_weighted_parallel",
    "huber",
    "huber_parallel",
    "bce_with_logits",
    "bce_with_logits_parallel",
]
