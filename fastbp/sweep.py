"""Hyperparameter sweeps on Ray: the book's random search (``ch06/hyperparameter_optimization.py``),
on this machine or on a Ray cluster, with the same code path for both::

    from fastbp.datasets import load_split
    from fastbp.sweep import sweep
    from fastbp.sweep_space import LogUniform

    x, t = load_split("train", dataset="fashion-mnist")
    result = sweep((x, t), {"lr": LogUniform(1e-6, 1e-2), "weight_decay": LogUniform(1e-8, 1e-4)},
                   trials=100, seed=0, train_size=500, out="sweep-out")
    print(result.best["params"], result.best["val_acc"])

What a sweep does, in the book's terms: keep the first ``train_size`` training images,
shuffle them (with the sweep seed) and hold ``validation_rate`` of them out as the
validation set; then train ``trials`` networks (:func:`fastbp.sweep_trial.run_trial`:
``MultiLayerNet`` and the book's ``Trainer`` semantics, accuracies per epoch on the
training and validation sets), each with parameters drawn from the space
(:mod:`fastbp.sweep_space`; trial ``i`` depends only on the sweep seed and ``i``).

Execution: always Ray (the optional extra ``fastbp[sweep]``). Without an address, a local
Ray is started on this machine with one CPU per core and one trial per CPU; with
``address="HOST:PORT"`` (or ``RAY_ADDRESS``) the sweep runs on that cluster. Trials travel
in batches (one Ray task runs several, one after the other, in a long-lived worker
process whose compiled kernels stay loaded), so scheduling costs milliseconds per task
instead of per trial. Each task pins Numba's and BLAS's thread pools to the CPUs Ray gave
it. A task whose worker dies (killed, out of memory, a lost node) is retried by Ray
(``max_retries``); trials still lost after that are reported as failed, left out of
``results.jsonl``, and run again by a resume.

Output folder (``out``): ``sweep.json`` (the settings, for ``resume``), ``results.jsonl``
(one line per finished trial, appended and synced as results arrive, so an interrupted
sweep keeps them), ``results.csv`` (best first), ``best20.png`` (the book's "Best-20"
figure) and ``best.npz`` (a :func:`fastbp.checkpoint.save_checkpoint` checkpoint of the best
trial's network and optimizer). Files other than ``results.jsonl`` are written to a
temporary name and renamed.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import socket
import sys
import time
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import validation as check
from ._files import atomic_write
from .sweep_space import (DEFAULTS, PARAMETERS, Grid, SpaceError, book_space, check_space,
                          grid_size, hidden_text, space_from_json, space_from_toml, space_to_json,
                          trial_spec)
from .sweep_trial import OK, STOPPED, median_reference

__all__ = ["SweepError", "SweepResult", "format_table", "load_settings", "plot_best",
           "read_config", "read_results", "require_ray", "sweep"]

SETTINGS_FILE = "sweep.json"
RESULTS_FILE = "results.jsonl"
CSV_FILE = "results.csv"
FIGURE_FILE = "best20.png"
CHECKPOINT_FILE = "best.npz"
#: Stream tag mixed into the sweep seed for the shuffle before the validation split.
_SPLIT_STREAM = 0x73706C74
#: Tasks per Ray CPU slot when the batch size is chosen automatically: enough for the
#: load to balance at the end and the progress bar to move, few enough that the per-task
#: cost (measured in docs/decisions/sweep-scheduling.md) stays small.
TASKS_PER_SLOT = 6
#: Finished trials the median rule needs at an epoch before it stops anything there.
MEDIAN_MIN_TRIALS = 4
#: Seconds to wait for a TCP connection to ``address`` before calling it unreachable
#: (``ray.init`` itself waits minutes for an absent cluster).
CONNECT_TIMEOUT = 5.0
EARLY_STOP = ("median",)
_UMASK = os.umask(0)
os.umask(_UMASK)


class SweepError(ValueError):
    """A sweep that cannot start: bad settings, Ray missing or unreachable, a folder that
    does not fit ``resume``."""


@dataclass
class SweepResult:
    """What :func:`sweep` returns.

    Attributes
    ----------
    results : list of dict
        Every finished trial (this run's and, after a resume, the earlier ones), best
        first (highest final validation accuracy; ties by trial number). Each dict as
        :func:`fastbp.sweep_trial.run_trial` returns it: ``trial``, ``seed``, ``params``,
        ``status``, ``val_acc``, ``train_acc``, ``epochs``, ``steps``, ``seconds``,
        ``val_acc_list``, ``train_acc_list``, ``error``, ``pid``.
    failed : list of int
        Trials lost to worker failures after Ray's retries (not in `results`; a resume
        runs them).
    ran, skipped : int
        Trials run by this call, and finished ones found in ``out`` and not run again.
    seconds : float
        Wall time of this call, Ray's start included.
    seed : int
    space : dict
        The checked space.
    files : dict of str to pathlib.Path
        What was written: ``results``, ``csv``, ``figure``, ``checkpoint``, ``settings``.
    """

    results: list
    failed: list
    ran: int
    skipped: int
    seconds: float
    seed: int
    space: dict
    files: dict = field(default_factory=dict)

    @property
    def best(self) -> dict | None:
        """The best trial's result dict (None when no trial finished)."""
        return self.results[0] if self.results else None


# --------------------------------------------------------------------------- settings


def _int(name, value, minimum):
    try:
        return check.integer(name, value, minimum)
    except (TypeError, ValueError) as exc:  # a sweep's settings errors are all SweepError
        raise SweepError(str(exc)) from None


def _settings(space, trials, seed, train_size, validation_rate, dtype, early_stop,
              grace_epochs, n_rows, meta):
    """The sweep's settings as stored in ``sweep.json``, every one checked."""
    try:
        space = check_space(book_space() if space is None else space)
    except SpaceError as exc:
        raise SweepError(str(exc)) from None
    size = grid_size(space)
    if trials is None:
        trials = size if any(isinstance(v, Grid) for v in space.values()) else 100
    trials = _int("trials", trials, 1)
    seed = _int("seed", seed, 0)
    if train_size is None:
        train_size = n_rows
    train_size = _int("train_size", train_size, 2)
    if train_size > n_rows:
        raise SweepError(f"train_size {train_size} exceeds the {n_rows} training images given")
    if isinstance(validation_rate, bool) or not isinstance(validation_rate, (int, float)) or \
            not 0 < validation_rate < 1:
        raise SweepError(f"validation_rate must be a number in (0, 1), got {validation_rate!r}")
    n_val = int(train_size * validation_rate)
    if not 1 <= n_val < train_size:
        raise SweepError(f"validation_rate {validation_rate} of {train_size} images leaves "
                         f"{n_val} for validation and {train_size - n_val} for training; both "
                         f"need at least one")
    dtype = np.dtype(dtype).name if dtype in (np.float32, np.float64, "float32", "float64") \
        else None
    if dtype is None:
        raise SweepError("dtype must be float32 or float64")
    if early_stop not in (None,) + EARLY_STOP:
        raise SweepError(f"early_stop must be None or one of {', '.join(EARLY_STOP)}, got "
                         f"{early_stop!r}")
    if grace_epochs is None:
        epochs = space.get("epochs", DEFAULTS["epochs"])
        epochs = min(epochs.values) if hasattr(epochs, "values") else epochs
        grace_epochs = max(1, epochs // 4)
    grace_epochs = _int("grace_epochs", grace_epochs, 1)
    return dict(version=1, space=space_to_json(space), trials=trials, seed=seed,
                train_size=train_size, validation_rate=float(validation_rate), dtype=dtype,
                early_stop=early_stop, grace_epochs=grace_epochs, meta=dict(meta or {}))


def load_settings(out: str | os.PathLike) -> dict:
    """The settings of the sweep in folder `out` (its ``sweep.json``), checked.

    Returns
    -------
    dict
        ``space`` (JSON form, see :func:`fastbp.sweep_space.space_to_json`), ``trials``,
        ``seed``, ``train_size``, ``validation_rate``, ``dtype``, ``early_stop``,
        ``grace_epochs``, ``meta``.

    Raises
    ------
    SweepError
        If the folder holds no sweep or the file is damaged.
    """
    path = Path(out) / SETTINGS_FILE
    try:
        settings = json.loads(path.read_text())
        space_from_json(settings["space"])
        for key in ("trials", "seed", "train_size", "validation_rate", "dtype", "early_stop",
                    "grace_epochs"):
            settings[key]  # noqa: B018  (a KeyError names the missing entry)
    except FileNotFoundError:
        raise SweepError(f"{out} holds no sweep ({SETTINGS_FILE} is missing); start one with "
                         f"--out") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise SweepError(f"{path} is damaged ({type(exc).__name__}: {exc})") from None
    return settings


def read_results(out: str | os.PathLike) -> list:
    """The trials recorded in ``out/results.jsonl`` (dicts, in file order). A last line cut
    short by a crash is ignored; a damaged line elsewhere is a :class:`SweepError`."""
    path = Path(out) / RESULTS_FILE
    if not path.exists():
        return []
    lines = path.read_text().split("\n")
    results = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            results.append(json.loads(line))
        except ValueError:
            if number >= len(lines) - 1:  # the last line, not terminated: a cut write
                break
            raise SweepError(f"{path}, line {number} is damaged; remove it to resume") from None
    return results


#: Top-level keys of a sweep's TOML file besides the ``[space]`` table.
CONFIG_KEYS = ("trials", "seed", "dataset", "train_size", "validation_rate", "dtype",
               "early_stop", "grace_epochs", "cpus_per_trial", "trials_per_task", "max_retries")


def read_config(path: str | os.PathLike) -> dict:
    """A sweep's settings from a TOML file.

    The file holds any of :data:`CONFIG_KEYS` at the top level and the search space as a
    ``[space]`` table (see :mod:`fastbp.sweep_space`)::

        trials = 100
        seed = 0
        train_size = 500

        [space]
        lr = "loguniform:1e-6:1e-2"
        weight_decay = {loguniform = [1e-8, 1e-4]}
        hidden = "100x6"
        optimizer = {choice = ["sgd", "adam"]}

    Returns
    -------
    dict
        The top-level values under their names, and ``space`` (checked) when the file has
        one.

    Raises
    ------
    SweepError
        The file does not parse (the message says where), has an unknown key, or a bad
        space entry.
    OSError
        The file cannot be read.
    """
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover  (Python 3.10: the sweep extra installs tomli)
        import tomli as tomllib
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            table = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise SweepError(f"{path} is not valid TOML: {exc}") from None
    unknown = sorted(set(table) - set(CONFIG_KEYS) - {"space"})
    if unknown:
        raise SweepError(f"{path}: unknown key {unknown[0]!r}; the keys are "
                         f"{', '.join(CONFIG_KEYS)} and a [space] table")
    config = {k: v for k, v in table.items() if k != "space"}
    if "space" in table:
        try:
            config["space"] = space_from_toml(table["space"])
        except SpaceError as exc:
            raise SweepError(f"{path}: [space] {exc}") from None
    return config


def _split(x, t, settings):
    """The book's split: the first ``train_size`` rows, shuffled (seeded), the first
    ``validation_rate`` of them held out for validation."""
    n = settings["train_size"]
    dtype = np.dtype(settings["dtype"])
    x = np.ascontiguousarray(np.asarray(x)[:n].reshape(n, -1), dtype=dtype)
    t = np.asarray(t)[:n]
    if t.ndim == 2:
        t = t.argmax(axis=1)
    t = np.ascontiguousarray(t, dtype=np.intp)
    order = np.random.default_rng([settings["seed"], _SPLIT_STREAM]).permutation(n)
    x, t = x[order], t[order]
    n_val = int(n * settings["validation_rate"])
    return x[n_val:], t[n_val:], x[:n_val], t[:n_val]


def _images(data):
    """``(x, t)`` from ``(x, t)`` or load_mnist's ``((x_train, t_train), (x_test, t_test))``."""
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], tuple):
        data = data[0]
    if not (isinstance(data, tuple) and len(data) == 2):
        raise TypeError("data must be (images, labels) or load_mnist's ((x_train, t_train), "
                        "(x_test, t_test))")
    x, t = data
    if not isinstance(x, np.ndarray) or not isinstance(t, np.ndarray):
        raise TypeError("data: images and labels must be numpy arrays")
    if x.ndim < 2 or len(x) != len(t) or t.ndim not in (1, 2):
        raise ValueError(f"data: images must have one row per label; got {x.shape} images and "
                         f"{t.shape} labels")
    if t.ndim == 1 and not np.issubdtype(t.dtype, np.integer):
        raise TypeError(f"data: labels of shape (N,) must be integers, got {t.dtype}")
    return x, t


# --------------------------------------------------------------------------- Ray


def _is_loopback(address) -> bool:
    host = str(address).removeprefix("ray://").rpartition(":")[0]
    return host in ("127.0.0.1", "localhost", "::1", "[::1]")


def require_ray(address: str | None = None) -> types.ModuleType:
    """Import Ray and return the module, or raise a :class:`SweepError` naming the extra that
    installs it. `address` (default ``$RAY_ADDRESS``) is where the sweep will run.

    For a Ray on this machine only (a local one, or a cluster at a loopback address) and
    when Ray is not imported yet, set ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (unless set):
    Ray then keeps its nodes on 127.0.0.1 and its ports bound to the loopback interface,
    instead of swapping 127.0.0.1 for the machine's network address (what it does for
    clusters, and what made a driver fail to reach a cluster started on 127.0.0.1).
    """
    address = address or os.environ.get("RAY_ADDRESS")
    if "ray" not in sys.modules and (not address or address == "local" or _is_loopback(address)):
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
    except ImportError:
        raise SweepError('sweeps run on Ray, which is not installed: pip install '
                         '"fastbp[sweep]"') from None
    return ray


def _check_reachable(address):
    """Fail fast on an address nobody listens on (``ray.init`` would wait minutes)."""
    host, _, port = address.rpartition(":")
    if address.startswith("ray://"):
        host, _, port = address[len("ray://"):].rpartition(":")
    try:
        port = int(port)
    except ValueError:
        raise SweepError(f"address must be HOST:PORT (a Ray head node), got {address!r}") from None
    try:
        with socket.create_connection((host or "127.0.0.1", port), timeout=CONNECT_TIMEOUT):
            pass
    except OSError as exc:
        raise SweepError(f"cannot reach a Ray cluster at {address} ({exc.strerror or exc}); "
                         f"start one with `ray start --head` or check --address") from None


def _connect(ray, address, num_cpus):
    """Connect to the cluster at `address`, or start a local Ray; True if this call
    started or connected (and so must disconnect at the end)."""
    if ray.is_initialized():
        return False
    quiet = dict(logging_level="ERROR", log_to_driver=False, include_dashboard=False)
    if address and address != "local":
        _check_reachable(address)
        try:
            ray.init(address=address, **quiet)
        except Exception as exc:  # ConnectionError, an AuthenticationError (missing token) ...
            raise SweepError(f"cannot connect to the Ray cluster at {address}: "
                             f"{str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}"
                             ) from None
        return True
    # Nothing leaves this machine: no usage statistics (and the nodes on the loopback
    # interface, see require_ray).
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(address="local", num_cpus=num_cpus or os.cpu_count() or 1, **quiet)
    return True


# --------------------------------------------------------------------------- files


def _atomic_write(path: Path, data: bytes) -> Path:
    # mkstemp's 0600 would make the result private: the umask's permissions instead
    return atomic_write(path, lambda fh: fh.write(data), mode=0o666 & ~_UMASK)


def _jsonable(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN: the accuracies before a first evaluation
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def _from_json_result(r):
    for key in ("val_acc", "train_acc"):
        if r.get(key) is None:
            r[key] = math.nan
    return r


def _sort_key(r):
    v = r["val_acc"]
    return (-(v if math.isfinite(v) else -1.0), r["trial"])


def _best_key(r):
    """Higher is better; ties go to the lower trial number (the table's order)."""
    return (r["val_acc"], -r["trial"])


def _shown_params(space):
    """Parameters shown in the table: the ones the space sets (the searched first)."""
    varying = [k for k, v in space.items() if hasattr(v, "values") or hasattr(v, "low")]
    fixed = [k for k in space if k not in varying]
    return varying + fixed


def _value_text(name, value):
    if name == "hidden":
        return hidden_text(value)
    if isinstance(value, float):
        return f"{value:.3g}" if name not in ("dropout",) else f"{value:.2f}"
    return str(value).lower() if isinstance(value, bool) else str(value)


def format_table(results: list[dict], space: dict, *, limit: int | None = None) -> str:
    """The results as a text table, in the given order: trial, the space's parameters,
    validation and training accuracy, epochs, seconds, status.

    Parameters
    ----------
    results : list of dict
    space : dict
        The sweep's space (its parameters become columns).
    limit : int, optional
        Show only the first `limit` rows (and how many more there are).

    Returns
    -------
    str
        Lines of right-aligned columns, a header first.
    """
    names = _shown_params(space)
    head = ["rank", "trial"] + names + ["val acc", "train acc", "epochs run", "seconds", "status"]
    rows = []
    for rank, r in enumerate(results[:limit] if limit else results, 1):
        rows.append([str(rank), str(r["trial"])]
                    + [_value_text(n, r["params"][n]) for n in names]
                    + [f"{r['val_acc']:.4f}", f"{r['train_acc']:.4f}", str(r["epochs"]),
                       f"{r['seconds']:.2f}", r["status"]])
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h)
              for i, h in enumerate(head)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(head, widths))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in rows]
    if limit and len(results) > limit:
        lines.append(f"... {len(results) - limit} more in {CSV_FILE}")
    return "\n".join(lines)


def _csv_bytes(results) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    names = list(PARAMETERS)
    w.writerow(["rank", "trial"] + names + ["val_acc", "train_acc", "epochs_run", "steps",
                                            "seconds", "status", "seed", "error"])
    for rank, r in enumerate(results, 1):
        w.writerow([rank, r["trial"]]
                   + [hidden_text(r["params"][n]) if n == "hidden" else r["params"][n]
                      for n in names]
                   + [r["val_acc"], r["train_acc"], r["epochs"], r["steps"],
                      f"{r['seconds']:.4f}", r["status"], r["seed"], r.get("error") or ""])
    return buf.getvalue().encode()


def plot_best(results: list[dict], path: str | os.PathLike, *, count: int = 20,
              columns: int = 5) -> None:
    """The book's "Best-N" figure: validation (solid) and training (dashed) accuracy per
    epoch of the best `count` trials, `columns` per row, y from 0 to 1.

    Parameters
    ----------
    results : list of dict
        Best first.
    path : str or os.PathLike
        Where the PNG goes (written atomically).

    Returns
    -------
    pathlib.Path
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    shown = [r for r in results if r["val_acc_list"]][:count]
    rows = max(1, math.ceil(len(shown) / columns))
    fig = Figure(figsize=(2.6 * columns, 2.1 * rows + 0.6), layout="constrained")
    FigureCanvasAgg(fig)
    for i, r in enumerate(shown):
        ax = fig.add_subplot(rows, columns, i + 1)
        ax.set_title(f"Best-{i + 1} (trial {r['trial']})", fontsize=9)
        ax.set_ylim(0.0, 1.0)
        if i % columns:
            ax.set_yticks([])
        ax.set_xticks([])
        x = np.arange(len(r["val_acc_list"]))
        ax.plot(x, r["val_acc_list"], label="val")
        ax.plot(x, r["train_acc_list"], "--", label="train")
        if i == 0:
            ax.legend(loc="lower right", fontsize=7)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return _atomic_write(Path(path), buf.getvalue())


# --------------------------------------------------------------------------- the sweep


def sweep(data: tuple, space: dict | None = None, *, trials: int | None = None,
          seed: int | None = None, train_size: int | None = 500, validation_rate: float = 0.2,
          dtype: str = "float32", out: str | os.PathLike | None = None, resume: bool = False,
          address: str | None = None, num_cpus: int | None = None, cpus_per_trial: int = 1,
          trials_per_task: int | None = None, max_retries: int = 3, early_stop: str | None = None,
          grace_epochs: int | None = None, progress: bool = True, meta: dict | None = None,
          on_start: Callable[..., object] | None = None) -> SweepResult:
    """Random and grid search over training settings, on Ray.

    Parameters
    ----------
    data : tuple
        ``(x, t)``: training images (N, 784) (or (N, 1, 28, 28)) and int labels (N,) or
        one-hot rows; or ``load_mnist``'s ``((x_train, t_train), (x_test, t_test))``, of
        which only the training pair is used (the test set stays untouched, as in the
        book).
    space : dict, optional
        ``{parameter: value or distribution}`` (:mod:`fastbp.sweep_space`; strings such as
        ``"loguniform:1e-6:1e-2"`` are parsed). Default: the book's
        (:func:`fastbp.sweep_space.book_space`). Parameters left out take the book's
        values (:data:`fastbp.sweep_space.DEFAULTS`).
    trials : int, optional
        Number of trials (default: the grid's size with a grid, else 100). With
        ``resume``, may be larger than the stored number to extend the sweep.
    seed : int, optional
        The sweep seed: the validation split and every trial's parameters and seed.
        Default: drawn at random (stored in ``out/sweep.json`` and ``SweepResult.seed``).
    train_size : int or None
        Training images kept (the first ones, default 500 as the book; None: all).
    validation_rate : float
        Share of them held out for validation (default 0.2).
    dtype : {"float32", "float64"}
        The networks' dtype (default float32; the book computes in float64).
    out : str or os.PathLike, optional
        Output folder (see the module's notes). Without it nothing is written.
    resume : bool
        Continue the sweep in `out` with its stored settings (`space`, `seed` and
        `early_stop` must be None or equal to them; `train_size`, `validation_rate`,
        `dtype` and `grace_epochs` are ignored); finished trials are not run again.
    address : str, optional
        ``HOST:PORT`` of a running Ray cluster (default: ``$RAY_ADDRESS``, else a local
        Ray started here). An already initialised Ray (``ray.init`` by the caller) is used
        as it is.
    num_cpus : int, optional
        CPUs of the local Ray (default: all cores).
    cpus_per_trial : int
        CPUs (and Numba/BLAS threads) per trial (default 1).
    trials_per_task : int, optional
        Trials per Ray task (default: chosen so each CPU slot gets about
        :data:`TASKS_PER_SLOT` tasks).
    max_retries : int
        Times Ray re-runs a task whose worker died (default 3).
    early_stop : {None, "median"}
        ``"median"``: after `grace_epochs`, a trial stops when its best validation accuracy
        is below the median of the finished trials' at the same epoch. Which trials have
        finished depends on timing, so early-stopped sweeps are not reproducible.
    grace_epochs : int, optional
        Epochs before the median rule applies (default a quarter of the epochs).
    progress : bool
        A progress bar (tqdm) with trials done, running and failed.
    meta : dict, optional
        JSON values stored in ``sweep.json`` and the checkpoint (e.g. the dataset name).
    on_start : callable, optional
        Called as ``on_start(info)`` once Ray is up, before the first trial, with a dict:
        ``slots``, ``trials_per_task``, ``pending``, ``skipped``, ``address``, ``seed``.

    Returns
    -------
    SweepResult

    Raises
    ------
    SweepError
        Bad settings (unknown parameter, bad bound, empty choice, no trials ...), Ray not
        installed or not reachable, an `out` that already holds another sweep, or a
        `resume` that conflicts with the stored settings; raised before `out` is created
        or written.
    TypeError, ValueError
        `data` is not images and labels.
    """
    t_start = time.perf_counter()
    x, t = _images(data)
    out = Path(out) if out is not None else None
    if resume and out is None:
        raise SweepError("resume needs out, the folder of the sweep to continue")
    for name, value, minimum in (("cpus_per_trial", cpus_per_trial, 1),
                                 ("max_retries", max_retries, 0)):
        _int(name, value, minimum)
    if trials_per_task is not None:
        _int("trials_per_task", trials_per_task, 1)
    if num_cpus is not None:
        _int("num_cpus", num_cpus, 1)
    previous = []
    if resume:
        stored = load_settings(out)
        given = dict(space=None if space is None else space_to_json(check_space(space)),
                     seed=seed, early_stop=early_stop)
        for key, value in given.items():
            if value is not None and value != stored[key]:
                raise SweepError(f"{key}={value!r} conflicts with the stored sweep's "
                                 f"{stored[key]!r}; leave it out to resume")
        if trials is not None and trials < stored["trials"]:
            raise SweepError(f"trials={trials} is fewer than the stored sweep's "
                             f"{stored['trials']}; leave it out to resume")
        settings = _settings(space_from_json(stored["space"]), trials or stored["trials"],
                             stored["seed"], stored["train_size"], stored["validation_rate"],
                             stored["dtype"], stored["early_stop"], stored["grace_epochs"],
                             len(x), stored.get("meta"))
        previous = [_from_json_result(r) for r in read_results(out)]
    else:
        if seed is None:
            seed = int(np.random.SeedSequence().generate_state(1, np.uint32)[0])
        settings = _settings(space, trials, seed, train_size, validation_rate, dtype, early_stop,
                             grace_epochs, len(x), meta)
        if out is not None and (out / SETTINGS_FILE).exists():
            raise SweepError(f"{out} already holds a sweep; continue it with resume (--resume "
                             f"{out}) or choose another folder")
        if out is not None and out.exists() and not out.is_dir():
            raise SweepError(f"{out} exists and is not a folder")
    space = space_from_json(settings["space"])
    done = {r["trial"] for r in previous}
    pending = [i for i in range(settings["trials"]) if i not in done]
    split = _split(x, t, settings)

    address = address or os.environ.get("RAY_ADDRESS")
    ray = require_ray(address)
    owns = _connect(ray, address, num_cpus)
    try:
        # Only now, with the settings checked and Ray up, is anything written.
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            if not resume or trials is not None:
                _atomic_write(out / SETTINGS_FILE, json.dumps(settings, indent=1).encode())
            _drop_cut_line(out / RESULTS_FILE, previous)
        new, failed = _run(ray, pending, space, settings, split, previous, out, cpus_per_trial,
                           trials_per_task, max_retries, progress, on_start, address)
    finally:
        if owns:
            ray.shutdown()
    results = sorted(previous + new, key=_sort_key)
    files = {}
    if out is not None:
        files["settings"] = out / SETTINGS_FILE
        files["results"] = out / RESULTS_FILE
        files["csv"] = _atomic_write(out / CSV_FILE, _csv_bytes(results))
        if any(r["val_acc_list"] for r in results):
            files["figure"] = plot_best(results, out / FIGURE_FILE)
        if (out / CHECKPOINT_FILE).exists():
            files["checkpoint"] = out / CHECKPOINT_FILE
    return SweepResult(results=results, failed=sorted(failed), ran=len(new),
                       skipped=len(previous), seconds=time.perf_counter() - t_start,
                       seed=settings["seed"], space=space, files=files)


def _drop_cut_line(path: Path, previous):
    """Rewrite ``results.jsonl`` without a last line cut short by a crash, so appending
    starts on a fresh line."""
    if path.exists() and path.stat().st_size and not path.read_bytes().endswith(b"\n"):
        lines = b"".join(json.dumps(_jsonable(r)).encode() + b"\n" for r in previous)
        _atomic_write(path, lines)


def _checkpoint_key(out, previous):
    """The best key (:func:`_best_key`) of the trial in ``out/best.npz``, or None."""
    if out is None or not (out / CHECKPOINT_FILE).exists():
        return None
    from .checkpoint import load_checkpoint

    try:
        trial = load_checkpoint(out / CHECKPOINT_FILE).meta.get("trial")
    except ValueError:
        return None
    for r in previous:
        if r["trial"] == trial:
            return _best_key(r)
    return None


def _run(ray, pending, space, settings, split, previous, out, cpus_per_trial, trials_per_task,
         max_retries, progress, on_start, address):
    """Submit `pending` trials in batches, collect results as they come; returns
    ``(results, failed trial numbers)``."""
    from tqdm.auto import tqdm

    from .sweep_trial import run_batch

    slots = max(1, int(ray.cluster_resources().get("CPU", 1) // cpus_per_trial))
    per_task = trials_per_task or max(1, math.ceil(len(pending) / (slots * TASKS_PER_SLOT)))
    if on_start is not None:
        on_start(dict(slots=slots, trials_per_task=per_task, pending=len(pending),
                      skipped=len(previous), address=address or "local", seed=settings["seed"]))
    remote = ray.remote(run_batch).options(num_cpus=cpus_per_trial, max_retries=max_retries,
                                           retry_exceptions=False)
    data_ref = ray.put(split)
    batches = [pending[i:i + per_task] for i in range(0, len(pending), per_task)]
    batches.reverse()  # pop() from the end: first trials first
    best_key = _checkpoint_key(out, previous)
    finished = list(previous)
    curves = [r["val_acc_list"] for r in finished if r["status"] in (OK, STOPPED)]
    meta = dict(settings["meta"], sweep_seed=settings["seed"], train_size=settings["train_size"],
                validation_rate=settings["validation_rate"])
    new, failed, inflight = [], [], {}
    results_path = out / RESULTS_FILE if out is not None else None
    log = open(results_path, "ab") if results_path is not None else None
    bar = tqdm(total=settings["trials"], initial=len(previous), disable=not progress,
               unit="trial", dynamic_ncols=True, file=sys.stderr)

    def show():
        running = min(sum(len(b) for b in inflight.values()), slots)
        bar.set_postfix_str(f"running {running}, failed {len(failed)}", refresh=True)

    def submit():
        specs = [trial_spec(space, settings["seed"], i) for i in batches.pop()]
        reference = (median_reference(curves, MEDIAN_MIN_TRIALS)
                     if settings["early_stop"] == "median" else None)
        # Ties go to the lower trial: a batch must beat (val, -trial) of the current best.
        above = -1.0 if best_key is None else best_key[0]
        ref = remote.remote(specs, data_ref, dtype_name=settings["dtype"],
                            threads=cpus_per_trial, reference=reference,
                            grace=settings["grace_epochs"],
                            best_above=math.inf if out is None else above - 1e-12, meta=meta)
        inflight[ref] = [s["trial"] for s in specs]

    try:
        while batches and len(inflight) < 2 * slots:
            submit()
        show()
        while inflight:
            ready, _ = ray.wait(list(inflight), num_returns=1)
            ref = ready[0]
            trials = inflight.pop(ref)
            try:
                batch = ray.get(ref)
            except (ray.exceptions.RayError, OSError) as exc:
                failed.extend(trials)
                bar.write(f"fastbp sweep: trials {trials} failed after {max_retries} retries: "
                          f"{str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}")
                batch = {"results": [], "checkpoint": None}
            if batches:
                submit()
            for r in batch["results"]:
                if log is not None:
                    log.write(json.dumps(_jsonable(r)).encode() + b"\n")
                new.append(r)
                finished.append(r)
                if r["status"] in (OK, STOPPED):
                    curves.append(r["val_acc_list"])
            if log is not None and batch["results"]:
                log.flush()
                os.fsync(log.fileno())
            if batch["checkpoint"] is not None:
                trial = batch["checkpoint_trial"]
                r = next(r for r in batch["results"] if r["trial"] == trial)
                if best_key is None or _best_key(r) > best_key:
                    _atomic_write(out / CHECKPOINT_FILE, batch["checkpoint"])
                    best_key = _best_key(r)
            bar.update(len(batch["results"]))
            show()
    except BaseException:
        for ref in inflight:
            ray.cancel(ref, force=True)
        raise
    finally:
        bar.close()
        if log is not None:
            log.close()
    return new, failed
