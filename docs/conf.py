"""Sphinx configuration of the fastnn documentation site.

Build: ``sphinx-build -W -b html docs docs/_build/html`` (warnings are errors).  Guide pages
are Markdown (MyST); the API reference is autodoc over numpydoc docstrings (napoleon).
Nothing here reaches the network: no intersphinx inventories are fetched.
"""

import importlib.util
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# the kernel cache of the build stays inside the build folder unless the caller chose one
os.environ.setdefault("NUMBA_CACHE_DIR", str(ROOT / "docs" / "_build" / ".numba_cache"))

import fastnn  # noqa: E402

project = "fastnn"
author = "fastnn developers"
copyright = "2026, fastnn developers"
release = fastnn.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "myst_parser",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "README.md"]
root_doc = "index"

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {
    "members": True,
    # the kernel hooks that fuse a Linear with its activation are internal plumbing
    "exclude-members": "code, alpha, forward_act, backward_masked, min_train_batch",
}
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False

myst_enable_extensions = ["colon_fence"]
myst_heading_anchors = 3

html_theme = "furo" if importlib.util.find_spec("furo") else "alabaster"
html_title = f"fastnn {release}"
html_static_path = []
