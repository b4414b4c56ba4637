"""fastnn.sklearn.MLPClassifier / MLPRegressor: parity with scikit-learn, API, integration.

With ``dtype=np.float64`` the drop-ins draw the same initial weights, shuffle in the same order
and apply the same updates as scikit-learn, so their fitted coefficients agree to rounding;
those exact comparisons are the strongest tests here (float64 is also the default on float64
data, scikit-learn's dtype rule; tests/test_sklearn_dtypes.py checks that rule).  With
``dtype=np.float32`` on float64 data the accuracy parity is checked averaged over seeds.
"""

import pickle
import warnings

import numpy as np
import pytest
from conftest import quiet
from sklearn.base import clone
from sklearn.datasets import load_digits, load_iris, make_regression
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV, cross_val_score, train_test_split
from sklearn.neural_network import MLPClassifier as SkClassifier
from sklearn.neural_network import MLPRegressor as SkRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from fastnn.sklearn import MLPClassifier, MLPRegressor


@pytest.fixture(scope="module")
def iris():
    X, y = load_iris(return_X_y=True)
    return StandardScaler().fit_transform(X), y


@pytest.fixture(scope="module")
def small_digits():
    X, y = load_digits(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    return X[:400], y[:400]


def assert_same_fit(ours, theirs, rtol=1e-9, atol=1e-11):
    assert ours.n_iter_ == theirs.n_iter_
    assert ours.t_ == theirs.t_
    assert ours.out_activation_ == theirs.out_activation_
    np.testing.assert_allclose(ours.loss_, theirs.loss_, rtol=rtol)
    if hasattr(theirs, "loss_curve_"):
        np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=rtol)
    for a, b in zip(
        ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_, strict=True
    ):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)


# -- exact parity in float64 ------------------------------------------------------------------
EXACT = [
    dict(solver="sgd", learning_rate_init=0.05),
    dict(solver="sgd", nesterovs_momentum=False, learning_rate="invscaling", power_t=0.3),
    dict(solver="sgd", learning_rate="adaptive", tol=0.5, n_iter_no_change=1, momentum=0.5),
    dict(solver="adam", alpha=0.01, batch_size=37, activation="tanh"),
    dict(solver="adam", early_stopping=True, activation="logistic", shuffle=False),
    dict(solver="lbfgs", activation="tanh"),
]


@pytest.mark.parametrize("params", EXACT, ids=lambda p: "-".join(map(str, p.values())))
def test_classifier_tracks_sklearn_exactly(params, iris):
    X, y = iris
    kw = dict(hidden_layer_sizes=(9, 5), max_iter=15, random_state=3, **params)
    with quiet():
        theirs = SkClassifier(**kw).fit(X, y)
        ours = MLPClassifier(dtype=np.float64, **kw).fit(X, y)
    assert_same_fit(ours, theirs)
    for attr in ("best_loss_", "best_validation_score_"):
        if getattr(theirs, attr, None) is not None:
            np.testing.assert_allclose(getattr(ours, attr), getattr(theirs, attr), rtol=1e-9)
    if getattr(theirs, "validation_scores_", None) is not None:
        np.testing.assert_allclose(ours.validation_scores_, theirs.validation_scores_)
    np.testing.assert_allclose(ours.predict_proba(X), theirs.predict_proba(X), rtol=1e-8)


@pytest.mark.parametrize("solver", ["sgd", "lbfgs"])
def test_binary_multilabel_and_weights_track_sklearn(solver, iris):
    X, y = iris
    rng = np.random.default_rng(0)
    sw = rng.uniform(0.5, 2.0, y.size)
    kw = dict(hidden_layer_sizes=(6,), max_iter=10, random_state=0, solver=solver)
    Y_multi = np.column_stack([y == 0, y == 2, X[:, 0] > 0]).astype(int)
    for target in (y == 1, Y_multi):
        with quiet():
            theirs = SkClassifier(**kw).fit(X, target, sample_weight=sw)
            ours = MLPClassifier(dtype=np.float64, **kw).fit(X, target, sample_weight=sw)
        assert ours.out_activation_ == "logistic"
        assert_same_fit(ours, theirs)
        np.testing.assert_array_equal(ours.predict(X), theirs.predict(X))


@pytest.mark.parametrize("loss", ["squared_error", "poisson"])
def test_regressor_tracks_sklearn_exactly(loss):
    X, y = make_regression(n_samples=90, n_features=4, n_targets=2, noise=0.1, random_state=0)
    X = StandardScaler().fit_transform(X)
    y = y / y.std()
    if loss == "poisson":
        y = np.abs(y)
    for solver in ("adam", "lbfgs"):
        kw = dict(loss=loss, hidden_layer_sizes=(8,), max_iter=12, random_state=1, solver=solver)
        with quiet():
            theirs = SkRegressor(**kw).fit(X, y)
            ours = MLPRegressor(dtype=np.float64, **kw).fit(X, y)
        assert_same_fit(ours, theirs)
        np.testing.assert_allclose(ours.predict(X), theirs.predict(X), rtol=1e-8, atol=1e-10)


def test_partial_fit_and_warm_start_track_sklearn(iris):
    X, y = iris
    kw = dict(hidden_layer_sizes=(5,), random_state=0, solver="adam")
    theirs = SkClassifier(**kw)
    ours = MLPClassifier(dtype=np.float64, **kw)
    for part in np.array_split(np.arange(y.size), 3):
        theirs.partial_fit(X[part], y[part], classes=np.unique(y))
        ours.partial_fit(X[part], y[part], classes=np.unique(y))
    assert_same_fit(ours, theirs)
    kw.update(warm_start=True, max_iter=4)
    with quiet():
        theirs = SkClassifier(**kw).fit(X, y).fit(X, y)
        ours = MLPClassifier(dtype=np.float64, **kw).fit(X, y).fit(X, y)
    assert_same_fit(ours, theirs)


# -- float32: behaviour and accuracy parity ---------------------------------------------------
def test_float32_fit_attributes(small_digits):
    X, y = small_digits
    X = X.astype(np.float32)  # scikit-learn's rule: float32 X fits and predicts in float32
    with quiet():
        clf = MLPClassifier(hidden_layer_sizes=(20,), max_iter=5, random_state=0).fit(X, y)
    assert clf.coefs_[0].dtype == np.float32 and clf.coefs_[0].shape == (64, 20)
    assert [b.shape for b in clf.intercepts_] == [(20,), (10,)]
    assert clf.n_layers_ == 3 and clf.n_outputs_ == 10 and clf.n_features_in_ == 64
    assert clf.n_iter_ == 5 and len(clf.loss_curve_) == 5 and clf.t_ == 5 * len(y)
    assert clf.out_activation_ == "softmax"
    assert clf.best_loss_ == min(clf.loss_curve_)
    assert clf.validation_scores_ is None and clf.best_validation_score_ is None
    P = clf.predict_proba(X)
    assert P.dtype == np.float32 and P.shape == (len(y), 10)
    np.testing.assert_allclose(P.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(clf.predict_log_proba(X), np.log(P), rtol=1e-6)
    np.testing.assert_array_equal(clf.predict(X), clf.classes_[P.argmax(axis=1)])


def test_convergence_warnings(iris):
    X, y = iris
    with pytest.warns(ConvergenceWarning, match="Maximum iterations \\(3\\)"):
        MLPClassifier(max_iter=3, random_state=0).fit(X, y)
    with pytest.warns(ConvergenceWarning, match="lbfgs failed to converge"):
        MLPClassifier(solver="lbfgs", max_iter=2, random_state=0).fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        clf = MLPClassifier(max_iter=500, tol=0.1, n_iter_no_change=2, random_state=0)
        clf.fit(X, y)  # stops on tol before max_iter: no warning
    assert clf.n_iter_ < 500


def test_string_labels_and_dataframe(iris):
    pd = pytest.importorskip("pandas")
    X, y = iris
    names = np.array(["setosa", "versicolor", "virginica"])[y]
    df = pd.DataFrame(X, columns=["a", "b", "c", "d"])
    with quiet():
        clf = MLPClassifier(hidden_layer_sizes=(8,), max_iter=30, random_state=0).fit(df, names)
    assert list(clf.feature_names_in_) == ["a", "b", "c", "d"]
    assert set(clf.predict(df)) <= set(names) and clf.classes_.tolist() == sorted(set(names))
    with pytest.warns(UserWarning, match="feature names"):
        clf.predict(X)


def test_bad_parameters_raise_before_fitting(iris):
    X, y = iris
    clf = MLPClassifier(dtype="int32")
    with pytest.raises(TypeError, match="dtype"):
        clf.fit(X, y)
    assert not hasattr(clf, "coefs_")
    with pytest.raises(ValueError, match="solver"):
        MLPClassifier(solver="newton").fit(X, y)
    with pytest.raises(ValueError, match="n_threads"):
        MLPRegressor(n_threads=0).fit(X, y)
    with pytest.raises(AttributeError, match="partial_fit"):
        _ = MLPClassifier(solver="lbfgs").partial_fit


def test_n_threads_and_float64_predictions(iris):
    X, y = iris
    with quiet():
        a = MLPClassifier(max_iter=10, random_state=0, n_threads=1).fit(X, y)
        b = MLPClassifier(max_iter=10, random_state=0).fit(X, y)
    np.testing.assert_allclose(a.predict_proba(X), b.predict_proba(X), rtol=1e-5)


# -- scikit-learn integration -----------------------------------------------------------------
def test_pipeline_clone_and_pickle(iris):
    X, y = iris
    pipe = make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(10,), max_iter=50))
    pipe.set_params(mlpclassifier__random_state=0)
    with quiet():
        pipe.fit(X, y)
    copy = pickle.loads(pickle.dumps(pipe))
    np.testing.assert_array_equal(copy.predict_proba(X), pipe.predict_proba(X))
    fresh = clone(pipe)
    assert fresh.get_params()["mlpclassifier__random_state"] == 0
    assert not hasattr(fresh[-1], "coefs_")
    # a pickled model can be trained further
    with quiet():
        copy[-1].partial_fit(X, y)
    assert copy[-1].n_iter_ == 1


def test_grid_search_and_cross_val_score_in_processes(iris):
    X, y = iris
    est = MLPClassifier(hidden_layer_sizes=(8,), learning_rate_init=0.01, random_state=0)
    with quiet():
        scores = cross_val_score(est, X, y, cv=3, n_jobs=2)
        in_process = cross_val_score(est, X, y, cv=3, n_jobs=1)
        grid = GridSearchCV(est, {"alpha": [1e-4, 1e-1]}, cv=3, n_jobs=2).fit(X, y)
    np.testing.assert_allclose(scores, in_process)
    assert scores.mean() > 0.8
    assert grid.best_params_["alpha"] in (1e-4, 1e-1) and grid.best_score_ > 0.8
    assert grid.best_estimator_.n_iter_ >= 1


# -- accuracy parity with scikit-learn (dtype=float32 vs scikit-learn's float64) -------------
def _parity_split(X, y, seed):
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.3, stratify=y, random_state=seed)
    sc = StandardScaler().fit(Xtr)
    return sc.transform(Xtr), sc.transform(Xte), ytr, yte


@pytest.mark.parametrize("dataset", ["digits", "iris"])
@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_accuracy_parity(dataset, solver):
    X, y = (load_digits if dataset == "digits" else load_iris)(return_X_y=True)
    lr = 0.01 if solver == "sgd" else 0.001
    kw = dict(hidden_layer_sizes=(50,), solver=solver, learning_rate_init=lr, max_iter=60)
    ours, theirs = [], []
    with quiet(), threadpool_limits(1):  # one BLAS thread each: no oversubscription
        for seed in range(4):
            Xtr, Xte, ytr, yte = _parity_split(X, y, seed)
            est = MLPClassifier(random_state=seed, dtype=np.float32, **kw)
            ours.append(est.fit(Xtr, ytr).score(Xte, yte))
            theirs.append(SkClassifier(random_state=seed, **kw).fit(Xtr, ytr).score(Xte, yte))
    assert abs(np.mean(ours) - np.mean(theirs)) <= 0.01, (ours, theirs)


@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_r2_parity(solver):
    X, y = make_regression(n_samples=400, n_features=10, noise=10.0, random_state=0)
    y = (y - y.mean()) / y.std()
    lr = 0.01 if solver == "sgd" else 0.001
    kw = dict(hidden_layer_sizes=(50,), solver=solver, learning_rate_init=lr, max_iter=100)
    ours, theirs = [], []
    with quiet(), threadpool_limits(1):
        for seed in range(3):
            Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.3, random_state=seed)
            est = MLPRegressor(random_state=seed, dtype=np.float32, **kw)
            ours.append(est.fit(Xtr, ytr).score(Xte, yte))
            theirs.append(SkRegressor(random_state=seed, **kw).fit(Xtr, ytr).score(Xte, yte))
    assert abs(np.mean(ours) - np.mean(theirs)) <= 0.01, (ours, theirs)


def test_comparison_table_script_mode():
    from fastnn.sklearn.__main__ import compare, format_table

    rows = compare(repeats=1, max_iter=5, datasets=("iris",), solvers=("adam",))
    assert len(rows) == 1 and rows[0]["epochs"] == (5, 5)
    assert rows[0]["score"][0] == pytest.approx(rows[0]["score"][1], abs=0.03)
    table = format_table(rows)
    assert "| iris | adam | 5 / 5 |" in table and "x |" in table


# -- private attributes scikit-learn code reads -------------------------------------------------
@pytest.mark.parametrize(
    "params",
    [
        dict(solver="sgd", learning_rate="invscaling", power_t=0.3),
        dict(solver="sgd", learning_rate="adaptive", tol=0.5, n_iter_no_change=1),
        dict(solver="adam"),
    ],
    ids=["invscaling", "adaptive", "adam"],
)
def test_private_optimizer_state_matches_sklearn(params, iris):
    X, y = iris
    kw = dict(hidden_layer_sizes=(6,), random_state=0, max_iter=12, **params)
    with quiet():
        theirs = SkClassifier(**kw).fit(X, y)
        ours = MLPClassifier(**kw).fit(X, y)
    for est in (theirs, ours):  # then one more epoch each
        est.partial_fit(X, y)
    a, b = ours._optimizer, theirs._optimizer
    assert a.learning_rate == pytest.approx(b.learning_rate, rel=1e-12)
    assert a.learning_rate_init == b.learning_rate_init
    assert ours._no_improvement_count == theirs._no_improvement_count
    if params["solver"] == "adam":
        assert a.t == b.t
        pairs = list(zip(a.ms + a.vs, b.ms + b.vs, strict=True))
    else:
        assert a.lr_schedule == b.lr_schedule and a.momentum == b.momentum
        pairs = list(zip(a.velocities, b.velocities, strict=True))
    for p, q in pairs:
        np.testing.assert_allclose(p, q, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(
        ours._forward_pass_fast(X), theirs._forward_pass_fast(X), rtol=1e-8, atol=1e-12
    )


def test_private_best_coefs_and_no_optimizer_before_fit(iris):
    X, y = iris
    assert not hasattr(MLPClassifier(), "_optimizer")
    assert not hasattr(MLPClassifier(solver="lbfgs").fit(X, y), "_optimizer")
    kw = dict(hidden_layer_sizes=(6,), random_state=0, max_iter=15, early_stopping=True)
    with quiet():
        theirs = SkClassifier(**kw).fit(X, y)
        ours = MLPClassifier(**kw).fit(X, y)
    for p, q in zip(
        ours._best_coefs + ours._best_intercepts,
        theirs._best_coefs + theirs._best_intercepts,
        strict=True,
    ):
        np.testing.assert_allclose(p, q, rtol=1e-9, atol=1e-12)
