"""The whole training step of a two-layer ReLU network, fused into one compiled call.

    h  = relu(x @ W1 + b1)          y  = h @ W2 + b2
    L  = mean softmax-cross-entropy(y, t)
    dy = (softmax(y) - t) / n       dh = (dy @ W2.T) * (h > 0)
    dW2 = h.T @ dy, db2 = sum(dy),  dW1 = x.T @ dh, db1 = sum(dh)

Fusions across layer boundaries, so each intermediate is touched while it is in cache:
bias + ReLU in the forward accumulation, softmax-CE and the ReLU mask inside the backward
product of the same row, and (with ``lr > 0``) the SGD update applied to each block of W1
and W2 right after its gradient is summed.

Small and medium batches run hand-written loops that skip zero inputs; large batches call
BLAS (``np.dot``) for the products and keep the remaining passes serial, so Numba's thread
pool is never active while OpenBLAS's threads are (see :mod:`fastbp.threads`). Every sum
runs in a fixed order: results are bit-identical for 1 or N threads and for both twins.
"""
import numpy as np
from numba import njit, prange

from ._compile import PARALLEL_MIN_ELEMENTS, twins
from .affine import column_sum
from .softmax import _row

def _rows_body(t, b1, W2, b2, h, y, dy, dh, row_loss):
    # Everything between the two large products, one batch row at a time while the row is
    # in L1: bias + ReLU on h, the second layer, softmax-CE, and dh = (dy @ W2.T) * (h > 0).
    n, H = h.shape
    C = W2.shape[1]
    inv_n = 1.0 / n
    for i in prange(n):
        for j in range(H):
            v = h[i, j] + b1[j]
            h[i, j] = v if v > 0 else 0
        for c in range(C):
            y[i, c] = b2[c]
        for j in range(H):
            hij = h[i, j]
            if hij != 0:
                for c in range(C):
                    y[i, c] += hij * W2[j, c]
        row_loss[i] = _row(y, t, dy, i, inv_n)
        for j in range(H):
            if h[i, j] > 0:
                acc = 0.0
                for c in range(C):
                    acc += dy[i, c] * W2[j, c]
                dh[i, j] = acc
            else:
                dh[i, j] = 0


def _small_grad_body(h, dy, dW):
    # dW = h.T @ dy for the small second layer, one row of dW per iteration, summing the
    # batch in order (thread-count independent).
    n, H = h.shape
    C = dy.shape[1]
    for j in prange(H):
        for c in range(C):
            dW[j, c] = 0
        for i in range(n):
            hij = h[i, j]
            if hij != 0:
                for c in range(C):
                    dW[j, c] += hij * dy[i, c]


_rows_serial, _rows_parallel = twins(_rows_body)
_small_grad_serial, _small_grad_parallel = twins(_small_grad_body)


@njit(cache=True, nogil=True)
def _sgd(p, g, lr):
    step = p.dtype.type(lr)
    pf = p.reshape(p.size)
    gf = g.reshape(g.size)
    for i in range(pf.size):
        pf[i] -= step * gf[i]


@njit(cache=True, nogil=True)
def two_layer_step(x, t, W1, b1, W2, b2, lr, h, y, dy, dh, dW1, db1, dW2, db2, row_loss):
    """Forward, backward and (if ``lr > 0``) SGD update of a two-layer ReLU network.

    Parameters
    ----------
    x : ndarray, (n, d), float32 or float64, C-contiguous
        Input batch.
    t : ndarray, (n,) integer labels in [0, C), or (n, C) one-hot rows of `x`'s dtype
    W1, b1, W2, b2 : ndarray, (d, H), (H,), (H, C), (C,), dtype of `x`, C-contiguous
        Parameters; updated in place when ``lr > 0``.
    lr : float
        Learning rate; 0 computes the gradients only.
    h, y, dy, dh : ndarray, (n, H), (n, C), (n, C), (n, H)
        Work buffers, overwritten: hidden activations, logits, dL/dy, dL/dh.
    dW1, db1, dW2, db2 : ndarray, shapes of the parameters
        Written with the gradients of the mean loss (taken before the update).
    row_loss : ndarray, (n,), float64
        Written with each row's loss.

    Returns
    -------
    float
        Mean loss of the batch before the update.
    """
    n = x.shape[0]
    # The two large products go to BLAS: measured faster than any hand-written loop here
    # from batch 1 up (benchmarks/README). Numba's pool only runs between them.
    np.dot(x, W1, h)
    parallel = n * h.shape[1] >= PARALLEL_MIN_ELEMENTS
    if parallel:
        _rows_parallel(t, b1, W2, b2, h, y, dy, dh, row_loss)
        _small_grad_parallel(h, dy, dW2)
    else:
        _rows_serial(t, b1, W2, b2, h, y, dy, dh, row_loss)
        _small_grad_serial(h, dy, dW2)
    np.dot(x.T, dh, dW1)
    column_sum(dy, db2)
    column_sum(dh, db1)
    if lr > 0:
        _sgd(W1, dW1, lr)
        _sgd(b1, db1, lr)
        _sgd(W2, dW2, lr)
        _sgd(b2, db2, lr)
    total = 0.0
    for i in range(n):
        total += row_loss[i]
    return total / n
