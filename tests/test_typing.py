"""The package type-checks: mypy, configured in pyproject.toml ([tool.mypy]), finds nothing in
fastnn/, and the package ships its py.typed marker (PEP 561)."""

import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_py_typed_marker_is_shipped():
    assert (ROOT / "fastnn" / "py.typed").is_file()
    assert '"py.typed"' in (ROOT / "pyproject.toml").read_text()


def test_mypy_is_clean():
    pytest.importorskip("mypy", reason="mypy is part of the test extra: pip install -e '.[test]'")
    out = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-error-summary"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout + out.stderr
