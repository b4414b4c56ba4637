"""Smoke test of ``python -m fastnn bench``: it runs on tiny shapes and prints its tables.

Speed is not asserted here (the bench itself is the measurement); this checks that every
contender runs, the table has a row per contender and shape, and bad options are refused.
"""

import re

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
    assert "summary:" in out and "vs numpy" in out and "vs sklearn" in out
    assert "predict:" in out and "6-5-3" in out


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
    import numpy as np

    X, _ = make_data((6, 16, 3), 600, np.float32, seed=1)
    y = (X[:, 0] > 0).astype(np.int64) + (X[:, 1] > 0)
    net = NumpyMLP((6, 16, 3), np.float32, lr=0.2)
    first = net.epoch(X, y, 20)
    for _ in range(10):
        last = net.epoch(X, y, 20)
    assert last < 0.7 * first
    assert net.W[0].dtype == np.float32


@pytest.mark.parametrize("bad", ["5", "5-0-3", "5-3@0", "5-1"])
def test_parse_shape_rejects(bad):
    import argparse

    with pytest.raises(argparse.ArgumentTypeError):
        parse_shape(bad, 8)
