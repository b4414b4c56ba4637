"""scikit-learn's dtype rules in fastnn.sklearn, checked against scikit-learn itself.

scikit-learn fits its MLPs in float32 when X is float32 and in float64 otherwise (L-BFGS always
ends in float64), and predicts in NumPy's promotion of the predicted X's dtype with the
coefficients'.  Each test here runs scikit-learn's own estimator beside fastnn's: the reference
is the library being imitated, not a rule restated.
"""

import warnings

import numpy as np
import pytest
from conftest import quiet
from sklearn.datasets import load_digits, load_iris, make_regression
from sklearn.neural_network import MLPClassifier as SkClassifier
from sklearn.neural_network import MLPRegressor as SkRegressor
from sklearn.preprocessing import StandardScaler, scale

from fastnn.sklearn import MLPClassifier, MLPRegressor

FIT_DTYPES = [np.float32, np.float64, np.int64, np.float16, np.uint8]
PREDICT_DTYPES = [np.float32, np.float64, np.int64, np.uint8, np.int8]


@pytest.fixture(scope="module")
def iris():
    X, y = load_iris(return_X_y=True)
    return X, y


@pytest.mark.parametrize("solver", ["adam", "sgd", "lbfgs"])
@pytest.mark.parametrize("fit_dtype", FIT_DTYPES, ids=lambda d: np.dtype(d).name)
def test_dtype_table_matches_sklearn(solver, fit_dtype, iris):
    X, y = iris
    Xf = X.astype(fit_dtype)
    kw = dict(hidden_layer_sizes=(7,), solver=solver, max_iter=3, random_state=0)
    with quiet():
        pairs = [
            (MLPClassifier(**kw).fit(Xf, y), SkClassifier(**kw).fit(Xf, y)),
            (MLPRegressor(**kw).fit(Xf, X[:, 0]), SkRegressor(**kw).fit(Xf, X[:, 0])),
        ]
    for ours, theirs in pairs:
        assert [c.dtype for c in ours.coefs_] == [c.dtype for c in theirs.coefs_]
        assert [b.dtype for b in ours.intercepts_] == [b.dtype for b in theirs.intercepts_]
        for predict_dtype in PREDICT_DTYPES:
            Xp = X.astype(predict_dtype)
            methods = ["predict"] if isinstance(ours, MLPRegressor) else []
            methods += ["predict_proba", "predict_log_proba"] if hasattr(ours, "classes_") else []
            for method in methods:
                with np.errstate(divide="ignore"):
                    expected = getattr(theirs, method)(Xp).dtype
                got = getattr(ours, method)(Xp).dtype
                assert got == expected, (method, np.dtype(predict_dtype).name, got, expected)


@pytest.mark.parametrize("make", [MLPClassifier, MLPRegressor])
def test_explicit_dtype_overrides(make, iris):
    X, y = iris
    target = y if make is MLPClassifier else X[:, 0]
    with quiet():
        est = make(max_iter=3, random_state=0, dtype=np.float32).fit(X, target)
        assert est.coefs_[0].dtype == np.float32 and est.intercepts_[-1].dtype == np.float32
        method = est.predict_proba if make is MLPClassifier else est.predict
        assert method(X).dtype == np.float32  # the argument, not X's float64
        est = make(max_iter=3, random_state=0, dtype=np.float64).fit(X.astype(np.float32), target)
        assert est.coefs_[0].dtype == np.float64
        method = est.predict_proba if make is MLPClassifier else est.predict
        assert method(X.astype(np.float32)).dtype == np.float64


def test_float32_fit_tracks_sklearn_float32(iris):
    """Both libraries in float32 on float32 X: the same network to float32 rounding."""
    X, y = iris
    X = StandardScaler().fit_transform(X).astype(np.float32)
    for solver in ("adam", "sgd"):
        kw = dict(hidden_layer_sizes=(9,), solver=solver, max_iter=5, random_state=3)
        with quiet():
            ours = MLPClassifier(**kw).fit(X, y)
            theirs = SkClassifier(**kw).fit(X, y)
        ours_arrays = ours.coefs_ + ours.intercepts_
        their_arrays = theirs.coefs_ + theirs.intercepts_
        for a, b in zip(ours_arrays, their_arrays, strict=True):
            assert a.dtype == b.dtype == np.float32
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(ours.predict_proba(X), theirs.predict_proba(X), atol=1e-5)
        np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-5)


def test_float64_digits_matches_sklearn_on_raw_data():
    """The issue's case: raw digits (no scaling), adam, random_state=0, default dtype.
    scikit-learn stops after its n_iter_; fastnn now fits in float64 like it and matches."""
    X, y = load_digits(return_X_y=True)
    X, y = X[:600], y[:600]
    kw = dict(random_state=0, max_iter=20)
    with quiet():
        ours = MLPClassifier(**kw).fit(X, y)
        theirs = SkClassifier(**kw).fit(X, y)
    assert ours.coefs_[0].dtype == np.float64
    assert ours.n_iter_ == theirs.n_iter_
    for a, b in zip(ours.coefs_, theirs.coefs_, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-10)


# -- fit(max_iter=n) against n calls of partial_fit ---------------------------------------
PARTIAL = [
    dict(solver="sgd", learning_rate="constant", batch_size=200),
    dict(solver="sgd", learning_rate="invscaling", batch_size=64),
    dict(solver="sgd", learning_rate="adaptive", batch_size=64, momentum=0.0),
    dict(solver="adam", batch_size=64),
]


@pytest.mark.parametrize("params", PARTIAL, ids=lambda p: "-".join(map(str, p.values())))
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_fit_equals_repeated_partial_fit_bitwise(params, dtype):
    """scikit-learn's fit(max_iter=n) and n partial_fit calls are bit-identical when the
    epochs see the rows in the same order (shuffle=False; with shuffle=True fit draws a new
    permutation per epoch while each partial_fit call restarts random_state, in scikit-learn
    too); fastnn's must be, in float32 as well."""
    X, y = make_regression(n_samples=200, n_features=10, noise=100.0, random_state=7)
    X, y = X.astype(dtype), scale(y).astype(dtype)
    kw = dict(hidden_layer_sizes=(20,), random_state=1, shuffle=False, learning_rate_init=0.01)
    kw.update(params)
    with quiet():
        whole = MLPRegressor(max_iter=30, tol=0, **kw).fit(X, y)
    parts = MLPRegressor(**kw)
    for _ in range(30):
        parts.partial_fit(X, y)
    assert whole.predict(X).dtype == dtype
    np.testing.assert_array_equal(parts.predict(X), whole.predict(X))
    for a, b in zip(parts.coefs_, whole.coefs_, strict=True):
        np.testing.assert_array_equal(a, b)

    Xc, yc = load_digits(return_X_y=True)
    Xc, yc = (Xc[:300] / 16).astype(dtype), yc[:300]
    with quiet():
        whole = MLPClassifier(max_iter=10, tol=0, **kw).fit(Xc, yc)
    parts = MLPClassifier(**kw)
    for _ in range(10):
        parts.partial_fit(Xc, yc, classes=np.arange(10))
    np.testing.assert_array_equal(parts.predict_proba(Xc), whole.predict_proba(Xc))


def test_sklearn_partial_fit_regression_test_passes():
    """scikit-learn's own test_partial_fit_regression (shuffled, float64 data), unchanged."""
    X, y = make_regression(n_samples=200, n_features=10, bias=20.0, noise=100.0, random_state=7)
    y = scale(y)
    for momentum in [0, 0.9]:
        kw = dict(solver="sgd", activation="relu", random_state=1, learning_rate_init=0.01)
        kw.update(batch_size=X.shape[0], momentum=momentum)
        with quiet():
            pred1 = MLPRegressor(max_iter=100, **kw).fit(X, y).predict(X)
        mlp = MLPRegressor(**kw)
        for _ in range(100):
            mlp.partial_fit(X, y)
        np.testing.assert_allclose(mlp.predict(X), pred1, rtol=1e-7)
        assert mlp.score(X, y) > 0.65


def test_partial_fit_keeps_the_first_dtype(iris):
    X, y = iris
    est = MLPClassifier(random_state=0)
    est.partial_fit(X.astype(np.float32), y, classes=[0, 1, 2])
    est.partial_fit(X, y)  # float64 chunk: trains on, in the coefficients' float32
    assert est.coefs_[0].dtype == np.float32 and est.n_iter_ == 1 and est.t_ == 2 * len(y)


# -- predict_log_proba against scikit-learn's implementation -----------------------------
def _sklearn_twin(ours, make):
    """A scikit-learn estimator holding ``ours``'s fitted network (copies of its arrays)."""
    twin = make(hidden_layer_sizes=ours.hidden_layer_sizes, activation=ours.activation)
    for attr in ("n_layers_", "n_outputs_", "out_activation_", "classes_", "n_features_in_"):
        setattr(twin, attr, getattr(ours, attr))
    twin._label_binarizer = ours._label_binarizer
    twin.coefs_ = [c.copy() for c in ours.coefs_]
    twin.intercepts_ = [b.copy() for b in ours.intercepts_]
    return twin


def _log_proba_float64(est, X):
    """Log-probabilities in float64 NumPy from ``est``'s fitted arrays (the exact values)."""
    A = X.astype(np.float64)
    acts = {"relu": lambda z: np.maximum(z, 0), "tanh": np.tanh}
    for i, (W, b) in enumerate(zip(est.coefs_, est.intercepts_, strict=True)):
        A = A @ W.astype(np.float64) + b.astype(np.float64)
        if i < len(est.coefs_) - 1:
            A = acts[est.activation](A)
    if est.out_activation_ == "softmax":
        A = A - A.max(axis=1, keepdims=True)
        return A - np.log(np.exp(A).sum(axis=1, keepdims=True))
    if A.shape[1] == 1:
        return np.hstack([-np.logaddexp(0, A), -np.logaddexp(0, -A)])
    return -np.logaddexp(0, -A)


@pytest.mark.parametrize("target", ["multiclass", "binary", "multilabel"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_predict_log_proba_against_sklearn(target, dtype, iris):
    X, y = iris
    X = StandardScaler().fit_transform(X).astype(dtype)
    if target == "binary":
        y = y == 1
    elif target == "multilabel":
        y = np.column_stack([y == 0, y == 2, X[:, 0] > 0]).astype(int)
    with quiet():
        ours = MLPClassifier(hidden_layer_sizes=(10,), max_iter=50, random_state=0).fit(X, y)
    theirs = _sklearn_twin(ours, SkClassifier)
    tiny = np.log(np.finfo(dtype).tiny)
    underflowed = 0
    # ordinary inputs, then far-out ones that push probabilities to underflow
    for scale_ in (1.0, 30.0, 300.0, 3000.0):
        Xs = (X * scale_).astype(dtype)
        with np.errstate(divide="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            expected = theirs.predict_log_proba(Xs)
            own_log = np.log(ours.predict_proba(Xs))
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)  # no divide-by-zero warning
            got = ours.predict_log_proba(Xs)
        assert got.dtype == expected.dtype == dtype
        assert np.isfinite(got).all()  # finite wherever scikit-learn's is, and beyond
        # log(predict_proba) itself wherever that probability is normal (ties stay ties)
        ok = own_log > tiny
        np.testing.assert_array_equal(got[ok], own_log[ok])
        # scikit-learn's values where its probability is a normal number (a subnormal one,
        # float32 below exp(-87), has lost digits in either library)
        normal = expected > tiny
        rtol = 2e-5 if dtype == np.float32 else 1e-10
        np.testing.assert_allclose(got[normal], expected[normal], rtol=rtol, atol=1e-6)
        # where scikit-learn's is -inf or subnormal: the exact log, to float32 accuracy
        inf = expected <= tiny
        underflowed += np.isneginf(expected).sum()
        exact = _log_proba_float64(ours, Xs)
        np.testing.assert_allclose(got[inf], exact[inf], rtol=1e-4)
    if dtype == np.float32:
        assert underflowed > 0, "the test should reach float32 underflow"
