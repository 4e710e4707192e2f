"""Every kernel against tests/reference.py, through the validated wrappers and directly."""
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
from fastbp.kernels import activations as KA, affine as KF, network as KN
from fastbp.kernels import softmax as KM
from fastbp.kernels import _sparse as KP
from fastbp.kernels import onerow as KW
from fastbp.kernels import optimizers as KO
from fastbp.kernels import rows as KR

import reference as R
from conftest import BATCHES, DTYPES, compiled_only, layouts, tol

D, M, C = 13, 9, 10


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", BATCHES)
@pytest.mark.parametrize("layout", ["C", "strided"])
class TestAgainstReference:
    def test_relu(self, rng, n, dtype, layout):
        x = layouts(rng.standard_normal((n, D)).astype(dtype))[layout]
        x[0, 0] = 0  # the book: gradient 0 at exactly 0
        x[0, 1] = -0.0
        g = layouts(rng.standard_normal((n, D)).astype(dtype))[layout]
        out = ops.relu_forward(x)
        assert out.dtype == dtype
        np.testing.assert_array_equal(out, R.relu_forward(x))
        dx = ops.relu_backward(x, g)
        np.testing.assert_array_equal(dx, R.relu_backward(x, g))
        assert dx[0, 0] == 0 and dx[0, 1] == 0

    def test_sigmoid(self, rng, n, dtype, layout):
        x = layouts((10 * rng.standard_normal((n, D))).astype(dtype))[layout]
        g = layouts(rng.standard_normal((n, D)).astype(dtype))[layout]
        y = ops.sigmoid_forward(x)
        np.testing.assert_allclose(y, R.sigmoid_forward(x), **tol(dtype))
        np.testing.assert_allclose(ops.sigmoid_backward(y, g), R.sigmoid_backward(y, g),
                                   **tol(dtype))

    def test_affine(self, rng, n, dtype, layout):
        x = layouts(rng.standard_normal((n, D)).astype(dtype))[layout]
        x[x < -0.5] = 0  # exercise the zero-skipping path
        W = layouts(rng.standard_normal((D, M)).astype(dtype))[layout]
        b = rng.standard_normal(M).astype(dtype)
        g = layouts(rng.standard_normal((n, M)).astype(dtype))[layout]
        np.testing.assert_allclose(ops.affine_forward(x, W, b), R.affine_forward(x, W, b),
                                   **tol(dtype))
        dx, dW, db = ops.affine_backward(g, x, W)
        for got, want in zip((dx, dW, db), R.affine_backward(g, x, W)):
            assert got.dtype == dtype
            np.testing.assert_allclose(got, want, **tol(dtype))
        none, dW2, db2 = ops.affine_backward(g, x, W, need_dx=False)
        assert none is None
        np.testing.assert_array_equal(dW2, dW)
        np.testing.assert_array_equal(db2, db)

    def test_softmax_cross_entropy(self, rng, n, dtype, layout):
        x = layouts((3 * rng.standard_normal((n, C))).astype(dtype))[layout]
        labels = rng.integers(0, C, n)
        for t in (labels, np.eye(C, dtype=dtype)[labels], labels.astype(np.uint8)):
            loss, dx = ops.softmax_cross_entropy(x, t)
            want_loss, want_dx = R.softmax_cross_entropy(x, labels)
            assert loss == pytest.approx(want_loss, rel=1e-6 if dtype == np.float32 else 1e-12)
            np.testing.assert_allclose(dx, want_dx, **tol(dtype))

    def test_sgd(self, rng, n, dtype, layout):
        p = rng.standard_normal((n, D)).astype(dtype)
        g = layouts(rng.standard_normal((n, D)).astype(dtype))[layout]
        want = R.sgd_update(p, g, 0.1)
        assert ops.sgd_update(p, g, 0.1) is p
        np.testing.assert_allclose(p, want, **tol(dtype))


# -- numerical edge cases -------------------------------------------------------------------

@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_extreme_and_equal_logits(dtype):
    """Logits of +-1e4 and rows of equal logits: finite, exact losses and gradients, no
    warning. Row 0's label has probability exp(-2e4), which underflows to 0 in any float
    type: the loss is still its exact value 2e4 (the book's log(y + 1e-7) would give 16.1)."""
    x = np.array([[1e4, -1e4, 0], [-1e4, 1e4, 0], [3, 3, 3], [-1e4, -1e4, -1e4],
                  [1e4, 1e4, -1e4]], dtype)
    t = np.array([1, 1, 2, 0, 0])
    want_rows = np.array([2e4, 0.0, np.log(3), np.log(3), np.log(2)])
    want_dx = np.array([[1, -1, 0], [0, 0, 0], [1 / 3, 1 / 3, -2 / 3], [-2 / 3, 1 / 3, 1 / 3],
                        [-0.5, 0.5, 0]]) / 5
    with np.errstate(all="raise"):
        for targets in (t, np.eye(3, dtype=dtype)[t]):
            loss, dx = ops.softmax_cross_entropy(x, targets)
            assert np.isfinite(loss) and np.isfinite(dx).all()
            assert loss == pytest.approx(want_rows.mean(), rel=1e-6)
            np.testing.assert_allclose(dx, want_dx, rtol=1e-6, atol=1e-7)
            with np.errstate(under="ignore"):
                want_loss, want_ref_dx = R.softmax_cross_entropy(x, t)
            assert loss == pytest.approx(want_loss, rel=1e-6)
            np.testing.assert_allclose(dx, want_ref_dx, atol=1e-7)
        row_loss = np.empty(5)
        K.softmax_cross_entropy_rows(x, t.astype(np.intp), np.empty_like(x), row_loss)
    np.testing.assert_allclose(row_loss, want_rows, rtol=1e-6)


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_underflowing_probability_keeps_loss_finite(dtype):
    """A target class whose probability underflows (float32 from ~exp(-104), float64 from
    ~exp(-745)) still gets its exact loss, -log p = the logit gap, in both twins."""
    gaps = np.array([50, 120, 800, 5000, 3e4])
    for n in (len(gaps), 1 << 14):  # serial, then parallel (>= PARALLEL_MIN_ELEMENTS)
        x = np.zeros((n, 4), dtype)
        x[:, 0] = np.resize(gaps, n)
        t = np.full(n, 3)
        with np.errstate(all="raise"):
            loss, dx = ops.softmax_cross_entropy(x, t)
        assert np.isfinite(loss) and np.isfinite(dx).all()
        assert loss == pytest.approx(np.resize(gaps, n).astype(dtype).mean(), rel=1e-6)


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid_no_overflow_up_to_1e4(dtype):
    """Forward and backward of |x| up to 1e4 (and +-inf) in both twins: no overflow, no
    warning, exact saturation at 0 and 1, zero gradient there."""
    edge = np.array([-np.inf, -1e4, -1000, -89, -88, -20, 0, 20, 88, 89, 1000, 1e4, np.inf],
                    dtype)
    for x in (edge, np.resize(edge, 1 << 17)):
        with np.errstate(all="raise"):
            y = ops.sigmoid_forward(x)
            dx = ops.sigmoid_backward(y, np.ones_like(x))
        assert np.isfinite(y).all() and np.isfinite(dx).all()
        assert (y[x <= -1000] == 0).all() and (y[x >= 1000] == 1).all()
        assert (dx[np.abs(x) >= 1000] == 0).all()
        with np.errstate(all="ignore"):
            np.testing.assert_allclose(y, R.sigmoid_forward(x), **tol(dtype))
        np.testing.assert_allclose(dx, R.sigmoid_backward(y, 1.0), **tol(dtype))


def test_relu_gradient_zero_at_zero_in_both_twins():
    x = np.zeros(1 << 17)
    x[1::3] = -0.0
    x[2::3] = 1.0
    for serial, parallel in ((KA._relu_backward_serial, KA._relu_backward_parallel),):
        for f in (serial, parallel, K.relu_backward):
            dx = np.full_like(x, 7.0)
            f(x, np.ones_like(x), dx)
            np.testing.assert_array_equal(dx, x > 0)


def test_softmax_soft_targets(rng):
    """Probability rows that are not one-hot are valid targets too."""
    x = rng.standard_normal((5, C))
    t = rng.random((5, C))
    t /= t.sum(axis=1, keepdims=True)
    loss, dx = ops.softmax_cross_entropy(x, t)
    want_loss, want_dx = R.softmax_cross_entropy(x, t)
    assert loss == pytest.approx(want_loss, rel=1e-12)
    np.testing.assert_allclose(dx, want_dx, rtol=1e-12, atol=1e-14)


# -- serial and parallel twins return the same bits ---------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 7, 1000])
def test_twins_identical(rng, n, dtype):
    x = rng.standard_normal((n, 50)).astype(dtype)
    x[x < 0] = 0
    W = rng.standard_normal((50, 20)).astype(dtype)
    g = rng.standard_normal((n, 20)).astype(dtype)
    flat = x.reshape(-1)

    def both(serial, parallel, *args_and_out):
        *args, out = args_and_out
        o1, o2 = np.empty_like(out), np.empty_like(out)
        serial(*args, o1)
        parallel(*args, o2)
        np.testing.assert_array_equal(o1, o2)

    both(KA._relu_forward_serial, KA._relu_forward_parallel, flat, flat)
    both(KA._relu_backward_serial, KA._relu_backward_parallel, flat, flat, flat)
    both(KA._sigmoid_forward_serial, KA._sigmoid_forward_parallel, flat, flat)
    both(KA._sigmoid_backward_serial, KA._sigmoid_backward_parallel, flat, flat, flat)
    labels = rng.integers(0, 20, n)
    r1, r2 = np.empty(n), np.empty(n)
    d1, d2 = np.empty_like(g), np.empty_like(g)
    KM._rows_serial(g, labels, d1, r1)
    KM._rows_parallel(g, labels, d2, r2)
    np.testing.assert_array_equal(d1, d2)
    np.testing.assert_array_equal(r1, r2)
    p1, p2 = W.copy(), W.copy()
    KO._sgd_decay_serial(p1.reshape(-1), W.reshape(-1), 0.1, 0.0)
    KO._sgd_decay_parallel(p2.reshape(-1), W.reshape(-1), 0.1, 0.0)
    np.testing.assert_array_equal(p1, p2)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", BATCHES)
def test_affine_loops_and_blas_paths(rng, n, dtype):
    """Both affine code paths (hand-written loops, OpenBLAS gemm) against the reference at
    the book's layer shape, where the dispatcher switches between them."""
    d, m = 784, 50
    x = rng.random((n, d)).astype(dtype)
    x[x < 0.8] = 0  # MNIST-like: the loops skip zero inputs
    W = (0.1 * rng.standard_normal((d, m))).astype(dtype)
    b = rng.standard_normal(m).astype(dtype)
    g = rng.standard_normal((n, m)).astype(dtype)
    want = R.affine_forward(x, W, b)
    want_dx, want_dW, want_db = R.affine_backward(g, x, W)
    out, dx, dW, db = (np.full(a.shape, np.nan, dtype) for a in (want, x, W, b))
    K.affine_forward(x, W, b, out)
    K.affine_backward(g, x, W, dW, db, dx)
    for got, ref in ((out, want), (dx, want_dx), (dW, want_dW), (db, want_db)):
        np.testing.assert_allclose(got, ref, **tol(dtype))
    out[...] = b
    KF.matmul_loops(x, W, out, True)
    dW[...] = 0
    KF.rank1_loops(1.0, x, g, dW)
    KF.input_grad_loops(g, W, dx, dx[:0])
    for got, ref in ((out, want), (dx, want_dx), (dW, want_dW)):
        np.testing.assert_allclose(got, ref, **tol(dtype))
    # Which path ran, seen in the results: the loops skip a zero input, so 0 x inf adds
    # nothing there, where OpenBLAS's gemm gives NaN. The dispatchers take gemm from
    # blas_min_flops multiply-adds (at this shape, from 4 rows with the default).
    assert BATCHES[0] * d * m < KF.blas_min_flops(d, m) <= BATCHES[-1] * d * m  # both paths
    _assert_path_ran(x, W, b, g, blas=n * d * m >= KF.blas_min_flops(d, m))


def _assert_path_ran(x, W, b, g, blas):
    """Whether gemm (`blas`) or the loops ran, seen in 0 x inf: with ``x[:, 5] = 0`` and
    ``W[5] = inf`` the forward is NaN through gemm and finite through the loops, which skip
    the zero input; with ``g[0] = inf`` too, ``dW[5] = x[:, 5] @ g`` is NaN or 0. Overwrites
    column 5 of `x`, row 5 of `W` and row 0 of `g`."""
    n, m = g.shape
    x[:, 5] = 0
    W[5, :] = np.inf
    out = np.empty((n, m), x.dtype)
    K.affine_forward(x, W, b, out)
    assert np.isnan(out).all() if blas else np.isfinite(out).all()
    g[0, :] = np.inf
    dW, db, dx = np.empty_like(W), np.empty_like(b), np.empty_like(x)
    K.affine_backward(g, x, W, dW, db, dx)
    assert np.isnan(dW[5]).all() if blas else (dW[5] == 0).all()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", BATCHES)
def test_relu_input_grad_both_paths(rng, n, dtype):
    """``relu_input_grad`` (the input gradient through the ReLU before a 100 x 100 layer) is
    the book's ``Relu.backward`` of ``dz @ W.T`` on both paths: the loops (up to 13 rows),
    which compute only the entries the ReLU passes, and gemm followed by the ReLU pass. A
    NaN row of `W` behind a ReLU zero gives 0, as the book's mask assignment does."""
    d, m = 100, 100
    W = rng.standard_normal((d, m)).astype(dtype)
    dz = rng.standard_normal((n, m)).astype(dtype)
    h = np.maximum(rng.standard_normal((n, d)), 0).astype(dtype)
    h[:, 3] = 0
    W[3] = np.nan
    want = dz.astype(np.float64) @ W.T.astype(np.float64)
    want[h <= 0] = 0
    da = np.full((n, d), np.inf, dtype)
    KF.relu_input_grad(dz, W, da, h)
    np.testing.assert_allclose(da, want, **tol(dtype))
    assert (da[h <= 0] == 0).all()
    # the loops with and without a gate, at any row count
    KF.input_grad_loops(dz, W, da, h)
    np.testing.assert_allclose(da, want, **tol(dtype))
    KF.input_grad_loops(dz, W, da, h[:0])
    assert np.isnan(da[:, 3]).all()
    np.testing.assert_allclose(np.delete(da, 3, axis=1),
                               np.delete(dz @ W.T, 3, axis=1), **tol(dtype))


@pytest.mark.parametrize("n", [1, 4, 5, 100])
def test_narrow_layer_takes_blas_from_a_few_rows(rng, n):
    """A layer with a side below AFFINE_NARROW_SIDE (100 -> 10, an output layer) takes
    gemm for all three products from AFFINE_NARROW_BLAS_MIN_FLOPS multiply-adds (5 rows
    here), where the loops' 10-wide rows do not vectorize; 784 -> 50 stays in the loops up
    to AFFINE_BLAS_MIN_FLOPS. The path shows in 0 x inf, as above."""
    d, m = 100, 10
    assert KF.blas_min_flops(d, m) == KF.AFFINE_NARROW_BLAS_MIN_FLOPS
    assert KF.blas_min_flops(784, 50) == KF.AFFINE_BLAS_MIN_FLOPS
    assert 4 * d * m < KF.AFFINE_NARROW_BLAS_MIN_FLOPS <= 5 * d * m
    x = rng.random((n, d)).astype(np.float32)
    W = rng.random((d, m)).astype(np.float32)
    g = rng.random((n, m)).astype(np.float32)
    _assert_path_ran(x, W, np.zeros(m, np.float32), g, blas=n >= 5)


def test_network_twins_identical(rng):
    n, H, C_ = 300, 16, 10
    h0 = rng.standard_normal((n, H))
    t = rng.integers(0, C_, n)
    W2 = rng.standard_normal((H, C_))
    b1, b2 = rng.standard_normal(H), rng.standard_normal(C_)
    outs = []
    for rows, grad in ((KN._rows_serial, KN.matmul_loops),
                       (KN._rows_parallel, KN.matmul_loops_parallel)):
        h = h0.copy()
        y, dy, dh, rl, dW2 = (np.empty((n, C_)), np.empty((n, C_)), np.empty((n, H)),
                              np.empty(n), np.empty((H, C_)))
        rows(t, b1, W2, b2, h, y, dy, dh, rl)
        grad(h.T, dy, dW2, False)
        outs.append((h, y, dy, dh, rl, dW2))
    for a, b in zip(*outs):
        np.testing.assert_array_equal(a, b)
    # the per-row passes of the BLAS path (batch > SMALL_BATCH)
    outs = []
    for bias_act, softmax_rows, mask in (
            (KR._bias_act_serial, KR._softmax_rows_serial, KR._relu_mask_serial),
            (KR._bias_act_parallel, KR._softmax_rows_parallel, KR._relu_mask_parallel)):
        same = np.random.default_rng(5)  # the same inputs for both
        h, y, dh = h0.copy(), 3 * same.standard_normal((n, C_)), same.standard_normal((n, H))
        dy, rl = np.empty((n, C_)), np.empty(n)
        bias_act(h, b1, KR.RELU, True)
        softmax_rows(y, b2, t, dy, rl)
        mask(h, dh)
        outs.append((h, y, dy, dh, rl))
    for a, b in zip(*outs):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", ["relu_forward", "relu_backward", "sigmoid_forward",
                                  "sigmoid_backward", "tanh_forward", "tanh_backward"])
def test_activation_min_parallel_changes_the_twin_not_the_bits(rng, name):
    """``min_parallel``: 1 (parallel twin at any size), NEVER and ``None`` (serial) give the
    bits of the default choice."""
    from fastbp.kernels import NEVER

    x, dout = rng.standard_normal((3, 37)), rng.standard_normal((3, 37))
    args = (x,) if name.endswith("forward") else (x, dout)
    want = np.empty_like(x)
    getattr(K, name)(*args, want)
    for min_parallel in (1, NEVER, None):
        got = np.full_like(x, np.nan)
        getattr(K, name)(*args, got, min_parallel)
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("act", ["RELU", "IDENTITY", "SIGMOID", "TANH"])
def test_bias_act_rows_with_and_without_the_smooth_branches(rng, act):
    """``smooth=None`` (callers whose act is ReLU or identity) compiles without the smooth
    activations and gives the same bits for RELU and IDENTITY; any other act then adds the
    bias only, as documented."""
    z, b = rng.standard_normal((7, 13)), rng.standard_normal(13)
    want = {"RELU": np.maximum(z + b, 0), "IDENTITY": z + b,
            "SIGMOID": 1 / (1 + np.exp(-(z + b))), "TANH": np.tanh(z + b)}[act]
    full, pruned = z.copy(), z.copy()
    KR.bias_act_rows(full, b, getattr(KR, act))
    KR.bias_act_rows(pruned, b, getattr(KR, act), True, None)
    np.testing.assert_allclose(full, want, rtol=1e-12, atol=1e-15)
    if act in ("RELU", "IDENTITY"):
        np.testing.assert_array_equal(pruned, full)
    else:
        np.testing.assert_array_equal(pruned, z + b)


# -- zero-skipping building blocks of the small-batch step (kernels/_sparse.py) ------------

SPARSE_SHAPES = [(1, 784, 50), (3, 784, 50), (2, 13, 3), (1, 7, 70), (4, 100, 64),
                 (2, 30, 75), (2, 64, 129), (1, 8, 1), (6, 9, 8)]


@njit
def _plain_gather(x, i, idx, count, W, out):
    # The loop the intrinsics replace: the order of the sums is the one they promise.
    for j in range(W.shape[1]):
        out[i, j] = 0
    for p in range(count):
        k = idx[p]
        for j in range(W.shape[1]):
            out[i, j] += x[i, k] * W[k, j]


@njit
def _plain_scatter(a, x, i, idx, count, g, W):
    for p in range(count):
        k = idx[p]
        s = a * x[i, k]
        for j in range(W.shape[1]):
            W[k, j] += s * g[i, j]


@njit
def _sparse_calls(x, W, g, out, idx, a):
    counts = np.empty(x.shape[0], np.int64)
    for i in range(x.shape[0]):
        counts[i] = KP.nonzero_columns(x, i, idx[i])
        KP.gather_dot(x, i, idx[i], counts[i], W, out)
    for i in range(x.shape[0]):
        KP.scatter_axpy(a, x, i, idx[i], counts[i], g, W)
    return counts


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SPARSE_SHAPES)
def test_sparse_blocks_equal_plain_loops(rng, shape, dtype):
    """nonzero_columns lists exactly the non-zero (and NaN) inputs in order; gather_dot and
    scatter_axpy give the same bits as the plain loops, for any column count (8-lane blocks,
    a last block that overlaps its neighbour or, alone in its pass, is masked, several passes
    above 64 columns), -0.0 and NaN inputs included."""
    n, d, m = shape
    x = rng.random((n, d)).astype(dtype)
    x[x < 0.6] = 0
    x[0, 0] = -0.0
    if d > 5:
        x[-1, 5] = np.nan
    W = rng.standard_normal((d, m)).astype(dtype)
    g = rng.standard_normal((n, m)).astype(dtype)
    a = dtype(-0.1)
    idx = np.full((n, d + KP.LANES), -1, np.int32)
    out = np.full((n, m), np.nan, dtype)
    W_got = W.copy()
    counts = _sparse_calls(x, W_got, g, out, idx, a)
    want_out = np.full((n, m), np.nan, dtype)
    W_want = W.copy()
    for i in range(n):
        cols = np.flatnonzero(x[i] != 0)
        assert counts[i] == cols.size
        np.testing.assert_array_equal(idx[i, :cols.size], cols)
        _plain_gather(x, i, idx[i], counts[i], W_want, want_out)
    for i in range(n):
        _plain_scatter(a, x, i, idx[i], counts[i], g, W_want)
    np.testing.assert_array_equal(out, want_out)
    np.testing.assert_array_equal(W_got, W_want)
    finite = ~np.isnan(x).any(axis=1)
    np.testing.assert_allclose(out[finite], (x @ W)[finite], **tol(dtype))


#: (d_in, d_out) of one_row_forward: one block; a short last block; one row per block
#: (d_out above ONE_ROW_BLOCK_ELEMENTS); the book's ConvNet's W2
ONE_ROW_SHAPES = [(7, 70), (101, 41), (5, 4100), (4320, 100)]


@njit
def _user_one_row_forward(a, W, partial, out):
    KW.one_row_forward(a, W, partial, out, 1 << 62)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", ONE_ROW_SHAPES)
def test_one_row_forward_by_blocks(rng, shape, dtype):
    """``a @ W`` for one row: the reference product (zeros skipped, NaN kept), the blocks'
    sums added in block order (one serial loop gives the same bits), the same bits from
    both twins and from a user's @njit function; `partial` may be longer than needed."""
    d_in, d_out = shape
    a = rng.random(d_in).astype(dtype)
    a[a < 0.5] = 0
    W = rng.standard_normal((d_in, d_out)).astype(dtype)
    W[1, :] = np.inf  # a[1] is made 0: skipped, not NaN
    a[1] = 0
    size = KW.one_row_partial_size(d_in, d_out)
    rows = KW.block_rows(d_out)
    assert size == -(-d_in // rows) * d_out
    outs = []
    for min_parallel in (1, 1 << 62):
        out = np.full(d_out, np.nan, dtype)
        KW.one_row_forward(a, W, np.full(size + 3, np.nan, dtype), out, min_parallel)
        outs.append(out)
    out = np.full(d_out, np.nan, dtype)
    _user_one_row_forward(a, W, np.empty(size, dtype), out)
    outs.append(out)
    want = np.zeros(d_out, dtype)
    for lo in range(0, d_in, rows):
        block = np.zeros(d_out, dtype)
        for k in range(lo, min(d_in, lo + rows)):
            if a[k] != 0:
                block += a[k] * W[k]
        want += block
    for out in outs:
        np.testing.assert_array_equal(out, want)
    close = tol(dtype)  # the sums' rounding grows with their length
    np.testing.assert_allclose(want, R.matmul(a[None], W, skip_zeros=True)[0],
                               rtol=close["rtol"], atol=close["atol"] * d_in)
    a[-1] = np.nan
    out = np.empty(d_out, dtype)
    KW.one_row_forward(a, W, np.empty(size, dtype), out, 1)
    assert np.isnan(out).all()


def test_sparse_blocks_strided_arrays_take_the_loops(rng):
    """Arrays that are not C-contiguous compile to the plain loops (the intrinsics address
    flat memory): same results on a transposed W and a column-sliced x."""
    x = rng.random((3, 40))
    x[x < 0.5] = 0
    W = np.asfortranarray(rng.standard_normal((20, 30)))
    g = rng.standard_normal((3, 30))
    out, out_c = np.empty((3, 30)), np.empty((3, 30))
    Wc = np.ascontiguousarray(W)
    xs, xc = x[:, ::2], np.ascontiguousarray(x[:, ::2])
    idx, idx_c = (np.empty((3, 20 + KP.LANES), np.int32) for _ in range(2))
    _sparse_calls(xs, W, g, out, idx, -0.1)
    _sparse_calls(xc, Wc, g, out_c, idx_c, -0.1)
    np.testing.assert_array_equal(out, out_c)
    np.testing.assert_array_equal(W, Wc)


# -- finite differences for every backward ------------------------------------------------

def _fd(f, x, h=1e-6):
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + h
        a = f()
        x[i] = old - h
        b = f()
        x[i] = old
        g[i] = (a - b) / (2 * h)
    return g


def test_backwards_match_finite_differences(rng):
    x = rng.standard_normal((4, 5))
    x[np.abs(x) < 0.05] = 0.3  # stay away from the ReLU kink
    W = rng.standard_normal((5, 3))
    b = rng.standard_normal(3)
    up = rng.standard_normal((4, 5))
    up3 = rng.standard_normal((4, 3))
    t = rng.integers(0, 3, 4)

    relu_loss = lambda: float((ops.relu_forward(x) * up).sum())  # noqa: E731
    np.testing.assert_allclose(ops.relu_backward(x, up), _fd(relu_loss, x), atol=1e-8)

    sig_loss = lambda: float((ops.sigmoid_forward(x) * up).sum())  # noqa: E731
    np.testing.assert_allclose(ops.sigmoid_backward(ops.sigmoid_forward(x), up),
                               _fd(sig_loss, x), atol=1e-8)

    aff_loss = lambda: float((ops.affine_forward(x, W, b) * up3).sum())  # noqa: E731
    dx, dW, db = ops.affine_backward(up3, x, W)
    np.testing.assert_allclose(dx, _fd(aff_loss, x), atol=1e-8)
    np.testing.assert_allclose(dW, _fd(aff_loss, W), atol=1e-8)
    np.testing.assert_allclose(db, _fd(aff_loss, b), atol=1e-8)

    logits = x[:, :3].copy()
    ce_loss = lambda: ops.softmax_cross_entropy(logits, t)[0]  # noqa: E731
    np.testing.assert_allclose(ops.softmax_cross_entropy(logits, t)[1], _fd(ce_loss, logits),
                               atol=1e-8)


# -- callable from users' own @njit code --------------------------------------------------

@njit
def _user_mlp_step(x, t, W, b, out, dout, dW, db, lr):
    """A user's own compiled training step for a one-layer softmax classifier."""
    K.affine_forward(x, W, b, out)
    loss = K.softmax_cross_entropy(out, t, dout)
    K.affine_backward(dout, x, W, dW, db)
    K.sgd_update(W, dW, lr)
    K.sgd_update(b, db, lr)
    K.relu_forward(out, out)
    K.sigmoid_forward(out, out)
    return loss


def test_kernels_callable_from_user_njit(rng):
    x = rng.standard_normal((8, 6))
    t = rng.integers(0, 4, 8)
    W = rng.standard_normal((6, 4))
    b = np.zeros(4)
    W0 = W.copy()
    out, dout, dW, db = np.empty((8, 4)), np.empty((8, 4)), np.empty((6, 4)), np.empty(4)
    loss = _user_mlp_step(x, t, W, b, out, dout, dW, db, 0.5)
    want_loss, want_dy = R.softmax_cross_entropy(x @ W0, t)
    assert loss == pytest.approx(want_loss, rel=1e-12)
    np.testing.assert_allclose(W, W0 - 0.5 * x.T @ want_dy, rtol=1e-12)
    np.testing.assert_allclose(b, -0.5 * want_dy.sum(0), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("dtype", DTYPES)
def test_column_sum_adds_rows_in_order(rng, dtype):
    """``db`` is independent of any thread count because column_sum adds the rows one after
    the other (it has no parallel twin): its bits are those of that order, and on this data
    another order (reversed, or NumPy's pairwise sum of a contiguous column) gives others."""
    a = (rng.standard_normal((5000, 10)) * 10.0 ** rng.integers(-4, 5, (5000, 1))).astype(dtype)
    want = np.zeros(10, dtype)
    for row in a:
        want += row
    got = np.empty(10, dtype)
    K.column_sum(a, got)
    np.testing.assert_array_equal(got, want)
    backwards = np.zeros(10, dtype)
    for row in a[::-1]:
        backwards += row
    pairwise = np.ascontiguousarray(a.T).sum(axis=1)
    assert (backwards != want).any() and (pairwise != want).any()  # the test can tell


# -- each twin runs its own machine code, also when loaded from the on-disk cache ---------

def _twin_pairs():
    # every module of fastbp.kernels, so twins added later are covered too
    import importlib
    import pkgutil
    import fastbp.kernels
    for info in pkgutil.iter_modules(fastbp.kernels.__path__):
        mod = importlib.import_module(f"fastbp.kernels.{info.name}")
        for name in sorted(vars(mod)):
            if name.endswith("_serial") and hasattr(mod, name[:-7] + "_parallel"):
                yield (f"{mod.__name__}.{name[:-7]}", getattr(mod, name),
                       getattr(mod, name[:-7] + "_parallel"))


@compiled_only
def test_twins_have_their_own_cache_files():
    """Numba keys cache entries by signature and bytecode, not by jit options: twins built
    from one body used to share entries, so the twin compiled second loaded the other's
    machine code (measured: relu_forward on 1000 elements took 11 us, the parallel
    twin's fork/join, instead of 0.45 us)."""
    pairs = list(_twin_pairs())
    assert len(pairs) >= 10
    paths = [f._cache._cache_file._index_path for _, s, p in pairs for f in (s, p)]
    assert len(set(paths)) == len(paths), paths


BOUNDS_PROBE = textwrap.dedent("""
    import json
    import numpy as np
    from fastbp import kernels as K
    big = np.ones(1 << 17)
    # Compile through the dispatchers first: both twins, the parallel one first.
    K.relu_backward(big, big, big.copy())
    K.sigmoid_forward(big, big.copy())
    K.sgd_update(big.copy(), big, 0.1)
    K.softmax_cross_entropy(np.zeros((1 << 14, 8)), np.zeros(1 << 14, np.intp),
                            np.empty((1 << 14, 8)))
    probes = {
        "relu_backward": lambda: K.relu_backward(np.ones(10), np.ones(5), np.empty(10)),
        "sigmoid_forward": lambda: K.sigmoid_forward(np.ones(10), np.empty(5)),
        "sgd_update": lambda: K.sgd_update(np.ones(10), np.ones(5), 0.1),
        "softmax_cross_entropy": lambda: K.softmax_cross_entropy(
            np.zeros((4, 3)), np.zeros(2, np.intp), np.empty((4, 3))),
        "affine_forward": lambda: K.affine_forward(np.ones((3, 4)), np.ones((2, 5)),
                                                   np.ones(5), np.empty((3, 5))),
    }
    out = {}
    for name, probe in probes.items():
        try:
            probe()
            out[name] = "no error"
        except IndexError:
            out[name] = "IndexError"
    print(json.dumps(out))
""")


@compiled_only
def test_boundscheck_mode_checks_every_serial_kernel(tmp_path):
    """Under NUMBA_BOUNDSCHECK=1 (with its own cache folder, as in CI) a raw kernel given
    too-short buffers raises IndexError, in a cold and in a warm-cache process. Fails when
    a serial twin runs the parallel twin's code (parfor bodies are never bounds-checked,
    numba/numba#9380), as it did before twins got their own cache files."""
    env = dict(os.environ, NUMBA_BOUNDSCHECK="1", NUMBA_CACHE_DIR=str(tmp_path))
    env.pop("NUMBA_DISABLE_JIT", None)
    for run in ("cold", "warm"):
        proc = subprocess.run([sys.executable, "-c", BOUNDS_PROBE], capture_output=True,
                              text=True, env=env, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        got = json.loads(proc.stdout.strip().splitlines()[-1])
        assert got == dict.fromkeys(got, "IndexError") and len(got) == 5, (run, got)
    assert any(tmp_path.rglob("*.nbi"))  # the probe used (and filled) its own cache


@pytest.mark.skipif(not (numba.config.BOUNDSCHECK or numba.config.DISABLE_JIT),
                    reason="out-of-bounds kernel calls are only safe to make under "
                           "NUMBA_BOUNDSCHECK=1 or NUMBA_DISABLE_JIT=1 (the CI steps)")
def test_this_run_really_checks_bounds():
    """In the CI steps, proves that the kernels of this very process check bounds (with
    NUMBA_BOUNDSCHECK=1: compiled with checks, not loaded from a cache compiled without)."""
    for call in (lambda: K.relu_backward(np.ones(10), np.ones(5), np.empty(10)),
                 lambda: K.sgd_update(np.ones(10), np.ones(5), 0.1),
                 lambda: K.softmax_cross_entropy(np.zeros((4, 3)), np.zeros(2, np.intp),
                                                 np.empty((4, 3))),
                 lambda: K.affine_backward(np.ones((3, 6)), np.ones((3, 4)), np.ones((4, 5)),
                                           np.empty((4, 5)), np.empty(6), np.empty((3, 4))),
                 lambda: KN.two_layer_step(np.ones((2, 4)), np.array([0, 1]), np.ones((3, 3)),
                                           np.ones(3), np.ones((3, 2)), np.ones(2), 0.1,
                                           *(np.empty(s) for s in ((2, 3), (2, 2), (2, 2),
                                                                   (2, 3), (3, 3), 3, (3, 2),
                                                                   2, 2)))):
        with pytest.raises(IndexError):
            call()


@compiled_only
def test_gemm_rejects_mixed_or_non_float_dtypes_at_compile_time():
    """The BLAS call passes untyped pointers: a float32/float64 mix read past the end of the
    float32 operand, and an int32 output took the float64 branch and wrote twice its size
    (heap corruption, reproduced through TwoLayerNet.train_step's fast path after
    ``params["W1"].dtype = np.int32``). Now such a call does not compile."""
    from numba.core.errors import TypingError
    with pytest.raises(TypingError, match="gemm needs a, b and c of one dtype"):
        K.affine_forward(np.ones((2, 3), np.float32), np.ones((3, 4)), np.ones(4, np.float32),
                         np.empty((2, 4), np.float32))
    with pytest.raises(TypingError, match="gemm needs a, b and c of one dtype"):
        K.affine_backward(np.ones((2, 4)), np.ones((2, 3)), np.ones((3, 4)),
                          np.empty((3, 4), np.int64), np.empty(4), np.empty((2, 3)))


def _step_args(rng, n=3, d=12, H=5, C=4):
    x = rng.random((n, d))
    x[x < 0.5] = 0
    args = [x, rng.integers(0, C, n), rng.standard_normal((d, H)), np.zeros(H),
            rng.standard_normal((H, C)), np.zeros(C), 0.1]
    args += [np.empty(s) for s in ((n, H), (n, C), (n, C), (n, H), (d, H), H, (H, C), C, n)]
    return args


@pytest.mark.parametrize("position", [0, 1, 2, 3, 4, 5] + list(range(7, 16)))
def test_train_step_labels_rejects_mismatched_shapes(rng, position):
    """Any array of the wrong length along one axis: -1.0 and the parameters untouched."""
    args = _step_args(rng)
    a = args[position]
    args[position] = (a[:-1] if a.ndim == 1 or position in (0, 2, 4) else a[:, :-1]).copy()
    before = [p.copy() for p in args[2:6]]
    assert KN.train_step_labels(*args) == -1.0
    for p, b in zip(args[2:6], before):
        np.testing.assert_array_equal(p, b)
    args = _step_args(rng)  # and the same call with every shape right works
    assert KN.train_step_labels(*args) > 0


@compiled_only
def test_kernels_reject_strided_layouts_at_compile_time(rng):
    """x[a:b, :] inside @njit code is typed 'A' (not known to be contiguous): the fused step
    and the affine kernels refuse it at compile time instead of reading it as contiguous
    memory (BLAS and the intrinsics of kernels/_sparse address flat offsets)."""
    from numba.core.errors import TypingError
    args = _step_args(rng, n=20)

    @njit
    def step_on_rows(x, *rest):
        return KN.two_layer_step(x[0:20, :], *rest)

    with pytest.raises(TypingError, match="need C-contiguous arrays"):
        step_on_rows(*args)

    @njit
    def affine_on_rows(x, W, b, out):
        K.affine_forward(x[0:20, :], W, b, out)

    with pytest.raises(TypingError, match="gemm needs C-contiguous"):
        affine_on_rows(args[0], args[2], args[3], np.empty((20, 5)))

    @njit
    def step_on_row_slice(x, *rest):  # x[a:b] keeps the 'C' layout
        return KN.two_layer_step(x[0:20], *rest)

    assert step_on_row_slice(*args) > 0
