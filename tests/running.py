"""Which other threads of this process are running now, read from /proc (Linux): how the
tests see OpenBLAS's idle workers spin, and stop."""

import os
import threading
import time

from fastnn._threads import proc_stat

_TASKS = "/proc/self/task"

#: a thread counts as busy when it runs in two looks this far apart
BUSY_CONFIRM_SECONDS = 0.0003


def _running_threads():
    """Ids of the other threads of this process that are running or runnable now (empty where
    /proc is not available)."""
    try:
        tids = os.listdir(_TASKS)
    except OSError:
        return set()
    me = str(threading.get_native_id())
    running = set()
    for tid in tids:
        if tid == me:
            continue
        stat = proc_stat(f"{_TASKS}/{tid}/stat")
        if stat is not None and stat[:1] == b"R":
            running.add(tid)
    return running


def busy_threads():
    """How many other threads of this process keep running (seen running twice,
    BUSY_CONFIRM_SECONDS apart)."""
    first = _running_threads()
    if not first:
        return 0
    time.sleep(BUSY_CONFIRM_SECONDS)
    return len(first & _running_threads())
