"""scikit-learn's own estimator checks, run on fastnn.sklearn's MLPClassifier and MLPRegressor.

The instances use ``max_iter=100``, the setting scikit-learn's own test suite gives its MLPs.
"""

import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.estimator_checks import (
    check_sample_weight_equivalence_on_dense_data,
    check_sample_weight_equivalence_on_sparse_data,
    parametrize_with_checks,
)

from fastnn.sklearn import MLPClassifier, MLPRegressor

# Repeating a sample twice and giving it weight 2 are the same loss, and in float64 fastnn's
# fits agree to rounding (test_sample_weight_equivalence_float64 below), as scikit-learn's own
# MLPs do.  In the default float32 the two fits round differently over 100 epochs, and the
# check compares predictions at rtol=1e-7, far below float32's resolution (~6e-8 per
# operation): 4 of 15 (classifier) and 18 of 45 (regressor) outputs differ beyond it.
_STOCHASTIC_SW = (
    "float32 (the default dtype): the weighted and the repeated fits agree only to float32 "
    "rounding, and the check compares at rtol=1e-7; dtype=np.float64 passes "
    "(test_sample_weight_equivalence_float64)"
)


def _expected_failed(estimator):
    return {
        "check_sample_weight_equivalence_on_dense_data": _STOCHASTIC_SW,
        "check_sample_weight_equivalence_on_sparse_data": _STOCHASTIC_SW,
    }


@parametrize_with_checks(
    [MLPClassifier(max_iter=100), MLPRegressor(max_iter=100)],
    expected_failed_checks=_expected_failed,
)
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
def test_sample_weight_equivalence_float64(make, solver):
    """The two checks expected to fail in float32 pass in float64: weight 2 and a repeated
    sample give the same fit (the reason given for the expected failures above)."""
    est = make(solver=solver, max_iter=100, dtype=np.float64, tol=1e-2, random_state=42)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        check_sample_weight_equivalence_on_dense_data(type(est).__name__, est)
        check_sample_weight_equivalence_on_sparse_data(type(est).__name__, est)
