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


# -- help text: plain text, every option's default, the console script -------------------------
HELP_COMMANDS = [
    ["fastnn", "--help"],
    ["fastnn", "train", "--help"],
    ["fastnn", "bench", "--help"],
    ["fastnn", "warmup", "--help"],
    ["fastnn.sklearn", "--help"],
]
OPTION = re.compile(
    r"^  (--[a-z-]+)(?: ([A-Z_]+|\{[^}]*\}|N \[N \.\.\.\]|SHAPE \[SHAPE \.\.\.\]))?"
)


def _help(argv):
    result = subprocess.run(
        [sys.executable, "-m", *argv], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def _options_with_values(text):
    """{option: its help text} for the options that take a value (flags have no default)."""
    entries, current = {}, None
    for line in text.splitlines():
        m = OPTION.match(line)
        if m:
            current = m.group(1) if m.group(2) else None
            if current:
                entries[current] = line[m.end() :]
        elif current and line.startswith("      "):
            entries[current] += " " + line.strip()
        else:
            current = None
    return entries


@pytest.mark.parametrize("argv", HELP_COMMANDS, ids=lambda a: " ".join(a))
def test_help_is_plain_text_with_defaults(argv):
    text = _help(argv)
    assert "``" not in text and ":func:" not in text and ":class:" not in text, text
    for option, help_text in _options_with_values(text).items():
        assert "default" in " ".join(help_text.split()), f"{option} shows no default: {text}"


def test_help_option_parser_finds_options():
    """The parser of the help text above must see options, or the defaults test proves nothing."""
    text = "options:\n  --epochs EPOCHS       training epochs\n  --quiet    a flag\n"
    assert _options_with_values(text) == {"--epochs": "       training epochs"}
    assert _options_with_values(_help(["fastnn", "train", "--help"])).keys() >= {
        "--epochs", "--hidden", "--seed", "--lr", "--activation"
    }  # fmt: skip


def test_top_help_names_the_console_script_and_the_compile():
    text = _help(["fastnn", "--help"])
    assert '"fastnn" command' in text
    assert "compiles" in text and "train" in text and "bench" in text


def test_console_script_is_declared():
    import tomllib
    from pathlib import Path

    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert pyproject["project"]["scripts"]["fastnn"] == "fastnn.__main__:main"


@pytest.mark.parametrize(
    "argv,message",
    [
        (["train", "--epochs", "x"], "argument --epochs: expected an int, got 'x'"),
        (["train", "--lr", "x"], "argument --lr: expected a float, got 'x'"),
    ],
)
def test_type_errors_read_well(argv, message, capsys):
    with pytest.raises(SystemExit):
        main(argv)
    assert message in capsys.readouterr().err


def test_one_epoch_is_singular(capsys):
    assert main(["train", "--epochs", "1", "--quiet", "--hidden", "8"]) == 0
    out = capsys.readouterr().out
    assert re.search(r" for 1 epoch\b", out) and "1 epochs" not in out, out


def test_sklearn_cli_rejects_bad_counts(capsys):
    from fastnn.sklearn.__main__ import main as sklearn_main

    with pytest.raises(SystemExit):
        sklearn_main(["--repeats", "0"])
    assert "argument --repeats: must be > 0" in capsys.readouterr().err


def test_bench_without_torch_says_so(monkeypatch, capsys):
    """No empty torch columns: the tables leave torch out and a line says it is not installed."""
    import fastnn.bench

    monkeypatch.setattr(fastnn.bench, "torch_installed", lambda: False)
    rc = main(
        ["bench", "--shapes", "6-5-3@8", "--samples", "16", "--repeats", "1", "--pause", "0",
         "--predict-rows", "20", "--no-startup"]
    )  # fmt: skip
    captured = capsys.readouterr()
    assert rc == 0
    assert "torch not installed" in captured.out and "torch not installed" in captured.err
    assert captured.err.count("torch not installed") == 1
    predict = captured.out.split("predict (relu)")[1]
    assert "fastnn speed-up" not in predict and " - " not in predict and " -\n" not in predict
    summary = captured.out.split("summary (relu)")[1].split("predict")[0]
    assert "torch /" not in summary and "vs torch" not in summary
