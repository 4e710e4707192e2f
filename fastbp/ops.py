"""Validated wrappers around :mod:`fastbp.kernels`, for arbitrary array-likes.

Each function checks dtypes (``TypeError``) and shapes, label ranges and empty batches
(``ValueError``) with a message that names the argument and the fix, makes inputs
C-contiguous (a copy only when needed), and allocates the output unless ``out=`` is given.
No kernel is ever called with a shape it would read or write out of bounds with.
"""
import numpy as np

from . import kernels as K

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _asarray(name, a):
    """`a` as an ndarray; a ragged or unconvertible array-like is an error naming `name`."""
    if isinstance(a, np.ndarray):
        return a
    try:
        return np.asarray(a)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{name} is not a rectangular numeric array ({exc})") from None


def _float(name, a, ndim=None, dtype=None):
    """`a` as a C-contiguous, aligned float32/float64 array of its own shape, checked."""
    arr = _asarray(name, a)
    if arr.dtype not in _FLOATS and arr.dtype.kind == "f" and arr.dtype.newbyteorder("=") in _FLOATS:
        arr = arr.astype(arr.dtype.newbyteorder("="))  # big-endian data, e.g. from a file
    if arr.dtype not in _FLOATS:
        fix = ".astype(np.float32)" if dtype is None else f".astype(np.{dtype})"
        raise TypeError(f"{name} must be float32 or float64, got {arr.dtype}; convert it with "
                        f"{name}{fix}")
    if dtype is not None and arr.dtype != dtype:
        raise TypeError(f"{name} is {arr.dtype} but the other arrays are {dtype}; convert it "
                        f"with {name}.astype(np.{dtype})")
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {arr.shape}")
    # Not np.ascontiguousarray: it turns a 0-d array into shape (1,).
    if not (arr.flags.c_contiguous and arr.flags.aligned):
        arr = arr.copy(order="C")
    return arr


def _batch(name, a, dtype=None):
    arr = _float(name, a, 2, dtype)
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (shape {arr.shape}); pass at least one row")
    return arr


def _same_shape(name, a, shape, ref):
    if a.shape != shape:
        raise ValueError(f"{name} must have the shape of {ref}, {shape}, got {a.shape}")


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
    first = _float(names[0], arrays[0])
    rest = [_float(n, a, dtype=first.dtype) for n, a in zip(names[1:], arrays[1:])]
    for n, a in zip(names[1:], rest):
        _same_shape(n, a, first.shape, names[0])
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


def relu_forward(x, out=None):
    """ReLU of `x` (any shape, float32/float64); returns `out` (may be `x` itself)."""
    return _elementwise(K.relu_forward, ("x",), (x,), out, "out", True)


def relu_backward(x, dout, out=None):
    """``dout`` where ``x > 0``, else 0; `x` is the forward input or output; returns `out`."""
    return _elementwise(K.relu_backward, ("x", "dout"), (x, dout), out, "out", True)


def sigmoid_forward(x, out=None):
    """Sigmoid of `x` (any shape), overflow-free; returns `out` (may be `x` itself)."""
    return _elementwise(K.sigmoid_forward, ("x",), (x,), out, "out", True)


def sigmoid_backward(y, dout, out=None):
    """``dout * y * (1 - y)`` from the forward output `y`; returns `out`."""
    return _elementwise(K.sigmoid_backward, ("y", "dout"), (y, dout), out, "out", True)


def _params(x, W, b):
    x = _batch("x", x)
    W = _float("W", W, 2, x.dtype)
    b = _float("b", b, 1, x.dtype)
    if W.shape[0] != x.shape[1]:
        raise ValueError(f"W must have {x.shape[1]} rows (x has {x.shape[1]} features), got "
                         f"shape {W.shape}")
    if b.shape[0] != W.shape[1]:
        raise ValueError(f"b must have {W.shape[1]} elements (W has {W.shape[1]} columns), got "
                         f"shape {b.shape}")
    return x, W, b


def affine_forward(x, W, b, out=None):
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


def affine_backward(dout, x, W, *, need_dx=True, dx=None, dW=None, db=None):
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
    x = _batch("x", x)
    W = _float("W", W, 2, x.dtype)
    dout = _float("dout", dout, 2, x.dtype)
    if W.shape[0] != x.shape[1]:
        raise ValueError(f"W must have {x.shape[1]} rows (x has {x.shape[1]} features), got "
                         f"shape {W.shape}")
    _same_shape("dout", dout, (x.shape[0], W.shape[1]), "x @ W")
    ins = [("x", x), ("W", W), ("dout", dout)]
    dW = _out("dW", dW, W.shape, x.dtype, ins)
    db = _out("db", db, (W.shape[1],), x.dtype, ins + [("dW", dW)])
    if need_dx:
        dx = _out("dx", dx, x.shape, x.dtype, ins + [("dW", dW), ("db", db)])
        K.affine_backward(dout, x, W, dW, db, dx)
        return dx, dW, db
    K.affine_backward(dout, x, W, dW, db)
    return None, dW, db


def _targets(t, x):
    """Labels as a C-contiguous intp (n,) array, or one-hot rows as x's dtype (n, c)."""
    t = _asarray("t", t)
    n, c = x.shape
    if t.dtype == np.bool_ or not (np.issubdtype(t.dtype, np.integer)
                                  or np.issubdtype(t.dtype, np.floating)):
        raise TypeError(f"t must hold integer labels or float one-hot rows, got {t.dtype}; "
                        "convert labels with t.astype(np.int64)")
    if t.ndim == 1:
        if not np.issubdtype(t.dtype, np.integer):
            raise TypeError(f"1-D t must hold integer labels, got {t.dtype}; convert with "
                            "t.astype(np.int64)")
        if t.shape[0] != n:
            raise ValueError(f"t must have one label per row of x ({n}), got {t.shape[0]}")
        lo, hi = int(t.min()), int(t.max())
        if lo < 0 or hi >= c:
            raise ValueError(f"labels in t must be in [0, {c}) for {c} classes, got range "
                             f"[{lo}, {hi}]")
        return np.ascontiguousarray(t, dtype=np.intp)
    if t.ndim == 2:
        if t.shape != x.shape:
            raise ValueError(f"one-hot t must have the shape of x, {x.shape}, got {t.shape}")
        return np.ascontiguousarray(t, dtype=x.dtype)
    raise ValueError(f"t must be 1-D labels or 2-D one-hot rows, got shape {t.shape}")


def softmax_cross_entropy(x, t, dx=None):
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
    x = _batch("x", x)
    if x.shape[1] == 0:
        raise ValueError(f"x must have at least one class (column), got shape {x.shape}")
    t = _targets(t, x)
    dx = _out("dx", dx, x.shape, x.dtype, [("x", x), ("t", t)])
    return K.softmax_cross_entropy(x, t, dx), dx


def _real(name, v):
    """`v` as a Python float; anything but a real scalar is a TypeError naming `name`."""
    if isinstance(v, (str, bytes, complex)) or np.ndim(v) != 0 or np.iscomplexobj(v):
        raise TypeError(f"{name} must be a real number, got {v!r:.60}")
    try:
        return float(v)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a real number, got {type(v).__name__}") from None


def sgd_update(param, grad, lr):
    """``param -= lr * grad`` in place; `param` must be a writeable C-contiguous float array."""
    if not isinstance(param, np.ndarray):
        raise TypeError(f"param must be a numpy.ndarray (updated in place), got "
                        f"{type(param).__name__}")
    if param.dtype not in _FLOATS:
        raise TypeError(f"param must be float32 or float64, got {param.dtype}; keep parameters "
                        "as float arrays")
    _out("param", param, param.shape, param.dtype)
    grad = _float("grad", grad, dtype=param.dtype)
    _same_shape("grad", grad, param.shape, "param")
    lr = _real("lr", lr)
    if not np.isfinite(lr):
        raise ValueError(f"lr must be finite, got {lr}")
    if param.size:
        K.sgd_update(param, grad, lr)
    return param
