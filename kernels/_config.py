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

import os
import types
import warnings

import numba
from numba.core.caching import FunctionCache

FASTMATH = set({"nsz", "arcp", "contract", "afn", "reassoc"})

JIT_OPTIONS = {"cache": True, "nogil": True, "fastmath": FASTMATH, "error_model": "numpy"}


# -- a kernel cache that can never break a fit -------------------------------------------------
# numba raises when a cache file is truncated or garbled (an unpickling error while loading),
# when the disk is full or the folder read-only while saving, and at decoration time when no
# folder at all can hold the cache.  fastnn's kernels then warn once and compile in memory.

_warned = set()


def _warn_once(kind, message):
    if kind not in _warned:
        _warned.add(kind)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


#: called as ``before_load(py_func, sig)`` before a kernel's cache is looked up: fastnn's compile
#: helpers set it to wait there for a build another process is finishing (fastnn._compile_helper)
before_load = None


class _GuardedCache(FunctionCache):
    """numba's per-function disk cache, with load and save failures turned into a warning."""

    def load_overload(self, sig, target_context):
        if before_load is not None:
            before_load(self._py_func, sig)
        try:
            return super().load_overload(sig, target_context)
        except Exception as exc:  # a damaged or foreign file: compile it again
            try:  # drop the function's index so the new build is saved in place of the old
                os.unlink(self._cache_file._index_path)
            except (OSError, AttributeError):
                pass
            _warn_once(
                "load",
                f"fastnn: the kernel cache in {self.cache_path} could not be read "
                f"({type(exc).__name__}: {exc}); compiling again and replacing it",
            )
            return None

    def save_overload(self, sig, data):
        try:
            super().save_overload(sig, data)
        except Exception as exc:  # read-only folder, full disk, damaged index
            _warn_once(
                "save",
                f"fastnn: cannot write the kernel cache in {self.cache_path} "
                f"({type(exc).__name__}: {exc}); compiled kernels are kept in memory for this "
                "process only (set NUMBA_CACHE_DIR to a writable folder to keep them)",
            )


def _jit(fn, **options):
    try:
        dispatcher = numba.njit(**options)(fn)
    except RuntimeError as exc:  # "cannot cache function ...: no locator available"
        if not options.get("cache"):
            raise
        _warn_once(
            "locate",
            f"fastnn: no folder can hold the kernel cache ({exc}); kernels are compiled in "
            "memory (set NUMBA_CACHE_DIR to a writable folder to keep them)",
        )
        return numba.njit(**{**options, "cache": False})(fn)
    cache = getattr(dispatcher, "_cache", None)
    if type(cache) is FunctionCache:
        cache.__class__ = _GuardedCache
    return dispatcher


def njit(fn):
    """Serial kernel or helper with the project's flags."""
    return _jit(fn, **JIT_OPTIONS)


def njit_internal(fn):
    """Kernel only ever called from compiled code (by address: ``_intrinsics.call_at``): no
    wrappers for calls from Python or C are built."""
    return _jit(fn, no_cpython_wrapper=True, no_cfunc_wrapper=True, **JIT_OPTIONS)


def njit_inline(fn):
    """Helper inlined into its callers at numba IR level (no library of its own)."""
    return _jit(fn, inline="always", **JIT_OPTIONS)


def njit_parallel(fn):
    """Parallel kernel with the project's flags (a renamed copy of ``fn``)."""
    return _jit(_renamed_copy(fn, "_parallel"), parallel=True, **JIT_OPTIONS)


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
