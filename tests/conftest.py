import numba
import numpy as np
import pytest

BATCHES = (1, 2, 7, 64, 1000)
DTYPES = (np.float32, np.float64)


#: For tests about compiled code itself (NRT allocation counts, cache files, machine code):
#: with NUMBA_DISABLE_JIT=1 the kernels are plain Python functions. Everything else runs in
#: that mode too (a CI step), checking that the kernels' Python bodies stay valid Python.
compiled_only = pytest.mark.skipif(
    bool(numba.config.DISABLE_JIT),
    reason="about compiled code; NUMBA_DISABLE_JIT=1 runs the kernels as plain Python")


def tol(dtype):
    return dict(rtol=2e-5, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-11, atol=1e-12)


def layouts(a):
    """`a` as given (C-contiguous) and as a non-contiguous view with the same values."""
    wide = np.empty(a.shape[:-1] + (2 * a.shape[-1],), a.dtype) if a.ndim else a
    wide[..., ::2] = a
    return {"C": a, "strided": wide[..., ::2]}


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
