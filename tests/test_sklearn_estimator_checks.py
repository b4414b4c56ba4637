"""scikit-learn's own estimator checks, run on fastnn.sklearn's MLPClassifier and MLPRegressor.

The instances use ``max_iter=100``, the setting scikit-learn's own test suite gives its MLPs.
No check is expected to fail: with scikit-learn's dtype rule (the default ``dtype=None``) the
checks' float64 data fit in float64, where a sample of weight 2 and the same sample twice give
the same fit to the checks' ``rtol=1e-7``.  (With an explicit ``dtype=np.float32`` on float64
data the two fits agree only to float32 rounding, so the two sample-weight checks would fail
at that tolerance: that is the cost of the override, documented in docs/sklearn.md.)
"""

import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.estimator_checks import (
    check_class_weight_classifiers,
    check_classifiers_one_label_sample_weights,
    check_classifiers_train,
    check_methods_subset_invariance,
    check_sample_weight_equivalence_on_dense_data,
    check_sample_weight_equivalence_on_sparse_data,
    parametrize_with_checks,
)

from fastnn.sklearn import MLPClassifier, MLPRegressor


@parametrize_with_checks([MLPClassifier(max_iter=100), MLPRegressor(max_iter=100)])
def test_sklearn_estimator_checks(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        check(estimator)


def test_sample_weight_lbfgs():
    for est in (MLPClassifier(solver="lbfgs"), MLPRegressor(solver="lbfgs", max_iter=100)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            check_sample_weight_equivalence_on_dense_data(type(est).__name__, est)


@pytest.mark.parametrize("solver", ["adam", "sgd"])
@pytest.mark.parametrize("make", [MLPClassifier, MLPRegressor])
def test_sample_weight_equivalence_every_solver(make, solver):
    """The sample-weight checks with each stochastic solver at the default dtype (the
    parametrized run above uses adam only)."""
    est = make(solver=solver, max_iter=100, random_state=42)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        check_sample_weight_equivalence_on_dense_data(type(est).__name__, est)
        check_sample_weight_equivalence_on_sparse_data(type(est).__name__, est)


@pytest.mark.parametrize("make", [MLPClassifier, MLPRegressor])
def test_subset_invariance(make):
    """Predictions of rows alone, in small batches and all together agree: to the check's
    rtol=1e-7 in float64, to 1e-6 (a few float32 ulps) in float32, where OpenBLAS's AVX-512
    kernels can round a row's product by an ulp differently with the number of rows around
    it (measured 1.2129836 against 1.2129838)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est = make(max_iter=100, random_state=0)
        check_methods_subset_invariance(type(est).__name__, est)
        rng = np.random.default_rng(0)
        X = rng.standard_normal((40, 6)).astype(np.float32)
        y = rng.integers(0, 3, 40) if make is MLPClassifier else rng.standard_normal(40)
        est = make(max_iter=100, random_state=0).fit(X, y)
    method = est.predict_proba if make is MLPClassifier else est.predict
    whole = method(X)
    parts = np.concatenate([method(X[i : i + 7]) for i in range(0, 40, 7)])
    alone = np.concatenate([method(X[i : i + 1]) for i in range(40)])
    np.testing.assert_allclose(parts, whole, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(alone, whole, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    "check",
    [
        check_classifiers_train,
        check_classifiers_one_label_sample_weights,
        check_sample_weight_equivalence_on_dense_data,
        check_sample_weight_equivalence_on_sparse_data,
        check_class_weight_classifiers,
    ],
    ids=lambda c: c.__name__,
)
def test_balanced_class_weight_checks(check):
    """The checks that concern weights, with class_weight='balanced' (its partial_fit raises,
    as SGDClassifier's does, so the whole suite does not apply).  'balanced' counts samples by
    their weight, so a weight of 2 and a repeated sample still give the same fit."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        check("MLPClassifier", MLPClassifier(max_iter=100, class_weight="balanced"))
