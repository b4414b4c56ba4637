"""Calls from several Python threads at once (the kernels release the GIL), and thread control."""

import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
import pytest
from conftest import kernel
from fastnn.kernels import BLAS_SOURCE
from running import busy_threads
from threadpoolctl import threadpool_info

import fastnn as fnn
from fastnn import _fastpath, _threads
from fastnn.sklearn import MLPClassifier, _base  # (loads SciPy's OpenBLAS next to NumPy's)


def _model(dtype=np.float32):
    return fnn.Sequential(
        fnn.Linear(30, 200, seed=0, dtype=dtype),
        fnn.ReLU(),
        fnn.Linear(200, 64, seed=1, dtype=dtype),
        fnn.Tanh(),
        fnn.Linear(64, 5, seed=2, dtype=dtype),
    )


@pytest.fixture
def restore_threads():
    before = numba.get_num_threads()
    yield
    fnn.set_num_threads(before)


def _model_with_layers(dtype=np.float32):
    """Stand-alone (unfused) layers: two activations in a row and a Softmax."""
    return fnn.Sequential(
        fnn.Linear(30, 200, seed=0, dtype=dtype),
        fnn.Tanh(),
        fnn.ReLU(),
        fnn.Linear(200, 5, seed=2, dtype=dtype),
        fnn.Softmax(),
    )


@pytest.mark.parametrize("make", [_model, _model_with_layers], ids=["fused", "layers"])
def test_predict_from_four_threads(make):
    model = make()
    rng = np.random.default_rng(0)
    # different sizes: small ones take the serial kernels and compiled loops, big ones the
    # parallel kernels and BLAS
    inputs = [rng.standard_normal((n, 30)).astype(np.float32) for n in (1, 7, 300, 2000) * 3]
    # one call at a time in a pool thread: numba's thread setting is per thread, and a new
    # thread starts from numba's default, which decides whether predict splits its rows (the
    # split and the layer-by-layer path differ by a few ulps)
    with ThreadPoolExecutor(1) as one:
        expected = list(one.map(model.predict, inputs))
    with ThreadPoolExecutor(4) as pool:
        for _ in range(3):
            results = list(pool.map(model.predict, inputs))
            for got, want in zip(results, expected, strict=True):
                np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("build", ["serial", "parallel"])
def test_kernels_from_four_threads(build):
    rng = np.random.default_rng(1)
    Zs = [rng.standard_normal((500, 40)) for _ in range(8)]
    expected = []
    for Z in Zs:
        P = np.empty_like(Z)
        kernel("softmax_forward", build)(Z, P)
        expected.append(P)

    def work(Z):
        P = np.empty_like(Z)
        for _ in range(20):
            kernel("softmax_forward", build)(Z, P)
        return P

    with ThreadPoolExecutor(4) as pool:
        for got, want in zip(pool.map(work, Zs), expected, strict=True):
            np.testing.assert_array_equal(got, want)


def _blas_limits():
    return {(i["internal_api"], i["filepath"]): i["num_threads"] for i in threadpool_info()}


def test_set_num_threads_sets_numba_and_blas(restore_threads):
    fnn.set_num_threads(1)
    assert numba.get_num_threads() == 1
    assert fnn.get_num_threads() == 1
    blas = [i for i in threadpool_info() if i["user_api"] == "blas"]
    assert blas, "no BLAS library visible to threadpoolctl"
    assert all(i["num_threads"] == 1 for i in blas), blas
    n = min(2, numba.config.NUMBA_NUM_THREADS)
    fnn.set_num_threads(n)
    assert numba.get_num_threads() == n
    assert all(i["num_threads"] == n for i in threadpool_info() if i["user_api"] == "blas")


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "2", None])
def test_set_num_threads_rejects_bad_values(bad, restore_threads):
    before = (numba.get_num_threads(), _blas_limits())
    with pytest.raises((TypeError, ValueError), match="n must be a positive integer"):
        fnn.set_num_threads(bad)
    assert (numba.get_num_threads(), _blas_limits()) == before


def _train(threads):
    fnn.set_num_threads(threads)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((600, 30))
    y = (X[:, 0] + X[:, 1] > 0).astype(int) + (X[:, 2] > 1)
    model = fnn.Sequential(
        fnn.Linear(30, 300, seed=0, dtype=np.float64),
        fnn.ReLU(),
        fnn.Linear(300, 3, seed=1, dtype=np.float64),
    )
    opt = fnn.SGD(model.parameters(), lr=0.05, momentum=0.9)
    hist = model.fit(
        X,
        y,
        loss=fnn.SoftmaxCrossEntropy(),
        optimizer=opt,
        epochs=2,
        batch_size=200,
        seed=0,
        verbose=0,
    )
    return model._flat.data.copy(), hist.history["loss"]


def test_one_thread_equals_two_threads(restore_threads):
    """Batches of 200 x 300 hidden units take the parallel kernels and BLAS with 2 threads.
    Only the order of summation may differ, so float64 results agree to ~1e-12."""
    p1, l1 = _train(1)
    p2, l2 = _train(2)
    np.testing.assert_allclose(p2, p1, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(l2, l1, rtol=1e-9)


@pytest.mark.parametrize("value,want", [("1", "1 1"), ("2", "2 2"), ("", None)])
def test_fastnn_num_threads_environment_variable(value, want):
    """FASTNN_NUM_THREADS=n at import sets numba's and BLAS's threads, like set_num_threads(n)."""
    import os
    import subprocess
    import sys

    code = (
        "import fastnn, numba\n"
        "from threadpoolctl import threadpool_info\n"
        "blas = {i['num_threads'] for i in threadpool_info() if i['user_api'] == 'blas'}\n"
        "print(numba.get_num_threads(), max(blas))\n"
    )
    env = dict(os.environ, FASTNN_NUM_THREADS=value, NUMBA_NUM_THREADS="2")
    env.pop("OMP_NUM_THREADS", None)
    env.pop("OPENBLAS_NUM_THREADS", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    if want is not None:
        assert out.stdout.split() == want.split()
    bad = subprocess.run(
        [sys.executable, "-c", "import fastnn"],
        env=dict(os.environ, FASTNN_NUM_THREADS="two"),
        capture_output=True,
        text=True,
    )
    assert bad.returncode != 0 and "FASTNN_NUM_THREADS must be a positive integer" in bad.stderr


def test_fastnn_leaves_the_process_environment_alone():
    """Starting numba's pool, a parallel fit and a predict write nothing to ``os.environ``:
    GNU OpenMP reads its spin from there when it loads, and every library that loads it later
    (torch after fastnn) shares numba's copy, so a value set even for a moment would be theirs
    too (fastnn once set GOMP_SPINCOUNT=1000 while numba loaded libgomp: torch's epochs then
    took up to 1.8x longer)."""
    code = (
        "import os\n"
        "import numba, numpy, scipy, sklearn, threadpoolctl  # (scikit-learn sets a variable)\n"
        "writes = []\n"
        "class Recording(type(os.environ)):\n"
        "    def __setitem__(self, key, value):\n"
        "        writes.append(('set', key, value)); super().__setitem__(key, value)\n"
        "    def __delitem__(self, key):\n"
        "        writes.append(('del', key)); super().__delitem__(key)\n"
        "os.environ.__class__ = Recording\n"
        "before = dict(os.environ)\n"
        "import numpy as np, fastnn as fnn\n"
        "from fastnn import _fastpath\n"
        "_fastpath.STAND_IN = False\n"
        "fnn.set_num_threads(2); fnn.get_num_threads()\n"
        "rng = np.random.default_rng(0)\n"
        "X = rng.standard_normal((2048, 784)).astype(np.float32)\n"
        "y = rng.integers(0, 10, 2048)\n"
        "L = fnn.Linear\n"
        "m = fnn.Sequential(L(784, 100, seed=0), fnn.ReLU(), L(100, 10, seed=1))\n"
        "m.fit(X, y, loss=fnn.SoftmaxCrossEntropy(), optimizer=fnn.SGD(m.parameters(), lr=0.01),\n"
        "      epochs=1, batch_size=64, verbose=0)\n"
        "m.predict(X)\n"
        "import numba\n"
        "print(numba.threading_layer(), writes, dict(os.environ) == before)\n"
    )
    env = dict(os.environ, NUMBA_NUM_THREADS="2")
    for name in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY", "FASTNN_NUM_THREADS", "OMP_NUM_THREADS"):
        env.pop(name, None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    layer, rest = out.stdout.split(" ", 1)
    assert layer in {"omp", "tbb", "workqueue"}  # the fit did start numba's pool
    assert rest.split() == ["[]", "True"], out.stdout


def test_concurrent_holds_restore_the_users_blas_threads(restore_threads):
    """Many Python threads hold and release BLAS at one thread, interleaved at random: after
    the last release every library has the count it had before (issue 22, item 4)."""
    fnn.set_num_threads(2)
    before = _blas_limits()
    assert 2 in before.values()
    rng = np.random.default_rng(0)
    delays = rng.uniform(0, 2e-3, size=(8, 20))

    def worker(i):
        for d in delays[i]:
            _threads.hold_blas_threads(1)
            time.sleep(d)
            _threads.release_blas_threads()

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(worker, range(8)))
    assert _blas_limits() == before


def test_holds_that_spare_one_library_nest_with_holds_of_all(restore_threads):
    """A hold that leaves one library alone (the drop-ins' L-BFGS spares the kernels' BLAS)
    and holds of every library, from many Python threads at random: the spared library is
    never set by the first kind, and every library ends at the user's count."""
    fnn.set_num_threads(2)
    before = _blas_limits()
    paths = [path for (_, path), n in before.items() if path and n == 2]
    assert BLAS_SOURCE in paths and len(paths) >= 2, before
    spared_seen = []
    rng = np.random.default_rng(3)
    plan = rng.integers(0, 2, size=(8, 20))

    def worker(i):
        for spare in plan[i]:
            but = BLAS_SOURCE if spare else None
            _threads.hold_blas_threads(1, but=but)
            if spare:
                spared_seen.append(
                    {i["filepath"]: i["num_threads"] for i in threadpool_info()}[BLAS_SOURCE]
                )
            time.sleep(1e-4)
            _threads.release_blas_threads(but=but)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(worker, range(8)))
    assert _blas_limits() == before
    assert spared_seen  # (1 when a hold of all ran meanwhile, else the user's 2)
    assert set(spared_seen) <= {1, 2}


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_lbfgs_holds_scipys_blas_at_one_thread_and_restores_it(monkeypatch, restore_threads):
    """The drop-ins' L-BFGS runs scipy.optimize with SciPy's own OpenBLAS at one thread (its
    idle threads spun against NumPy's, which the loss and gradient use: 7x slower with two
    threads) and the kernels' BLAS at the user's count; both are the user's again after the
    fit, also when it raises."""
    fnn.set_num_threads(2)
    before = _blas_limits()
    seen = []
    real = _base.scipy.optimize.minimize

    def spy(*args, **kwargs):
        seen.append({i["filepath"]: i["num_threads"] for i in threadpool_info()})
        if kwargs["options"]["maxiter"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(_base.scipy.optimize, "minimize", spy)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 100))  # (products above SERIAL_BLAS_WORK: BLAS as set)
    y = rng.integers(0, 3, 300)
    MLPClassifier(solver="lbfgs", hidden_layer_sizes=(200,), max_iter=5).fit(X, y)
    during = seen[0]
    assert during[BLAS_SOURCE] == 2
    others = [path for path in during if path != BLAS_SOURCE and "openblas" in path]
    assert others and all(during[path] == 1 for path in others)
    assert _blas_limits() == before
    with pytest.raises(KeyboardInterrupt):
        MLPClassifier(solver="lbfgs", hidden_layer_sizes=(200,), max_iter=3).fit(X, y)
    assert _blas_limits() == before


def test_two_fits_in_two_threads_restore_the_users_blas_threads(monkeypatch, restore_threads):
    """Two fits on the data-parallel build (which sets BLAS to one thread around each chunk)
    from two Python threads, ten times: BLAS keeps the user's count afterwards."""
    monkeypatch.setattr(_fastpath, "chunks_for", lambda *args: 2)
    fnn.set_num_threads(2)
    before = _blas_limits()
    rng = np.random.default_rng(1)
    X = rng.standard_normal((512, 20)).astype(np.float32)
    y = rng.integers(0, 3, 512)

    def fit(seed):
        model = fnn.Sequential(fnn.Linear(20, 32, seed=seed), fnn.ReLU(), fnn.Linear(32, 3))
        opt = fnn.SGD(model.parameters(), lr=0.05)
        model.fit(X, y, loss=fnn.SoftmaxCrossEntropy(), optimizer=opt, epochs=3, verbose=0)
        return model

    for _ in range(10):
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(fit, (0, 1)))
        after = _blas_limits()  # (libraries loaded meanwhile, like SciPy's, are not compared)
        assert {lib: after[lib] for lib in before} == before


def test_busy_threads_sees_a_spinning_thread():
    """A Python thread spinning in a loop is seen as running; once it stops, it is not."""
    if not os.path.isdir("/proc/self/task"):
        pytest.skip("needs Linux's /proc to see other threads' states")
    stop = threading.Event()

    def spin():
        while not stop.is_set():
            pass

    quiet = min(busy_threads() for _ in range(20))
    worker = threading.Thread(target=spin)
    worker.start()
    try:
        time.sleep(0.05)
        # the GIL lets the spinner run only part of the time: look a few times
        seen = max(busy_threads() for _ in range(200))
    finally:
        stop.set()
        worker.join()
    assert seen >= quiet + 1


@pytest.mark.parametrize(
    "env,want",
    [
        ({"OMP_NUM_THREADS": "1"}, "1 1"),  # numba follows OMP, OpenBLAS read it itself
        ({"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "2"}, "1 2"),
        ({"OMP_NUM_THREADS": "1", "FASTNN_NUM_THREADS": "2"}, "2 2"),  # fastnn's wins
        ({"OPENBLAS_NUM_THREADS": "1"}, "2 1"),  # BLAS only
        ({"OMP_NUM_THREADS": "junk"}, "2 2"),
    ],
)
def test_thread_environment_variables_precedence(env, want):
    """FASTNN_NUM_THREADS > OMP_NUM_THREADS for fastnn's kernels; OpenBLAS's own variables for
    BLAS unless FASTNN_NUM_THREADS sets it (fastnn._threads._threads_from_env)."""
    code = (
        "import fastnn, numba\n"
        "from threadpoolctl import threadpool_info\n"
        "blas = {i['num_threads'] for i in threadpool_info() if i['user_api'] == 'blas'}\n"
        "print(numba.get_num_threads(), max(blas))\n"
    )
    full = {
        k: v
        for k, v in os.environ.items()
        if k not in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "FASTNN_NUM_THREADS")
    }
    full.update(env, NUMBA_NUM_THREADS="2")
    out = subprocess.run([sys.executable, "-c", code], env=full, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == want.split()


def test_dropin_thread_limit_nests_with_other_calls_holds(restore_threads):
    """The drop-in's one-BLAS-thread setting for small products and a data-parallel fit's
    hold, interleaved as two Python threads can interleave them (the drop-in's fit starts,
    the other fit's chunk starts, the drop-in's fit ends, the chunk ends): BLAS ends at the
    user's count.  (With threadpoolctl's own save-and-restore for the drop-in, the chunk
    restored the 1 it had found.)"""
    fnn.set_num_threads(2)
    before = _blas_limits()
    clf = MLPClassifier(hidden_layer_sizes=(64,))
    small = clf._threads(200, [64, 64, 3])  # 200 x 64 x 64 multiply-adds: one BLAS thread
    small.__enter__()
    assert {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"} == {1}
    _threads.hold_blas_threads(1)
    small.__exit__(None, None, None)
    _threads.release_blas_threads()
    assert _blas_limits() == before


# -- fastnn's thread count in threads that a pool started ----------------------------------------
# numba's setting is per thread: a thread a pool starts begins at numba's default, whatever
# set_num_threads did in the thread that called it.  fastnn's calls use fastnn's count there.

needs_two = pytest.mark.skipif(
    numba.config.NUMBA_NUM_THREADS < 2, reason="numba's pool has one thread: nothing to lower"
)


def _in_new_thread(fn):
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(fn).result()


class _SeeThreads:
    """Stands in for a model's FastForward: records numba's count for the calling thread when
    predict asks it for its chunks, then lets predict go layer by layer."""

    def __init__(self, seen):
        self.seen = seen

    def chunks(self, rows):
        self.seen.append(numba.get_num_threads())
        return 1


class _SeeThreadsInFit(fnn.Callback):
    def __init__(self, seen):
        self.seen = seen

    def on_epoch_end(self, epoch, logs=None):
        self.seen.append(numba.get_num_threads())


@needs_two
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_set_num_threads_holds_in_a_pools_thread(monkeypatch, restore_threads):
    """set_num_threads(1) in the main thread: fit, predict and the drop-in's fit and predict
    run on one thread from a pool's thread too, and leave that thread's numba setting as they
    found it."""
    rng = np.random.default_rng(3)
    X = rng.standard_normal((256, 30)).astype(np.float32)
    y = rng.integers(0, 5, 256)
    model = _model()
    clf = MLPClassifier(hidden_layer_sizes=(16,), max_iter=3, random_state=0)
    fnn.set_num_threads(1)
    seen = []
    monkeypatch.setattr(model, "_fast_forward", lambda: _SeeThreads(seen))

    def work():
        before = numba.get_num_threads()
        calls = [fnn.get_num_threads()]
        model.fit(
            X, y, loss=fnn.SoftmaxCrossEntropy(), optimizer=fnn.SGD(model.parameters(), lr=0.01),
            epochs=1, verbose=0, callbacks=[_SeeThreadsInFit(seen)],
        )  # fmt: skip
        model.predict(X)
        clf.fit(X, y)
        monkeypatch.setattr(clf, "_fast_forward", lambda *args: _SeeThreads(seen))
        clf.predict(X)
        return before, calls, numba.get_num_threads()

    before, calls, after = _in_new_thread(work)
    assert before == numba.config.NUMBA_NUM_THREADS  # the pool's thread starts at the default
    assert calls == [1]
    assert seen == [1, 1, 1]  # fit's callback, predict, the drop-in's predict
    assert after == before  # the thread's own setting is restored


@needs_two
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_dropin_n_threads_wins_over_set_num_threads_in_a_pools_thread(monkeypatch, restore_threads):
    rng = np.random.default_rng(4)
    X = rng.standard_normal((64, 30))
    clf = MLPClassifier(hidden_layer_sizes=(16,), max_iter=2, random_state=0, n_threads=2)
    clf.fit(X, rng.integers(0, 3, 64))
    fnn.set_num_threads(1)
    seen = []
    monkeypatch.setattr(clf, "_fast_forward", lambda *args: _SeeThreads(seen))
    _in_new_thread(lambda: clf.predict(X))
    assert seen == [2]


@needs_two
def test_pick_runs_parallel_builds_on_fastnns_count_in_a_pools_thread(restore_threads):
    """The layer API's kernels (``pick``) outside a fit: in a thread whose numba setting is not
    fastnn's, the parallel build runs on fastnn's count, and at one thread the serial build."""
    seen = []

    def serial(x):
        return "serial"

    def parallel(x):
        seen.append(numba.get_num_threads())
        return "parallel"

    work = _threads.PARALLEL_MIN_WORK

    def at(n):
        numba.set_num_threads(n)  # the thread's own setting, other than fastnn's
        result = _threads.pick(serial, parallel, work)(0)
        return result, numba.get_num_threads()

    fnn.set_num_threads(2)
    assert _in_new_thread(lambda: at(1)) == ("parallel", 1)  # restored after the call
    assert seen == [2]
    fnn.set_num_threads(1)
    assert _in_new_thread(lambda: at(2)) == ("serial", 2)
    assert seen == [2]


@needs_two
def test_own_threads_nests_and_restores_on_an_exception(restore_threads):
    fnn.set_num_threads(1)

    def work():
        inner = []
        with pytest.raises(KeyError):
            with _threads.own_threads():
                inner.append(numba.get_num_threads())
                with _threads.own_threads(2):  # a drop-in's n_threads inside
                    inner.append(numba.get_num_threads())
                    with _threads.own_threads():  # a nested call keeps it
                        inner.append(numba.get_num_threads())
                inner.append(numba.get_num_threads())
                raise KeyError("x")
        return inner, numba.get_num_threads()

    assert _in_new_thread(work) == ([1, 2, 2, 1], numba.config.NUMBA_NUM_THREADS)


def test_omp_num_threads_caps_a_pools_thread():
    """OMP_NUM_THREADS=1 caps fastnn's kernels in every thread, as it caps torch's: a pool's
    thread (numba's default there) fits on one thread, and keeps its own setting after."""
    code = (
        "from concurrent.futures import ThreadPoolExecutor\n"
        "import numba, numpy as np, fastnn as fnn\n"
        "seen = []\n"
        "class See(fnn.Callback):\n"
        "    def on_epoch_end(self, epoch, logs=None): seen.append(numba.get_num_threads())\n"
        "def work():\n"
        "    m = fnn.Sequential(fnn.Linear(4, 8, seed=0), fnn.ReLU(), fnn.Linear(8, 3, seed=1))\n"
        "    X = np.ones((32, 4), np.float32); y = np.zeros(32, np.int64)\n"
        "    opt = fnn.SGD(m.parameters(), lr=0.1)\n"
        "    loss = fnn.SoftmaxCrossEntropy()\n"
        "    m.fit(X, y, loss=loss, optimizer=opt, verbose=0, callbacks=[See()])\n"
        "    return numba.get_num_threads(), fnn.get_num_threads()\n"
        "with ThreadPoolExecutor(1) as pool:\n"
        "    print(*pool.submit(work).result(), *seen)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("FASTNN_NUM_THREADS",)}
    env.update(OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="2")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["2", "1", "1"]  # thread's own, fastnn's, seen in fit
