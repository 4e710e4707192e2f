"""One training step of the book's MultiLayerNet 784-[100]*k-10 (k = 1 and 4) with SGD and
Adam, over batch size.

fastbp: ``fastbp.MultiLayerNet(784, [100] * k, 10, dtype=...).train_step(x, t, optimizer)``
with ``fastbp.optimizers.SGD(lr=0.01)`` or ``Adam(lr=0.001)``: forward, backward and the
optimizer's update in one compiled call, as a user calls it (argument checks included).
NumPy: the book's ch. 6 ``MultiLayerNet`` (``gradient`` through its layers) and its ``SGD`` /
``Adam`` classes (``update``), see ``fastbp/baseline.py``. Both start from the same
seeded He-initialized weights on MNIST-like images with integer labels; the optimizers keep
their state across the timed calls, as in training. Threads: ``common.THREADS`` for Numba's
pool and both OpenBLAS pools, set in ``setup`` (recorded by ``bench_train_step.Threads``).
Steps run in ``setup``: no compilation is timed.
"""
from . import common
from .common import DTYPES, IMPLS, MLP_BATCH_SIZES, MLP_DEPTHS, MLP_LR, MLP_OPTIMIZERS, \
    MLP_SPEEDUP_BATCH_SIZES


def _net(impl, k, opt, dtype):
    """(network, optimizer) of `impl`, from the seeded weights."""
    params = common.mlp_weights(k, dtype)
    if impl == "numpy":
        return common.NumpyMultiLayerNet(params), common.NUMPY_OPTIMIZERS[opt](lr=MLP_LR[opt])
    import fastbp
    net = fastbp.MultiLayerNet(common.D, [common.MLP_HIDDEN] * k, common.C, dtype=dtype,
                               seed=0)
    for key, value in params.items():
        net.params[key][...] = value
    optimizer = {"sgd": fastbp.optimizers.SGD, "adam": fastbp.optimizers.Adam}[opt]
    return net, optimizer(lr=MLP_LR[opt])


class MLPStep:
    """Forward, backward and optimizer update of a batch."""
    params = [MLP_BATCH_SIZES, IMPLS, MLP_DEPTHS, MLP_OPTIMIZERS, DTYPES]
    param_names = ["batch_size", "impl", "hidden_layers", "optimizer", "dtype"]
    timeout = 300

    def setup(self, n, impl, k, opt, dtype):
        common.check_impl(impl)
        common.set_threads()
        self.x, self.t = common.images(n, dtype), common.labels(n)
        self.net, self.opt = _net(impl, k, opt, dtype)
        common.warm(self.time_mlp_step)

    def time_mlp_step(self, *_):
        self.net.train_step(self.x, self.t, self.opt)


class Speedup:
    """NumPy time / fastbp time for the whole training step."""
    params = [MLP_SPEEDUP_BATCH_SIZES, MLP_DEPTHS, MLP_OPTIMIZERS, DTYPES]
    param_names = ["batch_size", "hidden_layers", "optimizer", "dtype"]
    unit = "x"
    timeout = 300
    processes = 1  # each call already alternates 15 samples of both sides

    def setup(self, n, k, opt, dtype):
        n = int(n)
        common.set_threads()
        x, t = common.images(n, dtype), common.labels(n)
        (a, oa), (b, ob) = _net("numpy", k, opt, dtype), _net("fastbp", k, opt, dtype)
        self.pair = (lambda: a.train_step(x, t, oa), lambda: b.train_step(x, t, ob))
        common.warm(*self.pair)

    def track_speedup_mlp_step(self, *_):
        return common.speedup(*self.pair)
