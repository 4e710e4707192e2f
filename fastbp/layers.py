"""The layers of *Deep Learning from Scratch*, chapter 5, with the book's exact API.

Code written against the book's ``common/layers.py`` runs unchanged with these classes.
Array work goes through :mod:`fastbp.ops` (validated) into the Numba kernels. Differences
that only make things more robust: inputs of another dtype than the parameters are cast to
the parameters' dtype (the parameters are never copied), ``backward`` never modifies
``dout`` in place, and the softmax is computed stably.
"""
import numpy as np

from . import ops


class MulLayer:
    """``out = x * y`` for Python numbers or arrays."""

    def __init__(self):
        self.x = None
        self.y = None

    def forward(self, x, y):
        self.x = x
        self.y = y
        return x * y

    def backward(self, dout):
        dx = dout * self.y  # the inputs swap places
        dy = dout * self.x
        return dx, dy


class AddLayer:
    """``out = x + y``; the gradient passes through unchanged."""

    def __init__(self):
        pass

    def forward(self, x, y):
        return x + y

    def backward(self, dout):
        return dout * 1, dout * 1


def _floats(a, like=None):
    a = np.asarray(a)
    dtype = like if like is not None else (a.dtype if a.dtype in ops._FLOATS else np.float64)
    return a.astype(dtype, copy=False)


class Relu:
    """ReLU; ``backward`` passes ``dout`` only where the input was > 0."""

    def __init__(self):
        self.out = None

    @property
    def mask(self):
        """The book's ``x <= 0`` mask, derived from the stored output."""
        return None if self.out is None else self.out <= 0

    def forward(self, x):
        self.out = ops.relu_forward(_floats(x))
        return self.out

    def backward(self, dout):
        return ops.relu_backward(self.out, _floats(dout, self.out.dtype))


class Sigmoid:
    """Logistic sigmoid; ``backward`` uses the stored output only."""

    def __init__(self):
        self.out = None

    def forward(self, x):
        self.out = ops.sigmoid_forward(_floats(x))
        return self.out

    def backward(self, dout):
        return ops.sigmoid_backward(self.out, _floats(dout, self.out.dtype))


class Affine:
    """``out = x @ W + b`` on a batch; keeps references to the caller's `W` and `b`.

    N-d input is reshaped to ``(N, -1)`` and ``dx`` is reshaped back. ``dW`` and ``db``
    are set by ``backward``.
    """

    def __init__(self, W, b):
        self.W = W
        self.b = b
        self.x = None
        self.original_x_shape = None
        self.dW = None
        self.db = None

    def forward(self, x):
        x = _floats(x, self.W.dtype)
        self.original_x_shape = x.shape
        self.x = x.reshape(x.shape[0], -1)
        return ops.affine_forward(self.x, self.W, self.b)

    def backward(self, dout):
        dx, self.dW, self.db = ops.affine_backward(_floats(dout, self.W.dtype), self.x, self.W)
        return dx.reshape(*self.original_x_shape)


class SoftmaxWithLoss:
    """Softmax and cross-entropy, fused; `t` is one-hot rows or integer labels."""

    def __init__(self):
        self.loss = None
        self.x = None
        self.t = None
        self.dx = None

    @property
    def y(self):
        """Softmax output of the last ``forward`` (computed on demand)."""
        if self.x is None:
            return None
        e = np.exp(self.x - self.x.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def forward(self, x, t):
        self.x = _floats(x)
        self.t = t
        self.loss, self.dx = ops.softmax_cross_entropy(self.x, t)
        return self.loss

    def backward(self, dout=1):
        return self.dx if dout == 1 else self.dx * dout
