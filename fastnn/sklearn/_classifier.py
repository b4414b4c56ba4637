"""MLPClassifier: scikit-learn's multi-layer perceptron classifier on fastnn's kernels."""

import numbers

import numpy as np
from sklearn.base import ClassifierMixin
from sklearn.metrics import accuracy_score
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils import column_or_1d
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.class_weight import compute_class_weight, compute_sample_weight
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import _check_partial_fit_first_call, type_of_target, unique_labels
from sklearn.utils.validation import validate_data

from .._compile import announcing
from ._base import BaseMLP


class MLPClassifier(ClassifierMixin, BaseMLP):
    """Multi-layer perceptron classifier: a compiled drop-in for
    ``sklearn.neural_network.MLPClassifier``.

    Every scikit-learn parameter has the same name, default and meaning (see scikit-learn's
    documentation for the long form); the network, the random initialisation, the minibatch
    order, the SGD / Adam / L-BFGS updates and the stopping rules follow scikit-learn's, so a
    model trained with the same ``random_state`` tracks scikit-learn's to rounding, in the
    same dtype (scikit-learn's rule: float32 X fits in float32, anything else in float64).
    Binary and multilabel targets get logistic outputs, multiclass targets a softmax.

    Parameters
    ----------
    hidden_layer_sizes : array-like of shape (n_layers - 2,), default=(100,)
        Width of each hidden layer.
    activation : {'identity', 'logistic', 'tanh', 'relu'}, default='relu'
        Hidden-layer activation.
    solver : {'lbfgs', 'sgd', 'adam'}, default='adam'
        'lbfgs' runs scipy.optimize's L-BFGS-B on the compiled loss and gradient (float64).
    alpha : float, default=1e-4
        L2 penalty ``0.5 * alpha * sum(W**2)`` on the weights (not intercepts), divided by the
        batch's sum of sample weights (its size when unweighted), as scikit-learn does.
    batch_size : int or 'auto', default='auto'
        Minibatch size of the stochastic solvers; 'auto' is ``min(200, n_samples)``.
    learning_rate : {'constant', 'invscaling', 'adaptive'}, default='constant'
        Schedule of the 'sgd' solver.
    learning_rate_init : float, default=0.001
    power_t : float, default=0.5
        Exponent of the 'invscaling' schedule.
    max_iter : int, default=200
        Epochs (stochastic solvers) or iterations (lbfgs).
    shuffle : bool, default=True
    random_state : int, RandomState instance or None, default=None
    tol : float, default=1e-4
    verbose : bool, default=False
    warm_start : bool, default=False
    momentum : float, default=0.9
    nesterovs_momentum : bool, default=True
    early_stopping : bool, default=False
    validation_fraction : float, default=0.1
    beta_1, beta_2, epsilon : float, default=0.9, 0.999, 1e-8
        Adam's parameters.
    n_iter_no_change : int, default=10
    max_fun : int, default=15000
        Most loss evaluations of 'lbfgs'.
    dtype : None, float32 or float64, default=None
        Compute dtype (fastnn only).  None follows scikit-learn: a float32 X trains the
        stochastic solvers in float32, any other X (and 'lbfgs') in float64, ``coefs_`` /
        ``intercepts_`` have that dtype and ``predict_proba`` returns NumPy's promotion of
        the predicted X's dtype with it.  Given explicitly, it overrides that rule: X is
        cast to it for fit and predict, and the fitted arrays and outputs have it
        (``dtype=np.float32`` on float64 data gives float32's speed with float32 rounding).
    class_weight : dict, list of dict, 'balanced' or None, default=None
        Class weights (fastnn extension; scikit-learn's MLPClassifier has none), with the
        meaning they have in scikit-learn's linear models and trees: each sample's weight in
        the loss is its ``sample_weight`` times the weight of its class.  A dict maps class
        labels to weights (classes left out weigh 1); 'balanced' gives
        ``n_samples / (n_classes * count of the class)``, counts weighted by
        ``sample_weight``, as ``LogisticRegression`` does.  Multilabel targets take a list
        of dicts, one per label column with keys 0 and 1, or 'balanced' (per column,
        multiplied over columns: ``sklearn.utils.class_weight.compute_sample_weight``).
        'balanced' is not available in ``partial_fit`` (the class frequencies of one batch
        are not the data's; pass a dict computed with ``compute_class_weight``).  The
        early-stopping validation score uses ``sample_weight`` only.
    n_threads : int or None, default=None
        Threads for BLAS and numba during fit and predict (fastnn only).  None: one BLAS
        thread when the largest per-batch product is under 4e6 multiply-adds (threading
        products that small costs more than it gains), the current setting otherwise.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    loss_, best_loss_ : float
    loss_curve_ : list of length ``n_iter_``
    validation_scores_ : list or None
    best_validation_score_ : float or None
    t_ : int
        Training samples seen.
    coefs_ : list of ndarray, shapes (n_in, n_out) per layer
    intercepts_ : list of ndarray, shapes (n_out,) per layer
    n_features_in_ : int
    feature_names_in_ : ndarray of length ``n_features_in_``
    n_iter_, n_layers_, n_outputs_ : int
    out_activation_ : str

    Examples
    --------
    >>> from fastnn.sklearn import MLPClassifier  # instead of sklearn.neural_network
    >>> clf = MLPClassifier(random_state=1, max_iter=300).fit(X_train, y_train)
    >>> clf.predict_proba(X_test[:1])
    """

    _parameter_constraints: dict = {
        **BaseMLP._parameter_constraints,
        "class_weight": [dict, list, StrOptions({"balanced"}), None],
    }

    def __init__(
        self,
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
        class_weight=None,
    ):
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
        self.class_weight = class_weight

    #: scikit-learn's classifier always trains on log-loss
    loss = "log_loss"

    def _validate_input(self, X, y, incremental, reset):
        X, y = validate_data(
            self,
            X,
            y,
            accept_sparse=["csr", "csc"],
            multi_output=True,
            dtype=(np.float64, np.float32),
            reset=reset,
        )
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        new_classes = (not hasattr(self, "classes_")) or (not self.warm_start and not incremental)
        _check_class_weight(
            self.class_weight, unique_labels(y) if new_classes else self.classes_, y, incremental
        )
        if new_classes:
            self._label_binarizer = LabelBinarizer()
            self._label_binarizer.fit(y)
            self.classes_ = self._label_binarizer.classes_
        else:
            classes = unique_labels(y)
            if self.warm_start:
                if set(classes) != set(self.classes_):
                    raise ValueError(
                        "warm_start can only be used where `y` has the same "
                        "classes as in the previous call to fit. Previously "
                        f"got {self.classes_}, `y` has {classes}"
                    )
            elif len(np.setdiff1d(classes, self.classes_, assume_unique=True)):
                raise ValueError(
                    "`y` has classes not in `self.classes_`. "
                    f"`self.classes_` has {self.classes_}. 'y' has {classes}."
                )
        y = self._label_binarizer.transform(y).astype(bool)
        return X, y

    def _apply_class_weight(self, y, sw):
        """``sw * class weight of each sample``: for a single target, LogisticRegression's
        rule (``compute_class_weight(class_weight, classes=classes_, y=y,
        sample_weight=sw)`` indexed by each sample's class; 'balanced' counts weighted
        samples); for a multilabel target, ``compute_sample_weight(class_weight, Y)``
        (one dict per label column, keys 0 and 1; the product over columns)."""
        if self.class_weight is None:
            return sw
        if self._label_binarizer.y_type_.startswith("multilabel"):
            weight = compute_sample_weight(self.class_weight, y.astype(np.int64))
        else:
            index = y.argmax(axis=1) if y.shape[1] > 1 else y[:, 0].astype(np.int64)
            per_class = compute_class_weight(
                self.class_weight,
                classes=self.classes_,
                y=self.classes_[index],
                sample_weight=sw.astype(np.float64),
            )
            weight = np.asarray(per_class, dtype=np.float64)[index]
        # a class whose samples all weigh 0 gets an infinite 'balanced' weight: its
        # samples stay at 0 (inf * 0 would be NaN)
        with np.errstate(invalid="ignore", over="ignore"):
            out = np.where(sw == 0, 0.0, sw * weight).astype(sw.dtype)
        if not np.any(out != 0):
            raise ValueError(
                "class_weight and sample_weight give every sample weight 0; at least one "
                "sample must have a non-zero weight"
            )
        return out

    @announcing("scikit-learn drop-in kernels")
    def fit(self, X, y, sample_weight=None):
        """Fit the model to X and y.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            Class labels (any hashable type), or a label-indicator matrix (multilabel).
        sample_weight : array-like of shape (n_samples,), default=None
            Multiplied by the class weights when ``class_weight`` is set.

        Returns
        -------
        self : MLPClassifier
        """
        return self._fit(X, y, sample_weight=sample_weight, incremental=False)

    @available_if(lambda est: est._check_solver())
    @announcing("scikit-learn drop-in kernels")
    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """One epoch over (X, y) (stochastic solvers only).

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
        sample_weight : array-like of shape (n_samples,), default=None
        classes : array of shape (n_classes,), default=None
            Every class; required on the first call, ignored on later calls.

        Returns
        -------
        self : MLPClassifier
        """
        if self.class_weight == "balanced":
            _check_class_weight(self.class_weight, None, None, incremental=True)  # raises
        if _check_partial_fit_first_call(self, classes):
            self._label_binarizer = LabelBinarizer()
            if type_of_target(y).startswith("multilabel"):
                self._label_binarizer.fit(y)
            else:
                self._label_binarizer.fit(classes)
        return self._fit(X, y, sample_weight=sample_weight, incremental=True)

    @announcing("scikit-learn drop-in kernels")
    def predict(self, X):
        """Predicted classes.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)

        Returns
        -------
        y : ndarray of shape (n_samples,) or (n_samples, n_classes) (multilabel)
        """
        return self._predict(X)

    def _predict(self, X, check_input=True):
        if check_input:
            X = self._checked_X(X)
        y_pred = self._forward_out(X)
        if self.n_outputs_ == 1:
            y_pred = y_pred.ravel()
        return self._label_binarizer.inverse_transform(y_pred)

    def _score(self, X, y, sample_weight=None):
        return self._score_with_function(X, y, sample_weight, accuracy_score)

    @announcing("scikit-learn drop-in kernels")
    def predict_proba(self, X):
        """Class probabilities, columns in the order of ``classes_``.

        Computed and returned in scikit-learn's dtype: NumPy's promotion of X's dtype with the
        coefficients' (float32 for a float32 fit on float32 X, float64 otherwise), or in the
        ``dtype`` given to the constructor.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)

        Returns
        -------
        y_prob : ndarray of shape (n_samples, n_classes)
        """
        return self._proba(self._checked_X(X))

    def _proba(self, X):
        y_pred = self._forward_out(X)
        if self.n_outputs_ == 1:
            p = y_pred.ravel()
            return np.vstack([1 - p, p]).T
        return y_pred

    @announcing("scikit-learn drop-in kernels")
    def predict_log_proba(self, X):
        """Logarithm of :meth:`predict_proba`.

        ``np.log(predict_proba(X))`` as in scikit-learn, except where a probability is below
        the dtype's smallest normal number (float32: ``exp(-87)``): there scikit-learn's log
        loses digits and, once the probability underflows to 0, returns ``-inf`` with a
        divide-by-zero warning; this returns the finite log computed from the output layer's
        pre-activations (log-softmax, or ``-log(1 + exp(-z))`` for logistic outputs).

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)

        Returns
        -------
        log_y_prob : ndarray of shape (n_samples, n_classes)
        """
        X = self._checked_X(X)
        y_prob = self._proba(X)
        # 0 (log: -inf) or subnormal (log: digits lost): recomputed from the logits
        lost = y_prob < np.finfo(y_prob.dtype).tiny
        with np.errstate(divide="ignore"):
            log_prob = np.log(y_prob, out=y_prob)
        if lost.any():
            log_prob[lost] = self._log_proba_from_logits(X)[lost]
        return log_prob

    def _log_proba_from_logits(self, X):
        Z = self._forward_out(X, logits=True)
        if self.out_activation_ == "softmax":
            Z -= Z.max(axis=1, keepdims=True)
            Z -= np.log(np.exp(Z).sum(axis=1, keepdims=True))
            return Z
        if self.n_outputs_ == 1:
            z = Z.ravel()
            return np.vstack([-np.logaddexp(0, z), -np.logaddexp(0, -z)]).T
        return -np.logaddexp(0, -Z)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags


def _check_class_weight(class_weight, classes, y, incremental):
    """ValueError/TypeError for a class_weight that cannot apply to these classes, raised
    before the estimator changes."""
    if class_weight is None:
        return
    if class_weight == "balanced":
        if incremental:
            raise ValueError(
                "class_weight 'balanced' is not supported for partial_fit: the class "
                "frequencies of one batch are not the data's. Compute the weights with "
                "sklearn.utils.class_weight.compute_class_weight('balanced', classes=classes, "
                "y=y) on enough of the data and pass them as a dict."
            )
        return
    multilabel = type_of_target(y).startswith("multilabel")
    if isinstance(class_weight, list):
        if not multilabel:
            raise ValueError(
                "class_weight as a list of dicts is for multilabel targets (one dict per "
                "label column); for this target pass a dict {class label: weight}"
            )
        if len(class_weight) != y.shape[1]:
            raise ValueError(
                f"class_weight has {len(class_weight)} dicts for {y.shape[1]} label columns"
            )
        dicts, allowed = class_weight, [[0, 1]] * y.shape[1]
    else:
        if multilabel:
            raise ValueError(
                "class_weight for a multilabel target must be 'balanced' or a list of dicts, "
                "one per label column with keys 0 and 1"
            )
        dicts, allowed = [class_weight], [list(classes)]
    for d, labels in zip(dicts, allowed, strict=True):
        if not isinstance(d, dict):
            raise TypeError(f"class_weight entries must be dicts, got {type(d).__name__}")
        unknown = [k for k in d if not any(_same_label(k, c) for c in labels)]
        if unknown:
            raise ValueError(
                f"class_weight has keys {unknown} that are not classes; classes are {labels}"
            )
        for k, v in d.items():
            if isinstance(v, bool) or not isinstance(v, numbers.Real):
                raise TypeError(f"class_weight[{k!r}] must be a real number, got {v!r}")
            if not np.isfinite(v) or v < 0:
                raise ValueError(f"class_weight[{k!r}] must be finite and >= 0, got {v}")


def _same_label(key, label):
    try:
        return key == label or (np.asarray(label).dtype.kind in "iub" and int(key) == label)
    except (TypeError, ValueError):
        return False
