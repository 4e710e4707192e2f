"""``fastbp bench``: fastbp vs plain NumPy per kernel and batch size, without asv.

Times each kernel of :mod:`fastbp.kernels` (raw ``@njit`` functions writing into
caller-given buffers, what a kernel user gets) and ``TwoLayerNet.train_step`` (784-50-10,
lr 0.1) against the plain-NumPy code of the book written reasonably (in-place ufuncs and
``np.dot`` into the same buffers; the book's layer classes for the training step). Each
figure is the minimum per-call time over `repeat` alternating samples of at least
``min_sample`` seconds; every function is called three times first, so no compilation is
timed. Inputs are seeded and MNIST-like (784 pixels in [0, 1], half of them 0; hidden
pre-activations of the book's network, about half negative).

The NumPy side is :mod:`fastbp.baseline`, the same code the asv suite in ``benchmarks/``
measures over the project's history.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence

import numpy as np
from numpy.typing import DTypeLike

from . import baseline as B
from . import kernels as K

D, H, C = 784, 50, 10
LR = 0.1
BATCH_SIZES = (1, 8, 32, 100, 256, 1024, 4096, 10000)

#: Benchmarks in table order.
NAMES = ("relu_forward", "relu_backward", "sigmoid_forward", "sigmoid_backward",
         "affine_forward", "affine_backward", "affine_backward_no_dx",
         "softmax_cross_entropy", "train_step")


# -- cases -------------------------------------------------------------------------------------

def _data(n, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, D), dtype=np.float64).astype(dtype)
    x[rng.random((n, D)) < 0.5] = 0
    t = rng.integers(0, C, n).astype(np.intp)
    W1 = (0.01 * rng.standard_normal((D, H))).astype(dtype)
    b1 = (0.01 * rng.standard_normal(H)).astype(dtype)
    W2 = (0.01 * rng.standard_normal((H, C))).astype(dtype)
    b2 = (0.01 * rng.standard_normal(C)).astype(dtype)
    return x, t, W1, b1, W2, b2


def _cases(n, dtype):
    """{name: (numpy_fn, fastbp_fn)} for batch `n`: zero-argument calls on prepared buffers."""
    from .network import TwoLayerNet

    x, t, W1, b1, W2, b2 = _data(n, dtype)
    a = x @ W1 + b1                                   # hidden pre-activations
    y = np.empty_like(a)
    B.np_sigmoid_forward(a, y)
    dout = (0.01 * np.random.default_rng(1).standard_normal((n, H))).astype(dtype)
    logits = np.maximum(a, 0) @ W2 + b2
    logits = np.ascontiguousarray(5 * (logits - logits.mean()) / (logits.std() + 1e-12),
                                  dtype=dtype)
    o1, o2 = np.empty_like(a), np.empty_like(a)
    dW1, dW2 = np.empty_like(W1), np.empty_like(W1)
    db1, db2 = np.empty_like(b1), np.empty_like(b1)
    dx1, dx2 = np.empty_like(x), np.empty_like(x)
    g1, g2 = np.empty_like(logits), np.empty_like(logits)
    npnet = B.TwoLayerNet({"W1": W1.copy(), "b1": b1.copy(), "W2": W2.copy(), "b2": b2.copy()})
    net = TwoLayerNet(D, H, C, dtype=dtype, seed=0)
    for k, v in zip(("W1", "b1", "W2", "b2"), (W1, b1, W2, b2)):
        net.params[k][...] = v
    return {
        "relu_forward": (lambda: B.np_relu_forward(a, o1), lambda: K.relu_forward(a, o2)),
        "relu_backward": (lambda: B.np_relu_backward(a, dout, o1),
                          lambda: K.relu_backward(a, dout, o2)),
        "sigmoid_forward": (lambda: B.np_sigmoid_forward(a, o1), lambda: K.sigmoid_forward(a, o2)),
        "sigmoid_backward": (lambda: B.np_sigmoid_backward(y, dout, o1),
                             lambda: K.sigmoid_backward(y, dout, o2)),
        "affine_forward": (lambda: B.np_affine_forward(x, W1, b1, o1),
                           lambda: K.affine_forward(x, W1, b1, o2)),
        "affine_backward": (lambda: B.np_affine_backward(dout, x, W1, dW1, db1, dx1),
                            lambda: K.affine_backward(dout, x, W1, dW2, db2, dx2)),
        "affine_backward_no_dx": (lambda: B.np_affine_backward(dout, x, W1, dW1, db1),
                                  lambda: K.affine_backward(dout, x, W1, dW2, db2)),
        "softmax_cross_entropy": (lambda: B.np_softmax_cross_entropy(logits, t, g1),
                                  lambda: K.softmax_cross_entropy(logits, t, g2)),
        "train_step": (lambda: npnet.train_step(x, t, LR), lambda: net.train_step(x, t, LR)),
    }


# -- timing ------------------------------------------------------------------------------------

def seconds_per_call(fn: Callable[[], object], number: int) -> float:
    """Mean seconds of `number` back-to-back calls of `fn`."""
    t0 = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - t0) / number


def calls_per_sample(fn: Callable[[], object], min_sample: float) -> int:
    """Calls of `fn` that take at least `min_sample` seconds together (doubling from 1;
    at most 2^20)."""
    number = 1
    while seconds_per_call(fn, number) * number < min_sample and number < 1 << 20:
        number *= 2
    return number


def time_pair(numpy_fn: Callable[[], object], fastbp_fn: Callable[[], object], repeat: int = 5,
              min_sample: float = 0.002) -> tuple[float, float]:
    """Minimum seconds per call of each function over `repeat` alternating samples."""
    for _ in range(3):                      # compile / load every code path first
        numpy_fn()
        fastbp_fn()
    n_np = calls_per_sample(numpy_fn, min_sample)
    n_fb = calls_per_sample(fastbp_fn, min_sample)
    best = [float("inf"), float("inf")]
    for _ in range(repeat):
        for i, (fn, number) in enumerate(((numpy_fn, n_np), (fastbp_fn, n_fb))):
            best[i] = min(best[i], seconds_per_call(fn, number))
    return best[0], best[1]


def run_bench(batch_sizes: Sequence[int] = BATCH_SIZES, dtype: DTypeLike = np.float32,
              repeat: int = 5, names: Sequence[str] = NAMES, min_sample: float = 0.002,
              progress: Callable[[str, int], None] | None = None) -> list[dict]:
    """Time every benchmark in `names` at every batch size.

    Parameters
    ----------
    batch_sizes : iterable of int
    dtype : np.float32 or np.float64
    repeat : int
        Alternating samples per side; the minimum is kept.
    names : iterable of str
        A subset of :data:`NAMES`.
    min_sample : float
        Seconds one sample lasts at least (several calls when a call is shorter).
    progress : callable, optional
        Called with ``(name, batch)`` before each measurement.

    Returns
    -------
    list of dict
        One row per (name, batch): ``name``, ``batch``, ``dtype``, ``numpy_s``,
        ``fastbp_s``, ``speedup`` (``numpy_s / fastbp_s``).
    """
    dtype = np.dtype(dtype)
    if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"dtype must be float32 or float64, got {dtype}")
    unknown = sorted(set(names) - set(NAMES))
    if unknown:
        raise ValueError(f"unknown benchmark(s) {unknown}; choose from {list(NAMES)}")
    if isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 1:
        raise ValueError(f"repeat must be a positive int, got {repeat!r}")
    rows = []
    for n in batch_sizes:
        n = int(n)
        if n < 1:
            raise ValueError(f"batch sizes must be positive, got {n}")
        cases = _cases(n, dtype.type)
        for name in NAMES:
            if name not in names:
                continue
            if progress is not None:
                progress(name, n)
            t_np, t_fb = time_pair(*cases[name], repeat=repeat, min_sample=min_sample)
            rows.append({"name": name, "batch": n, "dtype": dtype.name, "numpy_s": t_np,
                         "fastbp_s": t_fb, "speedup": t_np / t_fb})
    rows.sort(key=lambda r: (NAMES.index(r["name"]), r["batch"]))
    return rows


def _fmt_time(s):
    if s < 1e-3:
        return f"{s * 1e6:.1f} us"
    if s < 1:
        return f"{s * 1e3:.2f} ms"
    return f"{s:.2f} s"


def format_table(rows: list[dict]) -> str:
    """The rows as a plain-text table: benchmark, batch, NumPy, fastbp, speed-up."""
    head = f"{'benchmark':<22} {'batch':>6} {'numpy':>11} {'fastbp':>11} {'speedup':>8}"
    lines = [head, "-" * len(head)]
    last = None
    for r in rows:
        if last is not None and r["name"] != last:
            lines.append("")
        last = r["name"]
        lines.append(f"{r['name']:<22} {r['batch']:>6} {_fmt_time(r['numpy_s']):>11} "
                     f"{_fmt_time(r['fastbp_s']):>11} {r['speedup']:>7.2f}x")
    return "\n".join(lines)


def plot(rows: list[dict], path: str | os.PathLike, title: str | None = None) -> str | os.PathLike:
    """Write a PNG of speed-up (NumPy time / fastbp time) against batch size, one line per
    benchmark (log-log axes, a dashed line at 1x); returns `path`."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    for name in NAMES:
        pts = [(r["batch"], r["speedup"]) for r in rows if r["name"] == name]
        if pts:
            style = dict(lw=2.5, color="black") if name == "train_step" else dict(lw=1.3)
            ax.plot(*zip(*pts), marker="o", ms=4, label=name, **style)
    ax.axhline(1.0, color="grey", ls="--", lw=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    # Plain labels: batch sizes as measured, speed-ups as "2x" rather than powers of ten.
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter
    batches = sorted({r["batch"] for r in rows})
    ax.xaxis.set_major_locator(FixedLocator(batches))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.yaxis.set_major_locator(FixedLocator([0.1, 0.2, 0.5, 1, 2, 3, 5, 10, 20, 50, 100, 200]))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("batch size")
    ax.set_ylabel("speed-up over NumPy (x)")
    dtypes = sorted({r["dtype"] for r in rows})
    ax.set_title(title or f"fastbp vs plain NumPy ({', '.join(dtypes)})")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
