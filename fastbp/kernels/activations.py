"""ReLU and sigmoid, forward and backward, on C-contiguous arrays of any shape.

Every kernel writes into a caller-given buffer of the input's shape and dtype and allocates
nothing. The public functions are ``@njit`` dispatchers: call them from Python or from your
own ``@njit`` code; they pick the serial or parallel twin by element count.
"""
from numba import njit, prange

from ._compile import PARALLEL_MIN_ELEMENTS, twins
from ._vexp import exp_nonpos


def _relu_forward_body(x, out):
    for i in prange(x.size):
        v = x[i]
        # `v <= 0` (not `v > 0`) so NaN passes through, as the book's `out[x <= 0] = 0` does.
        out[i] = 0 if v <= 0 else v


def _relu_backward_body(x, dout, dx):
    for i in prange(x.size):
        # The book's mask: gradient 0 where the input was <= 0 (x == 0 included).
        dx[i] = 0 if x[i] <= 0 else dout[i]


@njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})
def sigmoid_scalar(v, one):
    """The sigmoid of one value `v` in the dtype of `one` (1.0 of that dtype), overflow-free."""
    # exp of a non-positive number only: no overflow for x = -1000 or +1e4. Branch-free, in
    # the array's dtype, with the vectorizable exp of ._vexp (np.exp is a scalar libm call:
    # 48 ms per 10**7 float32 elements instead of ~4 ms).
    e = exp_nonpos(-abs(v))
    inv = one / (one + e)
    return inv if v >= 0 else e * inv


def _sigmoid_forward_body(x, out):
    # Two independent halves per iteration: the exp is a long chain of dependent operations,
    # and two chains in flight hide its latency. Measured on 2 AVX2 cores at 10**7
    # elements: float32 3.4 ms instead of 4.1, float64 9.4 instead of 11.1 (the serial loop
    # gains nothing: it is bound by the arithmetic itself).
    one = out.dtype.type(1.0)
    h = x.size // 2
    # Four separate assignments: unpacking the four views from one tuple lost the second
    # half's writes in the parallel twin (a Numba parfor bug; caught by the twins test).
    x0 = x[:h]
    x1 = x[h:2 * h]
    out0 = out[:h]
    out1 = out[h:2 * h]
    for i in prange(h):
        out0[i] = sigmoid_scalar(x0[i], one)
        out1[i] = sigmoid_scalar(x1[i], one)
    if x.size > 2 * h:
        out[-1] = sigmoid_scalar(x[-1], one)


def _sigmoid_backward_body(y, dout, dx):
    for i in prange(y.size):
        v = y[i]
        dx[i] = dout[i] * (1.0 - v) * v


_relu_forward_serial, _relu_forward_parallel = twins(_relu_forward_body)
_relu_backward_serial, _relu_backward_parallel = twins(_relu_backward_body)
# error_model="numpy": no ZeroDivisionError check on `one / (one + e)` (the divisor is
# >= 1). The check is a branch that kept LLVM from vectorizing the loop (measured: scalar
# code, 4.5 ms per 10**7 float32; vectorized: see benchmarks/elementwise_bandwidth.py).
# fastmath={"contract"} only lets LLVM fuse a * b + c into one FMA instruction (NaN, inf and
# signed zeros are handled as without it): the exp polynomial's multiply-adds are its
# critical path, and fusing them took 10**7 float32 from 5.4 to 4.2 ms on 2 AVX2 cores.
_sigmoid_forward_serial, _sigmoid_forward_parallel = twins(
    _sigmoid_forward_body, error_model="numpy", fastmath={"contract"})
_sigmoid_backward_serial, _sigmoid_backward_parallel = twins(_sigmoid_backward_body)


@njit(cache=True, nogil=True)
def relu_forward(x, out):
    """ReLU: ``out = x`` where ``x > 0``, else 0.

    Parameters
    ----------
    x : ndarray, float32 or float64, C-contiguous, any shape
    out : ndarray, same shape and dtype as `x`, C-contiguous
        Written in place (may be `x` itself).
    """
    xf = x.reshape(x.size)
    of = out.reshape(out.size)
    if x.size >= PARALLEL_MIN_ELEMENTS:
        _relu_forward_parallel(xf, of)
    else:
        _relu_forward_serial(xf, of)


@njit(cache=True, nogil=True)
def relu_backward(x, dout, dx):
    """ReLU backward: ``dx = dout`` where ``x > 0``, else 0.

    Parameters
    ----------
    x : ndarray, float32 or float64, C-contiguous
        The forward input, or the forward output (same sign pattern).
    dout : ndarray, shape and dtype of `x`
        Upstream gradient.
    dx : ndarray, shape and dtype of `x`
        Written in place (may be `dout`).
    """
    xf = x.reshape(x.size)
    gf = dout.reshape(dout.size)
    df = dx.reshape(dx.size)
    if x.size >= PARALLEL_MIN_ELEMENTS:
        _relu_backward_parallel(xf, gf, df)
    else:
        _relu_backward_serial(xf, gf, df)


@njit(cache=True, nogil=True)
def sigmoid_forward(x, out):
    """Logistic sigmoid ``out = 1 / (1 + exp(-x))``, overflow-free for any finite `x`.

    Parameters
    ----------
    x : ndarray, float32 or float64, C-contiguous, any shape
    out : ndarray, same shape and dtype, written in place (may be `x`).
    """
    xf = x.reshape(x.size)
    of = out.reshape(out.size)
    if x.size >= PARALLEL_MIN_ELEMENTS:
        _sigmoid_forward_parallel(xf, of)
    else:
        _sigmoid_forward_serial(xf, of)


@njit(cache=True, nogil=True)
def sigmoid_backward(y, dout, dx):
    """Sigmoid backward from the forward output only: ``dx = dout * y * (1 - y)``.

    Parameters
    ----------
    y : ndarray, float32 or float64, C-contiguous
        The forward output.
    dout : ndarray, shape and dtype of `y`
    dx : ndarray, shape and dtype of `y`, written in place (may be `dout`).
    """
    yf = y.reshape(y.size)
    gf = dout.reshape(dout.size)
    df = dx.reshape(dx.size)
    if y.size >= PARALLEL_MIN_ELEMENTS:
        _sigmoid_backward_parallel(yf, gf, df)
    else:
        _sigmoid_backward_serial(yf, gf, df)
