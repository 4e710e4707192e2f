"""Softmax-cross-entropy loss and its gradient over (batch, 10) logits, over batch size.

fastbp: the fused kernel ``softmax_cross_entropy(x, t, dx) -> loss`` (one pass per row, into
a caller-given ``dx``; what a kernel user gets). NumPy: the book's ``softmax`` +
``cross_entropy_error`` + ``SoftmaxWithLoss.backward`` (``dx[arange(n), t] -= 1``,
``/ n``), writing the gradient into the same kind of buffer. Labels are integer class
indices (intp), logits those of the book's network on MNIST-like images. Threads:
``common.THREADS``, set in ``setup``; the kernel runs once in ``setup``: no compilation is
timed.
"""
import numpy as np

from . import common
from .common import BATCH_SIZES, DTYPES, IMPLS, SPEEDUP_BATCH_SIZES


def _case(n, dtype):
    return common.logits(n, dtype), common.labels(n)


def _kernel(impl):
    if impl == "numpy":
        return common.np_softmax_cross_entropy
    from fastbp import kernels as K
    return K.softmax_cross_entropy


class SoftmaxCrossEntropy:
    """Mean loss and ``dx = (softmax(x) - onehot(t)) / n``."""
    params = [BATCH_SIZES, IMPLS, DTYPES]
    param_names = ["batch_size", "impl", "dtype"]
    timeout = 120

    def setup(self, n, impl, dtype):
        common.check_impl(impl)
        common.set_threads()
        self.x, self.t = _case(n, dtype)
        self.dx = np.empty_like(self.x)
        self.f = _kernel(impl)
        common.warm(self.time_loss_and_grad)

    def time_loss_and_grad(self, *_):
        self.f(self.x, self.t, self.dx)


class Speedup:
    """NumPy time / fastbp time for softmax-cross-entropy with its gradient."""
    params = [SPEEDUP_BATCH_SIZES, DTYPES]
    param_names = ["batch_size", "dtype"]
    unit = "x"
    timeout = 120
    processes = 1  # each call already alternates 15 samples of both sides

    def setup(self, n, dtype):
        n = int(n)
        common.set_threads()
        x, t = _case(n, dtype)
        d1, d2 = np.empty_like(x), np.empty_like(x)
        nk, fk = _kernel("numpy"), _kernel("fastbp")
        self.pair = (lambda: nk(x, t, d1), lambda: fk(x, t, d2))
        common.warm(*self.pair)

    def track_speedup_softmax_cross_entropy(self, *_):
        return common.speedup(*self.pair)
