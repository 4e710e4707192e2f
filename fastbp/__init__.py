"""fastbp: Numba-compiled backpropagation kernels and the book's layer API.

* :mod:`fastbp.kernels` - ``@njit`` kernels writing into caller-given buffers, callable
  from your own Numba code.
* :mod:`fastbp.ops` - validated wrappers for arbitrary arrays.
* :mod:`fastbp.layers` - ``MulLayer``, ``AddLayer``, ``Relu``, ``Sigmoid``, ``Affine``,
  ``SoftmaxWithLoss`` with the API of *Deep Learning from Scratch*, chapter 5.
* :class:`TwoLayerNet`, :func:`gradient_check`, :func:`set_num_threads`.
"""
from . import threads  # noqa: F401  (first: picks Numba's threading layer before any kernel runs)
from .layers import Affine, AddLayer, MulLayer, Relu, Sigmoid, SoftmaxWithLoss
from .network import TwoLayerNet, gradient_check
from .threads import get_num_threads, set_num_threads

__version__ = "0.1.0"

__all__ = [
    "MulLayer", "AddLayer", "Relu", "Sigmoid", "Affine", "SoftmaxWithLoss",
    "TwoLayerNet", "gradient_check", "set_num_threads", "get_num_threads",
]
