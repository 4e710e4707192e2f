"""Command line: ``fastbp train``, ``gradcheck``, ``bench``, ``sweep`` and ``calibrate`` (also
``python -m fastbp``).

Each subcommand is a ``_add_<name>(subparsers)`` function that declares its
arguments and a ``cmd_<name>(args) -> int`` function that runs it; adding a
subcommand means writing those two and listing the first in
:data:`SUBCOMMANDS`. Errors a user can cause (bad arguments, missing data,
a bad or mismatched checkpoint, a run that diverges) end with one
``fastbp: error: ...`` line and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

BOOK = {"iterations": 10000, "batch_size": 100, "lr": 0.1, "hidden": 50, "dtype": "float32", "dataset": "mnist"}
DATASET_CHOICES = ("mnist", "fashion-mnist")
DTYPE_CHOICES = ("float32", "float64")
ACTIVATION_CHOICES = ("relu", "sigmoid")
OPTIMIZER_CHOICES = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam")


class UsageError(Exception):
    """A user error found after argument parsing (conflicting options ...)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of usage + error
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _number(text, convert, expected, accept, must, show_text=False):
    """`text` as ``convert(text)`` if `accept` holds for it, else an ArgumentTypeError:
    "expected <expected>" when it does not convert, "<must>, got ..." when it is refused
    (showing the converted value, or the text itself with `show_text`)."""
    try:
        value = convert(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if not accept(value):
        raise argparse.ArgumentTypeError(f"{must}, got {text if show_text else value}")
    return value


def _positive_int(text: str) -> int:
    return _number(text, int, "a positive integer", lambda v: v >= 1,
                   "must be a positive integer")


def _nonneg_int(text: str) -> int:
    return _number(text, int, "a non-negative integer", lambda v: v >= 0, "must be >= 0")


def _positive_float(text: str) -> float:
    return _number(text, float, "a positive number", lambda v: v > 0 and np.isfinite(v),
                   "must be a positive finite number", show_text=True)


def _hidden_sizes(text: str):
    """``"50"`` -> 50 (the two-layer network's hidden size); ``"100,100"`` -> [100, 100]."""
    parts = [p.strip() for p in text.split(",")]
    if parts and not parts[-1] and len(parts) > 1:
        parts.pop()  # a trailing comma
    try:
        sizes = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer or a comma-separated list such as "
                                         f"100,100,100, got {text!r}") from None
    if min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"hidden sizes must be positive integers, got {text!r}")
    return sizes[0] if len(sizes) == 1 else sizes


def _init(text: str):
    """``he``, ``xavier`` or a positive standard deviation."""
    if text.lower() in ("he", "xavier"):
        return text.lower()
    return _number(text, float, "he, xavier or a positive number",
                   lambda v: v > 0 and np.isfinite(v), "expected he, xavier or a positive number",
                   show_text=True)


def _nonneg_float(text: str) -> float:
    return _number(text, float, "a number >= 0", lambda v: v >= 0 and np.isfinite(v),
                   "must be a finite number >= 0", show_text=True)


def _ratio(text: str) -> float:
    return _number(text, float, "a number in [0, 1)", lambda v: 0 <= v < 1, "must be in [0, 1)",
                   show_text=True)


def _add_data_args(p):
    p.add_argument("--dataset", choices=DATASET_CHOICES, default=None,
                   help=f"dataset (default {BOOK['dataset']}; with --resume, the checkpoint's)")
    p.add_argument("--data-dir", metavar="D", default=None,
                   help="folder holding mnist/ and/or fashion-mnist/ (searched before FASTBP_DATA_DIR and the cache)")
    p.add_argument("--no-download", action="store_true", help="fail instead of downloading missing files")


def _add_train(sub):
    p = sub.add_parser("train", help="train the book's networks (ch. 5 and 6) with a progress bar",
                       description="Train the book's TwoLayerNet with random mini-batch SGD. "
                                   "Defaults reproduce the book: 10000 iterations, batch 100, lr 0.1, hidden 50. "
                                   "A list of hidden sizes or any of --activation, --init, --optimizer, "
                                   "--weight-decay, --dropout, --batchnorm trains the book's chapter-6 "
                                   "MultiLayerNet(Extend) instead (defaults: relu, He init, SGD).")
    _add_data_args(p)
    length = p.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=_positive_int, metavar="N", help="train N epochs (N * train_size // batch)")
    length.add_argument("--iters", type=_positive_int, metavar="N",
                        help=f"total training steps (default {BOOK['iterations']}; counts steps before --resume)")
    p.add_argument("--batch-size", type=_positive_int, metavar="B",
                   help=f"mini-batch size (default {BOOK['batch_size']})")
    p.add_argument("--hidden", type=_hidden_sizes, metavar="H[,H...]",
                   help=f"hidden units (default {BOOK['hidden']}); a list such as 100,100,100,100 trains "
                        "a MultiLayerNet with one hidden layer each")
    p.add_argument("--model", choices=("mlp", "convnet"), default=None,
                   help="convnet: the book's chapter-7 SimpleConvNet (30 filters 5x5, 2x2 max pool, "
                        "--hidden 100, --init 0.01, Adam lr 0.001); default mlp (the networks above; "
                        "with --resume, the checkpoint's)")
    p.add_argument("--activation", type=str.lower, choices=ACTIVATION_CHOICES,
                   help="hidden activation of a MultiLayerNet (default relu)")
    p.add_argument("--init", type=_init, metavar="he|xavier|STD",
                   help="initial weights of a MultiLayerNet: He, Xavier or this standard deviation (default he)")
    p.add_argument("--optimizer", type=str.lower, choices=OPTIMIZER_CHOICES,
                   help="optimizer of a MultiLayerNet (default sgd)")
    p.add_argument("--lr", type=_positive_float,
                   help=f"learning rate (default {BOOK['lr']}; with --optimizer etc. the optimizer's: "
                        "0.01, adam 0.001)")
    p.add_argument("--weight-decay", type=_nonneg_float, metavar="L", help="L2 weight decay lambda (default 0)")
    p.add_argument("--dropout", type=_ratio, metavar="R",
                   help="Dropout ratio after each hidden activation, in [0, 1) (default 0: none)")
    p.add_argument("--batchnorm", action="store_true", default=None,
                   help="BatchNorm before each hidden activation")
    p.add_argument("--dtype", choices=DTYPE_CHOICES, help=f"network dtype (default {BOOK['dtype']})")
    p.add_argument("--seed", type=_nonneg_int, help="seed for weights and mini-batches (default: random, printed)")
    p.add_argument("--threads", type=_positive_int, metavar="T", help="threads for the compiled kernels")
    p.add_argument("--out", metavar="DIR", help="write checkpoint.npz and curves.png here")
    p.add_argument("--resume", metavar="CKPT",
                   help="continue from a checkpoint written by --out, exactly as the uninterrupted run; "
                        "without --out, checkpoints keep going to CKPT")
    p.add_argument("--eval-every", type=_positive_int, metavar="N",
                   help="steps between evaluations and checkpoints (default: one epoch; with --resume, "
                        "the checkpoint's)")
    p.add_argument("--eval-chunk", type=_positive_int, default=10000, metavar="R",
                   help="rows per predict call when measuring accuracy (default 10000)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)


def _add_gradcheck(sub):
    p = sub.add_parser("gradcheck", help="compare backprop gradients with numerical ones on real images",
                       description="The book's gradient check: the mean absolute difference between backprop "
                                   "and numerical gradients per parameter "
                                   "on a few real images, for a freshly initialised network.")
    _add_data_args(p)
    p.add_argument("--split", choices=("train", "test"), default="test",
                   help="images to use (default test: available even when MNIST training images are not)")
    p.add_argument("--batch", type=_positive_int, default=3, help="number of images (default 3, like the book)")
    p.add_argument("--hidden", type=_positive_int, default=BOOK["hidden"], help="hidden units (default 50)")
    p.add_argument("--dtype", choices=DTYPE_CHOICES, default="float64",
                   help="network dtype (default float64: numerical gradients are too coarse in float32)")
    p.add_argument("--seed", type=_nonneg_int, default=0)
    p.add_argument("--tol", type=_positive_float, default=None,
                   help="largest accepted mean difference (default 1e-6 for float64, 1e-3 for float32)")
    p.add_argument("--threads", type=_positive_int, metavar="T", help="threads for the compiled kernels")
    p.set_defaults(func=cmd_gradcheck)


def _batch_list(text: str) -> list:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated batch sizes, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"batch sizes must be positive integers, got {text!r}")
    return values


def _add_bench(sub):
    from .bench import BATCH_SIZES, NAMES

    p = sub.add_parser("bench", help="time fastbp's kernels and train step against plain NumPy per batch size",
                       description="Quick fastbp vs plain-NumPy timings (minimum over alternating samples, "
                                   "compilation excluded) and speed-up per batch size, for each kernel and the "
                                   "TwoLayerNet 784-50-10 train step. The asv suite in benchmarks/ tracks the same "
                                   "over history.")
    p.add_argument("--batch-sizes", type=_batch_list, default=list(BATCH_SIZES), metavar="N,N,...",
                   help=f"batch sizes (default {','.join(map(str, BATCH_SIZES))})")
    p.add_argument("--dtype", choices=DTYPE_CHOICES, default="float32", help="dtype (default float32)")
    p.add_argument("--repeat", type=_positive_int, default=5, help="alternating samples per side (default 5)")
    p.add_argument("--only", metavar="NAME,...", default=None,
                   help=f"comma-separated subset of: {', '.join(NAMES)}")
    p.add_argument("--threads", type=_positive_int, metavar="T", help="threads for Numba and BLAS")
    p.add_argument("--plot", metavar="FILE", help="write a speed-up vs batch size PNG")
    p.set_defaults(func=cmd_bench)


def cmd_bench(args) -> int:
    """Run ``fastbp bench``."""
    from .bench import NAMES, format_table, plot, run_bench
    from .threads import blas_threads, get_num_threads

    _set_threads(args.threads)
    names = NAMES if args.only is None else tuple(n.strip() for n in args.only.split(",") if n.strip())
    print(f"fastbp bench: {args.dtype}, Numba threads {get_num_threads()}, BLAS threads "
          f"{sorted(set(blas_threads().values()))}, best of {args.repeat}", flush=True)
    rows = run_bench(args.batch_sizes, np.dtype(args.dtype).type, args.repeat, names=names)
    print(format_table(rows))
    if args.plot:
        print(f"wrote {plot(rows, args.plot)}")
    return 0


#: ``fastbp sweep`` options that set a parameter of the search space (dest, metavar).
_SWEEP_SPACE = (("lr", "SPEC"), ("weight_decay", "SPEC"), ("hidden", "SPEC"), ("activation", "SPEC"),
                ("init", "SPEC"), ("optimizer", "SPEC"), ("batch_size", "SPEC"), ("dropout", "SPEC"),
                ("batchnorm", "SPEC"), ("epochs", "SPEC"))


def _add_sweep(sub):
    p = sub.add_parser(
        "sweep", help="hyperparameter search (random and grid) on a local Ray or a Ray cluster",
        description="The book's random search (ch06/hyperparameter_optimization.py) and grid search over "
                    "every training setting, on Ray (pip install 'fastbp[sweep]'). Defaults reproduce the "
                    "book: 100 trials of a 784-100x6-10 ReLU network, SGD, 50 epochs of batch 100 on the "
                    "first 500 training images, 20 percent of them held out for validation, lr loguniform:1e-6:1e-2, "
                    "weight decay loguniform:1e-8:1e-4. A SPEC is a value (0.01, 100x6, adam, true) or "
                    "uniform:LOW:HIGH, loguniform:LOW:HIGH, choice:A,B,... or grid:A,B,...; hidden sizes are "
                    "written 100x6 or 100-50. Without --address (or RAY_ADDRESS) a local Ray runs one trial "
                    "per core.")
    _add_data_args(p)
    p.add_argument("--config", metavar="FILE.toml", help="settings and a [space] table from a TOML file "
                                                          "(options given here override it)")
    p.add_argument("--trials", type=int, metavar="N",  # checked by fastbp.sweep: one message for CLI and TOML
                   help="number of trials (default 100, or the grid's size for a grid search)")
    p.add_argument("--out", metavar="DIR", help="output folder (results.csv, results.jsonl, best20.png, best.npz)")
    p.add_argument("--resume", metavar="DIR", help="continue the sweep in DIR, skipping its finished trials")
    p.add_argument("--seed", type=_nonneg_int, help="sweep seed: split and every trial (default: random, printed)")
    space = p.add_argument_group("search space (each option a SPEC)")
    for dest, metavar in _SWEEP_SPACE:
        space.add_argument("--" + dest.replace("_", "-"), dest=dest, metavar=metavar, default=None)
    p.add_argument("--train-size", type=_positive_int, metavar="N", help="training images kept (default 500)")
    p.add_argument("--validation-rate", type=_ratio, metavar="R", help="share held out for validation (default 0.2)")
    p.add_argument("--dtype", choices=DTYPE_CHOICES, help="network dtype (default float32)")
    p.add_argument("--early-stop", choices=("median",), default=None,
                   help="stop a trial whose best val acc is below the finished trials' median at that epoch")
    p.add_argument("--grace-epochs", type=_positive_int, metavar="E",
                   help="epochs before --early-stop applies (default a quarter of the epochs)")
    p.add_argument("--address", metavar="HOST:PORT",
                   help="a running Ray cluster (default RAY_ADDRESS, else a local Ray on this machine)")
    p.add_argument("--num-cpus", type=_positive_int, metavar="N", help="CPUs of the local Ray (default all cores)")
    p.add_argument("--cpus-per-trial", type=_positive_int, metavar="C",
                   help="CPUs, Numba and BLAS threads per trial (default 1)")
    p.add_argument("--trials-per-task", type=_positive_int, metavar="K", help="trials per Ray task (default: auto)")
    p.add_argument("--max-retries", type=_nonneg_int, metavar="R",
                   help="reruns of a task whose worker died (default 3)")
    p.add_argument("--top", type=_nonneg_int, default=20, metavar="N", help="rows of the printed table (default 20)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_sweep)


def _add_calibrate(sub):
    p = sub.add_parser("calibrate", help="measure where this machine's parallel kernels start to pay",
                       description="Time the serial and parallel twins of fastbp's kernels over a grid of "
                                   "sizes and save the crossovers as this machine's thresholds (keyed by CPU, "
                                   "Numba pool size and threading layer). New processes compile with them; "
                                   "the first run after calibrating compiles every kernel once more. Takes "
                                   "well under a minute.")
    p.add_argument("--out", metavar="FILE",
                   help="calibration file to write (default FASTBP_THRESHOLDS, else "
                        "~/.cache/fastbp/thresholds.json)")
    p.add_argument("--show", action="store_true",
                   help="print the thresholds this process uses and where they come from; measure nothing")
    p.add_argument("--dry-run", action="store_true", help="measure and print, write nothing")
    p.add_argument("--samples", type=_positive_int, default=7,
                   help="alternating samples per twin and size, the median is kept (default 7)")
    p.set_defaults(func=cmd_calibrate)


def cmd_calibrate(args) -> int:
    """Run ``fastbp calibrate``."""
    from .calibrate import calibrate, describe, save
    from .kernels import NEVER

    if args.show:
        print(describe())
        return 0
    print("fastbp calibrate: timing the serial and parallel twins", flush=True)
    result = calibrate(samples=args.samples, progress=lambda line: print(line, flush=True))
    for name, value in result.thresholds.items():
        print(f"{name} = {'never (serial only)' if value == NEVER else f'{value:,}'}")
    if not args.dry_run:
        print(f"wrote {save(result, args.out)}; new processes use these thresholds"
              + (" when FASTBP_THRESHOLDS names that file" if args.out else ""))
    return 0


#: Subcommand builders, in help order.
SUBCOMMANDS = [_add_train, _add_gradcheck, _add_bench, _add_sweep, _add_calibrate]


def build_parser() -> argparse.ArgumentParser:
    """The ``fastbp`` argument parser with every subcommand."""
    parser = _Parser(prog="fastbp", description="Fast CPU backpropagation for the book's networks.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def _set_threads(n):
    if n is not None:
        import fastbp

        fastbp.set_num_threads(n)


def _one_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    if not lines:
        return type(exc).__name__
    # Dataset errors end with where to put the files: keep the first and last lines.
    return lines[0] if len(lines) == 1 else f"{lines[0]} {lines[-1]}"


# --------------------------------------------------------------------------- train


#: Options of ``fastbp train`` that fix the network or the optimizer: (option, key of
#: :attr:`fastbp.checkpoint.Checkpoint.settings`).
_NETWORK_OPTIONS = (("hidden", "hidden_size"), ("activation", "activation"), ("init", "weight_init_std"),
                    ("optimizer", "optimizer"), ("weight_decay", "weight_decay"), ("dropout", "dropout"),
                    ("batchnorm", "batchnorm"))
_INIT_ALIASES = {"relu": "he", "sigmoid": "xavier"}


def _normalized(key, value):
    """A network setting in one comparable form (CLI option or checkpoint value)."""
    if value is None:
        return None
    if key == "hidden_size":
        return [value] if isinstance(value, int) else list(value)
    if key == "optimizer":
        return value.lower()
    if key == "weight_init_std" and isinstance(value, str):
        return _INIT_ALIASES.get(value.lower(), value.lower())
    return value


def _shown(value) -> str:
    if isinstance(value, list):
        return ",".join(map(str, value))
    return "none" if value is None else str(value)


def _resolve_train_settings(args):
    """Load the checkpoint of --resume (None without) and refuse options that conflict with
    it; return ``(checkpoint, dataset, dtype)``."""
    from .checkpoint import load_checkpoint

    ckpt = None
    meta = {}
    if args.resume:
        ckpt = load_checkpoint(args.resume)
        meta = ckpt.meta
        for opt, key in (("dtype", "dtype"), ("dataset", "dataset")):
            given = getattr(args, opt)
            if given is not None and key in meta and str(given) != str(meta[key]):
                raise UsageError(f"--{opt} {given} conflicts with the checkpoint's {meta[key]}; drop --{opt} to resume")
        settings = ckpt.settings
        for opt, key in _NETWORK_OPTIONS:
            given, stored = _normalized(key, getattr(args, opt)), _normalized(key, settings.get(key))
            if given is None or (key == "optimizer" and stored is None):
                continue  # not given, or a checkpoint saved without an optimizer
            if given != stored:
                flag = "--" + opt.replace("_", "-")
                if key == "batchnorm":  # a flag without a value: only True can be given
                    raise UsageError(f"--batchnorm conflicts with the checkpoint's {settings['network']}, "
                                     "which has no BatchNorm; drop --batchnorm to resume")
                raise UsageError(f"{flag} {_shown(given)} conflicts with the checkpoint's {_shown(stored)} "
                                 f"(a {settings['network']}); drop {flag} to resume")
        if args.seed is not None and args.seed != meta.get("seed"):
            raise UsageError(f"--seed {args.seed} conflicts with the checkpoint's seed {meta.get('seed')}; drop --seed")
    dataset = args.dataset if args.dataset is not None else meta.get("dataset", BOOK["dataset"])
    dtype = args.dtype if args.dtype is not None else meta.get("dtype", BOOK["dtype"])
    return ckpt, dataset, dtype


def cmd_train(args) -> int:
    """Run ``fastbp train``."""
    from tqdm.auto import tqdm

    from .datasets import load_mnist
    from .plotting import plot_history
    from .train import describe, train

    ckpt, dataset, dtype = _resolve_train_settings(args)
    _set_threads(args.threads)
    out = Path(args.out) if args.out else None
    if out:
        out.mkdir(parents=True, exist_ok=True)  # fail before loading data and training, not after
    ckpt_path = out / "checkpoint.npz" if out else None
    if ckpt_path is None and args.resume:
        # Progress made on a resumed run is never thrown away: it goes back to its file.
        ckpt_path = Path(args.resume)
        print(f"fastbp train: no --out: checkpoints go to {ckpt_path}, the file resumed from", flush=True)
    data = load_mnist(dataset=dataset, data_dir=args.data_dir, download=not args.no_download)

    header = f"{'epoch':>7} {'step':>7} {'loss':>8} {'train acc':>9} {'test acc':>9} {'seconds':>8}"
    printed_header = False

    def on_start(net, optimizer):
        print(f"fastbp train: {dataset}, {len(data[0][0])} train / {len(data[1][0])} test images, "
              f"{describe(net, optimizer)}, batch {batch_size}, {np.dtype(net.params['W1'].dtype).name}"
              + (f", resuming at step {ckpt.step}" if ckpt else ""), flush=True)

    def on_epoch(rec):
        nonlocal printed_header
        if not printed_header:
            tqdm.write(header)
            printed_header = True
        epoch = f"{rec.epoch:.0f}" if rec.epoch == int(rec.epoch) else f"{rec.epoch:.2f}"
        tqdm.write(f"{epoch:>7} {rec.step:>7} {rec.loss:8.4f} {rec.train_acc:9.4f} {rec.test_acc:9.4f} "
                   f"{rec.seconds:8.2f}")

    batch_size = args.batch_size if args.batch_size is not None else (ckpt.meta if ckpt else {}).get(
        "batch_size", BOOK["batch_size"])
    t0 = time.perf_counter()
    try:
        result = train(
            data,
            iterations=args.iters,
            epochs=args.epochs,
            batch_size=batch_size,
            lr=args.lr,
            hidden_size=args.hidden,
            activation=args.activation,
            weight_init_std=args.init,
            optimizer=args.optimizer,
            weight_decay=args.weight_decay,
            dropout=args.dropout,
            batchnorm=args.batchnorm,
            dtype=np.dtype(dtype).type,
            seed=args.seed,
            model=args.model,
            resume=ckpt,
            checkpoint=ckpt_path,
            checkpoint_meta={"dataset": dataset},
            eval_every=args.eval_every,
            eval_chunk=args.eval_chunk,
            progress=not args.no_progress,
            on_start=on_start,
            on_epoch=on_epoch,
        )
    except KeyboardInterrupt:
        where = f"; resume with: fastbp train --resume {ckpt_path}" if ckpt_path else ""
        print(f"fastbp: interrupted{where}", file=sys.stderr)
        return 130
    wall = time.perf_counter() - t0
    tm, h = result.timings, result.history
    print(f"done: {tm['steps']} steps in {wall:.2f} s wall (kernel compile {tm['compile']:.2f} s, "
          f"evaluation {tm['eval']:.2f} s, batch gather {tm['gather']:.2f} s, train_step {tm['step']:.2f} s), "
          f"{tm['steps_per_second']:.0f} steps/s; "
          f"final test acc {h.test_acc[-1]:.4f}; seed {result.seed}")
    if out:
        png = plot_history(h, out / "curves.png", title=f"{dataset}: {result.title}, batch {batch_size}",
                           steps_per_epoch=result.settings.steps_per_epoch)
        print(f"wrote {ckpt_path} and {png}")
    elif ckpt_path:
        print(f"wrote {ckpt_path}")
    return 0


# --------------------------------------------------------------------------- gradcheck


def cmd_gradcheck(args) -> int:
    """Run ``fastbp gradcheck``; exit status 1 if a difference exceeds the tolerance."""
    import fastbp

    from .datasets import load_split

    _set_threads(args.threads)
    dataset = args.dataset or BOOK["dataset"]
    x, t = load_split(args.split, dataset=dataset, data_dir=args.data_dir, download=not args.no_download)
    dtype = np.dtype(args.dtype)
    x = np.ascontiguousarray(x[:args.batch], dtype=dtype)
    t = t[:args.batch]
    net = fastbp.TwoLayerNet(x.shape[1], args.hidden, 10, dtype=dtype.type, seed=args.seed)
    tol = args.tol if args.tol is not None else (1e-6 if dtype == np.float64 else 1e-3)
    t0 = time.perf_counter()
    diffs = fastbp.gradient_check(net, x, t)
    sec = time.perf_counter() - t0
    print(f"gradient check: {dataset} {args.split} images 0..{len(x) - 1}, hidden {args.hidden}, {dtype.name}, "
          f"tolerance {tol:g}")
    print(f"{'param':<6} {'shape':<12} {'mean |backprop - numerical|':>28}  ok")
    bad = 0
    for name, diff in diffs.items():
        ok = diff <= tol
        bad += not ok
        shape = "x".join(str(d) for d in net.params[name].shape)
        print(f"{name:<6} {shape:<12} {diff:28.3e}  {'yes' if ok else 'NO'}")
    if bad:
        # Seen with --hidden 10 --seed 0 (a pre-activation of 7.5e-5 < h = 1e-4): near 0,
        # ReLU's kink makes the central difference (not backprop) wrong.
        print(f"{bad} parameter(s) above tolerance ({sec:.2f} s); if only by a little, a ReLU input within "
              "the numerical step of 0 can cause it: retry with another --seed")
    else:
        print(f"all within tolerance ({sec:.2f} s)")
    return 1 if bad else 0


# --------------------------------------------------------------------------- sweep


def cmd_sweep(args) -> int:
    """Run ``fastbp sweep``; exit status 1 if trials were lost to worker failures."""
    from . import sweep as S
    from .datasets import load_split
    from .sweep_space import book_space, parse_spec

    if bool(args.out) == bool(args.resume):
        raise UsageError("give --out DIR for a new sweep or --resume DIR to continue one (not both)")
    config = S.read_config(args.config) if args.config else {}
    if args.resume and args.config:
        raise UsageError("--config conflicts with --resume, which uses the stored settings; drop --config")
    given = {dest: getattr(args, dest) for dest, _ in _SWEEP_SPACE if getattr(args, dest) is not None}
    space = {name: parse_spec(name, spec) for name, spec in given.items()}
    options = {k: v for k, v in config.items() if k != "space"}
    for key in ("trials", "seed", "train_size", "validation_rate", "dtype", "early_stop", "grace_epochs",
                "cpus_per_trial", "trials_per_task", "max_retries", "dataset"):
        if getattr(args, key, None) is not None:
            options[key] = getattr(args, key)
    dataset = options.pop("dataset", None)
    if args.resume:
        settings = S.load_settings(args.resume)
        if space:
            raise UsageError(f"--{next(iter(space)).replace('_', '-')} conflicts with --resume, which uses the "
                             f"stored space; drop it")
        stored_dataset = settings["meta"].get("dataset", BOOK["dataset"])
        if dataset is not None and dataset != stored_dataset:
            raise UsageError(f"--dataset {dataset} conflicts with the sweep's {stored_dataset}; drop --dataset")
        for key in ("train_size", "validation_rate", "dtype", "grace_epochs"):
            if key in options and options[key] != settings[key]:
                flag = "--" + key.replace("_", "-")
                raise UsageError(f"{flag} {options[key]} conflicts with the sweep's {settings[key]}; drop {flag}")
            options.pop(key, None)
        dataset, space, out = stored_dataset, None, Path(args.resume)
    else:
        space = {**book_space(), **config.get("space", {}), **space}
        dataset, out = dataset or BOOK["dataset"], Path(args.out)
    S.require_ray(args.address)  # before loading the data: say which extra to install first
    x, t = load_split("train", dataset=dataset, data_dir=args.data_dir, download=not args.no_download)

    def on_start(info):
        where = "a local Ray" if info["address"] == "local" else f"the Ray cluster at {info['address']}"
        skipped = f", {info['skipped']} finished earlier" if info["skipped"] else ""
        print(f"fastbp sweep: {dataset}, {info['pending']} trials to run{skipped}, on {where} "
              f"({info['slots']} at a time, {info['trials_per_task']} per task), seed {info['seed']}", flush=True)

    try:
        result = S.sweep((x, t), space, out=out, resume=bool(args.resume), address=args.address,
                         num_cpus=args.num_cpus, progress=not args.no_progress, meta={"dataset": dataset},
                         on_start=on_start, **options)
    except KeyboardInterrupt:
        print(f"fastbp: interrupted; finished trials are in {out / S.RESULTS_FILE}; continue with: "
              f"fastbp sweep --resume {out}", file=sys.stderr)
        return 130
    print(S.format_table(result.results, result.space, limit=args.top or None))
    best = result.best
    summary = (f"done: {result.ran} trials in {result.seconds:.1f} s (Ray start included)"
               + (f", {result.skipped} from before" if result.skipped else "")
               + (f"; best val acc {best['val_acc']:.4f} (trial {best['trial']})" if best else "")
               + f"; seed {result.seed}")
    print(summary)
    print("wrote " + ", ".join(str(p) for key, p in result.files.items() if key != "settings"))
    if result.failed:
        print(f"fastbp: {len(result.failed)} trials failed after retries ({result.failed}); run them with: "
              f"fastbp sweep --resume {out}", file=sys.stderr)
        return 1
    return 0


# --------------------------------------------------------------------------- entry point


def main(argv=None) -> int:
    """Entry point of the ``fastbp`` command; returns the exit status."""
    from .datasets import DatasetNotFoundError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    # OSError covers unwritable --out folders and unreadable files as well as FileNotFoundError.
    # FloatingPointError: training diverged (a NaN loss); the last checkpoint is kept.
    except (UsageError, DatasetNotFoundError, OSError, ValueError, TypeError, FloatingPointError) as exc:
        print(f"fastbp: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fastbp: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
