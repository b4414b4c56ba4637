"""Smoke test of ``python -m fastnn bench``: it runs on tiny shapes and prints its tables.

Speed is not asserted here (the bench itself is the measurement); this checks that every
contender runs, the table has a row per contender and shape, and bad options are refused.
"""

import re

import numpy as np
import pytest

from fastnn.__main__ import main
from fastnn.bench import NumpyMLP, default_samples, make_data, parse_shape, step_flops


def test_bench_prints_tables(capsys):
    rc = main(
        ["bench", "--shapes", "6-5-3@8", "5-4@7", "--samples", "30", "--repeats", "1",
         "--pause", "0", "--predict-rows", "50", "--no-startup",
         "--peers", "floor", "fastnn", "numpy", "sklearn"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0
    for name in ("floor", "fastnn", "numpy", "sklearn"):  # one timing line per shape
        assert len(re.findall(rf"^  {name} +[0-9.]+ (us|ms|s )", out, re.MULTILINE)) == 2, name
    assert "6-5-3@8: 30 samples (4 batches)" in out
    assert "summary (relu):" in out and "vs numpy" in out and "vs sklearn" in out
    assert "predict (relu):" in out and "6-5-3" in out


@pytest.mark.parametrize("activation", ["sigmoid", "tanh"])
def test_bench_activation_option(capsys, activation):
    rc = main(
        ["bench", "--shapes", "6-5-3@8", "--samples", "16", "--repeats", "1", "--pause", "0",
         "--predict-rows", "20", "--no-startup", "--activation", activation,
         "--peers", "floor", "fastnn", "numpy", "sklearn"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0
    assert f"6-5-3@8: 16 samples (2 batches), {activation}" in out
    assert f"summary ({activation}):" in out and f"predict ({activation}):" in out


def test_bench_rejects_bad_options(capsys):
    assert main(["bench", "--shapes", "784-x-10"]) == 2
    assert main(["bench", "--shapes", "784-10", "--repeats", "0"]) == 2
    assert "shape must look like" in capsys.readouterr().err


def test_shape_parsing_and_sizes():
    assert parse_shape("784-100-10@64", 32) == ((784, 100, 10), 64)
    assert parse_shape("4-6-3", 16) == ((4, 6, 3), 16)
    # forward and weight gradient of both layers, input gradient of the second only
    assert step_flops((784, 100, 10), 64) == 2 * 64 * (2 * (78400 + 1000) + 1000)
    n = default_samples((784, 100, 10), 64)
    assert n % 64 == 0 and n >= 6 * 64


def test_numpy_reference_learns():
    """The NumPy contender is a real trainer: its loss falls on a learnable problem."""
    X, _ = make_data((6, 16, 3), 600, np.float32, seed=1)
    y = (X[:, 0] > 0).astype(np.int64) + (X[:, 1] > 0)
    net = NumpyMLP((6, 16, 3), np.float32, lr=0.2)
    first = net.epoch(X, y, 20)
    for _ in range(10):
        last = net.epoch(X, y, 20)
    assert last < 0.7 * first
    assert net.W[0].dtype == np.float32


@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh"])
def test_numpy_reference_step_matches_fastnn(activation):
    """The NumPy contender trains the same network as fastnn: one SGD step from the same
    weights gives the same weights, for every activation the bench offers (a wrong derivative
    in either would show here)."""
    import fastnn as fnn
    from fastnn.bench import fastnn_mlp

    sizes = (7, 9, 8, 4)
    X, y = make_data(sizes, 12, np.float64, seed=3)
    net = NumpyMLP(sizes, np.float64, lr=0.5, activation=activation)
    model = fastnn_mlp(sizes, np.float64, activation)
    linears = [layer for layer in model.layers if isinstance(layer, fnn.Linear)]
    for lin, W in zip(linears, net.W, strict=True):
        lin.weight.data[...] = W
    model.fit(X, y, loss=fnn.SoftmaxCrossEntropy(), optimizer=fnn.SGD(model.parameters(), lr=0.5),
              epochs=1, batch_size=12, shuffle=False, verbose=0)  # fmt: skip
    net.step(X, y, net._buffers_for(12))
    for lin, W, b in zip(linears, net.W, net.b, strict=True):
        np.testing.assert_allclose(lin.weight.data, W, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(lin.bias.data, b, rtol=1e-12, atol=1e-12)
    assert not np.allclose(net.W[0], NumpyMLP(sizes, np.float64).W[0])  # the step moved it


def test_numpy_reference_rejects_unknown_activation():
    with pytest.raises(ValueError, match="activation must be one of"):
        NumpyMLP((3, 2), np.float32, activation="gelu")


@pytest.mark.parametrize("bad", ["5", "5-0-3", "5-3@0", "5-1"])
def test_parse_shape_rejects(bad):
    import argparse

    with pytest.raises(argparse.ArgumentTypeError):
        parse_shape(bad, 8)


def test_bench_distributed_in_one_process(capsys):
    """--distributed without mpiexec: one process, its step time, and the N-machine model."""
    assert main(["bench", "--distributed", "--shapes", "20-16-4@32", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"20-16-4@32: 1 rank x \d+ threads?, 512 samples \(16 steps\)", out)
    assert "N-machine model (ring allreduce" in out
    params = (20 * 16 + 16 + 16 * 4 + 4) * 4 / 1e6
    assert f"{params:.2f} MB of parameters" in out
    for machines in (2, 4, 8, 16):
        moved = 2 * (machines - 1) / machines * params
        assert f"N={machines:<2} moves {moved:6.2f} MB per step per machine" in out


def test_ring_allreduce_model():
    from fastnn.bench import model_rows, ring_allreduce_seconds

    # 8 machines, 100 MB at 10 Gbit/s (1.25 GB/s): 2 * 7/8 * 100 MB = 175 MB -> 0.14 s, plus
    # 14 messages of latency
    assert ring_allreduce_seconds(100e6, 8, 10, latency=0.0) == pytest.approx(0.14)
    assert ring_allreduce_seconds(100e6, 8, 10, latency=1e-3) == pytest.approx(0.154)
    assert ring_allreduce_seconds(100e6, 1, 10) == 0.0
    # 80% efficiency: compute >= 4 x allreduce; at 1 ms per row and 0.14 s + 14 x 30 us of
    # latency (the model's default): 4 x 140.42 ms / 1 ms = 561.7, so 562 rows per machine
    assert model_rows(1e-3, 100e6, 8, 10, efficiency=0.8) == 562
