"""Batch assembly and metrics: gather shuffled rows, count correct predictions."""

from numba import prange

from ._config import twin


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
    """True when no element of a 2-D array is NaN or inf."""
    bad = 0
    for i in prange(X.shape[0]):
        for j in range(X.shape[1]):
            v = X[i, j]
            if v != v or v - v != 0:
                bad += 1
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
