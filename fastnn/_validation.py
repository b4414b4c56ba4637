"""Input checks, run once per call of a public method (once per fit, not per step).

Each check raises a ValueError or TypeError that names the argument and says what was
expected, before any kernel runs and before any parameter changes.  Inconvenient but valid
input (float64 into a float32 model, integers, Fortran order, strided views) is converted.
(The one deferred check, X's NaN/inf in a compiled fit without callbacks, is described in
``fastnn.training.fit``: it is done during the first epoch, which is undone on failure.)
"""

import numbers
import os

import numpy as np

from fastnn.kernels import all_finite, all_finite_parallel

from ._threads import pick

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def check_dtype(dtype, name="dtype"):
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"{name} must be float32 or float64, got {dtype!r}") from None
    if dt not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32 or float64, got {dt}")
    return dt


def check_positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a positive integer, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value}")
    return int(value)


def _physical_memory():
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # not POSIX: no bound
        return None


#: bytes of RAM of this machine (None where unknown); sizes beyond it are bad arguments
PHYSICAL_MEMORY = _physical_memory()


def check_fits_in_memory(nbytes, what):
    """ValueError when ``what`` needs more bytes than the machine has RAM: such a size is a
    mistake in an argument (a MemoryError deep inside NumPy names none)."""
    if PHYSICAL_MEMORY is not None and nbytes > PHYSICAL_MEMORY:
        raise ValueError(
            f"{what} needs {nbytes / 2**30:,.1f} GiB, more than this machine's "
            f"{PHYSICAL_MEMORY / 2**30:,.1f} GiB of memory"
        )


def check_number(value, name, *, low=None, high=None, low_open=False, high_open=False):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if low is not None and (value < low or (low_open and value == low)):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}, got {value}")
    if high is not None and (value > high or (high_open and value == high)):
        raise ValueError(f"{name} must be {'<' if high_open else '<='} {high}, got {value}")
    return value


def _as_numeric(X, name):
    if not isinstance(X, np.ndarray):
        try:
            X = np.asarray(X)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{name} must be a numeric array, could not convert: {exc}") from None
    if X.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a numeric array (bool, int or float), got dtype {X.dtype}")
    return X


def nonfinite_message(name):
    return f"{name} contains NaN or inf; every value must be finite"


def check_finite(X, name):
    X2 = X.reshape(X.shape[0], -1) if X.ndim != 2 else X
    if not pick(all_finite, all_finite_parallel, X2.size)(X2):
        raise ValueError(nonfinite_message(name))


def check_X(X, name="X", *, dtype, n_features=None, finite=True):
    """Return X as a C-contiguous 2-D float array of ``dtype``, checked."""
    X = _as_numeric(X, name)
    if X.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_samples, n_features), got shape {X.shape}")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(
            f"{name} is empty (shape {X.shape}); at least one sample and feature needed"
        )
    if n_features is not None and X.shape[1] != n_features:
        raise ValueError(
            f"{name} has {X.shape[1]} features per sample, but the model expects {n_features}"
        )
    X = np.ascontiguousarray(X, dtype=dtype)
    if finite:
        check_finite(X, name)
    return X


def check_labels(y, n_classes, name="y", n_samples=None):
    """Integer class labels as a 1-D int64 array, each in [0, n_classes)."""
    y = _as_numeric(y, name)
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-D integer labels, got shape {y.shape}")
    if n_samples is not None and y.shape[0] != n_samples:
        raise ValueError(f"{name} has {y.shape[0]} labels but X has {n_samples} samples")
    if y.shape[0] == 0:
        raise ValueError(f"{name} is empty")
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
            raise ValueError(f"{name} must hold integer class labels, got non-integer values")
    elif y.dtype.kind == "b":
        raise TypeError(f"{name} must hold integer class labels, got dtype bool")
    lo, hi = y.min(), y.max()
    if lo < 0:
        raise ValueError(f"{name} has negative label {int(lo)}; labels must be in [0, {n_classes})")
    if hi >= n_classes:
        raise ValueError(
            f"{name} has label {int(hi)} but the output layer has {n_classes} units; "
            f"labels must be in [0, {n_classes})"
        )
    return np.ascontiguousarray(y, dtype=np.int64)


def check_targets(T, n_outputs, name="y", n_samples=None, dtype=np.float64):
    """Real-valued targets as a C-contiguous 2-D array of ``dtype`` (1-D becomes one column)."""
    T = _as_numeric(T, name)
    if T.ndim == 1:
        T = T.reshape(-1, 1)
    if T.ndim != 2:
        raise ValueError(f"{name} must be 1-D or 2-D, got shape {T.shape}")
    if n_samples is not None and T.shape[0] != n_samples:
        raise ValueError(f"{name} has {T.shape[0]} rows but X has {n_samples} samples")
    if T.shape[0] == 0:
        raise ValueError(f"{name} is empty")
    if n_outputs is not None and T.shape[1] != n_outputs:
        raise ValueError(f"{name} has {T.shape[1]} columns but the model has {n_outputs} outputs")
    T = np.ascontiguousarray(T, dtype=dtype)
    check_finite(T, name)
    return T
