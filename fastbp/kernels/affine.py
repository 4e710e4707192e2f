"""Batched affine layer ``Y = X W + b`` and its backward pass.

Two code paths, picked by the amount of work (n * d * m multiply-adds):

* small and medium batches: hand-written loops. They skip zero inputs (MNIST pixels are
  about 80 % zeros; the reference BLAS skips zeros in the same place) and, for the forward,
  add the bias in the same pass that accumulates each output row.
* large batches: ``np.dot`` into the output buffer (Numba calls SciPy's BLAS), then one pass
  that adds the bias. ``X.T`` is passed as a transposed view, never copied.

All reductions run in a fixed order, so results do not depend on the thread count.
"""
from numba import njit, prange

from ._compile import BLAS_MIN_FLOPS, PARALLEL_MIN_FLOPS, twins


def _affine_forward_body(x, W, b, out):
    n, d = x.shape
    m = W.shape[1]
    for i in prange(n):
        for j in range(m):
            out[i, j] = b[j]
        for k in range(d):
            xik = x[i, k]
            if xik != 0:
                for j in range(m):
                    out[i, j] += xik * W[k, j]


def _dx_body(dout, W, dx):
    # dx = dout @ W.T: each element is a dot product of two contiguous rows.
    n, m = dout.shape
    d = W.shape[0]
    for i in prange(n):
        for k in range(d):
            acc = dx.dtype.type(0)
            for j in range(m):
                acc += dout[i, j] * W[k, j]
            dx[i, k] = acc


def _dW_body(x, dout, dW):
    # dW = x.T @ dout, one row of dW per iteration: rows of dW are disjoint across threads
    # and each sums over the batch in order.
    n, d = x.shape
    m = dout.shape[1]
    for k in prange(d):
        for j in range(m):
            dW[k, j] = 0
        for i in range(n):
            xik = x[i, k]
            if xik != 0:
                for j in range(m):
                    dW[k, j] += xik * dout[i, j]


_affine_forward_serial, _affine_forward_parallel = twins(_affine_forward_body)
_dx_serial, _dx_parallel = twins(_dx_body)
_dW_serial, _dW_parallel = twins(_dW_body)


@njit(cache=True, nogil=True)
def _add_bias(out, b):
    n, m = out.shape
    for i in range(n):
        for j in range(m):
            out[i, j] += b[j]


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
    out : ndarray, (n, m), dtype of `x`, C-contiguous, written in place.
    """
    work = x.shape[0] * x.shape[1] * W.shape[1]
    if work >= BLAS_MIN_FLOPS:
        np_dot(x, W, out)
        _add_bias(out, b)
    elif work >= PARALLEL_MIN_FLOPS and x.shape[0] > 1:
        _affine_forward_parallel(x, W, b, out)
    else:
        _affine_forward_serial(x, W, b, out)


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
    n, d = x.shape
    m = W.shape[1]
    work = n * d * m
    column_sum(dout, db)
    if work >= BLAS_MIN_FLOPS:
        np_dot(x.T, dout, dW)
        if dx is not None:
            np_dot(dout, W.T, dx)
    elif work >= PARALLEL_MIN_FLOPS:
        _dW_parallel(x, dout, dW)
        if dx is not None:
            _dx_parallel(dout, W, dx)
    else:
        _dW_serial(x, dout, dW)
        if dx is not None:
            _dx_serial(dout, W, dx)


# Bound at the end so the docstrings above read naturally; ``np.dot(a, b, out)`` in Numba
# calls BLAS gemm and writes into `out` without allocating for C- or F-ordered operands.
from numpy import dot as np_dot  # noqa: E402
