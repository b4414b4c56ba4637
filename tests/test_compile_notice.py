"""First contact (issue 17): a compilation is announced on stderr, nothing is printed when the
kernels come from the cache, and a damaged or unwritable cache never breaks a call.

The subprocess tests run a tiny ``predict`` (a few kernels, a few seconds to compile) in fresh
interpreters with their own ``NUMBA_CACHE_DIR``.
"""

import logging
import os
import resource
import shutil
import signal
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
from fastnn.kernels import _config

import fastnn
from fastnn import _compile

SCRIPT = textwrap.dedent(
    """
    import numpy as np
    import fastnn
    model = fastnn.Sequential(fastnn.Linear(4, 3, seed=0))
    print(repr(model.predict(np.arange(8, dtype=np.float32).reshape(2, 4)).tolist()))
    """
)
NOTICE = "fastnn: compiling inference kernels for this CPU"


def _run(cache, env=None, preexec_fn=None):
    full = {k: v for k, v in os.environ.items() if k != "FASTNN_COMPILE_NOTICE"}
    full.update({"NUMBA_CACHE_DIR": str(cache), **(env or {})})
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        env=full,
        capture_output=True,
        text=True,
        timeout=600,
        preexec_fn=preexec_fn,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip(), out.stderr


def _expected():
    X = np.arange(8, dtype=np.float32).reshape(2, 4)
    layer = fastnn.Linear(4, 3, seed=0)
    W, b = (p.data.astype(np.float64) for p in layer.parameters())
    return X.astype(np.float64) @ W + b  # an independent reference of the layer's output


@pytest.fixture(scope="module")
def warm_cache(tmp_path_factory):
    """A cache folder filled by one cold run, and that run's output."""
    cache = tmp_path_factory.mktemp("numba_cache")
    stdout, stderr = _run(cache)
    return cache, stdout, stderr


def _close(stdout):
    np.testing.assert_allclose(np.array(eval(stdout)), _expected(), rtol=1e-5, atol=1e-5)


def test_a_cold_cache_is_announced_once_with_its_seconds(warm_cache):
    cache, stdout, stderr = warm_cache
    _close(stdout)
    assert stderr.count(NOTICE) == 1, stderr
    assert str(cache) in stderr
    assert "fastnn: compiled in " in stderr


def test_nothing_is_printed_when_the_kernels_are_cached(warm_cache):
    cache, first, _ = warm_cache
    stdout, stderr = _run(cache)
    assert stdout == first
    assert stderr == ""


def test_a_damaged_cache_warns_and_recompiles(warm_cache, tmp_path):
    cache = tmp_path / "damaged"
    shutil.copytree(warm_cache[0], cache)
    damaged = 0
    for root, _, files in os.walk(cache):
        for name in files:
            if name.endswith((".nbi", ".nbc")):
                path = os.path.join(root, name)
                size = os.path.getsize(path)
                with open(path, "r+b") as f:
                    f.truncate(size // 2)
                damaged += 1
    assert damaged > 0
    stdout, stderr = _run(cache)
    assert stdout == warm_cache[1]
    assert "could not be read" in stderr
    stdout, stderr = _run(cache)  # the damaged entries were replaced
    assert stdout == warm_cache[1]
    assert "could not be read" not in stderr


def _no_file_writes():
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes fail with EFBIG, like a full disk
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))


def test_an_unwritable_cache_warns_and_compiles_in_memory(warm_cache, tmp_path):
    stdout, stderr = _run(tmp_path / "full", preexec_fn=_no_file_writes)
    assert stdout == warm_cache[1]
    assert "cannot write the kernel cache" in stderr
    assert stderr.count("cannot write the kernel cache") == 1


def test_the_switch_silences_the_notice(tmp_path):
    stdout, stderr = _run(tmp_path / "quiet", env={"FASTNN_COMPILE_NOTICE": "0"})
    _close(stdout)
    assert "fastnn:" not in stderr


def test_the_logger_level_silences_the_notice(monkeypatch):
    monkeypatch.delenv(_compile.ENV_SWITCH, raising=False)
    logger = logging.getLogger("fastnn")
    old = logger.level
    try:
        assert _compile.enabled()
        logger.setLevel(logging.WARNING)
        assert not _compile.enabled()
        logger.setLevel(logging.INFO)
        assert _compile.enabled()
    finally:
        logger.setLevel(old)
    monkeypatch.setenv(_compile.ENV_SWITCH, "off")
    assert not _compile.enabled()


def test_a_block_prints_its_line_once_and_reports(capsys, monkeypatch):
    monkeypatch.delenv(_compile.ENV_SWITCH, raising=False)
    block = _compile._Block("test kernels")
    block.started()
    block.started()
    block.seconds = 2.5
    block.report()
    block.report()  # nothing more: the block was reset
    err = capsys.readouterr().err
    assert err.count("fastnn: compiling test kernels for this CPU") == 1
    assert err.count("fastnn: compiled in 2.5 s") == 1


def test_a_kernel_without_a_cache_folder_compiles_in_memory(monkeypatch):
    monkeypatch.setattr(_config, "_warned", set())
    namespace = {}
    exec("def twice(x):\n    return 2 * x\n", namespace)  # source without a file: no cache
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        kernel = _config.njit(namespace["twice"])
    assert kernel(21) == 42
    assert any("no folder can hold the kernel cache" in str(w.message) for w in caught)
