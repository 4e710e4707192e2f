"""The layers of *Deep Learning from Scratch*, chapters 5 and 6, with the book's exact API.

Code written against the book's ``common/layers.py`` runs unchanged with these classes.
Array work goes through :mod:`fastbp.ops` (validated) into the Numba kernels. Differences
that only make things more robust: inputs of another dtype than the parameters are cast to
the parameters' dtype (the parameters are never copied), ``backward`` never modifies
``dout`` in place, and the softmax is computed stably.
"""
import operator

import numpy as np
from numpy.typing import ArrayLike

from . import ops
from . import validation as check


def _broadcast(op, a, b, names):
    """``op(a, b)``; shapes that do not broadcast are a ValueError naming the arguments."""
    try:
        return op(a, b)
    except ValueError as exc:
        raise ValueError(f"{names} must have broadcastable shapes, got {np.shape(a)} and "
                         f"{np.shape(b)} ({exc})") from None


class MulLayer:
    """``out = x * y`` for Python numbers or arrays."""

    def __init__(self) -> None:
        self.x = None
        self.y = None

    def forward(self, x: ArrayLike, y: ArrayLike) -> ArrayLike:
        self.x = x
        self.y = y
        return _broadcast(operator.mul, x, y, "x and y")

    def backward(self, dout: ArrayLike) -> tuple[ArrayLike, ArrayLike]:
        dx = _broadcast(operator.mul, dout, self.y, "dout and y")  # the inputs swap places
        dy = _broadcast(operator.mul, dout, self.x, "dout and x")
        return dx, dy


class AddLayer:
    """``out = x + y``; the gradient passes through unchanged."""

    def __init__(self) -> None:
        pass

    def forward(self, x: ArrayLike, y: ArrayLike) -> ArrayLike:
        return _broadcast(operator.add, x, y, "x and y")

    def backward(self, dout: ArrayLike) -> tuple[ArrayLike, ArrayLike]:
        return dout * 1, dout * 1


def _floats(name, a, like=None):
    """`a` as a float array (of `like`'s dtype if given); bool, integer and float inputs are
    cast, anything else (complex, object, strings) is a TypeError naming `name`."""
    a = check.as_array(name, a)
    if a.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers, got {a.dtype}; convert it with "
                        f"{name}.astype(np.float32)")
    native = a.dtype.newbyteorder("=")  # a big-endian float32 array stays float32
    dtype = like if like is not None else (native if native in check.FLOATS else np.float64)
    return a.astype(dtype, copy=False)


def _float_param(layer, attr):
    """``layer.<attr>`` (e.g. an Affine's W), which must be a float32 or float64 ndarray (the
    layer keeps the caller's array: it is checked, never converted)."""
    p = getattr(layer, attr)
    if not isinstance(p, np.ndarray) or p.dtype not in check.FLOATS:
        raise TypeError(f"{type(layer).__name__}.{attr} must be a float32 or float64 "
                        f"numpy.ndarray, got {getattr(p, 'dtype', type(p).__name__)}")
    return p


def _rows(x):
    """`x` (N, ...) as N rows, ``x.reshape(N, -1)``; fewer than 2 dimensions or no row is a
    ValueError."""
    if x.ndim < 2:
        raise ValueError(f"x must be a batch of rows (at least 2-D), got shape {x.shape}; "
                         "pass one sample as x.reshape(1, -1)")
    if x.shape[0] == 0:
        raise ValueError(f"x is an empty batch (shape {x.shape}); pass at least one row")
    return x.reshape(x.shape[0], -1)


def _init_fields(layer, cached, **given):
    """The book's constructors in one place: keep each `given` argument (parameters by
    reference, never copied) and set each name in `cached` (what forward and backward
    store) to None."""
    for name, value in given.items():
        setattr(layer, name, value)
    for name in cached:
        setattr(layer, name, None)


def _forward_first(layer, attr):
    if getattr(layer, attr) is None:
        raise RuntimeError(f"{type(layer).__name__}.backward called before forward")


class _FromOutput:
    """An activation whose ``backward`` needs only its stored output: Relu and Sigmoid, which
    differ in their two ops (``_ops``: forward, backward)."""

    _ops = None

    def __init__(self) -> None:
        self.out = None

    def forward(self, x: ArrayLike) -> np.ndarray:
        self.out = self._ops[0](_floats("x", x))
        return self.out

    def backward(self, dout: ArrayLike) -> np.ndarray:
        _forward_first(self, "out")
        return self._ops[1](self.out, _floats("dout", dout, self.out.dtype))


class Relu(_FromOutput):
    """ReLU; ``backward`` passes ``dout`` only where the input was > 0."""

    _ops = (ops.relu_forward, ops.relu_backward)

    @property
    def mask(self) -> np.ndarray | None:
        """The book's ``x <= 0`` mask, derived from the stored output."""
        return None if self.out is None else self.out <= 0


class Sigmoid(_FromOutput):
    """Logistic sigmoid; ``backward`` uses the stored output only."""

    _ops = (ops.sigmoid_forward, ops.sigmoid_backward)


class Affine:
    """``out = x @ W + b`` on a batch; keeps references to the caller's `W` and `b`.

    N-d input is reshaped to ``(N, -1)`` and ``dx`` is reshaped back. ``dW`` and ``db``
    are set by ``backward``.
    """

    def __init__(self, W: np.ndarray, b: np.ndarray) -> None:
        _init_fields(self, ("x", "original_x_shape", "dW", "db"), W=W, b=b)

    def forward(self, x: ArrayLike) -> np.ndarray:
        W = _float_param(self, "W")
        x = _floats("x", x, W.dtype)
        x2 = _rows(x)
        out = ops.affine_forward(x2, W, self.b)
        # Only now: a forward that raised leaves the layer as it was.
        self.original_x_shape = x.shape
        self.x = x2
        return out

    def backward(self, dout: ArrayLike) -> np.ndarray:
        _forward_first(self, "x")
        dx, self.dW, self.db = ops.affine_backward(_floats("dout", dout, self.W.dtype), self.x,
                                                   self.W)
        return dx.reshape(*self.original_x_shape)


class SoftmaxWithLoss:
    """Softmax and cross-entropy, fused; `t` is one-hot rows or integer labels."""

    def __init__(self) -> None:
        _init_fields(self, ("loss", "x", "t", "dx"))

    @property
    def y(self) -> np.ndarray | None:
        """Softmax output of the last ``forward`` (computed on demand)."""
        if self.x is None:
            return None
        with np.errstate(invalid="ignore"):  # a row holding +-inf gives NaN, silently
            e = np.exp(self.x - self.x.max(axis=1, keepdims=True))
            return e / e.sum(axis=1, keepdims=True)

    def forward(self, x: ArrayLike, t: ArrayLike) -> float:
        x = _floats("x", x)
        t_arr = check.as_array("t", t)
        if (t_arr.ndim == 2 and t_arr.shape[1] == 1 and x.ndim == 2 and x.shape[1] > 1
                and t_arr.dtype.kind in "iu"):
            # (N, 1) integer labels, as the book's ch07/gradient_check.py passes them (its
            # cross_entropy_error indexes with them): labels, not one-hot rows.
            t = t_arr.reshape(t_arr.shape[0])
        loss, dx = ops.softmax_cross_entropy(x, t)
        # Only now: after a forward that raised, backward does not return a stale gradient
        # for inputs it never saw; the layer stays as it was.
        self.x, self.t, self.loss, self.dx = x, t, loss, dx
        return loss

    def backward(self, dout: ArrayLike = 1) -> np.ndarray:
        _forward_first(self, "dx")
        d = check.as_array("dout", dout)
        if d.dtype.kind not in "biuf":
            raise TypeError(f"dout must be a real number, got {d.dtype}")
        if d.ndim == 0 and d == 1:
            return self.dx
        if d.ndim and d.shape != self.dx.shape:
            raise ValueError(f"dout must be a scalar or have the shape of x, {self.dx.shape}, "
                             f"got {d.shape}")
        return self.dx * dout


class Dropout:
    """Dropout (the book's chapter 6): in training, each element is kept where
    ``np.random.rand(*x.shape) > dropout_ratio``, drawn exactly as the book draws it (so
    ``np.random.seed(s)`` reproduces the book's masks), and zeroed elsewhere; in evaluation
    the output is ``x * (1 - dropout_ratio)``.

    ``mask`` (bool, the input's shape) is the last training mask; ``backward`` multiplies
    by it. For masks independent of NumPy's global generator and of the thread count, see
    :func:`fastbp.ops.dropout_forward`.
    """

    def __init__(self, dropout_ratio: float = 0.5) -> None:
        self.dropout_ratio = dropout_ratio
        self.mask = None

    def forward(self, x: ArrayLike, train_flg: bool = True) -> np.ndarray:
        ratio = check.ratio(self.dropout_ratio, "dropout_ratio")
        x = _floats("x", x)
        if not train_flg:
            return x * x.dtype.type(1.0 - ratio)
        mask = np.asarray(np.random.rand(*x.shape) > ratio)
        out = ops.apply_mask(x, mask, name="x")
        self.mask = mask
        return out

    def backward(self, dout: ArrayLike) -> np.ndarray:
        _forward_first(self, "mask")
        return ops.dropout_backward(_floats("dout", dout), self.mask)


class BatchNormalization:
    """Batch normalization (the book's chapter 6) per feature of a batch of rows.

    2-D input ``(N, D)`` is normalized per column; any other input ``(N, ...)`` (e.g. 4-D
    ``(N, C, H, W)``) per feature of ``x.reshape(N, -1)``, as the book does, and the output
    has the input's shape. `gamma` and `beta` are ``(D,)`` arrays held by reference (never
    copied), so an optimizer updating them in place is seen by the layer.

    The running statistics are created as zeros of gamma's dtype by the first ``forward``
    if None. Training updates them **in place**, ``r = momentum * r + (1 - momentum) *
    batch_statistic`` (the book rebinds new arrays with the same values): an array passed in
    or read from ``running_mean`` / ``running_var`` keeps following the training.

    ``forward`` with ``train_flg=True`` stores ``batch_size``, ``xc``, ``xn`` and ``std``
    for ``backward``, which sets ``dgamma`` and ``dbeta`` and returns ``dx``.
    """

    def __init__(self, gamma: np.ndarray, beta: np.ndarray, momentum: float = 0.9,
                 running_mean: np.ndarray | None = None,
                 running_var: np.ndarray | None = None) -> None:
        _init_fields(self, ("input_shape", "batch_size", "xc", "xn", "std", "dgamma", "dbeta"),
                     gamma=gamma, beta=beta, momentum=momentum, running_mean=running_mean,
                     running_var=running_var)

    def forward(self, x: ArrayLike, train_flg: bool = True) -> np.ndarray:
        gamma = _float_param(self, "gamma")
        x = _floats("x", x, gamma.dtype)
        x2 = _rows(x)
        D = x2.shape[1]
        rm, rv = self.running_mean, self.running_var
        if rm is None:
            rm = np.zeros(D, gamma.dtype)
        if rv is None:
            rv = np.zeros(D, gamma.dtype)
        res = ops.batchnorm_forward(x2, gamma, self.beta, rm, rv, self.momentum, train_flg)
        # Only now: a forward that raised leaves the layer as it was.
        self.running_mean, self.running_var = rm, rv
        self.input_shape = x.shape
        if not train_flg:
            return res.reshape(x.shape)
        self.batch_size = x2.shape[0]
        self.xc, self.xn, self.std = res.xc, res.xn, res.std
        return res.out.reshape(x.shape)

    def backward(self, dout: ArrayLike) -> np.ndarray:
        _forward_first(self, "xc")
        d = _floats("dout", dout, self.xc.dtype)
        if d.ndim < 2 or d.shape[0] != self.xc.shape[0] or d.size != self.xc.size:
            raise ValueError(f"dout must have the shape of the last training forward's input "
                             f"({self.xc.shape[0]} rows, {self.xc.size} elements), got shape "
                             f"{d.shape}")
        dx, self.dgamma, self.dbeta = ops.batchnorm_backward(
            d.reshape(self.xc.shape), self.xc, self.xn, self.std, self.gamma)
        return dx.reshape(d.shape)


class Convolution:
    """2-D convolution of ``(N, C, H, W)`` images with filters `W` ``(FN, C, FH, FW)`` and
    bias `b` ``(FN,)`` (the book's chapter 7; held by reference, never copied).

    ``forward`` returns ``(N, FN, OH, OW)`` with ``OH = (H + 2 pad - FH) / stride + 1``,
    which must be a whole number; ``backward`` sets ``dW`` and ``db`` and returns ``dx``.
    Direct convolution kernels (:func:`fastbp.ops.conv2d_forward`), not the book's im2col:
    the same results to rounding.
    """

    def __init__(self, W: np.ndarray, b: np.ndarray, stride: int = 1, pad: int = 0) -> None:
        _init_fields(self, ("x", "dW", "db"), W=W, b=b, stride=stride, pad=pad)

    def forward(self, x: ArrayLike) -> np.ndarray:
        W = _float_param(self, "W")
        x = _floats("x", x, W.dtype)
        out = ops.conv2d_forward(x, W, self.b, self.stride, self.pad)
        self.x = x  # only now: a forward that raised leaves the layer as it was
        return out

    def backward(self, dout: ArrayLike) -> np.ndarray:
        _forward_first(self, "x")
        dx, self.dW, self.db = ops.conv2d_backward(_floats("dout", dout, self.W.dtype), self.x,
                                                   self.W, self.stride, self.pad)
        return dx


class Pooling:
    """Max pooling over ``pool_h x pool_w`` windows (the book's chapter 7).

    ``arg_max`` holds, after ``forward``, the row-major index in its window of each
    output's maximum, shaped like the output (the book keeps it flat, in another order).
    """

    def __init__(self, pool_h: int, pool_w: int, stride: int = 2, pad: int = 0) -> None:
        _init_fields(self, ("x_shape", "arg_max"), pool_h=pool_h, pool_w=pool_w, stride=stride,
                     pad=pad)

    def forward(self, x: ArrayLike) -> np.ndarray:
        out, arg_max = ops.maxpool_forward(_floats("x", x), self.pool_h, self.pool_w,
                                           self.stride, self.pad)
        self.x_shape, self.arg_max = np.shape(x), arg_max
        return out

    def backward(self, dout: ArrayLike) -> np.ndarray:
        _forward_first(self, "arg_max")
        d = _floats("dout", dout)
        return ops.maxpool_backward(d, self.arg_max, self.x_shape, self.pool_h, self.pool_w,
                                    self.stride, self.pad)
