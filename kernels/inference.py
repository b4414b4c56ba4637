"""The whole network's forward pass for ``predict``, split by rows across the threads.

``forward_rows_parallel`` gives each of ``n_chunks`` threads a contiguous share of the rows and
runs every layer on that share, ``block`` rows at a time, with BLAS at one thread (the caller
holds it there): the same split as the fit's data-parallel build.  The layer-by-layer predict
instead runs each product on BLAS's own threads and the bias and activation passes serially.

Why rows: inference needs no reduction across rows, so the threads never wait for each other
inside a call, and the products run in numba's OpenMP pool instead of OpenBLAS's.  Right
after torch work that matters most: OpenBLAS's threads then share the cores with the workers
torch's OpenMP leaves spinning for milliseconds, and a product split between two threads
waits for the slower one (fastnn._fastpath.ROW_SPLIT_MIN_WORK has the measurements).
"""

import numpy as np
from numba import prange

from ._config import njit, twin
from .activations import IDENTITY, activate_inplace
from .data import all_finite
from .dense import dense_forward


@njit
def forward_share(X, params, sizes, w_off, b_off, codes, alphas, zero_b, check_first, r0, r1,
                  block, work, out):  # fmt: skip
    """Rows r0..r1 of ``_forward_rows``, ``block`` rows at a time, in ``work`` (1-D, two blocks
    of the widest hidden layer).  Returns False when ``check_first`` is set and the first
    layer's pre-activations hold a NaN or inf.

    A serial function of its own, called from the parallel loop: numba's parallel build then
    handles the loop over shares alone.  With this body inlined in it, numba 0.68's parallel
    build computed some networks wrongly (784-1024-10 and 10-64-10 among them: every output
    off, while the serial build of the same body was right), through the hidden layer's
    array carried from one layer to the next.  Each layer is the serial ``dense_forward``,
    the kernel the layer-by-layer predict runs, so ``fastnn._fastpath.FastForward._stand_in``
    can make the same calls from Python (the same bits) while a helper compiles this."""
    n_layers = sizes.shape[0] - 1
    half = work.shape[0] // 2
    finite = True
    for s in range(r0, r1, block):
        e = min(s + block, r1)
        rows = e - s
        for k in range(n_layers):
            n_in, n_out = sizes[k], sizes[k + 1]
            if k == 0:
                H = X[s:e]
            else:
                q = ((k - 1) % 2) * half
                H = work[q : q + rows * n_in].reshape((rows, n_in))
            if k == n_layers - 1:
                A = out[s:e]
            else:
                p = (k % 2) * half
                A = work[p : p + rows * n_out].reshape((rows, n_out))
            W = params[w_off[k] : w_off[k] + n_in * n_out].reshape((n_in, n_out))
            b = zero_b[:n_out] if b_off[k] < 0 else params[b_off[k] : b_off[k] + n_out]
            if k == 0 and check_first:
                dense_forward(H, W, b, IDENTITY, 0.0, A)
                if not all_finite(A):
                    finite = False
                activate_inplace(A, codes[k], alphas[k])
            else:
                dense_forward(H, W, b, codes[k], alphas[k], A)
    return finite


def _forward_rows(X, params, sizes, w_off, b_off, codes, alphas, zero_b, check_first, n_chunks,
                  block, work, out, flags):  # fmt: skip
    """out = the network's output for X, computed in ``n_chunks`` row shares.

    X (n, sizes[0]); layer k's weights are ``params[w_off[k]:]`` as a (sizes[k], sizes[k+1])
    row-major block, its bias ``params[b_off[k]:]`` (``zero_b``, at least as long as the
    widest layer, when ``b_off[k]`` is -1), its activation ``codes[k]`` with slope
    ``alphas[k]``; out (n, sizes[-1]).  ``work`` (n_chunks, 2 * block * the widest hidden
    layer) holds each share's hidden activations, ``block`` rows at a time.  With
    ``check_first``, ``flags[c]`` is set to 1 when share c's first-layer pre-activations hold a
    NaN or inf (a non-finite value in a row of X makes that row's pre-activations non-finite,
    so X itself need not be read twice); ``flags`` is left alone otherwise."""
    n = X.shape[0]
    for c in prange(n_chunks):
        ci = np.int64(c)  # (numba types a prange index as uint64 in the outlined region)
        r0 = ci * n // n_chunks
        r1 = (ci + 1) * n // n_chunks
        finite = forward_share(
            X, params, sizes, w_off, b_off, codes, alphas, zero_b, check_first, r0, r1, block,
            work[ci], out,
        )  # fmt: skip
        if not finite:
            flags[ci] = 1


forward_rows, forward_rows_parallel = twin(_forward_rows)

__all__ = ["forward_rows", "forward_rows_parallel", "forward_share"]
