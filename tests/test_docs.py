"""The documentation site: every public name has an API entry, docstrings parse as numpydoc,
and (slow, when Sphinx is installed) the site builds with warnings as errors.

CI builds the site too (``.ci/run``); these tests make a missing entry or a docstring that
napoleon misreads fail where a developer runs the tests.
"""

import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

import fastnn
import fastnn.datasets
import fastnn.sklearn
from fastnn import kernels

DOCS = Path(__file__).resolve().parents[1] / "docs"
API = DOCS / "api"
DIRECTIVE = re.compile(r"^\.\. auto(?:class|function|exception|data):: (\S+)", re.M)
MODULES = {"kernels", "callbacks", "datasets", "distributed"}


def documented():
    """Fully qualified names that the API pages document with an autodoc directive, plus the
    modules they document (``automodule``)."""
    names, modules = set(), set()
    for page in API.glob("*.rst"):
        text = page.read_text(encoding="utf-8")
        current = None
        for line in text.splitlines():
            m = re.match(r"^\.\. (?:currentmodule|module):: (\S+)", line)
            if m:
                current = m.group(1)
            m = re.match(r"^\.\. automodule:: (\S+)", line)
            if m:
                modules.add(m.group(1))
            m = DIRECTIVE.match(line)
            if m:
                target = m.group(1)
                names.add(target if target.startswith("fastnn.") else f"{current}.{target}")
            m = re.match(r"^   :members: (.+)$", line)
            if m and modules:
                last = re.findall(r"^\.\. automodule:: (\S+)", text[: text.find(line)], re.M)
                names.update(f"{last[-1]}.{n.strip()}" for n in m.group(1).split(","))
    return names, modules


def test_every_public_name_has_an_api_entry():
    names, modules = documented()
    missing = [
        n
        for n in fastnn.__all__
        if n not in MODULES and f"fastnn.{n}" not in names and n != "__version__"
    ]
    assert not missing, f"no API entry for {missing}"
    assert "fastnn.__version__" in names
    assert {"fastnn.kernels", "fastnn.callbacks", "fastnn.datasets", "fastnn.sklearn"} <= modules
    assert {"fastnn.distributed", "fastnn.onnx"} <= modules
    for n in fastnn.datasets.__all__:
        assert f"fastnn.datasets.{n}" in names, n
    for n in ("MLPClassifier", "MLPRegressor"):
        assert f"fastnn.sklearn.{n}" in names, n


def test_every_kernel_has_an_api_entry():
    names, _ = documented()
    short = {n.rsplit(".", 1)[1] for n in names if n.startswith("fastnn.kernels.")}
    missing = [k for k in kernels.KERNELS if k not in short]
    assert not missing, f"docs/api/kernels.rst lacks {missing}"


def test_the_checker_sees_a_missing_entry(tmp_path, monkeypatch):
    """documented() must not find names that are not there."""
    monkeypatch.setattr(sys.modules[__name__], "API", tmp_path)
    (tmp_path / "x.rst").write_text(".. currentmodule:: fastnn\n\n.. autoclass:: Linear\n")
    names, _ = documented()
    assert names == {"fastnn.Linear"}


def _public_docstrings():
    objs = {f"fastnn.{n}": getattr(fastnn, n) for n in fastnn.__all__ if n not in MODULES}
    objs.update({f"fastnn.sklearn.{n}": getattr(fastnn.sklearn, n) for n in fastnn.sklearn.__all__})
    objs.update(
        {f"fastnn.datasets.{n}": getattr(fastnn.datasets, n) for n in fastnn.datasets.__all__}
    )
    objs.update({f"fastnn.kernels.{n}": getattr(kernels, n) for n in kernels.KERNELS})
    for name, obj in objs.items():
        if isinstance(obj, str):
            continue
        yield name, inspect.getdoc(obj)
        if inspect.isclass(obj):
            for attr, value in vars(obj).items():
                if callable(value) and not attr.startswith("_"):
                    yield f"{name}.{attr}", inspect.getdoc(value)


def test_docstrings_parse_as_numpydoc():
    """A paragraph left under 'Parameters' becomes a parameter named after its first words
    (the site then shows "Ctrl-C during fit stops after ..." as an argument): none may."""
    napoleon = pytest.importorskip("sphinx.ext.napoleon")
    config = napoleon.Config(napoleon_use_param=True, napoleon_use_rtype=False)
    bad = []
    for name, doc in _public_docstrings():
        if not doc:
            continue
        text = str(napoleon.NumpyDocstring(doc, config))
        for m in re.finditer(r"^:(?:param|ivar) ?([^:]*):", text, re.M):
            param = m.group(1).strip()
            if not re.fullmatch(r"[\\*\w]+(, *[\\*\w]+)*", param) or param in ("Shapes", "State"):
                bad.append(f"{name}: {param[:50]!r}")
    assert not bad, "\n".join(bad)


def test_public_api_has_docstrings():
    """Every public class and function (methods aside) says what it is."""
    objects = set(fastnn.__all__) - MODULES - {"__version__"}
    missing = [n for n in sorted(objects) if not inspect.getdoc(getattr(fastnn, n))]
    missing += [n for n in fastnn.sklearn.__all__ if not getattr(fastnn.sklearn, n).__doc__]
    missing += [n for n in fastnn.datasets.__all__ if not getattr(fastnn.datasets, n).__doc__]
    assert not missing, missing


@pytest.mark.slow
def test_site_builds_without_warnings(tmp_path):
    pytest.importorskip("sphinx")
    pytest.importorskip("myst_parser")
    out = tmp_path / "html"
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-E", "-b", "html",
         str(DOCS), str(out)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    for page in ("index.html", "api/layers.html", "api/kernels.html", "gallery.html",
                 "performance.html", "guide/fit.html"):  # fmt: skip
        assert (out / page).is_file(), page
    layers = (out / "api" / "layers.html").read_text(encoding="utf-8")
    for name in ("Linear", "BatchNorm1d", "Dropout", "GELU"):
        assert f'id="fastnn.{name}"' in layers, name
    gallery = (out / "gallery.html").read_text(encoding="utf-8")
    assert gallery.count("<img") >= 7
