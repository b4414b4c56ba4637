"""Run under ``mpiexec -n N python tests/mpi_job.py MODE OUT``: the rank side of
tests/test_distributed.py.

``equal``: every case of ``CASES`` is fitted with ``distributed="mpi"``; each rank writes its
parameters and History to ``OUT/rank{r}.npz``.  The test fits the same cases in one process
and compares.  Other modes exercise the failure paths and print one line per rank.
"""

import json
import os
import signal
import sys

import numpy as np

import fastnn as fnn
from fastnn import _fastpath
from fastnn import distributed as D

#: (name, dtype, optimizer, loss, sample weights, validation, n, batch size, epochs, callbacks)
CASES = [
    ("sgd64", "float64", "sgd", "xent", False, "data", 103, 16, 3),
    ("adam64", "float64", "adam", "xent", True, "split", 101, 20, 3),
    ("adamw64", "float64", "adamw", "mse", False, None, 97, 32, 2),
    ("sgd32", "float32", "sgd", "mse", True, "data", 90, 25, 2),
    ("adam32", "float32", "adam", "xent", False, None, 64, 64, 2),
    # a last batch of one row: with 2 or 3 ranks, some ranks have no share of it
    ("tiny_last", "float64", "adam", "xent", False, None, 33, 16, 2),
    # X a float64 .npy memory map (written by the test) for a float32 model: converted per
    # batch on the layer-by-layer runner, each rank checking only its share of the rows
    ("memmap", "float32", "adam", "xent", False, "split", 90, 16, 2),
]

#: the cases run on the compiled runner (no sample weights, X of the model's dtype)
FAST_CASES = [c[0] for c in CASES if not c[4] and c[0] != "memmap"]


def build(case, seed=1):
    """(model, X, y, fit kwargs) of a case; ``seed`` seeds the initial parameters only (the
    ranks pass different ones: rank 0's are broadcast)."""
    name, dtype, opt, loss, weighted, val, n, batch, epochs = case
    rng = np.random.default_rng(7)
    X = rng.standard_normal((n, 6)).astype(np.float64 if name == "memmap" else dtype)
    n_out = 3
    if loss == "xent":
        y = rng.integers(0, n_out, n)
        loss_obj = fnn.SoftmaxCrossEntropy()
    else:
        y = rng.standard_normal((n, n_out)).astype(dtype)
        loss_obj = fnn.MSELoss()
    model = fnn.Sequential(
        fnn.Linear(6, 8, dtype=dtype, seed=seed),
        fnn.ReLU(),
        fnn.Linear(8, 5, dtype=dtype, seed=seed + 1),
        fnn.Tanh(),
        fnn.Linear(5, n_out, dtype=dtype, seed=seed + 2),
    )
    params = model.parameters()
    if opt == "sgd":
        optimizer = fnn.SGD(params, lr=0.05, momentum=0.9)
    elif opt == "adam":
        optimizer = fnn.Adam(params, lr=0.01)
    else:
        optimizer = fnn.AdamW(params, lr=0.01, weight_decay=0.1)
    kwargs = dict(loss=loss_obj, optimizer=optimizer, epochs=epochs, batch_size=batch, seed=3)
    if weighted:
        kwargs["sample_weight"] = rng.uniform(0.0, 2.0, n)
    if val == "data":
        kwargs["validation_data"] = (X[: n // 3], y[: n // 3])
    elif val == "split":
        kwargs["validation_split"] = 0.2
    return model, X, y, kwargs


def report(out, text):
    """Each rank's outcome goes to its own file: mpiexec may interleave the ranks' stdout."""
    with open(os.path.join(out, f"report{D.rank()}.txt"), "w") as f:
        f.write(text)


def history_arrays(history):
    return {f"h_{k}": np.array(v) for k, v in history.history.items() if k != "samples_per_second"}


def equal(out):
    r = D.rank()
    arrays = {}
    # which runner each fit used: the compiled one unless the case has sample weights
    fast = []
    init = _fastpath.FastDistributedRunner.__init__

    def counting_init(self, *args, **kwargs):
        fast.append(1)
        init(self, *args, **kwargs)

    _fastpath.FastDistributedRunner.__init__ = counting_init
    for case in CASES:
        model, X, y, kwargs = build(case, seed=1 + 10 * r)  # different seeds on each rank
        if case[0] == "memmap":
            X = np.load(os.path.join(out, "memmap.npy"), mmap_mode="r")
        history = model.fit(X, y, verbose=0, distributed="mpi", **kwargs)
        arrays[case[0]] = model._flat.data.copy()
        for k, v in history_arrays(history).items():
            arrays[f"{case[0]}:{k}"] = v
        sps = history.history["samples_per_second"]
        arrays[f"{case[0]}:sps"] = np.array(sps)
    arrays["threads"] = np.array(fnn.get_num_threads())  # after fit set the budget
    arrays["fast_runners"] = np.array(len(fast))
    np.savez(os.path.join(out, f"rank{r}.npz"), **arrays)


def bad_input(out):
    """NaN in X on the last rank only: every rank raises, none hangs."""
    r, n = D.rank(), D.size()
    model, X, y, kwargs = build(CASES[0])
    if r == n - 1:
        X = X.copy()
        X[5, 2] = np.nan
    try:
        model.fit(X, y, verbose=0, distributed="mpi", **kwargs)
        report(out, f"rank {r}: no error")
    except Exception as exc:
        report(out, f"rank {r}: {type(exc).__name__}: {exc}")


def mismatch(out):
    """Different batch sizes on the ranks: a ValueError on every rank."""
    r = D.rank()
    model, X, y, kwargs = build(CASES[0])
    kwargs["batch_size"] += r
    try:
        model.fit(X, y, verbose=0, distributed="mpi", **kwargs)
        report(out, f"rank {r}: no error")
    except ValueError as exc:
        report(out, f"rank {r}: ValueError: {exc}")


class _FailOnLastRank(fnn.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 1 and D.rank() == D.size() - 1:
            raise RuntimeError("a callback failed on this rank only")


def crash(out):
    """An exception on one rank in the middle of training: every rank stops (MPI_Abort)."""
    model, X, y, kwargs = build(CASES[0])
    kwargs["epochs"] = 50
    model.fit(X, y, verbose=0, distributed="mpi", callbacks=[_FailOnLastRank()], **kwargs)
    report(out, f"rank {D.rank()}: finished")


class _KillLastRank(fnn.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 1 and D.rank() == D.size() - 1:
            os.kill(os.getpid(), signal.SIGKILL)


def killed(out):
    """One rank killed (SIGKILL) in the middle of training: mpiexec stops the others."""
    model, X, y, kwargs = build(CASES[0])
    kwargs["epochs"] = 50
    model.fit(X, y, verbose=0, distributed="mpi", callbacks=[_KillLastRank()], **kwargs)
    report(out, f"rank {D.rank()}: finished")


class _Started(fnn.Callback):
    def __init__(self, out):
        self.out = out

    def on_epoch_end(self, epoch, logs=None):
        if epoch == 1:
            open(os.path.join(self.out, f"started{D.rank()}"), "w").close()


def interrupt(out):
    """A long fit that the test stops with Ctrl-C (SIGINT to mpiexec, which forwards it)."""
    model, X, y, kwargs = build(CASES[0])
    kwargs["epochs"] = 100_000
    history = model.fit(X, y, verbose=0, distributed="mpi", callbacks=[_Started(out)], **kwargs)
    report(out, json.dumps({"interrupted": history.interrupted, "epochs": len(history.epoch)}))


def callbacks(out):
    """EarlyStopping stops every rank at the same epoch; CSVLogger and ModelCheckpoint write on
    rank 0 only; epoch lines only on rank 0."""
    r = D.rank()
    model, X, y, kwargs = build(CASES[0])
    kwargs["epochs"] = 40
    stop = fnn.EarlyStopping(monitor="val_loss", patience=1, min_delta=1e-3)
    csv = fnn.CSVLogger(os.path.join(out, "log.csv"))
    ckpt = fnn.ModelCheckpoint(os.path.join(out, f"ckpt-r{r}-{{epoch}}.npz"), monitor="val_loss")
    history = model.fit(X, y, verbose=2, distributed="mpi", callbacks=[stop, csv, ckpt], **kwargs)
    report(out, json.dumps({"rank": r, "epochs": len(history.epoch), "saved": len(ckpt.saved)}))


class _StopOnLastRank(fnn.Callback):
    """Sets stop_training after a batch of epoch 2, on the last rank only."""

    def __init__(self):
        self.epoch = 0
        self.batches = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_batch_end(self, batch, logs=None):
        self.batches += 1
        if self.epoch == 2 and batch >= 2 and D.rank() == D.size() - 1:
            self.model.stop_training = True


def batch_stop(out):
    """A batch callback stops training on one rank: every rank stops after the same batch."""
    model, X, y, kwargs = build(CASES[0])
    kwargs["epochs"] = 20
    cb = _StopOnLastRank()
    history = model.fit(X, y, verbose=0, distributed="mpi", callbacks=[cb], **kwargs)
    report(out, json.dumps({"epochs": len(history.epoch), "batches": cb.batches}))


if __name__ == "__main__":
    mode, out = sys.argv[1], sys.argv[2]
    {
        "equal": equal,
        "bad_input": bad_input,
        "mismatch": mismatch,
        "crash": crash,
        "callbacks": callbacks,
        "killed": killed,
        "interrupt": interrupt,
        "batch_stop": batch_stop,
    }[mode](out)
