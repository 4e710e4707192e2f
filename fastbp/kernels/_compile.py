"""Compile one Python body into a serial and a parallel Numba twin.

The umap/pynndescent pattern: the body is written once with ``prange``; ``njit`` treats
``prange`` as ``range`` and ``njit(parallel=True)`` splits it over Numba's thread pool.
Every ``prange`` in fastbp writes disjoint output slices and every reduction runs in a
fixed order, so both twins return bit-identical results for any thread count.

``cache=True`` keeps compiled machine code on disk (``NUMBA_CACHE_DIR`` or ``__pycache__``)
so a new process skips compilation.
"""
from numba import njit
from numba.np.ufunc.parallel import _launch_threads

# Start Numba's threading layer now (fastbp.threads has chosen it; the package __init__
# imports that first). A cached serial dispatcher whose machine code calls a parallel twin
# (relu_forward -> _relu_forward_parallel, ...) is loaded from disk without Numba starting
# the layer, and its first parallel call then crashed (segmentation fault, reproduced with
# a warm cache and relu_forward as the first kernel a process calls).
_launch_threads()

#: Element count from which an elementwise kernel (ReLU, sigmoid, SGD) goes parallel.
#: Below it the fork/join of Numba's pool (~5-10 us on 2 cores) costs more than the work.
#: Measured with ``benchmarks/thresholds.py``.
PARALLEL_MIN_ELEMENTS = 1 << 16


def twins(body):
    """Return ``(serial, parallel)`` compilations of ``body``."""
    serial = njit(cache=True, nogil=True)(body)
    parallel = njit(cache=True, nogil=True, parallel=True)(body)
    return serial, parallel
