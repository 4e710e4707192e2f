"""``fit`` and ``predict_proba`` of ``fastbp.sklearn.MLPClassifier`` against
``sklearn.neural_network.MLPClassifier``, over hidden sizes and batch sizes.

asv: both estimators with the same parameters (Adam, ``tol=0``, ``early_stopping=False``,
``random_state=0``, float32) fit :data:`FIT_EPOCHS` epochs of the 10 000 test images of
``common`` (Fashion-MNIST or MNIST when found, else seeded random images), and
``predict_proba`` all 10 000 rows. ``track_speedup_*`` returns scikit-learn's time /
fastbp's (alternating samples, ``common.speedup``). Threads: ``common.THREADS``.

The issue's targets (Fashion-MNIST, 60 000 rows, 20 epochs, batch 100) take minutes per
sample, too long for asv; run them with::

    flock /tmp/helpers/bench.lock env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE \\
        .venv/bin/python -m benchmarks.bench_sklearn --epochs 20

which prints the BLAS kernel in use, interleaves the two estimators and reports fit times,
test accuracies and ratios.
"""
import argparse
import time
import warnings

import numpy as np

from . import common

#: Epochs per timed ``fit`` in asv (on 10 000 rows).
FIT_EPOCHS = 2
#: asv parameter (a string) -> hidden_layer_sizes.
HIDDEN_SIZES = {"(100,)": (100,), "(100, 100, 100, 100)": (100,) * 4}
HIDDEN = list(HIDDEN_SIZES)
#: Batch sizes; the quick run (``common.QUICK``) keeps 200, scikit-learn's default.
BATCHES = [200] if common.QUICK else [100, 200]
IMPLS = ["sklearn", "fastbp"]


def _estimator(impl, hidden, batch_size, epochs):
    if impl == "sklearn":
        from sklearn.neural_network import MLPClassifier
    else:
        from fastbp.sklearn import MLPClassifier
    return MLPClassifier(hidden_layer_sizes=hidden, solver="adam", batch_size=batch_size,
                         max_iter=epochs, tol=0.0, n_iter_no_change=10**9,
                         early_stopping=False, random_state=0)


def _fit(est, x, t):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: max_iter is the point
        return est.fit(x, t)


def _skip_without_sklearn():
    try:
        import sklearn  # noqa: F401
    except ImportError:
        raise NotImplementedError("scikit-learn not installed")


class Fit:
    """``fit`` of :data:`FIT_EPOCHS` epochs on 10 000 images."""
    params = [HIDDEN, BATCHES, IMPLS]
    param_names = ["hidden", "batch_size", "impl"]
    timeout = 600
    number = 1
    repeat = 3

    def setup(self, hidden, batch_size, impl):
        _skip_without_sklearn()
        common.set_threads()
        self.x, self.t = common.images(10000, np.float32), common.labels(10000)
        self.est = _estimator(impl, HIDDEN_SIZES[hidden], batch_size, FIT_EPOCHS)
        _fit(_estimator(impl, HIDDEN_SIZES[hidden], batch_size, 1), self.x[:500], self.t[:500])

    def time_fit(self, *_):
        _fit(self.est, self.x, self.t)


class PredictProba:
    """``predict_proba`` of 10 000 rows by a fitted model."""
    params = [HIDDEN, IMPLS]
    param_names = ["hidden", "impl"]
    timeout = 300

    def setup(self, hidden, impl):
        _skip_without_sklearn()
        common.set_threads()
        self.x, t = common.images(10000, np.float32), common.labels(10000)
        self.est = _fit(_estimator(impl, HIDDEN_SIZES[hidden], 200, 1), self.x, t)
        common.warm(lambda: self.est.predict_proba(self.x))

    def time_predict_proba(self, *_):
        self.est.predict_proba(self.x)


class Speedup:
    """scikit-learn's time / fastbp's, for ``fit`` (1 epoch) and ``predict_proba``."""
    params = [HIDDEN, BATCHES]
    param_names = ["hidden", "batch_size"]
    unit = "x"
    timeout = 900
    processes = 1

    def setup(self, hidden, batch_size):
        _skip_without_sklearn()
        common.set_threads()
        x, t = common.images(10000, np.float32), common.labels(10000)
        ests = [_estimator(impl, HIDDEN_SIZES[hidden], batch_size, 1) for impl in IMPLS]
        self.fits = tuple((lambda e=e: _fit(e, x, t)) for e in ests)
        for f in self.fits:
            f()
        self.predicts = tuple((lambda e=e: e.predict_proba(x)) for e in ests)

    def track_speedup_fit(self, *_):
        return common.speedup(*self.fits, samples=5, target=0.0)

    def track_speedup_predict_proba(self, *_):
        return common.speedup(*self.predicts)


# -- the targets, full Fashion-MNIST -------------------------------------------------

def _blas():
    from threadpoolctl import threadpool_info
    return "; ".join(f"{i.get('internal_api')} {i.get('version')} "
                     f"{i.get('architecture')} threads={i.get('num_threads')}"
                     for i in threadpool_info() if i.get("user_api") == "blas")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--rounds", type=int, default=1, help="alternating rounds per size")
    p.add_argument("--hidden", default="100;100,100,100,100",
                   help="hidden sizes, ';'-separated (default: both targets)")
    args = p.parse_args(argv)
    from fastbp.datasets import load_mnist
    (x, t), (xt, tt) = load_mnist(dataset="fashion-mnist", download=False)
    x, xt = np.ascontiguousarray(x, np.float32), np.ascontiguousarray(xt, np.float32)
    print("BLAS:", _blas())
    print(f"Fashion-MNIST {x.shape} {x.dtype}, Adam, batch {args.batch_size}, "
          f"{args.epochs} epochs, tol=0, early_stopping=False")
    for spec in args.hidden.split(";"):
        hidden = tuple(int(h) for h in spec.split(","))
        # warm-up (compilation) outside the timing
        _fit(_estimator("fastbp", hidden, args.batch_size, 1), x[:1000], t[:1000])
        times = {impl: [] for impl in IMPLS}
        models = {}
        for r in range(args.rounds):
            for impl in (IMPLS if r % 2 == 0 else IMPLS[::-1]):
                est = _estimator(impl, hidden, args.batch_size, args.epochs)
                t0 = time.perf_counter()
                _fit(est, x, t)
                times[impl].append(time.perf_counter() - t0)
                models[impl] = est
        pred = {}
        for impl, est in models.items():
            est.predict_proba(xt)
            best = float("inf")
            for _ in range(5):
                t0 = time.perf_counter()
                est.predict_proba(xt)
                best = min(best, time.perf_counter() - t0)
            pred[impl] = best
        acc = {impl: models[impl].score(xt, tt) for impl in IMPLS}
        fs, ff = min(times["sklearn"]), min(times["fastbp"])
        print(f"hidden {hidden}: fit sklearn {fs:.2f} s, fastbp {ff:.2f} s, "
              f"speed-up {fs / ff:.2f}x; test accuracy sklearn {acc['sklearn']:.4f}, "
              f"fastbp {acc['fastbp']:.4f}; predict_proba 10 000 rows sklearn "
              f"{pred['sklearn'] * 1e3:.1f} ms, fastbp {pred['fastbp'] * 1e3:.1f} ms, "
              f"speed-up {pred['sklearn'] / pred['fastbp']:.2f}x")


if __name__ == "__main__":
    main()
