"""Compile one Python body into a serial and a parallel Numba twin.

The umap/pynndescent pattern: the body is written once with ``prange``; ``njit`` treats
``prange`` as ``range`` and ``njit(parallel=True)`` splits it over Numba's thread pool.
Every ``prange`` in fastbp writes disjoint output slices and every reduction runs in a
fixed order, so both twins return bit-identical results for any thread count.

``cache=True`` keeps compiled machine code on disk (``NUMBA_CACHE_DIR`` or ``__pycache__``)
so a new process skips compilation. Numba names a cache file after the function's module,
qualified name and line, and keys its entries by signature and bytecode only, not by jit
options (numba/numba#6845): two dispatchers of one body would share entries, and whichever
twin was compiled second would load the first one's machine code (the serial twin ran the
parfor code, or the parallel twin ran serially, depending on which a process compiled
first). Each twin is therefore compiled from a copy of the body with its own qualified
name, so each gets its own cache files.
"""
import types

from numba import njit, types as nbtypes
from numba.core.errors import TypingError
from numba.extending import overload
from numba.np.ufunc.parallel import _launch_threads

# Start Numba's threading layer now (fastbp.threads has chosen it; the package __init__
# imports that first). A cached serial dispatcher whose machine code calls a parallel twin
# (relu_forward -> _relu_forward_parallel, ...) is loaded from disk without Numba starting
# the layer, and its first parallel call then crashed (segmentation fault, reproduced with
# a warm cache and relu_forward as the first kernel a process calls).
_launch_threads()

# Every size threshold of the kernels lives here, with its reason and the benchmark that
# sets it (benchmarks/bench_*.py, benchmarks/thread_policy.py).

#: Element count from which an elementwise kernel (ReLU, sigmoid, optimizer updates) goes
#: parallel. Below it the fork/join of Numba's pool costs more than the work
#: (benchmarks/bench_activations.py, benchmarks/elementwise_bandwidth.py).
PARALLEL_MIN_ELEMENTS = 1 << 16

#: Parameters from which the optimizer pass inside a fused training step goes parallel.
#: There it follows BLAS calls and serial passes, and waking Numba's pool cost more than
#: the pass for the book's networks (784-100x4-10, Adam, batch 1 and 100; measured with
#: benchmarks/compare_frameworks.py --model mlp4, figures in
#: docs/decisions/fused-optimizer-pass.md). Only networks far larger than the book's go
#: parallel.
FUSED_UPDATE_PARALLEL_MIN_ELEMENTS = 1 << 22

#: Batch rows from which the row passes of the training steps (bias + activation, softmax,
#: masks, argmax) run on Numba's pool (benchmarks/bench_train_step.py: serial and parallel
#: passes were equal from 512 rows up, the parallel ones slower below).
PARALLEL_MIN_ROWS = 512

#: Rows per block of the softmax pass: the exponentials of a block run as one flat loop
#: that LLVM vectorizes (a row's 10 logits alone did not vectorize).
SOFTMAX_BLOCK = 64

#: Batches up to this size never call BLAS in the training steps: they list each row's
#: non-zero inputs once (:mod:`._sparse`) and use the list for the first layer's product
#: and its weight gradient. Set where the listed path and the BLAS path cross for
#: 784-50-10 (benchmarks/bench_train_step.py, float32 and float64; see
#: docs/decisions/small-batch-zero-skipping.md).
SMALL_BATCH = 24

#: Multiply-adds (n * d * m) from which an affine product calls BLAS instead of loops: a
#: BLAS call's fixed cost dominates below (benchmarks/bench_affine.py).
AFFINE_BLAS_MIN_FLOPS = 1 << 17

#: Multiply-adds from which a convolution or pooling kernel (fastbp.kernels.conv) runs its
#: parallel twin (samples or filters over Numba's pool). Provisional: set from
#: benchmarks/bench_conv.py (docs/decisions/convolution.md). The book's first layer at
#: batch 1 (conv_relu_pool_backward, 4320 x 25 = 108k) took 47 us serial against 29 us on
#: two threads alone, but its SimpleConvNet step took about 400 us against 300 us with it
#: parallel (the Adam pass that follows on the same pool): kept above it.
CONV_PARALLEL_MIN_MACS = 1 << 18

#: Batches up to this size run the SimpleConvNet step's affine products (4320 x 100) as
#: loops, not BLAS: at one row sgemm was slower than the loops for ``h @ W2`` and 3x
#: slower for ``dz @ W2.T`` (figures in docs/decisions/convolution.md).
#: AFFINE_BLAS_MIN_FLOPS counts only multiply-adds and sends these one-row products to BLAS.
CONVNET_LOOP_MAX_ROWS = 1

#: BLAS threads during a SimpleConvNet step or evaluation (fastbp.convnet lowers the bound
#: OpenBLAS to this count around the call and restores it). The step alternates Numba's
#: parallel convolution passes with sgemm calls; OpenBLAS's idle workers spin after each
#: call on the cores the convolution's threads need. With one BLAS thread the whole step
#: was faster at every batch size (benchmarks/compare_frameworks.py --model convnet,
#: docs/decisions/convolution.md).
CONVNET_BLAS_THREADS = 1

#: Elements of a weight matrix per block of rows in the one-row fused backward and update
#: (fastbp.kernels.onerow): the block's parameter, gradient and two state rows (4 x 16 KiB
#: in float32) stay in the L2 cache between the gradient's write and the optimizer's read.
#: Set with benchmarks/compare_frameworks.py --model convnet at batch 1
#: (docs/decisions/convolution.md).
ONE_ROW_BLOCK_ELEMENTS = 4096

#: Parameters from which the optimizer pass of the SimpleConvNet step runs parallel. Unlike
#: the fully connected step (FUSED_UPDATE_PARALLEL_MIN_ELEMENTS), the book's ConvNet has
#: 434k parameters, mostly the 4320 x 100 W2, and a pass over them is long enough that
#: two threads beat one even after a BLAS call (docs/decisions/convolution.md).
CONVNET_UPDATE_PARALLEL_MIN_ELEMENTS = 1 << 17


def _renamed(body, suffix):
    """A copy of the function `body` whose ``__qualname__`` ends in ``__<suffix>``."""
    f = types.FunctionType(body.__code__, body.__globals__, body.__name__,
                           body.__defaults__, body.__closure__)
    f.__kwdefaults__ = body.__kwdefaults__
    f.__doc__ = body.__doc__
    f.__qualname__ = f"{body.__qualname__}__{suffix}"
    return f


def twins(body, **options):
    """Return ``(serial, parallel)`` compilations of ``body`` (extra jit `options` for both),
    each with its own cache files."""
    serial = njit(cache=True, nogil=True, **options)(_renamed(body, "serial"))
    parallel = njit(cache=True, nogil=True, parallel=True, **options)(
        _renamed(body, "parallel"))
    return serial, parallel


def require_c_contiguous(*arrays):
    """Compile-time check for Numba code: a TypingError unless every array argument is
    typed C-contiguous (layout ``'C'``). Kernels that address memory by flat offsets (BLAS
    calls, the intrinsics of ._sparse) would otherwise misread a strided view; inside
    ``@njit`` code ``x[a:b, :]`` is typed ``'A'`` even when its memory is contiguous, so
    pass ``np.ascontiguousarray(...)`` or ``x[a:b]``."""


@overload(require_c_contiguous, jit_options={"cache": True})
def _require_c_contiguous_overload(*arrays):
    bad = [a for a in arrays if isinstance(a, nbtypes.Array) and a.layout != "C"]
    if bad:
        raise TypingError("fastbp kernels need C-contiguous arrays, got "
                          + ", ".join(map(str, bad))
                          + "; pass np.ascontiguousarray(...) (inside @njit code, slice "
                            "rows as x[a:b], not x[a:b, :])")
    return lambda *arrays: None
