"""fastnn.distributed and ``fit(distributed="mpi")`` (issue 18).

The world-of-one behaviour is tested in this process.  The MPI tests start
``mpiexec -n 2`` and ``-n 3`` (3 ranks give uneven shares of each batch) on
tests/mpi_job.py as subprocesses; they skip only where mpi4py (``fastnn[mpi]``) is not
installed.  The single-process reference fits run here first, through the fast path and
through the layer-by-layer path, which also compiles (or loads) every kernel the ranks use
into the shared on-disk cache, so that the ranks do not each compile them at once.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import fastnn as fnn
from fastnn import _fastpath
from fastnn import distributed as D

sys.path.insert(0, str(Path(__file__).resolve().parent))
import mpi_job  # noqa: E402

JOB = Path(__file__).resolve().parent / "mpi_job.py"
LAUNCHER_VARS = D.LAUNCHER_VARIABLES


# -- a world of one -------------------------------------------------------------------------------
def test_world_of_one_without_launcher(monkeypatch):
    for v in LAUNCHER_VARS:
        monkeypatch.delenv(v, raising=False)
    if D._world["comm"] is None:
        assert D.rank() == 0 and D.size() == 1 and D.is_root()
        D.barrier()
        a = np.arange(4.0)
        assert D.allreduce(a) is a and a.tolist() == [0.0, 1.0, 2.0, 3.0]
        assert D.broadcast(a) is a


def test_allreduce_checks_arguments():
    with pytest.raises(ValueError, match="op"):
        D.allreduce(np.zeros(2), op="prod")
    with pytest.raises(TypeError, match="array"):
        D.allreduce([1.0, 2.0])
    with pytest.raises(TypeError, match="array"):
        D.broadcast(np.zeros((4, 4))[:, 1])


@pytest.mark.parametrize("m", [0, 1, 2, 5, 16, 17])
@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_shares_cover_the_batch_contiguously(m, n):
    spans = [D.share(m, r, n) for r in range(n)]
    assert spans[0][0] == 0 and spans[-1][1] == m
    for (_, a1), (b0, _) in zip(spans[:-1], spans[1:], strict=True):
        assert a1 == b0
    sizes = [b - a for a, b in spans]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


def test_thread_budget():
    total = os.cpu_count()
    assert D.thread_budget(2, cores=total) == max(1, total // 2)
    assert D.thread_budget(total * 4, cores=total) == 1
    if total > 1:  # bound to fewer cores than the machine has: all of them
        assert D.thread_budget(2, cores=1) == 1


def test_fit_rejects_unknown_distributed():
    model, X, y, kwargs = mpi_job.build(mpi_job.CASES[0])
    before = model._flat.data.copy()
    with pytest.raises(ValueError, match="distributed"):
        model.fit(X, y, verbose=0, distributed="nccl", **kwargs)
    np.testing.assert_array_equal(model._flat.data, before)


def test_distributed_fit_without_launcher_is_a_plain_fit(monkeypatch):
    for v in LAUNCHER_VARS:
        monkeypatch.delenv(v, raising=False)
    if D._world["comm"] is not None:
        pytest.skip("MPI already initialised in this process")
    case = mpi_job.CASES[1]
    a, X, y, kwargs = mpi_job.build(case)
    ha = a.fit(X, y, verbose=0, **kwargs)
    b, X, y, kwargs = mpi_job.build(case)
    hb = b.fit(X, y, verbose=0, distributed="mpi", **kwargs)
    np.testing.assert_array_equal(a._flat.data, b._flat.data)
    assert ha.history["loss"] == hb.history["loss"]


def test_file_writing_callbacks_are_root_only():
    assert fnn.ModelCheckpoint("x.npz").root_only
    assert fnn.CSVLogger("x.csv").root_only
    assert not fnn.EarlyStopping().root_only


# -- MPI ------------------------------------------------------------------------------------------
def _mpiexec():
    pytest.importorskip("mpi4py", reason='mpi4py not installed (pip install "fastnn[mpi]")')
    here = Path(sys.executable).parent / "mpiexec"
    exe = str(here) if here.exists() else shutil.which("mpiexec")
    if exe is None:
        pytest.skip("mpi4py is installed but no mpiexec was found")
    return exe


def reports(out, n):
    """The outcome each rank wrote (tests/mpi_job.py's report), in rank order."""
    return [(out / f"report{r}.txt").read_text() for r in range(n)]


def run_ranks(n, mode, out, timeout=120, check=True):
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARS}
    env.pop("NUMBA_NUM_THREADS", None)  # the ranks pick their own thread budget
    env.pop("FASTNN_NUM_THREADS", None)
    env.pop("OMP_NUM_THREADS", None)  # (it caps numba's threads at import: see _threads)
    proc = subprocess.run(
        [_mpiexec(), "-n", str(n), sys.executable, str(JOB), mode, str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check:
        assert proc.returncode == 0, f"mpiexec failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def references():
    """Single-process fits of every case (the fast path, as users get it), after the same
    fits through the layer-by-layer path, which warms the kernels the ranks run."""
    _mpiexec()
    refs = {}
    saved = _fastpath.ENABLED
    try:
        _fastpath.ENABLED = False
        for case in mpi_job.CASES:
            model, X, y, kwargs = mpi_job.build(case)
            model.fit(X, y, verbose=0, **kwargs)
            refs[case[0] + ":layers"] = model._flat.data.copy()
    finally:
        _fastpath.ENABLED = saved
    for case in mpi_job.CASES:
        model, X, y, kwargs = mpi_job.build(case)
        history = model.fit(X, y, verbose=0, **kwargs)
        refs[case[0]] = model._flat.data.copy()
        refs[case[0] + ":history"] = mpi_job.history_arrays(history)
    return refs


@pytest.mark.parametrize("ranks", [2, 3])
def test_distributed_fit_equals_single_process(ranks, references, tmp_path):
    memmap_case = next(c for c in mpi_job.CASES if c[0] == "memmap")
    np.save(tmp_path / "memmap.npy", mpi_job.build(memmap_case)[1])
    run_ranks(ranks, "equal", tmp_path)
    results = [np.load(tmp_path / f"rank{r}.npz") for r in range(ranks)]
    for res in results:  # 2 ranks on a 2-core machine: one thread each, no oversubscription
        assert int(res["threads"]) == D.thread_budget(ranks)
        # the compiled runner for every case without sample weights
        assert int(res["fast_runners"]) == len(mpi_job.FAST_CASES)
    for case in mpi_job.CASES:
        name, dtype = case[0], np.dtype(case[1])
        rtol = 1e-9 if dtype == np.float64 else 1e-4
        atol = 1e-12 if dtype == np.float64 else 1e-6
        expected = references[name]
        for r, res in enumerate(results):
            # every rank started from its own seed: rank 0's parameters were broadcast
            np.testing.assert_allclose(
                res[name], expected, rtol=rtol, atol=atol, err_msg=f"{name}, rank {r}"
            )
            # bit-identical on every rank, History included (throughput too)
            np.testing.assert_array_equal(res[name], results[0][name], err_msg=name)
            np.testing.assert_array_equal(res[f"{name}:sps"], results[0][f"{name}:sps"])
            for key, values in references[name + ":history"].items():
                got = res[f"{name}:{key}"]
                np.testing.assert_array_equal(got, results[0][f"{name}:{key}"])
                np.testing.assert_allclose(got, values, rtol=rtol, atol=atol, err_msg=key)


def test_bad_input_on_one_rank_raises_on_every_rank(references, tmp_path):
    run_ranks(3, "bad_input", tmp_path)
    lines = reports(tmp_path, 3)
    assert lines[0].startswith("rank 0: DistributedError: rank 2 of 3 failed: ValueError: X")
    assert lines[1].startswith("rank 1: DistributedError: rank 2 of 3 failed: ValueError: X")
    assert lines[2].startswith("rank 2: ValueError: X contains NaN")


def test_different_arguments_raise_on_every_rank(references, tmp_path):
    run_ranks(2, "mismatch", tmp_path)
    lines = reports(tmp_path, 2)
    assert all("batch_size is 16 on rank 0 but 17 on rank 1" in line for line in lines)


def test_failure_mid_training_stops_every_rank(references, tmp_path):
    proc = run_ranks(3, "crash", tmp_path, check=False)
    assert proc.returncode != 0
    assert not list(tmp_path.glob("report*"))  # no rank went on to the end
    assert "rank 2 of 3 failed during distributed fit" in proc.stderr
    assert "a callback failed on this rank only" in proc.stderr


def test_killed_rank_stops_every_rank(references, tmp_path):
    proc = run_ranks(3, "killed", tmp_path, check=False)
    assert proc.returncode != 0
    assert not list(tmp_path.glob("report*"))


def test_ctrl_c_stops_every_rank_at_the_same_epoch(references, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARS}
    proc = subprocess.Popen(
        [_mpiexec(), "-n", "2", sys.executable, str(JOB), "interrupt", str(tmp_path)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while len(list(tmp_path.glob("started*"))) < 2:
            assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)  # mpiexec forwards it to every rank
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stdout + stderr
    ranks = [json.loads(text) for text in reports(tmp_path, 2)]
    assert all(r["interrupted"] for r in ranks)
    assert ranks[0]["epochs"] == ranks[1]["epochs"] >= 2
    assert stderr.count("training interrupted (Ctrl-C)") == 2


def test_callbacks_on_ranks(references, tmp_path):
    proc = run_ranks(2, "callbacks", tmp_path)
    ranks = [json.loads(text) for text in reports(tmp_path, 2)]
    epochs = {r["epochs"] for r in ranks}
    assert len(epochs) == 1 and 1 < epochs.pop() < 40  # EarlyStopping stopped all alike
    assert ranks[0]["saved"] == ranks[0]["epochs"] and ranks[1]["saved"] == 0
    assert not list(tmp_path.glob("ckpt-r1-*"))
    rows = (tmp_path / "log.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + ranks[0]["epochs"]
    # printed by rank 0 only (the count of "epoch " survives any interleaving of the lines)
    assert proc.stdout.count("epoch ") == ranks[0]["epochs"]


def test_batch_callback_stop_on_one_rank_stops_every_rank(references, tmp_path):
    """stop_training set by a batch callback on one rank is agreed on like Ctrl-C: every rank
    runs the same batches and stops after the same one (acting on its own flag, the other
    rank waited in the next collective for ever)."""
    run_ranks(2, "batch_stop", tmp_path, timeout=180)
    ranks = [json.loads(text) for text in reports(tmp_path, 2)]
    assert ranks[0] == ranks[1]
    assert ranks[0]["epochs"] == 3  # stopped in the third epoch (epoch 2), which is recorded


# -- the compiled path split at the gradient/update boundary (no MPI needed) --------------------
class _WorldOfOne:
    """The part of fastnn.distributed.World the runners use, for one rank."""

    rank, size, allreduce_seconds = 0, 1, 0.0

    def timed_sum(self, array):
        return array


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("opt_name", ["sgd", "momentum", "adamw"])
@pytest.mark.parametrize(
    "chunks, layout", [(1, "rows"), (1, "features"), (2, "rows"), (3, "features"), (2, "units")]
)
def test_gradient_only_kernel_then_optimizer_step(dtype, opt_name, chunks, layout, monkeypatch):
    """FastDistributedRunner (the kernel with H_GRAD_ONLY, then the optimizer's step) trains
    as the fast path does, in every build: serial, rows split, feature-major, units split."""
    monkeypatch.setattr(_fastpath, "ENABLED", True)
    monkeypatch.setattr(_fastpath, "chunks_for", lambda *args: chunks)
    monkeypatch.setattr(_fastpath, "feature_major_for", lambda *args: layout == "features")
    monkeypatch.setattr(_fastpath, "units_split_for", lambda *args: layout == "units")
    rng = np.random.default_rng(3)
    X = rng.standard_normal((53, 7)).astype(dtype)
    y = rng.integers(0, 3, 53)
    order = rng.permutation(53).astype(np.int64)
    results = []
    for world in (None, _WorldOfOne()):
        model = fnn.Sequential(
            fnn.Linear(7, 9, dtype=dtype, seed=0),
            fnn.Tanh(),
            fnn.Linear(9, 6, bias=False, dtype=dtype, seed=1),
            fnn.ReLU(),
            fnn.Linear(6, 3, dtype=dtype, seed=2),
        )
        p = model.parameters()
        if opt_name == "sgd":
            opt = fnn.SGD(p, lr=0.05, weight_decay=1e-3)
        elif opt_name == "momentum":
            opt = fnn.SGD(p, lr=0.05, momentum=0.9, nesterov=True)
        else:
            opt = fnn.AdamW(p, lr=0.01)
        runner = _fastpath.fast_runner(
            model, X, y, y, fnn.SoftmaxCrossEntropy(), opt, 16, None, world
        )
        expected = _fastpath.FastDistributedRunner if world else _fastpath.FastEpochRunner
        assert type(runner) is expected
        s, c, finite = runner.run(order, 0, runner.n_batches)
        assert finite
        results.append((model._flat.data.copy(), s, c, opt.step_count))
    (p1, s1, c1, n1), (p2, s2, c2, n2) = results
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(p2, p1, rtol=rtol, atol=rtol)
    assert s2 == pytest.approx(s1, rel=rtol) and c1 == c2 and n1 == n2 == 4
