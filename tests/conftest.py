import os
from pathlib import Path

# The suite runs with the source twin thresholds, not a calibration a developer may have
# in ~/.cache/fastbp (set FASTBP_THRESHOLDS to a file to test one). Before numba/fastbp
# are imported: the thresholds are read once, at import.
os.environ.setdefault("FASTBP_THRESHOLDS", "")

import numba  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

BATCHES = (1, 2, 7, 64, 1000)
DTYPES = (np.float32, np.float64)


#: For tests about compiled code itself (NRT allocation counts, cache files, machine code):
#: with NUMBA_DISABLE_JIT=1 the kernels are plain Python functions. Everything else runs in
#: that mode too (a CI step), checking that the kernels' Python bodies stay valid Python.
compiled_only = pytest.mark.skipif(
    bool(numba.config.DISABLE_JIT),
    reason="about compiled code; NUMBA_DISABLE_JIT=1 runs the kernels as plain Python")


#: Source for a child process (``python -c``): a Numba event listener appends the qualified
#: name of every function compiled after it to the list ``compiled``.
COMPILE_RECORDER = """
from numba.core import event as _event


class _Recorder(_event.Listener):
    def on_start(self, ev):
        compiled.append(ev.data["dispatcher"].py_func.__qualname__)

    def on_end(self, ev):
        pass


compiled = []
_event.register("numba:compile", _Recorder())
"""


def tol(dtype):
    return dict(rtol=2e-5, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-11, atol=1e-12)


def layouts(a):
    """`a` as given (C-contiguous) and as a non-contiguous view with the same values."""
    wide = np.empty(a.shape[:-1] + (2 * a.shape[-1],), a.dtype) if a.ndim else a
    wide[..., ::2] = a
    return {"C": a, "strided": wide[..., ::2]}


@pytest.fixture(autouse=True)
def _restore_thread_counts():
    """Give the next test the thread counts this one started with. Some tests set them on
    purpose (the CLI's ``--threads``, a sweep trial run in-process); with pytest-xdist the
    order of tests in a process is not the file order, so none may rely on another's."""
    from fastbp.kernels import gemm_threads, set_gemm_threads

    numba_threads, blas_threads = numba.get_num_threads(), gemm_threads()
    yield
    if numba.get_num_threads() != numba_threads:
        numba.set_num_threads(numba_threads)
    if gemm_threads() != blas_threads:
        set_gemm_threads(blas_threads)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


# -- the shared data (../shared/datasets) and the book's code (../shared/book-reference) ----

#: Prefix of every skip reason that means "the shared folder is missing": with
#: FASTBP_REQUIRE_DATA=1 (CI) such a skip is a failure, so the data tests cannot silently
#: stop running.
MISSING_DATA = "shared data missing:"
#: The same for the book's code, with FASTBP_REQUIRE_BOOK=1.
MISSING_BOOK = "book code missing:"


def shared_data_dir() -> Path:
    """``$FASTBP_TEST_DATA``, else ``../shared/datasets`` next to the checkout."""
    env = os.environ.get("FASTBP_TEST_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "datasets"


SHARED = shared_data_dir()
needs_fashion = pytest.mark.skipif(
    not (SHARED / "fashion-mnist" / "train-images-idx3-ubyte.gz").is_file(),
    reason=f"{MISSING_DATA} Fashion-MNIST not in {SHARED / 'fashion-mnist'} "
           "(set FASTBP_TEST_DATA to the shared datasets folder)")
needs_mnist_test = pytest.mark.skipif(
    not (SHARED / "mnist" / "t10k-images-idx3-ubyte.gz").is_file(),
    reason=f"{MISSING_DATA} MNIST test split not in {SHARED / 'mnist'} "
           "(set FASTBP_TEST_DATA to the shared datasets folder)")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not report.skipped:
        return
    for prefix, variable in ((MISSING_DATA, "FASTBP_REQUIRE_DATA"),
                             (MISSING_BOOK, "FASTBP_REQUIRE_BOOK")):
        if (prefix in str(report.longrepr)
                and os.environ.get(variable, "0") not in ("", "0")):
            report.outcome = "failed"
            report.longrepr = f"{variable}=1, but the test skipped: {report.longrepr}"
