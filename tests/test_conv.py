"""Convolution and max-pooling kernels, their validated twins and the book's layers
(issue 17): against plain NumPy references, finite differences, the book's code, twins,
user @njit code, and every rejected input."""
import numba
import numpy as np
import pytest
from numba import njit

from conftest import DTYPES, compiled_only, tol
from book import book
from fastbp import ops
from fastbp.kernels import NEVER, conv as KC
from fastbp.layers import BatchNormalization, Convolution, Pooling, Relu


# -- plain NumPy references (float64, obvious loops over the output) ----------------------

def ref_conv(x, W, b, stride, pad):
    x, W, b = (np.asarray(a, np.float64) for a in (x, W, b))
    N, C, H, Wd = x.shape
    FN, _, FH, FW = W.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    OH = (H + 2 * pad - FH) // stride + 1
    OW = (Wd + 2 * pad - FW) // stride + 1
    out = np.empty((N, FN, OH, OW))
    for oy in range(OH):
        for ox in range(OW):
            patch = xp[:, :, oy * stride:oy * stride + FH, ox * stride:ox * stride + FW]
            out[:, :, oy, ox] = np.tensordot(patch, W, axes=([1, 2, 3], [1, 2, 3])) + b
    return out


def ref_conv_backward(dout, x, W, stride, pad):
    dout, x, W = (np.asarray(a, np.float64) for a in (dout, x, W))
    FN, C, FH, FW = W.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    dxp = np.zeros_like(xp)
    dW = np.zeros_like(W)
    for oy in range(dout.shape[2]):
        for ox in range(dout.shape[3]):
            ys, xs = slice(oy * stride, oy * stride + FH), slice(ox * stride, ox * stride + FW)
            g = dout[:, :, oy, ox]  # (N, FN)
            dW += np.tensordot(g, xp[:, :, ys, xs], axes=([0], [0]))
            dxp[:, :, ys, xs] += np.tensordot(g, W, axes=([1], [0]))
    H, Wd = x.shape[2:]
    return dxp[:, :, pad:pad + H, pad:pad + Wd], dW, dout.sum(axis=(0, 2, 3))


def ref_pool(x, ph, pw, stride, pad):
    x = np.asarray(x, np.float64)
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    N, C, H, Wd = x.shape
    OH = (H + 2 * pad - ph) // stride + 1
    OW = (Wd + 2 * pad - pw) // stride + 1
    out = np.empty((N, C, OH, OW))
    arg = np.empty((N, C, OH, OW), np.int64)
    for oy in range(OH):
        for ox in range(OW):
            win = xp[:, :, oy * stride:oy * stride + ph, ox * stride:ox * stride + pw]
            flat = win.reshape(N, C, -1)
            arg[:, :, oy, ox] = flat.argmax(axis=2)
            out[:, :, oy, ox] = flat.max(axis=2)
    return out, arg


def ref_pool_backward(dout, arg, x_shape, ph, pw, stride, pad):
    N, C, H, Wd = x_shape
    dxp = np.zeros((N, C, H + 2 * pad, Wd + 2 * pad))
    for n in range(N):
        for c in range(C):
            for oy in range(dout.shape[2]):
                for ox in range(dout.shape[3]):
                    k = arg[n, c, oy, ox]
                    dxp[n, c, oy * stride + k // pw, ox * stride + k % pw] += dout[n, c, oy, ox]
    return dxp[:, :, pad:pad + H, pad:pad + Wd]


#: (N, C, H, W, FN, FH, FW, stride, pad): the book's first layer, non-square, strides,
#: padding, several channels, a filter as large as the padded input.
GEOMETRIES = [
    (3, 1, 28, 28, 6, 5, 5, 1, 0),
    (2, 3, 9, 8, 4, 3, 2, 1, 0),
    (2, 2, 11, 9, 5, 3, 3, 2, 1),
    (2, 2, 7, 7, 3, 3, 3, 2, 2),
    (1, 1, 5, 6, 2, 5, 6, 1, 0),
    (2, 2, 6, 6, 3, 2, 4, 1, 2),
    (2, 1, 4, 4, 2, 3, 3, 3, 1),
]


def _conv_data(rng, geom, dtype):
    N, C, H, Wd, FN, FH, FW, s, p = geom
    x = rng.standard_normal((N, C, H, Wd)).astype(dtype)
    W = rng.standard_normal((FN, C, FH, FW)).astype(dtype)
    b = rng.standard_normal(FN).astype(dtype)
    return x, W, b, s, p


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("geom", GEOMETRIES)
def test_conv_forward_backward_match_reference(rng, geom, dtype):
    x, W, b, s, p = _conv_data(rng, geom, dtype)
    out = ops.conv2d_forward(x, W, b, s, p)
    assert out.dtype == dtype
    np.testing.assert_allclose(out, ref_conv(x, W, b, s, p), **tol(dtype))
    dout = rng.standard_normal(out.shape).astype(dtype)
    dx, dW, db = ops.conv2d_backward(dout, x, W, s, p)
    rdx, rdW, rdb = ref_conv_backward(dout, x, W, s, p)
    t = dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else tol(dtype)
    np.testing.assert_allclose(dx, rdx, **t)
    np.testing.assert_allclose(dW, rdW, **t)
    np.testing.assert_allclose(db, rdb, **t)
    nodx = ops.conv2d_backward(dout, x, W, s, p, need_dx=False)
    assert nodx.dx is None
    np.testing.assert_array_equal(nodx.dW, dW)


def test_conv_backward_finite_differences(rng):
    x, W, b, s, p = _conv_data(rng, (2, 2, 7, 6, 3, 3, 2, 2, 1), np.float64)
    out = ops.conv2d_forward(x, W, b, s, p)
    G = rng.standard_normal(out.shape)  # loss = sum(G * conv(x))
    dx, dW, db = ops.conv2d_backward(G, x, W, s, p)
    h = 1e-6
    for arr, grad in ((x, dx), (W, dW), (b, db)):
        for idx in [tuple(rng.integers(0, d) for d in arr.shape) for _ in range(6)]:
            old = arr[idx]
            arr[idx] = old + h
            up = np.sum(G * ops.conv2d_forward(x, W, b, s, p))
            arr[idx] = old - h
            down = np.sum(G * ops.conv2d_forward(x, W, b, s, p))
            arr[idx] = old
            assert abs((up - down) / (2 * h) - grad[idx]) < 1e-6


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("window", [(2, 2, 2, 0), (3, 2, 1, 0), (2, 3, 2, 1), (3, 3, 3, 1)])
def test_maxpool_matches_reference(rng, window, dtype):
    ph, pw, s, p = window
    x = rng.standard_normal((2, 3, ph - 2 * p + 3 * s, pw - 2 * p + 4 * s)).astype(dtype)
    out, arg = ops.maxpool_forward(x, ph, pw, s, p)
    rout, rarg = ref_pool(x, ph, pw, s, p)
    np.testing.assert_array_equal(out, rout.astype(dtype))
    np.testing.assert_array_equal(arg, rarg)
    dout = rng.standard_normal(out.shape).astype(dtype)
    dx = ops.maxpool_backward(dout, arg, x.shape, ph, pw, s, p)
    np.testing.assert_allclose(dx, ref_pool_backward(dout, rarg, x.shape, ph, pw, s, p),
                               **tol(dtype))


def test_maxpool_ties_and_nan_follow_numpy():
    x = np.zeros((1, 1, 2, 4))
    x[0, 0] = [[1, 5, 7, 7], [5, 2, np.nan, 7]]
    out, arg = ops.maxpool_forward(x, 2, 2, 2, 0)
    assert out[0, 0, 0, 0] == 5 and arg[0, 0, 0, 0] == 1  # the first of the tied 5s
    assert np.isnan(out[0, 0, 0, 1]) and arg[0, 0, 0, 1] == 2  # NaN wins, as np.max
    W = np.ones((1, 1, 1, 1))
    pooled, parg = np.empty((1, 1, 1, 2)), np.empty((1, 1, 1, 2), np.int32)
    KC.conv_relu_pool_forward(x, W, np.zeros(1), 1, 0, 2, 2, 2,
                              np.empty((1, KC.crp_scratch_size(1, 2, 4, 1, 1, 1, 0))),
                              pooled, parg)
    assert pooled[0, 0, 0, 0] == 5 and parg[0, 0, 0, 0] == 1
    assert np.isnan(pooled[0, 0, 0, 1])


def _crp_reference(x, W, b, s, p, pool, pstride):
    conv = ops.conv2d_forward(x, W, b, s, p)
    relu = np.maximum(conv, 0)
    out, arg = ops.maxpool_forward(relu, pool, pool, pstride, 0)
    return conv, out, arg


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("geom,pool,pstride", [
    ((3, 1, 28, 28, 6, 5, 5, 1, 0), 2, 2),
    ((2, 2, 10, 10, 3, 3, 3, 1, 1), 2, 2),
    ((2, 2, 13, 13, 3, 3, 3, 2, 1), 3, 2),
    ((2, 3, 8, 8, 4, 3, 3, 1, 2), 3, 1),
])
def test_conv_relu_pool_matches_composition(rng, geom, pool, pstride, dtype):
    x, W, b, s, p = _conv_data(rng, geom, dtype)
    N, C, H, Wd = x.shape
    conv, rout, rarg = _crp_reference(x, W, b, s, p, pool, pstride)
    out = np.empty_like(rout)
    arg = np.empty(rout.shape, np.int32)
    scratch = np.empty((N, KC.crp_scratch_size(C, H, Wd, W.shape[2], W.shape[3], s, p)), dtype)
    KC.conv_relu_pool_forward(x, W, b, s, p, pool, pool, pstride, scratch, out, arg)
    np.testing.assert_allclose(out, rout, **tol(dtype))
    positive = rout > 0
    np.testing.assert_array_equal(arg[positive], rarg[positive])
    # backward: pooling, ReLU and convolution gradients composed from the layer kernels
    dout = rng.standard_normal(out.shape).astype(dtype)
    dW, db = np.empty_like(W), np.empty_like(b)
    work = np.empty((W.shape[0], KC.crp_backward_work_size(H, Wd, W.shape[2], s, p)), dtype)
    KC.conv_relu_pool_backward(dout, x, out, arg, s, p, pool, pstride, dW, db, work)
    drelu = ops.maxpool_backward(dout, rarg, conv.shape, pool, pool, pstride, 0)
    _, rdW, rdb = ops.conv2d_backward(drelu * (conv > 0), x, W, s, p, need_dx=False)
    t = dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else tol(dtype)
    np.testing.assert_allclose(dW, rdW, **t)
    np.testing.assert_allclose(db, rdb, **t)


def test_serial_and_parallel_twins_give_the_same_bits(rng):
    x, W, b, s, p = _conv_data(rng, (9, 2, 12, 12, 5, 3, 3, 1, 1), np.float32)
    outs = [np.empty((9, 5, 12, 12), np.float32) for _ in range(2)]
    KC._conv_forward_serial(x, W, b, s, p, outs[0])
    KC._conv_forward_parallel(x, W, b, s, p, outs[1])
    np.testing.assert_array_equal(outs[0], outs[1])
    dout = rng.standard_normal(outs[0].shape).astype(np.float32)
    grads = [(np.empty_like(W), np.empty_like(b), np.empty_like(x)) for _ in range(2)]
    KC._conv_dw_serial(dout, x, s, p, grads[0][0], grads[0][1])
    KC._conv_dw_parallel(dout, x, s, p, grads[1][0], grads[1][1])
    KC._conv_dx_serial(dout, W, s, p, grads[0][2])
    KC._conv_dx_parallel(dout, W, s, p, grads[1][2])
    for a, c in zip(*grads):
        np.testing.assert_array_equal(a, c)
    scratch = np.empty((9, KC.crp_scratch_size(2, 12, 12, 3, 3, 1, 1)), np.float32)
    res = [(np.empty((9, 5, 6, 6), np.float32), np.empty((9, 5, 6, 6), np.int32))
           for _ in range(2)]
    KC._crp_forward_serial(x, W, b, 1, 1, 2, 2, 2, scratch, *res[0])
    KC._crp_forward_parallel(x, W, b, 1, 1, 2, 2, 2, scratch, *res[1])
    np.testing.assert_array_equal(res[0][0], res[1][0])
    np.testing.assert_array_equal(res[0][1], res[1][1])
    g = rng.standard_normal(res[0][0].shape).astype(np.float32)
    bw = [(np.empty_like(W), np.empty_like(b)) for _ in range(2)]
    KC._crp_backward_serial(g, x, res[0][0], res[0][1], 1, 1, 2, 2, *bw[0])
    KC._crp_backward_parallel(g, x, res[0][0], res[0][1], 1, 1, 2, 2, *bw[1])
    np.testing.assert_array_equal(bw[0][0], bw[1][0])
    np.testing.assert_array_equal(bw[0][1], bw[1][1])
    # the dense backward (stride 1, no padding; vectorized dot products)
    scratch0 = np.empty((9, KC.crp_scratch_size(2, 12, 12, 3, 3, 1, 0)), np.float32)
    r0 = (np.empty((9, 5, 5, 5), np.float32), np.empty((9, 5, 5, 5), np.int32))
    KC._crp_forward_serial(x, W, b, 1, 0, 2, 2, 2, scratch0, *r0)
    g0 = rng.standard_normal(r0[0].shape).astype(np.float32)
    work = np.empty((5, KC.crp_backward_work_size(12, 12, 3, 1, 0)), np.float32)
    dense = [(np.empty_like(W), np.empty_like(b)) for _ in range(2)]
    KC._crp_dense_serial(g0, x, r0[0], r0[1], 2, 2, *dense[0], work)
    KC._crp_dense_parallel(g0, x, r0[0], r0[1], 2, 2, *dense[1], work)
    np.testing.assert_array_equal(dense[0][0], dense[1][0])
    np.testing.assert_array_equal(dense[0][1], dense[1][1])
    pooled = [(np.empty((9, 2, 6, 6), np.float32), np.empty((9, 2, 6, 6), np.int32))
              for _ in range(2)]
    KC._pool_forward_serial(x, 2, 2, 2, 0, *pooled[0])
    KC._pool_forward_parallel(x, 2, 2, 2, 0, *pooled[1])
    np.testing.assert_array_equal(pooled[0][0], pooled[1][0])


@compiled_only
def test_kernels_callable_from_user_njit(rng):
    @njit
    def block(x, W, b, out, arg, scratch, dout, dW, db):
        KC.conv_relu_pool_forward(x, W, b, 1, 0, 2, 2, 2, scratch, out, arg)
        work = np.empty((W.shape[0], KC.crp_backward_work_size(6, 6, 3, 1, 0)))
        KC.conv_relu_pool_backward(dout, x, out, arg, 1, 0, 2, 2, dW, db, work)
        conv = np.empty((x.shape[0], W.shape[0], 4, 4))
        KC.conv2d_forward(x, W, b, 1, 0, conv)
        pooled = np.empty((x.shape[0], W.shape[0], 2, 2))
        parg = np.empty((x.shape[0], W.shape[0], 2, 2), np.int32)
        KC.maxpool_forward(conv, 2, 2, 2, 0, pooled, parg)
        return pooled

    x, W, b, _, _ = _conv_data(rng, (2, 1, 6, 6, 3, 3, 3, 1, 0), np.float64)
    out, arg = np.empty((2, 3, 2, 2)), np.empty((2, 3, 2, 2), np.int32)
    dW, db = np.empty_like(W), np.empty_like(b)
    pooled = block(x, W, b, out, arg, np.empty((2, KC.crp_scratch_size(1, 6, 6, 3, 3, 1, 0))),
                   np.ones_like(out), dW, db)
    np.testing.assert_allclose(out, np.maximum(pooled, 0), rtol=1e-12, atol=1e-12)


@compiled_only
@pytest.mark.parametrize("pad", [0, 1])
def test_min_parallel_picks_the_twin_from_user_njit_code(rng, pad):
    """Every public conv/pool kernel takes ``min_parallel`` (keyword, from a user's @njit
    function): 1 runs the parallel twin even for this small batch, NEVER the serial one;
    both give the same bits as the default. (``None``, serial with the parallel twin left
    out of the compiled code, is the optimizers' convention too and tested in
    test_optimizers.py; here it would compile every kernel once more.)"""
    @njit
    def run(x, W, b, pad, min_parallel):
        N, FN = x.shape[0], W.shape[0]
        side = x.shape[2] + 2 * pad - W.shape[2] + 1
        conv = np.empty((N, FN, side, side), x.dtype)
        KC.conv2d_forward(x, W, b, 1, pad, conv, min_parallel=min_parallel)
        dW, db, dx = np.empty_like(W), np.empty_like(b), np.empty_like(x)
        KC.conv2d_backward(conv, x, W, 1, pad, dW, db, dx, min_parallel=min_parallel)
        half = side // 2
        pooled = np.empty((N, FN, half, half), x.dtype)
        arg = np.empty((N, FN, half, half), np.int32)
        KC.maxpool_forward(conv, 2, 2, 2, 0, pooled, arg, min_parallel=min_parallel)
        dconv = np.empty_like(conv)
        KC.maxpool_backward(pooled, arg, 2, 2, 0, dconv, min_parallel=min_parallel)
        scratch = np.empty((N, KC.crp_scratch_size(x.shape[1], x.shape[2], x.shape[3],
                                                   W.shape[2], W.shape[3], 1, pad)), x.dtype)
        crp, crp_arg = np.empty_like(pooled), np.empty_like(arg)
        KC.conv_relu_pool_forward(x, W, b, 1, pad, 2, 2, 2, scratch, crp, crp_arg,
                                  min_parallel=min_parallel)
        work = np.empty((FN, KC.crp_backward_work_size(x.shape[2], x.shape[3], W.shape[2], 1,
                                                       pad)), x.dtype)
        cdW, cdb = np.empty_like(W), np.empty_like(b)
        KC.conv_relu_pool_backward(crp, x, crp, crp_arg, 1, pad, 2, 2, cdW, cdb, work,
                                   min_parallel=min_parallel)
        return conv, dW, db, dx, pooled, arg, dconv, crp, crp_arg, cdW, cdb

    x, W, b, _, _ = _conv_data(rng, (3, 2, 10, 10, 4, 3, 3, 1, pad), np.float32)
    want = run(x, W, b, pad, -1)  # MACHINE_DEFAULT: the machine's threshold
    for min_parallel in (1, NEVER):
        for got, ref in zip(run(x, W, b, pad, min_parallel), want):
            np.testing.assert_array_equal(got, ref)


# -- the book's layers -------------------------------------------------------------------

@pytest.mark.parametrize("stride,pad", [(1, 0), (2, 1), (1, 2)])
def test_layers_match_the_books(rng, stride, pad):
    layers = book("common.layers")
    x = rng.standard_normal((3, 2, 9, 9))
    W = rng.standard_normal((4, 2, 3, 3))
    b = rng.standard_normal(4)
    ours, theirs = Convolution(W, b, stride, pad), layers.Convolution(W, b, stride, pad)
    out = ours.forward(x)
    np.testing.assert_allclose(out, theirs.forward(x), rtol=1e-12, atol=1e-12)
    dout = rng.standard_normal(out.shape)
    np.testing.assert_allclose(ours.backward(dout), theirs.backward(dout), rtol=1e-12,
                               atol=1e-12)
    np.testing.assert_allclose(ours.dW, theirs.dW, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ours.db, theirs.db, rtol=1e-12, atol=1e-12)
    # the book's Pooling computes its output size without pad: compare unpadded windows
    p, q = Pooling(2, 2, 2), layers.Pooling(2, 2, 2)
    h = out[:, :, :out.shape[2] // 2 * 2, :out.shape[3] // 2 * 2].copy()
    np.testing.assert_array_equal(p.forward(h), q.forward(h))
    g = rng.standard_normal(p.forward(h).shape)
    np.testing.assert_array_equal(p.backward(g), q.backward(g))


def test_layers_cast_and_keep_state_on_error(rng):
    W = rng.standard_normal((2, 1, 3, 3)).astype(np.float32)
    conv = Convolution(W, np.zeros(2, np.float32))
    out = conv.forward(rng.standard_normal((1, 1, 5, 5)))  # float64 input, float32 layer
    assert out.dtype == np.float32
    x_before = conv.x
    with pytest.raises(ValueError, match="x must be 4-D"):
        conv.forward(np.zeros((5, 5)))
    assert conv.x is x_before
    with pytest.raises(RuntimeError, match="before forward"):
        Convolution(W, np.zeros(2, np.float32)).backward(out)
    with pytest.raises(RuntimeError, match="before forward"):
        Pooling(2, 2).backward(out)


def test_batchnorm_after_convolution(rng):
    """BatchNormalization of 4-D input (per feature of x.reshape(N, -1), as the book)
    after a convolution: forward and backward against finite differences."""
    x = rng.standard_normal((4, 1, 6, 6))
    W = rng.standard_normal((2, 1, 3, 3))
    b = rng.standard_normal(2)
    D = 2 * 4 * 4
    gamma, beta = rng.standard_normal(D) + 1, rng.standard_normal(D)
    conv, bn, relu = Convolution(W, b), BatchNormalization(gamma, beta), Relu()
    G = rng.standard_normal((4, 2, 4, 4))

    def loss():
        return np.sum(G * relu.forward(bn.forward(conv.forward(x), train_flg=True)))

    loss()
    conv.backward(bn.backward(relu.backward(G)))
    assert bn.dgamma.shape == (D,)
    h = 1e-6
    for idx in [(0, 0, 1, 1), (1, 0, 2, 0), (1, 0, 0, 2)]:
        old = W[idx]
        W[idx] = old + h
        up = loss()
        W[idx] = old - h
        down = loss()
        W[idx] = old
        assert abs((up - down) / (2 * h) - conv.dW[idx]) < 1e-5


# -- bad input ---------------------------------------------------------------------------

def _ok():
    return np.zeros((2, 1, 6, 6)), np.zeros((3, 1, 3, 3)), np.zeros(3)


@pytest.mark.parametrize("change,match", [
    (dict(x=np.zeros((6, 6))), "x must be 4-D"),
    (dict(x=np.zeros((0, 1, 6, 6))), "x is an empty batch"),
    (dict(W=np.zeros((3, 2, 3, 3))), "W has 2 input channels"),
    (dict(W=np.zeros((3, 1, 7, 3))), "filter height"),
    (dict(W=np.zeros((3, 1, 3, 9))), "filter width"),
    (dict(W=np.zeros((3, 3, 3))), "W must be 4-D"),
    (dict(b=np.zeros(2)), "b must have 3 elements"),
    (dict(stride=0), "stride must be an integer >= 1"),
    (dict(stride=-1), "stride must be an integer >= 1"),
    (dict(stride=1.5), "stride must be an integer"),
    (dict(pad=-1), "pad must be an integer >= 0"),
    (dict(pad=0.5), "pad must be an integer"),
    (dict(stride=2), "not a whole number"),
])
def test_conv_rejects_bad_input(change, match):
    x, W, b = _ok()
    args = dict(x=x, W=W, b=b, stride=1, pad=0)
    args.update(change)
    with pytest.raises(ValueError, match=match):
        ops.conv2d_forward(**args)
    layer = Convolution(args["W"], args["b"], args["stride"], args["pad"])
    with pytest.raises(ValueError, match=match):
        layer.forward(args["x"])
    assert layer.x is None


def test_conv_rejects_wrong_dtypes_and_gradients():
    x, W, b = _ok()
    with pytest.raises(TypeError, match="W is float32"):
        ops.conv2d_forward(x, W.astype(np.float32), b)
    with pytest.raises(TypeError, match="x must be float32 or float64"):
        ops.conv2d_forward(x.astype(np.int64), W, b)
    with pytest.raises(ValueError, match="dout must have the shape"):
        ops.conv2d_backward(np.zeros((2, 3, 3, 3)), x, W)
    assert ops.conv2d_forward(x, W, b, stride=1.0).shape == (2, 3, 4, 4)  # integral float


@pytest.mark.parametrize("args,match", [
    ((np.zeros((2, 1, 6, 6)), 7, 2, 1, 0), "pool_h"),
    ((np.zeros((2, 1, 6, 6)), 2, 8, 1, 0), "pool_w"),
    ((np.zeros((2, 1, 6, 6)), 3, 3, 2, 0), "not a whole number"),
    ((np.zeros((2, 1, 6, 6)), 2, 2, 0, 0), "stride must be an integer >= 1"),
    ((np.zeros((2, 1, 6, 6)), 2, 2, 2, -1), "pad must be an integer >= 0"),
    ((np.zeros((2, 1, 6, 6)), 2.5, 2, 2, 0), "pool_h must be an integer"),
    ((np.zeros((1, 6, 6)), 2, 2, 2, 0), "x must be 4-D"),
])
def test_pool_rejects_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        ops.maxpool_forward(*args)
    layer = Pooling(*args[1:])
    with pytest.raises(ValueError, match=match):
        layer.forward(args[0])
    assert layer.arg_max is None


def test_pool_backward_rejects_bad_indices():
    out, arg = ops.maxpool_forward(np.zeros((1, 1, 4, 4)), 2, 2, 2, 0)
    with pytest.raises(ValueError, match=r"argmax must be in \[0, 4\)"):
        ops.maxpool_backward(out, arg + 4, (1, 1, 4, 4), 2, 2, 2, 0)
    with pytest.raises(TypeError, match="argmax must hold integers"):
        ops.maxpool_backward(out, arg.astype(np.float64), (1, 1, 4, 4), 2, 2, 2, 0)
    with pytest.raises(ValueError, match="dout must have the shape"):
        ops.maxpool_backward(out, arg, (1, 1, 6, 6), 2, 2, 2, 0)


@compiled_only
def test_numba_threads_do_not_change_bits(rng):
    x, W, b, s, p = _conv_data(rng, (8, 1, 28, 28, 30, 5, 5, 1, 0), np.float32)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = ops.conv2d_backward(np.ones((8, 30, 24, 24), np.float32), x, W)
        numba.set_num_threads(before)
        many = ops.conv2d_backward(np.ones((8, 30, 24, 24), np.float32), x, W)
    finally:
        numba.set_num_threads(before)
    for a, c in zip(one, many):
        np.testing.assert_array_equal(a, c)
