"""``gemm`` with ``alpha`` and ``beta`` from Numba code, on whatever BLAS NumPy and SciPy use.

Why not ``np.dot`` inside Numba: Numba's ``np.dot`` offers no ``alpha``/``beta``, and it
measured slower than a direct call here (docs/decisions/blas-from-compiled-code.md; the
bindings below: docs/decisions/blas-fallback.md). With
``beta = 1, alpha = -lr`` the SGD update of W1 (``W1 -= lr * x.T @ dh``) is folded into the
product, so dW1 is never written and read back.

Bindings, the first that is found (:func:`blas_binding` says which one this process uses):

``openblas-numpy``
    NumPy's PyPI wheels bundle OpenBLAS with a CBLAS interface under
    ``scipy_cblas_?gemm64_`` (64-bit integers); called directly.
``openblas-scipy``
    SciPy's PyPI wheels bundle the same under ``scipy_cblas_?gemm`` (32-bit integers);
    called directly on x86-64 only (see below).
``scipy-cython-blas``
    Everywhere else (NumPy on Accelerate, MKL, Debian's or Fedora's system BLAS): the
    Fortran ``sgemm``/``dgemm`` that ``scipy.linalg.cython_blas`` exports, whichever BLAS
    SciPy was built against. That is the route Numba's own ``np.dot`` takes.

``FASTBP_BLAS`` chooses: ``auto`` (default, the order above), ``openblas`` (an OpenBLAS
binding or an ImportError) or ``scipy`` (always ``scipy-cython-blas``, e.g. to test it).

Compiled code calls one symbol per dtype, ``fastbp_sgemm`` / ``fastbp_dgemm``, with the
row-major CBLAS signature and 64-bit integers, whatever the binding: at import the symbol is
registered with LLVM at the address of the binding's function (or of a small compiled
adapter to the Fortran one). Machine code cached on disk therefore never holds an address
or a binding; a process relinks it to its own binding, so a cache filled under one binding
is correct under another. Integer arguments are declared 64-bit: on x86-64 (System V and
Windows) a 32-bit callee reads the low half of the same register or 8-byte stack slot, so a
32-bit CBLAS receives the same values (all sizes here are < 2**31). Other ABIs (Apple's
arm64 packs stack arguments by size) do not allow that, so there a 32-bit CBLAS goes
through the Fortran adapter instead.

Call :func:`gemm` only outside ``prange`` regions: the BLAS runs its own threads.
"""
import ctypes
import glob
import os
import platform

import numpy as np
from llvmlite import binding as _ll
from llvmlite import ir as _llir
from numba import cfunc, types
from numba.core import cgutils, config
from numba.core.errors import TypingError
from numba.extending import intrinsic, overload

_CBLAS_ROW_MAJOR = 101
NO_TRANS = 111
TRANS = 112

#: Values of the ``FASTBP_BLAS`` environment variable.
BLAS_CHOICES = ("auto", "openblas", "scipy")

_X86_64 = platform.machine().lower() in ("x86_64", "amd64")


def _wheel_openblas():
    """``(binding, ctypes library, symbol pattern, path)`` of a wheel-bundled OpenBLAS, or
    None. Only the wheels' own folders are searched, by file name: a system BLAS found on
    the loader path could be anything (and would need its integer width checked)."""
    here = os.path.dirname(np.__file__)
    numpy_dirs = (os.path.join(here, "..", "numpy.libs"), os.path.join(here, ".dylibs"), here)
    candidates = [("openblas-numpy", d, pattern, sym) for d in numpy_dirs
                  for pattern, sym in (("libscipy_openblas64_*", "scipy_cblas_{}gemm64_"),
                                       ("libopenblas64_*", "cblas_{}gemm64_"))]
    if _X86_64:  # 32-bit integers: see the module docstring
        try:
            import scipy
            sdir = os.path.dirname(scipy.__file__)
            candidates += [("openblas-scipy", d, "libscipy_openblas*", "scipy_cblas_{}gemm")
                           for d in (os.path.join(sdir, "..", "scipy.libs"),
                                     os.path.join(sdir, ".dylibs"))]
        except ImportError:
            pass
    for binding, folder, pattern, sym in candidates:
        for path in sorted(glob.glob(os.path.join(folder, pattern))):
            try:
                lib = ctypes.CDLL(path)
                getattr(lib, sym.format("s"))
                getattr(lib, sym.format("d"))
            except (OSError, AttributeError):
                continue
            return binding, lib, sym, os.path.realpath(path)
    return None


# -- the Fortran adapter (scipy-cython-blas) -------------------------------------------------

def _scipy_fortran_int():
    """Integer type of SciPy's cython_blas: 32-bit, or 64-bit in an ILP64 build (what Numba's
    own numba/np/linalg.py reads)."""
    try:
        from scipy.__config__ import CONFIG
        ilp64 = bool(CONFIG["Build Dependencies"]["blas"]["cython blas ilp64"])
    except (ImportError, KeyError, TypeError):
        ilp64 = False  # SciPy before this entry (pre-Meson builds) shipped LP64 only
    return types.int64 if ilp64 else types.int32


_F_INT = types.int32  # set by _bind_scipy() before the adapters are compiled


@intrinsic
def _fortran_gemm(typingctx, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
    # Calls fastbp_f77_?gemm(char *ta, char *tb, int *m, int *n, int *k, T *alpha, T *a,
    # int *lda, T *b, int *ldb, T *beta, T *c, int *ldc): every argument by reference, as
    # Fortran does, from stack slots of the function's entry block.
    sig = types.void(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)

    def codegen(context, builder, signature, args):
        ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc = args
        fint = context.get_value_type(_F_INT)
        real = context.get_value_type(signature.args[5])
        char = _llir.IntType(8)

        def ref(value, kind):
            if kind is char:
                value = builder.trunc(value, char)
            elif kind is fint and value.type != fint:
                value = builder.trunc(value, fint) if value.type.width > fint.width \
                    else builder.sext(value, fint)
            return cgutils.alloca_once_value(builder, value)

        def ptr(address):
            return builder.inttoptr(address, real.as_pointer())

        argv = [ref(ta, char), ref(tb, char), ref(m, fint), ref(n, fint), ref(k, fint),
                ref(alpha, real), ptr(a), ref(lda, fint), ptr(b), ref(ldb, fint),
                ref(beta, real), ptr(c), ref(ldc, fint)]
        fnty = _llir.FunctionType(_llir.VoidType(), [v.type for v in argv])
        name = "fastbp_f77_sgemm" if signature.args[5] == types.float32 else "fastbp_f77_dgemm"
        builder.call(cgutils.get_or_insert_function(builder.module, fnty, name), argv)
        return context.get_dummy_value()
    return sig, codegen


def _row_major_via_fortran(order, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
    # The row-major (m, n) matrix C is, read column-major, C.T (n, m): C.T = op(B).T @
    # op(A).T, so the Fortran gemm gets B first and A second with the same flags (the
    # row-major buffer of B, read column-major, is B.T) and m and n swapped. `order` is
    # always row-major here.
    fa = 84 if tb == TRANS else 78  # 'T' / 'N'
    fb = 84 if ta == TRANS else 78
    _fortran_gemm(fa, fb, n, m, k, alpha, b, ldb, a, lda, beta, c, ldc)


def _cblas_signature(real):
    i = types.int64
    return types.void(types.int32, types.int32, types.int32, i, i, i, real, types.intp, i,
                      types.intp, i, real, types.intp, i)


_adapters = []  # the compiled adapters, kept alive for as long as the process runs


def _bind_scipy():
    """Register the Fortran adapters under the CBLAS symbol names; return SciPy's BLAS
    description."""
    global _F_INT
    from numba.extending import get_cython_function_address

    _F_INT = _scipy_fortran_int()
    for p, real in (("s", types.float32), ("d", types.float64)):
        _ll.add_symbol(f"fastbp_f77_{p}gemm",
                       get_cython_function_address("scipy.linalg.cython_blas", f"{p}gemm"))
        # Not cached on disk: the integer width above is not part of Numba's cache key.
        # Compiling both adapters takes a fraction of a second, in this binding only.
        adapter = cfunc(_cblas_signature(real), nopython=True)(_row_major_via_fortran)
        _adapters.append(adapter)
        _ll.add_symbol(f"fastbp_{p}gemm", adapter.address)
    import scipy.linalg.cython_blas as cython_blas
    return cython_blas.__file__


def _bind():
    choice = os.environ.get("FASTBP_BLAS", "auto").strip().lower() or "auto"
    if choice not in BLAS_CHOICES:
        raise ImportError(f"FASTBP_BLAS={choice!r} is not one of {', '.join(BLAS_CHOICES)}; "
                          "unset it to let fastbp choose")
    found = _wheel_openblas() if choice != "scipy" else None
    if found is not None:
        binding, lib, sym, path = found
        for p in "sd":
            _ll.add_symbol(f"fastbp_{p}gemm",
                           ctypes.cast(getattr(lib, sym.format(p)), ctypes.c_void_p).value)
        _bind_thread_count(lib, sym)
        return binding, path
    if choice == "openblas":
        raise ImportError("FASTBP_BLAS=openblas, but neither NumPy's nor SciPy's wheel folder "
                          "holds an OpenBLAS fastbp can call; unset FASTBP_BLAS to use "
                          "scipy.linalg.cython_blas")
    if config.DISABLE_JIT:  # gemm below runs as plain NumPy: nothing to link
        return "scipy-cython-blas", None
    try:
        return "scipy-cython-blas", _bind_scipy()
    except ImportError as e:
        raise ImportError("fastbp needs SciPy (scipy.linalg.cython_blas) when NumPy's wheel "
                          "has no OpenBLAS of its own; install scipy") from e


_thread_count = None  # (get, set) of the bound OpenBLAS's thread count, where known


def _bind_thread_count(lib, sym):
    # The thread-count functions of the OpenBLAS whose gemm is bound, named like its gemm:
    # scipy_cblas_sgemm64_ -> scipy_openblas_get_num_threads64_, cblas_sgemm64_ ->
    # openblas_get_num_threads64_, scipy_cblas_sgemm -> scipy_openblas_get_num_threads.
    global _thread_count
    prefix, suffix = sym.split("cblas_{}gemm")
    try:
        get = getattr(lib, f"{prefix}openblas_get_num_threads{suffix}")
        put = getattr(lib, f"{prefix}openblas_set_num_threads{suffix}")
    except AttributeError:
        return
    get.restype, get.argtypes = ctypes.c_int, []
    put.restype, put.argtypes = None, [ctypes.c_int]
    _thread_count = (get, put)


def gemm_threads():
    """Threads of the BLAS that compiled kernels call, or 0 where fastbp cannot tell (the
    ``scipy-cython-blas`` binding: use threadpoolctl there)."""
    return _thread_count[0]() if _thread_count is not None else 0


def set_gemm_threads(n):
    """Set the thread count of the BLAS that compiled kernels call (process-wide, as
    ``openblas_set_num_threads``: NumPy's own products share that OpenBLAS); a no-op where
    :func:`gemm_threads` returns 0. A plain C call (about a microsecond), unlike
    threadpoolctl, so a training step can change it around one call."""
    if _thread_count is not None:
        _thread_count[1](int(n))


_BINDING, LIBRARY = _bind()


def blas_binding():
    """How compiled kernels reach BLAS in this process.

    Returns
    -------
    str
        ``'openblas-numpy'`` (NumPy's bundled OpenBLAS, called directly),
        ``'openblas-scipy'`` (SciPy's bundled OpenBLAS, called directly) or
        ``'scipy-cython-blas'`` (the Fortran ``?gemm`` of ``scipy.linalg.cython_blas``,
        whatever BLAS SciPy uses: Accelerate, MKL, a system OpenBLAS or reference BLAS).
        Chosen at import; the ``FASTBP_BLAS`` environment variable (``auto``,
        ``openblas``, ``scipy``) overrides the choice.
    """
    return _BINDING


_sgemm = types.ExternalFunction("fastbp_sgemm", _cblas_signature(types.float32))
_dgemm = types.ExternalFunction("fastbp_dgemm", _cblas_signature(types.float64))


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
