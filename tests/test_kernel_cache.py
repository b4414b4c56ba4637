"""The on-disk kernel cache follows the kernel sources (kernels/_cache.py).

numba checks only the defining file of a cached function, so a kernel that inlines a helper
from another file would keep the helper's old code; ``refresh`` drops the folder's cache when
any source file changes.  The last test shows both halves in fresh interpreters: numba's stale
load without the guard, and the guard fixing it.
"""

import os
import subprocess
import sys
import textwrap

import pytest
from fastnn.kernels import _cache

from fastnn import kernels as K


def test_digest_follows_contents(tmp_path):
    (tmp_path / "a.py").write_text("x = 1\n")
    (tmp_path / "b.py").write_text("y = 2\n")
    (tmp_path / "notes.txt").write_text("not a source\n")
    first = _cache.sources_digest(tmp_path)
    assert _cache.sources_digest(tmp_path) == first
    (tmp_path / "notes.txt").write_text("changed\n")
    assert _cache.sources_digest(tmp_path) == first
    (tmp_path / "a.py").write_text("x = 3\n")
    assert _cache.sources_digest(tmp_path) != first
    (tmp_path / "a.py").write_text("x = 1\n")
    assert _cache.sources_digest(tmp_path) == first
    (tmp_path / "c.py").write_text("")
    assert _cache.sources_digest(tmp_path) != first


def test_drop_stale_deletes_only_numba_files_and_stamps(tmp_path):
    names = ["k.f-10.py311.nbi", "k.f-10.py311.1.nbc", "k.cpython-311.pyc", "other.txt"]
    for name in names:
        (tmp_path / name).write_text("x")
    assert _cache.drop_stale(tmp_path, "abc") == 2
    assert sorted(os.listdir(tmp_path)) == sorted(["k.cpython-311.pyc", "other.txt", _cache.STAMP])
    (tmp_path / "k.g-3.py311.nbi").write_text("x")  # compiled under the current sources
    assert _cache.drop_stale(tmp_path, "abc") == 0
    assert (tmp_path / "k.g-3.py311.nbi").exists()
    assert _cache.drop_stale(tmp_path, "def") == 1  # the sources changed again


def test_drop_stale_tolerates_a_missing_folder(tmp_path):
    assert _cache.drop_stale(tmp_path / "none" / "here", "abc") == 0


def test_package_cache_is_stamped_with_its_sources():
    folder = os.path.dirname(K.__file__)
    cache_dir = K.activations.bias_activate._cache.cache_path
    with open(os.path.join(cache_dir, _cache.STAMP)) as f:
        assert f.read().strip() == _cache.sources_digest(folder)


_HELPER = "from numba import njit\n\n@njit(cache=True)\ndef helper():\n    return {value}\n"
_CALLER = textwrap.dedent(
    """
    from numba import njit

    from .helpers import helper


    @njit(cache=True)
    def caller():
        return helper()
    """
)
_INIT = textwrap.dedent(
    """
    import os
    import pathlib

    from . import calls

    if os.environ.get("GUARD") == "1":
        from fastnn.kernels._cache import refresh

        refresh(pathlib.Path(__file__).parent, calls.caller)
    """
)


@pytest.mark.parametrize("guard", ["0", "1"])
def test_changed_helper_reaches_its_cached_caller(tmp_path, guard):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(_INIT)
    (pkg / "calls.py").write_text(_CALLER)
    env = dict(os.environ, GUARD=guard, PYTHONPATH=str(tmp_path))
    env.pop("NUMBA_CACHE_DIR", None)  # the cache in pkg/__pycache__

    def result():
        code = "import pkg.calls as c; print(c.caller())"
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        return int(out.stdout)

    (pkg / "helpers.py").write_text(_HELPER.format(value=1))
    assert result() == 1  # compiled and cached
    (pkg / "helpers.py").write_text(_HELPER.format(value=2) + "# longer file\n")
    got = result()
    if guard == "1":
        assert got == 2
    else:  # numba alone loads the caller's stale machine code
        assert got == 1, "numba now follows dependencies: kernels/_cache.py may be unneeded"
