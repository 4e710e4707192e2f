"""ReLU, sigmoid and tanh, forward and backward, on C-contiguous arrays of any shape.

Every kernel writes into a caller-given buffer of the input's shape and dtype and allocates
nothing. The public functions are ``@njit`` dispatchers: call them from Python or from your
own ``@njit`` code; they pick the serial or parallel twin by element count.
"""
import numpy as np
from numba import njit, prange

from ._compile import MACHINE_DEFAULT, PARALLEL_MIN_ELEMENTS, PARALLEL_MIN_HEAVY_ELEMENTS
from ._dispatch import flat, resolved, twins_with_runner
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
    # the array's dtype, with the vectorizable exp of ._vexp (np.exp is a scalar libm call,
    # an order of magnitude slower: docs/decisions/vectorized-exp.md).
    e = exp_nonpos(-abs(v))
    inv = one / (one + e)
    return inv if v >= 0 else e * inv


def _sigmoid_forward_body(x, out):
    # Two independent halves per iteration: the exp is a long chain of dependent operations,
    # and two chains in flight hide its latency (measured on 2 threads; the serial loop
    # gains nothing, it is bound by the arithmetic itself: docs/decisions/vectorized-exp.md).
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


def _tanh_forward_body(x, out):
    for i in prange(x.size):
        out[i] = np.tanh(x[i])


def _tanh_backward_body(y, dout, dx):
    one = dx.dtype.type(1.0)
    for i in prange(y.size):
        v = y[i]
        dx[i] = dout[i] * (one - v * v)


_relu_forward_serial, _relu_forward_parallel, _relu_forward_run = twins_with_runner(_relu_forward_body)
_relu_backward_serial, _relu_backward_parallel, _relu_backward_run = twins_with_runner(_relu_backward_body)
# error_model="numpy": no ZeroDivisionError check on `one / (one + e)` (the divisor is
# >= 1). The check is a branch that kept LLVM from vectorizing the loop.
# fastmath={"contract"} only lets LLVM fuse a * b + c into one FMA instruction (NaN, inf and
# signed zeros are handled as without it): the exp polynomial's multiply-adds are its
# critical path. Both measured with benchmarks/elementwise_bandwidth.py
# (docs/decisions/vectorized-exp.md).
_sigmoid_forward_serial, _sigmoid_forward_parallel, _sigmoid_forward_run = twins_with_runner(
    _sigmoid_forward_body, error_model="numpy", fastmath={"contract"})
_sigmoid_backward_serial, _sigmoid_backward_parallel, _sigmoid_backward_run = twins_with_runner(_sigmoid_backward_body)
_tanh_forward_serial, _tanh_forward_parallel, _tanh_forward_run = twins_with_runner(_tanh_forward_body)
_tanh_backward_serial, _tanh_backward_parallel, _tanh_backward_run = twins_with_runner(_tanh_backward_body)

@njit(cache=True, nogil=True)
def relu_forward(x, out, min_parallel=MACHINE_DEFAULT):
    """ReLU: ``out = x`` where ``x > 0``, else 0.

    Parameters
    ----------
    x : ndarray, float32 or float64, C-contiguous, any shape
    out : ndarray, same shape and dtype as `x`, C-contiguous
        Written in place (may be `x` itself).
    min_parallel : int or None
        Elements from which the parallel twin runs; ``MACHINE_DEFAULT`` (-1, the default):
        this machine's threshold for the kernel's class
        (:func:`fastbp.kernels.machine_thresholds`); ``None`` leaves the parallel twin out
        of the compiled code (serial at any size, the same bits). Every kernel of this
        module takes it.
    """
    _relu_forward_run((flat(x), flat(out)), x.size,
              resolved(min_parallel, PARALLEL_MIN_ELEMENTS))


@njit(cache=True, nogil=True)
def relu_backward(x, dout, dx, min_parallel=MACHINE_DEFAULT):
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
    _relu_backward_run((flat(x), flat(dout), flat(dx)), x.size,
              resolved(min_parallel, PARALLEL_MIN_ELEMENTS))


# The parameters of sigmoid's and tanh's kernels are documented once, on ReLU's.
@njit(cache=True, nogil=True)
def sigmoid_forward(x, out, min_parallel=MACHINE_DEFAULT):
    """Logistic sigmoid ``out = 1 / (1 + exp(-x))``, overflow-free for any finite `x`;
    `x` and `out` as in :func:`relu_forward`."""
    _sigmoid_forward_run((flat(x), flat(out)), x.size,
              resolved(min_parallel, PARALLEL_MIN_HEAVY_ELEMENTS))


@njit(cache=True, nogil=True)
def sigmoid_backward(y, dout, dx, min_parallel=MACHINE_DEFAULT):
    """Sigmoid backward from the forward output `y` only: ``dx = dout * y * (1 - y)``, with
    `y` in the place of :func:`relu_backward`'s `x` (may be given `dout` as `dx`)."""
    _sigmoid_backward_run((flat(y), flat(dout), flat(dx)), y.size,
              resolved(min_parallel, PARALLEL_MIN_ELEMENTS))


@njit(cache=True, nogil=True)
def tanh_forward(x, out, min_parallel=MACHINE_DEFAULT):
    """Hyperbolic tangent ``out = tanh(x)``, arguments as :func:`relu_forward`'s."""
    _tanh_forward_run((flat(x), flat(out)), x.size,
              resolved(min_parallel, PARALLEL_MIN_HEAVY_ELEMENTS))


@njit(cache=True, nogil=True)
def tanh_backward(y, dout, dx, min_parallel=MACHINE_DEFAULT):
    """Tanh backward from the forward output `y` only: ``dx = dout * (1 - y**2)``; arguments
    as :func:`sigmoid_backward`'s."""
    _tanh_backward_run((flat(y), flat(dout), flat(dx)), y.size,
              resolved(min_parallel, PARALLEL_MIN_ELEMENTS))
