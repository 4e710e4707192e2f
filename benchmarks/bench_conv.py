"""Chapter 7: one Adam step of the book's SimpleConvNet, and its convolution layer alone,
over batch size: fastbp against the book's im2col NumPy code.

fastbp: ``fastbp.SimpleConvNet(dtype=...).train_step(x, t, Adam(lr=0.001))`` (forward,
backward and update in one compiled call) and the ``fastbp.layers.Convolution`` layer's
``forward`` + ``backward``. NumPy: the book's own ``ch07/simple_convnet.py`` (``gradient``
through its im2col layers) with its ``common/optimizer.py`` Adam, and its
``common/layers.py`` ``Convolution``, imported from ``../shared/book-reference`` (or
``$FASTBP_BOOK_REFERENCE``; absent, the NumPy cases are skipped). Both start from the same
seeded weights (the book's ``weight_init_std=0.01``) on MNIST test images shaped
(n, 1, 28, 28). The book allocates its im2col buffers in float64 whatever the parameters'
dtype; that is part of the baseline. Steps run in ``setup``: no compilation is timed.
"""
import importlib
import os
import sys

import numpy as np

from . import common
from .common import DTYPES, IMPLS, QUICK

CONV_BATCH_SIZES = [1, 100] if QUICK else [1, 8, 32, 100, 256, 1000]
ADAM_LR = 0.001
_BOOK = os.environ.get("FASTBP_BOOK_REFERENCE", os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "book-reference"))


def book(module):
    """A module of the book's code, or NotImplementedError (asv skips the case)."""
    if not os.path.isdir(os.path.join(_BOOK, "ch07")):
        raise NotImplementedError(f"the book's code is not at {os.path.abspath(_BOOK)}")
    for folder in (os.path.join(_BOOK, "ch07"), _BOOK):
        if folder not in sys.path:  # first: the book's `common` package, not ours
            sys.path.insert(0, folder)
    saved = sys.modules.get("common")
    if saved is not None and not hasattr(saved, "__path__"):
        del sys.modules["common"]  # benchmarks/common.py imported as a top-level module
    try:
        return importlib.import_module(module)
    finally:
        if saved is not None and not hasattr(saved, "__path__"):
            sys.modules["common"] = saved


def weights(dtype):
    """The seeded W1 (30, 1, 5, 5), b1, W2 (4320, 100), b2, W3 (100, 10), b3."""
    rng = np.random.default_rng(0)
    out = {}
    for i, shape in enumerate(((30, 1, 5, 5), (4320, 100), (100, 10)), 1):
        out[f"W{i}"] = (0.01 * rng.standard_normal(shape)).astype(dtype)
        out[f"b{i}"] = np.zeros(shape[0] if i == 1 else shape[1], dtype)
    return out


def images(n, dtype):
    return common.images(n, dtype).reshape(n, 1, 28, 28)


def _step(impl, n, dtype):
    """A function making one Adam step of `impl` on the first `n` test images."""
    x, t = images(n, dtype), common.labels(n)
    params = weights(dtype)
    if impl == "numpy":
        net = book("simple_convnet").SimpleConvNet()
        net.params.update(params)
        for i, key in enumerate(("Conv1", "Affine1", "Affine2"), 1):
            net.layers[key].W, net.layers[key].b = net.params[f"W{i}"], net.params[f"b{i}"]
        opt = book("common.optimizer").Adam(lr=ADAM_LR)
        return lambda: opt.update(net.params, net.gradient(x, t))
    import fastbp
    net = fastbp.SimpleConvNet(dtype=dtype, seed=0)
    for key, value in params.items():
        net.params[key][...] = value
    opt = fastbp.optimizers.Adam(lr=ADAM_LR)
    return lambda: net.train_step(x, t, opt)


def _layer(impl, n, dtype):
    """A function running the first convolution layer forward and backward."""
    x = images(n, dtype)
    p = weights(dtype)
    if impl == "numpy":
        layer = book("common.layers").Convolution(p["W1"], p["b1"])
    else:
        from fastbp.layers import Convolution
        layer = Convolution(p["W1"], p["b1"])
    dout = common.upstream((n, 30, 24, 24), dtype)

    def run():
        layer.forward(x)
        layer.backward(dout)
    return run


class ConvNetStep:
    """Forward, backward and Adam update of SimpleConvNet on a batch."""
    params = [CONV_BATCH_SIZES, IMPLS, DTYPES]
    param_names = ["batch_size", "impl", "dtype"]
    timeout = 600

    def setup(self, n, impl, dtype):
        common.check_impl(impl)
        common.set_threads()
        self.step = _step(impl, n, dtype)
        common.warm(self.step)

    def time_convnet_step(self, *_):
        self.step()


class ConvLayer:
    """The Convolution layer (30 filters 5x5 on 28x28), forward and backward with dx."""
    params = [CONV_BATCH_SIZES, IMPLS, DTYPES]
    param_names = ["batch_size", "impl", "dtype"]
    timeout = 600

    def setup(self, n, impl, dtype):
        common.check_impl(impl)
        common.set_threads()
        self.run = _layer(impl, n, dtype)
        common.warm(self.run)

    def time_conv_layer(self, *_):
        self.run()


class Speedup:
    """The book's NumPy time / fastbp time for the SimpleConvNet step."""
    params = [[str(n) for n in CONV_BATCH_SIZES], DTYPES]
    param_names = ["batch_size", "dtype"]
    unit = "x"
    timeout = 600
    processes = 1  # each call already alternates samples of both sides

    def setup(self, n, dtype):
        n = int(n)
        common.set_threads()
        self.pair = (_step("numpy", n, dtype), _step("fastbp", n, dtype))
        common.warm(*self.pair)

    def track_speedup_convnet_step(self, *_):
        return common.speedup(*self.pair)
