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


def two_layer(x, t, W1, b1, W2, b2):
    """Loss and gradients of the book's TwoLayerNet."""
    a = affine_forward(x, W1, b1)
    h = relu_forward(a)
    y = affine_forward(h, W2, b2)
    loss, dy = softmax_cross_entropy(y, t)
    dh, dW2, db2 = affine_backward(dy, h, W2)
    _, dW1, db1 = affine_backward(relu_backward(a, dh), x, W1)
    return loss, {"W1": dW1, "b1": db1, "W2": dW2, "b2": db2}


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
