"""The training loop behind ``Sequential.fit`` and the History it returns."""

import sys
import time

import numpy as np

from fastnn import kernels as K

from ._threads import pick
from ._validation import check_labels, check_positive_int, check_targets, check_X


class TrainingDivergedError(FloatingPointError):
    """The loss became NaN or inf; the model holds the parameters of the last finite epoch."""


class History:
    """What ``fit`` returns: ``history`` maps each metric name to its list of per-epoch values."""

    def __init__(self):
        self.history = {}
        self.epoch = []

    def append(self, epoch, logs):
        self.epoch.append(epoch)
        for key, value in logs.items():
            self.history.setdefault(key, []).append(value)

    def __getitem__(self, key):
        return self.history[key]

    def __repr__(self):
        keys = ", ".join(self.history)
        return f"History({len(self.epoch)} epochs: {keys})"


def _check_fit_args(model, X, y, loss, optimizer, epochs, batch_size):
    from .losses import Loss
    from .optim import Optimizer

    if not isinstance(loss, Loss):
        raise TypeError(f"loss must be a fastnn loss (e.g. SoftmaxCrossEntropy()), got {loss!r}")
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"optimizer must be a fastnn optimizer (e.g. SGD(...)), got {optimizer!r}")
    epochs = check_positive_int(epochs, "epochs")
    batch_size = check_positive_int(batch_size, "batch_size")
    X = check_X(X, "X", dtype=model.dtype, n_features=model.n_in)
    y, labels = check_y(model, y, loss, X.shape[0])
    return X, y, labels, epochs, batch_size


def check_y(model, y, loss, n_samples, name="y"):
    """Targets in the form the loss kernel takes, plus integer labels for accuracy (or None)."""
    if loss.classification:
        arr = np.asarray(y)
        if arr.ndim == 2:
            T = check_targets(arr, model.n_out, name, n_samples, model.dtype)
            return T, np.ascontiguousarray(T.argmax(axis=1))
        y = check_labels(arr, model.n_out, name, n_samples)
        return y, y
    return check_targets(y, model.n_out, name, n_samples, model.dtype), None


def evaluate(model, X, y, labels, loss, batch_size=4096):
    """Mean loss (and accuracy when ``labels`` is given) of the model on checked data."""
    total, correct, n = 0.0, 0, X.shape[0]
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        out = model.predict(X[start:stop], batch_size=batch_size)
        total += loss._forward(out, y[start:stop]) * (stop - start)
        if labels is not None:
            correct += pick(K.count_correct, K.count_correct_parallel, out.size)(
                out, labels[start:stop]
            )
    logs = {"loss": total / n}
    if labels is not None:
        logs["accuracy"] = correct / n
    return logs


class EpochRunner:
    """Runs the batches of one epoch through the layer-by-layer path.

    ``run(order, first, last)`` trains on batches ``first..last-1`` of the sample order and
    returns (sum of per-sample losses, number of correct predictions, finite).  The compiled
    fast path provides the same interface; ``fit`` only talks to this one.
    """

    def __init__(self, model, X, y, labels, loss, optimizer, batch_size):
        self.model, self.X, self.y, self.labels = model, X, y, labels
        self.loss, self.optimizer, self.batch_size = loss, optimizer, batch_size
        n = X.shape[0]
        self.n_batches = -(-n // batch_size)
        m = min(batch_size, n)
        self.xb = np.empty((m, X.shape[1]), X.dtype)
        self.yb = np.empty((m,) + y.shape[1:], y.dtype)
        self.lb = np.empty(m, np.int64) if labels is not None else None
        self.gather_rows = pick(K.gather_rows, K.gather_rows_parallel, self.xb.size)
        # Dense-only models overwrite gradients in backward (beta=0) instead of zeroing first.
        self.beta = 0.0 if model._dense_only else 1.0

    def run(self, order, first, last):
        model, loss, optimizer, bs = self.model, self.loss, self.optimizer, self.batch_size
        n = self.X.shape[0]
        total, correct = 0.0, 0
        for b in range(first, last):
            start = b * bs
            stop = min(start + bs, n)
            m = stop - start
            idx = order[start:stop]
            xb, yb = self.xb[:m], self.yb[:m]
            self.gather_rows(self.X, idx, xb)
            if yb.ndim == 2:
                self.gather_rows(self.y, idx, yb)
            else:
                K.gather(self.y, idx, yb)
            out = model._forward(xb)
            value = loss._forward(out, yb)
            if not np.isfinite(value):
                return total, correct, False
            total += value * m
            if self.labels is not None:
                lb = self.lb[:m]
                K.gather(self.labels, idx, lb)
                correct += K.count_correct(out, lb)
            if self.beta:
                model.zero_grad()
            model._backward(loss.backward(), beta=self.beta, need_input_grad=False)
            optimizer.step()
        return total, correct, True


class _Snapshot:
    """Copy of the parameters and optimizer state, restored when the loss diverges."""

    def __init__(self, model, optimizer):
        self.model, self.optimizer = model, optimizer
        self.data = model._flat.data.copy()
        self.state = [{k: v.copy() for k, v in s.items()} for s in optimizer.state]
        self.step_count = optimizer.step_count

    def take(self):
        self.data[...] = self.model._flat.data
        for saved, state in zip(self.state, self.optimizer.state, strict=True):
            for k, v in state.items():
                saved[k][...] = v
        self.step_count = self.optimizer.step_count

    def restore(self):
        self.model._flat.data[...] = self.data
        for saved, state in zip(self.state, self.optimizer.state, strict=True):
            for k, v in state.items():
                v[...] = saved[k]
        self.optimizer.step_count = self.step_count


def fit(
    model,
    X,
    y,
    *,
    loss,
    optimizer,
    epochs,
    batch_size,
    shuffle=True,
    seed=None,
    validation_data=None,
    verbose=1,
):
    X, y, labels, epochs, batch_size = _check_fit_args(
        model, X, y, loss, optimizer, epochs, batch_size
    )
    val = None
    if validation_data is not None:
        try:
            Xv, yv = validation_data
        except (TypeError, ValueError):
            raise TypeError("validation_data must be a pair (X_val, y_val)") from None
        Xv = check_X(Xv, "validation_data[0]", dtype=model.dtype, n_features=model.n_in)
        yv, lv = check_y(model, yv, loss, Xv.shape[0], "validation_data[1]")
        val = (Xv, yv, lv)

    n = X.shape[0]
    rng = np.random.default_rng(seed)
    order = np.arange(n, dtype=np.int64)
    history = History()
    runner = EpochRunner(model, X, y, labels, loss, optimizer, batch_size)
    snapshot = _Snapshot(model, optimizer)

    for epoch in range(epochs):
        t0 = time.perf_counter()
        snapshot.take()
        if shuffle:
            rng.shuffle(order)
        total, correct, finite = runner.run(order, 0, runner.n_batches)
        if not finite:
            snapshot.restore()
            raise TrainingDivergedError(
                f"the loss became NaN or inf in epoch {epoch + 1}; the model keeps the "
                f"parameters from the end of epoch {epoch}. Try a smaller learning rate or "
                "standardise the inputs."
            )
        seconds = time.perf_counter() - t0
        logs = {"loss": total / n}
        if labels is not None:
            logs["accuracy"] = correct / n
        if val is not None:
            vlogs = evaluate(model, val[0], val[1], val[2], loss)
            logs.update({"val_" + k: v for k, v in vlogs.items()})
        logs["samples_per_second"] = n / seconds if seconds > 0 else float("inf")
        history.append(epoch, logs)
        if verbose:
            _print_epoch(epoch, epochs, logs, seconds)
    return history


def _print_epoch(epoch, epochs, logs, seconds):
    width = len(str(epochs))
    parts = [f"epoch {epoch + 1:>{width}}/{epochs}"]
    for key, value in logs.items():
        if key != "samples_per_second":
            parts.append(f"{key} {value:.4f}")
    parts.append(f"{logs['samples_per_second']:,.0f} samples/s")
    parts.append(f"{seconds:.2f}s")
    print(" - ".join(parts), file=sys.stdout, flush=True)
