"""What a run was measured with, recorded as results: the thread count."""

from .common import THREADS, set_threads


def track_threads():
    """Threads numba and BLAS used in this run (``FASTNN_BENCH_THREADS``, default 2)."""
    return set_threads(THREADS)


track_threads.unit = "threads"
