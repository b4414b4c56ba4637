"""scikit-learn's own MLP test module, run unchanged against fastnn.sklearn.

The installed ``sklearn/neural_network/tests/test_mlp.py`` is copied with one line changed
(``from sklearn.neural_network import MLPClassifier, MLPRegressor`` becomes fastnn's import)
and run by pytest in a subprocess: code written against scikit-learn's MLPs (dtype checks,
fit against repeated partial_fit, predict_log_proba, the optimizer's learning rate after
warm starts, the adaptive schedule) must pass as it is.  Deselected: ``test_gradient``,
which calls scikit-learn's private ``_loss_grad_lbfgs`` with its internal buffers (not
provided; docs/sklearn.md lists what is not).
"""

import importlib.util
import pathlib
import subprocess
import sys

import pytest

ORIGINAL = "from sklearn.neural_network import MLPClassifier, MLPRegressor"
REPLACED = "from fastnn.sklearn import MLPClassifier, MLPRegressor"
CONFTEST = """
import pytest


@pytest.fixture(params=[0, 42])
def global_random_seed(request):
    return request.param
"""


def _sklearn_test_file():
    spec = importlib.util.find_spec("sklearn")
    path = pathlib.Path(spec.origin).parent / "neural_network" / "tests" / "test_mlp.py"
    return path if path.exists() else None


def test_sklearn_test_mlp_passes_on_fastnn(tmp_path):
    source = _sklearn_test_file()
    if source is None:
        pytest.skip("this scikit-learn installation ships without its tests")
    text = source.read_text()
    assert text.count(ORIGINAL) == 1, "scikit-learn's test module imports its MLPs differently"
    (tmp_path / "test_mlp_on_fastnn.py").write_text(text.replace(ORIGINAL, REPLACED))
    (tmp_path / "conftest.py").write_text(CONFTEST)
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x"]
    cmd += ["-k", "not test_gradient", str(tmp_path / "test_mlp_on_fastnn.py")]
    result = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "failed" not in result.stdout
