"""fastbp: Numba-compiled backpropagation kernels and the book's layer API.

* :mod:`fastbp.kernels` - ``@njit`` kernels writing into caller-given buffers, callable
  from your own Numba code.
* :mod:`fastbp.ops` - validated wrappers for arbitrary arrays.
* :mod:`fastbp.layers` - ``MulLayer``, ``AddLayer``, ``Relu``, ``Sigmoid``, ``Affine``,
  ``SoftmaxWithLoss``, ``Dropout``, ``BatchNormalization`` with the API of *Deep Learning
  from Scratch*, chapters 5 and 6.
* :mod:`fastbp.optimizers` - ``SGD``, ``Momentum``, ``Nesterov``, ``AdaGrad``, ``RMSprop``,
  ``Adam`` (chapter 6).
* :class:`TwoLayerNet`, :class:`MultiLayerNet`, :class:`MultiLayerNetExtend` (each with a
  fused ``train_step``), :class:`Trainer`, :func:`gradient_check`, :func:`set_num_threads`.
"""
from . import threads  # noqa: F401  (first: picks Numba's threading layer before any kernel runs)
from . import optimizers
from .layers import (Affine, AddLayer, BatchNormalization, Convolution, Dropout, MulLayer,
                     Pooling, Relu, Sigmoid, SoftmaxWithLoss)
from .multilayer import MultiLayerNet, MultiLayerNetExtend
from .convnet import SimpleConvNet
from .network import TwoLayerNet, gradient_check
from .trainer import Trainer
from .threads import get_num_threads, set_num_threads

__version__ = "0.1.0"

__all__ = [
    "MulLayer", "AddLayer", "Relu", "Sigmoid", "Affine", "SoftmaxWithLoss", "Dropout",
    "BatchNormalization", "TwoLayerNet", "MultiLayerNet", "MultiLayerNetExtend", "optimizers", "Trainer",
    "SimpleConvNet", "Convolution", "Pooling",
    "gradient_check", "set_num_threads", "get_num_threads",
]
