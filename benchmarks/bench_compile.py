"""Compile cost of the kernels: cold JIT compilation and warm load from Numba's disk cache.

Each measurement is a fresh Python process with ``NUMBA_CACHE_DIR`` pointing at a folder of
this benchmark's own: ``setup_cache`` runs one process on an empty folder (everything is
compiled and written: "cold"), ``track_warm_load`` runs another on the filled folder (machine
code loaded from disk: "warm"). The number reported is measured inside the child, from
before ``import fastbp`` (NumPy already imported) to the end of one float32 call of every
public kernel (ReLU, sigmoid, affine with and without ``dx``, softmax-cross-entropy,
``sgd_update``) and one ``TwoLayerNet.train_step`` on a batch of 100: what a new process
pays before its first step. Interpreter start-up is not included. Threads: the child calls
``fastbp.set_num_threads(common.THREADS)``.

Slow (the cold run compiles everything, ~30 s here): excluded from the CI subset.
"""
import json
import os
import subprocess
import sys

from . import common

CHILD = r"""
import json, sys, time
import numpy as np
t0 = time.perf_counter()
import fastbp
from fastbp import kernels as K
fastbp.set_num_threads(int(sys.argv[1]))
t1 = time.perf_counter()
f = np.float32
rng = np.random.default_rng(0)
x = rng.random((100, 784), dtype=f); W = rng.random((784, 50), dtype=f); b = np.zeros(50, f)
h = np.empty((100, 50), f); dh = np.empty_like(h); dx = np.empty_like(x)
dW = np.empty_like(W); db = np.empty_like(b)
K.relu_forward(h, h); K.relu_backward(h, h, dh)
K.sigmoid_forward(h, h); K.sigmoid_backward(h, h, dh)
K.affine_forward(x, W, b, h); K.affine_backward(h, x, W, dW, db, dx); K.affine_backward(h, x, W, dW, db)
y = rng.random((100, 10), dtype=f); dy = np.empty_like(y)
K.softmax_cross_entropy(y, rng.integers(0, 10, 100).astype(np.intp), dy)
K.sgd_update(W, dW, 0.1)
net = fastbp.TwoLayerNet(784, 50, 10, dtype=f, seed=0)
t = rng.integers(0, 10, 100)
net.train_step(x, t, 0.1); net.train_step(x, t, 0.1)  # the second call takes the fast path
t2 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "total": t2 - t0}))
"""


def _child(cache_dir):
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
    proc = subprocess.run([sys.executable, "-c", CHILD, str(common.THREADS)], env=env,
                          capture_output=True, text=True, timeout=600)
    if proc.returncode:
        raise RuntimeError(f"compile child failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


class CompileCost:
    """Seconds from ``import fastbp`` to the end of the first call of every kernel."""
    unit = "s"
    timeout = 900
    processes = 1
    repeat = 1
    number = 1

    def setup_cache(self):
        # asv runs setup_cache once, in a working directory that the benchmarks share.
        cache_dir = os.path.abspath("numba_cache_bench_compile")
        os.makedirs(cache_dir, exist_ok=True)
        if os.listdir(cache_dir):
            raise RuntimeError(f"{cache_dir} is not empty: not a cold compile")
        cold = _child(cache_dir)
        return {"dir": cache_dir, "cold": cold}

    def track_cold_compile(self, cache):
        return cache["cold"]["total"]

    def track_warm_load(self, cache):
        return _child(cache["dir"])["total"]
