"""The backward pass of an affine layer on a one-row batch, fused with the optimizer's update.

With one row ``a`` (d_in,) and its output gradient ``dz`` (d_out,), the weight gradient is
the outer product ``dW[k] = a[k] * dz`` and the input gradient ``da[k] = W[k] . dz``. Each
row ``k`` of ``W`` is needed three times: for ``da[k]`` (before the update), for writing
``dW[k]`` and for the optimizer's update. Done as three passes (the unfused step) the
(d_in, d_out) arrays travel through the cache three times; here a block of rows is read once
while it sits in the L2 cache: its input-gradient entries, its gradient rows, then the
update of the block (:func:`.optimizers.optimizer_update`, the same arithmetic and bits as
the unfused pass). For the book's SimpleConvNet at batch 1 (W2 is 4320 x 100, 432k of its
434k parameters) this is most of the step (docs/decisions/convolution.md).

:func:`one_row_forward`, the layer's forward product, splits the rows of ``W`` into the
same blocks, so that on Numba's pool each block of ``W`` is read and written by one thread
only: the update's static split of the blocks (the same trip count, the same contiguous
halves) gives every block to the thread whose forward read it. With a serial forward, the
main thread read the rows the other thread had just updated; where the two cores share no
cache (a VM whose two vCPUs sat on far-apart cores for seconds at a time) that transfer
doubled the one-row ConvNet step (docs/decisions/convolution.md).
"""
from numba import njit, prange

from ._compile import ONE_ROW_BLOCK_ELEMENTS
from ._dispatch import twins_with_runner
from .affine import dot_reassoc
from .optimizers import optimizer_update, state_part


@njit(cache=True, nogil=True)
def block_rows(d_out):
    """Rows of a (d_in, `d_out`) weight matrix per block of the one-row passes."""
    return max(1, ONE_ROW_BLOCK_ELEMENTS // d_out)


@njit(cache=True, nogil=True)
def one_row_partial_size(d_in, d_out):
    """Elements of the `partial` work space of :func:`one_row_forward`: one row of
    `d_out` per block of rows of ``W``."""
    rows = block_rows(d_out)
    return (d_in + rows - 1) // rows * d_out


def _one_row_forward_body(a, W, partial):
    d_in, d_out = W.shape
    rows = block_rows(d_out)
    blocks = (d_in + rows - 1) // rows
    for blk in prange(blocks):
        acc = partial[blk]
        for j in range(d_out):
            acc[j] = 0
        for k in range(blk * rows, min(d_in, (blk + 1) * rows)):
            ak = a[k]
            if ak != 0:  # a ReLU's output is mostly 0; NaN is != 0 and is kept
                Wk = W[k]
                for j in range(d_out):
                    acc[j] += ak * Wk[j]


_forward_serial, _forward_parallel, _forward_run = twins_with_runner(_one_row_forward_body)


@njit(cache=True, nogil=True)
def one_row_forward(a, W, partial, out, min_parallel):
    """``out = a @ W`` for one row, by the blocks of rows of :func:`one_row_backward_update`.

    Parameters
    ----------
    a : ndarray, (d_in,), float32 or float64
    W : ndarray, (d_in, d_out), dtype of `a`, C-contiguous
    partial : ndarray, dtype of `a`, C-contiguous
        Work space of at least ``one_row_partial_size(d_in, d_out)`` elements (each block's
        sum); overwritten.
    out : ndarray, (d_out,), dtype of `a`
        Written with the product.
    min_parallel : int
        Elements of `W` from which the blocks run on Numba's pool. Pass the value given to
        :func:`one_row_backward_update` of the same `W`, so that each block stays with one
        thread (module docstring).

    Notes
    -----
    Rows where ``a[k] == 0`` are skipped (``0 * inf`` gives 0, not NaN, as in the sparse
    products of :mod:`._sparse`). Each block sums its rows in order and the blocks' sums
    are added in block order: the same bits on any number of threads.
    """
    d_in, d_out = W.shape
    size = one_row_partial_size(d_in, d_out)
    sums = partial[:size].reshape(size // d_out, d_out)
    _forward_run((a, W, sums), W.size, min_parallel)
    for j in range(d_out):
        out[j] = 0
    for blk in range(sums.shape[0]):
        for j in range(d_out):
            out[j] += sums[blk, j]


def _one_row_body(kind, a, dz, W, dW, state1, state2, lr, c1, c2, decay, da, relu_input):
    d_in, d_out = W.shape
    rows = block_rows(d_out)
    blocks = (d_in + rows - 1) // rows
    for blk in prange(blocks):
        lo = blk * rows
        hi = min(d_in, lo + rows)
        for k in range(lo, hi):
            ak = a[k]
            if da.size > 0:
                # the input gradient from W before the update; where a ReLU's output is 0 the
                # ReLU drops it: 0 without the dot product
                da[k] = 0 if relu_input and ak <= 0 else dot_reassoc(W[k], dz, d_out)
            row = dW[k]
            for j in range(d_out):
                row[j] = ak * dz[j]
        optimizer_update(kind, W[lo:hi], dW[lo:hi], state_part(state1, lo, hi),
                         state_part(state2, lo, hi), lr, c1, c2, decay, None)


_one_row_serial, _one_row_parallel, _one_row_run = twins_with_runner(_one_row_body)


@njit(cache=True, nogil=True)
def one_row_backward_update(kind, a, dz, W, dW, state1, state2, lr, c1, c2, decay, da,
                            relu_input, min_parallel):
    """Weight gradient, input gradient and optimizer update of ``z = a @ W + b``, one row.

    Parameters
    ----------
    kind : int
        The optimizer, :data:`.optimizers.SGD` ... :data:`.optimizers.ADAM`.
    a : ndarray, (d_in,), float32 or float64
        The layer's input row.
    dz : ndarray, (d_out,), dtype of `a`
        The gradient of the loss with respect to the layer's output row.
    W : ndarray, (d_in, d_out), dtype of `a`, C-contiguous
        Updated in place (after `da` was computed from it).
    dW : ndarray, (d_in, d_out), dtype of `a`, C-contiguous
        Written with the weight gradient ``outer(a, dz)`` (weight decay not included).
    state1, state2 : ndarray, (d_in, d_out) or size 0, dtype of `a`, C-contiguous
        The optimizer's state of `W` (:func:`.optimizers.optimizer_update`), updated in place.
    lr, c1, c2, decay : float
        The optimizer's scalars and the L2 weight-decay coefficient
        (:func:`.optimizers.optimizer_update`).
    da : ndarray, (d_in,) or size 0, dtype of `a`
        Written with ``W @ dz`` (the input gradient, from `W` before the update); size 0:
        not computed.
    relu_input : bool
        True when `a` is a ReLU's output: where ``a[k] <= 0``, ``da[k]`` is written 0
        without its dot product (the ReLU's backward would drop it).
    min_parallel : int
        Elements of `W` from which the blocks of rows run on Numba's pool (each element is
        computed on its own: the same bits at any thread count).

    Notes
    -----
    Each ``da[k]`` is a dot product summed in the order LLVM vectorizes it
    (:func:`.affine.dot_reassoc`), the same on every call on one machine, not the strict
    left-to-right order.
    """
    _one_row_run((kind, a, dz, W, dW, state1, state2, lr, c1, c2, decay, da, relu_input),
              W.size, min_parallel)


@njit(cache=True, nogil=True)
def one_row_backward_update_at(kind, a, dz, flat, grads, state1, state2, lo, lr, c1, c2,
                               decay, da, relu_input, min_parallel):
    """:func:`one_row_backward_update` of the weight matrix stored in a flat parameter
    buffer (the fused training steps' layout): ``W = flat[lo:hi].reshape(a.size, dz.size)``,
    its gradient at the same offsets of `grads` and its optimizer state at the same offsets
    of `state1` and `state2` (each of size 0 when the optimizer has none)."""
    shape = (a.size, dz.size)
    hi = lo + a.size * dz.size
    s1 = state1[lo:hi].reshape(shape) if state1.size > 0 else state1[:0].reshape((0, 0))
    s2 = state2[lo:hi].reshape(shape) if state2.size > 0 else state2[:0].reshape((0, 0))
    one_row_backward_update(kind, a, dz, flat[lo:hi].reshape(shape),
                            grads[lo:hi].reshape(shape), s1, s2, lr, c1, c2, decay, da,
                            relu_input, min_parallel)
