"""The book's ``TwoLayerNet``, plus a fused, allocation-free ``train_step``."""
from collections import OrderedDict

import numpy as np
from numba.core.errors import TypingError
from numpy.typing import ArrayLike, DTypeLike

from . import kernels
from . import validation as check
from .kernels import network as KN
from .gradient import numerical_gradient as _numerical_gradient
from .layers import Affine, Relu, SoftmaxWithLoss

_KEYS = ("W1", "b1", "W2", "b2")
_INTP = np.dtype(np.intp)
_INF = float("inf")


#: Work buffers of the fused step (h, y, dy, dh, dW1, db1, dW2, db2, row_loss); the tuples
#: of TwoLayerNet._work end with the path flags of _training_paths after them.
_BUFFERS = 9


def _training_paths(n):
    """The path arguments of ``kernels.network.two_layer_step_paths`` /
    ``train_step_labels_paths`` for a training step (``lr > 0``) on `n` rows: ``None`` for
    each code path such a step never takes (the gradients-only branch, the small-batch path,
    the parallel twins below ``PARALLEL_MIN_ROWS``), so the first step compiles only its own
    path (docs/decisions/cold-start.md); the kernel makes the same choice at run time.
    Empty up to ``SMALL_BATCH`` rows: there the plain kernels run, whose call from Python
    costs less (their first call compiles every path, as before)."""
    if n <= KN.SMALL_BATCH:
        return ()
    return (None, None, None) if n < KN.PARALLEL_MIN_ROWS else (None, None, True)


class TwoLayerNet:
    """Affine - ReLU - Affine - SoftmaxWithLoss, with the book's attributes and methods.

    Parameters
    ----------
    input_size, hidden_size, output_size : int
    weight_init_std : float
        Weights are ``weight_init_std * N(0, 1)``; biases start at 0.
    dtype : {np.float64, np.float32}
        Parameter dtype. float64 (the book's) by default; float32 trains faster (see
        docs/performance.md) and is what :mod:`fastbp.train` uses.
    seed : int or None
        Seeds a private ``np.random.default_rng``; None draws from ``np.random`` like the
        book, so ``np.random.seed`` still applies.
    """

    def __init__(self, input_size: int, hidden_size: int, output_size: int,
                 weight_init_std: float = 0.01, *, dtype: DTypeLike = np.float64,
                 seed: int | None = None) -> None:
        for name, v in (("input_size", input_size), ("hidden_size", hidden_size),
                        ("output_size", output_size)):
            check.integer(name, v, 1)
        dtype = check.float_dtype(dtype)
        self.dtype = dtype
        if seed is None:
            randn = np.random.randn
        else:
            rng = np.random.default_rng(seed)
            randn = lambda *shape: rng.standard_normal(shape)  # noqa: E731
        self.params = {}
        self.params["W1"] = (weight_init_std * randn(input_size, hidden_size)).astype(dtype)
        self.params["b1"] = np.zeros(hidden_size, dtype)
        self.params["W2"] = (weight_init_std * randn(hidden_size, output_size)).astype(dtype)
        self.params["b2"] = np.zeros(output_size, dtype)
        self._build_layers()
        self._work = {}
        self._fast = None  # the dtype, once a full train_step has validated the params

    def _build_layers(self):
        self.layers = OrderedDict()
        self.layers["Affine1"] = Affine(self.params["W1"], self.params["b1"])
        self.layers["Relu1"] = Relu()
        self.layers["Affine2"] = Affine(self.params["W2"], self.params["b2"])
        self.lastLayer = SoftmaxWithLoss()

    # -- the book's API -------------------------------------------------------------------
    def predict(self, x: ArrayLike) -> np.ndarray:
        for layer in self.layers.values():
            x = layer.forward(x)
        return x

    def loss(self, x: ArrayLike, t: ArrayLike) -> float:
        y = self.predict(x)
        return self.lastLayer.forward(y, t)

    def accuracy(self, x: ArrayLike, t: ArrayLike) -> float:
        out = self.predict(x)
        y = np.argmax(out, axis=1)
        t = check.targets(t, out)  # labels or one-hot rows of the right shape, else an error
        if t.ndim != 1:
            t = np.argmax(t, axis=1)
        return np.sum(y == t) / float(y.shape[0])

    def numerical_gradient(self, x: ArrayLike, t: ArrayLike) -> dict[str, np.ndarray]:
        loss_W = lambda W: self.loss(x, t)  # noqa: E731  (the book's form)
        return {k: _numerical_gradient(loss_W, self.params[k]) for k in _KEYS}

    def gradient(self, x: ArrayLike, t: ArrayLike) -> dict[str, np.ndarray]:
        self.loss(x, t)
        dout = self.lastLayer.backward(1)
        for layer in reversed(list(self.layers.values())):
            dout = layer.backward(dout)
        return {"W1": self.layers["Affine1"].dW, "b1": self.layers["Affine1"].db,
                "W2": self.layers["Affine2"].dW, "b2": self.layers["Affine2"].db}

    # -- fused training -------------------------------------------------------------------
    def _buffers(self, n, onehot):
        key = (n, onehot)
        work = self._work.get(key)
        H = self.params["W1"].shape[1]
        C = self.params["W2"].shape[1]
        # Params replaced by arrays of other shapes need new buffers (the fast path's kernel
        # would reject the old ones; two_layer_step does not check).
        if work is None or work[4].shape != self.params["W1"].shape or work[1].shape != (n, C):
            dt = self.dtype
            work = (np.empty((n, H), dt), np.empty((n, C), dt), np.empty((n, C), dt),
                    np.empty((n, H), dt),
                    *(np.empty(self.params[k].shape, dt) for k in _KEYS), np.empty(n),
                    *_training_paths(n))
            if len(self._work) >= 4:  # a training loop sees one or two batch sizes
                self._work.clear()
            self._work[key] = work
        return work[:_BUFFERS]  # the stored tuple ends with the fast path's path arguments

    def checked_params(self) -> list[np.ndarray]:
        """``[W1, b1, W2, b2]`` from :attr:`params`, checked to be what the fused kernels
        write in place: writeable C-contiguous arrays of the network's dtype with shapes that
        fit together (a ValueError names the one that does not)."""
        p = [self.params[k] for k in _KEYS]
        for k, a in zip(_KEYS, p):
            if (not isinstance(a, np.ndarray) or a.dtype != self.dtype
                    or not a.flags.c_contiguous or not a.flags.writeable):
                raise ValueError(f"params['{k}'] must stay a writeable C-contiguous "
                                 f"{self.dtype} array; update it in place (-=)")
        d, H = p[0].shape
        if p[1].shape != (H,) or p[2].shape[0] != H or p[3].shape != (p[2].shape[1],):
            raise ValueError("params have inconsistent shapes: "
                             + ", ".join(f"{k}{a.shape}" for k, a in zip(_KEYS, p)))
        return p

    def _step(self, x, t, lr):
        W1, b1, W2, b2 = self.checked_params()
        x = check.as_array("x", x)
        if x.ndim > 2:
            if x.shape[0] == 0:
                raise ValueError(f"x is an empty batch (shape {x.shape}); pass at least one row")
            x = x.reshape(x.shape[0], -1)
        # bool, integer and float inputs are cast, as the layers do; others raise in _batch
        x = check.float_batch("x", x.astype(self.dtype, copy=False) if x.dtype.kind in "biuf" else x)
        if x.shape[1] != W1.shape[0]:
            raise ValueError(f"x must have {W1.shape[0]} features per row, got shape {x.shape}")
        t = check.targets(t, np.empty((x.shape[0], W2.shape[1]), self.dtype))
        work = self._buffers(x.shape[0], t.ndim == 2)
        paths = _training_paths(x.shape[0]) if lr > 0 else ()  # lr == 0: every path
        if paths:
            loss = KN.two_layer_step_paths(x, t, W1, b1, W2, b2, lr, *work, *paths)
        else:
            loss = kernels.two_layer_step(x, t, W1, b1, W2, b2, lr, *work)
        return loss, work

    def train_step(self, x: ArrayLike, t: ArrayLike, lr: float) -> float:
        """One SGD step on a batch, as one compiled call: returns the batch loss.

        Forward, backward and ``params[k] -= lr * grad[k]`` fused (see
        :mod:`fastbp.kernels.network`); allocates nothing once a batch size has been seen.

        Parameters
        ----------
        x : array_like, (n, input_size) (or (n, ...) reshaped), float; cast to the net's dtype
        t : array_like, (n,) integer labels or (n, output_size) one-hot rows
        lr : float, > 0

        Returns
        -------
        float
            Mean loss of the batch before the update.
        """
        # Fast path (docs/decisions/train-step-fast-path.md): the checks of `_step` for the
        # common case, written as cheap identity/attribute tests (np.isfinite on a float
        # is slow here; the comparison chain rejects NaN and inf too). The kernel
        # checks every shape and label (-1.0: something does not fit, nothing touched), and
        # Numba's typing rejects params whose dtype, layout or writeable flag changed (a
        # TypingError before anything runs). Anything unusual (other types, dtypes,
        # layouts, one-hot targets, bad labels or shapes, replaced params) takes the full
        # path, which converts or raises the ValueError that names the problem. (ndim and
        # layout are checked here because another array type would make Numba compile a
        # new specialization on every call before failing.)
        dtype = self._fast
        if (dtype is not None and type(lr) is float and 0.0 < lr < _INF
                and type(x) is np.ndarray and type(t) is np.ndarray and x.dtype is dtype
                and t.dtype is _INTP and x.ndim == 2 and t.ndim == 1
                and x.flags.c_contiguous and t.flags.c_contiguous):
            work = self._work.get((x.shape[0], False))
            if work is not None:
                p = self.params
                try:
                    if len(work) == _BUFFERS:
                        loss = kernels.train_step_labels(x, t, p["W1"], p["b1"], p["W2"],
                                                         p["b2"], lr, *work)
                    else:  # the path arguments follow the buffers (_training_paths)
                        loss = KN.train_step_labels_paths(x, t, p["W1"], p["b1"], p["W2"],
                                                          p["b2"], lr, *work)
                except TypingError:
                    loss = -1.0
                if loss != -1.0:
                    return loss
        lr = lr if type(lr) is float else check.real("lr", lr)
        if not (lr > 0 and np.isfinite(lr)):
            raise ValueError(f"lr must be a positive finite number, got {lr}")
        loss = self._step(x, t, lr)[0]
        self._fast = self.dtype  # a full step has validated the params
        return loss

    def fused_gradient(self, x: ArrayLike, t: ArrayLike) -> dict[str, np.ndarray]:
        """The gradients of :meth:`gradient`, from the fused kernel (fresh arrays)."""
        _, work = self._step(x, t, 0.0)
        return {k: g.copy() for k, g in zip(_KEYS, work[4:8])}


def gradient_check(net: TwoLayerNet, x: ArrayLike, t: ArrayLike, h: float = 1e-4
                   ) -> dict[str, float]:
    """Mean absolute difference between backprop and numerical gradients, per parameter.

    Both are computed in float64 on a copy of `net`, so a float32 network is checked too.

    Returns
    -------
    dict
        ``{"W1": float, "b1": float, "W2": float, "b2": float}``; around 1e-10 to 1e-7 for
        a correct backward pass.
    """
    W1 = net.params["W1"]
    twin = TwoLayerNet(W1.shape[0], W1.shape[1], net.params["W2"].shape[1], dtype=np.float64,
                       seed=0)
    for k in _KEYS:
        twin.params[k][...] = net.params[k]
    x = np.asarray(x, dtype=np.float64)
    grad_numerical = twin.numerical_gradient(x, t)
    grad_backprop = twin.gradient(x, t)
    return {k: float(np.average(np.abs(grad_backprop[k] - grad_numerical[k]))) for k in _KEYS}
