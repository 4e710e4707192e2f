"""Training history and ``.npz`` checkpoints (network, optimizer, history, settings).

A checkpoint is a plain ``.npz`` archive and a 0-d string array ``meta`` holding JSON:

* format version 1, a :class:`fastbp.TwoLayerNet` (or any network with its four
  parameters): one array per parameter (``param_W1`` ...);
* format version 2, any network registered in :data:`MODELS` (today
  :class:`fastbp.MultiLayerNet`, :class:`fastbp.MultiLayerNetExtend` and
  :class:`fastbp.convnet.SimpleConvNet`): every array of the
  network's ``get_state()`` (``state_W1`` ..., BatchNorm running statistics, Dropout's
  generator position) and of the optimizer's ``state_dict()`` (``optim_m/W1`` ...,
  ``optim_iter``); ``meta`` holds the network's configuration and the optimizer's class
  name and hyperparameters, so both are rebuilt exactly;

plus one array per history column (``history_step_loss`` ...). A two-layer checkpoint
is still written as version 1, readable by older fastbp. Nothing in a checkpoint needs
pickle, so it is loaded with ``allow_pickle=False`` and a checkpoint from an untrusted
source cannot run code. Files are written to a temporary name and renamed, so a crash
while saving leaves the previous checkpoint intact. :func:`load_checkpoint` checks
everything before returning (the arrays against the configuration and dtype in ``meta``,
the optimizer's state against the parameters, the history's columns, the run settings), so
a damaged or hand-edited file is a ``ValueError`` naming it, never a network that trains on
garbage.

A new network class becomes checkpointable (and trainable by :func:`fastbp.train.train`) by
one :func:`register_model` call: its ``get_state``/``set_state`` carry the arrays, a
:class:`ModelKind` its configuration.
"""

from __future__ import annotations

import inspect
import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ._files import atomic_write

__all__ = ["Checkpoint", "History", "MODELS", "ModelKind", "load_checkpoint", "model_kind",
           "register_model", "save_checkpoint"]

FORMAT = "fastbp-checkpoint"
#: Newest format version this fastbp reads; it writes 1 for two-layer networks, 2 for
#: multi-layer ones.
VERSION = 2
PARAM_NAMES = ("W1", "b1", "W2", "b2")
#: Network classes of :mod:`fastbp.multilayer` (two of the :data:`MODELS`).
MULTILAYER = ("MultiLayerNet", "MultiLayerNetExtend")
#: Optimizer classes of :mod:`fastbp.optimizers` a checkpoint may name.
OPTIMIZERS = ("SGD", "Momentum", "Nesterov", "AdaGrad", "RMSprop", "Adam")
#: Keys of ``meta`` that :func:`save_checkpoint` writes itself.
RESERVED = ("format", "version", "network", "input_size", "hidden_size", "output_size",
            "dtype", "activation", "weight_init_std", "weight_decay_lambda", "use_dropout",
            "dropout_ratio", "use_batchnorm", "net_seed", "optimizer", "optimizer_param")
#: Run settings :func:`fastbp.train.train` stores in ``meta``, with the smallest value each
#: may take (``lr``: any positive number); checked when a checkpoint is loaded.
RUN_SETTINGS = {"seed": 0, "batch_size": 1, "iterations": 1, "eval_every": 1, "lr": None}


@dataclass(frozen=True)
class ModelKind:
    """How checkpoints (format version 2) store and rebuild one network class.

    The network itself provides ``get_state()`` (a dict of arrays: everything that changes
    while training) and ``set_state(state)`` (checks every array, then restores them in
    place); a kind adds the configuration that builds an empty network of the same shape.

    Attributes
    ----------
    name : str
        The class name, stored as ``meta["network"]``.
    config : callable
        ``config(net) -> dict`` of JSON values stored in ``meta``; must hold ``dtype``
        (``'float32'`` or ``'float64'``) and none of the run settings
        (:data:`RUN_SETTINGS`).
    build : callable
        ``build(meta) -> net``: a new network of the configuration in ``meta`` (its weights
        are replaced by ``set_state`` afterwards). TypeError, ValueError or KeyError for a
        configuration it cannot build.
    check : callable, optional
        ``check(meta) -> str or None``: what is wrong with the stored configuration's
        types, before ``build`` (None: ``build``'s own errors are the checks).
    settings : callable, optional
        ``settings(meta) -> dict``: the network settings a user may give again when
        resuming (see :func:`run_settings`), compared with theirs; default ``{"network":
        name}``.
    """

    name: str
    config: Callable[[Any], dict]
    build: Callable[[dict], Any]
    check: Callable[[dict], "str | None"] | None = None
    settings: Callable[[dict], dict] | None = None


#: The network classes a version-2 checkpoint may hold, by class name (see
#: :func:`register_model`).
MODELS: dict = {}


def register_model(kind: ModelKind) -> ModelKind:
    """Make networks of class ``kind.name`` checkpointable (and so resumable by
    :func:`fastbp.train.train`).

    Parameters
    ----------
    kind : ModelKind

    Returns
    -------
    ModelKind
        `kind`, registered (replacing an earlier entry of the same name).
    """
    if not isinstance(kind, ModelKind):
        raise TypeError(f"kind must be a ModelKind, got {type(kind).__name__}")
    MODELS[kind.name] = kind
    return kind


def model_kind(net) -> ModelKind | None:
    """The :class:`ModelKind` that stores `net` (found by its class or a base class's name),
    or None for a network saved in format version 1 (a :class:`fastbp.TwoLayerNet` or any
    object with the book's four ``params``)."""
    if not hasattr(net, "get_state"):
        return None
    for cls in type(net).__mro__:
        kind = MODELS.get(cls.__name__)
        if kind is not None:
            return kind
    return None


@dataclass
class History:
    """What a training run recorded, book-style.

    Attributes
    ----------
    step_loss : list of float
        Mini-batch loss of every step (the book's ``train_loss_list``).
    epoch_step : list of int
        Number of steps done at each evaluation (end of each epoch, and the
        last step).
    epoch_loss : list of float
        Mean mini-batch loss over the steps since the previous evaluation.
    train_acc, test_acc : list of float
        Accuracy on the full training and test sets at each evaluation
        (``test_acc`` is NaN when no test set was given).
    epoch_seconds : list of float
        Wall seconds since the previous evaluation, evaluation included.
    """

    step_loss: list = field(default_factory=list)
    epoch_step: list = field(default_factory=list)
    epoch_loss: list = field(default_factory=list)
    train_acc: list = field(default_factory=list)
    test_acc: list = field(default_factory=list)
    epoch_seconds: list = field(default_factory=list)

    @property
    def steps(self) -> int:
        """Number of training steps recorded."""
        return len(self.step_loss)

    def copy(self) -> "History":
        """An independent copy (lists copied)."""
        return History(**{f.name: list(getattr(self, f.name)) for f in fields(self)})

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Columns as arrays, keyed ``history_<name>``."""
        out = {}
        for f in fields(self):
            dtype = np.int64 if f.name == "epoch_step" else np.float64
            out[f"history_{f.name}"] = np.asarray(getattr(self, f.name), dtype=dtype)
        return out

    @classmethod
    def from_arrays(cls, arrays) -> "History":
        """Inverse of :meth:`to_arrays`."""
        return cls(**{f.name: arrays[f"history_{f.name}"].tolist() for f in fields(cls)})


@dataclass
class Checkpoint:
    """A loaded checkpoint.

    Attributes
    ----------
    params : dict of str to numpy.ndarray
        The network's parameters: ``W1``, ``b1``, ``W2``, ``b2`` (two-layer), or every key
        of a multi-layer network's ``params`` (with ``gamma{i}``, ``beta{i}``).
    history : History
    meta : dict
        Settings of the run: ``input_size``, ``hidden_size`` (an int for a two-layer
        network, a list for a multi-layer one), ``output_size``, ``dtype``, the run
        settings of :data:`RUN_SETTINGS` (``seed``, ``batch_size``, ``lr``, ``iterations``,
        ``eval_every``) as :func:`fastbp.train.train` wrote them, and anything the caller
        added (e.g. ``dataset``); for a network of :data:`MODELS` also ``network`` (its
        class name), its configuration (for a multi-layer network ``activation``,
        ``weight_init_std``, ``weight_decay_lambda``, ``use_dropout``, ``dropout_ratio``,
        ``use_batchnorm``, ``net_seed``), ``optimizer`` (class name, or None) and
        ``optimizer_param`` (its hyperparameters).
    net_state : dict of str to numpy.ndarray or None
        The ``get_state()`` of a network of :data:`MODELS`; None for a two-layer
        checkpoint.
    optimizer_state : dict of str to numpy.ndarray or None
        The optimizer's ``state_dict()``; None for a two-layer checkpoint or when no
        optimizer was saved.
    """

    params: dict
    history: History
    meta: dict
    net_state: dict | None = None
    optimizer_state: dict | None = None

    @property
    def step(self) -> int:
        """Training steps done when the checkpoint was written."""
        return self.history.steps

    @property
    def network(self) -> str:
        """Class name of the saved network: ``'TwoLayerNet'`` (format version 1) or one of
        :data:`MODELS` (``'MultiLayerNet'``, ``'MultiLayerNetExtend'`` ...)."""
        return self.meta.get("network", "TwoLayerNet")

    @property
    def settings(self) -> dict:
        """The network and optimizer settings, in one form for every format version (see
        :func:`run_settings`)."""
        return run_settings(self.meta)

    def make_net(self):
        """Build the saved network: a :class:`fastbp.TwoLayerNet` holding these weights, or
        a network of :data:`MODELS` (:class:`fastbp.MultiLayerNet` ...) of the saved
        configuration in the saved state (weights, BatchNorm running statistics, Dropout's
        generator position)."""
        m = self.meta
        if self.net_state is not None:
            net = MODELS[self.network].build(m)
            net.set_state(self.net_state)
            return net
        from .network import TwoLayerNet  # late: the trainer must import without compiling kernels

        net = TwoLayerNet(m["input_size"], m["hidden_size"], m["output_size"], dtype=np.dtype(m["dtype"]).type)
        load_params(net, self.params)
        return net

    def make_optimizer(self, lr=None):
        """Build the saved optimizer (:mod:`fastbp.optimizers`) in its saved state.

        Parameters
        ----------
        lr : float, optional
            A learning rate replacing the saved one.

        Returns
        -------
        fastbp.optimizers.SGD, Momentum, Nesterov, AdaGrad, RMSprop or Adam
            ``SGD(lr)`` for a two-layer checkpoint (``lr`` default: the run's, else the
            book's 0.1).

        Raises
        ------
        ValueError
            If the checkpoint holds no optimizer, or `lr` is out of range.
        """
        from . import optimizers

        if self.net_state is None:
            return optimizers.SGD(self.meta.get("lr", 0.1) if lr is None else lr)
        name = self.meta.get("optimizer")
        if name is None:
            raise ValueError("this checkpoint holds no optimizer (saved with optimizer=None)")
        opt = _build_optimizer(name, self.meta["optimizer_param"], lr)
        opt.load_state_dict(self.optimizer_state)
        return opt


def run_settings(meta) -> dict:
    """The network and optimizer settings of a checkpoint's ``meta`` (or of
    :func:`multilayer_config`), in one form for two-layer and multi-layer networks.

    Parameters
    ----------
    meta : dict
        A checkpoint's ``meta``: ``hidden_size`` alone describes a two-layer network.

    Returns
    -------
    dict
        ``network`` (class name), ``hidden_size`` (list of int), ``activation``,
        ``weight_init_std`` (None for a two-layer network: not recorded),
        ``weight_decay`` (float), ``dropout`` (the ratio, 0.0 without Dropout),
        ``batchnorm`` (bool), ``optimizer`` (class name, None if not recorded),
        ``optimizer_param`` (its hyperparameters other than ``lr``).
    """
    name = meta.get("network", "TwoLayerNet")
    if name == "TwoLayerNet":
        return dict(network="TwoLayerNet", hidden_size=[meta["hidden_size"]],
                    activation="relu", weight_init_std=None, weight_decay=0.0,
                    dropout=0.0, batchnorm=False, optimizer="SGD", optimizer_param={})
    optimizer = dict(optimizer=meta.get("optimizer"),
                     optimizer_param={k: v for k, v in (meta.get("optimizer_param") or {}).items()
                                      if k != "lr"})
    if name not in MULTILAYER:
        kind = MODELS[name]
        return {**(kind.settings(meta) if kind.settings else {}), "network": name, **optimizer}
    return dict(network=meta["network"], hidden_size=list(meta["hidden_size"]),
                activation=meta["activation"], weight_init_std=meta["weight_init_std"],
                weight_decay=float(meta["weight_decay_lambda"]),
                dropout=float(meta["dropout_ratio"]) if meta["use_dropout"] else 0.0,
                batchnorm=bool(meta["use_batchnorm"]), **optimizer)


def build_multilayer(meta):
    """A new network of the configuration in `meta` (as :func:`multilayer_config` returns
    it), with fresh initial weights; TypeError/ValueError for a configuration the class
    refuses."""
    from .multilayer import MultiLayerNet, MultiLayerNetExtend

    kw = dict(activation=meta["activation"], weight_init_std=meta["weight_init_std"],
              weight_decay_lambda=meta["weight_decay_lambda"],
              dtype=np.dtype(meta["dtype"]).type,
              # A network built with seed=None drew its weights through np.random; seed 0
              # here keeps np.random untouched (the weights come from the state anyway).
              seed=0 if meta.get("net_seed") is None else meta["net_seed"])
    if meta["network"] == "MultiLayerNetExtend":
        return MultiLayerNetExtend(meta["input_size"], meta["hidden_size"], meta["output_size"],
                                   use_dropout=meta["use_dropout"],
                                   dropout_ration=meta["dropout_ratio"],
                                   use_batchnorm=meta["use_batchnorm"], **kw)
    return MultiLayerNet(meta["input_size"], meta["hidden_size"], meta["output_size"], **kw)


def _build_optimizer(name, hyper, lr=None):
    from . import optimizers

    hyper = dict(hyper)
    if lr is not None:
        hyper["lr"] = lr
    return getattr(optimizers, name)(**hyper)


def hyperparameters(optimizer) -> dict:
    """``{name: value}`` of the constructor arguments of `optimizer` (the book's classes
    store each under its own name)."""
    return {name: float(getattr(optimizer, name))
            for name in inspect.signature(type(optimizer)).parameters}


def load_params(net, params) -> None:
    """Copy ``params`` into ``net.params`` in place (layers keep references to those arrays)."""
    for name in PARAM_NAMES:
        dst = net.params[name]
        src = np.asarray(params[name])
        if src.shape != dst.shape:
            raise ValueError(f"checkpoint {name} has shape {src.shape}, the network expects {dst.shape}")
        dst[...] = src


def is_multilayer(net) -> bool:
    """Whether `net` is one of fastbp's multi-layer networks (saved with its ``get_state()``
    and configuration) rather than a two-layer one (saved as its four parameters)."""
    return hasattr(net, "get_state") and hasattr(net, "hidden_size_list")


def _two_layer_entries(net, optimizer):
    if optimizer is not None and type(optimizer).__name__ != "SGD":
        raise ValueError(f"a two-layer network's checkpoint holds no optimizer state; "
                         f"optimizer must be None or SGD, got {type(optimizer).__name__}")
    W1, W2 = net.params["W1"], net.params["W2"]
    info = {
        "format": FORMAT,
        "version": 1,
        "input_size": int(W1.shape[0]),
        "hidden_size": int(W1.shape[1]),
        "output_size": int(W2.shape[1]),
        "dtype": np.dtype(W1.dtype).name,
    }
    return info, {f"param_{k}": np.asarray(net.params[k]) for k in PARAM_NAMES}


def multilayer_config(net) -> dict:
    """The configuration of a :class:`fastbp.MultiLayerNet` / :class:`fastbp.MultiLayerNetExtend`
    as stored in a checkpoint's ``meta`` (JSON types): ``network`` (class name),
    ``input_size``, ``hidden_size`` (list), ``output_size``, ``dtype``, ``activation``,
    ``weight_init_std``, ``weight_decay_lambda``, ``use_dropout``, ``dropout_ratio``,
    ``use_batchnorm``, ``net_seed``."""
    from .multilayer import MultiLayerNetExtend

    init = net.weight_init_std
    return {
        "network": "MultiLayerNetExtend" if isinstance(net, MultiLayerNetExtend) else "MultiLayerNet",
        "input_size": int(net.input_size),
        "hidden_size": [int(h) for h in net.hidden_size_list],
        "output_size": int(net.output_size),
        "dtype": np.dtype(net.dtype).name,
        "activation": net.activation,
        "weight_init_std": init if isinstance(init, str) else float(init),
        "weight_decay_lambda": float(net.weight_decay_lambda),
        "use_dropout": bool(net.use_dropout),
        "dropout_ratio": float(net.dropout_ratio),
        "use_batchnorm": bool(net.use_batchnorm),
        "net_seed": None if net.seed is None else int(net.seed),
    }


def _stateful_entries(net, kind, optimizer):
    info = {"format": FORMAT, "version": 2, **kind.config(net), "network": kind.name,
            "optimizer": None, "optimizer_param": None}
    arrays = {f"state_{k}": v for k, v in net.get_state().items()}
    if optimizer is not None:
        name = type(optimizer).__name__
        if name not in OPTIMIZERS or not hasattr(optimizer, "state_dict"):
            raise TypeError(f"optimizer must be one of fastbp.optimizers ({', '.join(OPTIMIZERS)}), "
                            f"got {type(optimizer).__name__}")
        info["optimizer"] = name
        info["optimizer_param"] = hyperparameters(optimizer)
        arrays.update((f"optim_{k}", v) for k, v in optimizer.state_dict().items())
    return info, arrays


def save_checkpoint(path: str | os.PathLike, net, history: History, *, optimizer=None,
                    **meta) -> Path:
    """Write ``net``'s weights (and state), ``optimizer``'s state, ``history`` and ``meta``
    to ``path`` atomically.

    Parameters
    ----------
    path : str or os.PathLike
        Target file; ``.npz`` is not appended. Parent folders are created.
    net : TwoLayerNet, MultiLayerNet, MultiLayerNetExtend or another network of MODELS
        A network of :data:`MODELS` (one with ``get_state``) is saved with its
        configuration and whole state (format version 2); anything else must have a
        book-style ``params`` dict with ``W1``, ``b1``, ``W2``, ``b2`` (format version 1).
    history : History
    optimizer : fastbp.optimizers.SGD, Momentum, Nesterov, AdaGrad, RMSprop or Adam, optional
        Saved with a multi-layer network: class name, hyperparameters and
        ``state_dict()``. A two-layer network trains with SGD, which has no state: None
        or an ``SGD`` only.
    **meta
        JSON-serialisable settings stored alongside (``seed``, ``lr`` ...); the names in
        :data:`RESERVED` are written by this function and refused here.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    TypeError
        If ``optimizer`` is not one of :mod:`fastbp.optimizers`.
    ValueError
        If ``meta`` uses a reserved name, or a two-layer network comes with an optimizer
        other than SGD.
    """
    clash = sorted(set(meta) & set(RESERVED))
    if clash:
        raise ValueError(f"meta may not set {', '.join(clash)}: save_checkpoint writes them "
                         f"from the network and optimizer")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    kind = model_kind(net)
    if kind is not None:
        info, arrays = _stateful_entries(net, kind, optimizer)
    else:
        info, arrays = _two_layer_entries(net, optimizer)
    info.update(meta)
    arrays.update(history.to_arrays())
    arrays["meta"] = np.array(json.dumps(info))
    # np.savez gets a file object, so numpy does not append ".npz" to the name.
    return atomic_write(path, lambda fh: np.savez(fh, **arrays))


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint` (any format version).

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    Checkpoint

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        The file is not a fastbp checkpoint, or is damaged or inconsistent (the message
        names the file).
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise
    except Exception as exc:  # zipfile.BadZipFile, ValueError (pickled content), OSError
        raise ValueError(f"{path}: not a readable fastbp checkpoint ({exc})") from exc
    try:
        meta = json.loads(str(arrays["meta"][()]))
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise KeyError("format")
        history = History.from_arrays(arrays)
    except (KeyError, ValueError, IndexError, TypeError) as exc:
        raise ValueError(f"{path}: not a fastbp checkpoint (missing or bad entry {exc})") from exc
    version = meta.get("version", 0)
    if not _is_int(version):
        raise ValueError(f"{path}: damaged checkpoint: bad format version {version!r}")
    if version > VERSION:
        raise ValueError(f"{path}: checkpoint format version {meta['version']} is newer than this fastbp ({VERSION})")
    net_state = optimizer_state = None
    if version >= 2 and meta.get("network") is not None:
        net_state = {k[len("state_"):]: a for k, a in arrays.items() if k.startswith("state_")}
        optimizer_state = {k[len("optim_"):]: a for k, a in arrays.items() if k.startswith("optim_")}
        problem, params = _check_stateful(meta, net_state, optimizer_state)
    else:
        try:
            params = {k: arrays[f"param_{k}"] for k in PARAM_NAMES}
        except KeyError as exc:
            raise ValueError(f"{path}: not a fastbp checkpoint (missing or bad entry {exc})") from exc
        problem = _check_contents(meta, params)
    problem = problem or _check_history(arrays) or _check_run_settings(meta)
    if problem:
        raise ValueError(f"{path}: damaged checkpoint: {problem}")
    return Checkpoint(params=params, history=history, meta=meta, net_state=net_state,
                      optimizer_state=optimizer_state if meta.get("optimizer") else None)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_contents(meta, params):
    """What is inconsistent in a two-layer checkpoint that unzipped fine, or None: the sizes
    and dtype in ``meta`` must describe the parameter arrays (so a damaged file fails
    here, naming the file, not later inside the trainer)."""
    sizes = {}
    for key in ("input_size", "hidden_size", "output_size"):
        v = meta.get(key)
        if not _is_int(v) or v < 1:
            return f"meta {key} is {v!r}, expected a positive integer"
        sizes[key] = v
    if meta.get("dtype") not in ("float32", "float64"):
        return f"meta dtype is {meta.get('dtype')!r}, expected 'float32' or 'float64'"
    d, h, c = sizes["input_size"], sizes["hidden_size"], sizes["output_size"]
    for name, shape in zip(PARAM_NAMES, ((d, h), (h,), (h, c), (c,))):
        a = params[name]
        # The dtype exactly: float64 arrays under a float32 label would build a float32
        # network and cast them silently.
        if a.dtype != np.dtype(meta["dtype"]) or a.shape != shape:
            return f"{name} is {a.dtype} of shape {a.shape}, expected {meta['dtype']} {shape}"
    return None


def _check_mlp_config(meta):
    """What is wrong with the types of a multi-layer network's stored configuration, or
    None (values are then checked by building the network)."""
    for key in ("input_size", "output_size"):
        v = meta.get(key)
        if not _is_int(v) or v < 1:
            return f"meta {key} is {v!r}, expected a positive integer"
    hidden = meta.get("hidden_size")
    if not isinstance(hidden, list) or not hidden or not all(_is_int(h) and h >= 1 for h in hidden):
        return f"meta hidden_size is {hidden!r}, expected a list of positive integers"
    flags = ("use_dropout", "use_batchnorm")
    if not all(isinstance(meta.get(k), bool) for k in flags):
        return f"meta {', '.join(flags)} must be true or false, got {[meta.get(k) for k in flags]}"
    if not (meta.get("net_seed") is None or (_is_int(meta["net_seed"]) and meta["net_seed"] >= 0)):
        return f"meta net_seed is {meta['net_seed']!r}, expected null or an integer >= 0"
    return None


def _check_stateful(meta, state, opt_state):
    """``(problem or None, params)`` for a version-2 checkpoint: the configuration in
    ``meta`` must build a network of :data:`MODELS` (the kind's checks, then the class's
    own), whose ``set_state`` accepts ``state`` (shapes and dtypes); the optimizer named must
    accept its hyperparameters and ``opt_state``, whose arrays must fit the parameters."""
    kind = MODELS.get(meta.get("network"))
    if kind is None:
        return f"meta network is {meta.get('network')!r}, expected one of {', '.join(MODELS)}", {}
    if meta.get("dtype") not in ("float32", "float64"):
        return f"meta dtype is {meta.get('dtype')!r}, expected 'float32' or 'float64'", {}
    problem = kind.check(meta) if kind.check is not None else None
    if problem:
        return problem, {}
    try:
        net = kind.build(meta)
        net.set_state(state)
    except (KeyError, TypeError, ValueError) as exc:
        return f"the network's configuration or state does not fit ({exc})", {}
    params = {k: state[k] for k in net.params}
    name = meta.get("optimizer")
    if name is None:
        return (f"{len(opt_state)} optimizer arrays but no optimizer" if opt_state else None), params
    if name not in OPTIMIZERS:
        return f"meta optimizer is {name!r}, expected one of {', '.join(OPTIMIZERS)} or null", params
    hyper = meta.get("optimizer_param")
    if not isinstance(hyper, dict) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                              for v in hyper.values()):
        return f"meta optimizer_param is {hyper!r}, expected a dict of numbers", params
    try:
        opt = _build_optimizer(name, hyper)
        opt.load_state_dict(opt_state)
    except (KeyError, TypeError, ValueError) as exc:
        return f"the optimizer's settings or state do not fit ({exc})", params
    for k, a in opt_state.items():
        key = k.partition("/")[2]
        if k != "iter" and (key not in params or a.shape != params[key].shape
                            or a.dtype != params[key].dtype):
            return (f"optimizer state {k} is {a.dtype} {a.shape}, the parameter "
                    f"{key!r} is {getattr(params.get(key), 'dtype', None)} "
                    f"{getattr(params.get(key), 'shape', None)}"), params
    return None, params


def _check_history(arrays):
    """What is wrong with the history columns, or None: 1-D real numbers, one length for
    every per-evaluation column, evaluation steps increasing within the recorded steps."""
    lengths = {}
    for f in fields(History):
        a = arrays[f"history_{f.name}"]
        if a.ndim != 1 or a.dtype.kind not in "iuf":
            return f"history {f.name} is {a.dtype} of shape {a.shape}, expected 1-D numbers"
        lengths[f.name] = len(a)
    per_epoch = {v for k, v in lengths.items() if k != "step_loss"}
    if len(per_epoch) > 1:
        return f"history columns have different lengths {lengths}"
    # A resumed run continues the epoch means from the last evaluation's step: the steps
    # must be whole, increasing and within the recorded ones.
    at = arrays["history_epoch_step"]
    if len(at) and (at.dtype.kind not in "iu" or np.any(np.diff(at) <= 0) or at[0] < 1
                    or at[-1] > lengths["step_loss"]):
        return (f"history epoch_step {at.tolist()[:8]} is not an increasing list of steps "
                f"in 1..{lengths['step_loss']}")
    return None


def _check_run_settings(meta):
    """What is wrong with the run settings :func:`fastbp.train.train` stored (seed,
    batch_size ...), or None: a resumed run uses them as they are."""
    for key, minimum in RUN_SETTINGS.items():
        if key not in meta:
            continue
        v = meta[key]
        if minimum is None:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (0 < v < float("inf")):
                return f"meta {key} is {v!r}, expected a positive number"
        elif not _is_int(v) or v < minimum:
            return f"meta {key} is {v!r}, expected an integer >= {minimum}"
    return None


def convnet_config(net) -> dict:
    """The configuration of a :class:`fastbp.convnet.SimpleConvNet` as stored in a
    checkpoint's ``meta``: ``input_dim`` (list), ``conv_param``, ``hidden_size`` (int),
    ``output_size``, ``weight_init_std``, ``dtype``, ``net_seed``."""
    return {"input_dim": [int(v) for v in net.input_dim],
            "conv_param": {k: int(v) for k, v in net.conv_param.items()},
            "hidden_size": int(net.hidden_size), "output_size": int(net.output_size),
            "weight_init_std": float(net.weight_init_std), "dtype": np.dtype(net.dtype).name,
            "net_seed": None if net.seed is None else int(net.seed)}


def _build_convnet(meta):
    from .convnet import SimpleConvNet

    return SimpleConvNet(tuple(meta["input_dim"]), dict(meta["conv_param"]), meta["hidden_size"],
                         meta["output_size"], meta["weight_init_std"], dtype=np.dtype(meta["dtype"]).type,
                         seed=0 if meta.get("net_seed") is None else meta["net_seed"])


def _check_convnet_config(meta):
    dims, conv = meta.get("input_dim"), meta.get("conv_param")
    if not isinstance(dims, list) or len(dims) != 3 or not all(_is_int(v) and v >= 1 for v in dims):
        return f"meta input_dim is {dims!r}, expected [C, H, W] of positive integers"
    if not isinstance(conv, dict) or not all(_is_int(v) for v in conv.values()):
        return f"meta conv_param is {conv!r}, expected a dict of integers"
    for key in ("hidden_size", "output_size"):
        if not _is_int(meta.get(key)) or meta[key] < 1:
            return f"meta {key} is {meta.get(key)!r}, expected a positive integer"
    if not (meta.get("net_seed") is None or (_is_int(meta["net_seed"]) and meta["net_seed"] >= 0)):
        return f"meta net_seed is {meta['net_seed']!r}, expected null or an integer >= 0"
    return None


def _convnet_settings(meta):
    return dict(network="SimpleConvNet", hidden_size=[meta["hidden_size"]], activation="relu",
                weight_init_std=meta["weight_init_std"], weight_decay=0.0, dropout=0.0, batchnorm=False)


# --------------------------------------------------------------------------- the networks

register_model(ModelKind("MultiLayerNet", config=lambda net: multilayer_config(net),
                         build=lambda meta: build_multilayer(meta), check=_check_mlp_config,
                         settings=run_settings))
register_model(ModelKind("MultiLayerNetExtend", config=lambda net: multilayer_config(net),
                         build=lambda meta: build_multilayer(meta), check=_check_mlp_config,
                         settings=run_settings))
register_model(ModelKind("SimpleConvNet", config=lambda net: convnet_config(net),
                         build=lambda meta: _build_convnet(meta), check=_check_convnet_config,
                         settings=_convnet_settings))
