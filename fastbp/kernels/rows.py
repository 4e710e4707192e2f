"""Row passes shared by the fused training steps (two-layer and any depth).

Everything a training step does between two matrix products is a pass over the rows of a
batch: bias + activation, softmax-cross-entropy, the ReLU mask of the backward pass, the
argmax of the evaluation. Each body here is written once and compiled into a serial and a
parallel twin (:func:`._compile.twins`); the ``*_rows`` dispatchers pick the parallel twin
from :data:`._compile.PARALLEL_MIN_ROWS` rows. Every row is computed by one thread and
nothing is summed across rows, so both twins give the same bits.

Activation codes (:data:`RELU`, :data:`SIGMOID`, :data:`IDENTITY`, :data:`TANH`) and output
codes (:data:`SOFTMAX_CE`, :data:`LOGISTIC_CE`) are plain ints so that one compiled function
serves every network; the branch on the code sits outside the inner loops.
"""
import numpy as np
from numba import njit, prange

from ._compile import PARALLEL_MIN_ROWS, SOFTMAX_BLOCK
from ._dispatch import twins_with_runner
from ._vexp import exp_nonpos
from .activations import sigmoid_scalar
from .softmax import finish_row, target_prob

#: Activation codes of :func:`bias_act_rows` and the any-depth step (TANH: ``np.tanh``).
RELU, SIGMOID, IDENTITY, TANH = 0, 1, 2, 3
# Softmax over the row, for :func:`probability_rows` only (an output, not a hidden layer's
# activation): the inference pass of the output layer shares bias_act_rows' row loop.
_SOFTMAX = 4
#: Output codes of :func:`output_rows` and the any-depth step: softmax with cross-entropy
#: (one class per row), or an independent sigmoid per output with binary cross-entropy
#: (binary and multilabel targets; scikit-learn's 'logistic' output).
SOFTMAX_CE, LOGISTIC_CE = 0, 1


# The sigmoid and softmax rows are calls, not inlined: bias_act_rows' twins are compiled
# for every ReLU network, and inlining these branches into them took their compile time
# from 0.8 to 1.8 s (benchmarks/compile_cost.py, docs/decisions/cold-start.md).
@njit(cache=True, nogil=True)
def _add_bias_sigmoid(row, b, one):
    # row = sigmoid(row + b), in place: a SIGMOID hidden layer's and the LOGISTIC_CE
    # output's inference pass.
    for j in range(row.shape[0]):
        row[j] = sigmoid_scalar(row[j] + b[j], one)


@njit(cache=True, nogil=True)
def _add_bias_softmax(row, b):
    # row = softmax(row + b), in place: the SOFTMAX_CE output's inference pass.
    C = row.shape[0]
    for c in range(C):
        row[c] += b[c]
    mx = row[0]
    for c in range(1, C):
        if row[c] > mx:
            mx = row[c]
    s = 0.0
    for c in range(C):
        e = exp_nonpos(row[c] - mx)
        row[c] = e
        s += e
    inv_s = 1.0 / s
    for c in range(C):
        row[c] = row[c] * inv_s


def _bias_act_body(z, b, act, smooth):
    # z[i] = act(z[i] + b), in place. ReLU as `0 if v <= 0 else v` so NaN passes through,
    # as in relu_forward and the book's `out[x <= 0] = 0`. `smooth` None: the branches of
    # the smooth activations are pruned before typing (their callees are not compiled).
    n, d = z.shape
    one = z.dtype.type(1.0)
    for i in prange(n):
        zi = z[i]
        if act == RELU:
            for j in range(d):
                v = zi[j] + b[j]
                zi[j] = 0 if v <= 0 else v
        elif smooth is None:
            for j in range(d):
                zi[j] = zi[j] + b[j]
        elif act == SIGMOID:
            _add_bias_sigmoid(zi, b, one)
        elif act == TANH:
            for j in range(d):
                zi[j] = np.tanh(zi[j] + b[j])
        elif act == _SOFTMAX:
            _add_bias_softmax(zi, b)
        else:
            for j in range(d):
                zi[j] = zi[j] + b[j]


def _softmax_rows_body(y, b, t, dy, row_loss, scale=1.0):
    # y += b, then softmax-CE row by row as softmax.softmax_ce_row, except that the exponentials of a
    # block of rows run as one flat loop over block * C contiguous values, which LLVM
    # vectorizes (a row's C = 10 values did not). The same operations in the same order:
    # the same bits as softmax.softmax_ce_row (scale = 1.0 gives inv_n = 1.0 / n exactly).
    n, C = y.shape
    inv_n = scale / n
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
            row_loss[i] = finish_row(y, t, dy, i, 1.0 / s, inv_n, row_loss[i] + np.log(s))


def _logistic_rows_body(y, b, t, dy, row_loss, scale):
    # y += b, then per output an independent sigmoid with binary cross-entropy, from the
    # logit z: loss = softplus(z) - t*z = max(z, 0) + log1p(exp(-|z|)) - t*z (finite for
    # any finite z), gradient (sigmoid(z) - t) * scale / n.
    n, C = y.shape
    inv_n = scale / n
    for i in prange(n):
        loss = 0.0
        for c in range(C):
            z = y[i, c] + b[c]
            y[i, c] = z
            e = exp_nonpos(-abs(np.float64(z)))
            inv = 1.0 / (1.0 + e)
            p = inv if z >= 0 else e * inv
            tc = target_prob(t, i, c)
            dy[i, c] = (p - tc) * inv_n
            loss += max(z, 0.0) + np.log1p(e) - tc * z
        row_loss[i] = loss


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


_bias_act_serial, _bias_act_parallel, _bias_act_run = twins_with_runner(_bias_act_body)
_softmax_rows_serial, _softmax_rows_parallel, _softmax_rows_run = twins_with_runner(_softmax_rows_body)
_logistic_rows_serial, _logistic_rows_parallel, _logistic_rows_run = twins_with_runner(_logistic_rows_body)
_relu_mask_serial, _relu_mask_parallel, _relu_mask_run = twins_with_runner(_relu_mask_body)
_correct_serial, _correct_parallel, _correct_run = twins_with_runner(_correct_body)


# The entry points below are inlined into their callers (inline="always"): each is a call of
# a twin runner, and every call level that is its own function makes a cold start compile its
# callees again (docs/decisions/cold-start.md).
@njit(cache=True, nogil=True, inline="always")
def bias_act_rows(z, b, act, parallel=True, smooth=True):
    """``z = act(z + b)`` in place, row by row.

    Parameters
    ----------
    z : ndarray, (n, d), float32 or float64, C-contiguous; overwritten.
    b : ndarray, (d,), dtype of `z`.
    act : int
        :data:`RELU`, :data:`SIGMOID`, :data:`TANH` or :data:`IDENTITY` (bias only).
    parallel : None, optional
        ``None`` leaves the parallel twin out of the compiled code (the serial one runs
        for any size, with the same bits); for callers that know their rows stay below
        the threshold (see ``network.two_layer_step``).
    smooth : None, optional
        ``None`` leaves the sigmoid, tanh and softmax code out of the compiled code, for
        callers whose `act` is always :data:`RELU` or :data:`IDENTITY` (any other `act`
        then adds the bias only): less to compile on a cold start
        (docs/decisions/cold-start.md).
    """
    _bias_act_run((z, b, act, smooth), z.shape[0],
              PARALLEL_MIN_ROWS, parallel)


@njit(cache=True, nogil=True, inline="always")
def softmax_rows(y, b, t, dy, row_loss, parallel=True):
    """``y += b``, then per row the softmax-cross-entropy loss and its gradient.

    Parameters
    ----------
    y : ndarray, (n, C), float32 or float64, C-contiguous
        Logits without the bias; the bias is added in place.
    b : ndarray, (C,), dtype of `y`.
    t : ndarray, (n,) integer labels in [0, C), or (n, C) one-hot rows of `y`'s dtype.
    dy : ndarray, (n, C), dtype of `y`: written with ``(softmax(y) - t) / n``.
    row_loss : ndarray, (n,), float64: written with each row's loss.
    parallel : None, optional
        As in :func:`bias_act_rows`.
    """
    _softmax_rows_run((y, b, t, dy, row_loss, 1.0), y.shape[0],
              PARALLEL_MIN_ROWS, parallel)


@njit(cache=True, nogil=True, inline="always")
def output_rows(y, b, t, dy, row_loss, out_kind, scale):
    """``y += b``, then per row the loss of the output `out_kind` and its gradient.

    Parameters
    ----------
    y : ndarray, (n, C), float32 or float64, C-contiguous
        Logits without the bias; the bias is added in place.
    b : ndarray, (C,), dtype of `y`.
    t : ndarray, (n,) integer labels in [0, C) (one-hot targets), or (n, C) target rows of
        `y`'s dtype (for :data:`LOGISTIC_CE`, each entry in [0, 1]).
    dy : ndarray, (n, C), dtype of `y`
        Written with the gradient of the mean loss times `scale`:
        ``(softmax(y) - t) * scale / n`` or ``(sigmoid(y) - t) * scale / n``.
    row_loss : ndarray, (n,), float64
        Written with each row's loss (not scaled): the cross-entropy
        ``-sum_j t_j log softmax(y)_j``, or the binary cross-entropy summed over the
        row's outputs, ``-sum_j t_j log p_j + (1 - t_j) log(1 - p_j)``.
    out_kind : int
        :data:`SOFTMAX_CE` or :data:`LOGISTIC_CE`.
    scale : float
        Factor on the gradient only (1.0: the gradient of the mean loss).
    """
    args = (y, b, t, dy, row_loss, scale)
    if out_kind == LOGISTIC_CE:
        _logistic_rows_run(args, y.shape[0],
                  PARALLEL_MIN_ROWS)
    else:
        _softmax_rows_run(args, y.shape[0],
                  PARALLEL_MIN_ROWS)


@njit(cache=True, nogil=True, inline="always")
def probability_rows(y, b, out_kind):
    """``y = softmax(y + b)`` (:data:`SOFTMAX_CE`) or ``sigmoid(y + b)``
    (:data:`LOGISTIC_CE`) in place, row by row: the output layer at inference.

    Parameters
    ----------
    y : ndarray, (n, C), float32 or float64, C-contiguous; overwritten.
    b : ndarray, (C,), dtype of `y`.
    out_kind : int
    """
    bias_act_rows(y, b, SIGMOID if out_kind == LOGISTIC_CE else _SOFTMAX)


@njit(cache=True, nogil=True, inline="always")
def relu_mask_rows(h, dh, parallel=True):
    """``dh = 0`` where ``h <= 0``, in place (the ReLU backward from its output `h`);
    `parallel` as in :func:`bias_act_rows`."""
    _relu_mask_run((h, dh), h.shape[0],
              PARALLEL_MIN_ROWS, parallel)


@njit(cache=True, nogil=True, inline="always")
def correct_rows(y, b, t, hit, parallel=True):
    """``hit[i] = argmax(y[i] + b) == t[i]`` (ties to the first class, as ``np.argmax``);
    `parallel` as in :func:`bias_act_rows`."""
    _correct_run((y, b, t, hit), y.shape[0],
              PARALLEL_MIN_ROWS, parallel)
