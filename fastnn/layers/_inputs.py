"""Light per-call checks for the inputs of stand-alone layers (shape and dtype, no NaN scan).

Sequential validates a batch once per call, so the layers it drives only need these cheap checks
when a user calls their ``forward``/``backward`` directly.
"""

import numpy as np

from .._validation import FLOAT_DTYPES


def layer_input(X, layer, n_features=None, dtype=None):
    """X as a C-contiguous 2-D float array (``dtype`` if given, else its own float dtype)."""
    if not isinstance(X, np.ndarray):
        try:
            X = np.asarray(X, dtype=dtype or np.float64)
        except (TypeError, ValueError):
            raise TypeError(
                f"{layer}: X must be a numeric 2-D array, got {type(X).__name__}"
            ) from None
    if X.ndim != 2:
        raise ValueError(f"{layer}: X must be 2-D (n_samples, n_features), got shape {X.shape}")
    if n_features is not None and X.shape[1] != n_features:
        raise ValueError(f"{layer}: X has {X.shape[1]} features, expected {n_features}")
    if X.dtype.kind not in "biuf":
        raise TypeError(f"{layer}: X must be numeric, got dtype {X.dtype}")
    if dtype is None:
        dtype = X.dtype if X.dtype in FLOAT_DTYPES else np.float64
    # another float dtype, integers, Fortran order, strided views: converted, not rejected
    return np.ascontiguousarray(X, dtype=dtype)


def layer_grad(dout, shape, dtype, layer):
    """The incoming gradient as a C-contiguous array of the forward output's shape and dtype."""
    dout = np.asarray(dout)
    if dout.shape != shape:
        raise ValueError(f"{layer}: dout must have the output's shape {shape}, got {dout.shape}")
    return np.ascontiguousarray(dout, dtype=dtype)
