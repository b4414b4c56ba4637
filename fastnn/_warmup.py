"""Compile (or load from the on-disk cache) the kernels a typical fit uses, ahead of time."""

import time

import numpy as np

from .layers import Linear, ReLU
from .losses import MSELoss, SoftmaxCrossEntropy
from .model import Sequential
from .optim import SGD, Adam


def warmup(dtypes=("float32", "float64")):
    """Run one tiny fit per dtype, so every common kernel signature is compiled or loaded.

    The first call after installation compiles (tens of seconds); later processes load the
    cached machine code.  Returns the seconds it took.
    """
    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    for dt in dtypes:
        X = rng.standard_normal((300, 70)).astype(dt)
        y = rng.integers(0, 3, 300)
        for width in (4, 300):  # small shapes take compiled loops, large ones BLAS
            model = Sequential(
                Linear(70, width, dtype=dt, seed=0), ReLU(), Linear(width, 3, dtype=dt, seed=1)
            )
            model.fit(
                X,
                y,
                loss=SoftmaxCrossEntropy(),
                optimizer=SGD(model.parameters(), lr=0.01, momentum=0.9),
                epochs=1,
                batch_size=300,
                verbose=0,
            )
        model.fit(
            X,
            y,
            loss=SoftmaxCrossEntropy(),
            optimizer=Adam(model.parameters()),
            epochs=1,
            batch_size=300,
            verbose=0,
        )
        model.predict(X)
        reg = Sequential(Linear(70, 1, dtype=dt))
        reg.fit(
            X,
            X[:, :1],
            loss=MSELoss(),
            optimizer=SGD(reg.parameters()),
            epochs=1,
            verbose=0,
            batch_size=300,
        )
    return time.perf_counter() - t0
