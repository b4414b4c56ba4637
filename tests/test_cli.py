"""The command line: ``python -m fastnn train`` (the main job) and its help."""

import re
import subprocess
import sys

import pytest

from fastnn.__main__ import main

ACCURACY = re.compile(r"^test accuracy: (\d\.\d+)$", re.M)
THROUGHPUT = re.compile(r"^training throughput: [\d,]+ samples/s", re.M)


def test_train_quiet_subprocess():
    result = subprocess.run(
        [sys.executable, "-m", "fastnn", "train", "--epochs", "3", "--quiet"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert ACCURACY.search(out), out
    assert THROUGHPUT.search(out), out
    assert "epoch" not in out.split("test accuracy")[0]  # --quiet: no per-epoch lines


def test_help():
    for argv in (["--help"], ["train", "--help"]):
        result = subprocess.run(
            [sys.executable, "-m", "fastnn", *argv], capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, result.stderr
        assert "usage" in result.stdout.lower()
    assert "--epochs" in result.stdout


def test_default_run_reaches_95_percent(capsys):
    """The default options (30 epochs) in-process, to save the start-up of a new interpreter."""
    assert main(["train"]) == 0
    out = capsys.readouterr().out
    accuracy = float(ACCURACY.search(out).group(1))
    assert accuracy >= 0.95, out
    assert THROUGHPUT.search(out)
    assert len(re.findall(r"^epoch\s+\d+/30", out, re.M)) == 30


@pytest.mark.parametrize(
    "argv,option",
    [
        (["train", "--epochs", "0"], "--epochs"),
        (["train", "--batch-size", "-3"], "--batch-size"),
        (["train", "--hidden", "64", "0"], "--hidden"),
        (["train", "--lr", "0"], "--lr"),
        (["train", "--lr", "fast"], "--lr"),
        (["train", "--threads", "0"], "--threads"),
    ],
)
def test_bad_options_fail_clearly(argv, option, capsys):
    """argparse's usage error (exit 2) naming the option, before anything trains (--lr 0 was
    silently replaced by the default)."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}" in err and ("must be > 0" in err or "expected a float" in err)


def test_warmup_reports_each_group(capsys):
    """``warmup`` in-process: one line per kernel group, and the kernels are then ready (a
    second run compiles nothing, whatever the first found in the cache)."""
    assert main(["warmup"]) == 0
    first = capsys.readouterr().out
    assert first.startswith("fastnn warmup: compiling kernels for this CPU")
    groups = re.findall(r"^  (\S.*?)\s+[\d.]+ s  \((compiled in [\d.]+ s|cached)\)$", first, re.M)
    names = [name for name, _ in groups]
    assert names == ["training and inference kernels, float32", "scikit-learn drop-ins, float64"]
    assert main(["warmup"]) == 0
    second = capsys.readouterr().out
    assert second.count("(cached)") == 2, second
    assert "done in" in second
