"""How long OpenBLAS's idle worker threads spin: shortened while fastnn holds a library at one
thread, where its workers get no work.

An OpenBLAS built with its own pthreads thread server (the one in NumPy's and SciPy's wheels)
leaves its worker threads busy-waiting for the next job after every threaded call, for
``thread_timeout`` time-stamp-counter ticks: 2**28 by default, about 0.1 s at 2.5 GHz
(``OPENBLAS_THREAD_TIMEOUT=k`` sets 2**k, read once when the library starts its threads; the
library has no call to change it later).  On a machine with few cores those spinners take the
cores a fit's threads need: right after one 512x512 NumPy product, a 54-256-256-7@512 epoch on
2 threads took 1.35x its time alone.

The value is a static variable of the library's thread server, which each idle worker reads
again on every turn of its wait loop.  fastnn finds it through the library's ELF symbol table
(NumPy's and SciPy's wheels keep ``.symtab``) and, while it holds the library at one thread
(``fastnn._threads.hold_blas_threads``: its workers get no jobs then), writes the shortest
timeout the library itself accepts (2**4 ticks), so a spinning worker goes to sleep within
microseconds; the last hold to end writes the saved value back.  A sleeping worker is woken by
the library's next threaded call, as after any pause longer than the timeout.

The library file is read as untrusted input: anything unexpected (not a 64-bit little-endian
ELF, no symbol table, the symbol missing, twice, or not a 4-byte object, an address outside a
writable mapping of that file, a value that is not a power of two between 2**4 and 2**30) and
the library is left alone.  Linux only (elsewhere nothing is found).
"""

import ctypes
import os
import struct

import numpy as np

#: the timeout written while a library is held at one thread: OpenBLAS's own lower bound
#: (OPENBLAS_THREAD_TIMEOUT=4)
SHORT_TIMEOUT = 1 << 4
_LOWEST, _HIGHEST = 1 << 4, 1 << 30

_SYMBOL = np.dtype(
    [
        ("name", "<u4"),
        ("info", "u1"),
        ("other", "u1"),
        ("shndx", "<u2"),
        ("value", "<u8"),
        ("size", "<u8"),
    ]
)
_SHT_SYMTAB = 2
_STT_OBJECT, _STT_FUNC = 1, 2
#: exported functions of the thread server, to find where the library was loaded
_ANCHORS = ("openblas_thread_timeout", "blas_thread_init")


def static_symbols(path, names):
    """{name: (value, size, type)} of the defined symbols called ``names`` in the ELF symbol
    table (``.symtab``) of the file at ``path``, each found exactly once; names found zero or
    several times are left out.  {} when the file is not a 64-bit little-endian ELF with a
    well-formed symbol table.

    The parts it needs (header, section table, symbol and string tables) are read into bytes
    of their own: no array ever views a memory map of the file, which could not be closed
    while one did (a sampling profiler holding a frame, as Dask's workers run, kept such a
    view alive and the fit that first held BLAS failed with BufferError)."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size

            def read(offset, length):
                f.seek(offset)
                data = f.read(length)
                if len(data) != length:
                    raise ValueError("short read")
                return data

            return _symbols(read, size, names)
    except (OSError, ValueError, struct.error):
        return {}


def _symbols(read, size, names):
    """``static_symbols`` on a file of ``size`` bytes read through ``read(offset, length)``."""
    if size < 64:
        return {}
    header = read(0, 64)
    if header[:4] != b"\x7fELF" or header[4] != 2 or header[5] != 1:
        return {}
    (shoff,) = struct.unpack_from("<Q", header, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", header, 0x3A)
    if shentsize != 64 or shoff + shnum * 64 > size:
        return {}
    table_bytes = read(shoff, 64 * shnum)
    sections = [struct.unpack_from("<IIQQQQIIQQ", table_bytes, 64 * i) for i in range(shnum)]
    found = {}
    for _, kind, _, _, offset, length, link, _, _, entsize in sections:
        if kind != _SHT_SYMTAB:
            continue
        if entsize != _SYMBOL.itemsize or offset + length > size or link >= shnum:
            return {}
        str_offset, str_length = sections[link][4], sections[link][5]
        if str_offset + str_length > size:
            return {}
        count = length // _SYMBOL.itemsize
        table = np.frombuffer(read(offset, count * _SYMBOL.itemsize), _SYMBOL)
        strings = read(str_offset, str_length)
        for name in names:
            key = name.encode() + b"\0"
            starts, at = [], strings.find(key)
            while at >= 0:  # every place the name ends a string (tails are shared)
                starts.append(at)
                at = strings.find(key, at + 1)
            rows = table[np.isin(table["name"], starts) & (table["shndx"] != 0)]
            if len(rows) == 1:
                row = rows[0]
                found[name] = (int(row["value"]), int(row["size"]), int(row["info"]) & 0xF)
            else:
                found.pop(name, None)
    return found


def _writable_mapping(path, address):
    """True when ``address`` lies in a writable mapping of the file at ``path`` (Linux)."""
    real = os.path.realpath(path)
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                fields = line.split(maxsplit=5)
                if len(fields) < 6 or fields[5].strip() != real:
                    continue
                lo, hi = (int(x, 16) for x in fields[0].split("-"))
                if lo <= address < hi:
                    return "w" in fields[1]
    except (OSError, ValueError):
        pass
    return False


def timeout_cell(path):
    """The loaded OpenBLAS at ``path``'s ``thread_timeout`` as a ``ctypes.c_uint`` to read and
    write, or None when it cannot be found and checked (see the module's docstring)."""
    symbols = static_symbols(path, ("thread_timeout",) + _ANCHORS)
    timeout = symbols.get("thread_timeout")
    if timeout is None or timeout[1:] != (4, _STT_OBJECT):
        return None
    try:
        library = ctypes.CDLL(path)
    except OSError:
        return None
    base = None
    for anchor in _ANCHORS:
        symbol = symbols.get(anchor)
        function = getattr(library, anchor, None)
        if symbol is None or symbol[2] != _STT_FUNC or function is None:
            continue
        base = ctypes.cast(function, ctypes.c_void_p).value - symbol[0]
        break
    if base is None:
        return None
    address = base + timeout[0]
    if address % 4 or not _writable_mapping(path, address):
        return None
    cell = ctypes.c_uint.from_address(address)
    value = cell.value
    if not _LOWEST <= value <= _HIGHEST or value & (value - 1):
        return None
    return cell
