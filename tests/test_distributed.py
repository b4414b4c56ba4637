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
import subprocess
import sys
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


def run_ranks(n, mode, out, timeout=120, check=True):
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARS}
    env.pop("NUMBA_NUM_THREADS", None)  # the ranks pick their own thread budget
    env.pop("FASTNN_NUM_THREADS", None)
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
    run_ranks(ranks, "equal", tmp_path)
    results = [np.load(tmp_path / f"rank{r}.npz") for r in range(ranks)]
    for res in results:  # 2 ranks on a 2-core machine: one thread each, no oversubscription
        assert int(res["threads"]) == D.thread_budget(ranks)
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
    proc = run_ranks(3, "bad_input", tmp_path)
    lines = sorted(line for line in proc.stdout.splitlines() if line.startswith("rank "))
    assert lines[0].startswith("rank 0: DistributedError: rank 2 of 3 failed: ValueError: X")
    assert lines[1].startswith("rank 1: DistributedError: rank 2 of 3 failed: ValueError: X")
    assert lines[2].startswith("rank 2: ValueError: X contains NaN")


def test_different_arguments_raise_on_every_rank(references, tmp_path):
    proc = run_ranks(2, "mismatch", tmp_path)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("rank ")]
    assert len(lines) == 2
    assert all("batch_size is 16 on rank 0 but 17 on rank 1" in line for line in lines)


def test_failure_mid_training_stops_every_rank(references, tmp_path):
    proc = run_ranks(3, "crash", tmp_path, check=False)
    assert proc.returncode != 0
    assert "finished" not in proc.stdout  # no rank went on to the end
    assert "rank 2 of 3 failed during distributed fit" in proc.stderr
    assert "a callback failed on this rank only" in proc.stderr


def test_callbacks_on_ranks(references, tmp_path):
    proc = run_ranks(2, "callbacks", tmp_path)
    reports = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(reports) == 2
    epochs = {r["epochs"] for r in reports}
    assert len(epochs) == 1 and 1 < epochs.pop() < 40  # EarlyStopping stopped all alike
    saved = {r["rank"]: r["saved"] for r in reports}
    assert saved[0] == reports[0]["epochs"] and saved[1] == 0
    assert not list(tmp_path.glob("ckpt-r1-*"))
    rows = (tmp_path / "log.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + reports[0]["epochs"]
    epoch_lines = [line for line in proc.stdout.splitlines() if line.startswith("epoch ")]
    assert len(epoch_lines) == reports[0]["epochs"]  # printed by rank 0 only
