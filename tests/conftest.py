"""Shared fixtures: the two float dtypes, the serial and parallel kernel builds, tolerances."""

import numpy as np
import pytest

from fastnn import kernels as K

DTYPES = (np.float32, np.float64)

# Tolerances against a float64 reference.  float64: the kernels and the reference differ only in
# summation order (BLAS blocking, prange chunks), an error of a few ulp times the number of terms
# (<= ~1e3 here), far below 1e-10.  float32: unit roundoff is 6e-8; a dot product of k <= ~1e3
# O(1) terms is off by about sqrt(k) * 6e-8 ~ 2e-6 typically and k * 6e-8 ~ 6e-5 at worst, and
# fastmath's "afn" lets exp/log/tanh use slightly less accurate forms; 1e-4 relative with a
# 1e-5 absolute floor covers both with margin, while any indexing or formula error shows up at
# O(1e-2) or more.
TOLERANCES = {
    np.dtype(np.float32): {"rtol": 1e-4, "atol": 1e-5},
    np.dtype(np.float64): {"rtol": 1e-10, "atol": 1e-12},
}


def tol(dtype):
    return TOLERANCES[np.dtype(dtype)]


def assert_close(actual, expected, dtype, scale=1.0, err_msg=""):
    """Compare with the dtype's tolerance; ``scale`` widens the absolute floor for outputs that
    are sums of many terms of magnitude ``scale``."""
    t = tol(dtype)
    np.testing.assert_allclose(
        np.asarray(actual, dtype=np.float64),
        expected,
        rtol=t["rtol"],
        atol=t["atol"] * scale,
        err_msg=err_msg,
    )


@pytest.fixture(params=DTYPES, ids=["float32", "float64"])
def dtype(request):
    return np.dtype(request.param)


@pytest.fixture(params=["serial", "parallel"])
def build(request):
    return request.param


def kernel(name, build):
    """The serial build ``name`` or the parallel build ``name_parallel`` of a kernel."""
    return getattr(K, name if build == "serial" else name + "_parallel")


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
