"""Sweep benchmarks (issue 16): the book's 100-trial random search against ``fastbp sweep``,
the scheduling overhead of ``fastbp.sweep``, and trials per minute.

    python benchmarks/sweep_overhead.py book [--repeat 1] [--trials 100]  # book's script vs fastbp sweep
    python benchmarks/sweep_overhead.py overhead               # ~2 s trials, 2 at a time
    python benchmarks/sweep_overhead.py rate                   # full Fashion-MNIST trials

``book``: the book's ``ch06/hyperparameter_optimization.py``, unchanged, run as ``python
hyperparameter_optimization.py`` from a scratch tree holding a copy of it, the book's
``common`` package and a ``dataset`` package whose ``load_mnist`` is fastbp's loader, then
``fastbp sweep`` with the same settings (100 trials, 784-100x6-10, SGD, 50 epochs of batch
100, 500 images of which 100 validate, lr and weight decay log-uniform in the book's
ranges), wall time of each whole process (Python start, data loading and, for fastbp, Ray's
start included), one right after the other, alternating over ``--repeat`` rounds. MNIST's
training images are not available offline here, so BOTH read **Fashion-MNIST** (same shapes
and dtypes as the book's loader); pass ``--dataset mnist`` where MNIST is available.

``overhead``: ``--trials`` trials of fixed settings sized to last about 2 s each, on a local
Ray with 2 CPUs; prints the wall time of the trial phase (first task submitted to last
result) against the sum of the trial times / 2 (the ideal on 2 CPUs).

``rate``: trials per minute for a full Fashion-MNIST trial (784-100x4-10, Adam lr 0.001, 5
epochs of batch 100 on 48 000 images, 12 000 validating) on a local Ray with one trial per
core.

Every process runs without ``OPENBLAS_CORETYPE``/``OPENBLAS_L2_SIZE`` (blas_env.py) and the
OpenBLAS kernel in use is printed. Run timing runs under ``flock /tmp/helpers/bench.lock``
on a shared machine; figures from a busy machine are preliminary.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

try:  # asv imports every module of benchmarks/ as part of the package
    from . import blas_env
except ImportError:  # run as a script: this folder is first on sys.path
    import blas_env

_UNPINNED = blas_env.unpin()

HERE = Path(__file__).resolve().parent
DEFAULT_BOOK = HERE.parent.parent / "shared" / "book-reference"
DEFAULT_DATA = HERE.parent.parent / "shared" / "datasets"
SCRIPT = "hyperparameter_optimization.py"

DATASET_SHIM = '''\
"""The book's ``dataset.mnist.load_mnist`` signature, served by fastbp's loader."""
import os

from fastbp.datasets import load_mnist as _load


def load_mnist(normalize=True, flatten=True, one_hot_label=False):
    return _load(normalize=normalize, flatten=flatten, one_hot_label=one_hot_label,
                 dataset=os.environ["SWEEP_BENCH_DATASET"], progress=False)
'''


def _book_tree(root: Path, book: Path, trials: int) -> Path:
    (root / "ch06").mkdir(parents=True)
    text = (book / "ch06" / SCRIPT).read_text(encoding="utf-8")
    if trials != 100:  # the one change to the script: its trial count
        assert "optimization_trial = 100\n" in text
        text = text.replace("optimization_trial = 100\n", f"optimization_trial = {trials}\n")
    (root / "ch06" / SCRIPT).write_text(text, encoding="utf-8")
    (root / "dataset").mkdir()
    (root / "dataset" / "__init__.py").write_text("")
    (root / "dataset" / "mnist.py").write_text(DATASET_SHIM)
    (root / "common").symlink_to(book / "common")
    return root / "ch06"


def _timed(cmd, cwd, env) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed:\n{done.stderr[-3000:]}")
    return seconds


def run_book(args) -> int:
    env = blas_env.unpinned_env(dict(os.environ, MPLBACKEND="Agg", SWEEP_BENCH_DATASET=args.dataset,
                                     FASTBP_DATA_DIR=str(args.data_dir)))
    fastbp = [sys.executable, "-m", "fastbp", "sweep", "--dataset", args.dataset, "--data-dir",
              str(args.data_dir), "--no-download", "--trials", str(args.trials), "--epochs", "50",
              "--train-size", "500",
              "--hidden", "100x6", "--batch-size", "100", "--optimizer", "sgd", "--lr", "loguniform:1e-6:1e-2",
              "--weight-decay", "loguniform:1e-8:1e-4", "--no-progress", "--seed", "0"]
    times = {"book": [], "fastbp sweep": []}
    with tempfile.TemporaryDirectory() as tmp:
        folder = _book_tree(Path(tmp) / "tree", args.book, args.trials)
        # fill the Numba cache and the page cache once, untimed
        _timed([*fastbp, "--trials", "2", "--epochs", "1", "--out", str(Path(tmp) / "warm")], tmp, env)
        for r in range(args.repeat):
            times["book"].append(_timed([sys.executable, SCRIPT], folder, env))
            times["fastbp sweep"].append(_timed([*fastbp, "--out", str(Path(tmp) / f"out{r}")], tmp, env))
            print(f"round {r + 1}: book {times['book'][-1]:.1f} s, fastbp sweep {times['fastbp sweep'][-1]:.1f} s",
                  flush=True)
    book, fast = (statistics.median(v) for v in times.values())
    n = args.trials
    print(f"median wall time, {args.dataset}, {n} trials: book {book:.1f} s, fastbp sweep {fast:.1f} s "
          f"(Ray start included): {book / fast:.2f}x")
    print(f"trials per minute, the book's trial: book {n / book * 60:.0f}, fastbp sweep {n / fast * 60:.0f} "
          "(whole process)")
    return 0


def _sweep_timed(space, trials, train_size, num_cpus, args):
    from fastbp.datasets import load_split
    from fastbp.sweep import sweep

    x, t = load_split("train", dataset=args.dataset, data_dir=args.data_dir, download=False)
    marks = {}
    result = sweep((x, t), space, trials=trials, seed=0, train_size=train_size, num_cpus=num_cpus,
                   progress=False, on_start=lambda info: marks.setdefault("start", time.perf_counter()))
    end = time.perf_counter()
    return result, end - marks["start"]


def run_overhead(args) -> int:
    space = {"hidden": "100x4", "optimizer": "adam", "lr": 0.001, "weight_decay": 0, "epochs": args.epochs,
             "batch_size": 100}
    result, phase = _sweep_timed(space, args.trials, args.train_size, 2, args)
    seconds = [r["seconds"] for r in result.results]
    ideal = sum(seconds) / 2
    print(f"{len(seconds)} trials, {min(seconds):.2f}-{max(seconds):.2f} s each (median "
          f"{statistics.median(seconds):.2f} s), 2 at a time")
    print(f"trial phase {phase:.2f} s wall vs sum/2 = {ideal:.2f} s: {phase / ideal - 1:+.1%} "
          f"(whole call with Ray's start {result.seconds:.2f} s)")
    return 0


def run_rate(args) -> int:
    space = {"hidden": "100x4", "optimizer": "adam", "lr": 0.001, "weight_decay": 0, "epochs": 5,
             "batch_size": 100}
    result, phase = _sweep_timed(space, args.trials, None, None, args)
    seconds = [r["seconds"] for r in result.results]
    print(f"{len(seconds)} full Fashion-MNIST trials (784-100x4-10 Adam, 5 epochs, 48000 train / 12000 "
          f"validation), median {statistics.median(seconds):.2f} s each, {os.cpu_count()} at a time")
    print(f"trials per minute: {len(seconds) / phase * 60:.1f} (trial phase {phase:.1f} s); "
          f"{len(seconds) / result.seconds * 60:.1f} with Ray's start ({result.seconds:.1f} s)")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=("book", "overhead", "rate"))
    p.add_argument("--book", type=Path, default=DEFAULT_BOOK, help="the book's code (default ../shared)")
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    p.add_argument("--dataset", default="fashion-mnist", choices=("mnist", "fashion-mnist"))
    p.add_argument("--repeat", type=int, default=1, help="book: alternating rounds (default 1)")
    p.add_argument("--trials", type=int, default=None,
                   help="book: 100 (another count edits that one line of the book's copy); overhead: 20; rate: 8")
    p.add_argument("--epochs", type=int, default=12, help="overhead: epochs per trial (default 12)")
    p.add_argument("--train-size", type=int, default=12500, help="overhead: images per trial (default 12500)")
    args = p.parse_args(argv)
    blas_env.report(_UNPINNED)
    import numpy  # noqa: F401  (loads OpenBLAS for the report)
    import scipy.linalg  # noqa: F401
    for line in blas_env.blas_lines():
        print("BLAS:", line)
    args.trials = args.trials or {"book": 100, "overhead": 20, "rate": 8}[args.what]
    if args.what == "book":
        return run_book(args)
    return run_overhead(args) if args.what == "overhead" else run_rate(args)


if __name__ == "__main__":
    sys.exit(main())
