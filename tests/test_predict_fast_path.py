"""The small-input fast paths of predict: the same answers, and no weaker validation.

``MLPClassifier`` / ``MLPRegressor`` skip scikit-learn's ``validate_data`` only for a small,
finite, C-contiguous float ndarray of the fitted width, and ``Sequential.predict`` skips its
general path only for a few such rows; every other input must still get the full check and
its error.  Speed is measured by ``python -m fastnn bench --latency``, not here.
"""

import pickle
import warnings

import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.exceptions import ConvergenceWarning, NotFittedError

import fastnn as fnn
from fastnn.__main__ import main
from fastnn.sklearn import MLPClassifier, MLPRegressor


@pytest.fixture(scope="module")
def fitted():
    X, y = load_iris(return_X_y=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = MLPClassifier(hidden_layer_sizes=(8,), max_iter=30, random_state=0).fit(X, y)
        reg = MLPRegressor(hidden_layer_sizes=(8,), max_iter=30, random_state=0).fit(X, X[:, 0])
    return X, clf, reg


def test_fast_and_full_paths_agree(fitted):
    X, clf, reg = fitted
    for rows in (X[:1], X[:5], X[:64]):
        fast = clf.predict_proba(rows)  # C-contiguous float64: the fast path
        full = clf.predict_proba(np.asfortranarray(rows))  # not C-contiguous: full check
        np.testing.assert_array_equal(fast, full)
        np.testing.assert_array_equal(clf.predict_proba(rows.tolist()), fast)
        np.testing.assert_array_equal(reg.predict(rows), reg.predict(np.asfortranarray(rows)))
        np.testing.assert_array_equal(clf.predict(rows), clf.predict(rows.tolist()))
        np.testing.assert_array_equal(clf.predict_log_proba(rows), np.log(fast))
    ro = X[:3].copy()
    ro.flags.writeable = False
    np.testing.assert_array_equal(clf.predict_proba(ro), clf.predict_proba(X[:3]))
    # float32 rows on a float64 model are promoted, as scikit-learn promotes them
    assert clf.predict_proba(X[:2].astype(np.float32)).dtype == np.float64


@pytest.mark.parametrize(
    "bad, error, match",
    [
        (np.array([[1.0, np.nan, 2.0, 3.0]]), ValueError, "NaN"),
        (np.array([[1.0, np.inf, 2.0, 3.0]]), ValueError, "infinity"),
        (np.ones((1, 3)), ValueError, "features"),
        (np.ones(4), ValueError, "2D array"),
        (np.ones((0, 4)), ValueError, "0 sample"),
        (np.array([["a", "b", "c", "d"]]), ValueError, "numeric"),
    ],
    ids=["nan", "inf", "width", "1d", "empty", "strings"],
)
def test_small_bad_input_still_raises(bad, error, match, fitted):
    _, clf, reg = fitted
    for method in (clf.predict_proba, clf.predict, clf.predict_log_proba, reg.predict):
        with pytest.raises(error, match=match):
            method(bad)


def test_unfitted_and_feature_names(fitted):
    pd = pytest.importorskip("pandas")
    X, clf, _ = fitted
    with pytest.raises(NotFittedError):
        MLPClassifier().predict_proba(X[:1])
    df = pd.DataFrame(X, columns=list("abcd"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        named = MLPClassifier(hidden_layer_sizes=(4,), max_iter=5, random_state=0)
        named.fit(df, (X[:, 0] > 5.8).astype(int))
    with pytest.warns(UserWarning, match="feature names"):
        named.predict_proba(X[:1])  # a small ndarray on a model fitted with names


def test_rebound_coefficients_are_used(fitted):
    X, clf, _ = fitted
    bound = clf.__dict__.get("_bound")
    clf = pickle.loads(pickle.dumps(clf))  # a copy, and its views rebuilt by __setstate__
    assert bound is not None and fitted[1].__dict__.get("_bound") is bound  # original intact
    before = clf.predict_proba(X[:2])
    clf.coefs_[-1] = np.zeros_like(clf.coefs_[-1])  # replaced: the next call repacks
    flat = clf.predict_proba(X[:2])
    expected = np.exp(clf.intercepts_[-1]) / np.exp(clf.intercepts_[-1]).sum()
    np.testing.assert_allclose(flat, np.tile(expected, (2, 1)), rtol=1e-12)
    clf.intercepts_[-1][...] = 0.0  # edited in place
    np.testing.assert_allclose(clf.predict_proba(X[:2]), 1 / 3, rtol=1e-12)
    assert not np.allclose(before, flat)


def test_sequential_small_rows():
    model = fnn.Sequential(fnn.Linear(5, 9, seed=0), fnn.Tanh(), fnn.Linear(9, 3, seed=1))
    X = np.random.default_rng(0).standard_normal((200, 5)).astype(np.float32)
    whole = model.predict(X)  # 200 rows: the general path
    for rows in (1, 7, 64):
        np.testing.assert_allclose(model.predict(X[:rows]), whole[:rows], rtol=1e-6, atol=1e-7)
    bad = X[:2].copy()
    bad[1, 3] = np.nan
    with pytest.raises(ValueError, match="X"):
        model.predict(bad)
    with pytest.raises(ValueError, match="X"):
        model.predict(X[:2, :4])
    np.testing.assert_allclose(model.predict(np.asfortranarray(X[:3])), whole[:3], rtol=1e-6)


def test_bench_latency_smoke(capsys):
    rc = main(["bench", "--latency", "--latency-shapes", "6-5-3", "--latency-calls", "20"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "latency: float32, one thread" in out
    for name in ("fastnn", "fastnn.sklearn", "sklearn"):
        assert len([ln for ln in out.splitlines() if ln.split()[2:3] == [name]]) == 3, name
    assert main(["bench", "--latency", "--latency-calls", "3"]) == 2
