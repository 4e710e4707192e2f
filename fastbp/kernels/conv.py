"""2-D convolution and max pooling on ``(N, C, H, W)`` batches, forward and backward.

Direct convolution, no im2col: an output row is accumulated tap after tap as
``out[oy, :] += W[f, c, ky, kx] * x[c, iy, shifted columns]``, an inner loop over the
output width that LLVM vectorizes for stride 1, with padding handled by clipping each
row's column range (nothing is read outside `x`). The book's im2col copies the input
``FH * FW`` times and hands BLAS a product whose inner dimension is only ``C * FH * FW``
(25 for the book's first layer); see docs/decisions/convolution.md for the measurements.

Parallel work is split so that no two threads ever write the same element and every sum
runs in one fixed order: the forward and ``dx`` over samples, ``dW`` and ``db`` over
filters (each filter's gradient sums the batch in sample order). The serial and parallel
twins therefore give the same bits for any thread count.

:func:`conv_relu_pool_forward` / :func:`conv_relu_pool_backward` fuse convolution, bias,
ReLU and max pooling for a layer whose input gradient is not needed (the first layer of a
network): the convolution output is never stored, only the pooled values and the index of
each window's maximum, and the backward visits only the windows whose maximum was
positive (the others pass no gradient through the ReLU).

All kernels check nothing (:mod:`fastbp.ops` has validated twins) and allocate nothing;
they can be called from a user's ``@njit`` code.
"""
import numpy as np
from numba import njit, prange

from ._compile import CONV_PARALLEL_MIN_MACS, MACHINE_DEFAULT, twins
from ._dispatch import resolved, twin_runner
from ._docstrings import with_doc
from .affine import REDUCTION_FASTMATH, dot_reassoc

#: The input, filters and bias of the forward kernels' docstrings.
_CONV_INPUTS = """x : ndarray, (N, C, H, W), float32 or float64, C-contiguous
    W : ndarray, (FN, C, FH, FW), dtype of `x`, C-contiguous
    b : ndarray, (FN,), dtype of `x`"""


@njit(cache=True, nogil=True)
def conv_output_size(size, filter_size, stride, pad):
    """Output length of a convolution or pooling window along one axis:
    ``(size + 2 * pad - filter_size) // stride + 1``."""
    return (size + 2 * pad - filter_size) // stride + 1


@njit(cache=True, nogil=True, inline="always")
def _column_range(width, out_w, kx, stride, pad):
    # The output columns ox whose input column ox * stride + kx - pad lies in [0, width).
    lo = 0
    if kx < pad:
        lo = (pad - kx + stride - 1) // stride
    last = width - 1 + pad - kx  # largest ox * stride allowed
    hi = 0 if last < 0 else min(out_w, last // stride + 1)
    return lo, max(lo, hi)


@njit(cache=True, nogil=True, inline="always")
def _u(i):
    # An index known to be >= 0, as unsigned: Numba then emits no wraparound for negative
    # indices, and the inner loops vectorize (with a signed computed index they did not:
    # several times slower, docs/decisions/convolution.md).
    return np.uint64(i)


@njit(cache=True, nogil=True)
def _tap_passes(img, H, Wd, W, f, c, stride, pad, plane, OH, OW, gather):
    # The taps of filter f over channel c, output row after output row. gather=True:
    # plane[oy, ox] += W[f, c, ky, kx] * img[iy, ix] (the forward); False: the transpose,
    # img[iy, ix] += W[f, c, ky, kx] * plane[oy, ox] (the input gradient). `img` is the
    # channel's (H * Wd) flat image, `plane` the (OH * OW) flat output map.
    FH, FW = W.shape[2], W.shape[3]
    for ky in range(FH):
        for kx in range(FW):
            w = W[f, c, ky, kx]
            lo, hi = _column_range(Wd, OW, kx, stride, pad)
            cnt = hi - lo
            if cnt <= 0:
                continue
            for oy in range(OH):
                iy = oy * stride + ky - pad
                if iy < 0 or iy >= H:
                    continue
                po = oy * OW + lo
                xo = iy * Wd + lo * stride + kx - pad
                if gather:
                    if stride == 1:
                        for i in range(cnt):
                            plane[_u(po + i)] += w * img[_u(xo + i)]
                    else:
                        for i in range(cnt):
                            plane[_u(po + i)] += w * img[_u(xo + i * stride)]
                elif stride == 1:
                    for i in range(cnt):
                        img[_u(xo + i)] += w * plane[_u(po + i)]
                else:
                    for i in range(cnt):
                        img[_u(xo + i * stride)] += w * plane[_u(po + i)]


@njit(cache=True, nogil=True)
def conv_plane(x, n, W, f, stride, pad, plane):
    """``plane = sum over c, ky, kx of W[f, c, ky, kx] * x[n, c, shifted]``: the output map
    of filter `f` on sample `n`, without bias.

    Parameters
    ----------
    x : ndarray, (N, C, H, W), float32 or float64, C-contiguous
    n, f : int
        Sample and filter.
    W : ndarray, (FN, C, FH, FW), dtype of `x`
    stride, pad : int
    plane : ndarray, (OH, OW), dtype of `x`, C-contiguous; overwritten.
    """
    C, H, Wd = x.shape[1], x.shape[2], x.shape[3]
    OH, OW = plane.shape
    pf = plane.reshape(OH * OW)
    for p in range(OH * OW):
        pf[p] = 0
    for c in range(C):
        _tap_passes(x[n, c].reshape(H * Wd), H, Wd, W, f, c, stride, pad, pf, OH, OW, True)


def _conv_forward_body(x, W, b, stride, pad, out):
    N = x.shape[0]
    FN = W.shape[0]
    for n in prange(N):
        for f in range(FN):
            plane = out[n, f]
            conv_plane(x, n, W, f, stride, pad, plane)
            bf = b[f]
            for oy in range(plane.shape[0]):
                for ox in range(plane.shape[1]):
                    plane[oy, ox] += bf


_conv_forward_serial, _conv_forward_parallel = twins(_conv_forward_body)
_conv_forward_run = twin_runner(_conv_forward_serial, _conv_forward_parallel)


def _conv_dx_body(dout, W, stride, pad, dx):
    # dx[n, c, iy, ix] = sum of W[f, c, ky, kx] * dout[n, f, oy, ox] over the taps that
    # read (iy, ix): scattered tap after tap, samples split over threads.
    N, C, H, Wd = dx.shape
    FN = W.shape[0]
    OH, OW = dout.shape[2], dout.shape[3]
    for n in prange(N):
        dxn = dx[n].reshape(C * H * Wd)
        for p in range(C * H * Wd):
            dxn[p] = 0
        for f in range(FN):
            df = dout[n, f].reshape(OH * OW)
            for c in range(C):
                _tap_passes(dx[n, c].reshape(H * Wd), H, Wd, W, f, c, stride, pad, df, OH,
                            OW, False)


_conv_dx_serial, _conv_dx_parallel = twins(_conv_dx_body)
_conv_dx_run = twin_runner(_conv_dx_serial, _conv_dx_parallel)


def _conv_dw_body(dout, x, stride, pad, dW, db):
    # One filter per iteration: dW[f] and db[f] sum the batch in sample order.
    N, C, H, Wd = x.shape
    FN, FH, FW = dW.shape[0], dW.shape[2], dW.shape[3]
    OH, OW = dout.shape[2], dout.shape[3]
    zero = dW.dtype.type(0)
    for f in prange(FN):
        s = zero
        for n in range(N):
            for oy in range(OH):
                for ox in range(OW):
                    s += dout[n, f, oy, ox]
        db[f] = s
        for c in range(C):
            for ky in range(FH):
                for kx in range(FW):
                    lo, hi = _column_range(Wd, OW, kx, stride, pad)
                    # Eight partial sums over the columns (one chain of dependent adds runs
                    # at the adder's latency), combined in a fixed order.
                    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = zero
                    for n in range(N):
                        df = dout[n, f].reshape(OH * OW)
                        xf = x[n, c].reshape(H * Wd)
                        for oy in range(OH):
                            iy = oy * stride + ky - pad
                            if iy < 0 or iy >= H:
                                continue
                            po = oy * OW
                            xo = iy * Wd + kx - pad
                            ox = lo
                            if stride == 1:
                                # a vectorized dot product of the row (see _dot1)
                                a0 += dot_reassoc(df[po + lo:po + hi], xf[xo + lo:xo + hi], hi - lo)
                                continue
                            while ox + 8 <= hi:
                                a0 += df[_u(po + ox)] * xf[_u(xo + ox * stride)]
                                a1 += df[_u(po + ox + 1)] * xf[_u(xo + (ox + 1) * stride)]
                                a2 += df[_u(po + ox + 2)] * xf[_u(xo + (ox + 2) * stride)]
                                a3 += df[_u(po + ox + 3)] * xf[_u(xo + (ox + 3) * stride)]
                                a4 += df[_u(po + ox + 4)] * xf[_u(xo + (ox + 4) * stride)]
                                a5 += df[_u(po + ox + 5)] * xf[_u(xo + (ox + 5) * stride)]
                                a6 += df[_u(po + ox + 6)] * xf[_u(xo + (ox + 6) * stride)]
                                a7 += df[_u(po + ox + 7)] * xf[_u(xo + (ox + 7) * stride)]
                                ox += 8
                            while ox < hi:
                                a0 += df[_u(po + ox)] * xf[_u(xo + ox * stride)]
                                ox += 1
                    dW[f, c, ky, kx] = ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))


_conv_dw_serial, _conv_dw_parallel = twins(_conv_dw_body)
_conv_dw_run = twin_runner(_conv_dw_serial, _conv_dw_parallel)


def _pool_forward_body(x, pool_h, pool_w, stride, pad, out, argmax):
    # The first largest value of each window in row-major order (np.argmax's choice; a NaN
    # wins, as np.argmax's first NaN); padding counts as zeros, as the book pads.
    N, C, H, Wd = x.shape
    OH, OW = out.shape[2], out.shape[3]
    zero = out.dtype.type(0)
    for n in prange(N):
        for c in range(C):
            xc = x[n, c]
            for oy in range(OH):
                for ox in range(OW):
                    best = zero
                    arg = -1
                    for wy in range(pool_h):
                        iy = oy * stride + wy - pad
                        for wx in range(pool_w):
                            ix = ox * stride + wx - pad
                            if iy < 0 or iy >= H or ix < 0 or ix >= Wd:
                                v = zero
                            else:
                                v = xc[iy, ix]
                            if arg < 0 or (best == best and (v > best or v != v)):
                                best = v
                                arg = wy * pool_w + wx
                    out[n, c, oy, ox] = best
                    argmax[n, c, oy, ox] = arg


_pool_forward_serial, _pool_forward_parallel = twins(_pool_forward_body)
_pool_forward_run = twin_runner(_pool_forward_serial, _pool_forward_parallel)


def _pool_backward_body(dout, argmax, pool_w, stride, pad, dx):
    # Each output's gradient goes to its window's maximum; overlapping windows (stride <
    # pool size) add in output order, per sample.
    N, C, H, Wd = dx.shape
    OH, OW = dout.shape[2], dout.shape[3]
    for n in prange(N):
        for c in range(C):
            dxc = dx[n, c]
            for iy in range(H):
                for ix in range(Wd):
                    dxc[iy, ix] = 0
            for oy in range(OH):
                for ox in range(OW):
                    k = argmax[n, c, oy, ox]
                    iy = oy * stride + k // pool_w - pad
                    ix = ox * stride + k % pool_w - pad
                    if 0 <= iy < H and 0 <= ix < Wd:
                        dxc[iy, ix] += dout[n, c, oy, ox]


_pool_backward_serial, _pool_backward_parallel = twins(_pool_backward_body)
_pool_backward_run = twin_runner(_pool_backward_serial, _pool_backward_parallel)


@njit(cache=True, nogil=True)
def crp_scratch_size(C, H, W, FH, FW, stride, pad):
    """Elements of one sample's work space in :func:`conv_relu_pool_forward`: a
    convolution plane (stride 1: ``OH`` rows of the padded width, see
    :func:`conv_plane_wide`) and, for stride 1 with padding, the zero-padded image."""
    OH = conv_output_size(H, FH, stride, pad)
    OW = conv_output_size(W, FW, stride, pad)
    if stride != 1:
        return OH * OW
    Wp = W + 2 * pad
    return OH * Wp + (C * (H + 2 * pad) * Wp if pad > 0 else 0)


@njit(cache=True, nogil=True)
def conv_plane_wide(img, Hp, Wp, W, f, plane):
    """Stride-1, unpadded convolution of one image by filter `f`, computed over the full
    width: ``plane[oy * Wp + ox]`` for ``ox < Wp - FW + 1`` is the output, later columns
    of each row are junk (never read by the callers).

    Every tap then shifts the same contiguous range of the flattened image, so each pass
    is one long vectorized loop, and four taps share a pass (one load and store of the
    plane per four multiply-adds instead of per one).

    Parameters
    ----------
    img : ndarray, (C * Hp * Wp,), float32 or float64, C-contiguous: the (padded) image.
    Hp, Wp : int
        Its height and width.
    W : ndarray, (FN, C, FH, FW), dtype of `img`
    f : int
    plane : ndarray, ((Hp - FH + 1) * Wp,), dtype of `img`; overwritten up to the last
        output column (the last ``FW - 1`` elements are left as they were).
    """
    C, FH, FW = W.shape[1], W.shape[2], W.shape[3]
    count = (Hp - FH + 1) * Wp - (FW - 1)  # the reads of every tap stay inside img
    taps = C * FH * FW
    Wf = W[f].reshape(taps)
    t = 0
    while t < taps:
        o0 = _tap_offset(t, FH, FW, Hp, Wp)
        if t + 4 <= taps:
            o1 = _tap_offset(t + 1, FH, FW, Hp, Wp)
            o2 = _tap_offset(t + 2, FH, FW, Hp, Wp)
            o3 = _tap_offset(t + 3, FH, FW, Hp, Wp)
            w0, w1, w2, w3 = Wf[t], Wf[t + 1], Wf[t + 2], Wf[t + 3]
            x0 = img[o0:o0 + count]
            x1 = img[o1:o1 + count]
            x2 = img[o2:o2 + count]
            x3 = img[o3:o3 + count]
            if t == 0:
                for p in range(count):
                    plane[p] = ((w0 * x0[p] + w1 * x1[p]) + w2 * x2[p]) + w3 * x3[p]
            else:
                for p in range(count):
                    plane[p] += ((w0 * x0[p] + w1 * x1[p]) + w2 * x2[p]) + w3 * x3[p]
            t += 4
        else:
            w0 = Wf[t]
            x0 = img[o0:o0 + count]
            if t == 0:
                for p in range(count):
                    plane[p] = w0 * x0[p]
            else:
                for p in range(count):
                    plane[p] += w0 * x0[p]
            t += 1


@njit(cache=True, nogil=True, inline="always")
def _tap_offset(t, FH, FW, Hp, Wp):
    # flat offset in a (C, Hp, Wp) image of tap t = (c * FH + ky) * FW + kx
    kx = t % FW
    r = t // FW
    return ((r // FH) * Hp + r % FH) * Wp + kx


@njit(cache=True, nogil=True, inline="always")
def _window_max(plane, base, row, pool_h, pool_w):
    # The first largest value of a window of the flat `plane` (row length `row`) and its
    # row-major index, as np.argmax chooses; the first NaN wins, as in np.argmax / np.max.
    best = plane[_u(base)]
    arg = 0
    for wy in range(pool_h):
        for wx in range(pool_w):
            v = plane[_u(base + wy * row + wx)]
            if v > best:
                best = v
                arg = wy * pool_w + wx
            elif v != v and best == best:
                best = v
                arg = wy * pool_w + wx
    return best, arg


@njit(cache=True, nogil=True, inline="always")
def _window_max_2x2(plane, base, row):
    # _window_max unrolled for the book's 2x2 window with plain `>` (compiled to selects);
    # a NaN anywhere makes the sum NaN and sends the window to the NaN-aware loop. The
    # NaN test inside the comparisons made the whole pass several times slower (branches
    # instead of selects; docs/decisions/convolution.md).
    v0 = plane[_u(base)]
    v1 = plane[_u(base + 1)]
    v2 = plane[_u(base + row)]
    v3 = plane[_u(base + row + 1)]
    check = (v0 + v1) + (v2 + v3)
    if check != check:
        return _window_max(plane, base, row, 2, 2)
    best = v0
    arg = 0
    if v1 > best:
        best = v1
        arg = 1
    if v2 > best:
        best = v2
        arg = 2
    if v3 > best:
        best = v3
        arg = 3
    return best, arg


def _crp_forward_body(x, W, b, stride, pad, pool_h, pool_w, pool_stride, scratch, out,
                      argmax):
    # Per sample and filter: the convolution into the sample's scratch plane, then bias,
    # ReLU and the pooling window's maximum in one pass. max(relu(v)) == relu(max(v)) and,
    # where that maximum is positive, the first index of the largest value is the same
    # before and after the ReLU; where it is not, no gradient flows, whatever the index.
    N, C, H, Wd = x.shape
    FN, FH, FW = W.shape[0], W.shape[2], W.shape[3]
    OH = conv_output_size(H, FH, stride, pad)
    OW = conv_output_size(Wd, FW, stride, pad)
    PH, PW = out.shape[2], out.shape[3]
    Hp, Wp = H + 2 * pad, Wd + 2 * pad
    row = Wp if stride == 1 else OW  # the plane's row length
    zero = out.dtype.type(0)
    for n in prange(N):
        work = scratch[n]
        plane = work[:OH * row]
        if stride == 1 and pad > 0:
            img = work[OH * row:OH * row + C * Hp * Wp]
            for p in range(C * Hp * Wp):
                img[p] = 0
            for c in range(C):
                for iy in range(H):
                    o = (c * Hp + iy + pad) * Wp + pad
                    for ix in range(Wd):
                        img[_u(o + ix)] = x[n, c, iy, ix]
        else:
            img = x[n].reshape(C * H * Wd)
        for f in range(FN):
            if stride == 1:
                conv_plane_wide(img, Hp, Wp, W, f, plane)
            else:
                conv_plane(x, n, W, f, stride, pad, plane.reshape(OH, OW))
            bf = b[f]
            of = out[n, f].reshape(PH * PW)
            af = argmax[n, f].reshape(PH * PW)
            for py in range(PH):
                for px in range(PW):
                    base = py * pool_stride * row + px * pool_stride
                    if pool_h == 2 and pool_w == 2:
                        best, arg = _window_max_2x2(plane, base, row)
                    else:
                        best, arg = _window_max(plane, base, row, pool_h, pool_w)
                    best += bf
                    q = py * PW + px
                    of[q] = zero if best <= 0 else best
                    af[q] = arg


_crp_forward_serial, _crp_forward_parallel = twins(_crp_forward_body)
_crp_forward_run = twin_runner(_crp_forward_serial, _crp_forward_parallel)


def _crp_backward_body(dout, x, out, argmax, stride, pad, pool_w, pool_stride, dW, db):
    # One filter per iteration, the batch in sample order. Only windows whose pooled output
    # is positive pass a gradient (ReLU), and each adds g * (the input patch under its
    # maximum) to dW[f]: FH * FW multiply-adds per window instead of per output pixel.
    N, C, H, Wd = x.shape
    FN, FH, FW = dW.shape[0], dW.shape[2], dW.shape[3]
    PH, PW = out.shape[2], out.shape[3]
    for f in prange(FN):
        s = db.dtype.type(0)
        dWf = dW[f].reshape(C * FH * FW)
        for p in range(C * FH * FW):
            dWf[p] = 0
        for n in range(N):
            of = out[n, f].reshape(PH * PW)
            gf = dout[n, f].reshape(PH * PW)
            af = argmax[n, f].reshape(PH * PW)
            xn = x[n].reshape(C * H * Wd)
            for py in range(PH):
                for px in range(PW):
                    q = py * PW + px
                    g = gf[q]
                    if of[q] <= 0 or g == 0:
                        continue
                    s += g
                    k = af[q]
                    if pool_w == 2:  # no integer division for the book's window
                        wy = k >> 1
                        wx = k & 1
                    else:
                        wy = k // pool_w
                        wx = k - wy * pool_w
                    y0 = (py * pool_stride + wy) * stride - pad
                    x0 = (px * pool_stride + wx) * stride - pad
                    if pad == 0:
                        for c in range(C):
                            for ky in range(FH):
                                wo = (c * FH + ky) * FW
                                xo = (c * H + y0 + ky) * Wd + x0
                                if FW == 5:  # the book's filters: no loop of 5 iterations
                                    dWf[_u(wo)] += g * xn[_u(xo)]
                                    dWf[_u(wo + 1)] += g * xn[_u(xo + 1)]
                                    dWf[_u(wo + 2)] += g * xn[_u(xo + 2)]
                                    dWf[_u(wo + 3)] += g * xn[_u(xo + 3)]
                                    dWf[_u(wo + 4)] += g * xn[_u(xo + 4)]
                                else:
                                    for kx in range(FW):
                                        dWf[_u(wo + kx)] += g * xn[_u(xo + kx)]
                        continue
                    # the taps of this output that read inside x (the others read padding)
                    klo = max(0, -x0)
                    khi = min(FW, Wd - x0)
                    for c in range(C):
                        for ky in range(FH):
                            iy = y0 + ky
                            if iy < 0 or iy >= H:
                                continue
                            wo = (c * FH + ky) * FW
                            xo = (c * H + iy) * Wd + x0
                            for kx in range(klo, khi):
                                dWf[_u(wo + kx)] += g * xn[_u(xo + kx)]
        db[f] = s


_crp_backward_serial, _crp_backward_parallel = twins(_crp_backward_body)
_crp_backward_run = twin_runner(_crp_backward_serial, _crp_backward_parallel)


# The dot products of the dense backward are summed in any order (REDUCTION_FASTMATH).
# Each filter's gradient is still computed by one thread with one compiled loop, so the
# bits do not depend on the thread count (tests/test_conv.py checks the twins).
@njit(cache=True, nogil=True, fastmath=REDUCTION_FASTMATH)
def _dot4(a, b0, b1, b2, b3, count):
    # four dot products of `a` with four shifted views, sharing the loads of `a`
    s0 = s1 = s2 = s3 = a.dtype.type(0)
    for p in range(count):
        ap = a[p]
        s0 += ap * b0[p]
        s1 += ap * b1[p]
        s2 += ap * b2[p]
        s3 += ap * b3[p]
    return s0, s1, s2, s3


def _crp_backward_dense_body(dout, x, out, argmax, pool_w, pool_stride, dW, db, work):
    # Stride 1, no padding. Per filter and sample: the pooled gradient scattered into a
    # zero plane of the convolution's output (full width, as conv_plane_wide), then dW[f, t]
    # += the plane's dot product with the image shifted by tap t, four taps per pass.
    # Four times the multiply-adds of the sparse body, but vectorized and branch-free.
    N, C, H, Wd = x.shape
    FN, FH, FW = dW.shape[0], dW.shape[2], dW.shape[3]
    PH, PW = out.shape[2], out.shape[3]
    OH = H - FH + 1
    count = OH * Wd - (FW - 1)
    taps = C * FH * FW
    zero = db.dtype.type(0)
    for f in prange(FN):
        plane = work[f]
        s = zero
        dWf = dW[f].reshape(taps)
        for t in range(taps):
            dWf[t] = 0
        for n in range(N):
            for p in range(OH * Wd):
                plane[p] = 0
            of = out[n, f].reshape(PH * PW)
            gf = dout[n, f].reshape(PH * PW)
            af = argmax[n, f].reshape(PH * PW)
            for py in range(PH):
                for px in range(PW):
                    q = py * PW + px
                    # the ReLU: windows whose maximum was <= 0 pass 0; a NaN maximum passes
                    # its gradient, as in the sparse body and the book's `x <= 0` mask
                    if not of[q] <= 0:
                        g = gf[q]
                        s += g
                        k = af[q]
                        wy = k // pool_w
                        wx = k - wy * pool_w
                        plane[_u((py * pool_stride + wy) * Wd + px * pool_stride + wx)] += g
            xn = x[n].reshape(C * H * Wd)
            t = 0
            while t + 4 <= taps:
                o0 = _tap_offset(t, FH, FW, H, Wd)
                o1 = _tap_offset(t + 1, FH, FW, H, Wd)
                o2 = _tap_offset(t + 2, FH, FW, H, Wd)
                o3 = _tap_offset(t + 3, FH, FW, H, Wd)
                r0, r1, r2, r3 = _dot4(plane, xn[o0:o0 + count], xn[o1:o1 + count],
                                       xn[o2:o2 + count], xn[o3:o3 + count], count)
                dWf[t] += r0
                dWf[t + 1] += r1
                dWf[t + 2] += r2
                dWf[t + 3] += r3
                t += 4
            while t < taps:
                o0 = _tap_offset(t, FH, FW, H, Wd)
                dWf[t] += dot_reassoc(plane, xn[o0:o0 + count], count)
                t += 1
        db[f] = s


_crp_dense_serial, _crp_dense_parallel = twins(_crp_backward_dense_body)
_crp_dense_run = twin_runner(_crp_dense_serial, _crp_dense_parallel)


@njit(cache=True, nogil=True)
def _conv_macs(N, W, OH, OW):
    return N * W.size * OH * OW


@njit(cache=True, nogil=True)
def _sample_split_macs(N, W, OH, OW):
    # The work a twin that splits samples over threads sees: one sample stays serial.
    return _conv_macs(N, W, OH, OW) if N > 1 else 0


_MIN_PARALLEL = """min_parallel : int or None
        Multiply-adds from which the parallel twin runs; ``MACHINE_DEFAULT`` (-1, the
        default): this machine's threshold (:func:`fastbp.kernels.machine_thresholds`);
        ``None`` leaves the parallel twin out of the compiled code (serial at any size,
        the same bits)."""
_MIN_PARALLEL_COMPARISONS = _MIN_PARALLEL.replace("Multiply-adds", "Compared values")


@njit(cache=True, nogil=True)
@with_doc(conv_inputs=_CONV_INPUTS, min_parallel=_MIN_PARALLEL)
def conv2d_forward(x, W, b, stride, pad, out, min_parallel=MACHINE_DEFAULT):
    """Convolution of a batch, the book's ``Convolution.forward``:
    ``out[n, f] = sum over c, ky, kx of W[f, c, ky, kx] * xpad[n, c, oy*s + ky, ox*s + kx]
    + b[f]``, with `x` zero-padded by `pad` on each side.

    Parameters
    ----------
    {conv_inputs}
    stride, pad : int
        ``stride >= 1``, ``pad >= 0``.
    out : ndarray, (N, FN, OH, OW), dtype of `x`, C-contiguous; written in place.
        ``OH = conv_output_size(H, FH, stride, pad)``, likewise ``OW``.
    {min_parallel}
    """
    _conv_forward_run((x, W, b, stride, pad, out),
                      _sample_split_macs(x.shape[0], W, out.shape[2], out.shape[3]),
                      resolved(min_parallel, CONV_PARALLEL_MIN_MACS))


@njit(cache=True, nogil=True)
@with_doc(min_parallel=_MIN_PARALLEL)
def conv2d_backward(dout, x, W, stride, pad, dW, db, dx=None,
                    min_parallel=MACHINE_DEFAULT):
    """Gradients of :func:`conv2d_forward`: ``dW``, ``db`` and, if given, ``dx``.

    Parameters
    ----------
    dout : ndarray, (N, FN, OH, OW), float32 or float64, C-contiguous
        Upstream gradient.
    x : ndarray, (N, C, H, W), dtype of `dout`, C-contiguous
        The forward input.
    W : ndarray, (FN, C, FH, FW), dtype of `dout`, C-contiguous
    stride, pad : int
    dW : ndarray, (FN, C, FH, FW), written in place.
    db : ndarray, (FN,), written in place.
    dx : ndarray, (N, C, H, W), optional
        Written in place when given; omit it for a first layer (it is never needed).
    {min_parallel}
    """
    macs = _conv_macs(x.shape[0], W, dout.shape[2], dout.shape[3])
    minimum = resolved(min_parallel, CONV_PARALLEL_MIN_MACS)
    _conv_dw_run((dout, x, stride, pad, dW, db), macs, minimum)
    if dx is not None:
        _conv_dx_run((dout, W, stride, pad, dx), macs, minimum)


@njit(cache=True, nogil=True)
@with_doc(min_parallel=_MIN_PARALLEL_COMPARISONS)
def maxpool_forward(x, pool_h, pool_w, stride, pad, out, argmax,
                    min_parallel=MACHINE_DEFAULT):
    """Max pooling, the book's ``Pooling.forward``: each output is the largest value of its
    ``pool_h x pool_w`` window (zero padding counts as values, as the book pads).

    Parameters
    ----------
    x : ndarray, (N, C, H, W), float32 or float64, C-contiguous
    pool_h, pool_w, stride, pad : int
    out : ndarray, (N, C, OH, OW), dtype of `x`, C-contiguous; written in place.
    argmax : ndarray, (N, C, OH, OW), int32, C-contiguous; written in place with the
        row-major index ``wy * pool_w + wx`` of each window's first largest value.
    {min_parallel}
    """
    _pool_forward_run((x, pool_h, pool_w, stride, pad, out, argmax),
                      out.size * pool_h * pool_w,
                      resolved(min_parallel, CONV_PARALLEL_MIN_MACS))


@njit(cache=True, nogil=True)
@with_doc(min_parallel=_MIN_PARALLEL.replace("Multiply-adds", "Elements of `dx`"))
def maxpool_backward(dout, argmax, pool_w, stride, pad, dx, min_parallel=MACHINE_DEFAULT):
    """Gradient of :func:`maxpool_forward`: each ``dout`` value goes to its window's maximum.

    Parameters
    ----------
    dout : ndarray, (N, C, OH, OW), float32 or float64, C-contiguous
    argmax : ndarray, (N, C, OH, OW), int32: :func:`maxpool_forward`'s indices.
    pool_w, stride, pad : int
        As in the forward.
    dx : ndarray, (N, C, H, W), dtype of `dout`, C-contiguous; written in place.
    {min_parallel}
    """
    _pool_backward_run((dout, argmax, pool_w, stride, pad, dx), dx.size,
                       resolved(min_parallel, CONV_PARALLEL_MIN_MACS))


@njit(cache=True, nogil=True)
@with_doc(conv_inputs=_CONV_INPUTS, min_parallel=_MIN_PARALLEL)
def conv_relu_pool_forward(x, W, b, stride, pad, pool_h, pool_w, pool_stride, scratch, out,
                           argmax, min_parallel=MACHINE_DEFAULT):
    """``maxpool(relu(conv2d(x, W) + b))`` without storing the convolution output.

    Parameters
    ----------
    {conv_inputs}
    stride, pad : int
        The convolution's.
    pool_h, pool_w, pool_stride : int
        The pooling window (no pooling padding); every window must lie inside the
        convolution output.
    scratch : ndarray, (N, S), dtype of `x`, C-contiguous
        Work space, ``S = crp_scratch_size(C, H, W, FH, FW, stride, pad)``; overwritten.
    out : ndarray, (N, FN, PH, PW), dtype of `x`, C-contiguous; written in place.
    argmax : ndarray, (N, FN, PH, PW), int32, C-contiguous; written with each window's
        index as in :func:`maxpool_forward`.
    {min_parallel}
    """
    OH = conv_output_size(x.shape[2], W.shape[2], stride, pad)
    OW = conv_output_size(x.shape[3], W.shape[3], stride, pad)
    _crp_forward_run((x, W, b, stride, pad, pool_h, pool_w, pool_stride, scratch, out, argmax),
                     _sample_split_macs(x.shape[0], W, OH, OW),
                     resolved(min_parallel, CONV_PARALLEL_MIN_MACS))


@njit(cache=True, nogil=True)
def crp_backward_work_size(H, W, FH, stride, pad):
    """Elements per filter of the work space of :func:`conv_relu_pool_backward`: a full-width
    convolution plane for stride 1 without padding (the dense path), else 0."""
    if stride == 1 and pad == 0:
        return (H - FH + 1) * W
    return 0


@njit(cache=True, nogil=True)
@with_doc(min_parallel=_MIN_PARALLEL)
def conv_relu_pool_backward(dout, x, out, argmax, stride, pad, pool_w, pool_stride, dW, db, work,
                            min_parallel=MACHINE_DEFAULT):
    """``dW`` and ``db`` of :func:`conv_relu_pool_forward` (no input gradient).

    Parameters
    ----------
    dout : ndarray, (N, FN, PH, PW), float32 or float64, C-contiguous
        Gradient with respect to the pooled output.
    x : ndarray, (N, C, H, W), the forward input.
    out, argmax : ndarray, (N, FN, PH, PW): the forward's pooled output and indices.
    stride, pad, pool_w, pool_stride : int
        As in the forward.
    dW : ndarray, (FN, C, FH, FW), written in place.
    db : ndarray, (FN,), written in place.
    work : ndarray, (FN, crp_backward_work_size(H, W, FH, stride, pad)), dtype of `x`
        Work space; overwritten. With stride 1 and no padding, each filter's gradient is
        computed densely from a plane of the convolution output (vectorized dot products);
        otherwise each positive window adds its input patch (``work`` unused, may be
        (FN, 0)).
    {min_parallel}
    """
    macs = out.size * (dW.size // dW.shape[0])
    if stride == 1 and pad == 0:
        _crp_dense_run((dout, x, out, argmax, pool_w, pool_stride, dW, db, work), macs,
                       resolved(min_parallel, CONV_PARALLEL_MIN_MACS))
    else:
        _crp_backward_run((dout, x, out, argmax, stride, pad, pool_w, pool_stride, dW, db),
                          macs, resolved(min_parallel, CONV_PARALLEL_MIN_MACS))
