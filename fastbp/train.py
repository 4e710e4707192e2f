"""The book's ``train_neuralnet.py`` recipe as a library call.

:func:`train` draws random mini-batches, runs one compiled
``net.train_step`` (forward, backward and SGD) per step, and measures
accuracy on the full training and test sets after every epoch::

    from fastbp.datasets import load_mnist
    from fastbp.train import train

    data = load_mnist(dataset="fashion-mnist")
    result = train(data, iterations=10000, batch_size=100, lr=0.1, hidden_size=50, seed=0)
    print(result.history.test_acc[-1])

Reproducibility: the weights depend only on ``seed`` (and the data and
settings). The network is initialised from ``seed``, and the mini-batch
indices of step ``s`` come from a generator seeded with
``(seed, s // BLOCK)``, so a run resumed from a checkpoint draws exactly the
batches the uninterrupted run would have drawn, with no generator state to
save.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from typing import Callable, NamedTuple

import numpy as np
from tqdm.auto import tqdm

from .kernels.gather import encode_pixels, gather_pixels, pixel_table
from .checkpoint import Checkpoint, History, load_checkpoint, load_params, save_checkpoint

__all__ = ["EpochRecord", "History", "TrainResult", "accuracy", "plot_history", "train"]

#: Steps whose batch indices are drawn in one call (one call per step would
#: cost more than the gather it feeds).
BLOCK = 1024
# Stream tag mixed into the batch generator's seed so that it never coincides
# with the stream the network uses for its initial weights.
_BATCH_STREAM = 0x62617463


class EpochRecord(NamedTuple):
    """One evaluation, as passed to ``on_epoch``: epoch may be fractional for the last one."""

    epoch: float
    step: int
    loss: float
    train_acc: float
    test_acc: float
    seconds: float


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes
    ----------
    net : TwoLayerNet
        The trained network.
    history : History
        Everything recorded, including steps done before a resume.
    seed : int
        The seed used (drawn at random when ``seed=None`` was passed, so that
        the run can be repeated).
    timings : dict of str to float
        Seconds of this call: ``compile`` (warm-up on a throwaway network),
        ``total`` (everything after the warm-up), ``gather`` (mini-batch
        copying), ``step`` (``train_step`` calls), ``eval`` (accuracy), plus
        ``steps`` run and ``steps_per_second`` over the training loop
        (evaluation excluded).
    """

    net: object
    history: History
    seed: int
    timings: dict = field(default_factory=dict)


def _labels(t: np.ndarray) -> np.ndarray:
    """Class labels from int labels or one-hot rows."""
    return t.argmax(axis=1) if t.ndim == 2 else t


def accuracy(net, x: np.ndarray, t: np.ndarray, *, chunk_size: int = 10000) -> float:
    """Fraction of rows of ``x`` that ``net`` classifies as ``t``.

    Evaluated in chunks of ``chunk_size`` rows so the hidden activations of a
    60 000-row set never exist all at once (the book's ``net.accuracy`` on the
    whole set allocates them, which is slow and memory-hungry).

    Parameters
    ----------
    net : TwoLayerNet
    x : numpy.ndarray, shape (N, D)
    t : numpy.ndarray, shape (N,) int labels or (N, C) one-hot
    chunk_size : int, optional

    Returns
    -------
    float
    """
    n = x.shape[0]
    if n == 0:
        return math.nan
    labels = _labels(t)
    count = _fused_count(net, x, labels, chunk_size)
    correct = 0
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        if count is not None:
            correct += count(start, stop)
        else:
            y = net.predict(x[start:stop])
            correct += int(np.count_nonzero(np.argmax(y, axis=1) == labels[start:stop]))
    return correct / n


def _fused_count(net, x, labels, chunk_size):
    """A ``count(start, stop)`` of correct rows through the compiled forward pass
    (:func:`fastbp.kernels.network.count_correct`: no per-chunk allocation, bias + argmax
    fused), or None when `net`/`x`/`labels` are not the plain case it handles; the caller
    then uses ``net.predict``, which validates everything."""
    from .kernels.network import count_correct
    from .network import TwoLayerNet

    if not isinstance(net, TwoLayerNet) or not isinstance(x, np.ndarray) or x.ndim != 2:
        return None
    try:
        W1, b1, W2, b2 = net._checked_params()
    except ValueError:
        return None
    C = W2.shape[1]
    if (x.dtype != W1.dtype or not x.flags.c_contiguous or x.shape[1] != W1.shape[0]
            or labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer)
            or labels.min() < 0 or labels.max() >= C):
        return None
    labels = np.ascontiguousarray(labels, dtype=np.int64)
    rows = min(chunk_size, x.shape[0])
    h = np.empty((rows, W1.shape[1]), W1.dtype)
    y = np.empty((rows, C), W1.dtype)
    hit = np.empty(rows, np.int64)

    def count(start, stop):
        m = stop - start
        return int(count_correct(x[start:stop], labels[start:stop], W1, b1, W2, b2,
                                 h[:m], y[:m], hit[:m]))
    return count


def _check_int(name, value, *, minimum=1):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _check_xt(name, x, t, dtype):
    if not isinstance(x, np.ndarray) or not isinstance(t, np.ndarray):
        raise TypeError(f"{name}: images and labels must be numpy arrays")
    if x.ndim != 2:
        raise ValueError(f"{name} images must have shape (N, features), got {x.shape}; load with flatten=True")
    if t.shape[:1] != x.shape[:1] or t.ndim not in (1, 2):
        raise ValueError(f"{name} labels must have shape (N,) or (N, classes) with N={x.shape[0]}, got {t.shape}")
    if t.ndim == 1 and not np.issubdtype(t.dtype, np.integer):
        raise TypeError(f"{name} labels of shape (N,) must be integers, got {t.dtype}; use .astype(np.int64)")
    # One contiguous copy in the net's dtype up front; np.take then gathers rows
    # of the right type without a conversion per step.
    x = np.ascontiguousarray(x, dtype=dtype)
    t = np.ascontiguousarray(t, dtype=np.int64 if t.ndim == 1 else dtype)
    return x, t


def _pixel_copy(x):
    """``(uint8 copy, divisor)`` when every value of `x` is an 8-bit pixel as the loader
    makes it (``k / 255`` normalized, or ``k`` raw), else ``(None, 0)``.

    The loop then gathers mini-batches from the uint8 copy (see
    :mod:`fastbp.kernels.gather`): the same values bit for bit, from a quarter of the bytes.
    """
    if x.size == 0:
        return None, 0
    u8 = np.empty(x.shape, np.uint8)
    lut = np.empty(256, x.dtype)
    for divisor in (255, 1):
        pixel_table(divisor, lut)
        if encode_pixels(x, divisor, lut, u8):
            return u8, divisor
    return None, 0


def _batch_block(seed: int, block: int, n: int, batch_size: int) -> np.ndarray:
    rng = np.random.default_rng([seed, _BATCH_STREAM, block])
    return rng.integers(0, n, size=(BLOCK, batch_size), dtype=np.int64)


def _warm_up(input_size, hidden_size, output_size, dtype, xb, tb, x_eval) -> float:
    """Compile the kernels on a throwaway network; return the seconds it took."""
    from .network import TwoLayerNet

    t0 = time.perf_counter()
    scratch = TwoLayerNet(input_size, hidden_size, output_size, dtype=dtype, seed=0)
    scratch.train_step(xb, tb, 0.1)  # lr must be > 0; the network is thrown away
    # Both paths of the fused evaluation (serial below 512 rows, parallel from there on).
    for rows in (x_eval[:1], x_eval):
        accuracy(scratch, rows, np.zeros(rows.shape[0], np.int64))
    return time.perf_counter() - t0


def train(
    data,
    *,
    iterations: int | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    hidden_size: int = 50,
    dtype=np.float32,
    seed: int | None = None,
    net=None,
    resume: str | os.PathLike | Checkpoint | None = None,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_meta: dict | None = None,
    eval_chunk: int = 10000,
    warmup: bool = True,
    progress: bool = False,
    on_epoch: Callable[[EpochRecord], None] | None = None,
) -> TrainResult:
    """Train a two-layer network with random mini-batch SGD, like the book.

    Parameters
    ----------
    data : tuple
        ``((x_train, t_train), (x_test, t_test))`` as returned by
        :func:`fastbp.datasets.load_mnist` (flattened); the test pair may be
        ``None``.
    iterations : int, optional
        Total number of steps, counting steps done before a resume. Default
        10000 (the book) unless ``epochs`` is given.
    epochs : int, optional
        Alternative to ``iterations``: ``epochs * max(N // batch_size, 1)`` steps.
    batch_size : int, optional
        Mini-batch size (default 100, or the checkpoint's with ``resume``).
        Batches are drawn with replacement, like the book's ``np.random.choice``.
    lr : float, optional
        SGD learning rate (default 0.1, or the checkpoint's with ``resume``).
    hidden_size : int, optional
        Hidden units (default 50). Ignored with ``net`` or ``resume``.
    dtype : {numpy.float32, numpy.float64}, optional
        Network and data dtype. Ignored with ``net`` or ``resume``.
    seed : int, optional
        Seeds the initial weights and the mini-batches. ``None`` draws one
        (stored in the result). With ``resume``, the checkpoint's seed is used (if it
        has one: a checkpoint saved by hand with ``save_checkpoint`` may not).
    net : TwoLayerNet, optional
        Train this network instead of a new one (its weights are updated in place).
    resume : path or Checkpoint, optional
        Continue from a checkpoint: weights, history and seed are restored and
        training runs until ``iterations`` steps in total.
    checkpoint : path, optional
        Write a checkpoint here after every evaluation, at the end, and when
        interrupted (Ctrl-C) before re-raising.
    checkpoint_meta : dict, optional
        Extra JSON-serialisable settings stored in the checkpoint (e.g. the dataset).
    eval_chunk : int, optional
        Rows per ``predict`` call when measuring accuracy.
    warmup : bool, optional
        Compile the kernels on a throwaway network first and report that time
        separately as ``timings["compile"]`` (default ``True``).
    progress : bool, optional
        Show a tqdm progress bar.
    on_epoch : callable, optional
        Called with an :class:`EpochRecord` after each evaluation.

    Returns
    -------
    TrainResult

    Raises
    ------
    TypeError, ValueError
        Bad argument types or values; the message names the argument.
    """
    try:
        (x_train, t_train), test = data
    except (TypeError, ValueError):
        raise TypeError("data must be ((x_train, t_train), (x_test, t_test)) or ((x_train, t_train), None)") from None
    ckpt = None
    if resume is not None:
        ckpt = resume if isinstance(resume, Checkpoint) else load_checkpoint(resume)
    # Unset settings continue the checkpoint's run, else the book's.
    defaults = ckpt.meta if ckpt is not None else {}
    batch_size = defaults.get("batch_size", 100) if batch_size is None else batch_size
    lr = defaults.get("lr", 0.1) if lr is None else lr
    batch_size = _check_int("batch_size", batch_size)
    eval_chunk = _check_int("eval_chunk", eval_chunk)
    if isinstance(lr, bool) or not isinstance(lr, (int, float, np.floating, np.integer)):
        raise TypeError(f"lr must be a float, got {type(lr).__name__}")
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a positive finite number, got {lr}")
    if iterations is not None and epochs is not None:
        raise ValueError("pass iterations or epochs, not both")

    if ckpt is not None:
        if net is None:
            net = ckpt.make_net()
        else:
            load_params(net, ckpt.params)
        # A checkpoint written by train() has its seed; one saved by hand may not: then
        # `seed` (or a fresh one) draws the batches from here on.
        seed = ckpt.meta.get("seed", seed)
        history = History(**{k: list(v) for k, v in vars(ckpt.history).items()})
    else:
        history = History()
    if seed is None:
        seed = int(np.random.SeedSequence().generate_state(1)[0])
    seed = _check_int("seed", seed, minimum=0)

    if net is None:
        hidden_size = _check_int("hidden_size", hidden_size)
        try:
            dtype = np.dtype(dtype)
        except TypeError:
            raise TypeError(f"dtype must be float32 or float64, got {dtype!r}") from None
        if dtype not in (np.float32, np.float64):
            raise TypeError(f"dtype must be float32 or float64, got {dtype}")
    else:
        dtype = np.dtype(net.params["W1"].dtype)

    x_train, t_train = _check_xt("x_train", x_train, t_train, dtype)
    if test is not None:
        x_test, t_test = _check_xt("x_test", test[0], test[1], dtype)
    else:
        x_test = t_test = None

    if net is None:
        from .network import TwoLayerNet

        # Labels 0..9 (or one-hot width) give the output size; at least 10 for int labels
        # so that a subset missing the top classes still builds the book's network.
        n_out = t_train.shape[1] if t_train.ndim == 2 else max(int(t_train.max(initial=0)) + 1, 10)
        net = TwoLayerNet(x_train.shape[1], hidden_size, n_out, dtype=dtype.type, seed=seed)
    input_size, hidden_size = net.params["W1"].shape
    output_size = net.params["W2"].shape[1]
    if x_train.shape[1] != input_size:
        raise ValueError(f"x_train has {x_train.shape[1]} features, the network expects {input_size}")
    if x_test is not None and x_test.shape[1] != input_size:
        raise ValueError(f"x_test has {x_test.shape[1]} features, the network expects {input_size}")
    n = x_train.shape[0]
    if n == 0:
        raise ValueError("x_train is empty")
    for name, t in (("t_train", t_train), ("t_test", t_test)):
        if t is not None and t.ndim == 1 and t.size and (t.min() < 0 or t.max() >= output_size):
            raise ValueError(f"{name} must hold labels in 0..{output_size - 1}, found {t.min()}..{t.max()}")
        if t is not None and t.ndim == 2 and t.shape[1] != output_size:
            raise ValueError(f"{name} one-hot rows have {t.shape[1]} columns, the network has {output_size} outputs")

    iter_per_epoch = max(n // batch_size, 1)
    if epochs is not None:
        iterations = _check_int("epochs", epochs) * iter_per_epoch
    elif iterations is None:
        # Resuming without a target finishes the interrupted run.
        iterations = ckpt.meta.get("iterations", 10000) if ckpt is not None else 10000
    iterations = _check_int("iterations", iterations)
    start = history.steps
    if start >= iterations:
        raise ValueError(
            f"the checkpoint already has {start} steps and iterations={iterations}; "
            "pass a larger iterations (CLI: --iters/--epochs) to train further"
        )

    # Preallocated mini-batch buffers: the gather writes into them, no allocation per step.
    xb = np.empty((batch_size, input_size), dtype=dtype)
    tb = np.empty((batch_size,) + t_train.shape[1:], dtype=t_train.dtype)
    np.take(x_train, np.arange(batch_size) % n, axis=0, out=xb)
    np.take(t_train, np.arange(batch_size) % n, axis=0, out=tb)
    pixels, divisor = _pixel_copy(x_train)
    compile_s = _warm_up(input_size, hidden_size, output_size, dtype.type, xb, tb, x_train[:eval_chunk]) if warmup else 0.0

    meta = dict(checkpoint_meta or {})
    meta.update(seed=seed, batch_size=batch_size, lr=float(lr), iterations=iterations)

    def save():
        if checkpoint is not None:
            save_checkpoint(checkpoint, net, history, **meta)

    step_loss = np.empty(iterations - start, dtype=np.float64)
    gather_s = step_s = eval_s = 0.0
    lr = float(lr)
    t_start = time.perf_counter()
    t_epoch = t_start
    flushed = start  # steps whose losses are already in history.step_loss
    block_id, block = -1, None
    bar = tqdm(total=iterations, initial=start, unit="step", disable=not progress, dynamic_ncols=True,
               mininterval=0.25)
    done = start
    try:
        for s in range(start, iterations):
            if s // BLOCK != block_id:
                block_id = s // BLOCK
                block = _batch_block(seed, block_id, n, batch_size)
            t0 = time.perf_counter()
            if pixels is not None:
                gather_pixels(pixels, block[s % BLOCK], divisor, xb)
            else:
                # mode="clip": with out= and the default mode="raise", NumPy gathers
                # into a hidden temporary and copies it (2-3x slower); the indices
                # are in range by construction, so clipping never changes them.
                np.take(x_train, block[s % BLOCK], axis=0, out=xb, mode="clip")
            np.take(t_train, block[s % BLOCK], axis=0, out=tb, mode="clip")
            t1 = time.perf_counter()
            loss = net.train_step(xb, tb, lr)
            t2 = time.perf_counter()
            step_loss[s - start] = loss
            done = s + 1
            gather_s += t1 - t0
            step_s += t2 - t1
            if done % 64 == 0:
                bar.update(done - bar.n)
            if done % iter_per_epoch == 0 or done == iterations:
                history.step_loss.extend(step_loss[flushed - start:done - start].tolist())
                flushed = done
                # The period since the previous evaluation, which may have begun
                # before a resume from a checkpoint written on Ctrl-C.
                period_first = history.epoch_step[-1] if history.epoch_step else 0
                te = time.perf_counter()
                train_acc = accuracy(net, x_train, t_train, chunk_size=eval_chunk)
                test_acc = accuracy(net, x_test, t_test, chunk_size=eval_chunk) if x_test is not None else math.nan
                now = time.perf_counter()
                eval_s += now - te
                rec = EpochRecord(
                    epoch=done / iter_per_epoch,
                    step=done,
                    loss=float(np.mean(history.step_loss[period_first:done])),
                    train_acc=train_acc,
                    test_acc=test_acc,
                    seconds=now - t_epoch,
                )
                history.epoch_step.append(rec.step)
                history.epoch_loss.append(rec.loss)
                history.train_acc.append(rec.train_acc)
                history.test_acc.append(rec.test_acc)
                history.epoch_seconds.append(rec.seconds)
                t_epoch = now
                bar.update(done - bar.n)
                bar.set_postfix(loss=f"{rec.loss:.3f}", test_acc=f"{test_acc:.4f}", refresh=False)
                save()
                if on_epoch is not None:
                    on_epoch(rec)
    except KeyboardInterrupt:
        # Keep the finished steps: losses not yet moved into the history go in
        # now, so the checkpoint's step count matches its weights.
        history.step_loss.extend(step_loss[flushed - start:done - start].tolist())
        save()
        raise
    finally:
        bar.close()
    total = time.perf_counter() - t_start
    steps = done - start
    loop = total - eval_s
    timings = dict(
        compile=compile_s, total=total, gather=gather_s, step=step_s, eval=eval_s,
        steps=steps, steps_per_second=steps / loop if loop > 0 else math.inf,
    )
    return TrainResult(net=net, history=history, seed=seed, timings=timings)


def plot_history(history: History, path: str | os.PathLike, *, title: str | None = None):
    """Save the loss and accuracy curves of ``history`` as an image (PNG by extension).

    Left: the mini-batch loss of every step and its per-epoch mean. Right:
    train and test accuracy per epoch, drawn like the book's figure (test
    dashed, y from 0 to 1). Uses Matplotlib's object API, so the caller's
    pyplot backend and state are left alone.

    Parameters
    ----------
    history : History
    path : str or os.PathLike
    title : str, optional

    Returns
    -------
    pathlib.Path
    """
    from pathlib import Path

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(10, 4), layout="constrained")
    FigureCanvasAgg(fig)
    ax_loss, ax_acc = fig.subplots(1, 2)
    steps = np.arange(1, history.steps + 1)
    ax_loss.plot(steps, history.step_loss, lw=0.5, alpha=0.5, label="mini-batch loss")
    if history.epoch_step:
        ax_loss.plot(history.epoch_step, history.epoch_loss, marker="o", ms=3, label="epoch mean")
    ax_loss.set_xlabel("iteration")
    ax_loss.set_ylabel("loss")
    ax_loss.legend()
    # Evaluations happen at whole epochs (plus the last step), so the first
    # one gives the steps per epoch; the last point may be a fraction of one.
    per_epoch = history.epoch_step[0] if len(history.epoch_step) > 1 else 1
    epochs = np.asarray(history.epoch_step, dtype=float) / per_epoch if len(history.epoch_step) > 1 else [1.0]
    ax_acc.plot(epochs, history.train_acc, marker="o", label="train acc")
    ax_acc.plot(epochs, history.test_acc, marker="s", linestyle="--", label="test acc")
    ax_acc.set_xlabel("epochs")
    ax_acc.set_ylabel("accuracy")
    ax_acc.set_ylim(0, 1.0)
    ax_acc.legend(loc="lower right")
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=100)
    return path
