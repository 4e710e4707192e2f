"""Training history and ``.npz`` checkpoints (weights + history + settings).

A checkpoint is a plain ``.npz`` archive: one array per parameter
(``param_W1`` ...), one per history column (``history_step_loss`` ...), and a
0-d string array ``meta`` holding JSON. Nothing in it needs pickle, so it is
loaded with ``allow_pickle=False`` and a checkpoint from an untrusted source
cannot run code. Files are written to a temporary name and renamed, so a crash
while saving leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

__all__ = ["Checkpoint", "History", "load_checkpoint", "save_checkpoint"]

FORMAT = "fastbp-checkpoint"
VERSION = 1
PARAM_NAMES = ("W1", "b1", "W2", "b2")


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
        ``W1``, ``b1``, ``W2``, ``b2``.
    history : History
    meta : dict
        Settings of the run: ``input_size``, ``hidden_size``,
        ``output_size``, ``dtype``, ``seed``, ``batch_size``, ``lr``,
        ``iterations`` and anything the caller added (e.g. ``dataset``).
    """

    params: dict
    history: History
    meta: dict

    @property
    def step(self) -> int:
        """Training steps done when the checkpoint was written."""
        return self.history.steps

    def make_net(self):
        """Build a :class:`fastbp.TwoLayerNet` holding these weights."""
        from .network import TwoLayerNet  # late: the trainer must import without compiling kernels

        m = self.meta
        net = TwoLayerNet(m["input_size"], m["hidden_size"], m["output_size"], dtype=np.dtype(m["dtype"]).type)
        load_params(net, self.params)
        return net


def load_params(net, params) -> None:
    """Copy ``params`` into ``net.params`` in place (layers keep references to those arrays)."""
    for name in PARAM_NAMES:
        dst = net.params[name]
        src = np.asarray(params[name])
        if src.shape != dst.shape:
            raise ValueError(f"checkpoint {name} has shape {src.shape}, the network expects {dst.shape}")
        dst[...] = src


def save_checkpoint(path: str | os.PathLike, net, history: History, **meta) -> Path:
    """Write ``net``'s weights, ``history`` and ``meta`` to ``path`` atomically.

    Parameters
    ----------
    path : str or os.PathLike
        Target file; ``.npz`` is not appended. Parent folders are created.
    net : TwoLayerNet
        Any object with a book-style ``params`` dict.
    history : History
    **meta
        JSON-serialisable settings stored alongside (``seed``, ``lr`` ...).

    Returns
    -------
    pathlib.Path
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    W1, W2 = net.params["W1"], net.params["W2"]
    info = {
        "format": FORMAT,
        "version": VERSION,
        "input_size": int(W1.shape[0]),
        "hidden_size": int(W1.shape[1]),
        "output_size": int(W2.shape[1]),
        "dtype": np.dtype(W1.dtype).name,
        **meta,
    }
    arrays = {f"param_{k}": np.asarray(net.params[k]) for k in PARAM_NAMES}
    arrays.update(history.to_arrays())
    arrays["meta"] = np.array(json.dumps(info))
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:  # a file object, so numpy does not append ".npz"
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`.

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
        The file is not a fastbp checkpoint, or is damaged.
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
        params = {k: arrays[f"param_{k}"] for k in PARAM_NAMES}
        history = History.from_arrays(arrays)
    except (KeyError, ValueError, IndexError, TypeError) as exc:
        raise ValueError(f"{path}: not a fastbp checkpoint (missing or bad entry {exc})") from exc
    version = meta.get("version", 0)
    if not _is_int(version):
        raise ValueError(f"{path}: damaged checkpoint: bad format version {version!r}")
    if version > VERSION:
        raise ValueError(f"{path}: checkpoint format version {meta['version']} is newer than this fastbp ({VERSION})")
    problem = _check_contents(meta, params, arrays)
    if problem:
        raise ValueError(f"{path}: damaged checkpoint: {problem}")
    return Checkpoint(params=params, history=history, meta=meta)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_contents(meta, params, arrays):
    """What is inconsistent in a checkpoint that unzipped fine, or None: the sizes and
    dtype in ``meta`` must describe the parameter arrays, and the history columns must be
    1-D real numbers of consistent lengths (so a damaged file fails here, naming the file,
    not later inside the trainer)."""
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
        if a.dtype.kind != "f" or a.shape != shape:
            return f"{name} is {a.dtype} of shape {a.shape}, expected {meta['dtype']} {shape}"
    lengths = {}
    for f in fields(History):
        a = arrays[f"history_{f.name}"]
        if a.ndim != 1 or a.dtype.kind not in "iuf":
            return f"history {f.name} is {a.dtype} of shape {a.shape}, expected 1-D numbers"
        lengths[f.name] = len(a)
    per_epoch = {v for k, v in lengths.items() if k != "step_loss"}
    if len(per_epoch) > 1:
        return f"history columns have different lengths {lengths}"
    return None
