"""Plain SGD update, in place (the ``decay = 0`` case of :mod:`.optimizers`)."""
from numba import njit

from .optimizers import sgd_decay_update


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
    sgd_decay_update(param, grad, lr, 0.0)
