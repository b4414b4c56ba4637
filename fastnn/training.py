"""The training loop behind ``Sequential.fit`` and the History it returns."""

import numbers
import os
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from fastnn import kernels as K

from ._callback import Callback
from ._compile import announcing, compile_seconds, report
from ._fastpath import fast_runner
from ._plot import plot_history
from ._progress import ProgressBar, SigintGuard, isatty
from ._threads import call_budget, pick
from ._validation import (
    check_finite,
    check_labels,
    check_number,
    check_positive_int,
    check_targets,
    check_X,
    nonfinite_message,
)
from .distributed import share
from .distributed import world as make_world
from .losses import Loss, check_sample_weight
from .optim import Optimizer
from .optim.schedules import LRScheduler


class TrainingDivergedError(FloatingPointError):
    """The loss became NaN or inf; the model holds the parameters of the last finite epoch."""


class History:
    """What ``fit`` returns: ``history`` maps each metric name to its list of per-epoch values.

    ``epoch`` lists the epoch indices trained (from ``initial_epoch`` on); ``interrupted`` is
    True when Ctrl-C stopped the fit.
    """

    def __init__(self) -> None:
        self.history: dict[str, list[float]] = {}
        self.epoch: list[int] = []
        self.interrupted = False

    def append(self, epoch, logs):
        self.epoch.append(epoch)
        for key, value in logs.items():
            self.history.setdefault(key, []).append(value)

    def __getitem__(self, key):
        return self.history[key]

    def plot(
        self, path: str | os.PathLike[str] | None = None, metrics: Sequence[str] | None = None
    ) -> Any:
        """Draw the training (and validation) curve of each metric against the epoch.

        Parameters
        ----------
        path : str or os.PathLike, optional
            Save the figure there as a PNG (rendered with matplotlib's Agg backend).
        metrics : list of str, optional
            Base metric names ("loss", "accuracy", ...); ``val_`` curves are drawn with their
            training curve.  Default: every recorded metric except throughput and ``lr``.

        Returns
        -------
        matplotlib.figure.Figure
            Needs matplotlib (``pip install fastnn[plot]``).
        """
        return plot_history(self, path=path, metrics=metrics)

    def __repr__(self):
        keys = ", ".join(self.history)
        n = len(self.epoch)
        return f"History({n} epoch{'' if n == 1 else 's'}: {keys})"


def _check_fit_args(model, X, y, loss, optimizer, epochs, batch_size, finite_X=True, part=None):
    """The checked (X, y, labels, epochs, batch_size) of a fit, and whether X was checked for
    NaN and inf (always for a memory map, else only with ``finite_X``)."""
    if not isinstance(loss, Loss):
        raise TypeError(f"loss must be a fastnn loss (e.g. SoftmaxCrossEntropy()), got {loss!r}")
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"optimizer must be a fastnn optimizer (e.g. SGD(...)), got {optimizer!r}")
    check_optimizer_covers(model, optimizer)
    epochs = check_positive_int(epochs, "epochs")
    batch_size = check_positive_int(batch_size, "batch_size")
    X_checked = finite_X or isinstance(X, np.memmap)  # a memory map is checked chunk by chunk
    X = _check_X_data(model, X, "X", finite=finite_X, part=part)
    y, labels = check_y(model, y, loss, X.shape[0])
    _check_batch_sizes(model, X.shape[0], batch_size)
    # a batch larger than the data is the whole data (and 2**70 must not reach a kernel)
    batch_size = min(batch_size, X.shape[0])
    return X, y, labels, epochs, batch_size, X_checked


def _address_range(a):
    start = a.__array_interface__["data"][0]
    return start, start + a.nbytes


def _within(inner, outer):
    i0, i1 = _address_range(inner)
    o0, o1 = _address_range(outer)
    return inner.dtype == outer.dtype and o0 <= i0 and i1 <= o1


def check_optimizer_covers(model, optimizer):
    """ValueError unless every parameter of ``model`` (its data and its gradient, as they are
    now) lies in a buffer that ``optimizer`` updates.  An optimizer made before a layer was
    added (``Sequential.add`` repacks the parameters into a new buffer) or made for another
    model would otherwise train nothing, silently."""
    groups = optimizer._groups
    for i, p in enumerate(model.parameters()):
        if not any(_within(p.data, d) and _within(p.grad, g) for d, g in groups):
            raise ValueError(
                f"optimizer does not update parameter {i} ({p!r}) of the model: make the "
                "optimizer from model.parameters() after the model's last change (adding a "
                "layer repacks the parameters), and for this model"
            )


def leaf_layers(model):
    """The layers of ``model`` with nested Sequential-like containers flattened, in order."""
    out = []
    for layer in model.layers:
        inner = getattr(layer, "layers", None)
        if isinstance(inner, list):
            out.extend(leaf_layers(layer))
        else:
            out.append(layer)
    return out


def _check_batch_sizes(model, n, batch_size):
    """Layers that need several samples per training batch (BatchNorm1d) get them in every
    batch of the epoch, the smaller last one included; checked before anything trains."""
    smallest = min(n % batch_size or batch_size, n)
    for layer in leaf_layers(model):
        need = getattr(layer, "min_train_batch", 1)
        if smallest < need:
            raise ValueError(
                f"batch_size={batch_size} on {n} samples leaves a batch of {smallest}, but "
                f"{type(layer).__name__} needs at least {need} samples per training batch; "
                "choose a batch_size that leaves no such batch"
            )


def check_y(model, y, loss, n_samples, name="y"):
    """Targets in the form the loss kernel takes, plus integer labels for accuracy (or None)."""
    if loss.classification:
        arr = np.asarray(y)
        if arr.ndim == 2:
            T = check_targets(arr, model.n_out, name, n_samples, model.dtype)
            loss.check_target_values(T, name)
            return T, np.ascontiguousarray(T.argmax(axis=1))
        y = check_labels(arr, model.n_out, name, n_samples)
        return y, y
    T = check_targets(y, model.n_out, name, n_samples, model.dtype)
    loss.check_target_values(T, name)
    return T, loss.labels_of(T)


def count_correct(out, labels):
    """Correct predictions of a batch: argmax against the labels, or for one output column (a
    binary classifier on logits) logit > 0 against label 1."""
    if out.shape[1] == 1:
        return int(np.count_nonzero((out[:, 0] > 0) == (labels != 0)))
    return pick(K.count_correct, K.count_correct_parallel, out.size)(out, labels)


def evaluate(model, X, y, labels, loss, batch_size=4096):
    """Mean loss (and accuracy when ``labels`` is given) of the model on checked data."""
    total, correct, n = 0.0, 0, X.shape[0]
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        out = model.predict(X[start:stop], batch_size=batch_size)
        total += loss._forward(out, y[start:stop]) * (stop - start)
        if labels is not None:
            correct += count_correct(out, labels[start:stop])
    logs = {"loss": total / n}
    if labels is not None:
        logs["accuracy"] = correct / n
    return logs


def _evaluate(model, val, loss, dist):
    """``evaluate`` on the validation data; in a distributed fit each rank evaluates a
    contiguous share of the rows and the sums are reduced, so every rank gets the same logs."""
    Xv, yv, lv = val
    if dist is None:
        return evaluate(model, Xv, yv, lv, loss)
    r0, r1 = share(Xv.shape[0], dist.rank, dist.size)
    sums = np.zeros(2, np.float64)
    if r1 > r0:
        logs = evaluate(model, Xv[r0:r1], yv[r0:r1], None if lv is None else lv[r0:r1], loss)
        sums[:] = logs["loss"] * (r1 - r0), logs.get("accuracy", 0.0) * (r1 - r0)
    dist.sum(sums)
    out = {"loss": sums[0] / Xv.shape[0]}
    if lv is not None:
        out["accuracy"] = sums[1] / Xv.shape[0]
    return out


class EpochRunner:
    """Runs the batches of one epoch through the layer-by-layer path.

    ``run(order, first, last)`` trains on batches ``first..last-1`` of the sample order and
    returns (sum of per-sample losses, number of correct predictions, finite).  The compiled
    fast path provides the same interface; ``fit`` only talks to this one.
    """

    def __init__(self, model, X, y, labels, loss, optimizer, batch_size, sample_weight=None):
        self.model, self.X, self.y, self.labels = model, X, y, labels
        self.loss, self.optimizer, self.batch_size = loss, optimizer, batch_size
        n = X.shape[0]
        self.n_batches = -(-n // batch_size)
        m = min(batch_size, n)
        self.xb = np.empty((m, X.shape[1]), model.dtype)  # X may be a memmap of another dtype
        self.yb = np.empty((m,) + y.shape[1:], y.dtype)
        self.lb = np.empty(m, np.int64) if labels is not None else None
        # Per-sample weights (checked, model dtype) gathered per batch like y.  A batch's loss is
        # its weighted mean; it enters the epoch total as value * W_batch * n / W_total, so the
        # epoch's "loss" is the weighted mean over all samples.
        self.sw = sample_weight
        if sample_weight is not None:
            self.wb = np.empty(m, sample_weight.dtype)
            self.w_scale = n / float(sample_weight.sum(dtype=np.float64))
        self.gather_rows = pick(K.gather_rows, K.gather_rows_parallel, self.xb.size)
        # a memory map of a type the kernels do not take (float16) is gathered by NumPy and
        # converted per batch, as float16 in memory is converted by check_X
        self.gather_X = self.gather_rows if X.dtype in _KERNEL_X_DTYPES else _gather_convert
        # Dense-only models overwrite gradients in backward (beta=0) instead of zeroing first.
        self.beta = 0.0 if model._dense_only else 1.0

    def _gather(self, idx, m):
        """The rows ``idx`` of X and y into the first ``m`` rows of the batch buffers; returns
        those (xb, yb)."""
        xb, yb = self.xb[:m], self.yb[:m]
        self.gather_X(self.X, idx, xb)
        if yb.ndim == 2:
            self.gather_rows(self.y, idx, yb)
        else:
            K.gather(self.y, idx, yb)
        return xb, yb

    def _correct(self, out, idx, m):
        """Rows of ``out`` whose arg-max is the label of the sample ``idx`` names."""
        lb = self.lb[:m]
        K.gather(self.labels, idx, lb)
        return count_correct(out, lb)

    def run(self, order, first, last):
        model, loss, optimizer, bs = self.model, self.loss, self.optimizer, self.batch_size
        n = self.X.shape[0]
        total, correct = 0.0, 0
        for b in range(first, last):
            start = b * bs
            stop = min(start + bs, n)
            m = stop - start
            idx = order[start:stop]
            xb, yb = self._gather(idx, m)
            out = model._forward(xb)
            if self.sw is None:
                value = loss._forward(out, yb)
                weight = m
            else:
                wb = self.wb[:m]
                K.gather(self.sw, idx, wb)
                value = loss._forward(out, yb, wb)
                weight = float(wb.sum(dtype=np.float64)) * self.w_scale
            if not np.isfinite(value):
                return total, correct, False
            total += value * weight
            if self.labels is not None:
                correct += self._correct(out, idx, m)
            if self.beta:
                model.zero_grad()
            model._backward(loss.backward(), beta=self.beta, need_input_grad=False)
            optimizer.step()
        return total, correct, True


_KERNEL_X_DTYPES = {np.dtype(t) for t in (np.float32, np.float64, np.int8, np.int16, np.int32,
                                            np.int64, np.uint8, np.uint16, np.uint32,
                                            np.uint64, np.bool_)}  # fmt: skip


def _gather_convert(X, idx, out):
    np.copyto(out, X[idx], casting="unsafe")


def make_runner(model, X, y, labels, loss, optimizer, batch_size, sample_weight=None):
    """The compiled fast path's runner when it applies (fastnn._fastpath), else EpochRunner."""
    runner = fast_runner(model, X, y, labels, loss, optimizer, batch_size, sample_weight)
    if runner is None:
        runner = EpochRunner(model, X, y, labels, loss, optimizer, batch_size, sample_weight)
    return runner


class DistributedRunner(EpochRunner):
    """The layer-by-layer runner for ``fit(distributed="mpi")`` on several ranks.

    Each global batch (rows ``b * batch_size ..`` of the shuffled order, the same on every
    rank) is cut into ``world.size`` contiguous shares (``fastnn.distributed.share``); this
    rank gathers only its share, runs forward and the loss on it, and then two collectives
    per step: a sum of (loss sum, correct, not finite, share weight) over the ranks, so every
    rank learns the batch's totals and whether any rank met a NaN or inf before anything is
    updated; and after backward, one in-place ``Allreduce`` of the flat gradient buffer.  The
    loss gradient of a share is the gradient of its mean, so it is scaled by the share's part
    of the batch (rows, or sample weight, over the batch's) before backward: the sum over the
    ranks is then the gradient of the global batch's mean, and every rank applies the same
    update from the same sum.  ``run`` returns the global totals."""

    def __init__(self, model, X, y, labels, loss, optimizer, batch_size, sample_weight, world):
        super().__init__(model, X, y, labels, loss, optimizer, batch_size, sample_weight)
        self.world = world
        self.stats = np.zeros(4, np.float64)
        self.grad = model._flat.grad

    def run(self, order, first, last):
        model, loss, optimizer, bs = self.model, self.loss, self.optimizer, self.batch_size
        world, stats, grad = self.world, self.stats, self.grad
        n = self.X.shape[0]
        total, correct = 0.0, 0
        for b in range(first, last):
            start = b * bs
            m = min(start + bs, n) - start
            r0, r1 = share(m, world.rank, world.size)
            mr = r1 - r0
            idx = order[start + r0 : start + r1]
            value, weight, share_weight, c = 0.0, 0.0, float(mr), 0
            wb = None
            if mr and self.sw is not None:
                wb = self.wb[:mr]
                K.gather(self.sw, idx, wb)
                share_weight = float(wb.sum(dtype=np.float64))
            active = share_weight > 0
            if active:
                xb, yb = self._gather(idx, mr)
                out = model._forward(xb)
                if wb is None:
                    value = loss._forward(out, yb)
                    weight = mr
                else:
                    value = loss._forward(out, yb, wb)
                    weight = share_weight * self.w_scale
                if self.labels is not None and np.isfinite(value):
                    c = self._correct(out, idx, mr)
            stats[0] = value * weight
            stats[1] = c
            stats[2] = 0.0 if np.isfinite(value) else 1.0
            stats[3] = share_weight
            world.timed_sum(stats)
            if stats[2]:
                return total, correct, False
            total += stats[0]
            correct += int(stats[1])
            if active:
                g = loss.backward()
                g *= share_weight / stats[3]
                if self.beta:
                    model.zero_grad()
                model._backward(g, beta=self.beta, need_input_grad=False)
            else:
                grad[...] = 0
            world.timed_sum(grad)
            optimizer.step()
        return total, correct, True


class _Snapshot:
    """Copy of the parameters, the optimizer state and the layers' own state (BatchNorm1d's
    running statistics, Dropout's mask counter), restored when the loss diverges."""

    def __init__(self, model, optimizer):
        # buffers only: ``take`` fills them at the start of every epoch, before any ``restore``
        self.model, self.optimizer = model, optimizer
        self.data = np.empty_like(model._flat.data)
        self.state = [{k: np.empty_like(v) for k, v in s.items()} for s in optimizer.state]
        self.step_count = optimizer.step_count
        self.layer_state = None

    def take(self):
        self.data[...] = self.model._flat.data
        for saved, state in zip(self.state, self.optimizer.state, strict=True):
            for k, v in state.items():
                saved[k][...] = v
        self.step_count = self.optimizer.step_count
        # nested Sequentials included; copies, since a layer may return its own arrays
        self.layer_state = [
            {k: np.array(v, copy=True) for k, v in layer.state_arrays().items()}
            for layer in leaf_layers(self.model)
        ]

    def restore(self):
        self.model._flat.data[...] = self.data
        for saved, state in zip(self.state, self.optimizer.state, strict=True):
            for k, v in state.items():
                v[...] = saved[k]
        self.optimizer.step_count = self.step_count
        if self.layer_state is not None:
            for layer, arrays in zip(leaf_layers(self.model), self.layer_state, strict=True):
                layer.load_state_arrays(arrays)


#: bytes of a memory map checked (and, if its dtype differs, converted) at a time
_CHUNK_BYTES = 8 << 20


def _check_X_data(model, X, name, finite=True, part=None):
    """``check_X`` for in-memory data (NaN and inf only with ``finite``); for a memory map, the
    same checks done chunk by chunk (NaN and inf always) so that neither a converted copy nor
    the whole file is ever held in memory.  A memory map comes back as a plain ndarray view of
    its own dtype: the runner converts per batch.  With ``part = (rank, size)`` (a distributed
    fit) a memory map's values are checked only in that rank's contiguous share of the rows:
    the ranks together check every row, and each reads only its part of the file."""
    if not isinstance(X, np.memmap) or X.ndim != 2 or 0 in X.shape:
        return check_X(X, name, dtype=model.dtype, n_features=model.n_in, finite=finite)
    check_X(X[:1], name, dtype=model.dtype, n_features=model.n_in)  # dtype kind, features
    X = X.view(np.ndarray)
    rows = max(1, _CHUNK_BYTES // (X.shape[1] * X.itemsize))
    buf = None
    lo, hi = share(X.shape[0], *part) if part is not None else (0, X.shape[0])
    for start in range(lo, hi, rows):
        chunk = X[start : min(start + rows, hi)]
        if chunk.dtype != model.dtype or not chunk.flags.c_contiguous:
            if buf is None:
                buf = np.empty((rows, X.shape[1]), model.dtype)
            np.copyto(buf[: chunk.shape[0]], chunk, casting="unsafe")
            chunk = buf[: chunk.shape[0]]
        if not pick(K.all_finite, K.all_finite_parallel, chunk.size)(chunk):
            raise ValueError(
                f"{name} contains NaN or inf (in rows {start}..{start + chunk.shape[0] - 1}); "
                "every value must be finite"
            )
    return X


def _fit_sample_weight(sample_weight, n_train, split_val, dtype):
    """Checked per-sample weights for the training part (None when not given).  With
    validation_split the weights cover all samples and are split like X (Keras)."""
    if sample_weight is None:
        return None
    n_all = n_train + (len(split_val[0]) if split_val is not None else 0)
    w = check_sample_weight(sample_weight, n_all, dtype)
    w = np.ascontiguousarray(w[:n_train])
    if not np.any(w > 0):
        raise ValueError("sample_weight is all zeros on the training samples")
    return w


def _split_validation(X, y, validation_split, validation_data):
    """Keras' validation_split: the last fraction of the samples, taken before shuffling."""
    split = check_number(validation_split, "validation_split", low=0.0, high=1.0, high_open=True)
    if split == 0.0:
        return X, y, None
    if validation_data is not None:
        raise ValueError(
            "pass either validation_data or validation_split, not both "
            f"(got validation_split={validation_split})"
        )
    if not isinstance(X, np.ndarray):
        X = check_X(X, "X", dtype=np.float64)  # lists and the like: convert (and check) first
    y = y if isinstance(y, np.ndarray) else np.asarray(y)
    n = X.shape[0] if X.ndim else 0
    n_train = int(n * (1.0 - split))
    if n_train < 1 or n_train >= n:
        raise ValueError(
            f"validation_split={validation_split} leaves {n_train} training and {n - n_train} "
            f"validation samples out of {n}; both need at least one"
        )
    if y.ndim == 0 or y.shape[0] != n:
        raise ValueError(f"y has {y.shape[0] if y.ndim else 0} rows but X has {n} samples")
    return X[:n_train], y[:n_train], (X[n_train:], y[n_train:])


def _epoch_key(base_seed, epoch):
    """The 64-bit key of epoch ``epoch``'s permutation: a hash of ``(base_seed, epoch)``."""
    return np.random.SeedSequence([base_seed, epoch]).generate_state(1, np.uint64)[0]


def _shuffle_base(seed):
    """An integer from which every epoch's permutation is derived as f(base, epoch)."""
    if seed is None:
        return int(np.random.SeedSequence().entropy)
    if isinstance(seed, np.random.Generator):
        return int(seed.integers(0, 2**63))
    if isinstance(seed, numbers.Integral) and not isinstance(seed, bool) and seed >= 0:
        return int(seed)
    raise TypeError(f"seed must be None, a non-negative integer or a numpy Generator, got {seed!r}")


class _CallbackList:
    """Calls every callback's hook in list order."""

    def __init__(self, callbacks, model, optimizer, root=True):
        if callbacks is None:
            callbacks = []
        elif isinstance(callbacks, Callback):
            callbacks = [callbacks]
        elif not isinstance(callbacks, list | tuple):
            raise TypeError(f"callbacks must be a list of fastnn Callbacks, got {callbacks!r}")
        for i, cb in enumerate(callbacks):
            if not isinstance(cb, Callback):
                raise TypeError(
                    f"callbacks[{i}] must be a fastnn.callbacks.Callback, got {type(cb).__name__}"
                )
        if not root:  # a distributed fit's other ranks: no files, no logs (see root_only)
            callbacks = [cb for cb in callbacks if not getattr(cb, "root_only", False)]
        # Learning-rate schedules step first at each epoch's end, so that what later callbacks
        # see (a ModelCheckpoint saving the optimizer, a logger) already has the next epoch's
        # lr and the schedule's new state, whatever the order of the list.
        self.callbacks = sorted(callbacks, key=lambda cb: not isinstance(cb, LRScheduler))
        self.model, self.optimizer = model, optimizer
        # Batch hooks cost a Python call per batch; without them fit runs batches in chunks.
        self.wants_batches = any(
            type(cb).on_batch_end is not Callback.on_batch_end or "on_batch_end" in vars(cb)
            for cb in self.callbacks
        )

    def begin(self):
        for cb in self.callbacks:
            cb.set_context(self.model, self.optimizer)
        for cb in self.callbacks:
            cb.on_train_begin({})

    def epoch_begin(self, epoch):
        for cb in self.callbacks:
            cb.on_epoch_begin(epoch, {})

    def batch_end(self, batch, logs):
        for cb in self.callbacks:
            cb.on_batch_end(batch, logs)

    def epoch_end(self, epoch, logs):
        stop = False
        for cb in self.callbacks:
            stop = bool(cb.on_epoch_end(epoch, logs)) or stop
        return stop

    def end(self, logs):
        for cb in self.callbacks:
            cb.on_train_end(logs)


def _check_all(
    model, X, y, loss, optimizer, epochs, batch_size, seed, validation_data, validation_split,
    callbacks, initial_epoch, verbose, sample_weight, dist,
):  # fmt: skip
    """Every argument check of ``fit``, before anything changes: returns (callbacks, shuffle
    base seed, X, y, labels, epochs, batch_size, X checked, sample weights, validation)."""
    if verbose not in (0, 1, 2):
        raise ValueError(f"verbose must be 0, 1 or 2, got {verbose!r}")
    if isinstance(initial_epoch, bool) or not isinstance(initial_epoch, numbers.Integral):
        raise TypeError(f"initial_epoch must be a non-negative integer, got {initial_epoch!r}")
    if initial_epoch < 0:
        raise ValueError(f"initial_epoch must be >= 0, got {initial_epoch}")
    cbs = _CallbackList(callbacks, model, optimizer, root=dist is None or dist.root)
    base_seed = _shuffle_base(seed)
    X, y, split_val = _split_validation(X, y, validation_split, validation_data)
    # X's NaN/inf check may be left to the fast path's first epoch (see below); not with
    # callbacks, which would see training begin before the error.
    X, y, labels, epochs, batch_size, X_checked = _check_fit_args(
        model,
        X,
        y,
        loss,
        optimizer,
        epochs,
        batch_size,
        finite_X=bool(cbs.callbacks) or dist is not None,
        part=(dist.rank, dist.size) if dist is not None else None,
    )
    sample_weight = _fit_sample_weight(sample_weight, X.shape[0], split_val, model.dtype)
    if initial_epoch > epochs:
        raise ValueError(f"initial_epoch ({initial_epoch}) must not exceed epochs ({epochs})")
    val = None
    if split_val is not None:
        Xv = _check_X_data(model, split_val[0], "X (validation part)")
        yv, lv = check_y(model, split_val[1], loss, Xv.shape[0], "y (validation part)")
        val = (Xv, yv, lv)
    elif validation_data is not None:
        try:
            Xv, yv = validation_data
        except (TypeError, ValueError):
            raise TypeError("validation_data must be a pair (X_val, y_val)") from None
        Xv = _check_X_data(model, Xv, "validation_data[0]")
        yv, lv = check_y(model, yv, loss, Xv.shape[0], "validation_data[1]")
        val = (Xv, yv, lv)

    return cbs, base_seed, X, y, labels, epochs, batch_size, X_checked, sample_weight, val


def _start_distributed(
    dist, model, optimizer, X, epochs, batch_size, shuffle, initial_epoch, val, sample_weight,
    base_seed, cbs,
):  # fmt: skip
    """Collectives at the start of a distributed fit: the ranks must have the same arguments;
    rank 0's initial parameters, optimizer state and shuffling seed go to every rank.
    Returns the shuffling seed."""
    stateful = [type(layer).__name__ for layer in model.layers if layer.state_arrays()]
    dist.check_same(
        samples=X.shape[0],
        features=X.shape[1],
        parameters=model._flat.data.size if model._flat is not None else 0,
        dtype=str(model.dtype),
        epochs=epochs,
        batch_size=batch_size,
        shuffle=bool(shuffle),
        initial_epoch=initial_epoch,
        validation_samples=None if val is None else val[0].shape[0],
        sample_weight=sample_weight is not None,
        batch_callbacks=cbs.wants_batches,
        optimizer=type(optimizer).__name__,
    )
    if stateful:
        exc = ValueError(
            f'fit(distributed="mpi") does not support layers with training state yet '
            f"({', '.join(stateful)}): their batch statistics or random masks would differ "
            "from rank to rank"
        )
        exc._fastnn_agreed = True  # the layers were checked equal on every rank above
        raise exc
    dist.bcast_array(model._flat.data)
    for state in optimizer.state:
        for value in state.values():
            if isinstance(value, np.ndarray) and value.flags.c_contiguous:
                dist.bcast_array(value)
    optimizer.step_count = dist.bcast(optimizer.step_count)
    return dist.bcast(base_seed)


#: fit runs batches in chunks that take about this long (s), so that Ctrl-C, the progress bar
#: and stop_training react within a fraction of a second even on the compiled fast path.
CHUNK_SECONDS = 0.1


_fitting: set[int] = set()
_fitting_lock = threading.Lock()


@announcing("training kernels")
def fit(model, X, y, **kwargs):
    """The training loop of ``Sequential.fit`` (see its docstring for the arguments).

    One fit per model at a time: a fit on a model that is already fitting (in another thread,
    or from one of its own callbacks) raises RuntimeError before touching anything."""
    with _fitting_lock:
        if id(model) in _fitting:
            raise RuntimeError(
                "this model is already being fitted (in another thread or by a callback of "
                "its own fit); one fit per model at a time: wait for the first to return"
            )
        _fitting.add(id(model))
    try:
        with call_budget():  # fastnn's threads in any thread; a Dask task's budget
            return _fit_world(model, X, y, **kwargs)
    finally:
        with _fitting_lock:
            _fitting.discard(id(model))


def _fit_world(
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
    validation_split=0.0,
    callbacks=None,
    initial_epoch=0,
    verbose=1,
    sample_weight=None,
    distributed=None,
):
    """``fit`` in one process, or on every rank of a distributed fit (``distributed="mpi"``
    under an MPI launcher: see :mod:`fastnn.distributed`)."""
    dist = make_world(distributed)
    args = (model, X, y, loss, optimizer, epochs, batch_size, shuffle, seed, validation_data,
            validation_split, callbacks, initial_epoch, verbose, sample_weight)  # fmt: skip
    if dist.size == 1:
        return _fit(*args, None)
    try:
        return _fit(*args, dist)
    except BaseException as exc:
        # Errors every rank meets together (agreed on in a collective, or decided from reduced
        # values) are raised as they are; any other stops every rank, since the others would
        # wait for this one in the next collective.
        if getattr(exc, "_fastnn_agreed", False) or isinstance(exc, TrainingDivergedError):
            raise
        dist.abort(exc)
        raise


def _fit(
    model,
    X,
    y,
    loss,
    optimizer,
    epochs,
    batch_size,
    shuffle,
    seed,
    validation_data,
    validation_split,
    callbacks,
    initial_epoch,
    verbose,
    sample_weight,
    dist,
):
    """``fit``, as three steps: validate every argument (nothing changes before that), plan
    the run (the runner, the shuffling, what is checked when), run the epochs.  ``dist`` is
    the World of a distributed fit on several ranks, else None."""
    try:
        checked = _check_all(
            model, X, y, loss, optimizer, epochs, batch_size, seed, validation_data,
            validation_split, callbacks, initial_epoch, verbose, sample_weight, dist,
        )  # fmt: skip
    except Exception as exc:
        if dist is None:
            raise
        dist.agree(exc)
    if dist is not None:
        dist.agree(None)
    cbs, base_seed, X, y, labels, epochs, batch_size, X_checked, sample_weight, val = checked
    if dist is not None:
        base_seed = _start_distributed(
            dist, model, optimizer, X, epochs, batch_size, shuffle, initial_epoch, val,
            sample_weight, base_seed, cbs,
        )  # fmt: skip
        if not dist.root:
            verbose = 0
    plan = _plan(model, X, y, labels, loss, optimizer, batch_size, sample_weight, X_checked,
                 initial_epoch, epochs, dist)  # fmt: skip
    return _run(plan, model, loss, optimizer, cbs, val, epochs, initial_epoch, shuffle, base_seed,
                verbose, dist)  # fmt: skip


class _Plan:
    """What ``_plan`` decided for a fit: the runner, the sample order it permutes, whether the
    first epoch checks X's rows as it gathers them, and the snapshot divergence restores."""

    def __init__(self, X, labels, batch_size, runner, order, check_in_epoch, grads_before,
                 snapshot):  # fmt: skip
        self.X, self.labels, self.batch_size = X, labels, batch_size
        self.runner, self.order = runner, order
        self.check_in_epoch, self.grads_before = check_in_epoch, grads_before
        self.snapshot = snapshot


def _plan(model, X, y, labels, loss, optimizer, batch_size, sample_weight, X_checked,
          initial_epoch, epochs, dist):  # fmt: skip
    """The runner (compiled fast path, layer by layer, or distributed) and how X is checked."""
    n = X.shape[0]
    order = np.arange(n, dtype=np.int64)
    # X may be a memory map of another dtype than the model's: runners gather and convert rows
    # per batch, so the file is never loaded whole.
    if dist is None:
        runner = make_runner(model, X, y, labels, loss, optimizer, batch_size, sample_weight)
    else:
        runner = fast_runner(model, X, y, labels, loss, optimizer, batch_size, sample_weight, dist)
        if runner is None:
            runner = DistributedRunner(
                model, X, y, labels, loss, optimizer, batch_size, sample_weight, dist
            )
    # A separate pass over X for NaN and inf is memory-bound: 12-18 ms for 142 MB, 6-8% of a
    # 784-100-10@64 epoch.  The fast path instead checks each row as its first epoch gathers
    # it, and stops before the first batch holding a bad value; fit then restores everything
    # that epoch changed (parameters, their gradients, the optimizer state) and raises the
    # same ValueError, so the caller sees exactly what the up-front check gives.  That needs
    # a copy of the gradients, so it is done only when X is the larger of the two.
    check_in_epoch = (
        not X_checked
        and hasattr(runner, "check_inputs")
        and initial_epoch < epochs
        and X.nbytes > model._flat.grad.nbytes
    )
    if not X_checked and not check_in_epoch:
        check_finite(X, "X")
    grads_before = None
    if check_in_epoch:
        runner.check_inputs = True
        grads_before = model._flat.grad.copy()
    snapshot = _Snapshot(model, optimizer)
    return _Plan(X, labels, batch_size, runner, order, check_in_epoch, grads_before, snapshot)


def _run(plan, model, loss, optimizer, cbs, val, epochs, initial_epoch, shuffle, base_seed,
         verbose, dist):  # fmt: skip
    """The epochs of a planned fit: chunks of batches through the runner, divergence and
    Ctrl-C handling, metrics, callbacks and the epoch lines.  Returns the History."""
    X, labels, batch_size, runner, order = (
        plan.X,
        plan.labels,
        plan.batch_size,
        plan.runner,
        plan.order,
    )
    check_in_epoch, grads_before, snapshot = plan.check_in_epoch, plan.grads_before, plan.snapshot
    n = X.shape[0]
    history = History()
    agreed = np.zeros(3, np.float64)  # a distributed fit's per-chunk and per-epoch decisions
    show_bar = verbose == 1 and isatty(sys.stdout)
    model.stop_training = False
    logs = {}
    note = None

    bar = None
    with SigintGuard() as guard:
        try:
            cbs.begin()
            for epoch in range(initial_epoch, epochs):
                cbs.epoch_begin(epoch)
                snapshot.take()
                if shuffle:
                    # The permutation depends only on (seed, epoch), so a fit resumed with
                    # initial_epoch=k shuffles exactly as an uninterrupted one would.
                    K.data.shuffled_order(order, _epoch_key(base_seed, epoch))
                t0 = time.perf_counter()
                c0 = compile_seconds()  # an epoch's time and rate leave compilation out
                bar = ProgressBar(n, sys.stdout, t0) if show_bar else None
                total, correct, done, b, chunk = 0.0, 0, 0, 0, 1
                while b < runner.n_batches:
                    last = b + 1 if cbs.wants_batches else min(b + chunk, runner.n_batches)
                    tc = time.perf_counter()
                    try:
                        s, c, finite = runner.run(order, b, last)
                    except KeyboardInterrupt as exc:
                        if dist is not None:  # the other ranks may be inside a collective
                            dist.abort(exc)
                        # Raised mid-step (no signal guard, or a second Ctrl-C): roll back.
                        snapshot.restore()
                        note = f"parameters rolled back to the start of epoch {epoch + 1}"
                        raise
                    if check_in_epoch and not (runner.inputs_finite and finite):
                        # bad input, or a divergence before a bad row was reached: either
                        # way X decides, and a bad X gets the up-front check's error
                        X_bad = not runner.inputs_finite or not pick(
                            K.all_finite, K.all_finite_parallel, X.size
                        )(X)
                        if X_bad:
                            if bar is not None:
                                bar.clear()
                            snapshot.restore()
                            model._flat.grad[...] = grads_before
                            raise ValueError(nonfinite_message("X"))
                    if not finite:
                        snapshot.restore()
                        raise TrainingDivergedError(
                            f"the loss became NaN or inf in epoch {epoch + 1}; the model keeps "
                            f"the parameters from the end of epoch {epoch}. Try a smaller "
                            "learning rate or standardise the inputs."
                        )
                    m = min(last * batch_size, n) - b * batch_size
                    total, correct, done = total + s, correct + c, done + m
                    dt = time.perf_counter() - tc
                    if cbs.wants_batches:
                        # (before the ranks agree: a stop_training it sets is agreed on below)
                        blogs = {"batch": b, "size": m, "loss": s / m}
                        if labels is not None:
                            blogs["accuracy"] = c / m
                        cbs.batch_end(b, blogs)
                    interrupted = guard.fired
                    if dist is not None:
                        # every rank must run the same chunks and stop at the same one, so
                        # each acts on the agreed Ctrl-C and stop_training, not on its own
                        # flags: a Ctrl-C that reaches a rank during the collective stays set
                        # there and is agreed on at the next chunk (overwriting the flag with
                        # the agreed value lost it, and a fit that was all collectives never
                        # stopped); a batch callback's stop on one rank stops them all
                        agreed[:] = dt, guard.fired, model.stop_training
                        dist.max(agreed)
                        dt = float(agreed[0])
                        interrupted, model.stop_training = bool(agreed[1]), bool(agreed[2])
                    chunk = max(1, min(4 * (last - b), int((last - b) * CHUNK_SECONDS / dt)))
                    b = last
                    if bar is not None:
                        bar.update(done, total / done, excluded=compile_seconds() - c0)
                    if interrupted:
                        raise KeyboardInterrupt
                    if model.stop_training:
                        break
                if check_in_epoch and b == runner.n_batches:
                    check_in_epoch = False  # every row of X has been gathered and checked
                    runner.check_inputs = False
                    grads_before = None
                if not _finite_parameters(model):
                    # A step from a finite loss can still overflow the parameters; the next
                    # epoch's snapshot would then keep them, so check before it is taken.
                    snapshot.restore()
                    raise TrainingDivergedError(
                        f"the parameters (or a layer's running statistics) became NaN or inf "
                        f"in epoch {epoch + 1}; the model "
                        f"keeps the parameters from the end of epoch {epoch}. Try a smaller "
                        "learning rate or standardise the inputs."
                    )
                seconds = time.perf_counter() - t0 - (compile_seconds() - c0)
                if dist is not None:
                    agreed[:] = seconds, 0.0, 0.0  # the slowest rank's time, on every rank
                    seconds = float(dist.max(agreed)[0])
                if bar is not None:
                    bar.clear()
                logs = {"loss": total / done}
                if labels is not None:
                    logs["accuracy"] = correct / done
                if val is not None:
                    vlogs = _evaluate(model, val, loss, dist)
                    logs.update({"val_" + k: v for k, v in vlogs.items()})
                logs["samples_per_second"] = done / seconds if seconds > 0 else float("inf")
                report()  # the compile notice's "compiled in" line, before the epoch's
                stop = cbs.epoch_end(epoch, logs)  # callbacks may add entries (e.g. "lr")
                history.append(epoch, logs)
                if verbose:
                    _print_epoch(epoch, epochs, logs, seconds)
                interrupted = guard.fired
                if dist is not None:  # (the agreed Ctrl-C, as for the chunks above)
                    agreed[:] = stop, model.stop_training, interrupted
                    dist.max(agreed)
                    stop, model.stop_training, interrupted = map(bool, agreed)
                if stop or model.stop_training or interrupted:
                    if interrupted:
                        raise KeyboardInterrupt
                    break
        except KeyboardInterrupt:
            history.interrupted = True
            if bar is not None:
                bar.clear()
            done_epochs = len(history.epoch)
            print(
                f"fastnn: training interrupted (Ctrl-C) after {done_epochs} complete epoch"
                f"{'s' if done_epochs != 1 else ''} of this fit"
                + (f"; {note}" if note else "; the last step finished before stopping")
                + ". Returning the model and the history so far.",
                file=sys.stderr,
                flush=True,
            )
    cbs.end(logs)
    return history


def _finite_parameters(model):
    """True when every parameter and every float state array of the layers (BatchNorm1d's
    running statistics) is finite."""
    # the serial build, which the fit's first epoch has compiled already (the input check):
    # the parallel one cost a cold first fit 0.6 s of compiling and was no faster (0.10 ms
    # per million float32 parameters either way, 2 threads)
    data = model._flat.data.reshape(1, -1)
    if not K.all_finite(data):
        return False
    for layer in leaf_layers(model):
        for arr in layer.state_arrays().values():
            if arr.dtype.kind == "f" and not np.isfinite(arr).all():
                return False
    return True


def _print_epoch(epoch, epochs, logs, seconds):
    width = len(str(epochs))
    parts = [f"epoch {epoch + 1:>{width}}/{epochs}"]
    for key, value in logs.items():
        if key == "samples_per_second" or not isinstance(value, numbers.Real):
            continue
        parts.append(f"{key} {value:.3g}" if key == "lr" else f"{key} {value:.4f}")
    parts.append(f"{logs['samples_per_second']:,.0f} samples/s")
    parts.append(f"{seconds:.2f}s")
    print(" - ".join(parts), file=sys.stdout, flush=True)
