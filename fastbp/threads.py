"""Thread policy: Numba's pool and the BLAS pools must not fight over the cores.

fastbp runs three thread pools in one process: Numba's (the ``prange`` kernels) and two
OpenBLAS pools (NumPy bundles one, SciPy another; Numba's ``np.dot`` calls SciPy's). A
training step alternates BLAS calls and Numba regions, and OpenMP's default active waiting
keeps its workers spinning on the cores that OpenBLAS's threads need: with the ``omp``
layer the step was many times slower than with ``tbb`` (measured with
``benchmarks/thread_policy.py``; figures in docs/decisions/thread-policy.md). The policy:

1. At import, unless you set ``NUMBA_THREADING_LAYER`` yourself, fastbp selects the
   ``tbb`` layer (its workers sleep when idle) when the TBB runtime loads (the ``tbb``
   wheel, a dependency on x86-64), and then changes nothing else. Only when Numba will run
   on OpenMP (``NUMBA_THREADING_LAYER=omp``, or no TBB) does it set
   ``OMP_WAIT_POLICY=PASSIVE``, unless you set a policy or ``FASTBP_NO_ENV=1``. That
   variable is process-wide (it takes effect if OpenMP is not loaded yet, and also for an
   OpenMP another library loads later).
2. Kernels never call BLAS inside a parallel region; Numba's pool and BLAS take turns.
3. Small work runs the serial twin of each kernel (thresholds in
   ``fastbp/kernels/_compile.py``): a fork/join costs more than the work.
4. :func:`set_num_threads` sets Numba's pool and both OpenBLAS pools to the same count,
   through threadpoolctl, so one knob controls all of them.

Determinism: every Numba kernel sums in a fixed order, so results are bit-identical for any
size of Numba's pool. OpenBLAS is not: its GEMMs on 1 and on 2 threads differ in the last
bits (measured on a 300-step run). Runs are reproducible bit for bit at a fixed
:func:`set_num_threads` value; across values they agree to rounding.
"""
import ctypes
import os
import sys

import numba

_layer_env = "NUMBA_THREADING_LAYER" in os.environ


#: The TBB runtime's file name per platform (the names Numba's own version check loads),
#: and the folders of ``<prefix>`` where PyPI's ``tbb`` wheel puts it.
_TBB_NAMES = {"win32": ("tbb12.dll", ("Library/bin", "Library/lib", "DLLs", "")),
              "darwin": ("libtbb.12.dylib", ("lib",))}
_TBB_DEFAULT = ("libtbb.so.12", ("lib",))


def _tbb_candidates(platform=None, prefixes=None):
    """Paths where the TBB runtime of the ``tbb`` wheel may be, in the order tried."""
    name, folders = _TBB_NAMES.get(platform or sys.platform, _TBB_DEFAULT)
    prefixes = prefixes or dict.fromkeys((sys.prefix, sys.base_prefix))
    return [os.path.join(prefix, *folder.split("/"), name)
            for prefix in prefixes for folder in folders]


def _load_tbb():
    """Load the TBB runtime so Numba's ``tbb`` layer can start; True on success.

    PyPI's ``tbb`` wheel installs only shared libraries, into ``<prefix>/lib``
    (``libtbb.so.12`` on Linux, ``libtbb.12.dylib`` on macOS) or ``<prefix>/Library/bin``
    (``tbb12.dll`` on Windows), which is on the loader's path in a conda environment but
    not in a virtualenv: there Numba's ``tbbpool`` extension failed with "libtbb.so.12:
    cannot open shared object file" and Numba quietly fell back to OpenMP. Loading the
    library globally first (on Windows: adding its folder to the DLL search path) fixes
    that.
    """
    for path in _tbb_candidates():
        if os.path.exists(path):
            try:
                if sys.platform == "win32":
                    os.add_dll_directory(os.path.dirname(path))
                ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
            except OSError:
                continue
            break
    try:
        from numba.np.ufunc import tbbpool  # noqa: F401  (what Numba's tbb layer loads)
    except ImportError:
        return False
    return True


def _choose_threading_layer():
    # The tbb layer's idle workers sleep: then nothing else is needed, and nothing in the
    # process environment is changed.
    if not _layer_env and _load_tbb():
        numba.config.THREADING_LAYER = "tbb"
        return
    # Numba will run on OpenMP (asked for, or its first choice without tbb). OpenMP's
    # default active waiting keeps its idle workers spinning on the cores OpenBLAS needs:
    # ask for passive waiting, unless the user set a policy or FASTBP_NO_ENV=1. This
    # variable is process-wide: an OpenMP loaded later by another library (PyTorch,
    # scikit-learn) sees it too.
    layer = os.environ.get("NUMBA_THREADING_LAYER", "default").lower()
    if layer in ("workqueue", "tbb") or os.environ.get("FASTBP_NO_ENV", "0") not in ("", "0"):
        return
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


_choose_threading_layer()

_controller = None


def _blas_controller():
    # Building a ThreadpoolController scans the loaded libraries (milliseconds): do it once,
    # after SciPy's BLAS is loaded (importing scipy.linalg loads it).
    global _controller
    if _controller is None:
        import scipy.linalg  # noqa: F401
        from threadpoolctl import ThreadpoolController
        _controller = ThreadpoolController()
    return _controller


def set_num_threads(n: int) -> None:
    """Use `n` threads in Numba's pool and in the BLAS pools of NumPy and SciPy.

    Parameters
    ----------
    n : int
        Between 1 and ``numba.config.NUMBA_NUM_THREADS`` (the cores Numba saw at start-up,
        unless the ``NUMBA_NUM_THREADS`` environment variable set another count).

    Raises
    ------
    TypeError
        If `n` is not an int.
    ValueError
        If `n` is outside that range; nothing is changed. More threads than cores would
        only make Numba's and the BLAS pools compete for them, so the count is not clamped
        silently either.
    """
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"n must be an int, got {type(n).__name__}")
    top = numba.config.NUMBA_NUM_THREADS
    if not 1 <= n <= top:
        raise ValueError(f"n must be between 1 and {top} (NUMBA_NUM_THREADS: the cores "
                         f"Numba saw at start-up), got {n}; pass at most {top}")
    numba.set_num_threads(n)
    _blas_controller().select(user_api="blas").limit(limits=n)


def get_num_threads() -> int:
    """Threads in Numba's pool (the BLAS pools follow :func:`set_num_threads`)."""
    return numba.get_num_threads()


def blas_threads() -> dict[str, int]:
    """Thread counts of the loaded BLAS libraries, ``{filepath: num_threads}``."""
    return {lib.filepath: lib.num_threads
            for lib in _blas_controller().select(user_api="blas").lib_controllers}
