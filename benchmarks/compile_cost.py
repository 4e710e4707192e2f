"""Compile cost: a new process's time to its first finished train step, cold and warm cache.

    python benchmarks/compile_cost.py [--repeat 3] [--scenarios train,step,all]
                                      [--data-dir ../shared/datasets]

Each measurement is a fresh ``python -c`` process with its own ``NUMBA_CACHE_DIR`` (a
temporary folder): "cold" starts from an empty folder (everything is compiled and written),
"warm" reuses the folder a cold run filled (machine code is loaded from disk). Scenarios:

``train``
    The default ``fastbp train`` (TwoLayerNet 784-50-10, float32, batch 100, SGD; its
    warm-up compiles the step and the evaluation) for one iteration, run in-process through
    ``fastbp.cli.main``. Reported: the CLI's own "kernel compile" figure (the warm-up, what
    issue 15 item 7 bounds by 4 s), and the process's CPU seconds.
``step``
    ``import fastbp``, a float32 TwoLayerNet 784-50-10 and one train step at batch 100.
``all``
    ``step`` plus float64 and batches 1, 100 and 2000: every path of the two-layer step.

Wall times on a loaded machine stretch with the load; CPU seconds (user + system of the
child process) stretch less: both are printed. Run on a quiet machine for figures to quote,
under ``flock /tmp/helpers/bench.lock`` where several agents share one.

For read-only installs (site-packages not writable), set ``NUMBA_CACHE_DIR`` to a writable
folder; otherwise every process compiles again (fastbp warns once, see
``fastbp.kernels._cache``).
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PRELUDE = """
import time, json
t0 = time.perf_counter(); c0 = time.process_time()
import numpy as np
import fastbp
t1 = time.perf_counter()
"""

CHILDREN = {
    "train": PRELUDE + """
import contextlib, io, re
from fastbp.cli import main
buf = io.StringIO()
with contextlib.redirect_stdout(buf):
    main(["train", "--dataset", {dataset!r}, "--data-dir", {data_dir!r}, "--no-download",
          "--iters", "1", "--no-progress", "--seed", "0"])
t2 = time.perf_counter()
compile_s = float(re.search(r"kernel compile ([0-9.]+) s", buf.getvalue()).group(1))
print(json.dumps({{"import": t1 - t0, "work": t2 - t1, "compile": compile_s,
                  "cpu": time.process_time() - c0}}))
""",
    "step": PRELUDE + """
rng = np.random.default_rng(0)
net = fastbp.TwoLayerNet(784, 50, 10, dtype=np.float32, seed=0)
x = rng.random((100, 784), dtype=np.float32); t = rng.integers(0, 10, 100)
net.train_step(x, t, 0.1)
t2 = time.perf_counter()
print(json.dumps({{"import": t1 - t0, "work": t2 - t1, "cpu": time.process_time() - c0}}))
""",
    "all": PRELUDE + """
rng = np.random.default_rng(0)
for dt in (np.float32, np.float64):
    net = fastbp.TwoLayerNet(784, 50, 10, dtype=dt, seed=0)
    for n in (1, 100, 2000):
        net.train_step(rng.random((n, 784)).astype(dt), rng.integers(0, 10, n), 0.1)
t2 = time.perf_counter()
print(json.dumps({{"import": t1 - t0, "work": t2 - t1, "cpu": time.process_time() - c0}}))
""",
}

TITLES = {"train": "default `fastbp train` (1 iteration)",
          "step": "first step (f32, batch 100)",
          "all": "all paths (f32+f64, batch 1/100/2000)"}


def run(code, cache):
    env = dict(os.environ, NUMBA_CACHE_DIR=cache)
    for var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        env.pop(var, None)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    # cwd: not the checkout, whose fastbp/ would shadow the installed one for `python -c`
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          cwd=tempfile.gettempdir())
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res["wall"] = wall
    res["proc_cpu"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return res


def _range(vals):
    return f"{min(vals):.2f}-{max(vals):.2f}" if len(vals) > 1 else f"{vals[0]:.2f}"


def main(argv=None):
    here = Path(__file__).resolve().parents[1]
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--scenarios", default="train,step,all")
    p.add_argument("--data-dir", default=os.environ.get(
        "FASTBP_TEST_DATA", str(here.parent / "shared" / "datasets")))
    p.add_argument("--dataset", default=None,
                   help="default: mnist if its training images are there, else fashion-mnist")
    args = p.parse_args(argv)
    dataset = args.dataset or ("mnist" if (Path(args.data_dir) / "mnist" / "train-images-idx3-ubyte.gz")
                               .is_file() else "fashion-mnist")
    import fastbp.kernels  # for the binding and the BLAS kernel in the header
    binding = getattr(fastbp.kernels, "blas_binding", lambda: "(not reported)")()
    from threadpoolctl import threadpool_info
    arch = sorted({i.get("architecture") or "?" for i in threadpool_info()
                   if i.get("internal_api") == "openblas"})
    print(f"python {sys.version.split()[0]}, fastbp {fastbp.__file__}, BLAS binding {binding}, OpenBLAS kernel "
          f"{', '.join(arch) or 'none'}, load average {os.getloadavg()[0]:.1f}", flush=True)
    rows = []
    for name in args.scenarios.split(","):
        code = CHILDREN[name].format(dataset=dataset, data_dir=args.data_dir)
        for r in range(args.repeat):
            with tempfile.TemporaryDirectory() as cache:
                cold = run(code, cache)
                warm = run(code, cache)
            rows.append((name, cold, warm))
            extra = f", warm-up compile {cold['compile']:.2f}" if "compile" in cold else ""
            print(f"{TITLES[name]} #{r + 1}: cold wall {cold['wall']:.2f} s, cpu "
                  f"{cold['proc_cpu']:.2f} s (import {cold['import']:.2f}{extra}); warm wall "
                  f"{warm['wall']:.2f} s, cpu {warm['proc_cpu']:.2f} s", flush=True)
    print("\n| scenario | cold: wall s | cold: CPU s | cold: warm-up compile s | warm: wall s "
          "| warm: CPU s | warm: import s |")
    print("|---|---|---|---|---|---|---|")
    for name in dict.fromkeys(r[0] for r in rows):
        sel = [r for r in rows if r[0] == name]
        comp = _range([c["compile"] for _, c, _ in sel]) if "compile" in sel[0][1] else "-"
        print(f"| {TITLES[name]} | {_range([c['wall'] for _, c, _ in sel])} | "
              f"{_range([c['proc_cpu'] for _, c, _ in sel])} | {comp} | "
              f"{_range([w['wall'] for _, _, w in sel])} | "
              f"{_range([w['proc_cpu'] for _, _, w in sel])} | "
              f"{_range([w['import'] for _, _, w in sel])} |")


if __name__ == "__main__":
    main()
