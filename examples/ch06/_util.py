"""What the chapter-6 examples share: their command line, the data, the smoothing of loss
curves and saving the figure. Not an example itself (hence the underscore).

The scripts import it as ``_util``: Python puts a script's own folder first on
``sys.path``, so ``python examples/ch06/<name>.py`` finds it from any working directory.
"""
import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: the examples save their figures instead of showing them
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from fastbp.datasets import DatasetNotFoundError, load_mnist  # noqa: E402

DATASET_NAMES = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST"}


def parser(description, *, dtype=True):
    """An argument parser with the options every example takes.

    ``--dataset``, ``--data-dir``, ``--out``, ``--seed``, ``--threads`` (applied by
    :func:`parse`) and, when `dtype` is true, ``--dtype`` (float32 by default: the images
    are float32 already, and fastbp's kernels do the same arithmetic in either type).
    Examples add their own (``--iters``, ...).
    """
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--dataset", choices=sorted(DATASET_NAMES), default=None,
                   help="default: MNIST, or Fashion-MNIST (with a note) when MNIST's files "
                        "are neither found nor downloadable")
    p.add_argument("--data-dir", metavar="D", default=None,
                   help="folder holding mnist/ and/or fashion-mnist/ with the IDX files "
                        "(searched before $FASTBP_DATA_DIR and the cache)")
    p.add_argument("--out", metavar="DIR", default=".",
                   help="folder for the figure (default: the current folder)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of np.random: initial weights and mini-batches (default 0)")
    p.add_argument("--threads", type=positive, default=None,
                   help="threads of Numba's pool and of BLAS (default: fastbp's, all "
                        "cores; 1 is steadier on a busy machine)")
    if dtype:
        p.add_argument("--dtype", choices=["float32", "float64"], default="float32",
                       help="the networks' dtype (default float32; the book computes in "
                            "float64)")
    return p


def parse(p):
    """``p.parse_args()``, after which ``--threads`` is in effect."""
    args = p.parse_args()
    if args.threads is not None:
        import fastbp
        fastbp.set_num_threads(args.threads)
    return args


def positive(text):
    """argparse type: an int >= 1."""
    v = int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {v}")
    return v


def load(args, **kwargs):
    """``((x_train, t_train), (x_test, t_test)), name`` for the dataset `args` asks for.

    `kwargs` go to :func:`fastbp.datasets.load_mnist` (``one_hot_label=True``, ...).
    Without ``--dataset``, MNIST is tried first (found locally or downloaded); if its
    files cannot be had, Fashion-MNIST (same shapes, harder classes) is used and a note
    says so. When no dataset can be loaded, the script ends with the loader's message
    (which folders were searched, where to put the files) and exit status 2.
    """
    names = [args.dataset] if args.dataset else ["mnist", "fashion-mnist"]
    for i, name in enumerate(names):
        try:
            data = load_mnist(normalize=True, dataset=name, data_dir=args.data_dir, **kwargs)
        except DatasetNotFoundError as exc:
            if i + 1 < len(names):
                first = str(exc).splitlines()[0]
                print(f"note: {first}\nnote: using Fashion-MNIST instead (pass --dataset "
                      f"fashion-mnist to skip this attempt)", flush=True)
                continue
            _fail(exc)
        except ValueError as exc:  # a damaged file: the loader's message names it
            _fail(exc)
        return data, DATASET_NAMES[name]


def _fail(exc):
    print(f"{Path(sys.argv[0]).name}: error: {exc}", file=sys.stderr)
    sys.exit(2)


def smooth_curve(values, window=11, beta=2.0):
    """`values` averaged over a sliding Kaiser window, as the book smooths loss curves.

    The same weights and edges as the book's ``common.util.smooth_curve``: the series is
    extended by its mirror image at both ends (the first point not repeated, the last
    one repeated, as there), so the result has the same length as `values`. Series of
    fewer than 3 points are returned unchanged.
    """
    x = np.asarray(values, dtype=np.float64)
    half = min(window // 2, x.size - 1)
    if half < 1:
        return x.copy()
    w = np.kaiser(2 * half + 1, beta)
    padded = np.concatenate([x[half:0:-1], x, x[:-half - 1:-1]])
    return np.convolve(padded, w / w.sum(), mode="valid")


def save(fig, args, script):
    """Save `fig` as ``<out>/<script's name>.png``, close it, print and return the path."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / (Path(script).stem + ".png")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    print(f"figure: {path}")
    return path
