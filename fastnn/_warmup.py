"""Compile (or load from the on-disk cache) fastnn's kernels ahead of time, group by group.

numba compiles a kernel the first time a process needs it and caches the machine code on disk
(see ``fastnn._compile``).  ``warmup`` runs tiny fits and predictions that need the same kernel
signatures as real ones, so a Docker image, a CI cache or a cluster node can pay the one-time
compilation when it is built instead of in the first user's first ``fit``.

Each group is a few tiny calls; ``warmup`` reports, per group, the seconds and whether it
compiled or found everything in the cache.  ``python -m fastnn warmup [--all]`` prints one line
per group (and adds the scikit-learn drop-ins, which live above the core).
"""

import time
from collections.abc import Callable

import numpy as np

from . import _fastpath
from ._compile import compile_seconds, silenced
from ._fastpath import units_split_for
from ._threads import get_num_threads
from .layers import (
    GELU,
    BatchNorm1d,
    Dropout,
    LayerNorm,
    LeakyReLU,
    Linear,
    ReLU,
    Sigmoid,
    Tanh,
)
from .losses import BCEWithLogits, HuberLoss, MSELoss, SoftmaxCrossEntropy
from .model import Sequential
from .optim import SGD, Adam, AdamW, RMSprop

__all__ = ["warmup", "groups"]


def _data(rows, n_in, n_classes, dtype, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((rows, n_in)).astype(dtype)
    return X, rng.integers(0, n_classes, rows)


def _mlp(sizes, dtype, act=ReLU):
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(Linear(a, b, dtype=dtype, seed=i))
        if i < len(sizes) - 2:
            layers.append(act())
    return Sequential(*layers)


def _fit(model, X, y, loss, opt_cls, batch, **opt_kw):
    opt = opt_cls(model.parameters(), **opt_kw)
    model.fit(X, y, loss=loss, optimizer=opt, epochs=1, batch_size=batch, verbose=0)


def _training(dtype):
    """The compiled fast path (serial build) for SGD and Adam, softmax and MSE, narrow and wide
    networks (small shapes store blocks feature-major), plus prediction."""

    def run():
        X, y = _data(256, 64, 10, dtype)
        for width in (16, 128):  # feature-major and row-major blocks
            model = _mlp((64, width, 10), dtype)
            _fit(model, X, y, SoftmaxCrossEntropy(), SGD, 64, lr=0.01, momentum=0.9)
            _fit(model, X, y, SoftmaxCrossEntropy(), Adam, 64)
            model.predict(X)
        reg = _mlp((64, 32, 1), dtype)
        _fit(reg, X, X[:, :1].copy(), MSELoss(), SGD, 64, lr=0.01)
        reg.predict(X)

    return run


def _layers(dtype):
    """The layer-by-layer path: every activation, normalisation, dropout, the other losses
    and optimizers (what the fused fast path does not cover)."""

    def run():
        X, y = _data(128, 16, 3, dtype)
        for act in (Tanh, Sigmoid, LeakyReLU, GELU):
            model = _mlp((16, 16, 3), dtype, act)
            _fit(model, X, y, SoftmaxCrossEntropy(), RMSprop, 32)
        model = Sequential(
            Linear(16, 16, dtype=dtype, seed=0),
            BatchNorm1d(16, dtype=dtype),
            ReLU(),
            Dropout(0.1),
            Linear(16, 16, dtype=dtype, seed=1),
            LayerNorm(16, dtype=dtype),
            ReLU(),
            Linear(16, 1, dtype=dtype, seed=2),
        )
        _fit(model, X, (y == 0).astype(dtype)[:, None], BCEWithLogits(), AdamW, 32)
        _fit(model, X, X[:, :1].copy(), HuberLoss(), SGD, 32, lr=0.01)
        model.predict(X)

    return run


def _data_parallel(dtype):
    """The data-parallel build (each step's rows split across the threads)."""

    def run():
        X, y = _data(512, 64, 10, dtype)
        model = _mlp((64, 256, 10), dtype)
        _fit(model, X, y, SoftmaxCrossEntropy(), SGD, 128, lr=0.01, momentum=0.9)
        _fit(model, X, y, SoftmaxCrossEntropy(), Adam, 128)

    return run


def _units(dtype):
    """The split-by-units build (large hidden layers split by columns across the threads)."""

    def run():
        sizes = (1024, 1024, 10)
        assert units_split_for(sizes)
        X, y = _data(256, sizes[0], 10, dtype)
        model = _mlp(sizes, dtype)
        _fit(model, X, y, SoftmaxCrossEntropy(), SGD, 128, lr=0.01, momentum=0.9)
        _fit(model, X, y, SoftmaxCrossEntropy(), Adam, 128)

    return run


def groups(all: bool = False) -> list[tuple[str, Callable[[], None]]]:
    """The warm-up groups as (name, function) pairs: by default what a first float32 fit and
    predict need; with ``all``, float64 too, the layer path's other layers, losses and
    optimizers, and (with two or more threads) the parallel builds."""
    dtypes = ("float32", "float64") if all else ("float32",)
    out = [(f"training and inference kernels, {dt}", _training(dt)) for dt in dtypes]
    if all:
        out += [(f"layer-by-layer kernels, {dt}", _layers(dt)) for dt in dtypes]
        if get_num_threads() >= 2:
            out += [(f"data-parallel build, {dt}", _data_parallel(dt)) for dt in dtypes]
            out += [(f"split-by-units build, {dt}", _units(dt)) for dt in dtypes]
    return out


def warmup(
    all: bool = False, progress: Callable[[str, float, float], object] | None = None
) -> float:
    """Compile (or load from the cache) the kernels common fits use; returns the seconds taken.

    Parameters
    ----------
    all : bool
        Also float64, every layer type, loss and optimizer, and the parallel builds.  Takes a
        few minutes the first time on a small machine; seconds once cached.
    progress : callable, optional
        Called as ``progress(name, seconds, compiled_seconds)`` after each group (the CLI prints
        a line from it).

    Notes
    -----
    The first call on a machine compiles; later processes load the cached machine code.
    The fits inside print no ``fastnn: compiling ...`` notice: ``progress`` reports instead.
    """
    t0 = time.perf_counter()
    stand_in, _fastpath.STAND_IN = _fastpath.STAND_IN, False  # compile the parallel builds
    try:
        for name, run in groups(all=bool(all)):
            g0, c0 = time.perf_counter(), compile_seconds()
            with silenced():
                run()
            if progress is not None:
                progress(name, time.perf_counter() - g0, compile_seconds() - c0)
    finally:
        _fastpath.STAND_IN = stand_in
    return time.perf_counter() - t0
