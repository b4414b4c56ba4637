"""Compilation made visible: a line on stderr when fastnn's kernels compile, and the seconds
it took, so that a first call's wait is explained and can be left out of throughput figures.

numba compiles a kernel the first time it meets a new signature that its on-disk cache does
not hold.  That is a wait of seconds to tens of seconds, once per machine (per fastnn and numba
version).  A listener on numba's ``numba:compile`` event sees every compilation as it starts
(after the cache was looked up and missed) and as it ends; loads from the cache fire no
event, so nothing is printed when everything is cached.

Public entry points (``fit``, ``predict``, the scikit-learn drop-ins, ``warmup``) are wrapped
in ``announcing(what)``: the first compilation inside it prints

    fastnn: compiling training kernels for this CPU (once; cached in <folder>) ...

and ``report()`` (or the call's return) prints how long it took.  Set the environment variable
``FASTNN_COMPILE_NOTICE=0``, or give the ``fastnn`` logger a level above INFO
(``logging.getLogger("fastnn").setLevel(logging.WARNING)``), to silence both lines.

``compile_seconds()`` is the total time this process has spent compiling fastnn kernels: fit
subtracts what an epoch spent there from the epoch's time, so samples/s and the progress bar's
estimate describe training, not compilation.
"""

import contextlib
import functools
import logging
import os
import sys
import threading
import time

from numba.core import event

from . import _compile_helper
from .kernels import epoch as _epoch

#: environment variable that silences the compile notice when set to 0, false, no or off
ENV_SWITCH = "FASTNN_COMPILE_NOTICE"

_local = threading.local()  # per thread: what the current call compiles, and its block
_state: dict = {"depth": 0, "t0": 0.0, "seconds": 0.0, "outer": None, "helpers": []}


def _ours(dispatcher):
    module = getattr(getattr(dispatcher, "py_func", None), "__module__", "") or ""
    return module.startswith("fastnn.")


class _Listener(event.Listener):
    """Times the outermost compilation of a fastnn kernel (numba compiles a kernel's callees
    inside its own compilation, under its global compiler lock, so the events nest and never
    interleave between threads)."""

    def on_start(self, ev):
        if _compile_helper.in_helper():
            return
        dispatcher = ev.data.get("dispatcher")
        if _state["helpers"]:  # helpers at work: they leave what this process compiles alone
            _compile_helper.claim(dispatcher, ev.data.get("args", ()))
        if _state["depth"] == 0:
            _state["outer"] = _ours(dispatcher)
            _state["t0"] = time.perf_counter()
            if _state["outer"]:
                block = _block()
                if block is not None:
                    block.started()
                if not _state["helpers"]:
                    # other cores compile this kernel's callees meanwhile (_compile_helper)
                    try:
                        helpers = _compile_helper.start(dispatcher, ev.data.get("args", ()))
                    except Exception:  # helpers only ever save time: never fail a compile
                        helpers = []
                    _state["helpers"] = helpers
        _state["depth"] += 1

    def on_end(self, ev):
        if _compile_helper.in_helper():
            return
        _state["depth"] -= 1
        if _state["depth"] == 0 and _state["outer"]:
            if _local.__dict__.get("what") is None:  # else when the announced call ends
                _stop_helpers()
            dt = time.perf_counter() - _state["t0"]
            _state["seconds"] += dt
            block = _block()
            if block is not None:
                block.seconds += dt


event.register("numba:compile", _Listener())


def _stop_helpers():
    """End the compile helpers this process started (when the call that needed them ends)."""
    if _state["helpers"]:
        _compile_helper.stop(_state["helpers"])
        _state["helpers"] = []


def compile_seconds():
    """Seconds this process has spent compiling fastnn's kernels so far."""
    return _state["seconds"]


def enabled():
    """Whether the compile notice is printed (see the module docstring for the switches)."""
    if os.environ.get(ENV_SWITCH, "").strip().lower() in ("0", "false", "no", "off"):
        return False
    level = logging.getLogger("fastnn").level
    return level == logging.NOTSET or level <= logging.INFO


def cache_folder():
    """The folder numba caches fastnn's kernels in, or None when caching is off."""
    cache = getattr(_epoch.train_batches.jit, "_cache", None)
    return getattr(cache, "cache_path", None)


class _Block:
    """One announced call: what it compiles, whether the line was printed, the seconds."""

    def __init__(self, what):
        self.what = what
        self.seconds = 0.0
        self.announced = False

    def started(self):
        if self.announced:
            return
        self.announced = True
        if not enabled():
            return
        folder = cache_folder()
        where = f"cached in {folder}" if folder else "not cached: compiled in memory"
        print(
            f"fastnn: compiling {self.what} for this CPU (once; {where}) ...",
            file=sys.stderr,
            flush=True,
        )

    def report(self):
        if self.announced and enabled():
            print(f"fastnn: compiled in {self.seconds:.1f} s", file=sys.stderr, flush=True)
        self.announced = False
        self.seconds = 0.0


_SILENT = object()  # the "what" of a silenced call: compilations are timed, not announced


def _block():
    """The calling thread's announced block, made on its first compilation."""
    d = _local.__dict__
    block = d.get("block")
    if block is None and d.get("what") not in (None, _SILENT):
        block = d["block"] = _Block(d["what"])
    return block


def announcing(what):
    """Decorator: a compilation of fastnn kernels that starts inside the call is announced on
    stderr as compiling ``what`` (see the module docstring).  Nested calls belong to the
    outermost one.  Costs a few attribute look-ups per call when nothing compiles."""

    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            d = _local.__dict__
            if d.get("what") is not None:
                return fn(*args, **kwargs)
            d["what"] = what
            try:
                return fn(*args, **kwargs)
            finally:
                d["what"] = None
                _stop_helpers()
                block = d.pop("block", None)
                if block is not None:
                    block.report()

        return wrapper

    return decorate


@contextlib.contextmanager
def silenced():
    """Within the block, announced calls made by this thread print nothing (``warmup`` reports
    per group instead); ``compile_seconds`` still counts."""
    d = _local.__dict__
    outer = d.get("what")
    d["what"] = _SILENT
    try:
        yield
    finally:
        d["what"] = outer
        if outer is None:
            _stop_helpers()


def report():
    """Print now how long the compilation announced in the current call took (if any), rather
    than when the call returns: fit calls it before its first epoch line."""
    block = _local.__dict__.get("block")
    if block is not None:
        block.report()
