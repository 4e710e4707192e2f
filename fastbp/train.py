"""The book's ``train_neuralnet.py`` recipe as a library call.

:func:`train` draws random mini-batches, runs one compiled ``net.train_step``
(forward, backward and the optimizer's update) per step, and measures accuracy on
the full training and test sets after every epoch::

    from fastbp.datasets import load_mnist
    from fastbp.train import train

    data = load_mnist(dataset="fashion-mnist")
    result = train(data, iterations=10000, batch_size=100, lr=0.1, hidden_size=50, seed=0)
    print(result.history.test_acc[-1])

Two networks: by default the book's chapter-5 :class:`fastbp.TwoLayerNet` with SGD
(the run above). A list of hidden sizes, or any chapter-6 setting (``activation``,
``weight_init_std``, ``optimizer``, ``optimizer_param``, ``weight_decay``, ``dropout``,
``batchnorm``), trains a :class:`fastbp.MultiLayerNet` instead
(:class:`fastbp.MultiLayerNetExtend` with Dropout or BatchNorm) with one of
:mod:`fastbp.optimizers`::

    result = train(data, iterations=5000, hidden_size=[100] * 4, optimizer="adam",
                   lr=0.001, batchnorm=True, dropout=0.2, seed=0)

Reproducibility: the weights depend only on ``seed`` (and the data and
settings). The network is initialised from ``seed`` (as is its Dropout generator),
and the mini-batch indices of step ``s`` come from a generator seeded with
``(seed, s // BLOCK)``, so a run resumed from a checkpoint draws exactly the
batches the uninterrupted run would have drawn, with no generator state to
save; the checkpoint holds the rest (weights, optimizer state, BatchNorm running
statistics, Dropout's position).
"""

from __future__ import annotations

import inspect
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Callable, NamedTuple

import numpy as np
from tqdm.auto import tqdm

from .kernels.gather import encode_pixels, gather_pixels, pixel_table
from .checkpoint import (Checkpoint, History, build_multilayer, hyperparameters, is_multilayer,
                         load_checkpoint, load_params, multilayer_config, run_settings,
                         save_checkpoint)

__all__ = ["EpochRecord", "History", "TrainResult", "accuracy", "describe", "plot_history",
           "train"]

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
    net : TwoLayerNet, MultiLayerNet or MultiLayerNetExtend
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
    optimizer : fastbp.optimizers.SGD, Momentum, Nesterov, AdaGrad, RMSprop or Adam
        The optimizer, in its state after the run (``SGD(lr)`` for a two-layer network,
        whose fused step makes that update).
    """

    net: object
    history: History
    seed: int
    timings: dict = field(default_factory=dict)
    optimizer: object = None

    @property
    def title(self) -> str:
        """The network and optimizer in one line, e.g. ``"784-100x4-10 relu, Adam
        lr=0.001"`` (see :func:`describe`)."""
        return describe(self.net, self.optimizer)


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
    net : TwoLayerNet, MultiLayerNet or any network with ``predict``
        fastbp's networks are evaluated by their compiled forward pass (BatchNorm with its
        running statistics, no Dropout); others by ``net.predict`` per chunk.
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
    fused; a multi-layer network's own compiled ``accuracy``), or None when
    `net`/`x`/`labels` are not the plain case it handles; the caller then uses
    ``net.predict``, which validates everything."""
    from .kernels.network import count_correct
    from .network import TwoLayerNet

    if is_multilayer(net):
        # net.accuracy checks its arguments and returns correct / rows: undo the division.
        return lambda start, stop: round(net.accuracy(x[start:stop], labels[start:stop])
                                         * (stop - start))
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


# --------------------------------------------------------------------------- settings

#: Defaults of the chapter-6 settings: the book's ``MultiLayerNet`` and ``Trainer``.
_CH6_DEFAULTS = dict(activation="relu", weight_init_std="he", weight_decay=0.0, dropout=0.0,
                     batchnorm=False, optimizer="SGD", optimizer_param={})
_INIT_NAMES = {"he": "he", "relu": "he", "xavier": "xavier", "sigmoid": "xavier"}


def _check_real(name, value):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    return float(value)


def _checked_options(hidden_size, activation, weight_init_std, optimizer, optimizer_param,
                     weight_decay, dropout, batchnorm):
    """``(given, listed)``: the network and optimizer settings that are not None, checked
    and normalised (hidden sizes as a list, optimizer as its class name, init as 'he',
    'xavier' or a float), and whether ``hidden_size`` was a sequence."""
    from .trainer import OPTIMIZERS

    given = {}
    listed = isinstance(hidden_size, Sequence) and not isinstance(hidden_size, str)
    if listed:
        given["hidden_size"] = [_check_int(f"hidden_size[{i}]", h) for i, h in enumerate(hidden_size)]
        if not given["hidden_size"]:
            raise ValueError("hidden_size must list at least one hidden layer, e.g. [100, 100]")
    elif hidden_size is not None:
        given["hidden_size"] = [_check_int("hidden_size", hidden_size)]
    if activation is not None:
        if activation not in ("relu", "sigmoid"):
            raise ValueError(f"activation must be 'relu' or 'sigmoid', got {activation!r}")
        given["activation"] = activation
    if weight_init_std is not None:
        if isinstance(weight_init_std, str):
            if weight_init_std.lower() not in _INIT_NAMES:
                raise ValueError(f"weight_init_std must be 'he', 'xavier' or a positive number, got "
                                 f"{weight_init_std!r}")
            given["weight_init_std"] = _INIT_NAMES[weight_init_std.lower()]
        else:
            std = _check_real("weight_init_std", weight_init_std)
            if not (math.isfinite(std) and std > 0):
                raise ValueError(f"weight_init_std must be 'he', 'xavier' or a positive number, got {std}")
            given["weight_init_std"] = std
    if optimizer is not None:
        cls = OPTIMIZERS.get(optimizer.lower()) if isinstance(optimizer, str) else None
        if cls is None:
            names = ", ".join(repr(n) for n in OPTIMIZERS)
            raise ValueError(f"optimizer must be one of {names}, got {optimizer!r}")
        given["optimizer"] = cls.__name__
    if optimizer_param is not None:
        if not isinstance(optimizer_param, Mapping):
            raise TypeError(f"optimizer_param must be a dict such as {{'momentum': 0.9}}, got "
                            f"{type(optimizer_param).__name__}")
        if "lr" in optimizer_param:
            raise ValueError("optimizer_param must not hold 'lr': pass lr=... instead")
        given["optimizer_param"] = {str(k): _check_real(f"optimizer_param[{k!r}]", v)
                                    for k, v in optimizer_param.items()}
    if weight_decay is not None:
        decay = _check_real("weight_decay", weight_decay)
        if not (math.isfinite(decay) and decay >= 0):
            raise ValueError(f"weight_decay must be >= 0 and finite, got {decay}")
        given["weight_decay"] = decay
    if dropout is not None:
        ratio = _check_real("dropout", dropout)
        if not 0 <= ratio < 1:
            raise ValueError(f"dropout must be in [0, 1), got {ratio}")
        given["dropout"] = ratio
    if batchnorm is not None:
        if not isinstance(batchnorm, (bool, np.bool_)):
            raise TypeError(f"batchnorm must be True or False, got {type(batchnorm).__name__}")
        given["batchnorm"] = bool(batchnorm)
    return given, listed


def _settings_of(net) -> dict:
    """``net``'s network settings in the form of :func:`fastbp.checkpoint.run_settings`
    (optimizer None for a multi-layer network: it carries none)."""
    if is_multilayer(net):
        return run_settings({**multilayer_config(net), "optimizer": None})
    return run_settings({"hidden_size": int(net.params["W1"].shape[1])})


def _same(key, a, b) -> bool:
    if key == "weight_init_std" and isinstance(a, str) and isinstance(b, str):
        return _INIT_NAMES.get(a.lower()) == _INIT_NAMES.get(b.lower())
    return a == b


def _default_param(optimizer, name):
    from .trainer import OPTIMIZERS

    param = inspect.signature(OPTIMIZERS[optimizer.lower()]).parameters.get(name)
    return None if param is None else param.default


def _network_spec(ckpt, net, given, listed) -> dict:
    """What to train: the settings `given` (see :func:`_checked_options`) merged with the
    ones the checkpoint or `net` fixes, as :func:`fastbp.checkpoint.run_settings` plus
    ``multilayer`` (bool).

    Without either, the book's chapter-5 TwoLayerNet (hidden 50, SGD) unless hidden sizes
    were listed or a chapter-6 setting was given. A given setting that differs from the
    checkpoint's (or net's) is a ValueError naming both.
    """
    if ckpt is not None and net is not None:
        own, stored = _settings_of(net), ckpt.settings
        for key in ("network", "hidden_size", "activation", "weight_decay", "dropout", "batchnorm"):
            if own[key] != stored[key]:
                raise ValueError(f"net is not the checkpoint's network: its {key} is {own[key]!r}, the "
                                 f"checkpoint's {stored[key]!r}; pass a matching net or none")
    if ckpt is not None:
        fixed, source = ckpt.settings, "the checkpoint's"
    elif net is not None:
        fixed, source = _settings_of(net), "net's"
    else:
        multilayer = listed or any(key != "hidden_size" for key in given)
        spec = {"hidden_size": [50], **_CH6_DEFAULTS, **given, "multilayer": multilayer}
        if not multilayer:
            spec["weight_init_std"] = None  # TwoLayerNet's own (the book's 0.01)
        spec["network"] = ("TwoLayerNet" if not multilayer else "MultiLayerNetExtend"
                           if spec["dropout"] or spec["batchnorm"] else "MultiLayerNet")
        return spec
    # A multi-layer net, or a checkpoint saved without an optimizer, leaves it to `given`.
    free = fixed["optimizer"] is None
    for key, value in given.items():
        if free and key in ("optimizer", "optimizer_param"):
            continue
        if key == "optimizer_param":
            for name, v in value.items():
                have = fixed["optimizer_param"].get(name, _default_param(fixed["optimizer"], name))
                if have != v:
                    raise ValueError(f"optimizer_param[{name!r}]={v!r} conflicts with {source} {have!r}; "
                                     f"leave it unset to continue with {source} settings")
        elif not _same(key, value, fixed[key]):
            raise ValueError(f"{key}={value!r} conflicts with {source} {fixed[key]!r} (a {fixed['network']}"
                             f"{' with ' + fixed['optimizer'] if fixed['optimizer'] else ''}); leave "
                             f"{key} unset to continue with {source} settings")
    spec = dict(fixed, multilayer=fixed["network"] != "TwoLayerNet")
    if free:
        spec["optimizer"] = given.get("optimizer", "SGD")
        spec["optimizer_param"] = given.get("optimizer_param", {})
    return spec


def _default_lr(lr, ckpt, spec):
    """``lr``, else the checkpoint's, else the book's: 0.1 for the two-layer network (ch. 5),
    the optimizer's own default for a multi-layer one (SGD 0.01, Adam 0.001 ...)."""
    if lr is not None:
        return lr
    if ckpt is not None:
        saved = ckpt.meta.get("lr", (ckpt.meta.get("optimizer_param") or {}).get("lr"))
        if saved is not None:
            return saved
    return _default_param(spec["optimizer"], "lr") if spec["multilayer"] else 0.1


def _check_lr(lr) -> float:
    if isinstance(lr, bool) or not isinstance(lr, (int, float, np.floating, np.integer)):
        raise TypeError(f"lr must be a float, got {type(lr).__name__}")
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a positive finite number, got {lr}")
    return float(lr)


def _check_dtype(dtype) -> np.dtype:
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype must be float32 or float64, got {dtype!r}") from None
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"dtype must be float32 or float64, got {dtype}")
    return dtype


def _new_network(spec, input_size, output_size, dtype, seed):
    if not spec["multilayer"]:
        from .network import TwoLayerNet

        return TwoLayerNet(input_size, spec["hidden_size"][0], output_size, dtype=dtype.type, seed=seed)
    return build_multilayer({
        "network": spec["network"], "input_size": input_size, "hidden_size": spec["hidden_size"],
        "output_size": output_size, "dtype": dtype.name, "activation": spec["activation"],
        "weight_init_std": spec["weight_init_std"], "weight_decay_lambda": spec["weight_decay"],
        "use_dropout": spec["dropout"] > 0, "dropout_ratio": spec["dropout"] or 0.5,
        "use_batchnorm": spec["batchnorm"], "net_seed": seed})


def _new_optimizer(spec, lr, ckpt):
    """The checkpoint's optimizer in its saved state, else a new one from `spec`."""
    from .trainer import make_optimizer

    if ckpt is not None and ckpt.optimizer_state is not None:
        return ckpt.make_optimizer(lr)
    return make_optimizer(spec["optimizer"], {**spec["optimizer_param"], "lr": lr})


def _check_fit(net, x_train, t_train, x_test, t_test) -> None:
    """Check that the data fit `net` (features, label range or one-hot width)."""
    if is_multilayer(net):
        input_size, output_size = net.input_size, net.output_size
    else:
        input_size = net.params["W1"].shape[0]
        output_size = net.params["W2"].shape[1]
    if x_train.shape[1] != input_size:
        raise ValueError(f"x_train has {x_train.shape[1]} features, the network expects {input_size}")
    if x_test is not None and x_test.shape[1] != input_size:
        raise ValueError(f"x_test has {x_test.shape[1]} features, the network expects {input_size}")
    if x_train.shape[0] == 0:
        raise ValueError("x_train is empty")
    for name, t in (("t_train", t_train), ("t_test", t_test)):
        if t is not None and t.ndim == 1 and t.size and (t.min() < 0 or t.max() >= output_size):
            raise ValueError(f"{name} must hold labels in 0..{output_size - 1}, found {t.min()}..{t.max()}")
        if t is not None and t.ndim == 2 and t.shape[1] != output_size:
            raise ValueError(f"{name} one-hot rows have {t.shape[1]} columns, the network has {output_size} outputs")


def _check_meta(checkpoint_meta) -> dict:
    from .checkpoint import RESERVED

    meta = dict(checkpoint_meta or {})
    clash = sorted(set(meta) & set(RESERVED) | set(meta) & {"seed", "batch_size", "lr", "iterations"})
    if clash:
        raise ValueError(f"checkpoint_meta may not set {', '.join(clash)}: train() records them itself")
    return meta


# --------------------------------------------------------------------------- the loop's parts


class _Batches:
    """The mini-batch of step ``s``: indices from the generator of block ``s // BLOCK``
    (:func:`_batch_block`), rows gathered into two buffers reused every step (from a uint8
    copy of the images when they are 8-bit pixels, see :func:`_pixel_copy`)."""

    def __init__(self, x, t, seed, batch_size):
        n = x.shape[0]
        self._source, self._labels, self._seed, self._n = x, t, seed, n
        self.x = np.empty((batch_size, x.shape[1]), dtype=x.dtype)
        self.t = np.empty((batch_size,) + t.shape[1:], dtype=t.dtype)
        # A valid batch before the first fill, for the warm-up.
        np.take(x, np.arange(batch_size) % n, axis=0, out=self.x)
        np.take(t, np.arange(batch_size) % n, axis=0, out=self.t)
        self._pixels, self._divisor = _pixel_copy(x)
        self._block_id, self._block = -1, None

    def fill(self, s):
        """Gather step `s`'s rows into :attr:`x` and :attr:`t`; return them."""
        if s // BLOCK != self._block_id:
            self._block_id = s // BLOCK
            self._block = _batch_block(self._seed, self._block_id, self._n, self.x.shape[0])
        rows = self._block[s % BLOCK]
        if self._pixels is not None:
            gather_pixels(self._pixels, rows, self._divisor, self.x)
        else:
            # mode="clip": with out= and the default mode="raise", NumPy gathers into a
            # hidden temporary and copies it (2-3x slower); the indices are in range by
            # construction, so clipping never changes them.
            np.take(self._source, rows, axis=0, out=self.x, mode="clip")
        np.take(self._labels, rows, axis=0, out=self.t, mode="clip")
        return self.x, self.t


class _Recorder:
    """The losses of this call's steps, in a preallocated array moved into ``history`` at
    each evaluation (and on Ctrl-C), and one :class:`EpochRecord` per evaluation."""

    def __init__(self, history, start, iterations):
        self.history, self.start = history, start
        self.losses = np.empty(iterations - start, dtype=np.float64)
        self.flushed = self.done = start

    def add(self, s, loss):
        self.losses[s - self.start] = loss
        self.done = s + 1

    def flush(self):
        """Move the recorded losses into ``history.step_loss``, so that its step count
        matches the network's."""
        self.history.step_loss.extend(self.losses[self.flushed - self.start:self.done - self.start].tolist())
        self.flushed = self.done

    def evaluation(self, iter_per_epoch, train_acc, test_acc, seconds) -> EpochRecord:
        self.flush()
        h, done = self.history, self.done
        # The period since the previous evaluation, which may have begun before a resume
        # from a checkpoint written on Ctrl-C.
        first = h.epoch_step[-1] if h.epoch_step else 0
        rec = EpochRecord(epoch=done / iter_per_epoch, step=done, loss=float(np.mean(h.step_loss[first:done])),
                          train_acc=train_acc, test_acc=test_acc, seconds=seconds)
        h.epoch_step.append(rec.step)
        h.epoch_loss.append(rec.loss)
        h.train_acc.append(rec.train_acc)
        h.test_acc.append(rec.test_acc)
        h.epoch_seconds.append(rec.seconds)
        return rec


def _evaluator(x_train, t_train, x_test, t_test, chunk):
    """``evaluate(net) -> (train_acc, test_acc)`` on the full sets (test NaN without one)."""
    def evaluate(net):
        train_acc = accuracy(net, x_train, t_train, chunk_size=chunk)
        test_acc = accuracy(net, x_test, t_test, chunk_size=chunk) if x_test is not None else math.nan
        return train_acc, test_acc
    return evaluate


def _step_function(net, optimizer, lr):
    """``step(x, t) -> loss``: the network's fused step with `optimizer` (multi-layer) or
    with SGD at `lr` (two-layer)."""
    if is_multilayer(net):
        return lambda x, t: net.train_step(x, t, optimizer)
    return lambda x, t: net.train_step(x, t, lr)


def _warm_up(net, optimizer, xb, tb, x_eval) -> float:
    """Compile the kernels on a throwaway copy of `net`'s configuration (and a fresh
    optimizer of `optimizer`'s class); return the seconds it took."""
    t0 = time.perf_counter()
    if is_multilayer(net):
        scratch = build_multilayer({**multilayer_config(net), "net_seed": 0})
        scratch.train_step(xb, tb, type(optimizer)(**hyperparameters(optimizer)))
    else:
        from .network import TwoLayerNet

        (input_size, hidden_size), output_size = net.params["W1"].shape, net.params["W2"].shape[1]
        scratch = TwoLayerNet(input_size, hidden_size, output_size, dtype=net.params["W1"].dtype.type, seed=0)
        scratch.train_step(xb, tb, 0.1)  # lr must be > 0; the network is thrown away
    # Both paths of the fused evaluation (serial below 512 rows, parallel from there on).
    for rows in (x_eval[:1], x_eval):
        accuracy(scratch, rows, np.zeros(rows.shape[0], np.int64))
    return time.perf_counter() - t0


def _diverged(step, loss, saved_at) -> FloatingPointError:
    kept = f"; the checkpoint of step {saved_at} is kept" if saved_at is not None else ""
    return FloatingPointError(f"training diverged at step {step}: the mini-batch loss is {loss}{kept}; "
                              "lower the learning rate, or check the data for NaN/inf")


# --------------------------------------------------------------------------- train


def train(
    data,
    *,
    iterations: int | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    hidden_size: int | Sequence[int] | None = None,
    activation: str | None = None,
    weight_init_std: str | float | None = None,
    optimizer: str | None = None,
    optimizer_param: dict | None = None,
    weight_decay: float | None = None,
    dropout: float | None = None,
    batchnorm: bool | None = None,
    dtype=np.float32,
    seed: int | None = None,
    net=None,
    resume: str | os.PathLike | Checkpoint | None = None,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_meta: dict | None = None,
    eval_chunk: int = 10000,
    warmup: bool = True,
    progress: bool = False,
    on_start: Callable[[object, object], None] | None = None,
    on_epoch: Callable[[EpochRecord], None] | None = None,
) -> TrainResult:
    """Train a network with random mini-batches, like the book.

    By default the book's chapter-5 run: a :class:`fastbp.TwoLayerNet` with SGD. Listing
    hidden sizes, or giving any of ``activation``, ``weight_init_std``, ``optimizer``,
    ``optimizer_param``, ``weight_decay``, ``dropout``, ``batchnorm``, trains a
    :class:`fastbp.MultiLayerNet` (:class:`fastbp.MultiLayerNetExtend` with Dropout or
    BatchNorm) with one of :mod:`fastbp.optimizers`, the book's chapter-6 defaults for the
    settings left out.

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
        Learning rate. Default: the checkpoint's with ``resume``, else 0.1 for the
        two-layer network (the book's ch. 5) and the optimizer's own default for a
        multi-layer one (SGD, Momentum, Nesterov, AdaGrad, RMSprop 0.01; Adam 0.001).
    hidden_size : int or sequence of int, optional
        Hidden units: an int for the two-layer network (default 50), a list for a
        multi-layer one (e.g. ``[100] * 4``).
    activation : {'relu', 'sigmoid'}, optional
        Hidden activation of a multi-layer network (default 'relu').
    weight_init_std : {'he', 'xavier'} or float, optional
        Initial weights of a multi-layer network: He's ``sqrt(2 / fan_in)`` (default),
        Xavier's ``sqrt(1 / fan_in)`` or this standard deviation ('relu' and 'sigmoid'
        are accepted for 'he' and 'xavier', as in the book).
    optimizer : str, optional
        ``'sgd'`` (default), ``'momentum'``, ``'nesterov'``, ``'adagrad'``, ``'rmsprop'`` or
        ``'adam'``, any case.
    optimizer_param : dict, optional
        The optimizer's other hyperparameters (``momentum``, ``decay_rate``, ``beta1``,
        ``beta2``); not ``lr``.
    weight_decay : float, optional
        L2 weight decay (the book's ``weight_decay_lambda``, default 0).
    dropout : float in [0, 1), optional
        Dropout ratio after every hidden activation (``MultiLayerNetExtend``); 0 (default):
        no Dropout.
    batchnorm : bool, optional
        BatchNorm before every hidden activation (``MultiLayerNetExtend``).
    dtype : {numpy.float32, numpy.float64}, optional
        Network and data dtype. Ignored with ``net`` or ``resume``.
    seed : int, optional
        Seeds the initial weights, Dropout's generator and the mini-batches. ``None`` draws
        one (stored in the result). With ``resume``, the checkpoint's seed is used (if it
        has one: a checkpoint saved by hand with ``save_checkpoint`` may not).
    net : TwoLayerNet, MultiLayerNet or MultiLayerNetExtend, optional
        Train this network instead of a new one (its weights are updated in place).
    resume : path or Checkpoint, optional
        Continue from a checkpoint: network (weights and state), optimizer state, history
        and seed are restored and training runs until ``iterations`` steps in total.
    checkpoint : path, optional
        Write a checkpoint here after every evaluation, at the end, and when
        interrupted (Ctrl-C) before re-raising; not when training diverges.
    checkpoint_meta : dict, optional
        Extra JSON-serialisable settings stored in the checkpoint (e.g. the dataset).
    eval_chunk : int, optional
        Rows per ``predict`` call when measuring accuracy.
    warmup : bool, optional
        Compile the kernels on a throwaway network first and report that time
        separately as ``timings["compile"]`` (default ``True``).
    progress : bool, optional
        Show a tqdm progress bar.
    on_start : callable, optional
        Called as ``on_start(net, optimizer)`` once both are ready, before the warm-up.
    on_epoch : callable, optional
        Called with an :class:`EpochRecord` after each evaluation.

    Returns
    -------
    TrainResult

    Raises
    ------
    TypeError, ValueError
        Bad argument types or values; the message names the argument. With ``resume``
        (or ``net``), a network or optimizer setting that differs from the checkpoint's
        (or the network's) is a ValueError.
    FloatingPointError
        A step's loss was NaN or infinite: training stops there (naming the step), and
        the checkpoint file keeps the last evaluation's state.
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
    batch_size = _check_int("batch_size", defaults.get("batch_size", 100) if batch_size is None else batch_size)
    eval_chunk = _check_int("eval_chunk", eval_chunk)
    given, listed = _checked_options(hidden_size, activation, weight_init_std, optimizer, optimizer_param,
                                     weight_decay, dropout, batchnorm)
    spec = _network_spec(ckpt, net, given, listed)
    lr = _check_lr(_default_lr(lr, ckpt, spec))
    if iterations is not None and epochs is not None:
        raise ValueError("pass iterations or epochs, not both")
    meta = _check_meta(checkpoint_meta)

    history = History()
    if ckpt is not None:
        if net is None:
            net = ckpt.make_net()
        elif is_multilayer(net):
            net.set_state(ckpt.net_state)
        else:
            load_params(net, ckpt.params)
        # A checkpoint written by train() has its seed; one saved by hand may not: then
        # `seed` (or a fresh one) draws the batches from here on.
        seed = ckpt.meta.get("seed", seed)
        history = History(**{k: list(v) for k, v in vars(ckpt.history).items()})
    if seed is None:
        seed = int(np.random.SeedSequence().generate_state(1)[0])
    seed = _check_int("seed", seed, minimum=0)
    dtype = _check_dtype(dtype) if net is None else np.dtype(net.params["W1"].dtype)

    x_train, t_train = _check_xt("x_train", x_train, t_train, dtype)
    x_test, t_test = _check_xt("x_test", test[0], test[1], dtype) if test is not None else (None, None)
    if net is None:
        # Labels 0..9 (or one-hot width) give the output size; at least 10 for int labels
        # so that a subset missing the top classes still builds the book's network.
        n_out = t_train.shape[1] if t_train.ndim == 2 else max(int(t_train.max(initial=0)) + 1, 10)
        net = _new_network(spec, x_train.shape[1], n_out, dtype, seed)
    _check_fit(net, x_train, t_train, x_test, t_test)
    optimizer = _new_optimizer(spec, lr, ckpt)

    iter_per_epoch = max(x_train.shape[0] // batch_size, 1)
    if epochs is not None:
        iterations = _check_int("epochs", epochs) * iter_per_epoch
    elif iterations is None:
        # Resuming without a target finishes the interrupted run.
        iterations = defaults.get("iterations", 10000)
    iterations = _check_int("iterations", iterations)
    start = history.steps
    if start >= iterations:
        raise ValueError(
            f"the checkpoint already has {start} steps and iterations={iterations}; "
            "pass a larger iterations (CLI: --iters/--epochs) to train further"
        )
    meta.update(seed=seed, batch_size=batch_size, lr=lr, iterations=iterations)
    saved_at = None

    def save():
        nonlocal saved_at
        if checkpoint is not None:
            save_checkpoint(checkpoint, net, history, optimizer=optimizer if is_multilayer(net) else None, **meta)
            saved_at = history.steps

    if on_start is not None:
        on_start(net, optimizer)
    batches = _Batches(x_train, t_train, seed, batch_size)
    compile_s = _warm_up(net, optimizer, batches.x, batches.t, x_train[:eval_chunk]) if warmup else 0.0
    step = _step_function(net, optimizer, lr)
    evaluate = _evaluator(x_train, t_train, x_test, t_test, eval_chunk)
    record = _Recorder(history, start, iterations)

    gather_s = step_s = eval_s = 0.0
    t_start = t_epoch = time.perf_counter()
    bar = tqdm(total=iterations, initial=start, unit="step", disable=not progress, dynamic_ncols=True,
               mininterval=0.25)
    try:
        for s in range(start, iterations):
            t0 = time.perf_counter()
            xb, tb = batches.fill(s)
            t1 = time.perf_counter()
            loss = step(xb, tb)
            t2 = time.perf_counter()
            if not math.isfinite(loss):
                raise _diverged(s + 1, loss, saved_at)
            record.add(s, loss)
            gather_s += t1 - t0
            step_s += t2 - t1
            done = s + 1
            if done % 64 == 0:
                bar.update(done - bar.n)
            if done % iter_per_epoch == 0 or done == iterations:
                te = time.perf_counter()
                train_acc, test_acc = evaluate(net)
                now = time.perf_counter()
                eval_s += now - te
                rec = record.evaluation(iter_per_epoch, train_acc, test_acc, now - t_epoch)
                t_epoch = now
                bar.update(done - bar.n)
                bar.set_postfix(loss=f"{rec.loss:.3f}", test_acc=f"{test_acc:.4f}", refresh=False)
                save()
                if on_epoch is not None:
                    on_epoch(rec)
    except KeyboardInterrupt:
        # Keep the finished steps: losses not yet moved into the history go in now, so
        # the checkpoint's step count matches its weights.
        record.flush()
        save()
        raise
    finally:
        bar.close()
    total = time.perf_counter() - t_start
    steps = record.done - start
    loop = total - eval_s
    timings = dict(
        compile=compile_s, total=total, gather=gather_s, step=step_s, eval=eval_s,
        steps=steps, steps_per_second=steps / loop if loop > 0 else math.inf,
    )
    return TrainResult(net=net, history=history, seed=seed, timings=timings, optimizer=optimizer)


def _hidden_text(sizes) -> str:
    """``[100, 100, 100, 50]`` -> ``"100x3-50"``."""
    parts, i = [], 0
    while i < len(sizes):
        j = i
        while j < len(sizes) and sizes[j] == sizes[i]:
            j += 1
        parts.append(f"{sizes[i]}x{j - i}" if j - i > 1 else f"{sizes[i]}")
        i = j
    return "-".join(parts)


def describe(net, optimizer=None) -> str:
    """One line naming a network and its optimizer, e.g. ``"784-100x4-10 relu, Adam
    lr=0.001"`` (plot titles, the CLI).

    Parameters
    ----------
    net : TwoLayerNet, MultiLayerNet or MultiLayerNetExtend
        Sizes input-hidden-output (repeated hidden widths as ``100x4``) and activation;
        then ``+ BatchNorm``, ``+ dropout R``, ``+ weight decay L`` when used.
    optimizer : fastbp.optimizers optimizer, optional
        Its class name and ``lr``, and any other hyperparameter that is not the class's
        default (``Momentum lr=0.01 momentum=0.5``).

    Returns
    -------
    str
    """
    if is_multilayer(net):
        text = f"{net.input_size}-{_hidden_text(net.hidden_size_list)}-{net.output_size} {net.activation}"
        if net.use_batchnorm:
            text += " + BatchNorm"
        if net.use_dropout:
            text += f" + dropout {net.dropout_ratio:g}"
        if net.weight_decay_lambda:
            text += f" + weight decay {net.weight_decay_lambda:g}"
    else:
        (d, h), c = net.params["W1"].shape, net.params["W2"].shape[1]
        text = f"{d}-{h}-{c} relu"
    if optimizer is None:
        return text
    hyper = hyperparameters(optimizer)
    defaults = inspect.signature(type(optimizer)).parameters
    extra = "".join(f" {k}={v:g}" for k, v in hyper.items() if k != "lr" and v != defaults[k].default)
    return f"{text}, {type(optimizer).__name__} lr={hyper['lr']:g}{extra}"


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
