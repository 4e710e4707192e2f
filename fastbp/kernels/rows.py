"""Row passes shared by the fused training steps (two-layer and any depth).

Everything a training step does between two matrix products is a pass over the rows of a
batch: bias + activation, softmax-cross-entropy, the ReLU mask of the backward pass, the
argmax of the evaluation. Each body here is written once and compiled into a serial and a
parallel twin (:func:`._compile.twins`); the ``*_rows`` dispatchers pick the parallel twin
from :data:`._compile.PARALLEL_MIN_ROWS` rows. Every row is computed by one thread and
nothing is summed across rows, so both twins give the same bits.

Activation codes (:data:`RELU`, :data:`SIGMOID`, :data:`IDENTITY`) are plain ints so that
one compiled function serves every network; the branch on the code sits outside the
inner loops.
"""
import numpy as np
from numba import njit, prange

from ._compile import PARALLEL_MIN_ROWS, SOFTMAX_BLOCK, twins
from ._vexp import exp_nonpos
from .activations import sigmoid_scalar
from .softmax import _finish

#: Activation codes of :func:`bias_act_rows` and the any-depth step.
RELU, SIGMOID, IDENTITY = 0, 1, 2


def _bias_act_body(z, b, act):
    # z[i] = act(z[i] + b), in place. ReLU as `0 if v <= 0 else v` so NaN passes through,
    # as in relu_forward and the book's `out[x <= 0] = 0`.
    n, d = z.shape
    one = z.dtype.type(1.0)
    for i in prange(n):
        zi = z[i]
        if act == RELU:
            for j in range(d):
                v = zi[j] + b[j]
                zi[j] = 0 if v <= 0 else v
        elif act == SIGMOID:
            for j in range(d):
                zi[j] = sigmoid_scalar(zi[j] + b[j], one)
        else:
            for j in range(d):
                zi[j] = zi[j] + b[j]


def _softmax_rows_body(y, b, t, dy, row_loss):
    # y += b, then softmax-CE row by row as softmax._row, except that the exponentials of a
    # block of rows run as one flat loop over block * C contiguous values, which LLVM
    # vectorizes (a row's C = 10 values did not). The same operations in the same order:
    # the same bits as softmax._row.
    n, C = y.shape
    inv_n = 1.0 / n
    flat = dy.reshape(n * C)
    for blk in prange((n + SOFTMAX_BLOCK - 1) // SOFTMAX_BLOCK):
        lo = blk * SOFTMAX_BLOCK
        hi = min(lo + SOFTMAX_BLOCK, n)
        for i in range(lo, hi):
            for c in range(C):
                y[i, c] += b[c]
            mx = y[i, 0]
            for c in range(1, C):
                if y[i, c] > mx:
                    mx = y[i, c]
            for c in range(C):
                dy[i, c] = y[i, c] - mx
            row_loss[i] = mx  # kept for the log-sum-exp below; the row's loss replaces it
        block = flat[lo * C:hi * C]  # indices from 0: LLVM then drops the wraparound check
        for p in range(block.size):
            block[p] = exp_nonpos(block[p])
        for i in range(lo, hi):
            s = 0.0
            for c in range(C):
                s += dy[i, c]
            row_loss[i] = _finish(y, t, dy, i, 1.0 / s, inv_n, row_loss[i] + np.log(s))


def _relu_mask_body(h, dh):
    n, H = h.shape
    for i in prange(n):
        hi = h[i]
        dhi = dh[i]
        for j in range(H):
            # An unconditional store of a select vectorizes; a conditional store did not.
            # NaN in h keeps dh, as the comparison is false.
            dhi[j] = 0 if hi[j] <= 0 else dhi[j]


def _correct_body(y, b, t, hit):
    # hit[i] = 1 when the first largest logit of row i (np.argmax's choice) is label t[i].
    n, C = y.shape
    for i in prange(n):
        best = 0
        top = y[i, 0] + b[0]
        for c in range(1, C):
            v = y[i, c] + b[c]
            if v > top:
                top = v
                best = c
        hit[i] = 1 if best == t[i] else 0


_bias_act_serial, _bias_act_parallel = twins(_bias_act_body)
_softmax_rows_serial, _softmax_rows_parallel = twins(_softmax_rows_body)
_relu_mask_serial, _relu_mask_parallel = twins(_relu_mask_body)
_correct_serial, _correct_parallel = twins(_correct_body)


@njit(cache=True, nogil=True)
def bias_act_rows(z, b, act):
    """``z = act(z + b)`` in place, row by row.

    Parameters
    ----------
    z : ndarray, (n, d), float32 or float64, C-contiguous; overwritten.
    b : ndarray, (d,), dtype of `z`.
    act : int
        :data:`RELU`, :data:`SIGMOID` or :data:`IDENTITY` (bias only).
    """
    if z.shape[0] >= PARALLEL_MIN_ROWS:
        _bias_act_parallel(z, b, act)
    else:
        _bias_act_serial(z, b, act)


@njit(cache=True, nogil=True)
def softmax_rows(y, b, t, dy, row_loss):
    """``y += b``, then per row the softmax-cross-entropy loss and its gradient.

    Parameters
    ----------
    y : ndarray, (n, C), float32 or float64, C-contiguous
        Logits without the bias; the bias is added in place.
    b : ndarray, (C,), dtype of `y`.
    t : ndarray, (n,) integer labels in [0, C), or (n, C) one-hot rows of `y`'s dtype.
    dy : ndarray, (n, C), dtype of `y`: written with ``(softmax(y) - t) / n``.
    row_loss : ndarray, (n,), float64: written with each row's loss.
    """
    if y.shape[0] >= PARALLEL_MIN_ROWS:
        _softmax_rows_parallel(y, b, t, dy, row_loss)
    else:
        _softmax_rows_serial(y, b, t, dy, row_loss)


@njit(cache=True, nogil=True)
def relu_mask_rows(h, dh):
    """``dh = 0`` where ``h <= 0``, in place (the ReLU backward from its output `h`)."""
    if h.shape[0] >= PARALLEL_MIN_ROWS:
        _relu_mask_parallel(h, dh)
    else:
        _relu_mask_serial(h, dh)


@njit(cache=True, nogil=True)
def correct_rows(y, b, t, hit):
    """``hit[i] = argmax(y[i] + b) == t[i]`` (ties to the first class, as ``np.argmax``)."""
    if y.shape[0] >= PARALLEL_MIN_ROWS:
        _correct_parallel(y, b, t, hit)
    else:
        _correct_serial(y, b, t, hit)
