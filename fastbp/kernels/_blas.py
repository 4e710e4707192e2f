"""Direct calls to NumPy's OpenBLAS ``gemm`` from Numba code, with ``alpha`` and ``beta``.

Why not ``np.dot`` inside Numba: Numba's ``np.dot`` calls SciPy's OpenBLAS and offers no
``alpha``/``beta``. Measured here (2 cores, float32, batch 10 000): ``x.T @ dh`` took 12.4-15.7
ms through Numba's ``np.dot`` and 7.7-9.2 ms through NumPy's ``np.dot``; with ``beta = 1,
alpha = -lr`` the SGD update of W1 (``W1 -= lr * x.T @ dh``) is folded into the product, so
dW1 is never written and read back.

NumPy's wheels bundle OpenBLAS with a CBLAS interface under ``scipy_cblas_?gemm64_``
(64-bit integers); SciPy's bundle the same under ``scipy_cblas_?gemm`` (32-bit integers).
At import the address is registered with LLVM under a fixed name (``fastbp_sgemm`` /
``fastbp_dgemm``); compiled code refers to that name, so it can be cached on disk and relinked
in a new process. Integer arguments are declared 64-bit: on x86-64 (System V and Windows)
a 32-bit callee reads the low half of the same register or 8-byte stack slot, so the 32-bit
fallback receives the same values (all sizes here are < 2**31).

Call :func:`gemm` only outside ``prange`` regions: OpenBLAS runs its own threads.
"""
import ctypes
import glob
import os

import numpy as np
from llvmlite import binding as _ll
from numba import types
from numba.core.errors import TypingError
from numba.extending import overload

_CBLAS_ROW_MAJOR = 101
NO_TRANS = 111
TRANS = 112


def _find_library():
    here = os.path.dirname(np.__file__)
    names = [("libscipy_openblas64_*", "scipy_cblas_{}gemm64_"),
             ("libopenblas64_*", "cblas_{}gemm64_")]
    for pattern, sym in names:
        for folder in (os.path.join(here, "..", "numpy.libs"), os.path.join(here, ".dylibs"),
                       here):
            for path in sorted(glob.glob(os.path.join(folder, pattern + "*"))):
                try:
                    lib = ctypes.CDLL(path)
                    getattr(lib, sym.format("s"))
                    return lib, sym, path
                except (OSError, AttributeError):
                    continue
    try:  # SciPy's OpenBLAS (32-bit integers, see the module docstring)
        import scipy
        sdir = os.path.join(os.path.dirname(scipy.__file__), "..", "scipy.libs")
        for path in sorted(glob.glob(os.path.join(sdir, "libscipy_openblas*"))):
            lib = ctypes.CDLL(path)
            getattr(lib, "scipy_cblas_sgemm")
            return lib, "scipy_cblas_{}gemm", path
    except (ImportError, OSError, AttributeError):
        pass
    return None, None, None


_lib, _sym, LIBRARY = _find_library()
if _lib is None:  # pragma: no cover - every NumPy/SciPy wheel on PyPI ships OpenBLAS
    raise ImportError("fastbp needs NumPy's or SciPy's bundled OpenBLAS (CBLAS gemm); "
                      "install numpy and scipy from PyPI wheels")
for _p in "sd":
    _ll.add_symbol(f"fastbp_{_p}gemm", ctypes.cast(getattr(_lib, _sym.format(_p)),
                                                   ctypes.c_void_p).value)

_i = types.int64
_sgemm = types.ExternalFunction(
    "fastbp_sgemm", types.void(types.int32, types.int32, types.int32, _i, _i, _i, types.float32,
                               types.intp, _i, types.intp, _i, types.float32, types.intp, _i))
_dgemm = types.ExternalFunction(
    "fastbp_dgemm", types.void(types.int32, types.int32, types.int32, _i, _i, _i, types.float64,
                               types.intp, _i, types.intp, _i, types.float64, types.intp, _i))


def gemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
    """Row-major ``C = alpha * op(A) @ op(B) + beta * C`` (``C`` is (m, n)), in Numba code.

    `a`, `b`, `c` are C-contiguous arrays of one float dtype (leading dimensions in
    elements); `ta`/`tb` are :data:`NO_TRANS` or :data:`TRANS`.
    """
    # Plain NumPy, for NUMBA_DISABLE_JIT=1 runs; compiled code uses the overload below.
    A = a.reshape(-1, lda)[:k, :m].T if ta == TRANS else a.reshape(-1, lda)[:m, :k]
    B = b.reshape(-1, ldb)[:n, :k].T if tb == TRANS else b.reshape(-1, ldb)[:k, :n]
    C = c.reshape(-1, ldc)[:m, :n]
    prod = alpha * (A @ B)
    C[...] = prod if beta == 0 else prod + beta * C


@overload(gemm, jit_options={"cache": True})
def _gemm_overload(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
    # Resolved at compile time from the dtype of `c`. All three must be arrays of that one
    # float dtype: the pointers go to ?gemm untyped, and e.g. an int32 `c` used to take the
    # float64 branch and write twice its size (heap corruption).
    dtypes = [getattr(v, "dtype", None) for v in (a, b, c)]
    if dtypes[2] not in (types.float32, types.float64) or dtypes.count(dtypes[2]) != 3:
        raise TypingError(f"gemm needs a, b and c of one dtype, float32 or float64; got "
                          f"{a}, {b}, {c}")
    # The leading dimensions describe C-contiguous rows: a strided view ('A' or 'F' layout)
    # would be read as if it were contiguous.
    if any(v.layout != "C" for v in (a, b, c)):
        raise TypingError(f"gemm needs C-contiguous a, b and c; got {a}, {b}, {c}")
    if c.dtype == types.float32:
        def impl(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
            _sgemm(_CBLAS_ROW_MAJOR, ta, tb, m, n, k, np.float32(alpha), a.ctypes.data, lda,
                   b.ctypes.data, ldb, np.float32(beta), c.ctypes.data, ldc)
        return impl

    def impl(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
        _dgemm(_CBLAS_ROW_MAJOR, ta, tb, m, n, k, np.float64(alpha), a.ctypes.data, lda,
               b.ctypes.data, ldb, np.float64(beta), c.ctypes.data, ldc)
    return impl
