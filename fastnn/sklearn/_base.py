"""The shared machinery of fastnn's scikit-learn MLP estimators.

``BaseMLP`` mirrors scikit-learn's ``BaseMultilayerPerceptron`` (same parameters, attributes,
initialisation, random-number use, stopping rules and warnings) but runs every batch through
the compiled kernels of ``fastnn.kernels.sklearn_compat``: one kernel call per epoch for the
stochastic solvers, one per function evaluation for L-BFGS.

Parameters live in one flat vector ``[W_0, W_1, ..., b_0, b_1, ...]`` (scikit-learn's packing
order); after a fit, ``coefs_`` and ``intercepts_`` are views into it.  If a user rebinds them
(or after unpickling, which copies views), the next call packs them again.
"""

import contextlib
import numbers
import warnings

import numba
import numpy as np
import scipy.optimize
import scipy.sparse
from sklearn.base import BaseEstimator, is_classifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, Options, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data
from threadpoolctl import ThreadpoolController

from fastnn.kernels import BLAS_SOURCE, CODES, all_finite
from fastnn.kernels import sklearn_compat as SK

from .._fastpath import FastForward
from .._threads import (
    _state,
    blas_threads_held,
    own_threads,
    rescan_blas,
    worker_threads,
)
from .._validation import check_dtype, check_fits_in_memory

_STOCHASTIC = ("sgd", "adam")

# scipy.optimize (imported above) loads SciPy's own OpenBLAS next to NumPy's: fastnn's thread
# control must see it (see _fit_lbfgs)
rescan_blas()

#: scikit-learn's hidden activation names -> fastnn kernel codes
_HIDDEN_CODES = {
    "identity": CODES["identity"],
    "logistic": CODES["sigmoid"],
    "tanh": CODES["tanh"],
    "relu": CODES["relu"],
}

#: Per-batch products smaller than this many multiply-adds (rows x n_in x n_out of the largest
#: layer) run with one BLAS thread unless ``n_threads`` says otherwise.  On the 2-core machine,
#: 100 epochs of digits (batches 200 x 64 x 100 = 1.3e6) took 292 ms with one thread and
#: 7019 ms with two (scikit-learn: 1288 vs 15834 ms): threading products this small loses
#: far more to synchronisation than it gains, badly so when the cores are busy.
SERIAL_BLAS_WORK = 4_000_000

#: Below this many multiply-adds per product OpenBLAS runs a GEMM on one thread whatever its
#: setting (interface/gemm.c: one thread while m*n*k < SMP_THRESHOLD_MIN (65536) *
#: GEMM_MULTITHREAD_THRESHOLD (4)); setting threadpoolctl's limit around such calls only costs
#: time: 40% of a one-row predict_proba on digits (about 20 us)
BLAS_SERIAL_ANYWAY = 65536

#: rows a split predict (``_forward_out``) has in flight across its threads: the activations
#: it keeps are at most this many rows of the widest hidden layer, twice
ROW_SPLIT_ROWS = 4096

#: most rows :meth:`BaseMLP._checked_X` lets through without scikit-learn's full validation
FAST_ROWS = 64
_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

_CONTROLLER: list[
    ThreadpoolController
] = []  # one ThreadpoolController, made on first use (finding the libraries: ~9 ms)


def _controller():
    if not _CONTROLLER:
        _CONTROLLER.append(ThreadpoolController())
    return _CONTROLLER[0]


_OUT_KINDS = {
    "identity": SK.OUT_IDENTITY,
    "logistic": SK.OUT_LOGISTIC,
    "softmax": SK.OUT_SOFTMAX,
    "exp": SK.OUT_EXP,
}


class _SolverState:
    """What scikit-learn's SGDOptimizer / AdamOptimizer keep between batches."""

    def __init__(self, solver, size, dtype, learning_rate_init):
        self.solver = solver
        self.learning_rate = float(learning_rate_init)
        self.step = np.zeros(1, dtype=np.int64)
        self.state1 = np.zeros(size, dtype=dtype)
        self.state2 = np.zeros(size if solver == "adam" else 0, dtype=dtype)


class _OptimizerView:
    """Read-only stand-in for scikit-learn's ``SGDOptimizer`` / ``AdamOptimizer``, as
    ``mlp._optimizer``: the attributes scikit-learn code reads, with their meaning.

    SGD: ``learning_rate`` (the current rate: 'invscaling' and 'adaptive' change it),
    ``learning_rate_init``, ``lr_schedule``, ``momentum``, ``nesterov``, ``power_t``,
    ``velocities``.  Adam: ``t`` (steps taken), ``learning_rate`` (the bias-corrected rate of
    the last step, as scikit-learn's ``AdamOptimizer`` stores it), ``learning_rate_init``,
    ``beta_1``, ``beta_2``, ``epsilon``, ``ms``, ``vs``.  The arrays are views into the
    solver's state, shaped like ``coefs_ + intercepts_``.  The update methods
    (``update_params``, ``iteration_ends``, ``trigger_stopping``) are not provided.
    """

    def __init__(self, est, state):
        shapes = [c.shape for c in est.coefs_] + [b.shape for b in est.intercepts_]
        self.learning_rate_init = float(est.learning_rate_init)
        if state.solver == "sgd":
            self.learning_rate = state.learning_rate
            self.lr_schedule = est.learning_rate
            self.momentum = est.momentum
            self.nesterov = est.nesterovs_momentum
            self.power_t = est.power_t
            self.velocities = _views(state.state1, shapes)
        else:
            t = int(state.step[0])
            self.t = t
            b1, b2 = float(est.beta_1), float(est.beta_2)
            self.learning_rate = (
                self.learning_rate_init * np.sqrt(1 - b2**t) / (1 - b1**t)
                if t > 0
                else self.learning_rate_init
            )
            self.beta_1, self.beta_2, self.epsilon = b1, b2, float(est.epsilon)
            self.ms = _views(state.state1, shapes)
            self.vs = _views(state.state2, shapes)


def _views(flat, shapes):
    out, off = [], 0
    for shape in shapes:
        size = int(np.prod(shape))
        out.append(flat[off : off + size].reshape(shape))
        off += size
    return out


class BaseMLP(BaseEstimator):
    """Base of :class:`MLPClassifier` and :class:`MLPRegressor`; not for direct use."""

    # -- private attributes scikit-learn code reads -----------------------------------------
    @property
    def _optimizer(self):
        """The stochastic solver's state as scikit-learn's optimizer exposes it (see
        :class:`_OptimizerView`); AttributeError before a stochastic fit, as in scikit-learn."""
        state = self.__dict__.get("_solver_state")
        if state is None:
            raise AttributeError(f"'{type(self).__name__}' object has no attribute '_optimizer'")
        return _OptimizerView(self, state)

    @property
    def _best_coefs(self):
        """Weights of the best validation score so far (early stopping), as in scikit-learn."""
        return self._best_views()[0]

    @property
    def _best_intercepts(self):
        return self._best_views()[1]

    def _best_views(self):
        best = self.__dict__.get("_best_flat")
        if best is None or "coefs_" not in self.__dict__:
            raise AttributeError("_best_coefs is set by fit")
        shapes = [c.shape for c in self.coefs_]
        views = _views(best, shapes + [(c.shape[1],) for c in self.coefs_])
        return views[: len(shapes)], views[len(shapes) :]

    def _forward_pass_fast(self, X, check_input=True):
        """Output-layer activations, scikit-learn's private method of the same name."""
        if check_input:
            X = self._validate_X_predict(X)
        else:
            X = _dense_writeable(X, self._predict_dtype(np.asarray(X).dtype))
        return self._forward_out(X)

    _parameter_constraints: dict = {
        "hidden_layer_sizes": ["array-like", Interval(numbers.Integral, 1, None, closed="left")],
        "activation": [StrOptions({"identity", "logistic", "tanh", "relu"})],
        "solver": [StrOptions({"lbfgs", "sgd", "adam"})],
        "alpha": [Interval(numbers.Real, 0, None, closed="left")],
        "batch_size": [StrOptions({"auto"}), Interval(numbers.Integral, 1, None, closed="left")],
        "learning_rate": [StrOptions({"constant", "invscaling", "adaptive"})],
        "learning_rate_init": [Interval(numbers.Real, 0, None, closed="neither")],
        "power_t": [Interval(numbers.Real, 0, None, closed="left")],
        "max_iter": [Interval(numbers.Integral, 1, None, closed="left")],
        "shuffle": ["boolean"],
        "random_state": ["random_state"],
        "tol": [Interval(numbers.Real, 0, None, closed="left")],
        "verbose": ["verbose"],
        "warm_start": ["boolean"],
        "momentum": [Interval(numbers.Real, 0, 1, closed="both")],
        "nesterovs_momentum": ["boolean"],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(numbers.Real, 0, 1, closed="left")],
        "beta_1": [Interval(numbers.Real, 0, 1, closed="left")],
        "beta_2": [Interval(numbers.Real, 0, 1, closed="left")],
        "epsilon": [Interval(numbers.Real, 0, None, closed="neither")],
        "n_iter_no_change": [
            Interval(numbers.Integral, 1, None, closed="left"),
            Options(numbers.Real, {np.inf}),
        ],
        "max_fun": [Interval(numbers.Integral, 1, None, closed="left")],
        "dtype": "no_validation",  # checked by fastnn's check_dtype in fit
        "n_threads": [Interval(numbers.Integral, 1, None, closed="left"), None],
    }

    # -- helpers ------------------------------------------------------------------------------
    def _explicit_dtype(self):
        """The ``dtype`` argument as a NumPy dtype, or None (follow X, scikit-learn's rule)."""
        return None if self.dtype is None else check_dtype(self.dtype, "dtype")

    def _fit_dtype_for(self, X_dtype, explicit):
        """Compute dtype of a first fit: ``explicit`` when given, else scikit-learn's rule
        (float32 X -> float32 for the stochastic solvers, float64 otherwise; scikit-learn's
        L-BFGS always ends with float64 coefficients, scipy's optimizer works in float64)."""
        if explicit is not None:
            return explicit
        if self.solver in _STOCHASTIC and X_dtype == np.float32:
            return np.dtype(np.float32)
        return np.dtype(np.float64)

    def _predict_dtype(self, X_dtype):
        """Dtype predictions are computed and returned in: the fit dtype when ``dtype`` was
        given, else NumPy's promotion of X's dtype with the coefficients' (scikit-learn's
        ``X @ coefs_``), narrowed to float32 or float64."""
        fit_dtype = self._fit_dtype
        if getattr(self, "_dtype_explicit", False):
            return fit_dtype
        if np.result_type(X_dtype, fit_dtype) == np.float32:
            return np.dtype(np.float32)
        return np.dtype(np.float64)

    def _threads(self, rows, units):
        """Context limiting BLAS and numba threads to ``n_threads``.  When that is None:
        numba's at fastnn's count (``own_threads``: a pool's thread starts at numba's default),
        BLAS at one thread if the largest product of a ``rows``-row batch is below
        SERIAL_BLAS_WORK, and otherwise at whatever is set already for the kernels' BLAS and
        one thread for any other (SciPy's, which the kernels do not call: its idle workers
        then sleep instead of spinning on the cores, see ``fastnn._openblas_wait``)."""
        n = self.n_threads
        if n is None and _state["threads"] is None:
            n = worker_threads()  # a Dask worker's task: its thread budget
        stack = contextlib.ExitStack()
        if n is None:
            stack.enter_context(own_threads())  # fastnn's count, in a pool's thread too
            work = rows * max(int(a) * int(b) for a, b in zip(units[:-1], units[1:], strict=True))
            if work >= SERIAL_BLAS_WORK:
                stack.enter_context(blas_threads_held(1, but=BLAS_SOURCE))
            elif work >= BLAS_SERIAL_ANYWAY:
                # (held through fastnn's per-library holds, not threadpoolctl's save-and-
                # restore: a fit in another Python thread holding BLAS meanwhile would
                # otherwise restore this call's 1 for good)
                stack.enter_context(blas_threads_held(1))
            return stack
        stack.enter_context(blas_threads_held(n))
        stack.enter_context(_controller().limit(limits=n, user_api="openmp"))
        stack.enter_context(own_threads(min(n, numba.config.NUMBA_NUM_THREADS)))
        return stack

    def _apply_class_weight(self, y, sw):
        """Sample weights times class weights (the classifier's hook; none here)."""
        return sw

    def _validate_X_predict(self, X):
        X = validate_data(self, X, accept_sparse=["csr", "csc"], reset=False)
        return _dense_writeable(X, self._predict_dtype(X.dtype))

    def _checked_X(self, X):
        """``check_is_fitted`` and :meth:`_validate_X_predict` in one, with a fast path: a
        small (<= FAST_ROWS rows), finite, C-contiguous, writeable float32/float64 ndarray of
        the fitted width, already in the prediction dtype, on an estimator fitted without
        feature names, is used as it is.  That is exactly the input on which scikit-learn's
        validation changes nothing and raises nothing; any other input takes the full check.
        (One-row predict_proba on digits: the full check was about 60% of the call.)"""
        d = self.__dict__
        if (
            type(X) is np.ndarray
            and X.ndim == 2
            and 0 < X.shape[0] <= FAST_ROWS
            and "coefs_" in d
            and "feature_names_in_" not in d
            and X.shape[1] == d.get("n_features_in_")
            and X.flags.c_contiguous
            and X.flags.writeable
            and X.dtype in _FLOAT_DTYPES
            and self._predict_dtype(X.dtype) == X.dtype
            and all_finite(X)
        ):
            return X
        check_is_fitted(self)
        return self._validate_X_predict(X)

    def _layout(self):
        """(units int64 array, n_w) of the fitted network."""
        bound = self._current_binding()
        if bound is not None:
            return bound[4], bound[5]
        units = np.array(
            [c.shape[0] for c in self.coefs_] + [self.coefs_[-1].shape[1]], dtype=np.int64
        )
        n_w = int(sum(c.size for c in self.coefs_))
        return units, n_w

    def _current_binding(self):
        """The record ``_bind`` made, if ``coefs_``/``intercepts_`` still hold the very arrays
        it bound (views into ``_flat``); None once a user has replaced any of them."""
        d = self.__dict__
        bound = d.get("_bound")
        if bound is None:
            return None
        coefs, intercepts = d.get("coefs_"), d.get("intercepts_")
        if coefs is not bound[0] or intercepts is not bound[1]:
            return None
        if len(coefs) != len(bound[2]) or len(intercepts) != len(bound[3]):
            return None
        for a, b in zip(coefs, bound[2], strict=True):
            if a is not b:
                return None
        for a, b in zip(intercepts, bound[3], strict=True):
            if a is not b:
                return None
        return bound

    def _packed(self, dtype):
        """The flat parameter vector in ``dtype``: the live buffer when ``coefs_`` and
        ``intercepts_`` are still views into it, a freshly packed copy otherwise."""
        flat = getattr(self, "_flat", None)
        if flat is not None and flat.dtype == dtype and self._current_binding() is not None:
            return flat
        arrays = list(self.coefs_) + list(self.intercepts_)
        if flat is not None and flat.dtype == dtype and _are_views(arrays, flat):
            return flat
        return np.concatenate([np.asarray(a, dtype=dtype).ravel() for a in arrays])

    def _bind(self, flat, shapes):
        """Make ``coefs_``/``intercepts_`` views into ``flat`` (shapes of the weight matrices)."""
        self._flat = flat
        coefs, intercepts = [], []
        off = 0
        for n_in, n_out in shapes:
            coefs.append(flat[off : off + n_in * n_out].reshape(n_in, n_out))
            off += n_in * n_out
        for _, n_out in shapes:
            intercepts.append(flat[off : off + n_out])
            off += n_out
        self.coefs_ = coefs
        self.intercepts_ = intercepts
        units = np.array([a for a, _ in shapes] + [shapes[-1][1]], dtype=np.int64)
        n_w = int(sum(a * b for a, b in shapes))
        # (the last item: a slot for the FastForward ``_fast_forward`` makes for this buffer;
        # predict must leave the estimator's attributes as they are, as scikit-learn checks)
        self._bound = (coefs, intercepts, tuple(coefs), tuple(intercepts), units, n_w, [None])

    def __getstate__(self):
        # a copy: object.__getstate__ hands back the instance's own __dict__
        state = dict(super().__getstate__())
        state.pop("_bound", None)  # identities mean nothing in another process
        return state

    def __setstate__(self, state):
        # Pickling copies coefs_/intercepts_ out of the flat buffer; make them views again
        # (packed from coefs_, the attributes users see) so predict need not repack each call.
        state = dict(state)
        state.pop("_bound", None)
        super().__setstate__(state)
        if "coefs_" in state and "_fit_dtype" in state:
            shapes = [c.shape for c in self.coefs_]
            self._bind(self._packed(self._fit_dtype), shapes)

    def _forward_out(self, X, logits=False):
        """Output-layer activations (n, n_outputs) for validated X, in X's dtype (the output
        layer's pre-activations when ``logits``)."""
        dtype = X.dtype
        flat = self._packed(dtype)
        units, n_w = self._layout()
        n = X.shape[0]
        out = np.empty((n, int(units[-1])), dtype=dtype)
        code = _HIDDEN_CODES[self.activation]
        kind = SK.OUT_IDENTITY if logits else _OUT_KINDS[self.out_activation_]
        with self._threads(n, units):
            row_split = self._fast_forward(flat, units, n_w, code)
            chunks = row_split.chunks(n)
            if chunks > 1:
                row_split.run(X, out, chunks, ROW_SPLIT_ROWS)
                SK.output_activation(out, kind, out)
                return out
            acts = np.empty(n * sum(int(u) for u in units[1:-1]), dtype=dtype)
            SK.mlp_forward(X, flat, n_w, units, code, kind, acts, out)
        return out

    def _fast_forward(self, flat, units, n_w, code):
        """The network's forward pass split by rows across the threads
        (``fastnn._fastpath.FastForward``), kept in ``_bind``'s record while ``flat`` is the
        bound parameter buffer (made again each call otherwise: about 10 us)."""
        bound = self._current_binding()
        slot = bound[6] if bound is not None and flat is self.__dict__.get("_flat") else None
        if slot is not None and slot[0] is not None and int(slot[0].args[4][0]) == code:
            return slot[0]
        sizes = [int(u) for u in units]
        w_off, b_off = [], []
        w, b = 0, n_w
        for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True):
            w_off.append(w)
            b_off.append(b)
            w += n_in * n_out
            b += n_out
        codes = [code] * (len(sizes) - 2) + [CODES["identity"]]
        found = FastForward(flat, sizes, w_off, b_off, codes, [0.0] * len(codes))
        if slot is not None:
            slot[0] = found
        return found

    # -- fit ----------------------------------------------------------------------------------
    def _fit(self, X, y, sample_weight=None, incremental=False):
        self._validate_params()
        explicit = self._explicit_dtype()
        hidden = self.hidden_layer_sizes
        if not hasattr(hidden, "__iter__"):
            hidden = [hidden]
        hidden = list(hidden)
        if np.any(np.array(hidden) <= 0):
            raise ValueError(f"hidden_layer_sizes must be > 0, got {hidden}.")
        first_pass = not hasattr(self, "coefs_") or (not self.warm_start and not incremental)
        previous = getattr(self, "_fit_dtype", None)
        if not first_pass and explicit is not None and previous != explicit:
            first_pass = True  # the dtype argument changed since the last fit: start again
        X, y = self._validate_input(X, y, incremental, reset=first_pass)
        if first_pass:
            dtype = self._fit_dtype_for(X.dtype, explicit)
        else:
            # partial_fit / warm_start keep the coefficients' dtype, whatever this X's is
            dtype = previous if previous is not None else np.dtype(self.coefs_[0].dtype)
        n_samples = X.shape[0]
        sw = _sample_weight(sample_weight, n_samples, dtype)
        sw_user = sw if sample_weight is not None else None  # early stopping's validation score
        sw = self._apply_class_weight(y, sw)
        X = _dense_writeable(X, dtype)
        n_features = X.shape[1]
        self._fit_dtype = dtype
        if first_pass:
            self._dtype_explicit = explicit is not None
        if y.ndim == 1:
            y = y.reshape(-1, 1)
        self.n_outputs_ = y.shape[1]
        layer_units = [n_features] + hidden + [self.n_outputs_]
        # float64 draw, parameters and gradients: a size beyond the machine is an argument error
        check_fits_in_memory(
            sum(a * b + b for a, b in zip(layer_units[:-1], layer_units[1:], strict=False)) * 24,
            f"hidden_layer_sizes={tuple(hidden)}",
        )
        self._random_state = check_random_state(self.random_state)
        if first_pass:
            self._initialize(y, layer_units, dtype)
        else:
            flat = self._packed(dtype)
            if flat is not getattr(self, "_flat", None):
                self._bind(flat, list(zip(layer_units[:-1], layer_units[1:], strict=False)))
        Y = np.ascontiguousarray(y, dtype=dtype)
        if self.solver == "lbfgs":
            rows = n_samples
        elif self.batch_size == "auto":
            rows = min(200, n_samples)
        else:
            rows = min(self.batch_size, n_samples)
        with self._threads(rows, layer_units):
            if self.solver in _STOCHASTIC:
                self._fit_stochastic(X, y, Y, sw, sw_user, incremental)
            else:
                self._fit_lbfgs(X, Y, sw)
        if not np.all(np.isfinite(self._flat)):
            raise ValueError(
                "Solver produced non-finite parameter weights. The input data may"
                " contain large values and need to be preprocessed."
            )
        return self

    def _initialize(self, y, layer_units, dtype):
        self.n_iter_ = 0
        self.t_ = 0
        self.n_outputs_ = y.shape[1]
        self.n_layers_ = len(layer_units)
        if not is_classifier(self):
            self.out_activation_ = "exp" if self.loss == "poisson" else "identity"
        elif self._label_binarizer.y_type_ == "multiclass":
            self.out_activation_ = "softmax"
        else:
            self.out_activation_ = "logistic"
        # Glorot-uniform, drawn exactly as scikit-learn draws it (float64, then cast), so one
        # random_state gives both libraries the same starting network.
        factor = 2.0 if self.activation == "logistic" else 6.0
        shapes = list(zip(layer_units[:-1], layer_units[1:], strict=False))
        coefs, intercepts = [], []
        for fan_in, fan_out in shapes:
            bound = np.sqrt(factor / (fan_in + fan_out))
            coefs.append(self._random_state.uniform(-bound, bound, (fan_in, fan_out)))
            intercepts.append(self._random_state.uniform(-bound, bound, fan_out))
        flat = np.concatenate([a.ravel() for a in coefs + intercepts]).astype(dtype)
        self._bind(flat, shapes)
        self._best_flat = flat.copy()
        self._solver_state = None
        if self.solver in _STOCHASTIC:
            self.loss_curve_ = []
            self._no_improvement_count = 0
            if self.early_stopping:
                self.validation_scores_ = []
                self.best_validation_score_ = -np.inf
                self.best_loss_ = None
            else:
                self.best_loss_ = np.inf
                self.validation_scores_ = None
                self.best_validation_score_ = None

    def _fit_lbfgs(self, X, Y, sw):
        # L-BFGS runs in float64 like scikit-learn's (scipy's optimizer works in float64).
        f64 = np.float64
        X64 = X if X.dtype == f64 else X.astype(f64)
        Y64 = Y if Y.dtype == f64 else Y.astype(f64)
        sw64 = sw if sw.dtype == f64 else sw.astype(f64)
        sw_sum = float(sw64.sum())
        units, n_w = self._layout()
        code = _HIDDEN_CODES[self.activation]
        kind = _OUT_KINDS[self.out_activation_]
        alpha = float(self.alpha)
        n = X.shape[0]
        size = n * int(units[1:].sum())
        acts = np.empty(size, dtype=f64)
        deltas = np.empty(size, dtype=f64)
        grad = np.zeros(self._flat.size, dtype=f64)

        def loss_grad(params):
            params = np.ascontiguousarray(params, dtype=f64)
            loss = SK.mlp_loss_grad(
                X64, Y64, sw64, sw_sum, params, n_w, units, code, kind, alpha, grad, acts, deltas
            )
            return loss, grad.copy()

        iprint = 1 if (self.verbose is True or self.verbose >= 1) else -1
        options = {"maxfun": self.max_fun, "maxiter": self.max_iter, "gtol": self.tol}
        if tuple(int(v) for v in scipy.__version__.split(".")[:2]) < (1, 15):
            options["iprint"] = iprint
        # L-BFGS-B's own vector work (about 7.5k parameters here) goes to SciPy's OpenBLAS,
        # a second BLAS with its own threads: they spun against NumPy's, which the loss and
        # gradient's products use, and a digits fit with two threads took 224 ms instead of
        # 30 (scikit-learn's own: 197 ms instead of 46).  That BLAS gets one thread meanwhile.
        with blas_threads_held(1, but=BLAS_SOURCE):
            res = scipy.optimize.minimize(
                loss_grad,
                self._flat.astype(f64),
                method="L-BFGS-B",
                jac=True,
                options=options,
            )
        self.n_iter_ = _lbfgs_n_iter(res, self.max_iter)
        self.loss_ = float(res.fun)
        self._flat[...] = res.x

    def _fit_stochastic(self, X, y, Y, sw, sw_user, incremental):
        dtype = X.dtype
        state = getattr(self, "_solver_state", None)
        if not incremental or state is None or state.solver != self.solver:
            state = _SolverState(self.solver, self._flat.size, dtype, self.learning_rate_init)
            self._solver_state = state
        if self.early_stopping and incremental:
            raise ValueError("partial_fit does not support early_stopping=True")
        early_stopping = self.early_stopping
        if early_stopping:
            # scikit-learn stratifies only when there is a single output column (binary)
            stratify = y if (is_classifier(self) and self.n_outputs_ == 1) else None
            idx_all = np.arange(X.shape[0])
            idx_train, idx_val = train_test_split(
                idx_all,
                random_state=self._random_state,
                test_size=self.validation_fraction,
                stratify=stratify,
            )
            if idx_val.shape[0] < 2:
                raise ValueError(
                    "The validation set is too small. Increase 'validation_fraction' "
                    "or the size of your dataset."
                )
            X_train = X[idx_train]
            Y_train, sw_train = Y[idx_train], sw[idx_train]
            X_val = X[idx_val]
            y_val = y[idx_val]
            if is_classifier(self):
                y_val = self._label_binarizer.inverse_transform(y_val)
            # scored with the user's sample weights only, as SGDClassifier scores its
            # validation split (class weights shape the loss, not the score)
            sw_val = sw_user[idx_val] if sw_user is not None else None
        else:
            X_train, Y_train, sw_train = X, Y, sw
            X_val = y_val = sw_val = None
        X_train = np.ascontiguousarray(X_train)
        Y_train = np.ascontiguousarray(Y_train)
        sw_train = np.ascontiguousarray(sw_train)
        n_samples = X_train.shape[0]
        sample_idx = np.arange(n_samples, dtype=np.int64)
        if self.batch_size == "auto":
            batch_size = min(200, n_samples)
        else:
            if self.batch_size > n_samples:
                warnings.warn(
                    "Got `batch_size` less than 1 or larger than "
                    "sample size. It is going to be clipped",
                    stacklevel=3,
                )
            batch_size = int(np.clip(self.batch_size, 1, n_samples))

        units, n_w = self._layout()
        code = _HIDDEN_CODES[self.activation]
        kind = _OUT_KINDS[self.out_activation_]
        n_out = int(units[-1])
        size = batch_size * int(units[1:].sum())
        acts = np.empty(size, dtype=dtype)
        deltas = np.empty(size, dtype=dtype)
        grad = np.zeros(self._flat.size, dtype=dtype)
        xbuf = np.empty(batch_size * X_train.shape[1], dtype=dtype)
        ybuf = np.empty(batch_size * n_out, dtype=dtype)
        swbuf = np.empty(batch_size, dtype=dtype)
        solver = SK.SOLVER_SGD if self.solver == "sgd" else SK.SOLVER_ADAM
        alpha = float(self.alpha)
        flat = self._flat
        epoch, pointers = SK.mlp_epoch, None
        try:
            self.n_iter_ = 0
            for _ in range(self.max_iter):
                if self.shuffle:
                    # scikit-learn's shuffle(sample_idx, random_state=rs): permute arange(n)
                    # with the RandomState, then index; same draws, same order.
                    perm = np.arange(n_samples)
                    self._random_state.shuffle(perm)
                    sample_idx = sample_idx[perm]
                lr = state.learning_rate if solver == SK.SOLVER_SGD else self.learning_rate_init
                args = (
                    X_train,
                    Y_train,
                    sw_train,
                    sample_idx,
                    batch_size,
                    flat,
                    n_w,
                    units,
                    code,
                    kind,
                    alpha,
                    solver,
                    float(lr),
                    float(self.momentum),
                    bool(self.nesterovs_momentum),
                    float(self.beta_1),
                    float(self.beta_2),
                    float(self.epsilon),
                    state.step,
                    state.state1,
                    state.state2,
                    grad,
                    xbuf,
                    ybuf,
                    swbuf,
                    acts,
                    deltas,
                )
                if pointers is None:  # the passes' addresses, once per fit (the types stay)
                    pointers = epoch.pointers(epoch.signature(args))
                accumulated = epoch.jit(pointers, *args)
                self.n_iter_ += 1
                self.loss_ = accumulated / n_samples
                self.t_ += n_samples
                self.loss_curve_.append(self.loss_)
                if self.verbose:
                    print(f"Iteration {self.n_iter_}, loss = {self.loss_:.8f}")
                self._update_no_improvement_count(early_stopping, X_val, y_val, sw_val)
                if solver == SK.SOLVER_SGD and self.learning_rate == "invscaling":
                    state.learning_rate = float(self.learning_rate_init) / (
                        (self.t_ + 1) ** self.power_t
                    )
                if self._no_improvement_count > self.n_iter_no_change:
                    if early_stopping:
                        msg = (
                            "Validation score did not improve more than "
                            f"tol={self.tol:f} for {self.n_iter_no_change} consecutive epochs."
                        )
                    else:
                        msg = (
                            f"Training loss did not improve more than tol={self.tol:f}"
                            f" for {self.n_iter_no_change} consecutive epochs."
                        )
                    if self._trigger_stopping(state, msg):
                        break
                    self._no_improvement_count = 0
                if incremental:
                    break
                if self.n_iter_ == self.max_iter:
                    warnings.warn(
                        f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) "
                        "reached and the optimization hasn't converged yet.",
                        ConvergenceWarning,
                        stacklevel=3,
                    )
        except KeyboardInterrupt:
            warnings.warn("Training interrupted by user.", stacklevel=3)
        if early_stopping:
            flat[...] = self._best_flat

    def _trigger_stopping(self, state, msg):
        """scikit-learn's rule: stop, except that 'adaptive' SGD divides the rate by 5 first
        (until it falls to 1e-6)."""
        if state.solver == "adam" or self.learning_rate != "adaptive":
            if self.verbose:
                print(msg + " Stopping.")
            return True
        if state.learning_rate <= 1e-6:
            if self.verbose:
                print(msg + " Learning rate too small. Stopping.")
            return True
        state.learning_rate /= 5.0
        if self.verbose:
            print(msg + f" Setting learning rate to {state.learning_rate:f}")
        return False

    def _update_no_improvement_count(self, early_stopping, X_val, y_val, sw_val):
        if early_stopping:
            score = self._score(X_val, y_val, sample_weight=sw_val)
            self.validation_scores_.append(score)
            if self.verbose:
                print(f"Validation score: {self.validation_scores_[-1]:f}")
            last = self.validation_scores_[-1]
            if last < (self.best_validation_score_ + self.tol):
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if last > self.best_validation_score_:
                self.best_validation_score_ = last
                self._best_flat = self._flat.copy()
        else:
            if self.loss_curve_[-1] > self.best_loss_ - self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if self.loss_curve_[-1] < self.best_loss_:
                self.best_loss_ = self.loss_curve_[-1]

    def _score_with_function(self, X, y, sample_weight, score_function):
        """Score on already validated X (early stopping), NaN if predictions are not finite."""
        y_pred = self._predict(X, check_input=False)
        if np.issubdtype(y_pred.dtype, np.floating) and not np.isfinite(y_pred).all():
            return np.nan
        return score_function(y, y_pred, sample_weight=sample_weight)

    def _check_solver(self):
        if self.solver not in _STOCHASTIC:
            raise AttributeError(
                "partial_fit is only available for stochastic"
                f" optimizers. {self.solver} is not stochastic."
            )
        return True

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags


# -- module helpers ---------------------------------------------------------------------------
def _dense_writeable(X, dtype):
    """C-contiguous, writeable ``dtype`` array (sparse input is densified: the kernels are
    dense; read-only input is copied so the kernels see one array type, not a second
    compiled signature)."""
    if scipy.sparse.issparse(X):
        X = X.toarray()
    X = np.ascontiguousarray(X, dtype=dtype)
    if not X.flags.writeable:
        X = X.copy()
    return X


def _sample_weight(sample_weight, n_samples, dtype):
    """Sample weights as a C-contiguous (n_samples,) array of ``dtype`` (ones when None)."""
    if sample_weight is None:
        return np.ones(n_samples, dtype=dtype)
    if isinstance(sample_weight, numbers.Number):
        sample_weight = np.full(n_samples, sample_weight, dtype=dtype)
    sw = np.asarray(sample_weight)
    if sw.dtype.kind not in "biuf":
        raise ValueError(f"sample_weight must be numeric, got dtype {sw.dtype}")
    if sw.ndim != 1:
        raise ValueError(f"Sample weights must be 1D array or scalar, got shape {sw.shape}")
    if sw.shape[0] != n_samples:
        raise ValueError(f"sample_weight.shape == {sw.shape}, expected ({n_samples},)!")
    sw = np.array(sw, dtype=dtype, order="C")  # a copy: the caller's array is never touched
    if not np.all(np.isfinite(sw)):
        raise ValueError("sample_weight contains NaN or inf; every weight must be finite")
    if not np.any(sw != 0):
        raise ValueError("Sample weights must contain at least one non-zero number.")
    return sw


def _are_views(arrays, flat):
    off = 0
    base = flat.ctypes.data
    item = flat.itemsize
    for a in arrays:
        if not isinstance(a, np.ndarray) or a.base is not flat or a.dtype != flat.dtype:
            return False
        if a.ctypes.data != base + off * item or not a.flags.c_contiguous:
            return False
        off += a.size
    return off == flat.size


def _lbfgs_n_iter(res, max_iter):
    """Iterations of an L-BFGS result, with scikit-learn's ConvergenceWarning when it stopped
    for any reason other than convergence."""
    n_iter = min(res.nit, max_iter)
    if res.status != 0:
        msg = f"lbfgs failed to converge after {n_iter} iteration(s) (status={res.status}):\n"
        msg += f"{res.message}\n"
        if n_iter == max_iter:
            msg += (
                "\nIncrease the number of iterations to improve the convergence "
                f"(max_iter={max_iter})."
            )
        msg += (
            "\nYou might also want to scale the data as shown in:\n"
            "    https://scikit-learn.org/stable/modules/preprocessing.html"
        )
        warnings.warn(msg, ConvergenceWarning, stacklevel=3)
    return n_iter
