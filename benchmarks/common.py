"""Shared pieces of the asv suite: parameters, thread setup, seeded cached data, NumPy baselines.

Not a benchmark module (asv imports it but finds nothing to run here).

Parameters
----------
``BATCH_SIZES`` is (1, 8, 32, 100, 256, 1024, 4096, 10000); with the environment variable
``FASTBP_BENCH_QUICK=1`` it shrinks to (1, 1024), the smallest and a large batch (their
code paths differ), and ``DTYPES`` to float32 only (what ``.ci/run`` uses, so a broken
benchmark fails CI in a few minutes: asv runs every parameter combination in a process of
its own). The ``track_speedup_*``
benchmarks take the same batch sizes as strings (``SPEEDUP_BATCH_SIZES``), so that the
dashboard spaces them evenly. The chapter-6 network (``bench_mlp``) has its own:
``MLP_BATCH_SIZES`` (1, 10, 100, 1000, 10000; quick: 1, 1000).

Threads
-------
Every benchmark's ``setup`` calls :func:`set_threads`, which fixes Numba's pool and both
OpenBLAS pools (NumPy's and SciPy's) to ``THREADS`` through ``fastbp.set_num_threads``:
``$FASTBP_BENCH_THREADS`` if set, else 1. The NumPy baselines use the same BLAS thread
count. ``bench_train_step.Threads`` records the counts in the results.

Why 1 by default: this project's machines have 2 shared vCPUs. With 2 threads, every BLAS
call or parallel region waits for a scheduler slice whenever another process holds the other
core, and a step's time becomes a multiple of ~8 ms: the batch-100 training step measured
0.2 ms alone and 15.9 ms (fastbp) / 28 ms (NumPy) while another engineer's test run was
busy, in the same asv run. One thread per side is not disturbed that way. On a quiet
machine, ``FASTBP_BENCH_THREADS=2 asv run ...`` measures the threaded code (keep one setting
per machine in the results history: the thread count is not an asv parameter).

Numba's disk cache
------------------
Importing this module points ``NUMBA_CACHE_DIR`` at a cache of the suite's own,
``.asv/numba-cache`` (ignored by git), unless ``NUMBA_CACHE_DIR`` is already set. Numba's
cache key holds neither compile flags nor options: machine code compiled in the same
checkout under ``NUMBA_BOUNDSCHECK=1`` or ``NUMBA_OPT=0`` (test runs) would otherwise be
loaded and timed. The first benchmark process fills the suite's cache; later ones load it
(in ``setup``, never in a timing).

Data
----
Inputs are MNIST-like: the first ``n`` test images (784 float32 pixels in [0, 1]) and labels
of Fashion-MNIST or MNIST when their IDX files are found (in ``$FASTBP_BENCH_DATA``, or in
``$FASTBP_DATA_DIR/<dataset>``, ``~/.cache/fastbp/<dataset>``,
``/usr/share/datasets/<dataset>``), else seeded random images with about 50 % zeros (the
pixel sparsity of Fashion-MNIST) and random labels. Hidden-layer inputs of the activation
benchmarks are the pre-activations ``x @ W1 + b1`` of the book's 784-50-10 network with
seeded weights (about half of them negative). Everything is built once per process
(``functools.lru_cache``) and is identical for every commit benchmarked, so results stay
comparable over history.

NumPy baselines
---------------
The plain-NumPy side is ``fastbp/baseline.py`` (one home for every benchmark's baseline):
the book's operations written with in-place ufuncs into caller buffers for the kernel
benchmarks, and the book's layer classes, ``TwoLayerNet``, ``MultiLayerNet``, ``SGD`` and
``Adam`` for the training steps. It is loaded from this checkout by its path, not imported
from the installed fastbp, so it does not change with the commit under test.
"""
import functools
import gzip
import os
import sys
from pathlib import Path

#: The suite's own Numba cache (see the module docstring); set before fastbp is imported.
NUMBA_CACHE_DIR = os.environ.setdefault(
    "NUMBA_CACHE_DIR", str(Path(__file__).resolve().parents[1] / ".asv" / "numba-cache"))
if "numba" in sys.modules:  # imported before the suite: the setting must reach its config
    sys.modules["numba"].config.CACHE_DIR = NUMBA_CACHE_DIR

import numpy as np  # noqa: E402

FULL_BATCH_SIZES = [1, 8, 32, 100, 256, 1024, 4096, 10000]
QUICK = os.environ.get("FASTBP_BENCH_QUICK", "") not in ("", "0")
BATCH_SIZES = [1, 1024] if QUICK else FULL_BATCH_SIZES
DTYPES = ["float32"] if QUICK else ["float32", "float64"]
IMPLS = ["numpy", "fastbp"]
#: The batch sizes of the ``track_speedup_*`` benchmarks, as strings: asv's graph then puts
#: them on an evenly spaced category axis (numbers get a linear axis, on which 1 ... 256
#: crowd into the first 3 % of a 1 ... 10000 axis; asv has no logarithmic x-axis).
#: ``setup`` converts them back with ``int``.
SPEEDUP_BATCH_SIZES = [str(n) for n in BATCH_SIZES]

#: The book's network: 784 inputs, 50 hidden units, 10 classes, learning rate 0.1.
D, H, C = 784, 50, 10
LR = 0.1


def _default_threads():
    env = os.environ.get("FASTBP_BENCH_THREADS")
    return int(env) if env else 1


THREADS = _default_threads()


def set_threads():
    """Fix Numba's pool and both BLAS pools to ``THREADS``; returns ``THREADS``."""
    import fastbp
    fastbp.set_num_threads(THREADS)
    return THREADS


# -- data ------------------------------------------------------------------------------------

def _data_dirs():
    dirs = []
    env = os.environ.get("FASTBP_BENCH_DATA")
    if env:
        dirs.append(Path(env))
    roots = []
    if os.environ.get("FASTBP_DATA_DIR"):
        roots.append(Path(os.environ["FASTBP_DATA_DIR"]))
    roots += [Path.home() / ".cache" / "fastbp", Path("/usr/share/datasets")]
    for root in roots:
        dirs += [root / "fashion-mnist", root / "mnist"]
    return dirs


def _read_idx(path):
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    ndim = data[3]
    dims = np.frombuffer(data, ">u4", ndim, 4).astype(int)
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


@functools.lru_cache(maxsize=None)
def _test_set():
    """(images float32 (10000, 784) in [0, 1], labels intp (10000,), source description)."""
    for d in _data_dirs():
        for gz in (".gz", ""):
            xi, ti = d / f"t10k-images-idx3-ubyte{gz}", d / f"t10k-labels-idx1-ubyte{gz}"
            if xi.is_file() and ti.is_file():
                try:
                    x = _read_idx(xi).reshape(-1, D).astype(np.float32) / np.float32(255)
                    t = _read_idx(ti).astype(np.intp)
                except (OSError, ValueError, EOFError):
                    continue
                if x.shape == (10000, D) and t.shape == (10000,):
                    return x, t, str(xi)
    rng = np.random.default_rng(20240501)
    x = rng.random((10000, D), dtype=np.float32)
    x[rng.random((10000, D)) < 0.5] = 0
    t = rng.integers(0, C, 10000).astype(np.intp)
    return x, t, "seeded random (50 % zeros)"


def data_source():
    return _test_set()[2]


@functools.lru_cache(maxsize=None)
def _weights(dtype):
    rng = np.random.default_rng(0)
    W1 = (0.01 * rng.standard_normal((D, H))).astype(dtype)
    b1 = (0.01 * rng.standard_normal(H)).astype(dtype)
    W2 = (0.01 * rng.standard_normal((H, C))).astype(dtype)
    b2 = (0.01 * rng.standard_normal(C)).astype(dtype)
    return W1, b1, W2, b2


def _ro(a):
    a.flags.writeable = False
    return a


@functools.lru_cache(maxsize=None)
def _images(n, dtype):
    if n > 10000:
        raise NotImplementedError(f"batch {n} > 10000 test images")
    return _ro(np.ascontiguousarray(_test_set()[0][:n], dtype=dtype))


def images(n, dtype):
    """The first `n` test images, (n, 784), a fresh C-contiguous writeable array."""
    return _images(n, np.dtype(dtype).name).copy()


def labels(n):
    """Their labels, intp (n,), a fresh array."""
    return _test_set()[1][:n].copy()


def weights(dtype):
    """Fresh writeable copies of the seeded W1 (784, 50), b1, W2 (50, 10), b2."""
    return tuple(a.copy() for a in _weights(np.dtype(dtype).name))


@functools.lru_cache(maxsize=None)
def _hidden_preact(n, dtype):
    W1, b1, _, _ = _weights(dtype)
    return _ro(_images(n, dtype) @ W1 + b1)


def hidden_preact(n, dtype):
    """``x @ W1 + b1`` for the first `n` images: (n, 50), about half negative (fresh array)."""
    return _hidden_preact(n, np.dtype(dtype).name).copy()


@functools.lru_cache(maxsize=None)
def _logits(n, dtype):
    _, _, W2, b2 = _weights(dtype)
    y = np.maximum(_hidden_preact(n, dtype), 0) @ W2 + b2
    y = 5 * (y - y.mean()) / (y.std() + 1e-12)
    return _ro(np.ascontiguousarray(y, dtype=dtype))


def logits(n, dtype):
    """The network's outputs ``relu(x @ W1 + b1) @ W2 + b2`` for the first `n` images,
    standardized to a spread of 5 (a partly trained net's), (n, 10) (fresh array)."""
    return _logits(n, np.dtype(dtype).name).copy()


def upstream(shape, dtype, seed=1):
    """A seeded upstream gradient ``dout`` of `shape`, values ~ N(0, 1e-2)."""
    rng = np.random.default_rng(seed)
    return (0.01 * rng.standard_normal(shape)).astype(dtype)


def warm(*fns, calls=3):
    """Call each function `calls` times: compiles (or loads from Numba's cache) every
    specialization and code path the timed calls take (e.g. ``TwoLayerNet.train_step``'s
    second call takes a fast path with a kernel of its own), so none is timed."""
    for _ in range(calls):
        for f in fns:
            f()


def check_impl(impl):
    if impl not in IMPLS:
        raise NotImplementedError(impl)


# -- the plain-NumPy baselines ----------------------------------------------------------------
# One home: fastbp/baseline.py, loaded from this checkout by its path rather than imported
# from the installed fastbp, so that the baseline is the same for every commit asv
# benchmarks (older commits have no fastbp.baseline, and the NumPy side must not change
# with the code under test).

def _load_baseline():
    import importlib.util
    path = Path(__file__).resolve().parents[1] / "fastbp" / "baseline.py"
    spec = importlib.util.spec_from_file_location("_fastbp_bench_baseline", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


baseline = _load_baseline()
np_relu_forward = baseline.np_relu_forward
np_relu_backward = baseline.np_relu_backward
np_sigmoid_forward = baseline.np_sigmoid_forward
np_sigmoid_backward = baseline.np_sigmoid_backward
np_affine_forward = baseline.np_affine_forward
np_affine_backward = baseline.np_affine_backward
np_softmax_cross_entropy = baseline.np_softmax_cross_entropy


# -- chapter 6: MultiLayerNet 784-[100]*k-10 and the book's SGD and Adam ------------------------

#: Hidden layers of 100 units (``bench_mlp`` and ``compare_frameworks.py --model mlp4``).
MLP_HIDDEN = 100
MLP_DEPTHS = [1, 4]
#: Batch sizes of ``bench_mlp`` (quick: 1, 1000).
MLP_BATCH_SIZES = [1, 1000] if QUICK else [1, 10, 100, 1000, 10000]
MLP_SPEEDUP_BATCH_SIZES = [str(n) for n in MLP_BATCH_SIZES]
#: The book's default learning rates: ``SGD(lr=0.01)``, ``Adam(lr=0.001)``.
MLP_LR = {"sgd": 0.01, "adam": 0.001}
MLP_OPTIMIZERS = list(MLP_LR)


def mlp_sizes(k):
    """Layer widths of the k-hidden-layer network: [784, 100, ..., 100, 10]."""
    return [D] + [MLP_HIDDEN] * k + [C]


@functools.lru_cache(maxsize=None)
def _mlp_weights(k, dtype):
    rng = np.random.default_rng(100 + k)
    sizes = mlp_sizes(k)
    params = {}
    for i in range(1, len(sizes)):
        scale = np.sqrt(2.0 / sizes[i - 1])  # He's initial values, MultiLayerNet's default
        params[f"W{i}"] = _ro((scale * rng.standard_normal((sizes[i - 1], sizes[i])))
                              .astype(dtype))
        params[f"b{i}"] = _ro(np.zeros(sizes[i], dtype))
    return params


def mlp_weights(k, dtype):
    """Fresh writeable copies of seeded He-initialized ``W1, b1, ..., W{k+1}, b{k+1}`` of
    784-[100]*k-10 (a dict, the book's keys)."""
    return {key: a.copy() for key, a in _mlp_weights(k, np.dtype(dtype).name).items()}


#: The book's ch. 6 ``MultiLayerNet`` (ReLU) and its ``SGD`` and ``Adam`` (fastbp/baseline.py).
NumpyMultiLayerNet = baseline.MultiLayerNet
NumpySGD = baseline.SGD
NumpyAdam = baseline.Adam
NUMPY_OPTIMIZERS = baseline.OPTIMIZERS

# -- speed-up measurement for the track_speedup_* benchmarks ---------------------------------

def _calibrate(fn, target=0.002):
    """Calls per sample so one sample takes at least `target` seconds (like timeit.autorange)."""
    import time
    number = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        dt = time.perf_counter() - t0
        if dt >= target or number >= 1 << 20:
            return number, dt / number
        number *= 2 if dt * 10 < target else 3


def speedup(numpy_fn, fastbp_fn, samples=15, target=0.003):
    """NumPy time / fastbp time: the minimum per-call time of each over `samples` alternating
    samples of at least `target` seconds (both functions are called in setup first, so no
    compilation is timed). Many short alternating samples: on a shared machine a burst of
    load then hits both sides alike, and the minimum finds a quiet sample of each. With
    ``FASTBP_BENCH_QUICK`` (CI): 2 samples of 1 ms."""
    import time
    if QUICK:
        samples, target = 2, 0.001
    n_np, _ = _calibrate(numpy_fn, target)
    n_fb, _ = _calibrate(fastbp_fn, target)
    best_np = best_fb = float("inf")
    clock = time.perf_counter
    for _ in range(samples):
        t0 = clock()
        for _ in range(n_np):
            numpy_fn()
        best_np = min(best_np, (clock() - t0) / n_np)
        t0 = clock()
        for _ in range(n_fb):
            fastbp_fn()
        best_fb = min(best_fb, (clock() - t0) / n_fb)
    return best_np / best_fb
