"""Thread control: numba's and BLAS's thread pools set together, and the serial/parallel switch."""

import numbers
import os

import numba
from threadpoolctl import threadpool_limits

# Below this many elements of work a kernel runs its serial build: waking numba's thread pool
# costs a few microseconds, more than a small kernel's whole run on 2 cores.
PARALLEL_MIN_WORK = 1 << 14

_state = {"threads": None, "limits": None}


def set_num_threads(n):
    """Use ``n`` threads for fastnn's kernels and for BLAS (numba's pool and every BLAS library
    threadpoolctl can see: NumPy's and SciPy's OpenBLAS), so the two never oversubscribe."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise TypeError(f"n must be a positive integer, got {n!r}")
    n = int(n)
    if n < 1:
        raise ValueError(f"n must be a positive integer, got {n}")
    n = min(n, numba.config.NUMBA_NUM_THREADS)
    numba.set_num_threads(n)
    _state["limits"] = threadpool_limits(limits=n)
    _state["threads"] = n


def get_num_threads():
    """Threads fastnn's kernels use (numba's setting for the calling thread)."""
    return numba.get_num_threads()


def pick(serial, parallel, work):
    """The parallel build of a kernel when more than one thread is set and ``work`` (elements
    touched) is large enough to pay for waking the pool; the serial build otherwise."""
    if work >= PARALLEL_MIN_WORK and numba.get_num_threads() > 1:
        return parallel
    return serial


def _threads_from_env():
    value = os.environ.get("FASTNN_NUM_THREADS")
    if value:
        set_num_threads(int(value))
