"""One trial of a sweep, as the book's ``hyperparameter_optimization.py`` trains it.

:func:`run_trial` builds a :class:`fastbp.MultiLayerNet` (:class:`fastbp.MultiLayerNetExtend`
with Dropout or BatchNorm) and trains it with :class:`fastbp.trainer.Trainer`'s steps: random
mini-batches drawn with ``np.random.choice``, the accuracies on the training and validation
sets at the start of every epoch (the book's ``train_acc_list`` and ``test_acc_list``, the
latter on the validation set). :func:`run_batch` runs several trials in one call: it is what
a Ray task of :mod:`fastbp.sweep` executes, so the per-task scheduling cost is shared.

This module imports neither Ray nor anything above the trainer: it runs in Ray's worker
processes and in plain Python alike.
"""
from __future__ import annotations

import math
import os
import tempfile
import time

import numpy as np

__all__ = ["TrialStop", "checkpoint_bytes", "median_reference", "pin_threads", "run_batch", "run_trial"]

#: Status of a trial that trained all its epochs.
OK = "ok"
#: Stopped early by the median rule.
STOPPED = "stopped"
#: Its loss became NaN or infinite (a too large learning rate): a result, not a failure.
DIVERGED = "diverged"
#: It raised an error (see ``error``).
ERROR = "error"

_pinned = None


def pin_threads(n: int) -> None:
    """Give Numba's pool and the BLAS pools `n` threads (the CPUs Ray gave this worker),
    once per process."""
    global _pinned
    if _pinned != n:
        from .threads import set_num_threads

        import numba
        set_num_threads(max(1, min(int(n), numba.config.NUMBA_NUM_THREADS)))
        _pinned = n


class TrialStop:
    """The median stopping rule: after `grace` epochs, a trial stops when its best
    validation accuracy so far is below the median of the finished trials' best at the same
    epoch (``reference[epoch]``, NaN where too few trials reached it)."""

    def __init__(self, reference, grace: int):
        self.reference = None if reference is None else np.asarray(reference, dtype=float)
        self.grace = int(grace)

    def should_stop(self, val_acc_list) -> bool:
        """Whether a trial with these per-epoch validation accuracies stops now."""
        epoch = len(val_acc_list)
        if self.reference is None or epoch < self.grace or epoch > len(self.reference):
            return False
        median = self.reference[epoch - 1]
        return bool(math.isfinite(median) and max(val_acc_list) < median)


def median_reference(curves, min_trials: int = 4):
    """Per-epoch medians of the best-so-far validation accuracy of `curves` (lists of
    per-epoch accuracies of finished trials); NaN at epochs fewer than `min_trials` reached.

    Returns
    -------
    list of float (JSON-friendly), or None when no curve is given.
    """
    if not curves:
        return None
    longest = max(len(c) for c in curves)
    out = []
    for e in range(longest):
        best = [max(c[:e + 1]) for c in curves if len(c) > e]
        out.append(float(np.median(best)) if len(best) >= min_trials else math.nan)
    return out


def _network(params, input_size, output_size, dtype, seed):
    from .multilayer import MultiLayerNet, MultiLayerNetExtend

    kw = dict(activation=params["activation"], weight_init_std=params["init"],
              weight_decay_lambda=params["weight_decay"], dtype=dtype, seed=seed)
    if params["dropout"] > 0 or params["batchnorm"]:
        return MultiLayerNetExtend(input_size, params["hidden"], output_size,
                                   use_dropout=params["dropout"] > 0,
                                   dropout_ration=params["dropout"] if params["dropout"] > 0
                                   else 0.5,
                                   use_batchnorm=params["batchnorm"], **kw)
    return MultiLayerNet(input_size, params["hidden"], output_size, **kw)


def run_trial(spec, data, *, dtype=np.float32, stop=None, keep=False):
    """Train one trial and return its result.

    Parameters
    ----------
    spec : dict
        ``trial``, ``seed`` and ``params`` as :func:`fastbp.sweep_space.trial_spec` makes
        them.
    data : tuple
        ``(x_train, t_train, x_val, t_val)``: images (N, D) of `dtype` and int labels (N,).
    dtype : numpy float type
        The network's dtype.
    stop : TrialStop, optional
        Early stopping.
    keep : bool
        Also return the trained network and optimizer (under ``"net"``, ``"optimizer"``,
        ``"trainer"``), for a checkpoint.

    Returns
    -------
    dict
        ``trial``, ``seed``, ``params``, ``status`` (``"ok"``, ``"stopped"``, ``"diverged"``
        or ``"error"``), ``val_acc`` and ``train_acc`` (the last evaluation's; NaN before
        the first), ``epochs`` (evaluations made), ``steps``, ``seconds``,
        ``val_acc_list``, ``train_acc_list``, ``error`` (a message, or None), ``pid``.
    """
    from .trainer import Trainer

    t0 = time.perf_counter()
    params = spec["params"]
    x_train, t_train, x_val, t_val = data
    result = dict(trial=spec["trial"], seed=spec["seed"], params=params, status=OK,
                  val_acc=math.nan, train_acc=math.nan, epochs=0, steps=0, seconds=0.0,
                  val_acc_list=[], train_acc_list=[], error=None, pid=os.getpid())
    trainer = net = None
    saved = np.random.get_state()  # Trainer draws from np.random: leave the caller's alone
    try:
        np.random.seed(spec["seed"])
        net = _network(params, x_train.shape[1], int(max(t_train.max(), t_val.max())) + 1,
                       dtype, spec["seed"])
        trainer = Trainer(net, x_train, t_train, x_val, t_val, epochs=params["epochs"],
                          mini_batch_size=params["batch_size"], optimizer=params["optimizer"],
                          optimizer_param={"lr": params["lr"]}, verbose=False)
        for _ in range(trainer.max_iter):
            evaluated = trainer.current_epoch
            trainer.train_step()
            if (stop is not None and trainer.current_epoch != evaluated
                    and stop.should_stop(trainer.test_acc_list)):
                result["status"] = STOPPED
                break
    except FloatingPointError as exc:
        result["status"], result["error"] = DIVERGED, str(exc).splitlines()[0]
    except Exception as exc:  # a bad combination of settings: recorded, the sweep goes on
        result["status"], result["error"] = ERROR, f"{type(exc).__name__}: {exc}"
    finally:
        np.random.set_state(saved)
    if trainer is not None:
        result["val_acc_list"] = [float(a) for a in trainer.test_acc_list]
        result["train_acc_list"] = [float(a) for a in trainer.train_acc_list]
        result["steps"] = int(trainer.current_iter)
        result["epochs"] = len(trainer.test_acc_list)
        if trainer.test_acc_list:
            result["val_acc"] = result["val_acc_list"][-1]
            result["train_acc"] = result["train_acc_list"][-1]
    result["seconds"] = time.perf_counter() - t0
    if keep:
        result.update(net=net, trainer=trainer)
    return result


def checkpoint_bytes(result, meta) -> bytes:
    """The checkpoint of a trial run with ``keep=True``, as the bytes of a
    :func:`fastbp.checkpoint.save_checkpoint` file (so it can travel from a Ray worker on
    another machine)."""
    from .checkpoint import History, save_checkpoint

    trainer = result["trainer"]
    per_epoch = max(trainer.iter_per_epoch, 1)
    evals = len(trainer.test_acc_list)
    # The Trainer evaluates after the first step of each epoch (steps 1, 1 + per_epoch ...)
    history = History(step_loss=[float(v) for v in trainer.train_loss_list],
                      epoch_step=[int(math.floor(i * per_epoch)) + 1 for i in range(evals)],
                      epoch_loss=[math.nan] * evals,
                      train_acc=list(result["train_acc_list"]),
                      test_acc=list(result["val_acc_list"]),
                      epoch_seconds=[math.nan] * evals)
    fd, tmp = tempfile.mkstemp(prefix="fastbp-sweep-", suffix=".npz")
    os.close(fd)
    try:
        save_checkpoint(tmp, result["net"], history, optimizer=trainer.optimizer, **meta)
        with open(tmp, "rb") as fh:
            return fh.read()
    finally:
        os.unlink(tmp)


def run_batch(specs, data, *, dtype_name="float32", threads=1, reference=None, grace=1,
              best_above=-1.0, meta=None):
    """Run the trials `specs` one after the other (a Ray task's body).

    Parameters
    ----------
    specs : list of dict
        Trials (:func:`fastbp.sweep_space.trial_spec`).
    data : tuple
        ``(x_train, t_train, x_val, t_val)``.
    dtype_name : str
        ``"float32"`` or ``"float64"``.
    threads : int
        Threads for Numba and BLAS in this process (the CPUs the task was given).
    reference, grace
        Median stopping (:class:`TrialStop`); ``reference=None``: no early stopping.
    best_above : float
        Return a checkpoint of this batch's best ``"ok"`` or ``"stopped"`` trial only if its
        validation accuracy is above this (the best the sweep has so far).
    meta : dict, optional
        Stored in that checkpoint (the sweep's settings).

    Returns
    -------
    dict
        ``results`` (one dict per trial, see :func:`run_trial`), ``checkpoint`` (bytes or
        None) and ``checkpoint_trial`` (its trial number or None).
    """
    pin_threads(threads)
    dtype = np.dtype(dtype_name).type
    # Ray hands the arrays over read-only (zero-copy from its object store); Numba types
    # read-only arrays apart, so they would compile (and cache) a second set of kernels.
    data = tuple(a if a.flags.writeable else a.copy() for a in data)
    stop = TrialStop(reference, grace) if reference is not None else None
    results, best, best_bytes = [], None, None
    for spec in specs:
        r = run_trial(spec, data, dtype=dtype, stop=stop, keep=True)
        if r["status"] in (OK, STOPPED) and r["val_acc"] > best_above and (
                best is None or r["val_acc"] > best["val_acc"]):
            best = r
            best_bytes = None  # made once, for the batch's best
        results.append(r)
    if best is not None:
        best_bytes = checkpoint_bytes(best, {**(meta or {}), "trial": best["trial"],
                                             "trial_seed": best["seed"],
                                             "trial_params": best["params"]})
    for r in results:
        r.pop("net", None)
        r.pop("trainer", None)
    return {"results": results, "checkpoint": best_bytes,
            "checkpoint_trial": None if best is None else best["trial"]}
