"""Data-parallel training over MPI, and the helpers users' own code needs around it.

Launch the same script on N processes (``mpiexec -n N python train.py``) and pass
``distributed="mpi"`` to ``Sequential.fit``: every rank gives the same arguments, ``batch_size``
is the global batch, each rank computes the gradient of its contiguous share of every global
batch, the shares are summed by one in-place ``Allreduce`` of the model's flat gradient buffer
per step, and every rank applies the same update (see ``fastnn.training``).

``rank()``, ``size()``, ``is_root()`` and ``barrier()`` work in any process: without an MPI
launcher (no ``mpiexec``/``srun`` environment) or without ``mpi4py`` the world is one process
and mpi4py is never imported.  mpi4py is imported lazily, on the first call in a process that
an MPI launcher started (``pip install "fastnn[mpi]"`` installs it with the ``mpich`` wheel,
which brings ``mpiexec``; a cluster's own MPI works as well).
"""

import os
import sys
import time
import traceback

import numba
import numpy as np

from ._threads import _state as _thread_state
from ._threads import set_num_threads

#: environment variables set by the MPI launchers fastnn recognises (MPICH/Hydra and Intel MPI,
#: Open MPI, PMIx, Slurm's srun)
LAUNCHER_VARIABLES = ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "SLURM_PROCID")

_world = {"comm": None, "MPI": None, "threads_set": False, "allreduce_seconds": 0.0}


class DistributedError(RuntimeError):
    """Another rank failed: raised on every rank that did not fail itself, naming the rank and
    its error, so that no rank waits in a collective for one that has stopped."""


def launched():
    """True when an MPI launcher started this process (see LAUNCHER_VARIABLES)."""
    return any(v in os.environ for v in LAUNCHER_VARIABLES)


def _mpi(required=False):
    """mpi4py's MPI module when this process was started by an MPI launcher and mpi4py is
    installed; else None (a world of one).  With ``required``, a missing mpi4py raises."""
    if _world["MPI"] is not None:
        return _world["MPI"]
    if not launched() and not required:
        return None
    try:
        from mpi4py import MPI
    except ImportError:
        if required:
            raise ImportError(
                'distributed="mpi" needs mpi4py: pip install "fastnn[mpi]" (mpi4py and the '
                "mpich wheel, which brings mpiexec)"
            ) from None
        return None
    _world["MPI"] = MPI
    _world["comm"] = MPI.COMM_WORLD
    return MPI


def _comm():
    return _world["comm"] if _mpi() is not None else None


def rank():
    """This process's rank in MPI's COMM_WORLD (0 in a world of one)."""
    comm = _comm()
    return comm.Get_rank() if comm is not None else 0


def size():
    """The number of ranks in COMM_WORLD (1 without an MPI launcher or without mpi4py)."""
    comm = _comm()
    return comm.Get_size() if comm is not None else 1


def is_root():
    """True on rank 0: the rank that prints, logs and saves."""
    return rank() == 0


def barrier():
    """Wait until every rank gets here (returns at once in a world of one)."""
    comm = _comm()
    if comm is not None:
        comm.Barrier()


def allreduce(array, op="sum"):
    """Reduce ``array`` (a contiguous NumPy array) over the ranks in place, with ``op`` one of
    "sum", "max", "min"; returns it.  Every rank must call it with an array of the same shape
    and dtype.  A world of one leaves it as it is."""
    if op not in ("sum", "max", "min"):
        raise ValueError(f"op must be 'sum', 'max' or 'min', got {op!r}")
    if not isinstance(array, np.ndarray) or not array.flags.c_contiguous:
        raise TypeError("array must be a C-contiguous NumPy array")
    comm = _comm()
    if comm is not None and comm.Get_size() > 1:
        MPI = _world["MPI"]
        comm.Allreduce(MPI.IN_PLACE, array, op={"sum": MPI.SUM, "max": MPI.MAX, "min": MPI.MIN}[op])
    return array


def broadcast(array, root=0):
    """Copy ``array`` (a contiguous NumPy array) from rank ``root`` to every rank, in place;
    returns it."""
    if not isinstance(array, np.ndarray) or not array.flags.c_contiguous:
        raise TypeError("array must be a C-contiguous NumPy array")
    comm = _comm()
    if comm is not None and comm.Get_size() > 1:
        comm.Bcast(array, root=root)
    return array


def allreduce_seconds():
    """Seconds this process has spent in the per-step collectives of distributed fits (the
    gradient ``Allreduce`` and the small one of each step's totals, waiting for the slowest
    rank included), since it started: ``python -m fastnn bench --distributed`` reports it as
    a share of the epoch."""
    return _world["allreduce_seconds"]


def share(m, r, n):
    """Rows ``[r0, r1)`` of a batch of ``m`` rows that rank ``r`` of ``n`` computes: contiguous
    shares whose sizes differ by at most one (the first ``m % n`` ranks get one more)."""
    q, extra = divmod(m, n)
    r0 = r * q + min(r, extra)
    return r0, r0 + q + (1 if r < extra else 0)


def thread_budget(local_ranks, cores=None):
    """Threads per rank when ``local_ranks`` ranks share this machine: the cores this process
    may run on (its CPU affinity) divided among them, at least one.  A launcher that binds
    each rank to its cores (``-bind-to core``) leaves fewer cores in the affinity than the
    machine has: the rank then uses all of them."""
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
        cores = cores or os.cpu_count() or 1
    total = os.cpu_count() or cores
    if cores < total:  # bound by the launcher: these cores are this rank's own
        return max(1, cores)
    return max(1, cores // max(1, local_ranks))


class World:
    """The ranks of one distributed fit (COMM_WORLD), with the few collectives ``fit`` needs.
    Made by :func:`world`; ``size == 1`` means a plain fit."""

    def __init__(self, comm, MPI):
        self.comm, self.MPI = comm, MPI
        self.rank = comm.Get_rank() if comm is not None else 0
        self.size = comm.Get_size() if comm is not None else 1
        self.allreduce_seconds = 0.0

    @property
    def root(self):
        return self.rank == 0

    def sum(self, array):
        """In-place sum over the ranks of a contiguous array."""
        self.comm.Allreduce(self.MPI.IN_PLACE, array, op=self.MPI.SUM)
        return array

    def timed_sum(self, array):
        """``sum``, its seconds added to ``allreduce_seconds`` (the runners' per-step
        collectives)."""
        t0 = time.perf_counter()
        self.comm.Allreduce(self.MPI.IN_PLACE, array, op=self.MPI.SUM)
        dt = time.perf_counter() - t0
        self.allreduce_seconds += dt
        _world["allreduce_seconds"] += dt
        return array

    def max(self, array):
        self.comm.Allreduce(self.MPI.IN_PLACE, array, op=self.MPI.MAX)
        return array

    def bcast_array(self, array):
        self.comm.Bcast(array, root=0)
        return array

    def bcast(self, obj):
        return self.comm.bcast(obj, root=0)

    def agree(self, error):
        """Collective: every rank passes the exception it met (or None).  When any rank has
        one, every rank raises: the rank's own error where it has one, a DistributedError
        naming the first failing rank elsewhere."""
        text = None if error is None else f"{type(error).__name__}: {error}"
        texts = self.comm.allgather(text)
        if error is not None:
            error._fastnn_agreed = True  # every rank raises: nothing to abort
            raise error
        for r, t in enumerate(texts):
            if t is not None:
                exc = DistributedError(f"rank {r} of {self.size} failed: {t}")
                exc._fastnn_agreed = True
                raise exc

    def check_same(self, **facts):
        """Collective: every rank must have passed the same arguments (as far as ``facts``
        tell); raises ValueError on every rank, naming the first that differs, otherwise."""
        everyone = self.comm.allgather(facts)
        for r, theirs in enumerate(everyone):
            for key in facts:
                if theirs.get(key) != everyone[0].get(key):
                    exc = ValueError(
                        f'fit(distributed="mpi") needs the same arguments on every rank: {key} '
                        f"is {everyone[0].get(key)!r} on rank 0 but {theirs.get(key)!r} on rank "
                        f"{r}"
                    )
                    exc._fastnn_agreed = True
                    raise exc

    def abort(self, exc):
        """Print this rank's error and stop every rank (MPI_Abort): for an error only this
        rank met in the middle of training, where the others wait in a collective."""
        text = "".join(traceback.format_exception(exc))
        print(
            f"fastnn: rank {self.rank} of {self.size} failed during distributed fit; aborting "
            f"every rank (MPI_Abort):\n{text}",
            file=sys.stderr,
            flush=True,
        )
        self.comm.Abort(1)

    def local_ranks(self):
        """How many ranks run on this machine (MPI's shared-memory split)."""
        local = self.comm.Split_type(self.MPI.COMM_TYPE_SHARED)
        try:
            return local.Get_size()
        finally:
            local.Free()


def world(kind):
    """The World of a fit with ``distributed=kind`` (None or "mpi").  For "mpi" under a
    launcher, the first call also sets the threads per rank (``thread_budget``) unless the
    user chose a thread count (``set_num_threads``, FASTNN_NUM_THREADS or NUMBA_NUM_THREADS)."""
    if kind is None:
        return World(None, None)
    if kind != "mpi":
        raise ValueError(f'distributed must be None or "mpi", got {kind!r}')
    MPI = _mpi(required=launched())
    if MPI is None:
        return World(None, None)
    w = World(_world["comm"], MPI)
    if w.size > 1 and not _world["threads_set"]:
        _world["threads_set"] = True
        user_set = _thread_state["threads"] is not None or "NUMBA_NUM_THREADS" in os.environ
        if not user_set:
            n = thread_budget(w.local_ranks())
            if n < numba.get_num_threads():
                set_num_threads(n)
    return w
