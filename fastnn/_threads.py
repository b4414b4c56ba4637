"""Thread control: numba's and BLAS's thread pools set together, and the serial/parallel switch."""

import contextlib
import ctypes
import functools
import numbers
import os
import sys
import threading

import numba
from threadpoolctl import ThreadpoolController, threadpool_limits

from ._openblas_wait import SHORT_TIMEOUT, timeout_cell

# Below this many elements of work a kernel runs its serial build.  numba's pool runs on GNU
# OpenMP, whose workers busy-wait for several milliseconds after each parallel region
# (libgomp's default spin, 300000 rounds); a BLAS product right after a region then shares a
# core with a spinner: one all_finite (1M elements) + 3 products (256x784x512) + an SGD step +
# 3 products took 19.0 ms with the parallel builds against 7.6 ms serial.  So the layer
# kernels' parallel builds are kept for work whose serial run is far longer than a spin: a
# 784-512-512-10@256 fit (4608 rows) took 1.14x the GEMM floor with a parallel check of X and
# 1.08x with a serial one.  The fit drivers' parallel builds do not go through this: their
# regions follow each other, and the spin between them is what keeps their threads ready.
#
# The spin itself is left as the process has it.  fastnn used to shorten it (GOMP_SPINCOUNT
# =1000 while numba loaded libgomp), which was the wrong trade twice over: a fit's workers
# then fell asleep between steps, and right after a pause a 784-100-10@64 fit of 4096 rows
# took 31-38 ms instead of 14-17 ms (16384 rows: 82-85 -> 48-56 ms); and every library that
# loads GNU OpenMP after numba shares numba's copy, so torch imported after fastnn ran with
# the short spin too: its 784-100-10@64 epoch took 344-367 ms instead of 198 ms (2 cores).
# (With torch imported first fastnn had left the spin alone, taking torch's libgomp.so.1 for
# the copy numba would share; numba's wheel asks for libgomp.so.1.0.0 and loads its own.)  The
# price of the default spin: a NumPy product started within a few milliseconds of a fit's end
# shares a core with a spinning worker (512x512: up to 3 ms more), as after a torch call.
PARALLEL_MIN_WORK = 1 << 25

_state = {
    "threads": None,  # set_num_threads's n (FASTNN_NUM_THREADS): fastnn's count in every thread
    "limits": None,
    "cap": None,  # OMP_NUM_THREADS's n (without FASTNN_NUM_THREADS): at most n in every thread
}

# numba's thread count is per thread: a thread that a pool starts (ThreadPoolExecutor, a web
# server's workers) begins at numba's default, whatever set_num_threads did in the thread that
# called it.  So fastnn applies its own count around each call from such a thread
# (``own_threads``); ``_inside.depth`` counts the calls in progress in this thread that did so
# (or set a count of their own, the drop-ins' ``n_threads``), which nested calls then keep.
_inside = threading.local()


def set_num_threads(n: int) -> None:
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


def get_num_threads() -> int:
    """Threads a fastnn call from the calling thread uses: fastnn's setting
    (``set_num_threads``, FASTNN_NUM_THREADS, the OMP_NUM_THREADS cap) whichever thread set
    it, else numba's setting for the calling thread."""
    n = _fastnn_count()
    return numba.get_num_threads() if n is None else n


def _fastnn_count():
    """fastnn's thread count for a call from this thread where it differs from numba's
    setting here, else None (also inside a call that set the thread's count already).

    numba's setting is per thread, so ``set_num_threads`` reaches only the thread that called
    it (and FASTNN_NUM_THREADS only the importing thread); fastnn's own calls use its count
    from every thread, as torch's and OpenBLAS's settings hold process-wide.  It wins over a
    ``numba.set_num_threads`` made in the thread; without one, an OMP_NUM_THREADS cap lowers
    a thread above it."""
    if getattr(_inside, "depth", 0):
        return None
    current = numba.get_num_threads()
    n = _state["threads"]
    if n is None:
        n = _state["cap"]
        if n is None or n >= current:
            return None
    return None if n == current else n


@contextlib.contextmanager
def own_threads(n=None):
    """For one fastnn call: numba's threads for the calling thread set to ``n`` (None:
    fastnn's count, ``_fastnn_count``), restored on return, also on an exception.  Calls made
    inside keep the count (``pick`` and nested ``own_threads(None)`` change nothing)."""
    if n is None:
        n = _fastnn_count()
    previous = None  # the thread's own count, where this call changes it
    if n is not None:
        current = numba.get_num_threads()
        if n != current:
            numba.set_num_threads(n)
            previous = current
    depth = getattr(_inside, "depth", 0)
    _inside.depth = depth + 1
    try:
        yield
    finally:
        _inside.depth = depth
        if previous is not None:
            numba.set_num_threads(previous)


def _blas_thread_controls():
    """(path, get, set, timeout) of every BLAS library threadpoolctl finds: ``get``/``set`` its
    thread count through OpenBLAS's own C functions where the symbols are found (no Python
    allocation per call), the threadpoolctl controller's methods otherwise; ``timeout`` its
    idle workers' spin (``fastnn._openblas_wait.timeout_cell``) or None.  ``path`` names the
    library (its file)."""
    controls = []
    for i, lib in enumerate(ThreadpoolController().select(user_api="blas").lib_controllers):
        found = timeout = None
        if lib.internal_api == "openblas" and getattr(lib, "threading_layer", None) == "pthreads":
            timeout = timeout_cell(lib.filepath)
        if lib.internal_api == "openblas" and lib.filepath:
            try:
                dll = ctypes.CDLL(lib.filepath)
            except OSError:
                dll = None
            for prefix, suffix in (("", ""), ("", "64_"), ("scipy_", ""), ("scipy_", "64_")):
                try:
                    get = getattr(dll, f"{prefix}openblas_get_num_threads{suffix}")
                    set_ = getattr(dll, f"{prefix}openblas_set_num_threads{suffix}")
                except AttributeError:
                    continue
                get.restype = ctypes.c_int  # set_ takes a Python int as a C int as it is
                found = (get, set_)
                break
        get, set_ = found or (lib.get_num_threads, lib.set_num_threads)
        controls.append((lib.filepath or f"#{i}", get, set_, timeout))
    return tuple(controls)


def _controls():
    controls = _state.get("blas_threads")
    if controls is None:
        controls = _state["blas_threads"] = _blas_thread_controls()
    return controls


def rescan_blas():
    """Find the BLAS libraries again (after an import that loaded one, such as SciPy's own
    OpenBLAS with ``scipy.optimize``).  Holds in progress are kept: they are per library."""
    with _hold_lock:
        _state["blas_threads"] = None


# BLAS thread counts are process-wide, so calls that change them from several Python threads
# at once must agree: per library, the first call to hold it saves the user's count, every
# call sets the count it needs, and the last to let go restores the saved count (a second fit
# that saved "1" while the first held BLAS at one thread would otherwise restore 1 for good).
# The same for OpenBLAS's spin timeout, shortened by the first hold at one thread.
_hold_lock = threading.Lock()
_hold: dict = {"depth": {}, "saved": {}, "timeout": {}}


def hold_blas_threads(n=1, but=None):
    """Set every BLAS library in the process, except the one whose path is ``but``, to ``n``
    threads until the matching ``release_blas_threads(but)``.  The fit kernel's parallel
    build calls BLAS from each of its own threads, with one BLAS thread each; the drop-ins'
    L-BFGS keeps SciPy's OpenBLAS (which scipy.optimize's L-BFGS-B calls) at one thread next
    to the kernels' own BLAS.  With ``n == 1`` the library's idle workers, which get no work
    meanwhile, also stop spinning (``fastnn._openblas_wait``): the ones a NumPy product left
    spinning go to sleep at once instead of holding cores for 0.1 s.  A few C calls (4 us)
    and nothing allocated after the first call: fit does this once per chunk of batches, and
    its steps are checked to allocate nothing."""
    with _hold_lock:
        depth, saved, timeouts = _hold["depth"], _hold["saved"], _hold["timeout"]
        for path, get, set_, timeout in _controls():
            if path == but:
                continue
            d = depth.get(path, 0)
            if d == 0:
                saved[path] = get()
            depth[path] = d + 1
            set_(n)
            if n == 1 and timeout is not None and path not in timeouts:
                timeouts[path] = timeout.value
                timeout.value = SHORT_TIMEOUT


def release_blas_threads(but=None):
    """Undo one ``hold_blas_threads(n, but)``: per library, the last holder restores the
    count (and the spin timeout) the first saved."""
    with _hold_lock:
        depth, saved, timeouts = _hold["depth"], _hold["saved"], _hold["timeout"]
        for path, _, set_, timeout in _controls():
            if path == but:
                continue
            d = depth.get(path, 0)
            if d == 0:  # found by a rescan after this hold began: it was not held
                continue
            depth[path] = d - 1
            if d == 1:
                set_(saved[path])
                spin = timeouts.pop(path, None)
                if spin is not None and timeout is not None:
                    timeout.value = spin


@contextlib.contextmanager
def blas_threads_held(n=1, but=None):
    """``hold_blas_threads(n, but)`` for the duration of a ``with`` block."""
    hold_blas_threads(n, but)
    try:
        yield
    finally:
        release_blas_threads(but)


# -- the process and its cores, as /proc and the scheduler see them ----------------------------


def proc_stat(path):
    """A /proc ``stat`` file from the state on (its third field; bytes, the fields separated by
    spaces), or None when it cannot be read (the thread or process ended; no /proc).
    os.open/os.read: no buffered file object, a few hundred bytes allocated."""
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            stat = os.read(fd, 512)
        finally:
            os.close(fd)
    except OSError:
        return None
    # the state follows the command name, which may hold spaces and parentheses
    return stat[stat.rfind(b")") + 2 :]


def usable_cores():
    """Cores this process may run on (its CPU affinity where the system has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def pick(serial, parallel, work):
    """The parallel build of a kernel when more than one thread is set and ``work`` (elements
    touched) is large enough to pay for the pool's wake-up and the spin it leaves behind
    (PARALLEL_MIN_WORK); the serial build otherwise.  Called outside a fit or predict from a
    thread whose numba setting is not fastnn's (``_fastnn_count``), the parallel build comes
    wrapped to run on fastnn's count."""
    if work < PARALLEL_MIN_WORK:
        return serial
    n = _fastnn_count()
    if n is None:
        return parallel if numba.get_num_threads() > 1 else serial
    return serial if n == 1 else functools.partial(_on_threads, n, parallel)


def _on_threads(n, kernel, *args, **kwargs):
    with own_threads(n):
        return kernel(*args, **kwargs)


def worker_threads():
    """Threads one task may use when the calling thread runs a task of a Dask worker, else
    None.  A worker runs ``nthreads`` tasks at once; its Nanny sets OMP_NUM_THREADS (1 by
    default: dask's ``distributed.nanny.pre-spawn-environ``) for the libraries that read it,
    which numba does not.  So: that variable where the worker process has it, otherwise the
    cores divided among the worker's task threads.  Looks only at a ``distributed`` package
    already imported (a worker has it); imports nothing."""
    dask_distributed = sys.modules.get("distributed")
    if dask_distributed is None:
        return None
    try:
        worker = dask_distributed.get_worker()
    except (ValueError, AttributeError):
        return None  # not inside a task
    omp = os.environ.get("OMP_NUM_THREADS", "").strip()
    if omp.isdigit() and int(omp) > 0:
        return int(omp)
    state = getattr(worker, "state", worker)
    tasks = getattr(state, "nthreads", None) or getattr(worker, "nthreads", 1) or 1
    return max(1, usable_cores() // tasks)


@contextlib.contextmanager
def call_budget():
    """The threads of one fit or predict, for its duration (``own_threads``): inside a Dask
    worker's task (``worker_threads``) numba's and BLAS's limited to the task's budget unless
    the user chose a count (``set_num_threads``, FASTNN_NUM_THREADS); elsewhere numba's set
    to fastnn's count where the calling thread's differs (a pool's thread), else untouched."""
    n = worker_threads() if _state["threads"] is None else None
    if n is None or n >= get_num_threads():
        with own_threads():
            yield
        return
    hold_blas_threads(n)
    try:
        with own_threads(n):
            yield
    finally:
        release_blas_threads()


def _threads_from_env():
    """Thread counts from the environment, applied on import (for the importing thread):

    - ``FASTNN_NUM_THREADS=n`` does ``set_num_threads(n)``: numba's kernels and every BLAS
      library use n threads.  It wins over everything below.
    - otherwise ``OMP_NUM_THREADS=n`` caps fastnn's kernels at n threads, as it caps torch's
      and (when ``OPENBLAS_NUM_THREADS`` is unset) OpenBLAS's; BLAS keeps what its library
      read itself (``OPENBLAS_NUM_THREADS``, else ``OMP_NUM_THREADS``, else all cores).
    - ``NUMBA_NUM_THREADS`` caps numba's pool (numba's own rule) in every case.
    """
    value = os.environ.get("FASTNN_NUM_THREADS", "").strip()
    if value:
        try:
            n = int(value)
        except ValueError:
            raise ValueError(
                f"FASTNN_NUM_THREADS must be a positive integer, got {value!r}"
            ) from None
        set_num_threads(n)
        return
    omp = os.environ.get("OMP_NUM_THREADS", "").strip().split(",")[0]  # "4,2": nested levels
    try:
        n = int(omp)
    except ValueError:  # unset or not a number: OpenMP itself ignores it too
        return
    if n >= 1:
        _state["cap"] = min(n, numba.config.NUMBA_NUM_THREADS)
        numba.set_num_threads(_state["cap"])
