"""Reading files fastnn did not necessarily write: ``.npz`` archives and JSON, in bounded time
and memory.

Everything a file declares (entry sizes, array shapes, JSON nesting) is checked before anything
of that size is allocated or decompressed.  An archive is opened with :mod:`zipfile` (never
``np.load`` on the whole file): only the entries asked for are read, each one's ``.npy`` header
first (a few hundred bytes), then its data streamed in bounded pieces straight into an array
the caller sized from what it expects.  A compression bomb therefore produces at most the bytes
its header declares, and a header's declaration is held against the entry's compressed size
(deflate cannot expand more than ~1032:1) and the file's length before it is believed.

Errors are :class:`ValueError` with the file name and what is wrong; callers add context.
"""

import json
import os
import re
import zipfile

import numpy as np
from numpy.lib import format as npy_format

#: longest ``.npy`` header accepted (numpy's own default limit)
MAX_NPY_HEADER = 10_000
#: deflate's largest expansion is about 1032:1; a declared size beyond this ratio to the
#: compressed size cannot be the real content of the entry
MAX_DEFLATE_RATIO = 1100
#: bytes streamed per read while filling an array
CHUNK = 1 << 20
#: deepest JSON nesting accepted (a fastnn file needs ~4 per nested Sequential level)
MAX_JSON_DEPTH = 64
#: JSON integers beyond this magnitude are refused (step counts, sizes: far below it)
MAX_JSON_INT = 2**62

_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_NPY_MAGIC = b"\x93NUMPY"


class NpyInfo:
    """What an entry's ``.npy`` header declares."""

    __slots__ = ("name", "shape", "dtype", "fortran", "offset", "nbytes")

    def __init__(self, name, shape, dtype, fortran, offset, nbytes):
        self.name, self.shape, self.dtype = name, shape, dtype
        self.fortran, self.offset, self.nbytes = fortran, offset, nbytes


class Archive:
    """An ``.npz`` file opened for bounded reading.  Use as a context manager."""

    def __init__(self, path):
        self.path = os.fspath(path)
        self.where = repr(self.path)
        try:
            self._file = open(self.path, "rb")  # noqa: SIM115 (closed by close())
        except FileNotFoundError:
            raise FileNotFoundError(f"no such file: {self.path!r}") from None
        try:
            self.size = os.fstat(self._file.fileno()).st_size
            magic = self._file.read(6)
            if magic.startswith(_NPY_MAGIC):
                raise ValueError(
                    f"{self.where} holds a single .npy array, not a fastnn checkpoint (.npz)"
                )
            if magic[:4] not in _ZIP_MAGIC:
                raise ValueError(
                    f"{self.where} is not a readable fastnn file (.npz expected): it is not a "
                    "zip archive"
                )
            self._file.seek(0)
            try:
                self._zip = zipfile.ZipFile(self._file)
            except Exception as exc:  # BadZipFile, struct errors, huge counts...
                raise ValueError(
                    f"{self.where} is not a readable fastnn file (.npz expected): "
                    f"{type(exc).__name__}: {exc}"
                ) from None
            self._entries = {}
            for info in self._zip.infolist():
                self._entries[info.filename] = info
        except BaseException:
            self._file.close()
            raise

    def close(self):
        self._zip.close()
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def has(self, name):
        return name + ".npy" in self._entries

    def _info(self, name):
        info = self._entries.get(name + ".npy")
        if info is None:
            raise ValueError(f"{self.where}: missing array {name!r}")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise ValueError(
                f"{self.where}: array {name!r} uses zip compression method "
                f"{info.compress_type}; only stored and deflated entries are read"
            )
        if info.flag_bits & 0x1:
            raise ValueError(f"{self.where}: array {name!r} is encrypted")
        if info.compress_size > self.size:
            raise ValueError(
                f"{self.where}: array {name!r} declares {info.compress_size} compressed bytes, "
                f"more than the file's {self.size}"
            )
        limit = (
            info.compress_size
            if info.compress_type == zipfile.ZIP_STORED
            else (info.compress_size * MAX_DEFLATE_RATIO + 1024)
        )
        if info.file_size > limit:
            raise ValueError(
                f"{self.where}: array {name!r} declares {info.file_size} bytes from "
                f"{info.compress_size} compressed bytes, more than the compression can hold"
            )
        return info

    def _open(self, info):
        try:
            return self._zip.open(info)
        except Exception as exc:
            raise ValueError(
                f"{self.where}: cannot read entry {info.filename!r}: {type(exc).__name__}: {exc}"
            ) from None

    def header(self, name):
        """The :class:`NpyInfo` of entry ``name`` (without ``.npy``), reading only its header;
        the declared data size must be the entry's size minus the header."""
        info = self._info(name)
        f = self._open(info)
        try:
            with f:
                version = npy_format.read_magic(f)
                if version == (1, 0):
                    shape, fortran, dtype = npy_format.read_array_header_1_0(
                        f, max_header_size=MAX_NPY_HEADER
                    )
                elif version in ((2, 0), (3, 0)):
                    shape, fortran, dtype = npy_format.read_array_header_2_0(
                        f, max_header_size=MAX_NPY_HEADER
                    )
                else:
                    raise ValueError(f"unknown .npy format version {version}")
                offset = f.tell()
        except ValueError as exc:
            raise ValueError(
                f"{self.where}: array {name!r} has a bad .npy header ({exc})"
            ) from None
        except Exception as exc:  # truncated or corrupt compressed data, CRC, zlib
            raise ValueError(
                f"{self.where}: array {name!r} cannot be read: {type(exc).__name__}: {exc}"
            ) from None
        if not all(isinstance(d, int) and d >= 0 for d in shape):
            raise ValueError(f"{self.where}: array {name!r} declares a bad shape {shape!r}")
        if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None:
            raise ValueError(
                f"{self.where}: array {name!r} has dtype {dtype}, which fastnn never writes"
            )
        count = 1
        for d in shape:
            count *= d
        nbytes = count * dtype.itemsize
        if offset + nbytes != info.file_size:
            raise ValueError(
                f"{self.where}: array {name!r} declares shape {shape} of {dtype} ({nbytes} "
                f"bytes) but its entry holds {info.file_size - offset} bytes of data"
            )
        return NpyInfo(name, shape, dtype, fortran, offset, nbytes)

    def read_into(self, head, out):
        """Stream the data of the entry described by ``head`` into ``out``, an array of the
        header's shape and dtype (no conversion); returns ``out``."""
        if out.shape != head.shape or out.dtype != head.dtype:
            raise ValueError(
                f"{self.where}: array {head.name!r} is {head.dtype} {head.shape}, expected "
                f"{out.dtype} {out.shape}"
            )
        if head.fortran or not out.flags.c_contiguous:
            buf = np.empty(head.shape[::-1] if head.fortran else head.shape, head.dtype)
            self._stream(head, buf)
            out[...] = buf.T if head.fortran else buf
        else:
            self._stream(head, out)
        return out

    def _stream(self, head, target):
        info = self._info(head.name)
        view = memoryview(target.reshape(-1).view(np.uint8))
        try:
            with self._open(info) as f:
                skip = head.offset
                while skip:
                    got = f.read(min(skip, CHUNK))
                    if not got:
                        raise EOFError("entry ends inside the header")
                    skip -= len(got)
                pos = 0
                while pos < head.nbytes:
                    got = f.readinto(view[pos : min(pos + CHUNK, head.nbytes)])
                    if not got:
                        raise EOFError(f"entry ends after {pos} of {head.nbytes} data bytes")
                    pos += got
                if f.read(1):  # also makes zipfile check the CRC at the end
                    raise ValueError("entry holds more data than its header declares")
        except ValueError as exc:
            raise ValueError(f"{self.where}: array {head.name!r}: {exc}") from None
        except Exception as exc:  # BadZipFile (CRC), zlib.error, EOFError
            raise ValueError(
                f"{self.where}: array {head.name!r} is damaged: {type(exc).__name__}: {exc}"
            ) from None

    def read_small(self, name, max_bytes):
        """A whole small array (e.g. the JSON metadata) after checking its header declares
        at most ``max_bytes`` of data."""
        head = self.header(name)
        if head.nbytes > max_bytes:
            raise ValueError(
                f"{self.where}: array {name!r} declares {head.nbytes} bytes; at most "
                f"{max_bytes} expected"
            )
        return self.read_into(head, np.empty(head.shape, head.dtype))


# -- JSON ----------------------------------------------------------------------------------------
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)


def json_depth(text):
    """Deepest nesting of [ and { in ``text``, outside strings: linear time, and memory in
    blocks of 1 MB whatever the length."""
    bare = _STRING.sub("", text).encode("utf-8", "surrogatepass").translate(None, _NOT_BRACKET)
    depth = deepest = 0
    for start in range(0, len(bare), CHUNK):
        codes = np.frombuffer(bare, np.uint8, min(CHUNK, len(bare) - start), start)
        step = np.where((codes == ord("[")) | (codes == ord("{")), 1, -1).astype(np.int32)
        level = np.cumsum(step, dtype=np.int64)
        deepest = max(deepest, depth + int(level.max()))
        depth += int(level[-1])
    return deepest


_NOT_BRACKET = bytes(c for c in range(256) if chr(c) not in "[]{}")


def _parse_int(s):
    if len(s.lstrip("-")) > 19 or abs(int(s)) > MAX_JSON_INT:
        raise ValueError(f"integer {s[:30]}{'...' if len(s) > 30 else ''} out of range")
    return int(s)


def _parse_float(s):
    value = float(s)
    if not np.isfinite(value):
        raise ValueError(f"number {s[:30]} out of range")
    return value


def _parse_constant(name):
    if name == "NaN":
        raise ValueError("NaN is not accepted")
    return float(name)  # Infinity, -Infinity: callers refuse them where a finite value belongs


def _pairs(pairs):
    out = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def loads(text, where):
    """Parse JSON with bounded nesting and numbers (integers within +-2**62, finite decimals,
    no NaN, no duplicate keys); ValueError naming ``where`` otherwise."""
    depth = json_depth(text)
    if depth > MAX_JSON_DEPTH:
        raise ValueError(f"{where}: JSON nested {depth} levels deep (at most {MAX_JSON_DEPTH})")
    try:
        return json.loads(
            text,
            parse_int=_parse_int,
            parse_float=_parse_float,
            parse_constant=_parse_constant,
            object_pairs_hook=_pairs,
        )
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"{where}: not valid JSON ({exc})") from None
