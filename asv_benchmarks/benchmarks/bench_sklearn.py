"""fastnn.sklearn's MLPClassifier / MLPRegressor against scikit-learn's own, fit for fit.

Both libraries fit the same estimator (hidden_layer_sizes=(100,), the same random_state, so
the same initial weights and minibatch order) for a fixed number of epochs on digits and iris
(standardised, stratified split, from :mod:`common`) and on a ``make_regression`` problem, with
the sgd and adam solvers.  ``time_fit`` is parametrised by library, so asv shows the two side by
side and their ratio is the speed-up; ``track_score`` keeps the test accuracy (R^2) of each.
The fits always run their full epoch count (``n_iter_no_change`` above it), so a change in the
stopping rule never reads as a change in speed.  fastnn's kernels are compiled (or loaded from
the cache) by a warm-up fit in ``setup``.
"""

import warnings

import numpy as np

from .common import set_threads, standardised_split

DATASETS = ("digits", "iris", "regression")
SOLVERS = ("sgd", "adam")
LIBRARIES = ("fastnn", "sklearn")
EPOCHS = 20
LEARNING_RATES = {"sgd": 0.01, "adam": 0.001}


def _data(dataset):
    if dataset != "regression":
        return standardised_split(dataset, "float64", seed=0)
    from sklearn.datasets import make_regression
    from sklearn.model_selection import train_test_split

    X, y = make_regression(n_samples=2000, n_features=20, noise=10.0, random_state=0)
    y = (y - y.mean()) / y.std()
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0)
    mean, std = X_train.mean(axis=0), X_train.std(axis=0)
    return (X_train - mean) / std, (X_test - mean) / std, y_train, y_test


def _estimator(library, dataset, solver):
    if library == "fastnn":
        try:
            from fastnn import sklearn as module
        except ImportError:
            raise NotImplementedError("fastnn.sklearn does not exist in this commit") from None
    else:
        from sklearn import neural_network as module
    kind = "MLPRegressor" if dataset == "regression" else "MLPClassifier"
    return getattr(module, kind)(
        hidden_layer_sizes=(100,),
        solver=solver,
        learning_rate_init=LEARNING_RATES[solver],
        max_iter=EPOCHS,
        n_iter_no_change=EPOCHS + 1,
        random_state=0,
    )


class SklearnFit:
    """Fit time of one estimator, fastnn vs scikit-learn, for ``EPOCHS`` epochs."""

    params = (DATASETS, SOLVERS, LIBRARIES)
    param_names = ("dataset", "solver", "library")
    timeout = 300

    def setup(self, dataset, solver, library):
        set_threads()
        self.X_train, self.X_test, self.y_train, self.y_test = _data(dataset)
        self.est = _estimator(library, dataset, solver)
        self._fit()  # compile / load fastnn's kernels; warms scikit-learn's imports too

    def _fit(self):
        from sklearn.exceptions import ConvergenceWarning

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            self.est.fit(self.X_train, self.y_train)

    def time_fit(self, dataset, solver, library):
        self._fit()

    def track_score(self, dataset, solver, library):
        """Test accuracy (classification) or R^2 (regression) after the fit."""
        return float(np.round(self.est.score(self.X_test, self.y_test), 6))

    track_score.unit = "score"
