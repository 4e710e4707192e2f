"""Batch normalization (Ioffe & Szegedy, 2015) with the arithmetic of the book's
``BatchNormalization`` layer, on C-contiguous ``(n, D)`` batches.

4-D input ``(N, C, H, W)`` is normalized per feature as the book does: callers reshape it
to ``(N, C*H*W)`` (a view) before calling these kernels.

Passes over memory. The training forward makes three passes over the batch (column means;
``xc = x - mu`` together with the column sums of ``xc**2``; ``xn``, ``out``), the least the
book's two-pass variance allows; the backward makes two (the four column sums it needs;
``dx``).

Threads and bits. Column sums run over fixed blocks of :data:`BLOCK_ROWS` rows: each block
sums its rows in order, then the blocks' partial sums are added in block order. The
partition depends on the batch size only, so the serial and the parallel twins give
identical bits for any number of threads. The parallel twins hand whole blocks of rows to
the threads (full rows keep the inner loops long and vectorized) and run above
:data:`._compile.PARALLEL_MIN_ELEMENTS` elements and more than one block.
"""
import numpy as np
from numba import njit, prange

from ._compile import PARALLEL_MIN_ELEMENTS, twins
from ._dispatch import twins_with_runner

#: The book's ``10e-7`` added to the variance before the square root.
EPS_BN = 10e-7

#: Rows per block of the column sums. Each block sums its rows in order; the blocks'
#: partial sums are then added in block order. The partition depends on n only, so both
#: twins and every thread count give the same bits; up to this many rows a column sum is
#: the plain row-by-row sum of NumPy's ``x.sum(axis=0)``.
BLOCK_ROWS = 128

#: Partial sums per block of :func:`batchnorm_backward`: its work space has this many rows
#: per block (see :func:`batchnorm_work_rows`).
_BACKWARD_SUMS = 4


@njit(cache=True, nogil=True)
def _blocks(n):
    return (n + BLOCK_ROWS - 1) // BLOCK_ROWS


@njit(cache=True, nogil=True)
def batchnorm_work_rows(n):
    """Rows of the work space :func:`batchnorm_backward` needs for a batch of `n` rows
    (each row holds D elements of the batch's dtype)."""
    return _BACKWARD_SUMS * _blocks(n)


@njit(cache=True, nogil=True)
def _parallel(n, D):
    return n * D >= PARALLEL_MIN_ELEMENTS and n > BLOCK_ROWS


@njit(cache=True, nogil=True, inline="always")
def _zeroed(row):
    # `row` set to 0 and returned: a block's partial sums of the forward passes.
    for j in range(row.shape[0]):
        row[j] = 0
    return row


@njit(cache=True, nogil=True)
def _add_blocks(parts, stride, first, nb, total):
    """``total = parts[first] + parts[first + stride] + ...`` over `nb` blocks, in order
    (`total` may be ``parts[first]``)."""
    D = total.shape[0]
    p0 = parts[first]
    for j in range(D):
        total[j] = p0[j]
    for b in range(1, nb):
        pb = parts[first + b * stride]
        for j in range(D):
            total[j] += pb[j]


def _forward_train_body(x, gamma, beta, momentum, running_mean, running_var, xc, xn, std,
                        out):
    n, D = x.shape
    t = x.dtype.type
    count = t(n)
    eps = t(EPS_BN)
    keep = t(momentum)
    # (1 - momentum) in float64 first, then cast: the book's `(1-self.momentum) * mu`.
    take = t(1.0 - momentum)
    nb = _blocks(n)
    # Work space without a work argument: the blocks' partial sums go to the first rows of
    # xn and the column means to out's first row; the last pass overwrites both and reads
    # only xc and std.
    mu = out[0]
    # Pass 1: mu = x.mean(axis=0).
    for b in prange(nb):
        part = _zeroed(xn[b])
        for i in range(b * BLOCK_ROWS, min(n, (b + 1) * BLOCK_ROWS)):
            xi = x[i]
            for j in range(D):
                part[j] += xi[j]
    _add_blocks(xn, 1, 0, nb, mu)
    for j in range(D):
        mu[j] = mu[j] / count
        running_mean[j] = keep * running_mean[j] + take * mu[j]
    # Pass 2: xc = x - mu and the column sums of xc**2, in one pass.
    for b in prange(nb):
        part = _zeroed(xn[b])
        for i in range(b * BLOCK_ROWS, min(n, (b + 1) * BLOCK_ROWS)):
            xi = x[i]
            ci = xc[i]
            for j in range(D):
                v = xi[j] - mu[j]
                ci[j] = v
                part[j] += v * v
    _add_blocks(xn, 1, 0, nb, std)
    for j in range(D):
        var = std[j] / count
        running_var[j] = keep * running_var[j] + take * var
        std[j] = np.sqrt(var + eps)
    # Pass 3: xn = xc / std, out = gamma * xn + beta.
    for i in prange(n):
        ci = xc[i]
        ni = xn[i]
        oi = out[i]
        for j in range(D):
            v = ci[j] / std[j]
            ni[j] = v
            oi[j] = gamma[j] * v + beta[j]


def _forward_eval_body(x, gamma, beta, running_mean, running_var, out):
    n, D = x.shape
    eps = x.dtype.type(EPS_BN)
    # The square root is taken per element (the book's `xc / np.sqrt(running_var +
    # 10e-7)` gives the same value in every row): no work space is needed when `out` is
    # `x`.
    for i in prange(n):
        xi = x[i]
        oi = out[i]
        for j in range(D):
            v = (xi[j] - running_mean[j]) / np.sqrt(running_var[j] + eps)
            oi[j] = gamma[j] * v + beta[j]


def _backward_body(dout, xc, xn, std, gamma, dgamma, dbeta, dx, work):
    n, D = dout.shape
    t = dout.dtype.type
    count = t(n)
    two_n = t(2.0 / n)  # the book's `(2.0 / self.batch_size)`, a float64 cast to the dtype
    half = t(0.5)
    nb = _blocks(n)
    # Pass A: the four column sums everything else follows from, per block of rows into
    # rows of `work`. The book's per-column factors are taken out of its sums,
    #     sum(dxn * xc / (std * std)) = gamma * sum(dout * xc) / (std * std)
    #     dmu = sum(dxc) = gamma * sum(dout) / std + (2/n) * dvar * sum(xc),
    # which leaves no division in this pass (faster than the book's two divisions per
    # element: docs/decisions/elementwise-kernels.md), needs no second pass for dmu, and
    # differs from the book's sums only in rounding.
    for b in prange(nb):
        p_dbeta = work[_BACKWARD_SUMS * b]
        p_dgamma = work[_BACKWARD_SUMS * b + 1]
        p_dout_xc = work[_BACKWARD_SUMS * b + 2]
        p_xc = work[_BACKWARD_SUMS * b + 3]
        for j in range(D):
            p_dbeta[j] = 0
            p_dgamma[j] = 0
            p_dout_xc[j] = 0
            p_xc[j] = 0
        for i in range(b * BLOCK_ROWS, min(n, (b + 1) * BLOCK_ROWS)):
            gi = dout[i]
            ci = xc[i]
            ni = xn[i]
            for j in range(D):
                d = gi[j]
                c = ci[j]
                p_dbeta[j] += d
                p_dgamma[j] += ni[j] * d
                p_dout_xc[j] += d * c
                p_xc[j] += c
    _add_blocks(work, _BACKWARD_SUMS, 0, nb, dbeta)
    _add_blocks(work, _BACKWARD_SUMS, 1, nb, dgamma)
    dvar = work[2]  # sum(dout * xc), then dvar
    dmu_n = work[3]  # sum(xc), then dmu / n
    _add_blocks(work, _BACKWARD_SUMS, 2, nb, dvar)
    _add_blocks(work, _BACKWARD_SUMS, 3, nb, dmu_n)
    for j in range(D):
        s = std[j]
        dstd = -(gamma[j] * dvar[j]) / (s * s)
        dv = half * dstd / s  # the book's dvar = 0.5 * dstd / std
        dvar[j] = dv
        dmu = (gamma[j] * dbeta[j]) / s + two_n * dv * dmu_n[j]
        dmu_n[j] = dmu / count
    # Pass B: dx = dxn / std + (2/n) * xc * dvar - dmu / n, the book's expression element by
    # element. dx may be dout: each element is read before it is written.
    for i in prange(n):
        gi = dout[i]
        ci = xc[i]
        di = dx[i]
        for j in range(D):
            dxc = (gamma[j] * gi[j]) / std[j]
            dxc = dxc + two_n * ci[j] * dvar[j]
            di[j] = dxc - dmu_n[j]


# error_model="numpy": no ZeroDivisionError check per division (std >= sqrt(EPS_BN) > 0,
# n >= 1); the check is a branch that kept LLVM from vectorizing the loops.
_forward_train_serial, _forward_train_parallel = twins(_forward_train_body,
                                                       error_model="numpy")
_forward_eval_serial, _forward_eval_parallel, _forward_eval_run = twins_with_runner(
    _forward_eval_body, error_model="numpy")
_backward_serial, _backward_parallel = twins(_backward_body, error_model="numpy")


@njit(cache=True, nogil=True)
def batchnorm_forward_train(x, gamma, beta, momentum, running_mean, running_var, xc, xn, std,
                            out):
    """Training-mode batch normalization, updating the running statistics in place.

    The book's arithmetic, in the array dtype::

        mu  = x.mean(axis=0)            xc  = x - mu
        var = (xc**2).mean(axis=0)      std = sqrt(var + EPS_BN)
        xn  = xc / std                  out = gamma * xn + beta
        running_mean = momentum * running_mean + (1 - momentum) * mu
        running_var  = momentum * running_var  + (1 - momentum) * var

    Parameters
    ----------
    x : ndarray, (n, D), float32 or float64, C-contiguous
        An empty batch (n = 0) writes nothing.
    gamma, beta : ndarray, (D,), dtype of `x`
        Scale and shift.
    momentum : float
        Weight of the old running statistics (the book's 0.9).
    running_mean, running_var : ndarray, (D,), dtype of `x`
        Updated in place.
    xc : ndarray, (n, D), dtype of `x`, C-contiguous
        Written with ``x - mu``. May be `x` itself (centred in place).
    xn : ndarray, (n, D), dtype of `x`, C-contiguous
        Written with the normalized batch (its first rows are work space until then).
    std : ndarray, (D,), dtype of `x`
        Written with ``sqrt(var + EPS_BN)``.
    out : ndarray, (n, D), dtype of `x`, C-contiguous
        Written with ``gamma * xn + beta`` (its first row is work space until then).

    Notes
    -----
    `xn`, `std` and `out` must not overlap each other or `x`/`xc`; `xc` and `x` are either
    the same array or disjoint.
    """
    n, D = x.shape
    if n == 0:
        return  # no statistics to take: nothing is written
    if _parallel(n, D):
        _forward_train_parallel(x, gamma, beta, momentum, running_mean, running_var, xc, xn,
                                std, out)
    else:
        _forward_train_serial(x, gamma, beta, momentum, running_mean, running_var, xc, xn,
                              std, out)


@njit(cache=True, nogil=True)
def batchnorm_forward_eval(x, gamma, beta, running_mean, running_var, out):
    """Inference-mode batch normalization with the running statistics.

    ``out = gamma * ((x - running_mean) / sqrt(running_var + EPS_BN)) + beta``, the book's
    order of operations, in the array dtype.

    Parameters
    ----------
    x : ndarray, (n, D), float32 or float64, C-contiguous
    gamma, beta, running_mean, running_var : ndarray, (D,), dtype of `x`
    out : ndarray, (n, D), dtype of `x`, C-contiguous
        Written in place; may be `x` itself.
    """
    n, D = x.shape
    _forward_eval_run((x, gamma, beta, running_mean, running_var, out), n * D, PARALLEL_MIN_ELEMENTS)


@njit(cache=True, nogil=True)
def batchnorm_backward(dout, xc, xn, std, gamma, dgamma, dbeta, dx, work=None):
    """Gradients of training-mode batch normalization, the book's backward pass.

    With ``n`` rows, in the array dtype::

        dbeta  = dout.sum(axis=0)             dgamma = (xn * dout).sum(axis=0)
        dxn    = gamma * dout                 dxc    = dxn / std
        dstd   = -((dxn * xc) / (std * std)).sum(axis=0)
        dvar   = 0.5 * dstd / std             dxc   += (2.0 / n) * xc * dvar
        dmu    = dxc.sum(axis=0)              dx     = dxc - dmu / n

    except that the per-column factors are taken out of the column sums, ``dstd = -gamma *
    (dout * xc).sum(0) / (std * std)`` and ``dmu = gamma * dbeta / std + (2/n) * dvar *
    xc.sum(0)``, so that all sums come from one pass without divisions (the same values up
    to rounding). ``dx`` is then the book's expression element by element.

    Parameters
    ----------
    dout : ndarray, (n, D), float32 or float64, C-contiguous
        Upstream gradient.
    xc, xn : ndarray, (n, D), dtype of `dout`, C-contiguous
        The centred and the normalized batch of the forward pass.
    std : ndarray, (D,), dtype of `dout`
        The forward pass's ``sqrt(var + EPS_BN)``.
    gamma : ndarray, (D,), dtype of `dout`
    dgamma, dbeta : ndarray, (D,), dtype of `dout`
        Written in place.
    dx : ndarray, (n, D), dtype of `dout`, C-contiguous
        Written in place; may be `dout` itself.
    work : ndarray, (batchnorm_work_rows(n), D), dtype of `dout`, C-contiguous, optional
        Work space for the blocks' partial sums (contents unspecified afterwards). Without
        it the kernel allocates one per call; pass one to keep a training step free of
        allocations.
    """
    n, D = dout.shape
    if n == 0:
        for j in range(D):
            dgamma[j] = 0
            dbeta[j] = 0
        return
    if work is None:
        scratch = np.empty((batchnorm_work_rows(n), D), dout.dtype)
    else:
        scratch = work
    if _parallel(n, D):
        _backward_parallel(dout, xc, xn, std, gamma, dgamma, dbeta, dx, scratch)
    else:
        _backward_serial(dout, xc, xn, std, gamma, dgamma, dbeta, dx, scratch)
