"""Cold compiles on more than one core (issue 17): helper processes compile an entry point's
callees into the kernel cache while the calling process compiles the entry point.

The plan file is checked against the kernels as they are (names that resolve, types that
parse, the signatures fits use today); the subprocess tests run a first drop-in fit in fresh
interpreters with empty caches, with and without a helper, and compare the results bit for bit.
"""

import importlib.util
import json
import mmap
import os
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from fastnn.kernels import epoch as E
from fastnn.kernels import sklearn_compat as SC
from numba.core import types
from sklearn.exceptions import ConvergenceWarning

import fastnn
import fastnn.sklearn  # noqa: F401  (its kernels join the registry)
from fastnn import _compile_helper as H


# -- argument types as text --------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [types.float32, types.float64, types.int64, types.uint8])
@pytest.mark.parametrize("ndim", [1, 2, 3])
@pytest.mark.parametrize("layout", ["C", "F", "A"])
@pytest.mark.parametrize("readonly", [False, True])
@pytest.mark.parametrize("aligned", [True, False])
def test_array_types_round_trip(dtype, ndim, layout, readonly, aligned):
    t = types.Array(dtype, ndim, layout, readonly=readonly, aligned=aligned)
    text = H.type_text(t)
    assert text is not None
    assert H.parse_type(text) == t


@pytest.mark.parametrize(
    "t", [types.boolean, types.int64, types.intp, types.uint32, types.float32, types.float64]
)
def test_scalar_types_round_trip(t):
    assert H.parse_type(H.type_text(t)) == t


@pytest.mark.parametrize(
    "t",
    [
        types.literal(3),
        types.UniTuple(types.int64, 2),
        types.Omitted(1.0),
        types.unicode_type,
        types.Array(types.UniTuple(types.int64, 2), 1, "C"),
    ],
)
def test_other_types_have_no_text(t):
    assert H.type_text(t) is None


@pytest.mark.parametrize(
    "text",
    [
        "array:foo:2:C",
        "array:float32:x:C",
        "array:float32:2:Q",
        "array:float32:2:C:zz",
        "array:float32",
        "int33",
        "",
        3,
        None,
        "__import__('os')",
    ],
)
def test_parse_type_rejects_anything_else(text):
    with pytest.raises(ValueError):
        H.parse_type(text)


# -- the plan file ------------------------------------------------------------------------------
def _plan_data():
    with open(H.PLAN_FILE, encoding="utf-8") as f:
        return json.load(f)


def test_plan_file_names_kernels_that_exist_with_types_that_parse():
    data = _plan_data()
    assert data["version"] == H.PLAN_VERSION
    registry = H._registry()
    assert data["plans"], "the plan file holds no plans"
    for plan in data["plans"]:
        assert plan["entry"] in registry, plan["entry"]
        for t in plan["args"]:
            H.parse_type(t)
        assert plan["callees"], plan["entry"]
        for name, args, seconds, depth in plan["callees"]:
            assert seconds >= 0 and depth >= 1
            assert name in registry, f"{plan['entry']} plans {name}, which no longer exists"
            for t in args:
                H.parse_type(t)
        for name, args in plan["then"]:
            assert name in registry, f"{plan['entry']} plans {name}, which no longer exists"
            for t in args:
                H.parse_type(t)


def test_plans_cover_the_first_fits_of_the_readme_and_the_drop_in():
    """The main job's serial driver and the drop-in's epoch, with the argument types a fit
    passes today (the recorded signature must be the one the kernels are called with)."""
    X = np.random.default_rng(0).standard_normal((96, 8)).astype(np.float32)
    y = np.arange(96) % 3
    model = fastnn.Sequential(fastnn.Linear(8, 64, seed=0), fastnn.ReLU(), fastnn.Linear(64, 3))
    model.fit(
        X,
        y,
        loss=fastnn.SoftmaxCrossEntropy(),
        optimizer=fastnn.SGD(model.parameters(), lr=0.01),
        epochs=1,
        batch_size=32,
        verbose=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        fastnn.sklearn.MLPClassifier(hidden_layer_sizes=(8,), max_iter=2).fit(X.astype(float), y)
    keys = set(H.plans())
    for dispatcher in (E.train_batches.jit, SC.mlp_epoch.jit):
        used = {
            (H.kernel_name(dispatcher), tuple(H.type_text(t) for t in sig))
            for sig in dispatcher.signatures
        }
        assert used & keys, f"no plan for {H.kernel_name(dispatcher)} as fit calls it: {used}"


def test_a_helper_takes_whole_subtrees_after_the_cut_then_leaves_towards_the_caller():
    """Call tree: A calls k0, k1; B calls k2, k3; k4 calls nothing (post-order, the order
    numba compiles them, with each one's own seconds; 10 s in all)."""
    names = ["k0", "k1", "A", "k2", "k3", "B", "k4"]
    callees = [(f"m:{n}", ("int64",)) for n in names]
    seconds = [1.0, 1.0, 2.0, 1.0, 1.0, 2.0, 2.0]
    depths = [2, 2, 1, 2, 2, 1, 1]
    c = dict(zip(names, callees, strict=True))
    nxt = ("m:next", ())
    plan = H.Plan(callees, seconds, depths, [nxt, callees[0]])
    assert plan.first == [0, 1, 0, 3, 4, 3, 6]
    assert plan.items() == callees + [nxt]
    # one helper: a cut after k1 leaves the caller k0, k1 and A (4 s; A calls k0 and k1, so
    # only the caller can build it); the helper takes B's subtree and k4 in the caller's
    # order, then what comes next, then the leaves before the cut, backwards
    assert plan.order(0, 1) == [c["k2"], c["k3"], c["B"], c["k4"], nxt, c["k1"], c["k0"]]
    for n in (1, 2, 3):
        for j in range(n):
            order = plan.order(j, n)
            assert len(order) == len(set(order))  # each kernel at most once
            for item in order:  # never a callee whose own callees lie before the cut
                if item in callees and item not in (c["k0"], c["k1"]):
                    i = callees.index(item)
                    assert all(callees[k] in order for k in range(plan.first[i], i))


def test_malformed_plan_files_give_no_plans(tmp_path):
    cases = {
        "missing.json": None,
        "garbage.json": "{not json",
        "version.json": json.dumps({"version": 999, "plans": []}),
        "fields.json": json.dumps({"version": H.PLAN_VERSION, "plans": [{"entry": "x"}]}),
        "types.json": json.dumps({"version": H.PLAN_VERSION, "plans": 5}),
    }
    for name, text in cases.items():
        path = tmp_path / name
        if text is not None:
            path.write_text(text)
        assert H._load_plans(path) == {}, name


def test_short_entry_points_get_no_plan(tmp_path):
    plan = {"entry": "m:f", "args": ["int64"], "callees": [["m:g", ["int64"], 1.0, 1]], "then": []}
    path = tmp_path / "p.json"
    path.write_text(
        json.dumps(
            {
                "version": H.PLAN_VERSION,
                "plans": [
                    {**plan, "seconds": H.MIN_PLAN_SECONDS - 0.1},
                    {**plan, "entry": "m:h", "seconds": H.MIN_PLAN_SECONDS + 1},
                ],
            }
        )
    )
    assert set(H._load_plans(path)) == {("m:h", ("int64",))}


def _planned(monkeypatch, folder):
    """A dispatcher with a writable cache and a plan: only the setting can stop a helper."""
    plan = H.Plan([("m:f", ("int64",))], [1.0], [1], [])
    monkeypatch.setattr(H, "plan_for", lambda dispatcher, args: plan)
    dispatcher = SimpleNamespace(_cache=SimpleNamespace(cache_path=str(folder)), py_func=len)
    assert H._cache_writable(dispatcher)
    return dispatcher, ()


def test_workers_setting(monkeypatch, tmp_path):
    monkeypatch.setenv(H.ENV_WORKERS, "0")
    assert H.workers() == 0
    monkeypatch.setenv(H.ENV_WORKERS, "2")
    assert H.workers() == 2
    monkeypatch.setenv(H.ENV_WORKERS, "many")
    assert H.workers() == 0
    monkeypatch.setenv(H.ENV_WORKERS, "0")
    assert H.start(*_planned(monkeypatch, tmp_path)) == []


# -- a first fit with helpers, in fresh processes ----------------------------------------------
FIT = textwrap.dedent(
    """
    import json, os, sys, time, warnings
    import numpy as np
    from numba.core import event
    from sklearn.datasets import load_digits
    import fastnn.sklearn
    from fastnn import _compile_helper as H

    class Count(event.Listener):
        n = 0
        def on_start(self, ev):
            Count.n += 1
        def on_end(self, ev):
            pass

    event.register("numba:compile", Count())
    X, y = load_digits(return_X_y=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = fastnn.sklearn.MLPClassifier(hidden_layer_sizes=(32,), max_iter=3,
                                           random_state=0).fit(X[:300], y[:300])
    pids = H.last_helpers()
    deadline = time.time() + 60
    alive = list(pids)
    while alive and time.time() < deadline:  # stopped when the compile ended, then reaped
        time.sleep(0.05)
        alive = [p for p in alive if os.path.exists(f"/proc/{p}")]
    print(json.dumps({"helpers": len(pids), "alive": alive, "compiles": Count.n,
                      "coefs": [c.tolist() for c in clf.coefs_],
                      "proba": clf.predict_proba(X[:20]).tolist()}))
    """
)


def _fit(cache, workers):
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache), H.ENV_WORKERS: str(workers)}
    out = subprocess.run(
        [sys.executable, "-c", FIT], env=env, capture_output=True, text=True, timeout=900
    )
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="helpers need Linux's fork")
def test_a_helper_compiles_callees_and_the_fit_is_bit_identical(tmp_path):
    alone = _fit(tmp_path / "alone", 0)
    helped = _fit(tmp_path / "helped", 1)
    assert alone["helpers"] == 0
    assert helped["helpers"] == 1
    assert helped["alive"] == [], "a helper outlived the compile it helped"
    # the calling process loaded from the cache what the helper compiled
    assert helped["compiles"] < alone["compiles"], (helped["compiles"], alone["compiles"])
    assert helped["coefs"] == alone["coefs"]
    assert helped["proba"] == alone["proba"]
    # and the kernels the helper wrote load in a later process, with the same results
    again = _fit(tmp_path / "helped", 1)
    assert again["compiles"] == 0 and again["helpers"] == 0
    assert again["coefs"] == alone["coefs"]


STAND_IN = textwrap.dedent(
    """
    import json, time
    import numpy as np
    from numba.core import event
    import fastnn as fnn
    from fastnn import _fastpath
    from fastnn.kernels import epoch as E

    compiled = []  # what this process compiled itself (a load from the cache is no compile)
    class Seen(event.Listener):
        def on_start(self, ev):
            compiled.append(ev.data["dispatcher"].py_func.__qualname__)
        def on_end(self, ev):
            pass
    event.register("numba:compile", Seen())
    used = []
    real = _fastpath.FastEpochRunner._parallel_build
    def spy(self, parallel, serial, args):
        out = real(self, parallel, serial, args)
        used.append("parallel" if out[0] is E.train_batches_parallel else "serial")
        return out
    _fastpath.FastEpochRunner._parallel_build = spy
    _fastpath.chunks_for = lambda *args: 2
    fnn.set_num_threads(2)

    def fit():
        rng = np.random.default_rng(0)
        X = rng.standard_normal((512, 20)).astype(np.float32)
        y = rng.integers(0, 4, 512)
        model = fnn.Sequential(fnn.Linear(20, 32, seed=0), fnn.ReLU(), fnn.Linear(32, 4, seed=1))
        opt = fnn.SGD(model.parameters(), lr=0.05, momentum=0.9)
        model.fit(X, y, loss=fnn.SoftmaxCrossEntropy(), optimizer=opt, epochs=3, seed=0,
                  verbose=0)
        return [p.data.tolist() for p in model.parameters()]

    first = fit()
    first_used = list(used)
    deadline = time.time() + 600
    while _fastpath._BACKGROUND and time.time() < deadline:  # the helper's compile
        key, done = next(iter(_fastpath._BACKGROUND.items()))
        if done is not _fastpath._PENDING and done():
            break
        time.sleep(0.1)
    used.clear()
    second = fit()
    print(json.dumps({"first": first_used, "second": used, "same": first == second,
                      "compiled": compiled}))
    """
)


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="helpers need Linux's fork")
def test_a_cold_data_parallel_fit_runs_the_serial_build_until_a_helper_compiled_it(tmp_path):
    """Empty kernel cache: the first data-parallel fit runs the serial build of the same body
    while a helper compiles the parallel build; a fit after the helper ended loads (does not
    compile) and runs the parallel build, and both give the same parameters bit for bit."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path), H.ENV_WORKERS: "1"}
    out = subprocess.run(
        [sys.executable, "-c", STAND_IN], env=env, capture_output=True, text=True, timeout=900
    )
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["first"][0] == "serial", got
    assert got["second"] and set(got["second"]) == {"parallel"}, got
    assert got["same"]
    # the helper built the parallel build: this process loaded it from the cache
    assert "_train_batches_parallel" not in got["compiled"], got["compiled"]


def test_no_helper_without_a_writable_cache(tmp_path, monkeypatch):
    """Kernels compiled in memory (no cache folder) or into a folder this process cannot
    write: a helper's work could not reach the caller, so none is started."""
    monkeypatch.setenv(H.ENV_WORKERS, "1")
    plan = H.Plan([("m:f", ("int64",))], [1.0], [1], [])
    monkeypatch.setattr(H, "plan_for", lambda dispatcher, args: plan)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    for cache in (None, SimpleNamespace(cache_path=str(blocker))):
        dispatcher = SimpleNamespace(_cache=cache, py_func=len)
        assert not H._cache_writable(dispatcher)
        assert H.start(dispatcher, ()) == []


def test_helpers_are_not_started_inside_a_helper(monkeypatch, tmp_path):
    monkeypatch.setitem(H._state, "in_helper", True)
    monkeypatch.setenv(H.ENV_WORKERS, "2")
    assert H.start(*_planned(monkeypatch, tmp_path)) == []


def test_stop_of_ended_helpers_is_harmless():
    H.stop([2**22 + 12345])  # above Linux's largest process id: no such process


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_the_caller_does_not_wait_for_a_stuck_or_ended_helper(monkeypatch):
    """A helper that holds a callee but uses no CPU (stuck on a lock it inherited, say) or has
    ended is waited for at most STUCK_SECONDS: the caller then compiles the callee itself."""
    board = mmap.mmap(-1, 1)
    board[0] = H.HELPER
    key = (H.kernel_name(E.train_batches.jit), ("int64",))
    stuck = subprocess.Popen(["sleep", "30"])
    try:
        for pids in ([stuck.pid], [2**22 + 12345]):
            monkeypatch.setitem(H._state, "claims", ({key: 0}, board, pids))
            t0 = time.monotonic()
            H._wait_for_helper(E.train_batches.jit.py_func, (types.int64,))
            assert time.monotonic() - t0 < 5 * H.STUCK_SECONDS + 1.0
    finally:
        stuck.kill()
        stuck.wait()


def test_the_caller_waits_while_a_helper_works(monkeypatch):
    """While the helper uses CPU and has not marked the callee done, the caller waits; it
    goes on as soon as the board says done."""
    board = mmap.mmap(-1, 1)
    board[0] = H.HELPER
    key = (H.kernel_name(E.train_batches.jit), ("int64",))
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        monkeypatch.setitem(H._state, "claims", ({key: 0}, board, [busy.pid]))
        threading.Timer(3 * H.STUCK_SECONDS, lambda: board.__setitem__(0, H.DONE)).start()
        t0 = time.monotonic()
        H._wait_for_helper(E.train_batches.jit.py_func, (types.int64,))
        waited = time.monotonic() - t0
        assert 3 * H.STUCK_SECONDS - 0.05 < waited < 3 * H.STUCK_SECONDS + 2.0
    finally:
        busy.kill()
        busy.wait()


def test_no_helpers_by_default_in_mpi_ranks_and_dask_tasks(monkeypatch):
    monkeypatch.delenv(H.ENV_WORKERS, raising=False)
    monkeypatch.setattr(H, "usable_cores", lambda: 4)
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.delitem(sys.modules, "mpi4py.MPI", raising=False)
    monkeypatch.setattr(H, "worker_threads", lambda: None)
    assert H.workers() == 3
    monkeypatch.setattr(H, "worker_threads", lambda: 2)  # inside a Dask worker's task
    assert H.workers() == 0
    monkeypatch.setattr(H, "worker_threads", lambda: None)
    monkeypatch.setitem(sys.modules, "mpi4py.MPI", SimpleNamespace())
    assert H.workers() == 0


def _recorder():
    """tools/record_compile_plan.py, the developer's tool that writes the plan file."""
    path = Path(__file__).resolve().parents[1] / "tools" / "record_compile_plan.py"
    spec = importlib.util.spec_from_file_location("record_compile_plan", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_recorder_lists_callees_in_compile_order_with_own_seconds_and_depth():
    """A recorded tree (name, argument texts, seconds including callees, callees) becomes the
    plan's callee list: post-order, each once, own seconds, depth; kernels a helper cannot
    find by name (overload implementations, other packages) are left out."""
    a = "fastnn.kernels.m:"
    leaf = [a + "leaf", ["int64"], 1.0, []]
    inner = [a + "inner", ["int64"], 3.0, [leaf, [a + "f.<locals>.impl", ["int64"], 0.5, []]]]
    again, other = [a + "leaf", ["int64"], 0.2, []], ["x:y", [], 1.0, []]
    root = [a + "root", ["int64"], 10.0, [inner, again, other]]
    out = _recorder().post_order(root)
    assert out == [[a + "leaf", ["int64"], 1.0, 2], [a + "inner", ["int64"], 1.5, 1]]
    plan = H.Plan([tuple((n, tuple(t))) for n, t, _, _ in out], [1.0, 1.5], [2, 1], [])
    assert plan.first == [0, 0]
    with_root = _recorder().post_order(root, include_root=True)
    assert with_root[-1] == [a + "root", ["int64"], 5.8, 0]
