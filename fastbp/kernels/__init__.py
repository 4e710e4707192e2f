"""Numba kernels: ``@njit`` functions that write into caller-given buffers.

They check nothing: shapes, dtypes and contiguity are the caller's contract (a wrong shape
reads out of bounds). Python callers who want checks use :mod:`fastbp.ops`. The functions
here can be called from your own ``@njit`` code::

    from numba import njit
    from fastbp.kernels import affine_forward, relu_forward

    @njit
    def hidden(x, W, b, h):
        affine_forward(x, W, b, h)
        relu_forward(h, h)
"""
from . import _cache  # noqa: F401  (first: before any cache=True kernel is decorated)
from ._blas import blas_binding, gemm_threads, set_gemm_threads
from ._compile import (MACHINE_DEFAULT, NEVER, SOURCE_TWIN_THRESHOLDS, MachineThresholds, ThresholdWarning,
                       calibration_path, machine_key, machine_thresholds)
from .activations import (relu_backward, relu_forward, sigmoid_backward, sigmoid_forward,
                          tanh_backward, tanh_forward)
from .affine import affine_backward, affine_forward, column_sum
from .conv import (conv2d_backward, conv2d_forward, conv_output_size, conv_relu_pool_backward,
                   conv_relu_pool_forward, crp_backward_work_size, crp_scratch_size,
                   maxpool_backward, maxpool_forward)
from .batchnorm import (EPS_BN, batchnorm_backward, batchnorm_work_rows,
                        batchnorm_forward_eval, batchnorm_forward_train)
from .dropout import dropout_backward, dropout_forward, dropout_mask
from .sgd import sgd_update
from .optimizers import (adagrad_update, adam_update, momentum_update, nesterov_update,
                         optimizer_update, rmsprop_update, sgd_decay_update)
from .network import train_step_labels, two_layer_step
from .softmax import softmax_cross_entropy, softmax_cross_entropy_rows

__all__ = [
    "blas_binding", "gemm_threads", "set_gemm_threads",
    "machine_thresholds", "MachineThresholds", "ThresholdWarning", "calibration_path",
    "machine_key", "NEVER", "SOURCE_TWIN_THRESHOLDS", "MACHINE_DEFAULT",
    "relu_forward", "relu_backward", "sigmoid_forward", "sigmoid_backward",
    "tanh_forward", "tanh_backward",
    "affine_forward", "affine_backward", "column_sum",
    "softmax_cross_entropy", "softmax_cross_entropy_rows", "sgd_update", "two_layer_step",
    "train_step_labels",
    "batchnorm_forward_train", "batchnorm_forward_eval", "batchnorm_backward",
    "batchnorm_work_rows", "EPS_BN", "dropout_mask", "dropout_forward", "dropout_backward",
    "sgd_decay_update", "momentum_update", "nesterov_update", "adagrad_update",
    "rmsprop_update", "adam_update", "optimizer_update",
    "conv2d_forward", "conv2d_backward", "conv_output_size", "maxpool_forward",
    "maxpool_backward", "conv_relu_pool_forward", "conv_relu_pool_backward",
    "crp_scratch_size", "crp_backward_work_size",
]
