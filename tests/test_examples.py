"""The example scripts run: each in ``--quick`` mode, in a subprocess, from a foreign folder.

Every script is started with ``cwd=tmp_path`` and ``--out tmp_path``; the tests check the exit
code, the lines a reader is told to look for (and the numbers in them where the script makes a
claim, e.g. that two gradients agree), and that the plots were written as PNG files.
"""

import gzip
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run_example(name, tmp_path, *args, timeout=600, out=True):
    # One thread for numba and BLAS: on the shared 2-core machine under load (load average
    # 13), a one-epoch fit of a 256-128-10 network on 20,000 samples took 12.3 s with the
    # default 2 threads and 0.17 s with 1 (threads waiting for busy cores).  The scripts'
    # claims do not depend on the thread count; the parallel builds are tested elsewhere.
    env = dict(os.environ, MPLBACKEND="Agg", NUMBA_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name), "--quick", *(["--out", str(tmp_path)] * out), *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def number_after(pattern, text):
    """The float that follows ``pattern`` (a regex) in ``text``; fails if the line is missing."""
    match = re.search(pattern + r"\s*([-+0-9.eE]+)", text)
    assert match, f"no line matching {pattern!r} in:\n{text}"
    return float(match.group(1))


def assert_png(path):
    assert path.is_file(), f"{path.name} was not written"
    with open(path, "rb") as f:
        assert f.read(8) == PNG_MAGIC, f"{path.name} is not a PNG file"


def test_tutorial1_digits(tmp_path):
    out = run_example("tutorial1_mnist_mlp.py", tmp_path)
    assert "data: digits (8x8)" in out
    losses = [float(v) for v in re.findall(r"Epoch \d+/3: loss = ([0-9.]+)", out)]
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert number_after(r"test accuracy:", out) > 0.8
    # the two softmax + cross-entropy paths give the same gradients (float32 rounding only)
    assert number_after(r"Softmax\+CrossEntropy vs SoftmaxCrossEntropy:", out) < 1e-5
    assert_png(tmp_path / "tutorial1_loss.png")


def write_idx(path, array):
    """A gzipped IDX file: two zero bytes, type 0x08 (uint8), ndim, big-endian dims, data."""
    header = bytes([0, 0, 0x08, array.ndim]) + np.array(array.shape, ">u4").tobytes()
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_tutorial1_mnist_option(tmp_path):
    # Tiny stand-in MNIST files (random pixels): the --mnist path builds a 784-100-10 network.
    rng = np.random.default_rng(0)
    data = tmp_path / "mnist"
    data.mkdir()
    for kind, n in (("train", 200), ("t10k", 50)):
        write_idx(data / f"{kind}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        write_idx(data / f"{kind}-labels-idx1-ubyte.gz", rng.integers(0, 10, n))
    out = run_example("tutorial1_mnist_mlp.py", tmp_path, "--mnist", str(data))
    assert "data: MNIST, 200 training and 50 test samples" in out
    assert "Linear(n_in=784, n_out=100" in out
    assert number_after(r"Softmax\+CrossEntropy vs SoftmaxCrossEntropy:", out) < 1e-5


def test_tutorial2(tmp_path):
    out = run_example("tutorial2_regression_backprop.py", tmp_path)
    assert number_after(r"final test MSE:", out) < 0.05
    # float64 throughout: the identity holds to rounding, finite differences to ~1e-9
    assert number_after(r"dL/dW = a_prev\^T dL/db on one sample:", out) < 1e-12
    assert number_after(r"db = sum\(dZ\) on a batch of 32:", out) < 1e-12
    assert number_after(r"central finite differences:", out) < 1e-6
    assert_png(tmp_path / "tutorial2_regression.png")


def test_tutorial3(tmp_path):
    out = run_example("tutorial3_linear_and_product.py", tmp_path)
    assert number_after(r"max \|learned - true\| over weights and bias:", out) < 1e-5
    assert "weights recovered to 1e-5: True" in out
    linear = number_after(r"Linear\(2, 1\): final MSE", out)
    hidden = number_after(r"Sigmoid - Linear\(10, 1\): final MSE", out)
    assert hidden < linear
    assert "hidden layer beats the linear model: True" in out
    assert_png(tmp_path / "tutorial3_product.png")


def test_tutorial4(tmp_path):
    out = run_example("tutorial4_iris.py", tmp_path)
    assert "EPOCH   0: accuracy" in out
    assert number_after(r"fastnn Sequential test accuracy:", out) > 0.8
    assert number_after(r"fastnn.sklearn.MLPClassifier test accuracy:", out) > 0.8
    assert_png(tmp_path / "tutorial4_iris.png")


def test_sklearn_dropin(tmp_path):
    out = run_example("sklearn_dropin.py", tmp_path)
    assert number_after(r"sklearn.neural_network.MLPClassifier", out) > 0.8
    assert number_after(r"fastnn.sklearn.MLPClassifier", out) > 0.8
    assert "fastnn fit speed-up:" in out
    assert_png(tmp_path / "sklearn_dropin.png")


def test_kernel_experiment(tmp_path):
    out = run_example("kernel_experiment.py", tmp_path)
    assert "correctness: 24 checks passed" in out
    assert len(re.findall(r"speed-up\s+[0-9.]+x", out)) == 2  # two shapes, serial (quick)
    assert_png(tmp_path / "kernel_experiment.png")


def test_fit_memmap(tmp_path):
    data = tmp_path / "data"
    out = run_example("fit_memmap.py", tmp_path, "--data-dir", str(data))
    assert "opened as memmap of shape" in out
    assert number_after(r"validation accuracy:", out) > 0.3  # 10 classes: chance is 0.1
    assert number_after(r"peak RSS of the process \(VmHWM\):", out) > 0
    assert "anonymous memory peak" in out
    size = number_after(r"file size:", out)
    assert 0 < number_after(r"pages of the data file resident, peak", out) <= size + 1
    assert (data / "train.npy").is_file() and (data / "train_labels.npy").is_file()
    assert_png(tmp_path / "fit_memmap_memory.png")


def test_plots_go_to_the_current_folder_without_out(tmp_path):
    """Run with no --out (as a reader would), the PNG lands in the folder the script runs in."""
    run_example("tutorial3_linear_and_product.py", tmp_path, out=False)
    assert_png(tmp_path / "tutorial3_product.png")


def test_distributed_mpi(tmp_path):
    """1 process, then the script's own `mpiexec -n 2`: the same loss curve and parameters."""
    pytest.importorskip("mpi4py", reason='mpi4py not installed (pip install "fastnn[mpi]")')
    out = run_example("distributed_mpi.py", tmp_path)
    assert "2 ranks: 2 epochs" in out
    assert number_after(r"2 ranks vs 1 process \(relative\):", out) < 1e-4  # float32
    one = re.search(r"1 process: loss per epoch ([0-9., ]+);", out).group(1)
    two = re.search(r"2 ranks  : loss per epoch ([0-9., ]+);", out).group(1)
    assert one == two  # printed to 4 decimals
    assert_png(tmp_path / "distributed_mpi_loss.png")


def test_dask_search(tmp_path):
    pytest.importorskip("distributed", reason='dask not installed (pip install "fastnn[dask]")')
    out = run_example("dask_search.py", tmp_path)
    assert "cluster: 2 workers x 1 thread" in out
    assert "same scores as the search in this process: True" in out
    assert number_after(r"with accuracy", out) > 0.7
    assert_png(tmp_path / "dask_search_scores.png")
