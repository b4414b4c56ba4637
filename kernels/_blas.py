"""Direct calls to BLAS ``gemm`` from inside numba kernels.

numba's own ``np.dot`` cannot accumulate into its output (no ``beta``) and wants
contiguous operands.  Calling ``?gemm`` directly gives ``C = alpha op(A) op(B) + beta C``
with either operand transposed and no temporaries, which is exactly what the backward
pass needs (``dW += X.T @ dZ``, ``dX = dZ @ W.T``).

Which BLAS: the one NumPy itself links (numpy's wheels bundle an ILP64 OpenBLAS, with
symbols ``scipy_sgemm_64_``), found through threadpoolctl; SciPy's ``cython_blas`` when that
is not found (other builds, other platforms).  Measured on the 2-core reference machine
(float32, called from numba, median of 5 with 0.15 s pauses so neither library's idle
spinning threads disturb the other): 64x784x100 forward 121 us with NumPy's OpenBLAS 0.3.31
vs 141 us with SciPy's 0.3.30 (2 threads), 151 vs 205 us (1 thread); the 64x100x10 products
2.9 vs 3.3-4.7 us; 256x784x512 1.76 vs 1.97 ms; 512x1024x1024 about equal.  Sharing NumPy's
library also leaves one BLAS thread pool in the process instead of two: two pools' idle
threads spin against each other when NumPy and fastnn products alternate.

The integer arguments are passed as pointers to int64 values.  An ILP64 BLAS reads all 8
bytes; an LP64 one reads the first 4, which on a little-endian machine (every platform numba
supports) are the same value, so one compiled kernel serves both kinds of library.

The Fortran symbols are registered with LLVM under fixed names and declared as external
functions, so kernels that call them can still be cached on disk (a ctypes function
pointer would be a "dynamic global" and disable caching).
"""

import ctypes
import os

import llvmlite.binding as ll
import numpy as np
from numba import types
from numba.core import cgutils
from numba.extending import get_cython_function_address, intrinsic

from ._config import njit, njit_inline

#: symbol names of ``sgemm``/``dgemm`` in the BLAS builds NumPy ships with, best first
_NUMPY_GEMM_SYMBOLS = (
    ("scipy_sgemm_64_", "scipy_dgemm_64_"),  # numpy >= 2 wheels (scipy-openblas64)
    ("sgemm_64_", "dgemm_64_"),  # numpy 1.x wheels (openblas64_)
)


def _numpy_gemm_addresses():
    """(library path, sgemm address, dgemm address) of NumPy's own BLAS, or None."""
    try:
        from threadpoolctl import ThreadpoolController

        libs = ThreadpoolController().select(user_api="blas").lib_controllers
    except Exception:  # threadpoolctl missing or unable to inspect this platform
        return None
    numpy_root = os.path.dirname(os.path.dirname(os.path.abspath(np.__file__)))
    for lib in libs:
        path = lib.filepath or ""
        if not path.startswith(numpy_root) or "numpy" not in path:
            continue
        try:
            handle = ctypes.CDLL(path)
        except OSError:
            continue
        for s_name, d_name in _NUMPY_GEMM_SYMBOLS:
            try:
                s_fn, d_fn = getattr(handle, s_name), getattr(handle, d_name)
            except AttributeError:
                continue
            as_int = ctypes.c_void_p
            return path, ctypes.cast(s_fn, as_int).value, ctypes.cast(d_fn, as_int).value
    return None


def _register_gemm():
    found = None if os.environ.get("FASTNN_BLAS") == "scipy" else _numpy_gemm_addresses()
    if found is None:
        # SciPy's LP64 BLAS: imported only here, since scipy.linalg costs ~150 ms of import
        found = (
            "scipy.linalg.cython_blas",
            get_cython_function_address("scipy.linalg.cython_blas", "sgemm"),
            get_cython_function_address("scipy.linalg.cython_blas", "dgemm"),
        )
    path, s_addr, d_addr = found
    ll.add_symbol("fastnn_sgemm_i64", s_addr)
    ll.add_symbol("fastnn_dgemm_i64", d_addr)
    return path


#: where the kernels' gemm comes from (a library path, or scipy.linalg.cython_blas)
BLAS_SOURCE = _register_gemm()

_GEMM_SIG = types.void(*([types.voidptr] * 13))
_sgemm = types.ExternalFunction("fastnn_sgemm_i64", _GEMM_SIG)
_dgemm = types.ExternalFunction("fastnn_dgemm_i64", _GEMM_SIG)

_N = np.uint8(ord("N"))
_T = np.uint8(ord("T"))


@intrinsic
def _on_stack(typingctx, value):
    """Pointer to a stack copy of a scalar (Fortran takes every argument by reference)."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(cgutils.alloca_once_value(builder, args[0]), cgutils.voidptr_t)

    return types.voidptr(value), codegen


@intrinsic
def _data(typingctx, array):
    """Pointer to an array's first element."""

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        return builder.bitcast(ary.data, cgutils.voidptr_t)

    return types.voidptr(array), codegen


@njit
def _leading_dim(A):
    """Elements between the starts of two rows of A (its column count for a single row)."""
    if A.shape[0] > 1:
        return np.int64(A.strides[0] // A.itemsize)
    return np.int64(max(A.shape[1], 1))


@njit_inline
def gemm(trans_a, trans_b, alpha, A, B, beta, C):
    """Row-major ``C = alpha * op(A) @ op(B) + beta * C`` through BLAS.

    A, B, C are 2-D arrays of one dtype (float32 or float64) whose rows are contiguous: C
    arrays, or column ranges of them such as ``H[:, p0:p1]`` (the row stride becomes the
    leading dimension; a view whose columns are strided would be read wrongly, and only the
    fit kernels, which never make one, pass views).  ``op`` is the transpose when the flag is
    true.  Row-major ``C = op(A) op(B)`` is column-major ``C.T = op(B).T op(A).T``, so the
    operands are handed to Fortran swapped.
    """
    # (inlined into its callers, so that the flags reach ``_gemm`` as run-time booleans: a
    # constant True or False would make numba compile ``_gemm`` once per combination; and the
    # arrays as ``[:, :]`` views, of layout "A" whatever their own, so that a column range
    # and a whole block do not compile it twice either: 0.5-0.8 s of a cold first fit)
    _gemm(bool(trans_a), bool(trans_b), float(alpha), A[:, :], B[:, :], float(beta), C[:, :])


@njit
def _gemm(trans_a, trans_b, alpha, A, B, beta, C):
    """``gemm`` with its flags typed as plain booleans."""
    m, n = C.shape
    k = A.shape[0] if trans_a else A.shape[1]
    if m == 0 or n == 0:
        return
    if k == 0:
        for i in range(m):
            for j in range(n):
                C[i, j] = beta * C[i, j]
        return
    ta = _T if trans_a else _N
    tb = _T if trans_b else _N
    lda = _leading_dim(A)
    ldb = _leading_dim(B)
    ldc = _leading_dim(C)
    if C.itemsize == 4:
        _sgemm(
            _on_stack(tb),
            _on_stack(ta),
            _on_stack(np.int64(n)),
            _on_stack(np.int64(m)),
            _on_stack(np.int64(k)),
            _on_stack(np.float32(alpha)),
            _data(B),
            _on_stack(ldb),
            _data(A),
            _on_stack(lda),
            _on_stack(np.float32(beta)),
            _data(C),
            _on_stack(ldc),
        )
    else:
        _dgemm(
            _on_stack(tb),
            _on_stack(ta),
            _on_stack(np.int64(n)),
            _on_stack(np.int64(m)),
            _on_stack(np.int64(k)),
            _on_stack(np.float64(alpha)),
            _data(B),
            _on_stack(ldb),
            _data(A),
            _on_stack(lda),
            _on_stack(np.float64(beta)),
            _data(C),
            _on_stack(ldc),
        )
