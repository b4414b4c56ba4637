"""Batch assembly and metrics: shuffle, gather shuffled rows, count correct predictions."""

import numpy as np
from numba import prange

from ._config import njit, twin

# splitmix64 (Steele, Lea and Flood 2014): a 64-bit counter through a bijective mixer; every
# output is a full-period, well-mixed 64-bit value, enough for a shuffle's indices.
_SM_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_SM_MUL1 = np.uint64(0xBF58476D1CE4E5B9)
_SM_MUL2 = np.uint64(0x94D049BB133111EB)


@njit
def shuffled_order(order, key):
    """order[:] = a uniformly random permutation of 0..n-1 drawn from ``key`` (np.uint64) alone.

    Inside-out Fisher-Yates (it writes the identity and shuffles it in one pass) on a
    splitmix64 stream; index ``j`` in 0..i comes from the top 53 bits as ``floor(u (i + 1))``,
    whose bias (about n / 2**53) is far below anything a shuffle for training can show.  Serial
    by nature (each swap depends on the previous ones): 450 000 rows take ~3 ms, where NumPy's
    ``Generator.shuffle`` took 25-34 ms, a sixth of a 4-6-8-10-3@150 epoch through ``fit``.
    """
    state = np.uint64(key)
    scale = 1.0 / 9007199254740992.0  # 2**-53
    for i in range(order.shape[0]):
        state += _SM_GAMMA
        z = state
        z = (z ^ (z >> np.uint64(30))) * _SM_MUL1
        z = (z ^ (z >> np.uint64(27))) * _SM_MUL2
        z = z ^ (z >> np.uint64(31))
        j = min(int(float(z >> np.uint64(11)) * scale * (i + 1)), i)
        order[i] = order[j]
        order[j] = i


def _gather_rows(X, idx, out):
    """out[r] = X[idx[r]] for every r: a shuffled batch without NumPy temporaries."""
    k = X.shape[1]
    for r in prange(idx.shape[0]):
        src = idx[r]
        for j in range(k):
            out[r, j] = X[src, j]


def _gather(y, idx, out):
    """out[r] = y[idx[r]] for 1-D y."""
    for r in prange(idx.shape[0]):
        out[r] = y[idx[r]]


def _count_correct(Z, y):
    """Number of rows whose arg-max equals the integer label."""
    n, k = Z.shape
    correct = 0
    for i in prange(n):
        best = 0
        for j in range(1, k):
            if Z[i, j] > Z[i, best]:
                best = j
        if best == y[i]:
            correct += 1
    return correct


def _all_finite(X):
    """True when no element of a 2-D array is NaN or inf.

    ``v * 0`` is 0 for every finite v and NaN for NaN and inf, so one sum of them says it; the
    sum vectorises, where counting with a branch per element did not (64x784 float32 in
    cache: 4.6-5.4 us against 10.7-11.4 us)."""
    bad = X.dtype.type(0)
    for i in prange(X.shape[0]):
        for j in range(X.shape[1]):
            bad += X[i, j] * 0
    return bad == 0


gather_rows, gather_rows_parallel = twin(_gather_rows)
gather, gather_parallel = twin(_gather)
count_correct, count_correct_parallel = twin(_count_correct)
all_finite, all_finite_parallel = twin(_all_finite)

__all__ = [
    "gather_rows",
    "gather_rows_parallel",
    "gather",
    "gather_parallel",
    "count_correct",
    "count_correct_parallel",
    "all_finite",
    "all_finite_parallel",
]
