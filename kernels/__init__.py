"""fastnn.kernels: the numba kernels behind every fastnn layer, loss and optimizer.

Contract (see design.md): a kernel takes arrays and scalars, writes into caller-allocated
outputs (its last arguments), returns None or a scalar loss, never allocates in steady state,
never validates and never raises.  float32 and float64, C-contiguous.  Each kernel ``k`` has a
serial build ``k`` and a ``parallel=True`` build ``k_parallel`` of the same body.
"""

import pathlib as _pathlib

from . import activations, data, dense, dropout, losses, normalization, optim, softmax
from ._blas import BLAS_SOURCE, gemm
from ._cache import refresh as _refresh
from .activations import *  # noqa: F403
from .data import *  # noqa: F403
from .dense import *  # noqa: F403
from .dropout import *  # noqa: F403
from .losses import *  # noqa: F403
from .normalization import *  # noqa: F403
from .optim import *  # noqa: F403
from .softmax import *  # noqa: F403

KERNELS = tuple(
    name
    for module in (activations, data, dense, dropout, losses, normalization, optim, softmax)
    for name in module.__all__
    if name.islower()
    and not name.endswith("_parallel")
    and name not in ("activate", "derivative", "code_of")
)

__all__ = [
    "activations",
    "data",
    "dense",
    "dropout",
    "losses",
    "normalization",
    "optim",
    "softmax",
    "gemm",
    "BLAS_SOURCE",
    "KERNELS",
]
for _module in (activations, data, dense, dropout, losses, normalization, optim, softmax):
    __all__ += _module.__all__

# before any kernel is loaded: drop cached machine code built from other kernel sources
_refresh(_pathlib.Path(__file__).parent, activations.bias_activate)
