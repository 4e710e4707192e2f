"""Slow, obvious NumPy versions of every kernel, computed in float64."""
import numpy as np


def relu_forward(x):
    x = np.asarray(x, np.float64)
    out = x.copy()
    out[x <= 0] = 0
    return out


def relu_backward(x, dout):
    dx = np.array(dout, np.float64)
    dx[np.asarray(x) <= 0] = 0
    return dx


def sigmoid_forward(x):
    x = np.asarray(x, np.float64)
    with np.errstate(over="ignore"):
        return 1 / (1 + np.exp(-x))


def sigmoid_backward(y, dout):
    y = np.asarray(y, np.float64)
    return np.asarray(dout, np.float64) * (1.0 - y) * y


def matmul(a, b, skip_zeros=False):
    """``a @ b`` in float64. With `skip_zeros`, a zero entry of `a` contributes nothing, even
    against inf or NaN in `b` (fastbp's hand-written loops; BLAS gives ``0 * inf = NaN``).
    The order of the sums does not change which results are NaN or infinite."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        if not skip_zeros:
            return a @ b
        bad = ~np.isfinite(b).all(axis=1)  # rows of b where skipping can matter
        out = a[:, ~bad] @ b[~bad]
        for k in np.flatnonzero(bad):
            ak = a[:, k:k + 1]
            out += np.where(ak != 0, ak * b[k], 0.0)
        return out


def tanh_forward(x):
    return np.tanh(np.asarray(x, np.float64))


def tanh_backward(y, dout):
    y = np.asarray(y, np.float64)
    return np.asarray(dout, np.float64) * (1.0 - y * y)


def affine_forward(x, W, b):
    return np.asarray(x, np.float64) @ np.asarray(W, np.float64) + np.asarray(b, np.float64)


def affine_backward(dout, x, W):
    dout, x, W = (np.asarray(a, np.float64) for a in (dout, x, W))
    return dout @ W.T, x.T @ dout, dout.sum(axis=0)


def onehot(t, c):
    t = np.asarray(t)
    return t.astype(np.float64) if t.ndim == 2 else np.eye(c)[t]


def softmax_cross_entropy(x, t):
    x = np.asarray(x, np.float64)
    n, c = x.shape
    T = onehot(t, c)
    z = x - x.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    # 0 * log(0) = 0: a class with target 0 adds nothing, even if its logit is -inf
    loss = -np.where(T != 0, T * logp, 0.0).sum() / n
    return loss, (np.exp(logp) - T) / n


def sgd_update(param, grad, lr):
    return np.asarray(param, np.float64) - lr * np.asarray(grad, np.float64)


def two_layer(x, t, W1, b1, W2, b2, skip_zeros=()):
    """Loss and gradients of the book's TwoLayerNet.

    `skip_zeros` names the products that skip zero entries of `x` or of the hidden
    activations (see :func:`matmul`): any of "x @ W1", "h @ W2", "x.T @ dz", "h.T @ dy",
    or True for all four."""
    if skip_zeros is True:
        skip_zeros = ("x @ W1", "h @ W2", "x.T @ dz", "h.T @ dy")
    x, W1, b1, W2, b2 = (np.asarray(a, np.float64) for a in (x, W1, b1, W2, b2))
    with np.errstate(invalid="ignore", over="ignore"):
        a = matmul(x, W1, "x @ W1" in skip_zeros) + b1
        h = relu_forward(a)
        y = matmul(h, W2, "h @ W2" in skip_zeros) + b2
        loss, dy = softmax_cross_entropy(y, t)
        dh = dy @ W2.T
        dW2, db2 = matmul(h.T, dy, "h.T @ dy" in skip_zeros), dy.sum(axis=0)
        dz = relu_backward(a, dh)
        dW1, db1 = matmul(x.T, dz, "x.T @ dz" in skip_zeros), dz.sum(axis=0)
    return loss, {"W1": dW1, "b1": db1, "W2": dW2, "b2": db2}


def logistic_cross_entropy(x, t):
    """Mean over rows of the binary cross-entropy of an independent sigmoid per output,
    summed over the outputs, and its gradient ``(sigmoid(x) - t) / n``; `t` (n, c) in
    [0, 1]. ``log(1 + exp(x)) - t x``, overflow-free."""
    x = np.asarray(x, np.float64)
    t = np.asarray(t, np.float64)
    n = x.shape[0]
    loss = (np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x))) - t * x).sum() / n
    return loss, (sigmoid_forward(x) - t) / n


_ACTIVATIONS = {
    "relu": (relu_forward, relu_backward),
    "sigmoid": (sigmoid_forward, sigmoid_backward),
    "tanh": (tanh_forward, tanh_backward),
    "identity": (lambda z: np.asarray(z, np.float64), lambda h, d: d),
}


def multilayer(x, t, Ws, bs, act="relu", bn=None, masks=None, decay=0.0, skip=None,
               momentum=0.9, output="softmax"):
    """Loss, gradients and new BatchNorm running statistics of the book's
    ``MultiLayerNetExtend`` in training mode, float64.

    Parameters
    ----------
    Ws, bs : lists of the affine layers' W (d_in, d_out) and b (d_out,)
    act : 'relu', 'sigmoid', 'tanh' or 'identity'
    bn : None, or per hidden layer ``(gamma, beta, running_mean, running_var)``
    masks : None, or per hidden layer a bool (n, d_out) Dropout mask (True: kept)
    decay : L2 weight decay (adds ``0.5 decay sum(W**2)`` to the loss, ``decay W`` to dW)
    skip : None, or ``skip(l, n, d_in, d_out) -> bool``: layer `l`'s forward product and
        weight gradient skip zero activations (see :func:`matmul`)
    output : 'softmax' (softmax with cross-entropy) or 'logistic'
        (:func:`logistic_cross_entropy`)

    Returns
    -------
    loss, grads (the book's keys), stats (per hidden layer ``(running_mean, running_var)``),
    scales (per key, the size of the terms each gradient is summed from: ``|a|.T @ |dz|``,
    ``|dz|.sum(0)``, finite entries only; rounding errors are relative to these, e.g. a
    bias before BatchNorm, whose gradient is 0 up to rounding); with BatchNorm also
    "bn_condition", the largest ``(|x| + |mean|) / std`` of a normalized column: how much
    the rounding of its input grows in the normalization
    """
    L = len(Ws) - 1
    x = np.asarray(x, np.float64)
    n = x.shape[0]
    Ws = [np.asarray(W, np.float64) for W in Ws]
    bs = [np.asarray(b, np.float64) for b in bs]

    def skips(l):
        return bool(skip and skip(l, n, *Ws[l].shape))

    acts, pre, hs, stats = [x], [], [], []
    with np.errstate(invalid="ignore", over="ignore"):
        a = x
        for l in range(L):
            z = matmul(a, Ws[l], skips(l)) + bs[l]
            pre.append(z)
            if bn is not None:
                gamma, beta, rm, rv = bn[l]
                z, rm, rv = batchnorm_forward(z, gamma, beta, rm, rv, momentum)
                stats.append((rm, rv))
            h = _ACTIVATIONS[act][0](z)
            hs.append(h)
            a = h * masks[l] if masks is not None else h
            acts.append(a)
        y = matmul(a, Ws[L], skips(L)) + bs[L]
        loss, dz = (softmax_cross_entropy if output == "softmax" else
                    logistic_cross_entropy)(y, t)
        loss += 0.5 * decay * sum(float(np.sum(W ** 2)) for W in Ws)
        grads, scales = {}, {}

        def finite_abs(a):
            return np.where(np.isfinite(a), np.abs(a), 0.0)

        # adz: the size of the terms dz is computed from (a running error bound: BatchNorm's
        # backward cancels, so |dz| itself can be far smaller than its rounding error)
        adz = finite_abs(dz)
        for l in range(L, -1, -1):
            grads[f"W{l + 1}"] = matmul(acts[l].T, dz, skips(l)) + decay * Ws[l]
            grads[f"b{l + 1}"] = dz.sum(axis=0)
            scales[f"W{l + 1}"] = finite_abs(acts[l]).T @ adz + decay * finite_abs(Ws[l])
            scales[f"b{l + 1}"] = adz.sum(axis=0)
            if l == 0:
                break
            da = dz @ Ws[l].T
            ada = adz @ finite_abs(Ws[l]).T
            if masks is not None:
                da = da * masks[l - 1]
                ada = ada * masks[l - 1]
            h = hs[l - 1]
            if act == "relu":
                da = relu_backward(h, da)
                ada = relu_backward(h, ada)
            elif act == "sigmoid":
                da = sigmoid_backward(h, da)
                ada = sigmoid_backward(finite_abs(h), ada)
            elif act == "tanh":  # 1 - h * h cancels near |h| = 1: its terms' size
                da = tanh_backward(h, da)
                ada = ada * (1.0 + finite_abs(h) ** 2)
            if bn is not None:
                gamma = np.asarray(bn[l - 1][0], np.float64)
                da, grads[f"gamma{l}"], grads[f"beta{l}"] = batchnorm_backward(
                    pre[l - 1], gamma, da)
                z = pre[l - 1]
                mu = z.mean(axis=0)
                std = np.sqrt(((z - mu) ** 2).mean(axis=0) + BN_EPS)
                axn = (finite_abs(z) + finite_abs(mu)) / std  # x - mu is rounded to |x|
                scales["bn_condition"] = max(scales.get("bn_condition", 1.0),
                                             float(axn.max(initial=1.0)))
                scales[f"beta{l}"] = ada.sum(axis=0)
                scales[f"gamma{l}"] = (ada * axn).sum(axis=0)
                ada = np.abs(gamma) / std * (ada + ada.mean(axis=0)
                                             + axn * (ada * axn).mean(axis=0))
            dz = da
            adz = ada
    return loss, grads, stats, scales


# -- chapter-6 optimizers: one step each, in the textbook form (not the book's in-place
# -- rearrangement), with L2 weight decay folded into the gradient. Return new arrays.

OPT_EPS = 1e-7


def _decayed(param, grad, decay):
    p, g = np.asarray(param, np.float64), np.asarray(grad, np.float64)
    return p, g + decay * p


def sgd_decay_update(param, grad, lr, decay=0.0):
    p, g = _decayed(param, grad, decay)
    return p - lr * g


def momentum_update(param, grad, v, lr, momentum, decay=0.0):
    """(param, v) after ``v <- momentum v - lr g; param <- param + v``."""
    p, g = _decayed(param, grad, decay)
    v = momentum * np.asarray(v, np.float64) - lr * g
    return p + v, v


def nesterov_update(param, grad, v, lr, momentum, decay=0.0):
    """(param, v): Nesterov momentum on the look-ahead parameters (Bengio et al. 2012),
    ``v <- momentum v - lr g; param <- param + momentum v - lr g``."""
    p, g = _decayed(param, grad, decay)
    v = momentum * np.asarray(v, np.float64) - lr * g
    return p + momentum * v - lr * g, v


def adagrad_update(param, grad, h, lr, decay=0.0):
    """(param, h) after ``h <- h + g^2; param <- param - lr g / (sqrt(h) + eps)``."""
    p, g = _decayed(param, grad, decay)
    h = np.asarray(h, np.float64) + g ** 2
    return p - lr * g / (np.sqrt(h) + OPT_EPS), h


def rmsprop_update(param, grad, h, lr, decay_rate, decay=0.0):
    """(param, h): ``h <- rho h + (1 - rho) g^2; param <- param - lr g / (sqrt(h) + eps)``."""
    p, g = _decayed(param, grad, decay)
    h = decay_rate * np.asarray(h, np.float64) + (1 - decay_rate) * g ** 2
    return p - lr * g / (np.sqrt(h) + OPT_EPS), h


def adam_lr(lr, beta1, beta2, t):
    """Adam's bias-corrected step size at step t = 1, 2, ..."""
    return lr * np.sqrt(1 - beta2 ** t) / (1 - beta1 ** t)


def adam_update(param, grad, m, v, lr_t, beta1, beta2, decay=0.0):
    """(param, m, v) after the moment averages and ``param <- param - lr_t m / (sqrt(v) +
    eps)``."""
    p, g = _decayed(param, grad, decay)
    m = beta1 * np.asarray(m, np.float64) + (1 - beta1) * g
    v = beta2 * np.asarray(v, np.float64) + (1 - beta2) * g ** 2
    return p - lr_t * m / (np.sqrt(v) + OPT_EPS), m, v


# -- chapter-6 batch normalization and dropout -------------------------------------------

BN_EPS = 10e-7


def batchnorm_forward(x, gamma, beta, running_mean, running_var, momentum=0.9, train=True):
    """``(out, running_mean, running_var)`` after one forward pass, float64."""
    x, gamma, beta, rm, rv = (np.asarray(a, np.float64)
                              for a in (x, gamma, beta, running_mean, running_var))
    if not train:
        return gamma * (x - rm) / np.sqrt(rv + BN_EPS) + beta, rm, rv
    mu = x.mean(axis=0)
    var = ((x - mu) ** 2).mean(axis=0)
    out = gamma * (x - mu) / np.sqrt(var + BN_EPS) + beta
    return out, momentum * rm + (1 - momentum) * mu, momentum * rv + (1 - momentum) * var


def batchnorm_backward(x, gamma, dout):
    """``(dx, dgamma, dbeta)`` of training-mode batch normalization at `x`, float64, in the
    closed form ``dx = gamma / std * (dout - mean(dout) - xn * mean(dout * xn))``."""
    x, gamma, dout = (np.asarray(a, np.float64) for a in (x, gamma, dout))
    xc = x - x.mean(axis=0)
    std = np.sqrt((xc ** 2).mean(axis=0) + BN_EPS)
    xn = xc / std
    dbeta = dout.sum(axis=0)
    dgamma = (dout * xn).sum(axis=0)
    dx = gamma / std * (dout - dout.mean(axis=0) - xn * (dout * xn).mean(axis=0))
    return dx, dgamma, dbeta


def philox4x32(counter, key, rounds=10):
    """Philox4x32 (Salmon et al., SC 2011) on Python ints: 4 counter words, 2 key words."""
    m = 0xFFFFFFFF
    c = list(counter)
    k0, k1 = key
    for r in range(rounds):
        if r:
            k0, k1 = (k0 + 0x9E3779B9) & m, (k1 + 0xBB67AE85) & m
        p0, p1 = 0xD2511F53 * c[0], 0xCD9E8D57 * c[2]
        c = [(p1 >> 32) ^ c[1] ^ k0, p1 & m, (p0 >> 32) ^ c[3] ^ k1, p0 & m]
    return c


def dropout_mask_vectorized(shape, ratio, seed, stream):
    """:func:`dropout_mask` with NumPy's uint64 arithmetic over all blocks at once (every
    32 x 32-bit product fits in 64 bits), for large masks; the same bits."""
    size = int(np.prod(shape))
    m = np.uint64(0xFFFFFFFF)
    u32 = np.uint64(32)
    b = np.arange((size + 3) // 4, dtype=np.uint64)
    c = [b & m, b >> u32, np.full_like(b, stream & 0xFFFFFFFF),
         np.full_like(b, stream >> 32)]
    k0, k1 = np.uint64(seed & 0xFFFFFFFF), np.uint64(seed >> 32)
    for r in range(10):
        if r:
            k0, k1 = (k0 + np.uint64(0x9E3779B9)) & m, (k1 + np.uint64(0xBB67AE85)) & m
        p0, p1 = np.uint64(0xD2511F53) * c[0], np.uint64(0xCD9E8D57) * c[2]
        c = [(p1 >> u32) ^ c[1] ^ k0, p1 & m, (p0 >> u32) ^ c[3] ^ k1, p0 & m]
    words = np.stack(c, axis=1).reshape(-1)[:size]
    return (words / 2.0 ** 32 > ratio).reshape(shape)


def dropout_mask(shape, ratio, seed, stream):
    """fastbp's dropout mask (bool): element i (flat) is kept where word i % 4 of Philox of
    counter (i // 4, stream) and key seed, divided by 2**32, is > ratio."""
    size = int(np.prod(shape))
    m = 0xFFFFFFFF
    keep = np.zeros(size, bool)
    for b in range((size + 3) // 4):
        words = philox4x32((b & m, b >> 32, stream & m, stream >> 32), (seed & m, seed >> 32))
        for lane in range(min(4, size - 4 * b)):
            keep[4 * b + lane] = words[lane] / 2.0 ** 32 > ratio
    return keep.reshape(shape)


# -- chapter-7 convolution and pooling (N, C, H, W) ----------------------------------------

def _windows(xp, fh, fw, stride, oh, ow):
    """(ky, kx, xp[:, :, ky + stride*oy, kx + stride*ox] for every output oy, ox)."""
    for ky in range(fh):
        for kx in range(fw):
            yield ky, kx, xp[:, :, ky:ky + stride * (oh - 1) + 1:stride,
                             kx:kx + stride * (ow - 1) + 1:stride]


def _padded(x, pad):
    x = np.asarray(x, np.float64)
    return np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))


def _inside(x_shape, pad):
    """1 where a padded position holds an element of x, 0 in the padding."""
    inside = np.zeros((1, 1, x_shape[2] + 2 * pad, x_shape[3] + 2 * pad))
    inside[:, :, pad:pad + x_shape[2], pad:pad + x_shape[3]] = 1
    return inside


def conv2d_forward(x, W, b, stride, pad, padding_terms=False):
    """The book's Convolution.forward, float64, except that the zero padding contributes
    nothing (fastbp's conv2d_forward reads no padding: there ``0 * inf`` in W adds 0,
    where the book's im2col gives NaN); with `padding_terms`, as the book."""
    W = np.asarray(W, np.float64)
    xp = _padded(x, pad)
    fn, _, fh, fw = W.shape
    oh = (xp.shape[2] - fh) // stride + 1
    ow = (xp.shape[3] - fw) // stride + 1
    out = np.zeros((xp.shape[0], fn, oh, ow)) + np.asarray(b, np.float64)[:, None, None]
    windows = zip(_windows(xp, fh, fw, stride, oh, ow),
                  _windows(_inside(np.shape(x), pad), fh, fw, stride, oh, ow))
    with np.errstate(invalid="ignore", over="ignore"):
        for (ky, kx, patch), (_, _, inside) in windows:
            terms = patch[:, None] * W[None, :, :, ky, kx, None, None]  # n, f, c, oh, ow
            if not padding_terms:
                terms = np.where(inside[:, None] != 0, terms, 0.0)
            out += terms.sum(axis=2)
    return out


def conv2d_backward(dout, x, W, stride, pad, skip_zero_dout=False):
    """``(dx, dW, db)`` of :func:`conv2d_forward`, float64 (the padding contributes
    nothing to dW either). `skip_zero_dout`: a zero of `dout` contributes nothing to dW,
    even against inf or NaN in `x` (the fused conv-ReLU-pool backward visits only the
    windows that pass a gradient)."""
    dout = np.asarray(dout, np.float64)
    W = np.asarray(W, np.float64)
    xp = _padded(x, pad)
    _, _, oh, ow = dout.shape
    fh, fw = W.shape[2:]
    dW = np.zeros(W.shape)
    dxp = np.zeros(xp.shape)
    windows = zip(_windows(xp, fh, fw, stride, oh, ow),
                  _windows(_inside(np.shape(x), pad), fh, fw, stride, oh, ow))
    with np.errstate(invalid="ignore", over="ignore"):
        for (ky, kx, patch), (_, _, inside) in windows:
            terms = dout[:, :, None] * patch[:, None]  # n, f, c, oh, ow
            keep = inside[:, None] != 0
            if skip_zero_dout:
                keep = keep & (dout[:, :, None] != 0)
            dW[:, :, ky, kx] = np.where(keep, terms, 0.0).sum(axis=(0, 3, 4))
            dxp[:, :, ky:ky + stride * (oh - 1) + 1:stride,
                kx:kx + stride * (ow - 1) + 1:stride] += np.einsum("nfhw,fc->nchw", dout,
                                                                   W[:, :, ky, kx])
    h, w = xp.shape[2] - 2 * pad, xp.shape[3] - 2 * pad
    return dxp[:, :, pad:pad + h, pad:pad + w], dW, dout.sum(axis=(0, 2, 3))


def maxpool_forward(x, ph, pw, stride, pad):
    """``(out, argmax)``: the book's Pooling.forward (zero padding counts as values);
    argmax is the row-major window index of the first largest value (np.argmax: the first
    NaN wins)."""
    xp = _padded(x, pad)
    oh = (xp.shape[2] - ph) // stride + 1
    ow = (xp.shape[3] - pw) // stride + 1
    stack = np.stack([patch for _, _, patch in _windows(xp, ph, pw, stride, oh, ow)], axis=-1)
    arg = np.argmax(stack, axis=-1)
    return np.take_along_axis(stack, arg[..., None], axis=-1)[..., 0], arg


def maxpool_backward(dout, argmax, x_shape, pw, stride, pad):
    """dx of :func:`maxpool_forward`: each output's gradient added at its window's maximum."""
    dout = np.asarray(dout, np.float64)
    n, c, h, w = x_shape
    dxp = np.zeros((n, c, h + 2 * pad, w + 2 * pad))
    N, C, OH, OW = np.indices(dout.shape)
    iy = OH * stride + argmax // pw
    ix = OW * stride + argmax % pw
    np.add.at(dxp, (N, C, iy, ix), dout)
    return dxp[:, :, pad:pad + h, pad:pad + w]


def simple_convnet(x, t, W1, b1, W2, b2, W3, b3, stride, pad):
    """Loss and gradients of the book's SimpleConvNet: conv - ReLU - 2x2 max pool (stride
    2) - Affine - ReLU - Affine - softmax-cross-entropy, float64."""
    x = np.asarray(x, np.float64)
    n = x.shape[0]
    W2, W3 = np.asarray(W2, np.float64), np.asarray(W3, np.float64)
    conv = conv2d_forward(x, W1, b1, stride, pad)
    a1 = relu_forward(conv)
    pooled, arg = maxpool_forward(a1, 2, 2, 2, 0)
    flat = pooled.reshape(n, -1)
    z2 = flat @ W2 + np.asarray(b2, np.float64)
    h2 = relu_forward(z2)
    y = h2 @ W3 + np.asarray(b3, np.float64)
    loss, dy = softmax_cross_entropy(y, t)
    dz2 = relu_backward(z2, dy @ W3.T)
    dpooled = (dz2 @ W2.T).reshape(pooled.shape)
    dconv = relu_backward(conv, maxpool_backward(dpooled, arg, a1.shape, 2, 2, 0))
    _, dW1, db1 = conv2d_backward(dconv, x, W1, stride, pad)
    return loss, {"W1": dW1, "b1": db1, "W2": flat.T @ dz2, "b2": dz2.sum(axis=0),
                  "W3": h2.T @ dy, "b3": dy.sum(axis=0)}
