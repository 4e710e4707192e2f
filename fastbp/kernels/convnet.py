"""The training step of the book's ``SimpleConvNet`` as one compiled call.

conv - ReLU - max pool - Affine - ReLU - Affine - softmax-cross-entropy, forward and
backward, and the optimizer's update of every parameter. The convolution block is
:func:`.conv.conv_relu_pool_forward` / :func:`.conv.conv_relu_pool_backward` (the
convolution output is never stored, the first layer's input gradient never computed); the
two affine layers use the engine of the fully connected networks (:func:`.affine.product`,
:func:`.affine.weight_grad`, :func:`.affine.input_grad`, BLAS or loops by size) and its
row passes (:mod:`.rows`); a one-row batch runs W2 by blocks of rows (:mod:`.onerow`).
Every parameter lives in one flat buffer ``flat`` at the offsets of a small int64 vector
``layout`` (entries :data:`W1_OFF` ... :data:`OUT`), so the optimizer's update is one pass
over contiguous memory (:func:`.optimizers.optimizer_update`).

Work space for a batch size is one float ``arena`` and one int32 ``index`` buffer, sized by
:func:`convnet_arena_size` and :func:`convnet_index_size` and carved at offsets every
function here recomputes the same way.
"""
from numba import njit

# CONVNET_BLAS_THREADS: the policy fastbp.convnet applies around these kernels' calls,
# re-exported here so that module needs no private one
from ._compile import CONVNET_BLAS_THREADS  # noqa: F401
from ._compile import (CONVNET_LOOP_MAX_ROWS, CONVNET_UPDATE_PARALLEL_MIN_ELEMENTS,
                       require_c_contiguous)
from .affine import (column_sum, input_grad, input_grad_loops, matmul_loops, product,
                     weight_grad, weight_grad_loops)
from .conv import (conv_relu_pool_backward, conv_relu_pool_forward, crp_backward_work_size,
                   crp_scratch_size)
from ._sparse import gather_rows, list_stride
from .onerow import one_row_backward_update_at, one_row_forward, one_row_partial_size
from .optimizers import optimizer_update, state_part
from .rows import RELU, bias_act_rows, correct_rows, relu_mask_rows, softmax_rows

#: Entries of the ``layout`` vector: offsets into ``flat`` of W1 (FN, C, FH, FW), b1,
#: W2 (FN * PH * PW, HIDDEN), b2, W3 (HIDDEN, OUT), b3; the convolution's stride and pad;
#: the pooling window and stride; the sizes of the input (C, H, W), of the filters (FN,
#: FH, FW), of the convolution output (OH, OW), of the pooled output (PH, PW), of the
#: hidden layer and of the output.
(W1_OFF, B1_OFF, W2_OFF, B2_OFF, W3_OFF, B3_OFF, STRIDE, PAD, POOL, POOL_STRIDE, C, H, W,
 FN, FH, FW, OH, OW, PH, PW, HIDDEN, OUT) = range(22)
LAYOUT_SIZE = 22


@njit(cache=True, nogil=True)
def _pooled(layout):
    return layout[FN] * layout[PH] * layout[PW]


@njit(cache=True, nogil=True)
def _scratch(layout):
    # one sample's work space of the convolution block
    return crp_scratch_size(layout[C], layout[H], layout[W], layout[FH], layout[FW],
                            layout[STRIDE], layout[PAD])


@njit(cache=True, nogil=True)
def _dense_work(layout):
    # per filter: the work space of the convolution block's backward
    return crp_backward_work_size(layout[H], layout[W], layout[FH], layout[STRIDE],
                                  layout[PAD])


@njit(cache=True, nogil=True)
def convnet_arena_size(n, layout):
    """Float elements of the work space of a batch of `n` rows (the int32 ``index`` buffer:
    :func:`convnet_index_size`): the convolution block's scratch, the pooled output and its
    gradient, the hidden layer and its gradient, the logits and their gradient, the
    work space of the convolution block's backward (per filter, not per row), and at its
    end the block sums of a one-row batch's ``pooled @ W2``
    (:func:`.onerow.one_row_forward`)."""
    return (n * (_scratch(layout) + 2 * _pooled(layout) + 2 * layout[HIDDEN]
                 + 2 * layout[OUT]) + layout[FN] * _dense_work(layout)
            + _partial_size(layout))


@njit(cache=True, nogil=True)
def _partial_size(layout):
    return one_row_partial_size(_pooled(layout), layout[HIDDEN])


@njit(cache=True, nogil=True)
def convnet_index_size(n, layout):
    """Elements of the int32 ``index`` buffer of a batch of `n` rows: the pooling's
    indices (``n * FN * PH * PW``), then the list of a one-row batch's non-zero inputs of
    either affine layer (``pooled @ W2`` and ``h @ W3`` from their non-zero rows only), as
    long as the wider of the two inputs needs."""
    return n * _pooled(layout) + list_stride(max(_pooled(layout), layout[HIDDEN]))


@njit(cache=True, nogil=True)
def _part(arena, off, size):
    return arena[off:off + size]


@njit(cache=True, nogil=True)
def _product(a, W, out, lists):
    # out = a @ W; one row from the list of its non-zero entries (written to `lists`)
    if a.shape[0] == 1:
        gather_rows(a, lists, W, out)
    elif a.shape[0] <= CONVNET_LOOP_MAX_ROWS:
        matmul_loops(a, W, out, False)
    else:
        product(a, W, out)


@njit(cache=True, nogil=True)
def _weight_grad(a, dz, dW):
    # dW = a.T @ dz; loops up to CONVNET_LOOP_MAX_ROWS (BLAS was slower at one row)
    if a.shape[0] <= CONVNET_LOOP_MAX_ROWS:
        weight_grad_loops(a, dz, dW)
    else:
        weight_grad(a, dz, dW)


@njit(cache=True, nogil=True)
def _input_grad(dz, W, da, a):
    # da = dz @ W.T; loops up to CONVNET_LOOP_MAX_ROWS, which write 0 without the product
    # where the ReLU output `a` is 0: the ReLU's backward, done (the BLAS result is not
    # masked: the caller masks it)
    if dz.shape[0] <= CONVNET_LOOP_MAX_ROWS:
        input_grad_loops(dz, W, da, a)
    else:
        input_grad(dz, W, da)


@njit(cache=True, nogil=True)
def _forward(x, flat, layout, arena, index):
    # Up to the logits without the last bias; returns (pooled, hidden, logits) views.
    n = x.shape[0]
    D = _pooled(layout)
    hid = layout[HIDDEN]
    out_n = layout[OUT]
    W1 = flat[layout[W1_OFF]:layout[W1_OFF] + layout[FN] * layout[C] * layout[FH]
              * layout[FW]].reshape(layout[FN], layout[C], layout[FH], layout[FW])
    b1 = flat[layout[B1_OFF]:layout[B1_OFF] + layout[FN]]
    W2 = flat[layout[W2_OFF]:layout[W2_OFF] + D * hid].reshape(D, hid)
    b2 = flat[layout[B2_OFF]:layout[B2_OFF] + hid]
    W3 = flat[layout[W3_OFF]:layout[W3_OFF] + hid * out_n].reshape(hid, out_n)
    off = 0
    scratch = _part(arena, off, n * _scratch(layout)).reshape(n, _scratch(layout))
    off += n * _scratch(layout)
    pooled = _part(arena, off, n * D)
    off += 2 * n * D  # the pooled output, then its gradient
    pooled4 = pooled.reshape(n, layout[FN], layout[PH], layout[PW])
    arg4 = index[:n * D].reshape(n, layout[FN], layout[PH], layout[PW])
    conv_relu_pool_forward(x, W1, b1, layout[STRIDE], layout[PAD], layout[POOL],
                           layout[POOL], layout[POOL_STRIDE], scratch, pooled4, arg4)
    h = _part(arena, off, n * hid).reshape(n, hid)
    off += 2 * n * hid
    lists = index[n * D:]
    if n == 1:
        # W2's blocks of rows on the threads that update them (fastbp.kernels.onerow)
        one_row_forward(pooled, W2, arena[arena.size - _partial_size(layout):], h[0],
                        CONVNET_UPDATE_PARALLEL_MIN_ELEMENTS)
    else:
        _product(pooled.reshape(n, D), W2, h, lists)
    bias_act_rows(h, b2, RELU, True, None)
    y = _part(arena, off, n * out_n).reshape(n, out_n)
    _product(h, W3, y, lists)
    return y


@njit(cache=True, nogil=True)
def _affine_backward(fused, kind, a, dz, flat, grads, state1, state2, w_off, lr, c1, c2, da):
    # The backward of ``z = a @ W`` (W at flat[w_off:]; `a` a ReLU's output): the weight
    # gradient into `grads` and `da`; `fused` (one row, an optimizer): with W's update, in one
    # pass over its rows (fastbp.kernels.onerow)
    if fused:
        one_row_backward_update_at(kind, a[0], dz[0], flat, grads, state1, state2, w_off, lr,
                                   c1, c2, 0.0, da[0], True,
                                   CONVNET_UPDATE_PARALLEL_MIN_ELEMENTS)
    else:
        d_in, d_out = a.shape[1], dz.shape[1]
        end = w_off + d_in * d_out
        _weight_grad(a, dz, grads[w_off:end].reshape(d_in, d_out))
        _input_grad(dz, flat[w_off:end].reshape(d_in, d_out), da, a)


@njit(cache=True, nogil=True)
def convnet_step(x, t, flat, grads, layout, arena, index, row_loss, kind, state1, state2,
                 lr, c1, c2):
    """Forward, backward and optimizer update of a SimpleConvNet on one batch.

    Parameters
    ----------
    x : ndarray, (n, C, H, W), float32 or float64, C-contiguous
    t : ndarray, (n,) integer labels in [0, OUT), or (n, OUT) one-hot rows of `x`'s dtype
    flat : ndarray, (P,), dtype of `x`
        Every parameter at the offsets of `layout`; updated in place when ``kind >= 0``.
    grads : ndarray, (P,), dtype of `x`
        Written with the gradient of the loss at the same offsets.
    layout : ndarray, (LAYOUT_SIZE,), int64
        See :data:`W1_OFF` ... :data:`OUT`.
    arena : ndarray, (convnet_arena_size(n, layout),), dtype of `x`
        Work space; overwritten.
    index : ndarray, (convnet_index_size(n, layout),), int32
        Work space (the pooling indices, a list of non-zero inputs); overwritten.
    row_loss : ndarray, (n,), float64
        Written with each row's cross-entropy.
    kind : int
        The optimizer (:data:`.optimizers.SGD` ... :data:`.optimizers.ADAM`), or -1 to
        compute the gradients only.
    state1, state2 : ndarray
        The optimizer's state at the offsets of `flat` (size 0 when unused).
    lr, c1, c2 : float
        The optimizer's scalars for this update (:func:`.optimizers.optimizer_update`).

    Returns
    -------
    float
        The mean loss of the batch before the update; -1.0 when an integer label is
        outside ``[0, OUT)``, and then nothing was touched.
    """
    require_c_contiguous(x, t, flat, grads, layout, arena, index, row_loss, state1, state2)
    n = x.shape[0]
    out_n = layout[OUT]
    if t.ndim == 1:
        for i in range(n):
            if t[i] < 0 or t[i] >= out_n:
                return -1.0
    D = _pooled(layout)
    hid = layout[HIDDEN]
    y = _forward(x, flat, layout, arena, index)
    off = n * _scratch(layout)
    pooled = _part(arena, off, n * D).reshape(n, D)
    dpooled = _part(arena, off + n * D, n * D).reshape(n, D)
    off += 2 * n * D
    h = _part(arena, off, n * hid).reshape(n, hid)
    dh = _part(arena, off + n * hid, n * hid).reshape(n, hid)
    off += 2 * n * hid
    dy = _part(arena, off + n * out_n, n * out_n).reshape(n, out_n)
    b3 = flat[layout[B3_OFF]:layout[B3_OFF] + out_n]
    softmax_rows(y, b3, t, dy, row_loss)
    loss = 0.0
    for i in range(n):
        loss += row_loss[i]
    loss /= n
    # Affine2, ReLU, Affine1 backward; for one row with an optimizer, fused with the
    # update of W3 and W2 (each block of rows read once: fastbp.kernels.onerow)
    fused = n == 1 and kind >= 0
    column_sum(dy, grads[layout[B3_OFF]:layout[B3_OFF] + out_n])
    _affine_backward(fused, kind, h, dy, flat, grads, state1, state2, layout[W3_OFF], lr, c1,
                     c2, dh)
    if n > CONVNET_LOOP_MAX_ROWS:  # the loops and the fused pass wrote 0 where h <= 0
        relu_mask_rows(h, dh)
    column_sum(dh, grads[layout[B2_OFF]:layout[B2_OFF] + hid])
    _affine_backward(fused, kind, pooled, dh, flat, grads, state1, state2, layout[W2_OFF],
                     lr, c1, c2, dpooled)
    # pooling, ReLU and convolution backward (no input gradient)
    fn, ph, pw = layout[FN], layout[PH], layout[PW]
    fsize = layout[FN] * layout[C] * layout[FH] * layout[FW]
    conv_relu_pool_backward(
        dpooled.reshape(n, fn, ph, pw), x, pooled.reshape(n, fn, ph, pw),
        index[:n * D].reshape(n, fn, ph, pw), layout[STRIDE], layout[PAD], layout[POOL],
        layout[POOL_STRIDE],
        grads[layout[W1_OFF]:layout[W1_OFF] + fsize].reshape(fn, layout[C], layout[FH],
                                                             layout[FW]),
        grads[layout[B1_OFF]:layout[B1_OFF] + fn],
        _part(arena, off + 2 * n * out_n, fn * _dense_work(layout)).reshape(fn,
                                                                        _dense_work(layout)))
    if fused:  # W2 and W3 are done
        for lo, hi in ((layout[W1_OFF], layout[W1_OFF] + fsize),
                       (layout[B1_OFF], layout[B1_OFF] + fn),
                       (layout[B2_OFF], layout[B2_OFF] + hid),
                       (layout[B3_OFF], layout[B3_OFF] + out_n)):
            optimizer_update(kind, flat[lo:hi], grads[lo:hi], state_part(state1, lo, hi),
                             state_part(state2, lo, hi), lr, c1, c2, 0.0, None)
    elif kind >= 0:
        optimizer_update(kind, flat, grads, state1, state2, lr, c1, c2, 0.0,
                         CONVNET_UPDATE_PARALLEL_MIN_ELEMENTS)
    return loss


@njit(cache=True, nogil=True)
def convnet_count_correct(x, t, flat, layout, arena, index, hit):
    """Rows of `x` whose predicted class (the first largest logit) is the label in `t`.

    Arguments as in :func:`convnet_step`; `t` holds integer labels; `hit` is an int64 work
    buffer of `n` elements.
    """
    require_c_contiguous(x, t, flat, layout, arena, index, hit)
    y = _forward(x, flat, layout, arena, index)
    b3 = flat[layout[B3_OFF]:layout[B3_OFF] + layout[OUT]]
    correct_rows(y, b3, t, hit)
    total = 0
    for i in range(x.shape[0]):
        total += hit[i]
    return total


@njit(cache=True, nogil=True)
def convnet_logits(x, flat, layout, arena, index, out):
    """The logits of `x` (inference; arguments as in :func:`convnet_step`) into `out`,
    (n, OUT)."""
    require_c_contiguous(x, flat, layout, arena, index, out)
    y = _forward(x, flat, layout, arena, index)
    b3 = flat[layout[B3_OFF]:layout[B3_OFF] + layout[OUT]]
    for i in range(x.shape[0]):
        for j in range(layout[OUT]):
            out[i, j] = y[i, j] + b3[j]
