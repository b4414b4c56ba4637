"""Kernel experiment: write a variant of a fastnn kernel, check it, time it, benchmark it.

What this script teaches
------------------------
The loop a kernel author goes through, on one example: a single-sweep ("online") row softmax
against the built-in ``fastnn.kernels.softmax_forward``.

* The built-in makes three passes over each row: the maximum, then ``exp(z - max)`` written into
  ``P`` while summing, then a scaling by ``1 / sum``.
* The variant finds the maximum and the sum in *one* pass, rescaling the running sum whenever a
  larger maximum turns up (``s * exp(old_max - new_max)``), then writes ``P`` in a second pass.
  One read of the row fewer, but ``exp`` is computed twice per element.  Which wins depends on
  the row length and on whether the data sits in cache, so: measure.

Steps, each a function below:

1. Write the kernel the project's way: a plain-Python body that takes arrays and writes into an
   output passed as its last argument (no allocation, no checks), compiled with
   ``fastnn.kernels._config.twin``, which applies the project's flags (fastmath without
   ``nnan``/``ninf``, ``cache=True``) and returns a serial and a ``parallel=True`` build.
   Scalars are made with the array's dtype so float32 stays float32.
2. Check it with ``np.testing`` against a plain-NumPy reference (and against the built-in), in
   float32 and float64, serial and parallel, on awkward shapes (one row, one column, sizes that
   are no multiple of anything) and on logits of +-1e4, where a naive ``exp`` overflows.
3. Time it against the built-in: the two are called alternately, many repeats, and the median
   is reported, so a slow spell of a shared machine hits both the same way.  The timings are
   drawn into ``kernel_experiment.png`` (time per call, relative to the built-in).

Adding the variant to the asv suite
-----------------------------------
The suite lives in ``asv_benchmarks/benchmarks/``: ``common.py`` holds the shapes
(``ROW_SHAPES``), dtypes, builds and ``set_threads()``; ``bench_kernels.py`` has one class per
kernel.  To track the variant:

* Put the body in ``kernels/softmax.py`` next to ``_softmax_forward``, compile it with
  ``softmax_online, softmax_online_parallel = twin(_softmax_online)`` and list both names in that
  module's ``__all__`` (they are then ``fastnn.kernels.softmax_online``), with a NumPy-reference
  test in ``tests/``.
* In ``bench_kernels.py`` copy the ``SoftmaxForward`` class as ``SoftmaxOnline`` and change one
  line in its ``setup``: ``self.fn = kernel("softmax_online", build)``.  ``common.kernel`` raises
  ``NotImplementedError`` on commits that lack the kernel, which asv reports as skipped.
* Run it from ``asv_benchmarks/`` (after ``asv machine --yes`` once per machine):
  ``asv run --python=same --quick --dry-run -b Softmax`` checks the benchmark against the
  working tree; ``asv continuous --factor 1.3 -b Softmax HEAD~1 HEAD`` compares two commits.
  The README's "Tracking performance" section has the rest (noise, repeats, publishing).

What it showed here (float32, serial builds, median of 41 interleaved samples on the 2-core
machine): the built-in took 3.6 us on 64x10 and 1.8 ms on 512x1024, the online variant 4.7 us
and 7.6 ms.  Its second ``exp`` per element and its data-dependent branch (which keeps the
compiler from vectorising the sweep) cost more than the pass it saves, so the built-in stays.
The parallel builds swung by 10x and more between runs on that machine, under load from other
jobs; compare them on a quiet one.

If a variant wins everywhere, replace the body of ``_softmax_forward`` instead: the existing
``SoftmaxForward`` benchmark then shows the change in asv's history, and the existing tests
check it.
"""

import argparse
import math
import os
import time

import numpy as np
from fastnn.kernels._config import twin
from numba import prange

from fastnn import kernels as K

# -- 1. the variant -------------------------------------------------------------------------


def _softmax_online(Z, P):
    """P = softmax(Z) over each row, max and sum found in one sweep.  Z, P: (n, k)."""
    n, k = Z.shape
    one = Z.dtype.type(1)
    for i in prange(n):
        m = Z[i, 0]
        s = one  # exp(Z[i, 0] - m)
        for j in range(1, k):
            z = Z[i, j]
            if z > m:
                s = s * math.exp(m - z) + one  # rescale the sum to the new maximum
                m = z
            else:
                s += math.exp(z - m)
        r = one / s
        for j in range(k):
            P[i, j] = math.exp(Z[i, j] - m) * r


softmax_online, softmax_online_parallel = twin(_softmax_online)


# -- 2. correctness -------------------------------------------------------------------------


def softmax_reference(Z):
    """Plain NumPy, float64, independent of both kernels."""
    Z = Z.astype(np.float64)
    E = np.exp(Z - Z.max(axis=1, keepdims=True))
    return E / E.sum(axis=1, keepdims=True)


def check(rng):
    shapes = [(1, 1), (1, 10), (7, 1), (5, 3), (33, 10), (64, 1000)]
    n_checks = 0
    # float32 sums of 1000 terms (rescaled as the maximum moves) drift by ~3e-6 relative
    for dtype, rtol in ((np.float32, 1e-5), (np.float64, 1e-12)):
        for shape in shapes:
            Z = (rng.standard_normal(shape) * 5).astype(dtype)
            if shape[1] > 1:
                Z[0, -1] = 1e4  # a huge logit: exp(1e4) alone overflows
                Z[-1, 0] = -1e4
            expected = softmax_reference(Z)
            builtin = np.empty_like(Z)
            K.softmax_forward(Z, builtin)
            for kernel in (softmax_online, softmax_online_parallel):
                P = np.full_like(Z, np.nan)  # catches any element the kernel forgot to write
                kernel(Z, P)
                assert P.dtype == Z.dtype
                np.testing.assert_allclose(P, expected, rtol=rtol, atol=rtol * 1e-3)
                np.testing.assert_allclose(P, builtin, rtol=4 * rtol, atol=rtol * 1e-3)
                n_checks += 1
    print(f"correctness: {n_checks} checks passed (float32 and float64, serial and parallel)")


# -- 3. timing ------------------------------------------------------------------------------


def time_interleaved(kernels, Z, repeats, sample_seconds=2e-3, budget_seconds=10.0):
    """Median seconds per call of each kernel, the kernels called alternately.

    Each sample times a loop of calls lasting about ``sample_seconds``, so that timer
    resolution does not matter for the microsecond-long calls of small shapes.  After
    ``budget_seconds`` the repeats stop early (keeping at least 3), for machines so loaded
    that a call takes 1000x its usual time.
    """
    P = np.empty_like(Z)
    for kernel in kernels.values():
        kernel(Z, P)  # compile (or load from the cache) before timing
    first = next(iter(kernels.values()))
    t0 = time.perf_counter()
    first(Z, P)
    number = max(1, int(sample_seconds / max(time.perf_counter() - t0, 1e-7)))
    samples = {name: [] for name in kernels}
    start = time.perf_counter()
    for r in range(repeats):
        if r >= 3 and time.perf_counter() - start > budget_seconds:
            break
        for name, kernel in kernels.items():
            t0 = time.perf_counter()
            for _ in range(number):
                kernel(Z, P)
            samples[name].append((time.perf_counter() - t0) / number)
    return {name: float(np.median(s)) for name, s in samples.items()}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=".", help="folder for kernel_experiment.png (default: .)")
    p.add_argument("--quick", action="store_true", help="fewer timing repeats, serial only")
    args = p.parse_args()
    rng = np.random.default_rng(0)

    check(rng)

    repeats = 5 if args.quick else 41
    # On a machine shared with other jobs the parallel builds' timings swing by 10x or more
    # (a woken thread waits for a busy core): read them across several runs.
    builds = ("serial",) if args.quick else ("serial", "parallel")
    results = []
    # the tutorial's output layer (batch 64, 10 classes), and long rows (asv's "large" shape)
    for shape in ((64, 10), (512, 1024)):
        Z = (rng.standard_normal(shape) * 3).astype(np.float32)
        for build in builds:
            suffix = "" if build == "serial" else "_parallel"
            kernels = {
                "built-in softmax_forward": getattr(K, "softmax_forward" + suffix),
                "online variant": softmax_online if build == "serial" else softmax_online_parallel,
            }
            t = time_interleaved(kernels, Z, repeats)
            base, var = t.values()
            print(
                f"float32 {shape[0]}x{shape[1]} {build:>8}: built-in {base * 1e6:8.2f} us, "
                f"online {var * 1e6:8.2f} us, speed-up {base / var:5.2f}x"
            )
            results.append((f"{shape[0]}x{shape[1]}\n{build}", base, var))
    path = os.path.join(args.out, "kernel_experiment.png")
    plot(results, path)
    print(f"wrote {path}")


def plot(results, path):
    """Time per call of the variant relative to the built-in, per shape and build."""
    import matplotlib

    matplotlib.use("Agg")  # no window: write a file
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    labels = [label for label, _, _ in results]
    x = np.arange(len(results))
    ax.bar(x - 0.2, [1.0] * len(results), 0.4, label="built-in softmax_forward", color="tab:gray")
    ax.bar(x + 0.2, [var / base for _, base, var in results], 0.4, label="online variant")
    for i, (_, base, _) in enumerate(results):
        ax.annotate(f"{base * 1e6:.1f} us", (i - 0.2, 1.0), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x, labels)
    top = max(1.0, *(var / base for _, base, var in results))
    ax.set(ylabel="time per call / built-in (lower is faster)", title="float32 row softmax")
    ax.set_ylim(0, 1.4 * top)  # room for the legend above the bars
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    main()
