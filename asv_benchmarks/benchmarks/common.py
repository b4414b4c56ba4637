"""Shared pieces of the fastnn asv suite: shapes, data makers, thread setup, feature guards.

Every benchmark module imports from here, so the shapes a run measures and the thread count it
runs with are decided in one place.

Thread count
    ``FASTNN_BENCH_THREADS`` (default 2, the core count of the reference machine) is applied with
    ``fastnn.set_num_threads`` (numba's pool and every BLAS pool together) by :func:`set_threads`,
    which each benchmark's ``setup`` calls.  ``bench_meta.track_threads`` records it in the results.

Older commits
    A benchmark whose feature a commit lacks raises ``NotImplementedError`` from ``setup``; asv
    reports that as skipped (n/a) instead of failed, so a run over the history does not error.
    :func:`require` and :func:`kernel` do that.
"""

import os

import numpy as np

#: threads for numba and BLAS during a benchmark run
THREADS = int(os.environ.get("FASTNN_BENCH_THREADS", "2"))

DTYPES = ("float32", "float64")
BUILDS = ("serial", "parallel")
ACTIVATIONS = ("identity", "relu", "leaky_relu", "sigmoid", "tanh")

#: (rows, n_in, n_out) for the dense kernels: the iris net, the first tutorial's 64x784x100
#: layer, and a large square layer (1 GFLOP per product).
DENSE_SHAPES = {
    "tiny": (16, 4, 8),
    "mnist": (64, 784, 100),
    "large": (512, 1024, 1024),
}

#: (rows, columns) for elementwise and row-wise kernels (activations, softmax, losses)
ROW_SHAPES = {
    "tiny": (16, 3),
    "mnist": (64, 10),
    "large": (512, 1024),
}

#: parameter counts for the optimizer updates (flat buffers): iris net, 784-100-10, ~2.4 M
PARAM_SIZES = {
    "tiny": 209,
    "mnist": 79_510,
    "large": 2_913_290,
}

#: the networks of the training-step and fit benchmarks: layer sizes and batch size
#: (smallest first: the in-process test of the suite runs the first entry of every param list)
NETWORKS = {
    "4-6-8-10-3@150": ((4, 6, 8, 10, 3), 150),
    "784-100-10@64": ((784, 100, 10), 64),
    "784-512-512-10@256": ((784, 512, 512, 10), 256),
    "784-1024x3-10@512": ((784, 1024, 1024, 1024, 10), 512),
}

#: samples in the synthetic data set of a one-epoch fit, per network (a few batches each; the
#: big network gets fewer so that one epoch stays well under a second)
FIT_SAMPLES = {
    "4-6-8-10-3@150": 1500,
    "784-100-10@64": 4096,
    "784-512-512-10@256": 4096,
    "784-1024x3-10@512": 2048,
}


def set_threads(n=None):
    """Use ``n`` (default :data:`THREADS`) threads for numba and BLAS; return the count set.
    Fits compile their parallel builds on the spot (no serial stand-in while a helper
    compiles them, ``fastnn._fastpath.STAND_IN``): the benchmarks time the builds."""
    n = THREADS if n is None else n
    try:
        import fastnn
        from fastnn import _fastpath

        _fastpath.STAND_IN = False  # (an attribute nobody reads on older commits)
        fastnn.set_num_threads(n)
    except (ImportError, AttributeError):
        import numba

        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    import numba

    return numba.get_num_threads()


def require(module, name):
    """``getattr(module, name)``, or NotImplementedError (asv: skipped) on a commit without it."""
    obj = getattr(module, name, None)
    if obj is None:
        raise NotImplementedError(f"{module.__name__}.{name} does not exist in this commit")
    return obj


def kernel(name, build="serial"):
    """The serial or parallel build of a public kernel of ``fastnn.kernels``."""
    from fastnn import kernels

    return require(kernels, name if build == "serial" else name + "_parallel")


def rng(seed=0):
    return np.random.default_rng(seed)


def random_array(shape, dtype, seed=0, scale=1.0):
    """Standard normal values (times ``scale``) of one dtype, C-contiguous."""
    return (rng(seed).standard_normal(shape) * scale).astype(dtype)


def random_labels(n, n_classes, seed=0):
    return rng(seed).integers(0, n_classes, n).astype(np.int64)


def classification_data(n_samples, n_features, n_classes, dtype, seed=0):
    """Synthetic, learnable classification data: Gaussian blobs around random class centres.

    Returns X (n_samples, n_features) of ``dtype`` and y (n_samples,) int64 labels.  No
    download, deterministic for a seed.
    """
    r = rng(seed)
    centres = r.standard_normal((n_classes, n_features))
    y = r.integers(0, n_classes, n_samples).astype(np.int64)
    X = centres[y] + r.standard_normal((n_samples, n_features))
    return np.ascontiguousarray(X, dtype=dtype), y


def make_mlp(sizes, dtype="float32", activation="relu", seed=0):
    """``Sequential(Linear, act, Linear, act, ..., Linear)`` through the public layer API."""
    import fastnn as fnn

    acts = {
        "relu": "ReLU",
        "tanh": "Tanh",
        "sigmoid": "Sigmoid",
        "leaky_relu": "LeakyReLU",
    }
    act_cls = require(fnn, acts[activation])
    layers = []
    for k, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(fnn.Linear(n_in, n_out, dtype=np.dtype(dtype), seed=seed + k))
        if k < len(sizes) - 2:
            layers.append(act_cls())
    return fnn.Sequential(*layers)


def make_optimizer(model, name="sgd"):
    """SGD with momentum 0.9 (lr 0.01) or Adam (lr 1e-3) over all of the model's parameters."""
    import fastnn as fnn

    if name == "sgd":
        return fnn.SGD(model.parameters(), lr=0.01, momentum=0.9)
    return require(fnn, "Adam")(model.parameters(), lr=1e-3)


def standardised_split(dataset, dtype="float32", test_size=0.25, seed=0):
    """A bundled scikit-learn data set ("digits" or "iris"), split stratified and standardised
    with the training statistics.  Returns X_train, X_test, y_train, y_test."""
    from sklearn import datasets
    from sklearn.model_selection import train_test_split

    loader = {"digits": datasets.load_digits, "iris": datasets.load_iris}[dataset]
    X, y = loader(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=test_size, stratify=y, random_state=seed
    )
    mean, std = X_train.mean(axis=0), X_train.std(axis=0)
    std[std == 0] = 1.0
    X_train = np.ascontiguousarray((X_train - mean) / std, dtype=dtype)
    X_test = np.ascontiguousarray((X_test - mean) / std, dtype=dtype)
    return X_train, X_test, y_train.astype(np.int64), y_test.astype(np.int64)
