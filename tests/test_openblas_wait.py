"""OpenBLAS's idle workers stop spinning while fastnn holds BLAS at one thread (issue 16):
the symbol reader on made-up ELF files, the timeout found in the real libraries, holds that
shorten and restore it, and spinning workers that go to sleep."""

import os
import struct
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
import pytest
from running import busy_threads
from threadpoolctl import threadpool_info

import fastnn as fnn
from fastnn import _openblas_wait as W
from fastnn import _threads

# -- a made-up ELF file: header, a symbol table and its string table ------------------------


def _elf(symbols, *, strings=None, klass=2, magic=b"\x7fELF", entsize=24, cut=None):
    """Bytes of a 64-bit little-endian ELF holding only ``.symtab`` and ``.strtab``.
    ``symbols``: (name offset, type, section index, value, size)."""
    if strings is None:
        strings = b"\0openblas_thread_timeout\0blas_thread_init\0"
    table = bytes(24)  # symbol 0 is the null symbol
    for name, kind, shndx, value, size in symbols:
        table += struct.pack("<IBBHQQ", name, kind, 0, shndx, value, size)
    header = magic + bytes([klass, 1, 1]) + bytes(9)
    sym_at = 64
    str_at = sym_at + len(table)
    sections_at = str_at + len(strings)
    header += struct.pack("<HHIQQQIHHHHHH", 3, 62, 1, 0, 0, sections_at, 0, 64, 0, 0, 64, 3, 0)
    assert len(header) == 64
    null = bytes(64)
    symtab = struct.pack("<IIQQQQIIQQ", 0, 2, 0, 0, sym_at, len(table), 2, 1, 8, entsize)
    strtab = struct.pack("<IIQQQQIIQQ", 0, 3, 0, 0, str_at, len(strings), 0, 0, 1, 0)
    data = header + table + strings + null + symtab + strtab
    return data if cut is None else data[:cut]


# name offsets in the default string table: "thread_timeout" is the tail of
# "openblas_thread_timeout", as linkers share string tails
_OPENBLAS_TT, _TT, _INIT = 1, 1 + len("openblas_"), 1 + len("openblas_thread_timeout") + 1
_GOOD = [
    (_OPENBLAS_TT, 0x12, 7, 0x1000, 9),  # global function
    (_TT, 0x01, 20, 0x2000, 4),  # local object
    (_INIT, 0x12, 7, 0x1100, 50),
]
_NAMES = ("thread_timeout", "openblas_thread_timeout", "blas_thread_init")


def _read(tmp_path, data, names=_NAMES):
    path = tmp_path / "lib.so"
    path.write_bytes(data)
    return W.static_symbols(str(path), names)


def test_symbols_of_a_made_up_library(tmp_path):
    found = _read(tmp_path, _elf(_GOOD))
    assert found == {
        "thread_timeout": (0x2000, 4, 1),
        "openblas_thread_timeout": (0x1000, 9, 2),
        "blas_thread_init": (0x1100, 50, 2),
    }


def test_a_name_defined_twice_or_not_at_all_is_left_out(tmp_path):
    twice = _GOOD + [(_TT, 0x01, 21, 0x3000, 4)]
    assert "thread_timeout" not in _read(tmp_path, _elf(twice))
    undefined = [(_TT, 0x01, 0, 0, 4)] + _GOOD[:1]  # section 0: a reference, not a definition
    assert _read(tmp_path, _elf(undefined)) == {"openblas_thread_timeout": (0x1000, 9, 2)}


def test_symbols_are_read_while_a_profiler_keeps_every_frame(tmp_path):
    """Dask's workers sample their threads' stacks, and a sampled frame keeps its locals
    alive after the call returns.  A kept frame of a NumPy function that looked at the symbol
    table must not break the read: with the table viewing a memory map of the file, closing
    the map raised BufferError and the fit that first held BLAS in a Dask task failed."""
    kept = []

    def keep(frame, event, arg):
        if event == "call":
            kept.append(frame)

    sys.setprofile(keep)
    try:
        found = _read(tmp_path, _elf(_GOOD))
    finally:
        sys.setprofile(None)
    assert kept  # the profiler saw the calls, NumPy's among them
    assert found == {
        "thread_timeout": (0x2000, 4, 1),
        "openblas_thread_timeout": (0x1000, 9, 2),
        "blas_thread_init": (0x1100, 50, 2),
    }


@pytest.mark.parametrize(
    "bad",
    [
        dict(magic=b"\x7fELG"),
        dict(klass=1),  # 32-bit
        dict(entsize=16),
        dict(cut=40),  # shorter than a header
        dict(cut=200),  # the section headers cut off
    ],
    ids=["magic", "32-bit", "entry-size", "no-header", "truncated"],
)
def test_a_malformed_file_gives_no_symbols(tmp_path, bad):
    assert _read(tmp_path, _elf(_GOOD, **bad)) == {}


def test_a_symbol_table_pointing_past_the_file_gives_no_symbols(tmp_path):
    data = bytearray(_elf(_GOOD))
    sections_at = struct.unpack_from("<Q", data, 0x28)[0]
    struct.pack_into("<Q", data, sections_at + 64 + 24, 10**9)  # .symtab's offset
    assert _read(tmp_path, bytes(data)) == {}
    assert W.static_symbols(str(tmp_path / "missing.so"), _NAMES) == {}


# -- the libraries in this process -------------------------------------------------------------


def _pthreads_openblas():
    return [
        info["filepath"]
        for info in threadpool_info()
        if info["internal_api"] == "openblas" and info.get("threading_layer") == "pthreads"
    ]


def _numpy_cell():
    paths = [p for p in _pthreads_openblas() if "numpy" in p]
    if not paths or W.timeout_cell(paths[0]) is None:
        pytest.skip("NumPy's BLAS is not an OpenBLAS with its own threads and a symbol table")
    return paths[0], W.timeout_cell(paths[0])


def test_the_timeout_found_is_the_one_the_environment_sets():
    """In a process started with OPENBLAS_THREAD_TIMEOUT=k the value read is 2**k (the
    library's own rule), and 2**28 (its default) without: the right variable was found."""
    path, _ = _numpy_cell()
    code = (
        "import numpy, sys; from fastnn import _openblas_wait as W; "
        f"print(W.timeout_cell({path!r}).value)"
    )
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    for k, want in ((None, 1 << 28), ("20", 1 << 20), ("6", 1 << 6)):
        run_env = env if k is None else dict(env, OPENBLAS_THREAD_TIMEOUT=k)
        out = subprocess.run(
            [sys.executable, "-c", code], env=run_env, capture_output=True, text=True, check=True
        )
        assert int(out.stdout) == want, (k, out.stdout, out.stderr)


def test_holds_at_one_thread_shorten_the_timeout_and_the_last_release_restores_it():
    path, cell = _numpy_cell()
    before = cell.value
    assert before != W.SHORT_TIMEOUT
    _threads.hold_blas_threads(2)
    assert cell.value == before  # workers that do get work keep spinning between jobs
    _threads.hold_blas_threads(1)
    _threads.hold_blas_threads(1)
    assert cell.value == W.SHORT_TIMEOUT
    _threads.release_blas_threads()
    assert cell.value == W.SHORT_TIMEOUT
    _threads.release_blas_threads()
    _threads.release_blas_threads()
    assert cell.value == before
    _threads.hold_blas_threads(1, but=path)  # the library spared keeps its value
    assert cell.value == before
    _threads.release_blas_threads(but=path)


def test_concurrent_holds_restore_the_timeout():
    """Holds at one and two threads, sparing the library or not, from eight Python threads at
    random: while any hold at one thread of the library lasts its timeout is the short one,
    and after the last release it is the saved one again."""
    path, cell = _numpy_cell()
    before = cell.value
    rng = np.random.default_rng(5)
    plan = rng.integers(0, 3, size=(8, 25))  # 0: one thread, 1: one thread sparing it, 2: two
    wrong = []

    def worker(i):
        for kind in plan[i]:
            n, but = (1, None) if kind == 0 else (1, path) if kind == 1 else (2, None)
            _threads.hold_blas_threads(n, but=but)
            if kind == 0 and cell.value != W.SHORT_TIMEOUT:
                wrong.append(cell.value)
            time.sleep(1e-4)
            _threads.release_blas_threads(but=but)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(worker, range(8)))
    assert not wrong
    assert cell.value == before


def test_a_hold_sends_spinning_workers_to_sleep():
    """Right after a threaded NumPy product OpenBLAS's worker spins (for about 0.1 s); after a
    hold at one thread it no longer runs within a few milliseconds."""
    _, cell = _numpy_cell()
    if _threads.usable_cores() < 2 or not os.path.isdir("/proc/self/task"):
        pytest.skip("needs two cores and Linux's /proc")
    before = numba.get_num_threads()
    fnn.set_num_threads(2)
    A = np.ones((512, 512), np.float32)
    try:
        A @ A
        spinning = busy_threads()
        A @ A
        _threads.hold_blas_threads(1)
        try:
            time.sleep(0.005)
            after_hold = min(busy_threads() for _ in range(3))
        finally:
            _threads.release_blas_threads()
    finally:
        fnn.set_num_threads(before)
    assert spinning >= 1  # without the hold the worker is running
    assert after_hold == 0
