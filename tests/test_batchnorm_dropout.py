"""Batch normalization and dropout: kernels, validated wrappers and layers, against the
book's layers (``common/layers.py``), tests/reference.py and finite differences."""
import json
import os
import subprocess
import sys
import textwrap

import numba
import numpy as np
import pytest
from numba import njit

from fastbp import kernels as K
from fastbp import ops
from fastbp.kernels import _compile, batchnorm as KB, dropout as KD
from fastbp.layers import BatchNormalization, Dropout

import reference as R
from book import book
from conftest import DTYPES, compiled_only, tol

#: Batch sizes around the block size of the column sums and, at D = 100, on both sides of
#: the parallel threshold (65 536 elements: 656 rows).
SIZES = (1, 2, 7, KB.BLOCK_ROWS - 1, KB.BLOCK_ROWS, KB.BLOCK_ROWS + 1, 700, 1000)


def _bn_inputs(rng, n, D, dtype, scale=3.0):
    x = (scale * rng.standard_normal((n, D)) + rng.standard_normal(D)).astype(dtype)
    gamma = (1 + 0.5 * rng.standard_normal(D)).astype(dtype)
    beta = rng.standard_normal(D).astype(dtype)
    return x, gamma, beta


def _close(got, want, dtype, scale=1.0):
    """Equal to rounding: the test tolerance of `dtype`, relative to the data's scale."""
    t = tol(dtype)
    np.testing.assert_allclose(got, want, rtol=t["rtol"], atol=t["atol"] * scale)


# -- the book's layers, step by step ------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 6), (5, 6), (200, 13), (1000, 100), (30, 2, 3, 4)])
def test_batchnorm_layer_matches_book(rng, shape, dtype):
    """Three training steps (new batch, gamma and beta changed in place in between), then
    evaluation: output, dx, dgamma, dbeta and the running statistics as the book's."""
    layers = book("common.layers")
    D = int(np.prod(shape[1:]))
    _, gamma, beta = _bn_inputs(rng, 1, D, dtype)
    rm, rv = np.zeros(D, dtype), np.zeros(D, dtype)
    ours = BatchNormalization(gamma, beta, momentum=0.8, running_mean=rm, running_var=rv)
    theirs = layers.BatchNormalization(gamma.copy(), beta.copy(), momentum=0.8,
                                       running_mean=rm.copy(), running_var=rv.copy())
    for step in range(3):
        x = (3 * rng.standard_normal(shape) + 1).astype(dtype)
        dout = rng.standard_normal(shape).astype(dtype)
        out = ours.forward(x, train_flg=True)
        want = theirs.forward(x.copy(), train_flg=True)
        assert out.shape == shape and out.dtype == dtype
        _close(out, want, dtype, 3)
        dout_before = dout.copy()
        dx = ours.backward(dout)
        want_dx = theirs.backward(dout.copy())
        np.testing.assert_array_equal(dout, dout_before)  # the book may modify it; we do not
        assert dx.shape == shape and dx.dtype == dtype
        _close(dx, want_dx, dtype, 3)
        _close(ours.dgamma, theirs.dgamma, dtype, shape[0])
        _close(ours.dbeta, theirs.dbeta, dtype, shape[0])
        # Updated in place, the same arrays the caller passed.
        assert ours.running_mean is rm and ours.running_var is rv
        _close(rm, theirs.running_mean, dtype, 3)
        _close(rv, theirs.running_var, dtype, 10)
        _close(ours.std, theirs.std, dtype, 3)
        assert ours.batch_size == theirs.batch_size == shape[0]
        assert ours.input_shape == theirs.input_shape == shape
        # An optimizer updates the parameters in place; the layer sees it.
        step_g = rng.standard_normal(D).astype(dtype) * dtype(0.1)
        gamma -= step_g
        theirs.gamma -= step_g
        beta += step_g
        theirs.beta += step_g
    x = (3 * rng.standard_normal(shape) + 1).astype(dtype)
    _close(ours.forward(x, train_flg=False), theirs.forward(x.copy(), train_flg=False), dtype, 3)


def test_batchnorm_layer_creates_running_stats_in_gammas_dtype(rng):
    layers = book("common.layers")
    for dtype in DTYPES:
        x, gamma, beta = _bn_inputs(rng, 9, 4, dtype)
        layer = BatchNormalization(gamma, beta)
        theirs = layers.BatchNormalization(gamma.copy(), beta.copy())
        assert layer.running_mean is None
        layer.forward(x)
        theirs.forward(x.astype(np.float64))
        assert layer.running_mean.dtype == layer.running_var.dtype == dtype
        _close(layer.running_mean, theirs.running_mean, dtype, 3)
        _close(layer.running_var, theirs.running_var, dtype, 10)
        # Evaluation before any training: the book's zeros, out = gamma * x / sqrt(eps) + beta.
        fresh = BatchNormalization(gamma, beta)
        want = layers.BatchNormalization(gamma.copy(), beta.copy()).forward(x.copy(), False)
        _close(fresh.forward(x, train_flg=False), want, dtype, 1e3)
        assert fresh.running_var.dtype == dtype


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(4, 5), (3, 2, 2, 2)])
def test_dropout_layer_matches_book(rng, shape, dtype):
    layers = book("common.layers")
    x = rng.standard_normal(shape).astype(dtype)
    dout = rng.standard_normal(shape).astype(dtype)
    for ratio in (0.0, 0.3, 0.5, 0.9):
        ours, theirs = Dropout(ratio), layers.Dropout(ratio)
        np.random.seed(7)
        out = ours.forward(x)
        np.random.seed(7)
        want = theirs.forward(x)
        np.testing.assert_array_equal(ours.mask, theirs.mask)
        assert ours.mask.dtype == np.bool_
        np.testing.assert_array_equal(out, want)
        assert out.dtype == want.dtype == dtype
        np.testing.assert_array_equal(ours.backward(dout), theirs.backward(dout))
        ev = ours.forward(x, train_flg=False)
        np.testing.assert_array_equal(ev, theirs.forward(x, train_flg=False))
        assert ev.dtype == dtype


def test_dropout_multiplies_like_numpy():
    """A product, not a select: NaN, inf and the sign of zero as in the book's ``x * mask``."""
    x = np.array([np.nan, np.inf, -1.0, 2.0, -np.inf, np.nan])
    mask = np.array([0, 0, 0, 1, 1, 1], np.uint8)
    with np.errstate(invalid="ignore"):  # inf * 0 (a warning when the kernel runs as Python)
        got = ops.dropout_backward(x, mask)
        want = x * mask
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(np.signbit(got), np.signbit(want))


# -- kernels against tests/reference.py ---------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SIZES)
def test_batchnorm_against_reference(rng, n, dtype):
    D = 100 if n >= 700 else 13
    x, gamma, beta = _bn_inputs(rng, n, D, dtype)
    rm0 = rng.standard_normal(D).astype(dtype)
    rv0 = rng.random(D).astype(dtype)
    rm, rv = rm0.copy(), rv0.copy()
    res = ops.batchnorm_forward(x, gamma, beta, rm, rv, momentum=0.7)
    want, want_rm, want_rv = R.batchnorm_forward(x, gamma, beta, rm0, rv0, momentum=0.7)
    _close(res.out, want, dtype, 3)
    _close(rm, want_rm, dtype, 3)
    _close(rv, want_rv, dtype, 10)
    _close(res.xc, x.astype(np.float64) - x.astype(np.float64).mean(0), dtype, 3)
    _close(res.xn * res.std, res.xc, dtype, 3)
    dout = rng.standard_normal((n, D)).astype(dtype)
    dx, dgamma, dbeta = ops.batchnorm_backward(dout, res.xc, res.xn, res.std, gamma)
    want_dx, want_dgamma, want_dbeta = R.batchnorm_backward(x, gamma, dout)
    # A batch of one row: std = sqrt(eps), the gradient is 0 up to rounding of 1/std ~ 1e3.
    _close(dx, want_dx, dtype, 1e3 if n == 1 else 3)
    _close(dgamma, want_dgamma, dtype, n)
    _close(dbeta, want_dbeta, dtype, n)
    ev = ops.batchnorm_forward(x, gamma, beta, rm, rv, train_flg=False)
    _close(ev, R.batchnorm_forward(x, gamma, beta, rm, rv, train=False)[0], dtype, 10)
    assert all(a.dtype == dtype for a in (res.out, res.xc, res.xn, res.std, dx, dgamma, ev))


def test_batchnorm_sums_like_numpy_within_one_block(rng):
    """Up to BLOCK_ROWS rows a column sum is NumPy's own row-by-row ``sum(axis=0)``: the
    book's forward and its batch statistics to the bit."""
    layers = book("common.layers")
    for dtype in DTYPES:
        x, gamma, beta = _bn_inputs(rng, KB.BLOCK_ROWS, 37, dtype)
        theirs = layers.BatchNormalization(gamma, beta, 0.9, np.zeros(37, dtype),
                                           np.zeros(37, dtype))
        want = theirs.forward(x.copy())
        rm, rv = np.zeros(37, dtype), np.zeros(37, dtype)
        res = ops.batchnorm_forward(x, gamma, beta, rm, rv)
        for got, ref in ((res.out, want), (res.xc, theirs.xc), (res.xn, theirs.xn),
                         (res.std, theirs.std), (rm, theirs.running_mean),
                         (rv, theirs.running_var)):
            np.testing.assert_array_equal(got, ref)


# -- finite differences -------------------------------------------------------------------

def _numeric_grad(f, a, h=1e-6):
    g = np.zeros_like(a)
    for idx in np.ndindex(a.shape):
        old = a[idx]
        a[idx] = old + h
        fp = f()
        a[idx] = old - h
        fm = f()
        a[idx] = old
        g[idx] = (fp - fm) / (2 * h)
    return g


@pytest.mark.parametrize("shape", [(6, 4), (5, 2, 2, 3)])
def test_batchnorm_backward_finite_differences(rng, shape):
    D = int(np.prod(shape[1:]))
    x = 2 * rng.standard_normal(shape) + 1
    gamma = 1 + 0.5 * rng.standard_normal(D)
    beta = rng.standard_normal(D)
    w = rng.standard_normal(shape)  # L = sum(w * out): dL/dout = w

    def loss():
        layer = BatchNormalization(gamma, beta)
        return float((w * layer.forward(x)).sum())

    layer = BatchNormalization(gamma, beta)
    layer.forward(x)
    dx = layer.backward(w)
    for got, param in ((dx, x), (layer.dgamma, gamma), (layer.dbeta, beta)):
        np.testing.assert_allclose(got, _numeric_grad(loss, param), rtol=1e-6, atol=1e-8)


def test_dropout_backward_finite_differences(rng):
    x = rng.standard_normal((7, 5))
    w = rng.standard_normal((7, 5))
    _, mask = ops.dropout_forward(x, 0.4, seed=3, stream=2)
    numeric = _numeric_grad(lambda: float((w * ops.dropout_forward(x, 0.4, 3, 2)[0]).sum()), x)
    np.testing.assert_allclose(ops.dropout_backward(w, mask), numeric, rtol=1e-7, atol=1e-9)
    layer = Dropout(0.4)
    np.random.seed(5)
    layer.forward(x)

    def loss():
        np.random.seed(5)
        return float((w * Dropout(0.4).forward(x)).sum())

    np.testing.assert_allclose(layer.backward(w), _numeric_grad(loss, x), rtol=1e-7,
                               atol=1e-9)


# -- serial and parallel twins: the same bits ---------------------------------------------

def _bn_run(forward, backward, x, gamma, beta, dout, in_place):
    n, D = x.shape
    rm, rv = np.full(D, 0.5, x.dtype), np.full(D, 2.0, x.dtype)
    xin = x.copy()
    xc = xin if in_place else np.empty_like(x)
    xn, out, std = np.empty_like(x), np.empty_like(x), np.empty(D, x.dtype)
    forward(xin, gamma, beta, 0.9, rm, rv, xc, xn, std, out)
    g = dout.copy()
    dx = g if in_place else np.empty_like(x)
    dgamma, dbeta = np.empty(D, x.dtype), np.empty(D, x.dtype)
    work = np.full((KB.batchnorm_work_rows(n), D), np.nan, x.dtype)
    backward(g, xc, xn, std, gamma, dgamma, dbeta, dx, work)
    return [out, xc, xn, std, rm, rv, dx, dgamma, dbeta]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, KB.BLOCK_ROWS, KB.BLOCK_ROWS + 1, 700])
def test_batchnorm_twins_identical(rng, n, dtype):
    x, gamma, beta = _bn_inputs(rng, n, 100, dtype)
    dout = rng.standard_normal((n, 100)).astype(dtype)
    serial = _bn_run(KB._forward_train_serial, KB._backward_serial, x, gamma, beta, dout, False)
    for in_place in (False, True):
        parallel = _bn_run(KB._forward_train_parallel, KB._backward_parallel, x, gamma, beta,
                           dout, in_place)
        for a, b in zip(serial, parallel):
            np.testing.assert_array_equal(a, b)
    # The dispatchers, with and without a work array, in place or not: the same bits.
    def dispatch(xin, gamma, beta, m, rm, rv, xc, xn, std, out):
        K.batchnorm_forward_train(xin, gamma, beta, m, rm, rv, xc, xn, std, out)

    def dispatch_back(g, xc, xn, std, gamma, dgamma, dbeta, dx, work):
        K.batchnorm_backward(g, xc, xn, std, gamma, dgamma, dbeta, dx)

    for in_place in (False, True):
        for a, b in zip(serial, _bn_run(dispatch, dispatch_back, x, gamma, beta, dout,
                                        in_place)):
            np.testing.assert_array_equal(a, b)
    rm, rv = rng.standard_normal(100).astype(dtype), rng.random(100).astype(dtype)
    e1, e2 = np.empty_like(x), x.copy()
    KB._forward_eval_serial(x, gamma, beta, rm, rv, e1)
    KB._forward_eval_parallel(e2, gamma, beta, rm, rv, e2)  # in place
    np.testing.assert_array_equal(e1, e2)


def test_batchnorm_independent_of_thread_count(rng):
    x, gamma, beta = _bn_inputs(rng, 3000, 100, np.float32)
    dout = rng.standard_normal((3000, 100)).astype(np.float32)
    assert KB._parallel(3000, 100)
    results = []
    try:
        for threads in (1, numba.config.NUMBA_NUM_THREADS):
            numba.set_num_threads(threads)
            rm, rv = np.zeros(100, np.float32), np.ones(100, np.float32)
            res = ops.batchnorm_forward(x, gamma, beta, rm, rv)
            grads = ops.batchnorm_backward(dout, res.xc, res.xn, res.std, gamma)
            results.append([*res, rm, rv, *grads])
    finally:
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


def test_dropout_twins_identical(rng):
    size = 4 * KD.MASK_TASK_BLOCKS + 4 * 37  # more than one task, a partial last task
    m1, m2 = np.empty(size, np.uint8), np.empty(size, np.uint8)
    args = (KD._threshold(0.3), np.uint64(5), np.uint64(6), np.uint64(7), np.uint64(8))
    KD._mask_serial(*args, m1)
    KD._mask_parallel(*args, m2)
    np.testing.assert_array_equal(m1, m2)
    x = rng.standard_normal(size)
    o1, o2 = np.empty(size), x.copy()
    KD._multiply_serial(x, m1, o1)
    KD._multiply_parallel(o2, m1, o2)
    np.testing.assert_array_equal(o1, o2)


# -- the dropout generator ----------------------------------------------------------------

# Random123's kat_vectors, "philox4x32 10": counter (4 words), key (2 words), output.
PHILOX_KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


@pytest.mark.parametrize("counter, key, want", PHILOX_KAT)
def test_philox_known_answers(counter, key, want):
    got = KD.philox4x32(*(np.uint64(v) for v in counter + key))
    assert tuple(int(v) for v in got) == want
    assert tuple(R.philox4x32(counter, key)) == want


@pytest.mark.parametrize("size", [1, 3, 4, 5, 4097])
def test_dropout_mask_against_reference(size):
    for seed, stream, ratio in ((0, 0, 0.5), (2 ** 64 - 1, 2 ** 40 + 3, 0.25),
                                (12345, 7, 0.9)):
        out, mask = ops.dropout_forward(np.ones(size), ratio, seed, stream)
        want = R.dropout_mask((size,), ratio, seed, stream)
        np.testing.assert_array_equal(mask, want)
        np.testing.assert_array_equal(out, want.astype(float))


def test_dropout_mask_statistics():
    size = 1 << 20 if not numba.config.DISABLE_JIT else 1 << 17
    mask = np.empty(size, np.uint8)
    for ratio in (0.1, 0.5, 0.9):
        K.dropout_mask(ratio, 2024, 0, mask)
        kept = mask.mean()
        sigma = np.sqrt(ratio * (1 - ratio) / size)
        assert abs(kept - (1 - ratio)) < 5 * sigma, (ratio, kept)
        # Neighbours are independent: P(both kept) = (1 - ratio)**2.
        both = (mask[:-1] & mask[1:]).mean()
        assert abs(both - (1 - ratio) ** 2) < 5 * np.sqrt((1 - ratio) ** 2 / size)
    # Different streams and seeds: independent masks (agreement 1/2 at ratio 1/2).
    K.dropout_mask(0.5, 2024, 0, mask)
    for seed, stream in ((2024, 1), (2025, 0), (0, 2024)):
        other = np.empty_like(mask)
        K.dropout_mask(0.5, seed, stream, other)
        assert abs((mask == other).mean() - 0.5) < 5 * 0.5 / np.sqrt(size)


def test_dropout_mask_independent_of_threads_shape_and_size():
    size = 3 * KD.MASK_TASK_BLOCKS * 4 + 3
    masks = []
    try:
        for threads in (1, numba.config.NUMBA_NUM_THREADS):
            numba.set_num_threads(threads)
            m = np.empty(size, np.uint8)
            K.dropout_mask(0.5, 99, 4, m)
            masks.append(m)
    finally:
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    np.testing.assert_array_equal(masks[0], masks[1])
    assert size >= _compile.PARALLEL_MIN_ELEMENTS  # the parallel twin drew it
    # A function of the flat index: any shape, and a prefix of a longer mask.
    m2 = np.empty((3, 7), np.uint8)
    K.dropout_mask(0.5, 99, 4, m2)
    np.testing.assert_array_equal(m2.ravel(), masks[0][:21])
    # ratio 0 keeps (practically) everything, ratio 1 drops everything.
    K.dropout_mask(0.0, 99, 4, m2)
    assert m2.all()
    K.dropout_mask(1.0, 99, 4, m2)
    assert not m2.any()


# -- called from a user's own @njit code --------------------------------------------------

@njit
def _user_bn_dropout_step(x, gamma, beta, rm, rv, xc, xn, std, h, mask, out, dgamma, dbeta,
                          work, seed):
    K.batchnorm_forward_train(x, gamma, beta, 0.9, rm, rv, xc, xn, std, h)
    K.dropout_mask(0.5, seed, 1, mask)
    K.dropout_forward(h, mask, out)
    K.dropout_backward(out, mask, out)  # pretend dL/dout = out
    K.batchnorm_backward(out, xc, xn, std, gamma, dgamma, dbeta, out, work)
    K.batchnorm_forward_eval(x, gamma, beta, rm, rv, h)
    return out.sum()


def test_kernels_callable_from_user_njit(rng):
    n, D = 20, 6
    x, gamma, beta = _bn_inputs(rng, n, D, np.float64)
    rm, rv = np.zeros(D), np.ones(D)
    xc, xn, h, out = (np.empty((n, D)) for _ in range(4))
    std, dgamma, dbeta = np.empty(D), np.empty(D), np.empty(D)
    mask = np.empty((n, D), np.uint8)
    work = np.empty((K.batchnorm_work_rows(n), D))
    _user_bn_dropout_step(x.copy(), gamma, beta, rm, rv, xc, xn, std, h, mask, out, dgamma,
                          dbeta, work, 11)
    res = ops.batchnorm_forward(x, gamma, beta, np.zeros(D), np.ones(D))
    m = ops.dropout_forward(np.ones((n, D)), 0.5, 11, 1)[1]
    np.testing.assert_array_equal(mask, m)
    g = res.out * m * m
    want = ops.batchnorm_backward(g, res.xc, res.xn, res.std, gamma)
    np.testing.assert_array_equal(out, want.dx)
    np.testing.assert_array_equal(dgamma, want.dgamma)
    np.testing.assert_array_equal(h, ops.batchnorm_forward(x, gamma, beta, rm, rv,
                                                           train_flg=False))


# -- validation: every error path of ops and the layers -----------------------------------

X = np.ones((4, 3))
G3 = np.ones(3)


def _rs():
    return np.zeros(3), np.ones(3)


def _readonly(a):
    a.setflags(write=False)
    return a


@pytest.mark.parametrize("call, exc, words", [
    (lambda: ops.batchnorm_forward(X.astype(int), G3, G3, *_rs()), TypeError, "x must be float"),
    (lambda: ops.batchnorm_forward(np.ones(3), G3, G3, *_rs()), ValueError, "x must be 2-D"),
    (lambda: ops.batchnorm_forward(np.ones((0, 3)), G3, G3, *_rs()), ValueError, "empty batch"),
    (lambda: ops.batchnorm_forward(X, G3.astype(np.float32), G3, *_rs()), TypeError,
     "gamma is float32"),
    (lambda: ops.batchnorm_forward(X, np.ones(4), G3, *_rs()), ValueError,
     "gamma must have 3 elements"),
    (lambda: ops.batchnorm_forward(X, G3, np.ones((3, 1)), *_rs()), ValueError,
     "beta must be 1-D"),
    (lambda: ops.batchnorm_forward(X, G3, G3, [0, 0, 0], np.ones(3)), TypeError,
     "running_mean must be a numpy.ndarray"),
    (lambda: ops.batchnorm_forward(X, G3, G3, np.zeros(3, np.float32), np.ones(3)), TypeError,
     "running_mean must be float64 like x"),
    (lambda: ops.batchnorm_forward(X, G3, G3, np.zeros(4), np.ones(3)), ValueError,
     "running_mean must have shape (3,)"),
    (lambda: ops.batchnorm_forward(X, G3, G3, np.zeros(6)[::2], np.ones(3)), ValueError,
     "running_mean must be a writeable C-contiguous"),
    (lambda: ops.batchnorm_forward(X, G3, G3, np.zeros(3), _readonly(np.ones(3))), ValueError,
     "running_var must be a writeable C-contiguous"),
    (lambda: ops.batchnorm_forward(X, G3, G3, X[0], np.ones(3)), ValueError,
     "running_mean must not share memory with x"),
    (lambda: ops.batchnorm_forward(X, G3, G3, *(2 * [np.zeros(3)])), ValueError,
     "running_var must not share memory with running_mean"),
    (lambda: ops.batchnorm_forward(X, G3, G3, np.zeros(3), -np.ones(3)), ValueError,
     "running_var must hold variances"),
    (lambda: ops.batchnorm_forward(X, G3, G3, np.zeros(3), np.full(3, np.nan), 0.9, False),
     ValueError, "running_var must hold variances"),
    (lambda: ops.batchnorm_forward(X, G3, G3, np.zeros(4), np.ones(3), 0.9, False), ValueError,
     "running_mean must have 3 elements"),
    (lambda: ops.batchnorm_forward(X, G3, G3, np.zeros(3), None, 0.9, False), TypeError,
     "running_var is required"),
    (lambda: ops.batchnorm_forward(X, G3, G3, None, np.ones(3)), TypeError,
     "running_mean must be a numpy.ndarray (updated in place), got NoneType"),
    (lambda: ops.batchnorm_forward(X, G3, G3, *_rs(), momentum=1.5), ValueError,
     "momentum must be in [0, 1]"),
    (lambda: ops.batchnorm_forward(X, G3, G3, *_rs(), momentum=np.nan), ValueError, "momentum"),
    (lambda: ops.batchnorm_forward(X, G3, G3, *_rs(), momentum="0.9"), TypeError,
     "momentum must be a real number"),
    (lambda: ops.batchnorm_backward(np.ones((4, 2)), X, X, G3, G3), ValueError,
     "xc must have the shape of dout"),
    (lambda: ops.batchnorm_backward(X, X, np.ones((3, 3)), G3, G3), ValueError,
     "xn must have the shape of dout"),
    (lambda: ops.batchnorm_backward(X, X, X, np.zeros(3), G3), ValueError,
     "std must be positive"),
    (lambda: ops.batchnorm_backward(X, X, X, G3, np.ones(2)), ValueError,
     "gamma must have 3 elements"),
    (lambda: ops.batchnorm_backward(X, X.astype(np.float32), X, G3, G3), TypeError,
     "xc is float32"),
    (lambda: ops.batchnorm_backward(np.ones((0, 3)), X, X, G3, G3), ValueError, "empty batch"),
    (lambda: ops.dropout_forward(X.astype(int), 0.5, 0), TypeError, "x must be float"),
    (lambda: ops.dropout_forward(X, -0.1, 0), ValueError, "ratio"),
    (lambda: ops.dropout_forward(X, 1.5, 0), ValueError, "must be in [0, 1]"),
    (lambda: ops.dropout_forward(X, np.nan, 0), ValueError, "ratio"),
    (lambda: ops.dropout_forward(X, "half", 0), TypeError, "ratio must be a real number"),
    (lambda: ops.dropout_forward(X, 0.5, -1), ValueError, "seed must be in [0, 2**64)"),
    (lambda: ops.dropout_forward(X, 0.5, 2 ** 64), ValueError, "seed must be in"),
    (lambda: ops.dropout_forward(X, 0.5, 1.0), TypeError, "seed must be an int"),
    (lambda: ops.dropout_forward(X, 0.5, True), TypeError, "seed must be an int"),
    (lambda: ops.dropout_forward(X, 0.5, 0, stream=-3), ValueError, "stream must be in"),
    (lambda: ops.dropout_backward(X, np.ones((4, 3))), TypeError, "mask must be bool or uint8"),
    (lambda: ops.dropout_backward(X, np.full((4, 3), 2, np.uint8)), ValueError,
     "mask must hold only 0 and 1"),
    (lambda: ops.dropout_backward(X, np.ones((4, 2), bool)), ValueError,
     "mask must have the shape of dout"),
    (lambda: ops.dropout_backward(X, np.ones((4, 3), bool), out=np.ones((4, 3), np.float32)),
     TypeError, "out must be float64"),
    (lambda: ops.dropout_backward(np.ones((4, 4)), np.ones((4, 3), bool)), ValueError, "mask"),
])
def test_ops_errors(call, exc, words):
    with pytest.raises(exc) as info:
        call()
    assert words in str(info.value), str(info.value)


def test_dropout_backward_out_overlap_and_in_place(rng):
    d = rng.standard_normal((4, 6))
    mask = rng.random((4, 6)) > 0.5
    want = d * mask
    with pytest.raises(ValueError, match="out overlaps dout"):
        ops.dropout_backward(d[1:], mask[1:], out=d[:-1])
    np.testing.assert_array_equal(d * mask, want)  # the rejected call wrote nothing
    got = ops.dropout_backward(d, mask, out=d)  # in place
    assert got is d
    np.testing.assert_array_equal(d, want)


def test_rejected_batchnorm_calls_change_nothing():
    rm, rv = np.full(3, 0.25), np.full(3, 4.0)
    for bad in (dict(momentum=2.0), dict(gamma=np.ones(4))):
        args = dict(x=X, gamma=G3, beta=G3, running_mean=rm, running_var=rv)
        args.update(bad)
        with pytest.raises(ValueError):
            ops.batchnorm_forward(**args)
    with pytest.raises(TypeError):
        ops.batchnorm_forward(X, G3, G3, rm, rv.astype(np.float32))
    np.testing.assert_array_equal(rm, 0.25)
    np.testing.assert_array_equal(rv, 4.0)


def test_layer_errors(rng):
    with pytest.raises(RuntimeError, match="backward called before forward"):
        Dropout().backward(X)
    with pytest.raises(ValueError, match="dropout_ratio"):
        Dropout(1.5).forward(X)
    with pytest.raises(TypeError, match="dropout_ratio must be a real number"):
        Dropout(None).forward(X)
    with pytest.raises(TypeError, match="x must hold real numbers"):
        Dropout().forward(np.array(["a"]))
    layer = Dropout()
    layer.forward(X)
    with pytest.raises(ValueError, match="mask must have the shape of dout"):
        layer.backward(np.ones((2, 3)))

    with pytest.raises(TypeError, match="BatchNormalization.gamma must be a float32 or float64"):
        BatchNormalization([1.0, 1.0, 1.0], G3).forward(X)
    with pytest.raises(RuntimeError, match="backward called before forward"):
        BatchNormalization(G3, G3).backward(X)
    bn = BatchNormalization(G3.copy(), G3.copy())
    with pytest.raises(ValueError, match="x must be a batch of rows"):
        bn.forward(np.ones(3))
    with pytest.raises(ValueError, match="gamma must have 6 elements"):
        bn.forward(np.ones((4, 2, 3)))
    assert bn.running_mean is None and bn.input_shape is None  # left as it was
    with pytest.raises(TypeError, match="running_mean must be float32 like x"):
        BatchNormalization(G3.astype(np.float32), G3.astype(np.float32),
                           running_mean=np.zeros(3)).forward(X)
    bn.forward(rng.standard_normal((4, 3)))
    with pytest.raises(ValueError, match="dout must have the shape"):
        bn.backward(np.ones((5, 3)))
    with pytest.raises(ValueError, match="dout must have the shape"):
        bn.backward(np.ones((4, 2)))
    # 4-D dout of the forward's size is accepted, as the book reshapes it.
    assert bn.backward(np.ones((4, 3, 1, 1))).shape == (4, 3, 1, 1)


def test_batchnorm_work_rows():
    for n, blocks in ((1, 1), (KB.BLOCK_ROWS, 1), (KB.BLOCK_ROWS + 1, 2), (10000, 79)):
        assert K.batchnorm_work_rows(n) == 4 * blocks


ALLOCATION_SCRIPT = textwrap.dedent("""
    import json
    import numpy as np
    from numba import njit
    from numba.core.runtime import rtsys
    from fastbp import kernels as K

    @njit
    def steps(k, x, gamma, beta, rm, rv, xc, xn, std, h, mask, dgamma, dbeta, work,
              with_work):
        for s in range(k):
            K.batchnorm_forward_train(x, gamma, beta, 0.9, rm, rv, xc, xn, std, h)
            K.dropout_mask(0.5, 1, s, mask)
            K.dropout_forward(h, mask, h)
            K.dropout_backward(h, mask, h)
            if with_work:
                K.batchnorm_backward(h, xc, xn, std, gamma, dgamma, dbeta, h, work)
            else:
                K.batchnorm_backward(h, xc, xn, std, gamma, dgamma, dbeta, h)
            K.batchnorm_forward_eval(x, gamma, beta, rm, rv, h)

    out = {}
    for n in (50, 1000):  # serial and parallel twins
        D = 100
        x = np.random.default_rng(0).standard_normal((n, D))
        gamma, beta, rm, rv = np.ones(D), np.zeros(D), np.zeros(D), np.ones(D)
        std, dgamma, dbeta = np.empty(D), np.empty(D), np.empty(D)
        xc, xn, h = np.empty((n, D)), np.empty((n, D)), np.empty((n, D))
        mask = np.empty((n, D), np.uint8)
        work = np.empty((K.batchnorm_work_rows(n), D))
        for with_work in (True, False):
            counts = []
            for k in (1, 2, 7):
                before = rtsys.get_allocation_stats().alloc
                steps(k, x, gamma, beta, rm, rv, xc, xn, std, h, mask, dgamma, dbeta, work,
                      with_work)
                counts.append(rtsys.get_allocation_stats().alloc - before)
            out[f"{n}-{with_work}"] = counts[1:]
    print(json.dumps(out))
""")


@compiled_only
def test_kernels_allocate_nothing_with_work():
    """Inside compiled code, a training step's BN and dropout kernels allocate nothing
    when batchnorm_backward gets its work array (NRT statistics, in a fresh process)."""
    env = dict(os.environ, NUMBA_NRT_STATS="1")
    proc = subprocess.run([sys.executable, "-c", ALLOCATION_SCRIPT], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    counts = json.loads(proc.stdout.strip().splitlines()[-1])
    for n in (50, 1000):
        two, seven = counts[f"{n}-True"]
        assert two == seven, counts  # only the call's own argument headers
        two, seven = counts[f"{n}-False"]
        assert seven - two == 5, counts  # the test can fail: a work array per step


def test_kernel_edge_cases():
    """An empty batch touches nothing out of bounds; a NaN ratio drops everything (u > NaN
    is false), a negative one keeps everything."""
    x = np.empty((0, 5))
    std, rm, rv = np.full(5, 7.0), np.zeros(5), np.ones(5)
    K.batchnorm_forward_train(x, np.ones(5), np.zeros(5), 0.9, rm, rv, x, x.copy(), std,
                              x.copy())
    np.testing.assert_array_equal(std, 7.0)
    np.testing.assert_array_equal(rm, 0.0)
    dgamma, dbeta = np.full(5, 7.0), np.full(5, 7.0)
    K.batchnorm_backward(x, x, x, std, np.ones(5), dgamma, dbeta, x.copy())
    np.testing.assert_array_equal(dgamma, 0.0)
    np.testing.assert_array_equal(dbeta, 0.0)
    mask = np.empty(103, np.uint8)
    K.dropout_mask(np.nan, 1, 2, mask)
    assert not mask.any()
    K.dropout_mask(-0.5, 1, 2, mask)
    assert mask.all()
