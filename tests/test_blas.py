"""fastbp.kernels._blas: the BLAS bindings, the FASTBP_BLAS override, and caches across them.

The kernel tests themselves run here a second time in a child process with
``FASTBP_BLAS=scipy`` (the ``scipy.linalg.cython_blas`` route that NumPy on Accelerate, MKL
or a Debian system BLAS takes), so both bindings are checked on this machine.
"""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from conftest import compiled_only, tol
from fastbp import kernels as K
from fastbp.kernels import _blas

BINDINGS = ("openblas-numpy", "openblas-scipy", "scipy-cython-blas")
TESTS = Path(__file__).resolve().parent

# Every (ta, tb) combination and alpha/beta values that reach each term, at sizes where no
# two of m, n, k are equal (a swapped dimension would read out of place) and k is odd.
GEMM_CHILD = textwrap.dedent("""
    import json, sys
    import numpy as np
    from numba import njit
    from llvmlite import binding as ll
    import fastbp
    from fastbp.kernels import _blas, blas_binding

    @njit
    def call(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
        _blas.gemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)

    rng = np.random.default_rng(0)
    worst = 0.0
    for dt in (np.float32, np.float64):
        for ta in (_blas.NO_TRANS, _blas.TRANS):
            for tb in (_blas.NO_TRANS, _blas.TRANS):
                for alpha, beta in ((1.0, 0.0), (-0.5, 1.0), (2.0, -3.0)):
                    m, n, k = 6, 9, 5
                    a = rng.standard_normal((k, m) if ta == _blas.TRANS else (m, k)).astype(dt)
                    b = rng.standard_normal((n, k) if tb == _blas.TRANS else (k, n)).astype(dt)
                    c = rng.standard_normal((m, n)).astype(dt)
                    opa = a.T if ta == _blas.TRANS else a
                    opb = b.T if tb == _blas.TRANS else b
                    want = alpha * (opa.astype(np.float64) @ opb) + beta * c
                    call(ta, tb, m, n, k, alpha, a, a.shape[1], b, b.shape[1], beta, c, n)
                    worst = max(worst, float(np.abs(c - want).max() / np.abs(want).max()))
    adapters = [a.address for a in _blas._adapters]
    symbols = [ll.address_of_symbol(f"fastbp_{p}gemm") for p in "sd"]
    print(json.dumps({"binding": blas_binding(), "worst": worst,
                      "symbols_are_adapters": symbols == adapters and len(adapters) == 2}))
""")


def _child(code, **env):
    full = {k: v for k, v in os.environ.items() if k != "FASTBP_BLAS"}
    full.update(env)
    out = subprocess.run([sys.executable, "-c", code], env=full, capture_output=True,
                         text=True, timeout=600, cwd=TESTS)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_binding_is_one_of_the_documented_names():
    assert K.blas_binding() in BINDINGS
    assert K.blas_binding() == _blas.blas_binding()


def test_pypi_wheels_use_their_openblas_directly():
    """In an environment of PyPI wheels (this project's venv and CI) the direct call is kept."""
    wheel = Path(np.__file__).parent.parent / "numpy.libs"
    if not any(wheel.glob("libscipy_openblas64_*")):
        pytest.skip("NumPy here is not a PyPI wheel with its own OpenBLAS")
    assert K.blas_binding() == "openblas-numpy"
    assert "openblas" in Path(_blas.LIBRARY).name


@compiled_only
@pytest.mark.parametrize("choice", ["auto", "scipy"])
def test_gemm_matches_reference_in_each_binding(choice):
    got = _child(GEMM_CHILD, FASTBP_BLAS=choice)
    assert got["worst"] < 1e-5
    if choice == "scipy":
        assert got["binding"] == "scipy-cython-blas"
        # Compiled code calls fastbp_?gemm: in this binding both resolve to the adapters.
        assert got["symbols_are_adapters"]
    else:
        assert got["binding"] in BINDINGS
        assert got["symbols_are_adapters"] == (got["binding"] == "scipy-cython-blas")


def test_bad_choice_is_an_import_error_naming_the_choices():
    out = subprocess.run([sys.executable, "-c", "import fastbp"], capture_output=True, text=True,
                         env=dict(os.environ, FASTBP_BLAS="mkl"), timeout=300)
    assert out.returncode != 0
    assert "FASTBP_BLAS='mkl' is not one of auto, openblas, scipy" in out.stderr


@compiled_only
def test_cache_filled_under_one_binding_is_correct_under_the_other(tmp_path):
    """Compiled code names fastbp_?gemm, never an address: a kernel loaded from a cache
    written by the OpenBLAS binding runs on the scipy binding in a process that forced it."""
    code = textwrap.dedent("""
        import json
        import numpy as np
        import fastbp
        from fastbp import kernels as K
        rng = np.random.default_rng(3)
        x = rng.standard_normal((64, 300)).astype(np.float32)   # above the BLAS threshold
        W = rng.standard_normal((300, 40)).astype(np.float32)
        b = rng.standard_normal(40).astype(np.float32)
        out = np.empty((64, 40), np.float32)
        K.affine_forward(x, W, b, out)
        want = x.astype(np.float64) @ W + b
        hits = sum(K.affine_forward.stats.cache_hits.values())
        print(json.dumps({"binding": K.blas_binding(), "hits": hits,
                          "err": float(np.abs(out - want).max())}))
    """)
    cache = str(tmp_path / "numba-cache")
    first = _child(code, NUMBA_CACHE_DIR=cache, FASTBP_BLAS="auto")
    second = _child(code, NUMBA_CACHE_DIR=cache, FASTBP_BLAS="scipy")
    assert first["hits"] == 0 and second["hits"] >= 1  # the second one loaded the cache
    assert second["binding"] == "scipy-cython-blas"
    assert first["err"] < 1e-3 and second["err"] < 1e-3


@compiled_only
def test_kernel_tests_pass_with_the_scipy_binding():
    """The kernel and network tests that reach gemm, in a child forced to cython_blas."""
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    env["FASTBP_BLAS"] = "scipy"
    check = subprocess.run(
        [sys.executable, "-c", "import fastbp.kernels as K; print(K.blas_binding())"],
        env=env, capture_output=True, text=True, timeout=300)
    assert check.stdout.strip() == "scipy-cython-blas", check.stderr[-2000:]
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
         str(TESTS / "test_kernels.py"), str(TESTS / "test_network.py"),
         "-k", "affine or network or train_step or gemm or callable or gradient"],
        env=env, capture_output=True, text=True, timeout=1200, cwd=TESTS.parent)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert " passed" in out.stdout.splitlines()[-1]


@compiled_only
def test_gemm_still_rejects_bad_operands_in_numba():
    from numba import njit
    from numba.core.errors import TypingError

    @njit
    def call(a, b, c):
        _blas.gemm(_blas.NO_TRANS, _blas.NO_TRANS, 2, 2, 2, 1.0, a, 2, b, 2, 0.0, c, 2)

    f = np.zeros((2, 2), np.float32)
    with pytest.raises(TypingError, match="one dtype"):
        call(f, f, np.zeros((2, 2), np.float64))
    with pytest.raises(TypingError, match="C-contiguous"):
        call(f, f, np.zeros((2, 4), np.float32)[:, ::2])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_python_gemm_of_disable_jit_runs(rng, dtype):
    """The plain-NumPy body that NUMBA_DISABLE_JIT=1 runs, against the product it stands for."""
    a = rng.standard_normal((5, 3)).astype(dtype)
    b = rng.standard_normal((4, 3)).astype(dtype)
    c = rng.standard_normal((5, 4)).astype(dtype)
    want = -2.0 * a @ b.T + 0.5 * c
    _blas.gemm(_blas.NO_TRANS, _blas.TRANS, 5, 4, 3, -2.0, a, 3, b, 3, 0.5, c, 4)
    np.testing.assert_allclose(c, want, **tol(dtype))
