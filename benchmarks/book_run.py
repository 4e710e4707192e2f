"""The book's whole MNIST training run, fastbp against plain NumPy, timed in one process.

The run is the book's ``ch05/train_neuralnet.py``: 10000 steps of random
mini-batches of 100, learning rate 0.1, 50 hidden units, and accuracy on the
full training and test sets once per epoch (17 evaluations). The NumPy side is
the book's code, layer for layer (:class:`fastbp.baseline.TwoLayerNet`), run as the
book's script runs it: one-hot labels, ``np.random.choice`` batches,
``gradient`` + SGD + the extra ``loss`` call per step, ``accuracy`` on the
whole set at once. The fastbp side is :func:`fastbp.train.train`. Kernel
compilation is timed separately and excluded from the fastbp figure.

Usage::

    python benchmarks/book_run.py --data-dir ../shared/datasets            # speed comparison
    python benchmarks/book_run.py --data-dir ../shared/datasets --mnist-split  # MNIST 8000/2000 accuracy

The real MNIST training images are not available offline here, so the speed
comparison uses Fashion-MNIST by default: same shapes (60000 + 10000 images of
28x28, 10 classes), so the same amount of arithmetic.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

# OpenBLAS picks its own kernels in a benchmark run: unset its pins before NumPy loads it
# (benchmarks/blas_env.py).
try:  # asv imports every module of benchmarks/ as part of the package
    from . import blas_env
except ImportError:  # run as a script: this folder is first on sys.path
    import blas_env

_UNPINNED = blas_env.unpin()

import numpy as np  # noqa: E402

from fastbp.baseline import TwoLayerNet as BookTwoLayerNet  # noqa: E402


# --------------------------------------------------------------------------- the book's network, plain NumPy
# fastbp.baseline.TwoLayerNet: the book's ch05 TwoLayerNet, unchanged in behaviour (float64
# weights from np.random.randn, one-hot labels, Relu.backward writing into dout).


def book_train(x_train, t_train, x_test, t_test, iters_num=10000, batch_size=100, learning_rate=0.1, hidden=50):
    """The book's ch05/train_neuralnet.py loop; returns (network, train_acc_list, test_acc_list)."""
    network = BookTwoLayerNet.book_init(input_size=784, hidden_size=hidden, output_size=10)
    train_size = x_train.shape[0]
    train_loss_list, train_acc_list, test_acc_list = [], [], []
    iter_per_epoch = max(train_size / batch_size, 1)
    for i in range(iters_num):
        batch_mask = np.random.choice(train_size, batch_size)
        x_batch = x_train[batch_mask]
        t_batch = t_train[batch_mask]
        grad = network.gradient(x_batch, t_batch)
        for key in ("W1", "b1", "W2", "b2"):
            network.params[key] -= learning_rate * grad[key]
        loss = network.loss(x_batch, t_batch)
        train_loss_list.append(loss)
        if i % iter_per_epoch == 0:
            train_acc_list.append(network.accuracy(x_train, t_train))
            test_acc_list.append(network.accuracy(x_test, t_test))
    return network, train_acc_list, test_acc_list


# --------------------------------------------------------------------------- runs


def run_speed(args) -> dict:
    from fastbp.datasets import load_mnist
    from fastbp.train import train

    (x_train, t_train), (x_test, t_test) = load_mnist(dataset=args.dataset, data_dir=args.data_dir)
    one_hot = np.eye(10, dtype=np.float32)
    t_train_oh, t_test_oh = one_hot[t_train], one_hot[t_test]
    out = {"dataset": args.dataset, "iterations": args.iters, "batch_size": 100, "lr": 0.1, "hidden": 50,
           "python": platform.python_version(), "numpy": np.__version__, "cpus": os.cpu_count()}
    try:
        import threadpoolctl

        out["blas"] = [(i["internal_api"], i["num_threads"]) for i in threadpoolctl.threadpool_info()]
    except ImportError:
        pass
    if args.threads is not None:
        import fastbp

        fastbp.set_num_threads(args.threads)

    runs = {}
    for dtype in args.dtypes:
        for rep in range(args.repeat):
            t0 = time.perf_counter()
            res = train(((x_train, t_train), (x_test, t_test)), iterations=args.iters, batch_size=100, lr=0.1,
                        hidden_size=50, dtype=np.dtype(dtype).type, seed=args.seed + rep,
                        on_epoch=(lambda rec: print(f"  epoch {rec.epoch:5.2f}: {rec.seconds:.2f} s", flush=True))
                        if args.verbose else None)
            wall = time.perf_counter() - t0
            tm = res.timings
            r = runs.setdefault(f"fastbp_{dtype}", [])
            r.append({"seconds": tm["total"], "compile_seconds": tm["compile"], "call_wall_seconds": wall,
                      "gather_seconds": tm["gather"], "step_seconds": tm["step"], "eval_seconds": tm["eval"],
                      "steps_per_second": tm["steps_per_second"], "test_acc": res.history.test_acc[-1],
                      "evaluations": len(res.history.test_acc)})
            print(f"fastbp {dtype} run {rep}: {tm['total']:.2f} s (compile {tm['compile']:.2f} s excluded), "
                  f"gather {tm['gather']:.2f} s, train_step {tm['step']:.2f} s, eval {tm['eval']:.2f} s, "
                  f"test acc {res.history.test_acc[-1]:.4f}", flush=True)
    if not args.skip_numpy:
        for rep in range(args.numpy_repeat):
            np.random.seed(args.seed + rep)
            t0 = time.perf_counter()
            _, train_acc, test_acc = book_train(x_train, t_train_oh, x_test, t_test_oh, iters_num=args.iters)
            sec = time.perf_counter() - t0
            runs.setdefault("numpy_book", []).append({"seconds": sec, "test_acc": test_acc[-1],
                                                      "evaluations": len(test_acc)})
            print(f"numpy book run {rep}: {sec:.2f} s, test acc {test_acc[-1]:.4f}", flush=True)
    out["runs"] = runs
    best = {k: min(r["seconds"] for r in v) for k, v in runs.items()}
    out["best_seconds"] = best
    if "numpy_book" in best:
        out["speedup"] = {k: best["numpy_book"] / v for k, v in best.items() if k != "numpy_book"}
        for k, v in out["speedup"].items():
            print(f"speed-up {k} vs numpy book: {v:.1f}x  ({best['numpy_book']:.2f} s / {best[k]:.2f} s)")
    return out


def run_mnist_split(args) -> dict:
    """MNIST digits with only the 10k test split: train on the first 8000, test on the last 2000."""
    from fastbp.datasets import load_split
    from fastbp.train import train

    x, t = load_split("test", dataset="mnist", data_dir=args.data_dir)
    data = ((x[:8000], t[:8000]), (x[8000:], t[8000:]))
    out = {}
    for dtype in args.dtypes:
        res = train(data, iterations=args.iters, batch_size=100, lr=0.1, hidden_size=50,
                    dtype=np.dtype(dtype).type, seed=args.seed)
        h = res.history
        out[dtype] = {"test_acc": h.test_acc[-1], "train_acc": h.train_acc[-1], "seconds": res.timings["total"],
                      "compile_seconds": res.timings["compile"]}
        print(f"MNIST 8000/2000 {dtype}: train acc {h.train_acc[-1]:.4f}, test acc {h.test_acc[-1]:.4f}, "
              f"{res.timings['total']:.2f} s (+ compile {res.timings['compile']:.2f} s)")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=None, help="folder holding mnist/ and fashion-mnist/")
    p.add_argument("--dataset", default="fashion-mnist", choices=["mnist", "fashion-mnist"])
    p.add_argument("--iters", type=int, default=10000)
    p.add_argument("--dtypes", nargs="+", default=["float32", "float64"], choices=["float32", "float64"])
    p.add_argument("--repeat", type=int, default=1, help="fastbp runs per dtype (best is reported)")
    p.add_argument("--numpy-repeat", type=int, default=1)
    p.add_argument("--skip-numpy", action="store_true")
    p.add_argument("--threads", type=int, default=None, help="fastbp.set_num_threads(T) first")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mnist-split", action="store_true", help="run the MNIST 8000/2000 accuracy check instead")
    p.add_argument("--verbose", action="store_true", help="print the seconds of every fastbp epoch")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    blas_env.report(_UNPINNED)
    out = run_mnist_split(args) if args.mnist_split else run_speed(args)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
