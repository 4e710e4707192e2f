"""The whole training step of a two-layer ReLU network, fused into one compiled call.

    h  = relu(x @ W1 + b1)          y  = h @ W2 + b2
    L  = mean softmax-cross-entropy(y, t)
    dy = (softmax(y) - t) / n       dh = (dy @ W2.T) * (h > 0)
    dW2 = h.T @ dy, db2 = sum(dy),  dW1 = x.T @ dh, db1 = sum(dh)

Fusions across layer boundaries, so each intermediate is touched while it is in cache:

* bias + ReLU, the second layer, softmax-CE and the masked ``dh`` run in one pass per batch
  row (:func:`_rows_body`), so ``h``, ``y`` and ``dy`` of a row never leave L1;
* with ``lr > 0`` the SGD update is folded into the weight-gradient products:
  ``W1 -= lr * x.T @ dh`` is one BLAS ``gemm`` with ``alpha = -lr, beta = 1`` (large
  batches) or a rank-1 update per row over the non-zero inputs only (small batches);
* small batches (``n <= SMALL_BATCH``) never call BLAS: a call costs more than the work.
  They list each row's non-zero inputs once (:mod:`._sparse`) and use the list for both
  ``x @ W1`` and W1's update instead of scanning the inputs for each
  (docs/decisions/small-batch-zero-skipping.md).

Large products go to NumPy's OpenBLAS through :mod:`._blas`, always outside ``prange``
regions, so Numba's pool and OpenBLAS's threads take turns (see :mod:`fastbp.threads`).
Every sum in Numba code runs in a fixed order: results are bit-identical for any size of
Numba's pool and for the serial and parallel twins.
"""
import numpy as np
from numba import njit, prange

from ._blas import NO_TRANS, TRANS, gemm
from ._compile import PARALLEL_MIN_ROWS, SMALL_BATCH, require_c_contiguous, twins
from ._dispatch import twin_runner
from .affine import column_sum, fill_zero, matmul_loops, matmul_loops_parallel, rank1_loops
from ._sparse import (LANES, gather_rows, list_stride, nonzero_columns, scatter_axpy,
                      scatter_rows)
from .optimizers import sgd_decay_update
from .rows import RELU, bias_act_rows, correct_rows, relu_mask_rows, softmax_rows
from .softmax import softmax_ce_row

_matmul_loops_run = twin_runner(matmul_loops, matmul_loops_parallel)

def _rows_body(t, b1, W2, b2, h, y, dy, dh, row_loss, W2T=None):
    # Everything between the two large products, one batch row at a time while the row is
    # in L1: bias + ReLU on h, the second layer, softmax-CE, and dh = (dy @ W2.T) * (h > 0).
    # With W2T (C, H), W2 transposed, dh's row is built from C contiguous axpys of length H
    # (faster than H dot products of length C over W2 or axpys over W2's strided columns:
    # docs/decisions/training-step-row-passes.md). `W2T is None` is resolved at compile time.
    n, H = h.shape
    C = W2.shape[1]
    inv_n = 1.0 / n
    for i in prange(n):
        for j in range(H):
            v = h[i, j] + b1[j]
            h[i, j] = 0 if v <= 0 else v  # NaN passes, as in rows.bias_act_rows
        for c in range(C):
            y[i, c] = b2[c]
        for j in range(H):
            hij = h[i, j]
            if hij != 0:  # about half of h is 0 after the ReLU: skipping them halves the work
                for c in range(C):
                    y[i, c] += hij * W2[j, c]
        row_loss[i] = softmax_ce_row(y, t, dy, i, inv_n)
        for j in range(H):
            dh[i, j] = 0
        for c in range(C):
            g = dy[i, c]
            if W2T is None:
                for j in range(H):
                    dh[i, j] += g * W2[j, c]
            else:
                for j in range(H):
                    dh[i, j] += g * W2T[c, j]
        for j in range(H):
            if h[i, j] <= 0:
                dh[i, j] = 0


_rows_serial, _rows_parallel = twins(_rows_body)


@njit(cache=True, nogil=True)
def _list_nonzeros(x, W1, h, dW1, small):
    # For small batches, h = x @ W1 from lists of each row's non-zero inputs (see ._sparse),
    # kept in dW1's storage for W1's update. Returns (lists, stride); stride 0 means
    # nothing was listed and h was not written: a large batch, or dW1 too small to hold the
    # lists (a hidden layer narrower than the batch).
    n, d = x.shape
    stride = list_stride(d)
    lists = dW1.reshape(dW1.size).view(np.int32)
    if not small or n * stride > lists.size:
        return lists, 0
    gather_rows(x, lists, W1, h)
    return lists, stride


@njit(cache=True, nogil=True)
def _update_W2_small(h, dy, W2, lr, lists, stride):
    # W2 -= lr * h.T @ dy as rank-1 updates over each row's non-zero hidden units (about
    # half are 0 after the ReLU), listed in the free space after the input lists, or found
    # by a scan when there is none; the same bits either way. A third of the time of
    # dW2 = h.T @ dy and then an SGD pass (docs/decisions/small-batch-zero-skipping.md).
    n, H = h.shape
    step = -W2.dtype.type(lr)
    start = n * stride
    if stride > 0 and start + H + LANES <= lists.size:
        row = lists[start:start + H + LANES]
        for i in range(n):
            scatter_axpy(step, h, i, row, nonzero_columns(h, i, row), dy, W2)
    else:
        rank1_loops(-lr, h, dy, W2)


# _hidden_logits, _step_small and _step_blas are inlined into their callers: a call level
# less to compile on a cold start (docs/decisions/cold-start.md).
@njit(cache=True, nogil=True, inline="always")
def _hidden_logits(x, W1, b1, W2, h, y, parallel=True):
    # h = relu(x @ W1 + b1) and y = h @ W2 (b2 not added), through BLAS: the forward pass
    # shared by the training step's BLAS path and count_correct; `parallel` as in
    # two_layer_step.
    n, d = x.shape
    H = W1.shape[1]
    C = W2.shape[1]
    gemm(NO_TRANS, NO_TRANS, n, H, d, 1.0, x, d, W1, H, 0.0, h, H)
    bias_act_rows(h, b1, RELU, parallel, None)
    gemm(NO_TRANS, NO_TRANS, n, C, H, 1.0, h, H, W2, C, 0.0, y, C)


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
        Written with the gradients of the mean loss (taken before the update). With
        ``lr > 0`` the weight updates are folded into the products (``W -= lr * grad``
        without writing ``grad``): dW1 and dW2 are then work space, left with unspecified
        contents; db1 and db2 are written.
    row_loss : ndarray, (n,), float64
        Written with each row's loss.

    Returns
    -------
    float
        Mean loss of the batch before the update.

    See Also
    --------
    two_layer_step_paths : the same with code paths left out of the compiled code.
    """
    return two_layer_step_paths(x, t, W1, b1, W2, b2, lr, h, y, dy, dh, dW1, db1, dW2, db2,
                                row_loss, True, True, True)


@njit(cache=True, nogil=True)
def two_layer_step_paths(x, t, W1, b1, W2, b2, lr, h, y, dy, dh, dW1, db1, dW2, db2,
                         row_loss, gradients, small_batches, parallel):
    """:func:`two_layer_step` with code paths left out of the compiled code.

    Numba prunes a branch on ``arg is None`` before typing when the argument is ``None``,
    so a caller who knows its batch compiles only the path it runs (the first ``fastbp
    train`` step: docs/decisions/cold-start.md). Any other value (``True``) keeps the path,
    chosen at run time as in :func:`two_layer_step`.

    Parameters
    ----------
    x, t, W1, b1, W2, b2, lr, h, y, dy, dh, dW1, db1, dW2, db2, row_loss
        As in :func:`two_layer_step`.
    gradients : None or True
        ``None`` removes the ``lr == 0`` branch (then `lr` must be > 0).
    small_batches : None or True
        ``None`` removes the listed small-batch path: every batch takes the BLAS path
        (correct, slower below ``SMALL_BATCH`` rows).
    parallel : None or True
        ``None`` removes the parallel twins of the row passes (serial at any size, the
        same bits).

    Returns
    -------
    float
        Mean loss of the batch before the update.
    """
    require_c_contiguous(x, t, W1, b1, W2, b2, h, y, dy, dh, dW1, db1, dW2, db2, row_loss)
    n = x.shape[0]
    if small_batches is not None and n <= SMALL_BATCH:
        _step_small(x, t, W1, b1, W2, b2, lr, h, y, dy, dh, dW1, db1, dW2, db2, row_loss,
                    gradients)
    else:
        _step_blas(x, t, W1, b1, W2, b2, lr, h, y, dy, dh, dW1, db1, dW2, db2, row_loss,
                   gradients, parallel)
    total = 0.0
    for i in range(n):
        total += row_loss[i]
    return total / n


@njit(cache=True, nogil=True, inline="always")
def _step_small(x, t, W1, b1, W2, b2, lr, h, y, dy, dh, dW1, db1, dW2, db2, row_loss,
                gradients):
    # two_layer_step up to SMALL_BATCH rows: no BLAS call.
    n, d = x.shape
    H = W1.shape[1]
    C = W2.shape[1]
    lists, stride = _list_nonzeros(x, W1, h, dW1, True)
    if stride == 0:
        matmul_loops(x, W1, h, False)
    # W2 transposed into dW2's storage, viewed as (C, H) (with lr == 0, dW2 is written
    # after the row pass has used it).
    W2T = dW2.reshape(C, H)
    for j in range(H):
        for c in range(C):
            W2T[c, j] = W2[j, c]
    _rows_serial(t, b1, W2, b2, h, y, dy, dh, row_loss, W2T)
    column_sum(dy, db2)
    column_sum(dh, db1)
    if gradients is None or lr > 0:
        if stride > 0:
            # W1 + (-lr * x) * dh: the same bits as W1 - (lr * x) * dh
            scatter_rows(-W1.dtype.type(lr), x, lists, dh, W1)
        else:
            rank1_loops(-lr, x, dh, W1)
        _update_W2_small(h, dy, W2, lr, lists, stride)
        # H and C elements: the serial SGD pass (None: its parallel twin is not compiled)
        sgd_decay_update(b1, db1, lr, 0.0, None)
        sgd_decay_update(b2, db2, lr, 0.0, None)
    else:
        fill_zero(dW1)
        rank1_loops(1.0, x, dh, dW1)  # dW1 = x.T @ dh, rows in order
        _matmul_loops_run((h.T, dy, dW2, False), n,
                  PARALLEL_MIN_ROWS)


@njit(cache=True, nogil=True, inline="always")
def _step_blas(x, t, W1, b1, W2, b2, lr, h, y, dy, dh, dW1, db1, dW2, db2, row_loss,
               gradients, parallel):
    # two_layer_step above SMALL_BATCH rows: the two small products (h @ W2, dy @ W2.T) go
    # to BLAS too and the per-row work shrinks to bias + ReLU, softmax-CE and the mask:
    # faster than the fused row pass from there on
    # (docs/decisions/training-step-row-passes.md).
    n, d = x.shape
    H = W1.shape[1]
    C = W2.shape[1]
    _hidden_logits(x, W1, b1, W2, h, y, parallel)
    softmax_rows(y, b2, t, dy, row_loss, parallel)
    gemm(NO_TRANS, TRANS, n, H, C, 1.0, dy, C, W2, C, 0.0, dh, H)
    relu_mask_rows(h, dh, parallel)
    column_sum(dy, db2)
    column_sum(dh, db1)
    if gradients is None or lr > 0:
        gemm(TRANS, NO_TRANS, d, H, n, -lr, x, d, dh, H, 1.0, W1, H)
        # W2 -= lr * h.T @ dy in one gemm: several times faster than the hand-written
        # h.T @ dy (its 10-wide inner loop does not vectorize) + the update
        # (docs/decisions/blas-from-compiled-code.md).
        gemm(TRANS, NO_TRANS, H, C, n, -lr, h, H, dy, C, 1.0, W2, C)
        # H and C elements: the serial SGD pass (None: its parallel twin is not compiled)
        sgd_decay_update(b1, db1, lr, 0.0, None)
        sgd_decay_update(b2, db2, lr, 0.0, None)
    else:
        gemm(TRANS, NO_TRANS, d, H, n, 1.0, x, d, dh, H, 0.0, dW1, H)
        _matmul_loops_run((h.T, dy, dW2, False), n,
                  PARALLEL_MIN_ROWS, parallel)


@njit(cache=True, nogil=True)
def train_step_labels(x, t, W1, b1, W2, b2, lr, h, y, dy, dh, dW1, db1, dW2, db2, row_loss):
    """:func:`two_layer_step` for integer labels that first checks its arguments: returns
    -1.0 and touches nothing if a label is outside ``[0, C)`` or the shapes do not fit
    together (a kernel given mismatched shapes would read and write out of bounds).

    The checks cost n + 20 compares here, far less than ``t.min()`` and ``t.max()`` from
    Python at batch 1 (docs/decisions/train-step-fast-path.md);
    :meth:`fastbp.TwoLayerNet.train_step` uses it on its fast path (and
    :func:`train_step_labels_paths` above ``SMALL_BATCH`` rows).
    """
    return train_step_labels_paths(x, t, W1, b1, W2, b2, lr, h, y, dy, dh, dW1, db1, dW2,
                                   db2, row_loss, True, True, True)


@njit(cache=True, nogil=True)
def train_step_labels_paths(x, t, W1, b1, W2, b2, lr, h, y, dy, dh, dW1, db1, dW2, db2,
                            row_loss, gradients, small_batches, parallel):
    """:func:`train_step_labels` with the path arguments of :func:`two_layer_step_paths`."""
    n, d = x.shape
    H = W1.shape[1]
    C = W2.shape[1]
    if (t.shape[0] != n or n == 0 or W1.shape[0] != d or b1.shape[0] != H
            or W2.shape[0] != H or b2.shape[0] != C or h.shape != (n, H)
            or y.shape != (n, C) or dy.shape != (n, C) or dh.shape != (n, H)
            or dW1.shape != (d, H) or db1.shape[0] != H or dW2.shape != (H, C)
            or db2.shape[0] != C or row_loss.shape[0] != n):
        return -1.0
    for i in range(n):
        if t[i] < 0 or t[i] >= C:
            return -1.0
    return two_layer_step_paths(x, t, W1, b1, W2, b2, lr, h, y, dy, dh, dW1, db1, dW2, db2,
                                row_loss, gradients, small_batches, parallel)


@njit(cache=True, nogil=True)
def count_correct(x, t, W1, b1, W2, b2, h, y, hit):
    """Rows of `x` whose predicted class (argmax of the logits) is the label in `t`.

    The network's forward pass with nothing kept: ``x @ W1`` and ``h @ W2`` through BLAS,
    bias + ReLU and the bias + argmax + compare in row passes. Ties go to the first class,
    as ``np.argmax``.

    Parameters
    ----------
    x : ndarray, (n, d), float32 or float64, C-contiguous
    t : ndarray, (n,), integer labels
    W1, b1, W2, b2 : ndarray, (d, H), (H,), (H, C), (C,), dtype of `x`
    h, y : ndarray, (n, H), (n, C), dtype of `x`
        Work buffers, overwritten.
    hit : ndarray, (n,), int64
        Work buffer, overwritten.

    Returns
    -------
    int
    """
    require_c_contiguous(x, t, W1, b1, W2, b2, h, y, hit)
    n = x.shape[0]
    # The row passes stay serial at any size (None: their parallel twins are not even
    # compiled). They are about 1 % of an evaluation (two GEMMs make the rest), and their
    # parallel twins saved nothing measurable but cost a large part of a cold start's
    # compilation (docs/decisions/cold-start.md).
    _hidden_logits(x, W1, b1, W2, h, y, None)
    correct_rows(y, b2, t, hit, None)
    total = 0
    for i in range(n):
        total += hit[i]
    return total
