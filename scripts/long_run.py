"""Long run: many train_steps in one process, watching resident memory (RSS) for leaks.

    .venv/bin/python scripts/long_run.py                       # 100 000 steps, 784-50-10 float32, batch 100
    .venv/bin/python scripts/long_run.py --data random --steps 20000 --every 2000
    .venv/bin/python scripts/long_run.py --data fashion-mnist --data-dir /work/shared/datasets

RSS is read from /proc/self/status (Linux) after a warm-up (kernels compiled, buffers
allocated, data loaded), then every ``--every`` steps and at the end, together with the
number of objects the garbage collector tracks. A leak of one small array per step would
add ~300 MB over 100 000 steps (a batch of x alone is 313 KB); a leak of one Numba
argument header (~100 bytes) per step would add ~10 MB. Exit status 1 if RSS grew by
more than ``--max-growth-mb`` between the warm-up and the end. Not a CI step (20-40 s).
"""
import argparse
import collections
import gc
import sys
import time

import numpy as np


def rss_mb():
    """Resident set size of this process in MiB (VmRSS), or peak RSS where /proc is missing."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024 if sys.platform == "darwin" else 1024)


def load_data(kind, data_dir, rng):
    """(x, t, description): Fashion-MNIST training images, or random sparse 'images'."""
    if kind in ("auto", "fashion-mnist"):
        from fastbp.datasets import DatasetNotFoundError, load_mnist
        try:
            (x, t), _ = load_mnist(dataset="fashion-mnist", data_dir=data_dir, download=False)
            return x, t, f"Fashion-MNIST training set, {len(x)} images"
        except (DatasetNotFoundError, FileNotFoundError, ValueError) as exc:
            if kind == "fashion-mnist":
                raise SystemExit(f"long_run.py: error: {exc}")
            print(f"(Fashion-MNIST not found, using random data: {str(exc).splitlines()[0]})")
    x = rng.random((60000, 784), dtype=np.float32)
    x[x < 0.8] = 0  # about as sparse as MNIST
    t = rng.integers(0, 10, 60000)
    return x, t, "random data, 60000 x 784, 80 % zeros"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=100_000)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--every", type=int, default=10_000, help="RSS sample interval (steps)")
    p.add_argument("--data", choices=("auto", "random", "fashion-mnist"), default="auto")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--threads", type=int, default=None, help="fastbp.set_num_threads(n)")
    p.add_argument("--max-growth-mb", type=float, default=8.0)
    args = p.parse_args(argv)

    import fastbp
    if args.threads:
        fastbp.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    x, t, what = load_data(args.data, args.data_dir, rng)
    net = fastbp.TwoLayerNet(784, 50, 10, dtype=np.dtype(args.dtype).type, seed=0)
    n, bs = len(x), args.batch_size

    # Warm-up: compile the kernels, allocate train_step's buffers, touch the data.
    for _ in range(200):
        idx = rng.integers(0, n, bs)
        net.train_step(x[idx], t[idx], args.lr)
    gc.collect()
    start = rss_mb()
    print(f"fastbp long run: {args.steps} train_steps, TwoLayerNet 784-50-10 {args.dtype}, "
          f"batch {bs}, {what}, {fastbp.get_num_threads()} Numba threads")
    print(f"{'step':>8} {'RSS MiB':>9} {'vs start':>9} {'gc objects':>11} {'mean loss':>10} "
          f"{'steps/s':>8}")
    print(f"{0:>8} {start:>9.1f} {0:>+9.1f} {len(gc.get_objects()):>11} {'':>10} {'':>8}")
    samples = [(0, start)]
    # Losses are summed, not stored: a list of 100 000 floats would itself grow RSS by 3 MB.
    first, last = [], collections.deque(maxlen=1000)
    total = 0.0
    t0 = tick = time.perf_counter()
    for step in range(1, args.steps + 1):
        idx = rng.integers(0, n, bs)
        loss = net.train_step(x[idx], t[idx], args.lr)
        total += loss
        last.append(loss)
        if step <= 1000:
            first.append(loss)
        if step % args.every == 0 or step == args.steps:
            now = time.perf_counter()
            rss = rss_mb()
            done = step - samples[-1][0]
            samples.append((step, rss))
            print(f"{step:>8} {rss:>9.1f} {rss - start:>+9.1f} {len(gc.get_objects()):>11} "
                  f"{total / done:>10.4f} {done / (now - tick):>8.0f}", flush=True)
            tick, total = now, 0.0
    wall = time.perf_counter() - t0
    end = samples[-1][1]
    peak = max(r for _, r in samples)
    print(f"RSS after warm-up {start:.1f} MiB, at the end {end:.1f} MiB ({end - start:+.1f}), "
          f"highest sample {peak:.1f} MiB; {args.steps} steps in {wall:.1f} s "
          f"({args.steps / wall:.0f} steps/s); mean loss {np.mean(first):.3f} (first "
          f"{len(first)} steps) -> {np.mean(last):.3f} (last {len(last)})")
    if end - start > args.max_growth_mb:
        print(f"RSS grew by {end - start:.1f} MiB > {args.max_growth_mb} MiB", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
