"""Elementwise kernels at 10**7 elements against this machine's memory-copy bandwidth.

    python benchmarks/elementwise_bandwidth.py [--n 10000000] [--repeat 15] [--dtype float32]

Bandwidth counts the bytes each kernel must move: ReLU/sigmoid forward read x and write out
(2 arrays), backward read two arrays and write one (3 arrays). The reference is the best of
NumPy's ``np.copyto`` and a 2-thread Numba copy loop (read 1 + write 1 array), timed the
same way, interleaved with the kernels (median of `repeat` alternating runs). All writes
go to preallocated buffers already touched once, so page faults are not timed.
"""
import argparse
import time

# OpenBLAS picks its own kernels in a benchmark run: unset its pins before NumPy loads it
# (benchmarks/blas_env.py).
try:  # asv imports every module of benchmarks/ as part of the package
    from . import blas_env
except ImportError:  # run as a script: this folder is first on sys.path
    import blas_env

_UNPINNED = blas_env.unpin()

import numpy as np  # noqa: E402
from numba import njit, prange  # noqa: E402

from fastbp import kernels as K  # noqa: E402


@njit(parallel=True, cache=True)
def _copy(a, b):
    for i in prange(a.size):
        b[i] = a[i]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=10**7)
    p.add_argument("--repeat", type=int, default=15)
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    args = p.parse_args(argv)
    blas_env.report(_UNPINNED)
    rng = np.random.default_rng(0)
    x = rng.standard_normal(args.n).astype(args.dtype)
    g = rng.standard_normal(args.n).astype(args.dtype)
    y = np.empty_like(x)
    out = np.empty_like(x)
    K.sigmoid_forward(x, y)
    item = x.itemsize
    cases = {
        "copy (np.copyto)": (lambda: np.copyto(out, x), 2),
        "copy (Numba, 2 threads)": (lambda: _copy(x, out), 2),
        "relu_forward": (lambda: K.relu_forward(x, out), 2),
        "relu_backward": (lambda: K.relu_backward(x, g, out), 3),
        "sigmoid_forward": (lambda: K.sigmoid_forward(x, out), 2),
        "sigmoid_backward": (lambda: K.sigmoid_backward(y, g, out), 3),
    }
    times = {k: [] for k in cases}
    for f, _ in cases.values():
        f()
    for _ in range(args.repeat):
        for k, (f, _) in cases.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    bw = {k: cases[k][1] * args.n * item / np.median(v) / 1e9 for k, v in times.items()}
    ref = max(bw["copy (np.copyto)"], bw["copy (Numba, 2 threads)"])
    print(f"{args.n:,} {args.dtype} elements, median of {args.repeat} alternating runs")
    print("| kernel | ms | GB/s | % of copy |")
    print("|---|---|---|---|")
    for k, v in times.items():
        print(f"| {k} | {np.median(v) * 1e3:.2f} | {bw[k]:.1f} | {100 * bw[k] / ref:.0f} % |")


if __name__ == "__main__":
    main()
