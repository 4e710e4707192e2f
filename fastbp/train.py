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

The parts of a run, each its own piece: :class:`Settings` (every argument checked, the
checkpoint's settings merged in, one object), :class:`BatchSource` (the mini-batch of step
``s``, a function of the seed and ``s`` alone), :class:`Evaluator` (accuracy on the full
sets), the history (:class:`fastbp.checkpoint.History`, filled by the loop), and the loop
itself. The loop treats every network alike: ``train_step(x, t, optimizer)``, ``accuracy``
and ``get_state``/``set_state`` (:class:`fastbp.TwoLayerNet`'s SGD step and four
parameters are the one special case); a new network class needs a constructor entry in
:data:`NETWORKS` and a :class:`fastbp.checkpoint.ModelKind`.

Exact resume: the weights depend only on ``seed`` (and the data and settings). The network
is initialised from ``seed`` (as is its Dropout generator), and the mini-batch indices of
step ``s`` come from a generator seeded with ``(seed, s // BLOCK)``, so a run resumed from a
checkpoint draws exactly the batches the uninterrupted run would have drawn, with no
generator state to save; the checkpoint holds the rest (weights, optimizer state,
BatchNorm running statistics, Dropout's position, the history). A run that stopped off the
evaluation period (its last evaluation is its own, not the longer run's) or was stopped
during an evaluation continues as the uninterrupted run: the resumed call drops that extra
row, or makes the missing evaluation first. Ctrl-C (SIGINT) is held back while a step's
update and its record are half done and delivered right after, so a checkpoint written on
Ctrl-C always holds ``s`` steps with the weights of ``s`` steps.
"""

from __future__ import annotations

import inspect
import math
import os
import signal
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
from numpy.typing import DTypeLike
from tqdm.auto import tqdm

from .checkpoint import (Checkpoint, History, build_multilayer, hyperparameters, is_multilayer,
                         load_checkpoint, load_params, model_kind, run_settings, save_checkpoint)
from . import validation as check
from .kernels.gather import encode_pixels, gather_pixels, pixel_table
from .optimizers import AnyOptimizer
from .plotting import plot_history
from .trainer import AnyNetwork

__all__ = ["BatchSource", "EpochRecord", "Evaluator", "History", "MODEL_CHOICES", "NETWORKS", "Settings",
           "TrainResult", "accuracy", "describe", "plot_history", "train"]

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
    settings : Settings
        The run's settings, defaults and the checkpoint's included.
    """

    net: object
    history: History
    seed: int
    timings: dict = field(default_factory=dict)
    optimizer: object = None
    settings: "Settings | None" = None

    @property
    def title(self) -> str:
        """The network and optimizer in one line, e.g. ``"784-100x4-10 relu, Adam
        lr=0.001"`` (see :func:`describe`)."""
        return describe(self.net, self.optimizer)


def _labels(t: np.ndarray) -> np.ndarray:
    """Class labels from int labels or one-hot rows."""
    return t.argmax(axis=1) if t.ndim == 2 else t


def accuracy(net: AnyNetwork, x: np.ndarray, t: np.ndarray, *, chunk_size: int = 10000) -> float:
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
    fused; the own compiled ``accuracy`` of a network with state: a multi-layer one ...),
    or None when `net`/`x`/`labels` are not the plain case it handles; the caller then uses
    ``net.predict``, which validates everything."""
    from .kernels.network import count_correct
    from .network import TwoLayerNet

    if model_kind(net) is not None:
        # net.accuracy checks its arguments and returns correct / rows: undo the division.
        return lambda start, stop: round(net.accuracy(x[start:stop], labels[start:stop])
                                         * (stop - start))
    if not isinstance(net, TwoLayerNet) or not isinstance(x, np.ndarray) or x.ndim != 2:
        return None
    try:
        W1, b1, W2, b2 = net.checked_params()
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

#: The values of :func:`train`'s ``model``: ``'mlp'`` (chapters 5 and 6, the default: the
#: network follows from the other settings) and ``'convnet'`` (chapter 7's SimpleConvNet).
MODEL_CHOICES = ("mlp", "convnet")
#: Settings of the chapter-7 network, the book's ``ch07/train_convnet.py``.
_CONVNET_DEFAULTS = dict(network="SimpleConvNet", hidden_size=[100], activation="relu", weight_init_std=0.01,
                         weight_decay=0.0, dropout=0.0, batchnorm=False, optimizer="Adam", optimizer_param={})


def _check_real(name, value):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    return float(value)


def _checked_options(hidden_size, activation, weight_init_std, optimizer, optimizer_param,
                     weight_decay, dropout, batchnorm, model=None):
    """``(given, listed)``: the network and optimizer settings that are not None, checked
    and normalised (hidden sizes as a list, optimizer as its class name, init as 'he',
    'xavier' or a float, model as a class name), and whether ``hidden_size`` was a sequence."""
    from .trainer import OPTIMIZERS

    given = {}
    if model is not None:
        if model not in MODEL_CHOICES:
            raise ValueError(f"model must be one of {', '.join(map(repr, MODEL_CHOICES))}, got {model!r}")
        given["model"] = model
    listed = isinstance(hidden_size, Sequence) and not isinstance(hidden_size, str)
    if listed:
        given["hidden_size"] = [check.integer(f"hidden_size[{i}]", h, 1) for i, h in enumerate(hidden_size)]
        if not given["hidden_size"]:
            raise ValueError("hidden_size must list at least one hidden layer, e.g. [100, 100]")
    elif hidden_size is not None:
        given["hidden_size"] = [check.integer("hidden_size", hidden_size, 1)]
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
    (optimizer None for a network with state: it carries none)."""
    kind = model_kind(net)
    if kind is not None:
        return run_settings({**kind.config(net), "network": kind.name, "optimizer": None})
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
    ones the checkpoint or `net` fixes, as :func:`fastbp.checkpoint.run_settings`.

    Without either, the book's chapter-5 TwoLayerNet (hidden 50, SGD) unless hidden sizes
    were listed or a chapter-6 setting was given. A given setting that differs from the
    checkpoint's (or net's) is a ValueError naming both.
    """
    if ckpt is not None and net is not None:
        own, stored = _settings_of(net), ckpt.settings
        for key in [k for k in own if k not in ("weight_init_std", "optimizer", "optimizer_param")]:
            if own[key] != stored.get(key):
                raise ValueError(f"net is not the checkpoint's network: its {key} is {own[key]!r}, the "
                                 f"checkpoint's {stored.get(key)!r}; pass a matching net or none")
    if ckpt is not None:
        fixed, source = ckpt.settings, "the checkpoint's"
    elif net is not None:
        fixed, source = _settings_of(net), "net's"
    elif given.get("model") == "convnet":
        return _convnet_spec(given)
    else:
        given.pop("model", None)
        multilayer = listed or any(key != "hidden_size" for key in given)
        spec = {"hidden_size": [50], **_CH6_DEFAULTS, **given}
        if not multilayer:
            spec["weight_init_std"] = None  # TwoLayerNet's own (the book's 0.01)
        spec["network"] = ("TwoLayerNet" if not multilayer else "MultiLayerNetExtend"
                           if spec["dropout"] or spec["batchnorm"] else "MultiLayerNet")
        return spec
    model = given.pop("model", None)
    if model is not None and (model == "convnet") != (fixed["network"] == "SimpleConvNet"):
        raise ValueError(f"model={model!r} conflicts with {source} {fixed['network']}; leave model "
                         f"unset to continue with {source} network")
    # A net with state, or a checkpoint saved without an optimizer, leaves it to `given`.
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
        elif not _same(key, value, fixed.get(key)):
            raise ValueError(f"{key}={value!r} conflicts with {source} {fixed.get(key)!r} (a {fixed['network']}"
                             f"{' with ' + fixed['optimizer'] if fixed['optimizer'] else ''}); leave "
                             f"{key} unset to continue with {source} settings")
    spec = dict(fixed)
    if free:
        spec["optimizer"] = given.get("optimizer", "Adam" if fixed["network"] == "SimpleConvNet" else "SGD")
        spec["optimizer_param"] = given.get("optimizer_param", {})
    return spec


def _convnet_spec(given):
    """The settings of a new :class:`fastbp.convnet.SimpleConvNet`: the book's (filters
    30 x 5x5, hidden 100, init 0.01, Adam) with `given`'s hidden size, init and optimizer."""
    for key in ("activation", "weight_decay", "dropout", "batchnorm"):
        if key in given:
            raise ValueError(f"{key} is not a setting of model='convnet' (the book's SimpleConvNet); "
                             f"leave it unset")
    if len(given.get("hidden_size", [100])) != 1:
        raise ValueError(f"model='convnet' has one hidden layer: pass hidden_size as an int, got "
                         f"{given['hidden_size']}")
    if isinstance(given.get("weight_init_std"), str):
        raise ValueError("model='convnet' takes weight_init_std as a number (the book's 0.01), got "
                         f"{given['weight_init_std']!r}")
    return {**_CONVNET_DEFAULTS, **{k: v for k, v in given.items() if k != "model"}}


def _default_lr(lr, ckpt, spec):
    """``lr``, else the checkpoint's, else the book's: 0.1 for the two-layer network (ch. 5),
    the optimizer's own default for a multi-layer one (SGD 0.01, Adam 0.001 ...)."""
    if lr is not None:
        return lr
    if ckpt is not None:
        saved = ckpt.meta.get("lr", (ckpt.meta.get("optimizer_param") or {}).get("lr"))
        if saved is not None:
            return saved
    return 0.1 if spec["network"] == "TwoLayerNet" else _default_param(spec["optimizer"], "lr")


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


def _check_meta(checkpoint_meta) -> dict:
    from .checkpoint import RESERVED, RUN_SETTINGS

    meta = dict(checkpoint_meta or {})
    clash = sorted(set(meta) & (set(RESERVED) | set(RUN_SETTINGS)))
    if clash:
        raise ValueError(f"checkpoint_meta may not set {', '.join(clash)}: train() records them itself")
    return meta


@dataclass(frozen=True)
class Settings:
    """Everything a run needs to know, checked, in one object (see :func:`train` for each
    argument); :meth:`resolve` builds it from :func:`train`'s arguments.

    Attributes
    ----------
    network : dict
        The network and optimizer settings in the form of
        :func:`fastbp.checkpoint.run_settings` (``network`` is the class name).
    lr : float
    batch_size : int
    iterations : int
        Total steps, counting those of a resumed checkpoint.
    steps_per_epoch : int
        ``max(N // batch_size, 1)`` for N training rows.
    eval_every : int
        Steps between evaluations (``steps_per_epoch`` unless given); the last step is
        evaluated too.
    seed : int
    dtype : numpy.dtype
        The network's and the data's dtype.
    eval_chunk : int
    checkpoint : pathlib.Path or None
        Where checkpoints are written.
    meta : dict
        What a checkpoint stores besides the network, optimizer and history: the caller's
        ``checkpoint_meta`` and ``seed``, ``batch_size``, ``lr``, ``iterations`` (and
        ``eval_every`` when it was given).
    """

    network: dict
    lr: float
    batch_size: int
    iterations: int
    steps_per_epoch: int
    eval_every: int
    seed: int
    dtype: np.dtype
    eval_chunk: int
    checkpoint: Path | None
    meta: dict

    @classmethod
    def resolve(cls, n_train: int, *, ckpt: Checkpoint | None = None, net=None, iterations: int | None = None,
                epochs: int | None = None, batch_size: int | None = None, lr: float | None = None,
                eval_every: int | None = None, seed: int | None = None, dtype=np.float32, eval_chunk: int = 10000,
                checkpoint: str | os.PathLike | None = None, checkpoint_meta: dict | None = None,
                **network) -> "Settings":
        """Check :func:`train`'s arguments and merge them with the checkpoint's (`ckpt`) or
        the network's (`net`) settings.

        Parameters
        ----------
        n_train : int
            Rows of the training set (for ``epochs`` and the evaluation period).
        ckpt : Checkpoint, optional
            A run to resume: settings left as None continue it.
        net : network, optional
            A network to train: its settings are fixed.
        **network
            ``hidden_size``, ``activation``, ``weight_init_std``, ``optimizer``,
            ``optimizer_param``, ``weight_decay``, ``dropout``, ``batchnorm``.

        Returns
        -------
        Settings

        Raises
        ------
        TypeError, ValueError
            The message names the argument (and the checkpoint's or network's value it
            conflicts with).
        """
        # Unset settings continue the checkpoint's run, else the book's.
        saved = ckpt.meta if ckpt is not None else {}
        batch_size = check.integer("batch_size", saved.get("batch_size", 100) if batch_size is None else batch_size, 1)
        eval_chunk = check.integer("eval_chunk", eval_chunk, 1)
        given, listed = _checked_options(**network)
        spec = _network_spec(ckpt, net, given, listed)
        lr = _check_lr(_default_lr(lr, ckpt, spec))
        if iterations is not None and epochs is not None:
            raise ValueError("pass iterations or epochs, not both")
        meta = _check_meta(checkpoint_meta)
        if ckpt is not None:
            # A checkpoint written by train() has its seed; one saved by hand may not: then
            # `seed` (or a fresh one) draws the batches from here on.
            seed = saved.get("seed", seed)
        if seed is None:
            seed = int(np.random.SeedSequence().generate_state(1)[0])
        seed = check.integer("seed", seed, 0)
        if ckpt is not None:
            dtype = np.dtype(saved["dtype"])
        elif net is not None:
            dtype = np.dtype(net.params[next(iter(net.params))].dtype)
        else:
            dtype = _check_dtype(dtype)
        steps_per_epoch = max(n_train // batch_size, 1)
        if epochs is not None:
            iterations = check.integer("epochs", epochs, 1) * steps_per_epoch
        elif iterations is None:
            # Resuming without a target finishes the interrupted run.
            iterations = saved.get("iterations", 10000)
        iterations = check.integer("iterations", iterations, 1)
        meta.update(seed=seed, batch_size=batch_size, lr=lr, iterations=iterations)
        # Stored only when chosen: by default a resumed run evaluates once per epoch of its
        # own batch size.
        eval_every = saved.get("eval_every") if eval_every is None else eval_every
        if eval_every is not None:
            meta["eval_every"] = eval_every = check.integer("eval_every", eval_every, 1)
        else:
            eval_every = steps_per_epoch
        return cls(network=spec, lr=lr, batch_size=batch_size, iterations=iterations,
                   steps_per_epoch=steps_per_epoch, eval_every=eval_every, seed=seed, dtype=dtype,
                   eval_chunk=eval_chunk, checkpoint=None if checkpoint is None else Path(checkpoint),
                   meta=meta)


# --------------------------------------------------------------------------- networks


def _new_two_layer(spec, input_size, output_size, dtype, seed):
    from .network import TwoLayerNet

    return TwoLayerNet(input_size, spec["hidden_size"][0], output_size, dtype=dtype.type, seed=seed)


def _new_multilayer(spec, input_size, output_size, dtype, seed):
    return build_multilayer({
        "network": spec["network"], "input_size": input_size, "hidden_size": spec["hidden_size"],
        "output_size": output_size, "dtype": dtype.name, "activation": spec["activation"],
        "weight_init_std": spec["weight_init_std"], "weight_decay_lambda": spec["weight_decay"],
        "use_dropout": spec["dropout"] > 0, "dropout_ratio": spec["dropout"] or 0.5,
        "use_batchnorm": spec["batchnorm"], "net_seed": seed})


def _new_convnet(spec, input_size, output_size, dtype, seed):
    from .convnet import SimpleConvNet

    side = math.isqrt(input_size)
    if side * side != input_size:
        raise ValueError(f"model='convnet' trains on square one-channel images given as flat rows "
                         f"(N, H*W); got {input_size} features per row")
    return SimpleConvNet((1, side, side), hidden_size=spec["hidden_size"][0], output_size=output_size,
                         weight_init_std=spec["weight_init_std"], dtype=dtype.type, seed=seed)


#: How :func:`train` builds a new network of each class: ``NETWORKS[name](settings,
#: input_size, output_size, dtype, seed)``, where `settings` is :attr:`Settings.network`.
#: Every class but ``TwoLayerNet`` must have ``train_step(x, t, optimizer)``, ``accuracy(x,
#: t)`` and ``get_state``/``set_state``, and a :class:`fastbp.checkpoint.ModelKind`.
NETWORKS = {"TwoLayerNet": _new_two_layer, "MultiLayerNet": _new_multilayer,
            "MultiLayerNetExtend": _new_multilayer, "SimpleConvNet": _new_convnet}


def _new_optimizer(spec, lr, ckpt):
    """The checkpoint's optimizer in its saved state, else a new one from `spec`."""
    from .trainer import make_optimizer

    if ckpt is not None and ckpt.optimizer_state is not None:
        return ckpt.make_optimizer(lr)
    return make_optimizer(spec["optimizer"], {**spec["optimizer_param"], "lr": lr})


def _io_sizes(net):
    """``(input features, outputs)`` of `net`."""
    if hasattr(net, "input_dim") and hasattr(net, "output_size"):  # images, given as flat rows
        return int(np.prod(net.input_dim)), int(net.output_size)
    if hasattr(net, "input_size") and hasattr(net, "output_size"):
        return int(net.input_size), int(net.output_size)
    return net.params["W1"].shape[0], net.params["W2"].shape[1]


def _check_fit(net, x_train, t_train, x_test, t_test) -> None:
    """Check that the data fit `net` (features, label range or one-hot width)."""
    input_size, output_size = _io_sizes(net)
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


def _prepare(settings, data, ckpt, net):
    """``(net, optimizer, history)`` ready to train: restored from `ckpt`, or `net`, or new."""
    (x_train, t_train), (x_test, t_test) = data
    spec = settings.network
    history = ckpt.history.copy() if ckpt is not None else History()
    if ckpt is not None:
        if net is None:
            net = ckpt.make_net()
        elif model_kind(net) is not None:
            net.set_state(ckpt.net_state)
        else:
            load_params(net, ckpt.params)
    if net is None:
        # Labels 0..9 (or one-hot width) give the output size; at least 10 for int labels
        # so that a subset missing the top classes still builds the book's network.
        n_out = t_train.shape[1] if t_train.ndim == 2 else max(int(t_train.max(initial=0)) + 1, 10)
        net = NETWORKS[spec["network"]](spec, x_train.shape[1], n_out, settings.dtype, settings.seed)
    _check_fit(net, x_train, t_train, x_test, t_test)
    return net, _new_optimizer(spec, settings.lr, ckpt), history


def _stepper(net, optimizer, lr):
    """``step(x, t) -> loss``: the network's fused step with `optimizer`, or for a network
    without state (:class:`fastbp.TwoLayerNet`) its fused SGD step at `lr`."""
    if model_kind(net) is not None:
        return lambda x, t: net.train_step(x, t, optimizer)
    return lambda x, t: net.train_step(x, t, lr)


def _warm_up(net, optimizer, xb, tb, x_eval) -> float:
    """Compile the kernels on a throwaway copy of `net`'s configuration (and a fresh
    optimizer of `optimizer`'s class); return the seconds it took."""
    t0 = time.perf_counter()
    kind = model_kind(net)
    if kind is not None:
        scratch = kind.build(kind.config(net))
        scratch.train_step(xb, tb, type(optimizer)(**hyperparameters(optimizer)))
    else:
        from .network import TwoLayerNet

        (input_size, hidden_size), output_size = net.params["W1"].shape, net.params["W2"].shape[1]
        scratch = TwoLayerNet(input_size, hidden_size, output_size, dtype=net.params["W1"].dtype.type, seed=0)
        scratch.train_step(xb, tb, 0.1)  # lr must be > 0; the network is thrown away
    # Both paths of the multi-layer and conv networks' fused evaluations (listed products
    # or loops for a few rows, BLAS above; TwoLayerNet's takes BLAS at any size).
    for rows in (x_eval[:1], x_eval):
        accuracy(scratch, rows, np.zeros(rows.shape[0], np.int64))
    return time.perf_counter() - t0


# --------------------------------------------------------------------------- batch source


class BatchSource:
    """The deterministic mini-batch sequence: the rows of step ``s`` are a function of
    ``seed`` and ``s`` alone, so a resumed run draws the batches of the uninterrupted one.

    The indices of steps ``s`` with the same ``s // BLOCK`` come from one generator seeded
    with ``(seed, s // BLOCK)``, drawn with replacement like the book's
    ``np.random.choice``; the rows are gathered into two buffers reused every step (from a
    uint8 copy of the images when they are 8-bit pixels, see :func:`_pixel_copy`: the same
    values bit for bit, a quarter of the bytes).

    Parameters
    ----------
    x : numpy.ndarray, shape (N, D), C-contiguous
        Training images in the network's dtype.
    t : numpy.ndarray, shape (N,) int64 or (N, C)
        Labels or one-hot rows.
    seed : int
    batch_size : int

    Attributes
    ----------
    x, t : numpy.ndarray
        The buffers :meth:`fill` writes: ``(batch_size, D)`` and ``(batch_size,)`` or
        ``(batch_size, C)``. Before the first fill they hold rows ``0, 1, ...`` (a valid
        batch, for compiling).
    """

    def __init__(self, x: np.ndarray, t: np.ndarray, seed: int, batch_size: int) -> None:
        n = x.shape[0]
        self._source, self._labels, self._seed, self._n = x, t, seed, n
        self.x = np.empty((batch_size, x.shape[1]), dtype=x.dtype)
        self.t = np.empty((batch_size,) + t.shape[1:], dtype=t.dtype)
        np.take(x, np.arange(batch_size) % n, axis=0, out=self.x)
        np.take(t, np.arange(batch_size) % n, axis=0, out=self.t)
        self._pixels, self._divisor = _pixel_copy(x)
        self._block_id, self._block = -1, None

    def indices(self, s: int) -> np.ndarray:
        """The row numbers of step `s`'s mini-batch (a view: copy it to keep it)."""
        if s // BLOCK != self._block_id:
            self._block_id = s // BLOCK
            self._block = _batch_block(self._seed, self._block_id, self._n, self.x.shape[0])
        return self._block[s % BLOCK]

    def fill(self, s: int) -> tuple[np.ndarray, np.ndarray]:
        """Gather step `s`'s rows into :attr:`x` and :attr:`t`; return ``(x, t)``."""
        rows = self.indices(s)
        if self._pixels is not None:
            gather_pixels(self._pixels, rows, self._divisor, self.x)
        else:
            # mode="clip": with out= and the default mode="raise", NumPy gathers into a
            # hidden temporary and copies it (2-3x slower); the indices are in range by
            # construction, so clipping never changes them.
            np.take(self._source, rows, axis=0, out=self.x, mode="clip")
        np.take(self._labels, rows, axis=0, out=self.t, mode="clip")
        return self.x, self.t


# --------------------------------------------------------------------------- evaluation


class Evaluator:
    """Accuracy of a network on the full training and test sets.

    Parameters
    ----------
    x_train, t_train : numpy.ndarray
    x_test, t_test : numpy.ndarray or None
        Without a test set, the test accuracy is NaN.
    chunk : int
        Rows per compiled forward call (see :func:`accuracy`).
    """

    def __init__(self, x_train: np.ndarray, t_train: np.ndarray, x_test: np.ndarray,
                 t_test: np.ndarray, chunk: int) -> None:
        self.x_train, self.t_train, self.x_test, self.t_test, self.chunk = x_train, t_train, x_test, t_test, chunk

    def __call__(self, net: AnyNetwork) -> tuple[float, float]:
        """``(train_acc, test_acc)`` of `net`."""
        train_acc = accuracy(net, self.x_train, self.t_train, chunk_size=self.chunk)
        if self.x_test is None:
            return train_acc, math.nan
        return train_acc, accuracy(net, self.x_test, self.t_test, chunk_size=self.chunk)


# --------------------------------------------------------------------------- history


class _Recorder:
    """Fills a :class:`History` as the loop runs: the losses of this call's steps in a
    preallocated array, moved into ``history.step_loss`` at each evaluation (and on
    Ctrl-C), and one row per evaluation.

    A resumed history is first made the uninterrupted run's: an evaluation that the earlier
    call made only because it ended there (its last step, off the evaluation period) is
    dropped, and an evaluation that an interrupt cut short is :attr:`pending` (made before
    the first step).
    """

    def __init__(self, history, settings):
        self.history, self.iterations = history, settings.iterations
        self.eval_every, self.steps_per_epoch = settings.eval_every, settings.steps_per_epoch
        self.start = start = history.steps
        h = history
        if h.epoch_step and h.epoch_step[-1] == start and not self.due(start):
            for column in (h.epoch_step, h.epoch_loss, h.train_acc, h.test_acc, h.epoch_seconds):
                column.pop()
        self.pending = start > 0 and self.due(start) and not (h.epoch_step and h.epoch_step[-1] == start)
        if start > self.iterations or (start == self.iterations and not self.pending):
            raise ValueError(
                f"the checkpoint already has {start} steps and iterations={self.iterations}; "
                "pass a larger iterations (CLI: --iters/--epochs) to train further")
        self.losses = np.empty(self.iterations - start, dtype=np.float64)
        self.flushed = self.done = start

    def due(self, done) -> bool:
        """Whether the run evaluates after `done` steps."""
        return done % self.eval_every == 0 or done == self.iterations

    def add(self, s, loss):
        self.losses[s - self.start] = loss
        self.done = s + 1

    def flush(self):
        """Move the recorded losses into ``history.step_loss``, so that its step count
        matches the network's."""
        self.history.step_loss.extend(self.losses[self.flushed - self.start:self.done - self.start].tolist())
        self.flushed = self.done

    def evaluation(self, train_acc, test_acc, seconds) -> EpochRecord:
        """Append the row of an evaluation after :attr:`done` steps; return it."""
        self.flush()
        h, done = self.history, self.done
        # The period since the previous evaluation, which may have begun before a resume.
        first = h.epoch_step[-1] if h.epoch_step else 0
        rec = EpochRecord(epoch=done / self.steps_per_epoch, step=done,
                          loss=float(np.mean(h.step_loss[first:done])),
                          train_acc=train_acc, test_acc=test_acc, seconds=seconds)
        h.epoch_step.append(rec.step)
        h.epoch_loss.append(rec.loss)
        h.train_acc.append(rec.train_acc)
        h.test_acc.append(rec.test_acc)
        h.epoch_seconds.append(rec.seconds)
        return rec


# --------------------------------------------------------------------------- the loop


class _HeldInterrupt:
    """Holds Ctrl-C back while :attr:`hold` is set, and delivers it when :meth:`release`
    clears it.

    A SIGINT's KeyboardInterrupt is raised between two Python bytecodes, wherever the main
    thread is. Between a step's compiled update and the loop's record of it (and inside
    ``train_step``, between the kernel's return and the network's and optimizer's step
    counters) that would save a checkpoint whose step count, Dropout position or Adam
    iteration disagrees with its weights. While held, the handler only notes the signal;
    the previous handler (Python's, which raises KeyboardInterrupt) runs at the release,
    where the state is whole. Installed only in the main thread (the only one that
    receives signals) and over a Python-level handler; otherwise nothing changes.
    """

    def __init__(self):
        self.hold = False
        self._held = None
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            previous = signal.getsignal(signal.SIGINT)
            if callable(previous):
                self._previous = previous
                signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc):
        self.hold = False
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
        return False

    def _handle(self, signum, frame):
        if self.hold:
            self._held = (signum, frame)
        else:
            self._previous(signum, frame)

    def release(self):
        """Stop holding; deliver a held signal now."""
        self.hold = False
        if self._held is not None:
            held, self._held = self._held, None
            self._previous(*held)


class _Saver:
    """Writes the run's checkpoint (when a path was given) and remembers its step."""

    def __init__(self, settings, net, optimizer, history):
        self.path, self.meta = settings.checkpoint, settings.meta
        self.net, self.history = net, history
        self.optimizer = optimizer if model_kind(net) is not None else None
        self.saved_at = None

    def __call__(self):
        if self.path is not None:
            save_checkpoint(self.path, self.net, self.history, optimizer=self.optimizer, **self.meta)
            self.saved_at = self.history.steps


def _diverged(step, loss, saved_at) -> FloatingPointError:
    kept = f"; the checkpoint of step {saved_at} is kept" if saved_at is not None else ""
    return FloatingPointError(f"training diverged at step {step}: the mini-batch loss is {loss}{kept}; "
                              "lower the learning rate, or check the data for NaN/inf")


def _run(settings, net, optimizer, recorder, batches, evaluate, on_epoch, progress) -> dict:
    """The training loop: steps ``recorder.start`` to ``settings.iterations``, evaluating,
    saving and calling `on_epoch` when due; on Ctrl-C, saves what is done and re-raises.
    Returns the timings of :attr:`TrainResult.timings` (``compile`` excepted)."""
    step = _stepper(net, optimizer, settings.lr)
    save = _Saver(settings, net, optimizer, recorder.history)
    start, iterations = recorder.start, settings.iterations
    gather_s = step_s = eval_s = 0.0
    t_start = t_epoch = time.perf_counter()
    bar = tqdm(total=iterations, initial=start, unit="step", disable=not progress, dynamic_ncols=True,
               mininterval=0.25)

    def evaluation():
        nonlocal eval_s, t_epoch
        te = time.perf_counter()
        train_acc, test_acc = evaluate(net)
        now = time.perf_counter()
        eval_s += now - te
        guard.hold = True  # the row's five columns are appended together
        rec = recorder.evaluation(train_acc, test_acc, now - t_epoch)
        guard.release()
        t_epoch = now
        bar.update(rec.step - bar.n)
        bar.set_postfix(loss=f"{rec.loss:.3f}", test_acc=f"{test_acc:.4f}", refresh=False)
        save()
        if on_epoch is not None:
            on_epoch(rec)

    with _HeldInterrupt() as guard:
        try:
            if recorder.pending:
                evaluation()
            for s in range(start, iterations):
                t0 = time.perf_counter()
                xb, tb = batches.fill(s)
                t1 = time.perf_counter()
                guard.hold = True
                loss = step(xb, tb)
                if not math.isfinite(loss):
                    raise _diverged(s + 1, loss, save.saved_at)
                recorder.add(s, loss)
                guard.release()
                t2 = time.perf_counter()
                gather_s += t1 - t0
                step_s += t2 - t1
                done = s + 1
                if done % 64 == 0:
                    bar.update(done - bar.n)
                if recorder.due(done):
                    evaluation()
        except KeyboardInterrupt:
            # Keep the finished steps: losses not yet moved into the history go in now, so
            # the checkpoint's step count matches its weights.
            guard.hold = True
            recorder.flush()
            save()
            raise
        finally:
            bar.close()
    total = time.perf_counter() - t_start
    steps = recorder.done - start
    loop = total - eval_s
    return dict(total=total, gather=gather_s, step=step_s, eval=eval_s, steps=steps,
                steps_per_second=steps / loop if loop > 0 else math.inf)


# --------------------------------------------------------------------------- train


def train(
    data: tuple,
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
    dtype: DTypeLike = np.float32,
    seed: int | None = None,
    model: str | None = None,
    eval_every: int | None = None,
    net: AnyNetwork | None = None,
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
    model : {'mlp', 'convnet'}, optional
        ``'convnet'`` trains the book's chapter-7 :class:`fastbp.convnet.SimpleConvNet`
        (30 filters 5x5, 2x2 max-pooling, ``hidden_size`` units, default 100; init
        ``weight_init_std`` 0.01; Adam) on square one-channel images given as flat rows;
        ``activation``, ``weight_decay``, ``dropout`` and ``batchnorm`` do not apply.
        Default ``'mlp'``: the two-layer or multi-layer network the other settings name.
    eval_every : int, optional
        Steps between evaluations (and checkpoints): default once per epoch
        (``max(N // batch_size, 1)`` steps), or the checkpoint's with ``resume``. The last
        step is evaluated too.
    net : TwoLayerNet, MultiLayerNet or MultiLayerNetExtend, optional
        Train this network instead of a new one (its weights are updated in place).
    resume : path or Checkpoint, optional
        Continue from a checkpoint: network (weights and state), optimizer state, history
        and seed are restored and training runs until ``iterations`` steps in total,
        exactly as the uninterrupted run would have (same batches, evaluations and
        history), wherever the earlier call stopped.
    checkpoint : path, optional
        Write a checkpoint here after every evaluation, at the end, and when
        interrupted (Ctrl-C) before re-raising; not when training diverges. It may be
        the file passed as ``resume``: it is replaced atomically.
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
    n_train = x_train.shape[0] if isinstance(x_train, np.ndarray) and x_train.ndim else 0
    settings = Settings.resolve(
        n_train, ckpt=ckpt, net=net, iterations=iterations, epochs=epochs, batch_size=batch_size, lr=lr,
        eval_every=eval_every, seed=seed, dtype=dtype, eval_chunk=eval_chunk, checkpoint=checkpoint,
        checkpoint_meta=checkpoint_meta, hidden_size=hidden_size, activation=activation,
        weight_init_std=weight_init_std, optimizer=optimizer, optimizer_param=optimizer_param,
        weight_decay=weight_decay, dropout=dropout, batchnorm=batchnorm, model=model)
    x_train, t_train = _check_xt("x_train", x_train, t_train, settings.dtype)
    x_test, t_test = _check_xt("x_test", test[0], test[1], settings.dtype) if test is not None else (None, None)
    net, optimizer, history = _prepare(settings, ((x_train, t_train), (x_test, t_test)), ckpt, net)
    recorder = _Recorder(history, settings)

    if on_start is not None:
        on_start(net, optimizer)
    batches = BatchSource(x_train, t_train, settings.seed, settings.batch_size)
    compile_s = _warm_up(net, optimizer, batches.x, batches.t, x_train[:settings.eval_chunk]) if warmup else 0.0
    evaluate = Evaluator(x_train, t_train, x_test, t_test, settings.eval_chunk)
    timings = _run(settings, net, optimizer, recorder, batches, evaluate, on_epoch, progress)
    return TrainResult(net=net, history=history, seed=settings.seed, timings=dict(compile=compile_s, **timings),
                       optimizer=optimizer, settings=settings)


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


def describe(net: AnyNetwork, optimizer: AnyOptimizer | None = None) -> str:
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
    elif model_kind(net) is None:
        (d, h), c = net.params["W1"].shape, net.params["W2"].shape[1]
        text = f"{d}-{h}-{c} relu"
    elif hasattr(net, "conv_param"):
        cp = net.conv_param
        text = (f"{'x'.join(map(str, net.input_dim))}-conv {cp['filter_num']}x{cp['filter_size']}x"
                f"{cp['filter_size']}-pool-{net.hidden_size}-{net.output_size} relu")
    else:
        text = type(net).__name__
    if optimizer is None:
        return text
    hyper = hyperparameters(optimizer)
    defaults = inspect.signature(type(optimizer)).parameters
    extra = "".join(f" {k}={v:g}" for k, v in hyper.items() if k != "lr" and v != defaults[k].default)
    return f"{text}, {type(optimizer).__name__} lr={hyper['lr']:g}{extra}"
