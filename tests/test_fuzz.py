"""Fuzzing that reaches every code path of the kernels and the fused training steps.

tests/test_hardening.py fuzzes the validation (layouts, dtypes, faults) on tiny arrays; this
file fuzzes the arithmetic at sizes on both sides of every threshold in
fastbp/kernels/_compile.py and of the kernels' own block sizes:

* ``SMALL_BATCH`` (listed zero-skipping first layer) and above;
* ``AFFINE_BLAS_MIN_FLOPS`` and, for layers with a side below ``AFFINE_NARROW_SIDE``,
  ``AFFINE_NARROW_BLAS_MIN_FLOPS`` (hand-written loops below, BLAS from it on:
  ``affine.blas_min_flops``);
* ``PARALLEL_MIN_ROWS``, ``PARALLEL_MIN_ELEMENTS`` and ``PARALLEL_MIN_HEAVY_ELEMENTS`` (the
  parallel twins; their values are read at run time, calibrated or not): those cases
  also run with 1 Numba thread and with 2, and must give the same bits;
* several blocks of ``SOFTMAX_BLOCK`` rows and of BatchNorm's ``BLOCK_ROWS`` rows;
* hidden widths that are not a multiple of the vector width (8 or 16 lanes);
* sparse (MNIST-like) and dense inputs, labels and one-hot/probability targets.

Finite inputs are compared with tests/reference.py (float64). Inputs with NaN and +-inf
check the README's claim that they propagate as in IEEE arithmetic, except that the
hand-written loops skip zero inputs (there ``0 * inf`` adds nothing, where BLAS gives NaN):
the reference follows the same rule (:func:`reference.matmul` with ``skip_zeros``), and
every NaN and infinity of the result must be where the reference has it.

Arrays are drawn from a seeded generator (hypothesis draws the seed, sizes and options), so
large cases cost no generation time. ``FASTBP_FUZZ_EXAMPLES`` scales the example counts
(default 40: the whole file runs in well under 90 s on 2 cores with a warm Numba cache).
"""
import contextlib
import inspect
import os
import warnings

import numba
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from fastbp import MultiLayerNet, MultiLayerNetExtend, TwoLayerNet, optimizers
from fastbp import kernels as K
from fastbp.kernels import _compile as KC
from fastbp.kernels import affine as KF
from fastbp.kernels import batchnorm as KB

import reference as R
from conftest import compiled_only
from test_hardening import agree

# Sizes of hundreds of thousands of elements run as Python loops without JIT: too slow.
pytestmark = compiled_only

EXAMPLES = int(os.environ.get("FASTBP_FUZZ_EXAMPLES", "40"))


def fuzz(share):
    """Settings for a test that gets `share` of FASTBP_FUZZ_EXAMPLES examples."""
    return settings(max_examples=max(2, round(EXAMPLES * share)), deadline=None,
                    suppress_health_check=(HealthCheck.too_slow, HealthCheck.data_too_large))


FLOATS = (np.float32, np.float64)
SPECIALS = np.array([np.nan, np.inf, -np.inf])
THREADS = numba.config.NUMBA_NUM_THREADS
PME = KC.PARALLEL_MIN_ELEMENTS
PMH = KC.PARALLEL_MIN_HEAVY_ELEMENTS
PMR = KC.PARALLEL_MIN_ROWS


# -- sizes --------------------------------------------------------------------------------

#: Batch rows on both sides of every row threshold and block size (a twin threshold of
#: NEVER, one Numba thread, has no parallel side to reach).
BATCH_EDGES = sorted({KC.SMALL_BATCH, KC.SMALL_BATCH + 1, KC.SOFTMAX_BLOCK - 1,
                      KC.SOFTMAX_BLOCK, KC.SOFTMAX_BLOCK + 1, 2 * KC.SOFTMAX_BLOCK + 3,
                      KB.BLOCK_ROWS, KB.BLOCK_ROWS + 1}
                     | ({PMR - 1, PMR, PMR + KC.SOFTMAX_BLOCK + 5} if PMR < KC.NEVER else set()))
#: Element counts on both sides of both elementwise thresholds (odd ones: remainder loops).
COUNT_EDGES = sorted({e for t in (PME, PMH) if t < KC.NEVER
                      for e in (t - 1, t, t + 3, 3 * t + 5)})
#: Layer widths just off a multiple of 8 or 16 lanes, and the book's.
WIDTH_EDGES = [7, 9, 15, 17, 31, 33, 50, 63, 65, 100]


def batch_sizes():
    """Batch rows: mostly small, and the edges."""
    return st.one_of(st.integers(1, KC.SMALL_BATCH + 2), st.sampled_from(BATCH_EDGES),
                     st.integers(KC.SMALL_BATCH + 1, 3 * KB.BLOCK_ROWS))


def widths(top=40):
    """Layer widths: small ones, and ones just off a multiple of the vector width."""
    return st.one_of(st.integers(1, top), st.sampled_from(WIDTH_EDGES))


def element_counts():
    return st.one_of(st.integers(0, 300), st.sampled_from(COUNT_EDGES))


# -- data ---------------------------------------------------------------------------------

def generator(data, label="seed"):
    return np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label=label))


def normal(rng, shape, dtype, scale=1.0, sparse=0.0):
    a = rng.standard_normal(shape) * scale
    if sparse:
        a[rng.random(shape) < sparse] = 0  # MNIST-like: most inputs 0 (the loops skip them)
    return a.astype(dtype)


def inject(rng, a, count):
    """`a` with `count` entries (at random places) set to NaN, +inf or -inf."""
    if a.size and count:
        flat = a.reshape(-1)
        flat[rng.integers(0, a.size, count)] = rng.choice(SPECIALS, count)
    return a


def nonfinite(data):
    """A function giving, per input array, how many NaN/inf entries to inject: none in
    two cases of three (finite inputs, compared with the reference to rounding), else
    0, 1 or 3 per array."""
    if not data.draw(st.sampled_from([False, False, True]), label="NaN/inf inputs"):
        return lambda: 0
    return lambda: data.draw(st.sampled_from([0, 1, 3]), label="NaN/inf entries")


def assert_close(got, want, dtype, k=64, scale=None, what="", same_formula=True):
    """`got` agrees with the float64 `want`: NaN where it has NaN, the same infinities, and
    finite values to ``k * eps`` relative to `scale` (default: the largest finite |want| of
    the array, + 1e-3). Where the reference uses another (equivalent) formula than the
    kernel (``same_formula=False``: BatchNorm's backward), a NaN may be an infinity there
    and the other way round: only where the results are not finite must agree."""
    want = np.asarray(want, np.float64)
    if scale is None:
        fin = np.abs(want[np.isfinite(want)])
        scale = fin.max(initial=0.0) + 1e-3
    ok = agree(got, want, dtype, scale=scale, k=k)
    if not same_formula:
        ok = ok | (~np.isfinite(np.asarray(got, np.float64)) & ~np.isfinite(want))
    bad = np.argwhere(~np.asarray(ok))
    got = np.asarray(got, np.float64).reshape(want.shape)
    assert bad.size == 0, (what, [(tuple(i), got[tuple(i)], want[tuple(i)]) for i in bad[:5]])


def side(name, value, threshold):
    """Record which side of `threshold` a case is on (--hypothesis-show-statistics)."""
    event(f"{name} {'>=' if value >= threshold else '<'} {threshold}")


def row_events(n):
    event(f"n {'<=' if n <= KC.SMALL_BATCH else '>'} SMALL_BATCH")
    side("n", n, PMR)
    event(f"softmax blocks: {min(3, -(-n // KC.SOFTMAX_BLOCK))}{'+' if n > 2 * KC.SOFTMAX_BLOCK else ''}")


# -- 1 and N threads ----------------------------------------------------------------------

@contextlib.contextmanager
def numba_threads(n):
    old = numba.get_num_threads()
    numba.set_num_threads(n)
    try:
        yield
    finally:
        numba.set_num_threads(old)


def same_bits_any_threads(run):
    """`run()` (returning arrays or numbers) gives the same bits with 1 Numba thread and
    with 2 (the parallel twins' partition must not change a result)."""
    if THREADS < 2:
        return  # test_two_numba_threads_available says so
    with numba_threads(1):
        one = run()
    with numba_threads(2):
        two = run()
    for a, b in zip(one, two):
        a, b = np.asarray(a), np.asarray(b)
        assert a.dtype == b.dtype and a.shape == b.shape
        assert a.tobytes() == b.tobytes(), "1 and 2 Numba threads differ"


def test_two_numba_threads_available():
    if THREADS < 2:
        pytest.skip(f"NUMBA_NUM_THREADS={THREADS}: the 1-vs-2-thread comparisons need 2")


def test_size_strategies_cross_every_threshold():
    """The size strategies reach both sides of every threshold (change a threshold so that
    a side is missed and this fails)."""
    if KC.MACHINE_THRESHOLDS.origin != "source":  # tests/conftest.py: source unless asked
        pytest.skip(f"twin thresholds from {KC.MACHINE_THRESHOLDS.origin!r}: the fixed "
                    "shapes here are built around the source values")
    rows = set(range(1, KC.SMALL_BATCH + 3)) | set(BATCH_EDGES)
    assert min(rows) <= KC.SMALL_BATCH < max(rows)
    assert min(rows) < PMR <= max(rows)
    assert max(rows) > 2 * KC.SOFTMAX_BLOCK and max(rows) > 2 * KB.BLOCK_ROWS
    assert min(COUNT_EDGES) < min(PME, PMH) and max(PME, PMH) <= max(COUNT_EDGES)
    assert max(rows) * 250 >= PME  # batchnorm's parallel twin (n * D, D up to 250)
    assert any(w % 8 for w in WIDTH_EDGES) and any(w > 16 and w % 16 for w in WIDTH_EDGES)
    # affine: 1 x 1 x 1 is below the BLAS threshold, the largest case above it; the same
    # for layers with a side below AFFINE_NARROW_SIDE, and widths on both sides of that
    assert 1 < KC.AFFINE_BLAS_MIN_FLOPS <= max(rows) * 784 * max(WIDTH_EDGES)
    assert min(WIDTH_EDGES) < KC.AFFINE_NARROW_SIDE <= max(WIDTH_EDGES)
    assert 1 < KC.AFFINE_NARROW_BLAS_MIN_FLOPS <= max(rows) * 70 * min(WIDTH_EDGES)
    # the any-depth step: both sides with the largest and smallest layers
    assert max(rows) * 70 * 70 >= KC.AFFINE_BLAS_MIN_FLOPS
    # convolutions: the big shapes above CONV_PARALLEL_MIN_MACS, a 1 x 1 case below
    for N, C, H, W, FN, FH, FW, stride, pad in CONV_BIG:
        oh, ow = (H + 2 * pad - FH) // stride + 1, (W + 2 * pad - FW) // stride + 1
        assert N * FN * C * FH * FW * oh * ow >= KC.CONV_PARALLEL_MIN_MACS > 1


# -- elementwise kernels ------------------------------------------------------------------

ELEMENTWISE = ("relu_forward", "relu_backward", "sigmoid_forward", "sigmoid_backward",
               "tanh_forward", "tanh_backward", "dropout")
#: The elementwise kernels on PARALLEL_MIN_HEAVY_ELEMENTS (dropout: its mask; its multiply
#: is on PARALLEL_MIN_ELEMENTS).
HEAVY = ("sigmoid_forward", "tanh_forward", "dropout", "adagrad_update", "rmsprop_update",
         "adam_update")


@fuzz(0.5)
@given(st.data())
def test_elementwise_kernels(data):
    op = data.draw(st.sampled_from(ELEMENTWISE), label="op")
    dtype = data.draw(st.sampled_from(FLOATS), label="dtype")
    size = data.draw(element_counts(), label="size")
    rows = data.draw(st.sampled_from([1, 3]) if size % 3 == 0 else st.just(1), label="rows")
    shape = (rows, size // rows)
    side("elements", size, PMH if op in HEAVY else PME)
    rng = generator(data)
    specials = nonfinite(data)
    x = inject(rng, normal(rng, shape, dtype, scale=data.draw(st.sampled_from([1.0, 50.0]))),
               specials())
    g = inject(rng, normal(rng, shape, dtype), specials())
    if op == "dropout":
        ratio = data.draw(st.sampled_from([0.0, 0.3, 0.5, 0.99]), label="ratio")
        # np.uint64: Numba types a Python int as int64, which 2**63 and above overflow
        seed = np.uint64(data.draw(st.integers(0, 2**64 - 1), label="dropout seed"))
        stream = np.uint64(data.draw(st.integers(0, 2**64 - 1), label="stream"))

        def run():
            mask = np.empty(shape, np.uint8)
            K.dropout_mask(ratio, seed, stream, mask)
            out, dx = np.empty_like(x), np.empty_like(g)
            K.dropout_forward(x, mask, out)
            K.dropout_backward(g, mask, dx)
            return mask, out, dx
        mask, out, dx = run()
        want = R.dropout_mask_vectorized(shape, ratio, int(seed), int(stream))
        np.testing.assert_array_equal(mask, want)
        with np.errstate(invalid="ignore"):  # x * mask exactly, NaN * 0 = NaN included
            np.testing.assert_array_equal(out, x * want.astype(dtype))
            np.testing.assert_array_equal(dx, g * want.astype(dtype))
    else:
        fn = getattr(K, op)
        if op == "sigmoid_backward":  # an output of the sigmoid (NaN/inf kept)
            x = np.where(np.isfinite(x), 1 / (1 + np.exp(-np.clip(x, -50, 50))), x).astype(dtype)
        elif op == "tanh_backward":
            x = np.where(np.isfinite(x), np.tanh(x), x).astype(dtype)
        args = (x,) if op.endswith("forward") else (x, g)

        def run():
            out = np.empty_like(x)
            fn(*args, out)
            return (out,)
        (out,) = run()
        with np.errstate(all="ignore"):
            want = getattr(R, op)(*args)
        exact = op.startswith("relu")
        if exact:
            np.testing.assert_array_equal(out, want.astype(dtype))
        else:
            scale = np.abs(want) + 1e-30
            if op == "tanh_backward":  # 1 - y * y cancels near |y| = 1
                with np.errstate(all="ignore"):
                    scale = scale + np.abs(g.astype(np.float64)) * (1 + x.astype(np.float64) ** 2)
            assert_close(out, want, dtype, k=8, scale=scale, what=op)
    if size >= min(PME, PMH):
        same_bits_any_threads(run)


# -- affine -------------------------------------------------------------------------------

@fuzz(0.5)
@given(st.data())
def test_affine_kernels(data):
    """affine_forward / affine_backward / column_sum on both sides of blas_min_flops;
    with NaN/inf, the zero-skipping of the loops below it and IEEE products above it."""
    dtype = data.draw(st.sampled_from(FLOATS), label="dtype")
    n = data.draw(batch_sizes(), label="n")
    d = data.draw(st.one_of(widths(), st.just(784)), label="d")
    m = data.draw(widths(100), label="m")
    need_dx = data.draw(st.booleans(), label="need_dx")
    rng = generator(data)
    specials = nonfinite(data)
    sparse = data.draw(st.sampled_from([0.0, 0.8]), label="sparse")
    x = inject(rng, normal(rng, (n, d), dtype, sparse=sparse), specials())
    W = inject(rng, normal(rng, (d, m), dtype, scale=0.1), specials())
    b = normal(rng, (m,), dtype)
    g = inject(rng, normal(rng, (n, m), dtype), specials())
    skip = n * d * m < KF.blas_min_flops(d, m)
    side("n*d*m", n * d * m, KF.blas_min_flops(d, m))
    event(f"specials: {not all(np.isfinite(a).all() for a in (x, W, g))}")

    out = np.empty((n, m), dtype)
    K.affine_forward(x, W, b, out)
    dW, db = np.empty((d, m), dtype), np.empty(m, dtype)
    dx = np.empty((n, d), dtype) if need_dx else None
    K.affine_backward(g, x, W, dW, db, dx)
    cs = np.empty(m, dtype)
    K.column_sum(g, cs)

    ax, aW, ag = (np.where(np.isfinite(a), np.abs(a), 0.0).astype(np.float64)
                  for a in (x, W, g))
    with np.errstate(all="ignore"):
        assert_close(out, R.matmul(x, W, skip) + b, dtype, scale=ax @ aW + np.abs(b),
                     what="forward")
        assert_close(dW, R.matmul(x.T, g, skip), dtype, scale=ax.T @ ag, what="dW")
        want_db = g.astype(np.float64).sum(axis=0)
        assert_close(db, want_db, dtype, scale=ag.sum(axis=0), what="db")
        np.testing.assert_array_equal(cs, db)  # db is column_sum's
        if need_dx:
            assert_close(dx, R.matmul(g, W.T), dtype, scale=ag @ aW.T, what="dx")


# -- softmax-cross-entropy ----------------------------------------------------------------

@fuzz(0.4)
@given(st.data())
def test_softmax_cross_entropy_kernels(data):
    dtype = data.draw(st.sampled_from(FLOATS), label="dtype")
    if data.draw(st.sampled_from([False, False, True]), label="parallel size"):
        n, c = data.draw(st.sampled_from([(PMR + 9, 130), (PMH // 10 + 1, 10), (300, 257)]),
                         label="n, c")
    else:
        n = data.draw(batch_sizes(), label="n")
        c = data.draw(st.one_of(st.integers(1, 12), st.sampled_from([100, 130])), label="c")
    rng = generator(data)
    specials = nonfinite(data)
    x = inject(rng, normal(rng, (n, c), dtype, scale=data.draw(st.sampled_from([1.0, 30.0]))),
               specials())
    if data.draw(st.booleans(), label="one-hot"):
        t = rng.random((n, c))
        t = (t / t.sum(axis=1, keepdims=True)).astype(dtype)
        if data.draw(st.booleans(), label="exact one-hot"):
            t = np.eye(c, dtype=dtype)[rng.integers(0, c, n)]
    else:
        t = rng.integers(0, c, n).astype(data.draw(st.sampled_from([np.intp, np.int32])))
    rows = data.draw(st.booleans(), label="rows form")
    side("n*c", x.size, PMH)
    row_events(n)

    def run():
        dx, row_loss = np.empty_like(x), np.empty(n)
        if rows:
            loss = K.softmax_cross_entropy_rows(x, t, dx, row_loss)
            return dx, row_loss, np.float64(loss)
        return dx, np.float64(K.softmax_cross_entropy(x, t, dx))
    got = run()
    with np.errstate(all="ignore"):
        want_loss, want_dx = R.softmax_cross_entropy(x, t)
    k = 16 * (1.0 + np.abs(x[np.isfinite(x)]).max(initial=0.0))  # softmax's condition
    assert_close(got[0], want_dx, dtype, k=k, scale=1.0 / n, what="dx")
    assert_close(got[-1], want_loss, np.float64 if dtype == np.float64 else dtype, k=k,
                 scale=1.0 + np.abs(np.asarray(t, float)).sum() / n, what="loss")
    if x.size >= PMH:
        same_bits_any_threads(run)


# -- optimizers ---------------------------------------------------------------------------

OPTIMIZERS = ("sgd_update", "sgd_decay_update", "momentum_update", "nesterov_update",
              "adagrad_update", "rmsprop_update", "adam_update")


@fuzz(0.4)
@given(st.data())
def test_optimizer_kernels(data):
    name = data.draw(st.sampled_from(OPTIMIZERS), label="optimizer")
    dtype = data.draw(st.sampled_from(FLOATS), label="dtype")
    size = data.draw(element_counts(), label="size")
    rng = generator(data)
    specials = nonfinite(data)
    p = normal(rng, size, dtype)
    grad = inject(rng, normal(rng, size, dtype), specials())
    s1 = normal(rng, size, dtype, scale=0.1)
    s2 = np.abs(normal(rng, size, dtype, scale=0.1))
    if name in ("adagrad_update", "rmsprop_update"):
        s1 = np.abs(s1)
    lr = data.draw(st.sampled_from([1e-3, 0.1, 0.5]), label="lr")
    decay = 0.0 if name == "sgd_update" else data.draw(st.sampled_from([0.0, 0.01]))
    c1 = data.draw(st.sampled_from([0.9, 0.5]), label="c1")
    c2 = 0.999
    via_dispatch = data.draw(st.booleans(), label="optimizer_update") and name != "sgd_update"
    kind = OPTIMIZERS.index(name) - 1  # the codes of kernels.optimizers, SGD = 0
    threshold = PMH if name in HEAVY else PME
    side("elements", size, threshold)

    def run():
        q, a, b = p.copy(), s1.copy(), s2.copy()
        if via_dispatch:
            K.optimizer_update(kind, q, grad, a, b, lr, c1, c2, decay)
        elif name == "sgd_update":
            K.sgd_update(q, grad, lr)
        elif name == "sgd_decay_update":
            K.sgd_decay_update(q, grad, lr, decay)
        elif name in ("momentum_update", "nesterov_update"):
            getattr(K, name)(q, grad, a, lr, c1, decay)
        elif name == "adagrad_update":
            K.adagrad_update(q, grad, a, lr, decay)
        elif name == "rmsprop_update":
            K.rmsprop_update(q, grad, a, lr, c1, decay)
        else:
            K.adam_update(q, grad, a, b, lr, c1, c2, decay)
        return q, a, b
    got = run()
    with np.errstate(all="ignore"):
        if name in ("sgd_update", "sgd_decay_update"):
            want = (R.sgd_decay_update(p, grad, lr, decay), s1, s2)
        elif name in ("momentum_update", "nesterov_update"):
            want = getattr(R, name)(p, grad, s1, lr, c1, decay) + (s2,)
        elif name == "adagrad_update":
            want = R.adagrad_update(p, grad, s1, lr, decay) + (s2,)
        elif name == "rmsprop_update":
            want = R.rmsprop_update(p, grad, s1, lr, c1, decay) + (s2,)
        else:
            want = R.adam_update(p, grad, s1, s2, lr, c1, c2, decay)
        for what, a, w, start in zip(("param", "state1", "state2"), got, want, (p, s1, s2)):
            scale = (np.abs(np.nan_to_num(w, posinf=0, neginf=0)) + np.abs(start)
                     + lr * np.abs(np.nan_to_num(grad, posinf=0, neginf=0)) + 1e-30)
            assert_close(a, w, dtype, k=16, scale=scale, what=what)
    if size >= threshold:
        same_bits_any_threads(run)


# -- batch normalization ------------------------------------------------------------------

@fuzz(0.3)
@given(st.data())
def test_batchnorm_kernels(data):
    dtype = data.draw(st.sampled_from(FLOATS), label="dtype")
    if data.draw(st.sampled_from([False, False, True]), label="parallel size"):
        n, D = data.draw(st.sampled_from([(300, 250), (PMR + 9, 130), (2 * KB.BLOCK_ROWS + 3,
                                                                        257)]), label="n, D")
    else:
        n = data.draw(st.one_of(st.integers(1, 5), st.sampled_from(
            [KB.BLOCK_ROWS - 1, KB.BLOCK_ROWS, KB.BLOCK_ROWS + 1, 2 * KB.BLOCK_ROWS + 3])),
            label="n")
        D = data.draw(widths(), label="D")
    rng = generator(data)
    specials = nonfinite(data)
    offset = data.draw(st.sampled_from([0.0, 3.0]), label="offset")
    x = inject(rng, normal(rng, (n, D), dtype) + dtype(offset), specials())
    gamma, beta = normal(rng, D, dtype) + dtype(1), normal(rng, D, dtype)
    rm, rv = normal(rng, D, dtype), np.abs(normal(rng, D, dtype)) + dtype(0.5)
    dout = inject(rng, normal(rng, (n, D), dtype), specials())
    momentum = data.draw(st.sampled_from([0.9, 0.5]), label="momentum")
    with_work = data.draw(st.booleans(), label="work")
    event(f"BatchNorm blocks: {min(3, -(-n // KB.BLOCK_ROWS))}")
    side("n*D", n * D, PME)

    def run():
        m, v = rm.copy(), rv.copy()
        xc, xn, out = (np.empty_like(x) for _ in range(3))
        std = np.empty(D, dtype)
        K.batchnorm_forward_train(x, gamma, beta, momentum, m, v, xc, xn, std, out)
        ev = np.empty_like(x)
        K.batchnorm_forward_eval(x, gamma, beta, m, v, ev)
        dgamma, dbeta, dx = np.empty(D, dtype), np.empty(D, dtype), np.empty_like(x)
        work = np.empty((K.batchnorm_work_rows(n), D), dtype) if with_work else None
        K.batchnorm_backward(dout, xc, xn, std, gamma, dgamma, dbeta, dx, work)
        return out, m, v, ev, dx, dgamma, dbeta
    out, m, v, ev, dx, dgamma, dbeta = run()
    with np.errstate(all="ignore"):
        want, want_m, want_v = R.batchnorm_forward(x, gamma, beta, rm, rv, momentum)
        want_ev = R.batchnorm_forward(x, gamma, beta, m, v, train=False)[0]
        want_dx, want_dgamma, want_dbeta = R.batchnorm_backward(x, gamma, dout)
        x64 = x.astype(np.float64)
        fin = np.where(np.isfinite(x64), np.abs(x64), 0.0)
        with warnings.catch_warnings():  # (a column of NaN/inf only: nanvar warns)
            warnings.simplefilter("ignore", RuntimeWarning)
            std = np.sqrt(np.nanvar(np.where(np.isfinite(x64), x64, np.nan), axis=0)
                          + R.BN_EPS)
        cond = 1.0 + fin.max(axis=0, initial=0.0) / std  # x - mu cancels to std
        g = np.where(np.isfinite(dout), np.abs(dout), 0.0).astype(np.float64)
        gsum = g.sum(axis=0)
        k = 64 * (1 + np.sqrt(n))
    assert_close(out, want, dtype, k=k, scale=np.abs(gamma) * cond + np.abs(beta), what="out")
    assert_close(m, want_m, dtype, k=k, scale=fin.max(axis=0, initial=0.0) + np.abs(rm),
                 what="running_mean")
    assert_close(v, want_v, dtype, k=k, scale=(std * cond) ** 2 + np.abs(rv), what="running_var")
    assert_close(ev, want_ev, dtype, k=k, what="eval")
    assert_close(dbeta, want_dbeta, dtype, k=k, scale=gsum, what="dbeta")
    assert_close(dgamma, want_dgamma, dtype, k=k, scale=gsum * cond, what="dgamma")
    assert_close(dx, want_dx, dtype, k=k * 4,
                 scale=np.abs(gamma) / std * (g.max(axis=0, initial=0.0) + gsum / n) * cond,
                 what="dx", same_formula=False)
    if n * D >= PME:
        same_bits_any_threads(run)


# -- TwoLayerNet --------------------------------------------------------------------------

def targets(data, rng, n, C, dtype):
    """Integer labels (np.intp: the fast path) or one-hot/probability rows."""
    kind = data.draw(st.sampled_from(["labels", "labels", "one-hot", "probabilities"]),
                     label="targets")
    labels = rng.integers(0, C, n)
    if kind == "labels":
        return labels.astype(np.intp)
    if kind == "one-hot":
        return np.eye(C, dtype=dtype)[labels]
    t = rng.random((n, C))
    return (t / t.sum(axis=1, keepdims=True)).astype(dtype)


def two_layer_skips(n, lr):
    """The products of the fused two-layer step that skip zero activations: all four up to
    SMALL_BATCH rows (hand-written loops), none above (BLAS), except that without an update
    (lr = 0: fused_gradient) dW2 = h.T @ dy is always the loop (kernels/affine.py
    matmul_loops on h.T), whatever its size."""
    if n <= KC.SMALL_BATCH:
        return True
    return () if lr > 0 else ("h.T @ dy",)


@fuzz(0.6)
@given(st.data())
def test_two_layer_net(data):
    """TwoLayerNet.train_step (fused SGD) and fused_gradient against the reference, at
    batch sizes on both sides of SMALL_BATCH (listed inputs) and PARALLEL_MIN_ROWS, with
    several softmax blocks; 1 and 2 Numba threads give the same bits."""
    dtype = data.draw(st.sampled_from(FLOATS), label="dtype")
    n = data.draw(batch_sizes(), label="n")
    d = data.draw(st.one_of(widths(), st.just(784)), label="d")
    H = data.draw(widths(70), label="H")
    C = data.draw(st.integers(2, 12), label="C")
    std = data.draw(st.sampled_from([0.01, 0.3, 1.0]), label="weight_init_std")
    seed = data.draw(st.integers(0, 2**32 - 1), label="net seed")
    rng = generator(data)
    specials = nonfinite(data)
    x = inject(rng, normal(rng, (n, d), dtype, sparse=data.draw(st.sampled_from([0.0, 0.8]))),
               specials())
    t = targets(data, rng, n, C, dtype)
    lr = data.draw(st.sampled_from([0.0, 0.01, 0.5]), label="lr (0: fused_gradient)")
    row_events(n)
    event(f"H % 8 {'!= 0' if H % 8 else '== 0'}")
    event(f"specials: {not np.isfinite(x).all()}")

    def run():
        net = TwoLayerNet(d, H, C, weight_init_std=std, dtype=dtype, seed=seed)
        if lr == 0:
            grads = net.fused_gradient(x, t)
            return [grads[k] for k in KEYS]
        loss = net.train_step(x, t, lr)
        return [net.params[k] for k in KEYS] + [np.float64(loss)]
    start = TwoLayerNet(d, H, C, weight_init_std=std, dtype=dtype, seed=seed).params
    got = run()
    with np.errstate(all="ignore"):
        want_loss, want = R.two_layer(x, t, *(start[k] for k in KEYS),
                                      skip_zeros=two_layer_skips(n, lr))
    k = 1024 * (1 + np.abs(x[np.isfinite(x)]).max(initial=0.0) * std)
    for i, key in enumerate(KEYS):
        if lr == 0:
            assert_close(got[i], want[key], dtype, k=k, what=key)
        else:
            gscale = np.abs(want[key][np.isfinite(want[key])]).max(initial=0.0) + 1e-3
            with np.errstate(all="ignore"):
                new = start[key].astype(np.float64) - lr * want[key]
            assert_close(got[i], new, dtype, k=k,
                         scale=np.abs(start[key]) + lr * gscale, what=key)
    if lr:
        assert_close(got[-1], want_loss, dtype, k=k, scale=1.0 + abs(want_loss)
                     if np.isfinite(want_loss) else 1.0, what="loss")
    if n >= PMR or data.draw(st.booleans(), label="compare threads"):
        same_bits_any_threads(run)


KEYS = ("W1", "b1", "W2", "b2")


# -- MultiLayerNet / MultiLayerNetExtend --------------------------------------------------

#: fused_only networks (tanh, identity, the logistic output), where they exist.
FUSED_ONLY = "fused_only" in inspect.signature(MultiLayerNet).parameters
OPTIMIZER_CLASSES = (optimizers.SGD, optimizers.Momentum, optimizers.Nesterov,
                     optimizers.AdaGrad, optimizers.RMSprop, optimizers.Adam)
NORMALIZING = (optimizers.AdaGrad, optimizers.RMSprop, optimizers.Adam)


def fused_skip(l, n, d_in, d_out):
    """Which products of the any-depth step skip zero activations: the listed first layer
    (n <= SMALL_BATCH) and every product below blas_min_flops of its layer."""
    return (l == 0 and n <= KC.SMALL_BATCH) or n * d_in * d_out < KF.blas_min_flops(d_in, d_out)


def multilayer_reference(net, x, t):
    """The reference's loss, gradients and running statistics for `net`'s next fused step
    (its Dropout masks: stream ``step * (L + 1) + l`` of ``dropout_seed``)."""
    L = net.hidden_layer_num
    p = net.params
    Ws = [p[f"W{i}"] for i in range(1, L + 2)]
    bs = [p[f"b{i}"] for i in range(1, L + 2)]
    bn = None
    if net.use_batchnorm:
        bn = [(p[f"gamma{i}"], p[f"beta{i}"], net.layers[f"BatchNorm{i}"].running_mean,
               net.layers[f"BatchNorm{i}"].running_var) for i in range(1, L + 1)]
    masks = None
    if net.use_dropout:
        masks = [R.dropout_mask_vectorized((x.shape[0], net.hidden_size_list[l]),
                                           net.dropout_ratio, net.dropout_seed,
                                           net.dropout_step * (L + 1) + l) for l in range(L)]
    return R.multilayer(x, t, Ws, bs, net.activation, bn, masks,
                        float(net.weight_decay_lambda), fused_skip,
                        output=getattr(net, "output", "softmax"))


def reference_update(opt, params, grads, state, step):
    """float64 (params, state) after `opt`'s update number `step` (1, 2, ...) from `state`
    (the optimizer's arrays before the update, keyed like `params`)."""
    lr = opt.lr
    new, new_state = {}, {}
    for key, p in params.items():
        g = grads[key]
        s = state.get(key)
        if isinstance(opt, optimizers.Nesterov):
            new[key], v = R.nesterov_update(p, g, s[0], lr, opt.momentum)
            new_state[key] = (v,)
        elif isinstance(opt, optimizers.Momentum):
            new[key], v = R.momentum_update(p, g, s[0], lr, opt.momentum)
            new_state[key] = (v,)
        elif isinstance(opt, optimizers.AdaGrad):
            new[key], h = R.adagrad_update(p, g, s[0], lr)
            new_state[key] = (h,)
        elif isinstance(opt, optimizers.RMSprop):
            new[key], h = R.rmsprop_update(p, g, s[0], lr, opt.decay_rate)
            new_state[key] = (h,)
        elif isinstance(opt, optimizers.Adam):
            lr_t = R.adam_lr(lr, opt.beta1, opt.beta2, step)
            new[key], m, v = R.adam_update(p, g, s[0], s[1], lr_t, opt.beta1, opt.beta2)
            new_state[key] = (m, v)
        else:
            new[key] = R.sgd_decay_update(p, g, lr)
            new_state[key] = ()
    return new, new_state


def optimizer_state(opt, params):
    """The optimizer's state arrays per parameter key, as float64 copies (zeros before the
    first update)."""
    names = type(opt)._state
    out = {}
    for key, p in params.items():
        out[key] = tuple(np.zeros(p.shape) if getattr(opt, a) is None
                         else getattr(opt, a)[key].astype(np.float64) for a in names)
    return out


def grad_scale(want, scales, key):
    """What a gradient's rounding is relative to: the size of its terms (`scales`) and,
    as errors propagate across the layers, a little of the array's largest entry."""
    fin = np.abs(want[key][np.isfinite(want[key])])
    return scales[key] + 1e-3 * (fin.max(initial=0.0) + 1e-3)


def assert_update(opt, got, start, new, grads, grad_tol, dtype, k, key):
    """`got` is the update of `start` to `new` (the reference), to the error the gradient's
    own rounding (`grad_tol`, elementwise) allows. AdaGrad, RMSprop and Adam divide by the
    gradient's size: an element whose gradient is within its rounding of 0 may move by up
    to the largest step of the array."""
    got = np.asarray(got, np.float64)
    step = np.abs(new - start)
    g = np.abs(grads)
    if isinstance(opt, NORMALIZING):
        # the largest step each can take: AdaGrad lr, RMSprop lr / sqrt(1 - decay_rate),
        # Adam about lr (its first step exactly; 3 lr is generous)
        top = opt.lr * (1.0 if isinstance(opt, optimizers.AdaGrad) else 3.0 if isinstance(
            opt, optimizers.Adam) else 1.0 / np.sqrt(1.0 - opt.decay_rate))
        with np.errstate(all="ignore"):
            slack = np.where(g > 8 * grad_tol, step * 4 * grad_tol / g, 2 * top)
    else:
        slack = opt.lr * (3.0 if isinstance(opt, optimizers.Momentum) else 1.0) * grad_tol
    ok = agree(got, new, dtype, scale=np.abs(start) + step, k=k)
    with np.errstate(invalid="ignore"):
        ok |= np.abs(got - new) <= slack
    bad = np.argwhere(~ok)
    assert bad.size == 0, (key, type(opt).__name__, [(got[tuple(i)], new[tuple(i)])
                                                    for i in bad[:5]])


@fuzz(0.6)
@given(st.data())
def test_multilayer_nets(data):
    """MultiLayerNet(Extend): fused_gradient and two train_step calls with each optimizer,
    BatchNorm, Dropout, weight decay, ReLU or sigmoid, at batch sizes on both sides of every
    row threshold and layer widths off the vector width; against the reference, and the
    same bits with 1 and 2 Numba threads."""
    dtype = data.draw(st.sampled_from(FLOATS), label="dtype")
    n = data.draw(batch_sizes(), label="n")
    d = data.draw(st.one_of(widths(), st.just(784)), label="d")
    hidden = data.draw(st.lists(widths(70), min_size=1, max_size=3), label="hidden")
    C = data.draw(st.integers(2, 12), label="C")
    # fused_only networks (fastbp.sklearn's): tanh and identity, the logistic output
    fused_only = FUSED_ONLY and data.draw(st.sampled_from([False, False, True]),
                                          label="fused_only")
    bn = not fused_only and data.draw(st.booleans(), label="batchnorm")
    dropout = not fused_only and data.draw(st.booleans(), label="dropout")
    act = data.draw(st.sampled_from((["tanh", "identity"] if fused_only else [])
                                    + ["relu", "sigmoid"]), label="activation")
    output = data.draw(st.sampled_from(["softmax", "logistic"]) if fused_only
                       else st.just("softmax"), label="output")
    ratio = data.draw(st.sampled_from([0.2, 0.5]), label="ratio")
    decay = data.draw(st.sampled_from([0.0, 0.0, 0.1]), label="decay")
    Opt = data.draw(st.sampled_from(OPTIMIZER_CLASSES), label="optimizer")
    lr = data.draw(st.sampled_from([1e-3, 0.05]), label="lr")
    seed = data.draw(st.integers(0, 2**31 - 1), label="net seed")
    rng = generator(data)
    specials = nonfinite(data)
    # Not sparse with BatchNorm: rows of zeros make columns constant over the batch, whose
    # normalization divides rounding noise by sqrt(EPS_BN) (ill-conditioned, in the book too)
    sparse = 0.0 if bn else data.draw(st.sampled_from([0.0, 0.8]), label="sparse")
    x = inject(rng, normal(rng, (n, d), dtype, sparse=sparse), specials())
    t = targets(data, rng, n, C, dtype)
    if output == "logistic":  # (n, C) targets in [0, 1], one independent output each
        t = (rng.random((n, C)) < 0.5).astype(dtype) if data.draw(
            st.booleans(), label="binary targets") else rng.random((n, C)).astype(dtype)
    row_events(n)
    event(f"activation {act}, output {output}")
    sizes = [d] + hidden + [C]
    event(f"BLAS products: {any(n * a * b >= KF.blas_min_flops(a, b) for a, b in zip(sizes, sizes[1:]))}")
    event(f"optimizer {Opt.__name__}, batchnorm {bn}, dropout {dropout}")
    event(f"specials: {not np.isfinite(x).all()}")

    def make():
        if bn or dropout:
            return MultiLayerNetExtend(d, hidden, C, act, weight_decay_lambda=decay,
                                       use_dropout=dropout, dropout_ration=ratio,
                                       use_batchnorm=bn, dtype=dtype, seed=seed)
        extra = dict(fused_only=True, output=output) if fused_only else {}
        return MultiLayerNet(d, hidden, C, act, weight_decay_lambda=decay, dtype=dtype,
                             seed=seed, **extra)

    def run():
        net, opt = make(), Opt(lr=lr)
        grads = net.fused_gradient(x, t)
        losses = [net.train_step(x, t, opt) for _ in range(2)]
        return [grads[k] for k in sorted(grads)] + [net.params[k] for k in sorted(net.params)
                                                   ] + [np.float64(v) for v in losses]

    net, opt = make(), Opt(lr=lr)
    k = 2048.0 * (1 + np.abs(x[np.isfinite(x)]).max(initial=0.0))
    # 1. fused_gradient (BatchNorm's running statistics and Dropout's stream advance)
    want_loss, want, stats, scales = multilayer_reference(net, x, t)
    # A column (nearly) constant over the batch is normalized by a std near sqrt(EPS_BN):
    # its rounding noise becomes O(1) (and may flip a ReLU), in the book's code as well.
    # Such cases are ill-conditioned, not wrong: drawn again.
    assume(scales.pop("bn_condition", 1.0) * np.finfo(dtype).eps < 1e-4)
    grads = net.fused_gradient(x, t)
    assert sorted(grads) == sorted(want)
    for key in want:
        assert_close(grads[key], want[key], dtype, k=k, scale=grad_scale(want, scales, key),
                     what=key, same_formula=not bn)
    for i, (m, v) in enumerate(stats, 1):
        layer = net.layers[f"BatchNorm{i}"]
        assert_close(layer.running_mean, m, dtype, k=k, what=f"running_mean{i}")
        assert_close(layer.running_var, v, dtype, k=k, what=f"running_var{i}")
    # 2. two optimizer steps, each against the reference update of the same start
    for step in (1, 2):
        start = {key: p.astype(np.float64) for key, p in net.params.items()}
        state = optimizer_state(opt, net.params)
        want_loss, want, _, scales = multilayer_reference(net, x, t)
        if scales.get("bn_condition", 1.0) * np.finfo(dtype).eps >= 1e-4:
            break  # the first step made it ill-conditioned (see above)
        loss = net.train_step(x, t, opt)
        with np.errstate(all="ignore"):
            new, _ = reference_update(opt, start, want, state, step)
            assert_close(np.float64(loss), want_loss, dtype, k=k,
                         scale=1.0 + abs(want_loss) if np.isfinite(want_loss) else 1.0,
                         what="loss")
            for key in want:
                tol = k * np.finfo(dtype).eps * (np.abs(np.nan_to_num(want[key]))
                                                 + grad_scale(want, scales, key))
                assert_update(opt, net.params[key], start[key], new[key], want[key], tol,
                              dtype, k, key)
        if not np.isfinite(loss):
            break  # NaN everywhere from here on: the reference's state would need it too
    if n >= PMR or data.draw(st.booleans(), label="compare threads"):
        same_bits_any_threads(run)


# -- convolution and pooling --------------------------------------------------------------

CONV_OPS = ("conv2d", "maxpool", "conv_relu_pool")


def _dense_crp_dW(dconv, x, FH, FW):
    """dW of conv_relu_pool_backward's dense path (stride 1, no padding), float64: each
    filter's gradient plane, at the image's full width (zeros right of the output), dotted
    with the image shifted by each tap over ``OH * W - (FW - 1)`` elements. Every zero of the
    plane meets an image value, so 0 * inf and 0 * NaN give NaN, as the book's im2col
    product does (the window-by-window path skips zero gradients instead)."""
    N, FN, OH, OW = dconv.shape
    _, C, H, Wd = x.shape
    plane = np.zeros((N, FN, OH, Wd))
    plane[..., :OW] = dconv
    count = OH * Wd - (FW - 1)
    plane = plane.reshape(N, FN, OH * Wd)[:, :, :count]
    image = np.asarray(x, np.float64).reshape(N, C * H * Wd)
    dW = np.empty((FN, C, FH, FW))
    for c, ky, kx in np.ndindex(C, FH, FW):
        o = (c * H + ky) * Wd + kx
        dW[:, c, ky, kx] = np.einsum("nfp,np->f", plane, image[:, o:o + count])
    return dW
#: (N, C, H, W, FN, FH, FW, stride, pad) above CONV_PARALLEL_MIN_MACS (the small cases
#: drawn in test_conv_kernels stay below it)
CONV_BIG = [(8, 3, 18, 18, 8, 3, 3, 1, 1), (4, 2, 28, 28, 6, 5, 5, 1, 0),
            (16, 3, 33, 31, 8, 3, 3, 2, 1)]
CRP_BACKWARD_WORK = "work" in inspect.signature(K.conv_relu_pool_backward.py_func).parameters


def finite_abs(a):
    a = np.asarray(a, np.float64)
    return np.where(np.isfinite(a), np.abs(a), 0.0)


@fuzz(0.4)
@given(st.data())
def test_conv_kernels(data):
    """conv2d, maxpool and the fused conv-ReLU-pool, forward and backward, serial and (from
    CONV_PARALLEL_MIN_MACS multiply-adds) parallel, any stride and padding."""
    from fastbp.kernels import conv as KV
    op = data.draw(st.sampled_from(CONV_OPS), label="op")
    dtype = data.draw(st.sampled_from(FLOATS), label="dtype")
    if data.draw(st.sampled_from([False, False, True]), label="parallel size"):
        N, C, H, Wd, FN, FH, FW, stride, pad = data.draw(st.sampled_from(CONV_BIG),
                                                         label="shape")
    else:
        N, C, FN = (data.draw(st.integers(1, k), label=s) for k, s in
                    ((3, "N"), (3, "C"), (4, "FN")))
        H, Wd = (data.draw(st.integers(1, 9), label=s) for s in ("H", "W"))
        pad = data.draw(st.integers(0, 2), label="pad")
        FH = data.draw(st.integers(1, H + 2 * pad), label="FH")
        FW = data.draw(st.integers(1, Wd + 2 * pad), label="FW")
        stride = data.draw(st.integers(1, 3), label="stride")
    OH = (H + 2 * pad - FH) // stride + 1
    OW = (Wd + 2 * pad - FW) // stride + 1
    rng = generator(data)
    specials = nonfinite(data)
    x = inject(rng, normal(rng, (N, C, H, Wd), dtype), specials())
    W = inject(rng, normal(rng, (FN, C, FH, FW), dtype, scale=0.3), specials())
    b = normal(rng, FN, dtype)
    side("MACs", N * W.size * OH * OW, KC.CONV_PARALLEL_MIN_MACS)
    event(f"op {op}, stride {stride}, pad {pad}")
    with np.errstate(all="ignore"):
        scale_out = R.conv2d_forward(finite_abs(x), finite_abs(W), np.abs(b), stride, pad)

    if op == "conv2d":
        dout = inject(rng, normal(rng, (N, FN, OH, OW), dtype), specials())
        need_dx = data.draw(st.booleans(), label="need_dx")

        def run():
            out, dW, db = (np.empty((N, FN, OH, OW), dtype), np.empty_like(W),
                           np.empty(FN, dtype))
            dx = np.empty_like(x) if need_dx else None
            K.conv2d_forward(x, W, b, stride, pad, out)
            K.conv2d_backward(dout, x, W, stride, pad, dW, db, dx)
            return (out, dW, db) + ((dx,) if need_dx else ())
        got = run()
        with np.errstate(all="ignore"):
            want_dx, want_dW, want_db = R.conv2d_backward(dout, x, W, stride, pad)
            s_dx, s_dW, s_db = R.conv2d_backward(finite_abs(dout), finite_abs(x),
                                                 finite_abs(W), stride, pad)
            assert_close(got[0], R.conv2d_forward(x, W, b, stride, pad), dtype,
                         scale=scale_out, what="out")
        assert_close(got[1], want_dW, dtype, scale=s_dW, what="dW")
        assert_close(got[2], want_db, dtype, scale=s_db, what="db")
        if need_dx:
            assert_close(got[3], want_dx, dtype, scale=s_dx, what="dx")
        macs = N * W.size * OH * OW
    elif op == "maxpool":
        ph, pw = data.draw(st.integers(1, H + 2 * pad), label="pool_h"), data.draw(
            st.integers(1, Wd + 2 * pad), label="pool_w")
        PH = (H + 2 * pad - ph) // stride + 1
        PW = (Wd + 2 * pad - pw) // stride + 1
        dout = inject(rng, normal(rng, (N, C, PH, PW), dtype), specials())

        def run():
            out, arg, dx = (np.empty((N, C, PH, PW), dtype), np.empty((N, C, PH, PW), np.int32),
                            np.empty_like(x))
            K.maxpool_forward(x, ph, pw, stride, pad, out, arg)
            K.maxpool_backward(dout, arg, pw, stride, pad, dx)
            return out, arg, dx
        got = run()
        want, arg = R.maxpool_forward(x, ph, pw, stride, pad)
        np.testing.assert_array_equal(got[0], want.astype(dtype))
        np.testing.assert_array_equal(got[1], arg)
        with np.errstate(all="ignore"):
            want_dx = R.maxpool_backward(dout, arg, x.shape, pw, stride, pad)
            s_dx = R.maxpool_backward(finite_abs(dout), arg, x.shape, pw, stride, pad)
        assert_close(got[2], want_dx, dtype, scale=s_dx, what="dx")
        macs = max(N * C * PH * PW * ph * pw, x.size)
    else:
        ph = data.draw(st.integers(1, OH), label="pool_h")
        pw = data.draw(st.integers(1, OW), label="pool_w")
        ps = data.draw(st.integers(1, 3), label="pool_stride")
        PH, PW = (OH - ph) // ps + 1, (OW - pw) // ps + 1
        dout = inject(rng, normal(rng, (N, FN, PH, PW), dtype), specials())

        def run():
            scratch = np.empty((N, KV.crp_scratch_size(C, H, Wd, FH, FW, stride, pad)), dtype)
            out, arg = np.empty((N, FN, PH, PW), dtype), np.empty((N, FN, PH, PW), np.int32)
            dW, db = np.empty_like(W), np.empty(FN, dtype)
            K.conv_relu_pool_forward(x, W, b, stride, pad, ph, pw, ps, scratch, out, arg)
            extra = ()
            if CRP_BACKWARD_WORK:  # (a work space argument, added during issue 15)
                extra = (np.empty((FN, KV.crp_backward_work_size(H, Wd, FH, stride, pad)),
                                  dtype),)
            K.conv_relu_pool_backward(dout, x, out, arg, stride, pad, pw, ps, dW, db, *extra)
            return out, arg, dW, db
        got = run()
        with np.errstate(all="ignore"):
            # stride 1: the fused kernel convolves a zero-padded copy of the image, so the
            # padding's 0 * inf is NaN as in the book (conv2d_forward skips the padding)
            conv = R.conv2d_forward(x, W, b, stride, pad, padding_terms=stride == 1)
            act = R.relu_forward(conv)
            want, arg = R.maxpool_forward(act, ph, pw, ps, 0)
            dact = R.maxpool_backward(dout, arg, act.shape, pw, ps, 0)
            dconv = R.relu_backward(act, dact)
            _, want_dW, want_db = R.conv2d_backward(dconv, x, W, stride, pad,
                                                    skip_zero_dout=True)
            if stride == 1 and pad == 0:  # the dense path: 0 * inf is NaN, as in the book
                want_dW = _dense_crp_dW(dconv, x, FH, FW)
            _, s_dW, s_db = R.conv2d_backward(finite_abs(dconv), finite_abs(x),
                                              finite_abs(W), stride, pad)
            # The index matters only where the window passes a gradient (maximum > 0; the
            # kernel keeps the index of the maximum before the ReLU). Where two values of
            # such a window are within rounding, either may be its maximum.
            ties = (got[1] != arg) & ~(want <= 0)
        s_out = R.maxpool_forward(scale_out, ph, pw, ps, 0)[0]
        assert_close(got[0], want, dtype, scale=s_out, what="out")
        for n_, f_, py, px in np.argwhere(ties):  # a tie: the kernel's pick is a maximum too
            wy, wx = divmod(int(got[1][n_, f_, py, px]), pw)
            pick = act[n_, f_, py * ps + wy, px * ps + wx]
            assert abs(pick - want[n_, f_, py, px]) <= 64 * np.finfo(dtype).eps * s_out[
                n_, f_, py, px], ("argmax", pick, want[n_, f_, py, px])
        event(f"conv-relu-pool window ties: {ties.any()}")
        if not ties.any():  # (else the two gradients differ where the tie went)
            # the kernel adds g * x window by window, the reference (g1 + g2) * x where
            # windows share a maximum: with inf, NaN and inf may trade places
            assert_close(got[2], want_dW, dtype, scale=s_dW, what="dW", same_formula=False)
            assert_close(got[3], want_db, dtype, scale=s_db, what="db")
        macs = N * W.size * OH * OW
    if macs >= KC.CONV_PARALLEL_MIN_MACS:
        same_bits_any_threads(run)


# -- SimpleConvNet ------------------------------------------------------------------------

@fuzz(0.3)
@given(st.data())
def test_simple_convnet(data):
    """SimpleConvNet.fused_gradient and a train_step (each optimizer) against the reference,
    finite inputs, batches of 1 (hand-written products) and more, convolutions on both
    sides of CONV_PARALLEL_MIN_MACS; 1 and 2 Numba threads give the same bits."""
    from fastbp.convnet import SimpleConvNet
    dtype = data.draw(st.sampled_from(FLOATS), label="dtype")
    n = data.draw(st.one_of(st.integers(1, 4), st.sampled_from([KC.SMALL_BATCH + 1, 100])),
                  label="n")
    C = data.draw(st.integers(1, 3), label="C")
    FS = data.draw(st.integers(1, 5), label="filter_size")
    stride = data.draw(st.integers(1, 2), label="stride")
    pad = data.draw(st.integers(0, 2), label="pad")
    # an input whose convolution output has an even side (the 2x2 pooling)
    OH, OW = (2 * data.draw(st.integers(1, 6), label=s) for s in ("OH/2", "OW/2"))
    H, Wd = ((o - 1) * stride + FS - 2 * pad for o in (OH, OW))
    assume(H >= 1 and Wd >= 1)
    FN = data.draw(st.integers(1, 8), label="filter_num")
    hidden = data.draw(widths(40), label="hidden")
    out = data.draw(st.integers(2, 10), label="output")
    seed = data.draw(st.integers(0, 2**31 - 1), label="net seed")
    Opt = data.draw(st.sampled_from(OPTIMIZER_CLASSES), label="optimizer")
    rng = generator(data)
    x = normal(rng, (n, C, H, Wd), dtype, sparse=data.draw(st.sampled_from([0.0, 0.7])))
    t = targets(data, rng, n, out, dtype)
    side("conv MACs", n * FN * C * FS * FS * OH * OW, KC.CONV_PARALLEL_MIN_MACS)
    event(f"n {'<=' if n <= KC.CONVNET_LOOP_MAX_ROWS else '>'} CONVNET_LOOP_MAX_ROWS")

    def make():
        return SimpleConvNet((C, H, Wd), dict(filter_num=FN, filter_size=FS, pad=pad,
                                              stride=stride), hidden, out, 0.3, dtype=dtype,
                             seed=seed)

    def run():
        net, opt = make(), Opt(lr=0.01)
        grads = net.fused_gradient(x, t)
        loss = net.train_step(x, t, opt)
        return [grads[k] for k in sorted(grads)] + [net.params[k] for k in sorted(
            net.params)] + [np.float64(loss)]

    net, opt = make(), Opt(lr=0.01)
    start = {k: v.astype(np.float64) for k, v in net.params.items()}
    with np.errstate(all="ignore"):
        want_loss, want = R.simple_convnet(x, t, *(start[k] for k in
                                                   ("W1", "b1", "W2", "b2", "W3", "b3")),
                                           stride, pad)
    k = 4096.0
    grads = net.fused_gradient(x, t)
    for key in want:
        assert_close(grads[key], want[key], dtype, k=k, what=key)
    loss = net.train_step(x, t, opt)
    assert_close(np.float64(loss), want_loss, dtype, k=k, scale=1.0 + abs(want_loss),
                 what="loss")
    new, _ = reference_update(opt, start, want, optimizer_state(Opt(lr=0.01), net.params), 1)
    for key in want:
        fin = np.abs(want[key])
        tol = k * np.finfo(dtype).eps * (fin + fin.max(initial=0.0) + 1e-3)
        assert_update(opt, net.params[key], start[key], new[key], want[key], tol, dtype, k,
                      key)
    if n * FN * C * FS * FS * OH * OW >= KC.CONV_PARALLEL_MIN_MACS or data.draw(
            st.booleans(), label="compare threads"):
        same_bits_any_threads(run)


@pytest.mark.parametrize("pad", [0, 1])
def test_conv_relu_pool_nan_windows_pass_their_gradient(pad):
    """Found by test_conv_kernels: a window whose pooled output is NaN passes its gradient,
    as ReLU's backward does (``dx = 0`` only where ``x <= 0``, the book's mask, false for
    NaN), on every path of conv_relu_pool_backward (pad 0 at stride 1 is the dense one)."""
    from fastbp.kernels import conv as KV
    rng = np.random.default_rng(0)
    N, C, H, Wd, FN, F = 2, 1, 6, 6, 2, 3
    x = rng.standard_normal((N, C, H, Wd))
    W = rng.standard_normal((FN, C, F, F))
    W[1, 0, 1, 1] = np.nan  # every output of filter 1 is NaN
    OH = H + 2 * pad - F + 1
    scratch = np.empty((N, KV.crp_scratch_size(C, H, Wd, F, F, 1, pad)))
    out, arg = np.empty((N, FN, OH, OH)), np.empty((N, FN, OH, OH), np.int32)
    K.conv_relu_pool_forward(x, W, np.zeros(FN), 1, pad, 1, 1, 1, scratch, out, arg)
    assert np.isnan(out[:, 1]).all()
    dW, db = np.empty_like(W), np.empty(FN)
    extra = (np.empty((FN, KV.crp_backward_work_size(H, Wd, F, 1, pad))),) \
        if CRP_BACKWARD_WORK else ()
    K.conv_relu_pool_backward(np.ones_like(out), x, out, arg, 1, pad, 1, 1, dW, db, *extra)
    assert db[1] == out[:, 1].size  # every window passed its gradient of 1
