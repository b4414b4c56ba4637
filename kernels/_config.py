"""Compilation flags for every fastnn kernel, kept in one place.

fastmath is enabled without ``nnan`` and ``ninf``: the numerically stable softmax and the
divergence checks rely on inf and NaN behaving as IEEE says, so those two flags stay off
(the same choice as numbagg).  Every kernel is cached on disk (``cache=True``) so only the
first process after installation pays for compilation.

``twin`` compiles one Python body twice, serial and ``parallel=True`` (``prange`` is plain
``range`` in the serial build).  The serial build is the fallback for small shapes and the
twin that the tests compare against.  The parallel copy gets its own ``__qualname__``:
numba's on-disk cache is keyed by qualified name and line, not by the ``parallel`` flag,
so without it the two builds would overwrite each other's cache entries.
"""

import types

import numba

FASTMATH = set({"nsz", "arcp", "contract", "afn", "reassoc"})

JIT_OPTIONS = {"cache": True, "nogil": True, "fastmath": FASTMATH, "error_model": "numpy"}


def njit(fn):
    """Serial kernel or helper with the project's flags."""
    return numba.njit(**JIT_OPTIONS)(fn)


def njit_inline(fn):
    """Helper inlined into its callers at numba IR level (no library of its own)."""
    return numba.njit(inline="always", **JIT_OPTIONS)(fn)


def njit_parallel(fn):
    """Parallel kernel with the project's flags (a renamed copy of ``fn``)."""
    return numba.njit(parallel=True, **JIT_OPTIONS)(_renamed_copy(fn, "_parallel"))


def twin(fn):
    """Return ``(serial, parallel)`` builds of the same kernel body."""
    return njit(fn), njit_parallel(fn)


def _renamed_copy(fn, suffix):
    clone = types.FunctionType(
        fn.__code__, fn.__globals__, fn.__name__ + suffix, fn.__defaults__, fn.__closure__
    )
    clone.__qualname__ = fn.__qualname__ + suffix
    clone.__module__ = fn.__module__
    clone.__doc__ = fn.__doc__
    return clone
