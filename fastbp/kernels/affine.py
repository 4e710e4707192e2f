"""Batched affine layer ``Y = X W + b`` and its backward pass.

Two code paths, picked by the amount of work (n * d * m multiply-adds, against
:func:`blas_min_flops` of the layer's shape):

* tiny products (``< AFFINE_BLAS_MIN_FLOPS``, e.g. one or two MNIST rows against 784x50;
  for a layer with a side below ``AFFINE_NARROW_SIDE``, such as 10 outputs, up to about four
  rows): hand-written serial loops. The forward skips zero inputs (MNIST pixels are about 80 %
  zeros) and adds the bias in the same pass that accumulates each output row.
* everything larger: NumPy's OpenBLAS ``gemm`` called from compiled code
  (:mod:`._blas`). The forward writes the bias into each output row and lets ``gemm``
  accumulate ``X W`` onto it (``beta = 1``), so the bias costs no separate pass over the
  product; ``X.T`` and ``W.T`` are transpose flags, never copies. The loops only win below
  a few rows, where a BLAS call's fixed cost dominates (docs/decisions/
  blas-from-compiled-code.md). OpenBLAS brings its own threads, so these
  kernels have no Numba-parallel twin: ``gemm`` is never called inside a ``prange``.

``db`` (column sums) always comes from :func:`column_sum`, summed row after row, so it does
not depend on any thread count. The BLAS products are bit-reproducible for a fixed number
of BLAS threads (see :mod:`fastbp.threads`).
"""
from numba import njit, prange

from ._blas import NO_TRANS, TRANS, gemm
from ._compile import AFFINE_BLAS_MIN_FLOPS, AFFINE_NARROW_BLAS_MIN_FLOPS, AFFINE_NARROW_SIDE, twins
from .activations import relu_backward


# The hand-written products for work below blas_min_flops, shared by the affine
# kernels and both fused training steps. They skip zero inputs (most MNIST pixels, about
# half of a ReLU layer's outputs) and sum each output in row order of the batch.

def _matmul_body(a, W, out, accumulate):
    """``out = a @ W`` (``out += a @ W`` with `accumulate`), row after row, skipping zero
    entries of `a`. `a` (n, d), `W` (d, m), `out` (n, m), one float dtype; `a` may be a
    transposed view (``h.T @ dy``, a weight gradient summed over the batch in row order)."""
    n, d = a.shape
    m = W.shape[1]
    for i in prange(n):
        if not accumulate:
            for j in range(m):
                out[i, j] = 0
        for k in range(d):
            aik = a[i, k]
            if aik != 0:
                for j in range(m):
                    out[i, j] += aik * W[k, j]


# The parallel twin splits the rows of `out` (disjoint writes, each summed in order).
matmul_loops, matmul_loops_parallel = twins(_matmul_body)


@njit(cache=True, nogil=True)
def rank1_loops(alpha, a, g, W):
    """``W += alpha * a.T @ g`` as rank-1 updates, row after row of the batch, skipping
    zero entries of `a`: ``W[k] += (alpha * a[i, k]) * g[i]``. With ``alpha = -lr`` this is
    the SGD update folded into the weight gradient (``W - (lr * a) * g``, the same bits).
    `a` (n, d), `g` (n, m), `W` (d, m)."""
    n, d = a.shape
    m = W.shape[1]
    step = W.dtype.type(alpha)
    for i in range(n):
        for k in range(d):
            aik = a[i, k]
            if aik != 0:
                s = step * aik
                for j in range(m):
                    W[k, j] += s * g[i, j]


#: Numba fastmath flags of the dot products that may be summed in any order: "reassoc" lets
#: LLVM vectorize the reduction (a strict order keeps it scalar), "nsz" ignores the sign of a
#: zero sum. Each sum is still one compiled loop run by one thread, so its order does not
#: depend on the thread count.
REDUCTION_FASTMATH = {"reassoc", "nsz"}


@njit(cache=True, nogil=True, fastmath=REDUCTION_FASTMATH)
def dot_reassoc(a, b, count):
    """``sum(a[:count] * b[:count])`` summed in whatever order LLVM vectorizes it (the same
    order on every call of this compiled code, so deterministic for a given machine, but
    not the strict left-to-right order of ``np.dot``'s reference loops).

    Parameters
    ----------
    a, b : ndarray, 1-D, one float dtype, at least `count` elements
    count : int
    """
    s = a.dtype.type(0)
    for p in range(count):
        s += a[p] * b[p]
    return s


@njit(cache=True, nogil=True)
def outer_rows(a, g, dW):
    """``dW = outer(a, g)``: the weight gradient ``a.T @ dz`` of a one-row batch, each row
    of `dW` written once (0 where ``a[k] == 0``: the zero inputs of a digit, the zeros of a
    ReLU) instead of zeroing `dW` and adding to it.

    Parameters
    ----------
    a : ndarray, (d,), float32 or float64
    g : ndarray, (m,), dtype of `a`
    dW : ndarray, (d, m), dtype of `a`, written in place.
    """
    m = g.shape[0]
    for k in range(a.shape[0]):
        ak = a[k]
        row = dW[k]
        if ak == 0:
            for j in range(m):
                row[j] = 0
        else:
            for j in range(m):
                row[j] = ak * g[j]


@njit(cache=True, nogil=True)
def input_grad_loops(g, W, da, gate):
    """``da = g @ W.T``, each output one :func:`dot_reassoc` of two contiguous rows (a strict
    order of additions would keep each sum scalar: twice as slow), except where
    ``gate <= 0``: there 0 is written, not computed. `gate` is the output of the ReLU before
    the layer, whose backward writes 0 there whatever the product is.

    Parameters
    ----------
    g : ndarray, (n, m), float32 or float64
    W : ndarray, (d, m), dtype of `g`
    da : ndarray, (n, d), dtype of `g`, written in place.
    gate : ndarray, (n, d) or size 0, dtype of `g`
        Size 0: every output is computed.
    """
    n, m = g.shape
    gated = gate.size > 0
    for i in range(n):
        gi = g[i]
        for k in range(W.shape[0]):
            da[i, k] = 0 if gated and gate[i, k] <= 0 else dot_reassoc(W[k], gi, m)


@njit(cache=True, nogil=True)
def fill_zero(a):
    """``a[...] = 0`` for a C-contiguous array of any shape."""
    f = a.reshape(a.size)
    for p in range(f.size):
        f[p] = 0


@njit(cache=True, nogil=True, inline="always")
def blas_min_flops(d_in, d_out):
    """Multiply-adds from which the products of a `d_in` x `d_out` affine layer (forward,
    weight gradient, input gradient: each ``n * d_in * d_out``) call BLAS rather than the
    hand-written loops: :data:`._compile.AFFINE_NARROW_BLAS_MIN_FLOPS` for a narrow layer
    (a side below :data:`._compile.AFFINE_NARROW_SIDE`), else
    :data:`._compile.AFFINE_BLAS_MIN_FLOPS`. One rule per layer, so its three products take
    the same path."""
    if min(d_in, d_out) < AFFINE_NARROW_SIDE:
        return AFFINE_NARROW_BLAS_MIN_FLOPS
    return AFFINE_BLAS_MIN_FLOPS


@njit(cache=True, nogil=True, inline="always")
def _blas_product(ta, tb, A, B, C, beta, layer):
    # C = op(A) @ op(B) + beta * C through BLAS from blas_min_flops multiply-adds of the
    # layer whose weights (or their gradient) `layer` is; returns False (nothing done)
    # below, where the caller's loops are faster. Sizes and leading dimensions follow from
    # the C-contiguous shapes: the one place that spells out a gemm of the affine kernels.
    M, N = C.shape
    K = A.shape[0] if ta == TRANS else A.shape[1]
    if M * N * K < blas_min_flops(layer.shape[0], layer.shape[1]):
        return False
    gemm(ta, tb, M, N, K, 1.0, A, A.shape[1], B, B.shape[1], beta, C, N)
    return True


@njit(cache=True, nogil=True)
def product(a, W, out):
    """``out = a @ W``: BLAS from :func:`blas_min_flops` multiply-adds, else
    :func:`matmul_loops`."""
    if not _blas_product(NO_TRANS, NO_TRANS, a, W, out, 0.0, W):
        matmul_loops(a, W, out, False)


@njit(cache=True, nogil=True)
def weight_grad_loops(a, dz, dW):
    """``dW = a.T @ dz`` without BLAS: :func:`outer_rows` for one row, else zeroed and
    :func:`rank1_loops` row after row of the batch."""
    if a.shape[0] == 1:
        outer_rows(a[0], dz[0], dW)
    else:
        fill_zero(dW)
        rank1_loops(1.0, a, dz, dW)


@njit(cache=True, nogil=True)
def weight_grad(a, dz, dW):
    """``dW = a.T @ dz``: BLAS from :func:`blas_min_flops` multiply-adds, else
    :func:`weight_grad_loops`."""
    if not _blas_product(TRANS, NO_TRANS, a, dz, dW, 0.0, dW):
        weight_grad_loops(a, dz, dW)


@njit(cache=True, nogil=True)
def input_grad(dz, W, da):
    """``da = dz @ W.T``: BLAS from :func:`blas_min_flops` multiply-adds, else
    :func:`input_grad_loops`."""
    if not _blas_product(NO_TRANS, TRANS, dz, W, da, 0.0, W):
        input_grad_loops(dz, W, da, da[:0])


@njit(cache=True, nogil=True)
def relu_input_grad(dz, W, da, h):
    """``da = dz @ W.T`` through the ReLU before the layer: 0 where its output `h` is
    ``<= 0`` (the book's ``Relu.backward``). BLAS from :func:`blas_min_flops` multiply-adds,
    then the ReLU's backward pass; below, :func:`input_grad_loops` computes only the
    outputs the ReLU passes.

    Parameters
    ----------
    dz : ndarray, (n, m), float32 or float64, C-contiguous
    W : ndarray, (d, m), dtype of `dz`, C-contiguous
    da : ndarray, (n, d), dtype of `dz`, C-contiguous, written in place.
    h : ndarray, (n, d), dtype of `dz`, C-contiguous: the ReLU's output.
    """
    if _blas_product(NO_TRANS, TRANS, dz, W, da, 0.0, W):
        relu_backward(h, da, da)
    else:
        input_grad_loops(dz, W, da, h)


@njit(cache=True, nogil=True)
def column_sum(a, out):
    """``out = a.sum(axis=0)``, summed row after row so any thread count gives the same bits.

    Parameters
    ----------
    a : ndarray, (n, m), float32 or float64, C-contiguous
    out : ndarray, (m,), dtype of `a`, written in place.
    """
    n, m = a.shape
    for j in range(m):
        out[j] = 0
    for i in range(n):
        for j in range(m):
            out[j] += a[i, j]


@njit(cache=True, nogil=True)
def affine_forward(x, W, b, out):
    """``out = x @ W + b``.

    Parameters
    ----------
    x : ndarray, (n, d), float32 or float64, C-contiguous
    W : ndarray, (d, m), dtype of `x`, C-contiguous
    b : ndarray, (m,), dtype of `x`
    out : ndarray, (n, m), dtype of `x`, C-contiguous, written in place; must not overlap
        the inputs.
    """
    n, m = out.shape
    for i in range(n):
        for j in range(m):
            out[i, j] = b[j]
    if not _blas_product(NO_TRANS, NO_TRANS, x, W, out, 1.0, W):
        matmul_loops(x, W, out, True)


@njit(cache=True, nogil=True)
def affine_backward(dout, x, W, dW, db, dx=None):
    """Gradients of ``Y = x @ W + b``: ``dW = x.T @ dout``, ``db = dout.sum(0)``, ``dx = dout @ W.T``.

    Parameters
    ----------
    dout : ndarray, (n, m), float32 or float64, C-contiguous
        Upstream gradient dL/dY.
    x : ndarray, (n, d), dtype of `dout`, C-contiguous
        The forward input.
    W : ndarray, (d, m), dtype of `dout`, C-contiguous
    dW : ndarray, (d, m), written in place.
    db : ndarray, (m,), written in place (column sums, thread-count independent).
    dx : ndarray, (n, d), optional
        Written in place when given. The first layer of a network never needs it: omit it
        and that product is skipped.
    """
    column_sum(dout, db)
    weight_grad(x, dout, dW)
    if dx is not None:
        input_grad(dout, W, dx)
