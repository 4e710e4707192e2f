"""Performance contracts that are not timings: no allocation per training step after warm-up.

Numba's runtime counts its allocations only when ``NUMBA_NRT_STATS=1`` is set before Numba
starts, so the check runs in a subprocess. Timings (warm-cache first step, speed against
other frameworks) live in ``benchmarks/``: they depend on the machine and are not pass/fail.
"""
import json
import os
import subprocess
import sys
import textwrap

import pytest

from conftest import compiled_only

pytestmark = compiled_only  # NRT allocation counts of compiled code

SCRIPT = textwrap.dedent("""
    import json, sys, tracemalloc
    import numpy as np
    from numba.core.runtime import rtsys
    import fastbp
    from fastbp import kernels as K

    def stats():
        s = rtsys.get_allocation_stats()
        return {"alloc": s.alloc, "free": s.free, "mi_alloc": s.mi_alloc, "mi_free": s.mi_free}

    from numba import njit

    @njit
    def loop(steps, x, t, W1, b1, W2, b2, lr, h, y, dy, dh, dW1, db1, dW2, db2, rl):
        s = 0.0
        for _ in range(steps):
            s += K.two_layer_step(x, t, W1, b1, W2, b2, lr, h, y, dy, dh, dW1, db1, dW2,
                                  db2, rl)
        return s

    out = {}
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        net = fastbp.TwoLayerNet(784, 50, 10, dtype=dtype, seed=0)
        for n in (1, 8, 100, 2000):   # hand-written, BLAS serial and BLAS parallel paths
            x = rng.random((n, 784)).astype(dtype)
            x[x < 0.8] = 0
            t = rng.integers(0, 10, n)
            onehot = np.eye(10, dtype=dtype)[t]
            for _ in range(3):        # warm-up: compile, buffers
                net.train_step(x, t, 0.1)
                net.train_step(x, onehot, 0.1)
            before = stats()
            tracemalloc.start()
            for _ in range(10):
                net.train_step(x, t, 0.1)
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            for _ in range(5):
                net.train_step(x, onehot, 0.1)
            after = stats()
            out[f"{np.dtype(dtype).name}-{n}"] = {
                "nrt": {k: after[k] - before[k] for k in after}, "py_peak": peak}
            args = [x, t.astype(np.intp)] + [net.params[k] for k in ("W1", "b1", "W2", "b2")]
            args += [0.1] + list(net._buffers(n, False))
            loop(2, *args)
            s0 = stats()
            loop(1, *args)   # one call: the argument headers only
            s1 = stats()
            tracemalloc.start()
            loop(21, *args)  # same headers, 20 more steps
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            s2 = stats()
            out[f"{np.dtype(dtype).name}-{n}-njit"] = {
                "nrt": {k: (s2[k] - s1[k]) - (s1[k] - s0[k]) for k in s0}, "py_peak": peak}
        a = rng.random(10**6).astype(dtype)
        b = np.empty_like(a)
        for f in (K.relu_forward, K.sigmoid_forward):
            f(a, b)
        K.relu_backward(a, a, b)
        K.sigmoid_backward(a, a, b)
        before = stats()
        tracemalloc.start()
        for f in (K.relu_forward, K.sigmoid_forward):
            f(a, b)
        K.relu_backward(a, a, b)
        K.sigmoid_backward(a, a, b)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        after = stats()
        out[f"{np.dtype(dtype).name}-elementwise"] = {
            "nrt": {k: after[k] - before[k] for k in after}, "py_peak": peak}
    print(json.dumps(out))
""")


@pytest.fixture(scope="module")
def allocations():
    env = dict(os.environ, NUMBA_NRT_STATS="1")
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_compiled_step_allocates_nothing(allocations):
    """20 more steps of `two_layer_step` inside compiled code: no more NRT allocations."""
    cases = [c for c in allocations if c.endswith("-njit")]
    assert len(cases) == 8
    for case in cases:
        assert allocations[case]["nrt"] == {"alloc": 0, "free": 0, "mi_alloc": 0,
                                            "mi_free": 0}, case


def test_python_calls_allocate_only_argument_headers(allocations):
    """Called from Python, Numba wraps each array argument in a MemInfo header (one small
    NRT allocation, freed on return); nothing else. 15 train_step calls x 15 array
    arguments, and 10 arrays passed to the 4 elementwise kernels, whatever the batch size."""
    for case, res in allocations.items():
        if case.endswith("-njit"):
            continue
        expected = 10 if case.endswith("elementwise") else 15 * 15
        assert res["nrt"] == {"alloc": expected, "free": expected, "mi_alloc": expected,
                              "mi_free": expected}, case


def test_train_step_allocates_no_arrays_in_python_after_warm_up(allocations):
    """tracemalloc sees NumPy's buffers: 10 label steps from Python, 20 steps inside a
    compiled loop, and the 4 elementwise kernels on 10**6 elements each stay below 4 KiB in
    total (a batch-1 x alone would be 3 KiB; a few small Python objects are created and
    freed per call)."""
    for case, res in allocations.items():
        assert res["py_peak"] < 4096, (case, res["py_peak"])


MLP_SCRIPT = textwrap.dedent("""
    import json, tracemalloc
    import numpy as np
    from numba.core.runtime import rtsys
    import fastbp
    from fastbp import optimizers

    def stats():
        s = rtsys.get_allocation_stats()
        return {"alloc": s.alloc, "free": s.free}

    out = {}
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        for name, cfg in (("plain", {}), ("bn-dropout-decay", dict(
                use_batchnorm=True, use_dropout=True, weight_decay_lambda=0.01))):
            net = fastbp.MultiLayerNetExtend(784, [100, 64, 30], 10, dtype=dtype, seed=0,
                                             **cfg)
            opt = optimizers.Adam()
            for n in (1, 8, 100, 600):  # listed, loops, BLAS serial and parallel passes
                x = rng.random((n, 784)).astype(dtype)
                x[x < 0.8] = 0
                t = rng.integers(0, 10, n)
                for _ in range(3):
                    net.train_step(x, t, opt)
                before = stats()
                tracemalloc.start()
                for _ in range(10):
                    net.train_step(x, t, opt)
                _, peak = tracemalloc.get_traced_memory()
                tracemalloc.stop()
                after = stats()
                out[f"{np.dtype(dtype).name}-{name}-{n}"] = {
                    "nrt": {k: after[k] - before[k] for k in after}, "py_peak": peak}
    print(json.dumps(out))
""")


def test_any_depth_step_allocates_nothing_after_warm_up():
    """10 fused steps of MultiLayerNetExtend (Adam; BatchNorm, Dropout and weight decay or
    none) per batch size: Numba's runtime allocates only the 13 argument headers per call
    (freed on return), and Python's allocator peaks below 4 KiB (no arrays)."""
    env = dict(os.environ, NUMBA_NRT_STATS="1")
    proc = subprocess.run([sys.executable, "-c", MLP_SCRIPT], capture_output=True, text=True,
                          env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(res) == 16
    for case, r in res.items():
        assert r["nrt"] == {"alloc": 10 * 13, "free": 10 * 13}, (case, r)
        assert r["py_peak"] < 4096, (case, r)
