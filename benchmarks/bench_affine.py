"""Affine layer ``x @ W + b`` of the book's first layer (784 -> 50), over batch size.

fastbp: the raw kernels ``affine_forward(x, W, b, out)`` and
``affine_backward(dout, x, W, dW, db[, dx])`` writing into caller-given buffers (what a kernel
user gets). NumPy: ``np.dot(x, W, out=out); out += b`` and ``np.dot(x.T, dout, out=dW)``,
``np.sum(dout, 0, out=db)``, ``np.dot(dout, W.T, out=dx)``. Backward is timed with ``dx``
(a hidden layer) and without it (the first layer, whose input gradient nobody needs).
Inputs: MNIST-like images (see ``common.py``). Threads: ``common.THREADS`` (Numba and BLAS),
set in ``setup``. Kernels are called once in ``setup``: no compilation is timed.
"""
import numpy as np

from . import common
from .common import BATCH_SIZES, DTYPES, IMPLS, SPEEDUP_BATCH_SIZES, D, H


def _case(n, dtype):
    x = common.images(n, dtype)
    W, b, _, _ = common.weights(dtype)
    dout = common.upstream((n, H), dtype)
    return x, W, b, dout


def _kernels(impl):
    if impl == "numpy":
        return common.np_affine_forward, common.np_affine_backward
    from fastbp import kernels as K
    return K.affine_forward, K.affine_backward


class Affine:
    """Forward and backward of ``x @ W + b``, x (batch, 784), W (784, 50)."""
    params = [BATCH_SIZES, IMPLS, DTYPES]
    param_names = ["batch_size", "impl", "dtype"]
    timeout = 120

    def setup(self, n, impl, dtype):
        common.check_impl(impl)
        common.set_threads()
        self.x, self.W, self.b, self.dout = _case(n, dtype)
        self.out = np.empty((n, H), dtype)
        self.dW, self.db = np.empty((D, H), dtype), np.empty(H, dtype)
        self.dx = np.empty((n, D), dtype)
        self.fwd, self.bwd = _kernels(impl)
        common.warm(self.time_forward, self.time_backward, self.time_backward_no_dx)

    def time_forward(self, *_):
        self.fwd(self.x, self.W, self.b, self.out)

    def time_backward(self, *_):
        self.bwd(self.dout, self.x, self.W, self.dW, self.db, self.dx)

    def time_backward_no_dx(self, *_):
        self.bwd(self.dout, self.x, self.W, self.dW, self.db)


class Speedup:
    """NumPy time / fastbp time for the affine kernels (min over alternating samples)."""
    params = [SPEEDUP_BATCH_SIZES, DTYPES]
    param_names = ["batch_size", "dtype"]
    unit = "x"
    timeout = 120
    processes = 1  # each call already alternates 15 samples of both sides

    def setup(self, n, dtype):
        n = int(n)
        common.set_threads()
        x, W, b, dout = _case(n, dtype)
        bufs = [(np.empty((n, H), dtype), np.empty((D, H), dtype), np.empty(H, dtype),
                 np.empty((n, D), dtype)) for _ in range(2)]
        (nf, nb), (ff, fb) = _kernels("numpy"), _kernels("fastbp")
        (o1, dW1, db1, dx1), (o2, dW2, db2, dx2) = bufs
        self.pairs = {
            "forward": (lambda: nf(x, W, b, o1), lambda: ff(x, W, b, o2)),
            "backward": (lambda: nb(dout, x, W, dW1, db1, dx1),
                         lambda: fb(dout, x, W, dW2, db2, dx2)),
            "backward_no_dx": (lambda: nb(dout, x, W, dW1, db1),
                               lambda: fb(dout, x, W, dW2, db2)),
        }
        common.warm(*(f for pair in self.pairs.values() for f in pair))

    def track_speedup_affine_forward(self, *_):
        return common.speedup(*self.pairs["forward"])

    def track_speedup_affine_backward(self, *_):
        return common.speedup(*self.pairs["backward"])

    def track_speedup_affine_backward_no_dx(self, *_):
        return common.speedup(*self.pairs["backward_no_dx"])
