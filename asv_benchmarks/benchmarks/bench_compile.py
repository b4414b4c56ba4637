"""Start-up cost: ``import fastnn`` and a first small fit, in a fresh interpreter.

``timeraw_`` benchmarks time code run in a new Python process, so numba's in-process JIT never
leaks in.  Two cases, apart from the steady-state benchmarks:

- cold: ``NUMBA_CACHE_DIR`` points at an empty temporary folder, so every kernel the fit needs
  is compiled (what the first run after installation costs);
- warm: it points at a folder filled once by ``setup_cache`` (in its own process, running the
  same code), so the kernels are loaded from disk (what every later process costs).

Measured on the 2-core reference machine at commit b2b6e22 (float32, iris-sized fit): cold ~6.4 s,
warm ~1.9 s, ``import fastnn`` alone ~1.6 s; under heavy load from other processes 2-10x that.
"""

import os
import subprocess
import sys

from .common import THREADS

#: the untimed part: where numba caches (read by numba at import, so it is set before)
_SETUP = """
import os
os.environ["NUMBA_CACHE_DIR"] = {cache_dir!r}
"""

#: the timed part: import, then a first fit of a small classifier (iris-sized, float32)
_FIRST_FIT = f"""
import numpy as np
import fastnn as fnn
fnn.set_num_threads({THREADS})
rng = np.random.default_rng(0)
X = rng.standard_normal((150, 4)).astype(np.float32)
y = rng.integers(0, 3, 150)
model = fnn.Sequential(fnn.Linear(4, 8, seed=0), fnn.ReLU(), fnn.Linear(8, 3, seed=1))
opt = fnn.SGD(model.parameters(), lr=0.1, momentum=0.9)
model.fit(X, y, loss=fnn.SoftmaxCrossEntropy(), optimizer=opt, epochs=1, batch_size=32,
          verbose=0)
"""


class ImportAndFirstFit:
    """``import fastnn`` plus a first one-epoch fit, with a cold and a warm kernel cache."""

    params = (("cold", "warm"),)
    param_names = ("cache",)
    number = 1
    rounds = 1
    repeat = (2, 5, 30.0)
    timeout = 600

    def setup_cache(self):
        # Runs once, in its own process, in a folder asv keeps for this benchmark's run: fill a
        # numba cache there by running the timed code once in a child process.
        warm_dir = os.path.abspath("numba_cache_warm")
        os.makedirs(warm_dir, exist_ok=True)
        code = _SETUP.format(cache_dir=warm_dir) + _FIRST_FIT
        subprocess.run([sys.executable, "-c", code], check=True)
        return warm_dir

    def setup(self, warm_dir, cache):
        if cache == "warm" and not os.path.isdir(warm_dir):
            raise RuntimeError(f"the warm numba cache {warm_dir} is missing")

    def timeraw_import_and_first_fit(self, warm_dir, cache):
        if cache == "warm":
            return _FIRST_FIT, _SETUP.format(cache_dir=warm_dir)
        # a new empty folder per sample, beside the warm one in the folder asv removes after
        # the run (each under 1 MB)
        parent = os.path.dirname(warm_dir)
        setup = "import tempfile\n" + _SETUP.replace(
            "{cache_dir!r}", f"tempfile.mkdtemp(prefix='numba_cache_cold_', dir={parent!r})"
        )
        return _FIRST_FIT, setup


class Import:
    """``import fastnn`` alone (numba, SciPy's BLAS symbols, the kernel modules), cache warm."""

    number = 1
    rounds = 1
    repeat = (2, 5, 20.0)
    timeout = 300

    def timeraw_import(self):
        return "import fastnn"


def _first_fit(sizes, rows, batch, optimizer):
    """Code for a first one-epoch fit of a ReLU MLP of layer widths ``sizes`` on ``rows``
    random float32 rows."""
    return f"""
import numpy as np
import fastnn as fnn
fnn.set_num_threads({{threads}})
sizes = {sizes!r}
rng = np.random.default_rng(0)
X = rng.standard_normal(({rows}, sizes[0])).astype(np.float32)
y = rng.integers(0, sizes[-1], {rows})
layers = []
for i in range(len(sizes) - 1):
    layers.append(fnn.Linear(sizes[i], sizes[i + 1], seed=i))
    if i < len(sizes) - 2:
        layers.append(fnn.ReLU())
model = fnn.Sequential(*layers)
opt = fnn.{optimizer}
model.fit(X, y, loss=fnn.SoftmaxCrossEntropy(), optimizer=opt, epochs=1, batch_size={batch},
          verbose=0)
"""


#: the timed part of each cold first fit: one build of the compiled fit, or the drop-in
_COLD_CASES = {
    # the README's main job: the digits (64-128-10@32) on the serial build
    "serial": _first_fit(
        (64, 128, 10), 1347, 32, "SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True)"
    ),
    # 784-100-10@64 on a few thousand rows: the data-parallel build with two threads
    "data-parallel": _first_fit((784, 100, 10), 4096, 64, "SGD(model.parameters(), lr=0.01)"),
    # the largest bench network: hidden layers split by units across the threads
    "split-by-units": _first_fit(
        (784, 1024, 1024, 1024, 10), 1024, 512, "SGD(model.parameters(), lr=0.01)"
    ),
    # the scikit-learn drop-in on the digits, as a new user would try it
    "drop-in": """
import warnings
from sklearn.datasets import load_digits
from fastnn.sklearn import MLPClassifier
X, y = load_digits(return_X_y=True)
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    MLPClassifier(max_iter=20, random_state=0).fit(X, y)
""",
}


class ColdFirstFit:
    """A first fit in a fresh interpreter with an empty kernel cache, per build of the
    compiled fit and for the drop-in: the compilation a new machine, container or upgrade
    pays once (issue 17 tracks it: 30-60 s on the 2-core machine for the fused builds)."""

    params = (tuple(_COLD_CASES),)
    param_names = ("case",)
    number = 1
    rounds = 1
    repeat = (1, 3, 120.0)
    timeout = 900

    def setup_cache(self):
        parent = os.path.abspath("numba_cache_cold_first_fit")
        os.makedirs(parent, exist_ok=True)
        return parent

    def timeraw_cold_first_fit(self, parent, case):
        setup = "import tempfile\n" + _SETUP.replace(
            "{cache_dir!r}", f"tempfile.mkdtemp(prefix='numba_cache_cold_', dir={parent!r})"
        )
        return _COLD_CASES[case].format(threads=THREADS), setup
