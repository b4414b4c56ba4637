"""A cold compile on two or more cores: helper processes compile a kernel's callees while the
calling process compiles the kernel itself.

numba compiles in one thread, under one global lock: the first ``fit`` on a machine compiles
its driver, which compiles the passes it calls, which compile the kernels they call, one after
another, while the other cores sit idle (20-30 s on a 2-core machine).  Each of those callees
is looked up in the on-disk cache before it is compiled, by whichever process needs it.  So
when a compilation of a fastnn entry point starts (a cache miss), fastnn forks helpers that
compile the same entry point's callees into the same cache: the calling process works
through the call tree from its first callee, a helper from a point further on (chosen from
the recorded compile times so that both have as much to do), and each finds in the cache
what the other has finished.  What a helper compiles is exactly what the calling process
would compile; the cache holds the same machine code either way, so results are the same bit
for bit.  The helpers stop when the call that needed them (``fit``, ``predict``, a drop-in's
``fit``) returns, after the kernels it needs next (the validation pass, ``predict``).

Which callees, with which argument types, is not known before numba types the caller, so the
call trees of the common entry points are recorded ahead (``compile_plan.json`` next to the
kernels; ``python tools/record_compile_plan.py`` records them again after the kernels
change).  An entry point without a plan, a plan that no longer matches, or a helper that fails
costs nothing but the parallelism: the calling process compiles what it does not find cached.

Helpers run where they can help and cannot harm: on Linux (``fork``; the helper inherits the
loaded kernels and starts in milliseconds), with two or more cores and a writable cache; not
beside mpi4py (fork and MPI do not mix) nor inside a Dask task (its cores are shared out).
``FASTNN_COMPILE_WORKERS=n`` sets the number of helpers (0 turns them off; default: one per
core beyond the first, at most MAX_WORKERS).
"""

import ctypes
import json
import mmap
import os
import pathlib
import signal
import sys
import threading
import time
import warnings

from numba.core import types
from numba.core.compiler_lock import global_compiler_lock
from numba.core.dispatcher import Dispatcher

from . import kernels as _kernels
from ._threads import proc_stat, usable_cores, worker_threads
from .kernels import _config

#: environment variable: number of helper processes (0: none)
ENV_WORKERS = "FASTNN_COMPILE_WORKERS"
#: most helpers started by default (each compiles from its own point of the call tree)
MAX_WORKERS = 3
#: entry points whose recorded compile took less than this start no helper
MIN_PLAN_SECONDS = 2.0
#: the recorded call trees
PLAN_FILE = pathlib.Path(_kernels.__file__).with_name("compile_plan.json")
PLAN_VERSION = 3

_state: dict = {"plans": None, "in_helper": False, "pids": [], "claims": None}

# Who compiles what: one byte per callee of the plan, in memory the processes share.
FREE, CALLER, HELPER, DONE = 0, 1, 2, 3
#: the caller waits at most this long for a callee a helper is compiling, then builds it itself
MAX_WAIT_SECONDS = 120.0
#: ... and no longer than this once no helper has used the CPU meanwhile (stuck, or ended)
STUCK_SECONDS = 0.5


# -- argument types as text ---------------------------------------------------------------------
_SCALARS = {
    str(t): t
    for t in (
        types.boolean,
        *types.integer_domain,
        types.float32,
        types.float64,
        types.complex64,
        types.complex128,
        types.none,
    )
}


def type_text(t):
    """A numba argument type as text, or None for a kind a plan does not hold."""
    if isinstance(t, types.Array) and str(t.dtype) in _SCALARS:
        flags = ("" if t.mutable else ":ro") + ("" if t.aligned else ":na")
        return f"array:{t.dtype}:{t.ndim}:{t.layout}{flags}"
    if str(t) in _SCALARS and _SCALARS[str(t)] == t:
        return str(t)
    return None


def parse_type(text):
    """The numba type ``type_text`` wrote; ValueError for anything else."""
    if not isinstance(text, str):
        raise ValueError(f"a type must be text, got {text!r}")
    if text in _SCALARS:
        return _SCALARS[text]
    parts = text.split(":")
    if len(parts) < 4 or parts[0] != "array" or parts[1] not in _SCALARS:
        raise ValueError(f"not a type of a compile plan: {text!r}")
    flags = set(parts[4:])
    if not parts[2].isdigit() or parts[3] not in ("C", "F", "A") or flags - {"ro", "na"}:
        raise ValueError(f"not a type of a compile plan: {text!r}")
    return types.Array(
        _SCALARS[parts[1]],
        int(parts[2]),
        parts[3],
        readonly="ro" in flags,
        aligned="na" not in flags,
    )


def kernel_name(dispatcher):
    """``module:qualified name`` of a dispatcher's Python function ('' when it has none)."""
    return _function_name(getattr(dispatcher, "py_func", None))


def _function_name(fn):
    if fn is None:
        return ""
    return f"{getattr(fn, '__module__', '')}:{getattr(fn, '__qualname__', '')}"


def _registry():
    """Every fastnn kernel reachable as a module attribute of a module imported now (or as the
    ``jit`` of one: the fit kernels, ``kernels._by_address.Driver``), by ``kernel_name`` (built on
    each call: a helper calls it once)."""
    found = {}
    for module_name, module in list(sys.modules.items()):
        if not module_name.startswith("fastnn.") or module is None:
            continue
        for value in list(vars(module).values()):
            if not isinstance(value, Dispatcher):
                value = getattr(value, "jit", None)
            if isinstance(value, Dispatcher):
                found.setdefault(kernel_name(value), value)
    return found


# -- plans ---------------------------------------------------------------------------------------
class Plan:
    """What to compile ahead for one entry point: ``callees`` in the order the calling process
    compiles them (each after its own callees), with the seconds each took when recorded and
    its depth in the call tree, and ``then``, the kernels the first call needs next."""

    def __init__(self, callees, seconds, depths, then):
        self.callees, self.seconds = callees, seconds
        self.then = [item for item in then if item not in set(callees)]
        # first[i]: where the calls below callee i begin (they come right before it)
        self.first = []
        for i, depth in enumerate(depths):
            k = i
            while k > 0 and depths[k - 1] > depth:
                k = self.first[k - 1]
            self.first.append(k)

    def items(self):
        """Every kernel of the plan once: the callees, then what comes next."""
        return self.callees + self.then

    def _caller_seconds(self, start):
        """Seconds left to the caller when helpers take the callees from ``start`` on: those
        before it, and those after it that call some before it (which only the caller can
        build, once it has their callees)."""
        return sum(sec for i, sec in enumerate(self.seconds) if i < start or self.first[i] < start)

    def order(self, j, n):
        """The order helper ``j`` of ``n`` works in.  The callees are cut where the caller's
        share of the recorded time is (j + 1) / (n + 1); the helper compiles, in the caller's
        order, the callees after the cut whose own callees are all after it too (so each is
        ready before the caller comes to it), then what comes next, then the leaves before the
        cut, backwards (meeting the caller if the caller is the slower)."""
        target = sum(self.seconds) * (j + 1) / (n + 1)
        start = min(
            range(len(self.callees) + 1), key=lambda s: abs(self._caller_seconds(s) - target)
        )
        own = [c for i, c in enumerate(self.callees) if i >= start and self.first[i] >= start]
        back = [self.callees[i] for i in reversed(range(start)) if self.first[i] == i]
        return own + self.then + back


def _item(entry):
    return (str(entry[0]), tuple(str(a) for a in entry[1]))


def _load_plans(path=None):
    """{(entry name, argument texts): Plan} from the plan file (entry points recorded to
    compile for MIN_PLAN_SECONDS or more).  A missing or malformed file gives no plans."""
    path = PLAN_FILE if path is None else path
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        if data.get("version") != PLAN_VERSION:
            return {}
        plans = {}
        for plan in data["plans"]:
            if float(plan["seconds"]) < MIN_PLAN_SECONDS:
                continue
            key = (str(plan["entry"]), tuple(str(a) for a in plan["args"]))
            callees = [_item(c) for c in plan["callees"]]
            seconds = [max(0.0, float(c[2])) for c in plan["callees"]]
            depths = [int(c[3]) for c in plan["callees"]]
            plans[key] = Plan(callees, seconds, depths, [_item(t) for t in plan["then"]])
        return plans
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return {}


def plans():
    if _state["plans"] is None:
        _state["plans"] = _load_plans()
    return _state["plans"]


def plan_for(dispatcher, args):
    """The Plan for ``dispatcher`` called with numba types ``args``, or None."""
    texts = tuple(type_text(a) for a in args)
    if None in texts:
        return None
    return plans().get((kernel_name(dispatcher), texts))


# -- when helpers run ---------------------------------------------------------------------------
def workers():
    """How many helpers a cold compile starts here (see the module docstring)."""
    value = os.environ.get(ENV_WORKERS, "").strip()
    if value:
        try:
            return max(0, int(value))
        except ValueError:
            return 0
    if not sys.platform.startswith("linux") or not hasattr(os, "fork"):
        return 0
    if "mpi4py.MPI" in sys.modules or worker_threads() is not None:
        return 0  # MPI (a rank, and fork beside MPI is unsafe) or a Dask task: cores shared out
    return max(0, min(MAX_WORKERS, usable_cores() - 1))


def _cache_writable(dispatcher):
    folder = getattr(getattr(dispatcher, "_cache", None), "cache_path", None)
    return bool(folder) and os.path.isdir(folder) and os.access(folder, os.W_OK)


def in_helper():
    """True inside a helper process (fastnn's compile notice stays silent there)."""
    return _state["in_helper"]


def start(dispatcher, args):
    """Fork helpers for a cache miss of ``dispatcher`` with ``args`` (numba types) when a plan
    for it exists; returns their process ids (empty when none was started)."""
    if _state["in_helper"]:
        return []
    n = workers()
    if n == 0:
        return []
    plan = plan_for(dispatcher, args)
    if plan is None or not plan.callees or not _cache_writable(dispatcher):
        return []
    items = plan.items()
    index = {item: i for i, item in enumerate(items)}
    board = mmap.mmap(-1, len(items))  # anonymous and shared: forked helpers see the writes
    pids = []
    for j in range(min(n, len(plan.callees))):
        pid = _fork_helper([(index[item], item) for item in plan.order(j, n)], board)
        if pid is None:
            break
        pids.append(pid)
    if pids:
        threading.Thread(target=_reap, args=(pids,), daemon=True).start()
        _state["claims"] = (index, board, pids)
    _state["pids"] = pids
    return pids


def _fork_helper(order, board):
    """Fork a helper that compiles ``order`` (see ``_helper``); its process id, or None when
    the fork failed.  The child never returns from here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (3.12+)
        try:
            pid = os.fork()
        except OSError:
            return None
    if pid == 0:
        _helper(order, board)  # never returns
    return pid


def can_background(dispatcher, sig):
    """Whether ``background(dispatcher, sig)`` can fork its helper here (``workers`` > 0, a
    writable kernel cache, argument types a plan can hold)."""
    if _state["in_helper"] or workers() == 0 or not _cache_writable(dispatcher):
        return False
    return None not in (type_text(t) for t in sig)


def background(dispatcher, sig):
    """Fork one helper that compiles ``dispatcher`` for ``sig`` (numba types) into the kernel
    cache while the caller runs something else; returns a callable that tells whether the
    helper has ended, or None when none started (``can_background``; fork failed).  The
    helper ends with the thread that forked it, like the others."""
    if not can_background(dispatcher, sig):
        return None
    item = (kernel_name(dispatcher), tuple(type_text(t) for t in sig))
    board = mmap.mmap(-1, 1)
    pid = _fork_helper([(0, item)], board)
    if pid is None:
        return None
    threading.Thread(target=_reap, args=([pid],), daemon=True).start()
    return lambda: board[0] == DONE or not _alive(pid)


def _alive(pid):
    """True while the process ``pid`` (a child of this one) has not been reaped."""
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def cached(dispatcher, sig):
    """Whether ``dispatcher`` has a build for ``sig``: compiled in this process, or in the
    kernel cache, from which it is then loaded (what its next call would do)."""
    sig = tuple(sig)
    with global_compiler_lock:
        if sig in dispatcher.overloads:
            return True
        load = getattr(getattr(dispatcher, "_cache", None), "load_overload", None)
        if load is None:
            return False
        try:
            cres = load(sig, dispatcher.targetctx)
        except Exception:  # an unreadable cache entry: the call compiles, as numba would
            return False
        if cres is None:
            return False
        dispatcher.targetctx.insert_user_function(cres.entry_point, cres.fndesc, [cres.library])
        dispatcher.add_overload(cres)
        return True


def last_helpers():
    """Process ids of the helpers the latest cold compile started (for tests)."""
    return list(_state["pids"])


def claim(dispatcher, args):
    """The caller starts compiling ``dispatcher`` for ``args``: helpers leave it alone."""
    claims = _state["claims"]
    if claims is None:
        return
    i = claims[0].get((kernel_name(dispatcher), tuple(type_text(a) for a in args)))
    if i is not None and claims[1][i] == FREE:
        claims[1][i] = CALLER


def _wait_for_helper(py_func, sig):
    """Before the caller looks a kernel up in the cache: if a helper is compiling it right
    now, wait until it is done (then it loads), rather than compile it a second time.  A
    helper that stops using the CPU (stuck, or gone) is not waited for any longer."""
    claims = _state["claims"]
    if claims is None or _state["in_helper"]:
        return
    i = claims[0].get((_function_name(py_func), tuple(type_text(a) for a in sig)))
    if i is None:
        return
    board, pids = claims[1], claims[2]
    deadline = time.monotonic() + MAX_WAIT_SECONDS
    ticks, since = _cpu_ticks(pids), time.monotonic()
    while board[i] == HELPER:
        time.sleep(0.005)
        now = time.monotonic()
        if now > deadline:
            return
        if now - since > STUCK_SECONDS:
            seen = _cpu_ticks(pids)
            if seen == ticks:  # no helper ran meanwhile (stuck, or ended): build it here
                return
            ticks, since = seen, now


def _cpu_ticks(pids):
    """CPU time each helper has used, in clock ticks (None for one that has ended)."""
    out = []
    for pid in pids:
        stat = proc_stat(f"/proc/{pid}/stat")
        fields = stat.split() if stat is not None else ()
        if len(fields) < 13 or fields[0] in (b"Z", b"X"):
            out.append(None)
        else:
            out.append(int(fields[11]) + int(fields[12]))  # utime + stime
    return out


_config.before_load = _wait_for_helper


def stop(pids):
    """Ask the helpers to end (each finishes a cache write it has begun)."""
    if _state["claims"] is not None and _state["claims"][2] is pids:
        _state["claims"] = None
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            pass


def _reap(pids):
    for pid in pids:
        try:
            os.waitpid(pid, 0)
        except OSError:
            pass


def _helper(order, board):
    """The forked helper: compile ``order`` into the cache, quietly, then exit.  It skips what
    the caller or another helper has begun, and marks on ``board`` what it works on."""
    try:
        _state["in_helper"] = True
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        _exit_with_parent()
        saving = {"now": False, "stop": False}

        def on_term(signum, frame):
            if saving["now"]:
                saving["stop"] = True  # end once the file being written is complete
            else:
                os._exit(0)

        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C is the parent's to handle
        registry = _registry()
        for i, (name, texts) in order:
            if board[i] != FREE:
                continue
            dispatcher = registry.get(name)
            if dispatcher is None:
                continue
            try:
                sig = tuple(parse_type(t) for t in texts)
            except ValueError:
                continue
            cache = getattr(dispatcher, "_cache", None)
            save = getattr(cache, "save_overload", None)
            if save is None:
                continue

            def guarded_save(sig, data, save=save):
                saving["now"] = True
                try:
                    save(sig, data)
                finally:
                    saving["now"] = False
                    if saving["stop"]:
                        os._exit(0)

            cache.save_overload = guarded_save
            board[i] = HELPER
            try:
                dispatcher.compile(sig)
            except Exception:  # a plan that no longer matches the kernel: skip it
                pass
            finally:
                board[i] = DONE
    finally:
        os._exit(0)


def _exit_with_parent():
    """Linux: the helper gets SIGTERM when the thread that forked it ends."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
