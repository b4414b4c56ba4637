"""MLPRegressor: scikit-learn's multi-layer perceptron regressor on fastnn's kernels."""

import numpy as np
from sklearn.base import RegressorMixin
from sklearn.metrics import r2_score
from sklearn.utils import column_or_1d
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import validate_data

from .._compile import announcing
from ._base import BaseMLP


class MLPRegressor(RegressorMixin, BaseMLP):
    """Multi-layer perceptron regressor: a compiled drop-in for
    ``sklearn.neural_network.MLPRegressor``.

    Same parameters, defaults, attributes and training rules as scikit-learn's (identity
    output with half squared error, or exp output with half Poisson deviance for
    ``loss='poisson'``); see :class:`fastnn.sklearn.MLPClassifier` for the parameters both
    share, and ``dtype`` / ``n_threads``, fastnn's additions.

    Parameters
    ----------
    loss : {'squared_error', 'poisson'}, default='squared_error'
    hidden_layer_sizes : array-like of shape (n_layers - 2,), default=(100,)
    activation : {'identity', 'logistic', 'tanh', 'relu'}, default='relu'
    solver : see MLPClassifier
        And likewise alpha, batch_size, learning_rate, learning_rate_init, power_t, max_iter,
        shuffle, random_state, tol, verbose, warm_start, momentum, nesterovs_momentum,
        early_stopping, validation_fraction, beta_1, beta_2, epsilon, n_iter_no_change and
        max_fun: as in scikit-learn, documented with :class:`fastnn.sklearn.MLPClassifier`.
    dtype : None, float32 or float64, default=None
        None: scikit-learn's dtype rule (see :class:`MLPClassifier`); given: the compute dtype
        of fit and predict and the dtype of the fitted arrays and predictions.
    n_threads : int or None, default=None

    Attributes
    ----------
    loss_, best_loss_, loss_curve_, validation_scores_, best_validation_score_, t_, coefs_,
    intercepts_, n_features_in_, feature_names_in_, n_iter_, n_layers_, n_outputs_,
    out_activation_
        As in scikit-learn.

    Examples
    --------
    >>> from fastnn.sklearn import MLPRegressor
    >>> reg = MLPRegressor(random_state=1, max_iter=2000, tol=0.1).fit(X_train, y_train)
    >>> reg.score(X_test, y_test)
    """

    _parameter_constraints: dict = {
        **BaseMLP._parameter_constraints,
        "loss": [StrOptions({"squared_error", "poisson"})],
    }

    def __init__(
        self,
        loss="squared_error",
        hidden_layer_sizes=(100,),
        activation="relu",
        *,
        solver="adam",
        alpha=0.0001,
        batch_size="auto",
        learning_rate="constant",
        learning_rate_init=0.001,
        power_t=0.5,
        max_iter=200,
        shuffle=True,
        random_state=None,
        tol=1e-4,
        verbose=False,
        warm_start=False,
        momentum=0.9,
        nesterovs_momentum=True,
        early_stopping=False,
        validation_fraction=0.1,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        n_iter_no_change=10,
        max_fun=15000,
        dtype=None,
        n_threads=None,
    ):
        self.loss = loss
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.dtype = dtype
        self.n_threads = n_threads

    def _validate_input(self, X, y, incremental, reset):
        X, y = validate_data(
            self,
            X,
            y,
            accept_sparse=["csr", "csc"],
            multi_output=True,
            y_numeric=True,
            dtype=(np.float64, np.float32),
            reset=reset,
        )
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        return X, y

    @announcing("scikit-learn drop-in kernels")
    def fit(self, X, y, sample_weight=None):
        """Fit the model to X and y.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
        sample_weight : array-like of shape (n_samples,), default=None

        Returns
        -------
        self : MLPRegressor
        """
        return self._fit(X, y, sample_weight=sample_weight, incremental=False)

    @available_if(lambda est: est._check_solver())
    @announcing("scikit-learn drop-in kernels")
    def partial_fit(self, X, y, sample_weight=None):
        """One epoch over (X, y) (stochastic solvers only).

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
        sample_weight : array-like of shape (n_samples,), default=None

        Returns
        -------
        self : MLPRegressor
        """
        return self._fit(X, y, sample_weight=sample_weight, incremental=True)

    @announcing("scikit-learn drop-in kernels")
    def predict(self, X):
        """Predicted values, in scikit-learn's dtype: NumPy's promotion of X's dtype with the
        coefficients' (float32 for a float32 fit on float32 X, float64 otherwise), or in the
        ``dtype`` given to the constructor.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)

        Returns
        -------
        y : ndarray of shape (n_samples,) or (n_samples, n_outputs)
        """
        return self._predict(X)

    def _predict(self, X, check_input=True):
        if check_input:
            X = self._checked_X(X)
        y_pred = self._forward_out(X)
        if y_pred.shape[1] == 1:
            return y_pred.ravel()
        return y_pred

    def _score(self, X, y, sample_weight=None):
        return self._score_with_function(X, y, sample_weight, r2_score)
