"""Direct calls to the BLAS ``gemm`` that SciPy ships, from inside numba kernels.

numba's own ``np.dot`` cannot accumulate into its output (no ``beta``) and wants
contiguous operands.  Calling ``?gemm`` directly gives ``C = alpha op(A) op(B) + beta C``
with either operand transposed and no temporaries, which is exactly what the backward
pass needs (``dW += X.T @ dZ``, ``dX = dZ @ W.T``).

The Fortran symbols are registered with LLVM under fixed names and declared as external
functions, so kernels that call them can still be cached on disk (a ctypes function
pointer would be a "dynamic global" and disable caching).
"""

import llvmlite.binding as ll
import numpy as np
from numba import types
from numba.core import cgutils
from numba.extending import get_cython_function_address, intrinsic

from ._config import njit

for _name in ("sgemm", "dgemm"):
    ll.add_symbol("fastnn_" + _name, get_cython_function_address("scipy.linalg.cython_blas", _name))

_GEMM_SIG = types.void(*([types.voidptr] * 13))
_sgemm = types.ExternalFunction("fastnn_sgemm", _GEMM_SIG)
_dgemm = types.ExternalFunction("fastnn_dgemm", _GEMM_SIG)

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
def gemm(trans_a, trans_b, alpha, A, B, beta, C):
    """Row-major ``C = alpha * op(A) @ op(B) + beta * C`` through BLAS.

    A, B, C are C-contiguous 2-D arrays of one dtype (float32 or float64); ``op`` is the
    transpose when the flag is true.  Row-major ``C = op(A) op(B)`` is column-major
    ``C.T = op(B).T op(A).T``, so the operands are handed to Fortran swapped.
    """
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
    lda = np.int32(max(A.shape[1], 1))
    ldb = np.int32(max(B.shape[1], 1))
    ldc = np.int32(n)
    if C.itemsize == 4:
        _sgemm(
            _on_stack(tb),
            _on_stack(ta),
            _on_stack(np.int32(n)),
            _on_stack(np.int32(m)),
            _on_stack(np.int32(k)),
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
            _on_stack(np.int32(n)),
            _on_stack(np.int32(m)),
            _on_stack(np.int32(k)),
            _on_stack(np.float64(alpha)),
            _data(B),
            _on_stack(ldb),
            _data(A),
            _on_stack(lda),
            _on_stack(np.float64(beta)),
            _data(C),
            _on_stack(ldc),
        )
