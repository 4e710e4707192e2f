"""The book's plain-NumPy networks: the baseline every fastbp benchmark compares against.

One home for the NumPy side of ``fastbp bench``, the asv suite (``benchmarks/``),
``benchmarks/book_run.py`` and ``benchmarks/compare_frameworks.py``. Nothing in fastbp's
training code uses this module; it imports NumPy only.

Two kinds of baseline:

* **Kernel baselines** (``np_relu_forward``, ..., ``np_softmax_cross_entropy``): the
  book's operation written reasonably, with in-place ufuncs and ``np.dot`` into
  caller-given buffers, the same contract as :mod:`fastbp.kernels`.
* **The book's network code** (:class:`Relu`, :class:`Affine`, :class:`SoftmaxWithLoss`,
  :func:`softmax`, :func:`cross_entropy_error`, :class:`TwoLayerNet`,
  :class:`MultiLayerNet`, :class:`SGD`, :class:`Adam`): the behaviour of the book's
  ``common/layers.py``, ``common/functions.py``, ``ch05/two_layer_net.py``,
  ``common/multi_layer_net.py`` and ``common/optimizer.py``, including its habits
  (``Relu.backward`` writes into ``dout``; ``log(y + 1e-7)``). Written from the book's
  behaviour, not copied. The networks take their parameters as a dict (used in place), so
  that every contender of a benchmark starts from the same weights.

The asv suite loads this file from the checkout (``benchmarks/common.py``), not from the
installed fastbp, so its baseline stays the same for every commit benchmarked.
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np

__all__ = [
    "np_relu_forward", "np_relu_backward", "np_sigmoid_forward", "np_sigmoid_backward",
    "np_affine_forward", "np_affine_backward", "np_softmax_cross_entropy",
    "softmax", "cross_entropy_error", "Relu", "Affine", "SoftmaxWithLoss",
    "TwoLayerNet", "MultiLayerNet", "SGD", "Adam", "OPTIMIZERS",
]


# -- kernel baselines: in-place NumPy into caller buffers ---------------------------------------

def np_relu_forward(x: np.ndarray, out: np.ndarray) -> None:
    """``out = max(x, 0)``."""
    np.maximum(x, 0, out=out)


def np_relu_backward(x: np.ndarray, dout: np.ndarray, dx: np.ndarray) -> None:
    """``dx = dout`` where ``x > 0``, else 0."""
    np.multiply(dout, x > 0, out=dx)


def np_sigmoid_forward(x: np.ndarray, out: np.ndarray) -> None:
    """``out = 1 / (1 + exp(-x))`` in four in-place ufunc calls."""
    np.negative(x, out=out)
    np.exp(out, out=out)
    out += 1
    np.reciprocal(out, out=out)


def np_sigmoid_backward(y: np.ndarray, dout: np.ndarray, dx: np.ndarray) -> None:
    """``dx = dout * y * (1 - y)`` from the forward output `y`."""
    np.subtract(1, y, out=dx)
    dx *= y
    dx *= dout


def np_affine_forward(x: np.ndarray, W: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """``out = x @ W + b``."""
    np.dot(x, W, out=out)
    out += b


def np_affine_backward(dout: np.ndarray, x: np.ndarray, W: np.ndarray, dW: np.ndarray,
                       db: np.ndarray, dx: np.ndarray | None = None) -> None:
    """``dW = x.T @ dout``, ``db = dout.sum(0)`` and, if given, ``dx = dout @ W.T``."""
    np.dot(x.T, dout, out=dW)
    np.sum(dout, axis=0, out=db)
    if dx is not None:
        np.dot(dout, W.T, out=dx)


def np_softmax_cross_entropy(x: np.ndarray, t: np.ndarray, dx: np.ndarray) -> float:
    """The book's softmax, cross-entropy and ``SoftmaxWithLoss.backward`` for integer labels
    `t`, with in-place ufuncs; writes the gradient into `dx` and returns the mean loss."""
    n = x.shape[0]
    y = x - x.max(axis=1, keepdims=True)
    np.exp(y, out=y)
    y /= y.sum(axis=1, keepdims=True)
    rows = np.arange(n)
    loss = -np.sum(np.log(y[rows, t] + 1e-7)) / n
    y[rows, t] -= 1
    np.divide(y, n, out=dx)
    return loss


# -- the book's functions and layers --------------------------------------------------------------

def softmax(x: np.ndarray) -> np.ndarray:
    """The book's softmax over the last axis."""
    x = x - np.max(x, axis=-1, keepdims=True)
    return np.exp(x) / np.sum(np.exp(x), axis=-1, keepdims=True)


def cross_entropy_error(y: np.ndarray, t: np.ndarray) -> float:
    """The book's mean cross-entropy of probabilities `y` for labels or one-hot rows `t`."""
    if y.ndim == 1:
        t = t.reshape(1, t.size)
        y = y.reshape(1, y.size)
    if t.size == y.size:
        t = t.argmax(axis=1)
    batch_size = y.shape[0]
    return -np.sum(np.log(y[np.arange(batch_size), t] + 1e-7)) / batch_size


class Relu:
    """The book's ``Relu`` layer (``backward`` writes into `dout`, as the book's does)."""

    def __init__(self):
        self.mask = None

    def forward(self, x):
        self.mask = x <= 0
        out = x.copy()
        out[self.mask] = 0
        return out

    def backward(self, dout):
        dout[self.mask] = 0
        return dout


class Affine:
    """The book's ``Affine`` layer; `W` and `b` are held by reference."""

    def __init__(self, W, b):
        self.W, self.b = W, b
        self.x = self.original_x_shape = self.dW = self.db = None

    def forward(self, x):
        self.original_x_shape = x.shape
        self.x = x.reshape(x.shape[0], -1)
        return np.dot(self.x, self.W) + self.b

    def backward(self, dout):
        dx = np.dot(dout, self.W.T)
        self.dW = np.dot(self.x.T, dout)
        self.db = np.sum(dout, axis=0)
        return dx.reshape(*self.original_x_shape)


class SoftmaxWithLoss:
    """The book's ``SoftmaxWithLoss`` for labels or one-hot rows."""

    def __init__(self):
        self.loss = self.y = self.t = None

    def forward(self, x, t):
        self.t = t
        self.y = softmax(x)
        self.loss = cross_entropy_error(self.y, self.t)
        return self.loss

    def backward(self, dout=1):
        batch_size = self.t.shape[0]
        if self.t.size == self.y.size:
            return (self.y - self.t) / batch_size
        dx = self.y.copy()
        dx[np.arange(batch_size), self.t] -= 1
        return dx / batch_size


# -- the book's networks -------------------------------------------------------------------------

class _LayerNet:
    """``predict``, ``loss``, ``accuracy`` and ``gradient`` over ``self.layers`` (an
    OrderedDict of the book's layers) and ``self.last_layer``, as the book's networks do."""

    layers: OrderedDict
    last_layer: SoftmaxWithLoss
    params: dict

    def predict(self, x):
        for layer in self.layers.values():
            x = layer.forward(x)
        return x

    def loss(self, x, t):
        return self.last_layer.forward(self.predict(x), t)

    def accuracy(self, x, t):
        y = np.argmax(self.predict(x), axis=1)
        if t.ndim != 1:
            t = np.argmax(t, axis=1)
        return np.sum(y == t) / float(x.shape[0])

    def gradient(self, x, t):
        self.loss(x, t)
        dout = self.last_layer.backward(1)
        for layer in reversed(self.layers.values()):
            dout = layer.backward(dout)
        return {f"{name}{i}": getattr(affine, f"d{name}")
                for i, affine in enumerate(self._affines, 1) for name in ("W", "b")}


class TwoLayerNet(_LayerNet):
    """The book's chapter-5 ``TwoLayerNet`` (Affine, Relu, Affine, SoftmaxWithLoss).

    Parameters
    ----------
    params : dict
        ``W1`` (D, H), ``b1`` (H,), ``W2`` (H, C), ``b2`` (C,), any float dtype; used in
        place (the book's ``params[key] -= lr * grad[key]`` updates them).
    """

    def __init__(self, params: dict):
        self.params = params
        self._affines = [Affine(params["W1"], params["b1"]), Affine(params["W2"], params["b2"])]
        self.layers = OrderedDict(Affine1=self._affines[0], Relu1=Relu(),
                                  Affine2=self._affines[1])
        self.last_layer = SoftmaxWithLoss()

    @classmethod
    def book_init(cls, input_size: int, hidden_size: int, output_size: int,
                  weight_init_std: float = 0.01) -> TwoLayerNet:
        """The book's initialisation: ``weight_init_std * np.random.randn``, zero biases,
        float64, drawn from NumPy's global generator in the book's order."""
        return cls({"W1": weight_init_std * np.random.randn(input_size, hidden_size),
                    "b1": np.zeros(hidden_size),
                    "W2": weight_init_std * np.random.randn(hidden_size, output_size),
                    "b2": np.zeros(output_size)})

    def train_step(self, x, t, lr: float) -> float:
        """The book's training-loop body: ``gradient``, then ``params[key] -= lr * grad[key]``;
        returns the batch loss before the update."""
        grads = self.gradient(x, t)
        for key, p in self.params.items():
            p -= lr * grads[key]
        return self.last_layer.loss


class MultiLayerNet(_LayerNet):
    """The book's chapter-6 ``MultiLayerNet`` with ReLU: (Affine, Relu) x k, Affine,
    SoftmaxWithLoss, and ``gradient`` through the layers.

    Parameters
    ----------
    params : dict
        ``W1, b1, ..., W{k+1}, b{k+1}``; used in place. Without weight decay: the book's
        ``loss`` adds ``0.5 * lambda * sum(W**2)`` for every ``W`` and its ``gradient`` adds
        ``lambda * W`` to every ``dW`` even when ``lambda`` is 0; this baseline skips that
        work (favouring NumPy).
    """

    def __init__(self, params: dict):
        self.params = params
        n = len(params) // 2
        self._affines = [Affine(params[f"W{i}"], params[f"b{i}"]) for i in range(1, n + 1)]
        self.layers = OrderedDict()
        for i, affine in enumerate(self._affines[:-1], 1):
            self.layers[f"Affine{i}"] = affine
            self.layers[f"Activation_function{i}"] = Relu()
        self.layers[f"Affine{n}"] = self._affines[-1]
        self.last_layer = SoftmaxWithLoss()

    def train_step(self, x, t, optimizer) -> float:
        """``optimizer.update(params, gradient(x, t))``, the book's chapter-6 loop body;
        returns the batch loss before the update."""
        optimizer.update(self.params, self.gradient(x, t))
        return self.last_layer.loss


class SGD:
    """The book's ``SGD``: ``params[key] -= lr * grads[key]``."""

    def __init__(self, lr: float = 0.01):
        self.lr = lr

    def update(self, params: dict, grads: dict) -> None:
        for key in params:
            params[key] -= self.lr * grads[key]


class Adam:
    """The book's ``Adam``: moving averages ``m``, ``v`` and the bias-corrected step
    ``lr_t``, state allocated on the first update.

    ``lr_t`` is a Python float, so float32 parameters are updated in float32 (a NumPy
    float64 scalar would promote every temporary to float64 under NumPy 2's rules).
    """

    def __init__(self, lr: float = 0.001, beta1: float = 0.9, beta2: float = 0.999):
        self.lr, self.beta1, self.beta2 = lr, beta1, beta2
        self.iter = 0
        self.m = self.v = None

    def update(self, params: dict, grads: dict) -> None:
        if self.m is None:
            self.m = {key: np.zeros_like(p) for key, p in params.items()}
            self.v = {key: np.zeros_like(p) for key, p in params.items()}
        self.iter += 1
        lr_t = float(self.lr * np.sqrt(1.0 - self.beta2 ** self.iter)
                     / (1.0 - self.beta1 ** self.iter))
        for key in params:
            g, m, v = grads[key], self.m[key], self.v[key]
            m += (1 - self.beta1) * (g - m)
            v += (1 - self.beta2) * (g ** 2 - v)
            params[key] -= lr_t * m / (np.sqrt(v) + 1e-7)


#: The optimizers by their ``fastbp train --optimizer`` names.
OPTIMIZERS = {"sgd": SGD, "adam": Adam}
