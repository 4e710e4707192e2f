"""Compile cost: a new process's time to its first finished train step, cold and warm cache.

    python benchmarks/compile_cost.py [--repeat 3]

Each measurement is a fresh ``python -c`` process with its own ``NUMBA_CACHE_DIR`` (a
temporary folder): "cold" starts from an empty folder (everything is compiled and written),
"warm" reuses the folder a cold run filled (machine code is loaded from disk). Reported:
the wall time of the whole process as seen from outside (interpreter start, ``import
fastbp``, building a float32 TwoLayerNet 784-50-10, one train step on a batch of 100, exit),
and inside it the import and first-step times. The "all" scenario also compiles float64 and
the other batch paths (1 and 2000), what ``fastbp train`` may need.

For read-only installs (site-packages not writable), set ``NUMBA_CACHE_DIR`` to a writable
folder; otherwise Numba cannot write the cache and every process compiles again.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

CHILD = """
import time, json
t0 = time.perf_counter()
import numpy as np
import fastbp
t1 = time.perf_counter()
rng = np.random.default_rng(0)
nets = [fastbp.TwoLayerNet(784, 50, 10, dtype=np.float32, seed=0)]
x = rng.random((100, 784), dtype=np.float32); t = rng.integers(0, 10, 100)
nets[0].train_step(x, t, 0.1)
t2 = time.perf_counter()
if {all}:
    for dt in (np.float32, np.float64):
        net = fastbp.TwoLayerNet(784, 50, 10, dtype=dt, seed=0)
        for n in (1, 100, 2000):
            net.train_step(rng.random((n, 784)).astype(dt), rng.integers(0, 10, n), 0.1)
t3 = time.perf_counter()
print(json.dumps({{"import": t1 - t0, "first_step": t2 - t1, "all": t3 - t1}}))
"""


def run(cache, everything):
    env = dict(os.environ, NUMBA_CACHE_DIR=cache)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CHILD.format(all=everything)], env=env,
                          capture_output=True, text=True, check=True)
    wall = time.perf_counter() - t0
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res["wall"] = wall
    return res


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args(argv)
    rows = []
    for scenario, everything in (("first step (f32, batch 100)", False),
                                 ("all paths (f32+f64, batch 1/100/2000)", True)):
        for r in range(args.repeat):
            with tempfile.TemporaryDirectory() as cache:
                cold = run(cache, everything)
                warm = run(cache, everything)
            rows.append((scenario, cold, warm))
            print(f"{scenario} #{r + 1}: cold wall {cold['wall']:.2f} s (import "
                  f"{cold['import']:.2f}, compile+step {cold['all' if everything else 'first_step']:.2f}); "
                  f"warm wall {warm['wall']:.2f} s (import {warm['import']:.2f}, first step "
                  f"{warm['first_step']:.3f})", flush=True)
    print("\n| scenario | cold: process wall s | warm: process wall s | warm: import s | "
          "warm: first step s |")
    print("|---|---|---|---|---|")
    for scenario in dict.fromkeys(r[0] for r in rows):
        sel = [r for r in rows if r[0] == scenario]

        def rng(vals):
            return f"{min(vals):.2f}-{max(vals):.2f}" if len(vals) > 1 else f"{vals[0]:.2f}"
        print(f"| {scenario} | {rng([c['wall'] for _, c, _ in sel])} | "
              f"{rng([w['wall'] for _, _, w in sel])} | {rng([w['import'] for _, _, w in sel])} | "
              f"{rng([w['first_step'] for _, _, w in sel])} |")


if __name__ == "__main__":
    main()
