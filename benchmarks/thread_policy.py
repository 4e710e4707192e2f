"""Thread policy: train-step time for 1 and 2 threads of Numba's pool and of OpenBLAS's,
and for each Numba threading layer, so no combination is pathologically slow.

    python benchmarks/thread_policy.py [--batches 1 100 10000] [--rounds 2]

Every configuration runs in its own process (threading layer and pool sizes are fixed at
start-up): ``NUMBA_THREADING_LAYER`` in {default policy (fastbp picks tbb), omp, workqueue},
Numba threads in {1, 2} (``numba.set_num_threads``) and BLAS threads in {1, 2}
(threadpoolctl on NumPy's OpenBLAS, the one fastbp calls). Median step in us, float32
TwoLayerNet 784-50-10, same data as ``compare_frameworks.py``; rounds alternate.
"""
import argparse
import itertools
import json
import subprocess
import sys

try:  # asv imports every module of benchmarks/ as part of the package
    from . import blas_env
except ImportError:  # run as a script: this folder is first on sys.path
    import blas_env

CHILD = r"""
import sys, json, time
import numpy as np, numba
import fastbp
from threadpoolctl import threadpool_limits
nt, bt = int(sys.argv[1]), int(sys.argv[2])
batches = [int(a) for a in sys.argv[3:]]
numba.set_num_threads(nt)
out = {}
with threadpool_limits(bt, user_api="blas"):
    for n in batches:
        rng = np.random.default_rng(0)
        x = rng.random((n, 784), dtype=np.float32); x[rng.random((n, 784)) < 0.81] = 0
        t = rng.integers(0, 10, n)
        net = fastbp.TwoLayerNet(784, 50, 10, dtype=np.float32, seed=0)
        steps = {1: 2000, 100: 300}.get(n, 8)
        for _ in range(min(steps, 20)):
            net.train_step(x, t, 0.01)
        ts = []
        for _ in range(steps):
            t0 = time.perf_counter(); net.train_step(x, t, 0.01); ts.append(time.perf_counter() - t0)
        out[n] = float(np.median(ts))
out["layer"] = numba.threading_layer()
from threadpoolctl import threadpool_info
out["kernels"] = sorted({str(i.get("architecture")) for i in threadpool_info()
                         if i.get("user_api") == "blas"})
print(json.dumps(out))
"""


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 100, 10000])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--layers", nargs="+", default=["policy", "omp", "workqueue"])
    args = p.parse_args(argv)
    configs = list(itertools.product(args.layers, (1, 2), (1, 2)))
    res = {c: {n: [] for n in args.batches} for c in configs}
    used = {}
    kernels = set()  # OpenBLAS kernels the children loaded (they run without the pins)
    for r in range(args.rounds):
        for c in (configs if r % 2 == 0 else configs[::-1]):
            layer, nt, bt = c
            env = blas_env.unpinned_env()  # OpenBLAS picks its own kernels
            env.pop("NUMBA_THREADING_LAYER", None)
            if layer != "policy":
                env["NUMBA_THREADING_LAYER"] = layer
            proc = subprocess.run([sys.executable, "-c", CHILD, str(nt), str(bt),
                                   *map(str, args.batches)], env=env, capture_output=True,
                                  text=True)
            if proc.returncode != 0:
                print(f"{c}: failed: {proc.stderr.strip().splitlines()[-1:]}", flush=True)
                continue
            out = json.loads(proc.stdout.strip().splitlines()[-1])
            used[c] = out["layer"]
            kernels.update(out.get("kernels", []))
            for n in args.batches:
                res[c][n].append(out[str(n)])
    import numpy as np
    print(f"OpenBLAS kernel: {', '.join(sorted(kernels)) or 'unknown'}")
    print("| threading layer | Numba threads | BLAS threads | "
          + " | ".join(f"batch {n} us" for n in args.batches) + " |")
    print("|---|---|---|" + "---|" * len(args.batches))
    for c in configs:
        if not res[c][args.batches[0]]:
            continue
        name = c[0] if c[0] != "policy" else f"fastbp policy ({used.get(c)})"
        print(f"| {name} | {c[1]} | {c[2]} | " + " | ".join(
            f"{np.median(res[c][n]) * 1e6:,.1f}" for n in args.batches) + " |")


if __name__ == "__main__":
    main()
