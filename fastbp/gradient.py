"""Central-difference gradients, as the book's ``common/gradient.py``."""
from collections.abc import Callable

import numpy as np


def numerical_gradient(f: Callable[[np.ndarray], float], x: np.ndarray, h: float = 1e-4) -> np.ndarray:
    """Central-difference gradient of ``f(x)`` with respect to the array `x`.

    Parameters
    ----------
    f : callable
        Called with `x` (its argument is ignored by the book's lambdas); must read `x`.
    x : ndarray, any shape, float
        Perturbed in place one element at a time and restored exactly.
    h : float
        Step.

    Returns
    -------
    ndarray, shape and dtype of `x`
    """
    grad = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"], op_flags=[["readwrite"]])
    while not it.finished:
        idx = it.multi_index
        tmp = x[idx]
        try:  # restored even when f raises (e.g. an empty batch)
            x[idx] = tmp + h
            fxh1 = f(x)
            x[idx] = tmp - h
            fxh2 = f(x)
        finally:
            x[idx] = tmp
        grad[idx] = (fxh1 - fxh2) / (2 * h)
        it.iternext()
    return grad
