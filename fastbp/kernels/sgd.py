"""Plain SGD update, in place."""
from numba import njit, prange

from ._compile import PARALLEL_MIN_ELEMENTS, twins


def _sgd_body(param, grad, lr):
    # lr cast to the parameter dtype so float32 stays float32 (and vectorizes 8-wide),
    # matching NumPy's `param -= lr * grad` for a float32 array.
    step = param.dtype.type(lr)
    for i in prange(param.size):
        param[i] -= step * grad[i]


_sgd_serial, _sgd_parallel = twins(_sgd_body)


@njit(cache=True, nogil=True)
def sgd_update(param, grad, lr):
    """``param -= lr * grad`` in place.

    Parameters
    ----------
    param : ndarray, float32 or float64, C-contiguous, any shape
        Updated in place.
    grad : ndarray, same shape and dtype as `param`
    lr : float
        Learning rate.
    """
    pf = param.reshape(param.size)
    gf = grad.reshape(grad.size)
    if param.size >= PARALLEL_MIN_ELEMENTS:
        _sgd_parallel(pf, gf, lr)
    else:
        _sgd_serial(pf, gf, lr)
