"""The training step of a fully connected network of any depth, as one compiled call.

Per hidden layer ``l``: ``z = a @ W + b``, optional BatchNorm (train mode), ReLU, sigmoid,
tanh or none, optional Dropout; then a last affine layer and softmax-cross-entropy (or a
sigmoid per output with binary cross-entropy: :func:`mlp_train_step`). Backward
through all of it, the L2 weight decay folded into the gradient, and the optimizer's
update (SGD, Momentum, Nesterov, AdaGrad, RMSprop, Adam; :mod:`.optimizers`), one call.

How a variable number of layers reaches compiled code (one compiled function for every
depth; see docs/decisions): every parameter lives in one flat buffer ``flat`` and a small
int64 table ``layout`` (one row per affine layer, columns :data:`W_OFF` ... :data:`RV_OFF`)
says where each layer's ``W``, ``b``, ``gamma``, ``beta`` and running statistics start.
The network's ``params["W1"]`` etc. are reshaped views into ``flat``, so the book's in-place
idioms keep working; the gradients ``grads`` and the optimizer's state use the same
layout, so an update is one pass per parameter array over contiguous memory.

Work space for a batch size lives in one float ``arena`` (plus ``masks`` for Dropout and
``lists`` for the zero-skipping first layer), carved by :func:`arena_layout`, which the
Python side calls once per batch size: after warm-up a step allocates nothing.

The products go to BLAS from :func:`.affine.blas_min_flops` multiply-adds and
are hand-written loops below; batches up to :data:`._compile.SMALL_BATCH` list each row's
non-zero inputs once (:mod:`._sparse`) and use the list for ``x @ W1`` and for ``dW1``.
BLAS is never called inside a parallel region; every row pass has a serial and a parallel
twin and sums in a fixed order, so 1 and N Numba threads give the same bits.
"""
import math

from numba import njit

from ._docstrings import with_doc

from ._compile import FUSED_UPDATE_PARALLEL_MIN_ELEMENTS, SMALL_BATCH, require_c_contiguous
from ._sparse import gather_rows, list_stride, scatter_rows
from .activations import (relu_forward, sigmoid_backward, sigmoid_forward, tanh_backward,
                          tanh_forward)
from .affine import (column_sum, fill_zero, input_grad, product, relu_input_grad,
                     weight_grad)
from .batchnorm import (batchnorm_backward, batchnorm_forward_eval, batchnorm_forward_train,
                        batchnorm_work_rows)
from .dropout import dropout_backward, dropout_forward, dropout_mask
from .optimizers import ADAM, STEP_OPTIMIZER_PARAMETERS, optimizer_update, state_part
from .rows import (IDENTITY, RELU, SIGMOID, SOFTMAX_CE, TANH, bias_act_rows, correct_rows,
                   output_rows, probability_rows)

#: Columns of the ``layout`` table: offsets into ``flat`` (W, b, gamma, beta) and into the
#: running-statistics buffer ``stats`` (running mean, running variance), and the layer's
#: input and output widths. An absent part (no BatchNorm, the last layer) has offset -1.
W_OFF, B_OFF, GAMMA_OFF, BETA_OFF, RM_OFF, RV_OFF, D_IN, D_OUT = range(8)
#: Columns of the arena table (one row per hidden layer): offsets into ``arena`` of the
#: layer's output ``h`` (after the activation), its Dropout output, BatchNorm's ``xc``,
#: ``xn`` and ``std`` (followed by the work space of its backward), and into
#: ``masks`` of its Dropout mask (-1 when absent).
H_OFF, A_OFF, XC_OFF, XN_OFF, STD_OFF, MASK_OFF = range(6)
#: Rows of a batch's arena table after the hidden layers: [Y_ROW, 0] logits, [Y_ROW, 1]
#: their gradient, [Y_ROW, 2] and [Y_ROW, 3] the two backward buffers, [Y_ROW, 4] the
#: float size of the arena, [Y_ROW, 5] the size of ``masks``; [LIST_ROW, 0] the size of
#: ``lists`` (0 above SMALL_BATCH).
Y_ROW_FROM_END, LIST_ROW_FROM_END = 2, 1


@njit(cache=True, nogil=True)
def arena_layout(n, layout, use_dropout, table):
    """Carve the work space of a batch of `n` rows; fill `table` and return the arena size.

    Parameters
    ----------
    n : int
        Batch rows.
    layout : ndarray, (L + 1, 8), int64
        The network's parameter table (see the module docstring).
    use_dropout : bool
    table : ndarray, (L + 2, 6), int64
        Written: one row per hidden layer (columns :data:`H_OFF` ... :data:`MASK_OFF`),
        then the rows described at :data:`Y_ROW_FROM_END`.

    Returns
    -------
    int
        Elements of the float arena.
    """
    L = layout.shape[0] - 1
    off = 0
    moff = 0
    widest = layout[0, D_IN]
    for l in range(L):
        d = layout[l, D_OUT]
        widest = max(widest, d)
        table[l, H_OFF] = off
        off += n * d
        table[l, A_OFF] = -1
        table[l, XC_OFF] = -1
        table[l, XN_OFF] = -1
        table[l, STD_OFF] = -1
        table[l, MASK_OFF] = -1
        if use_dropout:
            table[l, A_OFF] = off
            off += n * d
            table[l, MASK_OFF] = moff
            moff += n * d
        if layout[l, GAMMA_OFF] >= 0:
            table[l, XC_OFF] = off
            off += n * d
            table[l, XN_OFF] = off
            off += n * d
            table[l, STD_OFF] = off  # std (d), then the backward's work space
            off += d + batchnorm_work_rows(n) * d
    C = layout[L, D_OUT]
    y = table.shape[0] - Y_ROW_FROM_END
    table[y, 0] = off
    off += n * C
    table[y, 1] = off
    off += n * C
    table[y, 2] = off
    off += n * widest
    table[y, 3] = off
    off += n * widest
    table[y, 4] = off
    table[y, 5] = moff
    lr = table.shape[0] - LIST_ROW_FROM_END
    table[lr, 0] = n * list_stride(layout[0, D_IN]) if n <= SMALL_BATCH else 0
    for c in range(1, 6):
        table[lr, c] = 0
    return off


@njit(cache=True, nogil=True)
def _matrix(buf, off, rows, cols):
    return buf[off:off + rows * cols].reshape(rows, cols)


@njit(cache=True, nogil=True)
def _activate(h, act):
    if act == RELU:
        relu_forward(h, h)
    elif act == SIGMOID:
        sigmoid_forward(h, h)
    elif act == TANH:
        tanh_forward(h, h)


@njit(cache=True, nogil=True)
def _activation_backward(h, da, act):
    # da *= act'(z), from the activation's output h, in place; the ReLU's backward is taken
    # with the input gradient (affine.relu_input_grad)
    if act == SIGMOID:
        sigmoid_backward(h, da, da)
    elif act == TANH:
        tanh_backward(h, da, da)


@njit(cache=True, nogil=True)
def _forward(x, flat, layout, stats, arena, masks, lists, table, act, train, bn_momentum,
             drop_ratio, seed, stream):
    # The forward pass up to the logits (without the last bias, which the softmax or the
    # argmax pass adds). Returns the logits' view of the arena.
    n, d0 = x.shape
    L = layout.shape[0] - 1
    a = x
    for l in range(L):
        d_in = layout[l, D_IN]
        d = layout[l, D_OUT]
        W = _matrix(flat, layout[l, W_OFF], d_in, d)
        b = flat[layout[l, B_OFF]:layout[l, B_OFF] + d]
        h = _matrix(arena, table[l, H_OFF], n, d)
        bn = layout[l, GAMMA_OFF] >= 0
        z = _matrix(arena, table[l, XC_OFF], n, d) if bn and train else h
        if l == 0 and lists.size > 0:
            # Zero-skipping first layer: each row's non-zero inputs listed once, reused
            # by the backward pass for dW1.
            gather_rows(x, lists, W, z)
        else:
            product(a, W, z)
        if bn:
            bias_act_rows(z, b, IDENTITY)
            g0 = layout[l, GAMMA_OFF]
            b0 = layout[l, BETA_OFF]
            gamma = flat[g0:g0 + d]
            beta = flat[b0:b0 + d]
            rm = stats[layout[l, RM_OFF]:layout[l, RM_OFF] + d]
            rv = stats[layout[l, RV_OFF]:layout[l, RV_OFF] + d]
            if train:
                xn = _matrix(arena, table[l, XN_OFF], n, d)
                std = arena[table[l, STD_OFF]:table[l, STD_OFF] + d]
                batchnorm_forward_train(z, gamma, beta, bn_momentum, rm, rv, z, xn, std, h)
            else:
                batchnorm_forward_eval(z, gamma, beta, rm, rv, h)
            _activate(h, act)
        else:
            bias_act_rows(h, b, act)
        a = h
        if table[l, A_OFF] >= 0:
            out = _matrix(arena, table[l, A_OFF], n, d)
            if train:
                mask = _matrix(masks, table[l, MASK_OFF], n, d)
                dropout_mask(drop_ratio, seed, stream * (L + 1) + l, mask)
                dropout_forward(h, mask, out)
            else:
                keep = h.dtype.type(1.0 - drop_ratio)
                hf = h.reshape(h.size)
                of = out.reshape(out.size)
                for p in range(hf.size):
                    of[p] = hf[p] * keep
            a = out
    C = layout[L, D_OUT]
    y = _matrix(arena, table[table.shape[0] - Y_ROW_FROM_END, 0], n, C)
    product(a, _matrix(flat, layout[L, W_OFF], layout[L, D_IN], C), y)
    return y


@njit(cache=True, nogil=True)
def _squared_weights(flat, layout):
    # sum of W**2 over every layer's W, in order (for the weight-decay term of the loss)
    total = 0.0
    for l in range(layout.shape[0]):
        w0 = layout[l, W_OFF]
        for p in range(w0, w0 + layout[l, D_IN] * layout[l, D_OUT]):
            total += flat[p] * flat[p]
    return total


@njit(cache=True, nogil=True)
@with_doc(step_optimizer_parameters=STEP_OPTIMIZER_PARAMETERS)
def mlp_step(x, t, flat, grads, layout, stats, arena, masks, lists, table, row_loss, act,
             bn_momentum, drop_ratio, seed, stream, decay, kind, state1, state2, lr, c1, c2):
    """Forward, backward, weight decay and optimizer update of an any-depth network.

    :func:`mlp_train_step` with a softmax-cross-entropy output and unscaled gradients.

    Parameters
    ----------
    x : ndarray, (n, d), float32 or float64, C-contiguous
    t : ndarray, (n,) integer labels in [0, C), or (n, C) one-hot rows of `x`'s dtype
    flat : ndarray, (P,), dtype of `x`
        Every parameter (W, b, gamma, beta of every layer) at the offsets of `layout`;
        updated in place when ``kind >= 0``.
    grads : ndarray, (P,), dtype of `x`
        Written with the gradient of the loss (the weight-decay term included) at the
        same offsets.
    layout : ndarray, (L + 1, 8), int64
        One row per affine layer: see :data:`W_OFF` ... :data:`D_OUT`.
    stats : ndarray, dtype of `x`
        BatchNorm running means and variances at the offsets of `layout`; updated in place.
    arena, masks, lists, table : ndarray
        Work space of this batch size (float dtype of `x`, uint8, int32, int64), sized and
        carved by :func:`arena_layout` into `table`; overwritten.
    row_loss : ndarray, (n,), float64
        Written with each row's cross-entropy.
    act : int
        Hidden activation, :data:`.rows.RELU`, :data:`.rows.SIGMOID`, :data:`.rows.TANH` or
        :data:`.rows.IDENTITY`.
    bn_momentum : float
        Momentum of the BatchNorm running statistics.
    drop_ratio : float
        Dropout ratio (used where `table` has a Dropout buffer).
    seed, stream : int
        Dropout's counter-based generator: layer ``l`` of this step draws from stream
        ``stream * (L + 1) + l`` of `seed` (pass the step number as `stream`).
    decay : float
        L2 weight-decay coefficient: adds ``0.5 * decay * sum(W**2)`` to the loss and
        ``decay * W`` to each W's gradient.
    {step_optimizer_parameters}

    Returns
    -------
    float
        The loss of the batch before the update, weight-decay term included; -1.0 when an
        integer label is outside ``[0, C)``, and then nothing was touched (the check costs
        `n` compares, against microseconds for ``t.min()`` and ``t.max()`` from Python).
    """
    return mlp_train_step(x, t, flat, grads, layout, stats, arena, masks, lists, table,
                          row_loss, act, SOFTMAX_CE, bn_momentum, drop_ratio, seed, stream,
                          decay, 1.0, row_loss[:0], kind, state1, state2, lr, c1, c2)


@njit(cache=True, nogil=True)
def mlp_train_step(x, t, flat, grads, layout, stats, arena, masks, lists, table, row_loss,
                   act, out_kind, bn_momentum, drop_ratio, seed, stream, decay, grad_scale,
                   weights, kind, state1, state2, lr, c1, c2):
    """:func:`mlp_step` with a choice of output, a factor on the gradients and row weights.

    Parameters
    ----------
    out_kind : int
        :data:`.rows.SOFTMAX_CE` (softmax-cross-entropy, as :func:`mlp_step`) or
        :data:`.rows.LOGISTIC_CE` (a sigmoid per output with binary cross-entropy summed
        over the outputs; `t` then holds (n, C) targets in [0, 1]).
    grad_scale : float
        The gradients written to `grads` and fed to the optimizer are those of the loss
        times `grad_scale` (weight-decay term included); the returned loss is not scaled.
        With Adam, scaling the gradients by ``s`` is Adam with ``1e-7 / s`` in place of
        the kernel's ``1e-7`` (``m`` and ``sqrt(v)`` both scale by ``s``): this is how
        another epsilon is had without another kernel.
    weights : ndarray, (n,) or (0,), float64
        Row weights (scikit-learn's ``sample_weight``): the loss is
        ``sum(w_i * loss_i) / sum(w)`` and each row's output gradient is weighted by
        ``w_i / sum(w)``; size 0: every row weighs 1 (the mean, as :func:`mlp_step`). A
        batch whose weights sum to 0 contributes no gradient (and loss 0) but the
        weight decay.

    Other parameters and the return value as :func:`mlp_step`.
    """
    require_c_contiguous(x, t, flat, grads, layout, stats, arena, masks, lists, table,
                         row_loss, weights, state1, state2)
    n = x.shape[0]
    L = layout.shape[0] - 1
    C = layout[L, D_OUT]
    if t.ndim == 1:
        for i in range(n):
            if t[i] < 0 or t[i] >= C:
                return -1.0
    y = _forward(x, flat, layout, stats, arena, masks, lists, table, act, True, bn_momentum,
                 drop_ratio, seed, stream)
    yr = table.shape[0] - Y_ROW_FROM_END
    dz = _matrix(arena, table[yr, 1], n, C)
    if weights.size == 0:
        output_rows(y, flat[layout[L, B_OFF]:layout[L, B_OFF] + C], t, dz, row_loss,
                    out_kind, grad_scale)
        loss = 0.0
        for i in range(n):
            loss += row_loss[i]
        loss /= n
    else:
        sw = 0.0
        for i in range(n):
            sw += weights[i]
        # output_rows divides by n; the weighted mean divides by sum(w) instead
        output_rows(y, flat[layout[L, B_OFF]:layout[L, B_OFF] + C], t, dz, row_loss,
                    out_kind, grad_scale * n / sw if sw != 0 else 0.0)
        loss = 0.0
        for i in range(n):
            wi = dz.dtype.type(weights[i])
            for c in range(C):
                dz[i, c] *= wi
            loss += weights[i] * row_loss[i]
        loss = loss / sw if sw != 0 else 0.0
    if decay != 0:
        loss += 0.5 * decay * _squared_weights(flat, layout)
    ping = True
    for l in range(L, -1, -1):
        d_in = layout[l, D_IN]
        d = layout[l, D_OUT]
        w0 = layout[l, W_OFF]
        b0 = layout[l, B_OFF]
        column_sum(dz, grads[b0:b0 + d])
        gW = _matrix(grads, w0, d_in, d)
        if l == 0:
            if lists.size > 0 and n > 1:
                fill_zero(gW)
                scatter_rows(gW.dtype.type(1.0), x, lists, dz, gW)
            else:
                weight_grad(x, dz, gW)  # one row: each row of gW written once
            break
        p = l - 1  # the hidden layer whose output feeds layer l
        a_off = table[p, A_OFF] if table[p, A_OFF] >= 0 else table[p, H_OFF]
        a = _matrix(arena, a_off, n, d_in)
        weight_grad(a, dz, gW)
        da = _matrix(arena, table[yr, 2] if ping else table[yr, 3], n, d_in)
        ping = not ping
        W = _matrix(flat, w0, d_in, d)
        h = _matrix(arena, table[p, H_OFF], n, d_in)
        if act == RELU:
            # The ReLU's backward taken with the product (the loops then compute only the
            # entries it passes); before Dropout's, which multiplies: the same values.
            relu_input_grad(dz, W, da, h)
        else:
            input_grad(dz, W, da)
        if table[p, MASK_OFF] >= 0:
            dropout_backward(da, _matrix(masks, table[p, MASK_OFF], n, d_in), da)
        _activation_backward(h, da, act)
        if layout[p, GAMMA_OFF] >= 0:
            g0 = layout[p, GAMMA_OFF]
            be0 = layout[p, BETA_OFF]
            batchnorm_backward(da, _matrix(arena, table[p, XC_OFF], n, d_in),
                               _matrix(arena, table[p, XN_OFF], n, d_in),
                               arena[table[p, STD_OFF]:table[p, STD_OFF] + d_in],
                               flat[g0:g0 + d_in], grads[g0:g0 + d_in],
                               grads[be0:be0 + d_in], da,
                               _matrix(arena, table[p, STD_OFF] + d_in,
                                       batchnorm_work_rows(n), d_in))
        dz = da
    decay = decay * grad_scale  # the gradient's term (the loss took it unscaled above)
    if kind < 0:
        if decay != 0:
            for l in range(L + 1):
                w0 = layout[l, W_OFF]
                step = flat.dtype.type(decay)
                for p in range(w0, w0 + layout[l, D_IN] * layout[l, D_OUT]):
                    grads[p] += step * flat[p]
        return loss
    if decay == 0:
        # Every parameter gets the same update: one pass over the whole buffer (one
        # parallel region instead of one per large array).
        _update(kind, flat, grads, state1, state2, 0, flat.size, lr, c1, c2, 0.0)
        return loss
    for l in range(L + 1):
        w0 = layout[l, W_OFF]
        w1 = w0 + layout[l, D_IN] * layout[l, D_OUT]
        _update(kind, flat, grads, state1, state2, w0, w1, lr, c1, c2, decay)
        b0 = layout[l, B_OFF]
        _update(kind, flat, grads, state1, state2, b0, b0 + layout[l, D_OUT], lr, c1, c2,
                0.0)
        if layout[l, GAMMA_OFF] >= 0:
            g0 = layout[l, GAMMA_OFF]
            _update(kind, flat, grads, state1, state2, g0, g0 + layout[l, D_OUT], lr, c1,
                    c2, 0.0)
            g0 = layout[l, BETA_OFF]
            _update(kind, flat, grads, state1, state2, g0, g0 + layout[l, D_OUT], lr, c1,
                    c2, 0.0)
    return loss


@njit(cache=True, nogil=True)
def _update(kind, flat, grads, state1, state2, lo, hi, lr, c1, c2, decay):
    optimizer_update(kind, flat[lo:hi], grads[lo:hi], state_part(state1, lo, hi),
                     state_part(state2, lo, hi), lr, c1, c2, decay,
                     FUSED_UPDATE_PARALLEL_MIN_ELEMENTS)


@njit(cache=True, nogil=True)
def mlp_count_correct(x, t, flat, layout, stats, arena, masks, lists, table, act,
                      drop_ratio, hit):
    """Rows of `x` whose predicted class (argmax of the logits, inference mode: BatchNorm
    on its running statistics, Dropout scaling by ``1 - drop_ratio``) is the label in `t`.

    Arguments as in :func:`mlp_step`; `hit` is an int64 work buffer of `n` elements.
    """
    require_c_contiguous(x, t, flat, layout, stats, arena, masks, lists, table, hit)
    L = layout.shape[0] - 1
    C = layout[L, D_OUT]
    y = _forward(x, flat, layout, stats, arena, masks, lists, table, act, False, 0.0,
                 drop_ratio, 0, 0)
    correct_rows(y, flat[layout[L, B_OFF]:layout[L, B_OFF] + C], t, hit)
    total = 0
    for i in range(x.shape[0]):
        total += hit[i]
    return total


@njit(cache=True, nogil=True)
def mlp_predict(x, flat, layout, stats, arena, masks, lists, table, act, out_kind,
                drop_ratio, out):
    """The network's output probabilities in inference mode (BatchNorm on its running
    statistics, Dropout scaling by ``1 - drop_ratio``).

    Arguments as in :func:`mlp_train_step`; `out` is an (n, C) array of `x`'s dtype,
    written with ``softmax(logits)`` (:data:`.rows.SOFTMAX_CE`) or ``sigmoid(logits)``
    (:data:`.rows.LOGISTIC_CE`) per row.
    """
    require_c_contiguous(x, flat, layout, stats, arena, masks, lists, table, out)
    L = layout.shape[0] - 1
    C = layout[L, D_OUT]
    y = _forward(x, flat, layout, stats, arena, masks, lists, table, act, False, 0.0,
                 drop_ratio, 0, 0)
    probability_rows(y, flat[layout[L, B_OFF]:layout[L, B_OFF] + C], out_kind)
    out[...] = y


@njit(cache=True, nogil=True)
def _gather_batch(x, t, w, order, lo, hi, xb, tb, wb):
    # rows order[lo:hi] of x, t and w (unless empty) into the first hi - lo rows of xb,
    # tb and wb
    d = x.shape[1]
    for r in range(hi - lo):
        src = order[lo + r]
        if w.size > 0:
            wb[r] = w[src]
        for j in range(d):
            xb[r, j] = x[src, j]
        if t.ndim == 1:
            tb.reshape(tb.size)[r] = t.reshape(t.size)[src]
        else:
            for c in range(t.shape[t.ndim - 1]):
                tb.reshape(tb.shape[0], -1)[r, c] = t.reshape(t.shape[0], -1)[src, c]


@njit(cache=True, nogil=True)
def mlp_train_epoch(x, t, weights, order, batch_size, xb, tb, wb, flat, grads, layout, stats,
                    arena, masks, lists, table, spare_table, row_loss, act, out_kind, alpha,
                    grad_scale, kind, state1, state2, lr, c1, c2, adam_step):
    """One pass over the rows ``order`` of `x` in batches of `batch_size`, each batch one
    :func:`mlp_train_step` (no Dropout, no BatchNorm running statistics needed).

    Parameters
    ----------
    x : ndarray, (N, d), float32 or float64, C-contiguous
    t : ndarray, (N,) integer labels or (N, C) target rows of `x`'s dtype
    weights : ndarray, (N,) or (0,), float64
        Row weights (see :func:`mlp_train_step`); size 0 for none.
    order : ndarray, (M,), int64
        The rows of this epoch, in order (M <= N); batch ``k`` is
        ``order[k * batch_size:(k + 1) * batch_size]``, the last one may be shorter.
    batch_size : int
    xb, tb, wb : ndarray
        (batch_size, d) and (batch_size,) or (batch_size, C) buffers like `x` and `t`,
        and (batch_size,) float64 (size 0 without `weights`).
    arena, masks, lists, table, row_loss : ndarray
        Work space of `batch_size` rows (:func:`arena_layout`).
    spare_table : ndarray
        Like `table`; overwritten with the layout of the last, shorter batch.
    alpha : float
        L2 penalty per batch as scikit-learn's MLP: weight decay ``alpha / rows`` on
        each batch of ``rows`` rows (loss ``0.5 * alpha * sum(W**2) / rows``), with
        `weights` ``alpha / sum(batch weights)``.
    kind, state1, state2, lr, c1, c2 : as :func:`mlp_step`
        For Adam (:data:`.optimizers.ADAM`) `lr` is the base learning rate and each
        step uses the bias-corrected ``lr * sqrt(1 - c2**k) / (1 - c1**k)`` of its step
        number ``k = adam_step + 1, adam_step + 2, ...`` (the fastbp ``Adam``'s
        arithmetic); other optimizers use `lr` as given.
    adam_step : int
        Adam updates made before this epoch.

    Returns
    -------
    float
        The sum over batches of ``batch loss * batch rows`` (the epoch's mean loss times
        M); -1.0 when an integer label is outside ``[0, C)`` (the batches before it
        were trained).
    """
    require_c_contiguous(x, t, weights, order, xb, tb, wb, flat, grads, layout, stats, arena,
                         masks, lists, table, spare_table, row_loss, state1, state2)
    m = order.shape[0]
    total = 0.0
    step = adam_step
    for lo in range(0, m, batch_size):
        hi = min(lo + batch_size, m)
        rows = hi - lo
        _gather_batch(x, t, weights, order, lo, hi, xb, tb, wb)
        w = wb[:rows] if weights.size > 0 else wb[:0]
        sw = float(rows)
        if weights.size > 0:
            sw = 0.0
            for r in range(rows):
                sw += w[r]
        tab = table
        if rows != batch_size:
            arena_layout(rows, layout, False, spare_table)
            tab = spare_table
        step_lr = lr
        if kind == ADAM:
            step += 1
            step_lr = lr * math.sqrt(1.0 - c2 ** step) / (1.0 - c1 ** step)
        loss = mlp_train_step(xb[:rows], tb[:rows], flat, grads, layout, stats, arena,
                              masks, lists, tab, row_loss[:rows], act, out_kind, 0.9, 0.0,
                              0, 0, alpha / sw if sw != 0 else 0.0, grad_scale, w,
                              kind, state1, state2, step_lr, c1, c2)
        if loss == -1.0:
            return -1.0
        total += loss * rows
    return total
