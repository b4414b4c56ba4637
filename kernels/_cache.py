"""Keeps numba's on-disk cache of the kernels in step with the kernel sources.

numba caches each ``cache=True`` function under the name of the file that defines it and
checks only that file's modification time before loading it.  A kernel in one file that calls
a helper from another (``epoch.train_batches`` inlines ``activations.bias_activate``, for
example) therefore keeps the old helper's machine code after the helper's file changes: the
result is silently the old behaviour.  An editable install that is updated with ``git pull``
meets exactly that.

``refresh`` closes the gap for the whole package at once: it hashes the contents of every
source file of the kernels and, when the hash differs from the one stamped in the cache folder,
deletes the folder's cached machine code (``*.nbi`` index and ``*.nbc`` data files) before any
kernel is loaded.  Everything then compiles afresh once.  Hashing the ~100 kB of sources costs
well under a millisecond per import.
"""

import hashlib
import os
import pathlib

STAMP = "fastnn-kernel-sources.sha256"


def sources_digest(folder):
    """SHA-256 over the names and contents of the ``*.py`` files in ``folder``."""
    h = hashlib.sha256()
    for path in sorted(pathlib.Path(folder).glob("*.py")):
        h.update(path.name.encode() + b"\0")
        h.update(path.read_bytes())
        h.update(b"\0")
    return h.hexdigest()


def drop_stale(cache_dir, digest):
    """Delete numba's cache files in ``cache_dir`` unless they were stamped with ``digest``;
    then stamp it.  Returns the number of files deleted.  Never raises on a read-only or
    missing folder: numba then compiles in memory, and there is nothing stale to load."""
    cache_dir = pathlib.Path(cache_dir)
    stamp = cache_dir / STAMP
    try:
        if stamp.read_text().strip() == digest:
            return 0
    except OSError:
        pass
    removed = 0
    try:
        names = os.listdir(cache_dir)
    except OSError:
        names = []
    for name in names:
        if name.endswith((".nbi", ".nbc")):
            try:
                os.remove(cache_dir / name)
                removed += 1
            except OSError:
                pass  # another process got there first
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = cache_dir / f"{STAMP}.{os.getpid()}"
        tmp.write_text(digest + "\n")
        os.replace(tmp, stamp)  # atomic: a concurrent reader sees the old stamp or the new
    except OSError:
        pass
    return removed


def refresh(folder, dispatcher):
    """Apply ``drop_stale`` to the cache folder numba uses for ``dispatcher`` (any cached
    kernel defined in ``folder``: all of a folder's kernels share one cache folder)."""
    cache = getattr(dispatcher, "_cache", None)
    cache_dir = getattr(cache, "cache_path", None)
    if cache_dir is None:  # caching off, or a numba without this attribute
        return 0
    return drop_stale(cache_dir, sources_digest(folder))
