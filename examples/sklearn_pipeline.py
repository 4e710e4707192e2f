"""fastbp's MLPClassifier in a scikit-learn Pipeline and GridSearchCV, on Fashion-MNIST.

``fastbp.sklearn.MLPClassifier`` takes the constructor of
``sklearn.neural_network.MLPClassifier``: swap the import and the rest of a scikit-learn
workflow stays as it is. Here a ``StandardScaler`` and the classifier form a pipeline,
``GridSearchCV`` picks the hidden layers and the L2 penalty by cross-validation, and the
best model is scored on the test split.

Usage::

    python examples/sklearn_pipeline.py --data-dir ../shared/datasets
    python examples/sklearn_pipeline.py --train-rows 5000 --epochs 3   # a quick run

Needs scikit-learn (``pip install 'fastbp[sklearn]'``).
"""
import argparse
import time
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from fastbp.datasets import load_mnist
from fastbp.sklearn import MLPClassifier

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--dataset", default="fashion-mnist", choices=["mnist", "fashion-mnist"])
parser.add_argument("--data-dir", default=None, help="folder holding fashion-mnist/")
parser.add_argument("--train-rows", type=int, default=60000,
                    help="rows of the training split to use (default: all)")
parser.add_argument("--epochs", type=int, default=10, help="max_iter of each fit")
parser.add_argument("--jobs", type=int, default=1, help="GridSearchCV n_jobs")
args = parser.parse_args()

(x_train, t_train), (x_test, t_test) = load_mnist(dataset=args.dataset, data_dir=args.data_dir)
x_train, t_train = x_train[:args.train_rows], t_train[:args.train_rows]
print(f"{args.dataset}: train {x_train.shape} {x_train.dtype}, test {x_test.shape}")

pipeline = Pipeline([
    ("scale", StandardScaler()),
    ("mlp", MLPClassifier(solver="adam", batch_size=100, max_iter=args.epochs,
                          early_stopping=True, random_state=0)),
])
grid = GridSearchCV(pipeline, {
    "mlp__hidden_layer_sizes": [(100,), (100, 100)],
    "mlp__alpha": [1e-4, 1e-2],
}, cv=3, n_jobs=args.jobs)

start = time.perf_counter()
with warnings.catch_warnings():
    warnings.simplefilter("ignore", ConvergenceWarning)  # max_iter is kept small on purpose
    grid.fit(x_train, t_train)
elapsed = time.perf_counter() - start

for params, mean, std in zip(grid.cv_results_["params"], grid.cv_results_["mean_test_score"],
                             grid.cv_results_["std_test_score"]):
    print(f"{params}: cross-validated accuracy {mean:.4f} +- {std:.4f}")
print(f"best: {grid.best_params_}")
print(f"grid search: {len(grid.cv_results_['params']) * 3 + 1} fits in {elapsed:.1f} s")
best = grid.best_estimator_
print(f"test accuracy: {best.score(x_test, t_test):.4f}")
print(f"predicted {np.bincount(best.predict(x_test[:1000]), minlength=10)} (first 1000 rows)")
