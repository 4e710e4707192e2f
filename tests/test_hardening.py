"""Fuzzed inputs for every public function, layer and TwoLayerNet method.

Each call either matches tests/reference.py or raises TypeError (wrong dtype) / ValueError
(wrong shape, label out of range, empty batch) with a message naming the argument; never
another exception, never a warning (warnings are errors here), never an out-of-bounds
access (CI runs this file under NUMBA_BOUNDSCHECK=1, where one is an IndexError).

Inputs come in every layout (C, Fortran, strided, negative strides, unaligned, read-only,
big-endian, nested lists), with NaN, +-inf and signed zeros, and with at most one fault
(a wrong dtype or shape, a label out of range, ...) whose expected error is known.

Sizes here stay tiny (every product in the hand-written loops); tests/test_fuzz.py fuzzes
the arithmetic at sizes across every threshold of the kernels.

Without JIT (NUMBA_DISABLE_JIT=1, a CI step) the kernels are NumPy scalar code, which
reports IEEE events such as ``inf - inf`` as RuntimeWarnings; compiled code never does. In
that mode only floating-point warnings are silenced; any other warning is still an error.
"""
import contextlib
import os
import re
import warnings

import numba
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fastbp import TwoLayerNet, ops
from fastbp.layers import Affine, AddLayer, MulLayer, Relu, Sigmoid, SoftmaxWithLoss

import reference as R

settings.register_profile(
    "fastbp-fuzz",
    max_examples=int(os.environ.get("FASTBP_FUZZ_EXAMPLES", "40")),
    deadline=None,  # the first call of a new signature compiles
    suppress_health_check=(HealthCheck.too_slow, HealthCheck.data_too_large),
)
FUZZ = settings.get_profile("fastbp-fuzz")

pytestmark = pytest.mark.filterwarnings("error")

NO_JIT = bool(numba.config.DISABLE_JIT)
FLOATS = (np.float32, np.float64)
CAST = (np.float16, np.int8, np.int32, np.int64, np.uint8, np.bool_)  # layers cast these
REJECTED = (np.complex64, np.complex128, object)                      # nobody takes these
SPECIALS = (np.nan, np.inf, -np.inf, 0.0, -0.0)
LAYOUTS = ("C", "F", "strided", "reversed", "unaligned", "readonly", "big-endian", "list")


# -- running calls ------------------------------------------------------------------------

@contextlib.contextmanager
def strict():
    """Any warning is an error (floating-point ones excepted without JIT, see above)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with np.errstate(all="ignore") if NO_JIT else contextlib.nullcontext():
            yield


def quiet():
    """For the reference, which may warn about the NaN it computes."""
    return np.errstate(all="ignore")


def run(call):
    with strict():
        return call()


def raises(call, exc, *names):
    """`call()` raises `exc` (not a subclass of the other one) naming one of `names`."""
    with strict(), pytest.raises((TypeError, ValueError)) as info:
        call()
    assert isinstance(info.value, exc), repr(info.value)
    msg = str(info.value)
    assert any(re.search(rf"(?<![\w.]){re.escape(n)}(?!\w)", msg) for n in names), (names, msg)


def agree(got, want, dtype, scale=0.0, k=64):
    """Elementwise: `got` equals the float64 reference `want` to rounding in `dtype`.

    NaN must meet NaN and an infinity the same infinity; finite values may differ by
    ``k * eps * (|want| + scale)``, `scale` being the size of the terms a result was
    summed from (cancellation)."""
    got = np.asarray(got, np.float64)
    want = np.asarray(want, np.float64)
    assert got.shape == want.shape, (got.shape, want.shape)
    fi = np.finfo(dtype)
    with quiet():  # (+ k * tiny: a float32 product may underflow where float64's does not)
        tol = k * fi.eps * (np.abs(want) + scale) + k * fi.tiny
        return (got == want) | (np.isnan(got) & np.isnan(want)) | (np.abs(got - want) <= tol)


def assert_agree(got, want, dtype, scale=0.0, k=64, alt=None):
    """`agree` everywhere; where `alt` (a second reference) is given, either one will do."""
    ok = agree(got, want, dtype, scale, k)
    if alt is not None:
        ok |= agree(got, alt, dtype, scale, k)
    bad = np.argwhere(~np.asarray(ok))
    assert bad.size == 0, (bad[:5].tolist(), np.asarray(got)[tuple(bad[0])] if bad.ndim > 1
                           and bad.size else got, want)


def fabs(a):
    """``|a|`` in float64, 0 where `a` is NaN or infinite."""
    a = np.asarray(a, np.float64)
    return np.where(np.isfinite(a), np.abs(a), 0.0)


def term_scale(a, b):
    """``|a| @ |b|`` over the finite entries: the size of the terms of ``a @ b``."""
    return fabs(a) @ fabs(b)


def skip_matmul(a, b):
    """``a @ b`` where a zero in `a` contributes nothing, even against inf or NaN (the
    hand-written loops skip zero inputs, as reference BLAS does; OpenBLAS does not)."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    with quiet():
        return np.where(a[:, :, None] != 0, a[:, :, None] * b[None], 0.0).sum(axis=1)


# -- generating inputs --------------------------------------------------------------------

def values(bound=1e4, special=True):
    finite = st.floats(-bound, bound, width=32)
    return st.one_of(finite, st.sampled_from(SPECIALS)) if special else finite


def farray(data, shape, dtype=np.float64, bound=1e4, special=None, label="values"):
    """A float array of `shape`: finite values in [-bound, bound], sometimes NaN/inf/-0."""
    if special is None:
        special = data.draw(st.booleans(), label=f"{label} special")
    a = data.draw(hnp.arrays(np.float64, shape, elements=values(bound, special)), label=label)
    return a.astype(dtype)


def convert(a, dtype):
    """`a`'s values in another dtype (integers: rounded and clipped; bool: non-zero)."""
    a = np.asarray(a, np.float64)
    kind = np.dtype(dtype).kind
    with quiet():
        if kind in "iu":
            a = np.clip(np.rint(np.nan_to_num(a, nan=0.0)), -100, 100)
            a = np.abs(a) if kind == "u" else a
        return np.asarray(a).astype(dtype)  # (np.clip of a 0-d array gives a scalar)


def dress(data, a, label="layout"):
    """The same values as `a` in a layout the wrappers must accept."""
    kind = data.draw(st.sampled_from(LAYOUTS), label=label)
    if kind == "F" and a.ndim:  # (np.asfortranarray turns a 0-d array into shape (1,))
        return np.asfortranarray(a)
    if kind == "strided" and a.ndim:
        wide = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
        wide[..., ::2] = a
        return wide[..., ::2]
    if kind == "reversed" and a.ndim:
        return np.ascontiguousarray(a[::-1])[::-1]
    if kind == "unaligned" and a.dtype.itemsize > 1 and a.dtype != object:
        buf = np.zeros(a.nbytes + 1, np.uint8)[1:]
        u = buf.view(a.dtype).reshape(a.shape)
        u[...] = a
        return u
    if kind == "readonly":
        a = a.copy()
        a.flags.writeable = False
        return a
    if kind == "big-endian" and a.dtype.kind == "f":
        return a.astype(a.dtype.newbyteorder(">"))
    if kind == "list" and a.dtype == np.float64 and np.shape(a.tolist()) == a.shape:
        return a.tolist()  # (not when an empty axis drops the later ones)
    return a


def other_shape(data, shape, label="bad shape"):
    """A shape different from `shape` (one more or one fewer axis, or one side changed)."""
    how = data.draw(st.sampled_from(["add", "drop", "side"] if shape else ["add"]), label=label)
    if how == "add":
        return shape + (data.draw(st.integers(1, 3), label=f"{label} side"),)
    if how == "drop":
        return shape[:-1]
    i = data.draw(st.integers(0, len(shape) - 1), label=f"{label} axis")
    return shape[:i] + (shape[i] + data.draw(st.sampled_from([-1, 1]) if shape[i] else
                                             st.just(1), label=f"{label} delta"),) + shape[i + 1:]


def bad_dtype(data, label="bad dtype"):
    return data.draw(st.sampled_from(CAST + REJECTED), label=label)


def shapes(min_dims=0, max_dims=3):
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=0, max_side=5)


def other_float(dtype):
    return np.float64 if dtype == np.float32 else np.float32


# -- fastbp.ops ---------------------------------------------------------------------------

ELEMENTWISE = {
    "relu_forward": ("x",), "sigmoid_forward": ("x",),
    "relu_backward": ("x", "dout"), "sigmoid_backward": ("y", "dout"),
}


def out_buffer(data, shape, dtype, inputs):
    """An `out=` argument and the error it must cause: (out, None) or (out, exc)."""
    kind = data.draw(st.sampled_from(["none", "fresh", "in place", "dtype", "shape", "list",
                                      "strided", "readonly"]), label="out")
    if kind == "none":
        return None, None
    if kind == "in place" and inputs:
        a = inputs[data.draw(st.integers(0, len(inputs) - 1), label="out is input")]
        if not isinstance(a, np.ndarray) or a.dtype != dtype:
            return None, None
        ok = a.flags.c_contiguous and a.flags.writeable
        return a, None if ok else ValueError
    if kind == "dtype":
        return np.zeros(shape, data.draw(st.sampled_from([other_float(dtype), np.int64]))), TypeError
    if kind == "shape":
        return np.zeros(other_shape(data, shape), dtype), ValueError
    if kind == "list":
        return np.zeros(shape, dtype).tolist(), TypeError
    if kind == "strided" and shape:
        out = np.zeros(shape[:-1] + (2 * shape[-1],), dtype)[..., ::2]
        return out, None if out.flags.c_contiguous else ValueError
    if kind == "readonly":
        out = np.zeros(shape, dtype)
        out.flags.writeable = False
        return out, ValueError
    return np.full(shape, 7.0, dtype), None


@FUZZ
@given(st.data())
def test_ops_elementwise(data):
    name = data.draw(st.sampled_from(sorted(ELEMENTWISE)), label="op")
    argnames = ELEMENTWISE[name]
    dtype = data.draw(st.sampled_from(FLOATS), label="dtype")
    shape = data.draw(shapes(), label="shape")
    arrays = [farray(data, shape, dtype, label=n) for n in argnames]
    if name == "sigmoid_backward" and data.draw(st.booleans(), label="y in [0, 1]"):
        arrays[0] = convert(np.abs(np.tanh(np.nan_to_num(arrays[0]))), dtype)
    fault = data.draw(st.sampled_from(["none"] * 4 + ["dtype", "shape", "mixed", "ragged"]),
                      label="fault")
    victim = data.draw(st.integers(0, len(arrays) - 1), label="victim")
    if fault == "shape" and victim == 0:
        victim = len(arrays) - 1  # the first array's shape is the reference: any is fine
    expect = None
    if fault == "dtype":
        arrays[victim] = convert(arrays[victim], bad_dtype(data))
        expect = TypeError
    elif fault == "mixed" and victim > 0:
        arrays[victim] = arrays[victim].astype(other_float(dtype))
        expect = TypeError
    elif fault == "shape" and victim > 0:
        arrays[victim] = farray(data, other_shape(data, shape), dtype, label="reshaped")
        expect = ValueError
    elif fault == "ragged":
        arrays[victim] = [[1.0, 2.0], [3.0]]
        expect = ValueError
    want = None
    if expect is None:
        with quiet():
            want = getattr(R, name)(*arrays)
    inputs = [dress(data, a, f"layout {n}") if isinstance(a, np.ndarray) else a
              for n, a in zip(argnames, arrays)]
    fn = getattr(ops, name)
    if expect is not None:
        return raises(lambda: fn(*inputs), expect, argnames[victim])
    out, out_error = out_buffer(data, shape, dtype, inputs)
    if out_error is not None:
        return raises(lambda: fn(*inputs, out=out), out_error, "out")
    got = run(lambda: fn(*inputs, out=out))
    assert isinstance(got, np.ndarray) and got.dtype == dtype and got.shape == shape
    assert out is None or got is out
    assert_agree(got, want, dtype, scale=1e-30)
    for a, orig in zip(inputs, arrays):  # inputs untouched (unless written in place)
        if a is not out and isinstance(a, np.ndarray):
            np.testing.assert_array_equal(a, orig)


def affine_case(data, dtype, backward=False):
    n = data.draw(st.integers(1, 5), label="n")
    d = data.draw(st.integers(0, 5), label="d")
    m = data.draw(st.integers(0, 5), label="m")
    x = farray(data, (n, d), dtype, label="x")
    x[data.draw(hnp.arrays(np.bool_, (n, d)), label="zeros")] = 0  # the zero-skipping path
    W = farray(data, (d, m), dtype, label="W")
    third = farray(data, (n, m) if backward else (m,), dtype, label="dout" if backward else "b")
    return x, W, third


AFFINE_FAULTS = ["none"] * 5 + ["dtype", "mixed", "ndim", "empty", "rows", "cols", "ragged"]


def affine_fault(data, names, arrays, dtype, setter):
    """Apply at most one fault; return (arrays, expected exception or None, names it may
    be reported under). `names[setter]` is the array whose dtype the others must have."""
    fault = data.draw(st.sampled_from(AFFINE_FAULTS), label="fault")
    arrays = list(arrays)
    i = data.draw(st.integers(0, len(arrays) - 1), label="victim")
    name = names[i]
    if fault == "none":
        return arrays, None, ()
    if fault == "dtype":
        arrays[i] = convert(arrays[i], bad_dtype(data))
        return arrays, TypeError, (name,)
    if fault == "mixed":
        if i == setter:  # x sets the dtype: change another one
            i = (setter + 1) % len(arrays)
            name = names[i]
        arrays[i] = arrays[i].astype(other_float(dtype))
        return arrays, TypeError, (name,)
    if fault == "ragged":
        arrays[i] = [[1.0, 2.0], [3.0]]
        return arrays, ValueError, (name,)
    if fault == "empty":
        x = arrays[names.index("x")]
        arrays[names.index("x")] = x[:0]
        return arrays, ValueError, ("x",)
    a = arrays[i]
    if fault == "ndim":
        if data.draw(st.booleans(), label="add axis"):
            arrays[i] = a.reshape(a.shape + (1,))
        else:
            arrays[i] = a.reshape(-1) if a.ndim == 2 else a.reshape(1, -1)
        return arrays, ValueError, (name,)
    axis = 0 if fault == "rows" else -1
    if a.ndim == 0 or (name == "x" and axis == 0):
        return arrays, None, ()  # x's rows are the batch: nothing to mismatch
    shape = list(a.shape)
    shape[axis] += 1
    arrays[i] = farray(data, tuple(shape), a.dtype, label="grown")
    # A grown dimension is reported by whichever array the wrappers compare it with.
    return arrays, ValueError, tuple(names)


@FUZZ
@given(st.data())
def test_ops_affine_forward(data):
    dtype = data.draw(st.sampled_from(FLOATS), label="dtype")
    x, W, b = affine_case(data, dtype)
    (x2, W2, b2), expect, names = affine_fault(data, ("x", "W", "b"), (x, W, b), dtype, 0)
    args = [dress(data, a, "layout") if isinstance(a, np.ndarray) else a for a in (x2, W2, b2)]
    if expect is not None:
        return raises(lambda: ops.affine_forward(*args), expect, *names)
    out, out_error = out_buffer(data, (x.shape[0], W.shape[1]), dtype, [])
    if out_error is not None:
        return raises(lambda: ops.affine_forward(*args, out=out), out_error, "out")
    got = run(lambda: ops.affine_forward(*args, out=out))
    assert got.dtype == dtype and (out is None or got is out)
    with quiet():
        ieee = R.affine_forward(x, W, b)
        skip = skip_matmul(x, W) + b.astype(np.float64)
    assert_agree(got, ieee, dtype, scale=term_scale(x, W) + fabs(b),
                 alt=skip)


@FUZZ
@given(st.data())
def test_ops_affine_backward(data):
    dtype = data.draw(st.sampled_from(FLOATS), label="dtype")
    x, W, dout = affine_case(data, dtype, backward=True)
    (d2, x2, W2), expect, names = affine_fault(data, ("dout", "x", "W"), (dout, x, W), dtype, 1)
    need_dx = data.draw(st.booleans(), label="need_dx")
    args = [dress(data, a, "layout") if isinstance(a, np.ndarray) else a for a in (d2, x2, W2)]
    call = lambda **kw: ops.affine_backward(*args, need_dx=need_dx, **kw)  # noqa: E731
    if expect is not None:
        return raises(call, expect, *names)
    which = data.draw(st.sampled_from(["dx", "dW", "db"]), label="buffer")
    shape = {"dx": x.shape, "dW": W.shape, "db": (W.shape[1],)}[which]
    buf, buf_error = out_buffer(data, shape, dtype, [])
    if which == "dx" and not need_dx:
        buf_error = None  # not used
    if buf_error is not None:
        return raises(lambda: call(**{which: buf}), buf_error, which)
    dx, dW, db = run(lambda: call(**{which: buf}))
    if buf is not None and (need_dx or which != "dx"):
        assert {"dx": dx, "dW": dW, "db": db}[which] is buf
    with quiet():
        want_dx, want_dW, want_db = R.affine_backward(dout, x, W)
        skip_dW = skip_matmul(x.T, dout)
    if need_dx:
        assert_agree(dx, want_dx, dtype, scale=term_scale(dout, W.T))
    else:
        assert dx is None
    assert_agree(dW, want_dW, dtype, scale=term_scale(x.T, dout), alt=skip_dW)
    assert_agree(db, want_db, dtype, scale=fabs(dout).sum(0))


def labels(data, n, c, lo=None, hi=None, label="labels"):
    dtype = data.draw(st.sampled_from([np.int64, np.int32, np.uint8, np.int8, np.uint64,
                                       np.intp]), label=f"{label} dtype")
    lo = 0 if lo is None else lo
    hi = c - 1 if hi is None else hi
    t = data.draw(hnp.arrays(np.int64, n, elements=st.integers(lo, hi)), label=label)
    return t.astype(dtype) if t.min(initial=0) >= 0 or np.dtype(dtype).kind == "i" else t


def onehot(data, n, c, dtype, label="one-hot"):
    t = data.draw(hnp.arrays(np.float64, (n, c), elements=st.floats(0, 1)), label=label)
    if data.draw(st.booleans(), label=f"{label} exact"):
        t = np.eye(c)[data.draw(hnp.arrays(np.int64, n, elements=st.integers(0, c - 1)))]
    return t.astype(data.draw(st.sampled_from([dtype, np.float64, np.float32, np.int64]),
                              label=f"{label} dtype"))


T_FAULTS = ["none"] * 6 + ["range", "negative", "length", "width", "float1d", "bool",
                           "complex", "object", "3d", "0d"]


def target_case(data, n, c, dtype):
    """(t, expected exception or None): labels or one-hot rows with at most one fault."""
    fault = data.draw(st.sampled_from(T_FAULTS), label="t fault")
    if fault == "range":
        t = labels(data, n, c, label="labels")
        t = t.astype(np.int64)
        t[data.draw(st.integers(0, n - 1))] = data.draw(st.integers(c, c + 3))
        return t, ValueError
    if fault == "negative":
        t = labels(data, n, c).astype(np.int64)
        t[data.draw(st.integers(0, n - 1))] = data.draw(st.integers(-3, -1))
        return t, ValueError
    if fault == "length":
        return labels(data, n + data.draw(st.sampled_from([-1, 1])), c), ValueError
    if fault == "width":
        # (never one column against several classes: an (n, 1) integer array is labels
        # there, as in the book's cross_entropy_error, which SoftmaxWithLoss follows)
        return onehot(data, n, c + data.draw(st.sampled_from([-1, 1]) if c > 2 else st.just(1)),
                      dtype), ValueError
    if fault == "float1d":
        return labels(data, n, c).astype(np.float64), TypeError
    if fault == "bool":
        return labels(data, n, c).astype(bool), TypeError
    if fault == "complex":
        return labels(data, n, c).astype(np.complex128), TypeError
    if fault == "object":
        return labels(data, n, c).astype(object), TypeError
    if fault == "3d":
        return onehot(data, n, c, dtype)[:, :, None], ValueError
    if fault == "0d":
        return np.int64(0), ValueError
    if data.draw(st.booleans(), label="one-hot"):
        return onehot(data, n, c, dtype), None
    return labels(data, n, c), None


@FUZZ
@given(st.data())
def test_ops_softmax_cross_entropy(data):
    dtype = data.draw(st.sampled_from(FLOATS), label="dtype")
    n = data.draw(st.integers(1, 5), label="n")
    c = data.draw(st.integers(1, 5), label="c")
    x = farray(data, (n, c), dtype, label="x")
    t, expect = target_case(data, n, c, dtype)
    names = ("t",)
    fault = data.draw(st.sampled_from(["none"] * 4 + ["dtype", "ndim", "empty", "classes"]),
                      label="x fault") if expect is None else "none"
    xin = x
    if fault == "dtype":
        xin, expect, names = convert(x, bad_dtype(data)), TypeError, ("x",)
    elif fault == "ndim":
        xin, expect, names = x.reshape(-1), ValueError, ("x",)
    elif fault == "empty":
        xin, t, expect, names = x[:0], t[:0] if np.ndim(t) else t, ValueError, ("x",)
    elif fault == "classes":
        xin, expect, names = x[:, :0], ValueError, ("x",)
    xin = dress(data, xin, "layout x")
    tin = dress(data, t, "layout t") if isinstance(t, np.ndarray) else t
    if expect is not None:
        return raises(lambda: ops.softmax_cross_entropy(xin, tin), expect, *names)
    out, out_error = out_buffer(data, x.shape, dtype, [])
    if out_error is not None:
        return raises(lambda: ops.softmax_cross_entropy(xin, tin, dx=out), out_error, "dx")
    loss, dx = run(lambda: ops.softmax_cross_entropy(xin, tin, dx=out))
    assert isinstance(loss, float) and dx.dtype == dtype and (out is None or dx is out)
    with quiet():
        want_loss, want_dx = R.softmax_cross_entropy(x, t)
        # float32 logits: x - max(x) is rounded in float32 (an error of eps * |x|)
        size = 1.0 + fabs(x).max()
    k = 16 * size  # softmax's condition number: an error of eps * |x| in x - max(x)
    assert_agree(loss, want_loss, dtype, scale=1.0 + np.abs(np.asarray(t, float)).sum(), k=k)
    assert_agree(dx, want_dx, dtype, scale=1.0 / n, k=k)


LR_FAULTS = {"nan": (float("nan"), ValueError), "inf": (float("inf"), ValueError),
             "str": ("0.1", TypeError), "complex": (0.1j, TypeError),
             "array": (np.ones(2), TypeError), "none": (None, TypeError)}


@FUZZ
@given(st.data())
def test_ops_sgd_update(data):
    dtype = data.draw(st.sampled_from(FLOATS), label="dtype")
    shape = data.draw(shapes(), label="shape")
    param = farray(data, shape, dtype, label="param")
    grad = farray(data, shape, dtype, label="grad")
    lr = data.draw(st.one_of(st.floats(0, 10, width=32), st.sampled_from([np.float32(0.5), 1])),
                   label="lr")
    fault = data.draw(st.sampled_from(["none"] * 4 + ["param list", "param dtype", "param F",
                                                      "param readonly", "grad dtype",
                                                      "grad mixed", "grad shape", "lr"]),
                      label="fault")
    expect = None
    gin = dress(data, grad, "layout grad")
    pin = param.copy()
    if fault == "param list":
        pin, expect, name = param.tolist(), TypeError, "param"
    elif fault == "param dtype":
        pin, expect, name = convert(param, bad_dtype(data)), TypeError, "param"
    elif fault == "param F" and param.ndim == 2 and min(shape) > 1:
        pin, expect, name = np.asfortranarray(param), ValueError, "param"
    elif fault == "param readonly":
        pin.flags.writeable = False
        expect, name = ValueError, "param"
    elif fault == "grad dtype":
        gin, expect, name = convert(grad, bad_dtype(data)), TypeError, "grad"
    elif fault == "grad mixed":
        gin, expect, name = grad.astype(other_float(dtype)), TypeError, "grad"
    elif fault == "grad shape":
        gin, expect, name = np.zeros(other_shape(data, shape), dtype), ValueError, "grad"
    elif fault == "lr":
        lr, expect = LR_FAULTS[data.draw(st.sampled_from(sorted(LR_FAULTS)), label="bad lr")]
        name = "lr"
    if expect is not None:
        before = np.array(pin, copy=True) if isinstance(pin, np.ndarray) else None
        raises(lambda: ops.sgd_update(pin, gin, lr), expect, name)
        if before is not None:
            assert pin.tobytes() == before.tobytes()  # untouched, bit for bit
        return
    got = run(lambda: ops.sgd_update(pin, gin, lr))
    assert got is pin
    with quiet():
        want = R.sgd_update(param, grad, float(lr))
    with quiet():
        scale = fabs(param) + abs(float(lr)) * fabs(grad)
    assert_agree(pin, want, dtype, scale=scale)


# -- fastbp.layers ------------------------------------------------------------------------

def layer_input(data, shape, label):
    """An input the layers cast (float, int, bool, float16) or reject (complex, object):
    (array, float64 values it stands for or None if rejected)."""
    dtype = data.draw(st.sampled_from(FLOATS + CAST + REJECTED), label=f"{label} dtype")
    a = farray(data, shape, np.float64, label=label)
    a = convert(a, dtype)
    if dtype in REJECTED:
        return a, None
    return dress(data, a, f"layout {label}"), np.asarray(a, np.float64)


def cast_dtype(dtype):
    return np.dtype(dtype) if np.dtype(dtype) in (np.float32, np.float64) else np.float64


@FUZZ
@given(st.data())
def test_layers_relu_sigmoid(data):
    cls = data.draw(st.sampled_from([Relu, Sigmoid]), label="layer")
    shape = data.draw(shapes(), label="shape")
    x, xv = layer_input(data, shape, "x")
    layer = cls()
    if xv is None:
        return raises(lambda: layer.forward(x), TypeError, "x")
    out = run(lambda: layer.forward(x))
    dt = np.dtype(np.float32) if np.asarray(x).dtype.newbyteorder("=") == np.float32 else \
        np.dtype(np.float64)
    assert out.dtype == dt and out.shape == shape
    fwd = R.relu_forward if cls is Relu else R.sigmoid_forward
    with quiet():
        want = fwd(xv.astype(dt))
    assert_agree(out, want, dt, scale=1e-30)
    dshape = shape if data.draw(st.integers(0, 3), label="dout shape ok") else \
        other_shape(data, shape)
    dout, dv = layer_input(data, dshape, "dout")
    if dv is None:
        return raises(lambda: layer.backward(dout), TypeError, "dout")
    if dshape != shape:
        return raises(lambda: layer.backward(dout), ValueError, "dout")
    before = np.array(dout, copy=True)
    dx = run(lambda: layer.backward(dout))
    with quiet():  # from the layer's own (rounded) output, as backward is defined
        dv = dv.astype(dt)
        want = R.relu_backward(out, dv) if cls is Relu else R.sigmoid_backward(out, dv)
    assert dx.dtype == dt
    assert_agree(dx, want, dt, scale=1e-30)
    np.testing.assert_array_equal(np.asarray(dout), before)  # dout never modified


@FUZZ
@given(st.data())
def test_layers_affine(data):
    dtype = data.draw(st.sampled_from(FLOATS), label="dtype")
    n = data.draw(st.integers(0, 4), label="n")
    inner = data.draw(st.lists(st.integers(1, 3), min_size=0, max_size=2), label="x axes")
    d = int(np.prod(inner))
    m = data.draw(st.integers(1, 4), label="m")
    W = farray(data, (d, m), dtype, label="W")
    b = farray(data, (m,), dtype, label="b")
    fault = data.draw(st.sampled_from(["none"] * 4 + ["W dtype", "b shape", "b dtype",
                                                      "features"]), label="fault")
    xshape = (n,) + tuple(inner) if inner else (n, 1)
    if not inner:
        W = farray(data, (1, m), dtype, label="W1")
        d = 1
    if fault == "W dtype":
        W = convert(W, data.draw(st.sampled_from(CAST + REJECTED)))
    elif fault == "b shape":
        b = farray(data, (m + 1,), dtype)
    elif fault == "b dtype":
        b = convert(b, data.draw(st.sampled_from(CAST + REJECTED + (other_float(dtype),))))
    elif fault == "features":
        xshape = (n, d + 1)
    x, xv = layer_input(data, xshape, "x")
    layer = Affine(W, b)
    if fault == "W dtype":
        return raises(lambda: layer.forward(x), TypeError, "Affine.W", "W")
    if xv is None:
        return raises(lambda: layer.forward(x), TypeError, "x")
    if n == 0:
        return raises(lambda: layer.forward(x), ValueError, "x")
    if fault == "b shape":
        return raises(lambda: layer.forward(x), ValueError, "b")
    if fault == "b dtype":
        return raises(lambda: layer.forward(x), TypeError, "b")
    if fault == "features":
        return raises(lambda: layer.forward(x), ValueError, "x", "W")
    out = run(lambda: layer.forward(x))
    x2 = xv.astype(dtype).reshape(n, -1)
    with quiet():
        want = R.affine_forward(x2, W, b)
        skip = skip_matmul(x2, W) + b.astype(np.float64)
    assert out.dtype == dtype and layer.W is W and layer.b is b
    assert_agree(out, want, dtype, scale=term_scale(x2, W) + fabs(b),
                 alt=skip)
    dshape = (n, m) if data.draw(st.integers(0, 3), label="dout shape ok") else (n, m + 1)
    dout, dv = layer_input(data, dshape, "dout")
    if dv is None:
        return raises(lambda: layer.backward(dout), TypeError, "dout")
    if dshape != (n, m):
        return raises(lambda: layer.backward(dout), ValueError, "dout")
    dx = run(lambda: layer.backward(dout))
    assert dx.shape == xshape
    dv = dv.astype(dtype)
    with quiet():
        want_dx, want_dW, want_db = R.affine_backward(dv, x2, W)
        skip_dW = skip_matmul(x2.T, dv)
    assert_agree(dx.reshape(n, -1), want_dx, dtype, scale=term_scale(dv, W.T))
    assert_agree(layer.dW, want_dW, dtype, scale=term_scale(x2.T, dv), alt=skip_dW)
    assert_agree(layer.db, want_db, dtype, scale=fabs(dv).sum(0))


@FUZZ
@given(st.data())
def test_layers_softmax_with_loss(data):
    n = data.draw(st.integers(1, 5), label="n")
    c = data.draw(st.integers(1, 5), label="c")
    x, xv = layer_input(data, (n, c), "x")
    dt = np.dtype(np.float32) if np.asarray(x).dtype.newbyteorder("=") == np.float32 else \
        np.dtype(np.float64)
    t, expect = target_case(data, n, c, dt)
    layer = SoftmaxWithLoss()
    if xv is None:
        return raises(lambda: layer.forward(x, t), TypeError, "x")
    if expect is not None:
        return raises(lambda: layer.forward(x, t), expect, "t")
    loss = run(lambda: layer.forward(x, t))
    x64 = xv.astype(dt)
    with quiet():
        want_loss, want_dx = R.softmax_cross_entropy(x64, t)
        size = 1.0 + fabs(x64).max()
    k = 16 * size
    assert_agree(loss, want_loss, dt, scale=1.0 + np.abs(np.asarray(t, float)).sum(), k=k)
    y = run(lambda: layer.y)
    with quiet():
        z = x64.astype(np.float64) - x64.max(axis=1, keepdims=True)
        want_y = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    assert_agree(y, want_y, dt, scale=1e-30, k=k)
    kind = data.draw(st.sampled_from(["default", "scalar", "array", "bad shape", "complex",
                                      "object"]), label="dout")
    if kind == "default":
        assert_agree(run(layer.backward), want_dx, dt, scale=1.0 / n, k=k)
    elif kind == "scalar":
        s = data.draw(st.floats(-4, 4, width=32))
        assert_agree(run(lambda: layer.backward(s)), want_dx * s, dt, scale=4.0 / n, k=k)
    elif kind == "array":
        g = farray(data, (n, c), dt, bound=4, special=False)
        assert_agree(run(lambda: layer.backward(g)), want_dx * g, dt, scale=4.0 / n, k=k)
    elif kind == "bad shape":
        raises(lambda: layer.backward(np.ones((n, c + 1))), ValueError, "dout")
    else:
        bad = np.ones((n, c), np.complex128 if kind == "complex" else object)
        raises(lambda: layer.backward(bad), TypeError, "dout")


@FUZZ
@given(st.data())
def test_layers_mul_add(data):
    """MulLayer/AddLayer are the book's ``x * y`` / ``x + y`` on numbers or arrays (any
    numeric dtype, NumPy broadcasting): they match NumPy exactly, finite values here (with
    inf * 0 NumPy itself warns, and these layers are NumPy's operators)."""
    shape = data.draw(shapes(max_dims=2), label="shape")
    kind = data.draw(st.sampled_from(["arrays", "scalars", "broadcast", "mismatch"]), label="kind")
    x = farray(data, shape, special=False, bound=100, label="x")
    if kind == "scalars":
        x, y = float(data.draw(values(100, False))), float(data.draw(values(100, False)))
    elif kind == "broadcast":
        y = farray(data, shape[-1:] if shape else (), special=False, bound=100, label="y")
    elif kind == "mismatch":
        x = farray(data, (2, 3), special=False, bound=100)
        y = farray(data, (data.draw(st.sampled_from([2, 4])),), special=False, bound=100)
        for cls in (MulLayer, AddLayer):
            raises(lambda: cls().forward(x, y), ValueError, "x", "y")
        return
    else:
        y = farray(data, shape, special=False, bound=100, label="y")
    mul, add = MulLayer(), AddLayer()
    out = run(lambda: mul.forward(x, y))
    np.testing.assert_array_equal(out, np.multiply(x, y))
    dout = np.ones_like(out) * 1.5
    dx, dy = run(lambda: mul.backward(dout))
    np.testing.assert_array_equal(dx, dout * y)
    np.testing.assert_array_equal(dy, dout * x)
    np.testing.assert_array_equal(run(lambda: add.forward(x, y)), np.add(x, y))
    ax, ay = run(lambda: add.backward(dout))
    np.testing.assert_array_equal(ax, dout)
    np.testing.assert_array_equal(ay, dout)


# -- TwoLayerNet --------------------------------------------------------------------------

KEYS = ("W1", "b1", "W2", "b2")
METHODS = ("predict", "loss", "accuracy", "gradient", "fused_gradient", "train_step",
           "numerical_gradient")
X_FAULTS = ["none"] * 6 + ["empty", "1d", "nd", "features", "complex", "object", "cast",
                           "ragged"]


def reference_numerical_gradient(x, t, params, h=1e-4):
    p = {k: v.astype(np.float64) for k, v in params.items()}
    grads = {}
    for k in KEYS:
        g = np.zeros_like(p[k])
        for i in np.ndindex(p[k].shape):
            old = p[k][i]
            p[k][i] = old + h
            a = R.two_layer(x, t, *(p[q] for q in KEYS))[0]
            p[k][i] = old - h
            b = R.two_layer(x, t, *(p[q] for q in KEYS))[0]
            p[k][i] = old
            g[i] = (a - b) / (2 * h)
        grads[k] = g
    return grads


@FUZZ
@given(st.data())
def test_two_layer_net(data):
    method = data.draw(st.sampled_from(METHODS), label="method")
    dtype = np.float64 if method == "numerical_gradient" else data.draw(
        st.sampled_from(FLOATS), label="dtype")
    d, H, C = (data.draw(st.integers(1, k), label=s) for k, s in ((5, "d"), (4, "H"), (4, "C")))
    net = TwoLayerNet(d, H, C, weight_init_std=0.7, dtype=dtype,
                      seed=data.draw(st.integers(0, 2**32 - 1), label="seed"))
    n = data.draw(st.integers(1, 5), label="n")
    if method == "train_step" and data.draw(st.booleans(), label="warm"):
        # A first good step primes train_step's fast path (same batch size, intp labels).
        run(lambda: net.train_step(np.ones((n, d), dtype), np.zeros(n, np.intp), 0.01))
    before = {k: v.copy() for k, v in net.params.items()}
    x = farray(data, (n, d), np.float64, bound=10, label="x")
    x[data.draw(hnp.arrays(np.bool_, (n, d)), label="zeros")] = 0
    fault = data.draw(st.sampled_from(X_FAULTS), label="x fault")
    xin, expect, names = x, None, ("x",)
    if fault == "empty":
        xin, expect = x[:0], ValueError
    elif fault == "1d":
        xin, expect = x[0], ValueError
    elif fault == "nd":
        xin = x.reshape(n, 1, d)
    elif fault == "features":
        xin, expect, names = np.ones((n, d + 1)), ValueError, ("x", "W")
    elif fault in ("complex", "object"):
        xin, expect = x.astype(np.complex128 if fault == "complex" else object), TypeError
    elif fault == "ragged":
        xin, expect = [[1.0] * d, [1.0] * (d + 1)], ValueError
    elif fault == "cast":
        x = convert(x, data.draw(st.sampled_from(CAST + (other_float(dtype),))))
        xin = x
    if isinstance(xin, np.ndarray) and xin.dtype != object:
        xin = dress(data, xin, "layout x")
    if method != "predict":
        t, t_expect = target_case(data, n, C, dtype)
        if expect is None and t_expect is not None:
            expect, names = t_expect, ("t",)
        args = (xin, t)
    else:
        t, args = None, (xin,)
    lr = 0.1
    if method == "train_step":
        lr = data.draw(st.floats(float(np.float32(1e-3)), 2, width=32), label="lr")
        if expect is None and data.draw(st.integers(0, 5), label="bad lr") == 0:
            lr = data.draw(st.sampled_from([0.0, -0.1, np.nan, np.inf, "0.1", 1j, None]))
            expect = TypeError if isinstance(lr, (str, complex, type(None))) else ValueError
            names = ("lr",)
        args = args + (lr,)
    fn = getattr(net, method)
    if expect is not None:
        raises(lambda: fn(*args), expect, *names)
        if method != "numerical_gradient":  # see test_numerical_gradient_restores_on_error
            for k in KEYS:  # a rejected call changes nothing
                assert net.params[k].tobytes() == before[k].tobytes()
        return
    got = run(lambda: fn(*args))
    x64 = np.asarray(x, np.float64).astype(dtype).astype(np.float64)
    p64 = {k: v.astype(np.float64) for k, v in before.items()}
    # The ReLU's kink: where the hidden pre-activation is positive in float64 but rounds or
    # underflows to 0 in the net's dtype (a float32 subnormal input times a small weight),
    # the two arithmetics legitimately gate differently; such a case tests nothing here.
    with quiet():
        z64 = x64 @ p64["W1"] + p64["b1"]
        z_dtype = x64.astype(dtype) @ before["W1"] + before["b1"]
        both = np.isfinite(z64) & np.isfinite(z_dtype)
        assume(np.array_equal((z64 > 0)[both], (z_dtype > 0)[both]))
    # Every product here is below AFFINE_BLAS_MIN_FLOPS and every batch within SMALL_BATCH:
    # the hand-written loops, which skip zero inputs (0 x inf adds nothing), so the
    # reference does too; NaN and inf must then be exactly where the reference has them.
    with quiet():
        want_loss, want_grads = R.two_layer(x64, t if t is not None else np.zeros(n, int),
                                            *(p64[k] for k in KEYS), skip_zeros=True)
        h = R.relu_forward(R.matmul(x64, p64["W1"], True) + p64["b1"])
        want_y = R.matmul(h, p64["W2"], True) + p64["b2"]

    def close(a, b, what, k=512):
        # Finite values to rounding relative to the array's largest entry (+1); NaN and
        # inf where the reference has them.
        b = np.asarray(b, np.float64)
        fin = np.isfinite(b)
        scale = np.abs(b[fin]).max(initial=0.0) + 1.0
        ok = agree(a, b, dtype, scale=scale, k=k)
        assert np.all(ok), (what, np.asarray(a), b)

    if method == "predict":
        assert got.dtype == dtype and got.shape == (n, C)
        close(got, want_y, "predict")
    elif method == "loss":
        close(got, want_loss, "loss")
    elif method == "accuracy":
        pred = run(lambda: net.predict(xin)).argmax(axis=1)
        tl = t if np.ndim(t) == 1 else np.asarray(t).argmax(axis=1)
        assert got == np.mean(pred == tl)
    elif method in ("gradient", "fused_gradient", "numerical_gradient"):
        assert sorted(got) == sorted(KEYS)
        if method == "numerical_gradient":
            with quiet():
                want_grads = reference_numerical_gradient(x64, t, before)
        for k in KEYS:
            assert got[k].dtype == dtype and got[k].shape == before[k].shape
            # central differences of two losses that agree to ~1e-15: ~1e-11 apart
            close(got[k], want_grads[k], k, k=512 if method != "numerical_gradient" else 1e6)
    else:  # train_step
        close(got, want_loss, "loss")
        for k in KEYS:
            with quiet():
                want = p64[k] - lr * want_grads[k]
            close(net.params[k], want, k)
        assert net.layers["Affine1"].W is net.params["W1"]
    if method != "train_step":
        for k in KEYS:
            assert net.params[k].tobytes() == before[k].tobytes()


# -- regression tests for validation without a test so far ----------------------------------

def test_zero_d_arrays_keep_their_shape():
    for f in (ops.relu_forward, ops.sigmoid_forward):
        assert run(lambda: f(np.float64(-2.0))).shape == ()
    assert run(lambda: ops.relu_backward(np.array(1.0), np.array(3.0))) == 3.0
    p = np.array(1.0)
    assert run(lambda: ops.sgd_update(p, np.array(2.0), 0.5)) is p and p == 0.0


def test_partial_overlap_rejected_exact_alias_allowed():
    buf = np.arange(7.0) - 3
    raises(lambda: ops.relu_forward(buf[:-1], out=buf[1:]), ValueError, "out")
    x = buf.copy()
    assert run(lambda: ops.relu_forward(x, out=x)) is x
    np.testing.assert_array_equal(x, np.maximum(buf, 0))
    dout = np.ones(7)
    assert run(lambda: ops.relu_backward(buf, dout, out=dout)) is dout
    np.testing.assert_array_equal(dout, buf > 0)


def test_zero_class_logits_rejected():
    raises(lambda: ops.softmax_cross_entropy(np.ones((3, 0)), np.zeros(3, int)), ValueError, "x")


def test_backward_before_forward_is_a_clear_error():
    for layer in (Relu(), Sigmoid(), Affine(np.ones((2, 2)), np.ones(2)), SoftmaxWithLoss()):
        with pytest.raises(RuntimeError, match="backward called before forward"):
            layer.backward(np.ones((1, 2)))


def test_softmax_with_loss_y_on_inf_rows_is_silent():
    layer = SoftmaxWithLoss()
    run(lambda: layer.forward(np.array([[np.inf, 0.0], [1.0, 2.0]]), [0, 1]))
    y = run(lambda: layer.y)
    assert np.isnan(y[0]).all() and np.isfinite(y[1]).all()


def test_big_endian_inputs_accepted():
    x = np.array([[-1.0, 2.0, 0.5]], ">f4")
    assert run(lambda: ops.relu_forward(x)).dtype == np.float32
    np.testing.assert_array_equal(run(lambda: ops.relu_forward(x)), [[0, 2, 0.5]])
    assert run(lambda: Relu().forward(x)).dtype == np.float32
    loss, dx = run(lambda: ops.softmax_cross_entropy(x.astype(">f8"), np.array([1], ">i8")))
    assert dx.dtype == np.float64 and loss == pytest.approx(R.softmax_cross_entropy(x, [1])[0])
    p = np.ones(2, ">f8")
    raises(lambda: ops.sgd_update(p, np.ones(2), 0.1), TypeError, "param")  # in place: no copy


def test_numerical_gradient_restores_params_on_error():
    net = TwoLayerNet(3, 2, 2, seed=0)
    before = net.params["W1"].copy()
    raises(lambda: net.numerical_gradient(np.ones((0, 3)), np.zeros(0, int)), ValueError, "x")
    np.testing.assert_array_equal(net.params["W1"], before)


def test_failed_forward_leaves_layer_as_it_was():
    W, b = np.ones((3, 2)), np.zeros(2)
    aff = Affine(W, b)
    aff.forward(np.ones((4, 3)))
    aff.b = np.zeros(5)  # now inconsistent: the next forward raises
    raises(lambda: aff.forward(np.ones((1, 3))), ValueError, "b")
    assert aff.x.shape == (4, 3) and aff.original_x_shape == (4, 3)
    sm = SoftmaxWithLoss()
    loss = sm.forward(np.zeros((2, 3)), [0, 1])
    dx = sm.dx
    raises(lambda: sm.forward(np.zeros((5, 3)), [0, 1]), ValueError, "t")
    assert sm.loss == loss and sm.backward() is dx and sm.x.shape == (2, 3)
