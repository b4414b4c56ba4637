"""Properties of the softmax kernels that must hold for any logits (hypothesis).

Rows sum to one, adding a constant to a row changes nothing, logits up to +-1e4 never overflow,
a batch gives the same rows as one row at a time, and float32 agrees with float64.
"""

import numpy as np
import pytest
from conftest import kernel
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

SETTINGS = settings(max_examples=25, deadline=None)

BUILDS = ["serial", "parallel"]


def logits(max_abs=1e4):
    shapes = st.tuples(st.integers(1, 9), st.integers(1, 12))
    elements = st.floats(-max_abs, max_abs, allow_nan=False, allow_infinity=False, width=64)
    return shapes.flatmap(lambda s: arrays(np.float64, s, elements=elements))


def _softmax(Z, build):
    P = np.empty_like(Z)
    kernel("softmax_forward", build)(Z, P)
    return P


def _log_softmax(Z, build):
    L = np.empty_like(Z)
    kernel("log_softmax_forward", build)(Z, L)
    return L


@pytest.mark.parametrize("build", BUILDS)
@SETTINGS
@given(Z=logits())
def test_rows_sum_to_one_and_no_overflow(build, Z):
    for dt in (np.float64, np.float32):
        Zd = Z.astype(dt)
        P = _softmax(Zd, build)
        assert np.isfinite(P).all()
        assert (P >= 0).all() and (P <= 1).all()
        np.testing.assert_allclose(P.sum(axis=1), 1.0, rtol=1e-5 if dt == np.float32 else 1e-12)
        L = _log_softmax(Zd, build)
        assert np.isfinite(L).all() and (L <= 0).all()
        # the largest logit of each row has the largest probability
        rows = np.arange(Z.shape[0])
        assert (P[rows, Zd.argmax(axis=1)] == P.max(axis=1)).all()


@pytest.mark.parametrize("build", BUILDS)
@SETTINGS
@given(Z=logits(50.0), shift=st.floats(-1e3, 1e3, allow_nan=False))
def test_shift_invariant(build, Z, shift):
    P = _softmax(Z, build)
    # Z + shift rounds each logit by up to ulp(1e3) ~ 1e-13, which moves exp() by as much.
    np.testing.assert_allclose(_softmax(Z + shift, build), P, rtol=1e-9, atol=1e-12)
    L = _log_softmax(Z, build)
    np.testing.assert_allclose(_log_softmax(Z + shift, build), L, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("build", BUILDS)
@SETTINGS
@given(Z=logits())
def test_batch_equals_row_by_row(build, Z):
    P = _softmax(Z, build)
    L = _log_softmax(Z, build)
    for i in range(Z.shape[0]):
        row = np.ascontiguousarray(Z[i : i + 1])
        np.testing.assert_array_equal(_softmax(row, build), P[i : i + 1])
        np.testing.assert_array_equal(_log_softmax(row, build), L[i : i + 1])


@pytest.mark.parametrize("build", BUILDS)
@SETTINGS
@given(Z=logits(30.0))
def test_float32_agrees_with_float64(build, Z):
    Z32 = Z.astype(np.float32)
    P64 = _softmax(Z32.astype(np.float64), build)
    P32 = _softmax(Z32, build)
    # exp of a float32 logit of size <= 60 after the shift has relative error ~ 60 * 6e-8,
    # then a normalisation by a sum of <= 12 terms: 1e-5 relative, 1e-7 absolute covers it.
    np.testing.assert_allclose(P32, P64, rtol=1e-5, atol=1e-7)
    L64 = _log_softmax(Z32.astype(np.float64), build)
    np.testing.assert_allclose(_log_softmax(Z32, build), L64, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("build", BUILDS)
@SETTINGS
@given(Z=logits(), data=st.data())
def test_softmax_xent_finite_and_consistent(build, Z, data):
    """The fused loss is finite for any logits, equals -mean(log_softmax[y]) and its gradient
    rows sum to zero."""
    n, k = Z.shape
    y = np.array(data.draw(st.lists(st.integers(0, k - 1), min_size=n, max_size=n)), np.int64)
    dZ = np.empty_like(Z)
    value = kernel("softmax_xent_labels", build)(Z, y, dZ)
    assert np.isfinite(value) and np.isfinite(dZ).all()
    L = _log_softmax(Z, build)
    expected = -L[np.arange(n), y].mean()
    assert value == pytest.approx(expected, rel=1e-9, abs=1e-9 * (1 + np.abs(Z).max()))
    np.testing.assert_allclose(dZ.sum(axis=1), 0.0, atol=1e-12)
