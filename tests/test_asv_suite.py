"""The asv suite cannot rot: every benchmark runs once, in-process, with its first params.

Imports each module of asv_benchmarks/benchmarks, finds benchmarks the way asv does (functions
and methods named time_*, timeraw_*, peakmem_*, mem_*, track_*), and runs setup_cache, setup,
the benchmark itself and teardown with the first value of every param list (the suite lists the
smallest shape first).  A ``timeraw_`` benchmark returns code for a fresh interpreter: that code
runs here once in a subprocess (with the default numba cache; its cold-cache ``setup_cache``
is skipped as too slow).  No timing is checked.
"""

import importlib
import inspect
import itertools
import os
import pkgutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "asv_benchmarks"
PREFIXES = ("time_", "timeraw_", "peakmem_", "mem_", "track_")


def _modules():
    sys.path.insert(0, str(ROOT))
    try:
        package = importlib.import_module("benchmarks")
        names = [m.name for m in pkgutil.iter_modules(package.__path__) if m.name != "common"]
        return [importlib.import_module(f"benchmarks.{name}") for name in sorted(names)]
    finally:
        sys.path.remove(str(ROOT))


def _benchmarks():
    """(id, owner class or None, function name, module) for every benchmark of the suite."""
    found = []
    for module in _modules():
        short = module.__name__.rsplit(".", 1)[1]
        for name, obj in vars(module).items():
            if inspect.isfunction(obj) and name.startswith(PREFIXES):
                found.append((f"{short}.{name}", None, name, module))
            elif inspect.isclass(obj) and obj.__module__ == module.__name__ and name[0] != "_":
                for attr in dir(obj):
                    if attr.startswith(PREFIXES) and callable(getattr(obj, attr)):
                        found.append((f"{short}.{name}.{attr}", obj, attr, module))
    return found


BENCHMARKS = _benchmarks()


def _first_params(owner, func):
    params = getattr(func, "params", None) or getattr(owner, "params", None)
    if not params:
        return ()
    if not isinstance(params[0], list | tuple):  # a single param list, as asv allows
        params = (params,)
    return tuple(p[0] for p in params)


def test_suite_is_found():
    names = {b[0] for b in BENCHMARKS}
    assert len(names) >= 10
    # each kind the task asks for is present
    for prefix in ("time_", "timeraw_", "peakmem_", "track_"):
        assert any(n.rsplit(".", 1)[1].startswith(prefix) for n in names), prefix


@pytest.mark.parametrize(
    ("owner", "name", "module"), [b[1:] for b in BENCHMARKS], ids=[b[0] for b in BENCHMARKS]
)
def test_benchmark_runs_once(owner, name, module, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # asv runs setup_cache in a scratch folder too
    if owner is None:
        func, instance = getattr(module, name), None
        params = _first_params(None, func)
        call = func
    else:
        instance = owner()
        func = getattr(instance, name)
        params = _first_params(owner, func)
        call = func
    args = ()
    setup_cache = getattr(owner, "setup_cache", None) if owner is not None else None
    if setup_cache is not None and name.startswith("timeraw_"):
        # bench_compile's setup_cache fills a numba cache by compiling a first fit from
        # scratch (15-70 s on 2 cores): too slow here.  The timed code runs below instead,
        # in a subprocess on the project's own (warm) cache, and setup_cache's code is the
        # same _SETUP + _FIRST_FIT.
        args = (str(tmp_path / "numba_cache_warm"),)
    elif setup_cache is not None:
        args = (setup_cache(instance),)
    setup = getattr(instance, "setup", None) if instance is not None else None
    if setup is not None:
        setup(*args, *params)
    try:
        result = call(*args, *params)
    finally:
        teardown = getattr(instance, "teardown", None) if instance is not None else None
        if teardown is not None:
            teardown(*args, *params)
    if name.startswith("timeraw_"):
        code = result if isinstance(result, str) else result[0]
        setup_code = "" if isinstance(result, str) else result[1]
        compile(code, name, "exec")
        compile(setup_code, name + "_setup", "exec")
        # run the timed code once in a fresh interpreter (default numba cache, warm from the
        # rest of the test run), as timeraw does
        subprocess.run([sys.executable, "-c", textwrap.dedent(code)], check=True, timeout=300)
    elif name.startswith("track_"):
        assert isinstance(result, int | float)
        assert result == result  # not NaN
    if name == "track_test_accuracy":
        assert result > 0.8, "a fixed fit on a bundled data set stopped learning"


def test_cold_cache_code_uses_its_own_cache_dir(tmp_path, monkeypatch):
    """The cold variant must not point numba at the warm folder (that would time a load)."""
    monkeypatch.chdir(tmp_path)
    compile_bench = next(b for b in BENCHMARKS if b[0].endswith("timeraw_import_and_first_fit"))
    owner = compile_bench[1]
    bench = owner()
    warm_dir = os.path.abspath("warm")
    cold_code, cold_setup = bench.timeraw_import_and_first_fit(warm_dir, "cold")
    warm_code, warm_setup = bench.timeraw_import_and_first_fit(warm_dir, "warm")
    assert cold_code == warm_code
    assert repr(warm_dir) in warm_setup and repr(warm_dir) not in cold_setup
    assert "NUMBA_CACHE_DIR" in cold_setup


def test_params_are_lists_asv_can_show():
    for bench_id, owner, _name, _module in BENCHMARKS:
        params = getattr(owner, "params", None) if owner is not None else None
        if not params:
            continue
        names = getattr(owner, "param_names", None)
        if isinstance(params[0], list | tuple):
            assert names is not None and len(names) == len(params), bench_id
            assert all(len(p) > 0 for p in params), bench_id
            # every combination has a distinct label
            labels = [tuple(map(repr, combo)) for combo in itertools.product(*params)]
            assert len(labels) == len(set(labels)), bench_id
