"""A steady-state training step allocates no arrays: neither NumPy temporaries nor numba ones.

Two measurements, each shown able to fail:

* Python/NumPy heap (tracemalloc, which also sees NumPy's array data): around every single step
  after a warm-up, the *peak* above the memory in use before the step must stay below the
  size of the smallest array a step works with (a (512,) float32 vector: 2 KiB of data plus a
  112-byte header), and the memory in use must not grow over three epochs.  What remains per
  step (measured: ~0.7 KiB layer by layer, ~1.3 KiB through the compiled epoch kernel) is
  Python objects: argument tuples, slice views, boxed floats.
* numba's runtime (NRT) allocation counters, which only count when NUMBA_NRT_STATS=1 is set
  before numba starts, so they run in a subprocess.  Calling a kernel from Python wraps every
  array argument in an NRT MemInfo (one counted allocation each, freed on return); a serial
  kernel must allocate exactly that and nothing more.  A parallel kernel that reduces a scalar
  (losses, count_correct, all_finite) additionally gets one small array from numba's parfor
  lowering for the per-thread partial sums (n_threads elements): measured, accepted, counted
  exactly here so any other allocation shows.
"""

import json
import os
import subprocess
import sys
import textwrap
import tracemalloc

import numpy as np
import pytest

import fastnn as fnn
from fastnn import _fastpath
from fastnn.training import EpochRunner, make_runner

N, BATCH, N_IN, HIDDEN, K = 2148, 512, 32, 128, 16  # last batch: 100 rows
# The smallest array of a step is a (BATCH,) float32 vector (2048 bytes + header); a step's
# Python objects measured ~1.3 KiB at most.
STEP_PEAK_LIMIT = 2048


def _data():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((N, N_IN)).astype(np.float32)
    y = rng.integers(0, K, N).astype(np.int64)
    return X, y


def _model(last=None, first_act=None):
    first_act = first_act or fnn.ReLU()
    layers = [fnn.Linear(N_IN, HIDDEN, seed=0), first_act, fnn.Linear(HIDDEN, K, seed=1)]
    if last is not None:
        layers.append(last)
    return fnn.Sequential(*layers)


def _runner(kind):
    X, y = _data()
    if kind in ("fit-runner", "layer-runner"):
        model = _model()
        opt = fnn.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
        loss, target = fnn.SoftmaxCrossEntropy(), y
    elif kind == "softmax-ce-adam":
        model = _model(fnn.Softmax())
        opt = fnn.Adam(model.parameters(), lr=1e-3)
        loss, target = fnn.CrossEntropy(), y
    elif kind == "mse-adamw":
        model = _model(fnn.Tanh(), fnn.Sigmoid())
        opt = fnn.AdamW(model.parameters(), lr=1e-3)
        loss, target = fnn.MSELoss(), np.eye(K, dtype=np.float32)[y]
    labels = y if loss.classification else None
    make = make_runner if kind == "fit-runner" else EpochRunner
    runner = make(model, X, target, labels, loss, opt, BATCH)
    order = np.random.default_rng(1).permutation(N).astype(np.int64)

    def step(b):
        runner.run(order, b, b + 1)

    return step, runner.n_batches


def _manual():
    X, y = _data()
    model = _model()
    loss = fnn.SoftmaxCrossEntropy()
    opt = fnn.SGD(model.parameters(), lr=0.01, momentum=0.9)
    batches = [(X[s : s + BATCH], y[s : s + BATCH]) for s in range(0, N, BATCH)]

    def step(b):
        xb, yb = batches[b]
        opt.zero_grad()
        loss.forward(model.forward(xb), yb)
        model.backward(loss.backward())
        opt.step()

    return step, len(batches)


def _measure(step, n_batches, epochs=3):
    """(largest per-step peak above the memory in use before it, growth over the epochs)."""
    for _ in range(2):  # warm-up: every batch shape, every buffer, every signature
        for b in range(n_batches):
            step(b)
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        worst = 0
        for _ in range(epochs):
            for b in range(n_batches):
                before = tracemalloc.get_traced_memory()[0]
                tracemalloc.reset_peak()
                step(b)
                worst = max(worst, tracemalloc.get_traced_memory()[1] - before)
        growth = tracemalloc.get_traced_memory()[0] - start
    finally:
        tracemalloc.stop()
    return worst, growth


KINDS = ["fit-runner", "layer-runner", "softmax-ce-adam", "mse-adamw", "manual"]


@pytest.mark.parametrize("kind", KINDS)
def test_training_step_allocates_no_arrays(kind, monkeypatch):
    # steady state: the parallel build itself, not the serial stand-in a cold cache runs for
    # a few seconds while a helper compiles it (fastnn._fastpath.STAND_IN)
    monkeypatch.setattr(_fastpath, "STAND_IN", False)
    step, n_batches = _manual() if kind == "manual" else _runner(kind)
    worst, growth = _measure(step, n_batches)
    assert worst < STEP_PEAK_LIMIT, f"a step allocated {worst} bytes at its peak"
    assert growth <= 512, f"memory in use grew by {growth} bytes over 3 epochs"


def test_allocation_measurement_catches_a_temporary():
    """The same measurement around a step that also makes one (BATCH,) float32 temporary (what
    e.g. a per-row loss vector would cost) fails the limit."""
    step, n_batches = _runner("layer-runner")

    def leaky_step(b):
        step(b)
        np.empty(BATCH, np.float32)

    worst, _ = _measure(leaky_step, n_batches, epochs=1)
    assert worst >= STEP_PEAK_LIMIT


_NRT_SCRIPT = textwrap.dedent(
    """
    import json
    import numpy as np
    from numba.core.runtime import rtsys
    import fastnn as fnn
    from fastnn import kernels as K
    from fastnn.training import EpochRunner

    f = np.float32
    n, k = 300, 70  # parallel builds take this shape through their prange loops
    Z = np.random.rand(n, k).astype(f)
    P = np.empty_like(Z)
    W = np.random.rand(k, k).astype(f)
    b = np.zeros(k, f)
    y = np.zeros(n, np.int64)
    p = np.random.rand(1000).astype(f)
    g, m, v = p.copy(), p.copy(), p.copy() + 1
    # name: (call, number of array arguments, returns a reduced scalar)
    calls = {
        "activation_forward": (lambda kk: kk(Z, 1, 0.0, P), 2, False),
        "activation_backward": (lambda kk: kk(Z, Z, 1, 0.0, P), 3, False),
        "dense_forward": (lambda kk: kk(Z, W, b, 1, 0.0, P), 4, False),
        "dense_backward": (lambda kk: kk(Z, W, Z, 1.0, W, b, 1, 0.0, P), 6, False),
        "softmax_forward": (lambda kk: kk(Z, P), 2, False),
        "log_softmax_forward": (lambda kk: kk(Z, P), 2, False),
        "softmax_backward": (lambda kk: kk(Z, Z, P), 3, False),
        "softmax_xent_labels": (lambda kk: kk(Z, y, P), 3, True),
        "softmax_xent_targets": (lambda kk: kk(Z, Z, P), 3, True),
        "cross_entropy_labels": (lambda kk: kk(Z, y, 1e-8, P), 3, True),
        "cross_entropy_targets": (lambda kk: kk(Z, Z, 1e-8, P), 3, True),
        "mse": (lambda kk: kk(Z, Z, P), 3, True),
        "sgd_update": (lambda kk: kk(p, g, m, 0.1, 0.9, 0.0, 0.0, False, False), 3, False),
        "adam_update": (lambda kk: kk(p, g, m, v, 0.1, 0.9, 0.99, 1e-8, 0.0, False, 3), 4, False),
        "gather_rows": (lambda kk: kk(Z, y, P), 3, False),
        "gather": (lambda kk: kk(y, y, y.copy()), 3, False),
        "count_correct": (lambda kk: kk(Z, y), 2, True),
        "all_finite": (lambda kk: kk(Z), 1, True),
    }
    out = {"kernels": {}}
    for name, (call, n_arrays, reduces) in calls.items():
        for suffix in ("", "_parallel"):
            kk = getattr(K, name + suffix)
            call(kk)
            s0 = rtsys.get_allocation_stats()
            call(kk)
            s1 = rtsys.get_allocation_stats()
            expected = n_arrays + (1 if (reduces and suffix) else 0)
            out["kernels"][name + suffix] = [s1.alloc - s0.alloc, s1.free - s0.free, expected]

    rng = np.random.default_rng(0)
    X = rng.standard_normal((2148, 32)).astype(f)
    yy = rng.integers(0, 16, 2148).astype(np.int64)
    model = fnn.Sequential(fnn.Linear(32, 128, seed=0), fnn.ReLU(), fnn.Linear(128, 16, seed=1))
    opt = fnn.SGD(model.parameters(), lr=0.01, momentum=0.9)
    runner = EpochRunner(model, X, yy, yy, fnn.SoftmaxCrossEntropy(), opt, 512)
    order = np.arange(2148, dtype=np.int64)
    counts = []
    for epoch in range(4):
        s0 = rtsys.get_allocation_stats()
        runner.run(order, 0, runner.n_batches)
        s1 = rtsys.get_allocation_stats()
        counts.append([s1.alloc - s0.alloc, s1.free - s0.free])
    out["epochs"] = counts
    out["batches"] = runner.n_batches
    print(json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def nrt_counts():
    result = subprocess.run(
        [sys.executable, "-c", _NRT_SCRIPT],
        capture_output=True,
        text=True,
        env=os.environ | {"NUMBA_NRT_STATS": "1"},
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_kernels_allocate_nothing_but_argument_wrappers(nrt_counts):
    wrong = {
        name: (alloc, free, expected)
        for name, (alloc, free, expected) in nrt_counts["kernels"].items()
        if alloc != expected or free != alloc
    }
    assert not wrong, f"(allocations, frees, expected) per call: {wrong}"


def test_epoch_nrt_allocations_are_per_call_and_freed(nrt_counts):
    """Every epoch after the first allocates exactly as much as the one before (nothing is
    created lazily or kept), and everything allocated is freed."""
    epochs = nrt_counts["epochs"]
    steady = epochs[1:]
    assert all(alloc == free for alloc, free in epochs), epochs
    assert len({alloc for alloc, _ in steady}) == 1, epochs
