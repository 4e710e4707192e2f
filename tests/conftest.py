import numpy as np
import pytest

BATCHES = (1, 2, 7, 64, 1000)
DTYPES = (np.float32, np.float64)


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
