"""The book's chapter-6 scripts, run unchanged: once on the book's ``common`` package and once
with ``common.*`` swapped for fastbp's classes; wall time of each, side by side.

    python benchmarks/ch06_scripts.py [--book PATH] [--scripts a.py,b.py] [--repeat 1]

Each script is copied, untouched, into a scratch tree ``<tmp>/ch06/`` beside a ``dataset``
package and a ``common`` package, and run as ``python <script>`` from ``<tmp>/ch06`` (the
scripts put ``os.pardir`` on ``sys.path`` themselves):

* book: ``common`` is the book's own folder;
* fastbp: ``common`` is a shim whose ``multi_layer_net``, ``multi_layer_net_extend``,
  ``optimizer`` and ``trainer`` modules re-export ``fastbp.MultiLayerNet``,
  ``fastbp.MultiLayerNetExtend``, ``fastbp.optimizers.*`` and ``fastbp.Trainer``; its other
  modules (``util``, ``functions``, ...) are the book's (the shim's ``__path__`` falls back to
  the book's folder).

Data: the scripts call ``dataset.mnist.load_mnist``; MNIST's 60 000 training images are not
available offline here, so both runs read **Fashion-MNIST** through
:func:`fastbp.datasets.load_mnist` (same shapes and dtypes as the book's loader). Set
``--dataset mnist`` where MNIST's files are found.

Figures are not shown (``MPLBACKEND=Agg``). Each process runs with ``OPENBLAS_CORETYPE`` and
``OPENBLAS_L2_SIZE`` unset (this machine's environment pins OpenBLAS to its AVX2 kernels);
the OpenBLAS kernel in use is printed. fastbp runs with a warm Numba cache: one untimed run
of every script fills it first (the scripts need different compiled variants: float64
BatchNorm, Dropout, the gradient check's compiled loss; warming with the first script alone
left their compilation inside the timings of the others). Book and fastbp runs of a script
alternate (``--repeat`` rounds); the table gives the median wall time of each and their ratio.

``--gemm-share`` runs the book's flavour only, with ``numpy.dot`` (every matrix product of
the book's layers) wrapped by a timer, and prints each script's wall time, the time inside
those products and their ratio: no implementation that computes the same products with the
same OpenBLAS can run a script faster than that ratio.
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_BOOK = HERE.parent.parent / "shared" / "book-reference"
DEFAULT_DATA = HERE.parent.parent / "shared" / "datasets"
SCRIPTS = ["optimizer_compare_mnist.py", "weight_init_compare.py", "overfit_weight_decay.py",
           "overfit_dropout.py", "batch_norm_test.py", "batch_norm_gradient_check.py"]

DATASET_SHIM = '''\
"""The book's ``dataset.mnist.load_mnist`` signature, served by fastbp's loader."""
import os

from fastbp.datasets import load_mnist as _load


def load_mnist(normalize=True, flatten=True, one_hot_label=False):
    return _load(normalize=normalize, flatten=flatten, one_hot_label=one_hot_label,
                 dataset=os.environ["CH06_DATASET"], progress=False)
'''

COMMON_SHIM = {
    "__init__.py": ('"""fastbp\'s classes under the book\'s module names; the rest is the '
                    'book\'s."""\nimport os\n\n__path__.append(os.environ["CH06_BOOK_COMMON"])\n'),
    "multi_layer_net.py": "from fastbp import MultiLayerNet  # noqa: F401\n",
    "multi_layer_net_extend.py": "from fastbp import MultiLayerNetExtend  # noqa: F401\n",
    # The book's optimizer module has no __all__, so its `import *` also hands the scripts
    # `np`; two of them rely on that.
    "optimizer.py": ("import numpy as np  # noqa: F401\n"
                     "from fastbp.optimizers import *  # noqa: F401,F403\n"),
    "trainer.py": "from fastbp import Trainer  # noqa: F401\n",
}

# Loaded at start-up through PYTHONPATH (--gemm-share): numpy.dot timed, the total written at
# exit. The book's layers call np.dot through the module, so they get the timed one.
DOT_TIMER = '''\
import atexit, os, time
import numpy

_dot = numpy.dot
_spent = [0.0]


def dot(*args, **kwargs):
    start = time.perf_counter()
    try:
        return _dot(*args, **kwargs)
    finally:
        _spent[0] += time.perf_counter() - start


numpy.dot = dot
atexit.register(lambda: open(os.environ["CH06_DOT_TIME"], "w").write(repr(_spent[0])))
'''

KERNEL_PROBE = ("import numpy, threadpoolctl; "
                "print([i.get('architecture') for i in threadpoolctl.threadpool_info() "
                "if i.get('internal_api') == 'openblas'])")


def _tree(root: Path, book: Path, flavour: str) -> Path:
    """Lay out ``root/{ch06,dataset,common}`` for one flavour; return the scripts' folder."""
    (root / "ch06").mkdir(parents=True)
    (root / "dataset").mkdir()
    (root / "dataset" / "__init__.py").write_text("")
    (root / "dataset" / "mnist.py").write_text(DATASET_SHIM)
    if flavour == "book":
        shutil.copytree(book / "common", root / "common")
    else:
        (root / "common").mkdir()
        for name, text in COMMON_SHIM.items():
            (root / "common" / name).write_text(text)
    for script in SCRIPTS:
        shutil.copy(book / "ch06" / script, root / "ch06" / script)
    return root / "ch06"


def _env(book: Path, dataset: str, data_dir: Path) -> dict:
    env = dict(os.environ, MPLBACKEND="Agg", CH06_DATASET=dataset, FASTBP_DATA_DIR=str(data_dir),
               CH06_BOOK_COMMON=str(book / "common"))
    for name in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        env.pop(name, None)
    return env


def _run(folder: Path, script: str, env: dict) -> float:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, script], cwd=folder, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{script} failed in {folder}:\n{done.stderr[-2000:]}")
    return seconds


def _gemm_share(scripts: list, book: Path, env: dict) -> int:
    """Run the book's flavour with numpy.dot timed; print the products' share per script."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = _tree(Path(tmp) / "book", book, "book")
        site = Path(tmp) / "site"
        site.mkdir()
        (site / "sitecustomize.py").write_text(DOT_TIMER)
        record = Path(tmp) / "dot_seconds"
        env = dict(env, PYTHONPATH=os.pathsep.join(filter(None, [str(site),
                                                                  env.get("PYTHONPATH")])),
                   CH06_DOT_TIME=str(record))
        print(f"\n{'script':32s} {'wall s':>8s} {'in np.dot s':>12s} {'wall / np.dot':>14s}")
        total_wall = total_dot = 0.0
        for script in scripts:
            record.unlink(missing_ok=True)  # a run that wrote nothing fails below
            wall = _run(folder, script, env)
            dot = float(record.read_text())
            total_wall += wall
            total_dot += dot
            print(f"{script:32s} {wall:8.1f} {dot:12.1f} {wall / dot:13.2f}x", flush=True)
        print(f"{'total':32s} {total_wall:8.1f} {total_dot:12.1f} "
              f"{total_wall / total_dot:13.2f}x")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--book", type=Path, default=DEFAULT_BOOK,
                   help="the book's code (folders common/ and ch06/)")
    p.add_argument("--scripts", default=",".join(SCRIPTS),
                   help="comma-separated subset of: " + ", ".join(SCRIPTS))
    p.add_argument("--dataset", default="fashion-mnist", choices=["fashion-mnist", "mnist"])
    p.add_argument("--data-dir", type=Path,
                   default=Path(os.environ.get("FASTBP_DATA_DIR", DEFAULT_DATA)),
                   help="folder holding fashion-mnist/ or mnist/ (default $FASTBP_DATA_DIR, "
                        "else ../shared/datasets)")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--gemm-share", action="store_true",
                   help="run the book's code only and report the share of its matrix products")
    args = p.parse_args(argv)
    scripts = args.scripts.split(",")
    unknown = sorted(set(scripts) - set(SCRIPTS))
    if unknown:
        p.error(f"unknown scripts {unknown}")
    env = _env(args.book, args.dataset, args.data_dir)
    kernel = subprocess.run([sys.executable, "-c", KERNEL_PROBE], env=env, capture_output=True,
                            text=True).stdout.strip()
    print(f"OpenBLAS kernel: {kernel}; data: {args.dataset}; {os.cpu_count()} CPUs")
    if args.gemm_share:
        return _gemm_share(scripts, args.book, env)
    with tempfile.TemporaryDirectory() as tmp:
        folders = {flavour: _tree(Path(tmp) / flavour, args.book, flavour)
                   for flavour in ("book", "fastbp")}
        for script in scripts:  # fills Numba's cache; not timed
            _run(folders["fastbp"], script, env)
        times = {(s, f): [] for s in scripts for f in folders}
        for _ in range(args.repeat):
            for script in scripts:
                for flavour, folder in folders.items():
                    times[script, flavour].append(_run(folder, script, env))
                    print(f"  {script:32s} {flavour:6s} {times[script, flavour][-1]:8.1f} s",
                          flush=True)
    print(f"\n{'script':32s} {'book s':>8s} {'fastbp s':>9s} {'ratio':>6s}")
    total = {f: 0.0 for f in folders}
    for script in scripts:
        row = {f: statistics.median(times[script, f]) for f in folders}
        for f in folders:
            total[f] += row[f]
        print(f"{script:32s} {row['book']:8.1f} {row['fastbp']:9.1f} "
              f"{row['book'] / row['fastbp']:5.2f}x")
    print(f"{'total':32s} {total['book']:8.1f} {total['fastbp']:9.1f} "
          f"{total['book'] / total['fastbp']:5.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
