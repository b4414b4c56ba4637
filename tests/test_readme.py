"""The README's promises: its Python code blocks run as pasted, in order, and it stays short.

The blocks are joined into one script (in README order, as a reader pastes them into one
session) and run in a fresh interpreter inside a temporary folder, so the files they write
(checkpoints, logs) land there.  A block that raises makes the script exit non-zero and the
test fail with the block's number and the traceback.
"""

import re
import subprocess
import sys
from pathlib import Path

import pytest

import fastnn

README = Path(__file__).resolve().parents[1] / "README.md"
FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def python_blocks(text):
    """The bodies of the ```python fenced blocks of a Markdown text, in order."""
    return [m.group(1) for m in FENCE.finditer(text)]


def as_script(blocks):
    """One script that runs the blocks in order and names the block that failed."""
    parts = ["import sys, traceback", "_ns = {'__name__': '__main__'}"]
    for i, block in enumerate(blocks, 1):
        parts.append(
            f"try:\n    exec(compile({block!r}, 'README block {i}', 'exec'), _ns)\n"
            f"except BaseException:\n    traceback.print_exc()\n"
            f"    print('README block {i} failed', file=sys.stderr)\n    sys.exit(1)\n"
            f"print('README block {i} ok', flush=True)"
        )
    return "\n".join(parts) + "\n"


def test_block_extraction():
    text = "x\n```python\na = 1\n```\n```bash\nls\n```\n```python\nb = a + 1\nprint(b)\n```\n"
    assert python_blocks(text) == ["a = 1\n", "b = a + 1\nprint(b)\n"]


def test_a_failing_block_fails(tmp_path):
    """The runner must be able to fail: a NameError in the second block is reported as such."""
    script = as_script(["a = 1\n", "print(undefined_name)\n"])
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert "README block 2 failed" in result.stderr and "NameError" in result.stderr
    assert "README block 1 ok" in result.stdout


def test_readme_size():
    """A hook rejects a README over 15,000 characters; this keeps a margin."""
    assert len(README.read_text(encoding="utf-8")) <= 14_500


def test_readme_names_every_public_name():
    text = README.read_text(encoding="utf-8")
    missing = [name for name in fastnn.__all__ if name not in text]
    assert not missing, f"README does not mention {missing}"


def test_readme_keeps_the_two_commands_first():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert lines[2:6] == [
        "```bash",
        "python -m pip install -e . && python -m fastnn train",
        'python -m pip install -e ".[test]" && python -m pytest',
        "```",
    ]


@pytest.mark.slow
def test_readme_python_blocks_run_in_order(tmp_path):
    blocks = python_blocks(README.read_text(encoding="utf-8"))
    assert len(blocks) >= 5
    result = subprocess.run(
        [sys.executable, "-c", as_script(blocks)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    for i in range(1, len(blocks) + 1):
        assert f"README block {i} ok" in result.stdout
