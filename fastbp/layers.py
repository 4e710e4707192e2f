"""The layers of *Deep Learning from Scratch*, chapter 5, with the book's exact API.

Code written against the book's ``common/layers.py`` runs unchanged with these classes.
Array work goes through :mod:`fastbp.ops` (validated) into the Numba kernels. Differences
that only make things more robust: inputs of another dtype than the parameters are cast to
the parameters' dtype (the parameters are never copied), ``backward`` never modifies
``dout`` in place, and the softmax is computed stably.
"""
import operator

import numpy as np

from . import ops


def _broadcast(op, a, b, names):
    """``op(a, b)``; shapes that do not broadcast are a ValueError naming the arguments."""
    try:
        return op(a, b)
    except ValueError as exc:
        raise ValueError(f"{names} must have broadcastable shapes, got {np.shape(a)} and "
                         f"{np.shape(b)} ({exc})") from None


class MulLayer:
    """``out = x * y`` for Python numbers or arrays."""

    def __init__(self):
        self.x = None
        self.y = None

    def forward(self, x, y):
        self.x = x
        self.y = y
        return _broadcast(operator.mul, x, y, "x and y")

    def backward(self, dout):
        dx = _broadcast(operator.mul, dout, self.y, "dout and y")  # the inputs swap places
        dy = _broadcast(operator.mul, dout, self.x, "dout and x")
        return dx, dy


class AddLayer:
    """``out = x + y``; the gradient passes through unchanged."""

    def __init__(self):
        pass

    def forward(self, x, y):
        return _broadcast(operator.add, x, y, "x and y")

    def backward(self, dout):
        return dout * 1, dout * 1


def _floats(name, a, like=None):
    """`a` as a float array (of `like`'s dtype if given); bool, integer and float inputs are
    cast, anything else (complex, object, strings) is a TypeError naming `name`."""
    a = ops._asarray(name, a)
    if a.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers, got {a.dtype}; convert it with "
                        f"{name}.astype(np.float32)")
    native = a.dtype.newbyteorder("=")  # a big-endian float32 array stays float32
    dtype = like if like is not None else (native if native in ops._FLOATS else np.float64)
    return a.astype(dtype, copy=False)


def _forward_first(layer, attr):
    if getattr(layer, attr) is None:
        raise RuntimeError(f"{type(layer).__name__}.backward called before forward")


class Relu:
    """ReLU; ``backward`` passes ``dout`` only where the input was > 0."""

    def __init__(self):
        self.out = None

    @property
    def mask(self):
        """The book's ``x <= 0`` mask, derived from the stored output."""
        return None if self.out is None else self.out <= 0

    def forward(self, x):
        self.out = ops.relu_forward(_floats("x", x))
        return self.out

    def backward(self, dout):
        _forward_first(self, "out")
        return ops.relu_backward(self.out, _floats("dout", dout, self.out.dtype))


class Sigmoid:
    """Logistic sigmoid; ``backward`` uses the stored output only."""

    def __init__(self):
        self.out = None

    def forward(self, x):
        self.out = ops.sigmoid_forward(_floats("x", x))
        return self.out

    def backward(self, dout):
        _forward_first(self, "out")
        return ops.sigmoid_backward(self.out, _floats("dout", dout, self.out.dtype))


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
        W = self.W
        if not isinstance(W, np.ndarray) or W.dtype not in ops._FLOATS:
            raise TypeError(f"Affine.W must be a float32 or float64 numpy.ndarray, got "
                            f"{getattr(W, 'dtype', type(W).__name__)}")
        x = _floats("x", x, W.dtype)
        if x.ndim < 2:
            raise ValueError(f"x must be a batch of rows (at least 2-D), got shape {x.shape}; "
                             "pass one sample as x.reshape(1, -1)")
        if x.shape[0] == 0:
            raise ValueError(f"x is an empty batch (shape {x.shape}); pass at least one row")
        x2 = x.reshape(x.shape[0], -1)
        out = ops.affine_forward(x2, W, self.b)
        # Only now: a forward that raised leaves the layer as it was.
        self.original_x_shape = x.shape
        self.x = x2
        return out

    def backward(self, dout):
        _forward_first(self, "x")
        dx, self.dW, self.db = ops.affine_backward(_floats("dout", dout, self.W.dtype), self.x,
                                                   self.W)
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
        with np.errstate(invalid="ignore"):  # a row holding +-inf gives NaN, silently
            e = np.exp(self.x - self.x.max(axis=1, keepdims=True))
            return e / e.sum(axis=1, keepdims=True)

    def forward(self, x, t):
        x = _floats("x", x)
        loss, dx = ops.softmax_cross_entropy(x, t)
        # Only now: after a forward that raised, backward does not return a stale gradient
        # for inputs it never saw; the layer stays as it was.
        self.x, self.t, self.loss, self.dx = x, t, loss, dx
        return loss

    def backward(self, dout=1):
        _forward_first(self, "dx")
        d = ops._asarray("dout", dout)
        if d.dtype.kind not in "biuf":
            raise TypeError(f"dout must be a real number, got {d.dtype}")
        if d.ndim == 0 and d == 1:
            return self.dx
        if d.ndim and d.shape != self.dx.shape:
            raise ValueError(f"dout must be a scalar or have the shape of x, {self.dx.shape}, "
                             f"got {d.shape}")
        return self.dx * dout
