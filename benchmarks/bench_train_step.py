"""One full SGD step of the book's TwoLayerNet 784-50-10 (lr 0.1), over batch size.

fastbp: ``fastbp.TwoLayerNet(784, 50, 10, dtype=...).train_step(x, t, lr)``, the fused,
allocation-free step as a user calls it (argument checks included). NumPy: the book's ch. 5
``TwoLayerNet`` (Affine / Relu / Affine / SoftmaxWithLoss layers, ``gradient`` and
``params[k] -= lr * grad[k]``), see ``fastbp/baseline.py``. Both start from the same
seeded weights on MNIST-like images with integer labels. Threads: ``common.THREADS`` for
Numba's pool and both OpenBLAS pools, set in ``setup`` and recorded by ``Threads``. One step
runs in ``setup``: no compilation is timed.
"""
from . import common
from .common import BATCH_SIZES, DTYPES, IMPLS, SPEEDUP_BATCH_SIZES, LR


def _net(impl, dtype):
    W1, b1, W2, b2 = common.weights(dtype)
    if impl == "numpy":
        return common.baseline.TwoLayerNet({"W1": W1, "b1": b1, "W2": W2, "b2": b2})
    import fastbp
    net = fastbp.TwoLayerNet(common.D, common.H, common.C, dtype=dtype, seed=0)
    for k, v in zip(("W1", "b1", "W2", "b2"), (W1, b1, W2, b2)):
        net.params[k][...] = v
    return net


class TrainStep:
    """Forward, backward and SGD update of a batch."""
    params = [BATCH_SIZES, IMPLS, DTYPES]
    param_names = ["batch_size", "impl", "dtype"]
    timeout = 180

    def setup(self, n, impl, dtype):
        common.check_impl(impl)
        common.set_threads()
        self.x, self.t = common.images(n, dtype), common.labels(n)
        self.net = _net(impl, dtype)
        common.warm(self.time_train_step)

    def time_train_step(self, *_):
        self.net.train_step(self.x, self.t, LR)


class Speedup:
    """NumPy time / fastbp time for the whole training step."""
    params = [SPEEDUP_BATCH_SIZES, DTYPES]
    param_names = ["batch_size", "dtype"]
    unit = "x"
    timeout = 180
    processes = 1  # each call already alternates 15 samples of both sides

    def setup(self, n, dtype):
        n = int(n)
        common.set_threads()
        x, t = common.images(n, dtype), common.labels(n)
        a, b = _net("numpy", dtype), _net("fastbp", dtype)
        self.pair = (lambda: a.train_step(x, t, LR), lambda: b.train_step(x, t, LR))
        common.warm(*self.pair)

    def track_speedup_train_step(self, *_):
        return common.speedup(*self.pair)


class Threads:
    """The thread counts every benchmark of this suite runs with (set by ``common.set_threads``)."""
    unit = "threads"
    processes = 1

    def setup(self):
        common.set_threads()

    def track_numba_threads(self):
        import fastbp
        return fastbp.get_num_threads()

    def track_blas_threads(self):
        """The largest thread count of the loaded OpenBLAS pools (NumPy's and SciPy's)."""
        from threadpoolctl import threadpool_info
        return max(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas")
