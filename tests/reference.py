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
