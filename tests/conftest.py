"""Shared fixtures: the two float dtypes, the serial and parallel kernel builds, tolerances."""

import contextlib
import fnmatch
import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

from fastnn import kernels as K

DTYPES = (np.float32, np.float64)

# Tolerances against a float64 reference.  float64: the kernels and the reference differ only in
# summation order (BLAS blocking, prange chunks), an error of a few ulp times the number of terms
# (<= ~1e3 here), far below 1e-10.  float32: unit roundoff is 6e-8; a dot product of k <= ~1e3
# O(1) terms is off by about sqrt(k) * 6e-8 ~ 2e-6 typically and k * 6e-8 ~ 6e-5 at worst, and
# fastmath's "afn" lets exp/log/tanh use slightly less accurate forms; 1e-4 relative with a
# 1e-5 absolute floor covers both with margin, while any indexing or formula error shows up at
# O(1e-2) or more.
TOLERANCES = {
    np.dtype(np.float32): {"rtol": 1e-4, "atol": 1e-5},
    np.dtype(np.float64): {"rtol": 1e-10, "atol": 1e-12},
}


@contextlib.contextmanager
def quiet():
    """Silence scikit-learn's ConvergenceWarning (short fits in tests)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


def tol(dtype):
    return TOLERANCES[np.dtype(dtype)]


def assert_close(actual, expected, dtype, scale=1.0, err_msg=""):
    """Compare with the dtype's tolerance; ``scale`` widens the absolute floor for outputs that
    are sums of many terms of magnitude ``scale``."""
    t = tol(dtype)
    np.testing.assert_allclose(
        np.asarray(actual, dtype=np.float64),
        expected,
        rtol=t["rtol"],
        atol=t["atol"] * scale,
        err_msg=err_msg,
    )


@pytest.fixture(params=DTYPES, ids=["float32", "float64"])
def dtype(request):
    return np.dtype(request.param)


@pytest.fixture(params=["serial", "parallel"])
def build(request):
    return request.param


def kernel(name, build):
    """The serial build ``name`` or the parallel build ``name_parallel`` of a kernel."""
    return getattr(K, name if build == "serial" else name + "_parallel")


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


# -- the quick tier ------------------------------------------------------------------------------
# ``python -m pytest -m "not slow"`` leaves out the tests below: subprocesses (fresh
# interpreters, cold kernel caches), whole examples and training runs, builds of the docs, and
# the parametrisations that compile the parallel fit kernels.  Chosen from
# ``pytest --durations=0`` of a full run.  Patterns are fnmatch patterns on the node id ("[[]"
# is a literal "["); one that matches no collected test of a collected file is an error, so a
# renamed test cannot drop out of the list unnoticed.  Tests in new files can use
# ``@pytest.mark.slow`` directly.
SLOW = (
    "tests/test_allocations.py::*",
    "tests/test_compile_notice.py::*",
    "tests/test_examples.py::*",
    "tests/test_kernel_cache.py::*",
    "tests/test_asv_suite.py::test_benchmark_runs_once*",
    "tests/test_bench.py::test_numpy_reference_step_matches_fastnn*",
    "tests/test_cli.py::test_train_quiet_subprocess",
    "tests/test_cli.py::test_help",
    "tests/test_cli.py::test_default_run_reaches_95_percent",
    "tests/test_cli.py::test_warmup_reports_each_group",
    "tests/test_cli.py::test_help_is_plain_text_with_defaults*",
    "tests/test_cli.py::test_help_option_parser_finds_options",
    "tests/test_cli.py::test_top_help_names_the_console_script_and_the_compile",
    "tests/test_cli.py::test_one_epoch_is_singular",
    "tests/test_fastpath.py::test_fast_path_matches_layer_path[[]*-rows-*]",
    "tests/test_fastpath.py::test_fast_path_matches_layer_path[[]*-units-*]",
    "tests/test_memmap.py::test_memmap_fit_memory_stays_far_below_file_size",
    "tests/test_sklearn.py::test_grid_search_and_cross_val_score_in_processes",
    "tests/test_sklearn.py::test_accuracy_parity*",
    "tests/test_threads.py::test_fastnn_num_threads_environment_variable*",
)


def pytest_collection_modifyitems(config, items):
    unused = {pattern: pattern.split("::")[0] for pattern in SLOW}
    files = set()
    for item in items:
        nodeid = item.nodeid.replace("\\", "/")
        files.add(nodeid.split("::")[0])
        for pattern in SLOW:
            if fnmatch.fnmatchcase(nodeid, pattern):
                item.add_marker(pytest.mark.slow)
                unused.pop(pattern, None)
    stale = [p for p, file in unused.items() if file in files]
    if stale and not config.getoption("keyword") and not config.getoption("deselect"):
        raise pytest.UsageError(f"tests/conftest.py SLOW patterns match no test: {stale}")
