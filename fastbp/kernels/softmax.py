"""Fused softmax + cross-entropy: loss and gradient in one pass per row.

For a row of logits ``x`` with target ``t`` (a class label or a one-hot/probability row):

    lse  = max(x) + log(sum(exp(x - max(x))))           (stable log-sum-exp)
    loss = -sum_j t_j * (x_j - lse)                      (mean over the batch)
    dx   = (softmax(x) - t) / batch

Every exponent is <= 0, so nothing overflows; the loss is computed from the log-sum-exp,
not from ``log(softmax)``, so it stays finite when a probability underflows to 0. The
arithmetic runs in float64 for both dtypes. The book adds 1e-7 inside its log; this kernel
does not need to, so losses differ from the book's by at most about 1e-7 per row.
"""
import numpy as np
from numba import njit, prange
from numba.extending import overload

from ._compile import PARALLEL_MIN_HEAVY_ELEMENTS, twins
from ._vexp import exp_nonpos


def target_prob(t, i, j):
    """Target probability of class `j` in row `i`: labels (n,) or one-hot rows (n, c)."""
    if t.ndim == 1:
        return 1.0 if t[i] == j else 0.0
    return t[i, j]


@overload(target_prob, jit_options={"cache": True})
def _target_prob_overload(t, i, j):
    # Resolved at compile time from the type of `t`: no branch in the compiled loop.
    if t.ndim == 1:
        return lambda t, i, j: 1.0 if t[i] == j else 0.0
    return lambda t, i, j: t[i, j]


@njit(cache=True, nogil=True, inline="always")
def softmax_ce_row(x, t, dx, i, inv_n):
    """Softmax-cross-entropy of row `i` of the logits `x` against `t` (labels or one-hot
    rows): writes ``dx[i] = (softmax(x[i]) - t[i]) * inv_n`` and returns the row's loss.
    For the fused steps' row passes (:mod:`.network`, :mod:`.rows`)."""
    c = x.shape[1]
    mx = x[i, 0]
    for j in range(1, c):
        if x[i, j] > mx:
            mx = x[i, j]
    s = np.float64(0.0)  # not 0.0: without JIT, 0.0 + a np.float32 is float32 (NEP 50)
    for j in range(c):
        e = exp_nonpos(x[i, j] - mx)  # <= 0; vectorizable (see ._vexp)
        dx[i, j] = e
        s += e
    lse = mx + np.log(s)
    inv_s = 1.0 / s
    return finish_row(x, t, dx, i, inv_s, inv_n, lse)


def finish_row(x, t, dx, i, inv_s, inv_n, lse):
    """``dx[i] = (dx[i] * inv_s - t[i]) * inv_n`` (``dx[i]`` holds the exponentials) and
    the row's loss ``-sum_j t_ij (x_ij - lse)``."""
    loss = 0.0
    for j in range(x.shape[1]):
        tij = target_prob(t, i, j)
        dx[i, j] = (dx[i, j] * inv_s - tij) * inv_n
        if tij != 0:
            loss -= tij * (x[i, j] - lse)
    return loss


@overload(finish_row, jit_options={"cache": True}, inline="always")
def _finish_row_overload(x, t, dx, i, inv_s, inv_n, lse):
    if t.ndim == 2:
        return finish_row
    # Labels: one branch-free pass that vectorizes, then the label's own entry. Same
    # operations in the same order as the general form, so the same bits (a per-entry
    # branch made the pass several times slower: docs/decisions/vectorized-exp.md).
    def labels(x, t, dx, i, inv_s, inv_n, lse):
        k = t[i]
        ek = dx[i, k]
        for j in range(x.shape[1]):
            dx[i, j] = (dx[i, j] * inv_s) * inv_n
        dx[i, k] = (ek * inv_s - 1.0) * inv_n
        return lse - x[i, k]
    return labels


def _rows_body(x, t, dx, row_loss):
    inv_n = 1.0 / x.shape[0]
    for i in prange(x.shape[0]):
        row_loss[i] = softmax_ce_row(x, t, dx, i, inv_n)


_rows_serial, _rows_parallel = twins(_rows_body)


@njit(cache=True, nogil=True)
def softmax_cross_entropy_rows(x, t, dx, row_loss):
    """Fused softmax-cross-entropy writing each row's loss; returns the mean loss.

    The allocation-free form of :func:`softmax_cross_entropy`, for training loops.

    Parameters
    ----------
    x : ndarray, (n, c), float32 or float64, C-contiguous
        Logits.
    t : ndarray, (n,) integer labels in [0, c), or (n, c) one-hot rows of `x`'s dtype
    dx : ndarray, (n, c), dtype of `x`, written in place with ``(softmax(x) - t) / n``.
    row_loss : ndarray, (n,), float64, written in place with each row's loss.

    Returns
    -------
    float
        Mean cross-entropy, summed over rows in order (thread-count independent).
    """
    if x.size >= PARALLEL_MIN_HEAVY_ELEMENTS:
        _rows_parallel(x, t, dx, row_loss)
    else:
        _rows_serial(x, t, dx, row_loss)
    total = 0.0
    for i in range(x.shape[0]):
        total += row_loss[i]
    return total / x.shape[0]


@njit(cache=True, nogil=True)
def softmax_cross_entropy(x, t, dx):
    """Fused softmax-cross-entropy: returns the mean loss, writes the gradient.

    Parameters
    ----------
    x : ndarray, (n, c), float32 or float64, C-contiguous
        Logits.
    t : ndarray, (n,) integer labels in [0, c), or (n, c) one-hot rows of `x`'s dtype
    dx : ndarray, (n, c), dtype of `x`, C-contiguous
        Written in place with ``(softmax(x) - t) / n``: the gradient of the mean loss.

    Returns
    -------
    float
        Mean cross-entropy over the batch.

    Notes
    -----
    Allocates nothing for small batches; large batches (parallel path) allocate one
    float64 per row for the per-row losses. Use :func:`softmax_cross_entropy_rows` to
    supply that buffer.
    """
    n = x.shape[0]
    if x.size >= PARALLEL_MIN_HEAVY_ELEMENTS:
        return softmax_cross_entropy_rows(x, t, dx, np.empty(n))
    inv_n = 1.0 / n
    total = 0.0
    for i in range(n):
        total += softmax_ce_row(x, t, dx, i, inv_n)
    return total / n
