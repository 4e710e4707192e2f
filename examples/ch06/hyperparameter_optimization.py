"""The book's ch06/hyperparameter_optimization.py on fastbp.sweep: random search of the
learning rate and the weight decay of a 784-100x6-10 ReLU network (SGD, 50 epochs of batch
100 on 400 of the first 500 training images; the other 100 are the validation set), 100
trials, then the best 20 trials' validation (solid) and training (dashed) accuracy per
epoch, 5 per row.

The book's loop trains the networks one after the other in one process. Here
``fastbp.sweep.sweep`` runs them on Ray: a local Ray on this machine, one trial per core
(``--num-cpus``), or a running cluster (``--address HOST:PORT``), with the same results for
the same ``--seed`` (each trial's parameters and seed come from it, not from the order the
trials run in). It needs Ray: ``pip install "fastbp[sweep]"``.

Usage (``D`` holding ``mnist/`` and/or ``fashion-mnist/``)::

    python examples/ch06/hyperparameter_optimization.py
    python examples/ch06/hyperparameter_optimization.py --dataset fashion-mnist --data-dir D
    python examples/ch06/hyperparameter_optimization.py --trials 20 --epochs 10 --out /tmp/figs
"""
from pathlib import Path

from _util import load, parse, parser, positive

from fastbp.sweep import SweepError, plot_best, sweep
from fastbp.sweep_space import LogUniform

p = parser(__doc__.splitlines()[0], dtype=True)
p.add_argument("--trials", type=positive, default=100, help="trials (default 100)")
p.add_argument("--epochs", type=positive, default=50, help="epochs per trial (default 50)")
p.add_argument("--train-size", type=positive, default=500,
               help="training images kept, 20%% of them for validation (default 500)")
p.add_argument("--address", default=None, metavar="HOST:PORT",
               help="a running Ray cluster (default: a local Ray on this machine)")
p.add_argument("--num-cpus", type=positive, default=None,
               help="CPUs of the local Ray, one trial each (default: all cores)")
args = parse(p)

((x_train, t_train), _), dataset = load(args)

# The book's search space: weight decay 10 ** uniform(-8, -4), lr 10 ** uniform(-6, -2).
space = {"weight_decay": LogUniform(1e-8, 1e-4), "lr": LogUniform(1e-6, 1e-2),
         "hidden": [100] * 6, "epochs": args.epochs, "batch_size": 100, "optimizer": "sgd"}
try:
    result = sweep((x_train, t_train), space, trials=args.trials, seed=args.seed,
                   train_size=args.train_size, validation_rate=0.20, dtype=args.dtype,
                   address=args.address, num_cpus=args.num_cpus, progress=False)
except SweepError as exc:  # Ray missing or unreachable
    p.exit(2, f"{Path(__file__).name}: error: {exc}\n")


def key(r):
    return "lr:" + str(r["params"]["lr"]) + ", weight decay:" + str(r["params"]["weight_decay"])


for r in sorted(result.results, key=lambda r: r["trial"]):  # the book prints them as they finish
    print("val acc:" + str(r["val_acc"]) + " | " + key(r))

print("=========== Hyper-Parameter Optimization Result ===========")
for i, r in enumerate(result.results[:20]):  # best first
    print("Best-" + str(i + 1) + "(val acc:" + str(r["val_acc"]) + ") | " + key(r))
print(f"{dataset}: {len(result.results)} trials in {result.seconds:.1f} s on Ray, seed {result.seed}")

out = Path(args.out)
out.mkdir(parents=True, exist_ok=True)
path = plot_best(result.results, out / (Path(__file__).stem + ".png"), count=20, columns=5)
print(f"figure: {path}")
