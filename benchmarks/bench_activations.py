"""ReLU and sigmoid, forward and backward, over batch size: fastbp kernels vs plain NumPy.

The fastbp side times the raw ``@njit`` kernels of :mod:`fastbp.kernels` writing into
caller-given buffers (what a kernel user gets; no argument checks). The NumPy side is the
book's operation written with in-place ufuncs into the same buffers (see ``common.py``).
Inputs: the hidden layer of the book's 784-50-10 network, ``(batch, 50)`` pre-activations of
MNIST-like images (about half negative). Threads: ``common.THREADS`` for Numba and BLAS,
set in ``setup`` and recorded by ``bench_train_step.Threads``. Kernels are called once in
``setup``, so no compilation is timed.
"""
import numpy as np

from . import common
from .common import BATCH_SIZES, DTYPES, IMPLS, SPEEDUP_BATCH_SIZES, H


def _case(n, dtype):
    x = common.hidden_preact(n, dtype)
    dout = common.upstream((n, H), dtype)
    y = np.empty_like(x)
    common.np_sigmoid_forward(x, y)
    return x, dout, y, np.empty_like(x)


def _kernels(impl):
    if impl == "numpy":
        return (common.np_relu_forward, common.np_relu_backward,
                common.np_sigmoid_forward, common.np_sigmoid_backward)
    from fastbp import kernels as K
    return K.relu_forward, K.relu_backward, K.sigmoid_forward, K.sigmoid_backward


class _Activation:
    params = [BATCH_SIZES, IMPLS, DTYPES]
    param_names = ["batch_size", "impl", "dtype"]
    timeout = 120

    def setup(self, n, impl, dtype):
        common.check_impl(impl)
        common.set_threads()
        self.x, self.dout, self.y, self.out = _case(n, dtype)
        self.relu_f, self.relu_b, self.sig_f, self.sig_b = _kernels(impl)
        self.warm()


class Relu(_Activation):
    """``out = max(x, 0)``; ``dx = dout * (x > 0)``."""

    def warm(self):
        common.warm(self.time_forward, self.time_backward)

    def time_forward(self, *_):
        self.relu_f(self.x, self.out)

    def time_backward(self, *_):
        self.relu_b(self.x, self.dout, self.out)


class Sigmoid(_Activation):
    """``out = 1 / (1 + exp(-x))``; ``dx = dout * y * (1 - y)`` from the output ``y``."""

    def warm(self):
        common.warm(self.time_forward, self.time_backward)

    def time_forward(self, *_):
        self.sig_f(self.x, self.out)

    def time_backward(self, *_):
        self.sig_b(self.y, self.dout, self.out)


class Speedup:
    """NumPy time / fastbp time for each activation kernel (min over alternating samples)."""
    params = [SPEEDUP_BATCH_SIZES, DTYPES]
    param_names = ["batch_size", "dtype"]
    unit = "x"
    timeout = 120
    processes = 1  # each call already alternates 15 samples of both sides

    def setup(self, n, dtype):
        n = int(n)
        common.set_threads()
        x, dout, y, _ = _case(n, dtype)
        o1, o2 = np.empty_like(x), np.empty_like(x)
        np_k, fb_k = _kernels("numpy"), _kernels("fastbp")
        self.pairs = {
            "relu_forward": (lambda: np_k[0](x, o1), lambda: fb_k[0](x, o2)),
            "relu_backward": (lambda: np_k[1](x, dout, o1), lambda: fb_k[1](x, dout, o2)),
            "sigmoid_forward": (lambda: np_k[2](x, o1), lambda: fb_k[2](x, o2)),
            "sigmoid_backward": (lambda: np_k[3](y, dout, o1), lambda: fb_k[3](y, dout, o2)),
        }
        common.warm(*(f for pair in self.pairs.values() for f in pair))

    def track_speedup_relu_forward(self, *_):
        return common.speedup(*self.pairs["relu_forward"])

    def track_speedup_relu_backward(self, *_):
        return common.speedup(*self.pairs["relu_backward"])

    def track_speedup_sigmoid_forward(self, *_):
        return common.speedup(*self.pairs["sigmoid_forward"])

    def track_speedup_sigmoid_backward(self, *_):
        return common.speedup(*self.pairs["sigmoid_backward"])
