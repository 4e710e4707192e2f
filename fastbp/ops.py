"""Validated wrappers around :mod:`fastbp.kernels`, for arbitrary array-likes.

Each function checks dtypes (``TypeError``) and shapes, label ranges and empty batches
(``ValueError``) with a message that names the argument and the fix, makes inputs
C-contiguous (a copy only when needed), and allocates the output unless ``out=`` is given.
No kernel is ever called with a shape it would read or write out of bounds with.
"""
from typing import NamedTuple

from numpy.typing import ArrayLike

import numpy as np

from . import kernels as K
from . import validation as check
from .kernels._docstrings import with_doc

def _out(name, out, shape, dtype, inputs=()):
    """Allocate `out`, or check a caller's buffer (it must be written in place as given)."""
    if out is None:
        return np.empty(shape, dtype)
    dn = np.dtype(dtype).name
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(out).__name__}")
    if out.dtype != dtype:
        raise TypeError(f"{name} must be {dn}, got {out.dtype}; allocate it with "
                        f"np.empty({shape}, np.{dn})")
    if out.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {out.shape}")
    if not out.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous; allocate it with np.empty({shape}, "
                         f"np.{dn})")
    if not out.flags.writeable:
        raise ValueError(f"{name} is read-only; pass a writeable buffer")
    for other_name, other in inputs:
        if np.may_share_memory(out, other):
            raise ValueError(f"{name} must not share memory with {other_name}")
    return out


def _exact_alias(a, b):
    """True when `a` and `b` are the same memory viewed the same way (safe in place)."""
    ia, ib = a.__array_interface__, b.__array_interface__
    return ia["data"] == ib["data"] and a.shape == b.shape and a.strides == b.strides


def _elementwise(kernel, names, arrays, out, out_name, aliasable):
    first = check.float_array(names[0], arrays[0])
    rest = [check.float_array(n, a, dtype=first.dtype) for n, a in zip(names[1:], arrays[1:])]
    for n, a in zip(names[1:], rest):
        check.same_shape(n, a, first.shape, names[0])
    out = _out(out_name, out, first.shape, first.dtype)
    for n, a in zip(names, [first] + rest):
        # In place (`out` is an input itself) is fine elementwise; a partial overlap (a
        # shifted view) would read elements the kernel has already overwritten.
        if np.may_share_memory(out, a) and not (aliasable and _exact_alias(out, a)):
            raise ValueError(f"{out_name} overlaps {n} without being the same array; pass "
                             f"{out_name}={n} itself (in place) or a separate buffer")
    if first.size:
        kernel(first, *rest, out)
    return out


def relu_forward(x: ArrayLike, out: np.ndarray | None = None) -> np.ndarray:
    """ReLU of `x` (any shape, float32/float64); returns `out` (may be `x` itself)."""
    return _elementwise(K.relu_forward, ("x",), (x,), out, "out", True)


def relu_backward(x: ArrayLike, dout: ArrayLike, out: np.ndarray | None = None) -> np.ndarray:
    """``dout`` where ``x > 0``, else 0; `x` is the forward input or output; returns `out`."""
    return _elementwise(K.relu_backward, ("x", "dout"), (x, dout), out, "out", True)


def sigmoid_forward(x: ArrayLike, out: np.ndarray | None = None) -> np.ndarray:
    """Sigmoid of `x` (any shape), overflow-free; returns `out` (may be `x` itself)."""
    return _elementwise(K.sigmoid_forward, ("x",), (x,), out, "out", True)


def sigmoid_backward(y: ArrayLike, dout: ArrayLike, out: np.ndarray | None = None) -> np.ndarray:
    """``dout * y * (1 - y)`` from the forward output `y`; returns `out`."""
    return _elementwise(K.sigmoid_backward, ("y", "dout"), (y, dout), out, "out", True)


def _rows_match(W, x):
    if W.shape[0] != x.shape[1]:
        raise ValueError(f"W must have {x.shape[1]} rows (x has {x.shape[1]} features), got "
                         f"shape {W.shape}")


def _params(x, W, b):
    x = check.float_batch("x", x)
    W = check.float_array("W", W, 2, x.dtype)
    b = check.float_array("b", b, 1, x.dtype)
    _rows_match(W, x)
    if b.shape[0] != W.shape[1]:
        raise ValueError(f"b must have {W.shape[1]} elements (W has {W.shape[1]} columns), got "
                         f"shape {b.shape}")
    return x, W, b


def affine_forward(x: ArrayLike, W: ArrayLike, b: ArrayLike, out: np.ndarray | None = None) -> np.ndarray:
    """``x @ W + b``.

    Parameters
    ----------
    x : array_like, (n, d), float32 or float64
    W : array_like, (d, m), dtype of `x`
    b : array_like, (m,), dtype of `x`
    out : ndarray, (n, m), optional
        Written in place if given.

    Returns
    -------
    ndarray, (n, m)
    """
    x, W, b = _params(x, W, b)
    out = _out("out", out, (x.shape[0], W.shape[1]), x.dtype, [("x", x), ("W", W), ("b", b)])
    K.affine_forward(x, W, b, out)
    return out


def affine_backward(dout: ArrayLike, x: ArrayLike, W: ArrayLike, *, need_dx: bool = True, dx: np.ndarray | None = None,
                    dW: np.ndarray | None = None, db: np.ndarray | None = None
                    ) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """Gradients of ``x @ W + b``.

    Parameters
    ----------
    dout : array_like, (n, m), dtype of `x`
        Upstream gradient.
    x : array_like, (n, d), float32 or float64
        Forward input.
    W : array_like, (d, m), dtype of `x`
    need_dx : bool
        False skips ``dx`` (returned as None): the first layer never needs it.
    dx, dW, db : ndarray, optional
        Buffers written in place, of shapes (n, d), (d, m), (m,).

    Returns
    -------
    dx, dW, db : ndarray or None, ndarray, ndarray
    """
    x = check.float_batch("x", x)
    W = check.float_array("W", W, 2, x.dtype)
    dout = check.float_array("dout", dout, 2, x.dtype)
    _rows_match(W, x)
    check.same_shape("dout", dout, (x.shape[0], W.shape[1]), "x @ W")
    ins = [("x", x), ("W", W), ("dout", dout)]
    dW = _out("dW", dW, W.shape, x.dtype, ins)
    db = _out("db", db, (W.shape[1],), x.dtype, ins + [("dW", dW)])
    if need_dx:
        dx = _out("dx", dx, x.shape, x.dtype, ins + [("dW", dW), ("db", db)])
        K.affine_backward(dout, x, W, dW, db, dx)
        return dx, dW, db
    K.affine_backward(dout, x, W, dW, db)
    return None, dW, db


def softmax_cross_entropy(x: ArrayLike, t: ArrayLike, dx: np.ndarray | None = None) -> tuple[float, np.ndarray]:
    """Mean softmax-cross-entropy of logits `x` against `t`, and its gradient.

    Parameters
    ----------
    x : array_like, (n, c), float32 or float64
        Logits.
    t : array_like, (n,) integer labels in [0, c), or (n, c) one-hot (or probability) rows
    dx : ndarray, (n, c), optional
        Written in place with ``(softmax(x) - t) / n``.

    Returns
    -------
    loss : float
    dx : ndarray, (n, c)
    """
    x = check.float_batch("x", x)
    if x.shape[1] == 0:
        raise ValueError(f"x must have at least one class (column), got shape {x.shape}")
    t = check.targets(t, x)
    dx = _out("dx", dx, x.shape, x.dtype, [("x", x), ("t", t)])
    return K.softmax_cross_entropy(x, t, dx), dx


def _param_grad(param, grad):
    """Check a parameter updated in place and its gradient; return the gradient as an array
    of `param`'s dtype."""
    if not isinstance(param, np.ndarray):
        raise TypeError(f"param must be a numpy.ndarray (updated in place), got "
                        f"{type(param).__name__}")
    if param.dtype not in check.FLOATS:
        raise TypeError(f"param must be float32 or float64, got {param.dtype}; keep parameters "
                        "as float arrays")
    _out("param", param, param.shape, param.dtype)
    grad = check.float_array("grad", grad, dtype=param.dtype)
    check.same_shape("grad", grad, param.shape, "param")
    return grad


def sgd_update(param: np.ndarray, grad: ArrayLike, lr: float) -> np.ndarray:
    """``param -= lr * grad`` in place; `param` must be a writeable C-contiguous float array."""
    grad = _param_grad(param, grad)
    lr = check.real("lr", lr)
    if not np.isfinite(lr):
        raise ValueError(f"lr must be finite, got {lr}")
    if param.size:
        K.sgd_update(param, grad, lr)
    return param


# -- the book's chapter-6 optimizers (fastbp.kernels.optimizers) --------------------------

def _state(name, s, param, others):
    """Check an optimizer state array: written in place, so it must be exactly right."""
    fix = "create it once with np.zeros_like(param) and pass it to every update"
    if not isinstance(s, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray (optimizer state, updated in place), "
                        f"got {type(s).__name__}; {fix}")
    if s.dtype != param.dtype:
        raise TypeError(f"{name} must be {param.dtype} like param, got {s.dtype}; {fix}")
    check.same_shape(name, s, param.shape, "param")
    if not (s.flags.c_contiguous and s.flags.writeable):
        raise ValueError(f"{name} must be a writeable C-contiguous array; {fix}")
    for other_name, other in others:
        if np.may_share_memory(s, other):
            raise ValueError(f"{name} must not share memory with {other_name}; {fix}")


def _update_arrays(param, grad, **states):
    """``[param, grad, *states]`` as 1-D views for the kernel (one compiled signature per
    dtype, whatever the shape), after checking all of them: nothing is written before."""
    grad = _param_grad(param, grad)
    if np.may_share_memory(grad, param):
        raise ValueError("grad must not share memory with param; pass a separate array")
    seen = [("param", param), ("grad", grad)]
    for name, s in states.items():
        _state(name, s, param, seen)
        seen.append((name, s))
    return [a.reshape(-1) for a in (param, grad, *states.values())]


def _run_update(kernel, flat, param, *hyper):
    """Call an update `kernel` on the checked 1-D views `flat` (not for an empty `param`)
    and return `param`."""
    if param.size:
        kernel(*flat, *hyper)
    return param


def _velocity_update(kernel, param, grad, v, lr, momentum, decay):
    """Momentum's and Nesterov's checks and call: the same arguments, another kernel."""
    flat = _update_arrays(param, grad, v=v)
    lr, momentum = check.finite("lr", lr), check.unit_interval("momentum", momentum)
    decay = check.finite("decay", decay, 0)
    return _run_update(kernel, flat, param, lr, momentum, decay)


#: Parameter and return descriptions the update functions share (filled in by with_doc).
_UPDATE_DOCS = {
    "param_grad": "param : ndarray, float32 or float64, writeable, C-contiguous\n"
                  "        Updated in place.\n"
                  "    grad : array_like, shape and dtype of `param`",
    "lr": "lr : float\n        Learning rate, finite.",
    "velocity": "v : ndarray, shape and dtype of `param`, writeable, C-contiguous\n"
                "        Velocity, zeros before the first update; updated in place.\n"
                "    lr : float\n        Learning rate, finite.\n"
                "    momentum : float\n        In [0, 1).",
    "decay_returns": "decay : float\n"
                     "        Weight-decay coefficient, finite, >= 0.\n"
                     "\n"
                     "    Returns\n"
                     "    -------\n"
                     "    ndarray\n"
                     "        `param`.",
}


@with_doc(**_UPDATE_DOCS)
def sgd_decay_update(param: np.ndarray, grad: ArrayLike, lr: float, decay: float = 0.0) -> np.ndarray:
    """SGD with L2 weight decay, in place: ``param -= lr * (grad + decay * param)``.

    Parameters
    ----------
    {param_grad}
    {lr}
    decay : float
        Weight-decay coefficient, finite, >= 0 (0: plain SGD, as :func:`sgd_update`).

    Returns
    -------
    ndarray
        `param`.
    """
    flat = _update_arrays(param, grad)
    lr, decay = check.finite("lr", lr), check.finite("decay", decay, 0)
    return _run_update(K.sgd_decay_update, flat, param, lr, decay)


@with_doc(**_UPDATE_DOCS)
def momentum_update(param: np.ndarray, grad: ArrayLike, v: np.ndarray, lr: float, momentum: float = 0.9,
                    decay: float = 0.0) -> np.ndarray:
    """The book's Momentum SGD, in place: ``v = momentum*v - lr*g; param += v``.

    Parameters
    ----------
    {param_grad}
        ``g = grad + decay * param``.
    {velocity}
    {decay_returns}
    """
    return _velocity_update(K.momentum_update, param, grad, v, lr, momentum, decay)


@with_doc(**_UPDATE_DOCS)
def nesterov_update(param: np.ndarray, grad: ArrayLike, v: np.ndarray, lr: float, momentum: float = 0.9,
                    decay: float = 0.0) -> np.ndarray:
    """The book's Nesterov update, in place.

    ``param += momentum**2 * v; param -= (1+momentum)*lr*g; v = momentum*v - lr*g`` with
    ``g = grad + decay * param``.

    Parameters
    ----------
    {param_grad}
    {velocity}
    {decay_returns}
    """
    return _velocity_update(K.nesterov_update, param, grad, v, lr, momentum, decay)


@with_doc(**_UPDATE_DOCS)
def adagrad_update(param: np.ndarray, grad: ArrayLike, h: np.ndarray, lr: float, decay: float = 0.0) -> np.ndarray:
    """The book's AdaGrad, in place: ``h += g*g; param -= lr*g / (sqrt(h) + 1e-7)``.

    Parameters
    ----------
    {param_grad}
        ``g = grad + decay * param``.
    h : ndarray, shape and dtype of `param`, writeable, C-contiguous
        Sum of squared gradients, zeros before the first update; updated in place.
    {lr}
    {decay_returns}
    """
    flat = _update_arrays(param, grad, h=h)
    lr, decay = check.finite("lr", lr), check.finite("decay", decay, 0)
    return _run_update(K.adagrad_update, flat, param, lr, decay)


@with_doc(**_UPDATE_DOCS)
def rmsprop_update(param: np.ndarray, grad: ArrayLike, h: np.ndarray, lr: float, decay_rate: float = 0.99,
                   decay: float = 0.0) -> np.ndarray:
    """The book's RMSprop, in place.

    ``h = decay_rate*h + (1-decay_rate)*g*g; param -= lr*g / (sqrt(h) + 1e-7)`` with
    ``g = grad + decay * param``.

    Parameters
    ----------
    {param_grad}
    h : ndarray, shape and dtype of `param`, writeable, C-contiguous
        Running mean of squared gradients, zeros before the first update; updated in place.
    {lr}
    decay_rate : float
        In [0, 1).
    {decay_returns}
    """
    flat = _update_arrays(param, grad, h=h)
    lr, decay_rate = check.finite("lr", lr), check.unit_interval("decay_rate", decay_rate)
    decay = check.finite("decay", decay, 0)
    return _run_update(K.rmsprop_update, flat, param, lr, decay_rate, decay)


@with_doc(**_UPDATE_DOCS)
def adam_update(param: np.ndarray, grad: ArrayLike, m: np.ndarray, v: np.ndarray, lr_t: float, beta1: float = 0.9,
                beta2: float = 0.999, decay: float = 0.0) -> np.ndarray:
    """The book's Adam, in place.

    ``m += (1-beta1)*(g-m); v += (1-beta2)*(g*g-v); param -= lr_t*m / (sqrt(v) + 1e-7)``
    with ``g = grad + decay * param``.

    Parameters
    ----------
    {param_grad}
    m, v : ndarray, shape and dtype of `param`, writeable, C-contiguous, separate
        Moment estimates, zeros before the first update; updated in place.
    lr_t : float
        Bias-corrected step, ``lr * sqrt(1 - beta2**t) / (1 - beta1**t)`` at step ``t``
        (1, 2, ...), finite; :meth:`fastbp.optimizers.Adam.next_hyper` computes it.
    beta1, beta2 : float
        In [0, 1).
    {decay_returns}
    """
    flat = _update_arrays(param, grad, m=m, v=v)
    lr_t = check.finite("lr_t", lr_t)
    beta1, beta2 = check.unit_interval("beta1", beta1), check.unit_interval("beta2", beta2)
    decay = check.finite("decay", decay, 0)
    return _run_update(K.adam_update, flat, param, lr_t, beta1, beta2, decay)


# -- batch normalization and dropout (fastbp.kernels.batchnorm, fastbp.kernels.dropout) ---

class BatchNormForward(NamedTuple):
    """Training-mode :func:`batchnorm_forward`: the output and what the backward needs."""

    out: np.ndarray
    xc: np.ndarray
    xn: np.ndarray
    std: np.ndarray


class BatchNormGrads(NamedTuple):
    """:func:`batchnorm_backward`'s gradients."""

    dx: np.ndarray
    dgamma: np.ndarray
    dbeta: np.ndarray


def _features(name, a, D, dtype):
    """A (D,) per-feature array (gamma, beta, std, ...) of `dtype`, checked."""
    a = check.float_array(name, a, 1, dtype)
    if a.shape[0] != D:
        raise ValueError(f"{name} must have {D} elements (one per feature of x), got shape "
                         f"{a.shape}")
    return a


def _running(name, a, D, dtype, inputs):
    """A running statistic updated in place: the caller's own array, exactly right."""
    fix = f"create it once with np.zeros({D}, np.{np.dtype(dtype).name})"
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray (updated in place), got "
                        f"{type(a).__name__}; {fix}")
    if a.dtype != dtype:
        raise TypeError(f"{name} must be {np.dtype(dtype).name} like x, got {a.dtype}; convert "
                        f"it once with {name} = {name}.astype(np.{np.dtype(dtype).name})")
    if a.shape != (D,):
        raise ValueError(f"{name} must have shape ({D},) (one value per feature of x), got "
                         f"{a.shape}")
    if not (a.flags.c_contiguous and a.flags.aligned and a.flags.writeable):
        raise ValueError(f"{name} must be a writeable C-contiguous array (updated in place); "
                         f"{fix}")
    for other_name, other in inputs:
        if np.may_share_memory(a, other):
            raise ValueError(f"{name} must not share memory with {other_name}; {fix}")
    return a


def batchnorm_forward(x: ArrayLike, gamma: ArrayLike, beta: ArrayLike,
                      running_mean: np.ndarray, running_var: np.ndarray,
                      momentum: float = 0.9, train_flg: bool = True
                      ) -> BatchNormForward | np.ndarray:
    """Batch normalization of the rows of `x`, the book's ``BatchNormalization`` forward.

    Parameters
    ----------
    x : array_like, (n, D), float32 or float64, n >= 1
        For a 4-D batch pass ``x.reshape(n, -1)`` (per-feature statistics, as the book's
        layer and :class:`fastbp.layers.BatchNormalization` do).
    gamma, beta : array_like, (D,), dtype of `x`
        Scale and shift.
    running_mean, running_var : ndarray, (D,), dtype of `x`
        With ``train_flg``: updated in place, ``r = momentum * r + (1 - momentum) *
        batch_statistic``, so they must be writeable C-contiguous arrays. Otherwise: the
        statistics the batch is normalized with.
    momentum : float
        In [0, 1].
    train_flg : bool
        True: normalize with the batch's own mean and variance. False: with the running
        statistics.

    Returns
    -------
    BatchNormForward or ndarray
        With ``train_flg``, ``(out, xc, xn, std)``: the output, ``x - mean``, the
        normalized batch and ``sqrt(var + EPS_BN)`` (the last three are what
        :func:`batchnorm_backward` needs). Otherwise the output alone. Arrays of `x`'s dtype.
    """
    x = check.float_batch("x", x)
    n, D = x.shape
    gamma = _features("gamma", gamma, D, x.dtype)
    beta = _features("beta", beta, D, x.dtype)
    momentum = check.real("momentum", momentum)
    if not 0 <= momentum <= 1:  # NaN fails too
        raise ValueError(f"momentum must be in [0, 1], got {momentum}")
    if train_flg:
        ins = [("x", x), ("gamma", gamma), ("beta", beta)]
        running_mean = _running("running_mean", running_mean, D, x.dtype, ins)
        running_var = _running("running_var", running_var, D, x.dtype,
                               ins + [("running_mean", running_mean)])
    else:
        for name, a in (("running_mean", running_mean), ("running_var", running_var)):
            if a is None:
                raise TypeError(f"{name} is required to normalize with running statistics "
                                f"(train_flg=False), got None; pass the arrays training "
                                f"updated, or np.zeros({D}) before any training")
        running_mean = _features("running_mean", running_mean, D, x.dtype)
        running_var = _features("running_var", running_var, D, x.dtype)
    if not (running_var >= 0).all():
        raise ValueError("running_var must hold variances (>= 0, not NaN), got minimum "
                         f"{running_var.min()}; start it with np.zeros({D})")
    out = np.empty_like(x)
    if not train_flg:
        K.batchnorm_forward_eval(x, gamma, beta, running_mean, running_var, out)
        return out
    xc, xn, std = np.empty_like(x), np.empty_like(x), np.empty(D, x.dtype)
    K.batchnorm_forward_train(x, gamma, beta, momentum, running_mean, running_var, xc, xn,
                              std, out)
    return BatchNormForward(out, xc, xn, std)


def batchnorm_backward(dout: ArrayLike, xc: np.ndarray, xn: np.ndarray, std: np.ndarray,
                       gamma: ArrayLike) -> BatchNormGrads:
    """Gradients of training-mode batch normalization, the book's backward pass.

    Parameters
    ----------
    dout : array_like, (n, D), float32 or float64
        Upstream gradient.
    xc, xn, std : array_like
        From :func:`batchnorm_forward` with ``train_flg=True``: (n, D), (n, D), (D,).
    gamma : array_like, (D,)
        The scale used in that forward pass.

    Returns
    -------
    BatchNormGrads
        ``(dx, dgamma, dbeta)``, of shapes (n, D), (D,), (D,) and `dout`'s dtype.
    """
    dout = check.float_batch("dout", dout)
    n, D = dout.shape
    xc = check.float_array("xc", xc, 2, dout.dtype)
    check.same_shape("xc", xc, dout.shape, "dout")
    xn = check.float_array("xn", xn, 2, dout.dtype)
    check.same_shape("xn", xn, dout.shape, "dout")
    std = _features("std", std, D, dout.dtype)
    gamma = _features("gamma", gamma, D, dout.dtype)
    if not (std > 0).all():
        raise ValueError("std must be positive, the forward pass's sqrt(var + eps), got "
                         f"minimum {std.min()}")
    dx = np.empty_like(dout)
    dgamma, dbeta = np.empty(D, dout.dtype), np.empty(D, dout.dtype)
    K.batchnorm_backward(dout, xc, xn, std, gamma, dgamma, dbeta, dx)
    return BatchNormGrads(dx, dgamma, dbeta)


def _uint64(name, v):
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(v).__name__}")
    if not 0 <= int(v) < 1 << 64:
        raise ValueError(f"{name} must be in [0, 2**64), got {v}")
    return np.uint64(v)


def _mask(mask, shape, ref):
    """A dropout mask for an array `ref` of `shape`, as C-contiguous uint8 0/1 (a bool mask
    is viewed, not copied)."""
    m = check.as_array("mask", mask)
    if m.dtype == np.bool_:
        m = m.view(np.uint8)
    elif m.dtype != np.uint8:
        raise TypeError(f"mask must be bool or uint8 (0 or 1), got {m.dtype}; pass the mask "
                        "dropout_forward returned, or mask.astype(np.uint8)")
    elif m.size and m.max() > 1:
        raise ValueError(f"mask must hold only 0 and 1, got the value {m.max()}")
    check.same_shape("mask", m, shape, ref)
    return m if m.flags.c_contiguous else m.copy(order="C")


def dropout_forward(x: ArrayLike, ratio: float, seed: int, stream: int = 0
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Dropout with fastbp's counter-based generator: ``x * mask``.

    The mask is a pure function of ``(seed, stream)`` and the element's index (Philox4x32-10,
    see :mod:`fastbp.kernels.dropout`): the same for any number of threads. (The
    :class:`~fastbp.layers.Dropout` layer instead draws from ``np.random``, as the book.)

    Parameters
    ----------
    x : array_like, float32 or float64, any shape
    ratio : float
        Probability of dropping each element, in [0, 1].
    seed, stream : int
        In ``[0, 2**64)``. One stream per layer and step gives independent masks.

    Returns
    -------
    out : ndarray, shape and dtype of `x`
    mask : ndarray, uint8 (0 or 1), shape of `x`
    """
    x = check.float_array("x", x)
    ratio = check.ratio(ratio)
    seed = _uint64("seed", seed)
    stream = _uint64("stream", stream)
    mask = np.empty(x.shape, np.uint8)
    out = np.empty_like(x)
    if x.size:
        K.dropout_mask(ratio, seed, stream, mask)
        K.dropout_forward(x, mask, out)
    return out, mask


def apply_mask(a: ArrayLike, mask: ArrayLike, out: np.ndarray | None = None, *,
               name: str = "a") -> np.ndarray:
    """``a * mask`` for a dropout mask: the product of dropout's forward pass with a mask
    drawn elsewhere (the :class:`~fastbp.layers.Dropout` layer's) and of its backward pass.

    Parameters
    ----------
    a : array_like, float32 or float64, any shape
    mask : array_like, bool or uint8 (0 or 1), shape of `a`
    out : ndarray, optional
        Written in place if given (may be `a` itself).
    name : str, optional
        What the caller calls `a`, for the error messages.

    Returns
    -------
    ndarray, shape and dtype of `a`
    """
    a = check.float_array(name, a)
    mask = _mask(mask, a.shape, name)
    out = _out("out", out, a.shape, a.dtype, [("mask", mask)])
    if np.may_share_memory(out, a) and not _exact_alias(out, a):
        raise ValueError(f"out overlaps {name} without being the same array; pass out={name} "
                         "itself (in place) or a separate buffer")
    if a.size:
        K.dropout_backward(a, mask, out)
    return out


def dropout_backward(dout: ArrayLike, mask: ArrayLike, out: np.ndarray | None = None) -> np.ndarray:
    """``dout * mask``, the gradient of dropout.

    Parameters
    ----------
    dout : array_like, float32 or float64, any shape
    mask : array_like, bool or uint8 (0 or 1), shape of `dout`
        The forward pass's mask.
    out : ndarray, optional
        Written in place if given (may be `dout` itself).

    Returns
    -------
    ndarray, shape and dtype of `dout`
    """
    return apply_mask(dout, mask, out, name="dout")


# -- convolution and pooling (chapter 7) ------------------------------------------------

def _window_int(name, v, minimum):
    """A stride, pad or window size: an int (a float with an integer value is accepted, as
    the book passes e.g. ``stride=1.0`` through), at least `minimum`; else ValueError."""
    if isinstance(v, (bool, np.bool_)):
        raise ValueError(f"{name} must be an integer, got {v!r}")
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        v = int(v)
    if not isinstance(v, (int, np.integer)):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {v!r}")
    if v < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {v}")
    return int(v)


def _out_len(size, window, stride, pad, axis, window_name):
    """``(size + 2 pad - window) / stride + 1``, which must be a whole number >= 1."""
    if window > size + 2 * pad:
        raise ValueError(f"{window_name} ({window}) is larger than the padded input's "
                         f"{axis} ({size} + 2 * {pad}); use a smaller window or more padding")
    if (size + 2 * pad - window) % stride:
        raise ValueError(f"stride {stride} does not fit the input's {axis}: ({size} + 2 * "
                         f"{pad} - {window}) / {stride} + 1 is not a whole number; change "
                         f"stride or pad")
    return (size + 2 * pad - window) // stride + 1


def conv_shapes(x_shape: tuple[int, ...], W_shape: tuple[int, ...], stride: int, pad: int
                ) -> tuple[int, int, int, int]:
    """Check a convolution's geometry; return ``(stride, pad, OH, OW)``.

    Raises ValueError naming `W`, `stride` or `pad` (see :func:`conv2d_forward`).
    """
    stride = _window_int("stride", stride, 1)
    pad = _window_int("pad", pad, 0)
    if len(W_shape) != 4:
        raise ValueError(f"W must be 4-D (FN, C, FH, FW), got shape {tuple(W_shape)}")
    if W_shape[1] != x_shape[1]:
        raise ValueError(f"W has {W_shape[1]} input channels (shape {tuple(W_shape)}) but x "
                         f"has {x_shape[1]} (shape {tuple(x_shape)})")
    if min(W_shape) == 0:
        raise ValueError(f"W must not be empty, got shape {tuple(W_shape)}")
    OH = _out_len(x_shape[2], W_shape[2], stride, pad, "height", "filter height (W)")
    OW = _out_len(x_shape[3], W_shape[3], stride, pad, "width", "filter width (W)")
    return stride, pad, OH, OW


def pool_shapes(x_shape: tuple[int, ...], pool_h: int, pool_w: int, stride: int, pad: int
                ) -> tuple[int, int, int, int, int, int]:
    """Check a pooling window's geometry; return ``(pool_h, pool_w, stride, pad, OH, OW)``."""
    pool_h = _window_int("pool_h", pool_h, 1)
    pool_w = _window_int("pool_w", pool_w, 1)
    stride = _window_int("stride", stride, 1)
    pad = _window_int("pad", pad, 0)
    OH = _out_len(x_shape[2], pool_h, stride, pad, "height", "pool_h")
    OW = _out_len(x_shape[3], pool_w, stride, pad, "width", "pool_w")
    return pool_h, pool_w, stride, pad, OH, OW


def conv2d_forward(x: ArrayLike, W: ArrayLike, b: ArrayLike, stride: int = 1, pad: int = 0
                   ) -> np.ndarray:
    """Convolution of a batch of images, the book's ``Convolution.forward``.

    Parameters
    ----------
    x : array_like, (N, C, H, W), float32 or float64
    W : array_like, (FN, C, FH, FW), dtype of `x`
    b : array_like, (FN,), dtype of `x`
    stride : int >= 1
    pad : int >= 0
        Zeros added on each side of the height and width.

    Returns
    -------
    ndarray, (N, FN, OH, OW), dtype of `x`
        ``OH = (H + 2 pad - FH) / stride + 1`` (likewise ``OW``).

    Raises
    ------
    TypeError
        If an array is not float32/float64 or the dtypes differ.
    ValueError
        If `x` is not 4-D or empty, `W`'s channel count differs from `x`'s, a filter is
        larger than the padded input, `stride` < 1 or `pad` < 0 or either is not an
        integer, or the output size is not a whole number.
    """
    x = check.images("x", x)
    W = check.float_array("W", W, dtype=x.dtype)
    stride, pad, OH, OW = conv_shapes(x.shape, W.shape, stride, pad)
    b = check.float_array("b", b, 1, x.dtype)
    if b.shape[0] != W.shape[0]:
        raise ValueError(f"b must have {W.shape[0]} elements (one per filter of W), got "
                         f"shape {b.shape}")
    out = np.empty((x.shape[0], W.shape[0], OH, OW), x.dtype)
    K.conv2d_forward(x, W, b, stride, pad, out)
    return out


class ConvGrads(NamedTuple):
    """:func:`conv2d_backward`'s gradients (``dx`` None when not requested)."""
    dx: object
    dW: np.ndarray
    db: np.ndarray


def conv2d_backward(dout: ArrayLike, x: ArrayLike, W: ArrayLike, stride: int = 1, pad: int = 0,
                    *, need_dx: bool = True) -> ConvGrads:
    """Gradients of :func:`conv2d_forward`.

    Parameters
    ----------
    dout : array_like, (N, FN, OH, OW), dtype of `x`
    x : array_like, (N, C, H, W), float32 or float64: the forward input.
    W : array_like, (FN, C, FH, FW), dtype of `x`
    stride, pad : int
        As in the forward.
    need_dx : bool
        False skips the input gradient (None): a first layer never needs it.

    Returns
    -------
    ConvGrads
        ``dx`` (N, C, H, W) or None, ``dW`` (FN, C, FH, FW), ``db`` (FN,).
    """
    x = check.images("x", x)
    W = check.float_array("W", W, dtype=x.dtype)
    stride, pad, OH, OW = conv_shapes(x.shape, W.shape, stride, pad)
    dout = check.float_array("dout", dout, 4, x.dtype)
    check.same_shape("dout", dout, (x.shape[0], W.shape[0], OH, OW), "the convolution's output")
    dW = np.empty_like(W)
    db = np.empty(W.shape[0], x.dtype)
    dx = np.empty_like(x) if need_dx else None
    K.conv2d_backward(dout, x, W, stride, pad, dW, db, dx)
    return ConvGrads(dx, dW, db)


class PoolResult(NamedTuple):
    """:func:`maxpool_forward`'s output and the index of each window's maximum."""
    out: np.ndarray
    argmax: np.ndarray


def maxpool_forward(x: ArrayLike, pool_h: int, pool_w: int, stride: int = 2, pad: int = 0
                    ) -> PoolResult:
    """Max pooling, the book's ``Pooling.forward`` (zero padding counts as values).

    Parameters
    ----------
    x : array_like, (N, C, H, W), float32 or float64
    pool_h, pool_w : int >= 1
        The window; not larger than the padded input.
    stride : int >= 1
    pad : int >= 0

    Returns
    -------
    PoolResult
        ``out`` (N, C, OH, OW) and ``argmax`` (N, C, OH, OW) int32, the row-major index
        ``wy * pool_w + wx`` of each window's first largest value.
    """
    x = check.images("x", x)
    pool_h, pool_w, stride, pad, OH, OW = pool_shapes(x.shape, pool_h, pool_w, stride, pad)
    out = np.empty(x.shape[:2] + (OH, OW), x.dtype)
    argmax = np.empty(out.shape, np.int32)
    K.maxpool_forward(x, pool_h, pool_w, stride, pad, out, argmax)
    return PoolResult(out, argmax)


def maxpool_backward(dout: ArrayLike, argmax: ArrayLike, x_shape: tuple[int, ...], pool_h: int,
                     pool_w: int, stride: int = 2, pad: int = 0) -> np.ndarray:
    """Gradient of :func:`maxpool_forward`.

    Parameters
    ----------
    dout : array_like, (N, C, OH, OW), float32 or float64
    argmax : array_like, (N, C, OH, OW), integer: the forward's indices, each in
        ``[0, pool_h * pool_w)``.
    x_shape : tuple of 4 ints
        The forward input's shape.
    pool_h, pool_w, stride, pad : int
        As in the forward.

    Returns
    -------
    ndarray, `x_shape`, dtype of `dout`
    """
    shape = tuple(int(s) for s in x_shape)
    if len(shape) != 4 or shape[0] == 0:
        raise ValueError(f"x_shape must be a non-empty (N, C, H, W), got {x_shape}")
    pool_h, pool_w, stride, pad, OH, OW = pool_shapes(shape, pool_h, pool_w, stride, pad)
    dout = check.float_array("dout", dout, 4)
    check.same_shape("dout", dout, shape[:2] + (OH, OW), "the pooling output")
    a = check.as_array("argmax", argmax)
    if a.dtype.kind not in "iu":
        raise TypeError(f"argmax must hold integers, got {a.dtype}")
    check.same_shape("argmax", a, dout.shape, "dout")
    if a.size and (a.min() < 0 or a.max() >= pool_h * pool_w):
        raise ValueError(f"argmax must be in [0, {pool_h * pool_w}) (indices into the "
                         f"pool_h x pool_w window), got [{a.min()}, {a.max()}]")
    a = np.ascontiguousarray(a, np.int32)
    dx = np.empty(shape, dout.dtype)
    K.maxpool_backward(dout, a, pool_w, stride, pad, dx)
    return dx
